"""docs/results.md is what docs/make_results.py renders from the run records in docs/results/."""
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS))
import make_results  # noqa: E402


def test_the_page_is_the_rendering_of_the_records():
    assert (DOCS / "results.md").read_text(encoding="utf-8") == make_results.render(make_results.load())
    assert make_results.main(["--check"]) == 0


def record(**changes):
    base = {"experiment": "table1", "setting": "linear, stochastic, d = 10, e = 1, n = 10000",
            "command": "python examples/table1.py --variants latent", "seeds": "graphs 0..1, fit seed = graph seed + 0",
            "commit": "abc1234", "date": "2026-12-02", "machine": "x86_64", "options": "defaults", "ari_ceiling": 0.5249,
            "rows": [{"variant": "latent", "hamming": [3, 4], "mean": 3.5, "sd": 0.5, "shd": 2.25, "f1": 0.7349,
                      "ari": 0.4151, "seconds": 41.6, "paper": "5.9 ± 6.2"}]}
    base.update(changes)
    return base


def test_a_table1_row_shows_the_record_rounded_as_the_example_prints_it():
    page = make_results.render([record()])
    assert "| linear, e = 1 | latent | defaults | 3.5 ± 0.5 | 3 4 | 2.2 | 0.73 | 0.42 (0.52) | 42 | 5.9 ± 6.2 | [1] |" in page
    assert ("1. `python examples/table1.py --variants latent`: graphs 0..1, fit seed = graph seed + 0; "
            "commit abc1234 (2026-12-02); x86_64.") in page


def test_values_a_run_did_not_report_show_as_a_dash_and_defaults_come_first():
    partial = record(options="--order-refit 3", rows=[{"variant": "latent", "hamming": [6, 8], "mean": 7.0, "ari": 0.5}])
    page = make_results.render([partial, record()])
    rows = [line for line in page.splitlines() if line.startswith("| linear, e = 1 |")]
    assert rows[0].startswith("| linear, e = 1 | latent | defaults | 3.5 ± 0.5 |")
    assert rows[1] == "| linear, e = 1 | latent | --order-refit 3 | 7.0 | 6 8 | — | — | 0.50 (0.52) | — | — | [2] |"


def test_a_record_of_an_unknown_experiment_is_refused():
    with pytest.raises(ValueError, match="table9"):
        make_results.render([record(experiment="table9")])


def test_check_fails_when_the_page_was_edited(tmp_path, monkeypatch, capsys):
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nedited by hand\n", encoding="utf-8")
    monkeypatch.setattr(make_results, "PAGE", page)
    assert make_results.main(["--check"]) == 1
    assert "run python docs/make_results.py" in capsys.readouterr().err

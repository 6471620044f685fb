"""The sweep of examples/table1.py: every cell's generator settings reach the data and the table."""
import importlib.util
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_table1():
    spec = importlib.util.spec_from_file_location("table1", EXAMPLES / "table1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_cells_simulate_what_they_name():
    table1 = load_table1()
    args = table1.argparse.Namespace(samples=600, mechanism="linear")
    by_name = {cell.name: cell for cell in table1.SWEEP}
    dense = table1.simulate_cell(by_name["e=4"], args, seed=0)
    sparse = table1.simulate_cell(by_name["paper e=1"], args, seed=0)
    assert dense.adjacency.sum() > 2.5 * sparse.adjacency.sum()
    assert table1.simulate_cell(by_name["d=20"], args, seed=0).x.shape == (600, 20)
    light = table1.simulate_cell(by_name["weights 0.25-1"], args, seed=0)
    weights = np.abs(light.weights[light.adjacency == 1])
    assert weights.min() >= 0.25 and weights.max() <= 1.0
    weak = table1.simulate_cell(by_name["intervention mean 1"], args, seed=0)
    assert weak.intervention_mean == 1.0
    assert table1.simulate_cell(by_name["imperfect"], args, seed=0).intervention == "imperfect"


def test_sweep_table_has_every_cell_beside_the_empty_graph_and_the_observational_fit(tmp_path):
    out = tmp_path / "results.md"
    summary = load_table1().main(["--sweep", "--cells", "0,2", "--graphs", "1", "--samples", "300",
                                  "--first-round-steps", "5", "--max-rounds", "1", "--no-held-refit",
                                  "--order-refit", "0", "--out", str(out), "--record", str(tmp_path / "sweep.json")])
    text = out.read_text()
    assert set(summary) == {"paper e=1", "e=4"}
    for name, row in summary.items():
        assert len(row["latent"]) == len(row["observational"]) == len(row["empty"]) == 1
        assert f"| {name} | 10 |" in text
    assert summary["e=4"]["empty"][0] > summary["paper e=1"]["empty"][0]
    assert "| paper e=1 | 10 | 1 | 0.5-2 | 0.5-1 | 2 | stochastic |" in text and "5.9 ± 6.2 / 10.3 ± 7.8" in text
    # The record renders as the results page's sweep section, one row per cell.
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
    from make_results import sweep

    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["experiment"] == "sweep" and [row["cell"] for row in record["rows"]] == ["paper e=1", "e=4"]
    page = "\n".join(sweep([record]))
    row = next(line for line in page.splitlines() if line.startswith("| e=4 |"))
    latent, observational = summary["e=4"]["latent"][0], summary["e=4"]["observational"][0]
    assert f"| {latent:.1f} ({latent}) | {observational:.1f} ({observational}) |" in row
    assert ("yes" if latent < observational else "**no**") in row


def test_schedule_options_reach_the_schedule_and_the_record():
    table1 = load_table1()
    base = dict(max_rounds=None, first_round_steps=None, round_steps=None, tolerance=None, initial_penalty=None,
                density="linear", model_intervention="perfect", search=None, batch_size=None, graph_estimator=None,
                order_refit=None, edge_search=0, restarts=1, activation=None, two_cycles="resolve", target_moves=True,
                held_refit=True, true_graph=False, edge_logit=None)
    assert table1.schedule_of(table1.argparse.Namespace(**base)) is None
    assert table1.options_text(table1.argparse.Namespace(**base)) == "defaults"
    args = table1.argparse.Namespace(**dict(base, initial_penalty=0.1, tolerance=1e-3))
    schedule = table1.schedule_of(args)
    assert (schedule.initial_penalty, schedule.tolerance) == (0.1, 1e-3)
    defaults = table1.PenaltySchedule()
    assert (schedule.first_round_steps, schedule.round_steps, schedule.max_rounds) == \
        (defaults.first_round_steps, defaults.round_steps, defaults.max_rounds)
    assert table1.options_text(args) == "--tolerance 0.001, --initial-penalty 0.1"
    assert table1.options_text(table1.argparse.Namespace(**dict(base, edge_logit=-6.0))) == "--edge-logit -6.0"
    shorter = table1.schedule_of(table1.argparse.Namespace(**dict(base, round_steps=100)))
    assert (shorter.first_round_steps, shorter.round_steps) == (defaults.first_round_steps, 100)

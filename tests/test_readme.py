"""The README's Python example runs verbatim, and its commands and citation are the project's."""
import contextlib
import io
import re
from pathlib import Path

import pyro_causal
from pyro_causal import FitConfig, PenaltySchedule, TrainingConfig
from pyro_causal.metrics import hamming_distance

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_python_example_runs_verbatim_and_prints_the_result_s_values(monkeypatch):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    fit = pyro_causal.fit
    budget = PenaltySchedule(first_round_steps=5, round_steps=2, max_rounds=1)  # as Pyro's CI runs its examples
    monkeypatch.setattr(pyro_causal, "fit", lambda *args, **kwargs: fit(*args,
                                                                        **kwargs,
                                                                        config=FitConfig(training=TrainingConfig(schedule=budget))))
    printed, namespace = io.StringIO(), {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    data, result = namespace["data"], namespace["result"]
    lines = printed.getvalue().splitlines()
    assert result.names == data.names and result.adjacency.shape == (10, 10)
    assert lines[-1] == str(hamming_distance(data.adjacency, result.adjacency))
    assert lines[-2] == str((10000, result.model.truncation))
    assert lines[-3] == str(sorted(result.graph.edges))


def test_the_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = ci.strip().splitlines()[-1]
    commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert [line for line in commands if not line.startswith("#")][1].endswith(command)
    assert len([line for line in commands if not line.startswith("#")]) == 2


def test_one_citation_everywhere():
    citation = README.split("## Citation\n", 1)[1].strip()
    assert citation.startswith("Faria, G. R. A. (2021). Differentiable Causal Discovery Under Latent Interventions.")
    for path in ("pyro_causal/__init__.py", "docs/method.md", "docs/results.md", "docs/make_results.py"):
        assert citation in (ROOT / path).read_text(encoding="utf-8"), path
    assert citation in pyro_causal.__doc__

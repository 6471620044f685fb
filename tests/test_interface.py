"""What a user meets at the interface: help text, dependencies, module layout, outputs, data frames."""
import argparse
import ast
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pyro_causal import AfterTraining, FitConfig, PenaltySchedule, TrainingConfig, fit, simulate
from pyro_causal.preprocessing import prepare_data
from pyro_causal.cli import build_parser, main
from pyro_causal.io import OUTPUT_NAMES, DataWarning

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_causal"
TINY = PenaltySchedule(first_round_steps=5, round_steps=2, max_rounds=1)
TINY_CLI = ["--first-round-steps", "5", "--round-steps", "2", "--max-rounds", "1", "--no-held-refit", "--quiet"]


def subparsers():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


# ----------------------------------------------------------------------------- --help
@pytest.mark.parametrize("command", ["fit", "simulate", "evaluate"])
def test_help_states_the_default_of_every_optional_option(command):
    parser = subparsers()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS:
            continue
        assert "default" in formatter._get_help_string(action), action.option_strings


def test_help_prints_the_values_the_parser_uses(capsys):
    with pytest.raises(SystemExit):
        subparsers()["fit"].parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    schedule = PenaltySchedule()
    assert f"steps before the first penalty update (default {schedule.first_round_steps})" in text
    assert f"budget of penalty updates (default {schedule.max_rounds})" in text
    assert "conditional density family (default linear)" in text
    assert "cut (perfect) or keep (imperfect) the parents of targets (default perfect)" in text
    assert "also write PNG figures into --out (default off)" in text
    defaults = subparsers()["fit"].parse_args(["data.csv", "--out", "o"])
    flags = vars(defaults)  # each flag's dest is the fit keyword or config field it sets
    assert (flags["config.training.schedule.first_round_steps"], flags["config.training.schedule.max_rounds"],
            flags["fit.density"], defaults.plots) == (schedule.first_round_steps, schedule.max_rounds, "linear", False)


# ----------------------------------------------------------------------------- dependencies and imports
IMPORT_NAMES = {"pyro": "pyro-ppl", "torch": "torch", "numpy": "numpy", "networkx": "networkx", "arviz": "arviz",
                "matplotlib": "matplotlib", "tqdm": "tqdm", "xarray": "xarray"}


def imports_of(path: Path):
    """``(module, level)`` of every import statement in ``path``, function-level ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level
            if node.level and not node.module:
                yield from (("." + alias.name, node.level) for alias in node.names)


def test_every_third_party_import_of_the_package_is_a_declared_dependency():
    tomllib = pytest.importorskip("tomllib")
    declared = {re.split(r"[<>=\[ ]", spec)[0] for spec in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    stdlib = set(sys.stdlib_module_names)
    used = {module.split(".")[0] for path in PACKAGE.rglob("*.py") for module, level in imports_of(path)
            if level == 0 and module.split(".")[0] not in stdlib | {"pyro_causal", "__future__"}}
    assert "tqdm" in used
    assert used <= set(IMPORT_NAMES), used - set(IMPORT_NAMES)
    assert {IMPORT_NAMES[name] for name in used} <= declared


def module_graph():
    """``{module: modules of the package it imports}``, the package root left out (every module imports it)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for module, level in imports_of(path):
            if level:
                base = package.split(".")[: len(package.split(".")) - level + 1]
                module = ".".join(base + [m for m in [module.lstrip(".")] if m])
            while module and module not in names:
                module = module.rpartition(".")[0]
            if module and module not in (name, "pyro_causal"):
                deps.add(module)
        graph[name] = deps
    return graph


def test_the_package_has_no_import_cycle():
    graph = module_graph()
    assert "pyro_causal.distributed" in graph["pyro_causal.commands"]  # the graph sees lazy imports too
    done, path = set(), []

    def visit(node):
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for dep in sorted(graph[node]):
            visit(dep)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_the_distributed_module_still_runs_the_cli_fit(capsys):
    import runpy

    argv = sys.argv
    sys.argv = ["pyro_causal.distributed", "--help"]
    try:
        with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_:
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the package imports the module first
            runpy.run_module("pyro_causal.distributed", run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage: pyro-causal fit")


# ----------------------------------------------------------------------------- outputs
@pytest.fixture
def csv_with_regimes(tmp_path):
    data = simulate(num_variables=3, num_samples=200, seed=0)
    path = tmp_path / "data.csv"
    rows = [",".join(map(repr, map(float, row))) + f",{r}" for row, r in zip(data.x, data.regimes)]
    path.write_text(",".join(data.names) + ",regime\n" + "\n".join(rows) + "\n")
    return path


def test_output_names_are_exactly_the_files_a_fit_writes(csv_with_regimes, tmp_path):
    out = tmp_path / "out"
    assert main(["fit", str(csv_with_regimes), "--regime-column", "regime", "--out", str(out), "--plots",
                 "--checkpoint-every", "3", *TINY_CLI]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)


def documented_keys():
    return set(re.findall(r"`([a-z_0-9]+)`", (ROOT / "docs" / "outputs.md").read_text(encoding="utf-8")))


def test_summary_json_has_one_key_per_quantity_and_every_key_is_documented(csv_with_regimes, tmp_path):
    out = tmp_path / "out"
    assert main(["fit", str(csv_with_regimes), "--regime-column", "regime", "--out", str(out), "--restarts", "2",
                 "--edge-search", "1", "--search-restarts", "1", "--seed", "3", *TINY_CLI]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "final_elbo_per_row" not in summary and "elbo" not in summary["settings"]
    assert summary["elbo_per_row"] != summary["last_step_elbo_per_row"]
    settings, records = summary["settings"], summary["records"]
    keys = set(summary) | set(records) | set(records["edge_search"]) | set(records["held_refit"] or {})
    for value in settings.values():  # asdict(FitConfig) and asdict(Priors): every field documented
        keys |= set(value) if isinstance(value, dict) else set()
    keys |= set(settings) | set(settings["training"]["schedule"]) | set(settings["after_training"]["edge_search"])
    assert keys - documented_keys() == set()
    for record in records["order_refit"]:
        assert set(record) - documented_keys() == set()


def test_summary_values_are_the_result_s():
    data = simulate(num_variables=3, num_samples=200, seed=0)
    result = fit(data.x,
                 seed=0,
                 config=FitConfig(training=TrainingConfig(schedule=TINY), after_training=AfterTraining(held_refit=False)))
    summary = result.summary()
    assert summary["elbo_per_row"] == pytest.approx(result.elbo)
    assert summary["last_step_elbo_per_row"] == pytest.approx(float(result.elbo_trace[-1]))
    assert summary["steps"] == len(result.elbo_trace) == 5
    assert summary["settings"] == result.settings and summary["records"] == result.records


# ----------------------------------------------------------------------------- data frames and regime-like columns
def test_a_data_frame_s_column_names_are_the_variable_names():
    pandas = pytest.importorskip("pandas")
    data = simulate(num_variables=3, num_samples=200, seed=0)
    frame = pandas.DataFrame(data.x, columns=["raf", "mek", "erk"])
    result = fit(frame,
                 seed=0,
                 config=FitConfig(training=TrainingConfig(schedule=TINY), after_training=AfterTraining(held_refit=False)))
    assert result.names == ["raf", "mek", "erk"]
    assert sorted(result.graph.nodes) == ["erk", "mek", "raf"]
    assert fit(frame,
               names=["a", "b", "c"],
               seed=0,
               config=FitConfig(training=TrainingConfig(schedule=TINY), after_training=AfterTraining(held_refit=False))).names == ["a", "b", "c"]
    assert prepare_data(pandas.DataFrame(data.x))[1] == ["0", "1", "2"]  # integer labels become text


@pytest.mark.parametrize("name", ["regime", "Condition", "interventions", "environment_id", "experiment"])
def test_an_integer_column_named_like_regimes_is_fitted_with_a_warning_naming_it(name):
    data = simulate(num_variables=2, edges_per_node=0.5, num_samples=200, seed=0)
    x = np.column_stack([data.x, data.regimes])
    with pytest.warns(DataWarning, match=rf"column '{name}' looks like regime labels .*--regime-column {name}") as caught:
        prepare_data(x, ["a", "b", name])
    assert [w.filename for w in caught] == [__file__]


@pytest.mark.parametrize("name, values", [("X2", "labels"), ("condition", "continuous"), ("preconditioned", "labels")])
def test_other_columns_give_no_regime_warning(name, values):
    data = simulate(num_variables=2, edges_per_node=0.5, num_samples=200, seed=0)
    column = data.regimes if values == "labels" else data.x[:, 0] ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        prepare_data(np.column_stack([data.x, column]), ["a", "b", name])


def test_the_cli_warns_on_one_line_and_names_the_flag(csv_with_regimes, tmp_path, capsys):
    assert main(["fit", str(csv_with_regimes), "--out", str(tmp_path / "out"), *TINY_CLI]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "regime" in line]
    assert lines == ["pyro-causal: warning: data: column 'regime' looks like regime labels but is fitted as a "
                     "variable; if it says which regime each row comes from, pass it as the regimes instead "
                     "(--regime-column regime, or fit(x, regimes=...))"]

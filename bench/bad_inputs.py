"""Run the battery of bad inputs of issue 20 against the CLI and ``pc.fit``; print a Markdown table.

    PYTHONPATH=. python bench/bad_inputs.py > /tmp/table.md     # the table of docs/reliability.md

Each case runs in a fresh temporary folder with a tiny training schedule; the outcome column is
the exit status and the first line on stderr (CLI) or the exception / result (API).
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import pyro_causal as pc
from pyro_causal.checkpoint import load_checkpoint
from pyro_causal.cli import main
from pyro_causal.io import write_csv

TINY = ["--first-round-steps", "10", "--round-steps", "5", "--max-rounds", "1", "--quiet", "--no-held-refit"]
SCHEDULE = pc.PenaltySchedule(first_round_steps=10, round_steps=5, max_rounds=1)
DATA = pc.simulate(num_variables=3, edges_per_node=1.0, num_samples=120, seed=2)


def _csv(folder: Path, x=None, names=None, extra=None) -> Path:
    x = DATA.x if x is None else x
    names = list(names or [f"X{j}" for j in range(x.shape[1])])
    rows = x.tolist()
    if extra is not None:
        names.append(extra[0])
        rows = [[*row, label] for row, label in zip(rows, extra[1])]
    path = folder / "data.csv"
    write_csv(path, names, rows)
    return path


def cli(folder: Path, *argv: str) -> str:
    """``exit N: stderr`` of one CLI run, and whether a failed run created the folder ``out``."""
    out = folder / "out"
    existed = out.exists()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    shown = " / ".join(line.replace("pyro-causal: ", "") for line in lines[:2]) or "(nothing on stderr)"
    made = "" if status == 0 or existed else ("; --out created" if out.exists() else "; nothing created")
    return f"exit {status}: {shown.replace(str(folder), '.')}{made}"


def api(call) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = call()
        except Exception as error:  # the battery reports whatever is raised
            return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    notes = "; ".join(f"{w.category.__name__}: {w.message}" for w in caught if w.category.__module__.startswith("pyro_causal"))
    return f"{value}" + (f" ({notes})" if notes else "")


def cases():
    def fit(training=None, **kw):
        training = training or pc.TrainingConfig(schedule=SCHEDULE)
        return pc.fit(DATA.x, **kw, config=pc.FitConfig(training=training, after_training=pc.AfterTraining(held_refit=False)))

    def gaps(d):
        path = _csv(d, extra=("regime", np.repeat([0, 5, 1_000_000], 40)))
        status = cli(d, "fit", path, "--out", d / "out", "--regime-column", "regime", *TINY)
        import json
        return status + f"; K = {len(json.loads((d / 'out' / 'summary.json').read_text())['cluster_weights'])}"

    yield "regime label 1000000 in --regime-column", gaps
    yield "--processes 64", lambda d: cli(d, "fit", _csv(d), "--out", d / "out", "--processes", "64", *TINY)
    yield "--truncation 1000", lambda d: cli(d, "fit", _csv(d), "--out", d / "out", "--truncation", "1000", *TINY)

    def linked(d, dangling):
        (d / "out").mkdir()
        target = d / ("missing.png" if dangling else "elsewhere.png")
        if not dangling:
            target.write_text("precious")
        (d / "out" / "graph.png").symlink_to(target)
        status = cli(d, "fit", _csv(d), "--out", d / "out", "--plots", *TINY)
        return status + ("; link target untouched" if (not dangling and target.read_text() == "precious")
                         or (dangling and not target.exists()) else "; LINK TARGET WRITTEN")

    yield "--plots with graph.png a symlink", lambda d: linked(d, False)
    yield "--plots with graph.png a dangling symlink", lambda d: linked(d, True)

    def posterior_link(d):
        (d / "p.nc").symlink_to(d / "target.nc")
        return cli(d, "fit", _csv(d), "--out", d / "out", "--posterior", d / "p.nc", *TINY)

    yield "--posterior naming a symlink", posterior_link
    def huge(d):
        status = cli(d, "fit", _csv(d, DATA.x * 1e200), "--out", d / "out", *TINY)
        cli(d, "fit", _csv(d), "--out", d / "plain", *TINY)
        same = (d / "out" / "edge_probs.csv").read_bytes() == (d / "plain" / "edge_probs.csv").read_bytes()
        return status + f"; edge_probs.csv {'identical to' if same else 'DIFFERS from'} the fit of the unscaled data"

    yield "values around 1e200", huge

    def subnormal(d):
        x = DATA.x.copy()
        x[:, 1] *= 1e-310
        return cli(d, "fit", _csv(d, x), "--out", d / "out", *TINY)

    yield "a subnormal column", subnormal
    yield "--learning-rate inf", lambda d: cli(d, "fit", _csv(d), "--out", d / "out", "--learning-rate", "inf", *TINY)
    yield "divergence (--learning-rate 1e30)", lambda d: cli(d, "fit", _csv(d), "--out", d / "out", "--learning-rate", "1e30", *TINY)
    yield "an exact duplicate column", lambda d: cli(
        d, "fit", _csv(d, np.column_stack([DATA.x, DATA.x[:, 0]])), "--out", d / "out", *TINY)

    def stale(d):
        path = _csv(d)
        cli(d, "fit", path, "--out", d / "out", "--plots", *TINY)
        status = cli(d, "fit", path, "--out", d / "out", "--overwrite", *TINY)
        return status + f"; PNGs left: {len(list((d / 'out').glob('*.png')))}"

    yield "--overwrite without --plots after a fit with --plots", stale
    if not torch.cuda.is_available():
        yield "--device cuda without CUDA", lambda d: cli(d, "fit", _csv(d), "--out", d / "out", "--device", "cuda", *TINY)
    yield "--device bogus", lambda d: cli(d, "fit", _csv(d), "--out", d / "out", "--device", "bogus", *TINY)

    def evaluate(d, folder_as_truth):
        path = _csv(d)
        cli(d, "fit", path, "--out", d / "out", *TINY)
        if folder_as_truth:
            return cli(d, "evaluate", d / "out", "--truth", d)
        return cli(d, "evaluate", path, "--truth", d / "out" / "adjacency.csv")

    yield "evaluate with a folder as --truth", lambda d: evaluate(d, True)
    yield "evaluate with a file as the result", lambda d: evaluate(d, False)

    def posterior_folder(d):
        start = time.perf_counter()
        status = cli(d, "fit", _csv(d), "--out", d / "out", "--posterior", d, *TINY)
        return status + f" ({time.perf_counter() - start:.2f} s: before the fit)"

    yield "--posterior naming a folder", posterior_folder

    def batch_one(d):
        start = time.perf_counter()
        status = cli(d, "fit", _csv(d), "--out", d / "out", "--batch-size", "1", *TINY)
        return status + f" ({time.perf_counter() - start:.1f} s in all)"

    yield "--batch-size 1", batch_one
    yield "--seed -1", lambda d: cli(d, "fit", _csv(d), "--out", d / "out", "--seed", "-1", *TINY)

    def home(d):
        os.environ["HOME"] = str(d)
        status = cli(d, "fit", _csv(d), "--out", "~/res", *TINY)
        return status + ("; wrote $HOME/res" if (d / "res" / "summary.json").exists() else "; WRONG PLACE")

    yield "--out '~/res'", home

    def inside_fit(d):
        targets = d / "targets.csv"
        write_csv(targets, ["X0", "X1", "X2"], [[0, 0, 0]])
        path = _csv(d, extra=("regime", np.arange(120) % 2))
        return cli(d, "fit", path, "--regime-column", "regime", "--targets", targets, "--out", d / "out", *TINY)

    yield "an error found inside fit (targets too short)", inside_fit
    yield "fit(truncation=0)", lambda d: api(lambda: fit(truncation=0))
    yield "fit(truncation=2.5)", lambda d: api(lambda: fit(truncation=2.5))
    yield "fit(supervision_weight=-1)", lambda d: api(lambda: fit(training=pc.TrainingConfig(schedule=SCHEDULE, supervision_weight=-1)))
    yield "fit(names with a duplicate)", lambda d: api(lambda: fit(names=["a", "b", "a"]))
    yield "fit(complex data)", lambda d: api(lambda: pc.fit(DATA.x + 1j))

    def frame(d):
        import pandas

        result = pc.fit(pandas.DataFrame(DATA.x, columns=list("pqr")),
                        config=pc.FitConfig(training=pc.TrainingConfig(schedule=SCHEDULE), after_training=pc.AfterTraining(held_refit=False)))
        return f"names {result.names}"

    yield "fit(pandas DataFrame)", lambda d: api(lambda: frame(d))
    yield "fit(regimes as strings)", lambda d: api(lambda: fit(regimes=np.array(list("ab") * 60)))
    yield "fit(tensor with requires_grad)", lambda d: api(
        lambda: "stop_reason " + pc.fit(torch.tensor(DATA.x, requires_grad=True),
                                        config=pc.FitConfig(training=pc.TrainingConfig(schedule=SCHEDULE), after_training=pc.AfterTraining(held_refit=False))).stop_reason)

    def evil(d):
        class Payload:
            def __reduce__(self):
                return (os.system, ("echo owned",))

        torch.save({"model": Payload()}, d / "checkpoint.pt")
        return api(lambda: load_checkpoint(d / "checkpoint.pt"))

    yield "a checkpoint holding code", evil


def main_() -> None:
    rows = []
    for case, run in cases():
        with tempfile.TemporaryDirectory() as folder:
            home = os.environ.get("HOME")
            try:
                outcome = run(Path(folder))
            finally:
                if home is not None:
                    os.environ["HOME"] = home
        outcome = outcome.replace(folder, ".")
        rows.append((case, outcome.replace("|", "\\|")))
        print(f"{case}: {outcome}", file=sys.stderr)
    print("| case | outcome |\n|---|---|")
    for case, outcome in rows:
        print(f"| {case} | {outcome} |")


if __name__ == "__main__":
    main_()

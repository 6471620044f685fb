"""Seconds per SVI step with freed memory kept in the heap (``resources.freed_memory_kept``, what
``fit`` and ``Trainer.run`` do) and with glibc's defaults, in alternating processes of one run.

    python bench/bench_memory.py [--rounds 3] [--repeats 30]
    python bench/bench_memory.py --fit mlp --rounds 2

Each process builds one model, takes a few untimed steps, then times ``--repeats`` steps (median),
inside the block or not.  ``--fit DENSITY`` instead times whole fits with nothing else set,
``fit(x, density=DENSITY)`` on ``simulate(10, 1.0, 10000, "mlp", seed=0)`` (``"linear"`` data for
the linear density), as ``fit`` runs them and with the block replaced by a no-op.  The table is
printed and appended to ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys

import torch

from pyro_causal import Trainer, TrainingConfig, simulate
from pyro_causal import resources, trainer as trainer_module
from pyro_causal.api import prepare_data
from pyro_causal.model import LatentInterventionModel
from pyro_causal.resources import freed_memory_kept
from bench_fit import load, machine, one_fit
from timing import median_step_seconds

CASES = [("linear", None), ("mlp", 1000), ("flow", 1000)]
"""``(density, rows per step)`` at n = 10,000, d = 10: ``fit``'s defaults for each density."""


def worker(density: str, batch, kept: bool, repeats: int) -> float:
    torch.set_num_threads(1)
    mechanism = "linear" if density == "linear" else "mlp"
    data = simulate(num_variables=10, edges_per_node=1.0, num_samples=10000, mechanism=mechanism, seed=0)
    x = torch.as_tensor(prepare_data(data.x)[0], dtype=torch.float32)
    trainer = Trainer(LatentInterventionModel(10, density=density), x, config=TrainingConfig(batch_size=batch))
    with freed_memory_kept() if kept else contextlib.nullcontext():
        return median_step_seconds(trainer, warmup=5, repeats=repeats)


def fit_worker(density: str, kept: bool) -> dict:
    """One whole fit with nothing else set (``bench_fit.one_fit``); without ``kept`` the block is a no-op."""
    if not kept:
        resources.freed_memory_kept = trainer_module.freed_memory_kept = contextlib.nullcontext
    mechanism = "linear" if density == "linear" else "mlp"
    return one_fit(argparse.Namespace(density=density, mechanism=mechanism, seed=0, worker_threads="default", steps=0))


def fits(args) -> list:
    lines = [f"Machine: {machine()}, one process at a time. "
             f"Command: `python bench/bench_memory.py --fit {args.fit} --rounds {args.rounds}`.", "",
             "| density | setting | seconds per fit | Hamming | load before | load after |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for _ in range(args.rounds):
        for setting in ("kept", "default"):
            before = load()
            command = [sys.executable, __file__, "--fit-worker", args.fit, setting]
            out = subprocess.run(command, check=True, capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
            report = json.loads(out.strip().splitlines()[-1])
            lines.append(f"| {args.fit} | {setting} | {report['seconds']:.1f} | {report['hamming']} | {before} | {load()} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting, alternated")
    parser.add_argument("--repeats", type=int, default=30, help="steps timed per process")
    parser.add_argument("--out", default="docs/benchmarks_memory.md")
    parser.add_argument("--fit", choices=("linear", "mlp", "flow"), help="time whole fits of this density")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--fit-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_worker:
        print(json.dumps(fit_worker(args.fit_worker[0], args.fit_worker[1] == "kept")))
        return
    if args.fit:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write("\n" + "\n".join(fits(args)) + "\n")
        return
    if args.worker:
        density, batch, kept = args.worker
        print(json.dumps(worker(density, None if batch == "all" else int(batch), kept == "kept", args.repeats)))
        return
    lines = [f"Machine: {machine()}, one thread per process. "
             f"Command: `python bench/bench_memory.py --rounds {args.rounds} --repeats {args.repeats}`.", "",
             "| density | rows per step | s per step, kept (median of processes) | s per step, glibc defaults | "
             "defaults / kept | load before | load after |", "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for density, batch in CASES:
        before, times = load(), {"kept": [], "default": []}
        for _ in range(args.rounds):
            for setting in ("kept", "default"):
                command = [sys.executable, __file__, "--repeats", str(args.repeats),
                           "--worker", density, str(batch or "all"), setting]
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
                times[setting].append(json.loads(out.strip().splitlines()[-1]))
        kept, default = statistics.median(times["kept"]), statistics.median(times["default"])
        lines.append(f"| {density} | {batch or 'all'} | {kept:.4f} | {default:.4f} | {default / kept:.2f} | "
                     f"{before} | {load()} |")
        print(lines[-1], flush=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Seconds per SVI step and total time of a default linear fit (the setting of the core issue).

10-variable Erdos-Renyi DAG, one expected edge per node, linear Gaussian mechanisms, one
stochastic single-node intervention per variable, 10,000 rows, regimes hidden, default ``fit``.

    python bench/bench_fit.py [--seed 0] [--threads 2] [--density linear]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial

import torch

from pyro_causal import Trainer, TrainingConfig, fit, simulate
from pyro_causal.api import prepare_data
from pyro_causal.densities import ConditionalDensity
from pyro_causal.metrics import hamming_distance
from pyro_causal.model import LatentInterventionModel
from timing import median_step_seconds


def seconds_per_step(x: torch.Tensor, density: str, repeats: int = 30, table: bool = False) -> float:
    """Median seconds of one SVI step; ``table=True`` forces the generic ``(K, n, d)`` likelihood
    table (``ConditionalDensity.component_log_prob``) instead of the density's own closed form."""
    model = LatentInterventionModel(x.shape[1], density=density)
    if table:
        model.density.component_log_prob = partial(ConditionalDensity.component_log_prob, model.density)
    trainer = Trainer(model, x, config=TrainingConfig())
    return median_step_seconds(trainer, warmup=5, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--density", default="linear")
    parser.add_argument("--out", default="docs/benchmarks_fit.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = simulate(num_variables=10, edges_per_node=1.0, num_samples=10000, seed=args.seed)
    x = torch.as_tensor(prepare_data(data.x)[0], dtype=torch.float32)
    step = seconds_per_step(x, args.density)
    table_step = seconds_per_step(x, args.density, table=True)
    start = time.perf_counter()
    result = fit(data.x, density=args.density, seed=args.seed)
    total = time.perf_counter() - start
    start = time.perf_counter()
    fit(data.x, density=args.density, seed=args.seed, held_refit=False)
    without_refit = time.perf_counter() - start
    refit = result.settings["held_refit"]
    refit_note = (f"{result.settings['schedule']['first_round_steps']}-step held refit, {'kept' if refit['kept'] else 'not kept'}"
                  if refit else "no held refit")
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads. "
        f"Command: `python bench/bench_fit.py --seed {args.seed} --threads {args.threads} --density {args.density}`.",
        "",
        "| density | n | d | K | s per SVI step (median) | same, (K, n, d) table path | steps | total fit (s) | "
        "without the held refit (s) | stop | Hamming |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.density} | 10000 | 10 | {result.model.truncation} | {step:.4f} | {table_step:.4f} ({table_step / step:.1f}x) | "
        f"{len(result.elbo_trace)} + {refit_note} | "
        f"{total:.1f} | {without_refit:.1f} ({total / without_refit:.2f}x) | {result.stop_reason} | "
        f"{hamming_distance(data.adjacency, result.adjacency)} |",
    ]
    print("\n".join(lines))
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

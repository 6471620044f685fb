"""Seconds per SVI step with 1 and 2 torch threads, alternated (1, 2, 1, 2) in one run, over
problem sizes and densities: where a second thread starts to pay (``pyro_causal.resources``).

    python bench/bench_threads.py
"""
from __future__ import annotations

import os

import torch

from pyro_causal import Trainer, TrainingConfig, simulate
from pyro_causal.api import prepare_data
from pyro_causal.model import LatentInterventionModel
from timing import median_step_seconds

CASES = [("linear", 10000, None, 10), ("linear", 100000, None, 10), ("linear", 10000, None, 30),
         ("mlp", 10000, 1000, 10), ("mlp", 10000, None, 10), ("flow", 10000, 1000, 10), ("mlp", 10000, 4000, 10)]


def main() -> None:
    print("| density | n | d | rows per step | 1 thread (s) | 2 threads (s) | 1 thread (s) | 2 threads (s) | 2 / 1 | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for density, n, batch, d in CASES:
        data = simulate(num_variables=d, edges_per_node=1.0, num_samples=n, seed=0)
        x = torch.as_tensor(prepare_data(data.x)[0], dtype=torch.float32)
        times = []
        for threads in (1, 2, 1, 2):
            torch.set_num_threads(threads)
            model = LatentInterventionModel(d, density=density)
            trainer = Trainer(model, x, config=TrainingConfig(batch_size=batch))
            times.append(median_step_seconds(trainer, warmup=3, repeats=15))
        ratio = (times[1] + times[3]) / (times[0] + times[2])
        print(f"| {density} | {n} | {d} | {batch or n} | " + " | ".join(f"{t:.4f}" for t in times)
              + f" | {ratio:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()

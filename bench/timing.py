"""Shared timing helper of the benchmarks."""
from __future__ import annotations

import statistics
import time


def median_step_seconds(trainer, warmup: int = 5, repeats: int = 30) -> float:
    """Median wall time of ``trainer.step()`` over ``repeats`` steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        trainer.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

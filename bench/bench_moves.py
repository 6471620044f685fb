"""Seconds of the closed-form mixture moves (``profile_mixture.swap_targets``) with and without
their order moves, by number of variables.

    python bench/bench_moves.py [--variables 10 20] [--samples 10000] [--rounds 1] [--seed 0]

For each ``d``: a default simulated problem (one stochastic intervention per variable, ``d + 1``
regimes), standardised; the mixture the moves start from is the true regimes blurred (``q`` half
one-hot, half a Dirichlet draw; ``pi`` the true targets moved to 0.2 / 0.8), the order reversed.
Each round times ``swap_targets`` with ``order_moves=False`` and then ``True`` in this one process
(one thread), and the table gives each one's seconds and final score, the ratio of the two and the
load average before and after.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_fit import load, machine
from pyro_causal import simulate
from pyro_causal.profile_mixture import ORDER_MOVES_MAX_VARIABLES, swap_targets


def blurred_mixture(d: int, n: int, seed: int):
    """``(x, q, pi, order)``: standardised rows, the blurred true mixture and the reversed order."""
    data = simulate(d, 1.0, n, seed=seed)
    x = torch.tensor((data.x - data.x.mean(0)) / data.x.std(0))
    rng = np.random.default_rng(seed)
    one_hot = np.eye(data.num_regimes)[data.regimes]
    q = torch.tensor(0.5 * one_hot + 0.5 * rng.dirichlet(np.ones(data.num_regimes), n))
    pi = torch.tensor(data.targets, dtype=torch.float64) * 0.6 + 0.2
    pi[0] = 0.0
    return x, q, pi, list(range(d))[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variables", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = load()
    rows = []
    for d in args.variables:
        x, q, pi, order = blurred_mixture(d, args.samples, args.seed)
        for _ in range(args.rounds):
            timed = {}
            for order_moves in (False, True):
                start = time.perf_counter()
                mixture = swap_targets(x, q, pi, order, order_moves=order_moves)
                timed[order_moves] = (time.perf_counter() - start, mixture.score)
            rows.append((d, timed))
    after = load()
    print(f"Machine: {machine()}. Command: `python bench/bench_moves.py --variables "
          f"{' '.join(map(str, args.variables))} --samples {args.samples} --rounds {args.rounds} --seed {args.seed}` "
          f"(one thread; order moves on by default up to {ORDER_MOVES_MAX_VARIABLES} variables). "
          f"Load average before {before}, after {after}.\n")
    print("| d | target moves only (s) | score | with order moves (s) | score | ratio |")
    print("|---|---|---|---|---|---|")
    for d, timed in rows:
        (alone, alone_score), (both, both_score) = timed[False], timed[True]
        print(f"| {d} | {alone:.1f} | {alone_score:.1f} | {both:.1f} | {both_score:.1f} | {both / alone:.2f}x |")


if __name__ == "__main__":
    main()

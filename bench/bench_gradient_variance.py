"""Gradient noise of the target probabilities: exact expectation vs sampled targets.

For a model trained briefly on simulated data, draws the gradient of the loss with respect to
the target logits many times with each estimator and reports, per estimator, the mean squared
deviation from the exact-expectation mean gradient (bias^2 + variance).  Only the estimator of
``E_q(r)`` changes; graph and embedding samples are drawn the same way for all.

    python bench/bench_gradient_variance.py [--draws 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import platform

import torch

from pyro_causal import PenaltySchedule, fit, simulate
from pyro_causal.elbo import elbo_terms


def gradients(model, x, estimator: str, draws: int) -> torch.Tensor:
    out = []
    for _ in range(draws):
        model.zero_grad(set_to_none=True)
        terms = elbo_terms(model, x, assignment="exact", target_estimator=estimator)
        (-terms.elbo / x.shape[0]).backward()
        out.append(model.guide.target_logits.grad.detach().clone().flatten())
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = simulate(num_variables=10, num_samples=10000, seed=args.seed)
    result = fit(data.x, seed=args.seed, schedule=PenaltySchedule(first_round_steps=300, round_steps=50, max_rounds=2))
    model = result.model.train()
    x = torch.as_tensor(result.train_x, dtype=torch.float32)
    torch.manual_seed(args.seed)
    grads = {name: gradients(model, x, name, args.draws) for name in ("exact", "straight-through", "relaxed")}
    reference = grads["exact"].mean(0)
    lines = [
        f"Gradient of the loss per row w.r.t. the target logits, {args.draws} draws each, "
        f"d = 10, n = 10000, K = {model.truncation}, seed {args.seed}.",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}. "
        f"Command: `python bench/bench_gradient_variance.py --draws {args.draws} --seed {args.seed}`.",
        "",
        "| estimator of E_q(r) | mean variance per coordinate | mean squared bias vs exact | ratio of total error to exact |",
        "|---|---|---|---|",
    ]
    base = grads["exact"].var(0).mean().item()
    for name, g in grads.items():
        variance = g.var(0).mean().item()
        bias = ((g.mean(0) - reference) ** 2).mean().item()
        lines.append(f"| {name} | {variance:.3e} | {bias:.3e} | {(variance + bias) / base:.1f} |")
    table = "\n".join(lines)
    print(table)
    with open("docs/benchmarks_gradient_variance.md", "w") as handle:
        handle.write("# Exact target expectation vs sampled targets\n\n" + table + "\n")


if __name__ == "__main__":
    main()

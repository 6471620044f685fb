"""Gradient noise of the target and edge probabilities: exact expectations vs samples.

For a model trained briefly on simulated data, draws the gradient of the loss many times with
each estimator and reports the mean squared deviation from a reference mean gradient
(bias^2 + variance):

* target logits: ``LatentInterventionELBO`` with its closed forms (``E_q(r)`` at the mean, the
  reference) or with ``closed_forms=False`` (straight-through samples of ``r``, sampled sticks,
  Monte Carlo KLs: the trace estimate of the same bound);
* edge logits: the local expectation gradient (unbiased, the reference) or straight-through.

(The Gumbel-softmax relaxation of the paper, measured against the exact expectation before the
bound was read from the traces, is in ``docs/benchmarks_gradient_variance.md``'s history.)

    python bench/bench_gradient_variance.py [--draws 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import platform

import torch

from pyro_causal import FitConfig, ModelOptions, PenaltySchedule, TrainingConfig, fit, simulate
from pyro_causal.elbo import elbo_terms


def gradients(model, x, draws: int, parameter: str, **estimators) -> torch.Tensor:
    """``(draws, size)`` gradients of the loss per row w.r.t. ``model.guide.<parameter>``."""
    out = []
    for _ in range(draws):
        model.zero_grad(set_to_none=True)
        terms = elbo_terms(model, x, assignment="optimal", **estimators)
        (-terms.elbo / x.shape[0]).backward()
        out.append(getattr(model.guide, parameter).grad.detach().clone().flatten())
    return torch.stack(out)


def error_table(grads: dict, reference: str, what: str) -> list:
    base = grads[reference].var(0).mean().item()
    mean = grads[reference].mean(0)
    lines = [f"| estimator of {what} | mean variance per coordinate | mean squared bias vs {reference} | ratio of total error to {reference} |",
             "|---|---|---|---|"]
    for name, g in grads.items():
        variance = g.var(0).mean().item()
        bias = ((g.mean(0) - mean) ** 2).mean().item()
        lines.append(f"| {name} | {variance:.3e} | {bias:.3e} | {(variance + bias) / base:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = simulate(num_variables=10, num_samples=10000, seed=args.seed)
    # Independent edges (the paper's q(A)), as when docs/benchmarks_gradient_variance.md was measured.
    result = fit(data.x,
                 seed=args.seed,
                 config=FitConfig(model=ModelOptions(two_cycles="allow"), training=TrainingConfig(schedule=PenaltySchedule(first_round_steps=300, round_steps=50, max_rounds=2))))
    model = result.model.train()
    x = torch.as_tensor(result.train_x, dtype=torch.float32)
    torch.manual_seed(args.seed)
    targets = {name: gradients(model, x, args.draws, "target_logits", closed_forms=closed)
               for name, closed in (("closed forms", True), ("trace estimate", False))}
    edges = {name: gradients(model, x, args.draws, "edge_logits", graph_estimator=name)
             for name in ("local", "straight-through")}
    edges = {name: g[:, model.guide.free_edges().flatten()] for name, g in edges.items()}
    lines = [
        f"Gradient of the loss per row, {args.draws} draws each, d = 10, n = 10000, K = {model.truncation}, seed {args.seed}.",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}. "
        f"Command: `python bench/bench_gradient_variance.py --draws {args.draws} --seed {args.seed}`.",
        "",
        "Target logits (the graph sampled the same way for all):",
        "",
        *error_table(targets, "closed forms", "the bound"),
        "",
        "Edge logits (the targets at their exact expectation for all; the local estimator is unbiased,",
        "so its mean is the reference):",
        "",
        *error_table(edges, "local", "d E_q(A) / d lambda"),
    ]
    table = "\n".join(lines)
    print(table)
    with open("docs/benchmarks_gradient_variance.md", "w") as handle:
        handle.write("# Exact expectations vs samples: gradient noise\n\n" + table + "\n")


if __name__ == "__main__":
    main()

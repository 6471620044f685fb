"""The defaults that depart from the paper, each against the paper's value (``docs/method.md``, "Departures").

Table 1's protocol (``examples/table1.py``: simulated 10-variable Erdos-Renyi DAGs, linear
Gaussian mechanisms, one stochastic intervention per variable, n = 10,000, graphs 0..4, fit seed
= graph seed), the latent variant unless ``--variant``.  Each setting is ``fit``'s defaults with
one thing changed, to the paper's value where the paper states one.  Only the paper's penalty
loop runs (``FitConfig(search="penalty")``, no order-refit rounds, held refit off: it never changes
the graph), so the ARI is that of the loop's model.

    python examples/departures.py --jobs 2                                  # every setting
    python examples/departures.py --settings ours,"rounds 1000/100" --variant observational
    python examples/departures.py --settings ours,lambda=0 --cell 2 --graphs 3   # e = 4

The table is printed and appended to ``--out`` (default ``docs/history/results.md``) with the command.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.distributions import Bernoulli
from torch.distributions import kl_divergence

from pyro_causal import (AfterTraining, FitConfig, LatentInterventionModel, ModelOptions, PenaltySchedule, Priors,
                         TrainingConfig, fit)
from pyro_causal.api import default_graph_estimator
from pyro_causal.model import default_truncation
from pyro_causal.metrics import adjusted_rand_index, f1, hamming_distance, shd
from pyro_causal.posterior import exact_assignment_probs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling examples, also when loaded by path
from results_record import machine_text  # noqa: E402
from table1 import SWEEP, map_in_processes, simulate_cell, variant_options, write_table  # noqa: E402


class PaperGraphScore(LatentInterventionModel):
    """The model plus a factor ``H(q(A))``: the bound's graph term ``-KL(q(A) || p(A))`` becomes
    ``E_q[log p(A)]``, the paper's score ``E_{G ~ q}[ELBO + log p(G)]`` (eqs. 6, 12), which has no
    entropy of ``q(A)``.  ``H = (free edges) log 2 - KL(q(A) || Bernoulli(1/2))``."""

    @pyro.nn.pyro_method
    def model(self, x, regimes=None, targets=None, batch_size=None, rows=None):
        guide = self.guide
        free = guide.free_edges()
        half = Bernoulli(logits=torch.zeros_like(guide.edge_logits))
        to_uniform = torch.where(free, kl_divergence(guide.graph_dist(free), half), torch.zeros(()))
        pyro.factor("graph_entropy", free.sum() * math.log(2.0) - to_uniform.sum())
        return super().model(x, regimes, targets, batch_size, rows)


#: name -> what changes: ``priors`` / ``training`` / ``model`` fields, or ``program`` (a model class).
SETTINGS = {
    "ours": {},
    "alpha=9": {"priors": {"alpha": 9.0}},
    "h=248": {"model": {"embedding_dim": 248}},
    "lambda=0": {"priors": {"edge_logit": 0.0}},
    "gamma=-0.1": {"priors": {"target_logit": -0.1}},
    "lr=10^-2.5": {"training": {"learning_rate": 10 ** -2.5}},
    "rounds 500/50": {"schedule": {"first_round_steps": 500, "round_steps": 50, "max_rounds": 100}},
    "rounds 1000/100": {"schedule": {"first_round_steps": 1000, "round_steps": 100, "max_rounds": 60}},
    "amortized q(z)": {"training": {"assignment": "amortized"}},
    "no graph entropy": {"program": PaperGraphScore},
}


def fit_setting(task, args) -> dict:
    """Fit one ``(setting, graph seed)``: Hamming distance, SHD, F1, ARI, edges, steps, seconds."""
    torch.set_num_threads(1)
    name, seed = task
    change = SETTINGS[name]
    data = simulate_cell(SWEEP[args.cell], args, seed)
    options = variant_options(args.variant, data, seed, 0.1)
    estimator = default_graph_estimator("linear", options.get("regimes"), args.variant == "observational")
    training = TrainingConfig(graph_estimator=estimator, **change.get("training", {}))
    if "schedule" in change:
        training = replace(training, schedule=PenaltySchedule(**change["schedule"]))
    if args.quick:  # a smoke test: the same tiny schedule for every setting
        training = replace(training, schedule=PenaltySchedule(first_round_steps=10, round_steps=5, max_rounds=2))
    priors = Priors(**change.get("priors", {})).resolved("penalty")
    config = FitConfig(search="penalty", training=None if training == TrainingConfig(graph_estimator=estimator) else training,
                       model=ModelOptions(**change.get("model", {})), after_training=AfterTraining(held_refit=False, order_refit=0))
    model = None
    if "program" in change:  # built from the graph seed: fit starts every restart from a copy of it
        pyro.set_rng_seed(seed)
        d = data.x.shape[1]
        model = change["program"](d, truncation=1 if args.variant == "observational" else default_truncation(d),
                                  alpha=priors.alpha, target_logit=priors.target_logit, edge_logit=priors.edge_logit)
    start = time.perf_counter()
    result = fit(data.x, seed=seed, priors=None if model is not None else priors, config=config, model=model, **options)
    ari = None if args.variant == "observational" else adjusted_rand_index(data.regimes, exact_assignment_probs(result).argmax(1))
    return {"hd": hamming_distance(data.adjacency, result.adjacency), "shd": shd(data.adjacency, result.adjacency),
            "f1": f1(data.adjacency, result.adjacency), "ari": ari, "edges": int(result.adjacency.sum()),
            "steps": len(result.elbo_trace), "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from: {', '.join(SETTINGS)}")
    parser.add_argument("--variant", default="latent", choices=("latent", "observational", "unknown", "known"))
    parser.add_argument("--cell", type=int, default=0, help="index into table1.SWEEP (0: the paper's e = 1, 2: e = 4)")
    parser.add_argument("--graphs", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=1, help="fits run in parallel, one thread each")
    parser.add_argument("--quick", action="store_true", help="a few steps per fit, whatever the setting (smoke test)")
    parser.add_argument("--out", default="docs/history/results.md", help="markdown log the table is appended to")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.mechanism = "linear"
    names = args.settings.split(",")
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; choose from {', '.join(SETTINGS)}")
    seeds = range(args.first_seed, args.first_seed + args.graphs)
    tasks = [(name, seed) for name in names for seed in seeds]
    rows = {name: [] for name in names}
    for (name, seed), row in zip(tasks, map_in_processes(partial(fit_setting, args=args), tasks, args.jobs)):
        rows[name].append(row)
        print(f"{name:>18} graph {seed}: HD {row['hd']:3d}  edges {row['edges']:3d}  ARI "
              f"{'-' if row['ari'] is None else format(row['ari'], '.2f')}  {row['steps']} steps  {row['seconds']:.0f}s", flush=True)
    command = "python examples/departures.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    cell = SWEEP[args.cell]
    lines = [f"### Departures from the paper, one at a time: {args.variant}, {cell.name} "
             f"(d = {cell.num_variables}, e = {cell.edges_per_node:g}), graphs {seeds.start}..{seeds.stop - 1}", "",
             f"Command: `{command}` ({machine_text()}, 1 thread per fit, "
             f"{args.jobs} at a time). Penalty loop only (no held refit).", "",
             "| setting | Hamming (mean) | per graph | SHD | F1 | ARI | edges | steps | s per fit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, values in rows.items():
        mean = lambda key: np.mean([v[key] for v in values])  # noqa: E731
        ari = "—" if values[0]["ari"] is None else f"{mean('ari'):.2f}"
        lines.append(f"| {name} | {mean('hd'):.1f} | {' '.join(str(v['hd']) for v in values)} | {mean('shd'):.1f} | "
                     f"{mean('f1'):.2f} | {ari} | {mean('edges'):.1f} | {mean('steps'):.0f} | {mean('seconds'):.0f} |")
    write_table("\n".join(lines) + "\n", args)


if __name__ == "__main__":
    main()

"""Table 1 of the paper at a scale that runs on 2 CPU cores: Hamming distance per variant.

Simulated 10-variable Erdos-Renyi DAGs, one single-node intervention per variable plus the
observational regime, n rows split evenly; data standardised by ``fit`` (raw simulated linear
data leak the causal order through growing variances).  For each graph seed and each variant it
fits the model and records the Hamming distance (reversal = 2), SHD, F1 and, for the latent
variant, the adjusted Rand index of the argmax assignments against the true regimes.

    python examples/table1.py --mechanism linear --density linear --variants latent --graphs 5
    python examples/table1.py --variants latent,unknown,known,observational,semi --graphs 5

Results are printed and appended to ``--out`` (default ``docs/history/results.md``, the log) with the
command; ``--record PATH`` also writes the run's JSON record, which ``docs/make_results.py`` renders
into ``docs/results.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch

from pyro_causal import (AfterTraining, EdgeSearch, FitConfig, ModelOptions, PenaltySchedule, Priors, TrainingConfig, fit,
                         fit_with_graph_held, simulate)
from pyro_causal.api import default_graph_estimator
from pyro_causal.posterior import exact_assignment_probs
from pyro_causal.metrics import adjusted_rand_index, f1, hamming_distance, shd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling examples, also when loaded by path
from results_record import machine_text, write_record  # noqa: E402

PAPER = {  # Table 1, e = 1 / e = 4, stochastic then imperfect interventions
    ("linear", "stochastic", 1): {"latent": "5.9 ± 6.2", "unknown": "3.4 ± 3.2", "known": "0.5 ± 1.3", "observational": "10.3 ± 7.8"},
    ("mlp", "stochastic", 1): {"latent": "12.2 ± 3.9", "unknown": "10.3 ± 2.5", "known": "7.0 ± 3.6", "observational": "13.7 ± 3.8"},
    ("flow", "stochastic", 1): {"latent": "8.7 ± 6.6", "unknown": "8.0 ± 2.7", "known": "6.6 ± 2.2", "observational": "11.3 ± 5.0"},
    ("linear", "stochastic", 4): {"latent": "27.2 ± 6.2", "unknown": "24.1 ± 5.8", "known": "15.6 ± 6.0", "observational": "39.6 ± 5.0"},
    ("mlp", "stochastic", 4): {"latent": "35.8 ± 3.8", "unknown": "30.3 ± 5.3", "known": "27.7 ± 4.3", "observational": "37.5 ± 5.2"},
    ("flow", "stochastic", 4): {"latent": "36.1 ± 4.4", "unknown": "35.5 ± 8.1", "known": "31.5 ± 5.6", "observational": "40.2 ± 6.9"},
    ("linear", "imperfect", 1): {"latent": "5.8 ± 4.2", "unknown": "6.2 ± 3.1", "known": "4.7 ± 3.6", "observational": "10.4 ± 2.9"},
    ("mlp", "imperfect", 1): {"latent": "9.3 ± 2.4", "unknown": "8.9 ± 2.5", "known": "7.8 ± 3.9", "observational": "10.5 ± 2.8"},
    ("flow", "imperfect", 1): {"latent": "8.8 ± 3.0", "unknown": "9.1 ± 3.5", "known": "7.9 ± 1.4", "observational": "11.5 ± 5.4"},
}


class Cell(NamedTuple):
    """What the simulator draws: graph size and density, mechanism scales, interventions."""

    name: str
    num_variables: int = 10
    edges_per_node: float = 1.0
    weight_range: Tuple[float, float] = (0.5, 2.0)
    noise_std_range: Tuple[float, float] = (0.5, 1.0)
    intervention_mean: float = 2.0
    intervention: str = "stochastic"


#: The sweep of ``--sweep``: the paper's setting, then one factor changed at a time (e, d, weights
#: DCDI's size, noise larger than the weights, weaker interventions, imperfect interventions).
SWEEP = (
    Cell("paper e=1"),
    Cell("e=2", edges_per_node=2.0),
    Cell("e=4", edges_per_node=4.0),
    Cell("d=20", num_variables=20),
    Cell("weights 0.25-1", weight_range=(0.25, 1.0)),
    Cell("noise sd 1-1.5", noise_std_range=(1.0, 1.5)),
    Cell("intervention mean 1", intervention_mean=1.0),
    Cell("imperfect", intervention="imperfect"),
    Cell("e=4, weights 0.25-1, noise 1-1.5", edges_per_node=4.0, weight_range=(0.25, 1.0), noise_std_range=(1.0, 1.5)),
)


def cell_of(args) -> Cell:
    """The single cell described by the command line's generator options."""
    return Cell("command line", args.num_variables, args.edges_per_node, tuple(args.weight_range),
                tuple(args.noise_std), args.intervention_mean, args.intervention)


def simulate_cell(cell: Cell, args, seed: int):
    return simulate(cell.num_variables, cell.edges_per_node, args.samples, args.mechanism, cell.intervention,
                    seed=seed, weight_range=cell.weight_range, noise_std_range=cell.noise_std_range,
                    intervention_mean=cell.intervention_mean)


def variant_options(variant: str, data, seed: int, labelled: float) -> dict:
    """The keyword arguments of ``fit`` that make each variant."""
    if variant == "latent":
        return {}
    if variant == "observational":
        return {"observational": True}
    if variant == "unknown":
        return {"regimes": data.regimes}
    if variant == "known":
        return {"regimes": data.regimes, "targets": data.targets}
    if variant == "semi":
        regimes = data.regimes.copy()
        hidden = np.random.default_rng(seed).random(len(regimes)) >= labelled
        regimes[hidden] = -1
        return {"regimes": regimes}
    raise SystemExit(f"unknown variant {variant!r}")


def map_in_processes(function, tasks, jobs: int):
    """``function`` over ``tasks`` in order, ``jobs`` processes at a time (in this one if 1)."""
    if jobs <= 1:
        yield from map(function, tasks)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(function, tasks)


def run_one(task, args, schedule):
    """Fit one (graph seed, variant): ``(HD, SHD, F1, ARI, seconds, stop reason, ELBO per row)``."""
    torch.set_num_threads(1)
    seed, variant = task[:2]
    data = simulate_cell(task[2] if len(task) > 2 else cell_of(args), args, seed)
    options = variant_options(variant, data, seed, args.labelled)
    estimator = args.graph_estimator or default_graph_estimator(args.density, options.get("regimes"), False)
    config = FitConfig(
        search=args.search,
        training=TrainingConfig(schedule=schedule or PenaltySchedule(), graph_estimator=estimator),
        model=ModelOptions(two_cycles=args.two_cycles,
                           density_options={"activation": args.activation} if args.activation else None),
        after_training=AfterTraining(held_refit=args.held_refit and not args.true_graph, order_refit=args.order_refit,
                                     target_moves=args.target_moves,
                                     edge_search=EdgeSearch(rounds=args.edge_search,
                                                            moves=tuple(args.search_moves.split(",")))))
    start = time.perf_counter()
    result = fit(data.x, density=args.density, intervention=args.model_intervention, seed=seed + args.fit_seed_offset,
                 batch_size=args.batch_size, restarts=args.restarts, priors=Priors(edge_logit=args.edge_logit),
                 **options, config=config)
    if args.true_graph:  # hold the graph at the truth: the ELBO a perfect search would reach
        result = fit_with_graph_held(result, data.adjacency, restarts=args.restarts)
    took = time.perf_counter() - start
    # For unknown/known this is the posterior of a model fitted with the labels: the ceiling
    # of what any assignment can reach on these data (regimes overlap).
    ari = adjusted_rand_index(data.regimes, exact_assignment_probs(result).argmax(1)) if variant != "observational" else np.nan
    return (hamming_distance(data.adjacency, result.adjacency), shd(data.adjacency, result.adjacency),
            f1(data.adjacency, result.adjacency), ari, took, result.stop_reason, result.elbo)


def bayes_ari_scores(args) -> list:
    """The ARI of the Bayes classifier (true SCM, true proportions) per graph; empty without a closed form."""
    scores = []
    for seed in range(args.first_seed, args.first_seed + args.graphs):
        data = simulate_cell(cell_of(args), args, seed)
        try:
            scores.append(adjusted_rand_index(data.regimes, data.regime_posterior().argmax(1)))
        except ValueError:  # non-additive mechanisms: no closed-form density
            return []
    return scores


def bayes_ari_sentence(scores: list) -> str:
    """The sentence under the table: the Bayes classifier's ARI, the ceiling of any assignment's."""
    if not scores:
        return "The Bayes classifier's ARI is not available for these mechanisms."
    return (f"ARI of the Bayes classifier (argmax of `SimulatedData.regime_posterior()`, the true SCM): "
            f"{np.mean(scores):.2f} ({' '.join(f'{v:.2f}' for v in scores)}), the ceiling of any method's on these data.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mechanism", default="linear", choices=("linear", "mlp", "nonadditive"))
    parser.add_argument("--density", default="linear")
    parser.add_argument("--intervention", default="stochastic", choices=("stochastic", "imperfect"))
    parser.add_argument("--edges-per-node", type=float, default=1.0)
    parser.add_argument("--num-variables", type=int, default=10)
    parser.add_argument("--weight-range", type=float, nargs=2, default=(0.5, 2.0), metavar=("LOW", "HIGH"),
                        help="bounds of |w_ij| of the simulated linear mechanisms")
    parser.add_argument("--noise-std", type=float, nargs=2, default=(0.5, 1.0), metavar=("LOW", "HIGH"),
                        help="bounds of each variable's noise standard deviation")
    parser.add_argument("--intervention-mean", type=float, default=2.0,
                        help="mean of a stochastic intervention's N(mean, 1); noise mean of an imperfect one")
    parser.add_argument("--sweep", action="store_true",
                        help="run every cell of SWEEP (latent and observational) instead of one setting")
    parser.add_argument("--cells", help="with --sweep: comma-separated indices of the SWEEP cells to run (default all)")
    parser.add_argument("--variants", default="latent")
    parser.add_argument("--graphs", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--labelled", type=float, default=0.1, help="fraction of labelled rows (semi)")
    parser.add_argument("--model-intervention", default="perfect", choices=("perfect", "imperfect"))
    parser.add_argument("--max-rounds", type=int, help="cap the penalty rounds (smoke tests); default: fit's")
    parser.add_argument("--tolerance", type=float,
                        help="the penalty loop stops when h is below this (default: fit's, 1e-8)")
    parser.add_argument("--first-round-steps", type=int, help="default: fit's")
    parser.add_argument("--round-steps", type=int, help="SVI steps of each penalty round after the first (default: fit's)")
    parser.add_argument("--initial-penalty", type=float, help="mu_0 of the penalty loop (default: fit's, 1e-2)")
    parser.add_argument("--batch-size", type=int, help="rows per SVI step (default: fit's choice, resources.choose_batch_size)")
    parser.add_argument("--graph-estimator", choices=("straight-through", "local"), help="default: fit's")
    parser.add_argument("--fit-seed-offset", type=int, default=0, help="fit graph g from seed g + offset (robustness)")
    parser.add_argument("--two-cycles", default="resolve", choices=("resolve", "allow"))
    parser.add_argument("--edge-logit", type=float, help="fit's Priors(edge_logit=...) (default: fit's, Priors.resolved)")
    parser.add_argument("--restarts", type=int, default=1, help="fits per graph, the highest ELBO kept")
    parser.add_argument("--held-refit", action=argparse.BooleanOptionalAction, default=True,
                        help="fit's held_refit: refit the mixture with the graph held at the DAG found (default on)")
    parser.add_argument("--search", choices=("order", "penalty"), help="fit's search: order or penalty (default: fit's)")
    parser.add_argument("--order-refit", type=int, help="fit's order_refit: rounds of order search + refit (default: fit's)")
    parser.add_argument("--target-moves", action=argparse.BooleanOptionalAction, default=True,
                        help="fit's target_moves: move the mixture's targets and order before the first order refit (default on)")
    parser.add_argument("--edge-search", type=int, default=0, help="fit's edge_search: rounds of held-graph local search (0 = off)")
    parser.add_argument("--search-moves", default="reverse,remove", help="fit's search_moves, comma-separated")
    parser.add_argument("--activation", choices=("leaky_relu", "tanh"), help="hidden activation of the MLP density")
    parser.add_argument("--true-graph", action="store_true", help="fix the graph at the truth (ELBO of a perfect search)")
    parser.add_argument("--jobs", type=int, default=1, help="fits run in parallel, one thread each")
    parser.add_argument("--out", default="docs/history/results.md", help="markdown log the table is appended to")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--record", metavar="PATH", help="also write the run's JSON record (docs/make_results.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = args.variants.split(",")
    schedule = schedule_of(args)
    if args.sweep:
        return run_sweep(args, schedule, argv)
    tasks = [(seed, variant) for seed in range(args.first_seed, args.first_seed + args.graphs) for variant in variants]
    rows = {v: [] for v in variants}
    for (seed, variant), row in zip(tasks, map_in_processes(partial(run_one, args=args, schedule=schedule),
                                                            tasks, args.jobs)):
        rows[variant].append(row)
        print(f"seed {seed} {variant:>13}: HD {row[0]:3d}  SHD {row[1]:3d}  F1 {row[2]:.2f}  "
              f"ARI {row[3]:.2f}  ELBO/row {row[6]:.3f}  {row[4]:.0f}s  ({row[5]})", flush=True)
    key = ("flow" if args.density == "flow" else args.mechanism if args.mechanism != "nonadditive" else "flow",
           args.intervention, int(args.edges_per_node))
    paper = PAPER.get(key, {})
    command = "python examples/table1.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"### {args.mechanism} mechanisms, {args.density} density, {args.intervention} interventions, "
        f"e = {args.edges_per_node:g}, n = {args.samples}, graphs seeds {args.first_seed}..{args.first_seed + args.graphs - 1}",
        "",
        f"Command: `{command}` ({machine_text()}, 1 thread per fit, {args.jobs} at a time).",
        "",
        "| variant | Hamming (mean ± sd) | per graph | SHD | F1 | ARI of argmax q(z) | s per fit | paper (Hamming) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    records = []
    for variant, values in rows.items():
        a = np.array([v[:5] for v in values], dtype=float)
        name = "semi-supervised ({:.0%} labelled)".format(args.labelled) if variant == "semi" else variant
        records.append({"variant": name, "hamming": [int(v) for v in a[:, 0]], "mean": a[:, 0].mean(), "sd": a[:, 0].std(),
                        "shd": a[:, 1].mean(), "f1": a[:, 2].mean(),
                        "ari": None if variant == "observational" else float(np.mean(a[:, 3])),
                        "seconds": a[:, 4].mean(), "paper": paper.get(variant)})
        lines.append(
            f"| {name} | {a[:, 0].mean():.1f} ± {a[:, 0].std():.1f} | {' '.join(str(int(v)) for v in a[:, 0])} | "
            f"{a[:, 1].mean():.1f} | {a[:, 2].mean():.2f} | {'—' if variant == 'observational' else format(np.mean(a[:, 3]), '.2f')} | "
            f"{a[:, 4].mean():.0f} | {paper.get(variant, '—')} |"
        )
    lines.append("")
    bayes = bayes_ari_scores(args)
    lines.append("ARI for unknown/known is the exact posterior of a model fitted with the labels. "
                 + bayes_ari_sentence(bayes))
    write_table("\n".join(lines) + "\n", args)
    if args.record:
        write_record(args.record, "table1", setting_text(args), command,
                     f"graphs {args.first_seed}..{args.first_seed + args.graphs - 1}, fit seed = graph seed + {args.fit_seed_offset}",
                     records, jobs=args.jobs, options=options_text(args),
                     ari_ceiling=float(np.mean(bayes)) if bayes else None)


def setting_text(args) -> str:
    """The simulated data of a run, in words: what differs from the paper's cell is named."""
    text = f"{args.mechanism}, {args.intervention}, d = {args.num_variables}, e = {args.edges_per_node:g}, n = {args.samples}"
    defaults = Cell._field_defaults
    if tuple(args.weight_range) != defaults["weight_range"]:
        text += f", weights {args.weight_range[0]:g}-{args.weight_range[1]:g}"
    if tuple(args.noise_std) != defaults["noise_std_range"]:
        text += f", noise sd {args.noise_std[0]:g}-{args.noise_std[1]:g}"
    if args.intervention_mean != defaults["intervention_mean"]:
        text += f", intervention mean {args.intervention_mean:g}"
    return text


def schedule_of(args) -> Optional[PenaltySchedule]:
    """The penalty schedule the command line sets (``None``: fit's default)."""
    if not (args.max_rounds or args.first_round_steps or args.round_steps or args.tolerance or args.initial_penalty):
        return None
    defaults = PenaltySchedule()
    return PenaltySchedule(first_round_steps=args.first_round_steps or defaults.first_round_steps,
                           round_steps=args.round_steps or min(defaults.round_steps, args.first_round_steps or defaults.round_steps),
                           max_rounds=args.max_rounds or defaults.max_rounds,
                           tolerance=args.tolerance or defaults.tolerance,
                           initial_penalty=args.initial_penalty or defaults.initial_penalty)


def options_text(args) -> str:
    """``fit``'s options of a run that differ from its defaults ("defaults" when none do)."""
    chosen = [f"density {args.density}"] if args.density != "linear" else []
    chosen += [f"--{name.replace('_', '-')} {value}" for name, value in (
        ("model_intervention", args.model_intervention if args.model_intervention != "perfect" else None),
        ("search", args.search), ("batch_size", args.batch_size), ("graph_estimator", args.graph_estimator),
        ("order_refit", args.order_refit), ("edge_logit", args.edge_logit),
        ("edge_search", args.edge_search or None), ("restarts", args.restarts if args.restarts > 1 else None),
        ("activation", args.activation), ("two_cycles", args.two_cycles if args.two_cycles != "resolve" else None),
        ("max_rounds", args.max_rounds), ("first_round_steps", args.first_round_steps), ("round_steps", args.round_steps),
        ("tolerance", args.tolerance), ("initial_penalty", args.initial_penalty)) if value is not None]
    chosen += ["--no-target-moves"] * (not args.target_moves)
    chosen += ["--no-held-refit"] * (not args.held_refit)
    chosen += ["--true-graph"] * args.true_graph
    return ", ".join(chosen) or "defaults"


def write_table(table: str, args) -> None:
    print(table)
    if not args.no_write:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n" + table)


def run_sweep(args, schedule, argv) -> dict:
    """Latent and observational fits on every cell of :data:`SWEEP`, beside the empty graph.

    Returns ``{cell name: {"latent": [HD per graph], "observational": [...], "empty": [...]}}``.
    """
    seeds = range(args.first_seed, args.first_seed + args.graphs)
    cells = [SWEEP[int(i)] for i in args.cells.split(",")] if args.cells else list(SWEEP)
    tasks = [(seed, variant, cell) for cell in cells for seed in seeds for variant in ("latent", "observational")]
    found = {cell.name: {"latent": [], "observational": [], "ari": []} for cell in cells}
    for (seed, variant, cell), row in zip(tasks, map_in_processes(partial(run_one, args=args, schedule=schedule),
                                                                  tasks, args.jobs)):
        found[cell.name][variant].append(row[0])
        if variant == "latent":
            found[cell.name]["ari"].append(row[3])
        print(f"{cell.name:>32} seed {seed} {variant:>13}: HD {row[0]:3d}  SHD {row[1]:3d}  F1 {row[2]:.2f}  "
              f"ARI {row[3]:.2f}  {row[4]:.0f}s", flush=True)
    command = "python examples/table1.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"### Sweep: {args.mechanism} mechanisms, {args.density} density, n = {args.samples}, "
        f"graph seeds {seeds.start}..{seeds.stop - 1}",
        "",
        f"Command: `{command}` ({machine_text()}, 1 thread per fit, {args.jobs} at a time). "
        "Hamming distance (reversal = 2), mean over graphs, per graph in brackets; the empty graph's is the "
        "number of true edges; Bayes ARI is the ARI of the classifier that knows the SCM and the regimes.",
        "",
        "| cell | d | e | weights | noise sd | int. mean | interventions | latent | observational | empty "
        "| latent < obs. | ARI latent | Bayes ARI | paper latent / obs. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary, rows = {}, []
    for cell in cells:
        empty, bayes = [], []
        for seed in seeds:
            data = simulate_cell(cell, args, seed)
            empty.append(int(data.adjacency.sum()))
            try:
                bayes.append(adjusted_rand_index(data.regimes, data.regime_posterior().argmax(1)))
            except ValueError:  # non-additive mechanisms: no closed-form density
                bayes.append(np.nan)
        values = found[cell.name]
        latent, observational = np.array(values["latent"]), np.array(values["observational"])
        paper = PAPER.get((args.mechanism, cell.intervention, int(cell.edges_per_node)), {})
        defaults = Cell._field_defaults
        as_paper = (cell.num_variables, cell.weight_range, cell.noise_std_range, cell.intervention_mean) == (
            10, defaults["weight_range"], defaults["noise_std_range"], defaults["intervention_mean"])
        paper_text = f"{paper['latent']} / {paper['observational']}" if paper and as_paper else "—"
        lines.append(
            f"| {cell.name} | {cell.num_variables} | {cell.edges_per_node:g} | {cell.weight_range[0]:g}-{cell.weight_range[1]:g} "
            f"| {cell.noise_std_range[0]:g}-{cell.noise_std_range[1]:g} | {cell.intervention_mean:g} | {cell.intervention} "
            f"| {latent.mean():.1f} ({' '.join(map(str, latent))}) | {observational.mean():.1f} ({' '.join(map(str, observational))}) "
            f"| {np.mean(empty):.1f} | {'yes' if latent.mean() < observational.mean() else '**no**'} "
            f"| {np.mean(values['ari']):.2f} | {np.mean(bayes):.2f} | {paper_text} |"
        )
        summary[cell.name] = {"latent": latent.tolist(), "observational": observational.tolist(), "empty": empty}
        rows.append({"cell": cell.name, "d": cell.num_variables, "e": cell.edges_per_node,
                     "weights": list(cell.weight_range), "noise_sd": list(cell.noise_std_range),
                     "intervention_mean": cell.intervention_mean, "interventions": cell.intervention,
                     "latent": latent.tolist(), "observational": observational.tolist(), "empty": empty,
                     "ari": float(np.mean(values["ari"])), "ari_ceiling": float(np.nanmean(bayes)),
                     "paper": paper_text if paper_text != "—" else None})
    write_table("\n".join(lines) + "\n", args)
    if args.record:
        write_record(args.record, "sweep", f"{args.mechanism}, {args.density} density, n = {args.samples}", command,
                     f"graphs {seeds.start}..{seeds.stop - 1}, fit seed = graph seed + {args.fit_seed_offset}",
                     rows, jobs=args.jobs, options=options_text(args))
    return summary


if __name__ == "__main__":
    main()

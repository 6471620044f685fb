"""The paper's cause-effect pairs (section 4, Figure 3): Hamming distance 0, 1 or 2 per pair.

Each pair is a two-variable linear Gaussian SCM whose graph is ``A -> B``, ``B -> A`` or no edge
(1/3 each; all three share one Markov equivalence class, so observational data cannot tell
them apart), sampled as 333 observational rows, 333 with ``A`` intervened on and 333 with ``B``
(:func:`pyro_causal.simulate_cause_effect`, pair ``i`` from seed ``i``).  Every pair is fitted
with ``fit``'s defaults in each variant of section 3.9 (``latent`` hides the regimes) and scored
by Hamming distance: 0 right, 1 an edge missing or extra, 2 reversed.  Beside each pair it
prints which graph the model itself ranks first with every row in its true regime
(:func:`profile_ranking`); ``--ranking-only`` prints just that, without fitting.

    python examples/cause_effect.py                                   # latent, 30 pairs
    python examples/cause_effect.py --variants latent,unknown,known,observational
    python examples/cause_effect.py --seeds 11,19,21                  # the pairs given
    python examples/cause_effect.py --ranking-only --model-intervention imperfect

The histogram is saved to ``--figure`` (default ``docs/cause_effect.png``) and the table appended
to ``--out`` (default ``docs/history/results.md``, the log) with the command; ``--record PATH`` also
writes the run's JSON record, which ``docs/make_results.py`` renders into ``docs/results.md``.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pyro_causal import AfterTraining, EdgeSearch, FitConfig, PenaltySchedule, Priors, TrainingConfig, fit, simulate_cause_effect
from pyro_causal.api import default_graph_estimator
from pyro_causal.metrics import hamming_distance
from pyro_causal.order_search import component_moments, graph_scores
from pyro_causal.search import graph_log_prior

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling examples, also when loaded by path
from sachs import QUICK, append_section, command_line  # noqa: E402
from results_record import write_record  # noqa: E402
from table1 import map_in_processes, variant_options  # noqa: E402

GRAPHS = ("A -> B", "B -> A", "no edge")


def true_graph(adjacency: np.ndarray) -> str:
    """Which of :data:`GRAPHS` a ``(2, 2)`` adjacency is."""
    return GRAPHS[0] if adjacency[0, 1] else GRAPHS[1] if adjacency[1, 0] else GRAPHS[2]


def profile_ranking(data, perfect: bool, priors: Priors = Priors().resolved("penalty")) -> Dict[str, float]:
    """The model's own score of each of :data:`GRAPHS` when the mixture is the truth's, in nats.

    Rows assigned to their true regimes, every mechanism at its maximum-likelihood value
    (:func:`~pyro_causal.order_search.graph_scores`), the targets of each regime chosen to
    maximise the likelihood plus their ``Bernoulli(sigmoid(gamma))`` prior, plus ``log p(G)``.
    What a fit's bound can tell apart at best: every term it adds (the mixture's and the
    embeddings' KLs) is the same for the three graphs once the regimes are found.
    """
    x = torch.as_tensor(data.x, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    regimes = torch.as_tensor(data.regimes)
    moments = component_moments(x, torch.nn.functional.one_hot(regimes, int(regimes.max()) + 1))
    K, d = moments.shape[0], x.shape[1]
    graphs = torch.tensor([[[0, 1], [0, 0]], [[0, 0], [1, 0]], [[0, 0], [0, 0]]])  # the order of GRAPHS
    log_on, log_off = (float(torch.nn.functional.logsigmoid(torch.tensor(v))) for v in (priors.target_logit, -priors.target_logit))
    best = torch.full((len(GRAPHS),), -torch.inf, dtype=torch.float64)
    for chosen in itertools.product((0.0, 1.0), repeat=(K - 1) * d):  # 16 target sets on two variables
        targets = torch.tensor(chosen, dtype=torch.float64).reshape(K - 1, d)
        prior = float((targets * log_on + (1 - targets) * log_off).sum())
        pi = torch.cat([torch.zeros(1, d, dtype=torch.float64), targets])
        best = torch.maximum(best, graph_scores(moments, pi, graphs, perfect) + prior)
    logits = priors.logits(d)
    return {g: float(best[i]) + graph_log_prior(graphs[i].numpy(), logits) for i, g in enumerate(GRAPHS)}


def fit_pair(task, samples: int, quick: bool, intervention: str, restarts: int = 1,
             graph_estimator: Optional[str] = None, edge_search: Optional[int] = None, search: Optional[dict] = None,
             generator: Optional[dict] = None, order_refit: Optional[int] = None) -> dict:
    """Fit one ``(pair seed, variant)``: a record (graph, hd, seconds, stop reason).

    ``generator``: keyword arguments of :func:`simulate_cause_effect` (weight and noise ranges...);
    ``edge_search``, ``order_refit``: ``None`` keeps ``fit``'s default."""
    torch.set_num_threads(1)
    seed, variant = task
    data = simulate_cause_effect(samples, seed, **(generator or {}))
    start = time.perf_counter()
    options = variant_options(variant, data, seed, labelled=0.1)
    estimator = graph_estimator or default_graph_estimator("linear", options.get("regimes"), False)
    training = TrainingConfig(schedule=QUICK if quick else PenaltySchedule(), graph_estimator=estimator)
    after = AfterTraining(order_refit=order_refit, edge_search=EdgeSearch(**({} if edge_search is None else {"rounds": edge_search}),
                                                 **(search or {})))
    result = fit(data.x, names=data.names, seed=seed, intervention=intervention, restarts=restarts, **options,
                 config=FitConfig(training=training, after_training=after))
    searched = result.records.get("edge_search")
    before = result.adjacency
    if searched is not None:  # the DAG the search started from: the fit's without the search
        before = np.zeros_like(data.adjacency)
        for i, j in searched["start_edges"]:
            before[i, j] = 1
    ranking = profile_ranking(data, intervention == "perfect")
    first, second = sorted(ranking.values(), reverse=True)[:2]
    return {"graph": true_graph(data.adjacency), "seconds": time.perf_counter() - start,
            "hd": hamming_distance(data.adjacency, result.adjacency),
            "profile_graph": max(ranking, key=ranking.get), "profile_margin": first - second,
            "hd_before_search": hamming_distance(data.adjacency, before), "stop": result.stop_reason}


def print_rankings(seeds: Sequence[int], samples: int, perfect: bool, generator: dict) -> dict:
    """``--ranking-only``: :func:`profile_ranking` of every pair, and the pairs whose true graph it
    ranks first (a record row: ``right``, ``pairs``, ``right_by_graph``)."""
    right = {g: [0, 0] for g in GRAPHS}
    for seed in seeds:
        data = simulate_cause_effect(samples, seed, **generator)
        truth, ranking = true_graph(data.adjacency), profile_ranking(data, perfect)
        rival = max(v for g, v in ranking.items() if g != truth)
        right[truth][0] += ranking[truth] > rival
        right[truth][1] += 1
        print(f"pair {seed:2d} ({truth:>7}): " + ", ".join(f"{g} {v - ranking[truth]:+.1f}" for g, v in ranking.items())
              + f" nats against the truth; truth first by {ranking[truth] - rival:+.1f}", flush=True)
    total = sum(r[0] for r in right.values())
    model = "perfect" if perfect else "imperfect"
    print(f"{model} model, {generator.get('intervention', 'stochastic')} interventions, right at the true regimes: {total}/{len(seeds)} ("
          + ", ".join(f"{g} {r[0]}/{r[1]}" for g, r in right.items()) + ")")
    return {"model": model, "data": generator.get("intervention", "stochastic"), "right": total, "pairs": len(seeds),
            "right_by_graph": right}


def seed_list(text: str) -> List[int]:
    """``"3,1"`` -> ``[3, 1]``: the ``--seeds`` of the command line (non-negative integers)."""
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {text!r}")
    return seeds


def run(variants: Sequence[str], seeds: Sequence[int], samples: int, quick: bool,
        intervention: str = "perfect", jobs: int = 1, restarts: int = 1, edge_search: Optional[int] = None,
        graph_estimator: Optional[str] = None, search: Optional[dict] = None,
        generator: Optional[dict] = None, order_refit: Optional[int] = None) -> Dict[str, List[dict]]:
    """Fit every pair in every variant (``jobs`` fits at a time, one thread each)."""
    records: Dict[str, List[dict]] = {v: [] for v in variants}
    tasks = [(seed, variant) for seed in seeds for variant in variants]
    one = partial(fit_pair, samples=samples, quick=quick, intervention=intervention, restarts=restarts,
                  graph_estimator=graph_estimator, edge_search=edge_search, search=search, generator=generator,
                  order_refit=order_refit)
    for (seed, variant), record in zip(tasks, map_in_processes(one, tasks, jobs)):
        records[variant].append(record)
        print(f"pair {seed:2d} ({record['graph']:>7}) {variant:>13}: HD {record['hd']} "
              f"(before the edge search {record['hd_before_search']})  {record['seconds']:.1f}s ({record['stop']}); "
              f"the model at the true regimes ranks {record['profile_graph']} first by {record['profile_margin']:.1f} nats",
              flush=True)
    return records


def histogram(records: Dict[str, List[dict]], path: str) -> None:
    """Grouped bars: number of pairs at Hamming distance 0, 1, 2, one bar per variant (Figure 3)."""
    figure = Figure(figsize=(5.5, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / len(records)
    for i, (variant, rows) in enumerate(records.items()):
        counts = np.bincount([r["hd"] for r in rows], minlength=3)[:3]
        bars = axes.bar(np.arange(3) + (i - (len(records) - 1) / 2) * width, counts, width, label=variant)
        axes.bar_label(bars, fontsize=8)
    axes.set_xticks(range(3), ["0 (right)", "1 (missing / extra)", "2 (reversed)"])
    axes.set_xlabel("Hamming distance")
    axes.set_ylabel("pairs")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"Cause-effect pairs: {len(next(iter(records.values())))} pairs")
    axes.legend(frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def table(records: Dict[str, List[dict]]) -> List[str]:
    """Markdown rows: the histogram, the fraction right overall and per true graph."""
    lines = ["| variant | HD 0 | HD 1 | HD 2 | exactly right | " + " | ".join(f"right when {g}" for g in GRAPHS)
             + " | right before the edge search | right at the true regimes | s per fit |", "|---" * (8 + len(GRAPHS)) + "|"]
    for variant, rows in records.items():
        hd = np.array([r["hd"] for r in rows])
        by_graph = []
        for graph in GRAPHS:
            mine = [r["hd"] == 0 for r in rows if r["graph"] == graph]
            by_graph.append(f"{sum(mine)}/{len(mine)}")
        lines.append(f"| {variant} | {(hd == 0).sum()} | {(hd == 1).sum()} | {(hd == 2).sum()} | "
                     f"{(hd == 0).mean():.0%} | " + " | ".join(by_graph) +
                     f" | {sum(r['hd_before_search'] == 0 for r in rows)}/{len(rows)}"
                     f" | {sum(r['profile_graph'] == r['graph'] for r in rows)}/{len(rows)}"
                     f" | {np.mean([r['seconds'] for r in rows]):.1f} |")
    return lines


def record_rows(records: Dict[str, List[dict]]) -> List[dict]:
    """One record row per variant: pairs at each Hamming distance, right overall and per true graph."""
    rows = []
    for variant, fitted in records.items():
        hd = [r["hd"] for r in fitted]
        rows.append({"variant": variant, "hd": [hd.count(k) for k in range(3)], "pairs": len(hd),
                     "right_by_graph": {g: [sum(r["hd"] == 0 for r in fitted if r["graph"] == g),
                                            sum(r["graph"] == g for r in fitted)] for g in GRAPHS},
                     "right_before_search": sum(r["hd_before_search"] == 0 for r in fitted),
                     "right_at_true_regimes": sum(r["profile_graph"] == r["graph"] for r in fitted),
                     "seconds": float(np.mean([r["seconds"] for r in fitted]))})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="latent", help="comma-separated: latent, unknown, known, observational")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seeds", type=seed_list, help="comma-separated pair seeds (instead of --first-seed and --pairs)")
    parser.add_argument("--samples", type=int, default=999)
    parser.add_argument("--weight-range", nargs=2, type=float, default=(0.5, 2.0), metavar=("LOW", "HIGH"),
                        help="bounds of |w| of the simulated mechanisms")
    parser.add_argument("--noise-std", nargs=2, type=float, default=(0.5, 1.0), metavar=("LOW", "HIGH"),
                        help="bounds of each variable's noise standard deviation")
    parser.add_argument("--intervention-mean", type=float, default=2.0,
                        help="mean of the N(mean, 1) that replaces an intervened variable")
    parser.add_argument("--intervention", default="stochastic", choices=("stochastic", "imperfect"),
                        help="the simulated interventions: a new distribution (parents cut) or a changed mechanism")
    parser.add_argument("--model-intervention", default="perfect", choices=("perfect", "imperfect"),
                        help="fit's intervention model")
    parser.add_argument("--jobs", type=int, default=1, help="fits run in parallel, one thread each")
    parser.add_argument("--restarts", type=int, default=1, help="fits per pair, the highest ELBO kept")
    parser.add_argument("--graph-estimator", choices=("straight-through", "local"), help="default: fit's")
    parser.add_argument("--edge-search", type=int, help="fit's edge_search: rounds of held-graph local search (0 = off; default: fit's)")
    parser.add_argument("--order-refit", type=int, help="fit's order_refit: rounds of order search + refit (default: fit's)")
    parser.add_argument("--search-moves", default="reverse,remove", help="fit's search_moves, comma-separated")
    parser.add_argument("--search-restarts", type=int, default=3, help="fit's search_restarts")
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    parser.add_argument("--ranking-only", action="store_true",
                        help="no fits: print which graph the model ranks first at the true regimes (profile_ranking)")
    parser.add_argument("--figure", default="docs/cause_effect.png")
    parser.add_argument("--out", default="docs/history/results.md", help="markdown log the table is appended to")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--record", metavar="PATH", help="also write the run's JSON record (docs/make_results.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or list(range(args.first_seed, args.first_seed + args.pairs))
    span = ",".join(map(str, seeds)) if args.seeds else f"{seeds[0]}..{seeds[-1]}"
    generator = {"weight_range": tuple(args.weight_range), "noise_std_range": tuple(args.noise_std),
                 "intervention_mean": args.intervention_mean, "intervention": args.intervention}
    if args.ranking_only:
        row = print_rankings(seeds, args.samples, args.model_intervention == "perfect", generator)
        if args.record:
            write_record(args.record, "figure3_ranking", f"{len(seeds)} pairs, n = {args.samples}",
                         command_line("cause_effect.py", argv).split("`")[1], f"pairs {span}", [row])
        return
    records = run(args.variants.split(","), seeds, args.samples, args.quick, args.model_intervention, args.jobs,
                  args.restarts, args.edge_search, args.graph_estimator,
                  {"moves": tuple(args.search_moves.split(",")), "restarts": args.search_restarts},
                  generator, args.order_refit)
    lines = [
        f"### Cause-effect pairs (Figure 3): {len(seeds)} pairs, seeds {span}, n = {args.samples}, "
        f"{args.intervention} interventions, fit defaults, {args.model_intervention} intervention model, {args.graph_estimator or 'default'} edge gradients, "
        f"{args.restarts} restart(s)"
        f"{f', edge search {args.edge_search} round(s) of {args.search_moves}, {args.search_restarts} seeds per graph' if args.edge_search else ''}"
        f"{' (quick smoke run)' if args.quick else ''}",
        "",
        command_line("cause_effect.py", argv),
        "",
        *table(records),
        "",
        f"Histogram: `{args.figure}`.  The paper gives no numbers, only its Figure 3 (60 pairs).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        histogram(records, args.figure)
        append_section(args.out, text)
    if args.record:
        options = [f"--model-intervention {args.model_intervention}"] * (args.model_intervention != "perfect")
        options += [f"--restarts {args.restarts}"] * (args.restarts > 1)
        options += [f"--graph-estimator {args.graph_estimator}"] * bool(args.graph_estimator)
        options += [f"--order-refit {args.order_refit}"] * (args.order_refit is not None)
        options += ["--quick"] * args.quick
        options += [f"--intervention {args.intervention}"] * (args.intervention != "stochastic")
        for flag in ("weight_range", "noise_std", "intervention_mean"):  # the generator's options given
            value = getattr(args, flag)
            if tuple(np.atleast_1d(value)) != tuple(np.atleast_1d(parser.get_default(flag))):
                options.append(f"--{flag.replace('_', '-')} " + " ".join(f"{v:g}" for v in np.atleast_1d(value)))
        options += [f"--edge-search {args.edge_search} (moves {args.search_moves}, {args.search_restarts} seeds per graph)"] * bool(args.edge_search)
        write_record(args.record, "figure3", f"{len(seeds)} pairs, n = {args.samples}",
                     command_line("cause_effect.py", argv).split("`")[1], f"pairs {span}, fit seed = pair seed",
                     record_rows(records), jobs=args.jobs, options=", ".join(options) or "defaults")


if __name__ == "__main__":
    main()

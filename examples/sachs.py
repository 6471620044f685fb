"""Table 2 of the paper on the Sachs flow-cytometry data, with the 9 conditions hidden (latent).

The 7466 cells x 11 proteins of Sachs et al. (2005) mix an observational condition with 8
reagent conditions.  The model is fitted without the condition labels (latent variant), on
log-transformed data (on by default, ``--no-log-transform`` to turn it off; the raw values are
heavy-tailed), with imperfect interventions and ``fit``'s default hyper-parameters.  The graph is
compared with the 18-edge consensus network (SHD, tp, fn, fp, reversed, two F1 conventions; definitions in
:mod:`pyro_causal.metrics`) and the argmax assignments with the 9 conditions (adjusted Rand
index).  ``--select`` instead chooses ``lambda`` and ``gamma`` by held-out ELBO
(:mod:`pyro_causal.selection`; the consensus graph and conditions are not used to choose).

    python examples/sachs.py                      # linear density, seed 0
    python examples/sachs.py --select             # lambda, gamma by held-out ELBO (7 fits)
    python examples/sachs.py --density mlp --batch-size 1000   # or flow
    python examples/sachs.py --variant known      # conditions and nominal reagent targets given

The table (beside the paper's Table 2) is printed and appended to ``--out`` (default
``docs/history/results.md``, the log) with the command; ``--record PATH`` also writes the run's JSON
record, which ``docs/make_results.py`` renders into ``docs/results.md``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from pyro_causal import (AfterTraining, EdgeSearch, FitConfig, PenaltySchedule, Preprocessing, Priors, TrainingConfig,
                         available_densities, fit, fit_with_graph_held)
from pyro_causal.api import default_graph_estimator
from pyro_causal.datasets import sachs
from pyro_causal.metrics import adjusted_rand_index, evaluate
from pyro_causal.posterior import exact_assignment_probs
from pyro_causal.search import graph_log_prior
from pyro_causal.selection import SelectionResult, select_hyperparameters

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling examples, also when loaded by path
from results_record import machine_text, write_record  # noqa: E402

PAPER_TABLE2 = (  # method, SHD, tp, fn, fp, rev, F1 (baselines reproduced there from DCDI)
    ("IGSP", 18, 4, 6, 5, 7, 0.42),
    ("GIES", 38, 10, 0, 41, 7, 0.33),
    ("CAM", 35, 12, 1, 30, 4, 0.51),
    ("DCDI-G", 36, 6, 2, 25, 9, 0.31),
    ("DCDI-DSF", 33, 6, 2, 22, 9, 0.33),
    ("L. G. (paper)", 33, 7, 11, 22, 3, 0.30),
    ("N. L. G. (paper)", 19, 7, 11, 8, 0, 0.42),
    ("N. F. (paper)", 30, 9, 9, 21, 1, 0.38),
)
VARIANT_WORDS = {"latent": "conditions hidden (latent)", "unknown": "conditions given (unknown targets)",
                 "known": "conditions and nominal targets given (known)"}
DENSITY_LABELS = {"linear": "L. G.", "mlp": "N. L. G.", "flow": "N. F."}
QUICK = PenaltySchedule(first_round_steps=20, round_steps=5, max_rounds=1)
"""A few steps, to check that the script runs (``--quick``); its numbers mean nothing."""


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", default="linear", choices=available_densities())
    parser.add_argument("--log-transform", action=argparse.BooleanOptionalAction, default=True,
                        help="fit log(x) (default on)")
    parser.add_argument("--model-intervention", default="perfect", choices=("perfect", "imperfect"),
                        help="fit's intervention model (default perfect, fit's; the paper: imperfect)")
    parser.add_argument("--variant", default="latent", choices=VARIANT_WORDS,
                        help="latent: conditions hidden (Table 2's setting); unknown: conditions given; "
                             "known: conditions and the nominal reagent targets (datasets.SACHS_NOMINAL_TARGETS) given")
    parser.add_argument("--select", action="store_true", help="choose lambda, gamma by held-out ELBO")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--edge-logit", type=float, help="fit's Priors(edge_logit=...) (default: fit's, Priors.resolved)")
    parser.add_argument("--graph-estimator", choices=("straight-through", "local"), help="default: fit's")
    parser.add_argument("--restarts", type=int, default=1, help="fits from seeds SEED.., the highest ELBO kept")
    parser.add_argument("--batch-size", type=int,
                        help="fit's batch_size: rows per step (default: fit's choice, resources.choose_batch_size)")
    parser.add_argument("--held-refit", action=argparse.BooleanOptionalAction, default=True,
                        help="fit's held_refit: refit the mixture with the graph held at the DAG found (default on)")
    parser.add_argument("--search", choices=("order", "penalty"), help="fit's search (default: fit's)")
    parser.add_argument("--tolerance", type=float,
                        help="the penalty loop stops when h is below this (default: fit's, 1e-8)")
    parser.add_argument("--order-refit", type=int,
                        help="fit's order_refit: rounds of order search + refit (default: fit's)")
    parser.add_argument("--target-moves", action=argparse.BooleanOptionalAction, default=True,
                        help="fit's target_moves: move the mixture's targets and order before the first order refit (default on)")
    parser.add_argument("--edge-search", type=int, default=0, help="fit's edge_search: rounds of held-graph local search (0 = off)")
    parser.add_argument("--search-moves", default="reverse,remove", help="fit's search_moves, comma-separated")
    parser.add_argument("--score-graphs", action="store_true",
                        help="also score the graph found, the consensus and the empty graph by held fits (3 seeds each)")
    parser.add_argument("--dependence", action="store_true",
                        help="also tabulate how the consensus pairs depend within and across conditions "
                             "(correlations, partial correlations) and each condition's median shifts")
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    parser.add_argument("--out", default="docs/history/results.md", help="markdown log the table is appended to")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--record", metavar="PATH", help="also write the run's JSON record (docs/make_results.py)")
    return parser.parse_args(argv)


def variant_options(data, variant: str) -> dict:
    """``fit`` keywords of a variant: the conditions as regimes, and for "known" the nominal targets."""
    return {"latent": {}, "unknown": {"regimes": data.regimes},
            "known": {"regimes": data.regimes, "targets": data.targets}}[variant]


def run(args: argparse.Namespace):
    """Fit (or select then fit) on Sachs; returns ``(data, result, selection or None)``."""
    data = sachs()
    options = dict(names=data.names, density=args.density, intervention=args.model_intervention,
                   restarts=args.restarts, batch_size=args.batch_size, seed=args.seed,
                   priors=Priors(edge_logit=args.edge_logit),
                   **variant_options(data, args.variant))
    estimator = args.graph_estimator or default_graph_estimator(args.density, options.get("regimes"), False)
    schedule = PenaltySchedule(tolerance=args.tolerance) if args.tolerance else PenaltySchedule()
    options["config"] = FitConfig(
        search=args.search,
        training=TrainingConfig(schedule=QUICK if args.quick else schedule, graph_estimator=estimator),
        preprocessing=Preprocessing(log_transform=args.log_transform),
        after_training=AfterTraining(held_refit=args.held_refit, order_refit=args.order_refit,
                                     target_moves=args.target_moves, edge_search=EdgeSearch(
            rounds=args.edge_search, moves=tuple(args.search_moves.split(",")))))
    if args.select:
        if args.edge_logit is not None:
            raise SystemExit("sachs.py: --select chooses the edge logit; drop --edge-logit")
        selection = select_hyperparameters(data.x, **options)
        return data, selection.result, selection
    return data, fit(data.x, **options), None


def held_scores(data, result, args) -> List[str]:
    """Markdown rows: each graph's edge-search score (held fit, 3 seeds) = ELBO / N + log p(G) / N."""
    prior = np.full(data.adjacency.shape, float(result.settings["priors"]["edge_logit"]))
    lines = ["", "Held fits, scored as by the edge search (`pyro_causal.search`; 3 seeds each):", "",
             "| graph | edges | ELBO / row | score / row |", "|---|---|---|---|"]
    for name, graph in (("found", result.adjacency), ("consensus", data.adjacency), ("empty", 0 * data.adjacency)):
        elbo = fit_with_graph_held(result, graph, restarts=3).elbo
        score = elbo + graph_log_prior(graph, prior) / len(data.x)
        lines.append(f"| {name} | {int(graph.sum())} | {elbo:.4f} | {score:.4f} |")
    return lines


def within_condition_correlations(x: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    """``(d, d)`` correlations of ``x`` after centring and scaling each condition separately."""
    standardised = np.empty_like(x)
    for c in np.unique(conditions):
        rows = conditions == c
        standardised[rows] = (x[rows] - x[rows].mean(0)) / x[rows].std(0)
    return np.corrcoef(standardised.T)


def partial_correlations(correlation: np.ndarray) -> np.ndarray:
    """``(d, d)`` partial correlations of each pair given all other variables."""
    precision = np.linalg.inv(correlation)
    scale = np.sqrt(np.diag(precision))
    return -precision / np.outer(scale, scale)


def dependence_lines(data, log_transform: bool, min_partial: float = 0.05) -> List[str]:
    """Markdown tables: how each pair depends inside and across conditions, and each condition's shifts.

    A consensus edge whose within-condition dependence is near zero is seen only through the shift
    of both variables between conditions, which a component targeting both explains as well.
    Rows: every consensus pair, and every other pair whose within-condition partial correlation
    exceeds ``min_partial`` in absolute value; sorted by that partial correlation.
    """
    x = np.log(data.x) if log_transform else data.x
    pooled, within = np.corrcoef(x.T), within_condition_correlations(x, data.regimes)
    partial, observational = partial_correlations(within), np.corrcoef(x[data.regimes == 0].T)
    consensus = data.adjacency.astype(bool)
    pairs = [(i, j) for i, j in zip(*np.triu_indices(len(data.names), 1))
             if consensus[i, j] or consensus[j, i] or abs(partial[i, j]) > min_partial]
    lines = ["", f"Dependence of the consensus pairs and of the other strongly dependent pairs "
             f"({'log' if log_transform else 'raw'} data): correlation pooled over the 7466 rows, within "
             "conditions (each condition centred and scaled), the within-condition partial correlation "
             "given the other 9 variables, and the correlation in the observational condition "
             "(CD3/CD28, 853 rows) alone:", "",
             "| pair (consensus direction) | pooled | within conditions | partial, within | CD3/CD28 only |",
             "|---|---|---|---|---|"]
    for i, j in sorted(pairs, key=lambda e: -abs(partial[e])):
        cause, effect = (j, i) if consensus[j, i] else (i, j)
        pair = (f"{data.names[cause]} -> {data.names[effect]}" if consensus[cause, effect]
                else f"{data.names[i]} - {data.names[j]} (not in the consensus)")
        lines.append(f"| {pair} | {pooled[i, j]:+.2f} | "
                     f"{within[i, j]:+.2f} | {partial[i, j]:+.2f} | {observational[i, j]:+.2f} |")
    base = np.median(x[data.regimes == 0], axis=0)
    lines += ["", "Median of each variable in each condition minus its median in CD3/CD28 "
              f"({'log' if log_transform else 'raw'} data; nominal targets in bold):", "",
              "| condition | " + " | ".join(data.names) + " |", "|---" * (len(data.names) + 1) + "|"]
    for c, condition in enumerate(data.conditions[1:], start=1):
        shift = np.median(x[data.regimes == c], axis=0) - base
        cells = [f"**{v:+.2f}**" if data.targets[c, j] else f"{v:+.2f}" for j, v in enumerate(shift)]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return lines


def supervised_ari(x: np.ndarray, conditions: np.ndarray) -> float:
    """ARI of the in-sample argmax of a Gaussian classifier fitted with the conditions (QDA).

    A reference, not a bound: no latent model can separate conditions that one Gaussian per
    condition, fitted knowing them, confuses (CD3/CD28 with and without ICAM-2, for instance).
    """
    scores = []
    for c in np.unique(conditions):
        rows = x[conditions == c]
        cholesky = np.linalg.cholesky(np.cov(rows.T))
        z = np.linalg.solve(cholesky, (x - rows.mean(0)).T)
        scores.append(-0.5 * (z ** 2).sum(0) - np.log(np.diag(cholesky)).sum() + np.log(len(rows) / len(x)))
    return adjusted_rand_index(conditions, np.argmax(scores, axis=0))


def held_refit_sentence(records: dict) -> str:
    """`` Held refit: ...`` from ``records["held_refit"]`` (empty when there was none)."""
    record = records.get("held_refit")
    if not record:
        return ""
    return (f" Held refit: bound {record['elbo_before']:.3f} -> {record['elbo_after']:.3f} per row, "
            f"{'kept' if record['kept'] else 'not kept'}.")


def metrics_row(label: str, m: Dict[str, float]) -> str:
    """One markdown row: SHD, tp, fn, fp, rev, F1 (Table 2's convention), F1 (directed), ARI."""
    return (f"| {label} | {m['shd']} | {m['tp']} | {m['fn']} | {m['fp']} | {m['reversed']} | "
            f"{m['f1_excluding_reversed']:.2f} | {m['f1']:.2f} | {m['ari']:.2f} |")


def paper_row(name: str, shd: int, tp: int, fn: int, fp: int, rev: int, printed_f1: float) -> str:
    """A Table 2 row as printed, with the directed F1 its counts give."""
    precision, recall = tp / (tp + fp + rev), tp / (tp + fn + rev)
    directed = 2 * precision * recall / (precision + recall)
    return f"| {name} | {shd} | {tp} | {fn} | {fp} | {rev} | {printed_f1:.2f} | {directed:.2f} | — |"


def selection_lines(selection: SelectionResult) -> List[str]:
    """The grid of held-out scores as a markdown table."""
    lines = ["", f"Held-out ELBO per row ({len(selection.validation_rows)} rows, {selection.criterion}), "
             f"fits on {len(selection.train_rows)} rows; chosen: `{selection.best}`.", "",
             "| lambda (edge_logit) | gamma (target_logit) | held-out ELBO / row | held-out log-lik / row | edges |",
             "|---|---|---|---|---|"]
    for row in selection.scores:
        lines.append(f"| {row['edge_logit']:g} | {row['target_logit']:g} | {row['elbo']:.4f} | "
                     f"{row['log_likelihood']:.4f} | {row['num_edges']} |")
    return lines


def append_section(path: str, text: str) -> None:
    """Append ``text`` (a markdown section) to ``path``, creating its folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        handle.write("\n" + text)


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    """The command that reproduces this run, and where it ran."""
    args = " ".join(argv if argv is not None else sys.argv[1:])
    command = f"python examples/{script} {args}".rstrip()
    return f"Command: `{command}` ({machine_text()}, 1 thread)."


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # one line per penalty round
    start = time.perf_counter()
    data, result, selection = run(args)
    seconds = time.perf_counter() - start
    m = evaluate(data.adjacency, result.adjacency, data.regimes, exact_assignment_probs(result).argmax(1))
    how = "lambda, gamma by held-out ELBO" if selection else "fit defaults"
    if args.model_intervention != "perfect":
        how += f", --model-intervention {args.model_intervention}"
    if args.graph_estimator:
        how += f", --graph-estimator {args.graph_estimator}"
    if args.batch_size:
        how += f", batches of {args.batch_size} rows"
    if not args.held_refit:
        how += ", no held refit"
    if args.search:
        how += f", --search {args.search}"
    if args.order_refit is not None:
        how += f", --order-refit {args.order_refit}"
    if args.edge_logit is not None:
        how += f", --edge-logit {args.edge_logit:g}"
    if not args.target_moves:
        how += ", --no-target-moves"
    if args.restarts > 1:
        how += f", {args.restarts} restarts (highest ELBO: seed {result.records['chosen_seed']})"
    if args.edge_search:
        how += (f", edge search {args.edge_search} round(s) of {args.search_moves}: "
                f"{len(result.records['edge_search']['moves'])} move(s)")
    label = f"**{DENSITY_LABELS.get(args.density, args.density)} (pyro_causal, {how})**"
    settings = result.settings
    reference_ari = supervised_ari(np.log(data.x) if args.log_transform else data.x, data.regimes)
    lines = [
        f"### Sachs (Table 2): {args.density} density, {VARIANT_WORDS[args.variant]}, {args.model_intervention} interventions, "
        f"{'log' if args.log_transform else 'raw'} data, seed {args.seed}{' (quick smoke run)' if args.quick else ''}",
        "",
        command_line("sachs.py", argv),
        "",
        "Truth: the 18-edge consensus network shipped in `pyro_causal/data`; ARI of the argmax of the "
        "optimal q(z) given the fitted globals against the 9 conditions.  Paper rows copied from its "
        "Table 2 (no ARI reported there).  F1 (Table 2) = 2 tp / (2 tp + fp + fn), reversed edges in "
        "neither count, the convention of the paper's column (`metrics.f1_excluding_reversed`); "
        "F1 (directed) = harmonic mean of tp / |E| and tp / |T| (`metrics.f1`), computed from the "
        "printed counts for the paper's rows.",
        "",
        "| method | SHD | tp | fn | fp | rev | F1 (Table 2) | F1 (directed) | ARI |",
        "|---|---|---|---|---|---|---|---|---|",
        *(paper_row(*row) for row in PAPER_TABLE2),
        metrics_row(label, m),
        "",
        f"lambda = {settings['priors']['edge_logit']}, gamma = {settings['priors']['target_logit']}, alpha = {settings['priors']['alpha']}, "
        f"K = {settings['truncation']}; {int(result.adjacency.sum())} edges, "
        f"{result.components_in_use()} components in use, stopped: {result.stop_reason} "
        f"after {len(result.elbo_trace)} steps (h = {result.final_h:.1e}); {seconds:.0f} s in all.{held_refit_sentence(result.records)}",
        "",
        f"ARI reference: a Gaussian classifier given the conditions (one full-covariance Gaussian per "
        f"condition on the {'log' if args.log_transform else 'raw'} data, in-sample argmax) reaches "
        f"{reference_ari:.2f}.",
    ]
    if selection is not None:
        lines += selection_lines(selection)
    if args.score_graphs:
        lines += held_scores(data, result, args)
    if args.dependence:
        lines += dependence_lines(data, args.log_transform)
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        append_section(args.out, table)
    if args.record:
        paper = next((row for row in PAPER_TABLE2 if row[0] == f"{DENSITY_LABELS.get(args.density)} (paper)"), None)
        row = {"density": args.density, "variant": args.variant, "shd": m["shd"], "tp": m["tp"], "fn": m["fn"],
               "fp": m["fp"], "reversed": m["reversed"], "f1_table2": m["f1_excluding_reversed"], "f1": m["f1"],
               "ari": m["ari"], "edges": int(result.adjacency.sum()), "seconds": seconds,
               "paper": {"shd": paper[1], "f1": paper[6]} if paper and args.variant == "latent" else None}
        write_record(args.record, "table2",
                     f"Sachs, {'log' if args.log_transform else 'raw'} data, {args.model_intervention} intervention model",
                     command_line("sachs.py", argv).split("`")[1], f"fit seed {args.seed}", [row],
                     options=how + (", --quick" if args.quick else ""), ari_reference=reference_ari)


if __name__ == "__main__":
    main()

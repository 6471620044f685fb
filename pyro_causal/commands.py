"""What each CLI subcommand does (argument parsing lives in :mod:`pyro_causal.cli`)."""
from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .acyclicity import PenaltySchedule
from .io import DataError, OutputError, prepare_output_dir, read_csv_table, read_targets, write_matrix_csv, atomic_write_text

FIT_OUTPUTS = ("adjacency.csv", "edge_probs.csv", "assignments.csv", "targets.csv", "summary.json")


def _load_fit_data(args):
    """``(x, names, regimes, targets, source)`` from a CSV file or a built-in data set."""
    if args.dataset == "sachs":
        from .datasets import sachs

        data = sachs()
        if args.regime_column or args.targets:
            raise DataError("--regime-column/--targets apply to CSV files; the Sachs conditions are not used for fitting")
        return data.x, data.names, None, None, "sachs (bundled)"
    if args.dataset == "simulated":
        from .simulate import simulate

        data = simulate(seed=args.seed)
        return data.x, data.names, None, None, "simulated (10 variables, 1 edge per node, seed {})".format(args.seed)
    table = read_csv_table(args.data, regime_column=args.regime_column, log_transform=False)
    targets = read_targets(args.targets, table.names) if args.targets else None
    return table.x, table.names, table.regimes, targets, str(args.data)


def _progress(quiet: bool):
    """A tqdm progress bar fed by training events (or nothing when quiet)."""
    if quiet:
        return None, []
    from tqdm.auto import tqdm

    bar = tqdm(unit="step", file=sys.stderr, dynamic_ncols=True, desc="fit")

    def update(event):
        bar.update(event.step - bar.n)
        bar.set_postfix(round=event.round, elbo=f"{event.elbo:.3f}", h=f"{event.h:.2e}", mu=f"{event.penalty:.0e}")

    return bar, [update]


def run_fit(args) -> int:
    from .api import fit as fit_one_process
    from .distributed import fit_distributed, is_primary, launched_by_torchrun

    processes = args.processes
    fit = fit_one_process
    if processes > 1 or launched_by_torchrun():  # data-parallel, see docs/distributed.md
        fit = functools.partial(fit_distributed, processes=processes)
    primary = is_primary()  # under torchrun only rank 0 reports and writes

    if args.activation and args.density != "mlp":
        raise ValueError(f"--activation applies to --density mlp, not {args.density}")
    plots = args.plots
    posterior = args.posterior
    figures = ()
    if plots:
        from .plots import PLOT_FILES

        figures = tuple(PLOT_FILES.values())
    x, names, regimes, targets, source = _load_fit_data(args)  # bad data: refused before any folder exists
    out = prepare_output_dir(args.out, overwrite=args.overwrite, names=FIT_OUTPUTS + figures) if primary else None
    if posterior and primary:  # refused now, not after training
        from .posterior import check_posterior_path

        check_posterior_path(posterior, overwrite=args.overwrite)
    schedule = PenaltySchedule(
        first_round_steps=args.first_round_steps,
        round_steps=args.round_steps,
        max_rounds=args.max_rounds,
        tolerance=args.tolerance,
    )
    bar, callbacks = _progress(args.quiet or not primary)
    selection = None
    try:
        options = dict(
            names=names,
            density=args.density,
            density_options={"activation": args.activation} if args.activation else None,
            intervention=args.intervention,
            truncation=args.truncation,
            embedding_dim=args.embedding_dim,
            alpha=args.alpha,
            regimes=regimes,
            targets=targets,
            observational=args.observational,
            supervision_weight=args.supervision_weight,
            assignment=args.assignment,
            graph_estimator=args.graph_estimator,
            refit_steps=args.refit_steps,
            restarts=args.restarts,
            held_refit=args.held_refit,
            order_refit=args.order_refit,
            edge_search=args.edge_search,
            search_restarts=args.search_restarts,
            search_moves=tuple(args.search_moves.split(",")),
            two_cycles=args.two_cycles,
            tensorwise_edges=args.tensorwise_edges,
            standardize=not args.no_standardize,
            log_transform=args.log_transform,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            schedule=schedule,
            device=args.device,
            callbacks=callbacks,
        )
        if args.select:  # section 4: lambda and gamma by held-out ELBO
            if processes > 1 or launched_by_torchrun():
                raise ValueError("--select runs in one process; drop --processes")
            from .selection import select_hyperparameters

            selection = select_hyperparameters(x, seed=args.seed, **options)
            result = selection.result
        else:
            result = fit(x, target_logit=args.target_logit, edge_logit=args.edge_logit, seed=args.seed, **options)
    finally:
        if bar is not None:
            bar.close()
    if not primary:
        return 0
    summary = result.summary()
    summary["data"] = source
    summary["rows"] = int(x.shape[0])
    if selection is not None:
        summary["selection"] = selection.summary()
    write_fit_outputs(result, out, summary)
    if plots:
        from .plots import save_all_plots

        save_all_plots(result, out)
    if posterior:
        from .posterior import save_posterior

        save_posterior(result, posterior, overwrite=args.overwrite)
    if result.stop_reason == "diverged":
        print(f"pyro-causal: warning: training diverged; wrote the last good state to {out}", file=sys.stderr)
    if not args.quiet:
        refit = result.settings.get("held_refit")
        refit_note = f"; held refit {'kept' if refit['kept'] else 'not kept'}" if refit else ""
        print(f"{summary['num_edges']} edges, {summary['components_in_use']} components in use, "
              f"stopped: {result.stop_reason}{refit_note}; results in {out}", file=sys.stderr)
    return 0


def write_fit_outputs(result, out: Path, summary: dict) -> None:
    """Write every output into a scratch folder first, then move them in: all or nothing."""
    names = result.names
    K = result.model.truncation
    with tempfile.TemporaryDirectory(dir=out, prefix=".partial-") as scratch:
        scratch = Path(scratch)
        write_matrix_csv(scratch / "adjacency.csv", result.adjacency, names, row_names=names)
        write_matrix_csv(scratch / "edge_probs.csv", np.round(result.edge_probs, 6), names, row_names=names)
        components = [f"component_{k}" for k in range(K)]
        write_matrix_csv(scratch / "assignments.csv", np.round(result.assignment_probs(), 6), components)
        write_matrix_csv(scratch / "targets.csv", np.round(result.target_probs, 6), names, row_names=components)
        atomic_write_text(scratch / "summary.json", json.dumps(summary, indent=2) + "\n")
        for name in FIT_OUTPUTS:
            os.replace(scratch / name, out / name)


def run_simulate(args) -> int:
    from .simulate import write_simulation, simulate

    path = Path(args.out)
    if path.suffix.lower() != ".csv":
        raise DataError(f"{path}: --out must name a .csv file")
    if not path.parent.exists():
        raise OutputError(f"{path.parent}: folder does not exist")
    data = simulate(
        num_variables=args.variables,
        edges_per_node=args.edges_per_node,
        num_samples=args.samples,
        mechanism=args.mechanism,
        intervention=args.intervention,
        seed=args.seed,
    )
    written = write_simulation(data, path, include_regimes=args.include_regimes, overwrite=args.overwrite)
    print("\n".join(f"{key}: {value}" for key, value in written.items()))
    return 0


def read_adjacency_csv(path) -> tuple:
    """``(matrix, names)`` from an adjacency CSV whose header row and first column name the variables."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row and one row per variable")
    names = rows[0][1:]
    if [r[0] for r in rows[1:]] != names:
        raise DataError(f"{path}: the first column must list the variables in the header's order")
    try:
        matrix = np.array([[float(c) for c in r[1:]] for r in rows[1:]])
    except ValueError as error:
        raise DataError(f"{path}: non-numeric entry ({error})") from None
    if matrix.shape != (len(names), len(names)) or not np.isin(matrix, (0, 1)).all():
        raise DataError(f"{path}: expected a square 0/1 matrix over {len(names)} variables")
    return matrix.astype(int), names


def run_evaluate(args) -> int:
    from .metrics import evaluate, format_metrics

    folder = Path(args.result)
    est, names = read_adjacency_csv(folder / "adjacency.csv")
    truth, true_names = read_adjacency_csv(args.truth)
    if names != true_names:
        raise DataError(f"{args.truth}: variables {true_names} differ from the result's {names}")
    labels = assignments = None
    if args.regimes:
        labels = np.loadtxt(args.regimes, delimiter=",", skiprows=1, dtype=int, ndmin=1)
        probs = np.loadtxt(folder / "assignments.csv", delimiter=",", skiprows=1, ndmin=2)
        if probs.shape[0] != labels.shape[0]:
            raise DataError(f"{args.regimes}: {labels.shape[0]} labels for {probs.shape[0]} assignment rows")
        assignments = probs.argmax(1)
    metrics = evaluate(truth, est, regimes=labels, assignments=assignments)
    print(json.dumps(metrics, indent=2) if args.json else format_metrics(metrics))
    return 0

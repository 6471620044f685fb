"""What each CLI subcommand does (argument parsing lives in :mod:`pyro_causal.cli`)."""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .checkpoint import CHECKPOINT_FILE, Checkpointing, TrainingInterrupted
from .config import FitConfig, Priors, with_field
from .io import (FIT_OUTPUTS, OUTPUT_NAMES, PLOT_OUTPUTS, DataError, OutputError, check_output_dir, read_csv_table,
                 read_targets, remove_stale_outputs, csv_text, write_outputs)
from .result import strict_json


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

        data = simulate(seed=getattr(args, "fit.seed"))
        return data.x, data.names, None, None, "simulated (10 variables, 1 edge per node, seed {})".format(getattr(args, "fit.seed"))
    table = read_csv_table(Path(args.data).expanduser(), regime_column=args.regime_column, log_transform=False)
    targets = read_targets(args.targets, table.names) if args.targets else None
    return table.x, table.names, table.regimes, targets, str(args.data)


def fit_options(args, regimes=None) -> dict:
    """The ``fit`` keywords, ``priors`` and ``config`` of the flags (their ``dest`` is the path
    they set: ``fit.restarts``, ``priors.alpha``, ``config.training.schedule.max_rounds``...)."""
    from .api import default_graph_estimator
    from .trainer import TrainingConfig

    flags = vars(args)
    keywords = {path.split(".", 1)[1]: value for path, value in flags.items() if path.startswith("fit.")}
    estimator = default_graph_estimator(keywords["density"], regimes, keywords["observational"])
    built = {"priors": Priors(), "config": FitConfig(training=TrainingConfig(graph_estimator=estimator))}
    for path, value in flags.items():
        head, _, rest = path.partition(".")
        if head in built and value is not None:
            value = "optimal" if path == "config.training.assignment" and value == "exact" else value  # its former name
            built[head] = with_field(built[head], rest.split("."), value)
    if args.activation:
        built["config"] = with_field(built["config"], ["model", "density_options"], {"activation": args.activation})
    return {**keywords, **built}


def _progress(quiet: bool):
    """A tqdm progress bar fed by training events (or nothing when quiet): one bar per phase
    (penalty round k, held refit, restart r/R, edge search fit i), with its total where known."""
    if quiet:
        return None, []
    from tqdm.auto import tqdm

    bar = tqdm(unit="step", file=sys.stderr, dynamic_ncols=True, desc="fit")
    shown = {"phase": None, "time": None}

    def update(event):
        if event.phase != shown["phase"] or event.step < bar.n:  # a new phase, or a new trainer
            bar.reset(total=event.total)
            if shown["time"] is not None:  # it began about when the last one ended: a true rate
                bar.start_t = bar.last_print_t = shown["time"]
            shown["phase"] = event.phase
        shown["time"] = bar._time()
        penalty = event.phase.endswith("penalty")
        bar.set_description(f"{event.phase} round {event.round + (event.kind == 'step')}" if penalty else event.phase,
                            refresh=False)
        bar.update(event.step - bar.n)
        bar.set_postfix(elbo=f"{event.elbo:.3f}", h=f"{event.h:.2e}", mu=f"{event.penalty:.0e}")

    return bar, [update]


@contextmanager
def _library_log(verbose: bool, quiet: bool):
    """Route the ``pyro_causal`` log to stderr (``-v``, above the bar) or silence it (``--quiet``)."""
    logger = logging.getLogger("pyro_causal")
    level, propagate = logger.level, logger.propagate
    handler = None
    if quiet:
        logger.setLevel(logging.CRITICAL + 1)
    elif verbose:
        from tqdm import tqdm

        class _AboveTheBar(logging.Handler):
            def emit(self, record):
                tqdm.write(self.format(record), file=sys.stderr)

        handler = _AboveTheBar()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def run_fit(args) -> int:
    from .api import fit as fit_one_process
    from .checks import MAX_TRUNCATION, check_device
    from .distributed import fit_distributed, is_primary, launched_by_torchrun

    try:  # before anything is read or created
        check_device(getattr(args, "fit.device"))
    except ValueError as error:
        raise ValueError(f"--device {getattr(args, 'fit.device')}: {str(error).split(': ', 1)[-1]}") from None
    processes = args.processes
    cores = os.cpu_count() or 1
    if processes > cores and not args.oversubscribe:
        raise ValueError(f"--processes {processes} is more than the {cores} CPU cores; pass --oversubscribe to run them anyway")
    if (args.checkpoint_every or args.resume) and (processes > 1 or launched_by_torchrun() or args.select or getattr(args, "fit.restarts") > 1):
        raise ValueError("--checkpoint-every/--resume cover one fit in one process: drop --processes, --select and --restarts")
    fit = fit_one_process
    if processes > 1 or launched_by_torchrun():  # data-parallel, see docs/distributed.md
        fit = functools.partial(fit_distributed, processes=processes, oversubscribe=args.oversubscribe)
    primary = is_primary()  # under torchrun only rank 0 reports and writes

    density, truncation = getattr(args, "fit.density"), getattr(args, "fit.truncation")
    if args.activation and density != "mlp":
        raise ValueError(f"--activation applies to --density mlp, not {density}")
    posterior = Path(args.posterior).expanduser() if args.posterior else None
    x, names, regimes, targets, source = _load_fit_data(args)  # bad data: refused before any folder exists
    if truncation is not None and truncation > min(len(x), MAX_TRUNCATION):
        raise ValueError(f"--truncation {truncation}: more components than "
                         + (f"the {len(x)} rows" if len(x) < MAX_TRUNCATION else f"the maximum, {MAX_TRUNCATION}"))
    out = Path(args.out).expanduser()
    resume = Path(args.resume).expanduser() if args.resume else None
    if resume is not None and not (resume / CHECKPOINT_FILE).is_file():
        raise DataError(f"--resume {args.resume}: no {CHECKPOINT_FILE} there")
    checkpointing = bool(args.checkpoint_every or resume)
    # A checkpoint of another run is not overwritten silently; the one being resumed is continued.
    guarded = FIT_OUTPUTS + PLOT_OUTPUTS + ((CHECKPOINT_FILE,) if checkpointing and resume != out else ())
    if primary:  # checked now, created only when something is written
        check_output_dir(out, overwrite=args.overwrite, names=guarded)
    if posterior and primary:  # refused now, not after training
        from .posterior import check_posterior_path

        check_posterior_path(posterior, overwrite=args.overwrite)
    bar, callbacks = _progress(args.quiet or not primary)
    log = _library_log(args.verbose and primary, args.quiet or not primary)
    log.__enter__()
    selection = None
    try:
        options = dict(fit_options(args, regimes), names=names, regimes=regimes, targets=targets, callbacks=callbacks)
        seed = options.pop("seed")
        if checkpointing:
            options["config"] = with_field(options["config"], ["checkpoint"],
                                           Checkpointing(out, every=args.checkpoint_every, resume=resume))
        if args.select:  # section 4: lambda and gamma by held-out ELBO
            if processes > 1 or launched_by_torchrun():
                raise ValueError("--select runs in one process; drop --processes")
            from .selection import select_hyperparameters

            selection = select_hyperparameters(x, seed=seed, **options)
            result = selection.result
        else:
            result = fit(x, seed=seed, **options)
    except KeyboardInterrupt as error:  # e.g. during the held refit: the training state is still on disk
        if checkpointing and "checkpoint saved" not in str(error) and (out / CHECKPOINT_FILE).is_file():
            raise TrainingInterrupted(f"{error or 'interrupted'}; last checkpoint saved in {out / CHECKPOINT_FILE}") from None
        raise
    finally:
        if bar is not None:
            bar.close()
        log.__exit__(None, None, None)
    if not primary:
        return 0
    return _write_results(args, result, selection, source, int(x.shape[0]), out, checkpointing, posterior)


def _write_results(args, result, selection, source: str, rows: int, out: Path, checkpointing: bool,
                   posterior) -> int:
    """Write what ``pyro-causal fit`` produced into ``out`` (and ``--posterior``), then say so."""
    if result.stop_reason == "diverged":
        raise ValueError(f"training diverged ({result.records.get('diverged')}); no results written; "
                         "try a smaller --learning-rate")
    summary = result.summary()
    summary["data"] = source
    summary["rows"] = rows
    if selection is not None:
        summary["selection"] = selection.summary()
    written = write_fit_outputs(result, out, summary, plots=args.plots)
    if args.overwrite:  # outputs of an earlier fit that this one did not write
        remove_stale_outputs(out, OUTPUT_NAMES,
                             keep=set(written) | ({CHECKPOINT_FILE} if checkpointing else set()))
    if posterior:
        from .posterior import save_posterior

        save_posterior(result, posterior, overwrite=args.overwrite)
    if not args.quiet:
        refit = result.records.get("held_refit")
        refit_note = f"; held refit {'kept' if refit['kept'] else 'not kept'}" if refit else ""
        print(f"{summary['num_edges']} edges, {summary['components_in_use']} components in use, "
              f"stopped: {result.stop_reason}{refit_note}; results in {out}", file=sys.stderr)
    return 0


def _matrix_writer(matrix, header, row_names=None):
    """A writer for :func:`write_outputs`: the CSV of :func:`pyro_causal.io.write_matrix_csv`."""
    rows = np.asarray(matrix).tolist()
    if row_names is not None:
        header, rows = ["", *header], [[name, *row] for name, row in zip(row_names, rows)]
    text = csv_text(list(header), rows)
    return lambda path: path.write_text(text, encoding="utf-8", newline="")


def _text_writer(text: str):
    return lambda path: path.write_text(text, encoding="utf-8")


def write_fit_outputs(result, out: Path, summary: dict, plots: bool = False) -> tuple:
    """Write the result files (and, with ``plots``, the figures) into ``out``, all or nothing,
    through :func:`pyro_causal.io.write_outputs`; returns the names written."""
    from .posterior import exact_assignment_probs

    names = result.names
    components = [f"component_{k}" for k in range(result.model.truncation)]
    writers = {
        "adjacency.csv": _matrix_writer(result.adjacency, names, names),
        "edge_probs.csv": _matrix_writer(np.round(result.edge_probs, 6), names, names),
        "assignments.csv": _matrix_writer(np.round(exact_assignment_probs(result), 6), components),
        "targets.csv": _matrix_writer(np.round(result.target_probs, 6), names, components),
        "summary.json": _text_writer(json.dumps(strict_json(summary), indent=2, allow_nan=False) + "\n"),
    }
    if plots:
        from .plots import figure_writers

        writers.update(figure_writers(result))
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, writers)
    return tuple(writers)


def run_simulate(args) -> int:
    from .simulate import write_simulation, simulate

    path = Path(args.out).expanduser()
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

    if Path(path).is_dir():
        raise DataError(f"{path}: is a folder; expected an adjacency CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read ({getattr(error, 'strerror', None) or error})") from None
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

    folder = Path(args.result).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: {'no such folder' if not folder.exists() else 'is a file'}; "
                        "expected the --out folder of 'pyro-causal fit'")
    est, names = read_adjacency_csv(folder / "adjacency.csv")
    truth, true_names = read_adjacency_csv(Path(args.truth).expanduser())
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

"""Command line: ``pyro-causal fit | simulate | evaluate``.

Every failure on bad input ends with one line on stderr (``pyro-causal: error: ...``) and a
non-zero exit status, never a traceback, and leaves no half-written output.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from typing import List, Optional


from . import __version__
from .acyclicity import PenaltySchedule
from .config import SEARCHES
from .densities import available_densities
from .io import DataError, DataWarning, OutputError
from .likelihood import INTERVENTIONS

PROG = "pyro-causal"


class _HelpFormatter(argparse.HelpFormatter):
    """Help that states every option's default: appended where the text does not say it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.nargs == 0:  # a flag
            return f"{text} (default off)".lstrip()
        return f"{text} (default %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line and states every default in its help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102
        raise SystemExit(_fail(f"{message} (see '{self.prog} --help')", status=2))


def _fail(message: str, status: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{2**32 - 1}, got {value}")
    return value


def _moves(text: str) -> tuple:
    return tuple(text.split(","))


def _option(group, flag: str, path: str, **kwargs) -> None:
    """``flag`` stored at ``path``: ``fit.KEYWORD``, ``priors.FIELD`` or ``config.FIELD.FIELD...``
    (:func:`pyro_causal.commands.fit_options` builds the objects from these paths)."""
    if kwargs.get("action") is None and "choices" not in kwargs:  # not the dotted path
        kwargs.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    group.add_argument(flag, dest=path, **kwargs)


def add_fit_arguments(f: argparse.ArgumentParser) -> None:
    """The flags of ``pyro-causal fit``, each with the ``fit`` keyword or config field it sets."""
    source = f.add_mutually_exclusive_group(required=True)
    source.add_argument("data", nargs="?", help="CSV file: header row of variable names, numeric columns")
    source.add_argument("--dataset", choices=("sachs", "simulated"), help="use a built-in data set instead of a file (default: none, read DATA)")
    f.add_argument("--out", required=True, help="output folder (created; existing results are not overwritten)")
    f.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    _option(f, "--seed", "fit.seed", type=_seed, default=0, help="random seed (default 0)")
    f.add_argument("--posterior", metavar="FILE.nc", help="also write posterior draws as an ArviZ netCDF file (default: not written)")
    f.add_argument("--plots", action="store_true", help="also write PNG figures into --out")
    m = f.add_argument_group("model")
    _option(m, "--density", "fit.density", default="linear", choices=available_densities(), help="conditional density family")
    m.add_argument("--activation", choices=("leaky_relu", "tanh"), help="hidden activation of --density mlp (default leaky_relu; tanh is bounded, for heavy tails)")
    _option(m, "--intervention", "fit.intervention", default="perfect", choices=INTERVENTIONS, help="cut (perfect) or keep (imperfect) the parents of targets")
    _option(m, "--truncation", "fit.truncation", type=_positive_int, help="components K (default min(d + 2, 32))")
    _option(m, "--embedding-dim", "config.model.embedding_dim", type=_positive_int, default=16, help="intervention embedding size h (default 16)")
    _option(m, "--alpha", "priors.alpha", type=_positive_float, default=1.0, help="Dirichlet-process concentration (default 1)")
    _option(m, "--target-logit", "priors.target_logit", type=_finite_float, default=-2.0, help="prior logit gamma of each target (default -2)")
    _option(m, "--edge-logit", "priors.edge_logit", type=_finite_float, help="prior logit lambda of each edge (default -2 with the penalty loop; -6 with the order search, "
            "and where order-refit rounds follow the loop with the mlp or flow density)")
    _option(m, "--assignment", "config.training.assignment", default="optimal", choices=("optimal", "amortized", "exact"),
            metavar=None, help="q(z) in the bound: its optimum (default; 'exact' is its former name) or the amortised network")
    _option(m, "--graph-estimator", "config.training.graph_estimator", choices=("straight-through", "local"), help="edge gradient: straight-through (the paper's) or the exact local gain where the density has it; default: local when some rows' regimes are given, else straight-through")
    m.add_argument("--select", action="store_true",
                   help="choose --edge-logit and --target-logit by held-out ELBO on a 20%% split (6 fits, then a refit)")
    s = f.add_argument_group("supervision (section 3.9)")
    s.add_argument("--regime-column", help="integer column with each row's regime, blank or -1 = unknown (default: none, regimes hidden)")
    s.add_argument("--targets", help="CSV: one row per regime, one 0/1 column per variable, the known variant (default: none, targets hidden)")
    _option(s, "--observational", "fit.observational", action="store_true", help="fit the K = 1 baseline that ignores interventions")
    _option(s, "--supervision-weight", "config.training.supervision_weight", type=_positive_float, default=0.5, help="kappa (default 0.5)")
    d = f.add_argument_group("data")
    _option(d, "--log-transform", "config.preprocessing.log_transform", action="store_true", help="take log of every value first (values must be > 0)")
    _option(d, "--no-standardize", "config.preprocessing.standardize", action="store_false", help="do not centre and scale the columns")
    t = f.add_argument_group("training")
    _option(t, "--learning-rate", "config.training.learning_rate", type=_positive_float, default=3e-2, help="Adam step size (default 0.03)")
    _option(t, "--batch-size", "fit.batch_size", type=_positive_int, help="rows per step (default above 2000 rows: 1000 for linear, 500 for mlp and flow; else all rows)")
    _option(t, "--search", "config.search", choices=SEARCHES, help="how the DAG is searched: order (train inside a random order, then search orders from the mixture found) or penalty (the paper's augmented-Lagrangian loop); default: penalty")
    defaults = PenaltySchedule()
    _option(t, "--first-round-steps", "config.training.schedule.first_round_steps", type=_positive_int, default=defaults.first_round_steps, help="steps before the first penalty update")
    _option(t, "--round-steps", "config.training.schedule.round_steps", type=_positive_int, default=defaults.round_steps, help="steps between penalty updates")
    _option(t, "--max-rounds", "config.training.schedule.max_rounds", type=_positive_int, default=defaults.max_rounds, help="budget of penalty updates")
    _option(t, "--tolerance", "config.training.schedule.tolerance", type=_positive_float, default=defaults.tolerance, help="stop when h is below this")
    _option(t, "--two-cycles", "config.model.two_cycles", default="resolve", choices=("resolve", "allow"), help="resolve: sampled graphs never hold both i->j and j->i (default); allow: the paper's independent edges")
    _option(t, "--restarts", "fit.restarts", type=_positive_int, default=1, help="independent fits from seeds SEED, SEED+1, ...; the highest ELBO is kept (default 1)")
    _option(t, "--edge-search", "config.after_training.edge_search.rounds", type=_non_negative_int, help="rounds of local search after training: each edge reversed or removed, refitted with the graph held, kept if the ELBO + log prior rises (0 = off; default: 1 for two variables, else 0)")
    _option(t, "--search-moves", "config.after_training.edge_search.moves", type=_moves, default=("reverse", "remove"), help="changes the edge search proposes, from reverse,remove,add (default reverse,remove)")
    _option(t, "--search-restarts", "config.after_training.edge_search.restarts", type=_positive_int, default=3, help="seeds per held fit in the edge search (default 3)")
    _option(t, "--order-refit", "config.after_training.order_refit", type=_non_negative_int, help="after training, rounds of order search from the mixture and refit inside the order found, each kept if the ELBO rises (default: 3 with --search order, --regime-column, or more than two variables with interventions to find; else 0)")
    _option(t, "--held-refit", "config.after_training.held_refit", action=argparse.BooleanOptionalAction, default=True, help="after training, refit the mixture and mechanisms from scratch with the graph held at the DAG found, kept if the ELBO rises (default on)")
    _option(t, "--device", "fit.device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    t.add_argument("--processes", type=_positive_int, default=1, help="data-parallel processes sharing each batch (default 1; at most the CPU cores)")
    t.add_argument("--oversubscribe", action="store_true", help="allow --processes above the number of CPU cores")
    _option(t, "--threads", "config.num_threads", type=_positive_int, help="torch threads, split between --processes (default: from the problem's size, 1 for small steps)")
    t.add_argument("--checkpoint-every", type=_positive_int, metavar="N", help="save the training state to --out/checkpoint.pt every N steps, at the end and on Ctrl-C (default: no checkpoints)")
    t.add_argument("--resume", metavar="DIR", help="continue the training saved in DIR/checkpoint.pt, same data and options (default: a fresh start)")
    t.add_argument("--quiet", action="store_true", help="no progress bar, no log, no closing line")
    t.add_argument("-v", "--verbose", action="store_true", help="print the library's log (rounds, refits, restarts) on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Causal discovery under latent interventions (Pyro).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    f = commands.add_parser("fit", help="learn a causal graph from a CSV file (or a built-in data set)")
    add_fit_arguments(f)

    sim = commands.add_parser("simulate", help="write a simulated mixture of interventions and its truth")
    sim.add_argument("--out", required=True, help="CSV file to write; the truth goes beside it")
    sim.add_argument("--variables", type=_positive_int, default=10, help="d (default 10)")
    sim.add_argument("--edges-per-node", type=_positive_float, default=1.0, help="expected edges per node (default 1)")
    sim.add_argument("--samples", type=_positive_int, default=10000, help="rows (default 10000)")
    sim.add_argument("--mechanism", default="linear", choices=("linear", "mlp", "nonadditive"), help="each variable's mechanism")
    sim.add_argument("--intervention", default="stochastic", choices=("stochastic", "perfect", "imperfect"),
                     help="how an intervention changes its target")
    sim.add_argument("--include-regimes", action="store_true", help="add a 'regime' column to the data")
    sim.add_argument("--seed", type=_seed, default=0, help="random seed")
    sim.add_argument("--overwrite", action="store_true", help="replace files already there")

    ev = commands.add_parser("evaluate", help="compare a result folder with the true graph")
    ev.add_argument("result", help="folder written by 'pyro-causal fit'")
    ev.add_argument("--truth", required=True, help="adjacency CSV: header row and first column of names")
    ev.add_argument("--regimes", help="CSV with the true regime of each row, for the adjusted Rand index (default: none, no ARI)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    from . import commands

    handler = {"fit": commands.run_fit, "simulate": commands.run_simulate, "evaluate": commands.run_evaluate}[args.command]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = _warn
            return handler(args) or 0
    except (DataError, OutputError, FileExistsError, FileNotFoundError, ValueError) as error:
        return _fail(str(error))
    except KeyboardInterrupt as error:
        resume = f"; continue with --resume {args.out}" if "checkpoint saved" in str(error) else ""
        return _fail((str(error) or "interrupted") + resume, status=130)


def _warn(message, category, *args, **kwargs) -> None:
    """Warnings on one line, as errors are."""
    print(f"{PROG}: warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

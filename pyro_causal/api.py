"""``fit``: data in, :class:`~pyro_causal.result.FitResult` out."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .checks import as_array, check_device, check_options
from .config import PAIR_SEARCH_ROUNDS, AfterTraining, FitConfig, Priors, apply_former_keywords, settings_of
from .densities import ConditionalDensity, has_network_mechanisms, provides_edge_gain
from .held_refit import order_config, random_order, refit_in_searched_order, refit_with_graph_held, train_in_order
from .likelihood import INTERVENTIONS
from .model import LatentInterventionModel, default_truncation
from .problem import Problem, best_of_seeds, held_config, tagged
from .resources import choose_batch_size, choose_num_threads, keeps_freed_memory, restores_threads
from .preprocessing import prepare_data
from .result import FitResult
from .search import search_edges
from .trainer import StopReason, TrainingConfig, TrainingEvent
from .variants import resolve_supervision

logger = logging.getLogger(__name__)

#: Rounds of order search and refit that ``AfterTraining(order_refit=None)`` resolves to where
#: they run by default (:func:`default_order_rounds`).
DEFAULT_ORDER_ROUNDS = 3


def choose_search(density, observational: bool, num_variables: int) -> str:
    """``FitConfig.search`` when not given: ``"penalty"``, the paper's loop, for every problem.

    The order search (``"order"``) trains inside one random order first; started from an order
    unrelated to the data it found worse graphs than the penalty loop on Table 1 (its earlier
    figures had started inside the true order: ``docs/method.md``, departures).  It stays an
    option.  ``density``, ``observational`` and ``num_variables`` are kept for callers.
    """
    return "penalty"


def default_order_rounds(density, search: str, labelled: bool, observational: bool, num_variables: int) -> int:
    """``AfterTraining.order_refit`` when not given: :data:`DEFAULT_ORDER_ROUNDS` after the order
    search, when some rows' regimes are given, or on more than two variables with interventions to
    find, for every density family; else 0.

    The order profile (:mod:`~pyro_causal.order_search`) is linear-Gaussian and separates orders
    only through the interventions; each round is kept only when the density's own bound rises.
    On Table 1 (``docs/method.md``, "After the penalty loop", "Nonlinear densities") the rounds
    brought dense graphs closer with every density (far closer with the linear and MLP ones, on
    balance with the flow) and cost sparse ones a little; on cause-effect pairs they did not help,
    and with one component every order ties.
    ``density`` (a registered name or an instance) is checked.
    """
    provides_edge_gain(density)  # an unknown name raises ValueError
    if search == "order" or labelled:
        return DEFAULT_ORDER_ROUNDS
    return DEFAULT_ORDER_ROUNDS if not observational and num_variables > 2 else 0


def default_graph_estimator(density, regimes, observational: bool) -> str:
    """``"local"`` when some rows' regimes are given and ``density`` provides exact edge gains,
    else ``"straight-through"`` (the ``TrainingConfig.graph_estimator`` of ``fit``'s default)."""
    try:
        labelled = not observational and regimes is not None and bool((np.asarray(as_array(regimes), dtype=float) >= 0).any())
    except (TypeError, ValueError):  # refused with a DataError later
        labelled = False
    return "local" if labelled and provides_edge_gain(density) else "straight-through"


def _check_given_model(model, num_variables, density, truncation, priors, extras) -> None:
    """``fit(model=...)``: a LatentInterventionModel of the data's width, no options that build one."""
    if not isinstance(model, LatentInterventionModel):
        raise TypeError(f"model must be a LatentInterventionModel, got {type(model).__name__}")
    if num_variables is not None and model.num_variables != num_variables:
        raise ValueError(f"model has {model.num_variables} variables, the data {num_variables}")
    priors_given = priors is not None and (priors.alpha, priors.target_logit, priors.edge_logit is None) != (
        Priors.alpha, Priors.target_logit, True)
    building = [name for name, given in (("density", density != "linear"), ("truncation", truncation is not None),
                                         ("priors", priors_given)) if given] + sorted(extras)
    if building:
        raise ValueError(f"with model= the model is given: leave {', '.join(building)} out")


def _model_priors(model: LatentInterventionModel) -> Priors:
    """The :class:`Priors` a model was built with: ``edge_logit`` a number when every off-diagonal
    logit is the same, else the ``(d, d)`` matrix."""
    logits = model.edge_logits.detach().cpu()
    free = logits[model.off_diagonal.bool().cpu()]
    edge = float(free[0]) if len(free) and bool((free == free[0]).all()) else logits.numpy().copy()
    return Priors(alpha=model.alpha, target_logit=model.target_logit, edge_logit=edge)


def _check_keywords(priors, config, intervention, restarts, batch_size) -> None:
    """``TypeError``/``ValueError`` naming a keyword of the wrong kind or value."""
    if priors is not None and not isinstance(priors, Priors):
        raise TypeError(f"priors must be a pyro_causal.Priors, got {type(priors).__name__}")
    if config is not None and not isinstance(config, FitConfig):
        raise TypeError(f"config must be a pyro_causal.FitConfig, got {type(config).__name__}")
    if intervention not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {intervention!r}; choose one of {', '.join(INTERVENTIONS)}")
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")


def _resolve_config(config: FitConfig, batch_size, estimator: str, density, n: int, d: int, K: int,
                    labelled: bool, observational: bool, device) -> FitConfig:
    """``config`` with the choices ``fit`` makes filled in: the search, the training options (batch
    size, edge gradient), the order-refit and edge-search rounds and the thread count."""
    training = config.training or TrainingConfig(graph_estimator=estimator)
    if batch_size is not None and training.batch_size not in (None, batch_size):
        raise ValueError(f"batch_size={batch_size} and config.training.batch_size={training.batch_size} differ; give one")
    batch_size = batch_size or training.batch_size or choose_batch_size(density, n)
    training = replace(training, batch_size=batch_size)
    search = config.search or choose_search(density, observational, d)
    after = config.after_training
    if after.order_refit is None:
        after = replace(after, order_refit=default_order_rounds(density, search, labelled, observational, d))
    if after.edge_search.rounds is None:
        after = replace(after, edge_search=replace(after.edge_search, rounds=PAIR_SEARCH_ROUNDS if d == 2 else 0))
    threads = config.num_threads
    if threads is None:
        threads = 1 if torch.device(device).type == "cuda" else choose_num_threads(min(batch_size or n, n), d, K)
    return replace(config, search=search, training=training, after_training=after, num_threads=threads)


@restores_threads
@keeps_freed_memory
def fit(
    x,
    *,
    names: Optional[Sequence[str]] = None,
    density: Union[str, ConditionalDensity] = "linear",
    intervention: str = "perfect",
    truncation: Optional[int] = None,
    priors: Optional[Priors] = None,
    regimes=None,
    targets=None,
    observational: bool = False,
    batch_size: Optional[int] = None,
    restarts: int = 1,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    callbacks: Iterable[Callable[[TrainingEvent], None]] = (),
    model: Optional[LatentInterventionModel] = None,
    config: Optional[FitConfig] = None,
    **former,
) -> FitResult:
    """Learn one causal DAG from data mixing observational and intervened samples.

    Args:
        x: ``(n, d)`` data (array-like, ``DataFrame`` or tensor), one column per variable.
        names: ``d`` variable names (default: a ``DataFrame``'s columns, else ``X0..X{d-1}``).
        density: ``"linear"``, ``"mlp"``, ``"flow"`` or a :class:`ConditionalDensity`.
        intervention: ``"perfect"`` (default: the parents of targets cut) or ``"imperfect"`` (kept,
            the paper's model; see ``docs/method.md``, "Intervention model").
        truncation: components ``K`` of the truncated Dirichlet process (default ``min(d + 2, 32)``).
        priors: :class:`~pyro_causal.config.Priors` (``alpha``, ``target_logit``, ``edge_logit``).
        regimes: ``(n,)`` regime of each row, ``-1`` where unknown (unknown / semi-supervised variants).
        targets: ``(R, d)`` 0/1 targets of each regime (known variant; needs ``regimes``).
        observational: fit the K = 1 baseline that ignores interventions.
        batch_size: rows per step; ``None`` chooses (:func:`pyro_causal.resources.choose_batch_size`);
            ``n`` or more is full batch.
        restarts: independent fits from seeds ``seed, seed + 1, ...``; the one with the highest
            bound (``elbo``) is returned, as for ``n_init`` in mixture-model libraries.
        seed: seeds Python, NumPy, torch and Pyro; the same seed gives the same result.
        device: ``"cpu"``, ``"cuda"``...
        callbacks: receive a :class:`TrainingEvent` every ``log_every`` steps and every round, from
            every phase (``event.phase``: ``"penalty"``, ``"held refit"``, ``"order refit i/R"``,
            prefixed by ``"restart r/R: "`` and ``"edge search fit i: "`` where they apply).
        model: a :class:`LatentInterventionModel` to fit instead of one built from the options
            (its Pyro program, with a user's edits, is what trains; every restart and refit
            starts from a copy); ``density``, ``truncation``, ``priors`` and ``config.model.extra``
            must then stay at their defaults, and ``settings["priors"]`` are the model's own.
        config: a :class:`~pyro_causal.config.FitConfig`: training, preprocessing, model options,
            after-training steps (held refit, order refit, edge search), threads, checkpoint.
        **former: keywords of release 0.1 that moved into ``priors`` or ``config``
            (:data:`~pyro_causal.config.FORMER_KEYWORDS`): accepted with a ``FutureWarning``.

    Returns:
        A :class:`FitResult`; ``settings`` holds the options as resolved, ``records`` what each
        step did.  When every restart diverged, ``stop_reason`` is ``"diverged"`` and
        ``records["diverged"]`` says where.

    Raises:
        DataError: unusable data, regimes or targets.
        TypeError: a keyword ``fit`` does not take.
        ValueError: an option out of range or an unknown option value.
    """
    _check_keywords(priors, config, intervention, restarts, batch_size)
    estimator = default_graph_estimator(density, regimes, observational)
    if former:
        priors, config = apply_former_keywords(former, priors, config, estimator)
    if model is not None:
        _check_given_model(model, np.shape(x)[1] if np.ndim(x) == 2 else None, density, truncation, priors,
                           (config or FitConfig()).model.extra)
        truncation, priors = model.truncation, _model_priors(model)
    priors, config = priors or Priors(), config or FitConfig()
    problem, base, config = _problem(x, names, density, intervention, truncation, priors, regimes, targets,
                                     observational, batch_size, restarts, seed, device, callbacks, model, config,
                                     estimator)
    result = _fit_restarts(problem, base, restarts, config, density)
    search = config.after_training.edge_search
    if not search.rounds or result.stop_reason == StopReason.DIVERGED:
        return result
    return search_edges(result, search.rounds, restarts=search.restarts, moves=search.moves)


def _problem(x, names, density, intervention, truncation, priors, regimes, targets, observational, batch_size,
             restarts, seed, device, callbacks, given_model, config: FitConfig, estimator: str):
    """``(Problem, FitResult template, resolved FitConfig)`` of a call of :func:`fit`."""
    data, names, standardizer = prepare_data(x, names, config.preprocessing.standardize,
                                             config.preprocessing.log_transform)
    n, d = data.shape
    training = config.training or TrainingConfig()
    check_options(truncation, training.supervision_weight, seed, n)
    device = check_device(device)
    if config.checkpoint is not None and restarts > 1:
        raise ValueError("checkpoint covers a single fit: use restarts=1")
    supervision = resolve_supervision(n, d, truncation or min(default_truncation(d), n),
                                      None if regimes is None else as_array(regimes),
                                      None if targets is None else as_array(targets), observational)
    labelled = supervision.regimes is not None and bool((np.asarray(supervision.regimes) >= 0).any())
    trained = given_model.density if given_model else density  # the family that trains
    config = _resolve_config(config, batch_size, estimator, trained, n, d,
                             supervision.truncation, labelled,
                             supervision.truncation == 1, device)
    network_rounds = config.after_training.order_refit > 0 and has_network_mechanisms(trained)
    priors = priors.resolved(config.search, network_rounds)
    torch.set_num_threads(config.num_threads)  # the previous count comes back after (restores_threads)
    logger.info("fit: %d rows, %d variables, %s rows per step, %d thread(s)", n, d,
                config.training.batch_size or "all", config.num_threads)
    as_tensor = lambda a, dtype: None if a is None else torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    intervention = given_model.intervention if given_model else intervention
    problem = Problem(
        x=torch.as_tensor(data, dtype=torch.get_default_dtype(), device=device),
        regimes=as_tensor(supervision.regimes, torch.long), targets=as_tensor(supervision.targets, torch.get_default_dtype()),
        density=copy.deepcopy(density) if isinstance(density, ConditionalDensity) else density,
        intervention=intervention, truncation=supervision.truncation, priors=priors, model_options=config.model,
        training=config.training, seed=seed, num_threads=config.num_threads, callbacks=list(callbacks),
        given_model=given_model)
    keywords = {"density": trained if isinstance(trained, str) else type(trained).__name__,
                "intervention": intervention,
                "truncation": given_model.truncation if given_model else supervision.truncation,
                "restarts": restarts, "seed": seed, "device": str(device)}
    base = FitResult(model=None, names=names, edge_probs=None, adjacency=None, variant=supervision.variant,
                     stop_reason=None, elbo_trace=None, h_trace=None, settings=settings_of(keywords, priors, config),
                     wall_time=0.0, standardizer=standardizer, train_x=data, known_targets=supervision.targets,
                     problem=problem)
    return problem, base, config


def _checkpoint_tag(problem: Problem, density, search: str) -> str:
    """What a checkpoint must have been written by: the options that build the model, and the search."""
    options, priors = problem.model_options, problem.priors
    return repr((search, density if isinstance(density, str) else type(density).__name__, problem.intervention,
                 options.embedding_dim, priors.alpha, priors.target_logit, np.asarray(priors.edge_logit).tolist(),
                 options.two_cycles, problem.seed, options.density_options, sorted(options.extra)))


def _fit_restarts(problem: Problem, base: FitResult, restarts: int, config: FitConfig, density) -> FitResult:
    """Train from seeds ``seed .. seed + restarts - 1`` (each with its refits); keep the highest bound."""
    start = time.perf_counter()

    def fit_seed(seed: int):
        # A density object given by the user is copied so that every restart starts from it.
        result = _fit_one(problem, base, seed, restarts, None if restarts > 1 else density, config)
        if restarts > 1:
            logger.info("restart %d (seed %d): elbo/row %.4f, %s", seed - problem.seed + 1, seed, result.elbo,
                        result.stop_reason)
        return result.elbo, result

    best, records = best_of_seeds(range(problem.seed, problem.seed + restarts), fit_seed)
    return replace(best, records={**best.records, **records}, wall_time=time.perf_counter() - start)


def _fit_one(problem: Problem, base: FitResult, seed: int, restarts: int, density, config: FitConfig) -> FitResult:
    """One restart: the search (penalty loop, or training inside a random order), then the order
    refit and the held refit where configured."""
    model = problem.build(seed, density)
    prefix = f"restart {seed - problem.seed + 1}/{restarts}" if restarts > 1 else ""

    def start(model, training, phase=None):
        trainer = problem.trainer(model, training, tagged(problem.callbacks, prefix, phase), config.checkpoint)
        if config.checkpoint is not None:
            trainer.checkpoint_tag = _checkpoint_tag(problem, problem.density, config.search)
            if config.checkpoint.resume is not None:
                trainer.load_checkpoint(config.checkpoint.resume_path, check=True)
        return trainer

    if config.search == "order":
        training, order = order_config(model, problem.training), random_order(model.num_variables, seed, model.guide.required)
        trainer = train_in_order(model, order, lambda m: start(m, training, "random order"))
        stop_reason = trainer.stop_reason
    else:
        trainer, order = start(model, problem.training), None
        stop_reason = trainer.run()
    records = {"random_order": order, "held_refit": None, "order_refit": [], "skipped_steps": trainer.skipped_steps,
               "rollbacks": trainer.rollbacks}
    if stop_reason == StopReason.DIVERGED:
        records["diverged"] = trainer.divergence
    result = base.with_model(model, elbo=problem.score(model, seed, stop_reason), seed=seed, stop_reason=stop_reason,
                             elbo_trace=np.asarray(trainer.elbo_trace), h_trace=np.asarray(trainer.h_trace),
                             records=records)
    if stop_reason == StopReason.DIVERGED or not bool(model.guide.free_edges().any()):
        return result
    result = refit_in_searched_orders(result, config.after_training.order_refit, prefix,
                                      config.after_training.target_moves)
    return refit_with_graph_held(result, seed=seed, prefix=prefix) if config.after_training.held_refit else result


def refit_in_searched_orders(result: FitResult, rounds: int, prefix: str = "", target_moves: bool = True) -> FitResult:
    """Up to ``rounds`` rounds of :func:`~pyro_causal.held_refit.refit_in_searched_order` on
    ``result``, stopping at the first not kept; ``records["order_refit"]`` lists every round.
    ``target_moves``: the first round moves the mixture's targets before its refit."""
    problem = result.problem
    records = []
    for round_number in range(rounds):
        events = tagged(problem.callbacks, prefix, f"order refit {round_number + 1}/{rounds}",
                        held_config(problem.training).schedule.first_round_steps)
        model, score, record = refit_in_searched_order(
            result.model, result.elbo, lambda m, c: problem.trainer(m, c, events), problem.training, problem.x,
            problem.regimes, problem.targets, seed=result.seed, batch_size=problem.score_rows,
            target_moves=target_moves and round_number == 0)
        records.append(record)
        logger.info("order refit (seed %d): elbo/row %.4f -> %.4f, %s", result.seed, record["elbo_before"],
                    record["elbo_after"], "kept" if record["kept"] else "not kept")
        result = result.with_model(model, elbo=score) if record["kept"] else result
        if not record["kept"]:
            break
    return replace(result, records={**result.records, "order_refit": records})

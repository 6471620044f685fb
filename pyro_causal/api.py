"""``fit``: data in, :class:`~pyro_causal.result.FitResult` out."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, replace
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import pyro
import torch

from .acyclicity import PenaltySchedule
from .checkpoint import Checkpointing
from .checks import as_array, check_device, check_options, check_regime_like, check_spread
from .densities import ConditionalDensity, provides_edge_gain
from .elbo import ASSIGNMENTS, mean_elbo
from .held_refit import held_config, refit_in_searched_order, refit_with_graph_held
from .io import DataError, check_matrix
from .model import LatentInterventionModel, default_truncation
from .resources import choose_batch_size, choose_num_threads, restores_threads
from .result import FitResult, Standardizer
from .search import DEFAULT_MOVES, check_moves, held_logits, search_edges
from .trainer import StopReason, TrainingConfig, TrainingEvent, build_trainer
from .variants import resolve_supervision

logger = logging.getLogger(__name__)

#: Rounds of order search and refit when some rows' regimes are given (``fit(order_refit=None)``).
DEFAULT_ORDER_ROUNDS = 3


SCORE_CHUNK_ROWS = 256
"""Fewest rows per chunk when a fit scores its bound (with ``batch_size``, chunks of
``max(batch_size, SCORE_CHUNK_ROWS)`` rows): scoring one row at a time costs minutes."""


def prepare_data(x, names: Optional[Sequence[str]] = None, standardize: bool = True, log_transform: bool = False):
    """Validate ``x`` (``(n, d)``) and return ``(standardised array, names, Standardizer)``.

    ``x`` may be an array, nested lists, a pandas ``DataFrame`` (its column names are the
    default ``names``) or a torch tensor (detached).  Complex values, duplicate names,
    non-finite, constant, nearly constant or subnormal columns raise :class:`DataError`;
    exactly collinear columns, and integer columns named like regime labels, give a
    :class:`~pyro_causal.io.DataWarning`.
    """
    if names is None and hasattr(x, "columns") and hasattr(x, "to_numpy"):
        names = [str(c) for c in x.columns]
    try:
        x = as_array(x)
    except (TypeError, ValueError) as error:
        raise DataError(f"data must be a numeric (n, d) array: {error}") from None
    if np.iscomplexobj(x):
        raise DataError("data must be real numbers, got complex values")
    try:
        x = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as error:
        raise DataError(f"data must be a numeric (n, d) array: {error}") from None
    if x.ndim != 2:
        raise DataError(f"data must be a 2-D (rows, variables) array, got shape {x.shape}")
    names = [f"X{j}" for j in range(x.shape[1])] if names is None else [str(n) for n in names]
    if len(names) != x.shape[1]:
        raise DataError(f"{len(names)} names for {x.shape[1]} columns")
    duplicate = next((name for j, name in enumerate(names) if name in names[:j]), None)
    if duplicate is not None:
        raise DataError(f"names: {duplicate!r} is given twice; variable names must be distinct")
    check_matrix(x, names, "data", lambda i: f"row {i}")
    if log_transform:
        bad = np.argwhere(x <= 0)
        if bad.size:
            i, j = bad[0]
            raise DataError(f"data, row {i}, column {names[j]!r}: {float(x[i, j])!r} <= 0 cannot be log-transformed")
    values = np.log(x) if log_transform else x
    check_spread(values, names)
    check_regime_like(x, names)
    standardizer = Standardizer.fit(values, standardize, log_transform)
    data = standardizer(x)
    largest = np.abs(data).max(0)
    too_large = np.flatnonzero(largest > np.finfo(np.float32).max)
    if too_large.size:
        raise DataError(f"data, column {names[too_large[0]]!r}: values up to {largest[too_large[0]]:.3g} "
                        "exceed float32, the precision of the fit; standardise (the default) or rescale")
    return data, names, standardizer


def _tagged(callbacks: Iterable[Callable[[TrainingEvent], None]], prefix: str = "", phase: Optional[str] = None,
           total: Optional[int] = None) -> list:
    """``callbacks`` behind one forwarder that labels each event's ``phase`` (``"prefix: phase"``)."""
    callbacks = list(callbacks)

    def forward(event: TrainingEvent) -> None:
        label = phase or event.phase
        event = replace(event, phase=f"{prefix}: {label}" if prefix else label,
                        total=event.total if total is None else total)
        for callback in callbacks:
            callback(event)

    return [forward] if callbacks else []


def _check_given_model(model, num_variables, density, truncation, model_options) -> None:
    """``fit(model=...)``: a LatentInterventionModel of the data's width, no options that build one."""
    if not isinstance(model, LatentInterventionModel):
        raise TypeError(f"model must be a LatentInterventionModel, got {type(model).__name__}")
    if num_variables is not None and model.num_variables != num_variables:
        raise ValueError(f"model has {model.num_variables} variables, the data {num_variables}")
    building = [name for name, given in (("density", density != "linear"), ("truncation", truncation is not None))
                if given] + sorted(model_options)
    if building:
        raise ValueError(f"with model= the model is given: leave {', '.join(building)} out")


@restores_threads
def fit(
    x,
    *,
    names: Optional[Sequence[str]] = None,
    density: Union[str, ConditionalDensity] = "linear",
    intervention: str = "imperfect",
    truncation: Optional[int] = None,
    embedding_dim: int = 16,
    alpha: float = 1.0,
    target_logit: float = -2.0,
    edge_logit: Union[float, np.ndarray, torch.Tensor] = -2.0,
    regimes=None,
    targets=None,
    observational: bool = False,
    supervision_weight: float = 0.5,
    assignment: str = "optimal",
    graph_estimator: Optional[str] = None,
    two_cycles: str = "resolve",
    standardize: bool = True,
    log_transform: bool = False,
    learning_rate: float = 3e-2,
    batch_size: Optional[int] = None,
    schedule: Optional[PenaltySchedule] = None,
    num_particles: int = 1,
    restarts: int = 1,
    held_refit: bool = True,
    order_refit: Optional[int] = None,
    edge_search: int = 0,
    search_restarts: int = 3,
    search_moves: Sequence[str] = DEFAULT_MOVES,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    num_threads: Optional[int] = None,
    callbacks: Iterable[Callable[[TrainingEvent], None]] = (),
    density_options: Optional[dict] = None,
    checkpoint: Optional[Checkpointing] = None,
    model: Optional[LatentInterventionModel] = None,
    **model_options,
) -> FitResult:
    """Learn one causal DAG from data mixing observational and intervened samples.

    Args:
        x: ``(n, d)`` data (array-like), one column per variable.
        names: ``d`` variable names (default ``X0..X{d-1}``).
        density: ``"linear"``, ``"mlp"``, ``"flow"`` or a :class:`ConditionalDensity`.
        intervention: ``"imperfect"`` (parents kept) or ``"perfect"`` (parents cut).
        truncation: components ``K`` of the truncated Dirichlet process (default ``min(d + 2, 32)``).
        embedding_dim: ``h``.
        alpha, target_logit, edge_logit: the priors' ``alpha``, ``gamma`` and ``lambda`` (section 3.5);
            ``edge_logit`` may be a ``(d, d)`` matrix (see :func:`pyro_causal.priors.edge_logits`).
        regimes: ``(n,)`` regime of each row, ``-1`` where unknown (unknown / semi-supervised variants).
        targets: ``(R, d)`` 0/1 targets of each regime (known variant; needs ``regimes``).
        observational: fit the K = 1 baseline that ignores interventions.
        supervision_weight: ``kappa`` of section 3.9.
        assignment: ``"optimal"`` (``q(z)`` set to its optimum given the other factors: a
            tighter bound than the amortised family's, the default) or ``"amortized"`` (the
            paper's ``q(z | x)`` network in the bound); see ``docs/method.md``.
        graph_estimator: gradient of the edge probabilities: ``"straight-through"`` (the paper's)
            or ``"local"`` (the exact gain of each edge given the other sampled edges, unbiased,
            where the density provides it).  Default: ``"local"`` when some rows' regimes are
            given (unknown, known, semi-supervised) and the density provides edge gains, else
            ``"straight-through"``: on the Table 1 benchmark the exact gradient lowered the
            Hamming distance of the unknown variant from 2.8 to 0.6 and of the semi-supervised
            one from 3.0 to 1.8, but raised the latent and observational ones
            (``docs/results.md``).
        two_cycles: ``"resolve"`` (sampled graphs never hold both ``i -> j`` and ``j -> i``: a fair
            coin keeps one; see :class:`~pyro_causal.distributions.TwoCycleFreeBernoulli`) or
            ``"allow"`` (the paper's independent edges).  Default: ``"resolve"``.
        standardize: centre and scale each column first (recommended: raw scales leak the order).
        log_transform: take ``log`` of the data first (all values must be > 0).
        learning_rate, schedule, num_particles: see
            :class:`TrainingConfig`.
        batch_size: rows per step; ``None`` chooses (:func:`pyro_causal.resources.choose_batch_size`:
            1000 for the ``mlp`` and ``flow`` densities above 2000 rows, else all rows); ``n`` or
            more is full batch.  ``settings["batch_size"]`` records the size used.
        restarts: independent fits from seeds ``seed, seed + 1, ...``; the one with the highest
            ELBO on the data (16 draws, ``z`` summed out) is returned.  The bound is multimodal
            (the graph and the mixture can settle in poor local optima), and every local optimum
            is scored by the same bound, as for ``n_init`` in mixture-model libraries.
        held_refit: after the penalty loop, fit a fresh model (same seed,
            ``callbacks`` see ``phase="held refit"``) for one penalty round with its graph held at the DAG found, give it
            the loop's edge posterior, and keep it when the bound of the returned posterior
            (``q(A)`` included, the score ``restarts`` ranks by) is higher
            (:mod:`pyro_causal.held_refit`): the mixture and mechanisms are then fitted to the
            final graph instead of to the random graphs of the loop.  ``edge_probs`` and the DAG
            are unchanged; ``settings["held_refit"]`` records both bounds.  Costs one penalty
            round (a default fit of Table 1 took about 42 s instead of 32); default on.  On the Table 1
            benchmark (latent, 5 graphs) it raised the ARI of the assignments (``docs/results.md``).
        order_refit: after the penalty loop, up to this many rounds of: search a causal order
            from the loop's mixture (:func:`pyro_causal.order_search.propose_order`: insertion
            moves scored by the closed-form profile of eq. 8 for linear-Gaussian mechanisms),
            then continue the model for one penalty round with every edge against that order
            forbidden and the exact local edge gradient (where the density provides it); a
            round is kept when the bound of the result (``q(A)`` included) is higher, and the
            rounds stop at the first one that is not.  ``settings["order_refit"]`` records each
            round.  Default: 3 when some rows' regimes are given (unknown, known, semi-supervised),
            where the order search sees the true regimes, else 0 (see ``docs/method.md`` for the
            measurements behind both).
        edge_search: after training, up to this many rounds of local search over the DAG found:
            every single-edge change (``search_moves``: an edge reversed or removed, an absent
            edge added) is refitted from scratch with the graph held at it and scored by its
            bound plus ``log p(G)``; the best change is kept while it scores higher
            (:mod:`pyro_causal.search`).  A round costs one fit with a fixed graph (one penalty
            round) per change and seed: about ``d (d - 1) x search_restarts`` fits with
            additions, ``2 x edges x search_restarts`` without.
            The result is then the held fit of the graph chosen (its ``edge_probs`` are 0/1);
            ``settings["edge_search"]`` records every score.  Default 0 (off).
        search_restarts: seeds per held fit in the edge search (the best bound is its score).
        search_moves: the changes proposed, from ``("reverse", "remove", "add")``.  Additions
            are off by default: the mechanisms' weights are point estimates, so a graph with one
            more edge is penalised only by its prior (2 nats at ``lambda = -2``), far less than
            the spread of held fits; on the cause-effect pairs they put an edge into 5 of the 16
            pairs without one.
        seed: seeds Python, NumPy, torch and Pyro; the same seed gives the same result.
        device: ``"cpu"``, ``"cuda"``...
        num_threads: torch threads during the fit (restored after); ``None`` chooses from the
            problem's size (:func:`pyro_causal.resources.choose_num_threads`: one thread unless
            the steps are large).  ``settings["num_threads"]`` records it.
        callbacks: receive a :class:`TrainingEvent` every ``log_every`` steps and every round, from
            every phase (``event.phase``: ``"penalty"``, ``"held refit"``, prefixed by
            ``"restart r/R: "`` and ``"edge search fit i: "`` where they apply).
        density_options: keyword arguments of the density family.
        checkpoint: a :class:`~pyro_causal.checkpoint.Checkpointing`: save the training state
            to a folder (every ``every`` steps, at the end of training and on Ctrl-C, which then
            waits for the step to end) and/or resume from one.  Covers the training loop of a
            single fit (``restarts=1``); the held refit and the edge search run again after a
            resume, with the same result as without the interruption.
        model: a :class:`LatentInterventionModel` (or subclass) to fit instead of one built from
            the options above: its Pyro program is what trains, including a user's edits (an
            overridden prior hook, an extra site, ``m.model = poutine.condition(m.model, ...)``).
            Every restart and refit starts from a copy of it; it must have ``d`` variables and
            at most ``n`` components, and the options that build a model must stay at their
            defaults.
        **model_options: other :class:`LatentInterventionModel` arguments (``stick_prior=`` ...).

    Returns:
        A :class:`FitResult`.  When training diverged (a non-finite loss or parameter) in
        every restart, its ``stop_reason`` is ``"diverged"`` and it holds the last good state;
        ``settings["diverged"]`` says where.

    Raises:
        DataError: unusable data, regimes or targets.
        ValueError: an option out of range (``truncation`` not an int in
            ``1..min(n, MAX_TRUNCATION)``, a negative ``supervision_weight``, an absent device...).
    """
    if order_refit is not None and (isinstance(order_refit, bool) or not isinstance(order_refit, int) or order_refit < 0):
        raise ValueError(f"order_refit must be an int >= 0, got {order_refit!r}")
    if edge_search < 0 or search_restarts < 1:
        raise ValueError(f"edge_search must be >= 0 and search_restarts >= 1, got {edge_search} and {search_restarts}")
    check_moves(search_moves)
    pristine = copy.deepcopy(density) if isinstance(density, ConditionalDensity) else density
    given_model = model  # the name `model` is the restart's model below
    if given_model is not None:
        _check_given_model(given_model, np.shape(x)[1] if np.ndim(x) == 2 else None, density, truncation, model_options)
        truncation = given_model.truncation
    data, names, standardizer = prepare_data(x, names, standardize, log_transform)
    n, d = data.shape
    check_options(truncation, supervision_weight, seed, n)
    device = check_device(device)
    if checkpoint is not None and restarts > 1:
        raise ValueError("checkpoint covers a single fit: use restarts=1")
    regimes = None if regimes is None else as_array(regimes)
    targets = None if targets is None else as_array(targets)
    default_k = min(default_truncation(d), n)
    supervision = resolve_supervision(n, d, truncation or default_k, regimes, targets, observational)
    labelled = supervision.regimes is not None and bool((np.asarray(supervision.regimes) >= 0).any())
    if graph_estimator is None:
        graph_estimator = "local" if labelled and provides_edge_gain(density) else "straight-through"
    if order_refit is None:
        order_refit = DEFAULT_ORDER_ROUNDS if labelled else 0
    assignment = "optimal" if assignment == "exact" else assignment  # its former name
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment!r}; choose one of {', '.join(ASSIGNMENTS)}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    batch_size = choose_batch_size(density, n) if batch_size is None else batch_size
    if num_threads is None:
        num_threads = 1 if torch.device(device).type == "cuda" else choose_num_threads(
            min(batch_size or n, n), d, supervision.truncation)
    torch.set_num_threads(num_threads)  # the previous count comes back after (restores_threads)
    logger.info("fit: %d rows, %d variables, %s rows per step, %d thread(s)", n, d, batch_size or "all", num_threads)
    as_tensor = lambda a, dtype: None if a is None else torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    xt = torch.as_tensor(data, dtype=torch.get_default_dtype(), device=device)
    regimes_t = as_tensor(supervision.regimes, torch.long)
    targets_t = as_tensor(supervision.targets, torch.get_default_dtype())
    config = TrainingConfig(
        learning_rate=learning_rate,
        batch_size=batch_size,
        schedule=schedule or PenaltySchedule(),
        supervision_weight=supervision_weight,
        num_particles=num_particles,
        assignment=assignment,
        graph_estimator=graph_estimator,
    )

    def build(restart_seed: int, density_object) -> LatentInterventionModel:
        pyro.set_rng_seed(restart_seed)
        if given_model is not None:
            return copy.deepcopy(given_model).to(device)
        return LatentInterventionModel(
            d,
            density=density_object,
            truncation=supervision.truncation,
            embedding_dim=embedding_dim,
            alpha=alpha,
            target_logit=target_logit,
            edge_logit=torch.as_tensor(np.asarray(edge_logit, dtype=float), dtype=torch.get_default_dtype()),
            intervention=intervention,
            density_options=density_options,
            two_cycles=two_cycles,
            **model_options,
        ).to(device)

    def copy_of_pristine():
        return copy.deepcopy(pristine) if isinstance(pristine, ConditionalDensity) else pristine

    score_rows = None if batch_size is None else max(batch_size, SCORE_CHUNK_ROWS)

    def make_trainer(m, trainer_config, events=()):
        return build_trainer(m, xt, regimes=regimes_t, targets=targets_t, config=trainer_config, callbacks=events)

    def held_step(model, score, restart_seed, prefix):
        refitted = build(restart_seed, copy_of_pristine())
        held = _tagged(callbacks, prefix, "held refit", held_config(config).schedule.first_round_steps)
        refit_with_graph_held(model, refitted, lambda m: make_trainer(m, held_config(config), held))
        refitted.eval()
        after = mean_elbo(refitted, xt, regimes_t, targets_t, seed=restart_seed, batch_size=score_rows)[0]
        record = {"elbo_before": round(score, 6), "elbo_after": round(after, 6), "kept": after > score}
        logger.info("held refit (seed %d): elbo/row %.4f -> %.4f, %s", restart_seed, score, after,
                    "kept" if after > score else "not kept")
        return (refitted, after, record) if after > score else (model, score, record)

    start = time.perf_counter()
    order_records = {}
    best = None
    scores = []
    refit_record = None
    for restart_seed in range(seed, seed + restarts):
        # A density object given by the user is copied so that every restart starts from it.
        model = build(restart_seed, copy_of_pristine() if restarts > 1 else density)
        prefix = f"restart {restart_seed - seed + 1}/{restarts}" if restarts > 1 else ""
        trainer = build_trainer(model, xt, regimes=regimes_t, targets=targets_t, config=config,
                          callbacks=_tagged(callbacks, prefix), checkpoint=checkpoint)
        if checkpoint is not None:
            trainer.checkpoint_tag = repr((density if isinstance(density, str) else type(density).__name__,
                                           intervention, embedding_dim, alpha, target_logit, np.asarray(edge_logit).tolist(),
                                           two_cycles, seed, density_options, sorted(model_options)))
            if checkpoint.resume is not None:
                trainer.load_checkpoint(checkpoint.resume_path, check=True)
        stop_reason = trainer.run()
        model.eval()
        # a diverged restart never beats one that finished
        score = -math.inf if stop_reason == StopReason.DIVERGED else mean_elbo(
            model, xt, regimes_t, targets_t, seed=restart_seed, batch_size=score_rows)[0]
        record = None
        order_records[restart_seed] = []
        can_refit = stop_reason != StopReason.DIVERGED and bool(model.guide.free_edges().any())
        for round_number in range(order_refit if can_refit else 0):
            events = _tagged(callbacks, prefix, f"order refit {round_number + 1}/{order_refit}",
                             held_config(config).schedule.first_round_steps)
            model, score, order_record = refit_in_searched_order(
                model, score, lambda m, c: make_trainer(m, c, events), config, xt, regimes_t, targets_t,
                seed=restart_seed, batch_size=score_rows)
            order_records[restart_seed].append(order_record)
            logger.info("order refit (seed %d): elbo/row %.4f -> %.4f, %s", restart_seed, order_record["elbo_before"],
                        order_record["elbo_after"], "kept" if order_record["kept"] else "not kept")
            if not order_record["kept"]:
                break
        if held_refit and can_refit:
            model, score, record = held_step(model, score, restart_seed, prefix)
        scores.append(score)
        if best is None or score > best[0]:
            best, refit_record = (score, restart_seed, model, trainer, stop_reason), record
        if restarts > 1:
            logger.info("restart %d (seed %d): elbo/row %.4f, %s", len(scores), restart_seed, score, stop_reason)
    wall_time = time.perf_counter() - start
    score, chosen_seed, model, trainer, stop_reason = best
    settings = {
        "density": density if isinstance(density, str) else type(density).__name__,
        "intervention": intervention,
        "truncation": model.truncation,
        "embedding_dim": embedding_dim,
        "alpha": alpha,
        "target_logit": target_logit,
        "edge_logit": edge_logit if np.ndim(edge_logit) == 0 else "matrix",
        "supervision_weight": supervision_weight,
        "assignment": assignment,
        "graph_estimator": graph_estimator,
        "two_cycles": two_cycles,
        "standardize": standardize,
        "log_transform": log_transform,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "num_threads": num_threads,
        "schedule": asdict(config.schedule),
        "num_particles": num_particles,
        "restarts": restarts,
        "held_refit": refit_record,
        "order_refit_rounds": order_refit,
        "order_refit": order_records.get(chosen_seed),
        "seed": seed,
        "device": str(device),
        "_targets": supervision.targets,
        "elbo": score,
        "skipped_steps": trainer.skipped_steps,
    }
    if stop_reason == StopReason.DIVERGED:
        settings["diverged"] = trainer.divergence
    if restarts > 1:
        settings["chosen_seed"] = chosen_seed
        settings["restart_elbos"] = [round(float(v), 6) for v in scores]
    result = FitResult.from_model(
        model,
        names,
        variant=supervision.variant,
        stop_reason=stop_reason,
        elbo_trace=np.asarray(trainer.elbo_trace),
        h_trace=np.asarray(trainer.h_trace),
        settings=settings,
        wall_time=wall_time,
        standardizer=standardizer,
        train_x=data,
    )
    if not edge_search or stop_reason == StopReason.DIVERGED:
        return result

    held_fits = []

    def fit_held(graph: np.ndarray) -> FitResult:
        held_fits.append(graph)
        return fit(
            x, names=names, density=copy.deepcopy(pristine) if isinstance(pristine, ConditionalDensity) else pristine,
            intervention=intervention, truncation=truncation, embedding_dim=embedding_dim, alpha=alpha,
            target_logit=target_logit, edge_logit=held_logits(graph), regimes=regimes, targets=targets,
            observational=observational, supervision_weight=supervision_weight, assignment=assignment,
            graph_estimator=graph_estimator, two_cycles=two_cycles, standardize=standardize,
            log_transform=log_transform, learning_rate=learning_rate, batch_size=batch_size, schedule=schedule,
            num_particles=num_particles,
            restarts=search_restarts, held_refit=False, seed=seed, device=device, density_options=density_options,
            num_threads=num_threads, callbacks=_tagged(callbacks, f"edge search fit {len(held_fits)}"), **model_options,
        )

    prior_logits = np.broadcast_to(np.asarray(torch.as_tensor(edge_logit).cpu(), dtype=float), (d, d)).copy()
    searched, record = search_edges(result.adjacency, prior_logits, n, edge_search, fit_held, search_moves)
    record["start_edges"] = [[int(i), int(j)] for i, j in zip(*np.nonzero(result.adjacency))]
    searched.settings.update(
        edge_logit=settings["edge_logit"], restarts=restarts, edge_search=record,
        search_restarts=search_restarts, search_moves=list(search_moves), searched_from_elbo=settings["elbo"],
    )
    for key in ("chosen_seed", "restart_elbos"):
        searched.settings.pop(key, None)
        if key in settings:
            searched.settings[key] = settings[key]
    searched.wall_time = result.wall_time + record["seconds"]
    return searched

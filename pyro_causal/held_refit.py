"""One way to hold a graph, and the refits after the penalty loop built on it.

:func:`fit_with_graph_held` fits a fresh model whose ``q(A)`` is the point mass at a given DAG
(``guide.required`` / ``guide.forbidden``; ``h = 0`` throughout, one penalty round) and scores it
by its bound: the held refit and the edge search (:func:`pyro_causal.search_edges`) use it.

:func:`refit_with_graph_held` refits a result's mixture and mechanisms with its graph held: the
penalty loop fits them while the graph is still random and often wrong, and their optimum for
the final DAG can lie in another basin.  The refit is then given the loop's edge posterior back,
so ``edge_probs`` and the DAG are unchanged, and kept when that bound, ``q(A)`` included, is
higher.  :func:`refit_in_searched_order` holds an order instead (:func:`order_held`): edges
against it are forbidden and those along it stay free; :func:`train_in_order` is the same
training from a fresh model, the first step of ``fit``'s order search (``FitConfig(search="order")``).
"""
from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from .acyclicity import dag_from_probabilities, is_dag
from .elbo import mean_elbo
from .order_search import order_respecting, propose_order
from .posterior import exact_assignment_probs
from .profile_mixture import swap_targets
from .problem import best_of_seeds, held_config, tagged
from .resources import keeps_freed_memory, restores_threads
from .trainer import Trainer, TrainingConfig

logger = logging.getLogger(__name__)


def hold_edges(model, required: Tensor, forbidden: Tensor) -> Callable[[], None]:
    """Add the ``(d, d)`` bool masks ``required`` / ``forbidden`` to ``model``'s prior-fixed edges;
    returns the function that restores the masks it was built with."""
    guide = model.guide
    built_required, built_forbidden = guide.required.clone(), guide.forbidden.clone()
    device = guide.required.device
    with torch.no_grad():
        guide.required |= required.to(device=device, dtype=torch.bool) & ~built_forbidden
        guide.forbidden |= forbidden.to(device=device, dtype=torch.bool) & ~built_required & guide.off_diagonal.bool()

    def restore() -> None:
        with torch.no_grad():
            guide.required.copy_(built_required)
            guide.forbidden.copy_(built_forbidden)

    return restore


@contextmanager
def edges_held(model, required: Tensor, forbidden: Tensor) -> Iterator[None]:
    """Inside the block :func:`hold_edges` holds; the built masks are restored on exit."""
    restore = hold_edges(model, required, forbidden)
    try:
        yield
    finally:
        restore()


def graph_held(model, graph: Tensor):
    """Context in which ``model``'s ``q(A)`` is the point mass at ``graph`` (``(d, d)`` bool DAG)."""
    graph = torch.as_tensor(graph).to(dtype=torch.bool)
    return edges_held(model, graph, ~graph)


def order_held(model, order):
    """Context in which every edge against ``order`` (a permutation, causes first) is forbidden
    and those along it stay free: every graph ``q(A)`` can draw is then a DAG."""
    d = len(order)
    position = torch.empty(d, dtype=torch.long)
    position[torch.as_tensor(list(order), dtype=torch.long)] = torch.arange(d)
    against = position.unsqueeze(1) > position.unsqueeze(0)  # (i, j): i comes after j
    return edges_held(model, torch.zeros(d, d, dtype=torch.bool), against)


def found_graph(model) -> Tensor:
    """``(d, d)`` bool: the DAG of ``model``'s edge posterior (:func:`dag_from_probabilities`)."""
    return torch.as_tensor(dag_from_probabilities(model.guide.edge_probs().detach().cpu().numpy()), dtype=torch.bool)


def _problem(result):
    if getattr(result, "problem", None) is None:
        raise ValueError("this FitResult does not keep its problem (data and options): refit it with pyro_causal.fit")
    return result.problem


def check_graph(graph, model) -> Tensor:
    """``graph`` as a ``(d, d)`` bool tensor; ``ValueError`` unless it is a 0/1 DAG that the prior allows."""
    array = np.asarray(graph.detach().cpu() if isinstance(graph, Tensor) else graph)
    d = model.num_variables
    if array.shape != (d, d) or not np.isin(array, (0, 1)).all() or array.diagonal().any() or not is_dag(array):
        raise ValueError(f"graph must be a ({d}, {d}) 0/1 DAG with a zero diagonal, got shape {array.shape}")
    held = torch.as_tensor(array.astype(bool))
    guide = model.guide
    if (held & guide.forbidden.cpu()).any() or (~held & guide.required.cpu()).any():
        raise ValueError("graph contradicts the edges the prior fixes (edge_logit +-inf)")
    return held


@restores_threads
@keeps_freed_memory
def fit_with_graph_held(result, graph, *, seed: Optional[int] = None, restarts: int = 1,
                        phase: str = "held fit", prefix: str = ""):
    """Fit ``result``'s model afresh with ``q(A)`` held at ``graph`` and score it by its bound.

    Args:
        result: a :class:`~pyro_causal.result.FitResult` of :func:`pyro_causal.fit` (its data
            and options are reused).
        graph: ``(d, d)`` 0/1 DAG.
        seed: the first seed (default: the fit's ``seed``); ``restarts`` seeds from it.
        restarts: fits from seeds ``seed, seed + 1, ...``; the highest bound is kept.
        phase, prefix: the callbacks' events are labelled ``"prefix: restart r/R: phase"``.

    Returns:
        A :class:`FitResult` whose ``edge_probs`` and ``adjacency`` are ``graph`` and whose
        ``elbo`` is the bound of the held fit (no ``log p(G)``: the held edges carry no KL term).
    """
    problem = _problem(result)
    torch.set_num_threads(problem.num_threads)
    seed = problem.seed if seed is None else seed
    config = held_config(problem.training)
    start = time.perf_counter()

    def fit_seed(restart_seed: int):
        model = problem.build(restart_seed)
        held = check_graph(graph, model)
        hold_edges(model, held, ~held)
        label = ": ".join(part for part in (prefix, f"restart {restart_seed - seed + 1}/{restarts}" if restarts > 1 else "")
                          if part)
        trainer = problem.trainer(model, config, tagged(problem.callbacks, label, phase, config.schedule.first_round_steps))
        stop_reason = trainer.run()
        score = problem.score(model, restart_seed, stop_reason)
        return score, (score, restart_seed, model, trainer, stop_reason)

    (score, chosen, model, trainer, stop_reason), records = best_of_seeds(range(seed, seed + restarts), fit_seed)
    records = {"skipped_steps": trainer.skipped_steps, "rollbacks": trainer.rollbacks, **records}
    return result.with_model(model, elbo=score, seed=chosen, stop_reason=stop_reason, records=records,
                             elbo_trace=np.asarray(trainer.elbo_trace), h_trace=np.asarray(trainer.h_trace),
                             wall_time=time.perf_counter() - start)


def refit_with_graph_held(result, *, seed: Optional[int] = None, prefix: str = ""):
    """Refit ``result``'s mixture and mechanisms with its DAG held; keep the refit if its bound is higher.

    The refit (:func:`fit_with_graph_held`, ``seed`` default ``result.seed``) is given
    ``result``'s edge posterior back, so ``edge_probs`` and the DAG are unchanged, and scored by
    the bound of that posterior.  Returns the result kept; its ``records["held_refit"]`` holds
    ``elbo_before``, ``elbo_after`` and ``kept``.
    """
    problem = _problem(result)
    seed = result.seed if seed is None else seed
    held = fit_with_graph_held(result, result.adjacency, seed=seed, phase="held refit", prefix=prefix)
    refitted = held.model
    with torch.no_grad():
        refitted.guide.required.copy_(result.model.guide.required)
        refitted.guide.forbidden.copy_(result.model.guide.forbidden)
        refitted.guide.edge_logits.copy_(result.model.guide.edge_logits)
    after, before = problem.score(refitted, seed), result.elbo
    record = {"elbo_before": round(before, 6), "elbo_after": round(after, 6), "kept": after > before}
    logger.info("held refit (seed %d): elbo/row %.4f -> %.4f, %s", seed, before, after,
                "kept" if after > before else "not kept")
    records = {**result.records, "held_refit": record}
    if after > before:
        return replace(result, model=refitted, elbo=after, records=records)
    return replace(result, records=records)


def order_config(model, config: TrainingConfig) -> TrainingConfig:
    """``config`` for training inside an order: one penalty round (``h = 0`` throughout) and the
    exact local edge gradient where ``model``'s density provides it: inside one order every graph
    is a DAG, so each edge is decided by its likelihood gain against its prior."""
    held = held_config(config)
    return replace(held, graph_estimator="local") if model.density.provides_edge_gain else held


ORDER_STREAM = 0x6F72646572
"""Second entropy word of the random order's generator (``b"order"``), see :func:`random_order`."""


def random_order(num_variables: int, seed: int, required: Optional[Tensor] = None) -> list:
    """A random permutation of ``range(num_variables)`` (causes first), the same for the same
    ``seed``: uniform, or with every edge of the ``(d, d)`` bool mask ``required`` along it (the
    topological order of those edges that breaks ties by the uniform one).

    The permutation comes from the stream of ``(seed, ORDER_STREAM)``, not of ``seed`` alone: a
    generator seeded with the bare integer (``simulate`` draws its causal order first from
    ``default_rng(seed)``) would hand the fit the true order whenever the two seeds agree."""
    return order_respecting(np.random.default_rng([seed, ORDER_STREAM]).permutation(num_variables), required)


def train_in_order(model, order, make_trainer: Callable[[object], Trainer]) -> Trainer:
    """Open every edge along ``order`` (probability at least 1/2) and train ``model`` inside it
    (:func:`refit_with_order_held`); returns the trainer."""
    with torch.no_grad():
        model.guide.edge_logits.clamp_(min=0.0)
    return refit_with_order_held(model, order, make_trainer)


def refit_with_order_held(fresh, order, make_trainer: Callable[[object], Trainer]) -> Trainer:
    """Train ``fresh`` with the edges against ``order`` forbidden (its own edge posterior along it).

    The prior-fixed masks are restored afterwards; the edges against the order were not trained
    and their logits are set to -30 (probability ~1e-13), so the fitted graph follows the order.
    """
    with order_held(fresh, order):
        trainer = make_trainer(fresh)
        trainer.run()
        free = fresh.guide.free_edges()
    with torch.no_grad():
        against = fresh.guide.free_edges() & ~free
        fresh.guide.edge_logits.masked_fill_(against, -30.0)
    return trainer


def refit_in_searched_order(model, score: float, make_trainer, config: TrainingConfig, x: Tensor,
                            regimes: Optional[Tensor] = None, targets: Optional[Tensor] = None, *,
                            seed: int = 0, batch_size: Optional[int] = None, target_moves: bool = True):
    """Search an order from ``model``'s mixture, continue a copy of ``model`` inside it, keep the higher bound.

    The copy is trained for one penalty round (a fresh optimiser) with every edge against the
    order searched (:func:`pyro_causal.order_search.propose_order`) forbidden, the edges along it
    restarted at probability at least 1/2, and the exact local edge gradient where the density
    provides it: inside one order every graph is a DAG, so each edge is decided by its
    likelihood gain against its prior, not by the penalty.

    Args:
        model: the model the penalty loop fitted; ``score`` its bound per row.
        make_trainer: ``(model, TrainingConfig) -> Trainer`` on the data.
        config: the penalty loop's :class:`TrainingConfig` (the refit runs one round of it).
        target_moves: before the refit, move the mixture by
            :func:`~pyro_causal.profile_mixture.swap_targets` from the proposed order (latent
            regimes only); the refit trains inside the order it ends in, its targets started there.

    Returns:
        ``(model kept, its bound per row, record)``; the record holds both bounds, both orders
        and whether the refit was kept.
    """
    proposal = propose_order(model, x, regimes, targets, seed=seed)
    moved = None
    if target_moves and regimes is None and targets is None:
        moved = swap_targets(x, torch.as_tensor(exact_assignment_probs(model, x), dtype=torch.float64, device=x.device),
                             model.full_targets(model.guide.target_probs()).detach(), proposal["order"],
                             perfect=model.perfect, target_logit=model.target_logit, required=model.guide.required)
        proposal["order"] = moved.order
    refit = copy.deepcopy(model)
    if moved is not None:
        with torch.no_grad():
            refit.guide.target_logits.copy_(torch.logit(moved.pi[1:].clamp(1e-3, 1 - 1e-3)).to(refit.guide.target_logits))
    refit.train()
    held = order_config(refit, config)
    train_in_order(refit, proposal["order"], lambda m: make_trainer(m, held))
    refit.eval()
    after = mean_elbo(refit, x, regimes, targets, seed=seed, batch_size=batch_size)[0]
    record = {"start_order": proposal["start"], "order": proposal["order"], "moves": proposal["moves"],
              "restart": proposal["restart"], "target_moves": None if moved is None else round(moved.score, 3),
              "profile_gain": round(proposal["score"] - proposal["start_score"], 3),
              "elbo_before": round(score, 6), "elbo_after": round(after, 6), "kept": after > score}
    return (refit, after, record) if after > score else (model, score, record)

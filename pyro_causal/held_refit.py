"""Refits after the penalty loop with part of the graph held: the whole DAG, or a causal order.

The penalty loop fits the mixture (sticks, embeddings, targets, ``q(z)``) and the mechanisms
while the graph is still random and often wrong; their optimum for the final DAG can lie in
another basin.  A fresh model trained for one penalty round with its edges held at that DAG
(``guide.required`` / ``guide.forbidden``, :func:`graph_held`; ``h = 0`` throughout) reaches
it, and its edge posterior is then set back to the loop's, so ``edge_probs`` and the DAG are
unchanged.  :func:`pyro_causal.fit` keeps the refitted model when the bound of that posterior,
``q(A)`` included, is higher than the loop's.  ``docs/results.md`` measures the gain (ARI of
the assignments).

:func:`refit_in_searched_order` holds an order instead (:func:`order_held`): edges against it
are forbidden and those along it stay free, so the graph is re-decided without the penalty.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor

from .acyclicity import dag_from_probabilities
from .elbo import mean_elbo
from .order_search import propose_order
from .trainer import Trainer, TrainingConfig


def held_config(config: TrainingConfig) -> TrainingConfig:
    """``config`` for a held graph: one penalty round, no order refit."""
    return replace(config, schedule=replace(config.schedule, max_rounds=1))


@contextmanager
def edges_held(model, required: Tensor, forbidden: Tensor) -> Iterator[None]:
    """Inside the block the ``(d, d)`` bool masks ``required`` / ``forbidden`` are added to
    ``model``'s prior-fixed edges; the masks it was built with are restored on exit."""
    guide = model.guide
    built_required, built_forbidden = guide.required.clone(), guide.forbidden.clone()
    device = guide.required.device
    with torch.no_grad():
        guide.required |= required.to(device=device, dtype=torch.bool) & ~built_forbidden
        guide.forbidden |= forbidden.to(device=device, dtype=torch.bool) & ~built_required & guide.off_diagonal.bool()
    try:
        yield
    finally:
        with torch.no_grad():
            guide.required.copy_(built_required)
            guide.forbidden.copy_(built_forbidden)


def graph_held(model, graph: Tensor):
    """Context in which ``model``'s ``q(A)`` is the point mass at ``graph`` (``(d, d)`` bool DAG)."""
    graph = graph.to(dtype=torch.bool)
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


def refit_with_graph_held(trained, fresh, make_trainer: Callable[[object], Trainer]) -> Trainer:
    """Train ``fresh`` with its graph held at ``trained``'s DAG, then give it ``trained``'s ``q(A)``.

    Args:
        trained: a fitted :class:`~pyro_causal.model.LatentInterventionModel`.
        fresh: a newly built model of the same shape (its own seed and initialisation).
        make_trainer: builds the :class:`Trainer` for ``fresh`` (see :func:`held_config`).

    Returns:
        The trainer that ran; ``fresh`` is left in training mode with ``trained``'s edge logits
        and its own prior-fixed edges (``required``/``forbidden`` as built).
    """
    with graph_held(fresh, found_graph(trained)):
        trainer = make_trainer(fresh)
        trainer.run()
    with torch.no_grad():
        fresh.guide.edge_logits.copy_(trained.guide.edge_logits)
    return trainer


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
                            seed: int = 0, batch_size: Optional[int] = None):
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

    Returns:
        ``(model kept, its bound per row, record)``; the record holds both bounds, both orders
        and whether the refit was kept.
    """
    proposal = propose_order(model, x, regimes, targets)
    refit = copy.deepcopy(model)
    refit.train()
    with torch.no_grad():
        refit.guide.edge_logits.clamp_(min=0.0)
    held = held_config(config)
    if refit.density.provides_edge_gain:
        held = replace(held, graph_estimator="local")
    refit_with_order_held(refit, proposal["order"], lambda m: make_trainer(m, held))
    refit.eval()
    after = mean_elbo(refit, x, regimes, targets, seed=seed, batch_size=batch_size)[0]
    record = {"start_order": proposal["start"], "order": proposal["order"], "moves": proposal["moves"],
              "profile_gain": round(proposal["score"] - proposal["start_score"], 3),
              "elbo_before": round(score, 6), "elbo_after": round(after, 6), "kept": after > score}
    return (refit, after, record) if after > score else (model, score, record)

"""Refit every factor but the graph from scratch, with the graph held at the DAG found.

The penalty loop fits the mixture (sticks, embeddings, targets, ``q(z)``) and the mechanisms
while the graph is still random and often wrong; their optimum for the final DAG can lie in
another basin.  A fresh model trained for one penalty round with its edges held at that DAG
(``guide.required`` / ``guide.forbidden``, :func:`graph_held`; ``h = 0`` throughout) reaches
it, and its edge posterior is then set back to the loop's, so ``edge_probs`` and the DAG are
unchanged.  :func:`pyro_causal.fit` keeps the refitted model when the bound of that posterior,
``q(A)`` included, is higher than the loop's.  ``docs/results.md`` measures the gain (ARI of
the assignments).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

import torch
from torch import Tensor

from .acyclicity import dag_from_probabilities
from .trainer import Trainer, TrainingConfig


def held_config(config: TrainingConfig) -> TrainingConfig:
    """``config`` for a held graph: one penalty round, no order refit."""
    return replace(config, refit_steps=0, schedule=replace(config.schedule, max_rounds=1))


@contextmanager
def graph_held(model, graph: Tensor) -> Iterator[None]:
    """Inside the block ``model``'s ``q(A)`` is the point mass at ``graph`` (``(d, d)`` bool DAG)."""
    guide = model.guide
    built_required, built_forbidden = guide.required.clone(), guide.forbidden.clone()
    graph = graph.to(device=guide.required.device, dtype=torch.bool)
    with torch.no_grad():
        guide.required |= graph
        guide.forbidden |= ~graph & guide.off_diagonal.bool()
    try:
        yield
    finally:
        with torch.no_grad():
            guide.required.copy_(built_required)
            guide.forbidden.copy_(built_forbidden)


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

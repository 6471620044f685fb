"""The acyclicity constraint and its augmented-Lagrangian schedule (paper, section 3.8, eq. 13).

``h(W) = tr(exp(W)) - d`` is zero exactly when the weighted graph ``W >= 0`` has no directed
cycle (Zheng et al. 2018).  The paper applies it to ``W = sigmoid(Lambda)``, the edge
probabilities of the variational graph posterior.  The multiplier and the penalty weight live
in buffers so that they are checkpointed with the rest of the state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn


def off_diagonal_mask(d: int, device=None, dtype=torch.get_default_dtype()) -> Tensor:
    """``(d, d)`` tensor of ones with a zero diagonal (no self loops)."""
    return 1.0 - torch.eye(d, device=device, dtype=dtype)


def acyclicity(weights: Tensor) -> Tensor:
    """``h(W) = tr(exp(W)) - d`` for a batch of non-negative ``(..., d, d)`` matrices -> ``(...)``."""
    d = weights.shape[-1]
    return torch.linalg.matrix_exp(weights).diagonal(dim1=-2, dim2=-1).sum(-1) - d


def support_is_acyclic(support: Tensor) -> bool:
    """Whether the ``(d, d)`` bool mask ``support`` has no directed cycle, so that ``h`` vanishes on every
    weighted graph inside it, with its gradient in every entry of the mask.  A few products of the
    mask with itself on its own device, cheap enough for every SVI step (:func:`is_dag` builds a
    networkx graph, a cost that grows with the edges)."""
    d = support.shape[-1]
    if int(support.count_nonzero()) > d * (d - 1) // 2:  # more edges than any DAG on d nodes has
        return False
    reach = support.to(torch.float32)
    for _ in range(max(1, math.ceil(math.log2(max(d, 2))))):  # after k rounds: paths of length <= 2^k
        reach = ((reach + reach @ reach) > 0).to(torch.float32)
    return not bool(reach.diagonal(dim1=-2, dim2=-1).any())


def is_dag(adjacency) -> bool:
    """Whether the 0/1 matrix ``adjacency`` (``(i, j) = 1`` iff ``i -> j``) has no directed cycle."""
    return nx.is_directed_acyclic_graph(nx.from_numpy_array(np.asarray(adjacency), create_using=nx.DiGraph))


def dag_from_probabilities(edge_probs, threshold: float = 0.5) -> np.ndarray:
    """The DAG kept by adding edges by decreasing probability, skipping those that close a cycle.

    Thresholding alone can leave a cycle when training stopped before ``h`` reached zero; this
    greedy pass always returns a DAG, and returns exactly the thresholded graph when that one
    is acyclic.

    Args:
        edge_probs: ``(d, d)`` array of edge probabilities.
        threshold: edges with probability ``<= threshold`` are never kept.

    Returns:
        ``(d, d)`` int array, a DAG.
    """
    probs = np.asarray(edge_probs, dtype=float)
    d = probs.shape[0]
    candidates = [(probs[i, j], i, j) for i in range(d) for j in range(d) if i != j and probs[i, j] > threshold]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(d))
    for _, i, j in sorted(candidates, reverse=True):
        if not nx.has_path(graph, j, i):
            graph.add_edge(i, j)
    return nx.to_numpy_array(graph, nodelist=range(d), dtype=int)


@dataclass
class PenaltySchedule:
    """Augmented-Lagrangian schedule, counted in optimisation steps (not epochs).

    Attributes:
        first_round_steps: SVI steps before the first multiplier update.
        round_steps: SVI steps between later updates.
        max_rounds: budget of updates; training stops after it.
        tolerance: stop once ``h(sigmoid(Lambda))`` is below this value.
        initial_penalty: ``mu_0``.
        penalty_growth: ``mu`` is multiplied by this when ``h`` did not shrink enough.
        max_penalty: ``mu`` is never raised above this.
        required_progress: ``h`` must fall below this fraction of its previous value, or ``mu`` grows.
    """

    first_round_steps: int = 1000
    round_steps: int = 200
    max_rounds: int = 30
    tolerance: float = 1e-8
    initial_penalty: float = 1e-2
    penalty_growth: float = 10.0
    max_penalty: float = 1e12
    required_progress: float = 0.25

    def __post_init__(self) -> None:
        for name in ("first_round_steps", "round_steps", "max_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.tolerance > 0 or not self.initial_penalty > 0 or not self.penalty_growth > 1:
            raise ValueError("tolerance and initial_penalty must be > 0 and penalty_growth > 1")


class AugmentedLagrangian(nn.Module):
    """State of the augmented Lagrangian: multiplier ``phi_t`` and penalty ``mu_t`` (section 3.8).

    The loss gains ``phi_t h + mu_t / 2 h^2``; after each round, ``phi_{t+1} = phi_t + mu_t h``
    and ``mu`` grows when ``h`` fell by less than ``required_progress``.
    """

    def __init__(self, schedule: PenaltySchedule | None = None) -> None:
        super().__init__()
        self.schedule = schedule or PenaltySchedule()
        self.register_buffer("multiplier", torch.tensor(0.0))
        self.register_buffer("penalty", torch.tensor(float(self.schedule.initial_penalty)))
        self.register_buffer("previous_h", torch.tensor(float("inf")))
        self.register_buffer("rounds", torch.tensor(0))

    def forward(self, h: Tensor) -> Tensor:
        """The penalty term ``phi h + mu / 2 h^2``."""
        return self.multiplier * h + 0.5 * self.penalty * h * h

    @torch.no_grad()
    def update(self, h: float) -> None:
        """Dual ascent on ``phi`` and, if ``h`` did not shrink enough, a larger ``mu``."""
        s = self.schedule
        if h > s.required_progress * float(self.previous_h):
            self.penalty.fill_(min(float(self.penalty) * s.penalty_growth, s.max_penalty))
        self.multiplier.add_(self.penalty * h)
        self.previous_h.fill_(h)
        self.rounds.add_(1)

    def steps_in_round(self) -> int:
        """Length of the current round in SVI steps."""
        return self.schedule.first_round_steps if int(self.rounds) == 0 else self.schedule.round_steps

    def converged(self, h: float) -> bool:
        return h < self.schedule.tolerance

    def exhausted(self) -> bool:
        return int(self.rounds) >= self.schedule.max_rounds

"""Local search over causal orders, scored by the linear-Gaussian profile of the bound.

Given the mixture the penalty loop found (``q(z)`` of every row and the target probabilities
``pi``), the expected log-likelihood of eq. 8 for a DAG with every mechanism at its
maximum-likelihood value has a closed form (:func:`graph_scores`): for each variable ``j`` the
observational mechanism is a weighted least-squares regression of ``x_j`` on its parents with
row weights ``sum_k q(z_i = k) (1 - pi_kj)``, and component ``k``'s intervened
mechanism one with weights ``q(z_i = k) pi_kj`` (on the same parents for imperfect
interventions, on none for perfect ones).  An order is scored by its complete DAG, every
predecessor a parent (:func:`order_scores`).  Complete DAGs of different orders are Markov
equivalent, so without interventions every order scores the same; the interventions found by
the mixture are what separate them.  The scores need only the components' weighted second
moments ``M_k = sum_i q(z_i = k) [x_i, 1] [x_i, 1]^T``, so a hill climb over insertion moves (one
variable moved to another position) costs batched ``(d + 1) x (d + 1)`` solves, one per distinct
(variable, predecessor set) among the candidates. The hill climb stops at a local optimum, so
:func:`propose_order` climbs from the fitted DAG's order and from random orders and keeps the best.
The order it returns is a proposal: :func:`pyro_causal.fit` refits the model with that order held
and keeps the refit only when its bound is higher.
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple

import networkx as nx
import numpy as np
import torch
from torch import Tensor

from .acyclicity import dag_from_probabilities
from .posterior import exact_assignment_probs

#: Candidate orders scored per :func:`graph_scores` call of :func:`search_order`.
CHUNK = 256
#: (variable, parent set) families regressed per batched solve (bounds memory at large ``d`` and ``K``).
FAMILY_CHUNK = 256
#: Bits of the integer key of a (mixture, variable, parent set) family: ``d`` for the parents and
#: enough for ``mixture * d + variable``; families of larger problems are sorted as rows instead.
FAMILY_KEY_BITS = 62
PROPOSAL_RESTARTS = 20
"""Random orders :func:`propose_order` climbs from besides the fitted DAG's order."""
PROPOSAL_STREAM = 0x70726F706F7365
"""Second entropy word of the random starts' generator (``b"propose"``): apart from every other
stream seeded with the fit's seed (``simulate``'s among them)."""


def component_moments(x: Tensor, assignment_probs: Tensor) -> Tensor:
    """``M_k = sum_i q_ik y_i y_i^T`` with ``y = [x, 1]``: ``(n, d), (n, K) -> (K, d + 1, d + 1)``, float64."""
    y = torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=torch.float64)], 1)
    return torch.einsum("ik,ia,ib->kab", assignment_probs.double(), y, y)


def _regression_log_likelihood(gram: Tensor, target: Tensor, inputs: Tensor) -> Tensor:
    """Maximum weighted Gaussian log-likelihood of ``x_target`` regressed on ``x_inputs`` and 1.

    Args:
        gram: ``(..., d + 1, d + 1)`` weighted second moments (last index: the constant).
        target: ``(...)`` long, the regressed variable.
        inputs: ``(..., d)`` bool, the regressors.

    Returns:
        ``(...)``: ``-W / 2 (log(2 pi RSS / W) + 1)`` with ``W`` the total weight (0 where ``W = 0``).
    """
    d = inputs.shape[-1]
    gram = gram.expand(*target.shape, d + 1, d + 1)
    keep = torch.cat([inputs, inputs.new_ones(*inputs.shape[:-1], 1)], -1).to(gram.dtype)  # (..., d + 1)
    outer = keep.unsqueeze(-1) * keep.unsqueeze(-2)
    system = gram * outer + torch.diag_embed(1.0 - keep)  # dropped regressors become identity rows
    column = torch.gather(gram, -1, target[..., None, None].expand(*target.shape, d + 1, 1)).squeeze(-1) * keep
    total = gram[..., d, d]
    own = torch.gather(gram.diagonal(dim1=-2, dim2=-1), -1, target.unsqueeze(-1)).squeeze(-1)
    ridge = 1e-9 * total.clamp_min(1.0)[..., None, None] * torch.eye(d + 1, dtype=gram.dtype, device=gram.device)
    explained = (column * torch.linalg.solve(system + ridge, column.unsqueeze(-1)).squeeze(-1)).sum(-1)
    safe_total = total.clamp_min(1e-12)
    variance = ((own - explained) / safe_total).clamp_min(1e-12)
    value = -0.5 * total * (torch.log(2 * math.pi * variance) + 1.0)
    return torch.where(total > 1e-9, value, torch.zeros_like(value))


def _distinct(keys: Tensor) -> Tuple[Tensor, Tensor]:
    """``(index of one occurrence of each distinct key, index of each key's distinct key)`` for
    ``(N,)`` keys or ``(N, L)`` rows."""
    distinct, inverse = torch.unique(keys, dim=0 if keys.dim() > 1 else None, return_inverse=True)
    first = torch.empty(len(distinct), dtype=torch.long, device=keys.device)
    first[inverse] = torch.arange(len(keys), device=keys.device)
    return first, inverse


class MixtureScores:
    """Profile log-likelihoods of DAGs under one mixture or a batch of ``B`` mixtures, each
    (mixture, variable, parent set) family regressed once over the object's life: a hill climb's
    candidates at successive steps, and climbs from several starts, share most families.

    Every mechanism is at its maximum-likelihood value (the weighted regressions of the module
    docstring, each variable on its parents in the graph); no priors.  A graph's score does not
    depend on which graphs or mixtures were scored before or beside it.

    Args:
        moments: ``(K, d + 1, d + 1)`` from :func:`component_moments`, or ``(B, K, d + 1, d + 1)``.
        target_probs: ``(K, d)`` ``pi`` with row 0 (observational) zero, or ``(B, K, d)``.
        perfect: intervened mechanisms have no parents.
    """

    def __init__(self, moments: Tensor, target_probs: Tensor, perfect: bool = False) -> None:
        moments = moments if moments.dim() == 4 else moments.unsqueeze(0)
        pi = target_probs.double().to(moments.device)
        self.pi = pi if pi.dim() == 3 else pi.unsqueeze(0)  # (B, K, d)
        B, K, d = self.pi.shape
        self.moments, self.perfect = moments, perfect
        self.observational = torch.einsum("bkj,bkac->bjac", 1.0 - self.pi, moments)  # (B, d, d + 1, d + 1)
        self.intervened = None  # perfect: one regression per (k, j) serves every graph, (B, K - 1, d)
        if K > 1 and perfect:
            self.intervened = _regression_log_likelihood(
                moments[:, 1:, None], torch.arange(d, device=moments.device).expand(B, K - 1, d),
                torch.zeros(B, K - 1, d, d, dtype=torch.bool, device=moments.device))
        # families regressed so far (integer keys, sorted) and their values; intervened ones only
        # for imperfect interventions (perfect ones use self.intervened)
        self._keys = torch.zeros(0, dtype=torch.long, device=moments.device)
        self._own = moments.new_zeros(0)
        self._per_component = None if K == 1 or perfect else moments.new_zeros(K - 1, 0)

    def _regress(self, families: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """``(U, 2 + d)`` families (mixture, variable, parent indicators) -> ``(own (U,), per_component
        (K - 1, U))``: the observational regressions and, for imperfect interventions, the intervened
        ones (else ``None``)."""
        K = self.pi.shape[1]
        chunks = list(zip(families[:, 0].split(FAMILY_CHUNK), families[:, 1].split(FAMILY_CHUNK),
                          families[:, 2:].bool().split(FAMILY_CHUNK)))
        own = torch.cat([_regression_log_likelihood(self.observational[m, v], v, p) for m, v, p in chunks])
        if K == 1 or self.perfect:
            return own, None
        per_component = torch.cat([_regression_log_likelihood(self.moments[m, 1:].transpose(0, 1), v.expand(K - 1, -1),
                                                              p.expand(K - 1, -1, -1)) for m, v, p in chunks], 1)
        return own, per_component

    def _remembered(self, keys: Tensor, families: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """:meth:`_regress` of distinct sorted ``keys`` (rows ``families``), regressing only the new ones."""
        new = ~torch.isin(keys, self._keys)
        if bool(new.any()):
            own, per_component = self._regress(families[new])
            merged = torch.cat([self._keys, keys[new]])
            order = merged.argsort()
            self._keys = merged[order]
            self._own = torch.cat([self._own, own])[order]
            if self._per_component is not None:
                self._per_component = torch.cat([self._per_component, per_component], 1)[:, order]
        at = torch.searchsorted(self._keys, keys)
        return self._own[at], None if self._per_component is None else self._per_component[:, at]

    def graphs(self, adjacency: Tensor, mixture: Optional[Tensor] = None) -> Tensor:
        """Scores of DAGs: ``(M, d, d) -> (M,)``; ``adjacency[m, i, j]`` (bool or 0/1) for the edge
        ``i -> j``, each under the mixture ``mixture[m]`` (``(M,)`` long; default the first)."""
        B, K, d = self.pi.shape
        device = self.moments.device
        parents = adjacency.to(device).bool().transpose(-1, -2)  # (M, j, l): l is a parent of j
        M = parents.shape[0]
        mixture = torch.zeros(M, dtype=torch.long, device=device) if mixture is None else mixture.to(device)
        families = torch.cat([mixture.unsqueeze(1).expand(M, d).reshape(-1, 1),
                              torch.arange(d, device=device).expand(M, d).reshape(-1, 1),
                              parents.reshape(M * d, d).long()], 1)  # (M d, 2 + d): mixture, variable, parents
        if (B * d - 1).bit_length() + d <= FAMILY_KEY_BITS:  # one integer per family: faster to sort than rows
            bits = 2 ** torch.arange(d, device=device)
            keys = (families[:, 0] * d + families[:, 1]) << d | (families[:, 2:] * bits).sum(-1)
            first, family_of = _distinct(keys)
            own, per_component = self._remembered(keys[first], families[first])
        else:  # rows sorted; nothing remembered between calls
            first, family_of = _distinct(families)
            own, per_component = self._regress(families[first])
        score = own[family_of].reshape(M, d).sum(-1)
        if K > 1:
            if self.perfect:  # one sum per mixture, each contiguous as alone
                score = score + (self.pi[:, 1:] * self.intervened).reshape(B, -1).sum(-1)[mixture]
            else:
                per_graph = per_component[:, family_of].reshape(K - 1, M, d).transpose(0, 1)  # (M, K - 1, d)
                weighted = self.pi[mixture, 1:] * per_graph
                score = score + weighted.reshape(M, -1).sum(-1)  # one contiguous sum per graph, as alone
        return score

    def orders(self, orders: Tensor, mixture: Optional[Tensor] = None) -> Tensor:
        """Scores of the complete DAGs consistent with ``(M, d)`` long permutations (causes first),
        each under ``mixture[m]`` (as in :meth:`graphs`): ``(M,)``."""
        d = orders.shape[1]
        position = torch.empty_like(orders)
        position.scatter_(1, orders, torch.arange(d, device=orders.device).expand_as(orders))
        return self.graphs(position.unsqueeze(2) < position.unsqueeze(1), mixture)  # (M, i, j): i precedes j


def graph_scores(moments: Tensor, target_probs: Tensor, adjacency: Tensor, perfect: bool = False) -> Tensor:
    """Profile log-likelihood of DAGs given the mixture: ``(M, d, d) -> (M,)`` (:class:`MixtureScores`).

    Args:
        moments: ``(K, d + 1, d + 1)`` from :func:`component_moments`.
        target_probs: ``(K, d)`` ``pi`` with row 0 (observational) zero.
        adjacency: ``(M, d, d)`` bool or 0/1, ``adjacency[m, i, j]`` for the edge ``i -> j``.
        perfect: intervened mechanisms have no parents.
    """
    return MixtureScores(moments, target_probs, perfect).graphs(adjacency)


def order_scores(moments: Tensor, target_probs: Tensor, orders: Tensor, perfect: bool = False) -> Tensor:
    """:func:`graph_scores` of the complete DAG consistent with each order: ``(M, d) -> (M,)``.

    Args:
        moments, target_probs, perfect: as in :func:`graph_scores`.
        orders: ``(M, d)`` long permutations (causes first).
    """
    return MixtureScores(moments, target_probs, perfect).orders(orders)


def insertion_moves(order: Sequence[int]) -> Tensor:
    """Every order reached by moving one variable to another position: ``(d (d - 1) - (d - 1), d)``
    (moves that coincide, the adjacent swaps counted from both sides, appear once)."""
    return torch.as_tensor([int(v) for v in order], dtype=torch.long)[_insertion_positions(len(order))]


@functools.lru_cache(maxsize=None)
def _insertion_positions(d: int) -> Tensor:
    """:func:`insertion_moves` of ``range(d)``: which position of the order each candidate takes
    from (the moves depend on positions only: an order's entries are distinct)."""
    seen, moves = {tuple(range(d))}, []
    for a in range(d):
        rest = [p for p in range(d) if p != a]
        for b in range(d):
            candidate = tuple(rest[:b] + [a] + rest[b:])
            if candidate not in seen:
                seen.add(candidate)
                moves.append(candidate)
    return torch.tensor(moves, dtype=torch.long).reshape(len(moves), d)


def along(orders: Tensor, required: Tensor) -> Tensor:
    """``(M,)`` bool: which of the ``(M, d)`` orders have every edge of the ``(d, d)`` mask ``required`` along them."""
    position = torch.empty_like(orders)
    position.scatter_(1, orders, torch.arange(orders.shape[1], device=orders.device).expand_as(orders))
    causes, effects = required.to(orders.device).nonzero(as_tuple=True)
    return (position[:, causes] < position[:, effects]).all(1)


def climb(scores: MixtureScores, starts: Tensor, mixture: Optional[Tensor] = None, *, max_moves: int = 200,
          tolerance: float = 1e-6, required: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Hill-climbs over insertion moves from each of ``T`` starts in lockstep, climb ``t`` under the
    mixture ``mixture[t]`` of ``scores`` (default the first), among the orders that keep every edge
    of the ``(d, d)`` bool mask ``required`` along them.  Each step scores every climb's candidates
    together; a climb stops at the first order no single insertion improves by more than
    ``tolerance`` nats, or after ``max_moves`` moves.

    Args:
        starts: ``(T, d)`` long orders (causes first).

    Returns:
        ``(orders (T, d), scores (T,) float64, moves taken (T,))``.
    """
    device = scores.moments.device
    orders = starts.to(device=device, dtype=torch.long).clone()
    T, d = orders.shape
    mixture = torch.zeros(T, dtype=torch.long, device=device) if mixture is None else mixture.to(device)
    moves = torch.zeros(T, dtype=torch.long, device=device)
    if max_moves <= 0:
        return orders, _scored(scores, orders, mixture).double(), moves
    positions = _insertion_positions(d).to(device)
    active = torch.arange(T, device=device)
    for taken in range(max_moves):
        candidates = orders[active][:, positions]  # (A, C, d)
        valid = torch.ones(candidates.shape[:2], dtype=torch.bool, device=device)
        if required is not None:
            valid = along(candidates.reshape(-1, d), required).reshape(valid.shape)
        owner = active.unsqueeze(1).expand_as(valid)[valid]  # the climb of each valid candidate
        flat = candidates[valid]
        if taken == 0:  # each start is scored with its first candidates, in one pass over their families
            flat, owner = torch.cat([orders, flat]), torch.cat([torch.arange(T, device=device), owner])
        values = _scored(scores, flat, mixture[owner])
        if taken == 0:
            best, values = values[:T].double(), values[T:]
        table = torch.full(valid.shape, -math.inf, dtype=torch.float64, device=device)
        table[valid] = values.to(table)
        top = table.argmax(1)  # the first of equal scores
        gain = table.gather(1, top.unsqueeze(1)).squeeze(1)
        better = gain > best[active] + tolerance  # -inf where a climb has no candidate left
        winners = active[better]
        orders[winners] = candidates[better, top[better]]
        best[winners] = gain[better]
        moves[winners] += 1
        active = winners
        if len(active) == 0:
            break
    return orders, best, moves


def _scored(scores: MixtureScores, orders: Tensor, mixture: Tensor) -> Tensor:
    """:meth:`MixtureScores.orders` of ``(M, d)`` orders in chunks of :data:`CHUNK`: ``(M,)``."""
    if len(orders) == 0:
        return torch.zeros(0, dtype=torch.float64, device=orders.device)
    return torch.cat([scores.orders(chunk, at) for chunk, at in zip(orders.split(CHUNK), mixture.split(CHUNK))])


def search_order(moments: Tensor, target_probs: Tensor, start: Sequence[int], *, perfect: bool = False,
                 max_moves: int = 200, tolerance: float = 1e-6, required: Optional[Tensor] = None,
                 scores: Optional[MixtureScores] = None) -> Tuple[List[int], float, int]:
    """Hill-climb :func:`order_scores` over insertion moves from ``start`` (one :func:`climb`), among
    the orders that keep every edge of the ``(d, d)`` bool mask ``required`` (edges the prior fixes)
    along them.

    ``scores``: the :class:`MixtureScores` of ``(moments, target_probs, perfect)`` when already at
    hand (several climbs under one mixture share its regressions).

    Returns:
        ``(order, score, moves taken)``: the first order no single insertion improves by more
        than ``tolerance`` nats (or the order after ``max_moves`` moves).
    """
    scores = MixtureScores(moments, target_probs, perfect) if scores is None else scores
    orders, best, moves = climb(scores, torch.tensor([[int(v) for v in start]]), max_moves=max_moves,
                                tolerance=tolerance, required=required)
    return orders[0].tolist(), float(best[0]), int(moves[0])


def order_respecting(permutation: Sequence[int], required: Optional[Tensor] = None) -> List[int]:
    """``permutation`` itself, or with every edge of the ``(d, d)`` bool mask ``required`` along it:
    the topological order of those edges that breaks ties by ``permutation``."""
    if required is None or not bool(required.any()):
        return [int(v) for v in permutation]
    position = np.argsort(np.asarray(permutation))
    graph = nx.from_numpy_array(required.cpu().numpy().astype(int), create_using=nx.DiGraph)
    return [int(v) for v in nx.lexicographical_topological_sort(graph, key=lambda v: position[v])]


@torch.no_grad()
def propose_order(model, x: Tensor, regimes: Optional[Tensor] = None, targets: Optional[Tensor] = None, *,
                  restarts: int = PROPOSAL_RESTARTS, seed: int = 0) -> dict:
    """The best order :func:`search_order` reaches from a topological order of ``model``'s DAG
    and from ``restarts`` random orders (drawn from ``(seed, PROPOSAL_STREAM)``).

    The mixture is ``model``'s: ``q(z)`` at its optimum given the other factors (one-hot where
    ``regimes`` are given) and ``pi`` (or the given ``targets``).

    Returns:
        ``{"order", "start", "start_score", "score", "moves", "restart"}`` (scores in nats, whole
        data set; ``start`` is the DAG's order, ``restart`` the index of the climb that won, 0 for
        the one from ``start``).
    """
    probs = torch.as_tensor(exact_assignment_probs(model, x), dtype=torch.float64, device=x.device)
    if regimes is not None:
        known = regimes >= 0
        probs[known] = torch.nn.functional.one_hot(regimes[known], probs.shape[1]).to(probs)
    pi = targets if targets is not None else model.full_targets(model.guide.target_probs())
    graph = nx.from_numpy_array(dag_from_probabilities(model.guide.edge_probs().cpu().numpy()), create_using=nx.DiGraph)
    start = list(nx.lexicographical_topological_sort(graph))
    moments = component_moments(x, probs)
    pi = pi.to(moments)
    scores = MixtureScores(moments, pi, model.perfect)  # one mixture: the climbs share its regressions
    start_score = float(scores.orders(torch.tensor([start], device=x.device))[0])
    rng = np.random.default_rng([seed, PROPOSAL_STREAM])
    starts = [start] + [order_respecting(rng.permutation(len(start)), model.guide.required) for _ in range(restarts)]
    orders, values, moves = climb(scores, torch.tensor(starts, device=x.device), required=model.guide.required)
    best = max(range(len(starts)), key=lambda i: float(values[i]))  # the first of equal scores
    return {"order": orders[best].tolist(), "start": start, "start_score": start_score, "score": float(values[best]),
            "moves": int(moves[best]), "restart": best}

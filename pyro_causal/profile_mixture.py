"""A closed-form refinement of the mixture the penalty loop found, with target-swap moves.

The order proposal (:mod:`pyro_causal.order_search`) scores orders under the loop's mixture: its
``q(z)`` and target probabilities ``pi``.  When that mixture attaches an intervention to the wrong
variable, the orders it prefers keep the edges that make the wrong target look right, and every
climb reaches them.  This module moves the mixture itself, with every mechanism at its
maximum-likelihood value (linear Gaussian, as in :func:`~pyro_causal.order_search.graph_scores`):

* given an order (complete DAG), each variable's observational mechanism is a weighted regression
  on its predecessors (row weights ``sum_k q_ik (1 - pi_kj)``) and component ``k``'s intervened one
  a regression with weights ``q_ik`` (on no parents for perfect interventions);
* ``pi`` at its mean-field optimum given those mechanisms (eq. 8 is affine in ``r``):
  ``logit pi_kj = gamma + sum_i q_ik (log g_kj - log g_j)(x_ij)``, ``pi_0 = 0``;
* ``q(z)`` by Bayes' rule with weights ``mean_i q_ik``; the order by
  :func:`~pyro_causal.order_search.search_order` on the new mixture.

:func:`refine` alternates these steps; its score is ``sum_i log sum_k w_k p(x_i | k)`` minus the
targets' KL to their prior.  The alternation only climbs, so :func:`swap_targets` adds moves: one
component's targets set to one variable, a few alternations, the best move kept while the score
rises.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .order_search import search_order

LOG_TWO_PI = math.log(2 * math.pi)
#: Floor of a mechanism's residual variance (standardised data).
MIN_VARIANCE = 1e-6


class Mixture(NamedTuple):
    """A refined mixture: ``score`` (nats), ``order`` (causes first), ``q`` ``(n, K)``, ``pi`` ``(K, d)``."""

    score: float
    order: list
    q: Tensor
    pi: Tensor


def _regression(gram: Tensor, inputs: Tensor) -> Tensor:
    """Weighted least-squares coefficients of each ``x_j`` on ``[x_inputs, 1]``.

    Args:
        gram: ``(..., d, d + 1, d + 1)``: for each variable ``j``, the weighted second moments of
            ``[x, 1]`` of its regression.
        inputs: ``(d, d)`` bool, ``inputs[j, l]``: ``x_l`` is a regressor of ``x_j``.

    Returns:
        ``(..., d, d + 1)``: row ``j`` maps ``[x, 1]`` to the prediction of ``x_j``.
    """
    d = inputs.shape[-1]
    keep = torch.cat([inputs, inputs.new_ones(d, 1)], -1).to(gram.dtype)  # (d, d + 1)
    system = gram * keep.unsqueeze(-1) * keep.unsqueeze(-2) + torch.diag_embed(1.0 - keep)
    index = torch.arange(d, device=gram.device)
    right = gram[..., index, :, index] if gram.dim() == 3 else gram[..., index, :, index].movedim(0, -2)
    right = right * keep  # (..., d, d + 1): sum_i w_i y_i x_ij over the kept regressors
    ridge = 1e-9 * torch.eye(d + 1, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(system + ridge, right.unsqueeze(-1)).squeeze(-1) * keep


def _gaussian_log_density(x: Tensor, y: Tensor, coefficients: Tensor, weights: Tensor) -> Tensor:
    """``log N(x_ij; coefficients_j . y_i, s_j^2)`` with ``s_j^2`` the weighted residual variance.

    ``x`` ``(n, d)``, ``y`` ``(n, d + 1)``, ``coefficients`` ``(..., d, d + 1)``, ``weights``
    ``(..., n, d)`` -> ``(..., n, d)``.
    """
    residual = x - y @ coefficients.transpose(-1, -2)  # (..., n, d)
    total = weights.sum(-2).clamp_min(1e-12)
    variance = ((weights * residual ** 2).sum(-2) / total).clamp_min(MIN_VARIANCE)  # (..., d)
    return -0.5 * (LOG_TWO_PI + variance.log().unsqueeze(-2) + residual ** 2 / variance.unsqueeze(-2))


def row_outer_products(x: Tensor) -> Tensor:
    """``y_i y_i^T`` of every row, ``y = [x, 1]``, flattened: ``(n, d) -> (n, (d + 1)^2)``; weighted
    second moments are then one matrix product (``weights^T @ outer``)."""
    y = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
    return (y.unsqueeze(2) * y.unsqueeze(1)).reshape(x.shape[0], -1)


def _moments(weights: Tensor, outer: Tensor) -> Tensor:
    """``sum_i w_ic y_i y_i^T`` for every column ``c`` of ``weights`` ``(n, C)``: ``(C, d + 1, d + 1)``."""
    side = math.isqrt(outer.shape[1])
    return (weights.T @ outer).reshape(weights.shape[1], side, side)


def mechanism_log_densities(x: Tensor, order: Sequence[int], q: Tensor, pi: Tensor, perfect: bool = True,
                            outer: Optional[Tensor] = None):
    """Per-row log-densities of the maximum-likelihood mechanisms of the complete DAG of ``order``
    (``outer``: :func:`row_outer_products` of ``x``, when already at hand).

    Returns:
        ``(observational (n, d), intervened (n, K, d))``: ``log g_j(x_ij | predecessors)`` and
        ``log g_kj(x_ij | ...)`` of component ``k``'s intervened mechanism.
    """
    n, d = x.shape
    outer = row_outer_products(x) if outer is None else outer
    y = torch.cat([x, x.new_ones(n, 1)], 1)
    position = torch.empty(d, dtype=torch.long, device=x.device)
    position[torch.as_tensor(order, device=x.device)] = torch.arange(d, device=x.device)
    inputs = position.unsqueeze(0) < position.unsqueeze(1)  # (j, l): l precedes j
    weights = q @ (1.0 - pi)  # (n, d)
    observational = _gaussian_log_density(x, y, _regression(_moments(weights, outer), inputs), weights)
    moments = _moments(q, outer)  # (K, d + 1, d + 1)
    parents = torch.zeros_like(inputs) if perfect else inputs
    coefficients = _regression(moments.unsqueeze(1).expand(-1, d, -1, -1), parents)  # (K, d, d + 1)
    component_weights = q.T.unsqueeze(-1).expand(-1, -1, d)  # (K, n, d)
    intervened = _gaussian_log_density(x, y, coefficients, component_weights).transpose(0, 1)  # (n, K, d)
    return observational, intervened


def _target_kl(pi: Tensor, target_logit: float) -> Tensor:
    """``sum KL(Bernoulli(pi_kj) || Bernoulli(sigmoid(gamma)))`` over the intervened components."""
    p = pi[1:].clamp(1e-12, 1 - 1e-12)
    prior = torch.sigmoid(torch.tensor(target_logit, dtype=pi.dtype))
    return (p * (p / prior).log() + (1 - p) * ((1 - p) / (1 - prior)).log()).sum()


def refine(x: Tensor, q: Tensor, pi: Tensor, order: Sequence[int], *, perfect: bool = True,
           target_logit: float = -2.0, iterations: int = 30, tolerance: float = 1e-6,
           outer: Optional[Tensor] = None, required: Optional[Tensor] = None) -> Mixture:
    """Alternate order, mechanisms, targets and ``q(z)`` (module docstring) from ``(q, pi, order)``.

    Args:
        x: ``(n, d)`` rows; q: ``(n, K)`` assignment probabilities; pi: ``(K, d)`` targets (row 0 is
            the observational regime and stays 0); order: the starting order.
        iterations: at most this many alternations; stops when the score rises by less than
            ``tolerance`` per row.
        required: ``(d, d)`` bool mask of edges every order searched keeps along it.
        outer: :func:`row_outer_products` of ``x`` (float64), when already at hand.

    Returns:
        The :class:`Mixture` after the last alternation (float64).
    """
    x, q, pi = x.double(), q.double(), pi.double().clone()
    outer = row_outer_products(x) if outer is None else outer
    order, score = list(order), None
    for _ in range(iterations):
        order = search_order(_moments(q, outer), pi, order, perfect=perfect, required=required)[0]
        observational, intervened = mechanism_log_densities(x, order, q, pi, perfect, outer)
        gain = torch.einsum("ik,ikj->kj", q, intervened - observational.unsqueeze(1))
        pi = torch.sigmoid((target_logit + gain).clamp(-30.0, 30.0))
        pi[0] = 0.0
        log_weights = q.mean(0).clamp_min(1e-12).log()
        joint = log_weights + ((1 - pi) * observational.unsqueeze(1) + pi * intervened).sum(-1)  # (n, K)
        q = torch.softmax(joint, 1)
        new = float(torch.logsumexp(joint, 1).sum() - _target_kl(pi, target_logit))
        done = score is not None and new - score < tolerance * x.shape[0]
        score = new
        if done:
            break
    return Mixture(score, order, q, pi)


def swap_targets(x: Tensor, q: Tensor, pi: Tensor, order: Sequence[int], *, perfect: bool = True,
                 target_logit: float = -2.0, sweeps: int = 4, trial_iterations: int = 4,
                 required: Optional[Tensor] = None) -> Mixture:
    """:func:`refine`, then greedy target-swap moves while the score rises.

    A move sets component ``k``'s targets to variable ``j`` alone (``pi_kj = 0.9``, the others
    0.02) and refines for ``trial_iterations``; each sweep tries every ``(k >= 1, j)`` with
    ``pi_kj <= 1/2`` and keeps the best move, refined to convergence, when it scores higher.
    """
    x = x.double()
    outer = row_outer_products(x)
    best = refine(x, q, pi, order, perfect=perfect, target_logit=target_logit, outer=outer, required=required)
    K, d = best.pi.shape
    for _ in range(sweeps):
        candidate = None
        for k in range(1, K):
            for j in range(d):
                if best.pi[k, j] > 0.5:
                    continue
                moved = best.pi.clone()
                moved[k] = 0.02
                moved[k, j] = 0.9
                trial = refine(x, best.q, moved, best.order, perfect=perfect, target_logit=target_logit,
                               iterations=trial_iterations, outer=outer, required=required)
                if trial.score > (best.score if candidate is None else candidate.score):
                    candidate = trial
        if candidate is None:
            break
        best = refine(x, candidate.q, candidate.pi, candidate.order, perfect=perfect, target_logit=target_logit,
                      outer=outer, required=required)
    return best

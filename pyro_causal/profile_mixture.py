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
targets' KL to their prior.  Every step reads the rows only through their packed outer products
``[x_i, 1] [x_i, 1]^T`` (:func:`row_outer_products`): the components' moments are one matrix product,
a squared residual summed over a component's rows is ``a^T M_k a``, and each row's eq. 8 term one
quadratic form per component (:func:`joint_log_densities`), so an alternation costs
``O(n K d^2)``.  The alternation only climbs, so :func:`swap_targets` adds moves: one
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


class Mechanisms(NamedTuple):
    """Maximum-likelihood linear-Gaussian mechanisms as residual maps: ``x_ij - prediction = a . [x_i, 1]``.

    ``observational`` ``(d, d + 1)`` and its residual variances ``observational_variance`` ``(d,)``;
    ``intervened`` ``(K, d, d + 1)``, component ``k``'s, and ``intervened_variance`` ``(K, d)``.
    """

    observational: Tensor
    observational_variance: Tensor
    intervened: Tensor
    intervened_variance: Tensor


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


def _residual_variance(maps: Tensor, gram: Tensor) -> Tensor:
    """``a_j^T G a_j / G[d, d]``: the weighted mean squared residual, ``(..., d, d + 1)`` maps and
    ``(..., d, d + 1, d + 1)`` grams -> ``(..., d)``, floored at :data:`MIN_VARIANCE`."""
    squares = ((maps.unsqueeze(-2) @ gram).squeeze(-2) * maps).sum(-1)
    return (squares / gram[..., -1, -1].clamp_min(1e-12)).clamp_min(MIN_VARIANCE)


def fit_mechanisms(moments: Tensor, order: Sequence[int], pi: Tensor, perfect: bool = True) -> Mechanisms:
    """The maximum-likelihood mechanisms of the complete DAG of ``order`` given the mixture.

    Args:
        moments: ``(K, d + 1, d + 1)`` ``sum_i q_ik [x_i, 1] [x_i, 1]^T``.
        pi: ``(K, d)`` target probabilities (row 0 zero): the observational regression of ``x_j``
            weighs component ``k``'s rows by ``1 - pi_kj``.
        perfect: component ``k``'s intervened mechanisms have no parents.
    """
    K, side = moments.shape[0], moments.shape[-1]
    d = side - 1
    position = torch.empty(d, dtype=torch.long, device=moments.device)
    position[torch.as_tensor(order, device=moments.device)] = torch.arange(d, device=moments.device)
    inputs = position.unsqueeze(0) < position.unsqueeze(1)  # (j, l): l precedes j
    identity = torch.eye(d, side, dtype=moments.dtype, device=moments.device)
    gram = ((1.0 - pi).T @ moments.reshape(K, -1)).reshape(d, side, side)  # sum_k (1 - pi_kj) M_k
    observational = identity - _regression(gram, inputs)
    per_component = moments.unsqueeze(1).expand(-1, d, -1, -1)  # (K, d, d + 1, d + 1)
    intervened = identity - _regression(per_component, torch.zeros_like(inputs) if perfect else inputs)
    return Mechanisms(observational, _residual_variance(observational, gram),
                      intervened, _residual_variance(intervened, per_component))


def _triangle(side: int, device=None) -> Tensor:
    """``(2, side (side + 1) / 2)``: row and column of each upper-triangular entry, row-major."""
    return torch.triu_indices(side, side, device=device)


def row_outer_products(x: Tensor) -> Tensor:
    """The upper triangle (row-major) of ``y_i y_i^T`` of every row, ``y = [x, 1]``:
    ``(n, d) -> (n, (d + 1)(d + 2) / 2)``; weighted second moments are then one matrix product."""
    y = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
    rows, columns = _triangle(y.shape[1], x.device)
    return y[:, rows] * y[:, columns]


def _side(outer: Tensor) -> int:
    """``d + 1`` of :func:`row_outer_products`' ``(n, (d + 1)(d + 2) / 2)``."""
    return (math.isqrt(8 * outer.shape[1] + 1) - 1) // 2


def _moments(weights: Tensor, outer: Tensor) -> Tensor:
    """``sum_i w_ic y_i y_i^T`` for every column ``c`` of ``weights`` ``(n, C)``: ``(C, d + 1, d + 1)``."""
    side = _side(outer)
    rows, columns = _triangle(side, outer.device)
    packed = weights.T @ outer  # (C, side (side + 1) / 2)
    moments = packed.new_empty(weights.shape[1], side, side)
    moments[:, rows, columns] = packed
    moments[:, columns, rows] = packed
    return moments


def mechanism_log_densities(x: Tensor, mechanisms: Mechanisms):
    """Per-row log-densities of ``mechanisms``: ``(observational (n, d), intervened (n, K, d))``,
    ``log g_j(x_ij | predecessors)`` and ``log g_kj(x_ij | ...)``."""
    y = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)

    def log_density(maps, variance):
        residual = y @ maps.transpose(-1, -2)  # (..., n, d)
        return -0.5 * (LOG_TWO_PI + variance.log().unsqueeze(-2) + residual ** 2 / variance.unsqueeze(-2))

    return (log_density(mechanisms.observational, mechanisms.observational_variance),
            log_density(mechanisms.intervened, mechanisms.intervened_variance).transpose(0, 1))


def expected_log_densities(moments: Tensor, mechanisms: Mechanisms):
    """``sum_i q_ik log g_j(x_ij)`` and ``sum_i q_ik log g_kj(x_ij)``, both ``(K, d)``, from the
    components' moments (a squared residual summed over rows is ``a^T M_k a``)."""
    total = moments[:, -1, -1].unsqueeze(-1)  # (K, 1)
    obs, obs_var = mechanisms.observational, mechanisms.observational_variance
    inter, inter_var = mechanisms.intervened, mechanisms.intervened_variance
    obs_squares = ((obs @ moments) * obs).sum(-1)  # a_j^T M_k a_j: (K, d)
    inter_squares = ((inter @ moments) * inter).sum(-1)
    return (-0.5 * (total * (LOG_TWO_PI + obs_var.log()) + obs_squares / obs_var),
            -0.5 * (total * (LOG_TWO_PI + inter_var.log()) + inter_squares / inter_var))


def joint_log_densities(outer: Tensor, mechanisms: Mechanisms, pi: Tensor) -> Tensor:
    """``sum_j (1 - pi_kj) log g_j(x_ij) + pi_kj log g_kj(x_ij)`` (eq. 8 at ``E[r] = pi``) of every
    row and component: ``(n, K)``, one quadratic form ``y_i^T C_k y_i`` per row and component
    (``outer``: :func:`row_outer_products`)."""
    obs, obs_var = mechanisms.observational, mechanisms.observational_variance
    inter, inter_var = mechanisms.intervened, mechanisms.intervened_variance
    curvature = ((((1.0 - pi) / obs_var).unsqueeze(-1) * obs).transpose(-1, -2) @ obs
                 + ((pi / inter_var).unsqueeze(-1) * inter).transpose(-1, -2) @ inter)  # (K, d + 1, d + 1)
    rows, columns = _triangle(curvature.shape[-1], outer.device)
    packed = curvature[:, rows, columns] * torch.where(rows == columns, 1.0, 2.0).to(curvature)  # off-diagonal twice
    normaliser = ((1.0 - pi) * (LOG_TWO_PI + obs_var.log()) + pi * (LOG_TWO_PI + inter_var.log())).sum(-1)
    return -0.5 * (outer @ packed.T + normaliser)


def _target_kl(pi: Tensor, target_logit: float) -> Tensor:
    """``sum KL(Bernoulli(pi_kj) || Bernoulli(sigmoid(gamma)))`` over the intervened components."""
    p = pi[1:].clamp(1e-12, 1 - 1e-12)
    prior = torch.sigmoid(torch.tensor(target_logit, dtype=pi.dtype))
    return (p * (p / prior).log() + (1 - p) * ((1 - p) / (1 - prior)).log()).sum()


def refine(x: Tensor, q: Tensor, pi: Tensor, order: Sequence[int], *, perfect: bool = True,
           target_logit: float = -2.0, iterations: int = 30, tolerance: float = 1e-6,
           outer: Optional[Tensor] = None, required: Optional[Tensor] = None,
           moments: Optional[Tensor] = None) -> Mixture:
    """Alternate order, mechanisms, targets and ``q(z)`` (module docstring) from ``(q, pi, order)``.

    Args:
        x: ``(n, d)`` rows; q: ``(n, K)`` assignment probabilities; pi: ``(K, d)`` targets (row 0 is
            the observational regime and stays 0); order: the starting order.
        iterations: at most this many alternations; stops when the score rises by less than
            ``tolerance`` per row.
        required: ``(d, d)`` bool mask of edges every order searched keeps along it.
        outer: :func:`row_outer_products` of ``x`` (float64), when already at hand.
        moments: the components' moments under ``q`` (``_moments(q, outer)``), when already at hand.

    Returns:
        The :class:`Mixture` after the last alternation (float64).
    """
    x, q, pi = x.double(), q.double(), pi.double().clone()
    outer = row_outer_products(x) if outer is None else outer
    order, score = list(order), None
    for iteration in range(iterations):
        moments = moments if iteration == 0 and moments is not None else _moments(q, outer)
        order = search_order(moments, pi, order, perfect=perfect, required=required)[0]
        mechanisms = fit_mechanisms(moments, order, pi, perfect)
        observational, intervened = expected_log_densities(moments, mechanisms)
        pi = torch.sigmoid(target_logit + intervened - observational)  # eq. 8 is affine in r
        pi[0] = 0.0
        joint = q.mean(0).clamp_min(1e-12).log() + joint_log_densities(outer, mechanisms, pi)  # (n, K)
        evidence = torch.logsumexp(joint, 1, keepdim=True)  # log sum_k w_k p(x_i | k)
        q = (joint - evidence).exp()
        new = float(evidence.sum() - _target_kl(pi, target_logit))
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
        candidate, moments = None, _moments(best.q, outer)  # every trial starts from best.q
        for k in range(1, K):
            for j in range(d):
                if best.pi[k, j] > 0.5:
                    continue
                moved = best.pi.clone()
                moved[k] = 0.02
                moved[k, j] = 0.9
                trial = refine(x, best.q, moved, best.order, perfect=perfect, target_logit=target_logit,
                               iterations=trial_iterations, outer=outer, required=required, moments=moments)
                if trial.score > (best.score if candidate is None else candidate.score):
                    candidate = trial
        if candidate is None:
            break
        best = refine(x, candidate.q, candidate.pi, candidate.order, perfect=perfect, target_logit=target_logit,
                      outer=outer, required=required)
    return best

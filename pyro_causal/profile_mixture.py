"""A closed-form refinement of the mixture the penalty loop found, with target and order moves.

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
* ``q(z)`` by Bayes' rule with weights ``mean_i q_ik``; the order by a hill climb
  (:func:`~pyro_causal.order_search.climb`) on the new mixture.

:func:`refine` alternates these steps; its score is ``sum_i log sum_k w_k p(x_i | k)`` minus the
targets' KL to their prior.  Every step reads the rows only through their packed outer products
``[x_i, 1] [x_i, 1]^T`` (:func:`row_outer_products`): the components' moments are one matrix product,
a squared residual summed over a component's rows is ``a^T M_k a``, and each row's eq. 8 term one
quadratic form per component (:func:`joint_log_densities`), so an alternation costs
``O(n K d^2)``.  The alternation only climbs, so :func:`swap_targets` adds moves, each followed
by a few alternations, the best move kept while the score rises: one component's targets set to
one variable, or one variable of the order inserted elsewhere with that order held (the climb
inside an alternation scores orders under the mixture fitted to the order before, so it can stop
short of an order that scores higher once the mixture follows it).  Every function here takes
leading batch dimensions, so a sweep's trials alternate together.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .densities.linear import upper_outer_products
from .order_search import MixtureScores, along, climb, insertion_moves

LOG_TWO_PI = math.log(2 * math.pi)
#: Floor of a mechanism's residual variance (standardised data).
MIN_VARIANCE = 1e-6
#: Elements of the ``(trials, n, K)`` assignment tables :func:`swap_targets` alternates at once
#: (16 MiB each in float64: larger tables leave the cache and run slower).
TRIAL_ELEMENTS = 2 ** 21
#: An alternation stops when the score rose by less than this many nats per row.
TOLERANCE = 1e-6
#: :func:`swap_targets` tries order moves on at most this many variables by default: a sweep's
#: ``d (d - 1) - (d - 1)`` order trials cost ``O(n K d^4)`` (at d = 20, n = 10,000 they took its
#: time from about 90 s to about 250 s; ``docs/benchmarks.md``).
ORDER_MOVES_MAX_VARIABLES = 12


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
        inputs: ``(..., d, d)`` bool, ``inputs[j, l]``: ``x_l`` is a regressor of ``x_j``.

    Returns:
        ``(..., d, d + 1)``: row ``j`` maps ``[x, 1]`` to the prediction of ``x_j``.
    """
    d = inputs.shape[-1]
    keep = torch.cat([inputs, inputs.new_ones(*inputs.shape[:-1], 1)], -1).to(gram.dtype)  # (..., d, d + 1)
    system = gram * keep.unsqueeze(-1) * keep.unsqueeze(-2) + torch.diag_embed(1.0 - keep)
    right = torch.diagonal(gram[..., :d], dim1=-3, dim2=-1).transpose(-1, -2)  # (..., j, a): gram_j[a, j]
    right = right * keep  # (..., d, d + 1): sum_i w_i y_i x_ij over the kept regressors
    ridge = 1e-9 * torch.eye(d + 1, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(system + ridge, right.unsqueeze(-1)).squeeze(-1) * keep


def _residual_variance(maps: Tensor, gram: Tensor) -> Tensor:
    """``a_j^T G a_j / G[d, d]``: the weighted mean squared residual, ``(..., d, d + 1)`` maps and
    ``(..., d, d + 1, d + 1)`` grams -> ``(..., d)``, floored at :data:`MIN_VARIANCE`."""
    squares = ((maps.unsqueeze(-2) @ gram).squeeze(-2) * maps).sum(-1)
    return (squares / gram[..., -1, -1].clamp_min(1e-12)).clamp_min(MIN_VARIANCE)


def fit_mechanisms(moments: Tensor, order: Union[Sequence[int], Tensor], pi: Tensor, perfect: bool = True) -> Mechanisms:
    """The maximum-likelihood mechanisms of the complete DAG of ``order`` given the mixture; any
    leading dimensions of ``moments``, ``order`` and ``pi`` (a batch of mixtures) carry through.

    Args:
        moments: ``(..., K, d + 1, d + 1)`` ``sum_i q_ik [x_i, 1] [x_i, 1]^T``.
        order: ``(..., d)`` causes first (a sequence or a long tensor).
        pi: ``(..., K, d)`` target probabilities (row 0 zero): the observational regression of
            ``x_j`` weighs component ``k``'s rows by ``1 - pi_kj``.
        perfect: component ``k``'s intervened mechanisms have no parents.
    """
    K, side = moments.shape[-3], moments.shape[-1]
    d = side - 1
    order = torch.as_tensor(order, device=moments.device)
    position = torch.empty_like(order)
    position.scatter_(-1, order, torch.arange(d, device=moments.device).expand_as(order))
    inputs = position.unsqueeze(-2) < position.unsqueeze(-1)  # (..., j, l): l precedes j
    identity = torch.eye(d, side, dtype=moments.dtype, device=moments.device)
    gram = ((1.0 - pi).transpose(-1, -2) @ moments.reshape(*moments.shape[:-2], -1)).reshape(
        *moments.shape[:-3], d, side, side)  # sum_k (1 - pi_kj) M_k
    observational = identity - _regression(gram, inputs)
    per_component = moments.unsqueeze(-3).expand(*moments.shape[:-2], d, side, side)  # (..., K, d, d + 1, d + 1)
    intervened = identity - _regression(per_component, (torch.zeros_like(inputs) if perfect else inputs).unsqueeze(-3))
    return Mechanisms(observational, _residual_variance(observational, gram),
                      intervened, _residual_variance(intervened, per_component))


def _triangle(side: int, device=None) -> Tensor:
    """``(2, side (side + 1) / 2)``: row and column of each upper-triangular entry, row-major."""
    return torch.triu_indices(side, side, device=device)


def row_outer_products(x: Tensor) -> Tensor:
    """The upper triangle (row-major) of ``y_i y_i^T`` of every row, ``y = [x, 1]``:
    ``(n, d) -> (n, (d + 1)(d + 2) / 2)``; weighted second moments are then one matrix product."""
    return upper_outer_products(x).T.contiguous()


def _side(outer: Tensor) -> int:
    """``d + 1`` of :func:`row_outer_products`' ``(n, (d + 1)(d + 2) / 2)``."""
    return (math.isqrt(8 * outer.shape[1] + 1) - 1) // 2


def _moments(weights: Tensor, outer: Tensor) -> Tensor:
    """``sum_i w_ic y_i y_i^T`` for every column ``c`` of ``weights`` ``(..., n, C)``: ``(..., C, d + 1, d + 1)``."""
    side = _side(outer)
    rows, columns = _triangle(side, outer.device)
    packed = weights.transpose(-1, -2) @ outer  # (..., C, side (side + 1) / 2)
    moments = packed.new_empty(*packed.shape[:-1], side, side)
    moments[..., rows, columns] = packed
    moments[..., columns, rows] = packed
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
    """``sum_i q_ik log g_j(x_ij)`` and ``sum_i q_ik log g_kj(x_ij)``, both ``(..., K, d)``, from the
    components' moments (a squared residual summed over rows is ``a^T M_k a``)."""
    total = moments[..., -1, -1].unsqueeze(-1)  # (..., K, 1)
    obs, obs_var = mechanisms.observational.unsqueeze(-3), mechanisms.observational_variance.unsqueeze(-2)
    inter, inter_var = mechanisms.intervened, mechanisms.intervened_variance
    obs_squares = ((obs @ moments) * obs).sum(-1)  # a_j^T M_k a_j: (..., K, d)
    inter_squares = ((inter @ moments) * inter).sum(-1)
    return (-0.5 * (total * (LOG_TWO_PI + obs_var.log()) + obs_squares / obs_var),
            -0.5 * (total * (LOG_TWO_PI + inter_var.log()) + inter_squares / inter_var))


def joint_log_densities(outer: Tensor, mechanisms: Mechanisms, pi: Tensor) -> Tensor:
    """``sum_j (1 - pi_kj) log g_j(x_ij) + pi_kj log g_kj(x_ij)`` (eq. 8 at ``E[r] = pi``) of every
    row and component: ``(..., n, K)``, one quadratic form ``y_i^T C_k y_i`` per row and component
    (``outer``: :func:`row_outer_products`; leading dimensions of the mechanisms and ``pi``: a batch)."""
    obs, obs_var = mechanisms.observational.unsqueeze(-3), mechanisms.observational_variance.unsqueeze(-2)
    inter, inter_var = mechanisms.intervened, mechanisms.intervened_variance
    curvature = ((((1.0 - pi) / obs_var).unsqueeze(-1) * obs).transpose(-1, -2) @ obs
                 + ((pi / inter_var).unsqueeze(-1) * inter).transpose(-1, -2) @ inter)  # (..., K, d + 1, d + 1)
    rows, columns = _triangle(curvature.shape[-1], outer.device)
    packed = curvature[..., rows, columns] * torch.where(rows == columns, 1.0, 2.0).to(curvature)  # off-diagonal twice
    normaliser = ((1.0 - pi) * (LOG_TWO_PI + obs_var.log()) + pi * (LOG_TWO_PI + inter_var.log())).sum(-1)
    return -0.5 * (outer @ packed.transpose(-1, -2) + normaliser.unsqueeze(-2))


def _target_kl(pi: Tensor, target_logit: float) -> Tensor:
    """``sum KL(Bernoulli(pi_kj) || Bernoulli(sigmoid(gamma)))`` over the intervened components of
    ``pi`` ``(..., K, d)``: ``(...)``."""
    p = pi[..., 1:, :].clamp(1e-12, 1 - 1e-12)
    prior = torch.sigmoid(torch.tensor(target_logit, dtype=pi.dtype))
    return (p * (p / prior).log() + (1 - p) * ((1 - p) / (1 - prior)).log()).sum((-2, -1))


def refine(x: Tensor, q: Tensor, pi: Tensor, order: Sequence[int], *, perfect: bool = True,
           target_logit: float = -2.0, iterations: int = 30, tolerance: float = TOLERANCE,
           outer: Optional[Tensor] = None, required: Optional[Tensor] = None,
           moments: Optional[Tensor] = None, hold_order: bool = False) -> Mixture:
    """Alternate order, mechanisms, targets and ``q(z)`` (module docstring) from ``(q, pi, order)``.

    Args:
        x: ``(n, d)`` rows; q: ``(n, K)`` assignment probabilities; pi: ``(K, d)`` targets (row 0 is
            the observational regime and stays 0); order: the starting order.
        iterations: at most this many alternations; stops when the score rises by less than
            ``tolerance`` per row.
        required: ``(d, d)`` bool mask of edges every order searched keeps along it.
        outer: :func:`row_outer_products` of ``x`` (float64), when already at hand.
        moments: the components' moments under ``q`` (``_moments(q, outer)``), when already at hand.
        hold_order: keep ``order`` (no climb): the alternation moves mechanisms, targets and ``q(z)`` only.

    Returns:
        The :class:`Mixture` after the last alternation (float64).
    """
    x, q, pi = x.double(), q.double(), pi.double().clone()
    if iterations <= 0:
        return Mixture(None, list(order), q, pi)
    outer = row_outer_products(x) if outer is None else outer
    score, orders, q, pi = _alternate(outer, q.unsqueeze(0), pi.unsqueeze(0), torch.as_tensor([list(order)]),
                                      perfect=perfect, target_logit=target_logit, iterations=iterations,
                                      tolerance=tolerance, required=required, hold_orders=hold_order,
                                      moments=None if moments is None else moments.unsqueeze(0))
    return Mixture(float(score[0]), orders[0].tolist(), q[0], pi[0])


def _alternate(outer: Tensor, q: Tensor, pi: Tensor, orders: Tensor, *, perfect: bool, target_logit: float,
               iterations: int, tolerance: float, required: Optional[Tensor] = None, moments: Optional[Tensor] = None,
               hold_orders: bool = False):
    """:func:`refine`'s alternation for a batch of ``T`` mixtures, each on its own until it stops.

    Args:
        outer: ``(n, P)`` :func:`row_outer_products`; q: ``(T, n, K)``; pi: ``(T, K, d)``;
            orders: ``(T, d)`` long; moments: ``(T, K, d + 1, d + 1)`` under ``q``, or ``None``;
            hold_orders: the orders stay as given (no climb).

    Returns:
        ``(scores (T,), orders (T, d), q (T, n, K), pi (T, K, d))`` after each one's last alternation.
    """
    T, n = q.shape[:2]
    q = q.contiguous()  # the reductions over rows of a trial then run as they do on its own table
    orders = orders.to(outer.device)
    score = None
    active = torch.arange(T, device=outer.device)
    for iteration in range(iterations):
        every = len(active) == T  # then the batch itself, not a copy of it
        now_q, now_pi, now_order = (q, pi, orders) if every else (q[active], pi[active], orders[active])
        if iteration == 0 and moments is not None:
            now_moments = moments
        else:
            now_moments = _moments(now_q, outer)
        if not hold_orders:
            scores = MixtureScores(now_moments, now_pi, perfect)
            now_order = climb(scores, now_order, torch.arange(len(active), device=outer.device), required=required)[0]
        mechanisms = fit_mechanisms(now_moments, now_order, now_pi, perfect)
        observational, intervened = expected_log_densities(now_moments, mechanisms)
        now_pi = torch.sigmoid(target_logit + intervened - observational)  # eq. 8 is affine in r
        now_pi[:, 0] = 0.0
        joint = now_q.mean(-2).clamp_min(1e-12).log().unsqueeze(-2) + joint_log_densities(outer, mechanisms, now_pi)
        evidence = torch.logsumexp(joint, -1, keepdim=True)  # log sum_k w_k p(x_i | k): (A, n, 1)
        now_q = (joint - evidence).exp()
        new = evidence.sum((-2, -1)) - _target_kl(now_pi, target_logit)
        if score is None:
            score, q, pi, orders, done = new, now_q, now_pi, now_order, torch.zeros_like(new, dtype=torch.bool)
        else:
            done = new - score[active] < tolerance * n
            if every:
                score, q, pi, orders = new, now_q, now_pi, now_order
            else:
                score[active], q[active], pi[active], orders[active] = new, now_q, now_pi, now_order
        active = active[~done]
        if len(active) == 0:
            break
    return score, orders, q, pi


def _best_trial(outer: Tensor, q: Tensor, pis: Tensor, orders: Tensor, moments: Tensor, *, hold_orders: bool,
                perfect: bool, target_logit: float, iterations: int, required: Optional[Tensor]) -> Optional[Mixture]:
    """The highest-scoring of ``T`` trials that alternate ``iterations`` times from ``(q, pis[t], orders[t])``
    (the first of equal scores; ``None`` when no trial scores a number), :data:`TRIAL_ELEMENTS` at a time.

    Args:
        outer: ``(n, P)`` :func:`row_outer_products`; q: ``(n, K)`` shared by every trial, moments
            ``(K, d + 1, d + 1)`` under it; pis: ``(T, K, d)``; orders: ``(T, d)`` long.
    """
    (n, K), best = q.shape, None
    if len(pis) == 0:
        return None
    per_chunk = max(1, TRIAL_ELEMENTS // (n * K))
    for chunk_pi, chunk_order in zip(pis.split(per_chunk), orders.split(per_chunk)):
        T = len(chunk_pi)
        scores, found, qs, found_pi = _alternate(
            outer, q.expand(T, n, K), chunk_pi, chunk_order, perfect=perfect, target_logit=target_logit,
            iterations=iterations, tolerance=TOLERANCE, required=required, hold_orders=hold_orders,
            moments=moments.expand(T, *moments.shape))
        scores = torch.where(scores.isnan(), -math.inf, scores)
        top = int(scores.argmax())  # the first of equal scores
        if float(scores[top]) > (-math.inf if best is None else best.score):
            best = Mixture(float(scores[top]), found[top].tolist(), qs[top], found_pi[top])
    return best


def swap_targets(x: Tensor, q: Tensor, pi: Tensor, order: Sequence[int], *, perfect: bool = True,
                 target_logit: float = -2.0, sweeps: int = 4, trial_iterations: int = 4,
                 required: Optional[Tensor] = None, order_moves: Optional[bool] = None) -> Mixture:
    """:func:`refine`, then greedy target-swap and order moves while the score rises.

    A target move sets component ``k``'s targets to variable ``j`` alone (``pi_kj = 0.9``, the
    others 0.02) and refines for ``trial_iterations``; an order move inserts one variable of the
    order at another position (:func:`~pyro_causal.order_search.insertion_moves`) and refines for
    ``trial_iterations`` with that order held.  The climb inside each alternation scores orders
    under the mixture of the moment before, so it can leave an order that the alternation, once
    the mixture follows, scores higher; an order move scores each neighbouring order with the
    mixture refitted to it.  Each sweep tries every target move ``(k >= 1, j)`` with
    ``pi_kj <= 1/2`` and every order move (the trials alternate together, :data:`TRIAL_ELEMENTS`
    at a time) and keeps the best (the first of equal scores, target moves first), refined to
    convergence (with its order held after an order move), when it scores higher.

    ``order_moves``: whether sweeps try order moves; ``None``: for at most
    :data:`ORDER_MOVES_MAX_VARIABLES` variables.
    """
    x = x.double()
    outer = row_outer_products(x)
    settings = dict(perfect=perfect, target_logit=target_logit, required=required)
    best = refine(x, q, pi, order, outer=outer, **settings)
    K, d = best.pi.shape
    order_moves = d <= ORDER_MOVES_MAX_VARIABLES if order_moves is None else order_moves
    for _ in range(sweeps):
        moves = (~(best.pi[1:] > 0.5)).nonzero()  # (k - 1, j), in the order of k then j
        moments = _moments(best.q, outer)  # every trial starts from best.q
        trials = torch.arange(len(moves), device=x.device)
        moved = best.pi.expand(len(moves), K, d).clone()
        moved[trials, moves[:, 0] + 1] = 0.02
        moved[trials, moves[:, 0] + 1, moves[:, 1]] = 0.9
        candidates = [_best_trial(outer, best.q, moved, torch.as_tensor(best.order).expand(len(moves), d), moments,
                                  hold_orders=False, iterations=trial_iterations, **settings)]
        if order_moves:
            neighbours = insertion_moves(best.order).to(x.device)
            if required is not None:
                neighbours = neighbours[along(neighbours, required)]
            candidates.append(_best_trial(outer, best.q, best.pi.expand(len(neighbours), K, d), neighbours, moments,
                                          hold_orders=True, iterations=trial_iterations, **settings))
        scores = [-math.inf if c is None else c.score for c in candidates]
        kind = max(range(len(candidates)), key=lambda i: scores[i])  # the first of equal scores: target moves
        if not scores[kind] > best.score:
            break
        chosen = candidates[kind]
        best = refine(x, chosen.q, chosen.pi, chosen.order, outer=outer, hold_order=kind == 1, **settings)
    return best

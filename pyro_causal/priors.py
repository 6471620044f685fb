"""Ready-made priors to pass to :class:`~pyro_causal.model.LatentInterventionModel`.

Every prior is a ``torch.distributions.Distribution`` with the batch shape the model expects,
so swapping one never means copying the model:

* sticks ``v``: batch ``(K - 1,)`` Beta distributions; the weights are
  ``beta_k = v_k prod_{k'<k} (1 - v_k')`` (section 3.5) whatever the stick law.
* graph ``A``: batch ``(d, d)`` Bernoulli distributions (eq. 7), diagonal ignored.
* targets ``r``: batch ``(K - 1, d)`` Bernoulli distributions.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from pyro.distributions import Bernoulli, Beta


def dirichlet_process_sticks(alpha: float, truncation: int) -> Beta:
    """``v_k ~ Beta(1, alpha)``: the truncated Dirichlet process of the paper (section 3.5)."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    ones = torch.ones(max(truncation - 1, 0))
    return Beta(ones, alpha * ones)


def pitman_yor_sticks(alpha: float, discount: float, truncation: int) -> Beta:
    """``v_k ~ Beta(1 - discount, alpha + (k + 1) discount)``: Pitman-Yor, heavier-tailed weights."""
    if not 0 <= discount < 1 or not alpha > -discount:
        raise ValueError(f"Pitman-Yor needs 0 <= discount < 1 and alpha > -discount, got {discount}, {alpha}")
    k = torch.arange(max(truncation - 1, 0), dtype=torch.get_default_dtype())
    return Beta(torch.full_like(k, 1.0 - discount), alpha + (k + 1) * discount)


def finite_dirichlet_sticks(alpha: float, truncation: int) -> Beta:
    """Sticks whose weights are exactly ``Dirichlet(alpha / K, ..., alpha / K)`` over K components.

    Uses the generalised stick-breaking form ``v_k ~ Beta(alpha / K, alpha (K - k - 1) / K)``.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    k = torch.arange(max(truncation - 1, 0), dtype=torch.get_default_dtype())
    each = alpha / truncation
    return Beta(torch.full_like(k, each), each * (truncation - k - 1))


def edge_logits(
    num_variables: int,
    base: float = -2.0,
    favoured=None,
    forbidden=None,
    required=None,
    strength: float = 3.0,
) -> torch.Tensor:
    """A ``(d, d)`` matrix of prior edge logits ``lambda_ij`` (eq. 7) from domain knowledge.

    Args:
        num_variables: ``d``.
        base: logit of an edge nobody said anything about.
        favoured: ``(d, d)`` 0/1 mask of edges made more likely by ``strength`` nats.
        forbidden: mask of edges that cannot exist (logit ``-inf``: posterior probability 0).
        required: mask of edges that must exist (logit ``+inf``: posterior probability 1).
        strength: how much a favoured edge's logit is raised.
    """
    logits = torch.full((num_variables, num_variables), float(base))
    for name, mask, value in (("favoured", favoured, None), ("forbidden", forbidden, -math.inf), ("required", required, math.inf)):
        if mask is None:
            continue
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        if mask.shape != logits.shape:
            raise ValueError(f"{name} must have shape {tuple(logits.shape)}, got {tuple(mask.shape)}")
        logits = torch.where(mask, logits + strength if value is None else torch.tensor(value), logits)
    return logits


def target_prior(target_logit: float, truncation: int, num_variables: int) -> Bernoulli:
    """``r_kj ~ Bernoulli(sigmoid(gamma))`` for interventions ``k = 1..K-1`` (section 3.5)."""
    return Bernoulli(logits=torch.full((max(truncation - 1, 0), num_variables), float(target_logit)))

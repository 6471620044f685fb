"""Small distributions the model and guide need that Pyro does not ship.

* :class:`StraightThroughBernoulli`: hard 0/1 samples whose gradient flows to the
  probabilities as if the sample were its mean (Bengio et al. 2013), used for the graph
  ``A`` (section 3.8) and, in the Pyro guide, for the targets ``r``.
* :class:`TwoCycleFreeBernoulli`: the same independent proposals, with every sampled two-cycle
  resolved by a fair coin, so the likelihood is never evaluated on a graph with ``i -> j -> i``.
* :func:`expected_log_stick_weights`: ``E_q[log beta_k]`` under Beta sticks (appendix A).
* :func:`stick_breaking_log_weights`: ``log beta`` from the sticks ``v``.
* :class:`StickBreakingCategorical`: ``Categorical(beta(v))`` that remembers its sticks, so the
  ELBO can replace ``log beta_k`` by its expectation under ``q(v)``.
"""
from __future__ import annotations

import torch
from pyro.distributions import Bernoulli, Categorical
from torch import Tensor
from torch.distributions import kl_divergence, register_kl
from torch.nn.functional import logsigmoid


class StraightThroughBernoulli(Bernoulli):
    """Bernoulli whose ``rsample`` is hard but differentiable: ``b + (p - stop_grad(p))``.

    ``log_prob`` is the Bernoulli mass function, so ``log q - log p`` terms stay exact.
    Where a function is linear in the sample (the log-likelihood in the targets ``r``, eq. 8)
    the straight-through gradient is unbiased; for the graph it is the usual biased estimator.
    """

    has_rsample = True

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        probs = self.probs.expand(self._extended_shape(sample_shape))
        hard = torch.bernoulli(probs.detach())
        return hard + (probs - probs.detach())

    def marginal_probs(self) -> Tensor:
        """``P(A_ij = 1)`` under this law: the probabilities themselves (independent entries)."""
        return self.probs


class TwoCycleFreeBernoulli(StraightThroughBernoulli):
    """``q(A)`` of a graph: independent edge proposals ``Bernoulli(p)``; where both ``i -> j`` and
    ``j -> i`` are drawn, a fair coin keeps one of them.

    A two-cycle's product of conditionals is not a normalised density and scores far above any
    DAG, so with independent edges both directions of a correlated pair climb together while the
    acyclicity penalty is small, and the penalty later removes one of them on noise
    (``examples/edge_trajectories.py``).  Here every sample is free of two-cycles, so each
    direction is scored on its own.  For a pair of free edges with proposals ``(p, p')`` the
    states have probabilities ``none: (1 - p)(1 - p')``, ``i -> j: p (1 - p'/2)``,
    ``j -> i: p' (1 - p/2)``, ``both: 0``; :meth:`log_prob` and the registered KL against a
    Bernoulli prior are exact for that law.  Pairs where an edge is fixed (``pairs`` False) keep
    the independent law.  Elementwise results put each pair's term on its upper entry ``(i < j)``
    and 0 on the lower one, so sums over the matrix are the exact totals.

    Args:
        probs: ``(d, d)`` proposal probabilities ``sigmoid(Lambda)``.
        pairs: ``(d, d)`` symmetric bool mask of pairs whose two directions are both free.
    """

    def __init__(self, probs: Tensor, pairs: Tensor, validate_args=None) -> None:
        super().__init__(probs=probs, validate_args=validate_args)
        self.pairs = pairs.bool()

    def _upper(self) -> Tensor:
        d = self.probs.shape[-1]
        return torch.ones(d, d, dtype=torch.bool, device=self.probs.device).triu(1)

    def _resolve(self, hard: Tensor) -> Tensor:
        upper = self._upper()
        forward = (torch.rand(hard.shape, device=hard.device) < 0.5) & upper  # keep i -> j (i < j)
        keep = forward | (upper & ~forward).transpose(-1, -2)
        two_cycle = (hard * hard.transpose(-1, -2) > 0) & self.pairs
        return hard.masked_fill(two_cycle & ~keep, 0.0)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        probs = self.probs.expand(self._extended_shape(sample_shape))
        hard = self._resolve(torch.bernoulli(probs.detach()))
        return hard + (probs - probs.detach())

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self._resolve(torch.bernoulli(self.probs.expand(self._extended_shape(sample_shape))))

    def marginal_probs(self) -> Tensor:
        """``P(A_ij = 1)``: ``p_ij (1 - p_ji / 2)`` on free pairs, ``p_ij`` elsewhere."""
        return torch.where(self.pairs, self.probs * (1 - self.probs.transpose(-1, -2) / 2), self.probs)

    def pair_log_probs(self) -> tuple[Tensor, Tensor, Tensor]:
        """``log q`` of the states none, ``i -> j``, ``j -> i`` of every pair, each ``(d, d)``
        (entry ``(i, j)`` describes the pair with ``i -> j`` as "forward")."""
        tiny = torch.finfo(self.probs.dtype).tiny
        p = self.probs.clamp(tiny, 1 - torch.finfo(self.probs.dtype).eps)
        q = p.transpose(-1, -2)
        none = torch.log1p(-p) + torch.log1p(-q)
        forward = p.log() + torch.log1p(-q / 2)
        return none, forward, forward.transpose(-1, -2)

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact for 0/1 values; multilinear in the value of each pair, so a straight-through
        sample carries its pathwise gradient (as the independent Bernoulli's ``log_prob`` does)."""
        independent = super().log_prob(value)
        none, forward, backward = self.pair_log_probs()
        a, b = value, value.transpose(-1, -2)
        state = (1 - a) * (1 - b) * none + a * (1 - b) * forward + (1 - a) * b * backward
        state = torch.where((a > 0.5) & (b > 0.5), torch.full_like(none, -float("inf")), state)
        upper = self._upper()
        return torch.where(self.pairs & upper, state, torch.where(self.pairs, torch.zeros_like(state), independent))


@register_kl(TwoCycleFreeBernoulli, Bernoulli)
def _kl_two_cycle_free_bernoulli(q: TwoCycleFreeBernoulli, p: Bernoulli) -> Tensor:
    none, forward, backward = q.pair_log_probs()
    prior_logits = p.logits.expand_as(q.probs)
    log_a, log_not_a = logsigmoid(prior_logits), logsigmoid(-prior_logits)
    log_b, log_not_b = log_a.transpose(-1, -2), log_not_a.transpose(-1, -2)
    pair = (
        none.exp() * (none - log_not_a - log_not_b)
        + forward.exp() * (forward - log_a - log_not_b)
        + backward.exp() * (backward - log_not_a - log_b)
    )
    independent = kl_divergence(Bernoulli(probs=q.probs), p)
    upper = q._upper()
    return torch.where(q.pairs & upper, pair, torch.where(q.pairs, torch.zeros_like(pair), independent))


def stick_breaking_log_weights(v: Tensor) -> Tensor:
    """``log beta`` for sticks ``v`` of shape ``(..., K - 1)`` -> ``(..., K)``.

    ``beta_k = v_k prod_{k' < k} (1 - v_k')`` and the last weight closes the simplex.
    """
    log_v = torch.log(v.clamp_min(torch.finfo(v.dtype).tiny))
    log_rest = torch.log1p(-v.clamp_max(1 - torch.finfo(v.dtype).eps))
    cumulative = torch.cumsum(log_rest, -1)
    zero = cumulative.new_zeros(cumulative.shape[:-1] + (1,))  # K = 1: one weight, log 1
    return torch.cat([zero, cumulative], -1) + torch.cat([log_v, zero], -1)


def expected_log_stick_weights(concentration1: Tensor, concentration0: Tensor) -> Tensor:
    """``E[log beta_k]`` under ``v_k ~ Beta(concentration1_k, concentration0_k)``: ``(K - 1,) -> (K,)``.

    Appendix A: ``E[log v_k] = psi(a_k) - psi(a_k + b_k)`` and
    ``E[log(1 - v_k)] = psi(b_k) - psi(a_k + b_k)``.
    """
    total = torch.digamma(concentration1 + concentration0)
    e_log_v = torch.digamma(concentration1) - total
    e_log_rest = torch.digamma(concentration0) - total
    zero = e_log_rest.new_zeros(e_log_rest.shape[:-1] + (1,))  # K = 1: one weight, log 1
    return torch.cat([zero, torch.cumsum(e_log_rest, -1)], -1) + torch.cat([e_log_v, zero], -1)


class StickBreakingCategorical(Categorical):
    """``Categorical(beta)`` with ``beta_k = v_k prod_{k' < k} (1 - v_k')`` (section 3.5).

    It keeps the sticks it was built from (``sticks``, ``(K - 1,)``), which declares to
    :class:`~pyro_causal.elbo.LatentInterventionELBO` that ``log p(z = k) = log beta_k(v)``; where
    ``q(v)`` is a Beta the ELBO then uses ``E_q(v)[log beta_k]`` (appendix A) instead of one draw.
    """

    def __init__(self, sticks: Tensor, validate_args=None) -> None:
        self.sticks = sticks
        super().__init__(logits=stick_breaking_log_weights(sticks), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StickBreakingCategorical, _instance)
        new.sticks = self.sticks
        return super().expand(batch_shape, _instance=new)

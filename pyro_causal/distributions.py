"""Small distributions the model and guide need that Pyro does not ship.

* :class:`StraightThroughBernoulli`: hard 0/1 samples whose gradient flows to the
  probabilities as if the sample were its mean (Bengio et al. 2013), used for the graph
  ``A`` (section 3.8) and, in the Pyro guide, for the targets ``r``.
* :func:`expected_log_stick_weights`: ``E_q[log beta_k]`` under Beta sticks (appendix A).
* :func:`stick_breaking_log_weights`: ``log beta`` from the sticks ``v``.
"""
from __future__ import annotations

import torch
from pyro.distributions import Bernoulli
from torch import Tensor


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


def stick_breaking_log_weights(v: Tensor) -> Tensor:
    """``log beta`` for sticks ``v`` of shape ``(..., K - 1)`` -> ``(..., K)``.

    ``beta_k = v_k prod_{k' < k} (1 - v_k')`` and the last weight closes the simplex.
    """
    log_v = torch.log(v.clamp_min(torch.finfo(v.dtype).tiny))
    log_rest = torch.log1p(-v.clamp_max(1 - torch.finfo(v.dtype).eps))
    cumulative = torch.cumsum(log_rest, -1)
    before = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative], -1)
    return before + torch.cat([log_v, torch.zeros_like(log_v[..., :1])], -1)


def expected_log_stick_weights(concentration1: Tensor, concentration0: Tensor) -> Tensor:
    """``E[log beta_k]`` under ``v_k ~ Beta(concentration1_k, concentration0_k)``: ``(K - 1,) -> (K,)``.

    Appendix A: ``E[log v_k] = psi(a_k) - psi(a_k + b_k)`` and
    ``E[log(1 - v_k)] = psi(b_k) - psi(a_k + b_k)``.
    """
    total = torch.digamma(concentration1 + concentration0)
    e_log_v = torch.digamma(concentration1) - total
    e_log_rest = torch.digamma(concentration0) - total
    before = torch.cat([torch.zeros_like(e_log_rest[..., :1]), torch.cumsum(e_log_rest, -1)], -1)
    return before + torch.cat([e_log_v, torch.zeros_like(e_log_v[..., :1])], -1)

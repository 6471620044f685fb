"""The factorised variational family of section 3.6, as a hand-built Pyro guide.

* ``q(A_ij) = Bernoulli(sigmoid(Lambda_ij))`` with straight-through samples (section 3.8);
* ``q(v_k) = Beta(rho_k w_k, (1 - rho_k) w_k)``;
* ``q(u_kl) = Normal(mu_kl, sigma_kl)``;
* ``q(r_kj) = Bernoulli(pi_kj)`` (straight-through samples in the Pyro program; the closed-form
  ELBO uses ``pi`` itself, which is exact, see :mod:`pyro_causal.likelihood`);
* ``q(z_i | x_i) propto exp(u_z^T NN(x_i) / sqrt(h))``, amortised and enumerated.
"""
from __future__ import annotations

import math
from typing import Optional

import pyro
import torch
from pyro.distributions import Bernoulli, Beta, Categorical, Normal
from torch import Tensor, nn

from .acyclicity import off_diagonal_mask
from .distributions import StraightThroughBernoulli, TwoCycleFreeBernoulli


def single_target_logits(truncation: int, num_variables: int, on: float = 2.0, off: float = -3.0) -> Tensor:
    """Initial ``logit(pi)`` ``(K - 1, d)``: component ``k`` starts as a candidate intervention on
    variable ``(k - 1) mod d`` (``pi = sigmoid(on)``), every other target at ``sigmoid(off)``.

    Identical components are a saddle of the bound (nothing tells them apart); starting each
    from a different single-variable hypothesis breaks the symmetry, and training moves the
    targets wherever the data say.
    """
    logits = torch.full((max(truncation - 1, 0), num_variables), off)
    if truncation > 1:
        rows = torch.arange(truncation - 1)
        logits[rows, rows % num_variables] = on
    return logits


TWO_CYCLES = ("resolve", "allow")


class LatentInterventionGuide(nn.Module):
    """Variational posterior over graph, sticks, embeddings, targets and assignments.

    Args:
        num_variables: ``d``.
        truncation: ``K``.
        embedding_dim: ``h``.
        encoder_hidden: width of the assignment network ``NN(x; phi_Z)``.
        forbidden, required: ``(d, d)`` bool masks of edges fixed by the prior.
        two_cycles: ``"resolve"`` (two-cycles of a sample resolved by a fair coin) or ``"allow"``.
    """

    def __init__(
        self,
        num_variables: int,
        truncation: int,
        embedding_dim: int,
        encoder_hidden: int = 64,
        forbidden: Optional[Tensor] = None,
        required: Optional[Tensor] = None,
        two_cycles: str = "resolve",
    ) -> None:
        super().__init__()
        if two_cycles not in TWO_CYCLES:
            raise ValueError(f"unknown two_cycles {two_cycles!r}; choose one of {', '.join(TWO_CYCLES)}")
        self.two_cycles = two_cycles
        d, K, h = num_variables, truncation, embedding_dim
        self.num_variables, self.truncation, self.embedding_dim = d, K, h
        # Edges start at probability min(1/2, 5/(d-1)): h(sigmoid(Lambda)) ~ exp(p (d - 1)) stays
        # moderate for large d (at 1/2 it overflows float32 near d = 100).
        start = min(0.5, 5.0 / max(d - 1, 1))
        self.edge_logits = nn.Parameter(torch.full((d, d), math.log(start / (1 - start))))
        # Sticks start at equal expected weights: E[v_k] = 1 / (K - k).
        remaining = torch.arange(K - 1, 0, -1, dtype=torch.get_default_dtype())
        self.stick_mean_logit = nn.Parameter(torch.logit(1.0 / (remaining + 1.0)) if K > 1 else torch.zeros(0))
        self.stick_log_concentration = nn.Parameter(torch.full((K - 1,), math.log(10.0)))
        self.embedding_loc = nn.Parameter(torch.randn(K, h))
        self.embedding_log_scale = nn.Parameter(torch.full((K, h), math.log(0.1)))
        self.target_logits = nn.Parameter(single_target_logits(K, d))
        self.encoder = nn.Sequential(
            nn.Linear(d, encoder_hidden), nn.LeakyReLU(0.2), nn.Linear(encoder_hidden, h)
        )
        self.register_buffer("off_diagonal", off_diagonal_mask(d))
        self.register_buffer("forbidden", torch.zeros(d, d, dtype=torch.bool) if forbidden is None else forbidden.clone())
        self.register_buffer("required", torch.zeros(d, d, dtype=torch.bool) if required is None else required.clone())

    # ----------------------------------------------------------------- variational factors
    def edge_probs(self) -> Tensor:
        """``sigmoid(Lambda)`` with zero diagonal and prior-fixed edges: ``(d, d)``."""
        probs = torch.sigmoid(self.edge_logits) * self.off_diagonal
        return torch.where(self.required, torch.ones_like(probs), torch.where(self.forbidden, torch.zeros_like(probs), probs))

    def free_edges(self) -> Tensor:
        """``(d, d)`` bool mask of edges whose posterior is learnt (not diagonal, not fixed)."""
        return self.off_diagonal.bool() & ~self.forbidden & ~self.required

    def graph_dist(self) -> StraightThroughBernoulli:
        """``q(A)``: batch ``(d, d)``; two-cycles resolved unless ``two_cycles="allow"``."""
        if self.two_cycles == "allow":
            return StraightThroughBernoulli(probs=self.edge_probs())
        free = self.free_edges()
        return TwoCycleFreeBernoulli(probs=self.edge_probs(), pairs=free & free.T)

    def stick_dist(self) -> Beta:
        """``q(v)``: batch ``(K - 1,)``."""
        rho = torch.sigmoid(self.stick_mean_logit)
        w = self.stick_log_concentration.exp()
        return Beta(rho * w, (1 - rho) * w)

    def embedding_dist(self) -> Normal:
        """``q(u)``: batch ``(K, h)``."""
        return Normal(self.embedding_loc, self.embedding_log_scale.exp())

    def target_probs(self) -> Tensor:
        """``pi``: ``(K - 1, d)``."""
        return torch.sigmoid(self.target_logits)

    def target_dist(self) -> Bernoulli:
        """``q(r)``: batch ``(K - 1, d)``."""
        return StraightThroughBernoulli(logits=self.target_logits)

    def assignment_logits(self, x: Tensor, embeddings: Tensor) -> Tensor:
        """Unnormalised ``log q(z_i = k | x_i)`` = ``u_k^T NN(x_i) / sqrt(h)``: ``(n, d), (K, h) -> (n, K)``."""
        return self.encoder(x) @ embeddings.transpose(-1, -2) / math.sqrt(self.embedding_dim)

    # ----------------------------------------------------------------- Pyro program
    def forward(
        self,
        x: Tensor,
        regimes: Optional[Tensor] = None,
        targets: Optional[Tensor] = None,
        batch_size: Optional[int] = None,
    ) -> None:
        """The guide program; same signature as :meth:`LatentInterventionModel.model`."""
        pyro.module("pyro_causal_guide", self)
        K = self.truncation
        pyro.sample("graph", self.graph_dist().mask(self.off_diagonal.bool()).to_event(2))
        if K > 1:
            with pyro.plate("sticks", K - 1, dim=-1):
                pyro.sample("v", self.stick_dist())
        with pyro.plate("components", K, dim=-1):
            u = pyro.sample("u", self.embedding_dist().to_event(1))
        if K > 1 and targets is None:
            with pyro.plate("interventions", K - 1, dim=-1):
                pyro.sample("r", self.target_dist().to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=batch_size, dim=-1) as rows:
            known = None if regimes is None else regimes[rows] >= 0
            if known is not None and bool(known.all()):
                return
            logits = self.assignment_logits(x[rows], u)
            name = "z" if known is None else "z_unobserved"
            dist = Categorical(logits=logits)
            if known is not None:
                dist = dist.mask(~known)
            pyro.sample(name, dist, infer={"enumerate": "parallel"})

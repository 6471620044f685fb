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
from pyro.distributions import Bernoulli, Beta, Categorical, Normal, TorchDistribution, constraints
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions.utils import lazy_property

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


def rows_of(x: Tensor, batch: Tensor) -> Tensor:
    """``x[batch]``, or ``x`` itself when ``batch`` is every row in order (an unsubsampled plate):
    the same tensor at every full-batch step lets the densities keep what they computed from it."""
    if batch.shape[0] == x.shape[0] and bool((batch == torch.arange(x.shape[0], device=batch.device)).all()):
        return x
    return x.index_select(0, batch)  # the same rows as x[batch], without advanced indexing's overhead


class AmortizedAssignment(TorchDistribution):
    """``q(z_i | x_i) propto exp(u_z^T NN(x_i) / sqrt(h))`` for a batch of rows: batch ``(B,)``.

    A categorical distribution whose logits are computed when first needed: enumerating ``z``
    needs only its support, and :meth:`rows` evaluates the network on a subset of the rows (the
    ELBO fits the network to the optimal ``q(z)`` on a random subset of a large batch).
    """

    arg_constraints = {}
    has_enumerate_support = True

    def __init__(self, guide: "LatentInterventionGuide", x: Tensor, embeddings: Tensor, validate_args=None) -> None:
        self.guide, self.x, self.embeddings = guide, x, embeddings
        self.num_components = embeddings.shape[0]
        super().__init__(x.shape[:1], torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_components - 1)

    @lazy_property
    def logits(self) -> Tensor:
        """``log q(z_i = k | x_i)``: ``(B, K)``."""
        return torch.log_softmax(self.guide.assignment_logits(self.x, self.embeddings), -1)

    def rows(self, index: Tensor) -> Categorical:
        """``q(z | x)`` of the rows ``index`` only."""
        return Categorical(logits=self.guide.assignment_logits(self.x[index], self.embeddings))

    def log_prob(self, value: Tensor) -> Tensor:
        value = value.long()
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        # gathered from the (K, B) transpose: its backward pass fills a (K, B) gradient, not (..., B, K)
        index = value.expand(shape).reshape(-1, self.batch_shape[0])
        return self.logits.T.gather(0, index).reshape(shape)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        return Categorical(logits=self.logits).sample(sample_shape)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        values = torch.arange(self.num_components, device=self.x.device).view((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1,) + self.batch_shape) if expand else values

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise ValueError(f"AmortizedAssignment of batch {tuple(self.batch_shape)} cannot expand to {tuple(batch_shape)}")
        return self


def data_plate(x: Tensor, batch_size: Optional[int] = None, rows: Optional[Tensor] = None) -> pyro.plate:
    """The ``data`` plate over the rows of ``x``: all of them, ``batch_size`` random ones, or ``rows``."""
    return pyro.plate("data", x.shape[0], subsample_size=None if rows is not None else batch_size,
                      subsample=rows, dim=-1)


class LatentInterventionGuide(PyroModule):
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

    def graph_dist(self, free: Optional[Tensor] = None) -> StraightThroughBernoulli:
        """``q(A)``: batch ``(d, d)``; two-cycles resolved unless ``two_cycles="allow"``
        (``free``: :meth:`free_edges`, when already at hand)."""
        if self.two_cycles == "allow":
            return StraightThroughBernoulli(probs=self.edge_probs())
        free = self.free_edges() if free is None else free
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
        rows: Optional[Tensor] = None,
    ) -> None:
        """The guide program; same signature as :meth:`LatentInterventionModel.model`.

        The ``graph`` factor is masked to the free edges: edges fixed by the prior or held by an
        after-training step carry no KL term.  With ``regimes`` given, ``q(z)`` is the factor
        ``z_unobserved`` (masked where the regime is known) that the model's ``obs_mask`` asks for.
        """
        K = self.truncation
        free = self.free_edges()
        pyro.sample("graph", self.graph_dist(free).mask(free).to_event(2))
        if K > 1:
            with pyro.plate("sticks", K - 1, dim=-1):
                pyro.sample("v", self.stick_dist())
        with pyro.plate("components", K, dim=-1):
            u = pyro.sample("u", self.embedding_dist().to_event(1))
        if K > 1 and targets is None:
            with pyro.plate("interventions", K - 1, dim=-1):
                pyro.sample("r", self.target_dist().to_event(1))
        with data_plate(x, batch_size, rows) as batch:
            dist = AmortizedAssignment(self, rows_of(x, batch), u)
            if regimes is None:
                pyro.sample("z", dist, infer={"enumerate": "parallel"})
            else:
                pyro.sample("z_unobserved", dist.mask(regimes[batch] < 0), infer={"enumerate": "parallel"})

"""The conditional-density interface shared by every mechanism family (paper, section 3.4).

A conditional density models all ``d`` mechanisms ``g_j(x_j | A_j * x, u)`` at once.  Its
parameters ``theta`` are shared by every intervention: only the embedding ``u`` changes.
Everything is batched over components ``C``, samples ``n`` and variables ``d``; no
implementation loops over any of them in Python.

To add a family, subclass :class:`ConditionalDensity` and implement :meth:`log_prob` and
:meth:`sample`; register it with :func:`pyro_causal.densities.register_density` to make it
reachable from ``fit(density="name")`` and the CLI.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


class ConditionalDensity(nn.Module):
    """Base class of the families ``g_j(x_j | A_j * x, u; theta_j)``, j = 1..d.

    Args:
        num_variables: ``d``.
        embedding_dim: ``h``, the size of an intervention embedding ``u``.

    Shapes used by every method:
        ``x``: ``(n, d)`` or ``(C, n, d)`` data (a ``(C, n, d)`` tensor gives each
        component its own values, as in ancestral sampling).
        ``parents_mask``: ``(d, d)``, entry ``(i, j)`` is 1 when ``x_i`` is an input of
        ``g_j``: the sampled adjacency ``A`` (imperfect interventions) or :meth:`no_parents`
        (a perfect intervention cuts the parents).  It may carry straight-through gradients.
        ``embeddings``: ``(C, h)``, one embedding per component.
    """

    #: Whether :meth:`log_prob_gain` is implemented (then the ELBO uses the exact edge gradient).
    provides_edge_gain: bool = False
    #: Whether the mechanisms are networks, whose many weights per input fit noise through any
    #: extra parent: ``fit``'s order-refit rounds then default to the order search's edge prior
    #: (``config.DEFAULT_EDGE_LOGITS``, ``Priors.resolved``).
    network_mechanisms: bool = False

    def __init__(self, num_variables: int, embedding_dim: int) -> None:
        super().__init__()
        if num_variables < 1:
            raise ValueError(f"num_variables must be >= 1, got {num_variables}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.num_variables = int(num_variables)
        self.embedding_dim = int(embedding_dim)

    def log_prob(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        """``log g_j(x_ij | parents_mask_j * x_i, u_c)`` for every c, i, j: shape ``(C, n, d)``."""
        raise NotImplementedError

    def sample(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        """Draw every ``x_j`` given the current values of its parents: shape ``(C, n, d)``.

        Called ``depth + 1`` times by ancestral sampling, so parents are final when used.
        """
        raise NotImplementedError

    def log_prob_gain(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor, row_weights: Tensor,
                      component_weights: Tensor) -> Optional[Tensor]:
        """Weighted gain of each single edge: ``(d_in, d_out)``, or ``None`` when not available.

        Entry ``(i, j)`` is ``sum_{c, n} w_cnj [log g_j(x_nj | mask with (i, j) = 1, u_c)
        - log g_j(x_nj | mask with (i, j) = 0, u_c)]``, every other entry of the mask as given,
        with the weights in factored form ``w_cnj = sum_k row_weights_nk component_weights_ckj``
        (``(n, K)`` and ``(C, K, d)``: ``q(z_i = k)`` and how component ``k`` weighs embedding
        ``c`` in column ``j``).  It is the exact derivative of the expected log-likelihood in the
        edge probability ``p_ij`` given the other edges (the local expectation gradient), which
        the ELBO uses instead of straight-through samples under ``graph_estimator="local"``.
        Families that implement it set ``provides_edge_gain = True``.
        """
        return None

    def no_parents(self, adjacency: Tensor) -> Optional[Tensor]:
        """The ``parents_mask`` that cuts every parent (``adjacency``: ``(d, d)``): zeros.

        Families whose :meth:`log_prob` and :meth:`sample` take ``None`` for "no parents" return
        ``None``; their mechanisms' parameters then depend on the embedding alone and are computed
        once per component instead of once per row.
        """
        return torch.zeros_like(adjacency)

    def per_component(self, fn: str, x: Tensor, adjacency: Tensor, embeddings: Tensor, perfect: bool) -> Tensor:
        """``self.<fn>`` (``"log_prob"`` or ``"sample"``) under embedding 0 with the parents
        ``adjacency`` and under every embedding ``k >= 1`` with the parents cut when ``perfect``:
        ``(C, n, d)``.  Row 0 (observational) always keeps the parents."""
        method = getattr(self, fn)
        if not perfect:
            return method(x, adjacency, embeddings)
        observational = method(x if x.dim() == 2 else x[:1], adjacency, embeddings[:1])
        if embeddings.shape[0] == 1:
            return observational
        interventional = method(x if x.dim() == 2 else x[1:], self.no_parents(adjacency), embeddings[1:])
        return torch.cat([observational, interventional], 0)

    def component_log_prob(
        self, x: Tensor, adjacency: Tensor, embeddings: Tensor, targets: Tensor, perfect: bool = False
    ) -> Tensor:
        """``sum_j (1 - t_kj) log g_j(x_ij | A_j * x, u_0) + t_kj log g_j(x_ij | M_kj * x, u_k)``: ``(C, n)``.

        The log-likelihood of each row under each component (eq. 8) with the targets ``t``
        (``(C, d)``, row 0 zero) in ``[0, 1]``; ``M = A``, or 0 for perfect interventions.  This
        generic version builds the ``(C, n, d)`` table of :meth:`log_prob`; families with a
        cheaper closed form override it.
        """
        table = self.per_component("log_prob", x, adjacency, embeddings, perfect)
        # Two contractions, no second (C, n, d) temporary.
        return torch.einsum("knj,kj->kn", table, targets) + torch.einsum("nj,kj->kn", table[0], 1 - targets)


def embedding_network(embedding_dim: int, hidden: int, out_features: int) -> nn.Module:
    """The small network ``NN(u; theta)`` shared by all interventions (section 3.4)."""
    return nn.Sequential(
        nn.Linear(embedding_dim, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, out_features),
    )


def positive_scale(raw: Tensor, minimum: float = 1e-3) -> Tensor:
    """A learnable, unclamped-from-above standard deviation: softplus plus a floor."""
    return torch.nn.functional.softplus(raw) + minimum


def row_noise(location: Tensor, x: Tensor) -> Tensor:
    """Standard normal draws for variable-major ``location`` (``(C, d, n)``, or ``(C, d, 1)`` when
    the mechanisms have no parents) against ``x`` (``(n, d)`` or ``(C, n, d)``): one per row."""
    shape = torch.broadcast_shapes(location.shape, x.transpose(-1, -2).shape)
    return torch.randn(shape, dtype=location.dtype, device=location.device)


HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor, log_scale: Tensor) -> Tensor:
    """``log N(x; loc, scale)`` from the standardised residual ``z = (x - loc) / scale``.

    One fused pass over ``z`` (``-0.5 z^2 - log scale - log sqrt(2 pi)``); ``log_scale`` broadcasts.
    """
    return torch.addcmul(-(log_scale + HALF_LOG_TWO_PI), z, z, value=-0.5)

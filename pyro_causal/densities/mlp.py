"""Non-linear Gaussian mechanisms (paper, section 3.4).

``g_j(x_j | A_j * x, u) = N(mu_j, s_j^2)`` with ``(mu_j, s_j) = NN([u, A_j * x]; theta_j)``: one
network per variable, all evaluated at once by :class:`~.conditioner.StackedConditioner`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.distributions import Normal

from .base import ConditionalDensity, positive_scale, row_noise
from .conditioner import StackedConditioner, inverse_softplus

_SCALE_FLOOR = 1e-3


class MLPGaussian(ConditionalDensity):
    """Gaussian mechanisms whose mean and scale are MLPs of the parents and the embedding.

    Args:
        num_variables: ``d``.
        embedding_dim: ``h``.
        hidden: ``H``, width of each hidden layer of the per-variable networks.
        layers: number of hidden layers.
        activation: ``"leaky_relu"`` (default) or ``"tanh"``, whose bounded units keep heavy-tailed
            inputs from driving the network into huge activations (``docs/results.md``).

    The scale is ``softplus(raw) + 1e-3`` and starts near 1; the mean starts near 0.

    Example:
        >>> density = MLPGaussian(3, 4)
        >>> density.log_prob(torch.randn(5, 3), torch.ones(3, 3), torch.randn(2, 4)).shape
        torch.Size([2, 5, 3])
    """

    network_mechanisms = True

    def __init__(
        self, num_variables: int, embedding_dim: int, hidden: int = 16, layers: int = 2, activation: str = "leaky_relu"
    ) -> None:
        super().__init__(num_variables, embedding_dim)
        self.conditioner = StackedConditioner(
            num_variables, embedding_dim, 2, hidden=hidden, layers=layers, activation=activation
        )
        with torch.no_grad():
            self.conditioner.bias_out[:, 1] = inverse_softplus(1.0 - _SCALE_FLOOR)

    def no_parents(self, adjacency: Tensor) -> None:
        """``None``: :meth:`log_prob` and :meth:`sample` then compute each component's ``g_j`` once."""
        return None

    def loc_scale(self, x: Tensor, parents_mask: Optional[Tensor], embeddings: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of every ``g_j``, variable-major: two ``(C, d, n)`` tensors
        (``(C, d, 1)`` when ``parents_mask`` is ``None``: no parents)."""
        loc, raw_scale = self.conditioner(x, parents_mask, embeddings).unbind(-2)
        return loc, positive_scale(raw_scale, _SCALE_FLOOR)

    def log_prob(self, x: Tensor, parents_mask: Optional[Tensor], embeddings: Tensor) -> Tensor:
        loc, scale = self.loc_scale(x, parents_mask, embeddings)
        return Normal(loc, scale, validate_args=False).log_prob(x.transpose(-1, -2)).transpose(-1, -2)

    def sample(self, x: Tensor, parents_mask: Optional[Tensor], embeddings: Tensor) -> Tensor:
        loc, scale = self.loc_scale(x, parents_mask, embeddings)
        noise = row_noise(loc, x)
        return (loc + scale * noise).transpose(-1, -2)

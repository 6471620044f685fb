"""Linear Gaussian mechanisms (paper, section 3.4).

``g_j(x_j | A_j * x, u) = N(a_j(u)^T (A_j * x) + b_j(u), s_j(u)^2)`` where one small network
shared by all interventions maps the embedding ``u`` to ``(a_j, b_j, s_j)`` for every ``j``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import ConditionalDensity, embedding_network, positive_scale, standard_normal_log_prob


class LinearGaussian(ConditionalDensity):
    """Linear Gaussian mechanisms whose coefficients depend on the intervention embedding.

    Args:
        num_variables: ``d``.
        embedding_dim: ``h``.
        hidden: width of the embedding network.

    Example:
        >>> density = LinearGaussian(3, 4)
        >>> density.log_prob(torch.randn(5, 3), torch.ones(3, 3), torch.randn(2, 4)).shape
        torch.Size([2, 5, 3])
    """

    provides_edge_gain = True

    def __init__(self, num_variables: int, embedding_dim: int, hidden: int = 32) -> None:
        super().__init__(num_variables, embedding_dim)
        d = num_variables
        self.net = embedding_network(embedding_dim, hidden, d * d + 2 * d)
        last = self.net[-1]
        torch.nn.init.normal_(last.weight, std=0.01)
        with torch.no_grad():
            last.bias.zero_()
            last.bias[d * d + d :] = math.log(math.expm1(1.0))  # s_j = 1 at initialisation

    def parameters_for(self, embeddings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(a, b, s)`` of shapes ``(C, d_out, d_in)``, ``(C, d)``, ``(C, d)``."""
        d = self.num_variables
        out = self.net(embeddings)
        weights = out[..., : d * d].reshape(*out.shape[:-1], d, d)
        bias = out[..., d * d : d * d + d]
        scale = positive_scale(out[..., d * d + d :])
        return weights, bias, scale

    def _loc_scale(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> tuple[Tensor, Tensor]:
        weights, bias, scale = self.parameters_for(embeddings)
        masked = weights * parents_mask.transpose(-1, -2)  # (C, j, l): coefficient of x_l in x_j
        if x.dim() == 2:
            loc = torch.einsum("nl,cjl->cnj", x, masked)
        else:
            loc = torch.einsum("cnl,cjl->cnj", x, masked)
        return loc + bias.unsqueeze(-2), scale.unsqueeze(-2)

    def _standardised_residual(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor):
        """``(z, a, s)``: residuals ``(C, n, d)`` and the mechanisms' coefficients and scales."""
        weights, bias, scale = self.parameters_for(embeddings)
        # z_cij = sum_l x_il M_cjl + c_cj in one batched matmul, with M = (I - W * A^T) / s_j
        # (row-wise) and c = -b / s.
        inverse = scale.reciprocal()
        eye = torch.eye(self.num_variables, dtype=x.dtype, device=x.device)
        residual_map = (eye - weights * parents_mask.transpose(-1, -2)) * inverse.unsqueeze(-1)
        xs = x.expand(embeddings.shape[0], *x.shape[-2:])
        z = torch.baddbmm((-bias * inverse).unsqueeze(-2), xs, residual_map.transpose(-1, -2))
        return z, weights, scale

    def log_prob(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        z, _, scale = self._standardised_residual(x, parents_mask, embeddings)
        return standard_normal_log_prob(z, scale.log().unsqueeze(-2))

    def log_prob_gain(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor, weights: Tensor) -> Tensor:
        # Toggling edge (i, j) moves the standardised residual z_cnj by delta = a_cji x_ni / s_cj, and
        # log N(z1) - log N(z0) = delta z + (A_ij - 1/2) delta^2 (z = the residual at the current mask),
        # so the gain is two weighted (n)-contractions: O(C n d^2), like log_prob itself.
        z, coefficient, scale = self._standardised_residual(x, parents_mask, embeddings)
        delta = (coefficient / scale.unsqueeze(-1)).transpose(-1, -2)  # (C, i, j)
        first = torch.einsum("ni,cnj->cij", x, weights * z)
        second = torch.einsum("ni,cnj->cij", x * x, weights)
        return (delta * first).sum(0) + (parents_mask - 0.5) * (delta * delta * second).sum(0)

    def sample(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        loc, scale = self._loc_scale(x, parents_mask, embeddings)
        return loc + scale * torch.randn_like(loc)

"""Linear Gaussian mechanisms (paper, section 3.4).

``g_j(x_j | A_j * x, u) = N(a_j(u)^T (A_j * x) + b_j(u), s_j(u)^2)`` where one small network
shared by all interventions maps the embedding ``u`` to ``(a_j, b_j, s_j)`` for every ``j``.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor

from .base import HALF_LOG_TWO_PI, ConditionalDensity, embedding_network, positive_scale, standard_normal_log_prob


def upper_outer_products(x: Tensor) -> Tensor:
    """The upper triangle (row-major, diagonal included) of ``y_i y_i^T`` of every row, ``y_i = [x_i, 1]``,
    laid out pair by pair: ``(n, d) -> ((d + 1)(d + 2) / 2, n)``, in ``x``'s dtype.

    Built from whole rows of ``y^T``: two row gathers and one contiguous product (a broadcast
    ``(n, d + 1, d + 1)`` product or a gather along each row's columns costs several times more on
    the CPU).
    """
    y = torch.cat([x.T, x.new_ones(1, x.shape[0])], 0)  # (d + 1, n)
    rows, cols = torch.triu_indices(y.shape[0], y.shape[0], device=x.device)
    return y.index_select(0, rows) * y.index_select(0, cols)


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
        self._moments_cache = None
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

    def _augmented_residual_map(self, weights: Tensor, bias: Tensor, scale: Tensor, parents_mask: Tensor) -> Tensor:
        """``(C, d_out, d_in + 1)``: row ``j`` maps ``[x, 1]`` to the standardised residual of ``x_j``.

        ``z_cj = sum_l x_l M_cjl + c_cj`` with ``M = (I - W * A^T) / s_j`` (row-wise), ``c = -b / s``.
        """
        inverse = scale.reciprocal()
        eye = torch.eye(self.num_variables, dtype=weights.dtype, device=weights.device)
        residual_map = (eye - weights * parents_mask.transpose(-1, -2)) * inverse.unsqueeze(-1)
        return torch.cat([residual_map, (-bias * inverse).unsqueeze(-1)], -1)

    def _standardised_residual(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor):
        """``(z, a, s)``: residuals ``(C, n, d)`` and the mechanisms' coefficients and scales."""
        weights, bias, scale = self.parameters_for(embeddings)
        augmented = self._augmented_residual_map(weights, bias, scale, parents_mask)
        xs = x.expand(embeddings.shape[0], *x.shape[-2:])
        z = torch.baddbmm(augmented[..., -1].unsqueeze(-2), xs, augmented[..., :-1].transpose(-1, -2))
        return z, weights, scale

    def component_log_prob(
        self, x: Tensor, adjacency: Tensor, embeddings: Tensor, targets: Tensor, perfect: bool = False
    ) -> Tensor:
        """Eq. 8 from second moments of the rows, without the ``(C, n, d)`` table.

        With ``y = [x, 1]`` and ``rho_kj`` the augmented residual map of mechanism ``j`` (so
        ``z_kj = rho_kj^T y``), the weighted sum of squared residuals is a quadratic form,
        ``sum_j w_kj z_kj^2 = y^T Q_k y`` with ``Q_k = sum_j w_kj rho_kj rho_kj^T``, and
        ``y^T Q_k y = <y y^T, Q_k>``, over the upper triangle of the symmetric ``y y^T``: one
        ``(C, T) x (T, n)`` product with ``T = (d+1)(d+2)/2``.  The expansion cancels (its terms are
        far larger than a residual), hence float64 for ``Q`` and ``y y^T``.
        """
        if x.dim() != 2:
            return super().component_log_prob(x, adjacency, embeddings, targets, perfect)
        weights, bias, scale = (t.double() for t in self.parameters_for(embeddings))
        observational = self._augmented_residual_map(weights[:1], bias[:1], scale[:1], adjacency.double())[0]
        intervened_mask = torch.zeros_like(adjacency) if perfect else adjacency
        intervened = self._augmented_residual_map(weights, bias, scale, intervened_mask.double())
        t = targets.double()
        d1 = self.num_variables + 1
        outer = (observational.unsqueeze(-1) * observational.unsqueeze(-2)).reshape(self.num_variables, d1 * d1)
        quadratic = ((1 - t) @ outer).reshape(-1, d1, d1) + torch.bmm(
            (t.unsqueeze(-1) * intervened).transpose(-1, -2), intervened
        )  # (C, d + 1, d + 1), symmetric: sum_j (1 - t_kj) o_j o_j^T + t_kj i_kj i_kj^T
        log_scale = ((1 - t) * scale[:1].log() + t * scale.log()).sum(-1)  # (C,)
        constant = log_scale + self.num_variables * HALF_LOG_TWO_PI
        # y^T Q y over the upper triangle of Q, off-diagonal entries counted twice.
        rows, cols = self._triangle(x.device)
        packed = quadratic[:, rows, cols] * torch.where(rows == cols, -0.5, -1.0).to(quadratic)
        return torch.addmm(-constant.unsqueeze(-1), packed, self._second_moments(x)).to(x.dtype)  # (C, n)

    def _triangle(self, device) -> tuple[Tensor, Tensor]:
        """Row and column indices of the upper triangle of a ``(d + 1, d + 1)`` matrix, diagonal included."""
        indices = torch.triu_indices(self.num_variables + 1, self.num_variables + 1, device=device)
        return indices[0], indices[1]

    def _second_moments(self, x: Tensor) -> Tensor:
        """:func:`upper_outer_products` of the rows in float64: ``(n, d) -> ((d+1)(d+2)/2, n)``
        (the order of :meth:`_triangle`).

        Full-batch training passes the same tensor at every step, so the last result is kept
        (by reference to the tensor itself, never by address, and invalidated by in-place edits).
        """
        cached = self._moments_cache
        if cached is not None and cached[0]() is x and cached[1] == x._version:
            return cached[2]
        moments = upper_outer_products(x.double())
        if not x.requires_grad:
            self._moments_cache = (weakref.ref(x), x._version, moments)
        return moments

    def _weighted_moments(self, x: Tensor, row_weights: Tensor) -> Tensor:
        """``sum_n w_nk y_n y_n^T`` for every column ``k`` of ``row_weights`` ``(n, K)``: ``(K, d+1, d+1)``."""
        d1 = self.num_variables + 1
        packed = row_weights.double().T @ self._second_moments(x).T  # (K, (d+1)(d+2)/2)
        rows, cols = self._triangle(x.device)
        full = packed.new_zeros(packed.shape[0], d1, d1)
        full[:, rows, cols] = packed
        full[:, cols, rows] = packed
        return full

    def __getstate__(self) -> dict:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {**state, "_moments_cache": None}

    def log_prob(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        z, _, scale = self._standardised_residual(x, parents_mask, embeddings)
        return standard_normal_log_prob(z, scale.log().unsqueeze(-2))

    def log_prob_gain(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor, row_weights: Tensor,
                      component_weights: Tensor) -> Tensor:
        # Toggling edge (i, j) moves the standardised residual z_cnj = rho_cj^T y_n by
        # delta_cij x_ni (delta = a_cji / s_cj), and log N(z1) - log N(z0) = delta x z + (A_ij - 1/2) (delta x)^2,
        # so with w_cnj = sum_k q_nk T_ckj the gain needs only the weighted second moments
        # M_k = sum_n q_nk y_n y_n^T: O(n K (d+1)^2) for the rows, then O(C K d^3).
        weights, bias, scale = (t.double() for t in self.parameters_for(embeddings))
        rho = self._augmented_residual_map(weights, bias, scale, parents_mask.double())  # (C, j, a)
        d = self.num_variables
        moments = self._weighted_moments(x, row_weights)[:, :d]  # (K, i, a)
        mix = component_weights.double()  # (C, K, j)
        projected = rho.unsqueeze(1) @ moments.transpose(-1, -2).unsqueeze(0)  # (C, K, j, i): rho_cj^T M_k[i]
        first = (mix.unsqueeze(-1) * projected).sum(1).transpose(-1, -2)  # (C, i, j)
        second = (mix.transpose(-1, -2) @ torch.diagonal(moments[..., :d], dim1=-2, dim2=-1)).transpose(-1, -2)
        delta = (weights / scale.unsqueeze(-1)).transpose(-1, -2)  # (C, i, j)
        gain = (delta * first).sum(0) + (parents_mask.double() - 0.5) * (delta * delta * second).sum(0)
        return gain.to(x.dtype)

    def sample(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        loc, scale = self._loc_scale(x, parents_mask, embeddings)
        return loc + scale * torch.randn_like(loc)

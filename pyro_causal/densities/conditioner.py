"""``d`` per-variable networks ``NN([u, A_j * x]; theta_j)`` evaluated in one batched pass (section 3.4).

Both the non-linear Gaussian (:mod:`.mlp`) and the deep sigmoidal flow (:mod:`.flow`) read the
parameters of ``g_j`` off such a network.  The first layer is factored: with
``W_j = [W_u_j; W_x_j]``,

    [u_c, A_j * x_i] W_j = (A_j * x_i) W_x_j + u_c W_u_j,

so the data part (``(n, d, H)``, shared by every component) and the embedding part
(``(C, d, H)``, one row per component) are computed separately and broadcast-added.  The mask is
folded into ``W_x`` (``W_x_j`` row ``i`` times ``A_ij``), which equals masking the inputs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.functional import leaky_relu


def inverse_softplus(value: float) -> float:
    """``softplus^{-1}(value)``, to initialise raw parameters that go through a softplus."""
    return math.log(math.expm1(value))


class StackedConditioner(nn.Module):
    """One MLP per variable, weights stacked along a leading ``d`` axis.

    Args:
        num_variables: ``d``.
        embedding_dim: ``h``.
        out_features: ``m``, the parameters of ``g_j`` produced per sample and variable.
        hidden: ``H``, width of every hidden layer.
        layers: number of hidden layers (``>= 1``), LeakyReLU(0.2) after each.

    Activations are kept variable-major, ``(C, d, n, H)``, so every layer is one batched matmul
    over ``C * d`` blocks; only the ``(C, n, d, m)`` output is permuted (a view).

    Example:
        >>> net = StackedConditioner(3, 4, out_features=2)
        >>> net(torch.randn(5, 3), torch.ones(3, 3), torch.randn(2, 4)).shape
        torch.Size([2, 5, 3, 2])
    """

    def __init__(
        self, num_variables: int, embedding_dim: int, out_features: int, hidden: int = 16, layers: int = 2
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1 or out_features < 1:
            raise ValueError(f"hidden, layers and out_features must be >= 1, got {hidden}, {layers}, {out_features}")
        d, h, m = num_variables, embedding_dim, out_features
        self.num_variables, self.embedding_dim, self.out_features = d, h, m
        self.hidden, self.layers = hidden, layers

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:  # nn.Linear's default initialisation
            bound = 1.0 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.weight_x = uniform(d, d, hidden, fan_in=d + h)  # (j, i, H): row i of W_x_j
        self.weight_u = uniform(d, h, hidden, fan_in=d + h)  # (j, h, H)
        self.bias_in = uniform(d, 1, hidden, fan_in=d + h)
        self.weight_hidden = nn.ParameterList(uniform(d, hidden, hidden, fan_in=hidden) for _ in range(layers - 1))
        self.bias_hidden = nn.ParameterList(uniform(d, 1, hidden, fan_in=hidden) for _ in range(layers - 1))
        # A small last layer keeps g_j near the consumer's initial bias (set by the consumer).
        self.weight_out = nn.Parameter(0.1 * uniform(d, hidden, m, fan_in=hidden).data)
        self.bias_out = nn.Parameter(torch.zeros(d, 1, m))

    def forward(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        """``NN([u_c, A_j * x_i]; theta_j)`` for every c, i, j.

        Args:
            x: ``(n, d)`` or ``(C, n, d)``.
            parents_mask: ``(d, d)``, entry ``(i, j)`` = 1 when ``x_i`` feeds ``g_j``.
            embeddings: ``(C, h)``.

        Returns:
            ``(C, n, d, m)`` (a permuted view of a ``(C, d, n, m)`` tensor).
        """
        masked_weight = self.weight_x * parents_mask.transpose(-1, -2).unsqueeze(-1)  # (j, i, H)
        data = x.unsqueeze(-3) @ masked_weight  # (d, n, H), or (C, d, n, H) for a (C, n, d) x
        context = torch.einsum("ck,jkh->cjh", embeddings, self.weight_u).unsqueeze(-2) + self.bias_in  # (C, d, 1, H)
        # In-place activations and bias fused into the products: on CPU every fresh (C, d, n, H)
        # buffer costs a round of page faults, more than the arithmetic done on it.
        hidden = leaky_relu(data + context, 0.2, inplace=True)  # (C, d, n, H)
        for weight, bias in zip(self.weight_hidden, self.bias_hidden):
            hidden = leaky_relu(self._per_variable(hidden, weight, bias), 0.2, inplace=True)
        out = self._per_variable(hidden, self.weight_out, self.bias_out)  # (C, d, n, m)
        return out.permute(0, 2, 1, 3)

    @staticmethod
    def _per_variable(hidden: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``hidden[c, j] @ weight[j] + bias[j]`` as one ``baddbmm``: ``(C, d, n, H) -> (C, d, n, H')``."""
        components = hidden.shape[0]
        weight, bias = (p.expand(components, *p.shape).flatten(0, 1) for p in (weight, bias))
        out = torch.baddbmm(bias, hidden.flatten(0, 1), weight)
        return out.unflatten(0, (components, -1))

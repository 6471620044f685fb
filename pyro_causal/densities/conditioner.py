"""``d`` per-variable networks ``NN([u, A_j * x]; theta_j)`` evaluated in one batched pass (section 3.4).

Both the non-linear Gaussian (:mod:`.mlp`) and the deep sigmoidal flow (:mod:`.flow`) read the
parameters of ``g_j`` off such a network.  The first layer is factored: with
``W_j = [W_u_j; W_x_j]``,

    [u_c, A_j * x_i] W_j = (A_j * x_i) W_x_j + u_c W_u_j,

so the data part (``(d, n, H)``, shared by every component) and the embedding part
(``(C, d, H)``, one row per component) are computed separately and broadcast-added.  The mask is
folded into ``W_x`` (``W_x_j`` row ``i`` times ``A_ij``), which equals masking the inputs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.functional import leaky_relu


#: In-place hidden activations: LeakyReLU(0.2) (unbounded) or tanh (bounded, robust to heavy tails).
ACTIVATIONS = {"leaky_relu": lambda t: leaky_relu(t, 0.2, inplace=True), "tanh": torch.tanh_}


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
        layers: number of hidden layers (``>= 1``).
        activation: after each hidden layer, ``"leaky_relu"`` (slope 0.2) or ``"tanh"``.

    Activations are kept variable-major, ``(C, d, n, H)``, so every layer is one batched matmul
    over ``C * d`` blocks.

    Example:
        >>> net = StackedConditioner(3, 4, out_features=2)
        >>> net(torch.randn(5, 3), torch.ones(3, 3), torch.randn(2, 4)).shape
        torch.Size([2, 3, 2, 5])
    """

    def __init__(
        self,
        num_variables: int,
        embedding_dim: int,
        out_features: int,
        hidden: int = 16,
        layers: int = 2,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if min(hidden, layers, out_features) < 1:
            raise ValueError(f"hidden, layers, out_features must be >= 1: {hidden}, {layers}, {out_features}")
        d, h, m = num_variables, embedding_dim, out_features
        self.num_variables, self.embedding_dim, self.out_features = d, h, m
        self.hidden, self.layers = hidden, layers
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.activation = activation  # a name, so that the module pickles

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:  # nn.Linear's default initialisation
            bound = 1.0 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.weight_x = uniform(d, d, hidden, fan_in=d + h)  # (j, i, H): row i of W_x_j
        self.weight_u = uniform(d, h, hidden, fan_in=d + h)  # (j, h, H)
        self.bias_in = uniform(d, 1, hidden, fan_in=d + h)
        deep = range(layers - 1)
        self.weight_hidden = nn.ParameterList(uniform(d, hidden, hidden, fan_in=hidden) for _ in deep)
        self.bias_hidden = nn.ParameterList(uniform(d, 1, hidden, fan_in=hidden) for _ in deep)
        # Stored transposed, (j, m, H): the output is produced parameter-major.  A small last layer
        # keeps g_j near the initial bias, which the consumer sets.
        self.weight_out = nn.Parameter(0.1 * uniform(d, m, hidden, fan_in=hidden).data)
        self.bias_out = nn.Parameter(torch.zeros(d, m, 1))

    def forward(self, x: Tensor, parents_mask: Tensor, embeddings: Tensor) -> Tensor:
        """``NN([u_c, A_j * x_i]; theta_j)`` for every c, i, j, variable- and parameter-major.

        Args:
            x: ``(n, d)`` or ``(C, n, d)``.
            parents_mask: ``(d, d)``, entry ``(i, j)`` = 1 when ``x_i`` feeds ``g_j``; ``None``
                for no parents, when ``x`` is not read.
            embeddings: ``(C, h)``.

        Returns:
            ``(C, d, m, n)``: each of the ``m`` outputs is a contiguous ``(C, d, n)`` block, so
            the consumers split it for free and work against ``x.transpose(-1, -2)``;
            ``(C, d, m, 1)`` without parents (the same for every row, to broadcast).
        """
        components = embeddings.shape[0]

        def per_component(*parameters: Tensor) -> list[Tensor]:  # (d, ...) -> (C * d, ...) for baddbmm
            return [p.expand(components, *p.shape).flatten(0, 1) for p in parameters]

        context = torch.einsum("ck,jkh->cjh", embeddings, self.weight_u).unsqueeze(-2) + self.bias_in
        # In-place activations and biases fused into the products: on CPU every fresh (C, d, n, H)
        # buffer costs a round of page faults, more than the arithmetic done on it.
        activation = ACTIVATIONS[self.activation]
        if parents_mask is None:  # the first layer's data part is zero for every row
            hidden = activation(context).flatten(0, 1)  # (C * d, 1, H)
        else:
            masked_weight = self.weight_x * parents_mask.transpose(-1, -2).unsqueeze(-1)  # (j, i, H)
            data = x.unsqueeze(-3) @ masked_weight  # (d, n, H), or (C, d, n, H) for a (C, n, d) x
            hidden = activation(data + context).flatten(0, 1)  # (C * d, n, H)
        for weight, bias in zip(self.weight_hidden, self.bias_hidden):
            bias, weight = per_component(bias, weight)
            hidden = activation(torch.baddbmm(bias, hidden, weight))
        bias, weight = per_component(self.bias_out, self.weight_out)
        out = torch.baddbmm(bias, weight, hidden.transpose(-1, -2))  # (C * d, m, n)
        return out.unflatten(0, (components, self.num_variables))

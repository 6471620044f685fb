"""Deep sigmoidal flow mechanisms (paper, section 3.4; Huang et al. 2018, "Neural Autoregressive Flows").

Each layer of the flow is

    tau_l(x) = logit(w_l^T sigmoid(a_l x + b_l)),   w_l in the simplex, a_l > 0, b_l in R^F,

a strictly increasing bijection of R.  ``tau = tau_L o ... o tau_1`` maps ``x_j`` to a Gaussian
``N(mu, sigma^2)``, and a network of ``[u, A_j * x]`` outputs ``(a, b, w)`` for every layer and
``(mu, sigma)``:

    log g_j(x_j) = log N(tau(x_j); mu, sigma^2) + log tau'(x_j).

Everything is evaluated in log space (log-sigmoids, log-softmax weights, log-sum-exp), so the
value, the log-Jacobian and their gradients stay finite far in the tails (``|x| = 1e3``).
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.distributions import Normal, Transform, constraints
from torch.nn.functional import logsigmoid

from .base import ConditionalDensity, positive_scale, row_noise
from .conditioner import StackedConditioner, inverse_softplus

_FLOOR = 1e-3  # lower bound of the slopes a and of the base scale sigma


def _dsf_layer(
    x: Tensor, a: Tensor, log_a: Tensor, b: Tensor, log_w: Tensor, with_log_det: bool = True
) -> tuple[Tensor, Tensor | None]:
    """One layer ``tau_l``: ``x`` ``(..., *batch)`` and parameters ``(F, *batch)`` -> ``(y, log tau_l'(x))``.

    With ``p = w^T sigmoid(z)``, ``z = a x + b``: ``y = log p - log(1 - p)`` and
    ``tau_l' = (sum_k w_k a_k s_k (1 - s_k)) / (p (1 - p))``; since ``sum_k w_k = 1``,
    ``1 - p = w^T sigmoid(-z)``, so no term ever subtracts two probabilities, and
    ``log sigmoid(-z) = log sigmoid(z) - z`` (one log-sigmoid pass, not two).
    """
    units = -a.dim()
    z = a * x.unsqueeze(units) + b
    log_s = logsigmoid(z)
    log_one_minus_s = log_s - z
    log_p = torch.logsumexp(log_w + log_s, units)
    log_q = torch.logsumexp(log_w + log_one_minus_s, units)
    if not with_log_det:
        return log_p - log_q, None
    log_dp = torch.logsumexp((log_w + log_a) + (log_s + log_one_minus_s), units)  # parameter-sized sum first
    return log_p - log_q, log_dp - log_p - log_q


class DeepSigmoidalFlowTransform(Transform):
    """The deep sigmoidal flow ``tau`` as a :class:`torch.distributions.Transform` (Huang et al. 2018).

    Args:
        a_raw: ``(L, F, *batch)`` unconstrained slopes, ``a = softplus(a_raw) + 1e-3``.
        b: ``(L, F, *batch)`` offsets.
        w_logits: ``(L, F, *batch)`` unnormalised log-weights, ``w = softmax(w_logits)`` over ``F``.
        bisection_steps: iterations of the inverse (exact to float precision well before 50).
        cache_size: as for every :class:`~torch.distributions.Transform`.

    Elementwise on inputs broadcastable with ``batch``.  Layers and units lead the parameter
    shape so that, in the batched densities, the long sample axis stays innermost in memory.
    The inverse inverts layer by layer by bisection inside the bracket
    ``[min_k, max_k] (y - b_k) / a_k`` (where every, respectively no, unit exceeds the target),
    then takes one differentiable Newton step so that gradients with respect to the parameters
    are the implicit-function ones.

    Example:
        >>> t = DeepSigmoidalFlowTransform(torch.zeros(2, 8), torch.randn(2, 8), torch.zeros(2, 8))
        >>> base = torch.distributions.Normal(0.0, 1.0)
        >>> torch.distributions.TransformedDistribution(base, [t.inv]).log_prob(torch.tensor(3.0)).shape
        torch.Size([])
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(
        self, a_raw: Tensor, b: Tensor, w_logits: Tensor, bisection_steps: int = 50, cache_size: int = 0
    ) -> None:
        super().__init__(cache_size=cache_size)
        if not a_raw.shape == b.shape == w_logits.shape or b.dim() < 2:
            shapes = [tuple(p.shape) for p in (a_raw, b, w_logits)]
            raise ValueError(f"a_raw, b and w_logits must share one shape (L, F, *batch), got {shapes}")
        self.a_raw, self.b, self.w_logits = a_raw, b, w_logits
        self.bisection_steps = bisection_steps
        self.batch_shape = b.shape[2:]
        self.a = positive_scale(a_raw, _FLOOR)
        self.log_a = self.a.log()
        self.log_w = w_logits - w_logits.logsumexp(1, keepdim=True)  # log_softmax, faster for small F

    def with_cache(self, cache_size: int = 1) -> "DeepSigmoidalFlowTransform":
        if self._cache_size == cache_size:
            return self
        return DeepSigmoidalFlowTransform(self.a_raw, self.b, self.w_logits, self.bisection_steps, cache_size)

    def _layers(self, reverse: bool = False) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        layers = zip(*(p.unbind(0) for p in (self.a, self.log_a, self.b, self.log_w)))
        return reversed(list(layers)) if reverse else layers

    def _expand(self, x: Tensor) -> Tensor:
        return x.expand(torch.broadcast_shapes(x.shape, self.batch_shape))

    def call_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(tau(x), log tau'(x))`` in one pass, both of the broadcast shape of ``x`` and ``batch``."""
        x, log_det = self._expand(x), 0.0
        for params in self._layers():
            x, layer_log_det = _dsf_layer(x, *params)
            log_det = log_det + layer_log_det
        return x, log_det

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_log_det(x)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_log_det(x)[1]

    def _inverse(self, y: Tensor) -> Tensor:
        y = self._expand(y)
        for a, log_a, b, log_w in self._layers(reverse=True):
            units = -a.dim()
            with torch.no_grad():
                roots = (y.unsqueeze(units) - b) / a  # unit k alone would give exactly y at its root
                low, high = roots.amin(units), roots.amax(units)
                for _ in range(self.bisection_steps):
                    middle = 0.5 * (low + high)
                    above = _dsf_layer(middle, a, log_a, b, log_w, with_log_det=False)[0] > y
                    high, low = torch.where(above, middle, high), torch.where(above, low, middle)
                x = 0.5 * (low + high)
            value, log_slope = _dsf_layer(x, a, log_a, b, log_w)
            y = x - (value - y) * torch.exp(-log_slope)  # Newton step: exact value, implicit gradients
        return y


class DeepSigmoidalFlow(ConditionalDensity):
    """Deep-sigmoidal-flow mechanisms conditioned on the parents and the embedding.

    Args:
        num_variables: ``d``.
        embedding_dim: ``h``.
        hidden: ``H``, width of each hidden layer of the conditioner networks.
        layers: hidden layers of the conditioner networks.
        flow_units: ``F``, sigmoid units per flow layer.
        flow_layers: ``L``, stacked flow layers.
        bisection_steps: iterations of the inverse used by :meth:`sample`.

    The conditioner outputs ``3 F L + 2`` numbers per sample and variable: ``(a_raw, b, w_logits)``
    per layer, then ``mu`` and ``sigma_raw`` of the Gaussian base.  At initialisation
    ``a ~ 1``, ``b`` spread over ``[-1, 1]``, ``w`` uniform, ``mu ~ 0``, ``sigma ~ 1``.

    Example:
        >>> density = DeepSigmoidalFlow(3, 4)
        >>> density.log_prob(torch.randn(5, 3), torch.ones(3, 3), torch.randn(2, 4)).shape
        torch.Size([2, 5, 3])
    """

    network_mechanisms = True

    def __init__(
        self,
        num_variables: int,
        embedding_dim: int,
        hidden: int = 16,
        layers: int = 2,
        flow_units: int = 8,
        flow_layers: int = 1,
        bisection_steps: int = 50,
    ) -> None:
        super().__init__(num_variables, embedding_dim)
        self.flow_units, self.flow_layers, self.bisection_steps = flow_units, flow_layers, bisection_steps
        size = 3 * flow_units * flow_layers + 2
        self.conditioner = StackedConditioner(num_variables, embedding_dim, size, hidden=hidden, layers=layers)
        with torch.no_grad():
            bias = self.conditioner.bias_out[:, :-2, 0].unflatten(-1, (flow_layers, 3, flow_units))
            bias[..., 0, :] = inverse_softplus(1.0 - _FLOOR)
            bias[..., 1, :] = torch.linspace(-1.0, 1.0, flow_units)
            self.conditioner.bias_out[:, -1] = inverse_softplus(1.0 - _FLOOR)

    def no_parents(self, adjacency: Tensor) -> None:
        """``None``: :meth:`log_prob` and :meth:`sample` then compute each component's flow once."""
        return None

    def flow(
        self, x: Tensor, parents_mask: Optional[Tensor], embeddings: Tensor
    ) -> tuple[DeepSigmoidalFlowTransform, Tensor, Tensor]:
        """The flow of every ``g_j`` and its Gaussian base, variable-major.

        Returns:
            The transform (parameters ``(L, F, C, d, n)``), ``mu`` and ``sigma`` (``(C, d, n)`` each);
            the last axis has length 1 when ``parents_mask`` is ``None`` (no parents).
        """
        out = self.conditioner(x, parents_mask, embeddings)  # (C, d, m, n)
        params, mu, raw_sigma = out.split([out.shape[-2] - 2, 1, 1], -2)
        params = params.unflatten(-2, (self.flow_layers, 3, self.flow_units)).unbind(-3)  # (C, d, L, F, n)
        params = [p.permute(2, 3, 0, 1, 4) for p in params]  # n stays innermost in memory
        transform = DeepSigmoidalFlowTransform(*params, bisection_steps=self.bisection_steps)
        return transform, mu.squeeze(-2), positive_scale(raw_sigma.squeeze(-2), _FLOOR)

    def log_prob(self, x: Tensor, parents_mask: Optional[Tensor], embeddings: Tensor) -> Tensor:
        transform, mu, sigma = self.flow(x, parents_mask, embeddings)
        y, log_det = transform.call_and_log_det(x.transpose(-1, -2).contiguous())
        return (Normal(mu, sigma, validate_args=False).log_prob(y) + log_det).transpose(-1, -2)

    def sample(self, x: Tensor, parents_mask: Optional[Tensor], embeddings: Tensor) -> Tensor:
        transform, mu, sigma = self.flow(x, parents_mask, embeddings)
        noise = row_noise(mu, x)
        return transform.inv(mu + sigma * noise).transpose(-1, -2)

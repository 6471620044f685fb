"""The likelihood of a sample under each intervention component (paper, eq. 8).

``log p(x | z = k, R, U, A) = sum_j log g_j(x_j | M_kj * x, u_0 + r_kj (u_k - u_0))`` where
``M = A`` for imperfect interventions and, for targeted variables of perfect interventions,
``M = 0`` (the parents are cut).  Because ``r_kj`` is binary the sum is affine in ``r``:

    log p(x | z = k) = sum_j [ (1 - r_kj) l_j(x; u_0, A) + r_kj l_j(x; u_k, M) ]

so plugging the mean-field probabilities ``pi_kj`` for ``r_kj`` gives the exact expectation
``E_q(r)[log p(x | z = k, r)]``.  :class:`InterventionalLikelihood` declares this
(:attr:`~InterventionalLikelihood.affine_in`) and :class:`~pyro_causal.elbo.LatentInterventionELBO`
uses it to remove the sampling noise of the targets.
"""
from __future__ import annotations

from typing import Optional

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

from .densities.base import ConditionalDensity

INTERVENTIONS = ("imperfect", "perfect")


def component_log_likelihood(
    density: ConditionalDensity,
    x: Tensor,
    adjacency: Tensor,
    embeddings: Tensor,
    targets: Tensor,
    perfect: bool = False,
) -> Tensor:
    """``log p(x_i | z_i = k, targets, embeddings, adjacency)`` for every k and i (eq. 8).

    Args:
        density: the conditional densities ``g``.
        x: ``(n, d)`` data.
        adjacency: ``(d, d)`` graph, 0/1 or straight-through.
        embeddings: ``(K, h)`` intervention embeddings, row 0 observational.
        targets: ``(K, d)`` targets in ``[0, 1]`` with row 0 zero; fractional values give the
            expectation over independent Bernoulli targets.
        perfect: cut the parents of targeted variables.

    Returns:
        ``(K, n)`` log-likelihoods.
    """
    return density.component_log_prob(x, adjacency, embeddings, targets, perfect)


def edge_gain(
    density: ConditionalDensity,
    x: Tensor,
    adjacency: Tensor,
    embeddings: Tensor,
    targets: Tensor,
    assignment_probs: Tensor,
    perfect: bool = False,
) -> Optional[Tensor]:
    """``d E_q(z, r)[log p(x | z, r, A)] / d A_ij`` for a 0/1 ``A``: the gain of each edge, ``(d, d)``.

    ``sum_i sum_k q(z_i = k) [(1 - pi_kj) l_0ij + pi_kj l_kij]`` (eq. 8) evaluated with edge
    ``(i, j)`` present minus absent, every other edge as in ``adjacency``.  Since the expected
    log-likelihood is affine in each ``A_ij`` separately, this is also its exact derivative in
    the edge probability ``p_ij`` given the other edges.  ``None`` when the density does not
    provide :meth:`~pyro_causal.densities.base.ConditionalDensity.log_prob_gain`.

    Args:
        assignment_probs: ``(n, K)`` weights ``q(z_i = k)`` (one-hot where the regime is known).
    """
    # Mechanism j of row n uses u_0 with weight sum_k q_nk (1 - t_kj) and u_k with q_nk t_kj.
    if perfect:  # intervened mechanisms have no parents, so no gain
        return density.log_prob_gain(x, adjacency, embeddings[:1], assignment_probs, (1 - targets).unsqueeze(0))
    num_components = targets.shape[0]
    eye = torch.eye(num_components, dtype=targets.dtype, device=targets.device)
    mix = eye.unsqueeze(-1) * targets  # (C, K, d): [c = k] t_kj
    mix = torch.cat([mix[:1] + (1 - targets), mix[1:]], 0)
    return density.log_prob_gain(x, adjacency, embeddings, assignment_probs, mix)


def ancestral_sample(
    density: ConditionalDensity,
    adjacency: Tensor,
    embeddings: Tensor,
    targets: Tensor,
    components: Tensor,
    perfect: bool = False,
) -> Tensor:
    """Draw ``x_i`` from component ``components[i]`` of the mixture: ``(n,) -> (n, d)``.

    Every variable is redrawn ``d`` times given the current values of its parents, so after the
    last pass each variable has been drawn after all of its ancestors (a DAG has depth < d).
    """
    d = adjacency.shape[-1]
    n = components.shape[0]
    num_components = embeddings.shape[0]
    hard_targets = targets[components].round()  # (n, d)
    x = torch.zeros(num_components, n, d, dtype=embeddings.dtype, device=embeddings.device)
    rows = torch.arange(n, device=components.device)
    for _ in range(d):
        draws = density.per_component("sample", x, adjacency, embeddings, perfect)  # (K, n, d)
        chosen = torch.where(hard_targets.bool(), draws[components, rows], draws[0])
        x = chosen.expand(num_components, n, d)
    return x[0]


class InterventionalLikelihood(TorchDistribution):
    """Distribution of a sample ``x`` (event ``(d,)``) given its component ``z`` (batch shape).

    Args:
        density: the conditional densities ``g``.
        graph: ``(d, d)`` value of the ``graph`` site (its diagonal is ignored).
        embeddings: ``(K, h)`` value of the ``u`` site.
        targets: ``(K - 1, d)`` value of the ``r`` site (``r_0 = 0`` is prepended here).
        component: the ``z`` value, any batch shape (``(K, 1)`` when enumerated).
        perfect: cut the parents of targeted variables.

    ``log_prob`` evaluates all components once and picks each sample's own, so it broadcasts
    with an enumerated ``z``.  ``sample`` draws by ancestral sampling (for
    :class:`~pyro.infer.Predictive`).  Two declarations for
    :class:`~pyro_causal.elbo.LatentInterventionELBO`: :attr:`affine_in` (the log-density is
    affine in the targets, eq. 8, so their mean gives the exact expectation) and
    :meth:`edge_gain` (the exact gain of each edge, for the local graph gradient).
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, density, graph, embeddings, targets, component, perfect=False, validate_args=None):
        self.density, self.graph, self.embeddings = density, graph, embeddings
        self.targets, self.component, self.perfect = targets, component, perfect
        super().__init__(component.shape, graph.shape[-1:], validate_args=validate_args)

    @property
    def affine_in(self) -> tuple:
        """Values this log-density is affine in (elementwise): the targets ``r``."""
        return (self.targets,)

    @property
    def adjacency(self) -> Tensor:
        """``(d, d)`` graph with a zero diagonal."""
        d = self.graph.shape[-1]
        return self.graph * (1 - torch.eye(d, dtype=self.graph.dtype, device=self.graph.device))

    @property
    def full_targets(self) -> Tensor:
        """``(K, d)`` targets with the observational row ``r_0 = 0``."""
        return torch.cat([self.targets.new_zeros(1, self.targets.shape[-1]), self.targets], 0)

    def expand(self, batch_shape, _instance=None):
        component = self.component.expand(batch_shape)
        return InterventionalLikelihood(
            self.density, self.graph, self.embeddings, self.targets, component, self.perfect
        )

    def component_log_prob(self, value: Tensor) -> Tensor:
        """``log p(x_i | z_i = k)`` for every component: ``(n, d) -> (K, n)``."""
        return component_log_likelihood(
            self.density, value, self.adjacency, self.embeddings, self.full_targets, self.perfect
        )

    def log_prob(self, value: Tensor) -> Tensor:
        table = self.component_log_prob(value)  # (K, n)
        if _is_enumerated(self.component, table.shape[0]):
            return table.expand(self.batch_shape)  # z laid out over 0..K-1 (enumeration): no gather
        component = self.component.expand(self.batch_shape)
        rows = torch.arange(table.shape[-1], device=table.device)
        return table[component, rows]

    def edge_gain(self, value: Tensor, assignment_probs: Tensor) -> Optional[Tensor]:
        """Gain of each edge (:func:`edge_gain`), ``(d, d)`` with a zero diagonal, or ``None``."""
        gain = edge_gain(self.density, value, self.adjacency, self.embeddings, self.full_targets,
                         assignment_probs, self.perfect)
        if gain is None:
            return None
        d = gain.shape[-1]
        return gain * (1 - torch.eye(d, dtype=gain.dtype, device=gain.device))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        if sample_shape:
            raise NotImplementedError("draw several samples with a plate, not sample_shape")
        with torch.no_grad():
            flat = self.component.reshape(-1)
            x = ancestral_sample(self.density, self.adjacency, self.embeddings, self.full_targets, flat, self.perfect)
        return x.reshape(self.batch_shape + self.event_shape)


def _is_enumerated(component: Tensor, num_components: int) -> bool:
    """Whether ``component`` is ``0..K-1`` along its first axis, constant along the others (the
    layout of an enumerated ``z``)."""
    if component.dim() != 2 or component.shape[0] != num_components or component.stride(-1) != 0:
        return False
    return bool(torch.equal(component[:, 0], torch.arange(num_components, device=component.device)))

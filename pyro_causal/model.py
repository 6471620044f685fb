"""The generative story of the paper (sections 3.2-3.5) as a Pyro model.

Sample sites (fixed names, see ``docs/api.md``):

========  =====================================  ==========================
site      distribution                           shape
========  =====================================  ==========================
graph     Bernoulli(sigmoid(lambda)), diag masked ``(d, d)`` event
v         stick law, default Beta(1, alpha)      plate ``sticks`` (K - 1)
u         Normal(0, I_h)                         plate ``components`` (K), event ``(h,)``
r         Bernoulli(sigmoid(gamma))              plate ``interventions`` (K - 1), event ``(d,)``
z         Categorical(beta(v))                   plate ``data`` (n), enumerated
x         :class:`InterventionalLikelihood`      plate ``data``, event ``(d,)``, observed
========  =====================================  ==========================

Component 0 is the observational regime: ``r_0 = 0``, so only ``r_1..r_{K-1}`` are sampled.
"""
from __future__ import annotations

import itertools
from typing import Optional, Union

import pyro
import torch
from pyro.distributions import Bernoulli, Beta, Distribution, Normal
from pyro.nn import PyroModule, pyro_method
from torch import Tensor

from . import priors
from .acyclicity import off_diagonal_mask
from .densities import ConditionalDensity, make_density
from .distributions import StickBreakingCategorical
from .guide import LatentInterventionGuide, data_plate, rows_of
from .likelihood import INTERVENTIONS, InterventionalLikelihood, component_log_likelihood, edge_gain

_instances = itertools.count()


def default_truncation(num_variables: int) -> int:
    """Truncation level K used when none is given: room for one intervention per variable,
    the observational regime and one spare component, capped at 32."""
    return min(num_variables + 2, 32)


class LatentInterventionModel(PyroModule):
    """A shared causal graph under a truncated Dirichlet-process mixture of interventions.

    ``model`` and ``guide`` are Pyro programs taking ``(x, regimes=None, targets=None,
    batch_size=None, rows=None)``; give ``regimes`` (``(n,)`` ints, ``-1`` = unknown) and/or
    ``targets`` (``(K, d)`` 0/1) to condition on them (section 3.9), ``batch_size`` or ``rows``
    (indices) to subsample the ``data`` plate.  Both are :class:`~pyro.nn.PyroModule` s whose
    parameters live in the module (``state_dict``); each instance has its own name, so several
    models train independently in one process.

    Priors are constructor arguments (``alpha``, ``target_logit``, ``edge_logit``, or whole
    distributions ``stick_prior=``, ``target_prior=``) or overridable methods
    (:meth:`graph_prior`, :meth:`stick_prior`, :meth:`embedding_prior`, :meth:`target_prior`).

    Args:
        num_variables: ``d``.
        density: a family name (``"linear"``, ``"mlp"``, ``"flow"``) or a
            :class:`~pyro_causal.densities.ConditionalDensity`.
        truncation: number of components ``K`` (component 0 observational).
        embedding_dim: ``h``.
        alpha: Dirichlet-process concentration.
        target_logit: ``gamma``, prior logit of each target.
        edge_logit: ``lambda``, a scalar or a ``(d, d)`` matrix of prior edge logits;
            ``-inf`` forbids and ``+inf`` requires an edge.
        intervention: ``"perfect"`` (default) cuts the parents of targeted variables, ``"imperfect"``
            keeps them (the paper's model).
        two_cycles: ``"resolve"`` (default): sampled graphs never hold both ``i -> j`` and
            ``j -> i`` (a fair coin keeps one, :class:`~pyro_causal.distributions.TwoCycleFreeBernoulli`);
            ``"allow"``: the paper's independent edges.

    Example:
        >>> m = LatentInterventionModel(3, truncation=4)
        >>> svi = pyro.infer.SVI(m.model, m.guide, pyro.optim.Adam({"lr": 0.01}), LatentInterventionELBO())
        >>> loss = svi.step(torch.randn(20, 3))
    """

    max_plate_nesting = 1

    def __init__(
        self,
        num_variables: int,
        *,
        density: Union[str, ConditionalDensity] = "linear",
        truncation: Optional[int] = None,
        embedding_dim: int = 16,
        alpha: float = 1.0,
        target_logit: float = -2.0,
        edge_logit: Union[float, Tensor] = -2.0,
        intervention: str = "perfect",
        stick_prior: Optional[Distribution] = None,
        target_prior: Optional[Distribution] = None,
        density_options: Optional[dict] = None,
        encoder_hidden: int = 64,
        two_cycles: str = "resolve",
    ) -> None:
        super().__init__(name=f"latent_intervention_model_{next(_instances)}")
        if num_variables < 2:
            raise ValueError(f"need at least 2 variables, got {num_variables}")
        if intervention not in INTERVENTIONS:
            raise ValueError(f"unknown intervention {intervention!r}; choose one of {', '.join(INTERVENTIONS)}")
        d = int(num_variables)
        self.num_variables = d
        self.truncation = int(truncation or default_truncation(d))
        if self.truncation < 1:
            raise ValueError(f"truncation must be >= 1, got {self.truncation}")
        self.embedding_dim = int(embedding_dim)
        self.alpha = float(alpha)
        self.target_logit = float(target_logit)
        self.intervention = intervention
        if isinstance(density, str):
            density = make_density(density, d, self.embedding_dim, **(density_options or {}))
        elif density.num_variables != d or density.embedding_dim != self.embedding_dim:
            raise ValueError("the density's num_variables/embedding_dim do not match the model's")
        self.density = density
        logits = torch.as_tensor(edge_logit, dtype=torch.get_default_dtype())
        if logits.dim() == 0:
            logits = logits.expand(d, d).clone()
        if logits.shape != (d, d):
            raise ValueError(f"edge_logit must be a scalar or a ({d}, {d}) matrix, got shape {tuple(logits.shape)}")
        self.register_buffer("edge_logits", logits)
        self.register_buffer("off_diagonal", off_diagonal_mask(d))
        self._stick_prior = stick_prior
        self._target_prior = target_prior
        self.guide = LatentInterventionGuide(
            d,
            self.truncation,
            self.embedding_dim,
            encoder_hidden=encoder_hidden,
            forbidden=torch.isneginf(logits) & self.off_diagonal.bool(),
            required=torch.isposinf(logits) & self.off_diagonal.bool(),
            two_cycles=two_cycles,
        )

    # ----------------------------------------------------------------- priors (hooks)
    def graph_prior(self) -> Distribution:
        """``p(A)`` (eq. 7): batch ``(d, d)``; the diagonal is masked out by the model."""
        return Bernoulli(logits=self.edge_logits.clamp(-30.0, 30.0))

    def stick_prior(self) -> Distribution:
        """``p(v)``: batch ``(K - 1,)``; default ``Beta(1, alpha)`` (section 3.5)."""
        prior = self._stick_prior or priors.dirichlet_process_sticks(self.alpha, self.truncation)
        return _to(prior, self.edge_logits)

    def embedding_prior(self) -> Distribution:
        """``p(u_k)``: batch ``(K,)``, event ``(h,)``; default ``N(0, I_h)``."""
        zeros = self.edge_logits.new_zeros(self.truncation, self.embedding_dim)
        return Normal(zeros, 1.0).to_event(1)

    def target_prior(self) -> Distribution:
        """``p(r_k)``: batch ``(K - 1,)``, event ``(d,)``; default ``Bernoulli(sigmoid(gamma))``."""
        prior = self._target_prior or priors.target_prior(self.target_logit, self.truncation, self.num_variables)
        return _to(prior, self.edge_logits).to_event(1)

    # ----------------------------------------------------------------- likelihood
    @property
    def perfect(self) -> bool:
        return self.intervention == "perfect"

    def full_targets(self, r: Tensor) -> Tensor:
        """Prepend the observational row ``r_0 = 0``: ``(K - 1, d) -> (K, d)``."""
        return torch.cat([r.new_zeros(1, self.num_variables), r], 0)

    def log_likelihood(self, x: Tensor, adjacency: Tensor, embeddings: Tensor, targets: Tensor) -> Tensor:
        """``log p(x_i | z_i = k, ...)`` of eq. 8 for all k: ``(n, d) -> (K, n)``; ``targets`` is ``(K, d)``."""
        return component_log_likelihood(self.density, x, adjacency * self.off_diagonal, embeddings, targets, self.perfect)

    def edge_gain(self, x: Tensor, adjacency: Tensor, embeddings: Tensor, targets: Tensor, assignment_probs: Tensor):
        """Exact gain of toggling each edge on the expected log-likelihood: ``(d, d)`` or ``None``
        (see :func:`~pyro_causal.likelihood.edge_gain`); ``assignment_probs`` is ``(n, K)``."""
        gain = edge_gain(self.density, x, adjacency * self.off_diagonal, embeddings, targets, assignment_probs, self.perfect)
        return None if gain is None else gain * self.off_diagonal

    def release_params(self) -> None:
        """Remove this model's entries from Pyro's global parameter store (the module keeps its
        parameters).  Training calls it before and after, so a copy of a model (same name) never
        trains against the original's entries."""
        store = pyro.get_param_store()
        prefix = self._pyro_name + "."
        for name in [key for key in store.keys() if key.startswith(prefix)]:
            del store[name]

    # ----------------------------------------------------------------- Pyro program
    @pyro_method
    def model(
        self,
        x: Tensor,
        regimes: Optional[Tensor] = None,
        targets: Optional[Tensor] = None,
        batch_size: Optional[int] = None,
        rows: Optional[Tensor] = None,
    ) -> Tensor:
        """The generative story of section 3.5; returns the sampled graph ``(d, d)``."""
        K = self.truncation
        graph = pyro.sample("graph", self.graph_prior().mask(self.off_diagonal.bool()).to_event(2))
        sticks = x.new_zeros(0)
        if K > 1:
            with pyro.plate("sticks", K - 1, dim=-1):
                sticks = pyro.sample("v", self.stick_prior())
        with pyro.plate("components", K, dim=-1):
            u = pyro.sample("u", self.embedding_prior())
        r = x.new_zeros(0, self.num_variables)
        if K > 1:
            observed = None if targets is None else targets[1:]
            with pyro.plate("interventions", K - 1, dim=-1):
                r = pyro.sample("r", self.target_prior(), obs=observed)
        with data_plate(x, batch_size, rows) as batch:
            known, mask = _regime_observation(regimes, batch)
            z = pyro.sample("z", StickBreakingCategorical(sticks), obs=known, obs_mask=mask,
                            infer={"enumerate": "parallel"})
            pyro.sample("x", InterventionalLikelihood(self.density, graph, u, r, z, self.perfect), obs=rows_of(x, batch))
        return graph * self.off_diagonal


def _regime_observation(regimes: Optional[Tensor], rows: Tensor):
    """``(obs, obs_mask)`` for the ``z`` site: all latent, or observed where ``regimes >= 0``.

    With regimes given the site is always split by ``obs_mask`` (also when every row is known),
    so the guide's ``z_unobserved`` factor and the supervision term exist in every variant."""
    if regimes is None:
        return None, None
    batch = regimes[rows]
    return batch.clamp_min(0), batch >= 0


def _to(distribution: Distribution, like: Tensor) -> Distribution:
    """The built-in prior families on the model's device and dtype (user priors of other
    families must be built there by the user)."""
    if isinstance(distribution, Beta):
        return Beta(distribution.concentration1.to(like), distribution.concentration0.to(like))
    if isinstance(distribution, Bernoulli):
        return Bernoulli(logits=distribution.logits.to(like))
    return distribution

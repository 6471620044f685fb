"""The evidence lower bound of section 3.6, read from the traces of the model and the guide.

:class:`LatentInterventionELBO` runs the guide under ``poutine.trace`` (its enumerated site ``z``
laid out over the values ``0..K-1``), replays the model against it and takes every term from the
sites it finds, with the expectations the math allows taken exactly:

* a global latent site (``graph``, ``v``, ``u``, ``r``, or any site a user adds outside the
  ``data`` plate) contributes ``-KL(q || p)``: closed form where ``kl_divergence`` knows the pair
  of (unmasked, unbatched) distributions, else ``log q(s) - log p(s)`` at the guide's sample ``s``
  (as ``TraceMeanField_ELBO`` does); observed global sites contribute ``log p``;
* the enumerated site ``z`` is summed out over its support in parallel (as ``TraceEnum_ELBO``
  does); rows whose ``z`` is observed (``obs_mask``) use their value;
* a site whose value an observed site declares itself affine in (``affine_in``, e.g. the
  targets ``r`` of :class:`~pyro_causal.likelihood.InterventionalLikelihood`, eq. 8) is replayed
  at its guide mean ``pi``, which is the exact expectation ``E_q(r)``;
* a ``z`` prior built from stick-breaking sticks (:class:`~pyro_causal.distributions.StickBreakingCategorical`)
  whose guide is Beta uses ``E_q(v)[log beta_k]`` (digammas, appendix A);
* any other local site (latent or observed) enters through its trace log-density.

Only ``A`` and ``U`` are sampled in the default model.  The edge probabilities are differentiated
through the straight-through sample of section 3.8 or, with ``graph_estimator="local"``, by the
local expectation gradient (Titsias and Lazaro-Gredilla, 2015): the expected log-likelihood is
affine in each ``A_ij``, so its derivative in ``p_ij`` is the exact gain of the edge given the
other sampled edges (the likelihood's ``edge_gain``).

``assignment="optimal"`` (the default) sets ``q(z_i)`` to its optimum given the sampled ``A, U``
and ``pi``, the posterior ``p(z_i | x_i, ...)``: a tighter bound than the amortised family's, for
which the local term is ``logsumexp_k`` of the joint.  The amortised network ``q(z | x)`` is then
fitted to it (``KL(q_optimal || q_phi)``, outside the bound) to assign new rows.
``assignment="amortized"`` uses the network's ``q(z | x)`` in the bound, the paper's family.
Rows with a known regime add ``kappa log q_phi(z_i | x_i)`` (section 3.9), also outside the bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from pyro import poutine
from pyro.distributions import Beta, Independent, MaskedDistribution
from pyro.infer import ELBO, TraceEnum_ELBO
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from .distributions import StickBreakingCategorical, expected_log_stick_weights, stick_breaking_log_weights

GRAPH_ESTIMATORS = ("local", "straight-through")
ASSIGNMENTS = ("optimal", "amortized")

#: Rows per step on which the assignment network is fitted to the optimal ``q(z)`` (and to the
#: known regimes) when ``assignment="optimal"`` and the guide's ``q(z | x)`` can score a subset.
ENCODER_ROWS = 1024


def kl_or_monte_carlo(q: Distribution, p: Distribution, sample: Tensor) -> Tensor:
    """Elementwise ``KL(q || p)``: closed form when registered, else ``log q(s) - log p(s)``."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return q.log_prob(sample) - p.log_prob(sample)


@dataclass
class ElboTerms:
    """The pieces of the bound, each a scalar tensor (already scaled to the whole data set).

    ``local`` is ``sum_i E_q[log p(x_i, z_i | ...) - log q(z_i)]`` (``z`` summed out, user local
    sites included); ``log_likelihood`` is its part ``E_q[log p(x_i | z_i, ...)]`` (reported,
    carrying the local graph gradient when that estimator is on); ``kl`` maps each global latent
    site to its ``KL(q || p)``; ``observed`` is ``log p`` of the observed global sites (known
    targets).  ``auxiliary`` only trains the assignment network (supervision and distillation).
    """

    local: Tensor
    log_likelihood: Tensor
    kl: Dict[str, Tensor] = field(default_factory=dict)
    observed: Tensor = None
    auxiliary: Tensor = None

    def __post_init__(self) -> None:
        zero = self.local.new_zeros(())
        self.observed = zero if self.observed is None else self.observed
        self.auxiliary = zero if self.auxiliary is None else self.auxiliary

    @property
    def assignments(self) -> Tensor:
        """``E_q[log p(z_i)] - E_q[log q(z_i)]`` summed over rows (``local - log_likelihood``)."""
        return self.local - self.log_likelihood

    @property
    def elbo(self) -> Tensor:
        """The bound on ``log p(D)`` itself (without the auxiliary term)."""
        return self.local + self.observed - sum(self.kl.values(), self.local.new_zeros(()))

    @property
    def objective(self) -> Tensor:
        """What training maximises: the bound plus the auxiliary term."""
        return self.elbo + self.auxiliary

    def as_floats(self) -> dict:
        values = {name: float(getattr(self, name).detach())
                  for name in ("local", "log_likelihood", "assignments", "observed", "auxiliary", "elbo")}
        values.update({f"kl_{name}": float(value.detach()) for name, value in self.kl.items()})
        return values


class _Plan(NamedTuple):
    """Which sites the guide trace is changed at before the model is replayed."""

    means: Tuple[str, ...] = ()
    local_graph: Optional[str] = None


def _unwrap(fn: Distribution, site_mask=None) -> Tuple[Distribution, Optional[Tensor]]:
    """``(base, mask)``: ``fn`` without its ``Independent`` / ``MaskedDistribution`` layers, and the
    combined mask broadcastable to the base's batch shape (``None`` when nothing is masked)."""
    masks = [] if site_mask is None or site_mask is True else [(torch.as_tensor(site_mask), 0)]
    depth = 0
    while True:
        if isinstance(fn, MaskedDistribution):
            masks.append((fn._mask, depth))
            fn = fn.base_dist
        elif isinstance(fn, Independent):
            depth += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        else:
            break
    mask = None
    for m, at in masks:
        m = m.reshape(m.shape + (1,) * (depth - at))
        mask = m if mask is None else mask & m
    return fn, mask


def _masked_sum(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    if mask is None:
        return values.sum()
    return torch.where(mask, values, values.new_zeros(())).sum()


def _site_log_prob(site: dict) -> Tensor:
    """``log p`` of a local site at its value, per batch element, masked (unscaled)."""
    log_prob = site["fn"].log_prob(site["value"])
    mask = site["mask"]
    if mask is None or mask is True:
        return log_prob
    if mask is False:
        return torch.zeros_like(log_prob)
    return torch.where(mask, log_prob, log_prob.new_zeros(()))


class LatentInterventionELBO(ELBO):
    """The bound of section 3.6 computed from the traces of ``model`` and ``guide``.

    Works with any model/guide pair of the shape of
    :class:`~pyro_causal.model.LatentInterventionModel` (global sites, one ``data`` plate holding
    at most one enumerated discrete site and the observed data); a user's extra sites, other
    priors, ``poutine.condition`` / ``scale`` / ``reparam`` around the programs all enter through
    the traces.  Programs of another shape (several enumerated sites, local sites with different
    scales, a global latent site without a guide factor) are scored by ``TraceEnum_ELBO`` instead.

    Args:
        num_particles: draws of the sampled sites averaged per step.
        supervision_weight: ``kappa`` of section 3.9.
        assignment: ``"optimal"`` or ``"amortized"`` ``q(z)`` (see the module docstring).
        graph_estimator: ``"straight-through"`` or ``"local"`` edge gradients.
        data_plate: name of the plate over rows.
        closed_forms: ``False`` turns every exact expectation off (KLs, ``E_q(r)``,
            ``E_q(v)[log beta]`` become trace estimates; ``z`` stays enumerated): the
            estimator the exact one is measured against.

    Example:
        >>> svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), LatentInterventionELBO())
        >>> svi.step(x)
    """

    def __init__(
        self,
        num_particles: int = 1,
        supervision_weight: float = 0.5,
        assignment: str = "optimal",
        graph_estimator: str = "straight-through",
        data_plate: str = "data",
        closed_forms: bool = True,
    ) -> None:
        super().__init__(num_particles=num_particles, max_plate_nesting=1)
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"unknown assignment {assignment!r}; choose one of {', '.join(ASSIGNMENTS)}")
        if graph_estimator not in GRAPH_ESTIMATORS:
            raise ValueError(f"unknown graph_estimator {graph_estimator!r}; choose one of {', '.join(GRAPH_ESTIMATORS)}")
        self.supervision_weight = float(supervision_weight)
        self.assignment = assignment
        self.graph_estimator = graph_estimator
        self.data_plate = data_plate
        self.closed_forms = bool(closed_forms)
        self._plan: Optional[_Plan] = None
        self._known_kl: Dict[tuple, bool] = {}

    # ----------------------------------------------------------------- traces
    def _get_trace(self, model, guide, args, kwargs):
        return self._traces(model, guide, args, kwargs, self._plan or _Plan())

    def _traces(self, model, guide, args, kwargs, plan: _Plan):
        first = -1 - self.max_plate_nesting
        guide_trace = poutine.trace(poutine.enum(guide, first_available_dim=first)).get_trace(*args, **kwargs)
        for name in plan.means:
            site = guide_trace.nodes[name]
            site["value"] = _unwrap(site["fn"])[0].mean.expand_as(site["value"])
        if plan.local_graph is not None:
            site = guide_trace.nodes[plan.local_graph]
            site["value"] = site["value"].detach()
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def _plan_for(self, model_trace, guide_trace) -> _Plan:
        """The plan these traces allow (see the module docstring)."""
        if not self.closed_forms:
            return _Plan()
        affine = []
        gain_sources = []
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                affine.extend(getattr(site["fn"], "affine_in", ()))
                if hasattr(site["fn"], "edge_gain"):
                    gain_sources.append(getattr(site["fn"], "graph", None))
        means, local_graph = [], None
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or name not in guide_trace.nodes or site_is_subsample(site):
                continue
            guide_site = guide_trace.nodes[name]
            value = site["value"]
            if any(value is a for a in affine) and self._closed_kl(guide_site, site) and \
                    hasattr(_unwrap(guide_site["fn"])[0], "mean"):
                means.append(name)
            if self.graph_estimator == "local" and any(value is g for g in gain_sources) and \
                    hasattr(_unwrap(guide_site["fn"])[0], "marginal_probs"):
                local_graph = name
        return _Plan(tuple(means), local_graph)

    def _closed_kl(self, guide_site, model_site) -> bool:
        """Whether ``kl_divergence`` knows the pair of unwrapped distributions (remembered per
        pair of types and shapes: the plan is checked at every step)."""
        q, p = _unwrap(guide_site["fn"])[0], _unwrap(model_site["fn"])[0]
        key = (type(q), type(p), q.batch_shape, p.batch_shape, q.event_shape, p.event_shape)
        if key not in self._known_kl:
            try:
                kl_divergence(q, p)
            except NotImplementedError:
                self._known_kl[key] = False
            else:
                self._known_kl[key] = True
        return self._known_kl[key]

    # ----------------------------------------------------------------- the bound
    def terms(self, model, guide, *args, **kwargs) -> ElboTerms:
        """One-draw estimate of the bound's terms (:class:`ElboTerms`) for the programs' arguments."""
        if self._plan is None:  # first call: find the plan without touching the random state
            cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
            with torch.random.fork_rng(devices=cuda):
                self._plan = self._plan_for(*self._traces(model, guide, args, kwargs, _Plan()))
        model_trace, guide_trace = self._traces(model, guide, args, kwargs, self._plan)
        plan = self._plan_for(model_trace, guide_trace)
        if plan != self._plan:  # the programs changed shape: trace again
            self._plan = plan
            model_trace, guide_trace = self._traces(model, guide, args, kwargs, plan)
        terms = self._terms_from(model_trace, guide_trace)
        if terms is None:  # not a shape the closed forms cover
            stock = TraceEnum_ELBO(max_plate_nesting=self.max_plate_nesting)
            loss = stock.differentiable_loss(model, guide, *args, **kwargs) if torch.is_grad_enabled() \
                else torch.tensor(stock.loss(model, guide, *args, **kwargs))
            return ElboTerms(local=-loss, log_likelihood=-loss.detach())
        return terms

    def _terms_from(self, model_trace, guide_trace) -> Optional[ElboTerms]:
        local_sites, kl, observed = [], {}, []
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site["infer"].get("_deterministic") or site_is_subsample(site):
                continue
            if any(frame.name == self.data_plate for frame in site["cond_indep_stack"]):
                local_sites.append(name)
            elif site["is_observed"]:
                observed.append(site["scale"] * _site_log_prob(site).sum())
            elif name in guide_trace.nodes:
                kl[name] = self._global_kl(site, guide_trace.nodes[name])
            else:  # a latent site the guide does not cover: TraceEnum_ELBO's business
                return None
        enumerated = [n for n in local_sites if not model_trace.nodes[n]["is_observed"]
                      and guide_trace.nodes.get(n, {}).get("infer", {}).get("_enumerate_dim") is not None]
        scales = {float(model_trace.nodes[n]["scale"]) for n in local_sites}
        if len(enumerated) > 1 or len(scales) > 1:
            return None
        scale = scales.pop() if scales else 1.0
        joint, log_lik = 0.0, 0.0
        for name in local_sites:
            site = model_trace.nodes[name]
            log_prob = self._local_log_prob(site, model_trace, guide_trace)
            joint = joint + log_prob
            if site["is_observed"] and not isinstance(_unwrap(site["fn"])[0], StickBreakingCategorical):
                log_lik = log_lik + log_prob
            if not site["is_observed"] and name not in enumerated:
                joint = joint - _site_log_prob(guide_trace.nodes[name])
        zero = torch.zeros(()) if not kl else next(iter(kl.values())).new_zeros(())
        observed = sum(observed, zero)
        if not local_sites:
            return ElboTerms(zero, zero, kl, observed)
        local, weights, auxiliary = self._sum_out(enumerated, joint, model_trace, guide_trace)
        auxiliary = auxiliary + self._observed_supervision(local_sites, model_trace, guide_trace)
        if torch.is_tensor(log_lik) and weights is not None and log_lik.dim() == 2:
            log_lik = weights.detach() * log_lik
        log_likelihood = scale * torch.as_tensor(log_lik).sum()
        local = scale * local
        if self._plan.local_graph is not None:
            surrogate = scale * self._graph_gradient(model_trace, guide_trace, weights)  # value 0
            log_likelihood, local = log_likelihood + surrogate, local + surrogate
        return ElboTerms(local, log_likelihood, kl, observed, scale * auxiliary)

    def _global_kl(self, model_site: dict, guide_site: dict) -> Tensor:
        """``KL(q || p)`` of a global latent site, masked and scaled."""
        q, q_mask = _unwrap(guide_site["fn"], guide_site["mask"])
        p, p_mask = _unwrap(model_site["fn"], model_site["mask"])
        mask = q_mask if p_mask is None else (p_mask if q_mask is None else q_mask & p_mask)
        value = guide_site["value"]
        if self.closed_forms:
            kl = kl_or_monte_carlo(q, p, value)
        else:
            kl = q.log_prob(value) - p.log_prob(value)
        return model_site["scale"] * _masked_sum(kl, None if mask is None else mask.expand_as(kl))

    def _local_log_prob(self, site: dict, model_trace, guide_trace) -> Tensor:
        """Unscaled ``log p`` of a local model site; ``E_q(v)[log beta_k]`` for a stick-breaking ``z``."""
        base, mask = _unwrap(site["fn"], site["mask"])
        if self.closed_forms and isinstance(base, StickBreakingCategorical):
            q_v = self._stick_guide(base.sticks, model_trace, guide_trace)
            if q_v is not None:
                log_weights = expected_log_stick_weights(q_v.concentration1, q_v.concentration0)
                value = site["value"].long()
                log_prob = log_weights[value]
                if mask is not None:
                    log_prob = torch.where(mask, log_prob, log_prob.new_zeros(()))
                return log_prob
        return _site_log_prob(site)

    @staticmethod
    def _stick_guide(sticks: Tensor, model_trace, guide_trace) -> Optional[Beta]:
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and site["value"] is sticks and not site["is_observed"] and name in guide_trace.nodes:
                q = _unwrap(guide_trace.nodes[name]["fn"])[0]
                return q if isinstance(q, Beta) else None
        return None

    def _sum_out(self, enumerated, joint, model_trace, guide_trace):
        """``(local per data set, q(z) weights (K, B) or None, auxiliary)`` with ``z`` summed out."""
        if not enumerated:
            return joint.sum(), None, joint.new_zeros(())
        name = enumerated[0]
        model_site, guide_site = model_trace.nodes[name], guide_trace.nodes[name]
        latent = _unwrap(model_site["fn"], model_site["mask"])[1]
        base_q = _unwrap(guide_site["fn"])[0]
        values = guide_site["value"]  # (K, 1): z laid out over its support
        batch = torch.broadcast_shapes(values.shape, base_q.batch_shape)
        joint = torch.as_tensor(joint).expand(batch)
        subset = None  # rows on which the network q_phi is fitted (all, or a random subset)
        if self.assignment == "optimal":
            log_q = torch.log_softmax(joint, 0)
            per_row = torch.logsumexp(joint, 0)
            if hasattr(base_q, "rows") and batch[-1] > ENCODER_ROWS:
                subset = torch.randperm(batch[-1], device=joint.device)[:ENCODER_ROWS]
                log_q_phi = base_q.rows(subset).log_prob(values)  # (K, ENCODER_ROWS)
            else:
                log_q_phi = base_q.log_prob(values)
            exact = log_q.detach() if subset is None else log_q.detach()[:, subset]
            auxiliary = -(exact.exp() * (exact - log_q_phi)).sum(0)  # -KL(q_optimal || q_phi)
        else:
            log_q = log_q_phi = base_q.log_prob(values)  # (K, B)
            per_row = (log_q.exp() * (joint - log_q)).sum(0)
            auxiliary = torch.zeros_like(per_row)
        weights = log_q.exp()
        if latent is not None:
            latent = latent.reshape(-1).expand(per_row.shape)
            per_row = torch.where(latent, per_row, joint[0])
            observed = self._observed_values(name, model_trace)
            one_hot = torch.nn.functional.one_hot(observed, joint.shape[0]).T.to(weights)
            weights = torch.where(latent.unsqueeze(0), weights, one_hot)
            if subset is not None:
                latent, observed = latent[subset], observed[subset]
            supervision = self.supervision_weight * log_q_phi.gather(0, observed.unsqueeze(0)).squeeze(0)
            auxiliary = torch.where(latent, auxiliary, supervision)
        scale = 1.0 if subset is None else batch[-1] / subset.shape[0]
        return per_row.sum(), weights, scale * auxiliary.sum()

    @staticmethod
    def _observed_values(name: str, model_trace) -> Tensor:
        """The observed values of an ``obs_mask``-split site (Pyro names it ``<name>_observed``)."""
        observed = model_trace.nodes[name[: -len("_unobserved")] + "_observed"]
        return observed["value"].long()

    def _observed_supervision(self, local_sites, model_trace, guide_trace) -> Tensor:
        """``kappa log q(value)`` of local sites the model observes and the guide still has a factor
        for (a ``z`` conditioned on by ``poutine.condition``): section 3.9's term, per data set."""
        total = torch.zeros(())
        for name in local_sites:
            site = model_trace.nodes[name]
            if not site["is_observed"] or name not in guide_trace.nodes:
                continue
            q = _unwrap(guide_trace.nodes[name]["fn"])[0]
            log_q = q.log_prob(site["value"])
            mask = _unwrap(site["fn"], site["mask"])[1]
            total = total + self.supervision_weight * _masked_sum(log_q, None if mask is None else mask.expand_as(log_q))
        return total

    def _graph_gradient(self, model_trace, guide_trace, weights) -> Tensor:
        """A zero-valued term whose gradient in the edge probabilities is the exact local one.

        The log-likelihood is a sum over columns j holding ``A_ij`` but not ``A_ji``, so for each
        pair the expectation is ``m_ij gain_ij + m_ji gain_ji + const`` with the marginals ``m`` of
        ``q(A)`` (``p_ij (1 - p_ji / 2)`` for the two-cycle-free law)."""
        name = self._plan.local_graph
        q_graph, free = _unwrap(guide_trace.nodes[name]["fn"], guide_trace.nodes[name]["mask"])
        value = model_trace.nodes[name]["value"]
        total = value.new_zeros(())
        for site in model_trace.nodes.values():
            fn = site["fn"] if site["type"] == "sample" else None
            if site["type"] == "sample" and site["is_observed"] and getattr(fn, "graph", None) is value:
                probs = weights.T if weights is not None else self._observed_component_probs(fn, value.dtype)
                with torch.no_grad():
                    gain = fn.edge_gain(site["value"], probs)
                if gain is None:
                    continue
                marginal = q_graph.marginal_probs()
                free_mask = torch.ones_like(marginal, dtype=torch.bool) if free is None else free.expand_as(marginal)
                total = total + ((marginal - marginal.detach()) * gain * free_mask).sum()
        return total

    @staticmethod
    def _observed_component_probs(fn, dtype) -> Optional[Tensor]:
        """``(B, K)`` one-hot weights of the likelihood's own components when no site is summed out
        (``z`` observed through ``poutine.condition``); ``None`` when ``fn`` has no components."""
        component, embeddings = getattr(fn, "component", None), getattr(fn, "embeddings", None)
        if component is None or embeddings is None:
            return None
        return torch.nn.functional.one_hot(component.long().reshape(-1), embeddings.shape[-2]).to(dtype)

    # ----------------------------------------------------------------- ELBO interface
    def differentiable_loss(self, model, guide, *args, **kwargs) -> Tensor:
        """``-(bound + auxiliary)`` averaged over ``num_particles`` draws."""
        total = 0.0
        for _ in range(self.num_particles):
            total = total - self.terms(model, guide, *args, **kwargs).objective
        return total / self.num_particles

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


def elbo_terms(model, x: Tensor, regimes: Optional[Tensor] = None, targets: Optional[Tensor] = None, *,
               rows: Optional[Tensor] = None, **options) -> ElboTerms:
    """:meth:`LatentInterventionELBO.terms` of ``model.model`` / ``model.guide`` on ``x``
    (``rows``: the subsample of the ``data`` plate; ``options``: the ELBO's arguments)."""
    return LatentInterventionELBO(**options).terms(model.model, model.guide, x, regimes, targets, rows=rows)


def mean_elbo(model, x: Tensor, regimes: Optional[Tensor] = None, targets: Optional[Tensor] = None, *,
              num_draws: int = 16, seed: int = 0, batch_size: Optional[int] = None) -> tuple[float, float]:
    """``(bound, local part)`` per row of ``x``, averaged over ``num_draws`` draws of ``(A, U)``.

    ``z`` is summed out exactly (``assignment="optimal"``); the global torch generator is left as it
    was.  The local part is ``E_q[log p(x_i, z_i) - log q(z_i)]`` (no global terms).  With
    ``batch_size`` the rows are scored in chunks of that many (each chunk with its own draw: the
    expectation is a sum over rows, so the estimate stays unbiased).
    """
    devices = [x.device] if x.device.type == "cuda" else []
    n = x.shape[0]
    size = n if batch_size is None else max(1, min(batch_size, n))
    elbo = LatentInterventionELBO(assignment="optimal")
    bound, local = 0.0, 0.0
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for _ in range(num_draws):
            for start in range(0, n, size):
                chunk = slice(start, start + size)
                terms = elbo.terms(model.model, model.guide, x[chunk], None if regimes is None else regimes[chunk], targets)
                part = float(terms.local)
                local += part
                bound += part + (float(terms.elbo) - part if start == 0 else 0.0)  # global terms once
    draws = n * num_draws
    return bound / draws, local / draws


__all__ = ["ElboTerms", "LatentInterventionELBO", "elbo_terms", "mean_elbo", "kl_or_monte_carlo", "stick_breaking_log_weights"]

"""The evidence lower bound of section 3.6 with every expectation the math allows taken exactly.

For a batch ``B`` of the ``N`` rows (``s = N / |B|``):

    ELBO = s sum_{i in B} sum_k q(z_i = k | x_i) [ E_q(r)[log p(x_i | z_i = k)] + E_q(v)[log beta_k]
                                                   - log q(z_i = k | x_i) ]
           - KL(q(A) || p(A)) - KL(q(v) || p(v)) - KL(q(U) || p(U)) - KL(q(R) || p(R))

* ``z`` is summed out exactly (what ``TraceEnum_ELBO`` does for an enumerated guide site);
* ``E_q(r)`` is exact: the log-likelihood is affine in the binary targets (eq. 8), so it is
  evaluated at ``pi`` (:mod:`pyro_causal.likelihood`);
* ``E_q(v)[log beta_k]`` uses digammas (appendix A);
* every KL is closed form when ``torch.distributions.kl_divergence`` knows the pair (Beta/Beta,
  Normal/Normal, Bernoulli/Bernoulli, i.e. all the defaults), once per data set, never per row;
* only ``A`` and ``U`` (reparameterised) are sampled.  The edge probabilities are differentiated
  through the straight-through sample of section 3.8 or, with ``graph_estimator="local"``, by the
  local expectation gradient (Titsias and Lazaro-Gredilla, 2015): the expected log-likelihood is
  affine in each ``A_ij``, so its derivative in ``p_ij`` is the exact gain of the edge given the
  other sampled edges (:func:`~pyro_causal.likelihood.edge_gain`).

Rows with a known regime (``regimes[i] >= 0``) use ``z_i`` as observed and add the semi-supervised
term ``kappa log q(z_i | x_i)`` of section 3.9.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
from pyro.infer import ELBO
from torch import Tensor
from torch.distributions import Distribution, RelaxedBernoulli, kl_divergence

from .distributions import expected_log_stick_weights, stick_breaking_log_weights

GRAPH_ESTIMATORS = ("local", "straight-through")

#: Rows per step on which the assignment network is distilled when ``assignment="exact"``.
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

    ``auxiliary`` only trains the assignment network ``q(z | x)``: ``kappa log q(z_i | x_i)`` on
    rows with a known regime (section 3.9) and, with exact assignments, ``-KL(q_exact || q_phi)``.
    """

    log_likelihood: Tensor
    assignments: Tensor
    auxiliary: Tensor
    kl_graph: Tensor
    kl_sticks: Tensor
    kl_embeddings: Tensor
    kl_targets: Tensor

    @property
    def elbo(self) -> Tensor:
        """The bound on ``log p(D | ...)`` itself (without the auxiliary term)."""
        return self.log_likelihood + self.assignments - self.kl_graph - self.kl_sticks - self.kl_embeddings - self.kl_targets

    @property
    def objective(self) -> Tensor:
        """What training maximises: the bound plus the auxiliary term."""
        return self.elbo + self.auxiliary

    def as_floats(self) -> dict:
        values = {f.name: float(getattr(self, f.name).detach()) for f in fields(self)}
        values["elbo"] = float(self.elbo.detach())
        return values


def elbo_terms(
    model,
    x: Tensor,
    regimes: Optional[Tensor] = None,
    targets: Optional[Tensor] = None,
    num_rows: Optional[int] = None,
    supervision_weight: float = 0.5,
    assignment: str = "amortized",
    target_estimator: str = "exact",
    graph_estimator: str = "straight-through",
) -> ElboTerms:
    """One-sample (in ``A`` and ``U``) estimate of the bound's terms for a batch ``x``.

    Args:
        model: a :class:`~pyro_causal.model.LatentInterventionModel`.
        x: ``(B, d)`` batch.
        regimes: ``(B,)`` ints, ``-1`` where unknown, or ``None`` (all latent).
        targets: ``(K, d)`` known targets, or ``None`` (latent).
        num_rows: ``N``, rows in the whole data set (default ``B``).
        supervision_weight: ``kappa`` of section 3.9.
        assignment: ``"amortized"`` (the network ``q(z | x)``) or ``"exact"`` (optimal ``q(z)``).
        target_estimator: ``"exact"`` evaluates the likelihood at ``pi`` (the exact expectation);
            ``"straight-through"`` and ``"relaxed"`` (Gumbel-softmax at temperature 0.5, as in the
            paper) sample the targets instead; they exist to measure the difference.
        graph_estimator: ``"straight-through"`` (the paper's, the default) differentiates the edge
            probabilities through the straight-through sample of the graph; ``"local"`` uses the
            exact gain of each edge given the other sampled edges (local expectation gradient,
            unbiased; for densities that provide ``log_prob_gain``, else straight-through).
    """
    if graph_estimator not in GRAPH_ESTIMATORS:
        raise ValueError(f"unknown graph_estimator {graph_estimator!r}; choose one of {', '.join(GRAPH_ESTIMATORS)}")
    guide = model.guide
    scale = (num_rows or x.shape[0]) / x.shape[0]
    K = model.truncation

    q_graph = guide.graph_dist()
    local_graph = graph_estimator == "local" and model.density.provides_edge_gain
    adjacency = q_graph.sample() if local_graph else q_graph.rsample()
    kl_graph = torch.where(guide.free_edges(), kl_or_monte_carlo(q_graph, model.graph_prior(), adjacency), 0.0).sum()

    q_u = guide.embedding_dist()
    u = q_u.rsample()
    kl_embeddings = kl_or_monte_carlo(q_u.to_event(1), model.embedding_prior(), u).sum()

    zero = x.new_zeros(())
    kl_sticks, kl_targets, e_log_weights = zero, zero, x.new_zeros(1)
    if K > 1:
        q_v = guide.stick_dist()
        v = q_v.rsample()
        kl_sticks = kl_or_monte_carlo(q_v, model.stick_prior(), v).sum()
        e_log_weights = expected_log_stick_weights(q_v.concentration1, q_v.concentration0)
        if targets is None:
            q_r = guide.target_dist()
            kl_targets = kl_or_monte_carlo(q_r.to_event(1), model.target_prior(), q_r.probs.round()).sum()
            targets = model.full_targets(_target_values(q_r, target_estimator))

    if targets is None:  # K = 1: the observational model alone
        targets = x.new_zeros(1, model.num_variables)
    # Everything per row is laid out (K, B): on CPU a softmax over a short contiguous last axis
    # is far slower than over the leading one.
    joint = model.log_likelihood(x, adjacency, u, targets) + e_log_weights.unsqueeze(-1)  # (K, B)
    batch = x.shape[0]
    # With exact assignments the network q(z | x) only learns to predict new rows (it does not
    # touch the bound), so it is trained on a random subset of the batch.
    encoder_rows = None
    if assignment == "exact" and batch > ENCODER_ROWS:
        encoder_rows = torch.randperm(batch, device=x.device)[:ENCODER_ROWS]
    encoder_x = x if encoder_rows is None else x[encoder_rows]
    encoder_scale = 1.0 if encoder_rows is None else batch / ENCODER_ROWS
    encoder_log_q = torch.log_softmax(guide.assignment_logits(encoder_x, u).T.contiguous(), 0)  # (K, B')
    distillation = zero
    if assignment == "exact":
        # q(z_i) = p(z_i | x_i, A, U, pi): the bound's maximiser over q(z), and
        # sum_k q (joint - log q) = logsumexp(joint).  The amortised network is fitted to it
        # (KL(q_exact || q_phi), which does not touch the bound) to predict new rows.
        log_q = torch.log_softmax(joint, 0)
        latent = torch.logsumexp(joint, 0)
        exact = log_q.detach() if encoder_rows is None else log_q.detach()[:, encoder_rows]
        distillation = -(exact.exp() * (encoder_log_q - exact)).sum(0)
    else:
        log_q = encoder_log_q
        latent = (log_q.exp() * (joint - log_q)).sum(0)
    if regimes is None:
        assignments_and_lik = latent.sum()
        auxiliary = zero
    else:
        known = regimes >= 0
        index = regimes.clamp_min(0).unsqueeze(0)
        observed = joint.gather(0, index).squeeze(0)
        assignments_and_lik = torch.where(known, observed, latent).sum()
        encoder_known = known if encoder_rows is None else known[encoder_rows]
        encoder_index = index if encoder_rows is None else index[:, encoder_rows]
        auxiliary = supervision_weight * (encoder_log_q.gather(0, encoder_index).squeeze(0) * encoder_known).sum()
        distillation = distillation * ~encoder_known  # labelled rows do not use q(z)
    auxiliary = encoder_scale * (auxiliary - distillation.sum())
    # Split the local term into its expected log-likelihood and its assignment part for reporting.
    with torch.no_grad():
        weights = log_q.exp()  # (K, B)
        if regimes is not None:
            labelled = torch.nn.functional.one_hot(regimes.clamp_min(0), K).T.to(weights)
            weights = torch.where((regimes >= 0).unsqueeze(0), labelled, weights)
    log_lik = (weights * (joint - e_log_weights.unsqueeze(-1))).sum()
    graph_gradient = zero
    if local_graph:
        # d E_q(A)[E log p] / d p_ij = E_{A_-ij}[gain_ij]: a zero-valued term with that gradient.
        # With assignment="exact", q(z) is held at its value for the sampled graph (an EM gradient).
        with torch.no_grad():
            gain = model.edge_gain(x, adjacency, u, targets, weights.T)
        # The log-likelihood is a sum over columns j, and column j holds A_ij but not A_ji, so for
        # each pair the expectation is m_ij gain_ij + m_ji gain_ji + const with the marginals m of
        # q(A) (for the two-cycle-free law m_ij = p_ij (1 - p_ji / 2), coupling the directions).
        marginal = q_graph.marginal_probs()
        graph_gradient = ((marginal - marginal.detach()) * gain * guide.free_edges()).sum()
    return ElboTerms(
        log_likelihood=scale * (log_lik + graph_gradient),
        assignments=scale * (assignments_and_lik - log_lik),
        auxiliary=scale * auxiliary,
        kl_graph=kl_graph,
        kl_sticks=kl_sticks,
        kl_embeddings=kl_embeddings,
        kl_targets=kl_targets,
    )


def mean_elbo(model, x: Tensor, regimes: Optional[Tensor] = None, targets: Optional[Tensor] = None, *,
              num_draws: int = 16, seed: int = 0, batch_size: Optional[int] = None) -> tuple[float, float]:
    """``(bound, local part)`` per row of ``x``, averaged over ``num_draws`` draws of ``(A, U)``.

    ``z`` is summed out exactly (``assignment="exact"``); the global torch generator is left as it
    was.  The local part is ``E_q[log p(x_i | ...)]`` with ``z`` summed out (no global KL terms).
    With ``batch_size`` the rows are scored in chunks of that many (each chunk with its own draw:
    the expectation is a sum over rows, so the estimate stays unbiased).
    """
    devices = [x.device] if x.device.type == "cuda" else []
    n = x.shape[0]
    size = n if batch_size is None else max(1, min(batch_size, n))
    bound, local = 0.0, 0.0
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for _ in range(num_draws):
            for start in range(0, n, size):
                rows = slice(start, start + size)
                terms = elbo_terms(model, x[rows], None if regimes is None else regimes[rows], targets,
                                   assignment="exact")
                part = float(terms.log_likelihood + terms.assignments)
                local += part
                bound += part + (float(terms.elbo) - part if start == 0 else 0.0)  # global KLs once
    rows = n * num_draws
    return bound / rows, local / rows


def _target_values(q_r, estimator: str) -> Tensor:
    if estimator == "exact":
        return q_r.probs
    if estimator == "straight-through":
        return q_r.rsample()
    if estimator == "relaxed":
        return RelaxedBernoulli(torch.tensor(0.5, device=q_r.logits.device), logits=q_r.logits).rsample()
    raise ValueError(f"unknown target_estimator {estimator!r}; choose exact, straight-through or relaxed")


class LatentInterventionELBO(ELBO):
    """Closed-form ELBO for :class:`~pyro_causal.model.LatentInterventionModel`, usable with ``SVI``.

    Same estimand as ``TraceEnum_ELBO(max_plate_nesting=1)`` on ``model.model``/``model.guide``
    (the tests check it), with the expectations over ``z``, ``r`` and ``v`` taken exactly.

    Example:
        >>> svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), LatentInterventionELBO())
        >>> svi.step(x)
    """

    def __init__(
        self,
        num_particles: int = 1,
        supervision_weight: float = 0.5,
        assignment: str = "exact",
        graph_estimator: str = "straight-through",
    ) -> None:
        super().__init__(num_particles=num_particles)
        if graph_estimator not in GRAPH_ESTIMATORS:
            raise ValueError(f"unknown graph_estimator {graph_estimator!r}; choose one of {', '.join(GRAPH_ESTIMATORS)}")
        self.supervision_weight = float(supervision_weight)
        self.assignment = assignment
        self.graph_estimator = graph_estimator

    @staticmethod
    def _owner(model_fn):
        owner = getattr(model_fn, "__self__", None)
        if owner is None or not hasattr(owner, "log_likelihood"):
            raise TypeError("LatentInterventionELBO needs the bound method `m.model` of a LatentInterventionModel")
        return owner

    def differentiable_loss(self, model, guide, x, regimes=None, targets=None, batch_size=None) -> Tensor:
        owner = self._owner(model)
        import pyro  # registers parameters for SVI's param capture

        pyro.module("pyro_causal_density", owner.density)
        pyro.module("pyro_causal_guide", owner.guide)
        n = x.shape[0]
        total = x.new_zeros(())
        for _ in range(self.num_particles):
            rows = None if not batch_size or batch_size >= n else torch.randperm(n, device=x.device)[:batch_size]
            xb = x if rows is None else x[rows]
            rb = regimes if (regimes is None or rows is None) else regimes[rows]
            terms = elbo_terms(
                owner, xb, rb, targets, n, self.supervision_weight, self.assignment, graph_estimator=self.graph_estimator
            )
            total = total - terms.objective
        return total / self.num_particles

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("LatentInterventionELBO computes the bound in closed form, without traces")

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


__all__ = ["ElboTerms", "LatentInterventionELBO", "elbo_terms", "mean_elbo", "kl_or_monte_carlo", "stick_breaking_log_weights"]

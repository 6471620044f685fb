"""Value checks of the bound: every term of ``elbo_terms`` against its closed form on a tiny model.

The graph and the embeddings are made deterministic (the graph sample patched, the embeddings'
scale ~0), so each term is a number that can be written down by hand.
"""
from unittest import mock

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_causal.distributions import stick_breaking_log_weights
from pyro_causal.elbo import ENCODER_ROWS, ElboTerms, LatentInterventionELBO, elbo_terms, mean_elbo
from pyro_causal.model import LatentInterventionModel

GRAPH = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)


def tiny_model(truncation=3, alpha=1.7, target_logit=-1.3, edge_logit=-0.8, **kwargs):
    torch.manual_seed(5)
    model = LatentInterventionModel(3, truncation=truncation, embedding_dim=2, alpha=alpha,
                                    target_logit=target_logit, edge_logit=edge_logit,
                                    encoder_hidden=4, **kwargs).double()
    with torch.no_grad():
        g = model.guide
        g.edge_logits.copy_(torch.tensor([[0.0, 0.4, -0.7], [-1.1, 0.0, 0.9], [0.3, -0.2, 0.0]]))
        g.embedding_log_scale.fill_(-40.0)  # u = embedding_loc
        if truncation > 1:
            g.stick_mean_logit.copy_(torch.linspace(-0.5, 0.6, truncation - 1))
            g.stick_log_concentration.copy_(torch.linspace(0.3, 1.9, truncation - 1))
            g.target_logits.copy_(torch.linspace(-2.0, 1.5, (truncation - 1) * 3).reshape(truncation - 1, 3))
        for p in model.density.parameters():
            p.normal_(0.0, 0.4)
        for p in g.encoder.parameters():
            p.normal_(0.0, 0.7)
    return model


def data(n=6):
    torch.manual_seed(11)
    return torch.randn(n, 3, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)


def patched_graph(model, graph=GRAPH):
    """Every draw of ``q(A)`` (straight-through or not) is ``graph``."""
    law = type(model.guide.graph_dist())
    return mock.patch.multiple(law, rsample=lambda self, *a: graph, sample=lambda self, *a: graph)


def terms_at(model, x, graph=GRAPH, **kwargs):
    with patched_graph(model, graph):
        return elbo_terms(model, x, **kwargs)


def guide_draws(model, x, graph=GRAPH, **kwargs):
    """The guide trace the ELBO draws (``z`` enumerated), for reading the sampled values."""
    with patched_graph(model, graph):
        return poutine.trace(poutine.enum(model.guide, first_available_dim=-2)).get_trace(x, **kwargs)


def graph_log_ratio(model, graph):
    """``log q(A) - log p(A)`` at a two-cycle-free 0/1 ``graph`` (every off-diagonal edge free)."""
    p = torch.sigmoid(model.guide.edge_logits).detach()
    prior = torch.sigmoid(model.edge_logits)
    total = 0.0
    for i, j in ((0, 1), (0, 2), (1, 2)):
        a, b, pa, pb = p[i, j], p[j, i], prior[i, j], prior[j, i]
        forward, backward = bool(graph[i, j]), bool(graph[j, i])
        q = (a * (1 - b / 2)) if forward else (b * (1 - a / 2)) if backward else (1 - a) * (1 - b)
        r = (pa if forward else 1 - pa) * (pb if backward else 1 - pb)
        total = total + (q / r).log()
    return total


def bernoulli_kl(q, p):
    return q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()


def beta_kl(a, b, c, d):
    """KL(Beta(a, b) || Beta(c, d)) by its textbook closed form."""
    lg, dg = torch.lgamma, torch.digamma
    return (lg(a + b) - lg(a) - lg(b) - lg(c + d) + lg(c) + lg(d)
            + (a - c) * dg(a) + (b - d) * dg(b) + (c + d - a - b) * dg(a + b))


def expected_log_weights(a, b):
    """E log beta_k for K = len(a) + 1 by the appendix-A formula, written out as a loop."""
    out, rest = [], a.new_zeros(())
    for k in range(len(a)):
        total = torch.digamma(a[k] + b[k])
        out.append(rest + torch.digamma(a[k]) - total)
        rest = rest + torch.digamma(b[k]) - total
    out.append(rest)
    return torch.stack(out)


def hand_kls(model):
    g = model.guide
    p = torch.sigmoid(g.edge_logits).detach()
    prior = torch.sigmoid(model.edge_logits)
    kl_graph = 0.0
    for i, j in ((0, 1), (0, 2), (1, 2)):  # the two-cycle-free law of each pair, enumerated
        a, b = p[i, j], p[j, i]
        pa, pb = prior[i, j], prior[j, i]
        states = [((1 - a) * (1 - b), (1 - pa) * (1 - pb)), (a * (1 - b / 2), pa * (1 - pb)),
                  (b * (1 - a / 2), (1 - pa) * pb)]
        kl_graph = kl_graph + sum(q * (q / r).log() for q, r in states)
    loc, scale = g.embedding_loc.detach(), g.embedding_log_scale.exp().detach()
    kl_embeddings = (0.5 * (scale ** 2 + loc ** 2 - 1) - scale.log()).sum()
    rho, w = torch.sigmoid(g.stick_mean_logit).detach(), g.stick_log_concentration.exp().detach()
    a, b = rho * w, (1 - rho) * w
    one = torch.ones_like(a)
    kl_sticks = beta_kl(a, b, one, model.alpha * one).sum()
    pi = torch.sigmoid(g.target_logits).detach()
    kl_targets = bernoulli_kl(pi, torch.sigmoid(torch.tensor(model.target_logit, dtype=pi.dtype))).sum()
    return kl_graph, kl_sticks, kl_embeddings, kl_targets, expected_log_weights(a, b)


def joint_by_hand(model, x):
    """(K, B) ``log p(x_i | z_i = k) + E log beta_k`` at the patched graph and u = loc."""
    *_, e_log_w = hand_kls(model)
    u = model.guide.embedding_loc.detach()
    targets = model.full_targets(torch.sigmoid(model.guide.target_logits).detach())
    return model.log_likelihood(x, GRAPH, u, targets).detach() + e_log_w.unsqueeze(-1), e_log_w


def test_elbo_is_the_exact_signed_sum_of_its_named_terms():
    kl = {"graph": torch.tensor(2.0), "v": torch.tensor(0.25), "u": torch.tensor(11.0), "r": torch.tensor(0.5)}
    t = ElboTerms(torch.tensor(-93.0), torch.tensor(-100.0), kl, torch.tensor(0.75), torch.tensor(3.5))
    assert float(t.assignments.detach()) == 7.0
    assert float(t.elbo.detach()) == -93.0 + 0.75 - 2.0 - 0.25 - 11.0 - 0.5
    assert float(t.objective.detach()) == float(t.elbo.detach()) + 3.5
    assert t.as_floats() == {"local": -93.0, "log_likelihood": -100.0, "assignments": 7.0, "observed": 0.75,
                             "auxiliary": 3.5, "kl_graph": 2.0, "kl_v": 0.25, "kl_u": 11.0, "kl_r": 0.5,
                             "elbo": -106.0}
    bare = ElboTerms(torch.tensor(-93.0), torch.tensor(-100.0), kl)  # no observed sites, no auxiliary term
    assert float(bare.observed) == 0.0 and float(bare.auxiliary) == 0.0
    assert float(bare.elbo.detach()) == float(bare.objective.detach()) == -93.0 - 2.0 - 0.25 - 11.0 - 0.5


def test_each_kl_term_equals_its_closed_form():
    model, x = tiny_model(), data()
    t = terms_at(model, x)
    kl_graph, kl_sticks, kl_embeddings, kl_targets, _ = hand_kls(model)
    assert set(t.kl) == {"graph", "v", "u", "r"}
    torch.testing.assert_close(t.kl["graph"].detach(), kl_graph)
    torch.testing.assert_close(t.kl["v"].detach(), kl_sticks)
    torch.testing.assert_close(t.kl["u"].detach(), kl_embeddings)
    torch.testing.assert_close(t.kl["r"].detach(), kl_targets)
    assert float(kl_sticks) > 0.05 and float(kl_targets) > 0.05 and float(kl_graph) > 0.05


def test_kl_graph_leaves_out_fixed_edges():
    logits = torch.full((3, 3), -0.8)
    logits[0, 2], logits[2, 0] = float("-inf"), float("-inf")  # pair (0, 2) forbidden both ways
    model = tiny_model(edge_logit=logits)
    t = terms_at(model, data(), graph=GRAPH * torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1.0]]))
    p = torch.sigmoid(model.guide.edge_logits).detach()
    prior = torch.sigmoid(torch.tensor(-0.8, dtype=torch.float64))
    expected = 0.0
    for i, j in ((0, 1), (1, 2)):
        a, b = p[i, j], p[j, i]
        states = [((1 - a) * (1 - b), (1 - prior) ** 2), (a * (1 - b / 2), prior * (1 - prior)),
                  (b * (1 - a / 2), prior * (1 - prior))]
        expected = expected + sum(q * (q / r).log() for q, r in states)
    torch.testing.assert_close(t.kl["graph"].detach(), expected)


@pytest.mark.parametrize("n, rows", [(6, None), (15, [3, 14, 0, 7, 9, 11])])
def test_optimal_assignment_local_terms_are_the_log_sum_exp_of_the_joint(n, rows):
    model, x = tiny_model(), data(n)
    rows = None if rows is None else torch.tensor(rows)
    t = terms_at(model, x, rows=rows, assignment="optimal")
    batch = x if rows is None else x[rows]
    joint, e_log_w = joint_by_hand(model, batch)
    scale = n / batch.shape[0]  # the rows stand for all n of them
    weights = torch.softmax(joint, 0)
    log_lik = (weights * (joint - e_log_w.unsqueeze(-1))).sum()
    torch.testing.assert_close(t.log_likelihood.detach(), scale * log_lik)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), scale * torch.logsumexp(joint, 0).sum())
    torch.testing.assert_close(t.local.detach(), scale * torch.logsumexp(joint, 0).sum())
    kls = hand_kls(model)[:4]
    torch.testing.assert_close(t.elbo.detach(), scale * torch.logsumexp(joint, 0).sum() - sum(kls))


def test_amortized_assignment_terms_use_the_network_q():
    model, x = tiny_model(), data()
    t = terms_at(model, x, assignment="amortized")
    joint, e_log_w = joint_by_hand(model, x)
    log_q = torch.log_softmax(model.guide.assignment_logits(x, model.guide.embedding_loc).detach(), -1).T
    q = log_q.exp()
    torch.testing.assert_close(t.log_likelihood.detach(), (q * (joint - e_log_w.unsqueeze(-1))).sum())
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), (q * (joint - log_q)).sum())
    assert float(t.auxiliary.detach()) == 0.0


@pytest.mark.parametrize("assignment", ["amortized", "optimal"])
def test_known_regimes_use_the_observed_component_and_the_supervision_term(assignment):
    model, x = tiny_model(), data()
    regimes = torch.tensor([0, -1, 2, 1, -1, 2])
    t = terms_at(model, x, regimes=regimes, supervision_weight=0.7, assignment=assignment)
    joint, e_log_w = joint_by_hand(model, x)
    log_q_net = torch.log_softmax(model.guide.assignment_logits(x, model.guide.embedding_loc).detach(), -1).T
    log_q = torch.log_softmax(joint, 0) if assignment == "optimal" else log_q_net
    local, log_lik, supervision, distillation = 0.0, 0.0, 0.0, 0.0
    for i, k in enumerate(regimes.tolist()):
        if k >= 0:
            local = local + joint[k, i]
            log_lik = log_lik + joint[k, i] - e_log_w[k]
            supervision = supervision + log_q_net[k, i]
        else:
            q = log_q[:, i].exp()
            local = local + (q * (joint[:, i] - log_q[:, i])).sum()
            log_lik = log_lik + (q * (joint[:, i] - e_log_w)).sum()
            if assignment == "optimal":
                distillation = distillation + (q * (log_q[:, i] - log_q_net[:, i])).sum()
    torch.testing.assert_close(t.log_likelihood.detach(), log_lik)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), local)
    torch.testing.assert_close(t.auxiliary.detach(), 0.7 * supervision - distillation)


def test_optimal_assignment_trains_the_network_by_the_distillation_kl():
    model, x = tiny_model(), data()
    t = terms_at(model, x, assignment="optimal")
    joint, _ = joint_by_hand(model, x)
    exact = torch.log_softmax(joint, 0)
    net = torch.log_softmax(model.guide.assignment_logits(x, model.guide.embedding_loc).detach(), -1).T
    torch.testing.assert_close(t.auxiliary.detach(), -(exact.exp() * (exact - net)).sum())
    assert float(t.auxiliary.detach()) < -0.01


def test_optimal_assignment_distils_on_a_subset_of_large_batches_scaled_to_the_batch():
    model = tiny_model(truncation=2)
    torch.manual_seed(0)
    x = torch.randn(ENCODER_ROWS + 200, 3, dtype=torch.float64)
    torch.manual_seed(4)
    perm = torch.randperm(x.shape[0])
    with mock.patch("torch.randperm", lambda n, device=None: perm[:n] if n == perm.numel() else None):
        t = terms_at(model, x, assignment="optimal")
    rows = perm[:ENCODER_ROWS]
    joint, _ = joint_by_hand(model, x)
    exact = torch.log_softmax(joint, 0)[:, rows]
    net = torch.log_softmax(model.guide.assignment_logits(x[rows], model.guide.embedding_loc).detach(), -1).T
    expected = -(x.shape[0] / ENCODER_ROWS) * (exact.exp() * (exact - net)).sum()
    torch.testing.assert_close(t.auxiliary.detach(), expected)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), torch.logsumexp(joint, 0).sum())


def test_one_component_has_no_sticks_or_targets():
    model, x = tiny_model(truncation=1), data()
    t = terms_at(model, x, assignment="optimal")
    assert set(t.kl) == {"graph", "u"}  # no stick or target sites, so no KL terms for them
    assert float(t.observed) == 0.0
    kl_graph, _, kl_embeddings, _, _ = hand_kls(model)
    torch.testing.assert_close(t.kl["graph"].detach(), kl_graph)
    torch.testing.assert_close(t.kl["u"].detach(), kl_embeddings)
    ll = model.log_likelihood(x, GRAPH, model.guide.embedding_loc.detach(), torch.zeros(1, 3, dtype=x.dtype))
    torch.testing.assert_close(t.log_likelihood.detach(), ll.detach().sum())
    torch.testing.assert_close(t.assignments.detach(), torch.zeros((), dtype=x.dtype))
    torch.testing.assert_close(t.elbo.detach(), ll.detach().sum() - kl_graph - kl_embeddings)


def test_known_targets_skip_the_target_kl_and_are_used_in_the_likelihood():
    model, x = tiny_model(), data()
    targets = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 1.0]], dtype=x.dtype)
    t = terms_at(model, x, targets=targets, assignment="optimal")
    assert set(t.kl) == {"graph", "v", "u"}  # r is observed: no KL term for it...
    prior = torch.distributions.Bernoulli(logits=torch.tensor(model.target_logit, dtype=x.dtype))
    torch.testing.assert_close(t.observed.detach(), prior.log_prob(targets[1:]).sum())  # ...but its log p
    *_, e_log_w = hand_kls(model)
    joint = model.log_likelihood(x, GRAPH, model.guide.embedding_loc.detach(), targets).detach() + e_log_w.unsqueeze(-1)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), torch.logsumexp(joint, 0).sum())
    kl_graph, kl_sticks, kl_embeddings, _, _ = hand_kls(model)
    torch.testing.assert_close(t.elbo.detach(), torch.logsumexp(joint, 0).sum() + prior.log_prob(targets[1:]).sum()
                               - kl_graph - kl_sticks - kl_embeddings)


@pytest.mark.parametrize("assignment", ["optimal", "amortized"])
def test_closed_forms_off_samples_every_term_and_matches_the_closed_forms_when_the_targets_are_certain(assignment):
    """``closed_forms=False`` samples ``r`` (straight-through) and ``v`` and takes every KL at the
    draws; with certain targets its target terms are those of the exact expectation ``E_q(r)``."""
    model, x = tiny_model(), data()
    with torch.no_grad():
        model.guide.target_logits.copy_(torch.tensor([[30.0, -30.0, -30.0], [-30.0, 30.0, 30.0]]))
        model.guide.embedding_log_scale.fill_(-1.5)  # u really sampled: its trace KL is finite
    exact = terms_at(model, x, assignment=assignment)
    torch.manual_seed(9)
    sampled = terms_at(model, x, assignment=assignment, closed_forms=False)
    torch.manual_seed(9)
    trace = guide_draws(model, x)  # the same draws
    v, u, r = (trace.nodes[name]["value"].detach() for name in ("v", "u", "r"))
    g = model.guide
    pi = torch.sigmoid(g.target_logits).detach()
    assert torch.equal(r, pi.round())  # the draw of a certain target is the target
    kl_graph, kl_sticks, kl_embeddings, kl_targets, _ = hand_kls(model)
    # the targets: the trace KL at the draw is the closed form, and both are the hand value
    torch.testing.assert_close(exact.kl["r"].detach(), kl_targets)
    torch.testing.assert_close(sampled.kl["r"].detach(), exact.kl["r"].detach())
    # every other KL is log q - log p at the draws, not its closed form
    rho, w = torch.sigmoid(g.stick_mean_logit).detach(), g.stick_log_concentration.exp().detach()
    q_v, p_v = dist.Beta(rho * w, (1 - rho) * w), dist.Beta(torch.ones_like(rho), model.alpha * torch.ones_like(rho))
    trace_kl_sticks = (q_v.log_prob(v) - p_v.log_prob(v)).sum()
    q_u = dist.Normal(g.embedding_loc.detach(), g.embedding_log_scale.exp().detach())
    trace_kl_embeddings = (q_u.log_prob(u) - dist.Normal(0.0, 1.0).log_prob(u)).sum()
    trace_kl_graph = graph_log_ratio(model, GRAPH)
    torch.testing.assert_close(sampled.kl["v"].detach(), trace_kl_sticks)
    torch.testing.assert_close(sampled.kl["u"].detach(), trace_kl_embeddings)
    torch.testing.assert_close(sampled.kl["graph"].detach(), trace_kl_graph)
    torch.testing.assert_close(exact.kl["v"].detach(), kl_sticks)
    torch.testing.assert_close(exact.kl["u"].detach(), kl_embeddings)
    torch.testing.assert_close(exact.kl["graph"].detach(), kl_graph)
    for trace_kl, closed in ((trace_kl_sticks, kl_sticks), (trace_kl_embeddings, kl_embeddings),
                             (trace_kl_graph, kl_graph)):
        assert abs(float(trace_kl - closed)) > 1e-3
    # the local term: log beta(v) at the drawn sticks, the likelihood at the (certain) targets pi
    log_w = stick_breaking_log_weights(v)
    joint = model.log_likelihood(x, GRAPH, u, model.full_targets(pi)).detach() + log_w.unsqueeze(-1)
    log_q_net = torch.log_softmax(g.assignment_logits(x, u).detach(), -1).T
    log_q = torch.log_softmax(joint, 0) if assignment == "optimal" else log_q_net
    local = (log_q.exp() * (joint - log_q)).sum()
    torch.testing.assert_close(sampled.local.detach(), local)
    torch.testing.assert_close(sampled.log_likelihood.detach(), (log_q.exp() * (joint - log_w.unsqueeze(-1))).sum())
    torch.testing.assert_close(sampled.elbo.detach(),
                               local - trace_kl_graph - trace_kl_sticks - trace_kl_embeddings - kl_targets)
    # the estimator option is gone (closed_forms replaces it); assignments have their new names
    with pytest.raises(TypeError, match="target_estimator"):
        terms_at(model, x, target_estimator="straight-through")
    with pytest.raises(ValueError, match="unknown assignment 'exact'; choose one of optimal, amortized"):
        terms_at(model, x, assignment="exact")


def test_local_graph_estimator_has_the_value_of_the_bound_and_the_gain_as_gradient():
    model, x = tiny_model(), data()
    straight = terms_at(model, x, assignment="optimal")
    local = terms_at(model, x, assignment="optimal", graph_estimator="local")
    torch.testing.assert_close(local.elbo.detach(), straight.elbo.detach())
    (grad,) = torch.autograd.grad(local.log_likelihood, model.guide.edge_logits, retain_graph=True)
    (grad_local,) = torch.autograd.grad(local.local, model.guide.edge_logits)  # the term the objective has
    torch.testing.assert_close(grad_local, grad)
    # Expected: d/dLambda sum_ij m_ij(Lambda) gain_ij with the marginals of the two-cycle-free law.
    joint, _ = joint_by_hand(model, x)
    u = model.guide.embedding_loc.detach()
    targets = model.full_targets(torch.sigmoid(model.guide.target_logits).detach())
    gain = model.edge_gain(x, GRAPH, u, targets, torch.softmax(joint, 0).T)
    logits = model.guide.edge_logits.detach().clone().requires_grad_(True)
    p = torch.sigmoid(logits) * (1 - torch.eye(3, dtype=x.dtype))
    marginal = p * (1 - p.T / 2)
    (expected,) = torch.autograd.grad((marginal * gain).sum(), logits)
    torch.testing.assert_close(grad, expected)
    assert float(grad.abs().max()) > 1e-3


def test_mean_elbo_is_the_per_row_bound_with_the_global_kls_counted_once():
    model, x = tiny_model(), data(5)
    joint, _ = joint_by_hand(model, x)
    local = torch.logsumexp(joint, 0).sum()
    bound = local - sum(hand_kls(model)[:4])
    law = type(model.guide.graph_dist())
    with mock.patch.object(law, "rsample", lambda self, *a: GRAPH):
        state = torch.get_rng_state()
        for batch_size in (None, 2, 5, 50):
            got = mean_elbo(model, x, num_draws=3, batch_size=batch_size)
            torch.testing.assert_close(torch.tensor(got, dtype=x.dtype), torch.stack([bound, local]) / 5)
        assert torch.equal(torch.get_rng_state(), state)
        regimes = torch.tensor([1, -1, -1, 0, -1])
        got = mean_elbo(model, x, regimes, num_draws=1, batch_size=2)
    labelled = terms_at(model, x, regimes=regimes, assignment="optimal")
    torch.testing.assert_close(got[0], float(labelled.elbo.detach()) / 5)


def test_latent_intervention_elbo_loss_is_minus_the_objective_averaged_over_particles():
    model, x = tiny_model(), data()
    regimes = torch.tensor([0, -1, 2, 1, -1, 2])
    expected = terms_at(model, x, regimes=regimes, supervision_weight=0.3, assignment="amortized")
    with patched_graph(model):
        elbo = LatentInterventionELBO(num_particles=3, supervision_weight=0.3, assignment="amortized")
        loss = elbo.loss(model.model, model.guide, x, regimes)
        assert loss == pytest.approx(-float(expected.objective.detach()), rel=1e-6)
        assert not any(p.grad is not None for p in model.parameters())
        assert elbo.loss_and_grads(model.model, model.guide, x, regimes) == pytest.approx(loss, rel=1e-6)
        grad = model.guide.embedding_loc.grad.clone()
        model.zero_grad()
        (-expected.objective).backward()
        torch.testing.assert_close(grad, model.guide.embedding_loc.grad)
        # A batch: the rows are a random subset (the data plate's), and the bound is scaled to all of them.
        batched_elbo = LatentInterventionELBO(assignment="optimal")
        batched_elbo.loss(model.model, model.guide, x, batch_size=4)  # the first call fixes the plan
        torch.manual_seed(2)
        rows = guide_draws(model, x, batch_size=4).nodes["data"]["value"]
        assert rows.shape == (4,) and len(set(rows.tolist())) == 4
        torch.manual_seed(2)
        batched = batched_elbo.loss(model.model, model.guide, x, batch_size=4)
        scaled = elbo_terms(model, x, rows=rows, assignment="optimal")
        assert batched == pytest.approx(-float(scaled.objective.detach()), rel=1e-6)
        joint, _ = joint_by_hand(model, x)
        torch.testing.assert_close(scaled.local.detach(), 6 / 4 * torch.logsumexp(joint, 0)[rows].sum())
        full = LatentInterventionELBO(assignment="optimal").loss(model.model, model.guide, x, batch_size=6)
        whole = terms_at(model, x, assignment="optimal")
        assert full == pytest.approx(-float(whole.objective.detach()), rel=1e-6)


def test_latent_intervention_elbo_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="unknown graph_estimator 'exact'; choose one of local, straight-through"):
        LatentInterventionELBO(graph_estimator="exact")
    with pytest.raises(ValueError, match="unknown graph_estimator 'exact'; choose one of local, straight-through"):
        elbo_terms(tiny_model(), data(), graph_estimator="exact")
    with pytest.raises(ValueError, match="unknown assignment 'exact'; choose one of optimal, amortized"):
        LatentInterventionELBO(assignment="exact")
    elbo = LatentInterventionELBO(supervision_weight=2, graph_estimator="local")
    assert (elbo.supervision_weight, elbo.assignment, elbo.graph_estimator, elbo.num_particles) == \
        (2.0, "optimal", "local", 1)
    assert (elbo.closed_forms, elbo.data_plate, elbo.max_plate_nesting) == (True, "data", 1)


def test_the_trace_based_elbo_scores_plain_function_programs():
    """No bound method needed any more: plain functions (a wrapper of ``m.model``, or a model of
    another shape entirely) are scored from their traces."""
    model, x = tiny_model(), data()
    expected = terms_at(model, x, assignment="optimal")
    with patched_graph(model):
        wrapped = LatentInterventionELBO().loss(lambda *a, **k: model.model(*a, **k),
                                                lambda *a, **k: model.guide(*a, **k), x)
    assert wrapped == pytest.approx(-float(expected.objective.detach()), rel=1e-6)

    y = x[:, 0]

    def plain_model(y):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    def plain_guide(y):
        pyro.sample("mu", dist.Normal(torch.tensor(0.3, dtype=y.dtype), 0.2))

    torch.manual_seed(4)
    terms = LatentInterventionELBO().terms(plain_model, plain_guide, y)
    torch.manual_seed(4)
    mu = poutine.trace(plain_guide).get_trace(y).nodes["mu"]["value"]
    log_lik = dist.Normal(mu, 1.0).log_prob(y).sum()
    kl = torch.distributions.kl_divergence(dist.Normal(torch.tensor(0.3, dtype=y.dtype), 0.2), dist.Normal(0.0, 1.0))
    assert set(terms.kl) == {"mu"}
    torch.testing.assert_close(terms.kl["mu"].detach(), kl)  # closed form, not the draw
    torch.testing.assert_close(terms.local.detach(), log_lik)
    torch.testing.assert_close(terms.log_likelihood.detach(), log_lik)
    torch.testing.assert_close(terms.elbo.detach(), log_lik - kl)
    torch.manual_seed(4)
    assert LatentInterventionELBO().loss(plain_model, plain_guide, y) == pytest.approx(float(kl - log_lik), rel=1e-6)


def test_get_trace_replays_the_targets_at_their_guide_mean():
    """``_get_trace`` (the ``pyro.infer.ELBO`` hook) gives the traces the bound is read from:
    ``z`` enumerated over its support, ``x`` observed, ``r`` at its mean ``pi`` once the plan is set."""
    model, x = tiny_model(), data()
    elbo = LatentInterventionELBO()
    with patched_graph(model):
        elbo.terms(model.model, model.guide, x)  # fixes the plan: r is affine in the likelihood
        model_trace, guide_trace = elbo._get_trace(model.model, model.guide, (x,), {})
    pi = torch.sigmoid(model.guide.target_logits).detach()
    torch.testing.assert_close(model_trace.nodes["r"]["value"].detach(), pi)
    assert torch.equal(guide_trace.nodes["z"]["value"], torch.arange(3).reshape(3, 1))
    assert model_trace.nodes["x"]["is_observed"] and torch.equal(model_trace.nodes["x"]["value"], x)
    assert torch.equal(model_trace.nodes["graph"]["value"], GRAPH)

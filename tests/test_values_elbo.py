"""Value checks of the bound: every term of ``elbo_terms`` against its closed form on a tiny model.

The graph and the embeddings are made deterministic (the graph sample patched, the embeddings'
scale ~0), so each term is a number that can be written down by hand.
"""
from unittest import mock

import pytest
import torch

from pyro_causal.elbo import ENCODER_ROWS, ElboTerms, elbo_terms, mean_elbo
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


def terms_at(model, x, graph=GRAPH, **kwargs):
    law = type(model.guide.graph_dist())
    with mock.patch.object(law, "rsample", lambda self, *a: graph), \
            mock.patch.object(law, "sample", lambda self, *a: graph):
        return elbo_terms(model, x, **kwargs)


def bernoulli_kl(q, p):
    return q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()


def beta_kl(a, b, c, d):
    """KL(Beta(a, b) || Beta(c, d)) by its textbook closed form."""
    lg, dg = torch.lgamma, torch.digamma
    return (lg(a + b) - lg(a) - lg(b) - lg(c + d) + lg(c) + lg(d)
            + (a - c) * dg(a) + (b - d) * dg(b) + (c + d - a - b) * dg(a + b))


def expected_log_weights(a, b):
    """E log beta_k for K = len(a) + 1 by the appendix-A formula, written out as a loop."""
    out, rest = [], 0.0
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
    t = ElboTerms(*(torch.tensor(v) for v in (-100.0, 7.0, 3.5, 2.0, 0.25, 11.0, 0.5)))
    assert float(t.elbo.detach()) == -100.0 + 7.0 - 2.0 - 0.25 - 11.0 - 0.5
    assert float(t.objective.detach()) == float(t.elbo.detach()) + 3.5
    assert t.as_floats() == {"log_likelihood": -100.0, "assignments": 7.0, "auxiliary": 3.5, "kl_graph": 2.0,
                             "kl_sticks": 0.25, "kl_embeddings": 11.0, "kl_targets": 0.5,
                             "elbo": -106.75}


def test_each_kl_term_equals_its_closed_form():
    model, x = tiny_model(), data()
    t = terms_at(model, x)
    kl_graph, kl_sticks, kl_embeddings, kl_targets, _ = hand_kls(model)
    torch.testing.assert_close(t.kl_graph.detach(), kl_graph)
    torch.testing.assert_close(t.kl_sticks.detach(), kl_sticks)
    torch.testing.assert_close(t.kl_embeddings.detach(), kl_embeddings)
    torch.testing.assert_close(t.kl_targets.detach(), kl_targets)
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
    torch.testing.assert_close(t.kl_graph.detach(), expected)


@pytest.mark.parametrize("n, num_rows", [(6, None), (6, 15)])
def test_exact_assignment_local_terms_are_the_log_sum_exp_of_the_joint(n, num_rows):
    model, x = tiny_model(), data(n)
    t = terms_at(model, x, num_rows=num_rows, assignment="exact")
    joint, e_log_w = joint_by_hand(model, x)
    scale = (num_rows or n) / n
    weights = torch.softmax(joint, 0)
    log_lik = (weights * (joint - e_log_w.unsqueeze(-1))).sum()
    torch.testing.assert_close(t.log_likelihood.detach(), scale * log_lik)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), scale * torch.logsumexp(joint, 0).sum())
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


@pytest.mark.parametrize("assignment", ["amortized", "exact"])
def test_known_regimes_use_the_observed_component_and_the_supervision_term(assignment):
    model, x = tiny_model(), data()
    regimes = torch.tensor([0, -1, 2, 1, -1, 2])
    t = terms_at(model, x, regimes=regimes, supervision_weight=0.7, assignment=assignment)
    joint, e_log_w = joint_by_hand(model, x)
    log_q_net = torch.log_softmax(model.guide.assignment_logits(x, model.guide.embedding_loc).detach(), -1).T
    log_q = torch.log_softmax(joint, 0) if assignment == "exact" else log_q_net
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
            if assignment == "exact":
                distillation = distillation + (q * (log_q[:, i] - log_q_net[:, i])).sum()
    torch.testing.assert_close(t.log_likelihood.detach(), log_lik)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), local)
    torch.testing.assert_close(t.auxiliary.detach(), 0.7 * supervision - distillation)


def test_exact_assignment_trains_the_network_by_the_distillation_kl():
    model, x = tiny_model(), data()
    t = terms_at(model, x, assignment="exact")
    joint, _ = joint_by_hand(model, x)
    exact = torch.log_softmax(joint, 0)
    net = torch.log_softmax(model.guide.assignment_logits(x, model.guide.embedding_loc).detach(), -1).T
    torch.testing.assert_close(t.auxiliary.detach(), -(exact.exp() * (exact - net)).sum())
    assert float(t.auxiliary.detach()) < -0.01


def test_exact_assignment_distils_on_a_subset_of_large_batches_scaled_to_the_batch():
    model = tiny_model(truncation=2)
    torch.manual_seed(0)
    x = torch.randn(ENCODER_ROWS + 200, 3, dtype=torch.float64)
    torch.manual_seed(4)
    perm = torch.randperm(x.shape[0])
    with mock.patch("torch.randperm", lambda n, device=None: perm[:n] if n == perm.numel() else None):
        t = terms_at(model, x, assignment="exact")
    rows = perm[:ENCODER_ROWS]
    joint, _ = joint_by_hand(model, x)
    exact = torch.log_softmax(joint, 0)[:, rows]
    net = torch.log_softmax(model.guide.assignment_logits(x[rows], model.guide.embedding_loc).detach(), -1).T
    expected = -(x.shape[0] / ENCODER_ROWS) * (exact.exp() * (exact - net)).sum()
    torch.testing.assert_close(t.auxiliary.detach(), expected)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), torch.logsumexp(joint, 0).sum())


def test_one_component_has_no_sticks_or_targets():
    model, x = tiny_model(truncation=1), data()
    t = terms_at(model, x, assignment="exact")
    assert float(t.kl_sticks.detach()) == 0.0 and float(t.kl_targets.detach()) == 0.0
    ll = model.log_likelihood(x, GRAPH, model.guide.embedding_loc.detach(), torch.zeros(1, 3, dtype=x.dtype))
    torch.testing.assert_close(t.log_likelihood.detach(), ll.detach().sum())
    torch.testing.assert_close(t.assignments.detach(), torch.zeros((), dtype=x.dtype))


def test_known_targets_skip_the_target_kl_and_are_used_in_the_likelihood():
    model, x = tiny_model(), data()
    targets = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 1.0]], dtype=x.dtype)
    t = terms_at(model, x, targets=targets, assignment="exact")
    assert float(t.kl_targets.detach()) == 0.0
    *_, e_log_w = hand_kls(model)
    joint = model.log_likelihood(x, GRAPH, model.guide.embedding_loc.detach(), targets).detach() + e_log_w.unsqueeze(-1)
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), torch.logsumexp(joint, 0).sum())


@pytest.mark.parametrize("estimator", ["straight-through", "relaxed"])
def test_sampled_targets_match_the_exact_expectation_when_the_targets_are_certain(estimator):
    model, x = tiny_model(), data()
    with torch.no_grad():
        model.guide.target_logits.copy_(torch.tensor([[30.0, -30.0, -30.0], [-30.0, 30.0, 30.0]]))
    exact = terms_at(model, x, assignment="exact")
    sampled = terms_at(model, x, assignment="exact", target_estimator=estimator)
    torch.testing.assert_close(sampled.elbo.detach(), exact.elbo.detach())
    with pytest.raises(ValueError, match="target_estimator"):
        terms_at(model, x, target_estimator="gumbel")


def test_local_graph_estimator_has_the_value_of_the_bound_and_the_gain_as_gradient():
    model, x = tiny_model(), data()
    straight = terms_at(model, x, assignment="exact")
    local = terms_at(model, x, assignment="exact", graph_estimator="local")
    torch.testing.assert_close(local.elbo.detach(), straight.elbo.detach())
    (grad,) = torch.autograd.grad(local.log_likelihood, model.guide.edge_logits)
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
    labelled = terms_at(model, x, regimes=regimes, assignment="exact")
    torch.testing.assert_close(got[0], float(labelled.elbo.detach()) / 5)


def test_latent_intervention_elbo_loss_is_minus_the_objective_averaged_over_particles():
    from pyro_causal.elbo import LatentInterventionELBO

    model, x = tiny_model(), data()
    regimes = torch.tensor([0, -1, 2, 1, -1, 2])
    expected = terms_at(model, x, regimes=regimes, supervision_weight=0.3, assignment="amortized")
    law = type(model.guide.graph_dist())
    with mock.patch.object(law, "rsample", lambda self, *a: GRAPH):
        elbo = LatentInterventionELBO(num_particles=3, supervision_weight=0.3, assignment="amortized")
        loss = elbo.loss(model.model, model.guide, x, regimes)
        assert loss == pytest.approx(-float(expected.objective.detach()), rel=1e-6)
        assert not any(p.grad is not None for p in model.parameters())
        assert elbo.loss_and_grads(model.model, model.guide, x, regimes) == pytest.approx(loss, rel=1e-6)
        grad = model.guide.embedding_loc.grad.clone()
        model.zero_grad()
        (-expected.objective).backward()
        torch.testing.assert_close(grad, model.guide.embedding_loc.grad)
        # A batch: the rows are a random subset, and the bound is scaled to all of them.
        torch.manual_seed(2)
        rows = torch.randperm(6)[:4]
        torch.manual_seed(2)
        batched = LatentInterventionELBO(assignment="exact").loss(model.model, model.guide, x, batch_size=4)
        torch.manual_seed(2)
        torch.randperm(6)
        scaled = elbo_terms(model, x[rows], None, None, 6, assignment="exact")
        assert batched == pytest.approx(-float(scaled.objective.detach()), rel=1e-6)
        full = LatentInterventionELBO(assignment="exact").loss(model.model, model.guide, x, batch_size=6)
        whole = terms_at(model, x, assignment="exact")
        assert full == pytest.approx(-float(whole.objective.detach()), rel=1e-6)


def test_latent_intervention_elbo_refuses_what_it_cannot_score():
    from pyro_causal.elbo import LatentInterventionELBO

    with pytest.raises(ValueError, match="unknown graph_estimator 'exact'; choose one of local, straight-through"):
        LatentInterventionELBO(graph_estimator="exact")
    with pytest.raises(ValueError, match="unknown graph_estimator 'exact'; choose one of local, straight-through"):
        elbo_terms(tiny_model(), data(), graph_estimator="exact")
    with pytest.raises(TypeError, match="needs the bound method `m.model`"):
        LatentInterventionELBO().loss(lambda x: None, lambda x: None, data())
    with pytest.raises(NotImplementedError, match="closed form"):
        LatentInterventionELBO()._get_trace(None, None, (), {})
    elbo = LatentInterventionELBO(supervision_weight=2, graph_estimator="local")
    assert (elbo.supervision_weight, elbo.assignment, elbo.graph_estimator, elbo.num_particles) == (2.0, "exact", "local", 1)

"""The graph posterior without two-cycles: exact law, exact KL, and how the guide uses it."""
import itertools

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_causal.distributions import TwoCycleFreeBernoulli
from pyro_causal.elbo import elbo_terms
from pyro_causal.model import LatentInterventionModel

PROBS = torch.tensor([[0.0, 0.7, 0.2], [0.6, 0.0, 0.9], [0.3, 0.4, 0.0]])
OFF = [(i, j) for i in range(3) for j in range(3) if i != j]


def all_graphs():
    for bits in itertools.product([0.0, 1.0], repeat=len(OFF)):
        graph = torch.zeros(3, 3)
        for (i, j), bit in zip(OFF, bits):
            graph[i, j] = bit
        yield graph


def test_log_prob_is_a_normalised_law_without_two_cycles():
    q = TwoCycleFreeBernoulli(probs=PROBS, pairs=~torch.eye(3, dtype=torch.bool))
    total = 0.0
    for graph in all_graphs():
        mass = q.log_prob(graph).sum().exp()
        if (graph * graph.T).sum() > 0:
            assert mass == 0
        total += float(mass)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_kl_against_the_bernoulli_prior_matches_enumeration():
    q = TwoCycleFreeBernoulli(probs=PROBS, pairs=~torch.eye(3, dtype=torch.bool))
    prior = dist.Bernoulli(logits=torch.tensor([[0.0, -1.0, 0.5], [-2.0, 0.0, 1.0], [0.3, -0.7, 0.0]]))
    off = ~torch.eye(3, dtype=torch.bool)
    brute = 0.0
    for graph in all_graphs():
        log_q = q.log_prob(graph).sum()
        if torch.isfinite(log_q):
            brute += float(log_q.exp() * (log_q - prior.log_prob(graph)[off].sum()))
    assert float(kl_divergence(q, prior)[off].sum()) == pytest.approx(brute, rel=1e-5)


def test_samples_have_no_two_cycles_and_the_stated_marginals():
    torch.manual_seed(0)
    q = TwoCycleFreeBernoulli(probs=PROBS, pairs=~torch.eye(3, dtype=torch.bool))
    draws = q.sample((20000,))
    assert (draws * draws.transpose(-1, -2)).sum() == 0
    marginal = PROBS * (1 - PROBS.T / 2)  # p_ij (1 - p_ji / 2)
    torch.testing.assert_close(draws.mean(0), marginal, atol=0.015, rtol=0)
    probs = PROBS.clone().requires_grad_()
    hard = TwoCycleFreeBernoulli(probs=probs, pairs=~torch.eye(3, dtype=torch.bool)).rsample()
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    hard.sum().backward()  # straight-through: the gradient reaches every proposal probability
    torch.testing.assert_close(probs.grad, torch.ones(3, 3))


def test_pairs_with_a_fixed_edge_keep_the_independent_law():
    # Edge 0 -> 1 required: the pair (0, 1) is not free, so nothing is resolved there.
    pairs = ~torch.eye(3, dtype=torch.bool)
    pairs[0, 1] = pairs[1, 0] = False
    probs = PROBS.clone()
    probs[0, 1] = 1.0
    q = TwoCycleFreeBernoulli(probs=probs, pairs=pairs)
    torch.manual_seed(0)
    draws = q.sample((4000,))
    assert draws[:, 0, 1].min() == 1  # the required edge is never dropped
    assert 0.5 < draws[:, 1, 0].mean() < 0.7  # its reverse keeps its own probability 0.6


def test_guide_uses_it_unless_allowed():
    model = LatentInterventionModel(3)
    assert isinstance(model.guide.graph_dist(), TwoCycleFreeBernoulli)
    assert type(LatentInterventionModel(3, two_cycles="allow").guide.graph_dist()) is not TwoCycleFreeBernoulli
    with pytest.raises(ValueError, match="two_cycles"):
        LatentInterventionModel(3, two_cycles="sometimes")


def test_marginals_are_the_law_summed_over_graphs():
    q = TwoCycleFreeBernoulli(PROBS, pairs=~torch.eye(3, dtype=torch.bool))
    brute = sum(q.log_prob(g).sum().exp() * g for g in all_graphs())
    assert torch.allclose(q.marginal_probs(), brute, atol=1e-6)


def test_local_edge_gradient_is_exact_for_the_two_cycle_free_law(two_variable_problem):
    # d = 2: the pair has three states (none, 0 -> 1, 1 -> 0), so d E_q(A)[ELBO] / d lambda is a
    # finite sum; the embeddings are deterministic, so the local gradient has no noise at all.
    m, x, at_graph = two_variable_problem("resolve")
    logits = m.guide.edge_logits
    pairs = ([0, 1], [1, 0])

    states = [torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]])]
    values = [at_graph(a) for a in states]
    logits.grad = None
    q = m.guide.graph_dist()
    expected = sum(q.log_prob(a).sum().exp() * v for a, v in zip(states, values)) - elbo_terms(m, x, assignment="amortized").kl["graph"]
    expected.backward()
    exact = logits.grad[pairs].clone()

    torch.manual_seed(2)
    local = []
    for _ in range(50):
        logits.grad = None
        elbo_terms(m, x, graph_estimator="local", assignment="amortized").elbo.backward()
        local.append(logits.grad[pairs].clone())
    local = torch.stack(local)
    assert torch.allclose(local, exact.expand_as(local), rtol=1e-3, atol=1e-4)
    assert exact.abs().min() > 0.1  # not trivially zero

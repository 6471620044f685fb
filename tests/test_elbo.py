"""The closed-form pieces of the bound against Monte Carlo, brute force and TraceEnum_ELBO."""
import inspect
import itertools

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Bernoulli, Beta, Normal, kl_divergence

from pyro_causal import fit
from pyro_causal.distributions import StraightThroughBernoulli, expected_log_stick_weights, stick_breaking_log_weights
from pyro_causal.elbo import LatentInterventionELBO, elbo_terms
from pyro_causal.likelihood import component_log_likelihood
from pyro_causal.model import LatentInterventionModel


def test_beta_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    q = Beta(torch.tensor([2.0, 0.7, 5.0], dtype=torch.float64), torch.tensor([3.0, 1.5, 0.9], dtype=torch.float64))
    p = Beta(torch.ones(3, dtype=torch.float64), torch.full((3,), 4.0, dtype=torch.float64))
    v = q.sample((400000,))
    mc = (q.log_prob(v) - p.log_prob(v)).mean(0)
    np.testing.assert_allclose(kl_divergence(q, p), mc, rtol=0.02, atol=2e-3)


def test_normal_kl_matches_appendix_formula_and_monte_carlo():
    torch.manual_seed(0)
    mu, sigma = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    formula = (sigma**2 + mu**2 - 1) / 2 - torch.log(sigma)
    q, p = Normal(mu, sigma), Normal(torch.zeros(2, dtype=torch.float64), 1.0)
    np.testing.assert_allclose(kl_divergence(q, p), formula, rtol=1e-12)
    u = q.sample((400000,))
    np.testing.assert_allclose((q.log_prob(u) - p.log_prob(u)).mean(0), formula, rtol=0.02, atol=2e-3)


def test_bernoulli_kl_matches_appendix_formula():
    pi, gamma = torch.tensor([0.1, 0.5, 0.93], dtype=torch.float64), -1.3
    formula = pi * (torch.logit(pi) - gamma) + torch.log((1 - pi) / (1 - torch.sigmoid(torch.tensor(gamma, dtype=torch.float64))))
    got = kl_divergence(Bernoulli(pi), Bernoulli(logits=torch.full((3,), gamma, dtype=torch.float64)))
    np.testing.assert_allclose(got, formula, rtol=1e-10)


def test_expected_log_stick_weights_matches_monte_carlo():
    torch.manual_seed(0)
    a = torch.tensor([1.5, 3.0, 0.8, 2.0], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 2.5, 2.0], dtype=torch.float64)
    v = Beta(a, b).sample((400000,))
    mc = stick_breaking_log_weights(v).mean(0)
    np.testing.assert_allclose(expected_log_stick_weights(a, b), mc, rtol=0.01, atol=5e-3)


def test_stick_breaking_weights_close_the_simplex():
    v = torch.rand(7, 5)
    assert torch.allclose(stick_breaking_log_weights(v).exp().sum(-1), torch.ones(7), atol=1e-6)


def test_straight_through_samples_are_hard_with_the_gradient_of_the_mean():
    p = torch.tensor([0.2, 0.7, 0.5], requires_grad=True)
    s = StraightThroughBernoulli(probs=p).rsample()
    assert set(s.detach().tolist()) <= {0.0, 1.0}
    (s * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_allclose(p.grad, [1.0, 2.0, 3.0])


def test_likelihood_at_target_probabilities_is_the_exact_expectation_over_targets():
    torch.manual_seed(0)
    model = LatentInterventionModel(3, truncation=3, embedding_dim=4).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    adjacency = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.float64)
    u = torch.randn(3, 4, dtype=torch.float64)
    pi = torch.rand(2, 3, dtype=torch.float64)
    for perfect in (False, True):
        exact = component_log_likelihood(model.density, x, adjacency, u, model.full_targets(pi), perfect)
        brute = torch.zeros_like(exact)
        for bits in itertools.product((0.0, 1.0), repeat=6):
            r = torch.tensor(bits, dtype=torch.float64).reshape(2, 3)
            prob = (pi**r * (1 - pi) ** (1 - r)).prod()
            brute += prob * component_log_likelihood(model.density, x, adjacency, u, model.full_targets(r), perfect)
        torch.testing.assert_close(exact, brute)


def _fixed_globals(model, x):
    torch.manual_seed(3)
    d, K, h = model.num_variables, model.truncation, model.embedding_dim
    return {
        "graph": torch.tensor([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=x.dtype),
        "v": torch.rand(K - 1, dtype=x.dtype) * 0.8 + 0.1,
        "u": torch.randn(K, h, dtype=x.dtype),
        "r": torch.bernoulli(torch.full((K - 1, d), 0.5, dtype=x.dtype)),
    }


def test_enumerated_elbo_equals_brute_force_sum_over_assignments():
    """TraceEnum_ELBO on our model/guide with the globals fixed equals a hand-written sum."""
    model = LatentInterventionModel(3, truncation=4, embedding_dim=5).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    fixed = _fixed_globals(model, x)
    cond_model = poutine.condition(model.model, fixed)
    cond_guide = poutine.block(poutine.condition(model.guide, fixed), hide=list(fixed))
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(cond_model, cond_guide, x)
    # Brute force: sum_i sum_k q(k|x_i) [log beta_k + log p(x_i | k) - log q(k|x_i)] + log p(globals)
    log_w = stick_breaking_log_weights(fixed["v"])
    full = model.full_targets(fixed["r"])
    expected = torch.zeros((), dtype=torch.float64)
    log_q = torch.log_softmax(model.guide.assignment_logits(x, fixed["u"]), -1)
    for i in range(x.shape[0]):
        for k in range(model.truncation):
            ll = component_log_likelihood(model.density, x[i : i + 1], fixed["graph"], fixed["u"], full, model.perfect)[k, 0]
            expected += log_q[i, k].exp() * (log_w[k] + ll - log_q[i, k])
    mask = model.off_diagonal.bool()
    expected += model.graph_prior().log_prob(fixed["graph"])[mask].sum()
    expected += model.stick_prior().log_prob(fixed["v"]).sum()
    expected += model.embedding_prior().log_prob(fixed["u"]).sum()
    expected += model.target_prior().log_prob(fixed["r"]).sum()
    torch.testing.assert_close(-loss, expected)


def test_shapes_of_every_site_under_enumeration():
    model = LatentInterventionModel(4, truncation=5, embedding_dim=3)
    x = torch.randn(9, 4)
    guide_trace = poutine.trace(poutine.enum(model.guide, first_available_dim=-2)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    shapes = {
        name: site["value"].shape
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site["infer"].get("_do_not_trace") and name not in ("data", "sticks", "components", "interventions")
    }
    assert shapes == {
        "graph": (4, 4), "v": (4,), "u": (5, 3), "r": (4, 4), "z": (5, 1), "x": (9, 4),
    }
    assert model_trace.nodes["x"]["log_prob"].shape == (5, 9)
    assert model_trace.nodes["z"]["log_prob"].shape == (5, 9)
    assert guide_trace.nodes["z"]["fn"].batch_shape == (9,)


def test_closed_form_elbo_agrees_with_trace_enum_elbo_in_expectation():
    """Same estimand: averages over many draws agree, and ours has a much smaller spread."""
    model = LatentInterventionModel(4, truncation=4, embedding_dim=3)
    x = torch.randn(30, 4)
    enum_elbo = TraceEnum_ELBO(max_plate_nesting=1)
    draws = 150
    stock = torch.tensor([enum_elbo.loss(model.model, model.guide, x) for _ in range(draws)])
    with torch.no_grad():
        ours = torch.tensor([-float(elbo_terms(model, x, assignment="amortized").elbo) for _ in range(draws)])
    se = (stock.var() / draws + ours.var() / draws).sqrt()
    assert abs(float(stock.mean() - ours.mean())) < 4 * float(se)
    assert float(ours.std()) < 0.5 * float(stock.std())


def test_minibatch_elbo_is_unbiased_for_the_full_one():
    """Rows scaled by N / B, dataset-level KLs once: the mini-batch bound averages to the full one."""
    model = LatentInterventionModel(3, truncation=3, embedding_dim=3)
    x = torch.randn(40, 3)
    torch.manual_seed(0)
    with torch.no_grad():
        full = torch.stack([elbo_terms(model, x).elbo for _ in range(200)])
        sub = torch.stack([elbo_terms(model, x, rows=torch.randperm(40)[:8]).elbo for _ in range(800)])
    se = (full.var() / len(full) + sub.var() / len(sub)).sqrt()
    assert abs(float(sub.mean() - full.mean())) < 4 * float(se)


def test_elbo_drives_stock_svi_and_reads_any_program():
    model = LatentInterventionModel(3, truncation=3, embedding_dim=3)
    x = torch.randn(20, 3)
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.05}), LatentInterventionELBO())
    before = model.guide.edge_logits.detach().clone()
    losses = [svi.step(x) for _ in range(5)]
    assert np.isfinite(losses).all()
    assert not torch.equal(before, model.guide.edge_logits.detach())
    # any pair of programs: one global latent site, closed-form KL(N(m, 1) || N(0, 1)) = m^2 / 2

    def plain_model(x):
        pyro.sample("s", pyro.distributions.Normal(0.0, 1.0))

    def plain_guide(x):
        pyro.sample("s", pyro.distributions.Normal(torch.tensor(1.5), 1.0))

    assert LatentInterventionELBO().loss(plain_model, plain_guide, x) == pytest.approx(1.5**2 / 2, rel=1e-6)


@pytest.mark.parametrize("intervention", ["imperfect", "perfect"])
def test_edge_gain_equals_brute_force_toggle_of_each_edge(intervention):
    torch.manual_seed(0)
    d, K, n = 4, 3, 50
    m = LatentInterventionModel(d, truncation=K, embedding_dim=3, intervention=intervention)
    x = torch.randn(n, d)
    u = torch.randn(K, 3)
    targets = m.full_targets(torch.rand(K - 1, d))
    q = torch.softmax(torch.randn(n, K), -1)
    adjacency = torch.bernoulli(torch.full((d, d), 0.5)) * m.off_diagonal

    def expected_log_lik(a):
        return (q * m.log_likelihood(x, a, u, targets).T).sum()

    expected = torch.zeros(d, d)
    for i, j in itertools.permutations(range(d), 2):
        on, off = adjacency.clone(), adjacency.clone()
        on[i, j], off[i, j] = 1.0, 0.0
        expected[i, j] = expected_log_lik(on) - expected_log_lik(off)
    gain = m.edge_gain(x, adjacency, u, targets, q)
    assert torch.allclose(gain, expected, atol=1e-3, rtol=1e-4)
    assert gain.abs().max() > 0.1  # not trivially zero
    if intervention == "imperfect":  # the function's default keeps the parents of intervened variables
        from pyro_causal.likelihood import edge_gain

        direct = edge_gain(m.density, x, adjacency, u, targets, q) * m.off_diagonal
        torch.testing.assert_close(direct, gain)
        assert not torch.allclose(direct, edge_gain(m.density, x, adjacency, u, targets, q, perfect=True) * m.off_diagonal)


def test_local_edge_gradient_is_exact_for_two_variables_where_straight_through_is_noisy(two_variable_problem):
    # With d = 2 the graph has four states, so d E_q(A)[ELBO] / d lambda is a finite sum.  The
    # embeddings are made deterministic so that the graph is the only source of noise.
    m, x, at_graph = two_variable_problem("allow")
    logits = m.guide.edge_logits
    pairs = ([0, 1], [1, 0])

    probs = torch.sigmoid(logits.detach())[pairs]
    baseline = at_graph(torch.zeros(2, 2))  # sum_A dq(A) = 0: subtracting it only removes rounding
    exact = torch.zeros(2)
    for a01, a10 in itertools.product([0.0, 1.0], repeat=2):
        sample = torch.tensor([a01, a10])
        q_a = torch.where(sample > 0, probs, 1 - probs).prod()
        exact += q_a * (sample - probs) * (at_graph(torch.tensor([[0.0, a01], [a10, 0.0]])) - baseline)
    logits.grad = None
    elbo_terms(m, x, assignment="amortized").kl["graph"].backward()
    exact -= logits.grad[pairs]

    def draws(estimator, count=400):
        torch.manual_seed(2)
        out = []
        for _ in range(count):
            logits.grad = None
            elbo_terms(m, x, graph_estimator=estimator, assignment="amortized").elbo.backward()
            out.append(logits.grad[pairs].clone())
        return torch.stack(out)

    local, straight = draws("local"), draws("straight-through")
    standard_error = local.std(0) / 20
    assert torch.all((local.mean(0) - exact).abs() < 4 * standard_error + 1e-3 * exact.abs())
    # With two variables each mechanism has one possible parent: the local gradient is exact.
    assert torch.all(local.std(0) < 1e-3 * exact.abs())
    assert torch.all(straight.std(0) > 0.1 * exact.abs())


def test_unknown_graph_estimator_is_refused_everywhere():
    from pyro_causal import TrainingConfig

    m = LatentInterventionModel(3, truncation=2)
    with pytest.raises(ValueError, match="graph_estimator 'gumbel'"):
        elbo_terms(m, torch.randn(5, 3), graph_estimator="gumbel")
    with pytest.raises(ValueError, match="graph_estimator 'gumbel'"):
        LatentInterventionELBO(graph_estimator="gumbel")
    with pytest.raises(ValueError, match="graph_estimator 'gumbel'"):
        TrainingConfig(graph_estimator="gumbel")
    with pytest.raises(ValueError, match="unknown assignment 'exct'"):
        TrainingConfig(assignment="exct")


@pytest.mark.parametrize("density", ["linear", "mlp", "flow"])
def test_the_default_model_cuts_the_parents_of_targets_and_the_imperfect_one_keeps_them(density):
    # x and x2 differ only in the parent X0 of X1; component 1 targets X1.  Under the perfect
    # model (the default) X1's term there ignores X0, so the change in component 1's
    # log-likelihood is the same with the edge X0 -> X1 as without it.
    torch.manual_seed(0)
    x = torch.randn(5, 2, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 0] += 1.5
    edge, empty = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    targets = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    for intervention in ("default", "imperfect"):
        options = {} if intervention == "default" else {"intervention": intervention}
        m = LatentInterventionModel(2, truncation=2, embedding_dim=2, density=density, **options).double()
        u = torch.randn(2, 2, dtype=torch.float64)
        change = {name: m.log_likelihood(x, a, u, targets) - m.log_likelihood(x2, a, u, targets)
                  for name, a in (("edge", edge), ("empty", empty))}
        assert not torch.allclose(change["edge"][0], change["empty"][0])  # component 0 keeps the edge
        cut = torch.allclose(change["edge"][1], change["empty"][1])
        assert cut == (intervention == "default"), intervention
    assert LatentInterventionModel(2).intervention == inspect.signature(fit).parameters["intervention"].default == "perfect"

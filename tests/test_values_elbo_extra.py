"""More value checks of the trace-based bound: the local graph gradient under masks and observed
``z``, and the keyword arguments reaching every entry point (found by mutation testing)."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from pyro_causal.elbo import LatentInterventionELBO, _site_log_prob

from test_values_elbo import GRAPH, data, guide_draws, hand_kls, joint_by_hand, patched_graph, terms_at, tiny_model

REGIMES = torch.tensor([0, 1, 2, 1, 0, 2])


class _GraphSite(Messenger):
    """Changes the guide's ``graph`` site: an extra site mask, or its masks removed."""

    def __init__(self, mask=None, unmask=False):
        super().__init__()
        self.mask, self.unmask = mask, unmask

    def _process_message(self, msg):
        if msg["name"] != "graph":
            return
        if self.mask is not None:
            msg["mask"] = self.mask if msg["mask"] is None else msg["mask"] & self.mask
        if self.unmask:  # Independent(Masked(law)) -> Independent(law)
            msg["fn"] = msg["fn"].base_dist.base_dist.to_event(2)


def local_gradient(model, x, model_fn=None, guide_fn=None, *args, **kwargs):
    """``(terms, d log_likelihood / d Lambda)`` of the local graph estimator."""
    elbo = LatentInterventionELBO(graph_estimator="local", assignment="optimal")
    with patched_graph(model):
        terms = elbo.terms(model_fn or model.model, guide_fn or model.guide, x, *args, **kwargs)
    (grad,) = torch.autograd.grad(terms.log_likelihood, model.guide.edge_logits)
    return terms, grad


def expected_gradient(model, x, weights, free=None):
    """``d/dLambda sum_ij m_ij gain_ij`` over the ``free`` edges, ``m`` the two-cycle-free marginals."""
    u = model.guide.embedding_loc.detach()
    targets = model.full_targets(torch.sigmoid(model.guide.target_logits).detach())
    gain = model.edge_gain(x, GRAPH, u, targets, weights)
    logits = model.guide.edge_logits.detach().clone().requires_grad_(True)
    p = torch.sigmoid(logits) * (1 - torch.eye(3, dtype=x.dtype))
    marginal = p * (1 - p.T / 2)
    free = torch.ones(3, 3, dtype=torch.bool) if free is None else free
    (grad,) = torch.autograd.grad((marginal * gain * free).sum(), logits)
    return grad


def test_local_graph_gradient_with_known_regimes_uses_their_one_hot_weights():
    model, x = tiny_model(), data()
    terms, grad = local_gradient(model, x, None, None, REGIMES)
    one_hot = torch.nn.functional.one_hot(REGIMES, 3).to(x.dtype)
    torch.testing.assert_close(grad, expected_gradient(model, x, one_hot))
    assert float(grad.abs().max()) > 1e-3
    joint, e_log_w = joint_by_hand(model, x)
    rows = torch.arange(6)
    torch.testing.assert_close(terms.log_likelihood.detach(), (joint - e_log_w.unsqueeze(-1))[REGIMES, rows].sum())


def test_local_graph_gradient_with_z_conditioned_equals_the_regimes_keyword():
    """``poutine.condition`` on ``z`` leaves no site to sum out: the gain is weighted by each row's
    own component (this crashed before: ``edge_gain`` got no weights)."""
    model, x = tiny_model(), data()
    keyword, keyword_grad = local_gradient(model, x, None, None, REGIMES)
    conditioned, grad = local_gradient(model, x, poutine.condition(model.model, data={"z": REGIMES}))
    torch.testing.assert_close(grad, keyword_grad)
    torch.testing.assert_close(conditioned.log_likelihood.detach(), keyword.log_likelihood.detach())
    torch.testing.assert_close(conditioned.elbo.detach(), keyword.elbo.detach())
    torch.testing.assert_close(conditioned.auxiliary.detach(), keyword.auxiliary.detach())


def test_local_graph_gradient_and_kl_follow_a_site_mask_of_the_guide_graph():
    """A site mask (``poutine.mask``-style, over the site's batch shape ``()``) on the guide's
    ``graph``: ``False`` drops its KL and its gradient, ``True`` changes nothing."""
    model, x = tiny_model(), data()
    weights = torch.softmax(joint_by_hand(model, x)[0], 0).T
    terms, grad = local_gradient(model, x, None, _GraphSite(mask=torch.tensor(True))(model.guide))
    torch.testing.assert_close(grad, expected_gradient(model, x, weights))
    torch.testing.assert_close(terms.kl["graph"].detach(), hand_kls(model)[0])
    terms, grad = local_gradient(model, x, None, _GraphSite(mask=torch.tensor(False))(model.guide))
    assert torch.equal(grad, torch.zeros_like(grad))
    assert float(terms.kl["graph"].detach()) == 0.0
    assert float(expected_gradient(model, x, weights).abs().max()) > 1e-3


def test_local_graph_gradient_of_an_unmasked_guide_site():
    model, x = tiny_model(), data()
    terms, grad = local_gradient(model, x, None, _GraphSite(unmask=True)(model.guide))
    weights = torch.softmax(joint_by_hand(model, x)[0], 0).T
    torch.testing.assert_close(grad, expected_gradient(model, x, weights))
    assert float(grad.abs().max()) > 1e-3


def test_loss_and_grads_pass_the_keyword_arguments_on():
    model, x = tiny_model(), data()
    with patched_graph(model):
        elbo = LatentInterventionELBO(supervision_weight=0.3, assignment="amortized")
        expected = terms_at(model, x, regimes=REGIMES, supervision_weight=0.3, assignment="amortized")
        loss = elbo.loss_and_grads(model.model, model.guide, x, regimes=REGIMES)
    assert loss == pytest.approx(-float(expected.objective.detach()), rel=1e-9)
    grad = model.guide.embedding_loc.grad.clone()
    model.zero_grad()
    (-expected.objective).backward()
    torch.testing.assert_close(grad, model.guide.embedding_loc.grad)


def drawn_model():
    model = tiny_model()
    with torch.no_grad():
        model.guide.embedding_log_scale.fill_(-1.0)  # u really drawn: each draw changes the bound
    return model


def mean_elbo_by_hand(model, x, num_draws, seed, size):
    """Draw after draw, chunk after chunk of ``size`` rows, from one seed; global terms once per draw."""
    elbo = LatentInterventionELBO(assignment="optimal")
    bound, local = 0.0, 0.0
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    with torch.no_grad():
        for _ in range(num_draws):
            for start in range(0, x.shape[0], size):
                t = elbo.terms(model.model, model.guide, x[start:start + size])
                local += float(t.local)
                bound += float(t.elbo) if start == 0 else float(t.local)
    torch.set_rng_state(state)
    return bound / (num_draws * x.shape[0]), local / (num_draws * x.shape[0])


def test_mean_elbo_draws_from_its_seed_chunk_by_chunk():
    from pyro_causal.elbo import mean_elbo

    model, x = drawn_model(), data(5)
    assert mean_elbo(model, x) == pytest.approx(mean_elbo_by_hand(model, x, 16, 0, 5), rel=1e-12)  # the defaults
    assert mean_elbo(model, x, num_draws=2, seed=3) == pytest.approx(mean_elbo_by_hand(model, x, 2, 3, 5), rel=1e-12)
    for batch_size, size in ((2, 2), (1, 1), (0, 1), (-4, 1), (9, 5)):
        got = mean_elbo(model, x, num_draws=2, seed=1, batch_size=batch_size)
        assert got == pytest.approx(mean_elbo_by_hand(model, x, 2, 1, size), rel=1e-12)
    # each chunk has its own draw: chunks of 2 are not the whole batch's estimate
    assert abs(mean_elbo(model, x, num_draws=2, seed=1, batch_size=2)[1] - mean_elbo(model, x, num_draws=2, seed=1)[1]) > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mean_elbo_leaves_the_cuda_generator_as_it_was():
    from pyro_causal.elbo import mean_elbo

    model, x = drawn_model().cuda(), data(5).cuda()
    torch.cuda.manual_seed(123)
    state = torch.cuda.get_rng_state()
    first = mean_elbo(model, x, num_draws=2)
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert mean_elbo(model, x, num_draws=2) == first


def test_unwrap_combines_the_masks_at_their_depths():
    from pyro_causal.elbo import _unwrap

    normal = dist.Normal(torch.zeros(2, 3, 4), 1.0)
    fn = dist.Independent(dist.Independent(normal, 1), 1).mask(torch.tensor([True, False]))
    base, mask = _unwrap(fn)
    assert base is normal and mask.shape == (2, 1, 1) and mask.reshape(-1).tolist() == [True, False]
    base, mask = _unwrap(fn, torch.tensor([False, True]))  # a site mask over the batch (2,)
    assert base is normal and mask.shape == (2, 1, 1) and mask.reshape(-1).tolist() == [False, False]
    assert _unwrap(fn, True)[1].reshape(-1).tolist() == [True, False]
    assert _unwrap(fn, False)[1].reshape(-1).tolist() == [False, False]
    inner = dist.Independent(normal.mask(torch.tensor([[True], [False], [True]])), 2)  # (3, 1) over (2, 3, 4)
    assert _unwrap(inner)[1].shape == (2, 3, 4) and _unwrap(normal) == (normal, None) and _unwrap(normal, True)[1] is None


def test_a_python_bool_site_mask_keeps_or_drops_the_graph_kl():
    model, x = tiny_model(), data()
    for mask, expected in ((True, hand_kls(model)[0]), (False, 0.0)):
        terms, _ = local_gradient(model, x, None, _GraphSite(mask=mask)(model.guide))
        torch.testing.assert_close(terms.kl["graph"].detach(), torch.as_tensor(expected, dtype=x.dtype))


@pytest.mark.parametrize("guide_keep, model_keep, kept", [
    ([True, False, True], None, [True, False, True]),
    (None, [True, True, False], [True, True, False]),
    ([True, False, True], [True, True, False], [True, False, False]),  # masked at either site: dropped
])
def test_a_site_mask_over_the_components_drops_their_embedding_kl(guide_keep, model_keep, kept):
    model, x = tiny_model(), data()
    with torch.no_grad():
        model.guide.embedding_log_scale.copy_(torch.linspace(-1.0, 0.5, 6).reshape(3, 2))

    class MaskU(Messenger):
        def __init__(self, keep):
            super().__init__()
            self.keep = keep

        def _process_message(self, msg):
            if msg["name"] == "u" and self.keep is not None:
                msg["mask"] = torch.tensor(self.keep)

    with patched_graph(model):
        terms = LatentInterventionELBO().terms(MaskU(model_keep)(model.model), MaskU(guide_keep)(model.guide), x)
    loc, scale = model.guide.embedding_loc.detach(), model.guide.embedding_log_scale.exp().detach()
    per_component = (0.5 * (scale ** 2 + loc ** 2 - 1) - scale.log()).sum(-1)
    torch.testing.assert_close(terms.kl["u"].detach(), per_component[torch.tensor(kept)].sum())


def test_kl_or_monte_carlo_falls_back_to_the_log_ratio_at_the_sample():
    from pyro_causal.elbo import kl_or_monte_carlo

    q, p = dist.Kumaraswamy(torch.tensor([2.0, 0.7]), torch.tensor([3.0, 1.5])), dist.Beta(torch.tensor([1.0, 2.0]), 2.5)
    s = torch.tensor([0.3, 0.8])
    torch.testing.assert_close(kl_or_monte_carlo(q, p, s), q.log_prob(s) - p.log_prob(s))
    a, b = dist.Beta(2.0, 3.0), dist.Beta(1.0, 4.0)
    torch.testing.assert_close(kl_or_monte_carlo(a, b, s), torch.distributions.kl_divergence(a, b))
    elbo = LatentInterventionELBO()
    assert elbo._closed_kl({"fn": a.to_event(0)}, {"fn": b}) is True
    assert elbo._closed_kl({"fn": q}, {"fn": p}) is False
    # remembered per pair of types: another guide or prior type is looked up anew
    assert elbo._closed_kl({"fn": a}, {"fn": dist.Kumaraswamy(2.0, 3.0)}) is False
    assert elbo._closed_kl({"fn": dist.Beta(torch.ones(2), 1.0)}, {"fn": dist.Beta(1.0, 4.0)}) is True
    assert elbo._closed_kl({"fn": dist.Kumaraswamy(2.0, 3.0)}, {"fn": a}) is False
    assert elbo._closed_kl({"fn": a}, {"fn": b}) is True


def test_a_global_site_without_a_closed_form_kl_is_the_log_ratio_at_the_draw():
    def model():
        pyro.sample("tau", dist.Gamma(torch.tensor(2.0), torch.tensor(3.0)))

    def guide():
        pyro.sample("tau", dist.LogNormal(torch.tensor(-0.5), torch.tensor(0.4)))

    torch.manual_seed(2)
    terms = LatentInterventionELBO().terms(model, guide)
    torch.manual_seed(2)
    tau = poutine.trace(guide).get_trace().nodes["tau"]["value"]
    expected = dist.LogNormal(torch.tensor(-0.5), torch.tensor(0.4)).log_prob(tau) - dist.Gamma(2.0, 3.0).log_prob(tau)
    torch.testing.assert_close(terms.kl["tau"], expected)
    assert float(terms.elbo) == pytest.approx(-float(expected), rel=1e-6)


def test_optimal_assignment_on_a_subset_of_large_batches_with_known_regimes():
    from unittest import mock

    from pyro_causal.elbo import ENCODER_ROWS

    model = tiny_model(truncation=2)
    torch.manual_seed(0)
    n = ENCODER_ROWS + 200
    x = torch.randn(n, 3, dtype=torch.float64)
    regimes = torch.where(torch.arange(n) % 3 == 0, torch.arange(n) % 2, torch.full((n,), -1))
    torch.manual_seed(4)
    perm = torch.randperm(n)
    with mock.patch("torch.randperm", lambda k, device=None: perm[:k] if k == perm.numel() else None):
        t = terms_at(model, x, regimes=regimes, assignment="optimal", supervision_weight=0.6)
    rows = perm[:ENCODER_ROWS]
    joint, _ = joint_by_hand(model, x)
    exact = torch.log_softmax(joint, 0)
    net = torch.log_softmax(model.guide.assignment_logits(x, model.guide.embedding_loc).detach(), -1).T
    known = regimes >= 0
    distillation = -(exact.exp() * (exact - net)).sum(0)
    supervision = 0.6 * net.gather(0, regimes.clamp(min=0).unsqueeze(0)).squeeze(0)
    per_row = torch.where(known, supervision, distillation)[rows]
    torch.testing.assert_close(t.auxiliary.detach(), n / ENCODER_ROWS * per_row.sum())
    local = torch.where(known, joint.gather(0, regimes.clamp(min=0).unsqueeze(0)).squeeze(0), torch.logsumexp(joint, 0))
    torch.testing.assert_close((t.log_likelihood + t.assignments).detach(), local.sum())


def test_programs_of_another_shape_get_trace_enum_elbos_terms_and_gradient():
    from pyro.infer import TraceEnum_ELBO

    x = torch.tensor([0.3, -1.2, 2.0])
    logits = torch.tensor([0.4, -0.1], requires_grad=True)

    def model(x):
        with pyro.plate("data", 3):
            a = pyro.sample("a", dist.Categorical(torch.tensor([0.3, 0.7])))
            b = pyro.sample("b", dist.Categorical(torch.tensor([0.6, 0.4])))
            pyro.sample("x", dist.Normal(a.float() - b.float(), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 3):
            pyro.sample("a", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            pyro.sample("b", dist.Categorical(torch.tensor([0.2, 0.8])), infer={"enumerate": "parallel"})

    stock = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    (expected,) = torch.autograd.grad(stock, logits)
    terms = LatentInterventionELBO().terms(model, guide, x)
    assert terms.kl == {} and float(terms.observed) == 0.0 and float(terms.auxiliary) == 0.0
    assert float(terms.local.detach()) == pytest.approx(-float(stock.detach()), rel=1e-6)
    assert float(terms.log_likelihood) == pytest.approx(-float(stock.detach()), rel=1e-6)
    assert not terms.log_likelihood.requires_grad
    (grad,) = torch.autograd.grad(-terms.local, logits)
    torch.testing.assert_close(grad, expected)
    with torch.no_grad():
        quiet = LatentInterventionELBO().terms(model, guide, x)
    assert float(quiet.local) == pytest.approx(-float(stock.detach()), rel=1e-6) and not quiet.local.requires_grad


@pytest.mark.parametrize("x_scale", [1.0, 2.0])
def test_local_sites_at_other_scales_get_trace_enum_elbos_loss(x_scale):
    """One scale for every local site (here 3, from ``poutine.scale``) is summed out in closed form;
    two scales (``x`` scaled once more) are left to TraceEnum_ELBO: with the guide's own ``q(a)``
    (amortised assignments) both give TraceEnum_ELBO's loss."""
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO

    x = torch.tensor([0.3, -1.2, 2.0])

    def model(x):
        with pyro.plate("data", 3):
            a = pyro.sample("a", dist.Categorical(torch.tensor([0.3, 0.7])))
            with poutine.scale(scale=x_scale):
                pyro.sample("x", dist.Normal(2.0 * a.float(), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 3):
            pyro.sample("a", dist.Categorical(torch.tensor([0.4, 0.6])), infer={"enumerate": "parallel"})

    scaled_model, scaled_guide = poutine.scale(model, scale=3.0), poutine.scale(guide, scale=3.0)
    stock = TraceEnum_ELBO(max_plate_nesting=1).loss(scaled_model, scaled_guide, x)
    elbo = LatentInterventionELBO(assignment="amortized")
    assert elbo.loss(scaled_model, scaled_guide, x) == pytest.approx(stock, rel=1e-6)


class _GainNormal(dist.Normal):
    """A Normal that keeps its extra attributes (graph, edge gain, components) when expanded."""

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k in ("graph", "edge_gain", "component", "embeddings")})
        return new


def _gain_normal(graph, gain, seen, attributes, loc):
    """A likelihood carrying the graph and a fixed edge gain, with or without components."""
    fn = _GainNormal(loc, 1.0)
    fn.graph = graph
    fn.edge_gain = lambda value, probs: seen.append(probs) or gain
    for name, value in attributes.items():
        setattr(fn, name, value)
    return fn


@pytest.mark.parametrize("attributes", ["none", "embeddings", "both"])
def test_local_graph_gradient_of_a_likelihood_with_or_without_components(attributes):
    """With no site summed out the gain gets each row's one-hot component when the likelihood
    has components and embeddings, else no weights."""
    from pyro_causal.distributions import TwoCycleFreeBernoulli

    x = torch.tensor([0.5, -1.0, 2.0, 0.1])
    off = ~torch.eye(3, dtype=torch.bool)
    gain = torch.tensor([[0.0, 1.5, -2.0], [0.7, 0.0, 0.3], [-1.1, 2.5, 0.0]])
    logits = torch.tensor([[0.0, 0.4, -0.7], [-1.1, 0.0, 0.9], [0.3, -0.2, 0.0]], requires_grad=True)
    component = torch.tensor([1, 0, 1, 1])
    attrs = {"none": {}, "embeddings": {"embeddings": torch.zeros(2, 4)},
             "both": {"embeddings": torch.zeros(3, 4), "component": component}}[attributes]  # K = 3 > max + 1
    seen = []

    def model(x):
        graph = pyro.sample("graph", dist.Bernoulli(torch.full((3, 3), 0.3)).mask(off).to_event(2))
        with pyro.plate("data", 4):
            pyro.sample("x", _gain_normal(graph, gain, seen, attrs, graph.sum(0)[:1].expand(4)), obs=x)

    def guide(x):
        probs = torch.sigmoid(logits) * off
        pyro.sample("graph", TwoCycleFreeBernoulli(probs=probs, pairs=off).mask(off).to_event(2))

    terms = LatentInterventionELBO(graph_estimator="local").terms(model, guide, x)
    (grad,) = torch.autograd.grad(terms.log_likelihood, logits)
    p = torch.sigmoid(logits) * off
    (expected,) = torch.autograd.grad(((p * (1 - p.T / 2)) * gain).sum(), logits)
    torch.testing.assert_close(grad, expected)
    expected_probs = torch.nn.functional.one_hot(component, 3).float() if attributes == "both" else None
    assert (seen[-1] is None) if expected_probs is None else torch.equal(seen[-1], expected_probs)


def test_local_graph_gradient_skips_a_likelihood_without_a_gain_and_uses_the_next():
    from pyro_causal.distributions import TwoCycleFreeBernoulli

    x = torch.tensor([0.5, -1.0, 2.0, 0.1])
    off = ~torch.eye(3, dtype=torch.bool)
    gain = torch.tensor([[0.0, 1.5, -2.0], [0.7, 0.0, 0.3], [-1.1, 2.5, 0.0]])
    logits = torch.tensor([[0.0, 0.4, -0.7], [-1.1, 0.0, 0.9], [0.3, -0.2, 0.0]], requires_grad=True)

    def model(x):
        graph = pyro.sample("graph", dist.Bernoulli(torch.full((3, 3), 0.3)).mask(off).to_event(2))
        loc = graph.sum(0)[:1].expand(4)
        with pyro.plate("data", 4):
            pyro.sample("x", _gain_normal(graph, None, [], {}, loc), obs=x)  # no gain: skipped
            pyro.sample("y", _gain_normal(graph, gain, [], {}, loc), obs=x)

    def guide(x):
        probs = torch.sigmoid(logits) * off
        pyro.sample("graph", TwoCycleFreeBernoulli(probs=probs, pairs=off).mask(off).to_event(2))

    terms = LatentInterventionELBO(graph_estimator="local").terms(model, guide, x)
    (grad,) = torch.autograd.grad(terms.log_likelihood, logits)
    p = torch.sigmoid(logits) * off
    (expected,) = torch.autograd.grad(((p * (1 - p.T / 2)) * gain).sum(), logits)
    torch.testing.assert_close(grad, expected)


def test_mean_elbo_passes_known_targets_on():
    from pyro_causal.elbo import mean_elbo

    model, x = drawn_model(), data(5)
    targets = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 1.0]], dtype=x.dtype)
    elbo = LatentInterventionELBO(assignment="optimal")
    torch.manual_seed(0)
    with torch.no_grad():
        t = elbo.terms(model.model, model.guide, x, None, targets)
    assert mean_elbo(model, x, targets=targets, num_draws=1) == pytest.approx(
        (float(t.elbo) / 5, float(t.local) / 5), rel=1e-12)
    assert abs(mean_elbo(model, x, targets=targets, num_draws=1)[1] - mean_elbo(model, x, num_draws=1)[1]) > 1e-3


def test_closed_forms_off_with_known_regimes_counts_the_observed_rows_once():
    """``closed_forms=False``: ``z``'s log-probabilities come from the trace, masked per row by the
    ``obs_mask`` split (observed rows at their regime, the others summed out)."""
    model, x = tiny_model(), data()
    regimes = torch.tensor([0, -1, 2, 1, -1, 2])
    with torch.no_grad():
        model.guide.target_logits.copy_(torch.tensor([[30.0, -30.0, -30.0], [-30.0, 30.0, 30.0]]))
    torch.manual_seed(9)
    sampled = terms_at(model, x, regimes=regimes, assignment="optimal", closed_forms=False)
    torch.manual_seed(9)
    v = guide_draws(model, x, regimes=regimes).nodes["v"]["value"].detach()
    from pyro_causal.distributions import stick_breaking_log_weights

    log_w = stick_breaking_log_weights(v)
    pi = torch.sigmoid(model.guide.target_logits).detach()
    joint = model.log_likelihood(x, GRAPH, model.guide.embedding_loc.detach(), model.full_targets(pi)).detach() \
        + log_w.unsqueeze(-1)
    known = regimes >= 0
    local = torch.where(known, joint.gather(0, regimes.clamp(min=0).unsqueeze(0)).squeeze(0), torch.logsumexp(joint, 0))
    torch.testing.assert_close(sampled.local.detach(), local.sum())


def test_one_component_with_known_regimes():
    model, x = tiny_model(truncation=1), data()
    regimes = torch.tensor([0, -1, 0, 0, -1, 0])
    t = terms_at(model, x, regimes=regimes, assignment="optimal", supervision_weight=0.4)
    ll = model.log_likelihood(x, GRAPH, model.guide.embedding_loc.detach(), torch.zeros(1, 3, dtype=x.dtype)).detach()
    torch.testing.assert_close(t.local.detach(), ll.sum())
    torch.testing.assert_close(t.log_likelihood.detach(), ll.sum())
    torch.testing.assert_close(t.auxiliary.detach(), torch.zeros((), dtype=x.dtype))  # log q(z = 0) = 0


def test_the_supervision_of_a_conditioned_z_follows_its_site_mask():
    model, x = tiny_model(), data()
    keep = torch.tensor([True, False, True, True, False, True])

    class MaskZ(Messenger):
        def _process_message(self, msg):
            if msg["name"] == "z":
                msg["mask"] = keep

    conditioned = MaskZ()(poutine.condition(model.model, data={"z": REGIMES}))
    with patched_graph(model):
        t = LatentInterventionELBO(supervision_weight=0.7).terms(conditioned, model.guide, x)
    log_q = torch.log_softmax(model.guide.assignment_logits(x, model.guide.embedding_loc).detach(), -1)
    supervision = log_q.gather(1, REGIMES.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(t.auxiliary.detach(), 0.7 * supervision[keep].sum())
    assert abs(float(supervision[~keep].sum())) > 0.1


def test_a_local_latent_site_with_its_own_guide_factor_enters_as_log_p_minus_log_q():
    y = torch.tensor([0.3, -1.2, 2.0])
    loc = torch.tensor([0.1, -0.4, 0.9])

    def model(y):
        with pyro.plate("data", 3):
            w = pyro.sample("w", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(w, 1.0), obs=y)

    def guide(y):
        with pyro.plate("data", 3):
            pyro.sample("w", dist.Normal(loc, 0.5))

    torch.manual_seed(6)
    terms = LatentInterventionELBO().terms(model, guide, y)
    torch.manual_seed(6)
    w = poutine.trace(guide).get_trace(y).nodes["w"]["value"]
    log_lik = dist.Normal(w, 1.0).log_prob(y).sum()
    expected = log_lik + (dist.Normal(0.0, 1.0).log_prob(w) - dist.Normal(loc, 0.5).log_prob(w)).sum()
    torch.testing.assert_close(terms.local, expected)
    torch.testing.assert_close(terms.log_likelihood, log_lik)
    assert terms.kl == {}


@pytest.mark.parametrize("mask, expected", [(None, [-0.9189385, -1.4189385]), (True, [-0.9189385, -1.4189385]),
                                            (False, [0.0, 0.0]),
                                            (torch.tensor([True, False]), [-0.9189385, 0.0])])
def test_a_local_sites_log_prob_is_masked_by_its_site_mask(mask, expected):
    site = {"fn": dist.Normal(0.0, 1.0), "value": torch.tensor([0.0, 1.0]), "mask": mask}
    torch.testing.assert_close(_site_log_prob(site), torch.tensor(expected))


def test_the_defaults_and_num_particles_draws_per_step():
    # kappa = 0.5 (section 3.9's weight of the labelled rows' log q(z = label)) unless told
    assert LatentInterventionELBO().supervision_weight == 0.5
    model, x = tiny_model(), data()
    runs = []

    def counting_guide(*args, **kwargs):
        runs.append(1)
        return model.guide(*args, **kwargs)

    def guide_runs(num_particles):
        runs.clear()
        LatentInterventionELBO(num_particles=num_particles).loss(model.model, counting_guide, x)
        return len(runs)

    assert LatentInterventionELBO(num_particles=3).num_particles == 3
    assert guide_runs(3) - guide_runs(1) == 2  # one guide run per draw, beside the same planning run


@pytest.mark.parametrize("with_observation", [True, False])
def test_a_program_without_local_sites_is_its_kls_and_its_observed_sites(with_observation):
    # float64 sites: the zero terms take the dtype of the KLs
    loc, scale = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    y = torch.tensor(0.3, dtype=torch.float64)

    def model():
        pyro.sample("w", dist.Normal(torch.zeros((), dtype=torch.float64), 1.0))
        if with_observation:
            pyro.sample("y", dist.Normal(torch.zeros((), dtype=torch.float64), 2.0), obs=y)

    def guide():
        pyro.sample("w", dist.Normal(loc, scale))

    terms = LatentInterventionELBO().terms(model, guide)
    kl = torch.log(1.0 / scale) + (scale ** 2 + loc ** 2) / 2 - 0.5
    torch.testing.assert_close(terms.kl["w"], kl)
    observed = dist.Normal(0.0, 2.0).log_prob(y) if with_observation else torch.zeros((), dtype=torch.float64)
    torch.testing.assert_close(terms.observed, observed)
    for term in (terms.local, terms.log_likelihood):
        assert torch.is_tensor(term) and term.dtype == torch.float64 and float(term) == 0.0
    torch.testing.assert_close(torch.as_tensor(terms.elbo), observed - kl)

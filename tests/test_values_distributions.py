"""Value checks of the small distributions: stick weights, the two-cycle-free graph law, its KL."""
import math

import pyro
import pytest
import torch
from pyro.distributions import Bernoulli
from torch.distributions import kl_divergence

from pyro_causal.distributions import (
    StickBreakingCategorical,
    StraightThroughBernoulli,
    TwoCycleFreeBernoulli,
    expected_log_stick_weights,
    stick_breaking_log_weights,
)

P = torch.tensor([[0.0, 0.7, 0.2], [0.4, 0.0, 0.9], [0.6, 0.3, 0.0]], dtype=torch.float64)
PAIRS = torch.tensor([[False, True, False], [True, False, True], [False, True, False]])  # (0, 2) fixed


def test_stick_breaking_weights_by_hand():
    v = torch.tensor([[0.2, 0.5], [0.6, 0.25]], dtype=torch.float64)
    expected = torch.tensor([[0.2, 0.8 * 0.5, 0.8 * 0.5], [0.6, 0.4 * 0.25, 0.4 * 0.75]], dtype=torch.float64)
    torch.testing.assert_close(stick_breaking_log_weights(v).exp(), expected)


def test_stick_breaking_weights_at_the_ends_of_the_unit_interval_stay_finite():
    v = torch.tensor([0.0, 1.0])
    log_w = stick_breaking_log_weights(v)
    tiny, eps = torch.finfo(v.dtype).tiny, torch.finfo(v.dtype).eps
    torch.testing.assert_close(log_w, torch.tensor([math.log(tiny), 0.0, math.log(eps)]))


def test_expected_log_stick_weights_by_hand():
    a = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)
    b = torch.tensor([1.5, 4.0, 0.7], dtype=torch.float64)
    dg = torch.digamma
    e_v = dg(a) - dg(a + b)
    e_rest = dg(b) - dg(a + b)
    expected = torch.stack([e_v[0], e_rest[0] + e_v[1], e_rest[0] + e_rest[1] + e_v[2],
                            e_rest[0] + e_rest[1] + e_rest[2]])
    torch.testing.assert_close(expected_log_stick_weights(a, b), expected)
    batched = expected_log_stick_weights(torch.stack([a, b]), torch.stack([b, a]))
    torch.testing.assert_close(batched[0], expected)


def test_straight_through_sample_is_hard_with_unit_gradient():
    torch.manual_seed(0)
    probs = torch.tensor([0.0, 1.0, 0.3], requires_grad=True)
    q = StraightThroughBernoulli(probs=probs)
    draw = q.rsample((2,))
    assert draw[:, :2].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    draw.sum().backward()
    torch.testing.assert_close(probs.grad, torch.full((3,), 2.0))
    assert q.marginal_probs() is q.probs


def test_two_cycle_free_marginals_by_hand():
    q = TwoCycleFreeBernoulli(probs=P, pairs=PAIRS)
    expected = P.clone()
    expected[0, 1], expected[1, 0] = 0.7 * (1 - 0.4 / 2), 0.4 * (1 - 0.7 / 2)
    expected[1, 2], expected[2, 1] = 0.9 * (1 - 0.3 / 2), 0.3 * (1 - 0.9 / 2)
    torch.testing.assert_close(q.marginal_probs(), expected)


def test_pair_log_probs_by_hand():
    none, forward, backward = TwoCycleFreeBernoulli(probs=P, pairs=PAIRS).pair_log_probs()
    assert float(none[0, 1]) == pytest.approx(math.log(0.3 * 0.6))
    assert float(forward[0, 1]) == pytest.approx(math.log(0.7 * 0.8))
    assert float(backward[0, 1]) == pytest.approx(math.log(0.4 * 0.65))
    # Probabilities 0 and 1 are clamped, not -inf / nan.
    edge = TwoCycleFreeBernoulli(probs=torch.tensor([[0.0, 1.0], [0.0, 0.0]]), pairs=~torch.eye(2, dtype=torch.bool))
    none, forward, _ = edge.pair_log_probs()
    assert torch.isfinite(none).all() and torch.isfinite(forward).all()
    assert float(forward[0, 1]) == pytest.approx(0.0, abs=1e-6)


def test_two_cycle_free_log_prob_by_hand():
    q = TwoCycleFreeBernoulli(probs=P, pairs=PAIRS)
    graph = torch.tensor([[0, 1, 1], [0, 0, 0], [1, 1, 0]], dtype=torch.float64)
    lp = q.log_prob(graph)
    # pair (0, 1): forward; pair (1, 2): backward 2 -> 1; pair (0, 2) fixed: independent entries.
    assert float(lp[0, 1]) == pytest.approx(math.log(0.7 * 0.8))
    assert float(lp[1, 2]) == pytest.approx(math.log(0.3 * (1 - 0.9 / 2)))
    assert float(lp[1, 0]) == 0.0 and float(lp[2, 1]) == 0.0
    assert float(lp[0, 2]) == pytest.approx(math.log(0.2)) and float(lp[2, 0]) == pytest.approx(math.log(0.6))
    none = torch.zeros(3, 3, dtype=torch.float64)
    assert float(q.log_prob(none)[0, 1]) == pytest.approx(math.log(0.3 * 0.6))
    cycle = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    assert float(q.log_prob(cycle)[0, 1]) == -math.inf


def test_two_cycle_free_kl_by_hand():
    q = TwoCycleFreeBernoulli(probs=P, pairs=PAIRS)
    prior_p = torch.tensor([[0.5, 0.2, 0.35], [0.45, 0.5, 0.1], [0.7, 0.6, 0.5]], dtype=torch.float64)
    kl = kl_divergence(q, Bernoulli(probs=prior_p))
    a, b, pa, pb = 0.7, 0.4, 0.2, 0.45
    pair = ((1 - a) * (1 - b) * math.log((1 - a) * (1 - b) / ((1 - pa) * (1 - pb)))
            + a * (1 - b / 2) * math.log(a * (1 - b / 2) / (pa * (1 - pb)))
            + b * (1 - a / 2) * math.log(b * (1 - a / 2) / ((1 - pa) * pb)))
    assert float(kl[0, 1]) == pytest.approx(pair)
    assert float(kl[1, 0]) == 0.0
    independent = 0.2 * math.log(0.2 / 0.35) + 0.8 * math.log(0.8 / 0.65)
    assert float(kl[0, 2]) == pytest.approx(independent)


def test_resolved_two_cycles_keep_each_direction_with_probability_one_half():
    torch.manual_seed(0)
    ones = torch.ones(3, 3)
    pairs = ~torch.eye(3, dtype=torch.bool)
    pairs[0, 2] = pairs[2, 0] = False
    q = TwoCycleFreeBernoulli(probs=ones, pairs=pairs)
    for draws in (q.sample((4000,)), q.rsample((4000,)).detach()):
        assert (draws[:, 0, 1] + draws[:, 1, 0] == 1).all()  # exactly one direction of a free pair
        assert (draws[:, 0, 2] * draws[:, 2, 0] == 1).all()  # a fixed pair is not resolved
        assert 0.46 < float(draws[:, 0, 1].mean()) < 0.54
        assert 0.46 < float(draws[:, 1, 2].mean()) < 0.54


def test_two_cycle_free_law_passes_validate_args_on():
    bad = torch.tensor([[0.0, 1.5], [0.2, 0.0]])
    pairs = ~torch.eye(2, dtype=torch.bool)
    q = TwoCycleFreeBernoulli(probs=bad, pairs=pairs, validate_args=False)  # validation on globally (conftest)
    assert float(q.marginal_probs()[1, 0]) == pytest.approx(0.2 * (1 - 1.5 / 2))
    with pytest.raises(ValueError, match="probs"):
        TwoCycleFreeBernoulli(probs=bad, pairs=pairs)
    with pyro.validation_enabled(False):
        with pytest.raises(ValueError, match="probs"):
            TwoCycleFreeBernoulli(probs=bad, pairs=pairs, validate_args=True)


def test_two_cycle_free_law_with_two_batch_dimensions_matches_each_matrix():
    """A ``(2, 2, 3, 3)`` batch (the second batch size differs from ``d``) gives, entry by entry,
    the values of the ``(3, 3)`` law (checked by hand above)."""
    scales = torch.tensor([[1.0, 0.5], [0.25, 0.9]], dtype=torch.float64)
    probs = scales[..., None, None] * P + (1 - scales[..., None, None]) * P.T  # (2, 2, 3, 3), zero diagonal
    graphs = torch.tensor([[[0, 1, 1], [0, 0, 0], [1, 1, 0]], [[0, 0, 0], [1, 0, 1], [0, 0, 0]]], dtype=torch.float64)
    values = torch.stack([graphs, graphs.flip(0)])  # (2, 2, 3, 3)
    prior = torch.tensor([[0.5, 0.2, 0.35], [0.45, 0.5, 0.1], [0.7, 0.6, 0.5]], dtype=torch.float64)
    batched = TwoCycleFreeBernoulli(probs=probs, pairs=PAIRS)
    kl = kl_divergence(batched, Bernoulli(probs=prior.expand(2, 2, 3, 3)))  # torch's Bernoulli KL needs equal shapes
    for i in range(2):
        for j in range(2):
            one = TwoCycleFreeBernoulli(probs=probs[i, j], pairs=PAIRS)
            torch.testing.assert_close(batched.marginal_probs()[i, j], one.marginal_probs())
            for got, expected in zip(batched.pair_log_probs(), one.pair_log_probs()):
                torch.testing.assert_close(got[i, j], expected)
            torch.testing.assert_close(batched.log_prob(values)[i, j], one.log_prob(values[i, j]))
            torch.testing.assert_close(kl[i, j], kl_divergence(one, Bernoulli(probs=prior)))


def test_two_cycle_free_law_stays_on_the_device_of_its_probabilities():
    # the meta device stands in for an accelerator: a tensor made on the CPU cannot be mixed in
    probs = torch.full((3, 3), 0.5, device="meta")
    pairs = torch.ones(3, 3, dtype=torch.bool, device="meta")
    with pyro.validation_enabled(False):  # validation reads values, which meta tensors do not have
        q = TwoCycleFreeBernoulli(probs=probs, pairs=pairs)
        results = (q.sample(), q.rsample(), q.log_prob(torch.zeros(3, 3, device="meta")),
                   kl_divergence(q, Bernoulli(probs=probs)))
    assert [r.device.type for r in results] == ["meta"] * 4


@pytest.mark.parametrize("u, kept", [(0.0, "upper"), (0.5 - 2 ** -24, "upper"), (0.5, "lower"), (0.75, "lower")])
def test_two_cycle_coin_keeps_i_to_j_exactly_when_u_is_below_one_half(monkeypatch, u, kept):
    """``u ~ U[0, 1)`` on torch's grid of ``2^-24``: ``u < 1/2`` holds on exactly half of it, so the coin
    is fair; the kept direction of a resolved pair ``i < j`` is ``i -> j`` then, ``j -> i`` otherwise."""
    monkeypatch.setattr(torch, "rand", lambda shape, device=None: torch.full(shape, u, device=device))
    pairs = ~torch.eye(3, dtype=torch.bool)
    pairs[0, 2] = pairs[2, 0] = False
    q = TwoCycleFreeBernoulli(probs=torch.ones(3, 3) - torch.eye(3), pairs=pairs)
    upper = torch.tensor([[0, 1, 1], [0, 0, 1], [1, 0, 0]], dtype=torch.float32)  # fixed pair (0, 2) keeps both
    expected = upper if kept == "upper" else torch.tensor([[0, 0, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.float32)
    assert q.sample().tolist() == expected.tolist()
    assert q.rsample().detach().tolist() == expected.tolist()


def test_two_cycle_free_log_prob_is_multilinear_in_each_pair():
    """Its gradient in the value (a straight-through sample's path) is that of
    ``(1-a)(1-b) log q(none) + a(1-b) log q(i->j) + (1-a) b log q(j->i)`` for the pair ``(a, b)``."""
    q = TwoCycleFreeBernoulli(probs=P, pairs=PAIRS)
    none, forward, backward = q.pair_log_probs()
    for a, b in ((1.0, 0.0), (0.0, 1.0), (0.0, 0.0)):
        graph = torch.zeros(3, 3, dtype=torch.float64)
        graph[0, 1], graph[1, 0] = a, b
        graph.requires_grad_(True)
        q.log_prob(graph)[0, 1].backward()
        d_a = -(1 - b) * none[0, 1] + (1 - b) * forward[0, 1] - b * backward[0, 1]
        d_b = -(1 - a) * none[0, 1] - a * forward[0, 1] + (1 - a) * backward[0, 1]
        torch.testing.assert_close(graph.grad[0, 1], d_a)
        torch.testing.assert_close(graph.grad[1, 0], d_b)


def test_stick_breaking_categorical_passes_validate_args_on_and_expands_subclasses():
    sticks = torch.tensor([0.3, 0.5])
    with pyro.validation_enabled(False):
        with pytest.raises(ValueError, match="value"):
            StickBreakingCategorical(sticks, validate_args=True).log_prob(torch.tensor(3))
    assert float(StickBreakingCategorical(sticks, validate_args=False).log_prob(torch.tensor(1))) == pytest.approx(
        math.log(0.7 * 0.5))

    class Labelled(StickBreakingCategorical):
        def __init__(self, sticks, label, validate_args=None):
            self.label = label
            super().__init__(sticks, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(Labelled, _instance)
            new.label = self.label
            return super().expand(batch_shape, _instance=new)

    wide = Labelled(sticks, "mine").expand((4,))
    assert type(wide) is Labelled and wide.label == "mine" and wide.batch_shape == (4,)
    torch.testing.assert_close(wide.sticks, sticks)
    torch.testing.assert_close(wide.probs, torch.tensor([0.3, 0.35, 0.35]).expand(4, 3))


def test_amortized_assignment_log_prob_equals_the_categorical_of_its_logits_with_its_gradients():
    """``q(z | x)`` scores the enumerated support ``(K, 1)``, one value per row ``(B,)`` and draws
    ``(S, B)`` as ``Categorical(logits)`` does, and passes the same gradients to the network."""
    from pyro_causal.guide import AmortizedAssignment, LatentInterventionGuide

    torch.manual_seed(0)
    guide = LatentInterventionGuide(3, 4, 5)
    x, u = torch.randn(6, 3), torch.randn(4, 5)
    dist = AmortizedAssignment(guide, x, u)
    reference = torch.distributions.Categorical(logits=guide.assignment_logits(x, u))
    support = dist.enumerate_support(expand=False)
    assert support.shape == (4, 1)
    values = [support, torch.tensor([3, 0, 1, 2, 2, 0]), torch.randint(0, 4, (2, 6))]
    for value in values:
        torch.testing.assert_close(dist.log_prob(value), reference.log_prob(value), rtol=0, atol=1e-6)
    weights = torch.randn(4, 6)
    (weights * dist.log_prob(support)).sum().backward()
    ours = [p.grad.clone() for p in guide.encoder.parameters()]
    guide.zero_grad()
    (weights * reference.log_prob(support)).sum().backward()
    for mine, theirs in zip(ours, guide.encoder.parameters()):
        torch.testing.assert_close(mine, theirs.grad, rtol=1e-5, atol=1e-7)

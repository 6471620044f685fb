"""Tests of the order search (pyro_causal.order_search) and the refit with an order held."""
import inspect
import itertools
from dataclasses import replace

import networkx as nx
import numpy as np
import pytest
import torch

from pyro_causal import AfterTraining, FitConfig, TrainingConfig, simulate
from pyro_causal.held_refit import order_held
from pyro_causal.model import LatentInterventionModel
from pyro_causal.order_search import component_moments, graph_scores, insertion_moves, order_scores, search_order


def weighted_gaussian_fit(x, weights, target, inputs):
    """Brute force: weighted least squares with an intercept, the maximum log-likelihood."""
    design = np.column_stack([x[:, inputs], np.ones(len(x))])
    w = np.sqrt(weights)
    coef = np.linalg.lstsq(design * w[:, None], x[:, target] * w, rcond=None)[0]
    residual = x[:, target] - design @ coef
    total = weights.sum()
    variance = (weights * residual**2).sum() / total
    return -0.5 * total * (np.log(2 * np.pi * variance) + 1.0)


@pytest.fixture(scope="module")
def mixture():
    data = simulate(5, 1.5, 3000, seed=3)
    x = (data.x - data.x.mean(0)) / data.x.std(0)
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(data.num_regimes), len(x))  # any soft assignment
    pi = rng.uniform(0, 1, data.targets.shape)
    pi[0] = 0.0
    return data, x, q, pi


@pytest.mark.parametrize("components", [None, 2])
@pytest.mark.parametrize("perfect", [False, True])
def test_order_scores_equal_weighted_least_squares(mixture, perfect, components):
    data, x, q, pi = mixture
    if components is not None:  # the first components, the last one holding the others' rows
        q = np.column_stack([q[:, :components - 1], q[:, components - 1:].sum(1)])
        pi = pi[:components]
    orders = [[0, 1, 2, 3, 4], [4, 2, 0, 3, 1], [1, 3, 4, 0, 2]]
    scores = order_scores(component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi),
                          torch.tensor(orders), perfect)
    for order, score in zip(orders, scores):
        expected = 0.0
        for t, j in enumerate(order):
            before = order[:t]
            expected += weighted_gaussian_fit(x, q @ (1 - pi[:, j]), j, before)
            for k in range(1, len(pi)):
                expected += pi[k, j] * weighted_gaussian_fit(x, q[:, k] * 1.0, j, [] if perfect else before)
        assert float(score) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("perfect", [False, True])
def test_graph_scores_regress_each_variable_on_its_parents(mixture, perfect):
    data, x, q, pi = mixture
    graphs = [data.adjacency, data.adjacency.T, np.zeros_like(data.adjacency), np.triu(np.ones((5, 5), int), 1)]
    scores = graph_scores(component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi),
                          torch.tensor(np.stack(graphs)), perfect)
    for graph, score in zip(graphs, scores):
        expected = 0.0
        for j in range(5):
            parents = list(np.nonzero(graph[:, j])[0])
            expected += weighted_gaussian_fit(x, q @ (1 - pi[:, j]), j, parents)
            for k in range(1, len(pi)):
                expected += pi[k, j] * weighted_gaussian_fit(x, q[:, k] * 1.0, j, [] if perfect else parents)
        assert float(score) == pytest.approx(expected, rel=1e-7)
    if not perfect:  # imperfect interventions unless asked
        assert torch.equal(graph_scores(component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi),
                                        torch.tensor(np.stack(graphs))), scores)
    # a complete DAG scores as its order does
    order = torch.tensor([[0, 1, 2, 3, 4]])
    assert float(scores[3]) == pytest.approx(float(order_scores(component_moments(torch.tensor(x), torch.tensor(q)),
                                                                torch.tensor(pi), order, perfect)[0]), rel=1e-12)


@pytest.mark.parametrize("perfect", [False, True])
def test_graph_scores_do_not_depend_on_how_families_are_shared_chunked_or_keyed(mixture, perfect, monkeypatch):
    """Graphs that share (variable, parent set) families are scored from one regression per
    family; each graph's score is the one it gets alone, with any chunk size and either key."""
    from pyro_causal import order_search

    data, x, q, pi = mixture
    rng = np.random.default_rng(4)
    graphs = torch.tensor(np.triu(rng.random((40, 5, 5)) < 0.5, 1))
    graphs = torch.cat([graphs, graphs[:10]])  # whole graphs repeated, besides the shared families
    moments, pi = component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi)
    alone = torch.cat([graph_scores(moments, pi, g[None], perfect) for g in graphs])
    assert torch.equal(graph_scores(moments, pi, graphs, perfect), alone)
    monkeypatch.setattr(order_search, "FAMILY_CHUNK", 3)
    monkeypatch.setattr(order_search, "FAMILY_KEY_BITS", 0)  # rows sorted instead of integer keys
    assert torch.equal(graph_scores(moments, pi, graphs, perfect), alone)
    assert len(set(alone.tolist())) == len(torch.unique(graphs.reshape(len(graphs), -1), dim=0)) > 30  # told apart


@pytest.mark.parametrize("perfect", [False, True])
def test_mixture_scores_regress_each_family_once_over_their_life_and_score_as_fresh(mixture, perfect, monkeypatch):
    """A :class:`MixtureScores` remembers the families it regressed: graphs scored later get the
    scores a fresh ``graph_scores`` gives them, and only their new families are regressed."""
    from pyro_causal import order_search

    data, x, q, pi = mixture
    moments, pi = component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi)
    rng = np.random.default_rng(5)
    first, second = (torch.tensor(np.triu(rng.random((25, 5, 5)) < 0.5, 1)) for _ in range(2))
    scores = order_search.MixtureScores(moments, pi, perfect)
    regressed = []
    regress = scores._regress
    monkeypatch.setattr(scores, "_regress", lambda families: regressed.append(families) or regress(families))
    assert torch.equal(scores.graphs(first), graph_scores(moments, pi, first, perfect))
    assert torch.equal(scores.graphs(second), graph_scores(moments, pi, second, perfect))
    assert torch.equal(scores.graphs(first), graph_scores(moments, pi, first, perfect))

    def families(graphs):
        return {(j, tuple(g[:, j].tolist())) for g in graphs.int() for j in range(5)}

    assert [len(f) for f in regressed] == [len(families(first)), len(families(second) - families(first))]
    assert len(regressed[1]) > 0  # the second batch brought new families, and only those were regressed
    orders = torch.tensor([[4, 2, 0, 3, 1], [0, 1, 2, 3, 4]])
    assert torch.equal(scores.orders(orders), order_scores(moments, pi, orders, perfect))


def test_search_order_shares_the_regressions_it_is_given(mixture):
    """Climbs handed one :class:`MixtureScores` reach what separate climbs reach."""
    from pyro_causal.order_search import MixtureScores

    data, x, q, pi = mixture
    moments, pi = component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi)
    shared = MixtureScores(moments, pi, True)
    for start in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [0, 1, 2, 3, 4]):
        assert search_order(moments, pi, start, perfect=True, scores=shared) == search_order(moments, pi, start, perfect=True)
    assert len(shared._keys) > 0  # the climbs regressed through the scores they were given
    defaults = inspect.signature(search_order).parameters
    assert (defaults["max_moves"].default, defaults["tolerance"].default) == (200, 1e-6)
    assert search_order(moments, pi, [4, 3, 2, 1, 0], max_moves=0) == \
        ([4, 3, 2, 1, 0], float(order_scores(moments, pi, torch.tensor([[4, 3, 2, 1, 0]]))[0]), 0)


def three_mixtures(mixture):
    """``(moments (3, K, d + 1, d + 1), pi (3, K, d))``: the fixture's mixture and two others on its rows."""
    data, x, q, pi = mixture
    rng = np.random.default_rng(6)
    qs = [q] + [rng.dirichlet(np.ones(q.shape[1]), len(x)) for _ in range(2)]
    pis = [pi] + [np.vstack([np.zeros(pi.shape[1]), rng.uniform(0, 1, (pi.shape[0] - 1, pi.shape[1]))]) for _ in range(2)]
    return (torch.stack([component_moments(torch.tensor(x), torch.tensor(w)) for w in qs]),
            torch.tensor(np.stack(pis)))


@pytest.mark.parametrize("perfect", [False, True])
def test_a_batch_of_mixtures_scores_each_graph_under_its_own_mixture(mixture, perfect, monkeypatch):
    """``MixtureScores`` of ``B`` mixtures scores graph ``m`` under ``mixture[m]`` as that mixture
    alone does, with integer keys or sorted rows (keys of ``mixture * d + variable`` and the parents
    that would not fit in :data:`FAMILY_KEY_BITS`)."""
    from pyro_causal import order_search

    moments, pi = three_mixtures(mixture)
    rng = np.random.default_rng(7)
    graphs = torch.tensor(np.triu(rng.random((30, 5, 5)) < 0.5, 1))
    which = torch.tensor(rng.integers(0, 3, 30))
    alone = torch.stack([graph_scores(moments[b], pi[b], g[None], perfect)[0] for g, b in zip(graphs, which)])
    batched = order_search.MixtureScores(moments, pi, perfect)
    torch.testing.assert_close(batched.graphs(graphs, which), alone, rtol=1e-12, atol=0)
    if not perfect:  # imperfect interventions by default
        torch.testing.assert_close(order_search.MixtureScores(moments, pi).graphs(graphs, which), alone, rtol=1e-12, atol=0)
    assert len(batched._keys) == len({(int(b), j, tuple(g[:, j].tolist())) for g, b in zip(graphs, which) for j in range(5)})
    for bits, keyed in ((9, True), (8, False)):  # keys up to (3 * 5 - 1) << 5 | 31: (14).bit_length() + 5 = 9 bits
        monkeypatch.setattr(order_search, "FAMILY_KEY_BITS", bits)
        scores = order_search.MixtureScores(moments, pi, perfect)
        torch.testing.assert_close(scores.graphs(graphs, which), alone, rtol=1e-12, atol=0)
        assert (len(scores._keys) > 0) == keyed  # sorted rows remember nothing
    for bits, keyed in ((8, True), (7, False)):  # one mixture: keys up to 4 << 5 | 31, (4).bit_length() + 5 = 8 bits
        monkeypatch.setattr(order_search, "FAMILY_KEY_BITS", bits)
        scores = order_search.MixtureScores(moments[0], pi[0], perfect)
        torch.testing.assert_close(scores.graphs(graphs), graph_scores(moments[0], pi[0], graphs, perfect), rtol=1e-12, atol=0)
        assert (len(scores._keys) > 0) == keyed
    orders = torch.tensor([[4, 2, 0, 3, 1], [0, 1, 2, 3, 4], [4, 2, 0, 3, 1]])
    torch.testing.assert_close(batched.orders(orders, torch.tensor([0, 1, 2])),
                               torch.stack([order_scores(moments[b], pi[b], orders[b:b + 1], perfect)[0] for b in range(3)]),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("perfect", [False, True])
def test_climbs_in_lockstep_reach_what_each_climb_reaches_alone(mixture, perfect):
    """:func:`climb` of several starts under several mixtures at once: each climb's order, moves
    and score are those of :func:`search_order` from its start under its mixture, also with edges
    required, a cap on the moves, or none allowed."""
    from pyro_causal.order_search import MixtureScores, climb, order_respecting

    moments, pi = three_mixtures(mixture)
    starts = torch.tensor([[4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [0, 1, 2, 3, 4], [3, 1, 4, 0, 2]])
    which = torch.tensor([0, 1, 2, 1])
    required = torch.zeros(5, 5, dtype=torch.bool)
    required[1, 3] = True
    for options in ({}, {"required": required}, {"max_moves": 1}, {"max_moves": 0}, {"tolerance": 50.0}):
        if "required" in options:
            starts = torch.tensor([order_respecting(start, required) for start in starts.tolist()])
        orders, scores, moves = climb(MixtureScores(moments, pi, perfect), starts, which, **options)
        for t, b in enumerate(which.tolist()):
            order, score, taken = search_order(moments[b], pi[b], starts[t].tolist(), perfect=perfect, **options)
            assert (orders[t].tolist(), int(moves[t])) == (order, taken)
            assert float(scores[t]) == pytest.approx(score, rel=1e-12)
        if "required" in options:
            assert all(o.index(1) < o.index(3) for o in orders.tolist())
    orders, scores, moves = climb(MixtureScores(moments, pi, perfect), starts, which)
    assert int(moves.max()) > 1  # the climbs take several moves
    assert (orders.dtype, scores.dtype, moves.dtype) == (torch.long, torch.float64, torch.long)
    narrow = climb(MixtureScores(moments, pi, perfect), starts.int(), which)  # starts of any integer type
    assert torch.equal(narrow[0], orders) and torch.equal(narrow[1], scores) and torch.equal(narrow[2], moves)
    for cap in (200, 0):  # no starts, no climbs
        none = climb(MixtureScores(moments, pi, perfect), torch.zeros(0, 5, dtype=torch.long), max_moves=cap)
        assert [tuple(t.shape) for t in none] == [(0, 5), (0,), (0,)] and none[1].dtype == torch.float64
    defaults = inspect.signature(climb).parameters
    assert (defaults["max_moves"].default, defaults["tolerance"].default) == (200, 1e-6)


def test_orders_tie_without_interventions(mixture):
    """Complete DAGs of any two orders are Markov equivalent: one component scores them alike."""
    _, x, _, _ = mixture
    moments = component_moments(torch.tensor(x), torch.ones(len(x), 1, dtype=torch.float64))
    orders = torch.tensor(list(itertools.permutations(range(5)))[::7])
    scores = order_scores(moments, torch.zeros(1, 5, dtype=torch.float64), orders)
    assert float((scores - scores[0]).abs().max()) < 1e-6 * float(scores[0].abs())


def test_a_component_of_little_weight_scores_by_its_weight_and_none_at_or_below_1e_9(mixture):
    data, x, q, pi = mixture
    orders = [[0, 1, 2, 3, 4], [3, 1, 4, 2, 0]]
    light = np.column_stack([q[:, 0] + q[:, 1:].sum(1) * 0.9, q[:, 1:].sum(1) * 0.1])
    light[:, 1] *= 0.3 / light[:, 1].sum()  # component 1 weighs 0.3 rows in all
    two = np.stack([np.zeros(5), pi[1]])
    scores = order_scores(component_moments(torch.tensor(x), torch.tensor(light)), torch.tensor(two), torch.tensor(orders))
    for order, score in zip(orders, scores):
        expected = sum(weighted_gaussian_fit(x, light @ (1 - two[:, j]), j, order[:t])
                       + two[1, j] * weighted_gaussian_fit(x, light[:, 1], j, order[:t]) for t, j in enumerate(order))
        assert float(score) == pytest.approx(expected, rel=1e-7)
    # a component weighing exactly 1e-9 (one row) adds nothing: the same as without it
    tiny = np.column_stack([np.ones(len(x)), np.zeros(len(x))])
    tiny[0, 1] = 1e-9
    every = torch.tensor([[0.0] * 5, [1.0] * 5], dtype=torch.float64)
    with_tiny = order_scores(component_moments(torch.tensor(x), torch.tensor(tiny)), every, torch.tensor(orders))
    alone = order_scores(component_moments(torch.tensor(x), torch.tensor(tiny[:, :1])), every[:1], torch.tensor(orders))
    assert torch.equal(with_tiny, alone)


def test_order_scores_and_search_default_to_imperfect_interventions(mixture):
    data, x, q, pi = mixture
    moments, pi = component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi)
    orders = torch.tensor([[0, 1, 2, 3, 4], [4, 2, 0, 3, 1]])
    assert torch.equal(order_scores(moments, pi, orders), order_scores(moments, pi, orders, perfect=False))
    assert not torch.allclose(order_scores(moments, pi, orders), order_scores(moments, pi, orders, perfect=True))
    start = [4, 3, 2, 1, 0]
    assert search_order(moments, pi, start) == search_order(moments, pi, start, perfect=False)
    assert search_order(moments, pi, start)[1] != search_order(moments, pi, start, perfect=True)[1]


def test_search_order_scores_every_order_with_the_interventions_asked_for(mixture):
    data, x, q, pi = mixture
    moments, pi = component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi)
    order, score, moves = search_order(moments, pi, [4, 3, 2, 1, 0], perfect=True)
    assert moves > 0
    assert score == pytest.approx(float(order_scores(moments, pi, torch.tensor([order]), True)[0]), rel=1e-12)
    again, again_score, again_moves = search_order(moments, pi, order, perfect=True)
    assert (again, again_moves) == (order, 0) and again_score == pytest.approx(score, rel=1e-12)


def test_search_order_takes_every_move_that_gains_more_than_its_tolerance(mixture):
    data, x, q, pi = mixture
    moments, pi = component_moments(torch.tensor(x), torch.tensor(q)), torch.tensor(pi)
    start = [4, 3, 2, 1, 0]
    first = float(order_scores(moments, pi, torch.tensor([start]))[0])
    gain = float(order_scores(moments, pi, insertion_moves(start)).max()) - first
    assert gain > 0
    scaled = moments * (0.5 / gain)  # scores scale with the weights: the best move now gains 0.5 nats
    order, score, moves = search_order(scaled, pi, start)
    assert moves >= 1 and score - first * 0.5 / gain > 0.49
    assert search_order(scaled, pi, start, tolerance=0.51) == (start, pytest.approx(first * 0.5 / gain, rel=1e-9), 0)
    assert search_order(moments, pi, start, max_moves=1)[2] == 1
    exact = (first + gain) - first  # the best move's gain, exactly representable: first + exact is its score
    assert first + exact == first + gain
    assert search_order(moments, pi, start, tolerance=exact)[2] == 0  # a gain of exactly the tolerance: no move
    assert search_order(moments, pi, start, tolerance=exact * (1 - 1e-9))[2] >= 1


def test_search_order_stays_where_every_order_ties(mixture):
    _, x, _, _ = mixture
    moments = component_moments(torch.tensor(x), torch.ones(len(x), 1, dtype=torch.float64))
    start = [2, 4, 0, 1, 3]
    order, score, moves = search_order(moments, torch.zeros(1, 5, dtype=torch.float64), start)
    assert (order, moves) == (start, 0)


def test_insertion_moves_are_the_orders_one_move_away():
    start = (2, 0, 3, 1)
    moves = {tuple(m) for m in insertion_moves(start).tolist()}
    expected = set()
    for a, b in itertools.product(range(4), repeat=2):
        rest = list(start[:a] + start[a + 1:])
        rest.insert(b, start[a])
        expected.add(tuple(rest))
    expected.discard(start)
    assert moves == expected and len(insertion_moves(start)) == len(expected) == 9


def violations(adjacency, order):
    position = {j: t for t, j in enumerate(order)}
    return sum(position[i] > position[j] for i, j in zip(*np.nonzero(adjacency)))


@pytest.mark.parametrize("seed", [0, 1])
def test_search_with_the_true_regimes_orders_every_edge(seed):
    data = simulate(6, 2.0, 6000, seed=seed)
    x = (data.x - data.x.mean(0)) / data.x.std(0)
    moments = component_moments(torch.tensor(x), torch.nn.functional.one_hot(torch.tensor(data.regimes)).double())
    pi = torch.tensor(data.targets, dtype=torch.float64)
    start = list(range(6))[::-1]
    order, score, moves = search_order(moments, pi, start, perfect=True)
    assert violations(data.adjacency, start) > 0 and moves > 0
    assert violations(data.adjacency, order) == 0
    assert score > float(order_scores(moments, pi, torch.tensor([start]), True)[0])


def test_order_held_forbids_every_edge_against_the_order_and_restores_the_masks():
    model = LatentInterventionModel(4, truncation=2, edge_logit=torch.tensor(
        [[0.0, float("inf"), -2, -2], [-2, 0, -2, -2], [-2, -2, 0, -2], [-2, -2, float("-inf"), 0]]))
    required, forbidden = model.guide.required.clone(), model.guide.forbidden.clone()
    order = [3, 0, 1, 2]
    with order_held(model, order):
        free = model.guide.free_edges()
        probs = model.guide.edge_probs().detach()
        graphs = [model.guide.graph_dist().sample() for _ in range(20)]
    position = {j: t for t, j in enumerate(order)}
    for i, j in itertools.permutations(range(4), 2):
        if (i, j) in ((0, 1), (3, 2)):  # fixed by the prior: stay fixed
            continue
        assert bool(free[i, j]) == (position[i] < position[j])
    assert probs[0, 1] == 1 and probs[3, 2] == 0
    assert all(nx.is_directed_acyclic_graph(nx.from_numpy_array(g.numpy(), create_using=nx.DiGraph)) for g in graphs)
    assert torch.equal(model.guide.required, required) and torch.equal(model.guide.forbidden, forbidden)


@pytest.fixture(scope="module")
def short_fit():
    from pyro_causal import PenaltySchedule, fit

    data = simulate(4, 1.0, 1500, seed=2)
    schedule = PenaltySchedule(first_round_steps=150, round_steps=50, max_rounds=3)
    return data, fit(data.x,
                     seed=0,
                     config=FitConfig(training=TrainingConfig(schedule=schedule), after_training=AfterTraining(order_refit=0, held_refit=False))), schedule


@pytest.mark.parametrize("score, kept", [(float("inf"), False), (float("-inf"), True)])
def test_order_refit_is_kept_only_when_its_bound_is_higher(short_fit, score, kept):
    from pyro_causal import Trainer, TrainingConfig
    from pyro_causal.held_refit import refit_in_searched_order

    data, result, schedule = short_fit
    x = torch.as_tensor(result.train_x, dtype=torch.float32)
    before = result.model.guide.edge_logits.detach().clone()
    chosen, bound, record = refit_in_searched_order(
        result.model, score, lambda m, c: Trainer(m, x, config=c), TrainingConfig(schedule=schedule), x)
    assert record["kept"] is kept and record["elbo_before"] == score
    assert (chosen is result.model) is not kept
    assert bound == (pytest.approx(record["elbo_after"], abs=1e-6) if kept else score)
    assert torch.equal(result.model.guide.edge_logits, before)  # the loop's model is never modified
    if kept:  # the refit's graph respects the order searched
        position = {j: t for t, j in enumerate(record["order"])}
        probs = chosen.guide.edge_probs().detach()
        assert all(probs[i, j] < 1e-6 for i, j in itertools.permutations(range(4), 2) if position[i] > position[j])


def test_fit_records_each_order_round_and_stops_at_the_first_not_kept(short_fit):
    from pyro_causal import fit

    data, _, schedule = short_fit
    result = fit(data.x,
                 seed=0,
                 config=FitConfig(training=TrainingConfig(schedule=schedule), after_training=AfterTraining(order_refit=4, held_refit=False)))
    rounds = result.records["order_refit"]
    assert 1 <= len(rounds) <= 4
    assert all(r["kept"] for r in rounds[:-1]) and (len(rounds) == 4 or not rounds[-1]["kept"])
    kept = [r["elbo_after"] for r in rounds if r["kept"]]
    assert result.elbo == pytest.approx(max([rounds[0]["elbo_before"], *kept]), abs=1e-6)
    for previous, current in zip(rounds, rounds[1:]):
        assert current["elbo_before"] == previous["elbo_after"]


def test_order_refit_rounds_default_to_3_with_interventions_to_find_for_the_linear_density(short_fit):
    from pyro_causal import fit

    data, _, schedule = short_fit
    config = FitConfig(training=TrainingConfig(schedule=schedule), after_training=AfterTraining(held_refit=False))
    latent = fit(data.x, seed=0, config=replace(config, search="order"))
    assert latent.settings["search"] == "order" and latent.settings["after_training"]["order_refit"] == 3
    assert 1 <= len(latent.records["order_refit"]) <= 3
    penalty = fit(data.x, seed=0, config=config)  # fit's default search, then the order refit
    assert penalty.settings["search"] == "penalty" and penalty.records["random_order"] is None
    assert penalty.settings["after_training"]["order_refit"] == 3 and 1 <= len(penalty.records["order_refit"]) <= 3
    observational = fit(data.x, seed=0, observational=True, config=config)  # one component: every order ties
    assert observational.settings["after_training"]["order_refit"] == 0 and observational.records["order_refit"] == []
    regimes = data.regimes.copy()
    regimes[::2] = -1  # semi-supervised: half the rows labelled
    semi = fit(data.x,
               regimes=regimes,
               seed=0,
               config=FitConfig(search="penalty", training=TrainingConfig(schedule=schedule, graph_estimator="local"),
                                after_training=AfterTraining(held_refit=False)))
    assert semi.settings["after_training"]["order_refit"] == 3 and 1 <= len(semi.records["order_refit"]) <= 3
    with pytest.raises(ValueError, match="order_refit must be an int >= 0"):
        fit(data.x, config=FitConfig(after_training=AfterTraining(order_refit=-1)))


def test_the_order_rounds_default_to_3_with_interventions_to_find_and_0_elsewhere():
    from pyro_causal.api import DEFAULT_ORDER_ROUNDS, default_order_rounds
    from pyro_causal.densities import make_density

    assert DEFAULT_ORDER_ROUNDS == 3
    assert default_order_rounds("linear", "penalty", labelled=False, observational=False, num_variables=3) == 3
    assert default_order_rounds(make_density("linear", 3, 2), "penalty", False, False, 3) == 3
    assert default_order_rounds("linear", "penalty", False, observational=True, num_variables=3) == 0
    assert default_order_rounds("linear", "penalty", False, False, num_variables=2) == 0  # cause-effect pairs
    assert default_order_rounds("mlp", "penalty", False, False, 10) == 3
    assert default_order_rounds(make_density("mlp", 10, 2), "penalty", False, False, 10) == 3
    assert default_order_rounds("flow", "penalty", False, False, 10) == 3
    assert default_order_rounds(make_density("flow", 10, 2), "penalty", False, False, 10) == 3
    with pytest.raises(ValueError, match="unknown density"):
        default_order_rounds("spline", "penalty", False, False, 10)
    assert default_order_rounds("mlp", "penalty", False, observational=True, num_variables=10) == 0
    assert default_order_rounds("mlp", "penalty", False, False, num_variables=2) == 0
    with pytest.raises(ValueError, match="unknown density"):
        default_order_rounds("spline", "penalty", False, False, 10)
    assert default_order_rounds("mlp", "penalty", labelled=True, observational=False, num_variables=2) == 3
    assert default_order_rounds("flow", "order", False, False, 2) == 3


@pytest.mark.parametrize("density", ["mlp", "flow"])
def test_a_latent_nonlinear_fit_runs_the_order_rounds_by_default(density):
    from pyro_causal import PenaltySchedule, fit

    data = simulate(num_variables=3, edges_per_node=1.0, num_samples=300, seed=1)
    short = PenaltySchedule(first_round_steps=5, round_steps=5, max_rounds=1)
    result = fit(data.x, density=density, seed=0,
                 config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(held_refit=False)))
    assert result.settings["after_training"]["order_refit"] == 3
    assert 1 <= len(result.records["order_refit"]) <= 3
    assert all(set(record) >= {"order", "kept", "elbo_before", "elbo_after"} for record in result.records["order_refit"])


def test_the_search_is_chosen_from_the_density_and_the_interventions():
    from pyro_causal.api import choose_search

    assert choose_search("linear", observational=False, num_variables=3) == "penalty"  # the order search: an option
    assert choose_search("linear", observational=True, num_variables=3) == "penalty"
    assert choose_search("linear", observational=False, num_variables=2) == "penalty"
    assert choose_search("mlp", False, 10) == "penalty" and choose_search("flow", False, 10) == "penalty"
    with pytest.raises(ValueError, match="unknown search 'greedy'; choose one of order, penalty"):
        FitConfig(search="greedy")


def test_the_order_search_trains_inside_the_random_order_of_its_seed(short_fit):
    from pyro_causal import fit
    from pyro_causal.held_refit import random_order

    data, _, schedule = short_fit
    assert random_order(4, 5) == random_order(4, 5) and sorted(random_order(4, 5)) == [0, 1, 2, 3]
    assert len({tuple(random_order(6, seed)) for seed in range(5)}) > 1
    result = fit(data.x, seed=5, config=FitConfig(search="order", training=TrainingConfig(schedule=schedule),
                                                  after_training=AfterTraining(order_refit=0, held_refit=False)))
    assert result.records["random_order"] == random_order(4, 5) and result.records["order_refit"] == []
    position = {j: t for t, j in enumerate(random_order(4, 5))}
    against = [(i, j) for i, j in itertools.permutations(range(4), 2) if position[i] > position[j]]
    assert all(result.edge_probs[i, j] < 1e-6 for i, j in against)
    assert all(not result.adjacency[i, j] for i, j in against)
    assert len(result.elbo_trace) == schedule.first_round_steps  # one round, no penalty updates
    assert float(np.max(result.h_trace)) < 1e-6 and result.stop_reason == "converged"


def test_the_random_order_is_not_the_simulators_causal_order_of_the_same_seed():
    """``simulate(seed=s)`` draws its causal order first from ``default_rng(s)``; the fit's random
    order of seed ``s`` must not be that draw, or every benchmark fit whose seed equals its data's
    seed starts inside the true order."""
    from pyro_causal.held_refit import random_order

    same = [random_order(10, s) == np.random.default_rng(s).permutation(10).tolist() for s in range(20)]
    assert not any(same)
    against = []  # true edges against the fit's first order, on the simulator's graph of the same seed
    for s in range(5):
        adjacency = np.asarray(simulate(num_variables=10, edges_per_node=2.0, num_samples=50, seed=s).adjacency)
        position = np.argsort(random_order(10, s))
        against.append(int(sum(adjacency[i, j] for i in range(10) for j in range(10) if position[i] > position[j])))
    assert sum(against) > 0


@pytest.mark.slow
def test_the_order_search_and_the_order_refit_recover_a_complete_dag_that_the_penalty_loop_prunes():
    """Five variables, every pair joined (10 edges), latent interventions: the order search, and
    the penalty loop followed by its default order refit, keep a complete DAG, nearer the truth and
    with a higher bound than the penalty loop's sparser graph alone."""
    from pyro_causal import PenaltySchedule, fit
    from pyro_causal.metrics import hamming_distance

    data = simulate(5, 2.0, 2000, seed=2)
    assert data.adjacency.sum() == 10
    schedule = PenaltySchedule(first_round_steps=300, round_steps=75)
    settings = {"order": ("order", None), "penalty, order refit": ("penalty", None), "penalty": ("penalty", 0)}
    results = {name: fit(data.x, seed=0, config=FitConfig(search=search, training=TrainingConfig(schedule=schedule),
                                                          after_training=AfterTraining(held_refit=False, order_refit=rounds)))
               for name, (search, rounds) in settings.items()}
    distance = {name: hamming_distance(data.adjacency, result.adjacency) for name, result in results.items()}
    assert results["penalty"].adjacency.sum() < 10 and results["penalty"].records["order_refit"] == []
    for name in ("order", "penalty, order refit"):
        assert results[name].adjacency.sum() == 10
        assert distance[name] < distance["penalty"]
        assert results[name].elbo > results["penalty"].elbo


def test_orders_keep_the_edges_the_prior_requires(mixture):
    from pyro_causal.held_refit import random_order
    from pyro_causal.order_search import along

    required = torch.zeros(5, 5, dtype=torch.bool)
    required[3, 1] = required[1, 0] = True  # 3 -> 1 -> 0
    for seed in range(20):
        order = random_order(5, seed, required)
        assert sorted(order) == list(range(5)) and order.index(3) < order.index(1) < order.index(0)
    assert random_order(5, 4, torch.zeros(5, 5, dtype=torch.bool)) == random_order(5, 4)
    assert along(torch.tensor([[3, 1, 0, 2, 4], [1, 3, 0, 2, 4]]), required).tolist() == [True, False]
    _, x, q, pi = mixture
    moments = component_moments(torch.tensor(x), torch.tensor(q))
    order, _, _ = search_order(moments, torch.tensor(pi), [3, 1, 0, 2, 4], required=required)
    assert order.index(3) < order.index(1) < order.index(0)


def test_a_required_edge_against_the_random_order_is_kept_and_the_graph_stays_a_dag(short_fit):
    from pyro_causal import Priors, fit
    from pyro_causal.acyclicity import is_dag
    from pyro_causal.held_refit import random_order

    data, _, schedule = short_fit
    first = random_order(4, 0)
    logits = np.full((4, 4), -2.0)
    logits[first[-1], first[0]] = np.inf  # against the order seed 0 would draw
    result = fit(data.x, seed=0, priors=Priors(edge_logit=logits),
                 config=FitConfig(training=TrainingConfig(schedule=schedule), after_training=AfterTraining(held_refit=False)))
    assert result.records["random_order"] != first
    assert result.adjacency[first[-1], first[0]] and is_dag(result.adjacency)


@pytest.fixture(scope="module")
def labelled_problem():
    """Data with their regimes and an untrained model: the proposal's ``q(z)`` is one-hot at the regimes."""
    data = simulate(6, 2.0, 3000, seed=5)
    x = torch.tensor((data.x - data.x.mean(0)) / data.x.std(0), dtype=torch.float32)
    torch.manual_seed(0)
    model = LatentInterventionModel(6, truncation=7, embedding_dim=2)
    return data, x, model


def test_propose_order_keeps_the_best_climb_over_the_dags_order_and_its_random_starts(labelled_problem):
    from pyro_causal.order_search import PROPOSAL_RESTARTS, PROPOSAL_STREAM, order_respecting, propose_order

    data, x, model = labelled_problem
    regimes = torch.as_tensor(data.regimes)
    alone = propose_order(model, x, regimes, restarts=0, seed=2)
    many = propose_order(model, x, regimes, restarts=6, seed=2)
    # the climbs, recomputed: from the DAG's order, then from the seed's stream of random orders
    moments = component_moments(x, torch.nn.functional.one_hot(regimes, 7).double())
    pi = model.full_targets(model.guide.target_probs()).detach().double()
    rng = np.random.default_rng([2, PROPOSAL_STREAM])
    starts = [alone["start"]] + [order_respecting(rng.permutation(6)) for _ in range(6)]
    climbs = [search_order(moments, pi, s, perfect=True) for s in starts]
    assert (alone["order"], alone["score"], alone["restart"]) == (climbs[0][0], pytest.approx(climbs[0][1]), 0)
    best = int(np.argmax([c[1] for c in climbs]))
    assert (many["order"], many["restart"]) == (climbs[best][0], best)
    assert many["score"] == pytest.approx(max(c[1] for c in climbs)) and many["score"] >= alone["score"]
    assert many["start"] == alone["start"] and many["start_score"] == alone["start_score"]
    assert propose_order(model, x, regimes, restarts=6, seed=2) == many  # the same seed, the same proposal
    assert PROPOSAL_RESTARTS == 20  # the documented default, with seed 0
    assert propose_order(model, x, regimes) == propose_order(model, x, regimes, restarts=20, seed=0)

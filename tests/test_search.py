"""The edge search after training: neighbours, the graph prior, hill climbing, and ``fit(edge_search=)``."""
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from pyro_causal import (AfterTraining, EdgeSearch, FitConfig, PenaltySchedule, TrainingConfig, fit, fit_with_graph_held,
                         simulate_cause_effect)
from pyro_causal.acyclicity import is_dag
from pyro_causal.search import MOVES, graph_log_prior, hill_climb, neighbours, search_edges


def one_edge_changes(adjacency):
    """Brute force: every DAG obtained by removing one edge, reversing it, or adding an absent one."""
    found = {}
    for i, j in itertools.permutations(range(len(adjacency)), 2):
        if not adjacency[i, j] and not adjacency[j, i]:
            added = adjacency.copy()
            added[i, j] = 1
            if is_dag(added):
                found[("add", i, j)] = added
    for i, j in zip(*np.nonzero(adjacency)):
        removed = adjacency.copy()
        removed[i, j] = 0
        found[("remove", int(i), int(j))] = removed
        turned = removed.copy()
        turned[j, i] = 1
        if is_dag(turned):
            found[("reverse", int(i), int(j))] = turned
    return found


@pytest.mark.parametrize("edges", [[(0, 1), (0, 2), (1, 2)], [(0, 1), (2, 3)], []])
def test_neighbours_are_the_acyclic_single_edge_changes(edges):
    graph = np.zeros((4, 4), dtype=int)
    for i, j in edges:
        graph[i, j] = 1
    got = {move: g for move, g in neighbours(graph, np.full((4, 4), -2.0), MOVES)}
    expected = one_edge_changes(graph)
    assert set(got) == set(expected)
    for move in got:
        np.testing.assert_array_equal(got[move], expected[move])
    if (0, 2) in edges:
        assert ("reverse", 0, 2) not in got  # 2 -> 0 closes 0 -> 1 -> 2 -> 0
    only = {move[0] for move, _ in neighbours(graph, np.full((4, 4), -2.0), ("remove",))}
    assert only <= {"remove"}
    with pytest.raises(ValueError, match="flip"):
        neighbours(graph, np.zeros((4, 4)), ("flip",))


def test_neighbours_respect_the_priors_constraints():
    chain = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    logits = np.full((3, 3), -2.0)
    logits[0, 1] = math.inf  # 0 -> 1 required: neither removed nor reversed
    logits[2, 1] = -math.inf  # 2 -> 1 forbidden: 1 -> 2 can be removed, not reversed
    logits[0, 2] = -math.inf  # 0 -> 2 forbidden: only 2 -> 0 can be added (0 -> 1 -> 2 -> 0 is a cycle)
    moves = [move for move, _ in neighbours(chain, logits, MOVES)]
    assert moves == [("remove", 1, 2)]


def test_graph_log_prior_is_the_sum_of_bernoulli_log_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (3, 3))
    logits[0, 2], logits[2, 0] = math.inf, -math.inf  # fixed pairs carry no prior mass
    sigmoid = 1.0 / (1.0 + np.exp(-logits))
    for bits in itertools.product([0, 1], repeat=4):
        graph = np.zeros((3, 3), dtype=int)
        graph[0, 2] = 1
        graph[0, 1], graph[1, 0], graph[1, 2], graph[2, 1] = bits
        expected = sum(math.log(sigmoid[i, j] if graph[i, j] else 1.0 - sigmoid[i, j])
                       for i, j in [(0, 1), (1, 0), (1, 2), (2, 1)])
        assert graph_log_prior(graph, logits) == pytest.approx(expected, rel=1e-12)
    assert graph_log_prior(np.zeros((2, 2)), np.array([[-2.0, -2.0], [-2.0, -2.0]])) == pytest.approx(2 * math.log(1 - 1 / (1 + math.exp(2))))


class FakeFit:
    def __init__(self, elbo):
        self.elbo = elbo


def test_search_climbs_to_the_best_graph_and_stops():
    target = np.array([[0, 0, 0], [1, 0, 1], [0, 0, 0]])  # 1 -> 0, 1 -> 2
    start = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])  # 0 -> 1 -> 2: one reversal away
    calls = []

    def fit_held(graph):
        calls.append(graph.copy())
        return FakeFit(-float(np.abs(graph - target).sum()))  # flat prior below: the bound decides

    flat = np.zeros((3, 3))
    best, record = hill_climb(start, flat, 100, rounds=5, fit_held=fit_held)  # default: reverse, remove
    assert best.elbo == 0.0 and record["moves"] == [["reverse", 0, 1]]
    # round 1 scores the start's 4 neighbours, round 2 the target's 4 and finds none better
    assert len(calls) == 1 + 4 + 4 and len(record["scores"]) == 8
    assert record["score"] == pytest.approx(graph_log_prior(target, flat) / 100, abs=1e-6)
    _, none = hill_climb(start, flat, 100, rounds=0, fit_held=fit_held)
    assert none["moves"] == [] and none["scores"] == []


def test_search_weighs_the_graph_prior_per_row():
    start = np.array([[0, 1], [0, 0]])
    # the held bound prefers no edge by 0.01 per row; a prior favouring the edge outweighs it
    bounds = {0: -1.0, 1: -1.01}
    fit_held = lambda graph: FakeFit(bounds[int(graph.sum())])  # noqa: E731
    favour = np.array([[0.0, 8.0], [8.0, 0.0]])
    kept, _ = hill_climb(start, favour, 100, rounds=1, fit_held=fit_held)
    assert kept.elbo == -1.01
    dropped, _ = hill_climb(start, np.full((2, 2), -2.0), 100, rounds=1, fit_held=fit_held)
    assert dropped.elbo == -1.0


def test_search_edges_records_its_start_and_returns_the_held_fit_of_the_graph_chosen():
    data = simulate_cause_effect(300, seed=14)  # A -> B
    tiny = PenaltySchedule(first_round_steps=5, round_steps=2, max_rounds=1)
    events = []
    base = fit(data.x, seed=3, callbacks=[events.append],
               config=FitConfig(training=TrainingConfig(schedule=tiny, log_every=1),
                                after_training=AfterTraining(held_refit=False, edge_search=EdgeSearch(rounds=0))))
    held = fit_with_graph_held(base, data.adjacency)
    held = replace(held, records={**held.records, "skipped_steps": 99})  # the search reports its own fit's
    events.clear()
    searched = search_edges(held, 2, restarts=2, moves=("reverse",))
    assert searched.records["skipped_steps"] < 99
    for option in ("held_refit", "order_refit"):  # the other steps' settings are kept
        assert searched.settings["after_training"][option] == held.settings["after_training"][option]
    record = searched.records["edge_search"]
    assert all(entry["move"][0] == "reverse" for entry in record["scores"])
    fits = 1 + len(record["scores"])  # the start and each candidate, 2 seeds each
    assert sorted({e.phase for e in events}) == sorted(f"edge search fit {i}: restart {r}/2: held fit"
                                                         for i in range(1, fits + 1) for r in (1, 2))
    assert record["start_edges"] == [[0, 1]] and searched.records["searched_from_elbo"] == held.elbo
    assert searched.settings["after_training"]["edge_search"] == {"rounds": 2, "restarts": 2, "moves": ["reverse"]}
    assert searched.settings["seed"] == 3 and searched.seed in (3, 4)  # the fit's seed, then the next
    # one reversal to score per round; at most one round can move (a second reversal undoes the first)
    assert [entry["move"] for entry in record["scores"]][0] == ["reverse", 0, 1] and len(record["moves"]) <= 1
    chosen = data.adjacency.T if record["moves"] else data.adjacency
    np.testing.assert_array_equal(searched.adjacency, chosen)
    np.testing.assert_array_equal(searched.edge_probs, chosen.astype(float))
    logits = np.full((2, 2), -2.0)
    assert record["score"] == pytest.approx(searched.elbo + graph_log_prior(chosen, logits) / 300, abs=1e-6)
    assert searched.wall_time == pytest.approx(held.wall_time + record["seconds"])
    events.clear()
    by_default = search_edges(held)
    assert by_default.settings["after_training"]["edge_search"] == {"rounds": 1, "restarts": 3,
                                                                     "moves": ["reverse", "remove"]}
    assert {e.phase.split(": ")[1] for e in events} == {"restart 1/3", "restart 2/3", "restart 3/3"}


@pytest.mark.slow
def test_fit_edge_search_returns_the_best_scored_graph():
    data = simulate_cause_effect(600, seed=9)
    short = PenaltySchedule(first_round_steps=150, round_steps=50, max_rounds=6)
    result = fit(data.x,
                 intervention="perfect",
                 seed=0,
                 config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(edge_search=EdgeSearch(rounds=1, restarts=1))))
    record = result.records["edge_search"]
    scores = [entry["score"] for entry in record["scores"]]
    assert record["score"] == pytest.approx(max([record["start_score"], *scores]))
    assert result.settings["priors"]["edge_logit"] == -2.0 and result.settings["restarts"] == 1
    assert set(np.unique(result.edge_probs)) <= {0.0, 1.0} and is_dag(result.adjacency)
    plain = fit(data.x, intervention="perfect", seed=0,
                config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(edge_search=EdgeSearch(rounds=0))))
    searched = search_edges(plain, rounds=1, restarts=1)  # the same step, on a FitResult
    np.testing.assert_array_equal(searched.adjacency, result.adjacency)
    assert searched.elbo == result.elbo and searched.settings == result.settings
    assert {k: v for k, v in searched.records["edge_search"].items() if k != "seconds"} == \
        {k: v for k, v in record.items() if k != "seconds"}
    with pytest.raises(ValueError, match="edge_search"):
        EdgeSearch(rounds=-1)
    with pytest.raises(ValueError, match="search move"):
        fit(data.x, config=FitConfig(after_training=AfterTraining(edge_search=EdgeSearch(rounds=1, moves=("flip",)))))


@pytest.mark.slow
def test_the_search_reverses_a_wrong_edge_of_a_cause_effect_pair():
    # pair 14 is A -> B; started from B -> A, the held fits score the truth higher (by about
    # 0.04 nats per row with these settings, seeds 0 and 1) and dropping the edge far lower
    data = simulate_cause_effect(999, seed=14)
    short = PenaltySchedule(first_round_steps=300, round_steps=50, max_rounds=2)

    base = fit(data.x, intervention="perfect", seed=0,
               config=FitConfig(training=TrainingConfig(schedule=short),
                                after_training=AfterTraining(held_refit=False, edge_search=EdgeSearch(rounds=0))))
    wrong = fit_with_graph_held(base, data.adjacency.T)
    best = search_edges(wrong, 1, restarts=1)
    record = best.records["edge_search"]
    assert record["moves"] == [["reverse", 1, 0]]
    np.testing.assert_array_equal(best.adjacency, data.adjacency)


def test_hill_climb_records_every_score_to_six_decimals_and_logs_each_move(caplog):
    start = np.array([[False, True], [False, False]])  # a boolean graph is climbed as 0/1 integers
    logits = np.array([[0.0, -1.0], [0.5, 0.0]])
    bounds = {(0, 1): -1.1234567891, (1, 0): -1.0000004444, (): -1.2}
    seen = []

    def fit_held(graph):
        seen.append(graph.dtype)
        return FakeFit(bounds[tuple(int(v) for v in np.argwhere(graph).ravel())])

    with caplog.at_level("INFO", "pyro_causal.search"):
        best, record = hill_climb(start, logits, 10, rounds=1, fit_held=fit_held)
    assert seen == [np.dtype(np.int64)] * 3
    prior = {(0, 1): graph_log_prior(np.array([[0, 1], [0, 0]]), logits),
             (1, 0): graph_log_prior(np.array([[0, 0], [1, 0]]), logits),
             (): graph_log_prior(np.zeros((2, 2)), logits)}
    score = {g: bounds[g] + prior[g] / 10 for g in bounds}
    assert record["start_score"] == round(score[(0, 1)], 6)
    assert record["scores"] == [{"move": ["reverse", 0, 1], "score": round(score[(1, 0)], 6), "from": round(score[(0, 1)], 6)},
                                {"move": ["remove", 0, 1], "score": round(score[()], 6), "from": round(score[(0, 1)], 6)}]
    assert record["moves"] == [["reverse", 0, 1]] and record["score"] == round(score[(1, 0)], 6)
    assert best.elbo == bounds[(1, 0)] and 0.0 <= record["seconds"] < 1.0  # three instant fits
    assert caplog.messages == [f"edge search: reverse 0 -> 1 scores {score[(1, 0)]:.4f} (current {score[(0, 1)]:.4f})",
                               f"edge search: remove 0 -> 1 scores {score[()]:.4f} (current {score[(0, 1)]:.4f})"]


def test_of_tied_best_neighbours_the_first_proposed_is_taken():
    start = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]])  # 0 -> 1, 0 -> 2
    flat = np.zeros((3, 3))  # every graph has the same prior
    order = [move for move, _ in neighbours(start, flat)]
    first, second = order[1], order[2]  # ("remove", 0, 1) then ("reverse", 0, 2)
    assert (first[0], second[0]) == ("remove", "reverse")
    tied = {tuple(map(tuple, graph)) for move, graph in neighbours(start, flat) if move in (first, second)}

    def fit_held(graph):
        return FakeFit(-0.5 if tuple(map(tuple, graph)) in tied else -1.0)

    best, record = hill_climb(start, flat, 10, rounds=1, fit_held=fit_held)
    assert record["moves"] == [list(first)]

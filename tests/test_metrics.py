"""Tests of the graph, clustering and target metrics (paper, section 4, Tables 1 and 2)."""
import itertools
import re

import numpy as np
import pytest

from pyro_causal.metrics import (adjusted_rand_index, edge_counts, evaluate, f1, f1_excluding_reversed, fdr,
                                 format_metrics, hamming_distance, match_components, precision,
                                 recall, shd, target_recovery, tpr)

CHAIN = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])  # 0 -> 1 -> 2


def _graph(*edges, d=3):
    a = np.zeros((d, d), dtype=int)
    for i, j in edges:
        a[i, j] = 1
    return a


def _all(true, est):
    """Every single-number metric, for comparing against hand-worked values."""
    return {**edge_counts(true, est), "shd": shd(true, est), "hamming": hamming_distance(true, est),
            "precision": precision(true, est), "recall": recall(true, est), "f1": f1(true, est),
            "tpr": tpr(true, est), "fdr": fdr(true, est), "f1_excluding_reversed": f1_excluding_reversed(true, est)}


UPPER = np.triu(np.ones((4, 4), int), 1)  # complete DAG on 4 nodes, 6 edges
FULL = 1 - np.eye(4, dtype=int)  # every off-diagonal entry: 6 two-cycles
EMPTY = np.zeros((4, 4), int)


@pytest.mark.parametrize("true, est, expected", [
    # a single reversal: shd 1, hamming 2
    (_graph((0, 1), d=2), _graph((1, 0), d=2),
     dict(tp=0, fp=0, fn=0, reversed=1, shd=1, hamming=2, precision=0, recall=0, f1=0, fdr=1)),
    # one missing edge
    (CHAIN, _graph((0, 1)),
     dict(tp=1, fp=0, fn=1, reversed=0, shd=1, hamming=1, precision=1, recall=0.5, f1=2 / 3,
          fdr=0)),
    # one extra edge
    (CHAIN, _graph((0, 1), (1, 2), (0, 2)),
     dict(tp=2, fp=1, fn=0, reversed=0, shd=1, hamming=1, precision=2 / 3, recall=1, f1=0.8,
          fdr=1 / 3)),
    # a reversal, a miss and an extra at once
    (CHAIN, _graph((1, 0), (2, 0)),
     dict(tp=0, fp=1, fn=1, reversed=1, shd=3, hamming=4, precision=0, recall=0, f1=0, fdr=1)),
    (CHAIN, CHAIN, dict(tp=2, fp=0, fn=0, reversed=0, shd=0, hamming=0, precision=1, recall=1,
                        f1=1, fdr=0)),
    (UPPER, EMPTY, dict(tp=0, fp=0, fn=6, reversed=0, shd=6, hamming=6, precision=0, recall=0,
                        f1=0, fdr=0)),
    (EMPTY, UPPER, dict(tp=0, fp=6, fn=0, reversed=0, shd=6, hamming=6, precision=0, recall=0,
                        f1=0, fdr=1)),
    (EMPTY, FULL, dict(tp=0, fp=12, fn=0, reversed=0, shd=6, hamming=12, precision=0, recall=0,
                       f1=0, fdr=1)),
    # an estimated 2-cycle over a true edge is a hit plus a false positive, not a reversal
    (UPPER, FULL, dict(tp=6, fp=6, fn=0, reversed=0, shd=6, hamming=6, precision=0.5, recall=1,
                       f1=2 / 3, fdr=0.5)),
])
def test_hand_worked(true, est, expected):
    got = _all(true, est)
    assert got["tpr"] == got["recall"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


@pytest.mark.parametrize("est, directed, excluding_reversed", [
    (_graph((0, 1), (2, 1)), 0.5, 1.0),  # one hit, one reversal: only the directed F1 pays for it
    (_graph((1, 0), (2, 1)), 0.0, 0.0),
    (_graph((0, 1), (1, 2), (0, 2)), 0.8, 0.8),  # no reversal: both agree
    (_graph((0, 1)), 2 / 3, 2 / 3),
])
def test_two_f1_conventions(est, directed, excluding_reversed):
    assert f1(CHAIN, est) == pytest.approx(directed)
    assert f1_excluding_reversed(CHAIN, est) == pytest.approx(excluding_reversed)
    assert evaluate(CHAIN, est)["f1_excluding_reversed"] == pytest.approx(excluding_reversed)


def _graphs_with_counts(tp, fn, fp, rev, d=12):
    """A true and an estimated graph with exactly these edge counts (pairs ``a < b`` in turn)."""
    pairs = iter(itertools.combinations(range(d), 2))
    true, est = np.zeros((d, d), int), np.zeros((d, d), int)
    for kind, count in (("tp", tp), ("fn", fn), ("fp", fp), ("rev", rev)):
        for _ in range(count):
            a, b = next(pairs)
            true[a, b] = kind in ("tp", "fn", "rev")
            est[a, b] = kind in ("tp", "fp")
            est[b, a] = kind == "rev"
    return true, est


@pytest.mark.parametrize("tp, fn, fp, rev, printed", [  # the paper's Table 2 rows (CAM's 0.51 left out)
    (4, 6, 5, 7, 0.42), (10, 0, 41, 7, 0.33), (6, 2, 25, 9, 0.31), (6, 2, 22, 9, 0.33),
    (7, 11, 22, 3, 0.30), (7, 11, 8, 0, 0.42), (9, 9, 21, 1, 0.38),
])
def test_table2_f1_is_the_excluding_reversed_convention(tp, fn, fp, rev, printed):
    true, est = _graphs_with_counts(tp, fn, fp, rev)
    assert edge_counts(true, est) == {"tp": tp, "fp": fp, "fn": fn, "reversed": rev}
    assert round(f1_excluding_reversed(true, est), 2) == pytest.approx(printed)


def test_input_types_agree():
    est = _graph((1, 0), (0, 2))
    reference = _all(CHAIN, est)
    for t, e in [(CHAIN.astype(bool), est.astype(bool)), (CHAIN.astype(float), est.astype(float)),
                 (CHAIN.tolist(), est.tolist())]:
        assert _all(t, e) == reference


def _random_dag(rng, d, p):
    order = rng.permutation(d)
    upper = np.triu(rng.random((d, d)) < p, 1)
    return upper[np.ix_(order, order)].astype(int)


def test_identities_on_random_dags():
    rng = np.random.default_rng(0)
    for _ in range(50):
        true, est = _random_dag(rng, 6, 0.4), _random_dag(rng, 6, 0.4)
        c = edge_counts(true, est)
        assert c["tp"] + c["fp"] + c["reversed"] == est.sum()
        assert c["tp"] + c["fn"] + c["reversed"] == true.sum()
        assert shd(true, est) == c["fp"] + c["fn"] + c["reversed"]
        assert hamming_distance(true, est) == c["fp"] + c["fn"] + 2 * c["reversed"]
        differing_pairs = sum((true[i, j], true[j, i]) != (est[i, j], est[j, i])
                              for i, j in itertools.combinations(range(6), 2))
        assert shd(true, est) == differing_pairs


def _brute_force_ari(x, y):
    """ARI by explicit pair counting: ``(index - expected) / (max - expected)``."""
    both = in_x = in_y = num_pairs = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        same_x, same_y = x[i] == x[j], y[i] == y[j]
        both += same_x and same_y
        in_x += same_x
        in_y += same_y
        num_pairs += 1
    expected = in_x * in_y / num_pairs
    maximum = (in_x + in_y) / 2
    return 1.0 if maximum == expected else (both - expected) / (maximum - expected)


@pytest.mark.parametrize("n, kx, ky", [(2, 2, 2), (10, 2, 3), (30, 4, 4), (41, 6, 2), (25, 1, 3)])
def test_ari_matches_pair_counting(n, kx, ky):
    rng = np.random.default_rng(n)
    for _ in range(5):
        x, y = rng.integers(kx, size=n), rng.integers(ky, size=n)
        y[: n // 2] = x[: n // 2] % ky  # partly agreeing, so values spread away from 0
        assert adjusted_rand_index(x, y) == pytest.approx(_brute_force_ari(x, y), abs=1e-12)


@pytest.mark.parametrize("x, y, expected", [
    ([0, 0, 1, 1], [0, 0, 1, 2], 4 / 7),  # scikit-learn's documented values
    ([0, 0, 0, 0], [0, 1, 2, 3], 0.0),
    ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),
    ([0, 0, 1, 1], [5, 5, 3, 3], 1.0),
    ([7, 7, 7], [1, 1, 1], 1.0),  # both one cluster
    ([0, 1, 2], [2, 0, 1], 1.0),  # both all singletons
    ([3], [4], 1.0),
    (["a", "a", "b"], ["x", "x", "y"], 1.0),
])
def test_ari_special_values(x, y, expected):
    assert adjusted_rand_index(x, y) == pytest.approx(expected)


def test_ari_invariances_and_chance_level():
    rng = np.random.default_rng(1)
    x, y = rng.integers(4, size=60), rng.integers(5, size=60)
    value = adjusted_rand_index(x, y)
    assert adjusted_rand_index(rng.permutation(4)[x], rng.permutation(5)[y] + 10) == value
    assert adjusted_rand_index(y, x) == pytest.approx(value)
    assert adjusted_rand_index(x, rng.permutation(4)[x]) == 1.0
    chance = [adjusted_rand_index(rng.integers(3, size=300), rng.integers(3, size=300))
              for _ in range(50)]
    assert abs(np.mean(chance)) < 0.01 and max(map(abs, chance)) < 0.05


def test_target_recovery():
    true_targets = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    # components are a relabelling of the regimes: regime 0 -> 2, 1 -> 0, 2 -> 1
    probs = np.array([[0.9, 0.6, 0.0], [0.1, 0.4, 0.2], [0.0, 0.0, 0.7]])
    regimes = np.repeat([0, 1, 2], 4)
    assignments = np.array([2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1, 0])
    assert match_components(assignments, regimes).tolist() == [2, 0, 1]
    # predicted targets: regime 0 {2} (fp), regime 1 {0 (tp), 1 (fp)}, regime 2 {} (miss)
    got = target_recovery(true_targets, probs, assignments, regimes)
    assert got == pytest.approx({"target_precision": 1 / 3, "target_recall": 1 / 2,
                                 "target_f1": 0.4})
    perfect = target_recovery(true_targets, true_targets * 0.9, regimes, regimes)
    assert perfect == {"target_precision": 1.0, "target_recall": 1.0, "target_f1": 1.0}
    assert match_components([1, 0], [0, 0]).tolist() == [0]  # tie: lowest component


def test_evaluate_and_format():
    est = _graph((1, 0), (0, 2))
    metrics = evaluate(CHAIN, est)
    assert metrics == _all(CHAIN, est)
    assert "ari" not in metrics
    assert evaluate(CHAIN, est, regimes=[0, 0, 1], assignments=[3, 3, 1])["ari"] == 1.0
    lines = format_metrics({"shd": 3, "precision": 0.5, "f1": 2 / 3}).splitlines()
    assert lines == ["shd             3", "precision  0.5000", "f1         0.6667"]
    assert format_metrics({}) == ""


@pytest.mark.parametrize("call, match", [
    (lambda: shd(np.zeros((2, 3)), np.zeros((2, 3))), "square"),
    (lambda: shd(np.zeros((2, 2)), np.zeros((3, 3))), "differ in shape"),
    (lambda: shd(np.zeros(4), np.zeros(4)), "true must be a square"),
    (lambda: shd(np.zeros((2, 2)), [[0, 2], [0, 0]]), "est must hold only 0 and 1"),
    (lambda: shd([[0, np.nan], [0, 0]], np.zeros((2, 2))), "true must hold only 0 and 1"),
    (lambda: shd([["a", "b"], ["c", "d"]], np.zeros((2, 2))), "numeric or boolean"),
    (lambda: edge_counts(np.eye(2), np.zeros((2, 2))), "self-loops on variables \\[0, 1\\]"),
    (lambda: adjusted_rand_index([0, 1], [0, 1, 1]), "differ in length"),
    (lambda: adjusted_rand_index([[0, 1]], [[0, 1]]), "1-D"),
    (lambda: evaluate(CHAIN, CHAIN, regimes=[0, 1]), "both regimes and assignments"),
    (lambda: match_components([0, 1], [0, 2]), "regimes \\[1\\] have no rows"),
    (lambda: match_components([0.0, 1.0], [0, 1]), "1-D int arrays"),
    (lambda: match_components([0, -1], [0, 1]), "non-negative"),
    (lambda: target_recovery(np.zeros((2, 3)), np.zeros((2, 4)), [0, 1], [0, 1]), "share d"),
    (lambda: target_recovery(np.full((2, 3), 2), np.zeros((2, 3)), [0, 1], [0, 1]), "0 and 1"),
    (lambda: target_recovery(np.zeros((2, 3)), np.zeros((1, 3)), [0, 1], [0, 1]),
     "target_probs has 1 rows"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _raises_exactly(message):
    """``pytest.raises`` matching the whole message, not a part of it."""
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


@pytest.mark.parametrize("call, message", [
    (lambda: shd(np.zeros((2, 2)), [[0, 2], [0, 0]]), "est must hold only 0 and 1, got values such as [2]"),
    (lambda: shd([[0, -1, 3], [0.5, 0, 0], [0, 0, 0]], np.zeros((3, 3))),
     "true must hold only 0 and 1, got values such as [-1.0, 0.5, 3.0]"),
    # at most five of the offending values, smallest first
    (lambda: shd(np.zeros((3, 3)), [[0, 7, 6], [5, 0, 4], [3, 2, 0]]),
     "est must hold only 0 and 1, got values such as [2, 3, 4, 5, 6]"),
    (lambda: adjusted_rand_index([[0, 1]], [0, 1]), "labels_true must be a 1-D array of labels, got shape (1, 2)"),
    (lambda: adjusted_rand_index([0, 1], [[0], [1]]), "labels_pred must be a 1-D array of labels, got shape (2, 1)"),
    (lambda: adjusted_rand_index([0, 1], [0, 1, 1]), "labels_true and labels_pred differ in length: 2 vs 3"),
    (lambda: evaluate(CHAIN, CHAIN, assignments=[0, 1]), "pass both regimes and assignments for the ARI, or neither"),
    (lambda: match_components([0, -1], [0, 1]), "assignments and regimes must be non-empty and non-negative"),
    (lambda: match_components(np.zeros(0, int), np.zeros(0, int)),
     "assignments and regimes must be non-empty and non-negative"),
    # assignments and regimes of different lengths are refused before they are counted
    (lambda: match_components([0, 1], [0, 1, 1]),
     "assignments and regimes must be 1-D int arrays of one length, got int64(2,) and int64(3,)"),
    # num_regimes is honoured: regime 2 has no rows
    (lambda: match_components([1, 0], [0, 1], num_regimes=3), "regimes [2] have no rows to match"),
    (lambda: target_recovery(np.full((2, 3), 2), np.zeros((2, 3)), [0, 1], [0, 1]),
     "true_targets must hold only 0 and 1"),
    # a 1-D truth is refused with the message, not an IndexError
    (lambda: target_recovery(np.zeros(3), np.zeros((2, 3)), [0, 1], [0, 1]),
     "true_targets (R, d) and target_probs (K, d) must share d, got (3,) and (2, 3)"),
    # the regimes come from true_targets: its third regime has no rows
    (lambda: target_recovery(np.zeros((3, 2)), np.zeros((2, 2)), [0, 1], [0, 1]), "regimes [2] have no rows to match"),
])
def test_error_messages_in_full(call, message):
    with _raises_exactly(message):
        call()


def test_ari_of_no_labels_is_one():
    # an empty partition pair: the denominator vanishes, as for two identical partitions
    assert adjusted_rand_index([], []) == 1.0
    assert adjusted_rand_index(np.zeros(0, int), np.zeros(0, int)) == 1.0


def test_match_components_on_single_rows_and_explicit_regime_counts():
    assert match_components([0], [0]).tolist() == [0]
    assert match_components([3], [0]).tolist() == [3]
    # num_regimes larger than the regimes seen is refused above; equal to them it is the default
    assert match_components([2, 2, 0, 1, 1], [0, 0, 0, 1, 1], num_regimes=2).tolist() == [2, 1]


def test_target_threshold_is_strict_and_compared_in_double_precision():
    true_targets = np.array([[1, 0], [0, 1]])
    regimes = assignments = np.array([0, 1])
    at = target_recovery(true_targets, [[0.5, 0.0], [0.0, 0.9]], assignments, regimes)
    assert at == pytest.approx({"target_precision": 1.0, "target_recall": 0.5, "target_f1": 2 / 3})
    above = target_recovery(true_targets, [[0.51, 0.0], [0.0, 0.9]], assignments, regimes)
    assert above == {"target_precision": 1.0, "target_recall": 1.0, "target_f1": 1.0}
    # float32(0.3) is 0.30000001192...: above a threshold of 0.3, also when given in single precision
    probs32 = np.array([[0.3, 0.0], [0.0, 0.9]], dtype=np.float32)
    got = target_recovery(true_targets, probs32, assignments, regimes, threshold=0.3)
    assert got == {"target_precision": 1.0, "target_recall": 1.0, "target_f1": 1.0}

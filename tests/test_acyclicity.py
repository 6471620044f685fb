import itertools

import numpy as np
import pytest
import torch

from pyro_causal.acyclicity import AugmentedLagrangian, PenaltySchedule, acyclicity, dag_from_probabilities, is_dag


def all_graphs(d):
    pairs = [(i, j) for i in range(d) for j in range(d) if i != j]
    for bits in itertools.product((0, 1), repeat=len(pairs)):
        a = np.zeros((d, d))
        for (i, j), b in zip(pairs, bits):
            a[i, j] = b
        yield a


@pytest.mark.parametrize("d", [2, 3])
def test_h_is_zero_exactly_on_dags(d):
    graphs = list(all_graphs(d))
    h = acyclicity(torch.tensor(np.stack(graphs), dtype=torch.float64))
    for a, value in zip(graphs, h):
        if is_dag(a):
            assert abs(float(value)) < 1e-12
        else:
            assert float(value) > 1e-3


def test_h_of_a_two_cycle_is_exact():
    w = torch.tensor([[0.0, 0.5], [0.2, 0.0]], dtype=torch.float64)
    # tr(exp(W)) - 2 = 2 cosh(sqrt(w12 w21)) - 2
    assert float(acyclicity(w)) == pytest.approx(2 * np.cosh(np.sqrt(0.1)) - 2, rel=1e-10)


def test_random_larger_graphs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = np.triu((rng.random((8, 8)) < 0.4).astype(float), 1)
        perm = rng.permutation(8)
        dag = a[np.ix_(perm, perm)]
        assert abs(float(acyclicity(torch.tensor(dag)))) < 1e-9
        i, j = np.argwhere(dag)[0]
        cyclic = dag.copy()
        cyclic[j, i] = 1
        assert float(acyclicity(torch.tensor(cyclic))) > 0.1


def test_dag_from_probabilities_breaks_cycles_by_dropping_the_weakest_edge():
    probs = np.array([[0, 0.9, 0], [0, 0, 0.8], [0.6, 0, 0]])
    dag = dag_from_probabilities(probs)
    assert is_dag(dag)
    np.testing.assert_array_equal(dag, [[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_dag_from_probabilities_always_returns_a_dag():
    rng = np.random.default_rng(1)
    for _ in range(30):
        probs = rng.random((7, 7))
        np.fill_diagonal(probs, 0)
        dag = dag_from_probabilities(probs)
        assert is_dag(dag)
        assert set(map(tuple, np.argwhere(dag))) <= set(map(tuple, np.argwhere(probs > 0.5)))


def test_dag_from_probabilities_keeps_an_acyclic_threshold_graph():
    probs = np.array([[0, 0.7, 0.9], [0.2, 0, 0.6], [0.1, 0.4, 0]])
    np.testing.assert_array_equal(dag_from_probabilities(probs), (probs > 0.5).astype(int))


def test_augmented_lagrangian_updates():
    lag = AugmentedLagrangian(PenaltySchedule(initial_penalty=1.0, penalty_growth=10.0, required_progress=0.25))
    assert float(lag(torch.tensor(2.0))) == pytest.approx(0.5 * 1.0 * 4)
    lag.update(2.0)  # first update: previous h is inf, so no growth
    assert float(lag.penalty) == 1.0 and float(lag.multiplier) == pytest.approx(2.0)
    lag.update(1.0)  # 1.0 > 0.25 * 2.0: not enough progress, mu grows before the dual step
    assert float(lag.penalty) == 10.0 and float(lag.multiplier) == pytest.approx(12.0)
    lag.update(0.1)  # enough progress
    assert float(lag.penalty) == 10.0
    assert lag.steps_in_round() == lag.schedule.round_steps
    state = lag.state_dict()
    other = AugmentedLagrangian(lag.schedule)
    other.load_state_dict(state)
    assert float(other.multiplier) == float(lag.multiplier) and int(other.rounds) == 3


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="round_steps"):
        PenaltySchedule(round_steps=0)
    with pytest.raises(ValueError):
        PenaltySchedule(penalty_growth=1.0)

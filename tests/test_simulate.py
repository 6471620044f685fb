"""Tests of the SCM simulator (paper, section 4)."""
from dataclasses import replace

import networkx as nx
import numpy as np
import pytest

from pyro_causal.simulate import (MECHANISMS, erdos_renyi_dag, simulate, simulate_cause_effect,
                                  write_simulation)


def _ols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of ``y`` on ``x`` (with an intercept, dropped)."""
    design = np.column_stack([np.ones(len(x)), x])
    return np.linalg.lstsq(design, y, rcond=None)[0][1:]


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("intervention", ["stochastic", "perfect", "imperfect"])
def test_shapes_and_truth(mechanism, intervention):
    data = simulate(num_variables=6, edges_per_node=1.5, num_samples=701, mechanism=mechanism,
                    intervention=intervention, seed=3)
    d = 6
    assert data.x.shape == (701, d) and data.x.dtype == np.float64
    assert np.isfinite(data.x).all()
    assert data.adjacency.shape == (d, d) and set(np.unique(data.adjacency)) <= {0, 1}
    assert nx.is_directed_acyclic_graph(nx.DiGraph(data.adjacency))
    assert data.names == [f"X{j}" for j in range(d)]
    assert (data.mechanism, data.intervention, data.seed) == (mechanism, intervention, 3)
    # floor(n / (d + 1)) rows per intervention, the remainder observational
    counts = np.bincount(data.regimes, minlength=d + 1)
    assert counts[1:].tolist() == [701 // 7] * d and counts[0] == 701 - d * (701 // 7)
    np.testing.assert_array_equal(data.targets[0], 0)
    np.testing.assert_array_equal(data.targets[1:], np.eye(d))
    assert (data.weights is not None) == (mechanism == "linear")


def test_reproducible_and_seed_dependent():
    a, b = simulate(seed=7, num_samples=550), simulate(seed=7, num_samples=550)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.adjacency, b.adjacency)
    c = simulate(seed=8, num_samples=550)
    assert not np.array_equal(a.x, c.x)
    graphs = {simulate(seed=s, num_samples=110).adjacency.tobytes() for s in range(10)}
    assert len(graphs) > 5


def test_perfect_is_stochastic_and_observational_rows_shared():
    stochastic = simulate(seed=2, num_samples=550, mechanism="mlp")
    perfect = simulate(seed=2, num_samples=550, mechanism="mlp", intervention="perfect")
    imperfect = simulate(seed=2, num_samples=550, mechanism="mlp", intervention="imperfect")
    np.testing.assert_array_equal(stochastic.x, perfect.x)
    obs = stochastic.regimes == 0
    np.testing.assert_array_equal(stochastic.x[obs], imperfect.x[obs])
    assert not np.array_equal(stochastic.x, imperfect.x)


@pytest.mark.parametrize("e", [1.0, 4.0])
def test_expected_edges_per_node(e):
    rng = np.random.default_rng(0)
    edges = [erdos_renyi_dag(10, e, rng).sum() for _ in range(200)]
    assert abs(np.mean(edges) - e * 10) < 0.1 * e * 10


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="edges_per_node"):
        simulate(num_variables=5, edges_per_node=4.0)
    with pytest.raises(ValueError, match="unknown mechanism"):
        simulate(mechanism="quadratic")
    with pytest.raises(ValueError, match="unknown intervention"):
        simulate(intervention="atomic")
    with pytest.raises(ValueError, match="fewer than"):
        simulate(num_variables=10, num_samples=5)


def test_linear_weights_bounded_away_from_zero():
    for seed in range(5):
        data = simulate(edges_per_node=2.0, num_samples=110, seed=seed)
        on_graph = data.adjacency == 1
        assert np.all(np.abs(data.weights[on_graph]) >= 0.5)
        assert np.all(np.abs(data.weights[on_graph]) <= 2.0)
        assert np.all(data.weights[~on_graph] == 0)


def test_stochastic_intervention_cuts_parents():
    data = simulate(edges_per_node=1.0, num_samples=11000, seed=5)
    checked = 0
    for j in range(10):
        parents = np.flatnonzero(data.adjacency[:, j])
        if parents.size == 0:
            continue
        obs, interv = data.regimes == 0, data.regimes == j + 1
        # observationally the regression recovers the true weights...
        np.testing.assert_allclose(_ols(data.x[obs][:, parents], data.x[obs, j]),
                                   data.weights[parents, j], atol=0.3)
        # ...under the intervention x_j ~ N(2, 1) ignores its parents
        assert np.all(np.abs(_ols(data.x[interv][:, parents], data.x[interv, j])) < 0.3)
        assert abs(data.x[interv, j].mean() - 2.0) < 0.15
        assert abs(data.x[interv, j].std() - 1.0) < 0.1
        checked += 1
    assert checked >= 3


def test_imperfect_intervention_keeps_parents_and_changes_mechanism():
    data = simulate(edges_per_node=1.0, num_samples=11000, intervention="imperfect", seed=5)
    checked = 0
    for j in range(10):
        interv = data.regimes == j + 1
        parents = np.flatnonzero(data.adjacency[:, j])
        if parents.size:  # the parents still act, with weights of the opposite sign
            coef = _ols(data.x[interv][:, parents], data.x[interv, j])
            assert np.all(np.abs(coef) > 0.3)
            assert np.all(np.sign(coef) == -np.sign(data.weights[parents, j]))
            checked += 1
        obs_mean = data.x[data.regimes == 0, j].mean()
        assert data.x[interv, j].mean() != pytest.approx(obs_mean, abs=0.1)
    assert checked >= 3


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.concatenate([a, b])
    cdf = [np.searchsorted(np.sort(v), grid, side="right") / len(v) for v in (a, b)]
    return float(np.max(np.abs(cdf[0] - cdf[1])))


@pytest.mark.parametrize("mechanism", ["mlp", "nonadditive"])
@pytest.mark.parametrize("intervention", ["stochastic", "imperfect"])
def test_nonlinear_interventions_change_the_target(mechanism, intervention):
    data = simulate(num_samples=5500, mechanism=mechanism, intervention=intervention, seed=1)
    obs = data.x[data.regimes == 0]
    changes = []
    for j in range(10):
        x_j = data.x[data.regimes == j + 1, j]
        changes.append(_ks(obs[:, j], x_j))
        if intervention == "stochastic":
            assert abs(x_j.mean() - 2.0) < 0.2 and abs(x_j.std() - 1.0) < 0.15
    # 500 vs 500 samples: KS > 0.1 is beyond sampling noise (p < 0.05)
    assert np.sum(np.array(changes) > 0.1) >= 9, np.round(changes, 3)


def test_cause_effect():
    data = simulate_cause_effect(seed=0)
    assert data.x.shape == (999, 2) and data.names == ["A", "B"]
    assert np.bincount(data.regimes).tolist() == [333, 333, 333]
    np.testing.assert_array_equal(data.targets, [[0, 0], [1, 0], [0, 1]])
    graphs = [simulate_cause_effect(seed=s).adjacency for s in range(60)]
    kinds = np.array([2 if g.sum() == 0 else int(g[1, 0]) for g in graphs])  # 0 A->B, 1 B->A
    assert all(g.sum() <= 1 and np.trace(g) == 0 for g in graphs)
    assert np.all((np.bincount(kinds, minlength=3) >= 10) & (np.bincount(kinds) <= 30))


def test_write_simulation_refuses_to_overwrite(tmp_path):
    data = simulate(num_variables=3, num_samples=40, seed=0)
    paths = write_simulation(data, tmp_path / "sim.csv")
    assert sorted(p.name for p in paths.values()) == [
        "sim.csv", "sim_adjacency.csv", "sim_regimes.csv", "sim_targets.csv"]
    (tmp_path / "other_targets.csv").write_text("keep")
    with pytest.raises(FileExistsError, match="other_targets.csv"):
        write_simulation(data, tmp_path / "other.csv")
    assert (tmp_path / "other_targets.csv").read_text() == "keep"
    assert not (tmp_path / "other_adjacency.csv").exists()  # nothing written
    write_simulation(data, tmp_path / "sim.csv", overwrite=True)


def test_regime_log_likelihood_matches_the_pair_written_out():
    """A -> B with a stochastic intervention: each regime's density by hand."""
    data = next(d for d in (simulate_cause_effect(300, s) for s in range(20)) if d.adjacency[0, 1])
    (mech_a, mech_b), _ = data.mechanisms
    a, b = data.x[:, 0], data.x[:, 1]

    def log_normal(value, mean, std):
        return -0.5 * ((value - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi))

    obs_a, obs_b = log_normal(a, 0.0, mech_a.noise_std), log_normal(b, mech_b.w_in[0] * a, mech_b.noise_std)
    expected = np.column_stack([obs_a + obs_b, log_normal(a, 2.0, 1.0) + obs_b, obs_a + log_normal(b, 2.0, 1.0)])
    np.testing.assert_allclose(data.regime_log_likelihood(), expected, rtol=1e-12)


@pytest.mark.parametrize("mechanism,intervention", [("linear", "imperfect"), ("mlp", "stochastic")])
def test_regime_log_likelihood_is_the_sampling_density(mechanism, intervention):
    """Rows score higher under their own regime than under the others, on average."""
    data = simulate(5, 1.0, 3000, mechanism, intervention, seed=2)
    table = data.regime_log_likelihood()
    own = table[np.arange(len(table)), data.regimes]
    for k in range(1, data.num_regimes):
        rows = data.regimes == k
        assert own[rows].mean() > table[rows, 0].mean()  # the intervention is visible
        assert own[rows].mean() >= table[rows].mean(0).max() - 1e-12


def test_regime_posterior_is_the_bayes_classifier():
    weak = simulate(6, 1.0, 3000, seed=3)
    strong = simulate(6, 1.0, 3000, seed=3, intervention_mean=12.0)
    for data in (weak, strong):
        probs = data.regime_posterior()
        np.testing.assert_allclose(probs.sum(1), 1.0)
    accuracy = lambda d: (d.regime_posterior().argmax(1) == d.regimes).mean()  # noqa: E731
    assert accuracy(strong) > 0.99 > accuracy(weak) > 1.0 / weak.num_regimes


def test_regime_log_likelihood_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="no closed form"):
        simulate(4, 1.0, 200, "nonadditive", seed=0).regime_log_likelihood()
    with pytest.raises(ValueError, match="no true mechanisms"):
        replace(simulate(4, 1.0, 200, seed=0), mechanisms=None).regime_log_likelihood()

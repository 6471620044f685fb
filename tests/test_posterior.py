"""Posterior tools on a tiny fit: assignments (exact, MAP, sampled), components, predictive, ArviZ."""
import itertools

import numpy as np
import pytest
import torch
from pyro_causal import FitConfig, Preprocessing, TrainingConfig

from pyro_causal import (
    PenaltySchedule,
    component_summary,
    exact_assignment_probs,
    expected_components_in_use,
    fit,
    map_assignments,
    posterior_predictive,
    posterior_sites,
    save_posterior,
    simulate,
    to_inference_data,
)

TINY = PenaltySchedule(first_round_steps=20, round_steps=5, max_rounds=1)


@pytest.fixture(scope="module")
def data():
    return simulate(num_variables=3, num_samples=300)


@pytest.fixture(scope="module")
def result(data):
    return fit(data.x, config=FitConfig(training=TrainingConfig(schedule=TINY)))


def test_exact_assignment_probs_are_distributions(result, data):
    K = result.model.truncation
    probs = exact_assignment_probs(result)
    assert probs.shape == (300, K)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(exact_assignment_probs(result, data.x[:7]), probs[:7], rtol=1e-4, atol=1e-6)
    # A bare model takes standardised rows.
    xt = torch.as_tensor(result.train_x[:5], dtype=torch.float32)
    sites = posterior_sites(result)
    np.testing.assert_allclose(exact_assignment_probs(result.model, xt, sites=sites),
                               exact_assignment_probs(result, sites=sites)[:5], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("draw", [False, True])
def test_map_assignments_are_the_argmax_of_the_exact_posterior(result, draw):
    sites = posterior_sites(result, draw=draw, seed=1)
    decoded = map_assignments(result, sites=sites)
    assert decoded.shape == (300,) and decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, exact_assignment_probs(result, sites=sites).argmax(1))


def test_sampled_assignments_follow_the_exact_posterior(result, data):
    sites = posterior_sites(result, draw=True, seed=2)
    probs = exact_assignment_probs(result, data.x, sites=sites)
    row = int(np.argmin(probs.max(1)))  # the most ambiguous row
    draws = map_assignments(result, np.repeat(data.x[row:row + 1], 4000, 0), sites=sites, temperature=1, seed=0)
    frequencies = np.bincount(draws, minlength=probs.shape[1]) / draws.size
    np.testing.assert_allclose(frequencies, probs[row], atol=0.03)
    again = map_assignments(result, np.repeat(data.x[row:row + 1], 4000, 0), sites=sites, temperature=1, seed=0)
    np.testing.assert_array_equal(draws, again)


def test_expected_components_in_use_matches_brute_force(result, data):
    K = result.model.truncation
    for assignment in ("amortized", "exact"):
        value = expected_components_in_use(result, assignment=assignment)
        assert 1.0 <= value <= K
    rows = data.x[:4]
    q = exact_assignment_probs(result, rows)
    brute = sum(
        np.prod(q[np.arange(4), list(z)]) * len(set(z)) for z in itertools.product(range(K), repeat=4)
    )
    assert expected_components_in_use(result, rows, assignment="exact") == pytest.approx(brute, rel=1e-5)
    with pytest.raises(ValueError, match="unknown assignment"):
        expected_components_in_use(result, assignment="nope")


def test_component_summary(result, data):
    K = result.model.truncation
    table = component_summary(result, assignment="amortized")
    assert [row["component"] for row in table] == list(range(K))
    assert sum(row["weight"] for row in table) == pytest.approx(1.0, rel=1e-5)
    assert sum(row["expected_size"] for row in table) == pytest.approx(300, rel=1e-4)
    assert sum(row["map_size"] for row in table) == 300
    assert table[0]["targets"] == [] and set(table[0]["mean_shift"].values()) == {0.0}
    q = result.assignment_probs()
    means = q.T @ data.x / q.sum(0)[:, None]
    shift = [table[k]["mean_shift"][name] for k in range(K) for name in data.names]
    np.testing.assert_allclose(shift, (means - means[0]).ravel(), rtol=1e-4, atol=1e-6)


def test_posterior_predictive_is_in_original_units(result, data):
    K, d = result.model.truncation, 3
    observational = posterior_predictive(result, 2000, component=0, seed=0)
    assert observational.shape == (2000, d) and np.isfinite(observational).all()
    # A 20-step fit has not separated the regimes yet: compare with the whole data set, roughly.
    assert np.all(np.abs(observational.mean(0) - data.x.mean(0)) < 0.5 * data.x.std(0))
    np.testing.assert_array_equal(observational, posterior_predictive(result, 2000, component=0, seed=0))
    assert posterior_predictive(result, 10, seed=1, draw=True).shape == (10, d)
    assert posterior_predictive(result, 10, component=K - 1).shape == (10, d)
    with pytest.raises(ValueError, match="component"):
        posterior_predictive(result, 10, component=K)


def test_seeded_calls_leave_the_global_rng_alone(result):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    posterior_predictive(result, 5, seed=7)
    posterior_sites(result, draw=True, seed=7)
    torch.testing.assert_close(torch.rand(3), expected)


def test_log_transformed_fits_predict_positive_values():
    x = np.exp(simulate(num_variables=3, num_samples=300, seed=1).x / 3)
    logged = fit(x,
                 config=FitConfig(preprocessing=Preprocessing(log_transform=True), training=TrainingConfig(schedule=TINY)))
    draws = posterior_predictive(logged, 500, seed=0)
    assert (draws > 0).all()
    assert np.all(np.abs(np.log(draws).mean(0) - np.log(x).mean(0)) < 0.5 * np.log(x).std(0))


def test_inference_data_and_netcdf_round_trip(result, tmp_path):
    az = pytest.importorskip("arviz")
    K = result.model.truncation
    idata = to_inference_data(result, num_draws=40, seed=0)
    posterior = idata.posterior
    assert posterior["graph"].shape == (1, 40, 3, 3)
    assert list(posterior["graph"].coords["cause"].values) == result.names
    assert posterior["v"].shape == (1, 40, K - 1) and posterior["u"].shape == (1, 40, K, 16)
    assert posterior["r"].shape == (1, 40, K - 1, 3)
    np.testing.assert_allclose(posterior["beta"].sum("component"), 1.0, rtol=1e-5)
    assert not posterior["graph"].values[..., [0, 1, 2], [0, 1, 2]].any()
    np.testing.assert_allclose(idata.training["elbo"], result.elbo_trace)
    summary = az.summary(idata, var_names=["beta", "graph"], kind="stats")
    assert len(summary) == K + 9
    path = save_posterior(result, tmp_path / "posterior.nc", num_draws=40)
    back = az.from_netcdf(path)
    np.testing.assert_array_equal(back.posterior["graph"], posterior["graph"])
    np.testing.assert_allclose(back.training["h"], result.h_trace)
    assert back.training.attrs["variant"] == "latent"
    with pytest.raises(FileExistsError, match="already exists"):
        save_posterior(result, path)
    save_posterior(result, path, num_draws=10, overwrite=True)
    assert az.from_netcdf(path).posterior.sizes["draw"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior.nc"]

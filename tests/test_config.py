"""fit's keywords and config objects: settings derived from them, former keywords, refusals."""
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from pyro_causal import (AfterTraining, EdgeSearch, FitConfig, ModelOptions, PenaltySchedule, Preprocessing, Priors,
                         TrainingConfig, exact_assignment_probs, fit, simulate, simulate_cause_effect)
from pyro_causal.commands import write_fit_outputs
from pyro_causal.config import FORMER_KEYWORDS, apply_former_keywords

TINY = PenaltySchedule(first_round_steps=5, round_steps=2, max_rounds=1)
QUICK = FitConfig(training=TrainingConfig(schedule=TINY), after_training=AfterTraining(held_refit=False))


@pytest.fixture(scope="module")
def data():
    return simulate(num_variables=3, num_samples=200, seed=0)


def plain(value):
    """``value`` as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def test_settings_are_the_config_objects_as_resolved(data):
    priors = Priors(alpha=2.0, target_logit=-3.0)
    result = fit(data.x, priors=priors, seed=4, config=QUICK)
    settings = result.settings
    assert settings["priors"] == asdict(replace(priors, edge_logit=-2.0))  # the penalty loop's default
    resolved = replace(QUICK.training, batch_size=None, graph_estimator="straight-through")
    assert settings["training"] == plain(asdict(resolved))
    assert settings["preprocessing"] == asdict(Preprocessing())
    assert settings["model"] == plain(asdict(ModelOptions()))
    assert settings["after_training"] == plain(asdict(replace(QUICK.after_training, order_refit=3,
                                                              edge_search=EdgeSearch(rounds=0))))
    assert settings["search"] == "penalty" and result.records["random_order"] is None
    assert "checkpoint" not in settings and settings["num_threads"] == 1
    assert (settings["seed"], settings["restarts"], settings["density"], settings["truncation"]) == (4, 1, "linear", 5)
    assert result.summary()["settings"] == settings and "elbo" not in settings
    assert np.isfinite(result.elbo) and result.records["held_refit"] is None


def test_the_edge_prior_default_is_the_searchs_and_a_given_one_is_kept(data):
    assert Priors().resolved("order").edge_logit == -6.0 and Priors().resolved("penalty").edge_logit == -2.0
    assert Priors(edge_logit=-1.5).resolved("order").edge_logit == -1.5
    with pytest.raises(ValueError, match="resolved"):
        Priors().logits(3)
    with pytest.raises(ValueError, match="search"):
        Priors().resolved("greedy")
    for search, expected in (("order", -6.0), ("penalty", -2.0)):
        result = fit(data.x, config=replace(QUICK, search=search))
        assert result.settings["priors"]["edge_logit"] == expected
        prior = result.model.graph_prior()
        off_diagonal = ~np.eye(3, dtype=bool)
        assert np.allclose(prior.logits.detach().numpy()[off_diagonal], expected)
    given = fit(data.x, priors=Priors(edge_logit=-1.0), config=QUICK)
    assert given.settings["priors"]["edge_logit"] == -1.0


@pytest.mark.parametrize("density, rounds, expected", [
    ("mlp", None, -6.0), ("flow", 3, -6.0), ("mlp", 0, -2.0), ("linear", None, -2.0)])
def test_order_refit_rounds_with_network_mechanisms_take_the_order_searchs_edge_prior(data, density, rounds, expected):
    config = replace(QUICK, search="penalty", after_training=AfterTraining(held_refit=False, order_refit=rounds))
    result = fit(data.x, density=density, config=config)
    assert result.settings["after_training"]["order_refit"] == (3 if rounds is None else rounds)
    assert result.settings["priors"]["edge_logit"] == expected
    off_diagonal = ~np.eye(3, dtype=bool)
    assert np.allclose(result.model.graph_prior().logits.detach().numpy()[off_diagonal], expected)


def test_the_edge_search_runs_by_default_on_two_variables_only(data):
    pair = simulate_cause_effect(300, seed=14)
    searched = fit(pair.x, config=QUICK)
    assert searched.settings["after_training"]["edge_search"] == {"rounds": 1, "restarts": 3, "moves": ["reverse", "remove"]}
    record = searched.records["edge_search"]
    # one held fit of the graph found and one per move from it (3 seeds each)
    assert len(record["scores"]) == 2 * len(record["start_edges"])
    assert searched.records["searched_from_elbo"] != searched.elbo
    off = fit(pair.x, config=replace(QUICK, after_training=AfterTraining(held_refit=False, edge_search=EdgeSearch(rounds=0))))
    assert off.settings["after_training"]["edge_search"]["rounds"] == 0 and "edge_search" not in off.records
    wider = fit(data.x, config=QUICK)  # three variables
    assert wider.settings["after_training"]["edge_search"]["rounds"] == 0 and "edge_search" not in wider.records


def test_a_given_training_config_is_used_as_is_and_batch_size_fills_it(data):
    training = TrainingConfig(schedule=TINY, learning_rate=0.01, graph_estimator="local")
    result = fit(data.x, regimes=data.regimes, batch_size=50, config=replace(QUICK, training=training))
    assert result.settings["training"] == plain(asdict(replace(training, batch_size=50)))
    with pytest.raises(ValueError, match="batch_size=50 and config.training.batch_size=60 differ"):
        fit(data.x, batch_size=50, config=replace(QUICK, training=replace(training, batch_size=60)))


def test_former_keywords_still_work_with_a_future_warning_naming_the_new_field(data):
    with pytest.warns(FutureWarning) as caught:
        old = fit(data.x, seed=1, schedule=TINY, held_refit=False, edge_logit=-3.0, embedding_dim=4)
    messages = " ".join(str(w.message) for w in caught)
    for place in ("config.training.schedule", "config.after_training.held_refit", "priors.edge_logit",
                  "config.model.embedding_dim"):
        assert place in messages
    new = fit(data.x, seed=1, priors=Priors(edge_logit=-3.0),
              config=replace(QUICK, model=ModelOptions(embedding_dim=4)))
    np.testing.assert_array_equal(old.edge_probs, new.edge_probs)
    assert old.settings == new.settings and old.elbo == new.elbo


def test_every_former_keyword_maps_to_a_field():
    values = {"schedule": TINY, "search_moves": ["reverse"], "checkpoint": None, "density_options": {"a": 1},
              "order_refit": 2, "edge_search": 1, "search_restarts": 2, "num_threads": 2, "embedding_dim": 3,
              "assignment": "exact", "graph_estimator": None, "two_cycles": "allow", "learning_rate": 0.1,
              "num_particles": 2, "supervision_weight": 1.0, "standardize": False, "log_transform": True,
              "held_refit": False, "alpha": 2.0, "target_logit": -1.0, "edge_logit": -1.0, "stick_prior": "law"}
    assert set(FORMER_KEYWORDS) <= set(values)
    with pytest.warns(FutureWarning):
        priors, config = apply_former_keywords(values, None, None, "local")
    assert priors == Priors(alpha=2.0, target_logit=-1.0, edge_logit=-1.0)
    assert config.training.graph_estimator == "local"  # None: chosen from the problem, as before
    assert config.training.assignment == "optimal" and config.training.schedule == TINY
    assert config.after_training.edge_search == EdgeSearch(rounds=1, restarts=2, moves=("reverse",))
    assert config.model == ModelOptions(embedding_dim=3, two_cycles="allow", density_options={"a": 1},
                                        extra={"stick_prior": "law"})
    assert config.preprocessing == Preprocessing(standardize=False, log_transform=True)


def test_an_unknown_keyword_or_value_is_refused_by_name(data):
    with pytest.raises(TypeError, match="'shedule'"):
        fit(data.x, shedule=TINY)
    with pytest.raises(ValueError, match="unknown intervention 'perfekt'"):
        fit(data.x, intervention="perfekt")
    with pytest.raises(ValueError, match="unknown two_cycles 'forbid'"):
        ModelOptions(two_cycles="forbid")
    with pytest.raises(ValueError, match="unknown assignment 'exct'"):
        TrainingConfig(assignment="exct")
    with pytest.raises(ValueError, match=r"unknown search move\(s\) \['flip'\]"):
        EdgeSearch(moves=("flip",))
    with pytest.raises(ValueError, match="alpha must be"):
        Priors(alpha=0.0)
    with pytest.raises(ValueError, match="order_refit must be an int >= 0"):
        AfterTraining(order_refit=-1)
    with pytest.raises(ValueError, match="restarts must be an int >= 1"):
        fit(data.x, restarts=0)
    with pytest.raises(TypeError, match="config must be a pyro_causal.FitConfig"):
        fit(data.x, config={"training": None})
    with pytest.raises(TypeError, match="FitConfig.training must be a TrainingConfig, got PenaltySchedule"):
        FitConfig(training=TINY)


def test_assignments_csv_is_the_optimal_q_z_the_docs_report(data, tmp_path):
    result = fit(data.x, seed=0, config=QUICK)
    write_fit_outputs(result, tmp_path, result.summary())
    written = np.loadtxt(tmp_path / "assignments.csv", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_array_equal(written, np.round(exact_assignment_probs(result), 6))
    assert not np.allclose(written, result.assignment_probs(), atol=1e-3)  # not the amortised network's


def test_a_given_model_trains_and_reports_the_priors_it_was_built_with(data):
    from pyro_causal.model import LatentInterventionModel

    config = replace(QUICK, after_training=AfterTraining(held_refit=False, order_refit=3))
    given = LatentInterventionModel(3, density="mlp", alpha=2.0, target_logit=-3.0, edge_logit=-1.0)
    result = fit(data.x, model=given, config=config)  # network rounds, yet the model's own edge prior
    assert result.settings["priors"] == asdict(Priors(alpha=2.0, target_logit=-3.0, edge_logit=-1.0))
    assert result.settings["density"] == "MLPGaussian"  # the given model's family, not fit's keyword default
    off_diagonal = ~np.eye(3, dtype=bool)
    assert np.allclose(result.model.graph_prior().logits.detach().numpy()[off_diagonal], -1.0)
    matrix = np.array([[0.0, -1.0, -np.inf], [-2.0, 0.0, -1.0], [-1.0, -1.0, 0.0]])
    result = fit(data.x, model=LatentInterventionModel(3, edge_logit=torch.as_tensor(matrix)), config=QUICK)
    assert result.settings["priors"]["edge_logit"] == "matrix"  # as summary.json names a matrix given
    np.testing.assert_array_equal(result.model.edge_logits.numpy(), matrix)

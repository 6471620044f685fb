"""Model selection by held-out ELBO (section 4): the split, the choice, the refit and the CLI."""
import json

import numpy as np
import pytest

from pyro_causal import FitConfig, PenaltySchedule, TrainingConfig, simulate
from pyro_causal.cli import main
from pyro_causal.io import write_csv
from pyro_causal.selection import heldout_scores, select_hyperparameters, split_rows

TINY = PenaltySchedule(first_round_steps=20, round_steps=5, max_rounds=1)
GRID = {"edge_logit": (-4.0, 0.0), "target_logit": (-2.0,)}


@pytest.fixture(scope="module")
def data():
    return simulate(num_variables=3, edges_per_node=1.0, num_samples=300, seed=1)


def test_split_is_a_reproducible_partition():
    train, validation = split_rows(101, 0.2, seed=3)
    again = split_rows(101, 0.2, seed=3)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(validation, again[1])
    assert len(validation) == 20 and len(train) == 81
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.arange(101))
    assert not np.array_equal(validation, split_rows(101, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="validation_fraction"):
        split_rows(10, 1.0)


def test_chooses_the_best_held_out_score_and_refits_on_every_row(data):
    selection = select_hyperparameters(data.x, GRID, seed=2, config=FitConfig(training=TrainingConfig(schedule=TINY)))
    scores = [row["score"] for row in selection.scores]
    assert len(scores) == 2 and all(np.isfinite(scores))
    assert [row["edge_logit"] for row in selection.scores] == [-4.0, 0.0]
    best = selection.scores[int(np.argmax(scores))]
    assert selection.best == {"edge_logit": best["edge_logit"], "target_logit": -2.0}
    assert selection.best_score == max(scores)
    assert all(row["score"] == row["elbo"] for row in selection.scores)
    train, validation = split_rows(len(data.x), 0.2, seed=2)
    np.testing.assert_array_equal(selection.validation_rows, validation)
    np.testing.assert_array_equal(selection.train_rows, train)
    assert selection.result.train_x.shape == data.x.shape
    assert selection.result.settings["priors"]["edge_logit"] == best["edge_logit"]
    summary = json.loads(json.dumps(selection.summary()))
    assert summary["chosen"] == selection.best and len(summary["grid"]) == 2


def test_same_seed_same_scores(data):
    a = select_hyperparameters(data.x, GRID, seed=2, refit=False,
                               config=FitConfig(training=TrainingConfig(schedule=TINY)))
    b = select_hyperparameters(data.x, GRID, seed=2, refit=False,
                               config=FitConfig(training=TrainingConfig(schedule=TINY)))
    assert a.scores == b.scores and a.result is None


def test_held_out_local_part_is_the_bound_without_global_terms(data):
    selection = select_hyperparameters(data.x, {"edge_logit": (-2.0,)}, criterion="log_likelihood",
                                       config=FitConfig(training=TrainingConfig(schedule=TINY)))
    scores = heldout_scores(selection.result, data.x[:50], num_draws=2)
    assert scores["log_likelihood"] > scores["elbo"]  # the KL terms are positive
    assert selection.scores[0]["score"] == selection.scores[0]["log_likelihood"]


def test_regimes_are_split_with_the_rows(data):
    regimes = data.regimes.copy()
    selection = select_hyperparameters(data.x,
                                       {"edge_logit": (-2.0,)},
                                       regimes=regimes,
                                       config=FitConfig(training=TrainingConfig(schedule=TINY, graph_estimator="local")))
    assert selection.result.variant == "unknown"
    assert np.isfinite(selection.scores[0]["score"])


def test_refuses_a_setting_given_twice(data):
    with pytest.raises(ValueError, match="restarts"):
        select_hyperparameters(data.x, {"restarts": (1, 2)}, restarts=2)
    with pytest.raises(ValueError, match="criterion"):
        select_hyperparameters(data.x, GRID, criterion="bic")


def test_cli_writes_the_selection_into_the_summary(data, tmp_path):
    write_csv(tmp_path / "data.csv", data.names, data.x.tolist())
    status = main(["fit", str(tmp_path / "data.csv"), "--out", str(tmp_path / "out"), "--select", "--quiet",
                   "--first-round-steps", "20", "--round-steps", "5", "--max-rounds", "1"])
    assert status == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    selection = summary["selection"]
    assert len(selection["grid"]) == 6 and selection["validation_rows"] == 60
    assert summary["settings"]["priors"]["edge_logit"] == selection["chosen"]["edge_logit"]
    assert summary["settings"]["priors"]["target_logit"] == selection["chosen"]["target_logit"]

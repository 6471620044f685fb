"""Value checks of the trainer's rules: the outlier test, the rounds and their events, the state it
saves and restores."""
import math

import pytest
import torch

from pyro_causal import PenaltySchedule, StopReason, Trainer, TrainingConfig
from pyro_causal.model import LatentInterventionModel
from pyro_causal.trainer import OUTLIER_MAX_CONSECUTIVE, OUTLIER_MIN_HISTORY, OUTLIER_MIN_SPREAD, OUTLIER_WINDOW


def small_trainer(n=40, **config):
    torch.manual_seed(0)
    model = LatentInterventionModel(3, truncation=2, embedding_dim=2, encoder_hidden=4)
    return Trainer(model, torch.randn(n, 3), config=TrainingConfig(**config))


def test_the_outlier_rule_constants():
    assert (OUTLIER_WINDOW, OUTLIER_MIN_HISTORY, OUTLIER_MAX_CONSECUTIVE, OUTLIER_MIN_SPREAD) == (200, 50, 10, 0.1)


def test_a_step_is_an_outlier_beyond_tolerance_robust_deviations_below_the_median():
    trainer = small_trainer()
    trainer._recent.extend([0.0] * 25 + [1.0] * 25)  # median 0.5, every deviation 0.5
    threshold = 0.5 - 10.0 * 1.4826 * 0.5
    assert not trainer.is_outlier(threshold + 1e-6)
    assert trainer.is_outlier(threshold - 1e-6)
    assert not trainer.is_outlier(threshold)  # strictly below
    loose = small_trainer(outlier_tolerance=2.0)
    loose._recent.extend([0.0] * 25 + [1.0] * 25)
    assert loose.is_outlier(0.5 - 2.0 * 1.4826 * 0.5 - 1e-6) and not loose.is_outlier(0.5 - 2.0 * 1.4826 * 0.5 + 1e-6)


def test_the_spread_has_a_floor_and_the_test_waits_for_a_history():
    trainer = small_trainer()
    trainer._recent.extend([-3.0] * (OUTLIER_MIN_HISTORY - 1))
    assert not trainer.is_outlier(-1e6)  # 49 steps: too few to judge
    trainer._recent.append(-3.0)
    # no spread at all: the floor of 0.1 nats per row, times the tolerance
    assert not trainer.is_outlier(-3.0 - 10 * OUTLIER_MIN_SPREAD + 1e-6)
    assert trainer.is_outlier(-3.0 - 10 * OUTLIER_MIN_SPREAD - 1e-6)
    off = small_trainer(outlier_tolerance=None)
    off._recent.extend([-3.0] * 60)
    assert not off.is_outlier(-1e6)


def test_after_too_many_outliers_in_a_row_the_window_restarts():
    trainer = small_trainer()
    trainer._recent.extend([0.0] * 60)
    trainer._consecutive_outliers = OUTLIER_MAX_CONSECUTIVE - 1
    assert trainer.is_outlier(-50.0) and len(trainer._recent) == 60
    trainer._consecutive_outliers = OUTLIER_MAX_CONSECUTIVE
    assert not trainer.is_outlier(-50.0)
    assert len(trainer._recent) == 0 and trainer._consecutive_outliers == 0


def test_training_config_refusals_name_the_option():
    for options, message in (({"learning_rate": 0.0}, "learning_rate must be > 0, got 0.0"),
                             ({"learning_rate": math.inf}, "learning_rate must be > 0, got inf"),
                             ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
                             ({"num_particles": 0}, "num_particles must be >= 1, got 0"),
                             ({"outlier_tolerance": 0.0}, "outlier_tolerance must be > 0 or None, got 0.0"),
                             ({"assignment": "gumbel"}, "unknown assignment 'gumbel'; choose one of optimal, amortized"),
                             ({"graph_estimator": "x"}, "unknown graph_estimator 'x'; choose one of local, straight-through")):
        with pytest.raises(ValueError) as caught:
            TrainingConfig(**options)
        assert str(caught.value) == message
    TrainingConfig(batch_size=1, num_particles=1, outlier_tolerance=None, learning_rate=1e-9)  # the bounds themselves


def test_batch_rows_are_all_rows_or_a_fresh_subset_of_the_batch_size():
    assert small_trainer(n=40, batch_size=None).batch_rows() is None
    assert small_trainer(n=40, batch_size=40).batch_rows() is None
    trainer = small_trainer(n=40, batch_size=39)
    rows = trainer.batch_rows()
    assert rows.shape == (39,) and len(set(rows.tolist())) == 39 and 0 <= int(rows.min()) and int(rows.max()) < 40
    assert not torch.equal(rows, trainer.batch_rows())


def test_each_step_is_recorded_and_events_come_every_log_every_steps_and_each_round():
    events = []
    schedule = PenaltySchedule(first_round_steps=4, round_steps=3, max_rounds=2)
    trainer = small_trainer(schedule=schedule, log_every=2)
    trainer.callbacks.append(events.append)
    assert trainer.run() == "budget"
    assert trainer.step_count == 7 and len(trainer.elbo_trace) == len(trainer.h_trace) == 7
    kinds = [(e.kind, e.step, e.round) for e in events]
    assert kinds == [("step", 2, 0), ("step", 4, 0), ("round", 4, 1), ("step", 6, 1), ("round", 7, 2)]
    last = events[-1]
    assert (last.elbo, last.h) == (trainer.elbo_trace[-1], trainer.h_trace[-1])
    assert last.multiplier == float(trainer.lagrangian.multiplier) and last.penalty == float(trainer.lagrangian.penalty)
    assert last.phase == "penalty" and last.total is None
    assert trainer.steps_this_round == 0


def test_the_state_round_trips_and_restores_the_outlier_window():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=1))
    trainer.run()
    trainer._recent.extend([1.0, 2.0])
    trainer._consecutive_outliers, trainer.skipped_steps = 3, 4
    state = trainer.state_dict()
    assert state["step_count"] == 3 and state["steps_this_round"] == 0 and state["lagrangian_stop"] == "budget"
    assert state["recent_elbos"][-2:] == [1.0, 2.0] and state["consecutive_outliers"] == 3 and state["skipped_steps"] == 4
    other = small_trainer(schedule=PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=1))
    other.load_state_dict(state)
    assert (other.step_count, other.steps_this_round, other.lagrangian_stop) == (3, 0, "budget")
    assert other.elbo_trace == trainer.elbo_trace and other.h_trace == trainer.h_trace
    assert list(other._recent) == list(trainer._recent) and other._recent.maxlen == OUTLIER_WINDOW
    assert (other._consecutive_outliers, other.skipped_steps) == (3, 4)
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(other.model.state_dict()[name], value)
    # a snapshot is restored with its stop reason
    other._restore({**other._snapshot(), "lagrangian_stop": "converged"})
    assert other.lagrangian_stop is StopReason.CONVERGED
    other._restore({**other._snapshot(), "lagrangian_stop": None})
    assert other.lagrangian_stop is None
    # a state without the outlier fields (an older checkpoint) starts them empty
    other._restore_outlier_state({})
    assert (other.skipped_steps, len(other._recent), other._consecutive_outliers) == (0, 0, 0)


def test_a_divergence_restores_the_state_of_the_last_round():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=3))
    steps = []
    original = trainer.svi.step

    def svi_step(*args, **kwargs):
        loss = original(*args, **kwargs)
        steps.append(1)
        if len(steps) == 5:  # the second step of the second round leaves a parameter non-finite
            with torch.no_grad():
                trainer.model.guide.edge_logits[0, 1] = float("nan")
        return loss

    trainer.svi.step = svi_step
    assert trainer.run() == "diverged"
    assert trainer.step_count == 3 and trainer.steps_this_round == 0 and len(trainer.elbo_trace) == 3
    assert trainer.divergence == "non-finite parameters after step 4"
    assert bool(torch.isfinite(trainer.model.guide.edge_logits).all())


def test_the_loss_of_a_step_is_the_objective_with_the_trainer_s_regimes_targets_and_rows():
    torch.manual_seed(0)
    model = LatentInterventionModel(3, truncation=3, embedding_dim=2, encoder_hidden=4)
    x = torch.randn(40, 3)
    regimes = torch.tensor([0, 1, 2, -1] * 10)
    targets = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    trainer = Trainer(model, x, regimes=regimes, targets=targets, config=TrainingConfig(batch_size=30))
    trainer.objective(model.model, model.guide, x, regimes, targets, rows=torch.arange(30))  # fixes the ELBO's plan
    torch.manual_seed(5)
    loss, elbo, h = trainer.loss()
    torch.manual_seed(5)
    rows = torch.randperm(40)[:30]
    expected = trainer.objective(model.model, model.guide, x, regimes, targets, rows=rows)
    for value, reference in zip((loss, elbo, h), expected):
        torch.testing.assert_close(value, reference)
    # the same call with any of them dropped gives another value (or another plan: an error)
    assert abs(float(trainer.objective(model.model, model.guide, x, regimes, targets)[1]) - float(elbo)) > 1e-4

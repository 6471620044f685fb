"""Value checks of the trainer's rules: the outlier test, the rounds and their events, the state it
saves and restores."""
import math
import statistics

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


def test_each_step_is_recorded_and_events_come_every_log_every_steps_and_each_round(caplog):
    events, reasons = [], []
    schedule = PenaltySchedule(first_round_steps=4, round_steps=3, max_rounds=2)
    trainer = small_trainer(schedule=schedule, log_every=2)
    trainer.callbacks += [events.append, lambda event: reasons.append(trainer.stop_reason)]
    trainer.stop_reason = StopReason.BUDGET  # from an earlier run: cleared while this one runs
    with caplog.at_level("INFO", "pyro_causal.trainer"):
        assert trainer.run() == "budget"
    assert reasons == [None] * 5
    assert trainer.step_count == 7 and len(trainer.elbo_trace) == len(trainer.h_trace) == 7
    kinds = [(e.kind, e.step, e.round) for e in events]
    assert kinds == [("step", 2, 0), ("step", 4, 0), ("round", 4, 1), ("step", 6, 1), ("round", 7, 2)]
    last = events[-1]
    assert (last.elbo, last.h) == (trainer.elbo_trace[-1], trainer.h_trace[-1])
    assert last.multiplier == float(trainer.lagrangian.multiplier) and last.penalty == float(trainer.lagrangian.penalty)
    assert last.phase == "penalty" and last.total is None
    assert trainer.steps_this_round == 0
    rounds = [e for e in events if e.kind == "round"]
    # h at the end of the round (the one the update used), not the last step's
    h = float(trainer.constraint().detach())
    assert len(caplog.messages) == 2 and caplog.messages[1] == (
        f"round 2 step 7: elbo/row {trainer.elbo_trace[-1]:.4f} h {h:.3g} multiplier {last.multiplier:.3g} "
        f"penalty {last.penalty:.3g}")
    assert caplog.messages[0].startswith(f"round 1 step 4: elbo/row {trainer.elbo_trace[3]:.4f} h ")
    assert rounds[0].elbo == trainer.elbo_trace[3] != trainer.elbo_trace[2]


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
    # a snapshot brings back its skipped steps and outlier window too
    snapshot = other._snapshot()
    other.skipped_steps, other._consecutive_outliers = 9, 7
    other._recent.append(5.0)
    other._restore(snapshot)
    assert (other.skipped_steps, other._consecutive_outliers) == (4, 3) and list(other._recent) == list(trainer._recent)
    assert other._recent.maxlen == OUTLIER_WINDOW
    # an older checkpoint's last good state, without the outlier fields, starts them empty
    older = {k: v for k, v in snapshot.items() if k not in ("recent_elbos", "consecutive_outliers", "skipped_steps")}
    other._restore(older)
    assert (other.skipped_steps, other._consecutive_outliers, len(other._recent)) == (0, 0, 0)
    # a state without the outlier fields (an older checkpoint) starts them empty
    other._restore_outlier_state({})
    assert (other.skipped_steps, len(other._recent), other._consecutive_outliers) == (0, 0, 0)


def test_a_divergence_restores_the_state_of_the_last_round(caplog):
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
    with caplog.at_level("WARNING", "pyro_causal.trainer"):
        assert trainer.run() == "diverged"
    assert caplog.messages == ["training diverged (non-finite parameters after step 4); restoring the last good state"]
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


def _trainer_of(x, regimes=None, targets=None, model_class=LatentInterventionModel, embedding_dim=2, tag="", **config):
    torch.manual_seed(0)
    model = model_class(3, truncation=3, embedding_dim=embedding_dim, encoder_hidden=4)
    trainer = Trainer(model, x, regimes=regimes, targets=targets, config=TrainingConfig(**config))
    trainer.checkpoint_tag = tag
    return trainer


class RenamedModel(LatentInterventionModel):
    pass


def test_the_fingerprint_changes_with_each_thing_a_checkpoint_must_match():
    x = torch.randn(30, 3)
    regimes = torch.tensor([0, 1, -1] * 10)
    targets = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    base = _trainer_of(x, regimes, targets).fingerprint()
    assert _trainer_of(x.clone(), regimes.clone(), targets.clone()).fingerprint() == base
    others = [_trainer_of(x + 1, regimes, targets), _trainer_of(x, torch.tensor([0, 2, -1] * 10), targets),
              _trainer_of(x, regimes, targets.flip(0)), _trainer_of(x, regimes, targets, learning_rate=0.01),
              _trainer_of(x, regimes, targets, embedding_dim=3), _trainer_of(x, regimes, targets, RenamedModel),
              _trainer_of(x, regimes, targets, tag="flow")]
    prints = [other.fingerprint() for other in others]
    assert base not in prints and len(set(prints)) == len(prints)


def test_a_checkpoint_loads_only_into_the_same_fit_and_brings_its_last_good_state(tmp_path):
    x = torch.randn(30, 3)
    schedule = PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=2)
    trainer = _trainer_of(x, schedule=schedule)
    for _ in range(4):  # one round and one step into the next
        trainer.step()
        if trainer.steps_this_round == 3:
            trainer.end_round()
    path = trainer.save_checkpoint(tmp_path / "state.pt")
    resumed = _trainer_of(x, schedule=schedule)
    resumed.load_checkpoint(path, check=True)
    assert resumed.step_count == 4 and resumed._last_good["step_count"] == 3
    assert resumed.elbo_trace == trainer.elbo_trace
    other = _trainer_of(x + 1, schedule=schedule)
    with pytest.raises(ValueError) as caught:
        other.load_checkpoint(path, check=True)
    assert str(caught.value) == f"{path}: this checkpoint was written by a fit of other data or options"
    other.load_checkpoint(path)  # without the check it loads
    assert other.step_count == 4


def test_parameters_loaded_or_restored_are_checked_before_the_next_step():
    trainer = _trainer_of(torch.randn(30, 3))
    trainer.step()
    state = trainer.state_dict()
    state["model"] = {k: v.clone() for k, v in state["model"].items()}
    name = "guide.edge_logits"
    state["model"][name][0, 1] = float("nan")
    trainer.load_state_dict(state)
    with pytest.raises(FloatingPointError, match="^non-finite parameters at step 1$"):
        trainer.step()
    fresh = _trainer_of(torch.randn(30, 3))
    fresh.step()
    snapshot = fresh._snapshot()
    snapshot["model"][name][0, 1] = float("nan")
    fresh._restore(snapshot)
    with pytest.raises(FloatingPointError, match="^non-finite parameters at step 1$"):
        fresh.step()


def test_a_state_with_pyro_s_random_state_loads():
    import pyro

    trainer = _trainer_of(torch.randn(30, 3))
    trainer.step()
    state = trainer.state_dict()
    torch.manual_seed(11)
    state["rng"] = pyro.util.get_rng_state()  # checkpoints written before the plain-data format
    expected = torch.rand(3)
    trainer.load_state_dict(state)
    torch.testing.assert_close(torch.rand(3), expected)


def test_a_step_passes_the_trainer_s_data_regimes_targets_and_rows_through_svi():
    x = torch.randn(40, 3)
    regimes = torch.tensor([0, 1, 2, -1] * 10)
    targets = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    trainer = _trainer_of(x, regimes, targets, batch_size=30)
    calls, objectives = [], []
    svi_step, objective = trainer.svi.step, trainer.objective

    def recording_svi_step(*args, **kwargs):
        calls.append((args, kwargs))
        return svi_step(*args, **kwargs)

    def recording_objective(*args, **kwargs):
        objectives.append(kwargs)
        return objective(*args, **kwargs)

    trainer.svi.step, trainer.objective = recording_svi_step, recording_objective
    trainer._consecutive_outliers = 5
    trainer.step()
    (args, kwargs), = calls
    assert args[0] is x and args[1] is regimes and args[2] is targets
    rows = kwargs["rows"]
    assert rows.shape == (30,) and len(set(rows.tolist())) == 30
    assert objectives == [{"rows": rows}]  # the same rows reach the bound
    assert trainer._consecutive_outliers == 0  # a step that is not an outlier ends a run of them


def test_a_non_finite_loss_and_an_invalid_distribution_stop_with_the_step_named():
    trainer = _trainer_of(torch.randn(30, 3))
    trainer.step()
    with torch.no_grad():
        trainer.model.edge_logits.fill_(float("nan"))  # the prior's logits: the loss, not a parameter
    with pytest.raises(FloatingPointError) as caught:
        trainer.step()
    assert str(caught.value) == "non-finite loss nan at step 1"
    other = _trainer_of(torch.randn(30, 3))

    def invalid(*args, **kwargs):
        raise ValueError("Expected parameter scale (Tensor of shape (3,)) to satisfy the constraint GreaterThan(lower_bound=0.0)")

    other.svi.step = invalid
    with pytest.raises(FloatingPointError) as caught:
        other.step()
    assert str(caught.value) == "non-finite or invalid distribution parameters at step 0"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__

    def unrelated(*args, **kwargs):
        raise ValueError("shapes do not match")

    other.svi.step = unrelated
    with pytest.raises(ValueError, match="^shapes do not match$"):
        other.step()


def test_training_removes_the_model_s_entries_from_pyro_s_parameter_store():
    import pyro

    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=2, round_steps=1, max_rounds=1))
    prefix = trainer.model._pyro_name + "."
    pyro.param(prefix + "stale", torch.zeros(2))  # left by an earlier program of the same name
    trainer.run()
    assert not [name for name in pyro.get_param_store().keys() if name.startswith(prefix)]


def test_the_objective_passes_regimes_and_targets_to_the_bound():
    from pyro_causal.elbo import LatentInterventionELBO

    x = torch.randn(40, 3)
    regimes = torch.tensor([0, 1, 2, -1] * 10)
    targets = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    trainer = _trainer_of(x, regimes, targets)
    model = trainer.model
    reference = LatentInterventionELBO(supervision_weight=0.5, assignment="optimal")
    torch.manual_seed(2)
    loss, elbo, h = trainer.objective(model.model, model.guide, x, regimes, targets)
    torch.manual_seed(2)
    terms = reference.terms(model.model, model.guide, x, regimes, targets)
    torch.testing.assert_close(elbo, terms.elbo.detach() / 40)
    torch.testing.assert_close(loss, -terms.objective / 40 + trainer.lagrangian(h))
    torch.manual_seed(2)
    unlabelled = LatentInterventionELBO(supervision_weight=0.5, assignment="optimal").terms(model.model, model.guide, x, None, targets)
    assert abs(float((unlabelled.elbo - terms.elbo).detach())) > 1e-3  # the regimes matter


def test_a_new_trainer_starts_clean_and_passes_its_options_to_the_bound():
    trainer = small_trainer(supervision_weight=0.9, graph_estimator="local", assignment="amortized")
    assert trainer.checkpoint_tag == "" and trainer.divergence is None and trainer.stop_reason is None
    assert trainer._recent.maxlen == OUTLIER_WINDOW and trainer.step_count == trainer.skipped_steps == 0
    elbo = trainer.elbo
    assert (elbo.supervision_weight, elbo.graph_estimator, elbo.assignment) == (0.9, "local", "amortized")
    TrainingConfig(outlier_tolerance=0.5)  # any positive tolerance
    torch.manual_seed(0)
    model = LatentInterventionModel(3, truncation=2, embedding_dim=2, encoder_hidden=4)
    with torch.no_grad():
        model.guide.edge_logits[0, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="^non-finite parameters at step 0$"):
        Trainer(model, torch.randn(20, 3)).step()  # checked before the first step


def test_a_divergence_in_the_first_round_restores_the_initial_state():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=2))
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    original = trainer.svi.step
    steps = []

    def svi_step(*args, **kwargs):
        loss = original(*args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            with torch.no_grad():
                trainer.model.guide.edge_logits[1, 0] = float("inf")
        return loss

    trainer.svi.step = svi_step
    assert trainer.run() == "diverged" and trainer.step_count == 0 and trainer.elbo_trace == []
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, initial[name])


def test_the_constraint_is_h_unless_the_edges_that_can_be_drawn_form_a_dag():
    from pyro_causal.acyclicity import acyclicity
    from pyro_causal.held_refit import graph_held, order_held

    trainer = small_trainer()
    guide = trainer.model.guide
    h = trainer.constraint()
    assert h.requires_grad and float(h.detach()) > 0.1
    torch.testing.assert_close(h, acyclicity(guide.edge_probs()))
    with order_held(trainer.model, [2, 0, 1]):
        held = trainer.constraint()
        assert float(held) == 0.0 and not held.requires_grad  # h and its gradient vanish inside an order
        assert abs(float(acyclicity(guide.edge_probs()).detach())) < 1e-6
    with graph_held(trainer.model, torch.tensor([[0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)):
        assert float(trainer.constraint()) == 0.0
    with graph_held(trainer.model, torch.zeros(3, 3, dtype=torch.bool)):
        assert float(trainer.constraint()) == 0.0
    torch.testing.assert_close(trainer.constraint(), h)  # the masks restored: h again


# ----------------------------------------------------------------------------- the collapse guard
def _edge_logits(trainer):
    return trainer.model.guide.edge_logits.detach().clone()


def _feed(trainer, values, h=0.0):
    """Feed losses (with constraint ``h``) to the guard as steps would (``steps_this_round``
    counted); the results."""
    results = []
    for value in values:
        if not trainer._window:
            trainer._window_start = trainer._parameters()
        trainer.steps_this_round += 1
        results.append(trainer.guard_collapse(value, h))
    return results


def test_the_collapse_guard_constants():
    from pyro_causal.trainer import COLLAPSE_MIN_STEPS, COLLAPSE_WINDOW
    assert (COLLAPSE_WINDOW, COLLAPSE_MIN_STEPS) == (50, 10)


def test_a_window_far_above_the_round_s_best_restores_the_start_of_the_best_window(caplog):
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=1000))
    best_start = _edge_logits(trainer)
    trainer._recent.extend([0.5, 0.7])
    assert _feed(trainer, [1.0] * 50) == [False] * 50  # the round's first window: its best
    with torch.no_grad():
        trainer.model.guide.edge_logits.add_(3.0)
    trainer._recent.extend([5.0, 6.0])
    # no spread: the floor, 10 x 0.1 nats above the best median of 1.0 is still in (at most)
    assert _feed(trainer, [2.0] * 50) == [False] * 50
    assert trainer.rollbacks == 0
    # a window as good as the best does not replace it (the earlier start is kept)
    assert _feed(trainer, [1.0] * 50) == [False] * 50
    torch.testing.assert_close(trainer._best_window["state"]["model"]["guide.edge_logits"], best_start)
    with torch.no_grad():
        trainer.model.guide.edge_logits.add_(3.0)
    results = _feed(trainer, [2.0 + 1e-6] * 50)
    assert results == [False] * 49 + [True] and trainer.rollbacks == 1
    torch.testing.assert_close(_edge_logits(trainer), best_start)
    assert list(trainer._recent) == [0.5, 0.7] and trainer._recent.maxlen == OUTLIER_WINDOW  # that start's
    assert trainer._window == []
    assert "training collapsed at step 0 (median loss per row 2 against 1): restoring the start of the best window" \
        in caplog.text
    # Adam's state is restored too: a fresh copy, not the snapshot itself
    assert trainer.optimizer.get_state() is not trainer._best_window["state"]["optimizer"]


def test_the_guard_s_threshold_is_tolerance_robust_deviations_of_the_best_window():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=1000), outlier_tolerance=2.0)
    _feed(trainer, [0.5, 1.5] * 25)  # median 1.0, every deviation 0.5
    spread = 1.4826 * 0.5
    assert trainer._scored(trainer._best_window["steps"]) == (1.0, pytest.approx(spread))
    assert _feed(trainer, [1.0 + 2.0 * spread - 1e-6] * 50)[-1] is False
    assert _feed(trainer, [1.0 + 2.0 * spread + 1e-6] * 50)[-1] is True
    # a better window becomes the best, with its own start
    with torch.no_grad():
        trainer.model.guide.edge_logits.add_(1.0)
    start = _edge_logits(trainer)
    assert _feed(trainer, [0.2] * 50)[-1] is False
    assert trainer._scored(trainer._best_window["steps"]) == (0.2, 0.0)
    torch.testing.assert_close(trainer._best_window["state"]["model"]["guide.edge_logits"], start)


def test_the_guard_judges_the_end_of_a_round_and_keeps_its_best_across_rounds():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=120, round_steps=59, max_rounds=3))
    _feed(trainer, [1.0] * 50)
    assert _feed(trainer, [9.0] * 50)[-1] is True and trainer.rollbacks == 1
    # the round's last 20 steps form a window of their own, judged at its end
    assert _feed(trainer, [9.0] * 20) == [False] * 19 + [True] and trainer.rollbacks == 2
    trainer.elbo_trace.append(-1.0)  # end_round logs the last step's bound
    trainer.end_round()
    # a collapse across the end of a round is still caught
    assert _feed(trainer, [9.0] * 50) == [False] * 49 + [True] and trainer.rollbacks == 3
    # a window cut short with fewer than COLLAPSE_MIN_STEPS steps (here 9) is not judged, but closed
    assert _feed(trainer, [99.0] * 9) == [False] * 9 and trainer.rollbacks == 3 and trainer._window == []
    # COLLAPSE_MIN_STEPS steps are judged: a round's 10 last steps roll back
    other = small_trainer(schedule=PenaltySchedule(first_round_steps=60))
    _feed(other, [9.0] * 50)
    assert _feed(other, [99.0] * 10) == [False] * 9 + [True] and other.rollbacks == 1


def test_windows_are_scored_with_the_current_multiplier_and_penalty():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=1000))
    trainer.lagrangian.multiplier.fill_(0.0)
    trainer.lagrangian.penalty.fill_(0.0)
    _feed(trainer, [1.0] * 50, h=0.5)  # the loss without the penalty: 1.0
    trainer.lagrangian.multiplier.fill_(2.0)
    trainer.lagrangian.penalty.fill_(4.0)
    assert trainer._scored(trainer._best_window["steps"]) == (1.0 + 2.0 * 0.5 + 2.0 * 0.25, 0.0)  # 2.5
    assert _feed(trainer, [3.5] * 50) == [False] * 50  # at most 2.5 + 10 x 0.1
    assert _feed(trainer, [3.5 + 1e-6] * 50)[-1] is True and trainer.rollbacks == 1
    # a window fed under this penalty keeps its part without it: 2.4 - (2 x 1 + 2 x 1) = -1.6
    assert _feed(trainer, [2.4] * 50, h=1.0)[-1] is False
    assert trainer._best_window["steps"][0] == (pytest.approx(-1.6), 1.0)
    trainer.lagrangian.multiplier.fill_(0.0)
    assert trainer._scored(trainer._best_window["steps"])[0] == pytest.approx(0.4)


def test_a_loss_given_without_h_is_kept_with_h_zero():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=1000))
    trainer.lagrangian.multiplier.fill_(3.0)
    assert trainer.guard_collapse(1.5) is False and trainer._window == [(1.5, 0.0)]


def test_without_a_tolerance_the_guard_is_off():
    trainer = small_trainer(schedule=PenaltySchedule(first_round_steps=1000), outlier_tolerance=None)
    assert _feed(trainer, [1.0] * 50 + [1e6] * 50) == [False] * 100
    assert trainer._window == [] and trainer._best_window is None and trainer.rollbacks == 0


def test_training_rolls_back_a_collapse_and_the_state_round_trips():
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    x[:, 1] += 2 * x[:, 0]
    model = LatentInterventionModel(3, truncation=2, embedding_dim=2, encoder_hidden=4)
    trainer = Trainer(model, x, config=TrainingConfig(schedule=PenaltySchedule(first_round_steps=300, max_rounds=1)))
    for _ in range(200):
        trainer.step()
    good = statistics.median(trainer.elbo_trace[-50:])
    with torch.no_grad():  # scales e^8 times too large: every row many nats worse
        model.density.net[-1].bias[-3:].add_(3000.0)
    for _ in range(50):
        trainer.step()
    assert trainer.rollbacks == 1 and statistics.median(trainer.elbo_trace[-50:]) < good - 5
    snapshot = trainer._best_window["state"]["optimizer"]["module"]["state"]
    kept = {key: {name: value.clone() for name, value in moments.items()} for key, moments in snapshot.items()}
    for _ in range(50):
        trainer.step()
    # Adam's moments were restored as copies: the steps after the rollback left the snapshot alone
    assert kept and all(torch.equal(snapshot[key][name], value) for key, moments in kept.items()
                        for name, value in moments.items())
    assert statistics.median(trainer.elbo_trace[-50:]) > good - 0.5
    state = trainer.state_dict()
    other = Trainer(LatentInterventionModel(3, truncation=2, embedding_dim=2, encoder_hidden=4), x,
                    config=trainer.config)
    other.load_state_dict(state)
    assert other.rollbacks == 1 and other._best_window["steps"] == trainer._best_window["steps"]
    assert other._window == trainer._window

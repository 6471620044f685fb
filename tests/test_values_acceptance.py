"""Value checks of what decides the result after the bound: the trainer's loss and stopping, the held
refit's and the edge search's acceptance rules."""
import json
from unittest import mock

import numpy as np
import pytest
import torch

from pyro_causal import FitConfig, PenaltySchedule, Trainer, TrainingConfig, fit
from pyro_causal.acyclicity import acyclicity
from pyro_causal.elbo import LatentInterventionELBO, elbo_terms
from pyro_causal.model import LatentInterventionModel
from pyro_causal.search import hill_climb


def small_trainer(**config):
    torch.manual_seed(0)
    model = LatentInterventionModel(3, truncation=2, embedding_dim=2, encoder_hidden=4)
    with torch.no_grad():
        model.guide.edge_logits.copy_(torch.tensor([[0.0, 1.0, -0.5], [0.8, 0.0, 0.4], [0.2, 0.9, 0.0]]))
    x = torch.randn(40, 3)
    return Trainer(model, x, config=TrainingConfig(**config))


def test_trainer_loss_is_minus_the_objective_per_row_plus_the_penalty():
    trainer = small_trainer()
    with torch.no_grad():
        trainer.lagrangian.multiplier.fill_(3.0)
        trainer.lagrangian.penalty.fill_(2.0)
    torch.manual_seed(7)
    loss, elbo, h = trainer.loss()
    torch.manual_seed(7)
    terms = elbo_terms(trainer.model, trainer.x, supervision_weight=0.5, assignment="optimal")
    expected_h = acyclicity(trainer.model.guide.edge_probs())
    assert float(h.detach()) == pytest.approx(float(expected_h.detach())) and float(h.detach()) > 0.1
    penalty = 3.0 * expected_h + 0.5 * 2.0 * expected_h ** 2
    torch.testing.assert_close(loss, -terms.objective / 40 + penalty)
    torch.testing.assert_close(elbo, terms.elbo.detach() / 40)
    # The penalty's gradient pushes h down: it is d(phi h + mu/2 h^2)/dLambda on top of the bound's.
    (with_penalty,) = torch.autograd.grad(loss, trainer.model.guide.edge_logits)
    torch.manual_seed(7)
    (bound_only,) = torch.autograd.grad(
        -elbo_terms(trainer.model, trainer.x, supervision_weight=0.5, assignment="optimal").objective / 40,
        trainer.model.guide.edge_logits)
    (of_penalty,) = torch.autograd.grad(penalty, trainer.model.guide.edge_logits)
    torch.testing.assert_close(with_penalty, bound_only + of_penalty)


def test_trainer_objective_on_a_subset_of_rows_is_scaled_to_the_whole_data_set():
    trainer = small_trainer()
    with torch.no_grad():
        trainer.lagrangian.multiplier.fill_(3.0)
        trainer.lagrangian.penalty.fill_(2.0)
    model = trainer.model
    rows = torch.tensor([4, 17, 0, 33, 21, 9, 38, 12, 25, 30])
    reference = LatentInterventionELBO(supervision_weight=0.5, assignment="optimal")
    for each in (trainer.elbo, reference):  # the first call of each fixes its plan
        each.terms(model.model, model.guide, trainer.x, None, None, rows=rows)
    torch.manual_seed(8)
    loss, elbo, h = trainer.objective(model.model, model.guide, trainer.x, None, None, rows)
    torch.manual_seed(8)
    terms = reference.terms(model.model, model.guide, trainer.x, None, None, rows=rows)
    torch.testing.assert_close(loss, -terms.objective / 40 + trainer.lagrangian(acyclicity(model.guide.edge_probs())))
    torch.testing.assert_close(elbo, terms.elbo.detach() / 40)
    # the local terms stand for all 40 rows: 4 times those of the 10 rows scored without the subsample
    torch.manual_seed(8)
    alone = reference.terms(model.model, model.guide, trainer.x[rows])
    torch.testing.assert_close(terms.local, 4 * alone.local)
    torch.testing.assert_close(terms.kl["graph"], alone.kl["graph"])


def test_trainer_loss_averages_particles():
    trainer = small_trainer(num_particles=2)
    torch.manual_seed(3)
    loss, elbo, _ = trainer.loss()
    torch.manual_seed(3)
    reference = LatentInterventionELBO(supervision_weight=0.5, assignment="optimal")  # fresh, as the trainer's
    a = reference.terms(trainer.model.model, trainer.model.guide, trainer.x, None, None, rows=None)
    b = reference.terms(trainer.model.model, trainer.model.guide, trainer.x, None, None, rows=None)
    assert float((a.elbo - b.elbo).detach().abs()) > 1e-3  # two draws, not one counted twice
    h = acyclicity(trainer.model.guide.edge_probs())
    torch.testing.assert_close(loss, -(a.objective + b.objective) / 2 / 40 + trainer.lagrangian(h))
    torch.testing.assert_close(elbo, (a.elbo + b.elbo).detach() / 2 / 40)


def test_a_large_multiplier_lowers_h_through_training():
    hs = []
    for multiplier in (0.0, 50.0):
        trainer = small_trainer(learning_rate=0.05)
        with torch.no_grad():
            trainer.lagrangian.multiplier.fill_(multiplier)
        torch.manual_seed(1)
        for _ in range(15):
            trainer.step()
        hs.append(trainer.h_trace[-1])
    assert hs[1] < hs[0] - 0.2  # measured 0.75 vs 1.06; a flipped sign raises h instead


def test_training_stops_for_the_stated_reason_after_the_stated_rounds():
    schedule = PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=2, tolerance=1e-8)
    trainer = small_trainer(schedule=schedule)
    assert trainer.run() == "budget"
    assert len(trainer.elbo_trace) == 3 + 2 and int(trainer.lagrangian.rounds) == 2
    loose = small_trainer(schedule=PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=5, tolerance=1e3))
    assert loose.run() == "converged" and len(loose.elbo_trace) == 3
    # an Enum that reads and serialises as its value; checkpoints store the plain string
    from pyro_causal import StopReason

    assert trainer.stop_reason is StopReason.BUDGET and loose.stop_reason is StopReason.CONVERGED
    assert str(loose.stop_reason) == f"{loose.stop_reason}" == json.loads(json.dumps(loose.stop_reason)) == "converged"
    assert type(loose.state_dict()["lagrangian_stop"]) is str


def test_fit_keeps_the_held_refit_only_when_its_bound_is_higher():
    x = np.random.default_rng(0).normal(size=(60, 3))
    schedule = PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=1)
    for loop_score, refit_score, kept in ((-1.0, -2.0, False), (-2.0, -1.0, True), (-1.5, -1.5, False)):
        scored = []

        def fake_mean_elbo(model, *args, **kwargs):
            scored.append(model)
            return (loop_score if len(scored) == 1 else refit_score, 0.0)

        with mock.patch("pyro_causal.problem.mean_elbo", fake_mean_elbo):
            result = fit(x, seed=0, config=FitConfig(training=TrainingConfig(schedule=schedule)))
        assert len(scored) == 3  # the loop's model, the held fit's (graph held), then with the loop's q(A)
        assert scored[1] is scored[2]
        assert result.model is scored[2 if kept else 0]
        assert result.records["held_refit"]["kept"] is kept
        assert result.elbo == max(loop_score, refit_score)


class FakeFit:
    def __init__(self, elbo):
        self.elbo = elbo


def test_edge_search_refuses_a_neighbour_that_only_ties():
    start = np.array([[0, 1], [0, 0]])
    flat = np.zeros((2, 2))  # every graph has the same prior
    best, record = hill_climb(start, flat, 10, rounds=3, fit_held=lambda graph: FakeFit(-1.0))
    assert record["moves"] == [] and best.elbo == -1.0 and len(record["scores"]) == 2
    better = {1: -1.0, 0: -0.9}
    best, record = hill_climb(start, flat, 10, rounds=3, fit_held=lambda graph: FakeFit(better[int(graph.sum())]))
    assert record["moves"] == [["remove", 0, 1]] and best.elbo == -0.9
    assert record["score"] == pytest.approx(-0.9 + 2 * np.log(0.5) / 10)

"""Value checks of how a graph or an order is held (pyro_causal.held_refit), on models built, not fitted."""
import math

import numpy as np
import pytest
import torch

from pyro_causal.held_refit import (check_graph, edges_held, found_graph, graph_held, hold_edges, order_held,
                                    refit_with_order_held)
from pyro_causal.model import LatentInterventionModel

INF = math.inf


def model_with_fixed_edges():
    """d = 3; the prior requires 0 -> 1 and forbids 2 -> 0."""
    logits = torch.full((3, 3), -2.0)
    logits[0, 1], logits[2, 0] = INF, -INF
    return LatentInterventionModel(3, truncation=2, embedding_dim=2, edge_logit=logits)


def masks(model):
    return model.guide.required.clone(), model.guide.forbidden.clone()


def test_hold_edges_adds_to_the_prior_masks_without_contradicting_them_and_restores_them():
    model = model_with_fixed_edges()
    built_required, built_forbidden = masks(model)
    required = torch.tensor([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)  # 2 -> 0 is forbidden by the prior
    forbidden = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)  # 0 -> 1 required; 0 -> 0 a self-loop
    restore = hold_edges(model, required, forbidden)
    expected_required = built_required.clone()
    expected_required[0, 2] = True
    expected_forbidden = built_forbidden.clone()
    expected_forbidden[1, 0] = True
    assert torch.equal(model.guide.required, expected_required)
    assert torch.equal(model.guide.forbidden, expected_forbidden)
    restore()
    assert torch.equal(model.guide.required, built_required) and torch.equal(model.guide.forbidden, built_forbidden)


def test_edges_held_restores_the_masks_also_after_an_error():
    model = model_with_fixed_edges()
    built = masks(model)
    with pytest.raises(RuntimeError, match="inside"):
        with edges_held(model, torch.ones(3, 3, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool)):
            assert bool(model.guide.required[1, 2])
            raise RuntimeError("inside")
    assert all(torch.equal(a, b) for a, b in zip(masks(model), built))


def test_graph_held_makes_q_of_the_graph_a_point_mass():
    model = model_with_fixed_edges()
    graph = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    built_required, built_forbidden = masks(model)
    with graph_held(model, graph):
        torch.testing.assert_close(model.guide.edge_probs(), graph.float())
        off_diagonal = ~torch.eye(3, dtype=torch.bool)
        assert torch.equal(model.guide.required, graph.bool() | built_required)
        assert torch.equal(model.guide.forbidden, (~graph.bool() & off_diagonal) | built_forbidden)
        assert not bool(model.guide.free_edges().any())
    assert int(model.guide.free_edges().sum()) == 4  # 6 off-diagonal, 2 fixed by the prior


def test_order_held_forbids_exactly_the_edges_against_the_order():
    model = LatentInterventionModel(4, truncation=2, embedding_dim=2)
    order = [2, 0, 3, 1]
    with order_held(model, order):
        position = {v: p for p, v in enumerate(order)}
        for i in range(4):
            for j in range(4):
                against = i != j and position[i] > position[j]
                assert bool(model.guide.forbidden[i, j]) is against, (i, j)
        assert int(model.guide.free_edges().sum()) == 6 and not bool(model.guide.required.any())
    assert not bool(model.guide.forbidden.any())


def test_found_graph_is_the_dag_of_the_edge_probabilities():
    model = LatentInterventionModel(3, truncation=2, embedding_dim=2)
    with torch.no_grad():
        model.guide.edge_logits.copy_(torch.tensor([[0.0, 3.0, -1.0], [2.0, 0.0, 0.5], [-3.0, -0.1, 0.0]]))
    # 0 -> 1 (0.95) beats 1 -> 0 (0.88), 1 -> 2 (0.62); 0 -> 2 and 2 -> 1 stay below 1/2
    np.testing.assert_array_equal(found_graph(model).numpy(), [[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert found_graph(model).dtype == torch.bool


def test_check_graph_refuses_what_is_not_an_allowed_dag():
    model = model_with_fixed_edges()
    good = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]])
    held = check_graph(good, model)
    assert held.dtype == torch.bool and torch.equal(held, torch.as_tensor(good, dtype=torch.bool))
    assert torch.equal(check_graph(torch.as_tensor(good), model), held)
    message = "graph must be a (3, 3) 0/1 DAG with a zero diagonal, got shape {}"
    for bad, shape in ((np.zeros((2, 2)), (2, 2)), (good * 2, (3, 3)), (good + np.eye(3, dtype=int), (3, 3)),
                       (np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]]), (3, 3))):
        with pytest.raises(ValueError) as caught:
            check_graph(bad, model)
        assert str(caught.value) == message.format(shape)
    for against_prior in (np.zeros((3, 3), dtype=int), np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]])):
        with pytest.raises(ValueError, match=r"graph contradicts the edges the prior fixes \(edge_logit \+-inf\)"):
            check_graph(against_prior, model)


class StubTrainer:
    """Records the masks it trained under instead of training."""

    def __init__(self, model):
        self.model, self.seen = model, None

    def run(self):
        self.seen = masks(self.model)
        return "converged"


def test_refit_with_order_held_sets_the_edges_against_the_order_far_off_and_restores_the_masks():
    model = model_with_fixed_edges()
    built = masks(model)
    with torch.no_grad():
        model.guide.edge_logits.fill_(1.0)
    trainer = refit_with_order_held(model, [0, 1, 2], StubTrainer)
    _, forbidden_inside = trainer.seen
    assert bool(forbidden_inside[1, 0]) and bool(forbidden_inside[2, 1]) and not bool(forbidden_inside[0, 2])
    assert all(torch.equal(a, b) for a, b in zip(masks(model), built))
    logits = model.guide.edge_logits.detach()
    # against the order and not fixed by the prior: 1 -> 0, 2 -> 1 at -30; the rest untouched
    assert float(logits[1, 0]) == float(logits[2, 1]) == -30.0
    assert float(logits[0, 2]) == float(logits[1, 2]) == float(logits[0, 1]) == float(logits[2, 0]) == 1.0


def test_the_held_refit_uses_its_seed_records_both_bounds_and_logs_its_choice(caplog):
    from unittest import mock

    from pyro_causal import AfterTraining, FitConfig, PenaltySchedule, TrainingConfig, fit
    from pyro_causal.held_refit import refit_with_graph_held

    x = np.random.default_rng(0).normal(size=(60, 3))
    events = []
    tiny = PenaltySchedule(first_round_steps=3, round_steps=2, max_rounds=1)
    result = fit(x, seed=5, callbacks=[events.append],
                 config=FitConfig(training=TrainingConfig(schedule=tiny, log_every=1), after_training=AfterTraining(held_refit=False)))
    for seed, expected_seed, prefix in ((None, 5, ""), (8, 8, "restart 2/3")):
        for refit_score, kept in ((result.elbo + 0.123456789, True), (result.elbo - 1.0, False), (result.elbo, False)):
            seeds, models = [], []

            def fake_mean_elbo(model, *args, seed, **kwargs):
                seeds.append(seed)
                models.append(model)
                return (refit_score, 0.0)

            events.clear()
            caplog.clear()
            with mock.patch("pyro_causal.problem.mean_elbo", fake_mean_elbo), caplog.at_level("INFO", "pyro_causal.held_refit"):
                kept_result = (refit_with_graph_held(result, seed=seed, prefix=prefix) if prefix
                               else refit_with_graph_held(result))
            assert seeds == [expected_seed, expected_seed]  # the held fit's score, then with the loop's q(A)
            assert {e.phase for e in events} == {f"{prefix}: held refit" if prefix else "held refit"}
            record = kept_result.records["held_refit"]
            assert record == {"elbo_before": round(result.elbo, 6), "elbo_after": round(refit_score, 6), "kept": kept}
            assert kept_result.elbo == (refit_score if kept else result.elbo)
            assert (kept_result.model is models[1]) is kept
            np.testing.assert_array_equal(kept_result.adjacency, result.adjacency)
            assert caplog.messages == [f"held refit (seed {expected_seed}): elbo/row {result.elbo:.4f} -> "
                                       f"{refit_score:.4f}, {'kept' if kept else 'not kept'}"]


def test_the_refit_inside_a_searched_order_passes_the_problem_on_and_records_both_bounds():
    from unittest import mock

    from pyro_causal import PenaltySchedule, TrainingConfig
    from pyro_causal.held_refit import refit_in_searched_order

    torch.manual_seed(0)
    model = LatentInterventionModel(3, truncation=3, embedding_dim=2, encoder_hidden=4)
    with torch.no_grad():
        model.guide.edge_logits.copy_(torch.tensor([[0.0, -1.0, 2.0], [0.5, 0.0, -3.0], [-0.2, 1.5, 0.0]]))
    x, regimes = torch.randn(30, 3), torch.tensor([0, 1, -1] * 10)
    targets = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    config = TrainingConfig(schedule=PenaltySchedule(first_round_steps=7, round_steps=3, max_rounds=5))
    proposal = {"order": [2, 0, 1], "start": [0, 2, 1], "start_score": -100.0, "score": -98.76543, "moves": 1,
                "restart": 3}
    for after, kept in ((-1.2345678912, True), (-2.5, False)):
        calls, trained = {}, {}

        def fake_propose(*args, **kwargs):
            calls["propose"], calls["propose_options"] = args, kwargs
            return proposal

        def fake_mean_elbo(*args, **kwargs):
            calls["score"] = (args, kwargs)
            return (after, 0.0)

        class Stub:
            def __init__(self, refit, held):
                trained.update(logits=refit.guide.edge_logits.detach().clone(), config=held,
                               forbidden=refit.guide.forbidden.clone())
                self.model = refit

            def run(self):
                return "converged"

        with mock.patch("pyro_causal.held_refit.propose_order", fake_propose), \
                mock.patch("pyro_causal.held_refit.mean_elbo", fake_mean_elbo):
            chosen, score, record = refit_in_searched_order(model, -2.0, Stub, config, x, regimes, targets,
                                                            seed=4, batch_size=16)
        assert calls["propose"][0] is model and calls["propose"][1] is x
        assert calls["propose"][2] is regimes and calls["propose"][3] is targets
        assert calls["propose_options"] == {"seed": 4}
        (scored, *rest), options = calls["score"]
        assert scored is not model and rest[0] is x and rest[1] is regimes and rest[2] is targets
        assert options == {"seed": 4, "batch_size": 16}
        # the refit starts from the model's logits with every free edge at probability >= 1/2
        expected = model.guide.edge_logits.detach().clamp(min=0.0)
        assert torch.equal(trained["logits"], expected)
        assert trained["config"].schedule.max_rounds == 1 and trained["config"].graph_estimator == "local"
        assert trained["config"].schedule.first_round_steps == 7
        assert bool(trained["forbidden"][0, 2]) and not bool(trained["forbidden"][2, 0])  # 0 after 2 in the order
        assert record == {"start_order": [0, 2, 1], "order": [2, 0, 1], "moves": 1, "restart": 3, "target_moves": None,
                          "profile_gain": 1.235,
                          "elbo_before": -2.0, "elbo_after": round(after, 6), "kept": kept}
        assert score == (after if kept else -2.0) and (chosen is model) is not kept


def test_random_order_is_the_seed_permutation_with_required_edges_moved_along_it():
    from pyro_causal.held_refit import ORDER_STREAM, random_order

    plain = np.random.default_rng([7, ORDER_STREAM]).permutation(6).tolist()
    assert random_order(6, 7) == plain == random_order(6, 7, torch.zeros(6, 6, dtype=torch.bool))
    along = torch.zeros(6, 6, dtype=torch.bool)
    along[plain[0], plain[3]] = True  # already along the permutation: nothing moves
    assert random_order(6, 7, along) == plain
    against = torch.zeros(6, 6, dtype=torch.bool)
    against[plain[-1], plain[0]] = True  # the first must follow the last; ties keep the permutation's order
    assert random_order(6, 7, against) == plain[1:] + plain[:1]


def test_order_config_is_one_round_with_the_exact_gradient_only_where_the_density_gives_gains():
    from pyro_causal.held_refit import order_config
    from pyro_causal.trainer import TrainingConfig

    config = TrainingConfig(learning_rate=0.01)
    linear = order_config(LatentInterventionModel(3, truncation=2, density="linear"), config)
    mlp = order_config(LatentInterventionModel(3, truncation=2, density="mlp"), config)
    assert (linear.graph_estimator, mlp.graph_estimator) == ("local", "straight-through")
    for held in (linear, mlp):
        assert held.schedule.max_rounds == 1 and held.learning_rate == 0.01
        assert held.schedule.first_round_steps == config.schedule.first_round_steps

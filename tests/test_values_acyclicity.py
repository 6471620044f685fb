"""Value checks of the acyclicity function, the greedy DAG and the augmented-Lagrangian state."""
import math

import numpy as np
import pytest
import torch

from pyro_causal.acyclicity import (
    AugmentedLagrangian,
    PenaltySchedule,
    acyclicity,
    dag_from_probabilities,
    is_dag,
    off_diagonal_mask,
    support_is_acyclic,
)


def test_off_diagonal_mask():
    assert off_diagonal_mask(3).tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    assert off_diagonal_mask(2, dtype=torch.float64).dtype == torch.float64
    # the device argument is passed on (the meta device stands in for an accelerator)
    assert off_diagonal_mask(2, device="meta").device.type == "meta"


def test_h_of_weighted_two_cycles_in_a_batch():
    # W = [[0, a], [b, 0]]: tr exp(W) = 2 cosh(sqrt(ab)), so h = 2 cosh(sqrt(ab)) - 2.
    w = torch.tensor([[[0.0, 0.5], [0.8, 0.0]], [[0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(acyclicity(w), torch.tensor([2 * math.cosh(math.sqrt(0.4)) - 2, 0.0],
                                                           dtype=torch.float64))
    three = torch.zeros(3, 3, dtype=torch.float64)
    three[0, 1] = three[1, 2] = three[2, 0] = 1.0  # a 3-cycle: tr exp = sum_m 3 / (3m)!
    expected = sum(3 / math.factorial(3 * m) for m in range(1, 8))
    assert float(acyclicity(three)) == pytest.approx(expected)
    # two batch dimensions, the second one not d: d is read from the last dimension
    grid = torch.stack([torch.stack([w[0], w[1], w[0]]), torch.stack([w[1], w[1], w[0]])])  # (2, 3, 2, 2)
    h = acyclicity(grid)
    first, dag = 2 * math.cosh(math.sqrt(0.4)) - 2, 0.0
    torch.testing.assert_close(h, torch.tensor([[first, dag, first], [dag, dag, first]], dtype=torch.float64))


def test_is_dag():
    assert is_dag([[0, 1], [0, 0]])
    assert not is_dag([[0, 1], [1, 0]])


@pytest.mark.parametrize("d", [1, 2, 3, 5, 9, 17])
def test_support_is_acyclic_agrees_with_networkx(d):
    generator = torch.Generator().manual_seed(d)
    for density in (0.1, 0.3, 0.6):
        for _ in range(40):
            mask = torch.rand(d, d, generator=generator) < density
            assert support_is_acyclic(mask) == is_dag(mask.int().numpy()), mask


@pytest.mark.parametrize("d", [2, 3, 4, 5, 8, 9, 16, 17, 33])
def test_support_is_acyclic_sees_the_longest_cycle(d):
    ring = torch.zeros(d, d, dtype=torch.bool)
    ring[torch.arange(d), (torch.arange(d) + 1) % d] = True  # one cycle through all d variables
    assert not support_is_acyclic(ring)
    ring[d - 1, 0] = False  # the path that is left is a DAG
    assert support_is_acyclic(ring)
    assert not support_is_acyclic(torch.eye(d, dtype=torch.bool))  # self loops are cycles


def test_h_and_its_gradient_vanish_inside_an_acyclic_support():
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(6, generator=generator)
    position = torch.empty(6, dtype=torch.long)
    position[order] = torch.arange(6)
    along = position.unsqueeze(1) < position.unsqueeze(0)  # every edge along one order
    assert support_is_acyclic(along)
    logits = torch.randn(6, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = torch.where(along, torch.sigmoid(logits), torch.zeros((), dtype=torch.float64))
    h = acyclicity(weights)
    (gradient,) = torch.autograd.grad(h, logits)
    assert abs(float(h.detach())) < 1e-12 and float(gradient.abs().max()) == 0.0
    cyclic = along.clone()
    cyclic[order[-1], order[0]] = True  # one edge against the order closes cycles
    assert not support_is_acyclic(cyclic)


def test_the_gradient_of_h_is_the_transposed_exponential_in_a_batch():
    generator = torch.Generator().manual_seed(1)
    weights = (torch.rand(3, 5, 5, generator=generator, dtype=torch.float64) * 0.8).requires_grad_()
    upstream = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (gradient,) = torch.autograd.grad((acyclicity(weights) * upstream).sum(), weights)
    exponential = torch.linalg.matrix_exp(weights.detach())  # d tr(exp W) / dW = exp(W)^T (Zheng et al. 2018)
    torch.testing.assert_close(gradient, upstream[:, None, None] * exponential.transpose(-1, -2), rtol=1e-12, atol=1e-12)


def test_dag_from_probabilities_threshold_is_strict_and_adjustable():
    probs = np.array([[0, 0.5, 0.51], [0.0, 0, 0.3], [0.0, 0.0, 0]])
    assert dag_from_probabilities(probs).tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert dag_from_probabilities(probs, threshold=0.25).tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
    # float32(0.3) is 0.30000001192...: above a threshold of 0.3 (compared in double precision)
    single = np.array([[0, 0.3], [0, 0]], dtype=np.float32)
    assert dag_from_probabilities(single, threshold=0.3).tolist() == [[0, 1], [0, 0]]
    assert dag_from_probabilities(torch.tensor(single), threshold=0.3).tolist() == [[0, 1], [0, 0]]


def test_dag_from_probabilities_drops_the_weakest_edge_of_a_three_cycle():
    probs = np.array([[0, 0.9, 0.0], [0.0, 0, 0.6], [0.8, 0.0, 0]])
    assert dag_from_probabilities(probs).tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]
    assert dag_from_probabilities(probs).dtype.kind == "i"


def test_schedule_defaults_are_the_documented_ones():
    s = PenaltySchedule()
    assert (s.first_round_steps, s.round_steps, s.max_rounds) == (1000, 200, 30)
    assert (s.tolerance, s.initial_penalty, s.penalty_growth) == (1e-8, 1e-2, 10.0)
    assert (s.max_penalty, s.required_progress) == (1e12, 0.25)


@pytest.mark.parametrize("name", ["first_round_steps", "round_steps", "max_rounds"])
def test_schedule_needs_at_least_one_step_or_round(name):
    PenaltySchedule(**{name: 1})
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
        PenaltySchedule(**{name: 0})


@pytest.mark.parametrize("field, bad, good", [("tolerance", 0.0, 1e-30), ("initial_penalty", 0.0, 1e-30),
                                              ("penalty_growth", 1.0, 1.0001)])
def test_schedule_refuses_non_positive_rates(field, bad, good):
    PenaltySchedule(**{field: good})
    with pytest.raises(ValueError, match="^tolerance and initial_penalty must be > 0 and penalty_growth > 1$"):
        PenaltySchedule(**{field: bad})


def test_augmented_lagrangian_state_and_penalty_values():
    lag = AugmentedLagrangian(PenaltySchedule(initial_penalty=2.0, penalty_growth=3.0, max_penalty=10.0,
                                              first_round_steps=7, round_steps=4, max_rounds=3, tolerance=0.01))
    assert (float(lag.multiplier), float(lag.penalty), float(lag.previous_h), int(lag.rounds)) == (0.0, 2.0, math.inf, 0)
    assert AugmentedLagrangian().penalty.item() == pytest.approx(1e-2)
    assert lag.steps_in_round() == 7
    assert float(lag(torch.tensor(3.0))) == pytest.approx(0.5 * 2.0 * 9.0)
    lag.update(3.0)  # previous h is inf: no growth; phi = 0 + 2 * 3
    assert (float(lag.multiplier), float(lag.penalty), float(lag.previous_h), int(lag.rounds)) == (6.0, 2.0, 3.0, 1)
    assert lag.steps_in_round() == 4 and not lag.exhausted()
    assert float(lag(torch.tensor(0.5))) == pytest.approx(6.0 * 0.5 + 0.5 * 2.0 * 0.25)
    lag.update(0.75)  # exactly 0.25 * 3: enough progress, no growth; phi = 6 + 2 * 0.75
    assert (float(lag.multiplier), float(lag.penalty)) == (7.5, 2.0)
    lag.update(0.5)  # 0.5 > 0.25 * 0.75: mu = min(2 * 3, 10) = 6, then phi = 7.5 + 6 * 0.5
    assert (float(lag.multiplier), float(lag.penalty), int(lag.rounds)) == (10.5, 6.0, 3)
    assert lag.exhausted()
    lag.update(0.5)  # mu = min(18, 10)
    assert float(lag.penalty) == 10.0 and float(lag.multiplier) == 15.5
    assert lag.converged(0.0099) and not lag.converged(0.01)

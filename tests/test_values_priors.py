"""Value checks of the ready-made priors: their parameters, means and refusals."""
import math

import pyro
import pytest
import torch

from pyro_causal import priors
from pyro_causal.model import LatentInterventionModel


def test_dirichlet_process_sticks_are_beta_one_alpha():
    sticks = priors.dirichlet_process_sticks(2.5, 4)
    torch.testing.assert_close(sticks.concentration1, torch.ones(3))
    torch.testing.assert_close(sticks.concentration0, torch.full((3,), 2.5))
    torch.testing.assert_close(sticks.mean, torch.full((3,), 1 / 3.5))
    with pyro.validation_enabled(False):  # torch cannot validate an empty Beta
        assert priors.dirichlet_process_sticks(1.0, 1).batch_shape == (0,)
    assert float(priors.dirichlet_process_sticks(1e-6, 2).concentration0) == pytest.approx(1e-6)
    for alpha in (0.0, -1.0):
        with pytest.raises(ValueError, match="alpha"):
            priors.dirichlet_process_sticks(alpha, 3)


def test_the_model_default_stick_prior_uses_its_alpha():
    model = LatentInterventionModel(3, truncation=4, alpha=0.4)
    prior = model.stick_prior()
    torch.testing.assert_close(prior.mean, torch.full((3,), 1 / 1.4))


def test_pitman_yor_sticks_by_hand():
    sticks = priors.pitman_yor_sticks(1.5, 0.3, 4)
    torch.testing.assert_close(sticks.concentration1, torch.full((3,), 0.7))
    torch.testing.assert_close(sticks.concentration0, torch.tensor([1.8, 2.1, 2.4]))
    with pyro.validation_enabled(False):  # torch cannot validate an empty Beta
        assert priors.pitman_yor_sticks(1.0, 0.0, 1).batch_shape == (0,)
    priors.pitman_yor_sticks(-0.2, 0.3, 3)  # alpha > -discount is allowed
    for alpha, discount in ((1.0, 1.0), (1.0, -0.1), (-0.3, 0.3)):
        with pytest.raises(ValueError, match="Pitman-Yor"):
            priors.pitman_yor_sticks(alpha, discount, 3)


def test_finite_dirichlet_sticks_by_hand():
    sticks = priors.finite_dirichlet_sticks(2.0, 4)
    torch.testing.assert_close(sticks.concentration1, torch.full((3,), 0.5))
    torch.testing.assert_close(sticks.concentration0, torch.tensor([1.5, 1.0, 0.5]))
    with pyro.validation_enabled(False):  # torch cannot validate an empty Beta
        assert priors.finite_dirichlet_sticks(2.0, 1).batch_shape == (0,)
    for alpha in (0.0, -2.0):
        with pytest.raises(ValueError, match="alpha"):
            priors.finite_dirichlet_sticks(alpha, 3)
    # any alpha > 0 is allowed, also below 1: Beta(alpha / K, alpha (K - k - 1) / K)
    small = priors.finite_dirichlet_sticks(0.5, 4)
    torch.testing.assert_close(small.concentration1, torch.full((3,), 0.125))
    torch.testing.assert_close(small.concentration0, torch.tensor([0.375, 0.25, 0.125]))


def test_edge_logits_by_hand():
    assert torch.equal(priors.edge_logits(2), torch.full((2, 2), -2.0))
    favoured = [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    forbidden = [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    required = [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
    logits = priors.edge_logits(3, base=-1.0, favoured=favoured, forbidden=forbidden, required=required,
                                strength=2.5)
    expected = torch.full((3, 3), -1.0)
    expected[0, 1], expected[0, 2], expected[1, 0] = 1.5, -math.inf, math.inf
    assert torch.equal(logits, expected)
    assert float(priors.edge_logits(3, favoured=favoured)[0, 1]) == 1.0  # default strength 3
    # required wins over forbidden where both are given
    assert float(priors.edge_logits(2, forbidden=[[0, 1], [0, 0]], required=[[0, 1], [0, 0]])[0, 1]) == math.inf
    for name in ("favoured", "forbidden", "required"):
        with pytest.raises(ValueError, match=rf"^{name} must have shape \(3, 3\), got \(2, 2\)$"):
            priors.edge_logits(3, **{name: [[0, 1], [0, 0]]})


def test_target_prior_by_hand():
    prior = priors.target_prior(-1.5, 4, 3)
    assert prior.batch_shape == (3, 3)
    torch.testing.assert_close(prior.probs, torch.full((3, 3), 1 / (1 + math.exp(1.5))))
    assert priors.target_prior(0.0, 1, 3).batch_shape == (0, 3)

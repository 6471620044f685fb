"""Swapping priors: pass a distribution or override one hook, never copy the model."""
import numpy as np
import pytest
import torch
from pyro.distributions import Bernoulli, Dirichlet

from pyro_causal import FitConfig, LatentInterventionModel, ModelOptions, PenaltySchedule, Priors, TrainingConfig, fit, priors, simulate
from pyro_causal.distributions import stick_breaking_log_weights
from pyro_causal.elbo import elbo_terms

SHORT = PenaltySchedule(first_round_steps=30, round_steps=10, max_rounds=2)


def test_finite_dirichlet_sticks_give_dirichlet_weights():
    torch.manual_seed(0)
    K, alpha = 5, 2.0
    weights = stick_breaking_log_weights(priors.finite_dirichlet_sticks(alpha, K).sample((200000,))).exp()
    reference = Dirichlet(torch.full((K,), alpha / K)).sample((200000,))
    np.testing.assert_allclose(weights.mean(0), reference.mean(0), atol=5e-3)
    np.testing.assert_allclose(weights.var(0), reference.var(0), atol=5e-3)


def test_pitman_yor_sticks_have_heavier_tails_than_the_dirichlet_process():
    dp = priors.dirichlet_process_sticks(1.0, 20).mean
    py = priors.pitman_yor_sticks(1.0, 0.5, 20).mean
    assert torch.all(py[1:] < dp[1:])  # later sticks break off less: more mass in the tail
    with pytest.raises(ValueError):
        priors.pitman_yor_sticks(1.0, 1.5, 5)


@pytest.mark.parametrize("sticks", ["pitman_yor", "finite_dirichlet"])
def test_a_stick_prior_passed_as_a_distribution_is_used(sticks):
    data = simulate(num_variables=3, num_samples=300, seed=0)
    law = priors.pitman_yor_sticks(1.0, 0.3, 5) if sticks == "pitman_yor" else priors.finite_dirichlet_sticks(1.0, 5)
    result = fit(data.x,
                 truncation=5,
                 config=FitConfig(training=TrainingConfig(schedule=SHORT), model=ModelOptions(extra={'stick_prior': law})))
    torch.testing.assert_close(result.model.stick_prior().concentration0, law.concentration0)
    default = LatentInterventionModel(3, truncation=5)
    default.load_state_dict(result.model.state_dict())
    x = torch.as_tensor(result.train_x, dtype=torch.float32)
    torch.manual_seed(0)
    ours = elbo_terms(result.model, x).kl["v"]
    torch.manual_seed(0)
    theirs = elbo_terms(default, x).kl["v"]
    assert not torch.isclose(ours, theirs)


def test_forbidden_required_and_favoured_edges():
    data = simulate(num_variables=4, num_samples=400, seed=1)
    forbidden = np.zeros((4, 4), bool)
    forbidden[0, 1] = forbidden[1, 0] = True
    required = np.zeros((4, 4), bool)
    required[2, 3] = True
    logits = priors.edge_logits(4, base=-2.0, forbidden=forbidden, required=required, favoured=np.eye(4, k=1))
    assert logits[0, 2] == -2.0 and logits[1, 2] == 1.0 and torch.isinf(logits[0, 1]) and logits[2, 3] == np.inf
    result = fit(data.x, priors=Priors(edge_logit=logits), config=FitConfig(training=TrainingConfig(schedule=SHORT)))
    assert result.edge_probs[0, 1] == 0 and result.edge_probs[1, 0] == 0
    assert result.edge_probs[2, 3] == 1 and result.adjacency[2, 3] == 1
    with pytest.raises(ValueError, match="shape"):
        priors.edge_logits(4, forbidden=np.zeros((3, 3), bool))


class PerVariableTargets(LatentInterventionModel):
    """Override one hook: variable 0 is never targeted, the others are a priori likely."""

    def target_prior(self):
        logits = torch.full((self.truncation - 1, self.num_variables), 1.0)
        logits[:, 0] = -30.0
        return Bernoulli(logits=logits).to_event(1)


def test_a_target_prior_overridden_in_a_subclass_is_used():
    model = PerVariableTargets(3, truncation=4)
    x = torch.randn(50, 3)
    terms = elbo_terms(model, x)
    base = elbo_terms(LatentInterventionModel(3, truncation=4), x)
    assert torch.isfinite(terms.elbo)
    assert float(terms.kl["r"].detach()) > float(base.kl["r"].detach())  # pi on variable 0 pays a large KL

"""The bound is read from the traces of ``model`` and ``guide``: what a user changes in the Pyro
program (a prior, a new site, ``poutine.condition``) changes the training loss as it changes
``TraceEnum_ELBO``'s, and ``fit`` steps ``pyro.infer.SVI`` on it."""
import copy

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, TraceEnum_ELBO

from pyro_causal import AfterTraining, FitConfig, ModelOptions, Priors, TrainingConfig, fit, simulate
from pyro_causal.elbo import LatentInterventionELBO
from pyro_causal.model import LatentInterventionModel
from pyro_causal.optim import ModuleAdam
from pyro_causal.trainer import Trainer, TrainingConfig


def tiny(two_cycles="resolve", seed=0, **options):
    torch.manual_seed(seed)
    model = LatentInterventionModel(3, truncation=3, embedding_dim=2, two_cycles=two_cycles, **options)
    with torch.no_grad():
        model.guide.target_logits.uniform_(-1.0, 1.0)
        model.guide.embedding_log_scale.fill_(-1.0)
    return model, torch.randn(12, 3)


def draws(loss_fn, count, seed=0):
    """``count`` values of ``loss_fn()`` and the mean of its gradients, from one seed."""
    pyro.set_rng_seed(seed)
    values, grads = [], None
    for _ in range(count):
        loss = loss_fn()
        values.append(float(loss.detach()))
        params = loss_fn.params
        g = torch.autograd.grad(loss, params, allow_unused=True)
        g = [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]
        grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    return np.array(values), [gi / count for gi in grads]


class Loss:
    def __init__(self, elbo, model, guide, params, *args, **kwargs):
        self.elbo, self.model, self.guide, self.params, self.args, self.kwargs = elbo, model, guide, params, args, kwargs

    def __call__(self):
        return self.elbo.differentiable_loss(self.model, self.guide, *self.args, **self.kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("two_cycles", ["resolve", "allow"])
def test_loss_and_gradients_equal_trace_enum_elbo_in_expectation(two_cycles):
    """Amortised assignments: the same estimand as TraceEnum_ELBO, value and gradients."""
    model, x = tiny(two_cycles)
    params = [model.guide.embedding_loc, model.guide.target_logits, model.guide.stick_mean_logit,
              *model.density.parameters()]
    ours, our_grads = draws(Loss(LatentInterventionELBO(assignment="amortized", supervision_weight=0.0),
                                 model.model, model.guide, params, x), 300)
    theirs, their_grads = draws(Loss(TraceEnum_ELBO(max_plate_nesting=1), model.model, model.guide, params, x), 900)
    se = np.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
    assert abs(ours.mean() - theirs.mean()) < 4 * se
    assert ours.std() < 0.5 * theirs.std()  # the closed forms remove most of the noise
    for mine, stock in zip(our_grads, their_grads):
        scale = float(stock.abs().max()) + 1.0
        assert float((mine - stock).abs().max()) < 0.15 * scale


@pytest.mark.slow
def test_a_user_edited_program_changes_the_loss_as_it_changes_trace_enum_elbos():
    """Another prior at ``v`` (no closed-form KL: trace estimate) and an extra global site with
    its own guide factor enter our loss exactly as they enter TraceEnum_ELBO's."""
    model, x = tiny()

    class Edited(LatentInterventionModel):
        def stick_prior(self):
            return dist.Kumaraswamy(torch.ones(self.truncation - 1), torch.full((self.truncation - 1,), 3.0))

        def model(self, *args, **kwargs):
            pyro.sample("tau", dist.Gamma(2.0, 2.0))
            return super().model(*args, **kwargs)

    edited = Edited(3, truncation=3, embedding_dim=2)
    edited.load_state_dict(model.state_dict())

    def edited_guide(*args, **kwargs):
        pyro.sample("tau", dist.LogNormal(torch.tensor(1.5), torch.tensor(0.3)))
        return edited.guide(*args, **kwargs)

    def difference(elbo, count):
        pyro.set_rng_seed(1)
        return np.array([elbo.loss(edited.model, edited_guide, x) - elbo.loss(model.model, model.guide, x)
                         for _ in range(count)])

    ours = difference(LatentInterventionELBO(assignment="amortized", supervision_weight=0.0), 200)
    theirs = difference(TraceEnum_ELBO(max_plate_nesting=1), 700)
    assert abs(ours.mean()) > 2.0  # the edit changes the loss...
    se = np.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
    assert abs(ours.mean() - theirs.mean()) < 4 * se  # ...as it changes TraceEnum_ELBO's
    # and the training loss of the trainer sees it (its KL term of tau, a trace estimate)
    terms = LatentInterventionELBO().terms(edited.model, edited_guide, x)
    assert set(terms.kl) == {"tau", "graph", "v", "u", "r"}


@pytest.mark.parametrize("assignment", ["optimal", "amortized"])
def test_conditioning_the_program_equals_the_keyword_variants(assignment):
    """``regimes=`` / ``targets=`` are the ``z`` / ``r`` sites observed: the same loss."""
    model, x = tiny()
    regimes = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    targets = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    elbo = LatentInterventionELBO(assignment=assignment)
    pyro.set_rng_seed(3)
    keyword = elbo.loss(model.model, model.guide, x, regimes, targets)
    conditioned = poutine.condition(model.model, data={"z": regimes, "r": targets[1:]})
    pyro.set_rng_seed(3)
    assert elbo.loss(conditioned, model.guide, x) == pytest.approx(keyword, rel=1e-6)
    # regimes alone (unknown variant): z observed, targets latent (the first call fixes which
    # sites the ELBO replays at their mean, and traces twice)
    elbo.loss(model.model, model.guide, x, regimes)
    pyro.set_rng_seed(3)
    keyword = elbo.loss(model.model, model.guide, x, regimes)
    pyro.set_rng_seed(3)
    assert elbo.loss(poutine.condition(model.model, data={"z": regimes}), model.guide, x) == pytest.approx(keyword, rel=1e-6)


def test_a_swapped_prior_reaches_fit():
    """A prior passed to ``fit`` is what the trace sees: the KL of the sticks changes."""
    data = simulate(num_variables=3, edges_per_node=1.0, num_samples=200, seed=0)
    from pyro_causal.acyclicity import PenaltySchedule
    short = PenaltySchedule(first_round_steps=3, max_rounds=1)
    base = fit(data.x,
               seed=0,
               truncation=3,
               config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(held_refit=False)))
    swapped = fit(data.x,
                  seed=0,
                  truncation=3,
                  config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(held_refit=False), model=ModelOptions(extra={'stick_prior': dist.Beta(torch.full((2,), 1.0), torch.full((2,), 20.0))})))
    x = torch.as_tensor((data.x - data.x.mean(0)) / data.x.std(0), dtype=torch.float32)
    terms = LatentInterventionELBO().terms(swapped.model.model, swapped.model.guide, x)
    by_hand = torch.distributions.kl_divergence(swapped.model.guide.stick_dist(), dist.Beta(1.0, 20.0)).sum()
    assert float(terms.kl["v"].detach()) == pytest.approx(float(by_hand.detach()), rel=1e-5)
    assert base.elbo_trace[0] != swapped.elbo_trace[0]


def test_two_models_in_one_process_train_independently_under_stock_svi():
    """Each model names its parameters by its own instance: no collision in Pyro's param store."""
    first, x = tiny(seed=0)
    second, _ = tiny(seed=1)
    before = {m: m.guide.edge_logits.detach().clone() for m in (first, second)}
    for m in (first, second):
        svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 0.05}), LatentInterventionELBO())
        for _ in range(3):
            svi.step(x)
    for m in (first, second):
        assert not torch.equal(before[m], m.guide.edge_logits.detach())
    assert not torch.equal(first.guide.edge_logits, second.guide.edge_logits)
    first.release_params(), second.release_params()


def test_module_adam_takes_one_update_for_all_tensors_and_the_same_steps_as_adam():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    twin = copy.deepcopy(module)
    adam, plain = ModuleAdam(module, lr=0.1), ModuleAdam(twin, lr=0.1, foreach=False)
    assert adam.optimizer.defaults["foreach"] is True and plain.optimizer.defaults["foreach"] is False
    for _ in range(5):
        for m, optim in ((module, adam), (twin, plain)):
            optim.zero_grad()
            m(torch.arange(6.0).reshape(2, 3)).square().sum().backward()
            optim([])
    for p, q in zip(module.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert not torch.equal(p, torch.zeros_like(p))


def test_the_trainer_steps_svi_on_the_model_and_guide_programs():
    model, x = tiny()
    trainer = Trainer(model, x, config=TrainingConfig())
    assert isinstance(trainer.svi, SVI) and trainer.svi.model == model.model and trainer.svi.guide == model.guide
    assert isinstance(trainer.optimizer, ModuleAdam)
    calls = []
    real = trainer.elbo.terms

    def spy(model_fn, guide_fn, *args, **kwargs):
        calls.append((model_fn, guide_fn))
        return real(model_fn, guide_fn, *args, **kwargs)

    trainer.elbo.terms = spy
    trainer.step()
    assert calls == [(model.model, model.guide)]


def test_state_dict_round_trips_into_a_fresh_model():
    model, x = tiny()
    trainer = Trainer(model, x)
    for _ in range(3):
        trainer.step()
    copy = LatentInterventionModel(3, truncation=3, embedding_dim=2)
    copy.load_state_dict(model.state_dict())
    pyro.set_rng_seed(5)
    a = LatentInterventionELBO().loss(model.model, model.guide, x)
    pyro.set_rng_seed(5)
    assert LatentInterventionELBO().loss(copy.model, copy.guide, x) == pytest.approx(a, rel=1e-6)


def test_readme_training_loop_runs_and_its_loss_falls():
    """The README's own-SVI-loop snippet runs verbatim on standardised data and its loss falls."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "pyro.infer.SVI" in block)
    pyro.set_rng_seed(0)
    x = torch.as_tensor(simulate(num_variables=4, edges_per_node=1.0, num_samples=300, seed=0).x, dtype=torch.float32)
    namespace = {"x": (x - x.mean(0)) / x.std(0)}
    exec(compile(snippet, "README.md", "exec"), namespace)
    losses = namespace["losses"]
    assert len(losses) == 300 and np.isfinite(losses).all()
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.5  # by half a nat per row
    assert float(namespace["lagrangian"].multiplier) > 0  # the penalty state moved with h


def test_programs_of_another_shape_are_scored_by_trace_enum_elbo():
    """Two enumerated sites in the data plate: the closed forms do not apply, and the loss is
    TraceEnum_ELBO's (deterministic here: every latent site is enumerated)."""
    x = torch.tensor([0.3, -1.2, 2.0])
    logits = torch.tensor([0.4, -0.1], requires_grad=True)

    def model(x):
        with pyro.plate("data", 3):
            a = pyro.sample("a", dist.Categorical(torch.tensor([0.3, 0.7])))
            b = pyro.sample("b", dist.Categorical(torch.tensor([0.6, 0.4])))
            pyro.sample("x", dist.Normal(a.float() - b.float(), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 3):
            pyro.sample("a", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            pyro.sample("b", dist.Categorical(torch.tensor([0.2, 0.8])), infer={"enumerate": "parallel"})

    stock = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    assert LatentInterventionELBO().loss(model, guide, x) == pytest.approx(stock, rel=1e-6)


def test_fit_trains_a_given_program_and_conditioning_z_equals_the_regimes_keyword():
    """``fit(model=m)`` with ``m.model`` wrapped in ``poutine.condition`` on ``z`` trains the same
    loss as ``fit(regimes=...)`` (every row labelled, fewer rows than the network's subset)."""
    from pyro_causal.acyclicity import PenaltySchedule

    data = simulate(num_variables=3, edges_per_node=1.0, num_samples=300, seed=0)
    short = dict(seed=0, config=FitConfig(
        training=TrainingConfig(schedule=PenaltySchedule(first_round_steps=20, max_rounds=1), graph_estimator="straight-through"),
        after_training=AfterTraining(held_refit=False, order_refit=0)))
    plain = LatentInterventionModel(3, truncation=4)
    keyword = fit(data.x, regimes=data.regimes, model=plain, **short)
    m = copy.deepcopy(plain)
    m.model = poutine.condition(m.model, data={"z": torch.as_tensor(data.regimes)})
    conditioned = fit(data.x, model=m, **short)
    np.testing.assert_allclose(conditioned.elbo_trace, keyword.elbo_trace, rtol=1e-5)
    with pytest.raises(ValueError, match="leave truncation out"):
        fit(data.x, model=m, truncation=4)
    with pytest.raises(ValueError, match="leave priors out"):
        fit(data.x, model=m, priors=Priors(alpha=3.0))
    with pytest.raises(ValueError, match="model has 3 variables, the data 2"):
        fit(data.x[:, :2], model=m)
    # the settings report the given model's intervention model, not fit's default keyword
    assert keyword.settings["intervention"] == "perfect"
    imperfect = fit(data.x, model=LatentInterventionModel(3, truncation=4, intervention="imperfect"), **short)
    assert imperfect.settings["intervention"] == "imperfect"

"""Tests of the closed-form mixture refinement and its target-swap moves (pyro_causal.profile_mixture)."""
import inspect
import math

import numpy as np
import pytest
import torch

from pyro_causal import TrainingConfig, simulate
from pyro_causal.order_search import component_moments
from pyro_causal.profile_mixture import (expected_log_densities, fit_mechanisms, joint_log_densities,
                                        mechanism_log_densities, refine, row_outer_products, swap_targets)


def weighted_fit_log_density(x, weights, target, inputs):
    """Brute force: weighted least squares with an intercept; each row's log-density under the fit."""
    design = np.column_stack([x[:, inputs], np.ones(len(x))])
    w = np.sqrt(weights)
    coef = np.linalg.lstsq(design * w[:, None], x[:, target] * w, rcond=None)[0]
    residual = x[:, target] - design @ coef
    variance = (weights * residual**2).sum() / weights.sum()
    return -0.5 * (np.log(2 * np.pi * variance) + residual**2 / variance)


@pytest.fixture(scope="module")
def soft_mixture():
    data = simulate(4, 1.5, 2000, seed=5)
    x = (data.x - data.x.mean(0)) / data.x.std(0)
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.ones(data.num_regimes), len(x))
    pi = rng.uniform(0, 1, data.targets.shape)
    pi[0] = 0.0
    return x, q, pi


def mechanisms_of(x, order, q, pi, perfect=True):
    return fit_mechanisms(component_moments(x, q), order, pi, perfect)


@pytest.mark.parametrize("perfect", [True, False])
def test_mechanism_log_densities_are_the_weighted_least_squares_fits(soft_mixture, perfect):
    x, q, pi = soft_mixture
    order = [2, 0, 3, 1]
    mechanisms = mechanisms_of(torch.tensor(x), order, torch.tensor(q), torch.tensor(pi), perfect)
    observational, intervened = mechanism_log_densities(torch.tensor(x), mechanisms)
    assert observational.shape == (len(x), 4) and intervened.shape == (len(x), q.shape[1], 4)
    for t, j in enumerate(order):
        before = order[:t]
        np.testing.assert_allclose(observational[:, j].numpy(), weighted_fit_log_density(x, q @ (1 - pi[:, j]), j, before),
                                   rtol=1e-7, atol=1e-7)
        for k in range(q.shape[1]):
            np.testing.assert_allclose(intervened[:, k, j].numpy(),
                                       weighted_fit_log_density(x, q[:, k], j, [] if perfect else before),
                                       rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("perfect", [True, False])
def test_the_moment_forms_equal_the_sums_over_rows(soft_mixture, perfect):
    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    mechanisms = mechanisms_of(x, [1, 3, 0, 2], q, pi, perfect)
    observational, intervened = mechanism_log_densities(x, mechanisms)
    expected_observational, expected_intervened = expected_log_densities(component_moments(x, q), mechanisms)
    torch.testing.assert_close(expected_observational, torch.einsum("ik,ij->kj", q, observational), rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(expected_intervened, torch.einsum("ik,ikj->kj", q, intervened), rtol=1e-10, atol=1e-8)
    new_pi = torch.rand(pi.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    joint = ((1 - new_pi) * observational.unsqueeze(1) + new_pi * intervened).sum(-1)
    torch.testing.assert_close(joint_log_densities(row_outer_products(x), mechanisms, new_pi), joint, rtol=1e-10, atol=1e-8)


def test_a_component_lighter_than_one_row_has_its_weighted_variance(soft_mixture):
    """The floor on a component's total weight only keeps empty components finite."""
    x, q, pi = soft_mixture
    light = np.column_stack([q[:, :2], q[:, 2] * 0.3 / q[:, 2].sum()])  # component 2 weighs 0.3 rows in all
    mechanisms = fit_mechanisms(component_moments(torch.tensor(x), torch.tensor(light)), [0, 1, 2, 3],
                                torch.tensor(pi[:3]))
    residual = x - (light[:, 2] @ x) / light[:, 2].sum()
    expected = (light[:, 2, None] * residual**2).sum(0) / light[:, 2].sum()
    np.testing.assert_allclose(mechanisms.intervened_variance[2].numpy(), expected, rtol=1e-8)
    perfect = fit_mechanisms(component_moments(torch.tensor(x), torch.tensor(light)), [0, 1, 2, 3], torch.tensor(pi[:3]),
                             perfect=True)
    assert all(torch.equal(a, b) for a, b in zip(mechanisms, perfect))  # perfect interventions by default


def test_row_outer_products_pack_the_upper_triangle_of_each_rows_augmented_outer_product():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    expected = torch.tensor([[1.0, 2.0, 1.0, 4.0, 2.0, 1.0], [9.0, -3.0, 3.0, 1.0, -1.0, 1.0]], dtype=torch.float64)
    assert torch.equal(row_outer_products(x), expected)


@pytest.mark.parametrize("perfect", [True, False])
def test_one_alternation_scores_the_mixture_it_returns_and_updates_targets_and_assignments(soft_mixture, perfect):
    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    order = [0, 1, 2, 3]
    gamma = -2.0
    step = refine(x, q, pi, order, iterations=1, target_logit=gamma, perfect=perfect)
    climbed = step.order
    observational, intervened = mechanism_log_densities(x, mechanisms_of(x, climbed, q, pi, perfect))
    gain = torch.einsum("ik,ikj->kj", q, intervened - observational.unsqueeze(1))
    expected_pi = torch.sigmoid(gamma + gain)
    expected_pi[0] = 0.0
    torch.testing.assert_close(step.pi, expected_pi)
    joint = q.mean(0).log() + ((1 - expected_pi) * observational.unsqueeze(1) + expected_pi * intervened).sum(-1)
    torch.testing.assert_close(step.q, torch.softmax(joint, 1))
    prior = 1 / (1 + math.exp(2.0))
    p = expected_pi[1:]
    kl = (p * (p / prior).log() + (1 - p) * ((1 - p) / (1 - prior)).log()).sum()
    assert step.score == pytest.approx(float(torch.logsumexp(joint, 1).sum() - kl), rel=1e-10)


def test_the_alternation_stops_after_30_by_default(soft_mixture, monkeypatch):
    from pyro_causal import profile_mixture

    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    calls = []
    climb = profile_mixture.climb
    monkeypatch.setattr(profile_mixture, "climb", lambda *a, **k: calls.append(1) or climb(*a, **k))
    refine(x, q, pi, [3, 2, 1, 0], tolerance=float("-inf"))  # no rise falls below it: only the cap stops
    assert len(calls) == 30  # one order climb per alternation
    calls.clear()
    refine(x, q, pi, [3, 2, 1, 0])
    assert 2 <= len(calls) < 30


def test_mixtures_alternated_together_stop_each_on_their_own(soft_mixture, monkeypatch):
    """The alternation of a batch: a converged mixture stops after its second alternation while an
    unconverged one goes on, and each ends where :func:`refine` alone ends it."""
    from pyro_causal import profile_mixture

    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    converged = refine(x, q, pi, [0, 1, 2, 3])
    starts = [(converged.q, converged.pi, converged.order), (q, pi, [3, 2, 1, 0])]
    climbs, climb = [], profile_mixture.climb
    monkeypatch.setattr(profile_mixture, "climb", lambda scores, orders, *a, **k: climbs.append(len(orders)) or
                        climb(scores, orders, *a, **k))
    scores, orders, qs, pis = profile_mixture._alternate(
        row_outer_products(x), torch.stack([s[0] for s in starts]), torch.stack([s[1] for s in starts]),
        torch.tensor([s[2] for s in starts]), perfect=True, target_logit=-2.0, iterations=30, tolerance=1e-6)
    assert climbs[:2] == [2, 2] and set(climbs[2:]) == {1}  # the second goes on alone
    monkeypatch.undo()
    for t, (q0, pi0, order0) in enumerate(starts):
        alone = refine(x, q0, pi0, order0)
        assert orders[t].tolist() == alone.order and float(scores[t]) == pytest.approx(alone.score, rel=1e-12, abs=0)
        torch.testing.assert_close(pis[t], alone.pi, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(qs[t], alone.q, rtol=1e-10, atol=1e-12)


def test_refine_starts_from_the_moments_it_is_given_and_without_alternations_returns_its_start(soft_mixture):
    from pyro_causal.profile_mixture import _moments

    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    outer = row_outer_products(x)
    own = refine(x, q, pi, [0, 1, 2, 3], iterations=1)
    given = refine(x, q, pi, [0, 1, 2, 3], iterations=1, moments=_moments(q, outer))
    assert given.score == pytest.approx(own.score, rel=1e-12) and given.order == own.order
    other = refine(x, q, pi, [0, 1, 2, 3], iterations=1, moments=_moments(q.flip(1), outer))
    assert abs(other.score - own.score) > 1e-3  # the first alternation uses the moments given (rounding: 1e-8)
    start = refine(x, q.float(), pi.float(), (3, 1, 2, 0), iterations=0)
    assert start.score is None and start.order == [3, 1, 2, 0]
    assert torch.equal(start.q, q.float().double()) and torch.equal(start.pi, pi.float().double())


@pytest.mark.parametrize("d", [1, 4, 25])
def test_moments_unpack_the_packed_outer_products_at_any_size(d):
    from pyro_causal.profile_mixture import _moments

    generator = torch.Generator().manual_seed(d)
    x = torch.randn(50, d, dtype=torch.float64, generator=generator)
    weights = torch.rand(50, 3, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(_moments(weights, row_outer_products(x)), component_moments(x, weights))


def test_the_alternation_only_climbs(soft_mixture):
    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    scores = [refine(x, q, pi, [3, 2, 1, 0], iterations=i).score for i in (1, 2, 4, 8)]
    assert all(b >= a - 1e-6 for a, b in zip(scores, scores[1:])) and scores[-1] > scores[0]


@pytest.fixture(scope="module")
def labelled():
    data = simulate(5, 1.0, 4000, seed=3)
    x = torch.tensor((data.x - data.x.mean(0)) / data.x.std(0))
    q = torch.nn.functional.one_hot(torch.tensor(data.regimes)).double()
    pi = torch.tensor(data.targets, dtype=torch.float64)
    return data, x, q, pi


def violations(adjacency, order):
    position = {j: t for t, j in enumerate(order)}
    return sum(position[i] > position[j] for i, j in zip(*np.nonzero(adjacency)))


def test_from_the_true_regimes_and_targets_the_alternation_keeps_them(labelled):
    data, x, q, pi = labelled
    start = list(range(5))[::-1]
    mixture = refine(x, q, pi, start)
    assert violations(data.adjacency, start) > 0 and violations(data.adjacency, mixture.order) == 0
    assert torch.equal((mixture.pi > 0.5).int(), pi.int())
    # its assignments are as accurate as those of the true SCM's posterior (the Bayes classifier)
    bayes = float((np.asarray(data.regime_posterior()).argmax(1) == data.regimes).mean())
    assert float((mixture.q.argmax(1) == q.argmax(1)).double().mean()) == pytest.approx(bayes, abs=0.01)


def misplaced(labelled):
    """``(q, pi)``: component 2 holds regime 3's rows too and component 3 targets regime 2's variable."""
    data, x, q, pi = labelled
    merged = q.clone()
    rows = torch.tensor(data.regimes) == 3
    merged[rows, 2], merged[rows, 3] = 1.0, 0.0
    merged = 0.9 * merged + 0.1 / merged.shape[1]
    wrong = pi.clone()
    wrong[3] = pi[2]
    return merged, wrong


def test_target_swaps_move_a_misplaced_intervention_back(labelled):
    """From :func:`misplaced`'s mixture the alternation alone keeps two components on one variable
    and an edge against the order; the swaps cover every intervened variable again and order
    every edge, at a higher score."""
    data, x, q, pi = labelled
    merged, wrong = misplaced(labelled)
    start = list(range(5))
    alone = refine(x, merged, wrong, start)
    moved = swap_targets(x, merged, wrong, start)
    targets = lambda m: sorted((m.pi[1:] > 0.5).int().argmax(1).tolist())
    assert targets(alone) != [0, 1, 2, 3, 4] and violations(data.adjacency, alone.order) > 0
    assert moved.score > alone.score
    assert targets(moved) == [0, 1, 2, 3, 4] and violations(data.adjacency, moved.order) == 0


def test_the_moves_start_from_the_refined_mixture_of_their_model_and_prior(soft_mixture):
    """Without a sweep the moves return :func:`refine`'s mixture, for either intervention model and
    any target prior; by default they sweep 4 times, each trial refined for 4 alternations."""
    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    for perfect, logit in ((False, -3.0), (True, -1.0)):
        alone = refine(x, q, pi, [0, 1, 2, 3], perfect=perfect, target_logit=logit)
        swapped = swap_targets(x, q, pi, [0, 1, 2, 3], perfect=perfect, target_logit=logit, sweeps=0)
        assert (swapped.score, swapped.order) == (alone.score, alone.order) and torch.equal(swapped.pi, alone.pi)
    defaults = inspect.signature(swap_targets).parameters
    assert (defaults["sweeps"].default, defaults["trial_iterations"].default) == (4, 4)


def spy_on_a_sweep(monkeypatch, x, q, pi, start_order, **options):
    """One sweep of :func:`swap_targets` with ``_alternate`` and ``refine`` watched: ``(target trials,
    order trials, refine calls)``; each trial ``(pi it starts from, order it starts from, options,
    score, order, pi)``, each refine call ``(pi, order, options)``."""
    from pyro_causal import profile_mixture

    trials = {False: [], True: []}
    refined = []
    alternate, real_refine = profile_mixture._alternate, profile_mixture.refine

    def alternate_spy(outer, q, pi, orders, **options):
        result = alternate(outer, q, pi, orders, **options)
        if options["iterations"] == 4:
            trials[options["hold_orders"]].append(
                [(moved, start, options, score, order, pis) for moved, start, score, order, pis
                 in zip(pi.clone(), orders.clone(), *(r.clone() for r in (result[0], result[1], result[3])))])
        return result

    def refine_spy(*args, **options):
        refined.append((args[2], list(args[3]), options))
        return real_refine(*args, **options)

    monkeypatch.setattr(profile_mixture, "_alternate", alternate_spy)
    monkeypatch.setattr(profile_mixture, "refine", refine_spy)
    swap_targets(x, q, pi, start_order, sweeps=1, **options)
    monkeypatch.undo()
    return trials[False], trials[True], refined


@pytest.mark.parametrize("per_batch", [4, 1])
def test_a_sweep_tries_every_unset_target_of_every_intervened_component(labelled, monkeypatch, per_batch):
    """One trial per ``(k >= 1, j)`` with ``pi_kj <= 1/2``, in order: row ``k`` set to 0.02 with
    0.9 at ``j``, every other row as refined, alternated with the fit's model and prior, a few
    trials at a time (each as it alternates alone, its order climbing)."""
    from pyro_causal import profile_mixture

    _, x, _, _ = labelled
    q, pi = misplaced(labelled)
    start = refine(x, q, pi, [0, 1, 2, 3, 4], perfect=False, target_logit=-3.0)
    K, d = start.pi.shape
    monkeypatch.setattr(profile_mixture, "TRIAL_ELEMENTS", 4 * x.shape[0] * K if per_batch == 4 else 1)
    batches, _, _ = spy_on_a_sweep(monkeypatch, x, q, pi, [0, 1, 2, 3, 4], perfect=False, target_logit=-3.0)
    trials = [trial for batch in batches for trial in batch]
    expected = [(k, j) for k in range(1, K) for j in range(d) if start.pi[k, j] <= 0.5]
    assert 0 < len(expected) < (K - 1) * d and len(trials) == len(expected)  # some targets set, some not
    whole, rest = divmod(len(expected), per_batch)
    assert [len(batch) for batch in batches] == [per_batch] * whole + ([rest] if rest else [])
    for (k, j), (moved, order, options, _, _, _) in zip(expected, trials):
        row = torch.full((d,), 0.02, dtype=torch.float64)
        row[j] = 0.9
        others = torch.arange(K) != k
        assert torch.equal(moved[k], row) and torch.equal(moved[others], start.pi[others])
        assert order.tolist() == start.order
        assert (options["perfect"], options["target_logit"]) == (False, -3.0)
    for moved, _, _, score, order, pis in trials[::5]:  # each trial as it alternates alone (up to the last bits
        # of the elementwise functions, which depend on where an entry falls in a vectorised loop)
        alone = refine(x, start.q, moved, start.order, perfect=False, target_logit=-3.0, iterations=4)
        assert alone.order == order.tolist() and alone.score == pytest.approx(float(score), rel=1e-12, abs=0)
        torch.testing.assert_close(alone.pi, pis, rtol=1e-10, atol=1e-12)


def test_a_sweep_tries_every_insertion_move_of_the_order_with_the_order_held(labelled, monkeypatch):
    """One trial per order one insertion away (:func:`insertion_moves`), from the refined mixture,
    alternated with that order held: each scores as :func:`refine` with ``hold_order`` alone."""
    from pyro_causal.order_search import insertion_moves

    _, x, _, _ = labelled
    q, pi = misplaced(labelled)
    start = refine(x, q, pi, [0, 1, 2, 3, 4], perfect=False, target_logit=-3.0)
    _, batches, _ = spy_on_a_sweep(monkeypatch, x, q, pi, [0, 1, 2, 3, 4], perfect=False, target_logit=-3.0)
    trials = [trial for batch in batches for trial in batch]
    assert [order.tolist() for _, order, *_ in trials] == insertion_moves(start.order).tolist()
    assert len(trials) == 5 * 4 - 4  # d (d - 1) insertions, each adjacent swap reached from both sides once
    for moved, order, options, score, found, pis in trials:
        assert torch.equal(moved, start.pi) and torch.equal(found, order)  # held
    for moved, order, _, score, _, pis in trials[::4]:
        alone = refine(x, start.q, start.pi, order.tolist(), perfect=False, target_logit=-3.0, iterations=4,
                       hold_order=True)
        assert alone.order == order.tolist() and alone.score == pytest.approx(float(score), rel=1e-12, abs=0)
        torch.testing.assert_close(alone.pi, pis, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("perfect, order_moves, winner", [(False, True, "order"), (False, False, "target"),
                                                            (True, True, "target")])
def test_a_sweep_refines_the_best_trial_of_either_kind_further(labelled, monkeypatch, perfect, order_moves, winner):
    """The best-scoring trial of the sweep (target moves first among equal scores), not merely the
    last one above the start nor the last kind tried, is refined to convergence: with its order
    held after an order move."""
    _, x, _, _ = labelled
    q, pi = misplaced(labelled)
    start = refine(x, q, pi, [0, 1, 2, 3, 4], perfect=perfect, target_logit=-3.0)
    targets, orders, refined = spy_on_a_sweep(monkeypatch, x, q, pi, [0, 1, 2, 3, 4], perfect=perfect,
                                              target_logit=-3.0, order_moves=order_moves)
    trials = [(False, t) for batch in targets for t in batch] + [(True, t) for batch in orders for t in batch]
    assert (len(orders) > 0) is order_moves
    scores = [float(t[3]) for _, t in trials]
    best = scores.index(max(scores))
    held, (_, _, _, _, order, pis) = trials[best]
    assert held is (winner == "order")
    above = [i for i, value in enumerate(scores) if value > start.score and not trials[i][0]]
    assert len(above) > 1
    if (perfect, order_moves) == (False, False):
        assert above[-1] != best  # the best target move is not the last one above the start
    assert len(refined) == 2 and torch.equal(refined[1][0], pis) and refined[1][1] == order.tolist()
    assert refined[1][2]["hold_order"] is held
    assert (refined[1][2]["perfect"], refined[1][2]["target_logit"]) == (perfect, -3.0)


def test_a_held_order_stays_and_its_alternation_only_climbs(soft_mixture):
    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    free = refine(x, q, pi, [3, 2, 1, 0])
    assert free.order != [3, 2, 1, 0]  # the climb leaves this order
    scores = []
    for i in (1, 2, 4, 8):
        held = refine(x, q, pi, [3, 2, 1, 0], iterations=i, hold_order=True)
        assert held.order == [3, 2, 1, 0]
        scores.append(held.score)
    assert all(b >= a - 1e-6 for a, b in zip(scores, scores[1:])) and scores[-1] > scores[0]


def test_order_moves_reach_the_true_order_the_climbing_alternation_leaves():
    """Weak interventions (mean 1) and a mixture mostly noise: the target moves alone end two edges
    against the true order; with the order moves (on by default at this size) every edge is along
    it, at a higher score."""
    data = simulate(6, 1.0, 3000, seed=0, intervention_mean=1.0)
    x = torch.tensor((data.x - data.x.mean(0)) / data.x.std(0))
    rng = np.random.default_rng(0)
    q = torch.tensor(0.2 * np.eye(data.num_regimes)[data.regimes] + 0.8 * rng.dirichlet(np.ones(data.num_regimes), len(x)))
    pi = torch.tensor(data.targets, dtype=torch.float64) * 0.8 + 0.1
    pi[0] = 0.0
    start = list(range(6))[::-1]
    moved = swap_targets(x, q, pi, start)
    targets_only = swap_targets(x, q, pi, start, order_moves=False)
    assert violations(data.adjacency, targets_only.order) == 2
    assert violations(data.adjacency, moved.order) == 0 and moved.score > targets_only.score


def test_fit_moves_the_targets_in_the_first_order_refit_round_only_unless_turned_off():
    from pyro_causal import AfterTraining, FitConfig, PenaltySchedule, fit

    data = simulate(4, 1.0, 1500, seed=2)
    schedule = PenaltySchedule(first_round_steps=100, round_steps=50, max_rounds=2)

    def rounds(**moves):
        result = fit(data.x, seed=0, config=FitConfig(training=TrainingConfig(schedule=schedule),
                                                      after_training=AfterTraining(order_refit=2, held_refit=False,
                                                                                   **moves)))
        return result.records["order_refit"]

    with_moves, without = rounds(), rounds(target_moves=False)  # on by default
    assert isinstance(with_moves[0]["target_moves"], float)
    assert all(r["target_moves"] is None for r in with_moves[1:] + without)


def test_orders_keep_the_edges_the_prior_requires(labelled, monkeypatch):
    from pyro_causal import profile_mixture

    data, x, q, pi = labelled
    cause, effect = (int(v[0]) for v in np.nonzero(data.adjacency))
    required = torch.zeros(5, 5, dtype=torch.bool)
    required[effect, cause] = True  # a true edge, reversed and required
    mixture = swap_targets(x, q, pi, list(range(5)), required=required, sweeps=1)
    assert mixture.order.index(effect) < mixture.order.index(cause)
    merged, wrong = misplaced(labelled)  # a move is taken, and refined further, with the edge kept
    asked, real = [], profile_mixture.refine
    monkeypatch.setattr(profile_mixture, "refine", lambda *a, **k: asked.append(k["required"]) or real(*a, **k))
    moved = swap_targets(x, merged, wrong, list(range(5)), required=required, sweeps=1)
    monkeypatch.undo()
    assert len(asked) == 2 and all(mask is required for mask in asked)
    assert moved.score > refine(x, merged, wrong, list(range(5)), required=required).score
    assert moved.order.index(effect) < moved.order.index(cause)
    assert refine(x, q, pi, list(range(5)))[1].index(cause) < refine(x, q, pi, list(range(5)))[1].index(effect)


def test_the_targets_kl_is_the_bernoulli_kl_to_the_prior_in_double_precision():
    from pyro_causal.profile_mixture import _target_kl

    pi = torch.tensor([[0.0, 0.0], [0.3, 0.999], [1e-13, 1.0]], dtype=torch.float64)
    prior = 1 / (1 + math.exp(1.5))
    expected = 0.0
    for p in (0.3, 0.999, 1e-12, 1 - 1e-12):  # 0 and 1 are clamped to 1e-12 from the ends
        expected += p * math.log(p / prior) + (1 - p) * math.log((1 - p) / (1 - prior))
    assert float(_target_kl(pi, -1.5)) == pytest.approx(expected, rel=1e-12)


def test_the_alternation_stops_when_the_score_rises_by_less_than_the_tolerance_per_row(soft_mixture):
    x, q, pi = (torch.tensor(a) for a in soft_mixture)
    start = [3, 2, 1, 0]
    one, two, three = (refine(x, q, pi, start, iterations=i) for i in (1, 2, 3))
    rise = (two.score - one.score) / len(x)  # the first rise is measured after the second alternation
    assert rise > 0 and three.score > two.score
    assert refine(x, q, pi, start, tolerance=rise * 1.01).score == two.score
    assert refine(x, q, pi, start, tolerance=rise * 0.99).score == three.score  # its rise, far smaller, stops it


def test_order_moves_are_tried_by_default_up_to_their_size_limit(labelled, monkeypatch):
    """``order_moves=None`` tries them on at most ``ORDER_MOVES_MAX_VARIABLES`` variables."""
    from pyro_causal import profile_mixture

    _, x, _, _ = labelled
    q, pi = misplaced(labelled)
    for limit, tried in ((5, True), (4, False)):
        monkeypatch.setattr(profile_mixture, "ORDER_MOVES_MAX_VARIABLES", limit)
        _, orders, _ = spy_on_a_sweep(monkeypatch, x, q, pi, [0, 1, 2, 3, 4], perfect=False, target_logit=-3.0)
        assert (len(orders) > 0) is tried
    assert profile_mixture.ORDER_MOVES_MAX_VARIABLES == 12


def test_order_moves_keep_the_edges_the_prior_requires(labelled):
    """Only orders with every required edge along them are tried: with a required chain there is
    none, and the moves end in the chain's order; with one required edge every order tried keeps it."""
    data, x, _, _ = labelled
    q, pi = misplaced(labelled)
    chain = [4, 2, 0, 3, 1]
    required = torch.zeros(5, 5, dtype=torch.bool)
    for cause, effect in zip(chain, chain[1:]):
        required[cause, effect] = True
    _, orders, _ = spy_on_a_sweep(pytest.MonkeyPatch(), x, q, pi, chain, required=required)
    assert orders == []
    assert swap_targets(x, q, pi, chain, required=required).order == chain
    one = torch.zeros(5, 5, dtype=torch.bool)
    one[3, 0] = True
    _, orders, _ = spy_on_a_sweep(pytest.MonkeyPatch(), x, q, pi, [3, 0, 1, 2, 4], required=one)
    tried = [order.tolist() for batch in orders for _, order, *_ in batch]
    assert len(tried) > 0 and all(order.index(3) < order.index(0) for order in tried)


def test_the_best_trial_is_the_first_best_number_over_every_chunk(monkeypatch):
    """Trials alternated a chunk at a time: the highest score over all chunks wins, the first of
    equal ones, a trial scoring NaN never; with no trial scoring a number there is none."""
    from pyro_causal import profile_mixture

    per_chunk = [[1.0, math.nan], [3.0, 2.0], [3.0, 0.5], [math.nan, -1.0]]
    calls = iter(per_chunk)

    def alternate(outer, q, pis, orders, **options):
        return torch.tensor(next(calls), dtype=torch.float64), orders, q, pis

    monkeypatch.setattr(profile_mixture, "_alternate", alternate)
    n, K, d = 3, 2, 4
    monkeypatch.setattr(profile_mixture, "TRIAL_ELEMENTS", 2 * n * K)  # two trials per chunk
    orders = torch.arange(8).unsqueeze(1).expand(8, d)  # trial t's order: [t, t, t, t]
    pis = torch.zeros(8, K, d, dtype=torch.float64)
    trial = lambda: profile_mixture._best_trial(torch.zeros(n, 1), torch.zeros(n, K), pis, orders,
                                                torch.zeros(K, d + 1, d + 1), hold_orders=True, perfect=True,
                                                target_logit=-2.0, iterations=4, required=None)
    best = trial()
    assert (best.score, best.order) == (3.0, [2] * d)
    calls = iter([[math.nan, math.nan]] * 4)
    assert trial() is None
    assert profile_mixture._best_trial(torch.zeros(n, 1), torch.zeros(n, K), pis[:0], orders[:0],
                                       torch.zeros(K, d + 1, d + 1), hold_orders=True, perfect=True,
                                       target_logit=-2.0, iterations=4, required=None) is None

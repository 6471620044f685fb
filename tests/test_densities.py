"""One battery for every conditional-density family, plus the deep sigmoidal flow as a Transform."""
import copy
import io
import math
import pickle

import pyro.distributions as dist
import pytest
import torch

from pyro_causal.densities import DeepSigmoidalFlowTransform, available_densities, make_density

FAMILIES = ["linear", "mlp", "flow"]
D, H, C, N = 4, 3, 2, 5
PARENTS = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float)


def build(name, perturb=0.0, dtype=torch.float64):
    """A density of the family ``name`` whose parameters are moved away from initialisation."""
    density = make_density(name, D, H).to(dtype)
    with torch.no_grad():
        for parameter in density.parameters():
            parameter.add_(perturb * torch.randn_like(parameter))
    return density


def grid_density(density, x_row, embeddings, j, grid):
    """``g_j(t | parents in x_row, u_c)`` for every t of the grid: ``(C, G)``."""
    x = x_row.expand(len(grid), D).clone()
    x[:, j] = grid
    return density.log_prob(x, PARENTS, embeddings)[..., j].exp()


def test_families_are_registered():
    assert set(FAMILIES) <= set(available_densities())


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("batched", [False, True], ids=["x(n,d)", "x(C,n,d)"])
def test_shapes(name, batched):
    density = build(name, dtype=torch.float32)
    x = torch.randn(C, N, D) if batched else torch.randn(N, D)
    embeddings = torch.randn(C, H)
    log_prob = density.log_prob(x, PARENTS, embeddings)
    draws = density.sample(x, PARENTS, embeddings)
    assert log_prob.shape == draws.shape == (C, N, D)
    assert torch.isfinite(log_prob).all() and torch.isfinite(draws).all()
    if batched:  # component c sees its own x[c]
        for c in range(C):
            torch.testing.assert_close(log_prob[c], density.log_prob(x[c], PARENTS, embeddings)[c])


@pytest.mark.parametrize("name", FAMILIES)
def test_every_parameter_gets_a_gradient(name):
    density = build(name, dtype=torch.float32)
    mask = (1 - torch.eye(D)).requires_grad_()
    embeddings = torch.randn(C, H, requires_grad=True)
    density.log_prob(torch.randn(N, D), mask, embeddings).sum().backward()
    for tensor_name, tensor in [*density.named_parameters(), ("mask", mask), ("embeddings", embeddings)]:
        assert tensor.grad is not None, tensor_name
        assert torch.isfinite(tensor.grad).all(), tensor_name
        assert tensor.grad.abs().sum() > 0, tensor_name


@pytest.mark.parametrize("name", FAMILIES)
def test_state_dict_round_trip(name):
    density, buffer = build(name, perturb=0.3, dtype=torch.float32), io.BytesIO()
    torch.save(density.state_dict(), buffer)
    buffer.seek(0)
    restored = make_density(name, D, H)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    x, embeddings = torch.randn(N, D), torch.randn(C, H)
    expected = density.log_prob(x, PARENTS, embeddings)
    torch.testing.assert_close(restored.log_prob(x, PARENTS, embeddings), expected)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mask", [PARENTS, torch.zeros(D, D)], ids=["dag", "cut"])
def test_only_parents_matter(name, mask):
    density = build(name, perturb=0.3)
    x, embeddings = torch.randn(N, D, dtype=torch.float64), torch.randn(C, H, dtype=torch.float64)
    reference = density.log_prob(x, mask, embeddings)
    for i in range(D):
        moved = x.clone()
        moved[:, i] += 1.5
        changed = (density.log_prob(moved, mask, embeddings) - reference).abs().amax((0, 1)) > 1e-9
        expected = mask[i].bool().clone()
        expected[i] = True  # x_i is the argument of g_i
        assert torch.equal(changed, expected), (i, changed, expected)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("batched", [False, True], ids=["x(n,d)", "x(C,n,d)"])
def test_no_parents_equals_the_zero_mask(name, batched):
    """``no_parents`` (``None`` for the conditioned families: one parameter row per component)
    gives the values, gradients and draws of the all-zero mask."""
    density = build(name, perturb=0.3)
    x = torch.randn(C, N, D, dtype=torch.float64) if batched else torch.randn(N, D, dtype=torch.float64)
    embeddings = torch.randn(C, H, dtype=torch.float64)
    cut = density.no_parents(PARENTS.double())
    assert cut is None if name != "linear" else torch.equal(cut, torch.zeros(D, D, dtype=torch.float64))
    values, gradients = [], []
    for mask in (cut, torch.zeros(D, D, dtype=torch.float64)):
        density.zero_grad()
        value = density.log_prob(x, mask, embeddings)
        (value * torch.linspace(0.5, 2.0, value.numel(), dtype=value.dtype).view_as(value)).sum().backward()
        values.append(value)
        gradients.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in density.parameters()])
    assert values[0].shape == (C, N, D)
    torch.testing.assert_close(values[0], values[1])
    for with_none, with_zeros in zip(*gradients):
        torch.testing.assert_close(with_none, with_zeros)
    draws = []
    for mask in (cut, torch.zeros(D, D, dtype=torch.float64)):
        torch.manual_seed(3)
        draws.append(density.sample(x, mask, embeddings))
    assert draws[0].shape == (C, N, D)
    torch.testing.assert_close(draws[0], draws[1])
    assert (draws[0][:, 1:] != draws[0][:, :1]).all()  # each row its own draw, not one broadcast


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("fn", ["log_prob", "sample"])
def test_perfect_interventions_cut_the_parents_of_every_component_but_the_first(name, fn):
    density = build(name, perturb=0.3)
    x, embeddings = torch.randn(N, D, dtype=torch.float64), torch.randn(C + 1, H, dtype=torch.float64)
    torch.manual_seed(4)
    table = density.per_component(fn, x, PARENTS.double(), embeddings, perfect=True)
    torch.manual_seed(4)
    observational = getattr(density, fn)(x, PARENTS.double(), embeddings[:1])
    intervened = getattr(density, fn)(x, torch.zeros(D, D, dtype=torch.float64), embeddings[1:])
    torch.testing.assert_close(table, torch.cat([observational, intervened]))

@pytest.mark.parametrize("name", FAMILIES)
def test_each_mechanism_integrates_to_one(name):
    density = build(name, perturb=0.3)
    x_row, embeddings = torch.randn(D, dtype=torch.float64), torch.randn(C, H, dtype=torch.float64)
    grid = torch.linspace(-30.0, 30.0, 4001, dtype=torch.float64)
    for j in range(D):
        mass = torch.trapezoid(grid_density(density, x_row, embeddings, j, grid), grid)
        torch.testing.assert_close(mass, torch.ones(C, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_samples_follow_log_prob(name):
    """Kolmogorov-Smirnov distance between draws and the numerically integrated CDF of g_j."""
    density, draws_per_mechanism = build(name, perturb=0.3), 4000
    x_row, embeddings = torch.randn(D, dtype=torch.float64), torch.randn(C, H, dtype=torch.float64)
    with torch.no_grad():
        draws = density.sample(x_row.expand(C, draws_per_mechanism, D), PARENTS, embeddings)
    grid = torch.linspace(-30.0, 30.0, 4001, dtype=torch.float64)
    empirical = torch.arange(1, draws_per_mechanism + 1, dtype=torch.float64) / draws_per_mechanism
    for j in range(D):
        pdf = grid_density(density, x_row, embeddings, j, grid)
        cdf = torch.cat([pdf.new_zeros(C, 1), torch.cumulative_trapezoid(pdf, grid)], -1)
        for c in range(C):
            sorted_draws = draws[c, :, j].sort().values
            index = torch.searchsorted(grid, sorted_draws).clamp(1, len(grid) - 1)
            weight = (sorted_draws - grid[index - 1]) / (grid[index] - grid[index - 1])
            model_cdf = torch.lerp(cdf[c, index - 1], cdf[c, index], weight)
            distance = torch.maximum(empirical - model_cdf, model_cdf - (empirical - 1 / draws_per_mechanism))
            assert distance.max() < 1.95 / math.sqrt(draws_per_mechanism), (j, c, distance.max())


def random_flow(*batch, layers=2, units=5, dtype=torch.float64, requires_grad=False):
    shape = (layers, units, *batch)
    a_raw, b, w_logits = (scale * torch.randn(shape, dtype=dtype) for scale in (1.0, 2.0, 1.0))
    return DeepSigmoidalFlowTransform(*(p.requires_grad_(requires_grad) for p in (a_raw, b, w_logits)))


def test_flow_matches_the_direct_formula():
    flow, x = random_flow(layers=1), torch.linspace(-4, 4, 17, dtype=torch.float64)
    a = torch.nn.functional.softplus(flow.a_raw[0]) + 1e-3
    p = (torch.softmax(flow.w_logits[0], 0) * torch.sigmoid(a * x[:, None] + flow.b[0])).sum(-1)
    torch.testing.assert_close(flow(x), torch.logit(p))


def test_flow_is_invertible():
    flow = random_flow(7)
    tails = torch.tensor([-1e3, -50.0, 50.0, 1e3], dtype=torch.float64)
    x = torch.cat([3 * torch.randn(6, 7, dtype=torch.float64), tails[:, None].expand(4, 7)])
    torch.testing.assert_close(flow.inv(flow(x)), x, atol=1e-8, rtol=1e-8)
    y = 3 * torch.randn(6, 7, dtype=torch.float64)
    torch.testing.assert_close(flow(flow.inv(y)), y, atol=1e-8, rtol=1e-8)


def test_flow_log_det_matches_autograd():
    flow = random_flow(7)
    x = (3 * torch.randn(6, 7, dtype=torch.float64)).requires_grad_()
    y = flow(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(flow.log_abs_det_jacobian(x, y), slope.log())


def test_flow_inverse_has_implicit_gradients():
    flow = random_flow(3, requires_grad=True)
    y = torch.randn(3, dtype=torch.float64)
    x = flow.inv(y)
    (through_inverse,) = torch.autograd.grad(x.sum(), flow.b, retain_graph=True)
    x = x.detach().requires_grad_()
    slope, direct = torch.autograd.grad(flow(x).sum(), [x, flow.b])  # dx/db = -(dtau/db) / tau'(x)
    torch.testing.assert_close(through_inverse, -direct / slope)


def test_flow_composes_with_pyro():
    flow = random_flow(4, dtype=torch.float32)
    base = dist.Normal(torch.zeros(4), torch.ones(4))
    model = dist.TransformedDistribution(base, [flow.inv])
    x = torch.randn(4)
    y, log_det = flow.call_and_log_det(x)
    torch.testing.assert_close(model.log_prob(x), base.log_prob(y) + log_det)
    assert model.sample((3,)).shape == (3, 4)
    assert torch.isfinite(model.rsample()).all()
    cached = flow.with_cache(1)
    assert cached.inv(cached(x)) is x


@pytest.mark.parametrize("value", [50.0, -50.0, 1e3, -1e3])
def test_flow_tails_are_finite(value):
    flow = random_flow(4, dtype=torch.float32, requires_grad=True)
    x = torch.full((4,), value, requires_grad=True)
    y, log_det = flow.call_and_log_det(x)
    assert torch.isfinite(y).all() and torch.isfinite(log_det).all()
    gradients = torch.autograd.grad((log_det - y**2 / 2).sum(), [x, flow.a_raw, flow.b, flow.w_logits])
    assert all(torch.isfinite(g).all() for g in gradients)

    density = make_density("flow", D, H)
    x = torch.full((N, D), value)
    log_prob = density.log_prob(x, PARENTS, torch.randn(C, H))
    log_prob.sum().backward()
    assert torch.isfinite(log_prob).all()
    assert all(torch.isfinite(p.grad).all() for p in density.parameters())


def test_tanh_mlp_stays_bounded_on_extreme_parents():
    # Bounded hidden units: |loc_j| <= sum_h |W_out_jh| + |b_j| whatever the inputs, which keeps
    # heavy-tailed rows from driving the network into huge activations.
    torch.manual_seed(0)
    density = make_density("mlp", 4, 3, activation="tanh")
    x = 1e4 * torch.randn(50, 4)
    loc, scale = density.loc_scale(x, torch.ones(4, 4) - torch.eye(4), torch.randn(2, 3))
    head = density.conditioner
    bound = head.weight_out[:, 0].abs().sum(-1) + head.bias_out[:, 0, 0].abs()  # (d,)
    assert torch.all(loc.abs() <= bound.unsqueeze(-1) + 1e-5)
    assert torch.isfinite(density.log_prob(x, torch.ones(4, 4), torch.randn(2, 3))).all()


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation 'relu6'"):
        make_density("mlp", 3, 2, activation="relu6")


@pytest.mark.parametrize("perfect", [False, True])
def test_linear_mixture_log_prob_from_second_moments_matches_the_table(perfect):
    # LinearGaussian.component_log_prob expands the squared residuals into a quadratic form of
    # the rows; it must equal the generic (C, n, d) table path, values and gradients.
    from pyro_causal.densities import ConditionalDensity, LinearGaussian

    torch.manual_seed(0)
    density = LinearGaussian(5, 3).double()
    with torch.no_grad():
        for p in density.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = 3 * torch.randn(40, 5, dtype=torch.float64) + 10  # far from zero: the expansion cancels
    adjacency = (torch.rand(5, 5) < 0.5).double().fill_diagonal_(0).requires_grad_()
    embeddings = torch.randn(4, 3, dtype=torch.float64)
    targets = torch.rand(4, 5, dtype=torch.float64)
    targets[0] = 0
    fast = density.component_log_prob(x, adjacency, embeddings, targets, perfect)
    table = ConditionalDensity.component_log_prob(density, x, adjacency, embeddings, targets, perfect)
    assert fast.shape == (4, 40)
    torch.testing.assert_close(fast, table, rtol=1e-10, atol=1e-8)
    inputs = [adjacency, *density.parameters()]
    for a, b in zip(torch.autograd.grad(fast.sum(), inputs), torch.autograd.grad(table.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-7)
    # In float32 the expansion runs in float64 inside, so it stays as close to the float64 values
    # as the float32 parameters allow (the float32 table path itself is off by ~4e-5 relative).
    single = copy.deepcopy(density).float()
    fast32 = single.component_log_prob(x.float(), adjacency.detach().float(), embeddings.float(), targets.float(), perfect)
    assert fast32.dtype == torch.float32
    torch.testing.assert_close(fast32.double(), table.detach(), rtol=1e-5, atol=1e-3)


def test_linear_second_moments_are_recomputed_after_an_in_place_edit():
    from pyro_causal.densities import ConditionalDensity, LinearGaussian

    density = LinearGaussian(3, 2)
    x, adjacency, embeddings, targets = torch.randn(6, 3), torch.ones(3, 3), torch.randn(2, 2), torch.rand(2, 3)
    first = density.component_log_prob(x, adjacency, embeddings, targets)
    x.mul_(2.0)  # same tensor, new values: the cached moments must not be reused
    second = density.component_log_prob(x, adjacency, embeddings, targets)
    torch.testing.assert_close(second, ConditionalDensity.component_log_prob(density, x, adjacency, embeddings, targets))
    assert not torch.allclose(first, second)
    # the same data tensor reuses its moments; data that require a gradient are never cached
    assert density._second_moments(x) is density._second_moments(x)
    tracked = x.clone().requires_grad_()
    assert density._second_moments(tracked) is not density._second_moments(tracked)
    # pickling (a FitResult, a checkpointed model) leaves the cache and its weak reference out
    assert density._moments_cache is not None
    restored = pickle.loads(pickle.dumps(density))
    assert restored._moments_cache is None and "_MOMENTS_CACHE" not in vars(restored)
    torch.testing.assert_close(restored.component_log_prob(x, adjacency, embeddings, targets), second)


def test_linear_edge_gain_from_weighted_moments_matches_toggling_each_edge():
    # LinearGaussian.log_prob_gain works from sum_n q_nk y_n y_n^T; it must equal the weighted
    # difference of log_prob with each edge on and off, for any factored weights, far from zero.
    import itertools

    from pyro_causal.densities import LinearGaussian

    torch.manual_seed(1)
    d, n, K = 4, 30, 3
    density = LinearGaussian(d, 2).double()
    with torch.no_grad():
        for p in density.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = 2 * torch.randn(n, d, dtype=torch.float64) + 8
    mask = (torch.rand(d, d) < 0.5).double().fill_diagonal_(0)
    embeddings = torch.randn(K, 2, dtype=torch.float64)
    rows = torch.softmax(torch.randn(n, K, dtype=torch.float64), -1)
    mix = torch.rand(K, K, d, dtype=torch.float64)
    weights = torch.einsum("nk,ckj->cnj", rows, mix)
    expected = torch.zeros(d, d, dtype=torch.float64)
    for i, j in itertools.permutations(range(d), 2):
        on, off = mask.clone(), mask.clone()
        on[i, j], off[i, j] = 1.0, 0.0
        expected[i, j] = (weights * (density.log_prob(x, on, embeddings) - density.log_prob(x, off, embeddings))).sum()
    gain = density.log_prob_gain(x, mask, embeddings, rows, mix)
    off_diagonal = ~torch.eye(d, dtype=torch.bool)
    torch.testing.assert_close(gain[off_diagonal], expected[off_diagonal], rtol=1e-8, atol=1e-8)
    assert expected[off_diagonal].abs().min() > 1e-3  # every toggle matters here
    gain32 = copy.deepcopy(density).float().log_prob_gain(x.float(), mask.float(), embeddings.float(), rows.float(), mix.float())
    torch.testing.assert_close(gain32.double()[off_diagonal], expected[off_diagonal], rtol=1e-4, atol=1e-2)


def test_linear_mixture_log_prob_keeps_the_parents_by_default_and_takes_rows_per_component():
    # (n, d) rows take the second-moment path, (C, n, d) rows (each component its own) the table
    # path; both with the imperfect default, which differs from cutting the parents.
    from pyro_causal.densities import ConditionalDensity, LinearGaussian

    torch.manual_seed(2)
    density = LinearGaussian(3, 2).double()
    with torch.no_grad():
        for p in density.parameters():
            p.add_(0.5 * torch.randn_like(p))
    f64 = {"dtype": torch.float64}
    adjacency = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], **f64)
    embeddings, targets = torch.randn(2, 2, **f64), torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.7, 1.0]], **f64)
    for x in (torch.randn(6, 3, **f64), torch.randn(2, 6, 3, **f64)):
        imperfect = ConditionalDensity.component_log_prob(density, x, adjacency, embeddings, targets, False)
        torch.testing.assert_close(density.component_log_prob(x, adjacency, embeddings, targets), imperfect)
        perfect = ConditionalDensity.component_log_prob(density, x, adjacency, embeddings, targets, True)
        torch.testing.assert_close(density.component_log_prob(x, adjacency, embeddings, targets, True), perfect)
        assert not torch.allclose(perfect, imperfect)

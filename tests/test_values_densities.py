"""Value checks of the conditioned densities (MLP, flow) against direct formulas: the stacked
networks against one small network per variable and component, the draws against the noise they
are made of, the initial mechanisms, and the refusals of bad shapes and sizes."""
import pytest
import torch
from torch.nn.functional import leaky_relu

from pyro_causal.densities import DeepSigmoidalFlowTransform, make_density
from pyro_causal.densities.base import ConditionalDensity, embedding_network
from pyro_causal.densities.conditioner import StackedConditioner
from pyro_causal.densities.flow import DeepSigmoidalFlow
from pyro_causal.densities.linear import LinearGaussian
from pyro_causal.densities.mlp import MLPGaussian

D, H, C, N = 3, 2, 3, 4


def perturbed(module, scale=0.5):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return module.double()


def one_network(net, j, u, inputs):
    """Variable ``j``'s network on ``[u, inputs]`` (``inputs``: ``(n, d)``, already masked): ``(n, m)``."""
    first = torch.cat([net.weight_u[j], net.weight_x[j]], 0)  # (h + d, H)
    hidden = leaky_relu(torch.cat([u.expand(len(inputs), -1), inputs], 1) @ first + net.bias_in[j], 0.2)
    for layer in range(net.layers - 1):
        hidden = leaky_relu(hidden @ net.weight_hidden[layer][j] + net.bias_hidden[layer][j], 0.2)
    return hidden @ net.weight_out[j].T + net.bias_out[j, :, 0]


@pytest.mark.parametrize("layers", [1, 3])
def test_stacked_conditioner_is_one_network_per_variable(layers):
    torch.manual_seed(0)
    net = perturbed(StackedConditioner(D, H, out_features=2, hidden=5, layers=layers))
    assert net.weight_x.shape == (D, D, 5) and net.bias_in.shape == (D, 1, 5) and len(net.weight_hidden) == layers - 1
    x, embeddings = torch.randn(N, D, dtype=torch.float64), torch.randn(C, H, dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.float64)
    out, parentless = net(x, mask, embeddings), net(x, None, embeddings)
    assert out.shape == (C, D, 2, N) and parentless.shape == (C, D, 2, 1)
    for c in range(C):
        for j in range(D):
            torch.testing.assert_close(out[c, j].T, one_network(net, j, embeddings[c], x * mask[:, j]))
            torch.testing.assert_close(parentless[c, j].T, one_network(net, j, embeddings[c], torch.zeros(1, D, dtype=torch.float64)))


def test_mlp_draws_are_the_mean_plus_the_scale_times_one_normal_draw_per_component_and_row():
    torch.manual_seed(1)
    density = perturbed(MLPGaussian(D, H))
    x, embeddings = torch.randn(N, D, dtype=torch.float64), torch.randn(C, H, dtype=torch.float64)
    for mask in (torch.ones(D, D, dtype=torch.float64), None):
        loc, scale = density.loc_scale(x, mask, embeddings)
        torch.manual_seed(2)
        draws = density.sample(x, mask, embeddings)
        torch.manual_seed(2)
        noise = torch.randn(C, D, N, dtype=torch.float64)
        torch.testing.assert_close(draws, (loc + scale * noise).transpose(-1, -2))
        assert (draws[1:] != draws[:1]).all()  # each component its own draw


def test_flow_draws_invert_the_flow_at_one_normal_draw_per_component_and_row():
    torch.manual_seed(3)
    density = perturbed(DeepSigmoidalFlow(D, H), 0.2)
    x, embeddings = torch.randn(N, D, dtype=torch.float64), torch.randn(C, H, dtype=torch.float64)
    for mask in (torch.ones(D, D, dtype=torch.float64), None):
        transform, mu, sigma = density.flow(x, mask, embeddings)
        torch.manual_seed(4)
        draws = density.sample(x, mask, embeddings)
        torch.manual_seed(4)
        noise = torch.randn(C, D, N, dtype=torch.float64)
        torch.testing.assert_close(draws, transform.inv(mu + sigma * noise).transpose(-1, -2))
        torch.testing.assert_close(transform(draws.transpose(-1, -2)), (mu + sigma * noise).expand(C, D, N))


def test_mlp_starts_at_unit_scale_and_a_small_last_layer():
    density = MLPGaussian(D, H, hidden=6)
    net = density.conditioner
    assert (net.hidden, net.layers, net.activation) == (6, 2, "leaky_relu")
    assert MLPGaussian(D, H, layers=3).conditioner.layers == 3 and MLPGaussian(D, H).conditioner.hidden == 16
    assert net.weight_out.abs().max() <= 0.1 / 6 ** 0.5
    with torch.no_grad():
        net.weight_out.zero_()
    loc, scale = density.loc_scale(torch.randn(N, D), torch.ones(D, D), torch.randn(C, H))
    torch.testing.assert_close(loc, torch.zeros(C, D, N))
    torch.testing.assert_close(scale, torch.ones(C, D, N))


def test_flow_starts_at_unit_slopes_spread_offsets_uniform_weights_and_a_unit_base():
    density = DeepSigmoidalFlow(D, H, hidden=6, flow_units=5)
    assert (density.conditioner.hidden, density.flow_layers, density.bisection_steps) == (6, 1, 50)
    assert DeepSigmoidalFlow(D, H).conditioner.hidden == 16
    with torch.no_grad():
        density.conditioner.weight_out.zero_()
    transform, mu, sigma = density.flow(torch.randn(N, D), torch.ones(D, D), torch.randn(C, H))
    torch.testing.assert_close(transform.a, torch.ones(1, 5, C, D, N))
    torch.testing.assert_close(transform.b, torch.linspace(-1.0, 1.0, 5).view(1, 5, 1, 1, 1).expand(1, 5, C, D, N))
    torch.testing.assert_close(transform.log_w.exp(), torch.full((1, 5, C, D, N), 0.2))
    torch.testing.assert_close(mu, torch.zeros(C, D, N))
    torch.testing.assert_close(sigma, torch.ones(C, D, N))


def test_flow_transform_keeps_its_bisection_steps_when_cached_and_refuses_mismatched_shapes():
    transform = DeepSigmoidalFlowTransform(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), bisection_steps=7)
    assert transform.with_cache().bisection_steps == 7 and transform.with_cache()._cache_size == 1 and transform._cache_size == 0
    with pytest.raises(ValueError, match=r"share one shape \(L, F, \*batch\), got \[\(1, 4, 2\), \(1, 4, 3\), \(1, 4, 2\)\]"):
        DeepSigmoidalFlowTransform(torch.zeros(1, 4, 2), torch.zeros(1, 4, 3), torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="share one shape"):
        DeepSigmoidalFlowTransform(torch.zeros(4), torch.zeros(4), torch.zeros(4))


@pytest.mark.parametrize("name", ["mlp", "flow"])
def test_one_dimensional_embeddings_and_two_components_keep_both_rows(name):
    density = make_density(name, D, 1).double()
    table = density.per_component("log_prob", torch.randn(N, D, dtype=torch.float64), torch.ones(D, D, dtype=torch.float64),
                                  torch.randn(2, 1, dtype=torch.float64), perfect=True)
    assert table.shape == (2, N, D)


def test_sizes_below_one_are_refused_with_the_value():
    ConditionalDensity(1, 1)  # the smallest sizes are accepted
    StackedConditioner(1, 1, out_features=1, hidden=1, layers=1)
    with pytest.raises(ValueError, match="num_variables must be >= 1, got 0"):
        ConditionalDensity(0, 2)
    with pytest.raises(ValueError, match="embedding_dim must be >= 1, got 0"):
        ConditionalDensity(2, 0)
    for sizes in ((0, 2, 2), (2, 0, 2), (2, 2, 0)):
        hidden, layers, out_features = sizes
        with pytest.raises(ValueError, match=f"hidden, layers, out_features must be >= 1: {hidden}, {layers}, {out_features}"):
            StackedConditioner(2, 2, out_features=out_features, hidden=hidden, layers=layers)
    with pytest.raises(ValueError, match="choose one of leaky_relu, tanh"):
        StackedConditioner(2, 2, 2, activation="relu6")


def test_embedding_network_is_linear_leaky_relu_linear():
    torch.manual_seed(5)
    net = embedding_network(3, 4, 2)
    u = torch.randn(6, 3)
    torch.testing.assert_close(net(u), net[2](leaky_relu(net[0](u), 0.2)))


def test_documented_defaults_and_options_reach_the_networks():
    assert (StackedConditioner(D, H, 2).hidden, StackedConditioner(D, H, 2).layers) == (16, 2)
    flow = DeepSigmoidalFlow(D, H, layers=3, bisection_steps=7)
    assert (flow.flow_units, flow.conditioner.layers, flow.embedding_dim, flow.num_variables) == (8, 3, H, D)
    assert flow.flow(torch.randn(N, D), torch.ones(D, D), torch.randn(C, H))[0].bisection_steps == 7
    assert DeepSigmoidalFlowTransform(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.zeros(1, 2, 1)).bisection_steps == 50
    assert make_density("mlp", D, H).embedding_dim == H


def test_network_mechanisms_is_a_class_flag_read_by_name_or_instance():
    from pyro_causal.densities import has_network_mechanisms

    assert [has_network_mechanisms(name) for name in ("linear", "mlp", "flow")] == [False, True, True]
    assert has_network_mechanisms(MLPGaussian(2, 3)) and has_network_mechanisms(DeepSigmoidalFlow(2, 3))
    assert not has_network_mechanisms(LinearGaussian(2, 3))
    with pytest.raises(ValueError, match="unknown density 'gp'"):
        has_network_mechanisms("gp")

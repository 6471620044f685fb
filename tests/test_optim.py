import pytest
import torch

from pyro_causal.optim import Adam


def _run(optimizer_cls, steps=20, **kwargs):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = optimizer_cls([p], lr=0.05, **kwargs)
    target = torch.randn(4, 3)
    for _ in range(steps):
        opt.zero_grad()
        ((p - target) ** 4).sum().backward()
        opt.step()
    return p.detach()


def test_elementwise_mode_is_torch_adam():
    assert torch.allclose(_run(Adam), _run(torch.optim.Adam), atol=1e-6)


def test_tensorwise_steps_keep_the_ratio_of_the_gradients():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = Adam([p], lr=0.1, tensorwise=True)
    p.grad = torch.tensor([4.0, -1.0, 0.5])
    opt.step()
    rms = p.grad.square().mean().sqrt()
    assert torch.allclose(p.detach(), -0.1 * p.grad / rms, atol=1e-6)
    # elementwise Adam would move every coordinate by the learning rate
    q = torch.nn.Parameter(torch.zeros(3))
    elementwise = Adam([q], lr=0.1)
    q.grad = p.grad.clone()
    elementwise.step()
    assert torch.allclose(q.detach().abs(), torch.full((3,), 0.1), atol=1e-6)


def test_state_round_trips_through_state_dict():
    p = torch.nn.Parameter(torch.ones(2))
    opt = Adam([{"params": [p], "tensorwise": True}], lr=0.1)
    p.grad = torch.tensor([1.0, 2.0])
    opt.step()
    copy = Adam([{"params": [p], "tensorwise": True}], lr=0.1)
    copy.load_state_dict(opt.state_dict())
    assert torch.equal(copy.state[p]["exp_avg_sq"], opt.state[p]["exp_avg_sq"])


def test_rejects_a_non_positive_learning_rate():
    with pytest.raises(ValueError, match="lr"):
        Adam([torch.nn.Parameter(torch.ones(1))], lr=0.0)

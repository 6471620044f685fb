"""Adam with an optional tensor-wise second moment, used for the edge logits.

Per-coordinate Adam divides each gradient by its own running RMS, so every edge logit moves at
about the learning rate whatever the size of its gradient.  Under the acyclicity penalty that
erases the information that decides a two-cycle: both directions of an edge are pushed down at
the same speed and die together.  With ``tensorwise=True`` a parameter's gradient is divided by
the running RMS over the whole tensor instead, which keeps the steps of different edges in the
ratio of their gradients (so the better-supported direction can outlive the other) while the
step size still adapts to the penalty's growth.  ``docs/results.md`` measures what it changes.
"""
from __future__ import annotations

import torch


class Adam(torch.optim.Optimizer):
    """Adam (Kingma and Ba, 2015); groups with ``tensorwise=True`` share one second moment per tensor.

    Args:
        params: parameters or parameter groups (a group may set ``tensorwise``).
        lr, betas, eps: as in :class:`torch.optim.Adam`.
        tensorwise: default for groups that do not set it.

    Example:
        >>> opt = Adam([{"params": [edge_logits], "tensorwise": True}, {"params": others}], lr=0.03)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, tensorwise: bool = False):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, tensorwise=tensorwise))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p) if not group["tensorwise"] else p.new_zeros(())
                state["step"] += 1
                grad = p.grad
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                square = grad.square().mean() if group["tensorwise"] else grad.square()
                state["exp_avg_sq"].mul_(beta2).add_(square, alpha=1 - beta2)
                first = 1 - beta1 ** state["step"]
                second = 1 - beta2 ** state["step"]
                denominator = (state["exp_avg_sq"] / second).sqrt().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / first)
        return loss

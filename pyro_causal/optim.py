"""A :class:`~pyro.optim.PyroOptim` for :class:`~pyro.infer.SVI` that keeps its state with a module.

Pyro's optimisers create one torch optimiser per parameter and name their state by Pyro's global
parameter store.  :class:`ModuleAdam` steps one ``torch.optim.Adam`` over the parameters of a
module (one multi-tensor `foreach` update for all of them) and keeps its state by position in that module, so a
checkpoint of the model and the optimiser round-trips without the global store.  Parameters
that the programs use outside the module (``pyro.param`` sites a user adds) get an Adam of their
own, as with ``pyro.optim.Adam``.
"""
from __future__ import annotations

from typing import Dict, Iterable

import torch
from pyro.optim import PyroOptim
from torch import nn


class ModuleAdam(PyroOptim):
    """Adam over ``module.parameters()`` (plus any other parameter SVI captures).

    Args:
        module: the module whose parameters are trained (the model, guide included).
        lr: step size; other ``torch.optim.Adam`` options as keywords.

    Example:
        >>> svi = SVI(m.model, m.guide, ModuleAdam(m, lr=0.03), LatentInterventionELBO())
    """

    def __init__(self, module: nn.Module, lr: float = 1e-3, **adam_options) -> None:
        super().__init__(torch.optim.Adam, dict(lr=lr, **adam_options))
        self.module = module
        adam_options.setdefault("foreach", True)  # one multi-tensor update of all the (small) tensors
        self.optimizer = torch.optim.Adam(module.parameters(), lr=lr, **adam_options)
        self._own = {id(p) for p in module.parameters()}

    def __call__(self, params: Iterable[torch.Tensor], *args, **kwargs) -> None:
        """One step of every parameter of the module and of ``params`` outside it."""
        self.optimizer.step()
        super().__call__([p for p in params if id(p) not in self._own], *args, **kwargs)

    def zero_grad(self) -> None:
        """Drop the gradients of the module's parameters (``None``: Adam skips a parameter without one)."""
        self.optimizer.zero_grad(set_to_none=True)

    def get_state(self) -> Dict:
        return {"module": self.optimizer.state_dict(), "others": super().get_state()}

    def set_state(self, state_dict: Dict) -> None:
        self.optimizer.load_state_dict(state_dict["module"])
        super().set_state(state_dict.get("others", {}))

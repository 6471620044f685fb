"""Conditional density families ``g_j`` (paper, section 3.4) and their registry."""
from __future__ import annotations

from typing import Callable, Dict

from .base import ConditionalDensity
from .flow import DeepSigmoidalFlow, DeepSigmoidalFlowTransform
from .linear import LinearGaussian
from .mlp import MLPGaussian

_REGISTRY: Dict[str, Callable[..., ConditionalDensity]] = {
    "linear": LinearGaussian,
    "mlp": MLPGaussian,
    "flow": DeepSigmoidalFlow,
}


def register_density(name: str, factory: Callable[..., ConditionalDensity]) -> None:
    """Make ``factory(num_variables, embedding_dim, **options)`` available as ``density=name``."""
    _REGISTRY[name] = factory


def available_densities() -> list[str]:
    """Names accepted by :func:`make_density`, ``fit(density=...)`` and ``--density``."""
    return sorted(_REGISTRY)


def make_density(name: str, num_variables: int, embedding_dim: int, **options) -> ConditionalDensity:
    """Build the density family called ``name``; unknown names raise ``ValueError``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown density {name!r}; choose one of {', '.join(available_densities())}")
    return _REGISTRY[name](num_variables, embedding_dim, **options)


__all__ = [
    "ConditionalDensity",
    "LinearGaussian",
    "MLPGaussian",
    "DeepSigmoidalFlow",
    "DeepSigmoidalFlowTransform",
    "make_density",
    "register_density",
    "available_densities",
]

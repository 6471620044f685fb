"""Conditional density families ``g_j`` (paper, section 3.4) and their registry."""
from __future__ import annotations

from typing import Callable, Dict, Union

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


def _family_flag(density: Union[str, ConditionalDensity], flag: str) -> bool:
    """A class flag of a family given by a registered name or an instance (unknown names raise)."""
    if isinstance(density, ConditionalDensity):
        return bool(getattr(density, flag))
    if density not in _REGISTRY:
        raise ValueError(f"unknown density {density!r}; choose one of {', '.join(available_densities())}")
    return bool(getattr(_REGISTRY[density], flag, False))


def provides_edge_gain(density: Union[str, ConditionalDensity]) -> bool:
    """Whether a family (a registered name or an instance) computes exact edge gains."""
    return _family_flag(density, "provides_edge_gain")


def has_network_mechanisms(density: Union[str, ConditionalDensity]) -> bool:
    """Whether a family's mechanisms are networks (:attr:`ConditionalDensity.network_mechanisms`)."""
    return _family_flag(density, "network_mechanisms")


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
    "provides_edge_gain",
    "register_density",
    "available_densities",
]

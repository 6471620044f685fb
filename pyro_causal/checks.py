"""Checks of what a user passes to :func:`pyro_causal.fit`: the same bounds the CLI enforces.

Every refusal is a :class:`~pyro_causal.io.DataError` (the data) or a ``ValueError`` (an option)
whose message names the column or the option.
"""
from __future__ import annotations

import re
from typing import Sequence, Union

import numpy as np
import torch

from .io import DataError, DataWarning
from .warn import warn_at_caller

MAX_TRUNCATION = 100
"""Most components ``K`` a fit accepts: above 100 the prior spreads the weight so thin that every
component can fall below the 1 % that :meth:`FitResult.components_in_use` counts."""


def as_array(value):
    """``value`` as a NumPy array; a torch tensor is detached and moved to the CPU first."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check_spread(x: np.ndarray, names: Sequence[str]) -> None:
    """Refuse subnormal or near-constant columns of ``x`` (``(n, d)``); warn about exactly
    collinear pairs (:class:`~pyro_causal.io.DataWarning`)."""
    size = np.abs(x).max(0)
    with np.errstate(over="ignore"):  # a spread beyond the float range is still a spread
        spread = np.ptp(x, axis=0)
    for j, name in enumerate(names):
        if size[j] < np.finfo(float).tiny:
            raise DataError(f"data, column {name!r}: every value is below {np.finfo(float).tiny:.1e} "
                            "(subnormal numbers lose precision); rescale the column")
        if spread[j] <= 1e3 * np.finfo(float).eps * size[j]:
            raise DataError(f"data, column {name!r}: nearly constant (values differ by {spread[j]:.3g} "
                            f"around {size[j]:.3g}, within rounding error); drop or rescale it")
    y = x / size
    y = y - y.mean(0)
    y = y / np.linalg.norm(y, axis=0)
    corr = np.abs(y.T @ y)
    for i, j in zip(*np.nonzero(np.triu(corr > 1 - 1e-10, 1))):
        kind = "identical" if np.array_equal(x[:, i], x[:, j]) else "exactly collinear"
        warn_at_caller(f"data: columns {names[i]!r} and {names[j]!r} are {kind}; "
                       "the direction of an edge between them cannot be learned", DataWarning)


REGIME_WORDS = ("regime", "condition", "intervention", "environment", "experiment")
"""Words that, in a column's name (singular or plural), usually mean it labels the rows' regimes."""


def check_regime_like(x: np.ndarray, names: Sequence[str]) -> None:
    """Warn (:class:`~pyro_causal.io.DataWarning`) about each integer-valued column of ``x``
    (``(n, d)``) named like a regime label (:data:`REGIME_WORDS`): it is fitted as a variable,
    which is rarely meant."""
    for j, name in enumerate(names):
        words = {word[:-1] if word.endswith("s") else word for word in re.split(r"[^a-z]+", name.lower())}
        if words & set(REGIME_WORDS) and np.array_equal(x[:, j], np.round(x[:, j])):
            warn_at_caller(f"data: column {name!r} looks like regime labels but is fitted as a variable; if it says "
                           f"which regime each row comes from, pass it as the regimes instead "
                           f"(--regime-column {name}, or fit(x, regimes=...))", DataWarning)


def check_options(truncation, supervision_weight, seed, n: int) -> None:
    """Refuse what the CLI refuses: a truncation that is not an int in ``1..min(n, MAX_TRUNCATION)``,
    a negative or non-finite supervision weight, a seed outside ``0..2**32 - 1``."""
    if truncation is not None:
        if isinstance(truncation, bool) or not isinstance(truncation, (int, np.integer)):
            raise ValueError(f"truncation must be an integer >= 1, got {truncation!r}")
        if truncation < 1:
            raise ValueError(f"truncation must be >= 1, got {truncation}")
        if truncation > min(n, MAX_TRUNCATION):
            raise ValueError(f"truncation {truncation} is more components than "
                             + (f"the {n} rows" if n < MAX_TRUNCATION else f"the maximum, {MAX_TRUNCATION}"))
    if not (isinstance(supervision_weight, (int, float, np.number)) and np.isfinite(supervision_weight)
            and supervision_weight >= 0):
        raise ValueError(f"supervision_weight must be a finite number >= 0, got {supervision_weight!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..{2**32 - 1}, got {seed!r}")


def check_device(device: Union[str, torch.device]) -> torch.device:
    """``torch.device(device)`` after checking that this machine has it.

    Raises:
        ValueError: not a device name, or a CUDA device that is absent.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu" and not (device.type == "mps" and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} is not available on this machine")
    return device

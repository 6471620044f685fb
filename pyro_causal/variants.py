"""The supervision variants of section 3.9, as conditioning of one model.

=================  ====================  =================  ======================
variant            regimes ``z``         targets ``r``      components ``K``
=================  ====================  =================  ======================
latent             latent                latent             truncation
semi-supervised    observed where known  latent             max(truncation, R)
unknown            observed              latent             R (number of regimes)
known              observed              observed           R
observational      (ignored)             (none)             1
=================  ====================  =================  ======================

Regime labels are integers ``0..R-1``, 0 being observational, ``-1`` unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .io import DataError

VARIANTS = ("latent", "semi-supervised", "unknown", "known", "observational")


@dataclass
class Supervision:
    """What is observed: ``regimes`` ``(n,)`` (``-1`` = unknown) and ``targets`` ``(K, d)``, or ``None``."""

    variant: str
    truncation: int
    regimes: Optional[np.ndarray]
    targets: Optional[np.ndarray]


def _compact(regimes: np.ndarray, targets: Optional[np.ndarray]):
    """Renumber labels with gaps (``0, 5, 1000000`` -> ``0, 1, 2``), keeping 0 observational and
    -1 unknown, so that the number of components follows the number of distinct labels; the
    rows of ``targets`` follow."""
    labels = np.union1d([0], regimes[regimes >= 0])
    if labels[-1] == len(labels) - 1:
        return regimes, targets
    if targets is not None and targets.shape[0] <= labels[-1]:
        raise DataError(f"targets has {targets.shape[0]} rows but regimes go up to {labels[-1]}")
    compact = np.where(regimes >= 0, np.searchsorted(labels, regimes), -1)
    return compact, None if targets is None else targets[labels]


def resolve_supervision(
    n: int,
    d: int,
    truncation: int,
    regimes=None,
    targets=None,
    observational: bool = False,
) -> Supervision:
    """Check the observed parts and pick the variant and the number of components.

    Raises:
        DataError: wrong shapes, labels below -1, targets without regimes, a non-zero
            observational target row, or regime labels with no target row.
    """
    if observational:
        return Supervision("observational", 1, None, None)
    if regimes is not None:
        regimes = np.asarray(regimes)
        if regimes.shape != (n,):
            raise DataError(f"regimes must have one label per row ({n}), got shape {regimes.shape}")
        if not (np.issubdtype(regimes.dtype, np.integer) or np.issubdtype(regimes.dtype, np.floating)
                or np.issubdtype(regimes.dtype, np.bool_)):
            raise DataError(f"regimes must be integers 0..R-1 (-1 for unknown), got {regimes.dtype} values "
                            f"such as {regimes[0].item()!r}; map the labels to integers first")
        if not np.issubdtype(regimes.dtype, np.integer):
            if not np.all(np.isfinite(regimes)) or not np.all(regimes == np.round(regimes)):
                raise DataError("regimes must be integers (-1 for unknown)")
            regimes = regimes.astype(np.int64)
        if regimes.min() < -1:
            bad = int(np.argmax(regimes < -1))
            raise DataError(f"regimes: row {bad} has label {regimes[bad]}; use 0..R-1, or -1 for unknown")
        if np.all(regimes < 0):
            regimes = None
    if targets is not None:
        if regimes is None:
            raise DataError("targets were given without regimes: give each row's regime too (known variant)")
        targets = np.asarray(targets, dtype=float)
        if targets.ndim != 2 or targets.shape[1] != d:
            raise DataError(f"targets must be a (regimes, {d}) 0/1 matrix, got shape {targets.shape}")
        if not np.isin(targets, (0.0, 1.0)).all():
            raise DataError("targets must contain only 0 and 1")
        if targets[0].any():
            raise DataError("targets: row 0 is the observational regime and must be all zero")
    if regimes is None:
        return Supervision("latent", truncation, None, None)
    regimes, targets = _compact(regimes, targets)
    num_regimes = int(regimes.max()) + 1
    if targets is not None:
        if targets.shape[0] < num_regimes:
            raise DataError(f"targets has {targets.shape[0]} rows but regimes go up to {num_regimes - 1}")
        if (regimes < 0).any():
            raise DataError("the known variant needs the regime of every row (no -1 labels)")
        return Supervision("known", targets.shape[0], regimes, targets)
    if (regimes < 0).any():
        return Supervision("semi-supervised", max(truncation, num_regimes), regimes, None)
    return Supervision("unknown", num_regimes, regimes, None)

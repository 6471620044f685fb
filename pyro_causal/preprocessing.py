"""What is done to the data before fitting: validation, the log transform and standardisation.

:func:`prepare_data` checks a user's ``(n, d)`` data and maps it with a :class:`Standardizer`
(``log`` first where asked, then each column centred and scaled); the fit keeps the map so that
new rows (held-out selection, predictions) go through the same one and results can be mapped back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .checks import as_array, check_regime_like, check_spread
from .io import DataError, check_matrix


@dataclass
class Standardizer:
    """Affine map applied to the data before fitting: ``(x - mean) / scale`` per column."""

    mean: np.ndarray
    scale: np.ndarray
    log_transform: bool = False

    @classmethod
    def fit(cls, x: np.ndarray, standardize: bool = True, log_transform: bool = False) -> "Standardizer":
        """Column means and standard deviations of ``x`` (``(n, d)``).

        Where ``x.std`` would overflow (values beyond about ``1e150``), each column is divided
        by its largest absolute value first and the moments scaled back, so huge but finite
        values standardise like any others.
        """
        d = x.shape[1]
        if not standardize:
            return cls(np.zeros(d), np.ones(d), log_transform)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, scale = x.mean(0), x.std(0)
        if not (np.isfinite(mean).all() and np.isfinite(scale).all()):
            size = np.abs(x).max(0)
            y = x / size
            mean, scale = y.mean(0) * size, y.std(0) * size
        return cls(mean, scale, log_transform)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.log_transform:
            x = np.log(x)
        return (x - self.mean) / self.scale



def prepare_data(x, names: Optional[Sequence[str]] = None, standardize: bool = True, log_transform: bool = False):
    """Validate ``x`` (``(n, d)``) and return ``(standardised array, names, Standardizer)``.

    ``x`` may be an array, nested lists, a pandas ``DataFrame`` (its column names are the
    default ``names``) or a torch tensor (detached).  Complex values, duplicate names,
    non-finite, constant, nearly constant or subnormal columns raise :class:`DataError`;
    exactly collinear columns, and integer columns named like regime labels, give a
    :class:`~pyro_causal.io.DataWarning`.
    """
    if names is None and hasattr(x, "columns") and hasattr(x, "to_numpy"):
        names = [str(c) for c in x.columns]
    try:
        x = as_array(x)
    except (TypeError, ValueError) as error:
        raise DataError(f"data must be a numeric (n, d) array: {error}") from None
    if np.iscomplexobj(x):
        raise DataError("data must be real numbers, got complex values")
    try:
        x = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as error:
        raise DataError(f"data must be a numeric (n, d) array: {error}") from None
    if x.ndim != 2:
        raise DataError(f"data must be a 2-D (rows, variables) array, got shape {x.shape}")
    names = [f"X{j}" for j in range(x.shape[1])] if names is None else [str(n) for n in names]
    if len(names) != x.shape[1]:
        raise DataError(f"{len(names)} names for {x.shape[1]} columns")
    duplicate = next((name for j, name in enumerate(names) if name in names[:j]), None)
    if duplicate is not None:
        raise DataError(f"names: {duplicate!r} is given twice; variable names must be distinct")
    check_matrix(x, names, "data", lambda i: f"row {i}")
    if log_transform:
        bad = np.argwhere(x <= 0)
        if bad.size:
            i, j = bad[0]
            raise DataError(f"data, row {i}, column {names[j]!r}: {float(x[i, j])!r} <= 0 cannot be log-transformed")
    values = np.log(x) if log_transform else x
    check_spread(values, names)
    check_regime_like(x, names)
    standardizer = Standardizer.fit(values, standardize, log_transform)
    data = standardizer(x)
    largest = np.abs(data).max(0)
    too_large = np.flatnonzero(largest > np.finfo(np.float32).max)
    if too_large.size:
        raise DataError(f"data, column {names[too_large[0]]!r}: values up to {largest[too_large[0]]:.3g} "
                        "exceed float32, the precision of the fit; standardise (the default) or rescale")
    return data, names, standardizer

"""Hyper-parameter selection by held-out likelihood, as in the paper's section 4.

The paper picks the graph prior's ``lambda`` and the target prior's ``gamma`` (and the rest)
by "the best log-likelihood on a validation set": the rows are shuffled with a seed and split
80/20, a model is fitted on the 80% for every setting of a small grid, and the held-out 20% is
scored by the evidence lower bound per row (section 3.6) with the optimal assignments ``q(z)``,
averaged over a few draws of ``(A, U)``.  The setting with the highest score is refitted on
every row.  The truth (graph, regimes) is never looked at.

Example:
    >>> selection = select_hyperparameters(x, {"edge_logit": (-4, -2), "target_logit": (-2,)})
    >>> selection.best, selection.result.adjacency.shape
    ({'edge_logit': -4, 'target_logit': -2}, (d, d))
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .api import fit
from .config import Priors
from .elbo import mean_elbo
from .result import FitResult

logger = logging.getLogger(__name__)

DEFAULT_GRID: Dict[str, Tuple[float, ...]] = {"edge_logit": (-6.0, -2.0, 0.0), "target_logit": (-4.0, -2.0)}
"""``lambda`` (edge prior logit) x ``gamma`` (target prior logit): 6 fits, then one refit; the
``lambda`` values hold both defaults (:data:`~pyro_causal.config.DEFAULT_EDGE_LOGITS`)."""

CRITERIA = ("elbo", "log_likelihood")


def split_rows(num_rows: int, validation_fraction: float = 0.2, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(num_rows)`` with ``seed`` and cut it into training and validation rows.

    Args:
        num_rows: ``n``.
        validation_fraction: share of rows held out, in ``(0, 1)``; at least one row each side.
        seed: seed of the ``numpy.random.Generator`` that shuffles.

    Returns:
        ``(train_rows, validation_rows)``, sorted int arrays that partition ``range(n)``.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if num_rows < 2:
        raise ValueError(f"need at least 2 rows to hold some out, got {num_rows}")
    order = np.random.default_rng(seed).permutation(num_rows)
    num_validation = min(max(int(round(validation_fraction * num_rows)), 1), num_rows - 1)
    return np.sort(order[num_validation:]), np.sort(order[:num_validation])


@torch.no_grad()
def heldout_scores(result: FitResult, x, *, regimes=None, targets=None, num_draws: int = 8,
                   seed: int = 0) -> Dict[str, float]:
    """Score rows a fit has not seen, per row, averaged over ``num_draws`` draws of ``(A, U)``.

    The rows are mapped with the fit's own :class:`~pyro_causal.preprocessing.Standardizer` (the
    training rows' mean, scale and log), and ``z`` is summed out exactly
    (``assignment="optimal"``).

    Args:
        result: a fit.
        x: ``(m, d)`` held-out rows, in the original units.
        regimes: ``(m,)`` ints, ``-1`` where unknown, or ``None`` (all latent).
        targets: ``(K, d)`` known targets, or ``None``.
        num_draws: Monte Carlo draws averaged.
        seed: seeds the draws (the global torch generator is left as it was).

    Returns:
        ``{"elbo", "log_likelihood"}``: the whole bound over the ``m`` rows (global KL terms
        included) divided by ``m``, and its local part alone (``E_q[log p(x_i | ...)]`` with
        ``z`` summed out, a bound on the held-out predictive log-likelihood) divided by ``m``.
    """
    param = next(result.model.parameters())
    as_tensor = lambda a, dtype: None if a is None else torch.as_tensor(np.asarray(a), dtype=dtype, device=param.device)  # noqa: E731
    xt = as_tensor(result.standardizer(x), param.dtype)
    rt, tt = as_tensor(regimes, torch.long), as_tensor(targets, param.dtype)
    elbo, local = mean_elbo(result.model, xt, rt, tt, num_draws=num_draws, seed=seed)
    return {"elbo": elbo, "log_likelihood": local}


@dataclass
class SelectionResult:
    """What :func:`select_hyperparameters` returns.

    Attributes:
        scores: one dict per grid point: its settings, ``elbo`` and ``log_likelihood`` (held-out,
            per row, see :func:`heldout_scores`), ``score`` (the one chosen by), ``num_edges``
            and ``stop_reason`` of the fit on the training rows.
        best: the chosen settings (the grid point with the highest ``score``).
        criterion: ``"elbo"`` or ``"log_likelihood"``.
        train_rows, validation_rows: the split (indices into the rows given).
        result: the fit on every row with ``best`` (``None`` when ``refit=False``).
    """

    scores: List[Dict[str, Any]]
    best: Dict[str, Any]
    criterion: str
    train_rows: np.ndarray = field(repr=False)
    validation_rows: np.ndarray = field(repr=False)
    result: Optional[FitResult] = field(default=None, repr=False)

    @property
    def best_score(self) -> float:
        return max(row["score"] for row in self.scores)

    def summary(self) -> dict:
        """JSON-serialisable record (the CLI writes it under ``"selection"`` in ``summary.json``)."""
        return {
            "criterion": self.criterion,
            "chosen": _plain(self.best),
            "train_rows": int(len(self.train_rows)),
            "validation_rows": int(len(self.validation_rows)),
            "grid": [_plain(row) for row in self.scores],
        }


def _plain(row: Mapping[str, Any]) -> Dict[str, Any]:
    """``row`` with NumPy scalars turned into Python ones (for JSON)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}


def _grid_points(grid: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    if not grid or any(len(values) == 0 for values in grid.values()):
        raise ValueError(f"the grid needs at least one value per setting, got {dict(grid)}")
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _take(value, rows: np.ndarray):
    return None if value is None else np.asarray(value)[rows]


def _fit_point(x, point: Mapping[str, Any], fit_kwargs: Mapping[str, Any], **more) -> FitResult:
    """``fit`` at one grid point: its :class:`~pyro_causal.config.Priors` fields go into ``priors``."""
    prior_fields = {f.name for f in fields(Priors)}
    kwargs = {**fit_kwargs, **{k: v for k, v in point.items() if k not in prior_fields}, **more}
    chosen = {k: v for k, v in point.items() if k in prior_fields}
    if chosen:
        kwargs["priors"] = replace(fit_kwargs.get("priors") or Priors(), **chosen)
    return fit(x, **kwargs)


def select_hyperparameters(
    x,
    grid: Optional[Mapping[str, Sequence[Any]]] = None,
    *,
    validation_fraction: float = 0.2,
    seed: int = 0,
    criterion: str = "elbo",
    num_draws: int = 8,
    refit: bool = True,
    **fit_kwargs,
) -> SelectionResult:
    """Choose ``fit`` settings by the held-out ELBO and refit on every row.

    Args:
        x: ``(n, d)`` data in the original units (as for :func:`~pyro_causal.api.fit`).
        grid: ``{fit keyword or Priors field: values}``; every combination is tried (default
            :data:`DEFAULT_GRID`, ``edge_logit`` in ``{-6, -2, 0}`` x ``target_logit`` in
            ``{-4, -2}``).
        validation_fraction: share of the shuffled rows held out (the paper's 20%).
        seed: seeds the split, every fit and the held-out draws.
        criterion: ``"elbo"`` (the bound per held-out row, global KL terms included) or
            ``"log_likelihood"`` (its local part only); see :func:`heldout_scores`.
        num_draws: draws of ``(A, U)`` averaged per score.
        refit: refit the chosen setting on all ``n`` rows.
        **fit_kwargs: any other :func:`~pyro_causal.api.fit` option, shared by every fit;
            ``regimes`` is split with the rows.

    Returns:
        :class:`SelectionResult`.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {CRITERIA}")
    points = _grid_points(DEFAULT_GRID if grid is None else grid)
    clash = sorted(set(points[0]) & (set(fit_kwargs) | {"seed"}))
    if clash:
        raise ValueError(f"{clash} are searched by the grid; do not pass them to select_hyperparameters too")
    x = np.asarray(x, dtype=float)
    train, validation = split_rows(len(x), validation_fraction, seed)
    regimes, targets = fit_kwargs.pop("regimes", None), fit_kwargs.get("targets")
    scores = []
    for point in points:
        result = _fit_point(x[train], point, fit_kwargs, regimes=_take(regimes, train), seed=seed)
        held = heldout_scores(result, x[validation], regimes=_take(regimes, validation),
                              targets=targets, num_draws=num_draws, seed=seed)
        scores.append({**point, **held, "score": held[criterion],
                       "num_edges": int(result.adjacency.sum()), "stop_reason": result.stop_reason})
        logger.info("selection %s: held-out %s per row %.4f", point, criterion, held[criterion])
    best = dict(points[int(np.argmax([row["score"] for row in scores]))])
    final = _fit_point(x, best, fit_kwargs, regimes=regimes, seed=seed) if refit else None
    return SelectionResult(scores=scores, best=best, criterion=criterion, train_rows=train,
                           validation_rows=validation, result=final)


__all__ = ["DEFAULT_GRID", "SelectionResult", "heldout_scores", "select_hyperparameters", "split_rows"]

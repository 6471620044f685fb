"""Graph, clustering and target-recovery metrics for the paper's section 4 (Tables 1 and 2).

Adjacency matrices are ``(d, d)`` arrays (bool, int or float holding only 0 and 1) with
``(i, j) = 1`` iff the edge ``i -> j``; self-loops are refused.  Write ``T`` for the true edges
and ``E`` for the estimated ones.  Edge classification follows DCDI's ``edge_errors`` (the
convention of the paper's Table 2); the names ``shd``, ``tpr``, ``fdr``, ``f1`` match gCastle:

* ``tp``: estimated edges that are true, ``|E & T|``;
* ``reversed``: estimated edges ``j -> i`` that are not true while ``i -> j`` is true and not
  estimated (for an acyclic truth: the true edge was found with the wrong direction);
* ``fp``: every other estimated edge, ``|E - T| - reversed``;
* ``fn``: true edges neither estimated nor estimated reversed, ``|T - E| - reversed``.

So ``tp + fp + reversed = |E|`` and ``tp + fn + reversed = |T|``.  An estimated 2-cycle
``i <-> j`` over a true ``i -> j`` counts one tp and one fp (not a reversal).

Two F1 scores: :func:`f1` is the harmonic mean of directed precision and recall (a reversed
edge is a miss and a false discovery); :func:`f1_excluding_reversed` is
``2 tp / (2 tp + fp + fn)``, which leaves reversed edges out of both counts.  The second is
what the paper's Table 2 (and DCDI's, whose baselines it copies) prints: its rows satisfy it
to two decimals (CAM's 0.51 excepted: its counts give 0.44), not the first.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike


def _adjacency(matrix: ArrayLike, name: str) -> np.ndarray:
    """Validated ``(d, d)`` bool copy of a 0/1 adjacency matrix; ``ValueError`` naming the flaw."""
    a = np.asarray(matrix)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) adjacency matrix, got shape {a.shape}")
    if a.dtype != bool and not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric or boolean, got dtype {a.dtype}")
    if not np.isin(a, (0, 1)).all():
        bad = np.unique(a[~np.isin(a, (0, 1))])[:5]
        raise ValueError(f"{name} must hold only 0 and 1, got values such as {bad.tolist()}")
    a = a.astype(bool)
    if a.diagonal().any():
        loops = np.flatnonzero(a.diagonal()).tolist()
        raise ValueError(f"{name} has self-loops on variables {loops}")
    return a


def _pair(true: ArrayLike, est: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    t, e = _adjacency(true, "true"), _adjacency(est, "est")
    if t.shape != e.shape:
        raise ValueError(f"true and est differ in shape: {t.shape} vs {e.shape}")
    return t, e


def _ratio(num: float, den: float) -> float:
    """``num / den``, or 0.0 when ``den == 0``."""
    return float(num) / den if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def edge_counts(true: ArrayLike, est: ArrayLike) -> Dict[str, int]:
    """Count ``tp``, ``fp``, ``fn`` and ``reversed`` edges (convention in the module docstring).

    Args:
        true: ``(d, d)`` true adjacency.
        est: ``(d, d)`` estimated adjacency.

    Returns:
        ``{"tp", "fp", "fn", "reversed"}`` as ints.

    Example:
        >>> edge_counts([[0, 1], [0, 0]], [[0, 0], [1, 0]])
        {'tp': 0, 'fp': 0, 'fn': 0, 'reversed': 1}
    """
    t, e = _pair(true, est)
    extra, missing = e & ~t, t & ~e
    rev = int((extra & missing.T).sum())
    return {"tp": int((e & t).sum()), "fp": int(extra.sum()) - rev,
            "fn": int(missing.sum()) - rev, "reversed": rev}


def shd(true: ArrayLike, est: ArrayLike) -> int:
    """Structural Hamming distance: node pairs ``{i, j}`` whose edges differ (a reversal is 1).

    Equals CDT's ``SHD(double_for_anticausal=False)``, and ``fp + fn + reversed`` when
    neither graph has a 2-cycle.

    Args:
        true: ``(d, d)`` true adjacency.
        est: ``(d, d)`` estimated adjacency.
    """
    t, e = _pair(true, est)
    diff = t != e
    return int(np.triu(diff | diff.T, 1).sum())


def hamming_distance(true: ArrayLike, est: ArrayLike) -> int:
    """Number of differing adjacency entries (a reversal counts 2), as in the paper's Table 1.

    Args:
        true: ``(d, d)`` true adjacency.
        est: ``(d, d)`` estimated adjacency.
    """
    t, e = _pair(true, est)
    return int((t != e).sum())


def _rates(true: ArrayLike, est: ArrayLike) -> Dict[str, float]:
    """Precision, recall, F1 and FDR from :func:`edge_counts`."""
    c = edge_counts(true, est)
    num_est, num_true = c["tp"] + c["fp"] + c["reversed"], c["tp"] + c["fn"] + c["reversed"]
    p, r = _ratio(c["tp"], num_est), _ratio(c["tp"], num_true)
    return {"precision": p, "recall": r, "f1": _f1(p, r),
            "fdr": _ratio(c["fp"] + c["reversed"], num_est)}


def precision(true: ArrayLike, est: ArrayLike) -> float:
    """Directed-edge precision ``tp / (tp + fp + reversed) = tp / |E|``; 0.0 for an empty ``E``."""
    return _rates(true, est)["precision"]


def recall(true: ArrayLike, est: ArrayLike) -> float:
    """Directed-edge recall ``tp / (tp + fn + reversed) = tp / |T|``; 0.0 for an empty truth."""
    return _rates(true, est)["recall"]


def f1(true: ArrayLike, est: ArrayLike) -> float:
    """Harmonic mean of :func:`precision` and :func:`recall`; 0.0 when both are 0."""
    return _rates(true, est)["f1"]


def f1_excluding_reversed(true: ArrayLike, est: ArrayLike) -> float:
    """``2 tp / (2 tp + fp + fn)``: F1 with reversed edges in neither count, the paper's Table 2
    convention (module docstring); 0.0 when ``tp = fp = fn = 0``."""
    c = edge_counts(true, est)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])


def tpr(true: ArrayLike, est: ArrayLike) -> float:
    """True-positive rate, gCastle's name for :func:`recall`."""
    return recall(true, est)


def fdr(true: ArrayLike, est: ArrayLike) -> float:
    """False-discovery rate ``(fp + reversed) / |E|``; 0.0 for an empty ``E`` (as gCastle).

    Equals ``1 - precision`` whenever something is estimated.
    """
    return _rates(true, est)["fdr"]


def _labels(labels: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {a.shape}")
    return np.unique(a, return_inverse=True)[1].reshape(-1)


def _pairs(counts: np.ndarray) -> float:
    """``sum C(n, 2)`` over ``counts``."""
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def adjusted_rand_index(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index of two partitions (Hubert and Arabie, 1985), equal to scikit-learn's.

    ``ARI = (sum_ij C(n_ij, 2) - E) / ((sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2 - E)`` with the
    contingency table ``n_ij``, its margins ``a``, ``b`` and ``E = sum_i C(a_i, 2) sum_j C(b_j, 2)
    / C(n, 2)``.  1.0 for the same partition under any relabelling, about 0 for independent
    ones; when the denominator vanishes (both one cluster, or both all singletons) it is 1.0.

    Args:
        labels_true: ``(n,)`` labels of any hashable, sortable kind.
        labels_pred: ``(n,)`` labels.
    """
    a, b = _labels(labels_true, "labels_true"), _labels(labels_pred, "labels_pred")
    if a.shape != b.shape:
        raise ValueError(f"labels_true and labels_pred differ in length: {a.size} vs {b.size}")
    table = np.zeros((a.max(initial=-1) + 1, b.max(initial=-1) + 1), np.int64)
    np.add.at(table, (a, b), 1)
    index, rows, cols = _pairs(table), _pairs(table.sum(1)), _pairs(table.sum(0))
    expected = _ratio(rows * cols, a.size * (a.size - 1) / 2)
    denominator = (rows + cols) / 2 - expected
    return (index - expected) / denominator if denominator else 1.0


def match_components(assignments: ArrayLike, regimes: ArrayLike,
                     num_regimes: Optional[int] = None) -> np.ndarray:
    """Map each regime to the component most of its rows are assigned to (ties: lowest index).

    Args:
        assignments: ``(n,)`` int component of each row, in ``0..K-1``.
        regimes: ``(n,)`` int true regime of each row, in ``0..R-1``.
        num_regimes: ``R``; defaults to ``max(regimes) + 1``.  Every regime needs a row.

    Returns:
        ``(R,)`` int component index per regime.
    """
    z, r = (np.asarray(v) for v in (assignments, regimes))
    integer = all(np.issubdtype(v.dtype, np.integer) for v in (z, r))
    if z.ndim != 1 or z.shape != r.shape or not integer:
        raise ValueError(f"assignments and regimes must be 1-D int arrays of one length, got "
                         f"{z.dtype}{z.shape} and {r.dtype}{r.shape}")
    if z.size == 0 or min(z.min(), r.min()) < 0:
        raise ValueError("assignments and regimes must be non-empty and non-negative")
    num_regimes = int(r.max()) + 1 if num_regimes is None else num_regimes
    table = np.zeros((num_regimes, int(z.max()) + 1), np.int64)
    np.add.at(table, (r, z), 1)
    empty = np.flatnonzero(table.sum(1) == 0)
    if empty.size:
        raise ValueError(f"regimes {empty.tolist()} have no rows to match")
    return table.argmax(1)


def target_recovery(true_targets: ArrayLike, target_probs: ArrayLike, assignments: ArrayLike,
                    regimes: ArrayLike, *, threshold: float = 0.5) -> Dict[str, float]:
    """Precision, recall and F1 of intervention targets, pooled over regimes.

    Regime ``r`` is matched to component ``k_r`` (:func:`match_components`); variable ``j`` is
    predicted a target of ``r`` when ``target_probs[k_r, j] > threshold``.  The counts are
    summed over all ``(r, j)`` (micro-averaged), so the observational regime contributes false
    positives if its component claims targets.

    Args:
        true_targets: ``(R, d)`` 0/1 true targets per regime.
        target_probs: ``(K, d)`` learned target probabilities per component.
        assignments: ``(n,)`` component of each row, in ``0..K-1``.
        regimes: ``(n,)`` true regime of each row, in ``0..R-1``.
        threshold: probability above which a variable counts as a target.

    Returns:
        ``{"target_precision", "target_recall", "target_f1"}``.
    """
    truth, probs = np.asarray(true_targets), np.asarray(target_probs, dtype=np.float64)
    if truth.ndim != 2 or probs.ndim != 2 or truth.shape[1] != probs.shape[1]:
        raise ValueError(f"true_targets (R, d) and target_probs (K, d) must share d, got "
                         f"{truth.shape} and {probs.shape}")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("true_targets must hold only 0 and 1")
    match = match_components(assignments, regimes, truth.shape[0])
    if match.max() >= probs.shape[0]:
        raise ValueError(f"assignments reach component {match.max()} but target_probs has "
                         f"{probs.shape[0]} rows")
    predicted, truth = probs[match] > threshold, truth.astype(bool)
    hits = int((predicted & truth).sum())
    p, r = _ratio(hits, predicted.sum()), _ratio(hits, truth.sum())
    return {"target_precision": p, "target_recall": r, "target_f1": _f1(p, r)}


def evaluate(true: ArrayLike, est: ArrayLike, regimes: Optional[ArrayLike] = None,
             assignments: Optional[ArrayLike] = None) -> Dict[str, float]:
    """All graph metrics, plus the ARI of ``assignments`` against ``regimes`` when both are given.

    Args:
        true: ``(d, d)`` true adjacency.
        est: ``(d, d)`` estimated adjacency.
        regimes: ``(n,)`` true regime labels (optional).
        assignments: ``(n,)`` learned component labels (optional, with ``regimes``).

    Returns:
        ``shd``, ``hamming``, ``tp``, ``fp``, ``fn``, ``reversed``, ``precision``, ``recall``,
        ``f1``, ``f1_excluding_reversed``, ``tpr``, ``fdr`` and, with labels, ``ari``.
    """
    if (regimes is None) != (assignments is None):
        raise ValueError("pass both regimes and assignments for the ARI, or neither")
    out: Dict[str, float] = {"shd": shd(true, est), "hamming": hamming_distance(true, est)}
    out.update(edge_counts(true, est))
    rates = _rates(true, est)
    out.update(precision=rates["precision"], recall=rates["recall"], f1=rates["f1"],
               f1_excluding_reversed=f1_excluding_reversed(true, est), tpr=rates["recall"], fdr=rates["fdr"])
    if regimes is not None:
        out["ari"] = adjusted_rand_index(regimes, assignments)
    return out


def format_metrics(metrics: Mapping[str, float]) -> str:
    """One ``name  value`` line per metric, names left- and values right-aligned.

    Integers print as integers, other numbers with 4 decimals.
    """
    if not metrics:
        return ""
    values = {k: str(v) if isinstance(v, (int, np.integer)) else f"{float(v):.4f}"
              for k, v in metrics.items()}
    name_width, value_width = max(map(len, values)), max(map(len, values.values()))
    return "\n".join(f"{k:<{name_width}}  {v:>{value_width}}" for k, v in values.items())

"""Real data sets shipped with the package.

:func:`sachs` loads the flow-cytometry data of Sachs et al. (2005), the real-world benchmark
of the paper's section 4 (its Table 2).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, List

import numpy as np

from .io import DataError, read_csv_table

if TYPE_CHECKING:
    from importlib.abc import Traversable

SACHS_BLOCK_SIZES = (853, 902, 911, 723, 810, 799, 848, 913, 707)
"""Rows of each experimental condition, in file order (they sum to 7466)."""

SACHS_CONDITIONS = (
    "CD3/CD28", "CD3/CD28 + ICAM-2", "CD3/CD28 + AKT inhibitor",
    "CD3/CD28 + G0076 (PKC inhibitor)", "CD3/CD28 + Psitectorigenin (PIP2 inhibitor)",
    "CD3/CD28 + U0126 (MEK inhibitor)", "CD3/CD28 + LY294002 (PI3K/AKT inhibitor)",
    "PMA (PKC activator)", "beta2CAMP (PKA activator)",
)
"""Reagents added to the cells in each condition; condition 0 is the usual baseline."""

SACHS_NOMINAL_TARGETS = (
    (), (), ("pakts473",), ("PKC",), ("PIP2",), ("pmek",), ("PIP3",), ("PKC",), ("PKA",),
)
"""The measured variable each condition's reagent acts on, per Sachs et al. (2005), Figure 1.

CD3/CD28 and ICAM-2 stimulate the whole pathway (no target); LY294002 inhibits PI3K, which is
not measured, so its target is PI3K's product PIP3, as in IGSP's and GIES's use of these data.
The reagents' actual effects are broader (e.g. U0126 raises, not lowers, pmek): these are the
targets a "known" variant assumes, not ground truth."""


@dataclass
class SachsData:
    """The Sachs flow-cytometry data and its evaluation labels.

    Attributes:
        x: ``(7466, 11)`` float64 measurements (natural log with ``log_transform``).
        regimes: ``(7466,)`` int condition of each row, ``0..8``.
        names: the 11 phosphoproteins / phospholipids, in column order.
        adjacency: ``(11, 11)`` int 0/1 consensus network, ``(i, j) = 1`` iff ``i -> j``;
            18 edges.
        conditions: the 9 condition names, indexed by regime.
        targets: ``(9, 11)`` int 0/1 nominal reagent targets (:data:`SACHS_NOMINAL_TARGETS`),
            row = condition, for the regimes-and-targets-known variant.

    Example:
        >>> data = sachs(log_transform=True)
        >>> data.x.shape, int(data.adjacency.sum()), data.conditions[0]
        ((7466, 11), 18, 'CD3/CD28')
    """

    x: np.ndarray
    regimes: np.ndarray
    names: List[str]
    adjacency: np.ndarray
    conditions: List[str]
    targets: np.ndarray


def _data_file(name: str) -> "Traversable":
    """The packaged file ``pyro_causal/data/<name>`` (a ``Traversable``)."""
    return resources.files("pyro_causal").joinpath("data").joinpath(name)


def _consensus_adjacency(names: List[str]) -> np.ndarray:
    adjacency = np.zeros((len(names), len(names)), dtype=np.int64)
    text = _data_file("sachs_consensus_edges.csv").read_text(encoding="utf-8")
    for line, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        if row["Cause"] not in names or row["Effect"] not in names:
            raise DataError(f"sachs_consensus_edges.csv, line {line}: unknown variable in {row}")
        adjacency[names.index(row["Cause"]), names.index(row["Effect"])] = 1
    return adjacency


def sachs(log_transform: bool = False) -> SachsData:
    """Load the Sachs et al. (2005) flow-cytometry data from the package's own copy.

    Provenance: Sachs, Perez, Pe'er, Lauffenburger and Nolan, "Causal protein-signaling
    networks derived from multiparameter single-cell data", Science 308:523-529 (2005).  The
    table (7466 cells x 11 variables, raw measurements, all >= 1) and the 18-edge consensus
    network are the copies shipped by the Causal Discovery Toolbox (``cdt`` 0.6.0, MIT
    licence: ``cyto_full_data.csv``, ``cyto_full_target.csv``), the data the paper uses.
    They live in ``pyro_causal/data/`` as ``sachs_7466.csv`` and
    ``sachs_consensus_edges.csv``; ``sachs_README.md`` there documents them.

    The file stacks 9 experimental conditions in blocks of :data:`SACHS_BLOCK_SIZES` rows
    (boundaries checked against sharp changes of the column means); the first 7 blocks are
    the 5846-sample subset DCDI uses.  The regimes and the consensus graph are labels for
    evaluation (cluster and graph recovery), not ground truth about what each reagent targets.

    Args:
        log_transform: return ``log(x)`` (the values are all positive).

    Returns:
        :class:`SachsData`.
    """
    source = _data_file("sachs_7466.csv")
    with resources.as_file(source) as path:
        table = read_csv_table(path, log_transform=log_transform)
    if len(table.x) != sum(SACHS_BLOCK_SIZES):
        raise DataError(f"{source}: {len(table.x)} rows, expected {sum(SACHS_BLOCK_SIZES)}")
    regimes = np.repeat(np.arange(len(SACHS_BLOCK_SIZES)), SACHS_BLOCK_SIZES)
    targets = np.array([[int(name in hit) for name in table.names] for hit in SACHS_NOMINAL_TARGETS])
    return SachsData(x=table.x, regimes=regimes, names=table.names,
                     adjacency=_consensus_adjacency(table.names),
                     conditions=list(SACHS_CONDITIONS), targets=targets)

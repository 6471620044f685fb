"""Reading data tables (CSV, DCDI's layout) and writing results safely.

Every problem with an input raises :class:`DataError` saying what is wrong and where: the
file, the line (1-based, the header being line 1, as an editor counts) and the column name.
Outputs are written atomically (a temporary file, then ``os.replace``): never half-written.

Conventions: regime labels are integers, 0 being observational and -1 (or a blank cell)
unknown; a targets matrix has one 0/1 row per regime, row 0 all zero; an adjacency matrix
has ``(i, j) = 1`` iff ``i -> j``.
"""
from __future__ import annotations

import csv
import io as _stdio
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

MIN_ROWS = 10
"""Fewest data rows :func:`read_csv_table` accepts."""

FIT_OUTPUTS = ("adjacency.csv", "edge_probs.csv", "assignments.csv", "targets.csv", "summary.json")
"""The files ``pyro-causal fit`` writes into ``--out`` (``summary.json``'s keys: ``docs/outputs.md``)."""
PLOT_OUTPUTS = ("edge_probs.png", "graph.png", "training.png", "components.png")
"""The figures ``--plots`` adds (:data:`pyro_causal.plots.PLOT_FILES`)."""
CHECKPOINT_FILE = "checkpoint.pt"
"""The training state ``--checkpoint-every`` saves into ``--out``."""
OUTPUT_NAMES = FIT_OUTPUTS + PLOT_OUTPUTS + (CHECKPOINT_FILE,)
"""Every file a fit writes into its folder: their presence makes :func:`prepare_output_dir` refuse to reuse it."""


class DataError(ValueError):
    """An input file or array cannot be used; the message names the problem and its place."""


class OutputError(DataError):
    """An output cannot be written (a ``DataError`` so that one ``except`` serves both)."""


class DataWarning(UserWarning):
    """Data that can be fitted but probably should not be as they are (e.g. duplicate columns)."""


@dataclass
class Table:
    """A numeric data table.

    Attributes:
        x: ``(n, d)`` float64 values, finite, no constant column.
        names: the ``d`` column names.
        regimes: ``(n,)`` int regime labels (``-1`` = unknown), or ``None`` when not read.
    """

    x: np.ndarray
    names: List[str]
    regimes: Optional[np.ndarray]


@dataclass
class DcdiData(Table):
    """A DCDI data set (see :func:`load_dcdi`): a :class:`Table` plus its ground truth.

    Attributes:
        targets: ``(R, d)`` 0/1 intervention targets, row ``k`` for regime ``k``; row 0 is zero.
        adjacency: ``(d, d)`` 0/1 true graph (``DAG<i>.npy``), or ``None`` when absent.
    """

    targets: np.ndarray
    adjacency: Optional[np.ndarray]


# ----------------------------------------------------------------------------- reading CSV


def _where(path: PathLike, line: Optional[int] = None, column: Optional[str] = None) -> str:
    place = str(path)
    if line is not None:
        place += f", line {line}"
    if column is not None:
        place += f", column {column!r}"
    return place


def _read_text(path: PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not a file")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{p}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise DataError(f"{p}: cannot be read ({err.strerror})") from err


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv_rows(path: PathLike) -> Tuple[List[str], List[List[str]], List[int]]:
    """Header, data rows and each row's line number; checks the shape of the file only."""
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    reader = csv.reader(_stdio.StringIO(text))
    header = [cell.strip() for cell in next(reader)]
    if all(_is_number(cell) for cell in header if cell):
        raise DataError(f"{_where(path, 1)}: expected a header row of column names, found data "
                        f"({', '.join(header[:4])}{', ...' if len(header) > 4 else ''})")
    for j, name in enumerate(header):
        if not name:
            raise DataError(f"{_where(path, 1)}: column {j + 1} has no name")
        if name in header[:j]:
            raise DataError(f"{_where(path, 1)}: duplicate column name {name!r} "
                            f"(columns {header.index(name) + 1} and {j + 1})")
    rows, lines, blank = [], [], None
    for row in reader:
        if not row:  # a blank line; only allowed at the end of the file
            blank = blank or reader.line_num
            continue
        if blank is not None:
            raise DataError(f"{_where(path, blank)}: blank line inside the table")
        if len(row) != len(header):
            raise DataError(f"{_where(path, reader.line_num)}: {len(row)} cells, "
                            f"but the header has {len(header)} columns")
        rows.append(row)
        lines.append(reader.line_num)
    return header, rows, lines


def _parse_numbers(path: PathLike, rows: List[List[str]], lines: List[int],
                   header: List[str], columns: List[int]) -> np.ndarray:
    """``(n, len(columns))`` float64 values of the chosen columns; names the first bad cell."""
    try:
        return np.array([[row[c] for c in columns] for row in rows], dtype=np.float64)
    except ValueError:
        pass
    for row, line in zip(rows, lines):
        for c in columns:
            cell = row[c]
            if not cell.strip():
                raise DataError(f"{_where(path, line, header[c])}: empty cell (missing value)")
            if not _is_number(cell):
                raise DataError(f"{_where(path, line, header[c])}: {cell!r} is not a number")
    raise DataError(f"{path}: cannot be read as numbers")  # pragma: no cover


def _check_size(n: int, names: Sequence[str], source: PathLike, min_rows: int = MIN_ROWS) -> None:
    if len(names) < 2:
        raise DataError(f"{source}: {len(names)} variable column(s) {list(names)}; "
                        "at least 2 are needed")
    if n < min_rows:
        raise DataError(f"{source}: only {n} data rows; at least {min_rows} are needed")


def check_matrix(x: np.ndarray, names: Sequence[str], source: PathLike,
                 row_label: Callable[[int], str], min_rows: int = MIN_ROWS) -> None:
    """Raise :class:`DataError` unless ``x`` (``(n, d)``) is usable as data.

    Usable means: at least 2 variables and ``min_rows`` rows, every value finite, no
    constant column.  ``row_label(i)`` says where row ``i`` lives (e.g. ``"line 5"``).
    """
    _check_size(x.shape[0], names, source, min_rows)
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        i, j = bad[0]
        raise DataError(f"{source}, {row_label(i)}, column {names[j]!r}: {float(x[i, j])!r} is "
                        f"not a finite number ({len(bad)} non-finite value(s) in all)")
    with np.errstate(over="ignore"):
        constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
    if constant.size:
        j = constant[0]
        raise DataError(f"{source}, column {names[j]!r}: constant (every row is "
                        f"{float(x[0, j])!r}); it carries no information, drop it")


def _parse_labels(path: PathLike, cells: Sequence[str], lines: Sequence[int],
                  column: Optional[str] = None, unknown: bool = True) -> np.ndarray:
    """``(n,)`` int regime labels >= 0; with ``unknown``, a blank cell or -1 gives -1."""
    lowest = -1.0 if unknown else 0.0
    values = [float(c) if _is_number(c) else (-1.0 if unknown and not c.strip() else -2.0)
              for c in cells]
    for value, cell, line in zip(values, cells, lines):
        if not value.is_integer() or value < lowest:
            raise DataError(f"{_where(path, line, column)}: regime label {cell!r} is not an "
                            f"integer >= 0{' (or -1 / blank for unknown)' if unknown else ''}")
    return np.array(values, dtype=np.int64)


def read_csv_table(path: PathLike, regime_column: Optional[str] = None,
                   log_transform: bool = False) -> Table:
    """Read and validate a numeric CSV table.

    Args:
        path: CSV file with a header row of column names.
        regime_column: name of a column of integer regime labels (blank or ``-1`` = unknown),
            removed from ``x``; ``None`` when the file has none.
        log_transform: replace every value ``v`` by ``log(v)``.  The rule is ``log(v)``, not
            ``log1p``; every value must then be ``> 0``, otherwise :class:`DataError` names
            the first offending cell.

    Returns:
        A :class:`Table` with ``x`` of shape ``(n, d)``.

    Raises:
        DataError: missing or empty file, no header, duplicate names, ragged rows,
            non-numeric, empty or non-finite cells, a constant column, fewer than 2 variables
            or fewer than :data:`MIN_ROWS` rows, a bad regime column, log of a value ``<= 0``.
    """
    header, rows, lines = _read_csv_rows(path)
    regimes = None
    columns = list(range(len(header)))
    if regime_column is not None:
        if regime_column not in header:
            raise DataError(f"{_where(path, 1)}: no regime column named {regime_column!r}; "
                            f"columns are {', '.join(header)}")
        r = header.index(regime_column)
        columns.remove(r)
        regimes = _parse_labels(path, [row[r] for row in rows], lines, regime_column)
    names = [header[c] for c in columns]
    _check_size(len(rows), names, path)
    x = _parse_numbers(path, rows, lines, header, columns)
    check_matrix(x, names, path, lambda i: f"line {lines[i]}")
    bad = np.argwhere(x <= 0) if log_transform else ()
    if len(bad):
        i, j = bad[0]
        raise DataError(f"{_where(path, lines[i], names[j])}: log_transform needs values > 0, "
                        f"found {float(x[i, j])!r} ({np.sum(x[:, j] <= 0)} value(s) <= 0 here)")
    x = np.log(x) if log_transform else x
    return Table(x=x, names=names, regimes=regimes)


def read_targets(path: PathLike, names: Sequence[str],
                 num_regimes: Optional[int] = None) -> np.ndarray:
    """Read a targets CSV: header of variable names (any order), one 0/1 row per regime.

    Args:
        path: the CSV file.
        names: the data's ``d`` variable names; the result's columns follow this order.
        num_regimes: when given, the number of rows the file must have.

    Returns:
        ``(R, d)`` int64 0/1 matrix; row 0 (the observational regime) is all zero.
    """
    header, rows, lines = _read_csv_rows(path)
    unknown = [h for h in header if h not in names]
    if unknown:
        raise DataError(f"{_where(path, 1)}: column(s) {', '.join(map(repr, unknown))} are not "
                        f"variables of the data ({', '.join(names)})")
    missing = [name for name in names if name not in header]
    if missing:
        raise DataError(f"{_where(path, 1)}: no column for variable(s) "
                        f"{', '.join(map(repr, missing))}")
    if not rows:
        raise DataError(f"{path}: no regime rows below the header")
    values = _parse_numbers(path, rows, lines, header, [header.index(n) for n in names])
    bad = np.argwhere((values != 0) & (values != 1))
    if bad.size:
        i, j = bad[0]
        raise DataError(f"{_where(path, lines[i], names[j])}: {rows[i][header.index(names[j])]!r} "
                        "is not 0 or 1")
    targets = values.astype(np.int64)
    if targets[0].any():
        marked = [names[j] for j in np.flatnonzero(targets[0])]
        raise DataError(f"{_where(path, lines[0])}: the first row is regime 0, the observational "
                        f"one, and must be all zero; it marks {', '.join(marked)}")
    if num_regimes is not None and len(targets) != num_regimes:
        raise DataError(f"{path}: {len(targets)} regime rows, but the data has {num_regimes} "
                        "regimes")
    return targets


# ----------------------------------------------------------------------------- DCDI layout


def _dcdi_files(path: Path, index: Optional[int]) -> Tuple[Path, int]:
    """The folder and the data set index ``i`` of ``data_interv<i>.npy``."""
    if path.is_file():
        match = re.fullmatch(r"data_interv(\d+)\.npy", path.name)
        if not match:
            raise DataError(f"{path}: expected a file named data_interv<i>.npy")
        return path.parent, int(match.group(1))
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    found = sorted(int(m.group(1)) for p in path.iterdir()
                   if (m := re.fullmatch(r"data_interv(\d+)\.npy", p.name)))
    if index is None and len(found) == 1:
        index = found[0]
    if index is None or index not in found:
        raise DataError(f"{path}: " + (f"no data_interv{index}.npy" if index is not None else
                        "pass index= to choose") + f"; data sets found: {found or 'none'}")
    return path, index


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from err
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: expected a 2-D numeric array, found {array.dtype} {array.shape}")
    return array.astype(np.float64)


def _read_lines(path: Path, n: int) -> List[str]:
    lines = _read_text(path).splitlines()
    if len(lines) != n:
        raise DataError(f"{path}: {len(lines)} lines, but the data has {n} rows")
    return lines


def _dcdi_target_sets(path: Path, n: int, d: int) -> List[Tuple[int, ...]]:
    """One sorted tuple of target indices per row; an empty line is observational."""
    sets = []
    for line_no, line in enumerate(_read_lines(path, n), start=1):
        cells = [c.strip() for c in line.split(",") if c.strip()]
        if not all(c.isdigit() and int(c) < d for c in cells):
            raise DataError(f"{_where(path, line_no)}: {line!r} is not a list of variable "
                            f"indices in 0..{d - 1}")
        sets.append(tuple(sorted({int(c) for c in cells})))
    return sets


def _dcdi_regimes(folder: Path, index: int, sets: List[Tuple[int, ...]],
                  d: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(n,)`` regimes numbered 0..R-1 and ``(R, d)`` targets; regime 0 is observational."""
    regime_file = folder / f"regime{index}.csv"
    if regime_file.exists():
        lines = _read_lines(regime_file, len(sets))
        labels = _parse_labels(regime_file, lines, range(1, len(lines) + 1), unknown=False)
        regimes = np.unique(labels, return_inverse=True)[1]
    else:  # number the distinct target sets, the empty (observational) one first
        distinct = sorted(set(sets), key=lambda s: (len(s), s))
        regimes = np.array([distinct.index(s) for s in sets])
        regime_file = folder / f"intervention{index}.csv"
    first_row: dict = {}
    for row, (regime, targets) in enumerate(zip(regimes, sets)):
        first = first_row.setdefault(regime, row)
        if sets[first] != targets:
            raise DataError(f"{regime_file}: lines {first + 1} and {row + 1} are in the same "
                            f"regime but target {list(sets[first])} and {list(targets)}")
    matrix = np.zeros((len(first_row), d), dtype=np.int64)
    for regime, row in first_row.items():
        matrix[regime, list(sets[row])] = 1
    if matrix[0].any():
        raise DataError(f"{regime_file}: the first regime targets {list(sets[first_row[0]])}, "
                        "but DCDI's (and our) convention is that regime 0 is observational")
    return regimes.astype(np.int64), matrix


def load_dcdi(path: PathLike, index: Optional[int] = None) -> DcdiData:
    """Import a data set in the layout of DCDI (Brouillard et al., 2020).

    The folder holds, for a data set index ``i``:

    * ``data_interv<i>.npy``: ``(n, d)`` samples (required);
    * ``intervention<i>.csv``: one line per sample listing its comma-separated target indices
      (0-based), an empty line for an observational sample (required);
    * ``regime<i>.csv``: one integer regime label per line (optional; without it, regimes are
      the distinct target sets).  Labels are renumbered ``0..R-1`` in sorted order, and
      regime 0 must be observational, as DCDI requires;
    * ``DAG<i>.npy``: ``(d, d)`` true adjacency, ``(i, j) = 1`` iff ``i -> j`` (optional).

    Args:
        path: the folder, or the ``data_interv<i>.npy`` file itself.
        index: ``i``; may be omitted when the folder holds a single data set.

    Returns:
        :class:`DcdiData` with names ``X0..X{d-1}``, regimes ``(n,)``, targets ``(R, d)``.
    """
    folder, index = _dcdi_files(Path(path), index)
    data_file = folder / f"data_interv{index}.npy"
    x = _load_npy(data_file)
    n, d = x.shape
    names = [f"X{j}" for j in range(d)]
    check_matrix(x, names, data_file, lambda i: f"row {i} (0-based)")
    sets = _dcdi_target_sets(folder / f"intervention{index}.csv", n, d)
    regimes, targets = _dcdi_regimes(folder, index, sets, d)
    adjacency = None
    dag_file = folder / f"DAG{index}.npy"
    if dag_file.exists():
        adjacency = _load_npy(dag_file)
        if adjacency.shape != (d, d) or not np.isin(adjacency, (0, 1)).all():
            raise DataError(f"{dag_file}: expected a ({d}, {d}) 0/1 matrix")
        adjacency = adjacency.astype(np.int64)
    return DcdiData(x=x, names=names, regimes=regimes, targets=targets, adjacency=adjacency)


# ----------------------------------------------------------------------------- writing


def check_output_dir(path: PathLike, overwrite: bool = False,
                     names: Iterable[str] = OUTPUT_NAMES) -> Path:
    """Check, creating nothing, that results can be written into the folder ``path``.

    ``~`` is expanded.  The folder may be missing (its nearest existing parent must then be a
    writable folder).

    Raises:
        FileExistsError: the folder already holds one of ``names`` and ``overwrite`` is false.
        OutputError: ``path`` is a file, one of ``names`` in it is a symbolic link or a
            folder, or the folder cannot be created or written.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    for name in names:
        target = folder / name
        if target.is_symlink():
            raise OutputError(f"{target}: is a symbolic link; remove it (results are never written through links)")
        if target.is_dir():
            raise OutputError(f"{target}: is a folder, where a result file goes")
    clash = sorted(name for name in names if (folder / name).exists())
    if clash and not overwrite:
        raise FileExistsError(f"{folder}: already holds results ({', '.join(clash)}); "
                              "choose another folder or overwrite them (--overwrite, overwrite=True)")
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: cannot write there ({parent} is not a writable folder)")
    return folder


def prepare_output_dir(path: PathLike, overwrite: bool = False,
                       names: Iterable[str] = OUTPUT_NAMES) -> Path:
    """:func:`check_output_dir`, then create the folder (and its parents) and check that it is writable.

    Raises:
        FileExistsError: the folder already holds one of ``names`` and ``overwrite`` is false.
        OutputError: ``path`` is a file, or the folder cannot be created or written.
    """
    folder = check_output_dir(path, overwrite, names)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"{folder}: cannot write there ({err.strerror or err})") from err
    return folder


def write_outputs(folder: PathLike, writers: "dict[str, Callable[[Path], object]]") -> "dict[str, Path]":
    """Write several files into ``folder``, all or none: the one way results reach the disk.

    Each ``writers[name](scratch)`` writes its file at a random scratch name in ``folder``
    (``.<stem>.<random>.partial<suffix>``, created exclusively, the suffix kept so that writers
    that read it still work); once every writer has succeeded, each scratch file is renamed
    onto ``folder / name`` with ``os.replace``.  The folder must exist.

    Raises:
        OutputError: a target is a symbolic link (even a dangling one) or a folder, or a file
            cannot be written; no target has then been changed and no scratch file remains.

    Returns:
        ``{name: path}`` of the files written.
    """
    folder = Path(folder).expanduser()
    targets = {name: folder / name for name in writers}
    for target in targets.values():
        if target.is_symlink():
            raise OutputError(f"{target}: is a symbolic link; refusing to write through it")
        if target.is_dir():
            raise OutputError(f"{target}: is a folder, not a file")
    scratch: dict = {}
    target = folder
    try:
        for name, write in writers.items():
            target = targets[name]
            handle, path = tempfile.mkstemp(dir=folder, prefix=f".{target.stem}.", suffix=f".partial{target.suffix}")
            os.close(handle)
            scratch[name] = Path(path)
            write(scratch[name])
        for name, path in scratch.items():
            target = targets[name]
            os.replace(path, target)
    except OSError as err:
        raise OutputError(f"{target}: cannot be written ({err.strerror or err})") from err
    finally:
        for path in scratch.values():
            path.unlink(missing_ok=True)
    return targets


def atomic_write(path: PathLike, write: "Callable[[Path], object]") -> Path:
    """Write one file through :func:`write_outputs`: ``write(scratch)``, then ``os.replace``."""
    path = Path(path).expanduser()
    return write_outputs(path.parent, {path.name: write})[path.name]


def remove_stale_outputs(folder: PathLike, names: Iterable[str], keep: Iterable[str]) -> List[str]:
    """Delete the files (or links) among ``names`` in ``folder`` that are not in ``keep``.

    Used with ``--overwrite``: results of an earlier fit that this one did not write (its PNGs,
    its checkpoint) do not stay beside the new ones.  Returns the names removed.
    """
    folder, keep = Path(folder), set(keep)
    removed = []
    for name in names:
        target = folder / name
        if name not in keep and (target.is_symlink() or target.is_file()):
            target.unlink()
            removed.append(name)
    return removed


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` all at once (:func:`atomic_write`).

    Raises:
        OutputError: the file cannot be written (its folder is read-only, it is a link...).
    """

    def write(scratch: Path) -> None:
        with open(scratch, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A header and rows as CSV text; floats keep their exact (shortest) repr."""
    buffer = _stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write a header and rows as CSV (:func:`csv_text`), atomically."""
    return atomic_write_text(path, csv_text(header, rows))


def write_matrix_csv(path: PathLike, matrix: np.ndarray, names: Sequence[str],
                     row_names: Optional[Sequence[str]] = None) -> Path:
    """Write a ``(r, c)`` matrix with a header row of ``names`` (``c`` of them).

    With ``row_names`` (``r`` of them) the first column holds them, under an empty header
    cell, as for a ``(d, d)`` adjacency matrix whose rows and columns are both variables.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise ValueError(f"matrix of shape {matrix.shape} does not match {len(names)} names")
    rows = matrix.tolist()
    if row_names is None:
        return write_csv(path, list(names), rows)
    if len(row_names) != len(rows):
        raise ValueError(f"{len(row_names)} row names for {len(rows)} rows")
    return write_csv(path, ["", *names], ([r, *row] for r, row in zip(row_names, rows)))

"""Tests of data reading, validation and safe writing."""
import numpy as np
import pytest

from pyro_causal.io import (MIN_ROWS, DataError, OutputError, atomic_write_text, load_dcdi,
                            prepare_output_dir, read_csv_table, read_targets, write_matrix_csv)
from pyro_causal.simulate import simulate, write_simulation


def _rows(n=12):
    return [[f"{1.5 + i}", f"{-2.25 * i}", f"{(i % 5) + 0.5}", str(i % 3)] for i in range(n)]


def _write(tmp_path, header="a,b,c,regime", rows=None, name="t.csv"):
    rows = _rows() if rows is None else rows
    path = tmp_path / name
    path.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    return path


def _set(i, j, value):
    def edit(rows):
        rows[i][j] = value
        return rows
    return edit


def test_reads_a_good_table(tmp_path):
    table = read_csv_table(_write(tmp_path), regime_column="regime")
    assert table.names == ["a", "b", "c"] and table.x.shape == (12, 3)
    assert table.x.dtype == np.float64 and table.x[1, 1] == -2.25
    assert table.regimes.tolist() == [i % 3 for i in range(12)]
    whole = read_csv_table(_write(tmp_path))
    assert whole.names == ["a", "b", "c", "regime"] and whole.regimes is None


def test_unknown_regimes_are_minus_one(tmp_path):
    rows = _rows()
    rows[2][3], rows[5][3] = "", "-1"
    table = read_csv_table(_write(tmp_path, rows=rows), regime_column="regime")
    assert table.regimes[2] == -1 and table.regimes[5] == -1 and table.regimes[1] == 1


@pytest.mark.parametrize("edit, message", [
    (_set(1, 1, "abc"), "line 3, column 'b': 'abc' is not a number"),
    (_set(4, 0, "nan"), "line 6, column 'a': nan is not a finite"),
    (_set(4, 2, "-inf"), "line 6, column 'c': -inf is not a finite"),
    (_set(2, 1, ""), "line 4, column 'b': empty cell"),
    (_set(3, 3, "1.5"), "line 5, column 'regime': regime label '1.5'"),
    (_set(3, 3, "one"), "line 5, column 'regime': regime label 'one'"),
    (_set(3, 3, "-2"), "line 5, column 'regime'"),
    (lambda rows: rows[:5] + [rows[5][:3]] + rows[6:], "line 7: 3 cells, but the header has 4"),
    (lambda rows: rows[:MIN_ROWS - 1], f"only {MIN_ROWS - 1} data rows; at least {MIN_ROWS}"),
    (lambda rows: [r[:1] + ["7"] + r[2:] for r in rows], "column 'b': constant"),
])
def test_bad_cells_are_located(tmp_path, edit, message):
    path = _write(tmp_path, rows=edit(_rows()))
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_csv_table(path, regime_column="regime")


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("\n  \n", "the file is empty"),
    ("1,2,3\n4,5,6\n", "line 1: expected a header row"),
    ("a,b,a\n1,2,3\n", "line 1: duplicate column name 'a' \\(columns 1 and 3\\)"),
    ("a,,c\n1,2,3\n", "line 1: column 2 has no name"),
    ("a,b\n1,2\n\n3,4\n", "line 3: blank line inside the table"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_csv_table(path)


def test_file_problems(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_csv_table(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_csv_table(tmp_path)
    with pytest.raises(DataError, match="no regime column named 'group'; columns are a, b, c"):
        read_csv_table(_write(tmp_path), regime_column="group")
    one = [[r[0]] for r in _rows()]
    with pytest.raises(DataError, match="at least 2 are needed"):
        read_csv_table(_write(tmp_path, header="a", rows=one))
    with pytest.raises(DataError, match="at least 2 are needed"):
        read_csv_table(_write(tmp_path, header="a,regime", rows=[[r[0], r[3]] for r in _rows()]),
                       regime_column="regime")


def test_log_transform(tmp_path):
    table = read_csv_table(_write(tmp_path), regime_column="regime", log_transform=False)
    positive = read_csv_table(_write(tmp_path, header="a,c,regime",
                                     rows=[[r[0], r[2], r[3]] for r in _rows()]),
                              regime_column="regime", log_transform=True)
    np.testing.assert_allclose(positive.x, np.log(table.x[:, [0, 2]]))
    with pytest.raises(DataError, match="line 2, column 'b': log_transform needs values > 0"):
        read_csv_table(_write(tmp_path), regime_column="regime", log_transform=True)


def test_quoted_names_and_windows_line_ends(tmp_path):
    path = tmp_path / "q.csv"
    lines = ['"p44/42","x, y"'] + [f"{i},{i * i}" for i in range(12)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    table = read_csv_table(path)
    assert table.names == ["p44/42", "x, y"] and table.x[3, 1] == 9


def test_read_targets(tmp_path):
    names = ["X0", "X1", "X2"]
    path = tmp_path / "targets.csv"
    path.write_text("X2,X0,X1\n0,0,0\n0,1,0\n1,0,1\n")
    np.testing.assert_array_equal(read_targets(path, names, num_regimes=3),
                                  [[0, 0, 0], [1, 0, 0], [0, 1, 1]])
    cases = [
        ("X2,X0,X9\n0,0,0\n", "column\\(s\\) 'X9' are not variables"),
        ("X2,X0\n0,0\n", "no column for variable\\(s\\) 'X1'"),
        ("X0,X1,X2\n0,0,0\n0,2,0\n", "line 3, column 'X1': '2' is not 0 or 1"),
        ("X0,X1,X2\n0,1,0\n", "line 2: the first row is regime 0, the observational one, .* X1"),
        ("X0,X1,X2\n", "no regime rows"),
    ]
    for content, message in cases:
        path.write_text(content)
        with pytest.raises(DataError, match=message):
            read_targets(path, names)
    path.write_text("X0,X1,X2\n0,0,0\n1,0,0\n")
    with pytest.raises(DataError, match="2 regime rows, but the data has 4 regimes"):
        read_targets(path, names, num_regimes=4)


def test_write_simulation_round_trip(tmp_path):
    data = simulate(num_variables=4, num_samples=60, seed=2)
    paths = write_simulation(data, tmp_path / "sim.csv", include_regimes=True)
    table = read_csv_table(paths["data"], regime_column="regime")
    np.testing.assert_array_equal(table.x, data.x)  # exact: floats keep their repr
    np.testing.assert_array_equal(table.regimes, data.regimes)
    assert table.names == data.names
    np.testing.assert_array_equal(read_targets(paths["targets"], data.names), data.targets)
    adjacency = np.loadtxt(paths["adjacency"], delimiter=",", skiprows=1, usecols=range(1, 5))
    np.testing.assert_array_equal(adjacency, data.adjacency)
    regimes = np.loadtxt(paths["regimes"], delimiter=",", skiprows=1, dtype=int)
    np.testing.assert_array_equal(regimes, data.regimes)
    assert paths["regimes"].read_text().startswith("regime\n0\n")


def _dcdi_folder(tmp_path, regime_file=True, n_per=10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3 * n_per, 3))
    np.save(tmp_path / "data_interv1.npy", x)
    lines = [""] * n_per + ["0"] * n_per + ["2,1"] * n_per
    (tmp_path / "intervention1.csv").write_text("\n".join(lines) + "\n")
    if regime_file:
        labels = [0] * n_per + [3] * n_per + [5] * n_per  # renumbered 0, 1, 2
        (tmp_path / "regime1.csv").write_text("\n".join(map(str, labels)) + "\n")
    dag = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=float)
    np.save(tmp_path / "DAG1.npy", dag)
    return x, dag


@pytest.mark.parametrize("regime_file", [True, False])
def test_load_dcdi(tmp_path, regime_file):
    x, dag = _dcdi_folder(tmp_path, regime_file)
    for source in (tmp_path, tmp_path / "data_interv1.npy"):
        data = load_dcdi(source)
        np.testing.assert_array_equal(data.x, x)
        assert data.names == ["X0", "X1", "X2"]
        assert data.regimes.tolist() == [0] * 10 + [1] * 10 + [2] * 10
        np.testing.assert_array_equal(data.targets, [[0, 0, 0], [1, 0, 0], [0, 1, 1]])
        np.testing.assert_array_equal(data.adjacency, dag)


def test_load_dcdi_errors(tmp_path):
    _dcdi_folder(tmp_path)
    (tmp_path / "DAG1.npy").unlink()
    assert load_dcdi(tmp_path).adjacency is None
    np.save(tmp_path / "data_interv2.npy", np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"pass index= to choose; data sets found: \[1, 2\]"):
        load_dcdi(tmp_path)
    assert load_dcdi(tmp_path, index=1).x.shape == (30, 3)
    lines = (tmp_path / "intervention1.csv").read_text().splitlines()
    (tmp_path / "intervention1.csv").write_text("\n".join(lines[:-1] + ["1"]) + "\n")
    with pytest.raises(DataError, match="lines 21 and 30 are in the same regime"):
        load_dcdi(tmp_path, index=1)
    (tmp_path / "intervention1.csv").write_text("\n".join(lines[:-1] + ["7"]) + "\n")
    with pytest.raises(DataError, match="intervention1.csv, line 30: '7' is not a list"):
        load_dcdi(tmp_path, index=1)
    (tmp_path / "intervention1.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="29 lines, but the data has 30 rows"):
        load_dcdi(tmp_path, index=1)
    (tmp_path / "intervention1.csv").write_text("\n".join(["1"] * 10 + lines[10:]) + "\n")
    with pytest.raises(DataError, match="regime 0 is observational"):
        load_dcdi(tmp_path, index=1)
    (tmp_path / "intervention1.csv").write_text("\n".join(lines) + "\n")
    labels = (tmp_path / "regime1.csv").read_text().replace("5\n", "x\n", 1)
    (tmp_path / "regime1.csv").write_text(labels)
    with pytest.raises(DataError, match="regime1.csv, line 21: regime label 'x' is not an integer"):
        load_dcdi(tmp_path, index=1)
    with pytest.raises(DataError, match="no such file or folder"):
        load_dcdi(tmp_path / "nowhere")


def test_prepare_output_dir(tmp_path):
    out = prepare_output_dir(tmp_path / "run" / "one")
    assert out.is_dir()
    (out / "notes.txt").write_text("mine")
    assert prepare_output_dir(out) == out  # unrelated files do not block
    (out / "adjacency.csv").write_text("old")
    with pytest.raises(FileExistsError, match="one: already holds results \\(adjacency.csv\\)"):
        prepare_output_dir(out)
    assert prepare_output_dir(out, overwrite=True) == out
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        prepare_output_dir(tmp_path / "file")
    with pytest.raises(OutputError, match="cannot write there"):
        prepare_output_dir(tmp_path / "file" / "sub")


def test_atomic_writes(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "hello\n")
    assert path.read_text() == "hello\n"
    atomic_write_text(path, "again\n")
    assert path.read_text() == "again\n" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with pytest.raises(OutputError, match="cannot be written"):
        atomic_write_text(tmp_path / "missing" / "b.txt", "x")
    write_matrix_csv(tmp_path / "m.csv", np.eye(2, dtype=int), ["p", "q"], row_names=["p", "q"])
    assert (tmp_path / "m.csv").read_text() == ",p,q\np,1,0\nq,0,1\n"
    with pytest.raises(ValueError, match="does not match 3 names"):
        write_matrix_csv(tmp_path / "m.csv", np.eye(2), ["p", "q", "r"])

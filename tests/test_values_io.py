"""Value checks of the CSV and DCDI readers: the values read, and every refusal's full message.

Each error is compared with the whole text it must be (the file, the 1-based line, the column,
the values shown), so that a wrong line number, a wrong column or a dropped detail turns the
suite red.
"""
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from pyro_causal.io import MIN_ROWS, DataError, check_matrix, load_dcdi, read_csv_table, read_targets


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def table_text(n=MIN_ROWS, header="a,b,c", row=lambda i: f"{i + 0.5},{-2 * i},{i * i}"):
    return "\n".join([header] + [row(i) for i in range(n)]) + "\n"


def error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------- read_csv_table


def test_values_names_and_regimes_are_read_exactly(tmp_path):
    text = "  a ,regime, b\n" + "\n".join(f"{i}.25,{r}, {-i}e-1" for i, r in
                                            enumerate(["0", "", "-1", "2", "2.0", "1e0", "0", "3", "1", "0"])) + "\n"
    table = read_csv_table(write(tmp_path, text), regime_column="regime")
    assert table.names == ["a", "b"]
    np.testing.assert_array_equal(table.x, [[i + 0.25, -i / 10] for i in range(10)])
    assert table.x.dtype == np.float64
    assert table.regimes.tolist() == [0, -1, -1, 2, 2, 1, 0, 3, 1, 0]
    assert table.regimes.dtype == np.int64
    whole = read_csv_table(write(tmp_path, table_text()))
    assert whole.names == ["a", "b", "c"] and whole.regimes is None
    np.testing.assert_array_equal(whole.x, [[i + 0.5, -2 * i, i * i] for i in range(MIN_ROWS)])


def test_a_byte_order_mark_and_trailing_blank_lines_are_not_data(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + table_text().encode() + b"\n\n")
    table = read_csv_table(path)
    assert table.names == ["a", "b", "c"]
    np.testing.assert_array_equal(table.x, [[i + 0.5, -2 * i, i * i] for i in range(MIN_ROWS)])


def test_exactly_min_rows_rows_and_two_columns_are_enough(tmp_path):
    path = write(tmp_path, table_text(MIN_ROWS, "a,b", lambda i: f"{i},{i * i}"))
    np.testing.assert_array_equal(read_csv_table(path).x, [[i, i * i] for i in range(MIN_ROWS)])
    path = write(tmp_path, table_text(MIN_ROWS - 1, "a,b", lambda i: f"{i},{i * i}"))
    assert error(read_csv_table, path) == f"{path}: only {MIN_ROWS - 1} data rows; at least {MIN_ROWS} are needed"


def test_file_level_refusals_in_full(tmp_path):
    missing = tmp_path / "missing.csv"
    assert error(read_csv_table, missing) == f"{missing}: no such file"
    assert error(read_csv_table, tmp_path) == f"{tmp_path}: is a folder, not a file"
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"a,b\n1,\xff\n")
    assert error(read_csv_table, binary) == f"{binary}: not a UTF-8 text file (invalid start byte at byte 6)"
    path = write(tmp_path, table_text())
    with mock.patch.object(Path, "read_text", side_effect=PermissionError(13, "Permission denied")):
        assert error(read_csv_table, path) == f"{path}: cannot be read (Permission denied)"
    for text in ("", " \n\t\n"):
        empty = write(tmp_path, text)
        assert error(read_csv_table, empty) == f"{empty}: the file is empty"


@pytest.mark.parametrize("header, shown", [
    ("1,2,3", "1, 2, 3"),
    ("1,2,3,4", "1, 2, 3, 4"),
    ("1,2,3,4,5", "1, 2, 3, 4, ..."),
    ("1.5,,-2", "1.5, , -2"),
])
def test_a_header_of_numbers_is_refused(tmp_path, header, shown):
    path = write(tmp_path, header + "\n" + "\n".join([header.replace(",,", ",0,")] * 12) + "\n")
    assert error(read_csv_table, path) == f"{path}, line 1: expected a header row of column names, found data ({shown})"


def test_header_refusals_in_full(tmp_path):
    path = write(tmp_path, "a,b,a\n1,2,3\n")
    assert error(read_csv_table, path) == f"{path}, line 1: duplicate column name 'a' (columns 1 and 3)"
    path = write(tmp_path, "x,b,c,b\n1,2,3,4\n")
    assert error(read_csv_table, path) == f"{path}, line 1: duplicate column name 'b' (columns 2 and 4)"
    path = write(tmp_path, "a,b, \n1,2,3\n")
    assert error(read_csv_table, path) == f"{path}, line 1: column 3 has no name"
    path = write(tmp_path, "a,1\n" + "\n".join(f"{i},{i * i}" for i in range(12)) + "\n")
    assert read_csv_table(path).names == ["a", "1"]  # one name is enough for a header


def test_row_refusals_in_full(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n\n\n3,4\n")
    assert error(read_csv_table, path) == f"{path}, line 3: blank line inside the table"
    path = write(tmp_path, "a,b,c\n1,2,3\n4,5\n")
    assert error(read_csv_table, path) == f"{path}, line 3: 2 cells, but the header has 3 columns"
    path = write(tmp_path, "a,b\n1,2,3\n")
    assert error(read_csv_table, path) == f"{path}, line 2: 3 cells, but the header has 2 columns"


@pytest.mark.parametrize("cell, message", [
    ("", "empty cell (missing value)"),
    ("   ", "empty cell (missing value)"),
    ("1,5", None),  # quoted below: a cell holding a comma
    ("abc", "'abc' is not a number"),
    ("1.2.3", "'1.2.3' is not a number"),
])
def test_the_first_bad_cell_is_named(tmp_path, cell, message):
    rows = [f"{i},{i * i},{-i}" for i in range(12)]
    rows[4] = f'4,"{cell}",-4'
    rows[7] = "7,zzz,-7"  # a later bad cell is not the one reported
    path = write(tmp_path, "a,b,c\n" + "\n".join(rows) + "\n")
    message = "'1,5' is not a number" if message is None else message
    assert error(read_csv_table, path) == f"{path}, line 6, column 'b': {message}"


def test_a_bad_cell_is_found_in_column_order_within_its_row(tmp_path):
    rows = [f"{i},{i * i},{-i}" for i in range(12)]
    rows[2] = "2,x,y"
    path = write(tmp_path, "a,b,c\n" + "\n".join(rows) + "\n")
    assert error(read_csv_table, path) == f"{path}, line 4, column 'b': 'x' is not a number"


def test_the_regime_column_is_not_parsed_as_a_number(tmp_path):
    rows = [f"{i},{i * i},{i % 2}" for i in range(12)]
    path = write(tmp_path, "a,b,g\n" + "\n".join(rows) + "\n")
    table = read_csv_table(path, regime_column="g")
    assert table.regimes.tolist() == [i % 2 for i in range(12)]
    rows[3] = "3,9,"
    assert read_csv_table(write(tmp_path, "a,b,g\n" + "\n".join(rows) + "\n"), regime_column="g").regimes[3] == -1
    path = write(tmp_path, "a,b,g\n" + "\n".join(rows) + "\n")
    assert error(read_csv_table, path, regime_column="h") == f"{path}, line 1: no regime column named 'h'; columns are a, b, g"


@pytest.mark.parametrize("label", ["1.5", "-2", "one", "-1.5", "nan"])
def test_bad_regime_labels_in_full(tmp_path, label):
    rows = [f"{i},{i * i},{i % 2}" for i in range(12)]
    rows[5] = f"5,25,{label}"
    path = write(tmp_path, "a,b,g\n" + "\n".join(rows) + "\n")
    assert error(read_csv_table, path, regime_column="g") == (
        f"{path}, line 7, column 'g': regime label {label!r} is not an integer >= 0 (or -1 / blank for unknown)")


def test_too_few_variables_in_full(tmp_path):
    path = write(tmp_path, "a,g\n" + "\n".join(f"{i},0" for i in range(12)) + "\n")
    assert error(read_csv_table, path, regime_column="g") == f"{path}: 1 variable column(s) ['a']; at least 2 are needed"
    path = write(tmp_path, "a\n" + "\n".join(f"{i}" for i in range(12)) + "\n")
    assert error(read_csv_table, path) == f"{path}: 1 variable column(s) ['a']; at least 2 are needed"


def test_non_finite_and_constant_columns_in_full(tmp_path):
    rows = [f"{i},{i * i},{-i}" for i in range(12)]
    rows[6], rows[9] = "6,inf,-6", "nan,81,-9"
    path = write(tmp_path, "a,b,c\n" + "\n".join(rows) + "\n")
    assert error(read_csv_table, path) == f"{path}, line 8, column 'b': inf is not a finite number (2 non-finite value(s) in all)"
    path = write(tmp_path, "a,b,c\n" + "\n".join(f"{i},3.5,2" for i in range(12)) + "\n")
    assert error(read_csv_table, path) == f"{path}, column 'b': constant (every row is 3.5); it carries no information, drop it"


def test_the_log_transform_in_full(tmp_path):
    rows = [f"{i + 1},{2 ** i}" for i in range(12)]
    table = read_csv_table(write(tmp_path, "a,b\n" + "\n".join(rows) + "\n"), log_transform=True)
    np.testing.assert_allclose(table.x, np.log([[i + 1, 2.0 ** i] for i in range(12)]), rtol=0, atol=0)
    rows[3], rows[8], rows[10] = "4,0", "9,-2", "-1,1024"
    path = write(tmp_path, "a,b\n" + "\n".join(rows) + "\n")
    assert error(read_csv_table, path, log_transform=True) == (
        f"{path}, line 5, column 'b': log_transform needs values > 0, found 0.0 (2 value(s) <= 0 here)")
    table = read_csv_table(path)  # without the transform the same file is fine, as it is
    assert table.x[3, 1] == 0.0 and table.x[8, 1] == -2.0


# ----------------------------------------------------------------------------- check_matrix


def test_check_matrix_accepts_and_refuses_in_full():
    names = ["p", "q", "r"]
    x = np.arange(30, dtype=float).reshape(10, 3)
    labels = []
    check_matrix(x, names, "src", labels.append)
    assert labels == []  # the label is asked only for a bad row
    check_matrix(x[:3], names, "src", str, min_rows=3)
    assert error(check_matrix, x[:2], names, "src", str, min_rows=3) == "src: only 2 data rows; at least 3 are needed"
    assert error(check_matrix, x[:9], names, "src", str) == "src: only 9 data rows; at least 10 are needed"
    assert error(check_matrix, x[:, :1], names[:1], "src", str) == "src: 1 variable column(s) ['p']; at least 2 are needed"
    bad = x.copy()
    bad[4, 2], bad[4, 1], bad[7, 0] = np.nan, -np.inf, np.inf
    assert error(check_matrix, bad, names, "src", lambda i: f"row #{i}") == (
        "src, row #4, column 'q': -inf is not a finite number (3 non-finite value(s) in all)")
    flat = x.copy()
    flat[:, 2], flat[:, 1] = -0.5, 7.0
    assert error(check_matrix, flat, names, "src", str) == (
        "src, column 'q': constant (every row is 7.0); it carries no information, drop it")
    huge = np.array([[1e308, -1e308, i] for i in range(10)])
    huge[::2, 0], huge[::2, 1] = -1e308, 1e308  # the range overflows to inf: not constant, no warning
    check_matrix(huge, names, "src", str)


# ----------------------------------------------------------------------------- read_targets


def test_read_targets_follows_the_order_of_the_names(tmp_path):
    names = ["X0", "X1", "X2"]
    path = write(tmp_path, "X2,X0,X1\n0,0,0\n1.0,0,0\n0,1,1\n1,1,0\n")
    targets = read_targets(path, names, num_regimes=4)
    np.testing.assert_array_equal(targets, [[0, 0, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]])
    assert targets.dtype == np.int64
    np.testing.assert_array_equal(read_targets(path, ["X2", "X1", "X0"]), [[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1]])


def test_read_targets_refusals_in_full(tmp_path):
    names = ["X0", "X1", "X2"]
    cases = [
        ("X2,X9,X8,X0\n0,0,0,0\n", ", line 1: column(s) 'X9', 'X8' are not variables of the data (X0, X1, X2)"),
        ("X2\n0\n", ", line 1: no column for variable(s) 'X0', 'X1'"),
        ("X0,X1,X2\n", ": no regime rows below the header"),
        ("X2,X0,X1\n0,0,0\n0,0,0\n0,0.5,2\n", ", line 4, column 'X0': '0.5' is not 0 or 1"),
        ("X2,X0,X1\n0,0,0\n-1,0,0\n", ", line 3, column 'X2': '-1' is not 0 or 1"),
        ("X0,X1,X2\n0,0,0\n0,,1\n", ", line 3, column 'X1': empty cell (missing value)"),
        ("X0,X1,X2\n1,0,1\n0,0,0\n", ", line 2: the first row is regime 0, the observational one, "
                                      "and must be all zero; it marks X0, X2"),
        ("X2,X0,X1\n1,0,0\n", ", line 2: the first row is regime 0, the observational one, "
                               "and must be all zero; it marks X2"),
    ]
    for content, message in cases:
        path = write(tmp_path, content)
        assert error(read_targets, path, names) == f"{path}{message}"
    path = write(tmp_path, "X0,X1,X2\n0,0,0\n1,0,0\n")
    assert error(read_targets, path, names, num_regimes=3) == f"{path}: 2 regime rows, but the data has 3 regimes"
    assert error(read_targets, path, names, num_regimes=1) == f"{path}: 2 regime rows, but the data has 1 regimes"
    assert read_targets(path, names, num_regimes=2).tolist() == [[0, 0, 0], [1, 0, 0]]


# ----------------------------------------------------------------------------- load_dcdi


def dcdi_folder(folder, index=1, n_per=4, regimes=None, lines=None, d=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(index)
    x = rng.normal(size=(3 * n_per, d))
    np.save(folder / f"data_interv{index}.npy", x)
    lines = [""] * n_per + ["2, 0 ,0"] * n_per + ["1"] * n_per if lines is None else lines
    (folder / f"intervention{index}.csv").write_text("\n".join(lines) + "\n")
    if regimes is not None:
        (folder / f"regime{index}.csv").write_text("\n".join(map(str, regimes)) + "\n")
    return x


def test_load_dcdi_numbers_regimes_by_size_then_indices_without_a_regime_file(tmp_path):
    x = dcdi_folder(tmp_path, n_per=4)
    data = load_dcdi(tmp_path)
    np.testing.assert_array_equal(data.x, x)
    assert data.x.dtype == np.float64 and data.names == ["X0", "X1", "X2"]
    # distinct sets: () first, then (1,) before (0, 2) (fewer targets first)
    assert data.regimes.tolist() == [0] * 4 + [2] * 4 + [1] * 4 and data.regimes.dtype == np.int64
    np.testing.assert_array_equal(data.targets, [[0, 0, 0], [0, 1, 0], [1, 0, 1]])
    assert data.targets.dtype == np.int64 and data.adjacency is None


def test_load_dcdi_renumbers_regime_labels_in_sorted_order(tmp_path):
    dcdi_folder(tmp_path, index=7, n_per=4, regimes=[2] * 4 + [9] * 4 + [4] * 4)
    dag = np.array([[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    np.save(tmp_path / "DAG7.npy", dag)
    data = load_dcdi(tmp_path / "data_interv7.npy")
    assert data.regimes.tolist() == [0] * 4 + [2] * 4 + [1] * 4
    np.testing.assert_array_equal(data.targets, [[0, 0, 0], [0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(data.adjacency, dag)
    assert data.adjacency.dtype == np.int64


def test_load_dcdi_chooses_the_data_set(tmp_path):
    first = dcdi_folder(tmp_path, index=1)
    second = dcdi_folder(tmp_path, index=12)
    np.testing.assert_array_equal(load_dcdi(tmp_path, index=12).x, second)
    np.testing.assert_array_equal(load_dcdi(tmp_path / "data_interv1.npy", index=12).x, first)  # the file wins
    assert error(load_dcdi, tmp_path) == f"{tmp_path}: pass index= to choose; data sets found: [1, 12]"
    assert error(load_dcdi, tmp_path, index=3) == f"{tmp_path}: no data_interv3.npy; data sets found: [1, 12]"
    assert error(load_dcdi, tmp_path, index=0) == f"{tmp_path}: no data_interv0.npy; data sets found: [1, 12]"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data_interv.npy").write_text("x")
    assert error(load_dcdi, empty) == f"{empty}: pass index= to choose; data sets found: none"
    other = tmp_path / "data1.npy"
    np.save(other, first)
    assert error(load_dcdi, other) == f"{other}: expected a file named data_interv<i>.npy"
    nowhere = tmp_path / "nowhere"
    assert error(load_dcdi, nowhere) == f"{nowhere}: no such file or folder"


def test_load_dcdi_array_refusals_in_full(tmp_path):
    dcdi_folder(tmp_path)
    data_file = tmp_path / "data_interv1.npy"
    np.save(data_file, np.arange(12.0))
    assert error(load_dcdi, tmp_path) == f"{data_file}: expected a 2-D numeric array, found float64 (12,)"
    np.save(data_file, np.array([["a", "b"]] * 12))
    assert error(load_dcdi, tmp_path) == f"{data_file}: expected a 2-D numeric array, found <U1 (12, 2)"
    data_file.write_text("not an array")
    assert re.fullmatch(re.escape(f"{data_file}: not a readable .npy array (") + ".+\\)", error(load_dcdi, tmp_path))
    np.save(data_file, np.array([[1, 2], [3, 4]], dtype=object), allow_pickle=True)
    assert error(load_dcdi, tmp_path).startswith(f"{data_file}: not a readable .npy array (")
    x = dcdi_folder(tmp_path)
    x[5, 1] = np.nan
    np.save(data_file, x)
    assert error(load_dcdi, tmp_path) == (
        f"{data_file}, row 5 (0-based), column 'X1': nan is not a finite number (1 non-finite value(s) in all)")
    np.save(data_file, np.arange(24, dtype=np.int32).reshape(12, 2))
    (tmp_path / "intervention1.csv").write_text("\n" * 12)
    loaded = load_dcdi(tmp_path)
    assert loaded.x.dtype == np.float64 and loaded.x[3, 1] == 7.0 and loaded.targets.tolist() == [[0, 0]]


def test_load_dcdi_target_lines_in_full(tmp_path):
    base = [""] * 4 + ["2,0"] * 4 + ["1"] * 4
    for bad, shown in (("3", "'3'"), ("-1", "'-1'"), ("1;2", "'1;2'"), ("a", "'a'"), ("1.0", "'1.0'")):
        lines = list(base)
        lines[9] = bad
        dcdi_folder(tmp_path, lines=lines)
        path = tmp_path / "intervention1.csv"
        assert error(load_dcdi, tmp_path) == f"{path}, line 10: {shown} is not a list of variable indices in 0..2"
    dcdi_folder(tmp_path, lines=base[:-1])
    assert error(load_dcdi, tmp_path) == f"{tmp_path / 'intervention1.csv'}: 11 lines, but the data has 12 rows"
    lines = list(base)
    lines[5] = "0,2,2"  # the same set written differently
    dcdi_folder(tmp_path, lines=lines)
    assert load_dcdi(tmp_path).regimes.tolist() == [0] * 4 + [2] * 4 + [1] * 4


def test_load_dcdi_regime_refusals_in_full(tmp_path):
    lines = [""] * 4 + ["2,0"] * 4 + ["1"] * 4
    lines[6] = "1"
    dcdi_folder(tmp_path, lines=lines, regimes=[0] * 4 + [3] * 4 + [5] * 4)
    assert error(load_dcdi, tmp_path) == (
        f"{tmp_path / 'regime1.csv'}: lines 5 and 7 are in the same regime but target [0, 2] and [1]")
    dcdi_folder(tmp_path, lines=[""] * 4 + ["2,0"] * 4 + ["1"] * 4, regimes=[4] * 4 + [3] * 4 + [5] * 4)
    assert error(load_dcdi, tmp_path) == (
        f"{tmp_path / 'regime1.csv'}: the first regime targets [0, 2], but DCDI's (and our) convention is "
        "that regime 0 is observational")
    (tmp_path / "regime1.csv").unlink()
    dcdi_folder(tmp_path, lines=["2,0"] * 4 + ["1"] * 8)
    assert error(load_dcdi, tmp_path) == (
        f"{tmp_path / 'intervention1.csv'}: the first regime targets [1], but DCDI's (and our) convention is "
        "that regime 0 is observational")
    for label in ("-1", "", "0.5"):
        labels = [0] * 4 + [3] * 4 + [5] * 4
        labels[2] = label
        dcdi_folder(tmp_path, regimes=labels)
        assert error(load_dcdi, tmp_path) == (
            f"{tmp_path / 'regime1.csv'}, line 3: regime label {label!r} is not an integer >= 0")
    for line in (11, 12):  # the last lines are checked too
        labels = [0] * 4 + [3] * 4 + [5] * 4
        labels[line - 1] = "x"
        dcdi_folder(tmp_path, regimes=labels)
        assert error(load_dcdi, tmp_path) == (
            f"{tmp_path / 'regime1.csv'}, line {line}: regime label 'x' is not an integer >= 0")
    dcdi_folder(tmp_path, regimes=[0] * 12 + [1])
    assert error(load_dcdi, tmp_path) == f"{tmp_path / 'regime1.csv'}: 13 lines, but the data has 12 rows"


def test_load_dcdi_graph_refusals_in_full(tmp_path):
    dcdi_folder(tmp_path)
    dag_file = tmp_path / "DAG1.npy"
    for dag in (np.zeros((3, 2)), np.zeros((2, 3)), np.array([[0, 2, 0], [0, 0, 0], [0, 0, 0]]),
                np.array([[0, 0.5, 0], [0, 0, 0], [0, 0, 0]])):
        np.save(dag_file, dag)
        assert error(load_dcdi, tmp_path) == f"{dag_file}: expected a (3, 3) 0/1 matrix"
    np.save(dag_file, np.eye(3))
    assert load_dcdi(tmp_path).adjacency.tolist() == np.eye(3, dtype=int).tolist()


def test_a_constant_column_shows_its_first_value():
    names = ["p", "q"]
    assert error(check_matrix, np.array([[1.5, 2.0]]), names, "src", str, min_rows=1) == (
        "src, column 'p': constant (every row is 1.5); it carries no information, drop it")
    signed = np.array([[0.0, i] for i in range(10)])
    signed[1:, 0] = -0.0  # 0.0 == -0.0: constant, shown as the first row has it
    assert error(check_matrix, signed, names, "src", str) == (
        "src, column 'p': constant (every row is 0.0); it carries no information, drop it")

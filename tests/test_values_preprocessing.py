"""Value checks of the preprocessing: standardisation and the log transform (pyro_causal.preprocessing)."""
import numpy as np
import pytest

from pyro_causal.preprocessing import prepare_data
from pyro_causal.preprocessing import Standardizer

X = np.array([[1.0, 10.0, 0.5], [2.0, 30.0, 0.25], [4.0, 20.0, 8.0], [9.0, 60.0, 1.0]] * 3) * np.repeat([1.0, 1.5, 3.0], 4)[:, None]


def test_standardised_columns_have_mean_zero_and_variance_one():
    z, names, standardizer = prepare_data(X)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.var(0), 1.0)
    np.testing.assert_allclose(standardizer.mean, [16 * 5.5 / 12, 120 * 5.5 / 12, 9.75 * 5.5 / 12])
    np.testing.assert_allclose(standardizer.scale, X.std(0))
    np.testing.assert_allclose(z * standardizer.scale + standardizer.mean, X)  # the inverse map
    assert names == ["X0", "X1", "X2"] and standardizer.log_transform is False


def test_the_log_transform_comes_before_the_standardisation():
    z, _, standardizer = prepare_data(X, log_transform=True)
    logs = np.log(X)
    np.testing.assert_allclose(standardizer.mean, logs.mean(0))
    np.testing.assert_allclose(standardizer.scale, logs.std(0))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.var(0), 1.0)
    np.testing.assert_allclose(np.exp(z * standardizer.scale + standardizer.mean), X)  # the inverse map
    np.testing.assert_allclose(standardizer(X[:2]), z[:2])  # new rows go through the same map


def test_without_standardisation_the_data_is_unchanged_or_only_logged():
    z, _, standardizer = prepare_data(X, standardize=False)
    np.testing.assert_array_equal(z, X)
    np.testing.assert_array_equal(standardizer.mean, np.zeros(3))
    np.testing.assert_array_equal(standardizer.scale, np.ones(3))
    logged, _, _ = prepare_data(X, standardize=False, log_transform=True)
    np.testing.assert_allclose(logged, np.log(X))
    direct = Standardizer.fit(X, standardize=False, log_transform=True)
    assert direct.log_transform is True


def test_the_log_transform_refuses_non_positive_values():
    bad = X.copy()
    bad[2, 1] = 0.0  # row 2, column X1
    with pytest.raises(ValueError, match=r"data, row 2, column 'X1': 0.0 <= 0 cannot be log-transformed"):
        prepare_data(bad, log_transform=True)
    prepare_data(bad)  # fine without the log


def test_what_is_not_a_numeric_table_is_refused_by_name():
    from pyro_causal.io import DataError

    cases = (([[1.0, 2.0], [3.0]], "data must be a numeric (n, d) array: setting an array element with a sequence."),
             ([["a", "b"], ["c", "d"]], "data must be a numeric (n, d) array: could not convert string to float: np.str_('a')"),
             ([[1 + 2j, 1.0]] * 3, "data must be real numbers, got complex values"),
             ([1.0, 2.0], "data must be a 2-D (rows, variables) array, got shape (2,)"))
    for bad, message in cases:
        with pytest.raises(DataError) as caught:
            prepare_data(bad)
        assert str(caught.value).startswith(message)
    with pytest.raises(DataError) as caught:
        prepare_data(X, names=["a", "b"])
    assert str(caught.value) == "2 names for 3 columns"
    with pytest.raises(DataError) as caught:
        prepare_data(X, names=["a", "b", "a"])
    assert str(caught.value) == "names: 'a' is given twice; variable names must be distinct"
    assert prepare_data(X, names=[1, 2, 3])[1] == ["1", "2", "3"]


def test_the_data_checks_name_the_data_and_the_edges_of_what_is_accepted():
    from pyro_causal.io import DataError, DataWarning

    bad = X.copy()
    bad[1, 0] = np.nan
    with pytest.raises(DataError) as caught:
        prepare_data(bad)
    assert str(caught.value) == "data, row 1, column 'X0': nan is not a finite number (1 non-finite value(s) in all)"
    largest = X.copy()
    largest[0, 1] = np.finfo(np.float32).max  # the largest float32 is still accepted
    assert prepare_data(largest, standardize=False)[0][0, 1] == np.finfo(np.float32).max
    labels = np.column_stack([X, np.arange(12) % 3])
    with pytest.warns(DataWarning, match="column 'regime' looks like regime labels"):
        prepare_data(labels, names=["a", "b", "c", "regime"])


def test_names_given_win_over_a_data_frame_s_columns():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(X, columns=["p", "q", "r"])
    assert prepare_data(frame)[1] == ["p", "q", "r"]
    assert prepare_data(frame, names=["a", "b", "c"])[1] == ["a", "b", "c"]


def test_huge_columns_are_standardised_column_by_column():
    # the sums overflow, so the moments come from each column divided by its own largest value
    x = np.array([[1.5e308, 1.0], [-1.5e308, 2.0], [1.0e308, 3.0], [-1.0e308, 4.0]])
    standardizer = Standardizer.fit(x)
    np.testing.assert_allclose(standardizer.mean, [0.0, 2.5], atol=1e-300)
    np.testing.assert_allclose(standardizer.scale, [np.sqrt(1.625) * 1e308, np.sqrt(1.25)], rtol=1e-12)
    # new rows may come as text (a CSV read as strings): they are numbers to the map
    np.testing.assert_allclose(standardizer(np.array([["1e308", "2"]])), [[1e308 / standardizer.scale[0], -0.5 / np.sqrt(1.25)]])


def test_sums_that_overflow_both_ways_are_standardised_without_a_warning():
    # 1.5e308 + 1.5e308 overflows to inf and the negative half to -inf: inf - inf is nan
    x = np.array([[1.5e308, 1.0], [1.5e308, 2.0], [-1.5e308, 3.0], [-1.5e308, 4.0]])
    standardizer = Standardizer.fit(x)  # the suite turns a RuntimeWarning into an error
    np.testing.assert_allclose(standardizer.mean, [0.0, 2.5], atol=1e-300)
    np.testing.assert_allclose(standardizer.scale, [1.5e308, np.sqrt(1.25)], rtol=1e-12)

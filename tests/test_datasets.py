"""Tests of the packaged Sachs flow-cytometry data."""
import numpy as np
import pytest

from pyro_causal.datasets import SACHS_BLOCK_SIZES, sachs

NAMES = ["praf", "pmek", "plcg", "PIP2", "PIP3", "p44/42", "pakts473", "PKA", "PKC", "P38",
         "pjnk"]


@pytest.fixture(scope="module")
def data():
    return sachs()


def test_shape_names_and_regimes(data):
    assert data.x.shape == (7466, 11) and data.x.dtype == np.float64
    assert data.names == NAMES
    assert data.regimes.shape == (7466,)
    assert np.bincount(data.regimes).tolist() == [853, 902, 911, 723, 810, 799, 848, 913, 707]
    assert list(SACHS_BLOCK_SIZES) == np.bincount(data.regimes).tolist()
    assert np.all(np.diff(data.regimes) >= 0)  # contiguous blocks, in file order
    assert len(data.conditions) == 9 and data.conditions[0] == "CD3/CD28"
    assert data.conditions[7] == "PMA (PKC activator)"


def test_consensus_graph(data):
    adjacency = data.adjacency
    assert adjacency.shape == (11, 11) and adjacency.sum() == 18
    assert np.trace(adjacency) == 0
    index = NAMES.index
    for cause, effect in [("praf", "pmek"), ("pmek", "p44/42"), ("PKA", "pakts473"),
                          ("PIP3", "plcg"), ("PKC", "P38")]:
        assert adjacency[index(cause), index(effect)] == 1
    assert adjacency[index("pmek"), index("praf")] == 0


def test_block_boundaries_match_the_data(data):
    """Two inhibitors with a clear footprint mark their blocks."""
    median = {k: np.median(data.x[data.regimes == k], axis=0) for k in range(9)}
    pip2, erk = NAMES.index("PIP2"), NAMES.index("p44/42")
    # Psitectorigenin (regime 4) inhibits PIP2; U0126 (regime 5) inhibits MEK, hence Erk
    assert median[4][pip2] < 0.1 * min(median[k][pip2] for k in range(9) if k != 4)
    assert median[5][erk] < 0.3 * min(median[k][erk] for k in range(9) if k != 5)


def test_log_transform(data):
    logged = sachs(log_transform=True)
    assert np.isfinite(logged.x).all()
    np.testing.assert_allclose(logged.x, np.log(data.x))
    np.testing.assert_array_equal(logged.regimes, data.regimes)


def test_nominal_targets(data):
    """One nominal target per reagent condition, none for the two stimulation-only conditions."""
    assert data.targets.shape == (9, 11)
    assert data.targets.sum(1).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1]
    named = {k: NAMES[int(np.argmax(data.targets[k]))] for k in range(2, 9)}
    assert named == {2: "pakts473", 3: "PKC", 4: "PIP2", 5: "pmek", 6: "PIP3", 7: "PKC", 8: "PKA"}

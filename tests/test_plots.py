"""Figures of a tiny fit, and the CLI's --plots / --posterior outputs."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from pyro_causal import FitConfig, PenaltySchedule, TrainingConfig, fit, simulate
from pyro_causal.cli import main
from pyro_causal.plots import PLOT_FILES, plot_components, plot_edge_probs, plot_graphs, plot_training, save_all_plots

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--first-round-steps", "20", "--round-steps", "5", "--max-rounds", "1", "--quiet"]


@pytest.fixture(scope="module")
def data():
    return simulate(num_variables=3, num_samples=300)


@pytest.fixture(scope="module")
def result(data):
    return fit(data.x,
               names=data.names,
               config=FitConfig(training=TrainingConfig(schedule=PenaltySchedule(first_round_steps=20, round_steps=5, max_rounds=1))))


def _is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


@pytest.mark.parametrize("plot, panels", [(plot_edge_probs, 2), (plot_training, 2), (plot_components, 3)])
def test_each_plot_returns_a_figure_and_writes_a_png(result, tmp_path, plot, panels):
    figure = plot(result, path=tmp_path / "figure.png")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == panels  # colour bars count as axes
    assert _is_png(tmp_path / "figure.png")


def test_graph_plot_with_and_without_truth(result, data, tmp_path):
    alone = plot_graphs(result)
    assert len(alone.axes) == 1 and alone.axes[0].get_title().startswith("Learned graph")
    both = plot_graphs(result, truth=data.adjacency, path=tmp_path / "graph.png")
    assert [ax.get_title().split(" (")[0] for ax in both.axes] == ["Learned graph", "True graph"]
    legend = [text.get_text() for text in both.axes[0].get_legend().get_texts()]
    assert [entry.split(" ")[0] for entry in legend] == ["correct", "reversed", "extra", "missing"]
    counts = [int(entry.split("(")[1].rstrip(")")) for entry in legend]
    assert counts[0] + counts[1] + counts[2] == int(result.adjacency.sum())
    assert counts[0] + counts[1] + counts[3] == int(data.adjacency.sum())
    assert _is_png(tmp_path / "graph.png")


def test_save_all_plots(result, data, tmp_path):
    paths = save_all_plots(result, tmp_path / "figures", truth=data.adjacency)
    assert sorted(p.name for p in paths.values()) == sorted(PLOT_FILES.values())
    assert all(_is_png(p) for p in paths.values())


def test_cli_writes_plots_and_posterior_and_refuses_to_overwrite_before_training(data, tmp_path, monkeypatch, capsys):
    az = pytest.importorskip("arviz")
    csv = tmp_path / "data.csv"
    np.savetxt(csv, data.x, delimiter=",", header=",".join(data.names), comments="")
    out, nc = tmp_path / "out", tmp_path / "posterior.nc"
    assert main(["fit", str(csv), "--out", str(out), "--posterior", str(nc), "--plots", *TINY]) == 0
    assert all(_is_png(out / name) for name in PLOT_FILES.values())
    idata = az.from_netcdf(nc)
    assert list(idata.posterior["graph"].coords["cause"].values) == data.names
    assert idata.training.sizes["step"] == 20

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("pyro_causal.api.fit", no_training)
    before = nc.read_bytes()
    assert main(["fit", str(csv), "--out", str(tmp_path / "other"), "--posterior", str(nc), *TINY]) == 1
    assert "posterior.nc: already exists" in capsys.readouterr().err
    assert nc.read_bytes() == before
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "graph.png").write_bytes(b"mine")
    assert main(["fit", str(csv), "--out", str(figures), "--plots", *TINY]) == 1
    assert "graph.png" in capsys.readouterr().err and (figures / "graph.png").read_bytes() == b"mine"
    monkeypatch.undo()
    assert main(["fit", str(csv), "--out", str(tmp_path / "third"), "--posterior", str(nc), "--overwrite", *TINY]) == 0
    assert az.from_netcdf(nc).posterior.sizes["draw"] == 200

"""Figures of a fit: edge probabilities, the learned graph, training traces, the mixture.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas (no ``pyplot``
state, no display needed), optionally saves it to ``path`` and returns it.
:func:`save_all_plots` writes the four standard PNGs into a folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

import networkx as nx
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .io import PLOT_OUTPUTS, PathLike, atomic_write, write_outputs
from .result import FitResult

PLOT_FILES = dict(zip(("edge_probs", "graph", "training", "components"), PLOT_OUTPUTS))
"""Figure name -> file name (``io.PLOT_OUTPUTS``)."""
_DPI = 120
_ANNOTATE_UP_TO = 12  # write the value in each heat-map cell up to this many columns
_EDGE_COLOURS = {"correct": "#2a9d3f", "reversed": "#e08a00", "extra": "#d62828", "missing": "#9a9a9a"}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finish(figure: Figure, path: Optional[PathLike]) -> Figure:
    if path is not None:  # a scratch file, then a rename; never through a link
        atomic_write(path, lambda scratch: figure.savefig(scratch, dpi=_DPI))
    return figure


def _heatmap(axes, values: np.ndarray, rows, columns, *, label: str, blank=None) -> None:
    """``values`` (``(len(rows), len(columns))``, in [0, 1]) as an annotated heat map with a colour bar.

    Cells where ``blank`` is true (e.g. the diagonal of an adjacency) are grey and not annotated.
    """
    blank = np.zeros(values.shape, bool) if blank is None else np.asarray(blank, bool)
    cmap = colormaps["Blues"].with_extremes(bad="#d9d9d9")
    image = axes.imshow(np.ma.masked_array(values, blank), vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto")
    tilt = sum(len(str(c)) + 1 for c in columns) > 4 * len(columns) + 8
    axes.set_xticks(np.arange(len(columns)), labels=columns, rotation=45 if tilt else 0, ha="right" if tilt else "center")
    axes.set_yticks(np.arange(len(rows)), labels=rows)
    axes.figure.colorbar(image, ax=axes, label=label, shrink=0.85)
    if max(values.shape) <= _ANNOTATE_UP_TO:
        for (i, j), value in np.ndenumerate(values):
            if not blank[i, j]:
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value > 0.6 else "black")


# --------------------------------------------------------------------------- edges
def plot_edge_probs(result: FitResult, *, path: Optional[PathLike] = None) -> Figure:
    """Heat map of the posterior edge probabilities ``sigmoid(Lambda)`` (``(d, d)``, row = cause)."""
    d = len(result.names)
    figure = _figure(2.0 + 0.55 * d, 1.5 + 0.5 * d)
    axes = figure.add_subplot()
    _heatmap(axes, result.edge_probs, result.names, result.names, label="q(edge)", blank=np.eye(d, dtype=bool))
    axes.set_xlabel("effect")
    axes.set_ylabel("cause")
    axes.set_title("Posterior edge probabilities")
    return _finish(figure, path)


def _edge_kinds(estimate: np.ndarray, truth: np.ndarray) -> Dict[str, np.ndarray]:
    """0/1 ``(d, d)`` masks of correct, reversed and extra estimated edges and missing true ones."""
    estimate, truth = estimate.astype(bool), truth.astype(bool)
    reversed_ = estimate & ~truth & truth.T
    return {
        "correct": estimate & truth,
        "reversed": reversed_,
        "extra": estimate & ~truth & ~truth.T,
        "missing": truth & ~estimate & ~estimate.T,
    }


def _count(edges) -> str:
    return f"{int(edges)} edge" + ("" if int(edges) == 1 else "s")


def _draw(axes, graph: nx.DiGraph, pos: dict, edges, colour: str, style: str = "solid", node_size: float = 900.0) -> None:
    if edges:
        nx.draw_networkx_edges(
            graph, pos, edgelist=edges, ax=axes, edge_color=colour, style=style, width=2.0,
            arrows=True, arrowstyle="-|>", arrowsize=16, node_size=node_size, connectionstyle="arc3,rad=0.08",
        )


def plot_graphs(result: FitResult, truth: Optional[np.ndarray] = None, *, path: Optional[PathLike] = None) -> Figure:
    """The learned DAG, and the true one beside it (same node layout) when ``truth`` is given.

    With ``truth`` (``(d, d)`` 0/1, ``(i, j) = 1`` iff ``i -> j``) the learned edges are
    coloured: correct (green), reversed (orange), extra (red); true edges the fit missed are
    drawn dashed grey on the learned graph.
    """
    names = list(result.names)
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    pos = nx.circular_layout(graph)
    estimate = np.asarray(result.adjacency).astype(bool)
    panels = 1 if truth is None else 2
    longest = max(map(len, names))
    font = 9 if longest <= 4 else 8
    node_size = max(900.0, (0.56 * font * longest + 10) ** 2)  # points^2: the label fits in the circle
    side = max(4.6, 1.0 + 0.45 * len(names))
    figure = _figure(side * panels, side)
    edges = lambda mask: [(names[i], names[j]) for i, j in zip(*np.nonzero(mask))]  # noqa: E731
    for panel in range(panels):
        axes = figure.add_subplot(1, panels, panel + 1)
        nx.draw_networkx_nodes(graph, pos, ax=axes, node_size=node_size, node_color="#eef3fb", edgecolors="#33507a")
        nx.draw_networkx_labels(graph, pos, ax=axes, font_size=font)
        axes.set_axis_off()
        axes.margins(0.15)
        if panel == 1:
            _draw(axes, graph, pos, edges(np.asarray(truth)), "#333333", node_size=node_size)
            axes.set_title(f"True graph ({_count(np.asarray(truth).sum())})")
            continue
        axes.set_title(f"Learned graph ({_count(estimate.sum())})")
        if truth is None:
            _draw(axes, graph, pos, edges(estimate), "#333333", node_size=node_size)
            continue
        kinds = _edge_kinds(estimate, np.asarray(truth))
        for kind, mask in kinds.items():
            _draw(axes, graph, pos, edges(mask), _EDGE_COLOURS[kind], "dashed" if kind == "missing" else "solid", node_size)
        handles = [
            Line2D([], [], color=_EDGE_COLOURS[kind], lw=2, ls="--" if kind == "missing" else "-", label=f"{kind} ({int(mask.sum())})")
            for kind, mask in kinds.items()
        ]
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=2, fontsize=8, frameon=False)
    return _finish(figure, path)


# --------------------------------------------------------------------------- training
def plot_training(result: FitResult, *, path: Optional[PathLike] = None) -> Figure:
    """ELBO per row (with a running mean when long) and the acyclicity constraint
    ``h(sigmoid(Lambda))`` (log scale; the stopping tolerance is drawn when within three
    decades of the trace) over the training steps."""
    trace = np.asarray(result.elbo_trace, dtype=float)
    steps = np.arange(1, len(trace) + 1)
    figure = _figure(9.0, 3.4)
    elbo, h = figure.subplots(1, 2)
    window = len(trace) // 20
    if window >= 3:
        elbo.plot(steps, trace, color="#9db4d3", lw=0.8, label="per step")
        smooth = np.convolve(trace, np.ones(window) / window, mode="valid")
        elbo.plot(steps[window - 1:], smooth, color="#33507a", lw=1.6, label=f"mean of {window} steps")
        elbo.legend(fontsize=8, frameon=False)
    else:
        elbo.plot(steps, trace, color="#33507a", lw=1.2)
    elbo.set_ylabel("ELBO per row")
    elbo.set_title("Evidence lower bound")
    values = np.asarray(result.h_trace, dtype=float)
    positive = values[values > 0]
    floor = positive.min() / 10 if positive.size else 1e-12
    h.plot(steps, np.maximum(values, floor), color="#b5442c", lw=1.2)
    h.set_yscale("log")
    h.set_ylabel("h(σ(Λ))")
    h.set_title("Acyclicity constraint")
    tolerance = ((result.settings.get("training") or {}).get("schedule") or {}).get("tolerance")
    if tolerance and positive.size and tolerance >= positive.min() * 1e-3:
        h.axhline(tolerance, color="#777777", ls=":", lw=1, label=f"tolerance {tolerance:g}")
        h.legend(fontsize=8, frameon=False)
    for axes in (elbo, h):
        axes.set_xlabel("step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    return _finish(figure, path)


# --------------------------------------------------------------------------- mixture
def plot_components(result: FitResult, *, path: Optional[PathLike] = None) -> Figure:
    """Component occupancy (``E_q[beta_k]`` beside the share of rows ``sum_i q_ik / n``) and
    the target probabilities ``pi`` (``(K, d)``, row 0 observational)."""
    weights = result.cluster_weights
    K, d = len(weights), len(result.names)
    share = result.assignment_probs().mean(0) if result.train_x is not None else None
    figure = _figure(4.0 + 0.35 * K + 0.6 * d, 1.8 + 0.35 * max(K, 6))
    bars, targets = figure.subplots(1, 2, width_ratios=[1.0 + 0.05 * K, 0.6 + 0.12 * d])
    index = np.arange(K)
    width = 0.4 if share is not None else 0.7
    bars.bar(index - (width / 2 if share is not None else 0), weights, width, color="#33507a", label="E[β_k]")
    if share is not None:
        bars.bar(index + width / 2, share, width, color="#8fb3de", label="share of rows")
    bars.set_xticks(index, labels=[str(k) for k in index])
    bars.set_xlabel("component (0 = observational)")
    bars.set_ylabel("weight")
    bars.set_title("Component occupancy")
    bars.set_ylim(0.0, 1.2 * max(weights.max(), share.max() if share is not None else 0.0))
    bars.legend(fontsize=8, frameon=False, loc="upper right")
    bars.grid(axis="y", alpha=0.3)
    rows = ["0 (obs.)"] + [str(k) for k in index[1:]]
    _heatmap(targets, result.target_probs, rows, result.names, label="q(target)", blank=index[:, None] == np.zeros((1, d)))
    targets.set_xlabel("variable")
    targets.set_ylabel("component")
    targets.set_title("Intervention targets")
    return _finish(figure, path)


def figure_writers(result: FitResult, truth: Optional[np.ndarray] = None) -> Dict[str, Callable[[Path], object]]:
    """``{file name: write(path)}`` of the four figures, for :func:`pyro_causal.io.write_outputs`."""
    return {
        PLOT_FILES["edge_probs"]: lambda path: plot_edge_probs(result).savefig(path, dpi=_DPI),
        PLOT_FILES["graph"]: lambda path: plot_graphs(result, truth).savefig(path, dpi=_DPI),
        PLOT_FILES["training"]: lambda path: plot_training(result).savefig(path, dpi=_DPI),
        PLOT_FILES["components"]: lambda path: plot_components(result).savefig(path, dpi=_DPI),
    }


def save_all_plots(result: FitResult, folder: PathLike, truth: Optional[np.ndarray] = None) -> Dict[str, Path]:
    """Write ``edge_probs.png``, ``graph.png``, ``training.png`` and ``components.png`` into ``folder``
    (created when missing), all or none, never through a symbolic link (:func:`~pyro_causal.io.write_outputs`).

    Returns:
        ``{name: path}`` of the files written.
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    written = write_outputs(folder, figure_writers(result, truth))
    return {name: written[filename] for name, filename in PLOT_FILES.items()}

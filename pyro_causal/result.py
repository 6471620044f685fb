"""What a fit returns: the graph, the posterior over interventions, and the training record."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

import networkx as nx
import numpy as np
import torch

from .acyclicity import dag_from_probabilities
from .preprocessing import Standardizer


@dataclass
class FitResult:
    """A fitted model and everything a user reads off it.

    Attributes:
        model: the fitted :class:`~pyro_causal.model.LatentInterventionModel` (with ``.guide``).
        names: variable names, length ``d``.
        edge_probs: ``(d, d)`` posterior edge probabilities ``sigmoid(Lambda)``.
        adjacency: ``(d, d)`` 0/1 DAG (edges with probability > 0.5, cycles broken greedily).
        variant: ``"latent"``, ``"unknown"``, ``"known"``, ``"observational"`` or ``"semi-supervised"``.
        stop_reason: a :class:`~pyro_causal.trainer.StopReason` (``"converged"``, ``"budget"`` or
            ``"diverged"``; compares equal to those strings).
        elbo_trace: ELBO per row at every step.
        h_trace: ``h(sigmoid(Lambda))`` at every step.
        settings: the options of the fit (JSON-serialisable): ``fit``'s keywords as used,
            ``priors`` and the :class:`~pyro_causal.config.FitConfig` as resolved
            (:func:`~pyro_causal.config.settings_of`).
        wall_time: seconds spent in training.
        standardizer: the map from the original units to the fitted ones.
        train_x: ``(n, d)`` the fitted (standardised) rows.
        elbo: the ELBO per training row of the returned fit: 16 draws of ``(A, U)``, ``z`` summed out.
        seed: the seed the returned model was initialised from.
        records: what the steps of the fit did (``held_refit``, ``order_refit``, ``edge_search``,
            ``restart_elbos``...; every key in ``docs/outputs.md``).
        known_targets: ``(K, d)`` the given targets of the known variant, else ``None``.
        problem: the data and recipe of the fit, for the after-training steps
            (:class:`~pyro_causal.problem.Problem`); ``None`` for a result built by hand.
    """

    model: "torch.nn.Module"
    names: List[str]
    edge_probs: np.ndarray
    adjacency: np.ndarray
    variant: str
    stop_reason: str
    elbo_trace: np.ndarray
    h_trace: np.ndarray
    settings: dict
    wall_time: float
    standardizer: Standardizer
    train_x: Optional[np.ndarray] = field(default=None, repr=False)
    elbo: float = math.nan
    seed: int = 0
    records: Dict[str, Any] = field(default_factory=dict)
    known_targets: Optional[np.ndarray] = field(default=None, repr=False)
    problem: Any = field(default=None, repr=False)

    @classmethod
    def from_model(cls, model, names, **kwargs) -> "FitResult":
        probs = model.guide.edge_probs().detach().cpu().numpy()
        return cls(model=model, names=list(names), edge_probs=probs, adjacency=dag_from_probabilities(probs), **kwargs)

    def with_model(self, model, **changes) -> "FitResult":
        """A copy holding ``model`` (its edge posterior and DAG read off it) and ``changes``."""
        probs = model.guide.edge_probs().detach().cpu().numpy()
        return replace(self, model=model, edge_probs=probs, adjacency=dag_from_probabilities(probs), **changes)

    # ----------------------------------------------------------------- graph
    @property
    def graph(self) -> nx.DiGraph:
        """The DAG as a ``networkx.DiGraph`` on the variable names, edges carrying ``probability``."""
        graph = nx.DiGraph()
        graph.add_nodes_from(self.names)
        for i, j in zip(*np.nonzero(self.adjacency)):
            graph.add_edge(self.names[i], self.names[j], probability=float(self.edge_probs[i, j]))
        return graph

    @property
    def final_elbo(self) -> float:
        """The last training step's one-draw ELBO per row (noisy; see :attr:`elbo`)."""
        return float(self.elbo_trace[-1]) if len(self.elbo_trace) else float("nan")

    @property
    def final_h(self) -> float:
        return float(self.h_trace[-1]) if len(self.h_trace) else float("nan")

    # ----------------------------------------------------------------- interventions
    @property
    def cluster_weights(self) -> np.ndarray:
        """``E_q[beta_k]`` (``(K,)``): ``E[v_k] prod_{k'<k} (1 - E[v_k'])`` under independent sticks."""
        K = self.model.truncation
        if K == 1:
            return np.ones(1)
        mean = self.model.guide.stick_dist().mean.detach().cpu().double()
        before = torch.cat([torch.ones(1, dtype=mean.dtype), torch.cumprod(1 - mean, 0)])
        return (before * torch.cat([mean, torch.ones(1, dtype=mean.dtype)])).numpy()

    @property
    def target_probs(self) -> np.ndarray:
        """``(K, d)``: ``q(r_kj = 1)``, row 0 (observational) zero; the given targets for ``known``."""
        if self.known_targets is not None:
            return np.asarray(self.known_targets, dtype=float)
        probs = self.model.guide.target_probs().detach().cpu()
        return self.model.full_targets(probs).numpy()

    def _tensor(self, x) -> torch.Tensor:
        x = self.train_x if x is None else self.standardizer(x)
        if x is None:
            raise ValueError("pass the data: this result does not keep its training rows")
        param = next(self.model.parameters())
        return torch.as_tensor(np.asarray(x), dtype=param.dtype, device=param.device)

    @torch.no_grad()
    def assignment_probs(self, x=None) -> np.ndarray:
        """``q(z_i = k | x_i)`` for each row: ``(n, K)``; ``x`` in the original units (default: training data).

        Uses the amortised network with the posterior-mean embeddings (section 3.6).
        """
        xt = self._tensor(x)
        guide = self.model.guide
        return torch.softmax(guide.assignment_logits(xt, guide.embedding_loc), -1).cpu().numpy()

    def components_in_use(self, min_weight: float = 0.01) -> int:
        """Number of components with posterior mean weight above ``min_weight``."""
        return int((self.cluster_weights > min_weight).sum())

    def __getstate__(self) -> dict:  # the user's callbacks need not pickle
        state = dict(self.__dict__)
        if state.get("problem") is not None:
            state["problem"] = replace(state["problem"], callbacks=[])
        return state

    # ----------------------------------------------------------------- summary
    def summary(self) -> dict:
        """JSON-serialisable overview, written as ``summary.json`` by the CLI (every key: ``docs/outputs.md``).

        One key per quantity: the options are ``settings``, what the steps did ``records``, the
        bound of the returned fit ``elbo_per_row``, the last training step's one-draw ELBO
        ``last_step_elbo_per_row``.  Strict
        JSON: a non-finite number (an ELBO of a fit that never stepped...) is ``None``.
        """
        return strict_json({
            "variant": self.variant,
            "settings": self.settings,
            "records": self.records,
            "stop_reason": str(self.stop_reason),
            "steps": int(len(self.elbo_trace)),
            "elbo_per_row": float(self.elbo),
            "last_step_elbo_per_row": self.final_elbo,
            "final_h": self.final_h,
            "num_edges": int(self.adjacency.sum()),
            "components_in_use": self.components_in_use(),
            "cluster_weights": [round(float(w), 6) for w in self.cluster_weights],
            "wall_time_seconds": round(self.wall_time, 3),
            "variables": list(self.names),
        })


def strict_json(value):
    """``value`` with every non-finite float (and numpy scalar) replaced by ``None`` or a plain
    number, nested in dicts, lists and tuples: what ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value

"""Stochastic variational inference inside the augmented-Lagrangian loop of section 3.8.

The trainer owns the optimiser, the penalty state and the traces; it never touches Pyro's global
parameter store, so several models can be trained in one process.  Users who prefer their own
loop can drive ``pyro.infer.SVI`` with :class:`~pyro_causal.elbo.LatentInterventionELBO` and the
:class:`~pyro_causal.acyclicity.AugmentedLagrangian` themselves (``examples/custom_training_loop.py``).
"""
from __future__ import annotations

import copy
import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional

import networkx as nx
import pyro
import torch
from torch import Tensor

from . import checkpoint as _checkpoint
from .acyclicity import AugmentedLagrangian, PenaltySchedule, acyclicity, dag_from_probabilities
from .elbo import GRAPH_ESTIMATORS, elbo_terms
from .optim import Adam

logger = logging.getLogger(__name__)

STOP_REASONS = ("converged", "budget", "diverged", "stopped")
OUTLIER_WINDOW = 200
"""Recent accepted steps whose ELBO the outlier test compares against."""
OUTLIER_MIN_HISTORY = 50
OUTLIER_MAX_CONSECUTIVE = 10
"""After this many outliers in a row the level has really moved: the window restarts."""
OUTLIER_MIN_SPREAD = 0.1
"""Floor of the robust spread (nats per row), so a very steady trace does not flag small dips."""


@dataclass
class TrainingConfig:
    """Options of :class:`Trainer` (all keyword-only in :func:`pyro_causal.fit`).

    Attributes:
        learning_rate: Adam step size.
        batch_size: rows per step; ``None`` uses every row (full-batch).
        schedule: the augmented-Lagrangian :class:`~pyro_causal.acyclicity.PenaltySchedule`.
        supervision_weight: ``kappa`` of section 3.9 (rows with known regime).
        num_particles: samples of ``(A, U)`` averaged per step.
        log_every: steps between progress events.
        assignment: ``"exact"`` or ``"amortized"`` ``q(z)`` (see :func:`~pyro_causal.elbo.elbo_terms`).
        graph_estimator: ``"local"`` or ``"straight-through"`` edge gradients (same).
        tensorwise_edges: one second moment for the whole edge-logit matrix (see :mod:`.optim`).
        refit_steps: steps after the penalty loop with the edges restricted to the order found
            (:meth:`Trainer.start_refit`); 0 turns the refit off.
        outlier_tolerance: a step whose one-sample ELBO per row lies more than this many robust
            standard deviations (1.4826 x median absolute deviation) below the median of the
            last accepted steps updates only the edge logits (:meth:`Trainer.is_outlier`);
            ``None`` applies every step in full.
    """

    learning_rate: float = 3e-2
    batch_size: Optional[int] = None
    schedule: PenaltySchedule = field(default_factory=PenaltySchedule)
    supervision_weight: float = 0.5
    num_particles: int = 1
    log_every: int = 100
    assignment: str = "exact"
    graph_estimator: str = "straight-through"
    tensorwise_edges: bool = False
    refit_steps: int = 0
    outlier_tolerance: Optional[float] = 10.0

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.refit_steps < 0:
            raise ValueError(f"refit_steps must be >= 0, got {self.refit_steps}")
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {self.num_particles}")
        if self.outlier_tolerance is not None and not self.outlier_tolerance > 0:
            raise ValueError(f"outlier_tolerance must be > 0 or None, got {self.outlier_tolerance}")
        if self.graph_estimator not in GRAPH_ESTIMATORS:
            raise ValueError(
                f"unknown graph_estimator {self.graph_estimator!r}; choose one of {', '.join(GRAPH_ESTIMATORS)}"
            )


def make_optimizer(model, config: "TrainingConfig") -> torch.optim.Optimizer:
    """``torch.optim.Adam`` on every parameter, or (``tensorwise_edges``) Adam whose edge logits
    share one second moment (see :mod:`.optim`)."""
    if not config.tensorwise_edges:
        return torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    edges = model.guide.edge_logits
    others = [p for p in model.parameters() if p is not edges]
    return Adam([{"params": [edges], "tensorwise": True}, {"params": others}], lr=config.learning_rate)


@dataclass
class TrainingEvent:
    """What callbacks receive every ``log_every`` steps (``kind="step"``) and after each round.

    ``step`` counts the steps of the trainer that sent it; ``phase`` names that trainer's part of
    a fit (:func:`pyro_causal.fit` labels them: ``"penalty"``, ``"held refit"``, with prefixes
    such as ``"restart 2/3: "``); ``total`` is the number of steps of that phase where it is
    known in advance, else ``None``.
    """

    kind: str
    step: int
    round: int
    elbo: float
    h: float
    multiplier: float
    penalty: float
    phase: str = "penalty"
    total: Optional[int] = None


class Trainer:
    """Fits a :class:`~pyro_causal.model.LatentInterventionModel` to one data set.

    Args:
        model: the model (its ``guide`` attribute holds the variational parameters).
        x: ``(n, d)`` data, already on the model's device.
        regimes: ``(n,)`` ints, ``-1`` where unknown; ``None`` when all latent.
        targets: ``(K, d)`` known targets or ``None``.
        config: :class:`TrainingConfig`.
        callbacks: callables receiving a :class:`TrainingEvent`.
        checkpoint: a :class:`~pyro_causal.checkpoint.Checkpointing` (its ``folder`` and
            ``every``): :meth:`run` then saves the state at step boundaries.  In the main
            thread :meth:`run` always defers SIGINT to the end of the step (then raises
            :class:`~pyro_causal.checkpoint.TrainingInterrupted`), so the state after Ctrl-C is
            never half-updated (see :mod:`pyro_causal.checkpoint`).

    Example:
        >>> trainer = Trainer(model, x)
        >>> reason = trainer.run()           # or call trainer.step() yourself
        >>> trainer.elbo_trace[-1], trainer.h_trace[-1]
    """

    def __init__(
        self,
        model,
        x: Tensor,
        *,
        regimes: Optional[Tensor] = None,
        targets: Optional[Tensor] = None,
        config: Optional[TrainingConfig] = None,
        callbacks: Iterable[Callable[[TrainingEvent], None]] = (),
        checkpoint: Optional["_checkpoint.Checkpointing"] = None,
    ) -> None:
        self.model, self.x, self.regimes, self.targets = model, x, regimes, targets
        self.checkpoint = checkpoint
        self.checkpoint_tag = ""
        """Extra identity of the run (options outside ``config``) stored in its checkpoints."""
        self.divergence: Optional[str] = None
        self.config = config or TrainingConfig()
        self.callbacks: List[Callable[[TrainingEvent], None]] = list(callbacks)
        self.lagrangian = AugmentedLagrangian(self.config.schedule).to(x.device)
        self.optimizer = make_optimizer(model, self.config)
        self.step_count = 0
        self.steps_this_round = 0
        self.refit_done = 0
        self.lagrangian_stop: Optional[str] = None
        self.elbo_trace: List[float] = []
        self.h_trace: List[float] = []
        self.stop_reason: Optional[str] = None
        self.skipped_steps = 0
        self._recent: deque = deque(maxlen=OUTLIER_WINDOW)
        self._consecutive_outliers = 0
        self._last_good = self._snapshot()

    # ----------------------------------------------------------------- one step
    def constraint(self) -> Tensor:
        """``h(sigmoid(Lambda))`` of eq. 13."""
        return acyclicity(self.model.guide.edge_probs())

    def batch(self):
        """The rows of this step: all of them, or a fresh random subset of ``batch_size``."""
        n, size = self.x.shape[0], self.config.batch_size
        if size is None or size >= n:
            return self.x, self.regimes
        rows = torch.randperm(n, device=self.x.device)[:size]
        return self.x[rows], None if self.regimes is None else self.regimes[rows]

    def loss(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, elbo per row, h)`` for one batch; the loss is ``-objective / N + penalty``."""
        n = self.x.shape[0]
        x, regimes = self.batch()
        objective = elbo = x.new_zeros(())
        for _ in range(self.config.num_particles):
            terms = elbo_terms(
                self.model,
                x,
                regimes,
                self.targets,
                n,
                self.config.supervision_weight,
                self.config.assignment,
                graph_estimator=self.config.graph_estimator,
            )
            objective = objective + terms.objective / self.config.num_particles
            elbo = elbo + terms.elbo.detach() / self.config.num_particles
        h = self.constraint()
        return -objective / n + self.lagrangian(h), elbo / n, h

    def is_outlier(self, elbo: float) -> bool:
        """Whether a step's ELBO per row is far below the recent ones (then only the edges learn from it).

        The bound is estimated from one draw of ``(A, U)``: a rare draw (an edge of probability
        0.999 left out, an embedding in the tail of ``q(u)``) can score tens of nats per row
        below the others and give a gradient thousands of times larger.  Adam's second moment
        remembers such a gradient for thousands of steps, and the jump it takes can leave the
        mixture in a much worse state (seen on fits of ``examples/table1.py``).  Such draws do not
        move the density, mixture and assignment parameters, as large-scale training skips loss
        spikes; the edge logits still take the step, because a draw that left out an edge the
        data need is the one whose straight-through gradient defends that edge (with the whole
        step skipped, the prior and the penalty eroded true edges of cause-effect pairs from
        0.96 to 0.27 and one fit ended at -124 nats per row).  After
        :data:`OUTLIER_MAX_CONSECUTIVE` in a row the level has moved and the window restarts.
        """
        tolerance = self.config.outlier_tolerance
        if tolerance is None or len(self._recent) < OUTLIER_MIN_HISTORY:
            return False
        if self._consecutive_outliers >= OUTLIER_MAX_CONSECUTIVE:
            self._recent.clear()
            self._consecutive_outliers = 0
            return False
        median = statistics.median(self._recent)
        spread = 1.4826 * statistics.median(abs(v - median) for v in self._recent)
        return elbo < median - tolerance * max(spread, OUTLIER_MIN_SPREAD)

    def step(self) -> float:
        """One Adam step; returns the loss.  Non-finite losses raise ``FloatingPointError``.

        A step whose ELBO :meth:`is_outlier` is counted (``skipped_steps``) and updates only the
        edge logits.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if not self._finite():
            raise FloatingPointError(f"non-finite parameters at step {self.step_count}")
        try:
            loss, elbo, h = self.loss()
        except ValueError as error:  # torch's validation of a distribution built from overflowed values
            if "to satisfy the constraint" not in str(error):
                raise
            raise FloatingPointError(f"non-finite or invalid distribution parameters at step {self.step_count}") from None
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss.detach())} at step {self.step_count}")
        loss.backward()  # also for a skipped step: data-parallel processes reduce every backward
        value = float(elbo)
        if self.is_outlier(value):
            self.skipped_steps += 1
            self._consecutive_outliers += 1
            edges = self.model.guide.edge_logits  # only the edges learn from it (see is_outlier)
            for parameter in self.model.parameters():
                if parameter is not edges:
                    parameter.grad = None  # Adam skips parameters without a gradient
        else:
            self._consecutive_outliers = 0
            self._recent.append(value)
        self.optimizer.step()
        if not self._finite():
            raise FloatingPointError(f"non-finite parameters after step {self.step_count}")
        self.step_count += 1
        if self.lagrangian_stop is None:
            self.steps_this_round += 1
        else:
            self.refit_done += 1
        self.elbo_trace.append(value)
        self.h_trace.append(float(h.detach()))
        if self.step_count % self.config.log_every == 0:
            self._emit("step")
        return float(loss.detach())

    def _finite(self) -> bool:
        """Whether every parameter is finite (one device synchronisation)."""
        return bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())

    # ----------------------------------------------------------------- the loop
    def end_round(self) -> Optional[str]:
        """Multiplier/penalty update after a round; returns a stop reason or ``None``."""
        with torch.no_grad():
            h = float(self.constraint())
        self.lagrangian.update(h)
        self.steps_this_round = 0
        self._last_good = self._snapshot()
        self._emit("round")
        logger.info(
            "round %d step %d: elbo/row %.4f h %.3g multiplier %.3g penalty %.3g",
            int(self.lagrangian.rounds), self.step_count, self.elbo_trace[-1], h,
            float(self.lagrangian.multiplier), float(self.lagrangian.penalty),
        )
        if self.lagrangian.converged(h):
            return "converged"
        if self.lagrangian.exhausted():
            return "budget"
        return None

    def run(self) -> str:
        """Train until ``h`` is below tolerance or the budget is spent; returns why it stopped.

        Then, for ``config.refit_steps`` more steps, the edges are refitted inside the causal
        order found (:meth:`start_refit`).  A non-finite loss stops training with ``"diverged"``
        and restores the state at the end of the last completed round.  SIGINT is deferred to
        the end of the step; with ``checkpoint``, the state is saved every ``checkpoint.every``
        steps, at the end and on SIGINT.
        """
        self.stop_reason = None
        saving = self.checkpoint is not None and self.checkpoint.path is not None
        with _checkpoint.deferred_interrupts() as signals:
            try:
                while self.lagrangian_stop is None:
                    while self.steps_this_round < self.lagrangian.steps_in_round():
                        self.step()
                        self._at_step_boundary(signals)
                    self.lagrangian_stop = self.end_round()
                if self.refit_done < self.config.refit_steps:
                    if self.refit_done == 0:
                        self.start_refit()
                    while self.refit_done < self.config.refit_steps:
                        self.step()
                        self._at_step_boundary(signals)
                    self._last_good = self._snapshot()
            except FloatingPointError as error:
                logger.warning("training diverged (%s); restoring the last good state", error)
                self._restore(self._last_good)
                self.divergence = str(error)
                self.stop_reason = "diverged"
                return self.stop_reason
            if signals["interrupted"]:
                self._at_step_boundary(signals)  # saves and raises
            if saving:
                self.save_checkpoint(self.checkpoint.path)
        self.stop_reason = self.lagrangian_stop
        return self.stop_reason

    def _at_step_boundary(self, signals: dict) -> None:
        """Save a checkpoint every ``checkpoint.every`` steps; after a deferred SIGINT save one
        (with checkpointing) and raise :class:`~pyro_causal.checkpoint.TrainingInterrupted`."""
        saving = self.checkpoint is not None and self.checkpoint.path is not None
        if signals["interrupted"]:
            saved = f"; checkpoint saved in {self.save_checkpoint(self.checkpoint.path)}" if saving else ""
            raise _checkpoint.TrainingInterrupted(f"interrupted at step {self.step_count}{saved}")
        if saving and self.checkpoint.every and self.step_count % self.checkpoint.every == 0:
            self.save_checkpoint(self.checkpoint.path)

    def start_refit(self) -> None:
        """Restrict the graph to one causal order and let every edge of that order compete again.

        The penalty decides the order, but while it grows it can push both directions of an edge
        down together, and an edge whose probability collapsed gets almost no gradient.  With the
        order fixed (a topological order of the current DAG, ties broken towards nodes whose
        logits point outwards) every graph is acyclic, so the penalty is off; the edges against
        the order are forbidden and those along it restart at probability at least 1/2, so the
        likelihood and the prior alone decide which stay.
        """
        guide = self.model.guide
        with torch.no_grad():
            logits = guide.edge_logits
            dag = dag_from_probabilities(guide.edge_probs().cpu().numpy())
            outwards = (logits - logits.T).masked_fill(~guide.off_diagonal.bool(), 0.0).sum(1).cpu().numpy()
            graph = nx.from_numpy_array(dag, create_using=nx.DiGraph)
            order = list(nx.lexicographical_topological_sort(graph, key=lambda node: -outwards[node]))
            position = torch.empty(len(order), dtype=torch.long)
            position[torch.tensor(order)] = torch.arange(len(order))
            position = position.to(logits.device)
            along = position.unsqueeze(1) < position.unsqueeze(0)
            guide.forbidden |= ~along & guide.off_diagonal.bool() & ~guide.required
            logits.copy_(torch.where(along, logits.clamp_min(0.0), logits))
        self.optimizer.state.pop(logits, None)

    # ----------------------------------------------------------------- state
    def _emit(self, kind: str) -> None:
        event = TrainingEvent(
            kind, self.step_count, int(self.lagrangian.rounds), self.elbo_trace[-1] if self.elbo_trace else math.nan,
            self.h_trace[-1] if self.h_trace else math.nan, float(self.lagrangian.multiplier), float(self.lagrangian.penalty),
        )
        for callback in self.callbacks:
            callback(event)

    def state_dict(self) -> dict:
        """Everything needed to resume bit-for-bit: parameters, optimiser, penalty state, RNG, traces.

        Tensors and plain Python data only (``torch.load(..., weights_only=True)`` reads it).
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lagrangian": self.lagrangian.state_dict(),
            "step_count": self.step_count,
            "steps_this_round": self.steps_this_round,
            "refit_done": self.refit_done,
            "lagrangian_stop": self.lagrangian_stop,
            "elbo_trace": list(self.elbo_trace),
            "h_trace": list(self.h_trace),
            "skipped_steps": self.skipped_steps,
            "recent_elbos": list(self._recent),
            "consecutive_outliers": self._consecutive_outliers,
            "rng": _checkpoint.rng_state(cuda=self.x.device.type == "cuda"),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lagrangian.load_state_dict(state["lagrangian"])
        self.step_count = state["step_count"]
        self.steps_this_round = state["steps_this_round"]
        self.refit_done = state.get("refit_done", 0)
        self.lagrangian_stop = state.get("lagrangian_stop")
        self.elbo_trace = list(state["elbo_trace"])
        self.h_trace = list(state["h_trace"])
        self._restore_outlier_state(state)
        rng = state["rng"]
        (_checkpoint.set_rng_state if "python" in rng else pyro.util.set_rng_state)(rng)

    def _restore_outlier_state(self, state: dict) -> None:
        self.skipped_steps = state.get("skipped_steps", 0)
        self._recent = deque(state.get("recent_elbos", ()), maxlen=OUTLIER_WINDOW)
        self._consecutive_outliers = state.get("consecutive_outliers", 0)

    def fingerprint(self) -> str:
        """What this run's checkpoints must match: data, regimes, targets, options, parameter shapes."""
        shapes = [(name, tuple(p.shape)) for name, p in self.model.state_dict().items()]
        return _checkpoint.fingerprint(self.x, self.regimes, self.targets, repr(self.config), repr(shapes),
                                       type(self.model).__name__, self.checkpoint_tag)

    def save_checkpoint(self, path):
        """Save :meth:`state_dict` (plus the last good state and :meth:`fingerprint`) atomically;
        returns the path."""
        state = self.state_dict()
        state["last_good"] = self._last_good
        state["fingerprint"] = self.fingerprint()
        return _checkpoint.save_checkpoint(state, path)

    def load_checkpoint(self, path, check: bool = False) -> None:
        """Continue from a checkpoint (read with ``weights_only=True``).

        With ``check``, a checkpoint written for other data or options raises ``ValueError``.
        """
        state = _checkpoint.load_checkpoint(path, map_location=self.x.device)
        if check and state.get("fingerprint") != self.fingerprint():
            raise ValueError(f"{path}: this checkpoint was written by a fit of other data or options")
        self.load_state_dict(state)
        if "last_good" in state:
            self._last_good = state["last_good"]

    def _snapshot(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.state_dict().items() if k != "rng"})

    def _restore(self, snapshot: dict) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.lagrangian.load_state_dict(snapshot["lagrangian"])
        self.step_count, self.steps_this_round = snapshot["step_count"], snapshot["steps_this_round"]
        self.refit_done, self.lagrangian_stop = snapshot["refit_done"], snapshot["lagrangian_stop"]
        self.elbo_trace, self.h_trace = list(snapshot["elbo_trace"]), list(snapshot["h_trace"])
        self._restore_outlier_state(snapshot)

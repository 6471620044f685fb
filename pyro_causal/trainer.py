"""Stochastic variational inference inside the augmented-Lagrangian loop of section 3.8.

Every step is ``pyro.infer.SVI(model.model, model.guide, ModuleAdam(model), loss).step(...)``
whose loss is :class:`~pyro_causal.elbo.LatentInterventionELBO` (read from the traces of the two
programs) per row plus the penalty on ``h(sigmoid(Lambda))``.  The trainer owns the optimiser, the
penalty state and the traces; each model has its own parameter names, so several models train
independently in one process.  Users who prefer their own loop can drive ``SVI`` with the ELBO and
:class:`~pyro_causal.acyclicity.AugmentedLagrangian` themselves (``examples/custom_training_loop.py``).
"""
from __future__ import annotations

import copy
import logging
import math
import statistics
from collections import deque
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Iterable, Iterator, List, Optional

import pyro
import torch
from pyro.infer import SVI
from torch import Tensor

from . import checkpoint as _checkpoint
from .acyclicity import AugmentedLagrangian, PenaltySchedule, acyclicity, support_is_acyclic
from .elbo import ASSIGNMENTS, GRAPH_ESTIMATORS, LatentInterventionELBO
from .optim import ModuleAdam
from .resources import freed_memory_kept

logger = logging.getLogger(__name__)

class StopReason(str, Enum):
    """Why training stopped (a ``str``: ``reason == "converged"`` holds)."""

    CONVERGED = "converged"  #: ``h`` fell below the schedule's tolerance
    BUDGET = "budget"  #: the schedule's last round ended first
    DIVERGED = "diverged"  #: a non-finite loss or parameter; the last good state was restored

    def __str__(self) -> str:
        return self.value
OUTLIER_WINDOW = 200
"""Recent accepted steps whose ELBO the outlier test compares against."""
OUTLIER_MIN_HISTORY = 50
OUTLIER_MAX_CONSECUTIVE = 10
"""After this many outliers in a row the level has really moved: the window restarts."""
OUTLIER_MIN_SPREAD = 0.1
"""Floor of the robust spread (nats per row), so a very steady trace does not flag small dips."""
COLLAPSE_WINDOW = 50
"""Steps per window of the collapse guard (:meth:`Trainer.guard_collapse`)."""
COLLAPSE_MIN_STEPS = 10
"""A window cut short by the end of a round is judged only with at least this many steps."""


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
        assignment: ``"optimal"`` or ``"amortized"`` ``q(z)`` (see :mod:`~pyro_causal.elbo`).
        graph_estimator: ``"local"`` or ``"straight-through"`` edge gradients (same).
        outlier_tolerance: a step whose one-sample ELBO per row lies more than this many robust
            standard deviations (1.4826 x median absolute deviation) below the median of the
            last accepted steps updates only the edge logits (:meth:`Trainer.is_outlier`), and a
            window of steps whose median loss lies as far above the best window so far rolls
            the parameters back (:meth:`Trainer.guard_collapse`); ``None`` turns both off.
    """

    learning_rate: float = 3e-2
    batch_size: Optional[int] = None
    schedule: PenaltySchedule = field(default_factory=PenaltySchedule)
    supervision_weight: float = 0.5
    num_particles: int = 1
    log_every: int = 100
    assignment: str = "optimal"
    graph_estimator: str = "straight-through"
    outlier_tolerance: Optional[float] = 10.0

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {self.num_particles}")
        if self.outlier_tolerance is not None and not self.outlier_tolerance > 0:
            raise ValueError(f"outlier_tolerance must be > 0 or None, got {self.outlier_tolerance}")
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"unknown assignment {self.assignment!r}; choose one of {', '.join(ASSIGNMENTS)}")
        if self.graph_estimator not in GRAPH_ESTIMATORS:
            raise ValueError(
                f"unknown graph_estimator {self.graph_estimator!r}; choose one of {', '.join(GRAPH_ESTIMATORS)}"
            )


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
        self.elbo = LatentInterventionELBO(
            num_particles=1, supervision_weight=self.config.supervision_weight,
            assignment=self.config.assignment, graph_estimator=self.config.graph_estimator,
        )
        self.optimizer = ModuleAdam(model, lr=self.config.learning_rate)
        self.svi = SVI(model.model, model.guide, self.optimizer, loss=self.elbo.loss, loss_and_grads=self._loss_and_grads)
        self._last_step: Optional[tuple] = None
        self._checked_finite = False  # whether the parameters were checked since they last changed
        self.step_count = 0
        self.steps_this_round = 0
        self.lagrangian_stop: Optional[StopReason] = None
        self.elbo_trace: List[float] = []
        self.h_trace: List[float] = []
        self.stop_reason: Optional[StopReason] = None
        self.skipped_steps = 0
        self._recent: deque = deque(maxlen=OUTLIER_WINDOW)
        self._consecutive_outliers = 0
        self.rollbacks = 0
        self._window: List[tuple] = []  # (loss without the penalty, h) of this window's steps
        self._window_start: Optional[dict] = None
        self._best_window: Optional[dict] = None
        self._last_good = self._snapshot()

    # ----------------------------------------------------------------- one step
    def constraint(self) -> Tensor:
        """``h(sigmoid(Lambda))`` of eq. 13; a constant zero when the edges of non-zero probability
        form a DAG (an order or a graph held), where ``h`` and its gradient in those edges vanish."""
        probs = self.model.guide.edge_probs()
        if support_is_acyclic(probs.detach() != 0):
            return probs.new_zeros(())
        return acyclicity(probs)

    def batch_rows(self) -> Optional[Tensor]:
        """The rows of this step: ``None`` (all of them) or a fresh random subset of ``batch_size``."""
        n, size = self.x.shape[0], self.config.batch_size
        if size is None or size >= n:
            return None
        return torch.randperm(n, device=self.x.device)[:size]

    def objective(self, model, guide, x, regimes=None, targets=None, rows=None) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, elbo per row, h)`` of the programs on one batch: ``-objective / N + penalty``,
        the objective averaged over ``num_particles`` draws."""
        n = x.shape[0]
        objective = elbo = x.new_zeros(())
        for _ in range(self.config.num_particles):
            terms = self.elbo.terms(model, guide, x, regimes, targets, rows=rows)
            objective = objective + terms.objective / self.config.num_particles
            elbo = elbo + terms.elbo.detach() / self.config.num_particles
        h = self.constraint()
        return -objective / n + self.lagrangian(h), elbo / n, h

    def loss(self) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`objective` of the model's programs on a fresh batch."""
        return self.objective(self.model.model, self.model.guide, self.x, self.regimes, self.targets,
                              rows=self.batch_rows())

    def _loss_and_grads(self, model, guide, *args, **kwargs) -> Tensor:
        """SVI's loss-and-gradient callable: the loss of :meth:`objective`, its backward pass, and
        the outlier rule (:meth:`is_outlier`) applied to the gradients before SVI's optimiser step."""
        loss, elbo, h = self.objective(model, guide, *args, **kwargs)
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
        self._last_step = (value, float(h.detach()))
        return loss.detach()

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
        """One SVI step; returns the loss.  Non-finite losses raise ``FloatingPointError``.

        A step whose ELBO :meth:`is_outlier` is counted (``skipped_steps``) and updates only the
        edge logits.
        """
        self.optimizer.zero_grad()
        if not self._window and self.config.outlier_tolerance is not None:
            self._window_start = self._parameters()  # where guard_collapse would return to
        if not self._checked_finite and not self._finite():
            raise FloatingPointError(f"non-finite parameters at step {self.step_count}")
        try:
            with pyro.validation_enabled(False):  # parameters are checked finite before and after
                loss = self.svi.step(self.x, self.regimes, self.targets, rows=self.batch_rows())
        except ValueError as error:  # torch's validation of a distribution built from overflowed values
            if "to satisfy the constraint" not in str(error):
                raise
            raise FloatingPointError(f"non-finite or invalid distribution parameters at step {self.step_count}") from None
        self._checked_finite = self._finite()  # the next step need not check again
        if not self._checked_finite:
            raise FloatingPointError(f"non-finite parameters after step {self.step_count}")
        value, h = self._last_step
        self.step_count += 1
        self.steps_this_round += 1
        self.elbo_trace.append(value)
        self.h_trace.append(h)
        self.guard_collapse(float(loss), h)
        if self.step_count % self.config.log_every == 0:
            self._emit("step")
        return float(loss)

    def guard_collapse(self, loss: float, h: float = 0.0) -> bool:
        """Roll the parameters back when training has collapsed; returns whether it did.

        ``loss``: the step's loss per row; ``h``: its constraint.  Steps are judged in windows
        of :data:`COLLAPSE_WINDOW` (and the rest of a round).  Each step's loss is kept as its
        part without the penalty and its ``h``, so that every window, also one of an earlier
        round, is scored with the current multiplier and penalty (``phi h + mu / 2 h^2``).  A
        window whose median loss lies more than ``outlier_tolerance`` robust standard deviations
        (at least :data:`OUTLIER_MIN_SPREAD`) above the best window's, both so scored, means
        that training has left the basin it was in: e.g. a run of rare draws let an untrained
        edge in, Adam's steps on their gradients moved the mechanisms, and the scales then grew
        without bound (seen on cause-effect pairs: the bound per row fell from -2.5 to -11 in
        150 steps, also across the end of a round).  The parameters, Adam's state and the
        outlier window are then restored to the start of the best window; the step count, the
        traces and the random stream go on, so a round still ends after its steps.
        """
        if self.config.outlier_tolerance is None:
            return False
        self._window.append((loss - self._penalty(h), h))
        round_over = self.steps_this_round == self.lagrangian.steps_in_round()
        if len(self._window) < COLLAPSE_WINDOW and not round_over:
            return False
        window, self._window = self._window, []
        if len(window) < COLLAPSE_MIN_STEPS:
            return False
        median, _ = self._scored(window)
        best = self._best_window
        best_median, spread = self._scored(best["steps"]) if best is not None else (math.inf, 0.0)
        if median < best_median:
            self._best_window = {"steps": window, "state": self._window_start}
            return False
        if median <= best_median + self.config.outlier_tolerance * max(spread, OUTLIER_MIN_SPREAD):
            return False
        logger.warning("training collapsed at step %d (median loss per row %.3g against %.3g): "
                       "restoring the start of the best window", self.step_count, median, best_median)
        self._load_parameters(best["state"])
        self.rollbacks += 1
        return True

    def _penalty(self, h: float) -> float:
        return float(self.lagrangian.multiplier) * h + 0.5 * float(self.lagrangian.penalty) * h * h

    def _scored(self, steps) -> tuple[float, float]:
        """``(median, 1.4826 x MAD)`` of the losses of ``steps`` (``(loss without penalty, h)``
        pairs) with the current penalty."""
        losses = [base + self._penalty(h) for base, h in steps]
        median = statistics.median(losses)
        return median, 1.4826 * statistics.median(abs(v - median) for v in losses)

    def _finite(self) -> bool:
        """Whether every parameter is finite (one device synchronisation)."""
        # A sum is finite only if every term is (NaN and inf propagate).
        return bool(torch.isfinite(torch.stack([p.sum() for p in self.model.parameters()]).sum()))

    # ----------------------------------------------------------------- the loop
    def end_round(self) -> Optional[StopReason]:
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
            return StopReason.CONVERGED
        if self.lagrangian.exhausted():
            return StopReason.BUDGET
        return None

    def run(self) -> StopReason:
        """Train until ``h`` is below tolerance or the budget is spent; returns why it stopped.

        A non-finite loss stops training with ``"diverged"``
        and restores the state at the end of the last completed round.  SIGINT is deferred to
        the end of the step; with ``checkpoint``, the state is saved every ``checkpoint.every``
        steps, at the end and on SIGINT.
        """
        self.stop_reason = None
        saving = self.checkpoint is not None and self.checkpoint.path is not None
        release = getattr(self.model, "release_params", lambda: None)
        release()
        try:
            with freed_memory_kept():
                return self._run(saving)
        finally:
            release()

    def _run(self, saving: bool) -> StopReason:
        with _checkpoint.deferred_interrupts() as signals:
            try:
                while self.lagrangian_stop is None:
                    while self.steps_this_round < self.lagrangian.steps_in_round():
                        self.step()
                        self._at_step_boundary(signals)
                    self.lagrangian_stop = self.end_round()
            except FloatingPointError as error:
                logger.warning("training diverged (%s); restoring the last good state", error)
                self._restore(self._last_good)
                self.divergence = str(error)
                self.stop_reason = StopReason.DIVERGED
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
            "optimizer": self.optimizer.get_state(),
            "lagrangian": self.lagrangian.state_dict(),
            "step_count": self.step_count,
            "steps_this_round": self.steps_this_round,
            "lagrangian_stop": None if self.lagrangian_stop is None else self.lagrangian_stop.value,
            "elbo_trace": list(self.elbo_trace),
            "h_trace": list(self.h_trace),
            "skipped_steps": self.skipped_steps,
            "recent_elbos": list(self._recent),
            "consecutive_outliers": self._consecutive_outliers,
            "collapse_guard": {"rollbacks": self.rollbacks, "window": [list(step) for step in self._window],
                               "window_start": self._window_start, "best_window": self._best_window},
            "rng": _checkpoint.rng_state(cuda=self.x.device.type == "cuda"),
        }

    def load_state_dict(self, state: dict) -> None:
        self._checked_finite = False
        self.model.load_state_dict(state["model"])
        self.optimizer.set_state(state["optimizer"])
        self.lagrangian.load_state_dict(state["lagrangian"])
        self.step_count = state["step_count"]
        self.steps_this_round = state["steps_this_round"]
        self.lagrangian_stop = None if state.get("lagrangian_stop") is None else StopReason(state["lagrangian_stop"])
        self.elbo_trace = list(state["elbo_trace"])
        self.h_trace = list(state["h_trace"])
        self._restore_outlier_state(state)
        guard = state.get("collapse_guard")
        if guard is not None:
            self.rollbacks, self._window = guard["rollbacks"], [tuple(step) for step in guard["window"]]
            self._window_start, self._best_window = guard["window_start"], guard["best_window"]
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
        return copy.deepcopy({k: v for k, v in self.state_dict().items() if k not in ("rng", "collapse_guard")})

    def _parameters(self) -> dict:
        """A copy of what :meth:`guard_collapse` restores: parameters, Adam's state, the outlier window."""
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.get_state(),
                              "recent_elbos": list(self._recent), "consecutive_outliers": self._consecutive_outliers})

    def _load_parameters(self, state: dict) -> None:
        self._checked_finite = False
        self.model.load_state_dict(state["model"])
        self.optimizer.set_state(copy.deepcopy(state["optimizer"]))
        self._recent = deque(state.get("recent_elbos", ()), maxlen=OUTLIER_WINDOW)  # absent in older checkpoints
        self._consecutive_outliers = state.get("consecutive_outliers", 0)

    def _restore(self, snapshot: dict) -> None:
        self._load_parameters(snapshot)
        self.skipped_steps = snapshot.get("skipped_steps", 0)
        self.lagrangian.load_state_dict(snapshot["lagrangian"])
        self.step_count, self.steps_this_round = snapshot["step_count"], snapshot["steps_this_round"]
        self.lagrangian_stop = None if snapshot["lagrangian_stop"] is None else StopReason(snapshot["lagrangian_stop"])
        self.elbo_trace, self.h_trace = list(snapshot["elbo_trace"]), list(snapshot["h_trace"])


_TRAINER_CLASS: ContextVar = ContextVar("trainer_class", default=None)


@contextmanager
def trainer_class(factory: Callable[..., Trainer]) -> Iterator[None]:
    """Inside the block :func:`build_trainer` (and so :func:`pyro_causal.fit`) builds its trainers
    with ``factory`` (same arguments as :class:`Trainer`), e.g. a data-parallel trainer."""
    token = _TRAINER_CLASS.set(factory)
    try:
        yield
    finally:
        _TRAINER_CLASS.reset(token)


def build_trainer(*args, **kwargs) -> Trainer:
    """A :class:`Trainer`, or what the enclosing :func:`trainer_class` block builds instead."""
    return (_TRAINER_CLASS.get() or Trainer)(*args, **kwargs)

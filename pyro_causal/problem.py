"""What a fit was asked to solve, kept on its result so that later steps refit it the same way.

A :class:`Problem` holds the prepared data (tensors on the fit's device), how to build a fresh
model for a seed, the resolved :class:`~pyro_causal.trainer.TrainingConfig`, and how a model's
bound is scored.  :func:`pyro_causal.fit`, the held refit and the edge search all go through it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, List, Optional, Union

import numpy as np
import pyro
import torch
from torch import Tensor

from .config import ModelOptions, Priors
from .densities import ConditionalDensity
from .elbo import mean_elbo
from .model import LatentInterventionModel
from .trainer import StopReason, Trainer, TrainingConfig, TrainingEvent, build_trainer


SCORE_CHUNK_ROWS = 256
"""Fewest rows per chunk when a fit scores its bound (with ``batch_size``, chunks of
``max(batch_size, SCORE_CHUNK_ROWS)`` rows): scoring one row at a time costs minutes."""


def tagged(callbacks: Iterable[Callable[[TrainingEvent], None]], prefix: str = "", phase: Optional[str] = None,
           total: Optional[int] = None) -> list:
    """``callbacks`` behind one forwarder that labels each event's ``phase`` (``"prefix: phase"``)."""
    callbacks = list(callbacks)

    def forward(event: TrainingEvent) -> None:
        label = phase or event.phase
        event = replace(event, phase=f"{prefix}: {label}" if prefix else label,
                        total=event.total if total is None else total)
        for callback in callbacks:
            callback(event)

    return [forward] if callbacks else []


def best_of_seeds(seeds: Iterable[int], fit_seed: Callable[[int], tuple]) -> tuple:
    """``fit_seed(seed) -> (score, outcome)`` for each seed; returns ``(outcome, records)`` of the
    highest score (the first on ties), ``records`` holding ``chosen_seed`` and ``restart_elbos``
    when there was more than one seed."""
    seeds, best, scores = list(seeds), None, []
    for seed in seeds:
        score, outcome = fit_seed(seed)
        scores.append(score)
        if best is None or score > best[0]:
            best = (score, seed, outcome)
    records = {"chosen_seed": best[1], "restart_elbos": [round(float(v), 6) for v in scores]} if len(seeds) > 1 else {}
    return best[2], records


def held_config(config: TrainingConfig) -> TrainingConfig:
    """``config`` for a held graph or order: one penalty round."""
    return replace(config, schedule=replace(config.schedule, max_rounds=1))


@dataclass
class Problem:
    """The data and recipe of one fit.

    Attributes:
        x: ``(n, d)`` prepared (standardised) data on the fit's device.
        regimes, targets: ``(n,)`` regimes (``-1`` unknown) and ``(R, d)`` targets, or ``None``.
        density: the density name or the user's object as given (copied for every model).
        intervention, truncation: as resolved by ``fit``.
        priors, model_options: how each model is built.
        training: the resolved :class:`TrainingConfig` of the penalty loop.
        seed, num_threads: of the fit.
        callbacks: the user's callbacks.
        given_model: ``fit(model=...)``: every model is a copy of it.
    """

    x: Tensor
    regimes: Optional[Tensor]
    targets: Optional[Tensor]
    density: Union[str, ConditionalDensity]
    intervention: str
    truncation: int
    priors: Priors
    model_options: ModelOptions
    training: TrainingConfig
    seed: int
    num_threads: int
    callbacks: List[Callable[[TrainingEvent], None]] = field(default_factory=list)
    given_model: Optional[LatentInterventionModel] = None

    @property
    def shape(self):
        return tuple(self.x.shape)

    def build(self, seed: int, density=None) -> LatentInterventionModel:
        """A fresh model, initialised from ``seed`` (``density``: an object to use as is)."""
        pyro.set_rng_seed(seed)
        device = self.x.device
        if self.given_model is not None:
            return copy.deepcopy(self.given_model).to(device)
        if density is None:
            density = copy.deepcopy(self.density) if isinstance(self.density, ConditionalDensity) else self.density
        options = self.model_options
        return LatentInterventionModel(
            self.x.shape[1], density=density, truncation=self.truncation, embedding_dim=options.embedding_dim,
            alpha=self.priors.alpha, target_logit=self.priors.target_logit,
            edge_logit=torch.as_tensor(np.asarray(self.priors.edge_logit, dtype=float), dtype=torch.get_default_dtype()),
            intervention=self.intervention, density_options=options.density_options,
            two_cycles=options.two_cycles, **options.extra,
        ).to(device)

    def trainer(self, model, config: Optional[TrainingConfig] = None, callbacks=(), checkpoint=None) -> Trainer:
        """A trainer of ``model`` on the data (``config`` defaults to the fit's)."""
        return build_trainer(model, self.x, regimes=self.regimes, targets=self.targets,
                             config=config or self.training, callbacks=list(callbacks), checkpoint=checkpoint)

    @property
    def score_rows(self) -> Optional[int]:
        """Rows per chunk when a bound is scored (``None``: all at once)."""
        batch = self.training.batch_size
        return None if batch is None else max(batch, SCORE_CHUNK_ROWS)

    def score(self, model, seed: int, stop_reason=None) -> float:
        """The bound per row of ``model`` (16 draws, ``z`` summed out); ``-inf`` when it diverged."""
        model.eval()
        if stop_reason == StopReason.DIVERGED:
            return -math.inf
        return mean_elbo(model, self.x, self.regimes, self.targets, seed=seed, batch_size=self.score_rows)[0]

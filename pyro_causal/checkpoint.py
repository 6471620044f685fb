"""Checkpoints of a training run: what is saved, how it is written and read, and Ctrl-C.

A checkpoint is the whole state of a :class:`~pyro_causal.trainer.Trainer` at a step boundary
(model and optimiser state dicts, penalty state, step counters, traces, outlier window, the
last good state, and the torch, CUDA, NumPy and Python random states), saved with
``torch.save`` as tensors and plain Python data only, so that ``torch.load(...,
weights_only=True)`` reads it and no code in a checkpoint can run.  It is written atomically
(:func:`pyro_causal.io.atomic_write`): a scratch file, then a rename.

While a trainer runs (in the main thread), SIGINT (Ctrl-C) is deferred to the end of the current
step: the checkpoint, if any, is saved there and :class:`TrainingInterrupted` raised, so a
resumed run takes exactly the steps the interrupted one would have taken.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch

from .io import CHECKPOINT_FILE, DataError, PathLike, atomic_write
"""Name of the checkpoint file inside :attr:`Checkpointing.folder`."""


@dataclass
class Checkpointing:
    """Where :func:`pyro_causal.fit` saves its training state, how often, and what it resumes.

    A checkpoint covers the main training loop of a single fit (``restarts=1``): the penalty
    rounds.  What follows training (the held refit, the edge search) is
    rerun from the end-of-training checkpoint, with the same result.

    Attributes:
        folder: the checkpoint goes to ``folder / "checkpoint.pt"`` (the folder is created when
            first written); it is written at the end of training, when SIGINT arrives, and
            every ``every`` steps.
        every: steps between checkpoints; ``None`` only at the end and on SIGINT.
        resume: a folder holding ``checkpoint.pt`` (or the file itself) to continue from; it
            must have been written by the same fit (same data and options).

    Example:
        >>> result = fit(x, checkpoint=Checkpointing("runs/a", every=100))   # Ctrl-C, then:
        >>> result = fit(x, checkpoint=Checkpointing("runs/a", every=100, resume="runs/a"))
    """

    folder: Optional[PathLike] = None
    every: Optional[int] = None
    resume: Optional[PathLike] = None

    def __post_init__(self) -> None:
        if self.every is not None:
            if isinstance(self.every, bool) or not isinstance(self.every, (int, np.integer)) or self.every < 1:
                raise ValueError(f"checkpoint every must be an integer >= 1, got {self.every!r}")
            if self.folder is None:
                raise ValueError("checkpoint every needs a folder to write to")

    @property
    def path(self) -> Optional[Path]:
        """The file written, or ``None``."""
        return None if self.folder is None else Path(self.folder).expanduser() / CHECKPOINT_FILE

    @property
    def resume_path(self) -> Optional[Path]:
        """The checkpoint file to resume from, or ``None``."""
        if self.resume is None:
            return None
        path = Path(self.resume).expanduser()
        return path / CHECKPOINT_FILE if path.is_dir() else path


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT stopped training at a step boundary; the message says where the checkpoint is."""


# ----------------------------------------------------------------------------- random state
def rng_state(cuda: bool = False) -> dict:
    """Torch (and, with ``cuda``, every CUDA device's), NumPy and Python random states as
    tensors and plain lists."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- files
def fingerprint(*parts: Union[str, torch.Tensor, None]) -> str:
    """A SHA-256 of tensors (their bytes, shape and dtype) and strings: what a checkpoint was made for."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous()
            digest.update(f"{tuple(part.shape)}{part.dtype}".encode())
            digest.update(part.numpy().tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()


def save_checkpoint(state: dict, path: PathLike) -> Path:
    """``torch.save(state, path)``, atomically; the folder is created when missing."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda scratch: torch.save(state, scratch))


def load_checkpoint(path: PathLike, map_location=None) -> dict:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        DataError: no such file, or not a checkpoint of plain data.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling errors have many types
        first = str(error).strip().split(".")[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise DataError(f"{path}: not a pyro_causal checkpoint")
    return state


@contextlib.contextmanager
def deferred_interrupts(enabled: bool = True) -> Iterator[dict]:
    """Within the block SIGINT only sets ``flag["interrupted"]``; a second SIGINT raises at once.

    Does nothing outside the main thread (where signal handlers cannot be set) or when not
    ``enabled``.
    """
    flag = {"interrupted": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["interrupted"]:
            raise KeyboardInterrupt
        flag["interrupted"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)

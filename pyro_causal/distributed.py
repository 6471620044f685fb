"""Data-parallel training over several processes with ``torch.distributed`` (section 3.8's loop).

Every process holds the whole data set and an identical copy of the model.  At each step all
processes draw the same batch rows and the same ``(A, U)`` samples (same seed, same sequence of
random calls), process ``r`` of ``W`` evaluates the local part of the bound on rows ``r::W`` of
the batch, :class:`~torch.nn.parallel.DistributedDataParallel` sums the gradients, and every
process takes the same Adam step, so parameters, penalty state and traces stay identical.

The per-process loss is chosen so that DDP's gradient *average* equals the one-process
gradient of ``-objective / N + penalty`` on the whole batch (eq. 13):

    loss_r = -(W * local_r - KL) / N + penalty(h),   local_r = (N / B) sum_{i in shard r} ...

so the dataset-level KL terms and the acyclicity penalty are counted once in total, the local
terms keep the one-process scale ``N / B`` (``B`` the whole batch, not the shard).

Ways in: ``fit_distributed(x, processes=4, ...)`` and ``pyro-causal fit --processes 4`` spawn
the processes (one machine); ``torchrun ... -m pyro_causal.distributed [fit options]`` runs under
``torchrun`` on one or several machines (``docs/distributed.md``).
Backends: ``gloo`` on CPU, ``nccl`` on CUDA (process ``r`` uses GPU ``LOCAL_RANK``).
"""
from __future__ import annotations

import inspect
import os
import pickle
import socket
import sys
from dataclasses import replace
from typing import Any, Callable, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from . import api
from .config import FitConfig
from .model import default_truncation
from .resources import choose_batch_size, choose_num_threads
from .result import FitResult
from .trainer import Trainer, TrainingEvent, trainer_class

__all__ = ["DistributedTrainer", "ShardObjective", "fit_distributed", "is_primary", "launch", "launched_by_torchrun"]


# Buffers (masks, penalty state) are identical on every process: no need to broadcast them each step.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


# --------------------------------------------------------------------------- process group
def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another ``env://`` launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def is_primary() -> bool:
    """True on rank 0 of the process group, and in any process outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def default_backend(device: Any) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def _local_device(device: Any) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` when ``device`` is a CUDA device."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.get_rank() % torch.cuda.device_count())))
    torch.cuda.set_device(local)
    return local


# --------------------------------------------------------------------------- the sharded loss
class ShardObjective(nn.Module):
    """The per-process loss, as a module for :class:`DistributedDataParallel` to wrap.

    Args:
        trainer: the :class:`Trainer` whose model, ELBO, penalty state and options are used.
        world_size: ``W``, number of processes.

    ``forward(rows, batch_rows)`` takes this process's share ``rows`` (indices into the data) of
    a batch of ``batch_rows`` (``B``) rows and returns ``(loss_r, parts, h)``: the scalar loss to
    differentiate (see the module docstring), the detached ``(3,)`` tensor ``[objective_r,
    elbo_r, global]`` (this shard's local terms of the training objective and of the bound, to be
    summed over processes, and the dataset-level terms ``log p(observed) - KL``, the same on
    every process), and ``h(sigmoid(Lambda))``.  The terms come from the trainer's
    :class:`~pyro_causal.elbo.LatentInterventionELBO` on the model's programs with the ``data``
    plate subsampled to ``rows``.
    """

    def __init__(self, trainer: Trainer, world_size: int) -> None:
        super().__init__()
        self.model, self.lagrangian, self.elbo = trainer.model, trainer.lagrangian, trainer.elbo
        self.x, self.regimes, self.targets = trainer.x, trainer.regimes, trainer.targets
        self.config, self.world_size = trainer.config, world_size
        self._constraint = trainer.constraint

    def forward(self, rows: Tensor, batch_rows: int) -> Tuple[Tensor, Tensor, Tensor]:
        n, config = self.x.shape[0], self.config
        share = rows.shape[0] / batch_rows  # the plate scales the shard by N / B_r; the batch's is N / B
        objective = elbo = global_ = self.x.new_zeros(())
        for _ in range(config.num_particles):
            terms = self.elbo.terms(self.model.model, self.model.guide, self.x, self.regimes, self.targets, rows=rows)
            dataset = terms.observed - sum(terms.kl.values(), self.x.new_zeros(()))
            local = share * (terms.local + terms.auxiliary)
            objective = objective + local / config.num_particles
            elbo = elbo + (share * terms.local).detach() / config.num_particles
            global_ = global_ + dataset / config.num_particles
        h = self._constraint()
        loss = -(self.world_size * objective + global_) / n + self.lagrangian(h)
        return loss, torch.stack([objective.detach(), elbo, global_.detach()]), h


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose steps are shared by the processes of a ``torch.distributed`` group.

    Same arguments as :class:`Trainer`; the process group must be initialised first, and every
    process must construct it with the same data, options and random state (``fit`` seeds them
    all alike).  ``loss()`` returns the one-process loss value and ELBO (summed over processes)
    while its gradient is this process's share; after ``backward()`` DDP has made the gradients
    equal to the one-process full-batch gradient on every process.

    Example:
        >>> dist.init_process_group("gloo")         # e.g. under torchrun
        >>> pyro.set_rng_seed(0)                     # same seed on every process
        >>> trainer = DistributedTrainer(model, x)   # x: the whole (n, d) data set
        >>> trainer.run()
    """

    def __init__(self, model, x: Tensor, **kwargs) -> None:
        super().__init__(model, x, **kwargs)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        device_ids = [x.device.index] if x.device.type == "cuda" else None
        # static_graph: the same parameters are used at every step (some never, e.g. the encoder
        # with assignment="optimal"), which DDP then handles without a search of the graph.
        self.shard_objective = DistributedDataParallel(
            ShardObjective(self, self.world_size), device_ids=device_ids, static_graph=True, **_NO_BUFFER_SYNC
        )

    def objective(self, model, guide, x, regimes=None, targets=None, rows=None) -> Tuple[Tensor, Tensor, Tensor]:
        """``(loss, elbo per row, h)`` as in :meth:`Trainer.objective`, for this process's shard
        of the batch ``rows`` (``None``: every row)."""
        if model != self.model.model or guide is not self.model.guide:
            raise ValueError("a DistributedTrainer trains the programs of its own model")
        n = x.shape[0]
        rows = torch.arange(n, device=x.device) if rows is None else rows  # the same rows on every process
        batch_rows = rows.shape[0]
        if batch_rows < self.world_size:
            raise ValueError(f"a batch of {batch_rows} rows cannot be shared by {self.world_size} processes")
        local_loss, parts, h = self.shard_objective(rows[self.rank::self.world_size], batch_rows)
        totals = parts.clone()
        dist.all_reduce(totals)
        objective, elbo, global_ = totals[0], totals[1], parts[2]
        total_loss = -(objective + global_) / n + self.lagrangian(h.detach())
        # Value of the one-process loss, gradient of this process's share.
        loss = local_loss + (total_loss - local_loss).detach()
        return loss, (elbo + global_) / n, h


# --------------------------------------------------------------------------- spawning
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, fn: Callable, args: Sequence, world_size: int, init_method: str, backend: str,
           threads: Optional[int], queue) -> None:
    """Body of each spawned process: join the group, run ``fn(*args, send)``, report to the parent."""
    os.environ["LOCAL_RANK"] = str(rank)
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    send = (lambda message: queue.put(("message", message))) if rank == 0 else (lambda message: None)
    try:
        value = fn(*args, send)
        if rank == 0:
            queue.put(("return", pickle.dumps(value)))
    except BaseException as error:
        try:
            queue.put(("error", pickle.dumps(error)))
        except Exception:  # an unpicklable exception: its text is enough
            queue.put(("error", pickle.dumps(RuntimeError(f"process {rank}: {error!r}"))))
        raise
    finally:
        dist.destroy_process_group()


def launch(
    fn: Callable,
    args: Sequence = (),
    *,
    processes: int,
    backend: str = "gloo",
    threads: Optional[int] = None,
    on_message: Optional[Callable[[Any], None]] = None,
) -> Any:
    """Run ``fn(*args, send)`` in ``processes`` new processes forming one process group.

    ``fn`` must be importable (a module-level function) and its arguments picklable.  On rank 0,
    ``send(message)`` passes ``message`` to ``on_message`` in this process (elsewhere it does
    nothing).

    Args:
        fn: the function each process runs (``torch.distributed`` is initialised first).
        args: its arguments, the same for every process.
        processes: ``W``.
        backend: ``"gloo"`` or ``"nccl"``.
        threads: ``torch.set_num_threads`` in each process (``None``: unchanged).
        on_message: receives what rank 0 sends.

    Returns:
        What ``fn`` returned on rank 0.  An exception raised by a process is raised here.
    """
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    processes_context = mp.spawn(
        _entry, args=(fn, tuple(args), processes, init_method, backend, threads, queue), nprocs=processes, join=False
    )
    outcome: dict = {}

    def drain() -> None:
        while not queue.empty():
            kind, payload = queue.get()
            if kind == "message":
                if on_message is not None:
                    on_message(payload)
            else:
                outcome.setdefault(kind, payload)

    try:
        while not processes_context.join(timeout=0.05):
            drain()
    except mp.ProcessRaisedException:
        drain()
        if "error" in outcome:
            raise pickle.loads(outcome["error"]) from None
        raise
    except BaseException:  # e.g. KeyboardInterrupt, or a callback that raised: stop the workers
        for process in processes_context.processes:
            if process.is_alive():
                process.terminate()
        raise
    drain()
    return pickle.loads(outcome["return"])


# --------------------------------------------------------------------------- fit
def threads_per_process(x, fit_kwargs: dict, processes: int) -> int:
    """Torch threads of each of ``processes`` processes on one machine: the fit's ``num_threads``
    split between them, or :func:`~pyro_causal.resources.choose_num_threads` for their share of
    each step; together never more than the cores."""
    config = fit_kwargs.get("config")
    if config is not None and config.num_threads is not None:
        return max(1, config.num_threads // processes)
    n, d = np.shape(x)
    rows = fit_kwargs.get("batch_size") or choose_batch_size(fit_kwargs.get("density", "linear"), n) or n
    components = fit_kwargs.get("truncation") or default_truncation(d)
    return choose_num_threads(min(rows, n), d, components, processes=processes)


def _with_threads(fit_kwargs: dict, threads: int) -> FitConfig:
    """``fit_kwargs``'s config (or the default one) with ``num_threads=threads``."""
    return replace(fit_kwargs.get("config") or FitConfig(), num_threads=threads)


def _fit_in_group(x, fit_kwargs: dict, callbacks: Iterable[Callable[[TrainingEvent], None]]) -> FitResult:
    """:func:`pyro_causal.fit` with a :class:`DistributedTrainer`, inside an initialised group."""
    device = _local_device(fit_kwargs.pop("device", "cpu"))
    callbacks = list(callbacks) if dist.get_rank() == 0 else []
    with trainer_class(DistributedTrainer):
        result = api.fit(x, device=device, callbacks=callbacks, **fit_kwargs)
    result.settings.update(processes=dist.get_world_size(), backend=dist.get_backend())
    return result


def _fit_worker(x, fit_kwargs: dict, send: Callable[[Any], None]) -> FitResult:
    return _fit_in_group(x, dict(fit_kwargs), [send])


def fit_distributed(
    x,
    *,
    processes: int = 2,
    backend: Optional[str] = None,
    threads: Optional[int] = None,
    callbacks: Iterable[Callable[[TrainingEvent], None]] = (),
    oversubscribe: bool = False,
    **fit_kwargs,
) -> FitResult:
    """:func:`pyro_causal.fit` with each batch shared by ``processes`` processes.

    Same result as ``fit(x, **fit_kwargs)`` up to floating-point summation order (same seed,
    same batches, same samples of ``A`` and ``U``); the speed-up needs batches large enough
    that the per-step work outweighs one all-reduce of the gradients.

    * Inside a ``torch.distributed`` group (a script run by ``torchrun``, or one that called
      ``init_process_group``), the group's processes train together and ``processes`` is
      ignored; every process gets the (identical) result, callbacks run on rank 0 only.
    * Otherwise ``processes`` processes are spawned on this machine (a script calling this
      needs the ``if __name__ == "__main__":`` guard) and rank 0's result comes back;
      callbacks run here.  ``processes=1`` is plain :func:`fit`.

    Args:
        x: ``(n, d)`` data, as for :func:`pyro_causal.fit`.
        processes: ``W``; with ``device="cuda"`` at most the number of GPUs.
        backend: ``"gloo"`` or ``"nccl"`` (default: ``nccl`` for CUDA, else ``gloo``).
        threads: torch threads per spawned process (default: ``config.num_threads`` in ``fit_kwargs``
            split between the ``W`` processes, else :func:`threads_per_process`).
        callbacks: as for :func:`pyro_causal.fit`.
        oversubscribe: allow more spawned processes than CPU cores (refused otherwise).
        **fit_kwargs: every other :func:`pyro_causal.fit` option (``seed``, ``batch_size``...).

    Returns:
        The :class:`FitResult` of rank 0, with ``settings["processes"]`` and ``["backend"]``.

    Example:
        >>> if __name__ == "__main__":
        ...     result = fit_distributed(data.x, processes=4, batch_size=4096, seed=0)
    """
    device = fit_kwargs.get("device", "cpu")
    if getattr(fit_kwargs.get("config"), "checkpoint", None) is not None and (processes > 1 or launched_by_torchrun()):
        raise ValueError("checkpoint covers a fit in one process: use pyro_causal.fit")
    if dist.is_available() and (dist.is_initialized() or launched_by_torchrun()):
        joined = not dist.is_initialized()
        if joined:
            dist.init_process_group(backend or default_backend(device))
        if torch.device(device).type != "cuda":  # the processes of this machine share its cores
            local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
            fit_kwargs["config"] = _with_threads(fit_kwargs, threads or threads_per_process(x, fit_kwargs, local))
        try:
            return _fit_in_group(x, dict(fit_kwargs), callbacks)
        finally:
            if joined:
                dist.destroy_process_group()
    return _spawn(x, fit_kwargs, processes, backend, threads, callbacks, oversubscribe)


def _spawn(x, fit_kwargs: dict, processes: int, backend: Optional[str], threads: Optional[int],
           callbacks: Iterable[Callable[[TrainingEvent], None]], oversubscribe: bool) -> FitResult:
    """:func:`fit_distributed` outside a group: ``processes`` processes spawned on this machine."""
    device = fit_kwargs.get("device", "cpu")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if processes == 1:
        return api.fit(x, callbacks=callbacks, **fit_kwargs)
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of PyTorch")
    batch_size = fit_kwargs.get("batch_size")
    if batch_size is not None and batch_size < processes:
        raise ValueError(f"batch_size {batch_size} is smaller than the {processes} processes sharing it")
    if torch.device(device).type == "cuda" and processes > torch.cuda.device_count():
        raise ValueError(f"{processes} processes but {torch.cuda.device_count()} CUDA devices")
    if processes > (os.cpu_count() or 1) and not oversubscribe:
        raise ValueError(f"{processes} processes on {os.cpu_count() or 1} CPU cores; pass oversubscribe=True to run them anyway")
    if threads is None and torch.device(device).type != "cuda":
        threads = threads_per_process(x, fit_kwargs, processes)
    if threads is not None:
        fit_kwargs["config"] = _with_threads(fit_kwargs, threads)
    callbacks = list(callbacks)

    def forward(event: TrainingEvent) -> None:
        for callback in callbacks:
            callback(event)

    return launch(
        _fit_worker, (x, fit_kwargs), processes=processes, backend=backend or default_backend(device),
        threads=threads, on_message=forward,
    )


if __name__ == "__main__":  # pragma: no cover
    # ``torchrun ... -m pyro_causal.distributed [fit options]`` is ``pyro-causal fit``.  The CLI is run by
    # module name: this module imports nothing of the CLI, which imports it.
    import runpy

    sys.argv[1:1] = ["fit"]
    runpy.run_module("pyro_causal", run_name="__main__", alter_sys=True)

"""How much of the machine one fit takes: torch threads, rows per step and freed memory, chosen in one place.

:func:`pyro_causal.fit` calls :func:`choose_batch_size` when ``batch_size=None`` and
:func:`choose_num_threads` when ``config.num_threads=None``; ``settings["training"]["batch_size"]`` and
``settings["num_threads"]`` record what was used.  The measurements behind both rules are in
``docs/benchmarks.md`` ("Threads and automatic mini-batches").

* **Rows per step.** Every built-in density trains on random mini-batches (:data:`AUTO_BATCH_SIZES`
  rows) once the data have more than :data:`AUTO_BATCH_ABOVE` rows: a full-batch step of the MLP
  at n = 10,000 costs about 25x a linear one, and a fit of a few thousand such steps takes hours;
  for the linear density see ``docs/method.md``, departures, "Rows per step".  Pass
  ``batch_size=n`` for full batch.
* **Threads.** One thread unless a step's work (rows per step x variables x components) reaches
  :data:`THREADS_PAY_ABOVE`; above it, one thread per core.  PyTorch's threads spin while they
  wait, so on small tensors a second thread wins little on an idle machine and loses many times
  over when other processes want the cores.
* **Freed memory.** During a fit (:func:`freed_memory_kept`) glibc keeps freed blocks of up to
  :data:`KEEP_FREED_BELOW` bytes in the process's heap instead of returning them to the system:
  every step allocates and frees the same activation buffers, and a buffer mapped afresh costs a
  page fault per 4 KiB page on first write, on a virtual machine more than the arithmetic done
  on it (the measurements: ``docs/benchmarks.md``, "Freed memory kept in the heap during a fit").
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Union

import torch

from .densities import DeepSigmoidalFlow, LinearGaussian, MLPGaussian

AUTO_BATCH_SIZES = {"linear": 1000, "mlp": 500, "flow": 500}
"""Rows per step chosen for each density (measured against full batch for the linear density and
against 1000 rows for the others: ``docs/method.md``, departures, "Rows per step")."""
AUTO_BATCH_ABOVE = 2000
"""Data with more rows than this are mini-batched."""
THREADS_PAY_ABOVE = 50_000_000
"""Work per step (rows x variables x components) above which more than one thread is used."""


def _family(density) -> str:
    if isinstance(density, str):
        return density
    for name, kind in (("linear", LinearGaussian), ("mlp", MLPGaussian), ("flow", DeepSigmoidalFlow)):
        if isinstance(density, kind):
            return name
    return type(density).__name__


def choose_batch_size(density: Union[str, object], num_rows: int) -> Optional[int]:
    """Rows per step for ``density`` (a name or a density object) on ``num_rows`` rows; ``None`` = all."""
    size = AUTO_BATCH_SIZES.get(_family(density))
    return size if size is not None and num_rows > AUTO_BATCH_ABOVE else None


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def cpu_description() -> str:
    """The processor's model name (``/proc/cpuinfo``, else ``platform.processor()``) and the vector
    instructions ATen's CPU kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``, which
    ``ATEN_CPU_CAPABILITY`` can lower), e.g. ``"AMD EPYC, AVX512"``.

    The kernels of different capabilities round differently, so a seeded fit is repeated bit for
    bit only on the same capability, and timings only compare within one machine.
    """
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:  # pragma: no cover - not Linux
        pass
    return f"{name or platform.processor() or platform.machine()}, {torch.backends.cpu.get_cpu_capability()}"


def choose_num_threads(rows_per_step: int, num_variables: int, components: int, processes: int = 1) -> int:
    """Torch threads for one process of a fit whose steps see ``rows_per_step`` rows.

    ``processes`` data-parallel processes split the cores and the rows between them.
    """
    cores = max(1, available_cores() // max(1, processes))
    work = rows_per_step / max(1, processes) * num_variables * components
    return cores if work > THREADS_PAY_ABOVE else 1


def restores_threads(function: Callable) -> Callable:
    """Decorate ``function`` so that torch's thread count after a call is the one before it,
    also when it raises (``fit`` sets its own count inside)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        previous = torch.get_num_threads()
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper


KEEP_FREED_BELOW = 32 << 20
"""Bytes: freed blocks up to this size stay in the heap during a fit (glibc's largest mmap threshold)."""
KEEP_HEAP_TOP_BELOW = 1 << 30
"""Bytes: during a fit glibc returns the free top of its heap to the system only above this size
(its trim threshold; at 32 MiB a freed buffer next to other free memory could push the top past
it, and glibc then returned everything but 128 KiB, to be mapped afresh at the next step)."""
GLIBC_DEFAULT_THRESHOLD = 128 << 10
"""glibc's initial mmap and trim thresholds, set again when the outermost fit ends."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of <malloc.h>
_heap_lock = threading.Lock()
_heap_depth = 0


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it has glibc's ``mallopt`` and ``malloc_trim``, else ``None`` (macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # pragma: no cover - Windows
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _set_thresholds(libc, mmap: int, trim: int) -> None:
    libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap))
    libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim))


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Inside the block, glibc keeps freed blocks below :data:`KEEP_FREED_BELOW` bytes for reuse.

    Sets glibc's mmap threshold to :data:`KEEP_FREED_BELOW` and its trim threshold to
    :data:`KEEP_HEAP_TOP_BELOW`; when the outermost block
    ends (blocks nest, also across threads) it sets both back to glibc's initial
    :data:`GLIBC_DEFAULT_THRESHOLD` (glibc then no longer adjusts them itself, as after any
    ``mallopt`` call) and returns the kept memory to the system (``malloc_trim``).  A no-op
    without glibc.
    """
    global _heap_depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _heap_lock:
        if _heap_depth == 0:
            _set_thresholds(libc, KEEP_FREED_BELOW, KEEP_HEAP_TOP_BELOW)
        _heap_depth += 1
    try:
        yield
    finally:
        with _heap_lock:
            _heap_depth -= 1
            if _heap_depth == 0:
                _set_thresholds(libc, GLIBC_DEFAULT_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                libc.malloc_trim(ctypes.c_size_t(0))


def keeps_freed_memory(function: Callable) -> Callable:
    """Decorate ``function`` to run inside :func:`freed_memory_kept`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with freed_memory_kept():
            return function(*args, **kwargs)

    return wrapper

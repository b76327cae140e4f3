"""Flush-to-zero for subnormal floats on every CPU thread of a run, as TensorFlow's threads run.

Why: TensorFlow (so Keras 2.2, which trained the seeds) computes with subnormals flushed: every
thread of its thread pools runs under `port::ScopedFlushDenormal` (tensorflow/core/platform/
threadpool.cc, EigenEnvironment::CreateThread), which sets the SSE control register's FTZ
(results) and DAZ (inputs) bits. PyTorch keeps subnormals, and on x86 an arithmetic op that meets
one takes a microcode assist: late in an overfitting run (loss ~1e-5) the optimizer's
`_foreach_mul_/add_` on Adam's nearly zero moments measured 2-3x slower on a Zen 3 EPYC.

How: `torch.set_flush_denormal` sets the bits of the calling thread only. OpenMP's worker threads
copy the control register when they are created, so once torch's pool exists the workers keep
theirs (with 2 threads, half of an op's outputs were flushed). `flush_denormals` therefore sets
the main thread, then runs one OpenMP parallel region (libgomp's GOMP_parallel, the runtime torch
is linked with) whose body is the C library's `fesetenv` on the main thread's floating-point
environment: each thread of the team torch's `parallel_for` uses then has the same bits.

It changes numbers (only where a value would be subnormal, below 1.2e-38 in float32), so a run's
setting is recorded in its checkpoint identity and notes (engine, resume.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from mnistlab.errors import MnistlabError
from mnistlab.util.machine import usable_cpus

# glibc's fenv_t on x86-64 is 32 bytes (x87 environment + MXCSR); room to spare for other ABIs.
_FENV_BYTES = 256


def _openmp_runtime() -> ctypes.CDLL | None:
    """The libgomp this process has loaded for torch (from /proc/self/maps), or None."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    for line in maps.read_text(errors="replace").splitlines():
        path = line.split()[-1] if line.split() else ""
        if Path(path).name.startswith("libgomp"):
            library = ctypes.CDLL(path)
            return library if hasattr(library, "GOMP_parallel") else None
    return None


def _apply_everywhere() -> bool:
    """Copy the calling thread's floating-point environment to every thread of torch's OpenMP pool.

    The region's team is as large as the run may make torch's (the current count or one per usable
    CPU, whichever is more), so it reaches every pooled thread a later `configure_threads` reuses;
    a team larger still gets threads created from this one, which inherit its environment.

    False when no libgomp is loaded (another OpenMP runtime, or none): then only threads created
    from now on inherit the setting."""
    libm_name = ctypes.util.find_library("m")
    runtime = _openmp_runtime()
    if runtime is None or libm_name is None:
        return False
    libm = ctypes.CDLL(libm_name)
    environment = ctypes.create_string_buffer(_FENV_BYTES)
    if libm.fegetenv(environment) != 0:
        return False
    runtime.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    runtime.GOMP_parallel.restype = None
    # fesetenv(const fenv_t *) has the shape of an OpenMP region's body, void fn(void *data).
    runtime.GOMP_parallel(ctypes.cast(libm.fesetenv, ctypes.c_void_p), ctypes.cast(environment, ctypes.c_void_p),
                          max(torch.get_num_threads(), usable_cpus()), 0)
    return True


def set_flush_denormal(on: bool) -> None:
    """Flush subnormals to zero (or stop) on this thread and on every intra-op thread of torch's.

    MnistlabError in one line where the CPU cannot flush (not x86 with SSE3) or torch's threads
    cannot be reached (more than one thread and no libgomp)."""
    if not torch.set_flush_denormal(on):
        if on:
            raise MnistlabError("field 'flush_denormal': this CPU has no flush-to-zero mode torch can set")
        return
    if not _apply_everywhere() and torch.get_num_threads() > 1:
        if on:
            torch.set_flush_denormal(False)
        raise MnistlabError("field 'flush_denormal': torch's OpenMP threads cannot be reached here "
                            "(no libgomp); use --threads 1 or leave flush_denormal off")


@contextmanager
def flush_denormals(on: bool) -> Iterator[None]:
    """Subnormals flushed on every thread for the block when `on`, then kept again (torch's
    default; torch cannot read the previous mode back); nothing changed when `on` is False."""
    if not on:
        yield
        return
    set_flush_denormal(True)
    try:
        yield
    finally:
        set_flush_denormal(False)

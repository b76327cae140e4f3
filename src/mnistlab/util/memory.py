"""Keep freed memory in the process while a model trains, instead of handing it back to the system.

Why: a training step frees and allocates the same large activation tensors (megabytes each) every
step. glibc's malloc serves blocks that large from fresh mmap'd pages or trims the top of its heap
when they are freed, so the next step's allocation faults every page in again and the kernel
zeroes it. On the Intel Xeon with AMX (benchmarks/RESULTS.md, "Freed memory kept") that put
s000-m1's first convolution, forward and backward, at 7.7-8.6 ms in about half the repetitions
against 1.6-1.8 ms in the others, and took s000-m1's whole step from 33.7 to 41.5 ms (median). Keeping
freed blocks for reuse (a trim threshold larger than any step frees, and large blocks served from the
heap) removes those faults; it changes no arithmetic. torch's CPU allocator is plain malloc, so
mallopt is the lever: glibc reads its own environment variables only at start, mallopt any time.

When training ends the heap is trimmed once and the trim threshold set to what glibc's own dynamic
rule would have reached (any mallopt call ends that rule for the process), so memory freed later goes
back to the system much as before. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt's parameter numbers (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# After training: the trim threshold glibc's own dynamic rule sets once its mmap threshold has
# grown to 32 MiB (twice it), so that memory goes back to the system much as it would have.
AFTER_TRIM_THRESHOLD = 64 * 1024 * 1024
# While training: never trim (no step frees 1 GiB at the top of the heap), and serve blocks up to
# 32 MiB, glibc's largest allowed mmap threshold on 64-bit, from the heap.
TRAINING_TRIM_THRESHOLD = 1 << 30
TRAINING_MMAP_THRESHOLD = 32 * 1024 * 1024

_lock = threading.Lock()
_depth = 0


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _mallopt(libc: ctypes.CDLL, parameter: int, value: int) -> bool:
    return bool(libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)))


@contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Within the block, freed memory stays in the process for reuse; yields whether that applies
    here (glibc). Nested blocks (a seed bundle's fits, say) keep it until the outermost ends."""
    global _depth
    libc = _libc()
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        applied = (_mallopt(libc, M_TRIM_THRESHOLD, TRAINING_TRIM_THRESHOLD)
                   and _mallopt(libc, M_MMAP_THRESHOLD, TRAINING_MMAP_THRESHOLD))
    try:
        yield applied
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _mallopt(libc, M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD)
                libc.malloc_trim(ctypes.c_size_t(0))

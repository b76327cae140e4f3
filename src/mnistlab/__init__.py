"""mnistlab: design, train and compare neural networks on MNIST-family datasets."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

__version__ = "0.3.0"

# --- how idle OpenMP threads wait -------------------------------------------------------------
#
# How long torch's idle OpenMP threads spin before they sleep: chosen when mnistlab is imported,
# before torch loads (libgomp reads GOMP_SPINCOUNT once, at load, and offers no call to change it).
#
# Why a choice and not one constant: the spin count trades idle speed against a fair share on a busy
# machine, and the two pull hard the other way.
# - Idle, a short spin lets the threads fall asleep between two parallel regions, and every op then
#   pays a wake-up: on the Intel Xeon with AMX (benchmarks/RESULTS.md, "OpenMP spin count") 1,000
#   spins (11 us there) cost s004-m2 about 40% of its speed (31-33k images/s against 56k at 30,000
#   spins) and s000-m1 10-25%.
# - With another process holding one of the cores, a long spin burns the core a descheduled sibling
#   needs: there 30,000 spins kept s004-m2 at 14% of its idle speed and 1,000 at 88-91%.
# So the choice is made from what the machine is doing when mnistlab starts: other runnable threads
# (the minimum over a few samples of the kernel's count of running threads, less this one) mean a busy
# machine and the short spin; none means an idle one and the long spin. A machine that becomes busy
# later keeps the long spin, which still keeps about twice the share libgomp's own default (300,000)
# keeps. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins. It lives here, in the package
# root, because it must run in `import mnistlab` before anything loads torch: it imports nothing heavy.

# Spin iterations of an idle OpenMP thread before it sleeps (libgomp's own default is 300,000).
IDLE_SPINCOUNT = "30000"
BUSY_SPINCOUNT = "1000"
# libgomp reads these two; either set by the user means the user's policy.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# Where mnistlab records the value it set, so that a child process (a worker, a benchmark's peer)
# that inherits it chooses again for the machine as it is then, and never takes it for the user's.
CHOSEN_VARIABLE = "MNISTLAB_CHOSEN_SPINCOUNT"
PROC_STAT = Path("/proc/stat")
SAMPLES = 4
SAMPLE_INTERVAL_S = 0.001


@dataclass(frozen=True)
class SpinChoice:
    """What `choose_spin_count` decided: the value set (None when the user's setting stands) and why."""

    spincount: str | None
    reason: str

    def note(self) -> str:
        if self.spincount is None:
            return f"OpenMP waiting: {self.reason}"
        return f"OpenMP threads spin {int(self.spincount):,} iterations before sleeping ({self.reason})"


def running_threads() -> int | None:
    """The kernel's count of runnable threads right now (Linux /proc/stat), this one included."""
    try:
        for line in PROC_STAT.read_text().splitlines():
            if line.startswith("procs_running "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def other_runnable_threads(sample: Callable[[], int | None] = running_threads, samples: int = SAMPLES,
                           interval: float = SAMPLE_INTERVAL_S) -> int | None:
    """Runnable threads other than this one: the minimum over a few samples, so that a short-lived
    process is not taken for load; None where the system does not say."""
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        count = sample()
        if count is None:
            return None
        counts.append(count)
    return max(0, min(counts) - 1)


def choose_spin_count(environ: MutableMapping[str, str], torch_loaded: bool = False,
                      others: Callable[[], int | None] = other_runnable_threads) -> SpinChoice:
    """Set GOMP_SPINCOUNT in `environ` for this machine's state (the comment above) unless the user
    set a wait policy or torch is already loaded (too late); returns the choice for the run's notes."""
    if torch_loaded:
        return SpinChoice(None, "torch was loaded before mnistlab, so the environment's setting "
                                "(libgomp's default where none) stands")
    inherited = environ.get(CHOSEN_VARIABLE)
    if inherited is not None and environ.get("GOMP_SPINCOUNT") == inherited and "OMP_WAIT_POLICY" not in environ:
        del environ["GOMP_SPINCOUNT"]  # a parent mnistlab's choice, not the user's
    if any(name in environ for name in WAIT_VARIABLES):
        told = ", ".join(f"{name}={environ[name]}" for name in WAIT_VARIABLES if name in environ)
        return SpinChoice(None, f"the user's {told}")
    busy = others()
    if busy is None:
        choice = SpinChoice(BUSY_SPINCOUNT, "the system does not say how busy it is")
    elif busy:
        choice = SpinChoice(BUSY_SPINCOUNT, f"{busy} other runnable thread(s) when mnistlab started")
    else:
        choice = SpinChoice(IDLE_SPINCOUNT, "no other runnable thread when mnistlab started")
    environ["GOMP_SPINCOUNT"] = environ[CHOSEN_VARIABLE] = choice.spincount  # type: ignore[assignment]
    return choice


def without_chosen_spin_count(environ: MutableMapping[str, str]) -> dict[str, str]:
    """`environ` as the user had it: without the spin count mnistlab chose (for a peer program's
    process, which should wait as it would for its own user)."""
    out = dict(environ)
    if out.get(CHOSEN_VARIABLE) is not None and out.get("GOMP_SPINCOUNT") == out[CHOSEN_VARIABLE]:
        del out["GOMP_SPINCOUNT"]
    out.pop(CHOSEN_VARIABLE, None)
    return out


SPIN_CHOICE = choose_spin_count(os.environ, torch_loaded="torch" in sys.modules)

"""CPU-specific kernel paths chosen by a cheap probe on the machine that runs them, cached per machine.

Why: build.py's unfold + GEMM form of small convolutions (ConvAsGemm) was chosen by measurement on
one CPU (a Zen 4 EPYC, where oneDNN ran a 3x3 conv on a 3x3 input at 15-70 GFLOP/s against ~200
for the GEMM). Another CPU family, another oneDNN code path, may rank them the other way. So the
first CPU run on a machine times both forms on that case (forward and backward, the minimum of a
few repeats, under a second of CPU) and keeps the answer in the user cache directory, keyed by the CPU model
and torch version (either changes which kernels run): later runs read it back.

The two forms compute the same convolution with a different order of summation, so the choice
changes the numbers within rounding: the engine records it in the run's notes and, where the model
has such a convolution and the plain conv was chosen (the form every earlier checkpoint used is the
GEMM), in the checkpoint identity.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.nn.build import ConvAsGemm
from mnistlab.util.atomic import write_text
from mnistlab.util.machine import cpu_model

# Bump when the probe or what it decides changes: older cache entries are probed again.
PROBE_VERSION = 1
CACHE_FILE_NAME = "cpu-paths.json"
# The GEMM form must win by this factor to be chosen (it costs an unfold copy the conv does not).
GEMM_MARGIN = 1.1
# The probed case: s002-m10's, a 3x3 'valid' conv with 64 input channels on a 3x3 map, batch 128.
PROBE_SHAPE = (128, 64, 3, 3)
PROBE_FILTERS = 64
PROBE_REPEATS = 3

Timings = dict[str, float]


@dataclass(frozen=True)
class CpuPaths:
    """The kernel paths chosen for one machine: whether ConvAsGemm runs its GEMM form."""

    conv_as_gemm: bool = True
    # The probe's seconds per form ({} where nothing was timed), kept to show why.
    timings: dict[str, float] | None = None

    def note(self) -> str:
        form = "unfold + GEMM" if self.conv_as_gemm else "oneDNN convolution"
        return f"small convolutions: {form} (chosen by this machine's probe, cpu_paths.py)"


def machine_key() -> str:
    """What the cached choice belongs to: the CPU model and the torch version."""
    return f"{cpu_model()} | torch {torch.__version__} | probe {PROBE_VERSION}"


def cache_dir() -> Path:
    """mnistlab's folder in the user cache directory (XDG_CACHE_HOME, else ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnistlab"


def choose(timings: Timings) -> CpuPaths:
    """The choice the probe's timings make: the GEMM form where it is GEMM_MARGIN faster."""
    return CpuPaths(conv_as_gemm=timings["conv"] > GEMM_MARGIN * timings["gemm"], timings=dict(timings))


def probe() -> Timings:
    """Seconds for one forward + backward of the probed case in each form (minimum of repeats)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(PROBE_SHAPE, generator=generator).requires_grad_()
    conv = nn.Conv2d(PROBE_SHAPE[1], PROBE_FILTERS, PROBE_SHAPE[2:])
    forms = {"conv": conv, "gemm": ConvAsGemm(conv, (1, 1))}
    timings: Timings = {}
    for name, module in forms.items():
        best = float("inf")
        for _ in range(PROBE_REPEATS + 1):  # the first builds oneDNN's primitives: not timed
            started = time.perf_counter()
            module(x).sum().backward()
            best = min(best, time.perf_counter() - started)
        timings[name] = best
    return timings


def cpu_paths(run_probe: Callable[[], Timings] = probe, folder: Path | None = None) -> CpuPaths:
    """This machine's choice: from the cache when it holds this machine's, else probed and cached.

    An unreadable or foreign cache is probed over; a cache that cannot be written only costs the
    next run another probe."""
    path = (folder or cache_dir()) / CACHE_FILE_NAME
    key = machine_key()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(key) if isinstance(cached, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("conv_as_gemm"), bool):
        return CpuPaths(conv_as_gemm=entry["conv_as_gemm"], timings=entry.get("timings"))
    paths = choose(run_probe())
    cached = cached if isinstance(cached, dict) else {}
    cached[key] = asdict(paths)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(cached, indent=1, sort_keys=True))
    except (OSError, MnistlabError):  # a read-only home, say: the choice still holds for this run
        pass
    return paths


def apply_paths(model: nn.Module, paths: CpuPaths) -> bool:
    """Set every ConvAsGemm of `model` to the chosen form; True when the model has one."""
    gemms = [m for m in model.modules() if isinstance(m, ConvAsGemm)]
    for module in gemms:
        module.gemm = paths.conv_as_gemm
    return bool(gemms)

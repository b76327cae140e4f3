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

The second choice is the memory layout of convolutions under bf16 autocast. oneDNN's bf16
convolutions on the Intel Xeon with AMX ran 1.2-1.45x faster in channels_last (NHWC) than in
PyTorch's default NCHW (s000-m1, s000-m2, s002-m8 whole steps; benchmarks/RESULTS.md), while in
fp32 channels_last was slower there (and 0.78-0.85x on the Zen 4): so it is probed for bf16 only,
on s000-m1's second convolution, the first time a bf16 run with convolutions trains on a machine
(a machine without bf16 hardware never pays for a probe it does not need), and cached beside the
first. It too sums in another order: the run's notes and checkpoint identity record it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any
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
# The bf16 layout's probed case: s000-m1's second convolution (32 -> 64 channels, 3x3, on 26x26), batch 128.
LAYOUT_PROBE_SHAPE = (128, 32, 26, 26)
LAYOUT_PROBE_FILTERS = 64
LAYOUT_PROBE_KERNEL = 3
# channels_last must win by this factor (its output is converted back where a Flatten needs NCHW order).
LAYOUT_MARGIN = 1.1
LAYOUT_KEY_SUFFIX = " | bf16 layout"

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


@dataclass(frozen=True)
class Bf16Layout:
    """The memory layout chosen for one machine's convolutions under bf16 autocast."""

    channels_last: bool = False
    timings: dict[str, float] | None = None

    def note(self) -> str:
        layout = "channels_last (NHWC)" if self.channels_last else "NCHW"
        return f"bf16 convolutions: {layout} (chosen by this machine's probe, cpu_paths.py)"


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


def cached_choice(key: str, folder: Path | None, valid: Callable[[Any], bool],
            run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The cached entry for `key` when it is valid, else `run()`'s, cached. An unreadable or foreign
    cache is probed over; a cache that cannot be written only costs the next run another probe."""
    path = (folder or cache_dir()) / CACHE_FILE_NAME
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    cached = cached if isinstance(cached, dict) else {}
    entry = cached.get(key)
    if isinstance(entry, dict) and valid(entry):
        return entry
    entry = run()
    cached[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(cached, indent=1, sort_keys=True))
    except (OSError, MnistlabError):  # a read-only home, say: the choice still holds for this run
        pass
    return entry


def cpu_paths(run_probe: Callable[[], Timings] = probe, folder: Path | None = None) -> CpuPaths:
    """This machine's small-convolution form: from the cache when it holds this machine's, else probed and cached."""
    entry = cached_choice(machine_key(), folder, lambda e: isinstance(e.get("conv_as_gemm"), bool),
                    lambda: asdict(choose(run_probe())))
    return CpuPaths(conv_as_gemm=entry["conv_as_gemm"], timings=entry.get("timings"))


def choose_layout(timings: Timings) -> Bf16Layout:
    """channels_last where it is LAYOUT_MARGIN faster than NCHW under bf16 autocast."""
    return Bf16Layout(channels_last=timings["nchw"] > LAYOUT_MARGIN * timings["channels_last"],
                      timings=dict(timings))


def probe_layout() -> Timings:
    """Seconds for one bf16-autocast forward + backward of the layout case in each layout (minimum of repeats)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(LAYOUT_PROBE_SHAPE, generator=generator)
    timings: Timings = {}
    for name, layout in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        conv = nn.Conv2d(LAYOUT_PROBE_SHAPE[1], LAYOUT_PROBE_FILTERS, LAYOUT_PROBE_KERNEL).to(memory_format=layout)
        inputs = x.contiguous(memory_format=layout).requires_grad_()
        best = float("inf")
        for _ in range(PROBE_REPEATS + 1):  # the first builds oneDNN's primitives: not timed
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = conv(inputs)
            out.float().sum().backward()
            best = min(best, time.perf_counter() - started)
        timings[name] = best
    return timings


def bf16_layout(run_probe: Callable[[], Timings] = probe_layout, folder: Path | None = None) -> Bf16Layout:
    """This machine's bf16 convolution layout: cached, else probed (once per machine) and cached."""
    entry = cached_choice(machine_key() + LAYOUT_KEY_SUFFIX, folder, lambda e: isinstance(e.get("channels_last"), bool),
                    lambda: asdict(choose_layout(run_probe())))
    return Bf16Layout(channels_last=entry["channels_last"], timings=entry.get("timings"))


def apply_paths(model: nn.Module, paths: CpuPaths) -> bool:
    """Set every ConvAsGemm of `model` to the chosen form; True when the model has one."""
    gemms = [m for m in model.modules() if isinstance(m, ConvAsGemm)]
    for module in gemms:
        module.gemm = paths.conv_as_gemm
    return bool(gemms)


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def apply_layout(model: nn.Module, layout: Bf16Layout) -> bool:
    """Put `model`'s parameters in the chosen layout; True when that changed anything (channels_last
    chosen and the model has convolutions). Its inputs follow: a conv with channels_last weights
    computes in channels_last whatever its input's layout."""
    if not (layout.channels_last and has_convolutions(model)):
        return False
    model.to(memory_format=torch.channels_last)
    return True

"""What machine a run trained on, in words, so a figure is never quoted without its hardware."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_model() -> str:
    """The CPU's name with its family, model and stepping numbers where /proc/cpuinfo has them:
    a marketing name ("AMD EPYC") can cover several microarchitectures."""
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    numbers = [f"{name} {fields[name]}" for name in ("cpu family", "model", "stepping") if fields.get(name)]
    return f"{cpu_name()} ({', '.join(numbers)})" if numbers else cpu_name()


def usable_cpus() -> int:
    """CPUs this process may use: affinity mask, further capped by a cgroup v2 quota.

    The engine sizes its threads by this count, and the benchmarks report it."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def describe(device: str) -> str:
    """One line naming the processor a run on ``device`` used: the GPU's name, or the CPU's and its core count."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()}, {usable_cpus()} usable of {os.cpu_count()} CPUs"


def package_versions(device: str = "cpu") -> dict[str, str]:
    """The software a run used, and the machine (``machine``: the processor that ``device`` names).

    Recorded with every stored run and model folder, by the process that trained it (for a Ray run
    that is the worker, not the coordinator)."""
    import numpy as np

    from mnistlab import __version__

    return {"mnistlab": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": describe(device)}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux; empty elsewhere), e.g. avx2, amx_bf16."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    return frozenset()


# The flags of CPUs with bf16 arithmetic in hardware (AVX-512 BF16's dot products, AMX's tiles):
# where oneDNN's bf16 matmuls run faster than fp32 instead of being emulated or refused.
BF16_HARDWARE_FLAGS = ("avx512_bf16", "amx_bf16")


def has_bf16_hardware(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU (or one with `flags`) computes bf16 products in hardware."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in BF16_HARDWARE_FLAGS)

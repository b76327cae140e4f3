"""What machine a run trained on, in words, so a figure is never quoted without its hardware; and the
libraries and CPU features that change its numerics (oneDNN and ATen pick kernels by instruction set)."""

from __future__ import annotations

import math
import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path

import torch


CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field (Linux; x86 says "flags", ARM "Features")."""
    if CPUINFO.exists():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name and value.strip():
                return value.strip()
    return None


def cpu_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The CPU's feature flags, sorted (AVX-512, AMX, FMA, ... change which kernels run); empty
    where the system does not list them."""
    return sorted(set((_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split()))


def onednn_version() -> str | None:
    """The oneDNN (MKL-DNN) version torch was built with, from its build configuration."""
    match = re.search(r"(?:oneDNN|MKL-DNN) v([0-9][0-9.]*)", torch.__config__.show())
    return match.group(1) if match and torch.backends.mkldnn.is_available() else None


def numerics_environment(device: str = "cpu") -> dict[str, object]:
    """What decides a run's numbers besides its spec and seed: library versions (torch, CUDA, cuDNN,
    oneDNN), the kernels' CPU capability, the CPU and its flags, the processor ``device`` names.
    Two runs whose environments differ may differ in the last digits (tests/README.md)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": None if cudnn is None else str(cudnn),
            "onednn": onednn_version(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
            "machine": describe(device)}


def cpu_model() -> str:
    """The CPU's name with its family, model and stepping numbers where /proc/cpuinfo has them:
    a marketing name ("AMD EPYC") can cover several microarchitectures."""
    numbers = [f"{name} {value}" for name in ("cpu family", "model", "stepping")
               if (value := _cpuinfo_field(name)) is not None]
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


# The flags of CPUs with bf16 arithmetic in hardware (AVX-512 BF16's dot products, AMX's tiles):
# where oneDNN's bf16 matmuls run faster than fp32 instead of being emulated or refused.
BF16_HARDWARE_FLAGS = ("avx512_bf16", "amx_bf16")


def has_bf16_hardware(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU (or one with `flags`) computes bf16 products in hardware."""
    present = set(cpu_flags() if flags is None else flags)
    return any(flag in present for flag in BF16_HARDWARE_FLAGS)

"""What machine a run trained on, in words, so a figure is never quoted without its hardware."""

from __future__ import annotations

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


def describe(device: str) -> str:
    """One line naming the processor a run on ``device`` used: the GPU's name, or the CPU's and its core count."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    from mnistlab.engine import usable_cpus  # the engine's own count, the one it sized its threads by

    return f"{cpu_name()}, {usable_cpus()} usable of {os.cpu_count()} CPUs"

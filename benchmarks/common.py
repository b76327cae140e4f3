"""What the benchmarks share: the machine's description and a model's architecture for the peers.

Both bench_train.py and cpu_sections.py (and bench_costs.py) import from here, so neither imports the other.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from mnistlab.util.machine import cpu_flags, cpu_model, has_bf16_hardware, usable_cpus  # the engine's own


def architecture_json(spec: Any) -> dict[str, Any]:
    """What keras_peer.py needs to rebuild the model: resolved nodes with names and inputs."""
    from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS
    from mnistlab.spec.model import resolve

    resolved = resolve(spec)
    nodes = []
    for node in resolved.nodes:
        layer = node.layer.model_dump(mode="json", exclude_none=True)
        for key in ("keras_prefix", "weighted", "name", "inputs"):
            layer.pop(key, None)
        nodes.append({"name": node.name, "inputs": list(node.inputs), "layer": layer,
                      "output_shape": list(node.output_shape)})
    optimizer = spec.training.optimizer
    args = dict(OPTIMIZER_DEFAULTS[optimizer.name])
    args.update({("lr" if k == "learning_rate" else k): v for k, v in optimizer.args.items()})
    return {
        "id": spec.id,
        "input": list(spec.input),
        "is_graph": resolved.is_graph,
        "nodes": nodes,
        "optimizer": {"name": optimizer.name, "args": args},  # Keras 2.2 names and defaults
        "batch_size": spec.training.batch_size,
        "total_params": resolved.total_params,
        "spec": spec.to_dict(),  # for torch_peer.py, which builds through mnistlab.nn.build
    }


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    flags = set(cpu_flags())  # util.machine: the one reader of the CPU's flags
    interesting = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]
    mem_kb = 0
    if Path("/proc/meminfo").exists():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpu": cpu_model(),
        "bf16_hardware": has_bf16_hardware(flags),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "threads_used": threads,
        "cpu_flags": {flag: flag in flags for flag in interesting},
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# The flags that decide which CPU family a table belongs to (issue 25): bf16 hardware and AVX-512.
TABLE_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_line(machine: dict[str, Any]) -> str:
    """The one line every table is printed under: which CPU, and whether it has AMX / AVX-512 BF16."""
    flags = machine.get("cpu_flags", {})
    named = ", ".join(f"{flag} {'yes' if flags.get(flag) else 'no'}" for flag in TABLE_FLAGS)
    return (f"CPU: {machine.get('cpu', 'unknown')} ({named}); torch {machine.get('torch', '?')}, "
            f"{machine.get('threads_used', '?')} threads")

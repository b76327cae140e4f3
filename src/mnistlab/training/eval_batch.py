"""How many images a CPU evaluates at once: sized by this machine's measured cache budget.

Why: the evaluation batch trades per-batch overhead (favouring large batches) against activations
that no longer fit in the caches (favouring small ones), and where that balance falls depends on
the CPU. The constant 256 was measured on a Zen 4 EPYC (where 2,000 ran s000-m1 2.3x slower). On
the Intel Xeon with AMX (benchmarks/RESULTS.md, "Evaluation batch") the best batch followed the
model's activation size: s000-m9 (1.9 MiB per image) 64, s000-m1 and s002-m8 (375-450 KiB) 64-128,
s000-m4 and s002-m1 (130-140 KiB) 256, the MLPs (4-14 KiB) 1024; 256 cost s000-m1 23% and the
MLPs 15-20%. The budget, activation bytes x batch, was about the same for all: so the machine's
budget is measured once, on s000-m1 (the largest batch within 5% of the fastest, x its activation
bytes per image), cached like the kernel paths (nn/cpu_paths.py), and each model's batch is the
largest power of two whose activations fit it, within EVAL_BATCH_RANGE. The reported cache size
is no guide: this VM's /sys says 480 MiB of L3.

The batch changes only how the evaluation's loss sum is split (its last digits), never a trained weight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from mnistlab.nn.build import build_model
from mnistlab.nn.cpu_paths import cached_choice, machine_key
from mnistlab.spec.model import resolve
from mnistlab.training.limits import activation_bytes_per_image
from mnistlab.zoo import get_model

EVAL_BATCH_RANGE = (64, 1024)
PROBE_BATCHES = (64, 128, 256, 512, 1024)
PROBE_MODEL = "s000-m1"
PROBE_IMAGES = 1024  # per batch size and repeat
PROBE_REPEATS = 2
# A batch within this share of the fastest counts as fast: the largest such is the budget's.
WITHIN = 0.95
KEY_SUFFIX = " | eval budget"

Timings = dict[str, float]


def probe() -> Timings:
    """Images/s of PROBE_MODEL's inference at each probe batch size (the best of the repeats)."""
    model = build_model(get_model(PROBE_MODEL), seed=0).eval()
    images = torch.rand((PROBE_IMAGES, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    rates: Timings = {}
    with torch.inference_mode():
        for batch in PROBE_BATCHES:
            model(images[:batch])  # builds oneDNN's primitives for this size: not timed
            best = 0.0
            for _ in range(PROBE_REPEATS):
                started = time.perf_counter()
                for start in range(0, PROBE_IMAGES, batch):
                    model(images[start : start + batch])
                best = max(best, PROBE_IMAGES / (time.perf_counter() - started))
            rates[str(batch)] = best
    return rates


def budget_from(rates: Timings) -> dict[str, Any]:
    """The cache budget (bytes) the probe's rates give: the largest batch within WITHIN of the fastest."""
    fastest = max(rates.values())
    batch = max(int(size) for size, rate in rates.items() if rate >= WITHIN * fastest)
    return {"budget_bytes": batch * activation_bytes_per_image(resolve(get_model(PROBE_MODEL))),
            "probe_batch": batch, "images_per_second": dict(rates)}


def eval_budget_bytes(run_probe: Callable[[], Timings] = probe, folder: Any = None) -> int:
    """This machine's evaluation budget: cached, else probed once (about a second) and cached."""
    entry = cached_choice(machine_key() + KEY_SUFFIX, folder,
                          lambda e: isinstance(e.get("budget_bytes"), int) and e["budget_bytes"] > 0,
                          lambda: budget_from(run_probe()))
    return int(entry["budget_bytes"])


def cpu_eval_batch(resolved: Any, seeds: int = 1, budget: int | None = None) -> int:
    """The largest power of two whose activations (for `seeds` stacked models) fit the budget,
    within EVAL_BATCH_RANGE."""
    budget = eval_budget_bytes() if budget is None else budget
    fits = budget // (activation_bytes_per_image(resolved) * max(1, seeds))
    low, high = EVAL_BATCH_RANGE
    batch = low
    while batch * 2 <= min(fits, high):
        batch *= 2
    return batch

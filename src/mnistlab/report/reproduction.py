"""Did mnistlab reproduce each seed notebook's test accuracy? The table behind docs/REPRODUCTION.md.

Only runs made under their notebook's own protocol count (its optimizer, batch size and epochs, the
whole training set, validation on the test set: `reference.protocol_differences` empty). For each
seed model the table sets the notebook's single figure beside mnistlab's mean over seeds with its
95% t interval, and gives a verdict by one rule, stated in the document:

    reproduced when |notebook − mean| ≤ max(0.3 points, 3·√(s² + p(1−p)/n))

with s the standard deviation of mnistlab's test accuracy over ≥ 3 seeds, p the notebook's accuracy and
n the test images (10,000 for MNIST). The notebook is one draw from the same seed-to-seed spread as
mnistlab's runs plus binomial test-set noise, so its distance from mnistlab's mean is judged against
both; for unstable models the spread dominates (one seed of s000-m7 landed 4 points above its
notebook). A notebook whose model failed (s000-m6 at 34%, s000-m9 and s001-m3 near chance) counts as
reproduced when mnistlab fails the same way by the same rule.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mnistlab.analysis.compare import accuracy_interval_text
from mnistlab.analysis.intervals import mean_ci
from mnistlab.util.safetext import markdown
from mnistlab.runs.records import RunRecord
from mnistlab.runs.archive import archive_store
from mnistlab.runs.store import RunStore, open_existing_store
from mnistlab.zoo import zoo_models
from mnistlab.training.history import COMPLETED, DIVERGED

if TYPE_CHECKING:
    from mnistlab.training.cost import Estimate

MIN_SEEDS = 3  # fewer seeds cannot estimate the spread the rule needs
FLOOR = 0.003  # 0.3 points: below this, differences are rounding in the notebooks' printed figures
WIDTH = 3.0  # standard deviations of the combined spread

# The rule in words, for every output that states it (the document, the CLI).
RULE = (f"reproduced when |notebook − mean| ≤ max({100 * FLOOR:.1f} points, {WIDTH:g}·√(s² + p(1−p)/n)), "
        "s the standard deviation over seeds, p the notebook's accuracy, n the test images")

Verdict = Literal["reproduced", "not reproduced", "too few seeds", "not run"]


@dataclass
class ModelReproduction:
    """One seed model's line: the notebook's figure and what mnistlab measured under its protocol."""

    model_id: str
    notebook: str
    notebook_acc: float | None
    accuracies: list[float] = field(default_factory=list)
    diverged: int = 0  # runs that diverged: no test accuracy, counted and shown
    machines: set[str] = field(default_factory=set)
    test_images: int | None = None

    @property
    def seeds(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies)) if self.accuracies else math.nan

    @property
    def half_width(self) -> float:
        return mean_ci(self.accuracies)[1] if self.accuracies else math.nan

    @property
    def spread(self) -> float:
        """s: the sample standard deviation over seeds."""
        return float(np.std(self.accuracies, ddof=1)) if self.seeds > 1 else math.nan

    @property
    def tolerance(self) -> float:
        if self.notebook_acc is None or self.seeds < MIN_SEEDS or not self.test_images:
            return math.nan
        p = self.notebook_acc
        return max(FLOOR, WIDTH * math.sqrt(self.spread**2 + p * (1 - p) / self.test_images))

    @property
    def verdict(self) -> Verdict:
        if not self.accuracies:
            return "not run"
        if self.seeds < MIN_SEEDS or self.notebook_acc is None:
            return "too few seeds"
        return "reproduced" if abs(self.notebook_acc - self.mean) <= self.tolerance else "not reproduced"

    def to_json(self) -> dict[str, Any]:
        """The line as `mnistlab reproduction --json` gives it (accuracies as fractions; nan: not defined)."""
        return {"model": self.model_id, "notebook": self.notebook, "notebook_acc": self.notebook_acc,
                "seeds": self.seeds, "accuracies": list(self.accuracies), "mean": self.mean,
                "ci95": self.half_width if self.seeds else math.nan, "spread": self.spread,
                "tolerance": self.tolerance, "diverged": self.diverged, "test_images": self.test_images,
                "machines": sorted(self.machines), "verdict": self.verdict}


def reproduction_json(lines: list[ModelReproduction]) -> dict[str, Any]:
    """`mnistlab reproduction --json`: the rule a verdict follows, and every seed model's line."""
    return {"rule": RULE, "models": [line.to_json() for line in lines]}


def _under_notebook_protocol(run: RunRecord) -> bool:
    final = run.final or {}
    return final.get("reference_differences") == [] and final.get("reference_test_acc") is not None


def reproduction_table(stores: list[RunStore]) -> list[ModelReproduction]:
    """Every zoo model, with whatever runs of it the stores hold under its notebook's protocol."""
    lines = {
        model_id: ModelReproduction(model_id, (spec.reference or {}).get("notebook", ""),
                                    (spec.reference or {}).get("test_acc"))
        for model_id, spec in zoo_models().items()
    }
    seen: dict[str, set[int]] = defaultdict(set)  # a seed run twice (two stores) counts once
    for store in stores:
        for run in store.runs():
            line = lines.get(run.model_id)
            if line is None or run.seed in seen[run.model_id] or not _under_notebook_protocol(run):
                continue
            if run.status == DIVERGED:
                line.diverged += 1
            elif run.status == COMPLETED:
                line.accuracies.append(float(run.final["test_acc"]))
                predictions = store.predictions(run.id)
                if predictions is not None:
                    line.test_images = len(predictions[0])
            else:
                continue
            seen[run.model_id].add(run.seed)
            if run.versions and run.versions.get("machine"):
                line.machines.add(str(run.versions["machine"]))
    return list(lines.values())


def reproduction_from(roots: Sequence[Path | str], archives: Sequence[Path | str] = ()) -> list[ModelReproduction]:
    """The table over existing run stores and run archives, any mix: each archive is read into a scratch store
    (runs/archive.py, checked whole), so every source is read through the store's readers."""
    with tempfile.TemporaryDirectory(prefix="mnistlab-archives-") as scratch:
        opened: list[RunStore] = []
        try:
            opened += [open_existing_store(root) for root in roots]
            opened += [archive_store(path, Path(scratch) / str(number)) for number, path in enumerate(archives)]
            return reproduction_table(opened)
        finally:
            for store in opened:
                store.close()


def _points(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.2f}"


def render_markdown(lines: list[ModelReproduction], sources: list[str],
                    estimates: Mapping[str, "Estimate"] | None = None) -> str:
    """docs/REPRODUCTION.md: the rule, the table, the totals; every figure from the stores given.

    `estimates` (model id → cost.Estimate, measured by the caller's probe) fill the last column for
    the models not run yet: one seed's hours under the notebook's protocol on the machine they name."""
    estimates = estimates or {}
    decided = [line for line in lines if line.verdict in ("reproduced", "not reproduced")]
    reproduced = sum(line.verdict == "reproduced" for line in decided)
    out = [
        "# Reproducing the seed notebooks",
        "",
        "Generated by `mnistlab reproduction` from the run store(s) "
        + ", ".join(f"`{markdown(source)}`" for source in sources)
        + "; do not edit by hand.",
        "",
        "Each seed model was trained under its notebook's own protocol (the notebook's optimizer, batch size "
        "and epochs, all 60,000 training images, validation on the test set), over several seeds. A model is "
        f"{markdown(RULE)}: the notebook "
        "is one draw from the same seed-to-seed spread plus test-set noise. A notebook whose model failed counts "
        f"as reproduced when mnistlab fails the same way by the same rule. At least {MIN_SEEDS} seeds are needed "
        "for a verdict.",
        "",
        f"**{reproduced} of {len(decided)} models with a verdict reproduced**; "
        f"{sum(line.verdict == 'not run' for line in lines)} not run yet, "
        f"{sum(line.verdict == 'too few seeds' for line in lines)} with too few seeds.",
        "",
        "| Model | Notebook (%) | mnistlab mean ± 95% CI (%) | seeds | s (points) | \\|Δ\\| (points) | tolerance (points) "
        "| Verdict | Trained on | est. hours/seed (not run) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for line in lines:
        notebook = _points(line.notebook_acc) if line.notebook_acc is not None else "–"
        delta = abs(line.notebook_acc - line.mean) if line.notebook_acc is not None and line.accuracies else math.nan
        interval = accuracy_interval_text(line.mean, line.half_width, unit="") if line.accuracies else "–"
        seeds = f"{line.seeds}" + (f" (+{line.diverged} diverged)" if line.diverged else "")
        machines = "; ".join(sorted(line.machines)) or "–"
        cost = estimates.get(line.model_id) if line.verdict == "not run" else None
        hours = f"{cost.hours:.1f}" if cost is not None else "–"
        out.append(
            f"| {markdown(line.model_id)} | {notebook} | {interval} | {seeds} | {_points(line.spread)} | "
            f"{_points(delta)} | {_points(line.tolerance)} | {line.verdict} | {markdown(machines)} | {hours} |"
        )
    out += ["", "Points are percentage points of test accuracy. Models marked *not run* have no runs under their "
            "notebook's protocol in these stores yet.", "", _estimate_note(estimates)]
    return "\n".join(out) + "\n"


def _estimate_note(estimates: Mapping[str, "Estimate"]) -> str:
    """What the last column is: whose machine, how measured, what it counts; or how to fill it."""
    if not estimates:
        return ("The last column is empty: this file was generated without estimates (`mnistlab reproduction "
                "--estimate-seconds S` probes each model not run on the generating machine). "
                "benchmarks/RESULTS.md (\"Per-model cost\") gives every zoo model's measured cost on the CPU it names.")
    from mnistlab.training.cost import ESTIMATE_INCLUDES

    machines = sorted({cost.throughput.machine for cost in estimates.values()})
    threads = sorted({cost.throughput.threads for cost in estimates.values()})
    precisions = sorted({cost.throughput.precision for cost in estimates.values()})
    return (f"The last column estimates one seed of each model not run, under its notebook's protocol, on the "
            f"machine that generated this file ({markdown('; '.join(machines))}, "
            f"{', '.join(str(t) for t in threads)} threads, {', '.join(precisions)}), from a short probe of real "
            f"training and evaluation steps (mnistlab.training.cost) under whatever load that machine had: "
            f"{markdown(ESTIMATE_INCLUDES)}. benchmarks/RESULTS.md (\"Per-model cost\") gives every zoo "
            "model's measured cost on the CPU it names.")

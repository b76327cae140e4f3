"""What a training-curve figure shows, as numbers: the report's PNGs (plots.py) and the notebook's live
SVGs (live_svg.py) both draw these, so the two cannot disagree on a band or a title.

Per epoch of one model's runs: the mean of a metric and its 95% CI band over the runs
(analysis.intervals.mean_ci), non-finite values (a diverged run's) left out of that epoch, the band
clipped to what the metric can be. numpy alone: the live display imports this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnistlab.analysis.intervals import mean_ci

__all__ = ["CURVE_METRICS", "TRAIN_COLOR", "VAL_COLOR", "Curve", "curve_series", "curve_title", "epoch_curve"]

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"
# metric column -> (its name on the figure, the values it can take: the band is clipped to them).
CURVE_METRICS: dict[str, tuple[str, tuple[float, float]]] = {
    "loss": ("loss", (0.0, math.inf)),
    "acc": ("accuracy", (0.0, 1.0)),
}


@dataclass(frozen=True)
class Curve:
    """One series per epoch: `half_width` is nan where one run had a finite value; `n` the runs counted."""

    epoch: np.ndarray
    mean: np.ndarray
    half_width: np.ndarray
    n: np.ndarray

    def band(self, limits: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, low, high) where there is a band. With two or three runs the t interval is wide;
        clipping keeps it within values the metric can take (no negative loss, no accuracy above 1)."""
        shown = np.isfinite(self.half_width)
        mean, half = self.mean[shown], self.half_width[shown]
        return self.epoch[shown], np.clip(mean - half, *limits), np.clip(mean + half, *limits)


def epoch_curve(epochs: Iterable[Any], values: Iterable[Any]) -> Curve:
    """Per epoch (ascending): the mean of `values` over the runs and the half-width of its 95% CI."""
    epoch_array = np.asarray(list(epochs), dtype=float)
    value_array = np.asarray(list(values), dtype=float)
    rows = []
    for epoch in np.unique(epoch_array):
        finite = value_array[(epoch_array == epoch) & np.isfinite(value_array)]
        if finite.size:
            rows.append((int(epoch), *mean_ci(finite), finite.size))
    columns = list(zip(*rows)) if rows else [(), (), (), ()]
    return Curve(np.asarray(columns[0], dtype=int), np.asarray(columns[1], dtype=float),
                 np.asarray(columns[2], dtype=float), np.asarray(columns[3], dtype=int))


def curve_series(metric: str) -> tuple[tuple[str, str, str], ...]:
    """(column, label, colour) of the two series of a metric's figure: train and validation."""
    return ((metric, "train", TRAIN_COLOR), (f"val_{metric}", "validation", VAL_COLOR))


def curve_title(model: str, name: str, runs: int) -> str:
    """A curve figure's title, also its image's alt text."""
    spread = f"mean of {runs} runs, 95% CI band" if runs > 1 else "1 run"
    return f"{model}: {name} ({spread})"


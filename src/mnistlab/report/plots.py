"""Figures of a report. Each function returns a matplotlib ``Figure`` so a notebook can show it.

Figures are built with ``matplotlib.figure.Figure`` directly, never through pyplot: nothing is
registered with a GUI backend, nothing needs closing, and importing this module leaves a
notebook's backend alone. PNGs are rendered by the Agg canvas.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ParamSpec

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import cbook
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import gaussian_kde

from mnistlab.report.curves import CURVE_METRICS, TRAIN_COLOR, Curve, curve_series, curve_title, epoch_curve

if TYPE_CHECKING:
    # Imported where it is drawn: statsmodels (under effects) would double this module's import
    # time, and the notebook's live curves need none of it.
    from mnistlab.analysis.effects import FactorStudy

__all__ = [
    "PNG_DPI",
    "accuracy_figure",
    "confusion_figure",
    "effects_figure",
    "figure_png",
    "png_data_uri",
    "loss_figure",
    "misclassified_figure",
    "short_class_names",
    "val_overlay_figure",
    "weights_figure",
]

# One look for every figure: small type, light grid, no top/right spines.
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "text.parse_math": False,  # titles and legends hold model ids: a '$' in one is text, not mathtext
}
OTHER_COLOR = "#b0b0b0"
# Low enough that a thousand-run report stays fast and small, high enough to read.
PNG_DPI = 100
CURVE_SIZE = (4.6, 2.9)
# Curve figures are many and alike, so they get fixed margins instead of a layout engine,
# which would cost ~40% more time per figure.
CURVE_MARGINS = {"left": 0.14, "right": 0.97, "top": 0.9, "bottom": 0.16}
OVERLAY_SIZE = (7.6, 3.8)
# A violin's KDE is evaluated from at most this many weights per layer (evenly strided):
# a dense layer can hold millions, and the shape does not change past a few thousand.
KDE_SAMPLE = 4000
GRID_COLUMNS = 6
# Class names longer than this do not fit over a 28-pixel tile; indices are used instead.
SHORT_NAME = 3

P = ParamSpec("P")


def styled(plot: Callable[P, Figure]) -> Callable[P, Figure]:
    """Build the figure under STYLE, so every plot shares one look."""
    @functools.wraps(plot)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)
    return wrapper


def figure_png(figure: Figure, dpi: int = PNG_DPI) -> bytes:
    """The figure as PNG bytes (no timestamp metadata, so equal figures give equal bytes)."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a data: URI, the way every page and notebook output embeds a figure."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def short_class_names(class_names: Sequence[str]) -> list[str]:
    """The names if all are short (digits), else the class indices as text."""
    if all(len(name) <= SHORT_NAME for name in class_names):
        return list(class_names)
    return [str(index) for index in range(len(class_names))]


# -- training curves -------------------------------------------------------------------------------


def _integer_epochs(ax: Axes, last_epoch: int) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.7, max(last_epoch, 1) + 0.3)
    ax.set_xlabel("epoch")


def _plot_curve(ax: Axes, curve: Curve, label: str, color: str, limits: tuple[float, float]) -> None:
    ax.plot(curve.epoch, curve.mean, marker="o", markersize=3, linewidth=1.5, color=color, label=label)
    epochs, low, high = curve.band(limits)
    if epochs.size:
        ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)


def _metric_figure(epochs: pd.DataFrame, model: str, metric: str) -> Figure:
    name, limits = CURVE_METRICS[metric]
    figure = Figure(figsize=CURVE_SIZE)
    figure.subplots_adjust(**CURVE_MARGINS)
    ax = figure.add_subplot()
    for column, label, color in curve_series(metric):
        _plot_curve(ax, epoch_curve(epochs["epoch"], epochs[column]), label, color, limits)
    ax.set_title(curve_title(model, name, epochs["run_id"].nunique()))
    ax.set_ylabel(name)
    _integer_epochs(ax, int(epochs["epoch"].max()) if len(epochs) else 1)
    ax.legend()
    return figure


@styled
def loss_figure(epochs: pd.DataFrame, model: str) -> Figure:
    """Train and validation loss of one model's runs against epoch (mean and 95% CI band)."""
    return _metric_figure(epochs, model, "loss")


@styled
def accuracy_figure(epochs: pd.DataFrame, model: str) -> Figure:
    """Train and validation accuracy of one model's runs against epoch (mean and 95% CI band)."""
    return _metric_figure(epochs, model, "acc")


@styled
def val_overlay_figure(epochs: pd.DataFrame, ranking: Sequence[str] | None = None,
                       highlight: int = 10) -> Figure:
    """Every model's mean validation accuracy on one plot.

    The first ``highlight`` models of ``ranking`` (default: by final mean val_acc) get a colour
    and a legend entry; the rest are thin grey lines, so a hundred models stay legible.
    """
    means = epochs.groupby(["model", "epoch"], sort=True)["val_acc"].mean().unstack("model")
    if ranking is None:
        ranking = means.ffill().iloc[-1].sort_values(ascending=False).index.tolist()
    shown = [model for model in ranking if model in means.columns][:highlight]
    others = [model for model in means.columns if model not in shown]
    figure = Figure(figsize=OVERLAY_SIZE, layout="constrained")
    ax = figure.add_subplot()
    for index, model in enumerate(others):
        ax.plot(means.index, means[model], color=OTHER_COLOR, linewidth=0.7,
                label=f"other models ({len(others)})" if index == 0 else None)
    colors = matplotlib.colormaps["tab10"].colors
    for index, model in enumerate(shown):
        ax.plot(means.index, means[model], color=colors[index % len(colors)], linewidth=1.6,
                marker="o", markersize=2.5, label=model)
    ax.set_title("Validation accuracy of every model (mean over runs)")
    ax.set_ylabel("validation accuracy")
    _integer_epochs(ax, int(means.index.max()) if len(means) else 1)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure


# -- weights ------------------------------------------------------------------------------------------


def _kde(values: np.ndarray, coords: np.ndarray) -> np.ndarray:
    sample = values[:: max(1, values.size // KDE_SAMPLE)]
    if np.ptp(sample) == 0:
        return np.zeros_like(coords)  # one repeated value: no spread for a KDE to show
    return gaussian_kde(sample).evaluate(coords)


@styled
def weights_figure(weights: Mapping[str, np.ndarray], title: str = "Weight distributions") -> Figure:
    """One violin per weighted layer, in the order given, labelled with its weight count."""
    names = list(weights)
    values = [np.asarray(weights[name], dtype=np.float64).ravel() for name in names]
    figure = Figure(figsize=(max(4.6, 0.75 * len(names) + 1.5), 3.2), layout="constrained")
    ax = figure.add_subplot()
    if names:
        stats = cbook.violin_stats(values, _kde, points=120)
        positions = np.arange(1, len(names) + 1)
        parts = ax.violin(stats, positions=positions, widths=0.8, showmedians=True)
        for body in parts["bodies"]:
            body.set_facecolor(TRAIN_COLOR)
            body.set_alpha(0.55)
        ax.set_xticks(positions, [f"{name}\n{value.size:,}" for name, value in zip(names, values)],
                      rotation=30 if len(names) > 6 else 0)
    ax.set_ylabel("weight value")
    ax.set_title(title)
    return figure


# -- errors of one run --------------------------------------------------------------------------------


@styled
def confusion_figure(matrix: np.ndarray, class_names: Sequence[str],
                     title: str = "Confusion matrix") -> Figure:
    """Counts per (true, predicted) class; colour on a log scale so the few errors show beside
    the large diagonal, and every count written in its cell."""
    names = short_class_names(class_names)
    figure = Figure(figsize=(4.8, 4.4), layout="constrained")
    ax = figure.add_subplot()
    ax.grid(False)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="white")
    norm = LogNorm(vmin=1, vmax=max(int(matrix.max()), 2))
    ax.imshow(np.ma.masked_equal(matrix, 0), cmap=cmap, norm=norm)
    dark = math.log(norm.vmax) * 0.6
    for (true, pred), count in np.ndenumerate(matrix):
        color = "white" if count > 0 and math.log(count) > dark else ("#999999" if count == 0 else "black")
        ax.text(pred, true, str(count), ha="center", va="center", fontsize=7, color=color)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return figure


@styled
def misclassified_figure(images: np.ndarray, labels: Sequence[int], predicted: Sequence[int],
                         class_names: Sequence[str], title: str = "Misclassified test images") -> Figure:
    """A grid of images (N x 28 x 28), one axes each, titled ``true→pred``."""
    names = short_class_names(class_names)
    count = len(images)
    columns = max(1, min(GRID_COLUMNS, count))
    rows = max(1, math.ceil(count / columns))
    # At least wide enough for the title, however few images there are.
    figure = Figure(figsize=(max(columns * 0.95, 5.2), rows * 1.05 + 0.4), layout="constrained")
    for index in range(count):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.imshow(images[index], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{names[labels[index]]}→{names[predicted[index]]}", fontsize=8, pad=2)
        ax.set_axis_off()
    figure.suptitle(title)
    return figure


@styled
def effects_figure(study: FactorStudy, metric: str = "test_acc") -> Figure:
    """One panel per factor: each level's fitted mean of ``metric`` (averaged over the other
    factors and the seeds) with its 95% CI bar, from the study's linear model."""
    from mnistlab.analysis.effects import METRICS

    factors = list(study.factors)
    figure = Figure(figsize=(max(4.6, 2.6 * len(factors) + 0.6), 3.0), layout="constrained")
    axes = figure.subplots(1, len(factors), sharey=True, squeeze=False)[0]
    scale, unit = (100.0, " (%)") if metric == "test_acc" else (1.0, "")
    for ax, factor in zip(axes, factors):
        means = [m for m in study.level_means if m.metric == metric and m.factor == factor]
        x = np.arange(len(means))
        centre = np.array([m.mean for m in means]) * scale
        below = centre - np.array([m.low for m in means]) * scale
        above = np.array([m.high for m in means]) * scale - centre
        ax.errorbar(x, centre, yerr=np.vstack([below, above]), fmt="o", color=TRAIN_COLOR, capsize=4)
        ax.set_xticks(x, [m.level for m in means])
        ax.set_xlim(-0.5, len(means) - 0.5)
        ax.set_title(factor)
    axes[0].set_ylabel(METRICS.get(metric, metric) + unit)
    figure.suptitle(f"Effects on {METRICS.get(metric, metric)}: level means with 95% CI")
    return figure

"""The notebook's live training curves: small SVGs written by hand, for LiveStudyDisplay.

Written directly rather than with matplotlib because matplotlib was the measured problem (issue 20,
benchmarks/RESULTS.md): its import costs ~3 s cold and each figure ~0.3 s warm, which alone took a
10-second study's display to 25% of the wall time, against the 2% allowed. These take about a
millisecond, import nothing beyond numpy, and show the same numbers as the report's PNGs
(report/curves.py: mean over the runs so far and the 95% CI band, clipped, the same title): a line
and markers per series, the band as a polygon, a few tick labels, a legend. The final report keeps
its matplotlib figures (plots.py).

Every user string (model ids) goes in through `xml_text`, so it is text in the SVG, never markup;
the SVG is embedded as a base64 data: URI, so nothing is fetched and a saved notebook shows it offline.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mnistlab.report.curves import CURVE_METRICS, curve_series, curve_title, epoch_curve
from mnistlab.util.safetext import xml_text

__all__ = ["curve_svg", "live_curve_images", "svg_data_uri"]

WIDTH, HEIGHT = 440, 270  # px, about the report PNGs' size, so the display looks the same
# The plot area's margins: title and legend above, tick labels and axis names left and below.
LEFT, RIGHT, TOP, BOTTOM = 54, 12, 42, 36
TICKS = 6  # an axis is cut into at most this many steps between tick labels
TITLE_SIZE = 12  # px; a long title is set smaller to fit the width
CHAR_WIDTH = 0.56  # a sans-serif character's width in ems, roughly: to fit the title
MARKER_RADIUS = 2.5
BAND_OPACITY = 0.2


def _nice_step(span: float, integer: bool = False) -> float:
    """The smallest step of 1, 2, 2.5 (not for `integer` steps) or 5 times a power of ten that cuts
    `span` into at most TICKS parts."""
    raw = span / TICKS
    power = 10 ** math.floor(math.log10(raw))
    factors = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    return max(1 if integer else 0, next(power * factor for factor in factors if power * factor >= raw * 0.999))


def _ticks(low: float, high: float, step: float) -> list[float]:
    first = math.ceil(low / step - 1e-9) * step
    return [first + index * step for index in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float, step: float) -> str:
    """A tick's text with the decimals its step needs (0.25 two, 0.5 one, 5 none)."""
    exponent = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -exponent + (1 if round(step / 10 ** exponent, 6) == 2.5 else 0))
    return f"{0.0 if abs(value) < step * 1e-6 else value:.{decimals}f}"


def _limits(values: Iterable[np.ndarray]) -> tuple[float, float]:
    """The y axis: every drawn value, with a margin of 5% of their span."""
    finite = np.concatenate([array[np.isfinite(array)] for array in values] or [np.zeros(0)])
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = (high - low) * 0.05 if high > low else max(abs(high) * 0.05, 0.05)
    return low - pad, high + pad


def _points(xs: Iterable[float], ys: Iterable[float]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))


def curve_svg(rows: Sequence[Mapping[str, Any]], model: str, metric: str) -> tuple[str, str]:
    """(title, SVG) of one model's `metric` ("loss" or "acc") over its epoch rows (dicts with
    "run_id", "epoch" and the metric's train and validation columns)."""
    name, limits = CURVE_METRICS[metric]
    epochs = [row["epoch"] for row in rows]
    series = [(label, color, epoch_curve(epochs, [row.get(column, math.nan) for row in rows]))
              for column, label, color in curve_series(metric)]
    bands = [curve.band(limits) for _, _, curve in series]
    title = curve_title(model, name, len({row["run_id"] for row in rows}))

    last = max([int(epoch) for epoch in epochs] or [1])
    x_low, x_high = 0.7, max(last, 1) + 0.3
    y_low, y_high = _limits([curve.mean for _, _, curve in series] + [band[1] for band in bands]
                            + [band[2] for band in bands])
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_at(values: Iterable[float]) -> list[float]:
        return [LEFT + (value - x_low) / (x_high - x_low) * plot_width for value in values]

    def y_at(values: Iterable[float]) -> list[float]:
        return [TOP + (y_high - value) / (y_high - y_low) * plot_height for value in values]

    title_size = min(TITLE_SIZE, (WIDTH - 16) / max(len(title) * CHAR_WIDTH, 1))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10" fill="#333">',
             f"<title>{xml_text(title)}</title>",
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2:.1f}" y="16" text-anchor="middle" font-size="{title_size:.1f}">'
             f"{xml_text(title)}</text>"]
    # Grid and tick labels: integer epochs on x, a nice step on y.
    x_step = round(_nice_step(max(last - 1, 1), integer=True))
    x_ticks = _ticks(1, last, x_step)
    for tick, x in zip(x_ticks, x_at(x_ticks)):
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_height}" stroke="#e6e6e6"/>'
                     f'<text x="{x:.1f}" y="{TOP + plot_height + 13}" text-anchor="middle">{int(tick)}</text>')
    y_step = _nice_step(y_high - y_low)
    y_ticks = _ticks(y_low, y_high, y_step)
    for tick, y in zip(y_ticks, y_at(y_ticks)):
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_width}" y2="{y:.1f}" stroke="#e6e6e6"/>'
                     f'<text x="{LEFT - 5}" y="{y + 3.5:.1f}" text-anchor="end">{_label(tick, y_step)}</text>')
    parts.append(f'<path d="M{LEFT},{TOP}V{TOP + plot_height}H{LEFT + plot_width}" fill="none" stroke="#666"/>')
    parts.append(f'<text x="{LEFT + plot_width / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">epoch</text>')
    parts.append(f'<text transform="translate(13 {TOP + plot_height / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{xml_text(name)}</text>')
    # Bands first, then the lines and markers over them.
    for (label, color, _), (band_epochs, low, high) in zip(series, bands):
        if band_epochs.size > 1:
            xs = x_at(band_epochs)
            parts.append(f'<polygon points="{_points(xs + xs[::-1], y_at(high) + y_at(low)[::-1])}" '
                         f'fill="{color}" fill-opacity="{BAND_OPACITY}" stroke="none"/>')
    for label, color, curve in series:
        xs, ys = x_at(curve.epoch), y_at(curve.mean)
        parts.append(f'<polyline points="{_points(xs, ys)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        parts.append(f'<g fill="{color}">' + "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{MARKER_RADIUS}"/>'
                                                      for x, y in zip(xs, ys)) + "</g>")
    # The legend, above the plot at the right.
    x = WIDTH - RIGHT
    for label, color, _ in reversed(series):
        x -= 8 + len(label) * 6 + 26
        parts.append(f'<line x1="{x}" y1="30" x2="{x + 18}" y2="30" stroke="{color}" stroke-width="2"/>'
                     f'<text x="{x + 22}" y="33.5">{xml_text(label)}</text>')
    parts.append("</svg>")
    return title, "".join(parts)


def svg_data_uri(svg: str) -> str:
    """An SVG as a base64 data: URI, as the notebook displays embed their figures."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8", "replace")).decode("ascii")


def live_curve_images(rows: Sequence[Mapping[str, Any]], model: str) -> list[tuple[str, str]]:
    """(title, data URI) of one model's loss and accuracy curves, as the display shows them."""
    images = []
    for metric in CURVE_METRICS:
        title, svg = curve_svg(rows, model, metric)
        images.append((title, svg_data_uri(svg)))
    return images

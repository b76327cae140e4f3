"""The mean over seeds and its Student-t confidence interval, with numpy alone.

`mean_ci` is the one rule every interval over runs uses (the report's tables and curve bands, the
conclusions, the notebook's live curves). It lives here, apart from analysis/compare.py, because
that module loads pandas and scipy (~0.6 s cold on a 2-core CPU) and the live display, which must
keep within 2% of a 10-second study, needs the rule without them. The t quantile is therefore
computed here for the integer degrees of freedom mean_ci needs (tests check it against scipy's).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["check_confidence", "mean_ci", "t_quantile"]


def check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _series_ratios(dof: int) -> np.ndarray:
    """The ratios between the terms of `_central_probability`'s sum in cos² θ, up to cos^(dof−2) θ:
    (2k−1)/(2k) for even dof, (2k)/(2k+1) for odd (Abramowitz & Stegun 26.7.4 and 26.7.3)."""
    k = np.arange(1, dof // 2, dtype=float)
    return (2 * k) / (2 * k + 1) if dof % 2 else (2 * k - 1) / (2 * k)


def _central_probability(theta: float, dof: int, ratios: np.ndarray) -> float:
    """P(|T| < √dof·tan θ) for Student's t with `dof` degrees of freedom: A&S's closed forms."""
    sin, cos = math.sin(theta), math.cos(theta)
    total = 1.0 + float(np.cumprod(ratios * cos * cos).sum())
    if dof % 2 == 0:
        return sin * total
    return 2 / math.pi * (theta + (sin * cos * total if dof > 1 else 0.0))


@functools.cache
def t_quantile(confidence: float, dof: int) -> float:
    """The t such that P(|T| < t) = `confidence` (scipy's t.ppf((1 + confidence) / 2, dof)), for
    a whole number of degrees of freedom: θ = atan(t/√dof) found by bisection to the last bit."""
    check_confidence(confidence)
    if dof < 1 or int(dof) != dof:
        raise ValueError(f"degrees of freedom must be a whole number from 1, got {dof}")
    ratios = _series_ratios(int(dof))
    low, high = 0.0, math.pi / 2
    while True:
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if _central_probability(middle, int(dof), ratios) < confidence:
            low = middle
        else:
            high = middle
    return math.sqrt(dof) * math.tan(middle)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval: t(confidence, n − 1)·s/√n.

    With one value there is no spread to estimate, so the half-width is nan.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("mean_ci needs at least one value")
    check_confidence(confidence)
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan
    standard_error = float(data.std(ddof=1)) / math.sqrt(data.size)
    if standard_error == 0:
        return mean, 0.0  # identical values: no spread
    return mean, t_quantile(confidence, data.size - 1) * standard_error

"""The probability of outperforming, P(A > B): the share of paired seeds on which model A beat
model B, with its Wilson interval (Bouthillier et al., MLSys 2021, report it beside the mean
difference: it says how often A wins, where the mean says by how much)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from mnistlab.analysis.multiple import ALPHA

__all__ = ["Outperform", "outperform"]


@dataclass(frozen=True)
class Outperform:
    """A against B over ``seeds`` paired seeds: ``wins`` (a tie counts half), the share and its
    Wilson interval at 1 - alpha (fractions)."""

    a: str
    b: str
    wins: float
    seeds: int
    share: float
    low: float
    high: float

    def text(self) -> str:
        return (f"P({self.a} > {self.b}) = {self.share * 100:.0f}% of {self.seeds} paired seeds "
                f"(Wilson {100 * (1 - ALPHA):g}% CI {self.low * 100:.0f}–{self.high * 100:.0f}%)")


def outperform(a: str, b: str, acc_a: Sequence[float], acc_b: Sequence[float], alpha: float = ALPHA) -> Outperform:
    """P(A > B) over paired per-seed accuracies (same seed order on both sides).

    A tie counts as half a win, so that P(A > B) + P(B > A) = 1; the Wilson interval (statsmodels,
    ``method='wilson'``) stays inside [0, 1] and is sensible at 0 or all wins, where the normal one is not."""
    first, second = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    if first.shape != second.shape or first.size == 0:
        raise ValueError(f"outperform needs paired accuracies, got {first.size} and {second.size}")
    wins = float(np.sum(first > second) + 0.5 * np.sum(first == second))
    low, high = proportion_confint(wins, first.size, alpha=alpha, method="wilson")
    return Outperform(a, b, wins, int(first.size), wins / first.size, float(low), float(high))

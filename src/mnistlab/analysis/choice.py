"""The rule that chooses an experiment's best model, in plain Python.

One rule for every place that names a best model: the report (``ranking.best_model``, which reads it
off the comparison table) and the terminal (``mnistlab ls``, through ``report.overview``). It imports
neither pandas nor scipy, so that ``ls`` applies it and still starts fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Candidate", "candidate", "choose_model"]


@dataclass(frozen=True)
class Candidate:
    """One model's means over its finished runs, as the comparison table holds them (nan: none)."""

    model: str
    test_acc_mean: float
    val_acc: float = math.nan
    val_loss: float = math.nan


def candidate(model: Any, test_acc_mean: Any, val_acc: Any = None, val_loss: Any = None) -> Candidate:
    """A Candidate from table cells, where a missing figure may be None, nan or pandas' NA."""
    return Candidate(str(model), _figure(test_acc_mean), _figure(val_acc), _figure(val_loss))


def _figure(value: Any) -> float:
    # `value != value` is True for nan and for pandas' NA alike, and needs neither pandas nor numpy.
    if value is None or value != value:
        return math.nan
    return float(value)


def choose_model(candidates: Iterable[Candidate]) -> str | None:
    """The model chosen on validation alone: highest mean final val_acc, then lowest mean val_loss.

    Choosing on test accuracy and then reporting that same test accuracy would make the figure
    optimistic (the choice peeks); the test figure of the chosen model is reported once. Under
    protocol ``test`` validation *is* the test set, and the report says so. Falls back to mean
    test accuracy when no model has a validation figure. None if no model has a test figure.
    Still tied: the first in the order given (the comparison table's, best mean test accuracy first).
    """
    ranked = [one for one in candidates if not math.isnan(one.test_acc_mean)]
    if not ranked:
        return None
    validated = [one for one in ranked if not math.isnan(one.val_acc)]
    if validated:
        # min() and max() return the first of equal keys, as a stable sort's first row would be;
        # a missing val_loss ranks after every present one, as pandas sorts nan last.
        return min(validated, key=lambda one: (-one.val_acc, math.isnan(one.val_loss),
                                               0.0 if math.isnan(one.val_loss) else one.val_loss)).model
    return max(ranked, key=lambda one: one.test_acc_mean).model

"""Statistics for one comparison: intervals over seeds, paired differences, the exact McNemar test.

On MNIST single-run differences below ~0.2 points are noise (one binomial standard error at 99.2%
on 10,000 test images is ~0.09 points), so every comparison comes with an interval or a p-value.
Accuracies are fractions in [0, 1] throughout; sentences meant for people print them as
percentage points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mnistlab.analysis.intervals import check_confidence, mean_ci


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired predictions.

    ``b``: A right and B wrong; ``c``: A wrong and B right; ``statistic``: min(b, c), the
    binomial count the two-sided p-value is computed from.
    """

    b: int
    c: int
    statistic: int
    p_value: float


@dataclass(frozen=True)
class PairedDifference:
    """Mean of A − B (accuracy fractions) with the half-width of its confidence interval.

    ``paired`` says whether runs were matched seed by seed; ``note`` says how the
    interval was made, for reports. ``half_width`` is nan when there are too few runs.
    """

    mean: float
    half_width: float
    confidence: float
    n_a: int
    n_b: int
    paired: bool
    note: str

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def includes_zero(self) -> bool:
        """The interval over seeds exists and includes 0: seed-to-seed variation could explain the difference."""
        return math.isfinite(self.half_width) and self.low <= 0 <= self.high


# --- Statistics ------------------------------------------------------------------------


def accuracy_interval(mean: float, half_width: float) -> tuple[float, float]:
    """The bounds of a mean accuracy's t interval, clipped to what an accuracy can be ([0, 1]).

    With 2-3 seeds and one unstable seed the symmetric t interval runs past 100% or below 0
    (s000-m7: 76.65 ± 50.27); the clipped bounds are the honest statement of the same interval.
    """
    return max(0.0, mean - half_width), min(1.0, mean + half_width)


def accuracy_interval_text(mean: float, half_width: float, unit: str = "%") -> str:
    """A mean accuracy and its 95% CI in points: "98.15% ± 0.50", or where the symmetric interval
    leaves [0, 100], its clipped bounds: "76.65% (CI 26.38 to 100.00)". One run: the mean alone."""
    if not math.isfinite(half_width):
        return f"{mean * 100:.2f}{unit}"
    low, high = accuracy_interval(mean, half_width)
    if (low, high) == (mean - half_width, mean + half_width):
        return f"{mean * 100:.2f}{unit} ± {half_width * 100:.2f}"
    return f"{mean * 100:.2f}{unit} (CI {low * 100:.2f} to {high * 100:.2f})"


def binomial_se(acc: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent test images."""
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {acc}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    return math.sqrt(acc * (1.0 - acc) / n)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """Exact (binomial) McNemar test: do A and B err on the test set at different rates?

    Only the discordant images carry information: ``b`` where A alone is right and ``c``
    where B alone is right. Under the null each is equally likely, so the p-value is the
    two-sided binomial test of min(b, c) out of b + c at p = 0.5 (1.0 when b + c == 0).
    """
    right_a = _as_correct_flags(correct_a, "correct_a")
    right_b = _as_correct_flags(correct_b, "correct_b")
    if right_a.shape != right_b.shape:
        raise ValueError(f"paired predictions differ in length: {right_a.size} vs {right_b.size}")
    b = int(np.count_nonzero(right_a & ~right_b))
    c = int(np.count_nonzero(~right_a & right_b))
    statistic = min(b, c)
    if b + c == 0:
        return McNemarResult(b=b, c=c, statistic=statistic, p_value=1.0)
    p_value = stats.binomtest(statistic, n=b + c, p=0.5, alternative="two-sided").pvalue
    return McNemarResult(b=b, c=c, statistic=statistic, p_value=float(p_value))


def _as_correct_flags(values: Sequence[bool], name: str) -> np.ndarray:
    flags = np.asarray(values)
    if flags.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {flags.shape}")
    # Accept 0/1 as well as bools, but refuse anything else: passing predicted labels by
    # mistake would otherwise be silently read as "non-zero means correct".
    if flags.dtype != bool and not np.isin(flags, (0, 1)).all():
        raise ValueError(f"{name} must hold booleans (was each prediction correct?)")
    return flags.astype(bool)


def paired_difference(
    acc_a: Sequence[float], acc_b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean accuracy difference A − B over repeated runs, with a confidence interval.

    Equal lengths are taken as paired by seed (the i-th run of each used the same seed,
    so callers pass both in seed order) and the interval is a t interval on the per-seed
    differences, which cancels seed-to-seed variation both models share. Unequal lengths
    fall back to Welch's unpaired t interval, and the note says so.
    """
    a, b = np.asarray(acc_a, dtype=float), np.asarray(acc_b, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("paired_difference needs at least one run of each model")
    check_confidence(confidence)
    if a.size == b.size:
        mean, half_width = _paired_interval(a, b, confidence)
        note = f"paired by seed over {a.size} seed{'s' if a.size != 1 else ''}"
        return PairedDifference(mean, half_width, confidence, a.size, b.size, True, note)
    mean, half_width = _welch_interval(a, b, confidence)
    note = f"unpaired (Welch): {a.size} vs {b.size} runs, seeds could not be matched"
    return PairedDifference(mean, half_width, confidence, a.size, b.size, False, note)


def _paired_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    mean = float((a - b).mean())
    if a.size < 2:
        return mean, math.nan  # one seed gives no variance estimate
    if np.ptp(a - b) == 0:
        return mean, 0.0  # the same difference every seed: no spread (scipy's interval is nan)
    interval = stats.ttest_rel(a, b).confidence_interval(confidence)
    return mean, float(interval.high - interval.low) / 2


def _welch_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    mean = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return mean, math.nan  # a single run gives no variance estimate
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return mean, 0.0  # identical runs: the Welch dof is 0/0, and no spread anyway
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return mean, float(interval.high - interval.low) / 2


def significance_sentence(
    best_name: str,
    other_name: str,
    result: McNemarResult,
    diff: PairedDifference,
    alpha: float = 0.05,
    adjusted_p: float | None = None,
    detectable: float | None = None,
) -> str:
    """One plain sentence comparing two models, e.g.

    "s002-m9 beats s000-m1 by 0.62 points (95% CI 0.41 to 0.83); McNemar p = 0.0003:
    significant at 5%."

    With ``adjusted_p`` (Holm, over the report's family of tests) the verdict rests on it and
    both p-values are shown. A non-significant test is not evidence of equality: the sentence
    says so, and with ``detectable`` (an accuracy fraction) names the smallest difference the
    test could have detected.
    """
    verb = "beats" if diff.mean >= 0 else "trails"
    level = f"{alpha * 100:g}%"
    decisive = result.p_value if adjusted_p is None else adjusted_p
    if decisive < alpha and diff.includes_zero:
        # McNemar conditions on these trained networks; the seed interval carries seed-to-seed variation.
        verdict = (f"significant at {level} for these trained networks, but the 95% CI over seeds includes 0: "
                   "not established beyond these seeds.")
    elif decisive < alpha:
        verdict = f"significant at {level}."
    elif detectable is not None and math.isfinite(detectable):
        verdict = (f"not significant at {level}: not distinguishable from noise (the test could have "
                   f"detected about {detectable * 100:.2f} points with 80% power).")
    else:
        verdict = f"not significant at {level}: not distinguishable from noise, which is not evidence they are equal."
    tests = f"McNemar {p_text(result.p_value)}"
    if adjusted_p is not None:
        tests += f", Holm-adjusted {p_text(adjusted_p)}"
    return (
        f"{best_name} {verb} {other_name} by {abs(diff.mean) * 100:.2f} points "
        f"({_interval_text(diff)}); {tests}: {verdict}"
    )


def _interval_text(diff: PairedDifference) -> str:
    if math.isnan(diff.half_width):
        return "no CI: too few runs"
    return f"{diff.confidence * 100:g}% CI {diff.low * 100:.2f} to {diff.high * 100:.2f}"


def p_text(p_value: float) -> str:
    """A p-value as reports print it."""
    return "p < 0.0001" if p_value < 0.0001 else f"p = {p_value:.4f}"


# --- Run tables ------------------------------------------------------------------------

RUN_COLUMNS = (
    "model",
    "seed",
    "test_acc",
    "test_loss",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "best_epoch",
    "seconds_per_epoch",
)
# Averaged per model; test_acc gets a confidence interval as well, being what models
# are ranked by.
AVERAGED_COLUMNS = RUN_COLUMNS[2:]


def summarise_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model from one row per (model, seed) run, best mean test_acc first.

    Columns: ``n`` (runs), ``test_acc_mean``, ``test_acc_ci95`` (half-width of the 95%
    t interval; nan for a single run), then ``<column>_mean`` for the other metrics.
    Means skip nan (a diverged run has no test loss) but ``n`` counts every run.
    """
    missing = [column for column in RUN_COLUMNS if column not in df.columns]
    if missing:
        raise ValueError(f"run table lacks columns: {', '.join(missing)}")
    rows = {model: _summarise_model(runs) for model, runs in df.groupby("model", sort=False)}
    columns = ["n", "test_acc_mean", "test_acc_ci95"] + [
        f"{column}_mean" for column in AVERAGED_COLUMNS if column != "test_acc"
    ]
    summary = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    summary.index.name = "model"
    return summary.sort_values("test_acc_mean", ascending=False, kind="stable")


def _summarise_model(runs: pd.DataFrame) -> dict[str, float]:
    test_acc = runs["test_acc"].dropna()
    mean, half_width = mean_ci(test_acc) if len(test_acc) else (math.nan, math.nan)
    row: dict[str, float] = {"n": len(runs), "test_acc_mean": mean, "test_acc_ci95": half_width}
    for column in AVERAGED_COLUMNS:
        if column != "test_acc":
            row[f"{column}_mean"] = float(runs[column].mean())
    return row

"""Diagnosis rules for training histories and the statistics used to compare models.

Two jobs, kept apart:

* ``diagnose`` reads one training history (Keras-style per-epoch ``loss``, ``acc``,
  ``val_loss``, ``val_acc``) and names what went wrong, each finding carrying the rule
  that fired written out with the run's own numbers, so a reader can check the call.
* The statistics (``mean_ci``, ``paired_difference``, ``mcnemar_exact``,
  ``binomial_se``, ``summarise_runs``) say whether one model really beats another.
  On MNIST single-run differences below ~0.2 points are noise (one binomial standard
  error at 99.2% on 10,000 test images is ~0.09 points), so every comparison comes with
  an interval or a p-value.

Accuracies are fractions in [0, 1] throughout; sentences meant for people print them as
percentage points. Epochs in rule texts are 1-based, as Keras prints them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# --- Diagnosis thresholds -------------------------------------------------------------
# Tuned for the MNIST family, where any model that learns at all clears 90% within an
# epoch or two; each says why it sits where it does.

# MNIST classes are not balanced (digit 1 is 11.35% of the test set), so a model that
# always predicts one class scores 0.089-0.114, and a model that learned nothing drifts
# in that band. Five points above chance covers it while staying far below any model
# that learned something (those pass 0.5 within the first epoch).
CHANCE_MARGIN = 0.05

# Epoch-to-epoch val_loss jitter on a fitted model is a few percent; a final value 20%
# above the best one is a trend the checkpoint of the best epoch would have avoided.
OVERFIT_MIN_RISE = 0.20
# ...and most of that rise must be the gap to the training loss opening, not the training loss
# climbing with it (both rising together is a training problem, not memorisation).
OVERFIT_MIN_GAP_SHARE = 0.5

# Even a small MLP fits the MNIST training set past 98% in a few epochs, measured in inference
# mode (the engine's ``train_eval_acc``). Keras's running-mean ``acc`` has dropout on and reads
# low by design (s004-m7/m9, BatchNormalization + dropout 0.5: 0.9699 running, ~0.99 in inference
# mode, 97.9% test), so the rules use it only for histories recorded before train_eval_* existed.
# Fashion-MNIST's good models end near 0.93-0.96: pass a lower ``min_train_acc`` there.
UNDERFIT_MIN_TRAIN_ACC = 0.97

# A 2-point fall in val_acc between consecutive epochs is over 6 binomial standard
# errors even at 90% accuracy on 10,000 images: the model moved, not the sample. Only
# falls count: rises of that size are ordinary learning in the first epochs.
UNSTABLE_MAX_ACC_FALL = 0.02

# A val_loss jump of 50% in one epoch that then falls back at least halfway is a spike
# (typical of batch-norm statistics or a too-high learning rate). Overfitting raises
# val_loss a few percent per epoch and does not fall back, so it is not mistaken for one.
UNSTABLE_MAX_LOSS_JUMP = 0.50

HISTORY_KEYS = ("loss", "acc", "val_loss", "val_acc")
# Inference-mode training metrics; optional, and preferred by the rules when every epoch has them.
FIT_KEYS = ("train_eval_loss", "train_eval_acc")
FIT_WORDS = "train {metric} (inference mode, fixed training subsample)"
RUNNING_WORDS = "train {metric} (Keras running mean, dropout on)"
STATUSES = ("completed", "diverged")

LABELS = {
    "diverged": "Training diverged",
    "stuck_at_chance": "Stuck at chance",
    "overfitting": "Overfitting",
    "underfitting": "Underfitting",
    "unstable_validation": "Unstable validation",
    "healthy": "Healthy",
}


@dataclass(frozen=True)
class Diagnosis:
    """One finding about a training run: a stable code, a label for people, and the rule
    that fired written out with the run's own numbers."""

    code: str
    label: str
    rule: str


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


# --- Diagnosis --------------------------------------------------------------------------


def diagnose(
    history: Mapping[str, Sequence[float]],
    status: str = "completed",
    n_classes: int = 10,
    *,
    min_train_acc: float = UNDERFIT_MIN_TRAIN_ACC,
) -> list[Diagnosis]:
    """Name what happened in one training run.

    Returns findings in a fixed order (diverged, stuck_at_chance, overfitting,
    underfitting, unstable_validation), or a single ``healthy`` when none fires.
    ``diverged`` and ``stuck_at_chance`` are returned alone: after a NaN the numbers are
    garbage, and a model that learned nothing only shows noise to the other rules.
    Missing values (None, as SQLite stores NaN) count as non-finite.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    series = _history_arrays(history)

    diverged = _diverged_rule(series, status)
    if diverged:
        return [_finding("diverged", diverged)]
    stuck = _stuck_at_chance_rule(series, 1.0 / n_classes)
    if stuck:
        return [_finding("stuck_at_chance", stuck)]

    findings = [
        _finding(code, rule)
        for code, rule in (
            ("overfitting", _overfitting_rule(series)),
            ("underfitting", _underfitting_rule(series, min_train_acc)),
            ("unstable_validation", _unstable_rule(series)),
        )
        if rule
    ]
    return findings or [_finding("healthy", _healthy_rule(series))]


@dataclass(frozen=True)
class SeedDiagnosis:
    """``diagnose``'s findings on one seed's finished run of a model."""

    run_id: int
    seed: int
    findings: tuple[Diagnosis, ...]

    @property
    def codes(self) -> str:
        return ", ".join(finding.code for finding in self.findings)


@dataclass(frozen=True)
class ModelDiagnosis:
    """A model's diagnosis over all its seeds: the verdict most of them share, and who disagrees.

    One seed can overfit while another does not, so the verdict is the combination of codes that
    most seeds share (a tie goes to the one the lowest seed has), and the text says how many seeds
    agree and what the others showed. The rule texts quoted (``findings``) are those of the lowest
    agreeing seed's run: real numbers a reader can find in that run, which averaged histories
    would not be (and averaging would smooth away the instability the rules look for).
    """

    model: str
    seeds: tuple[SeedDiagnosis, ...]  # seed order

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError(f"model {self.model} has no diagnosed run")

    @property
    def codes(self) -> str:
        """The verdict: the findings' codes that most seeds share."""
        counts = Counter(seed.codes for seed in self.seeds)
        return max(counts, key=lambda codes: (counts[codes], -self._first_seed_with(codes)))

    def _first_seed_with(self, codes: str) -> int:
        return min(seed.seed for seed in self.seeds if seed.codes == codes)

    @property
    def quoted(self) -> SeedDiagnosis:
        """The lowest seed whose run has the verdict: the run the rule texts quote."""
        verdict = self.codes
        return next(seed for seed in self.seeds if seed.codes == verdict)

    @property
    def agreeing(self) -> int:
        verdict = self.codes
        return sum(seed.codes == verdict for seed in self.seeds)

    @property
    def dissenting(self) -> tuple[SeedDiagnosis, ...]:
        verdict = self.codes
        return tuple(seed for seed in self.seeds if seed.codes != verdict)

    @property
    def run_id(self) -> int:
        return self.quoted.run_id

    @property
    def seed(self) -> int:
        return self.quoted.seed

    @property
    def findings(self) -> tuple[Diagnosis, ...]:
        return self.quoted.findings

    @property
    def text(self) -> str:
        """``overfitting (3 of 3 seeds)`` or ``healthy (2 of 3 seeds; seed 1: overfitting)``."""
        total = len(self.seeds)
        counted = f"{self.agreeing} of {total} seed{'s' if total != 1 else ''}"
        others = "".join(f"; seed {seed.seed}: {seed.codes}" for seed in self.dissenting)
        return f"{self.codes} ({counted}{others})"


def diagnose_seeds(model: str, runs: Iterable[tuple[int, int, Mapping[str, Sequence[float]], str]],
                   n_classes: int = 10, *, min_train_acc: float = UNDERFIT_MIN_TRAIN_ACC) -> ModelDiagnosis:
    """``diagnose`` on every (run_id, seed, history, status) of one model, combined over seeds."""
    seeds = sorted((SeedDiagnosis(int(run_id), int(seed),
                                  tuple(diagnose(history, status, n_classes, min_train_acc=min_train_acc)))
                    for run_id, seed, history, status in runs), key=lambda item: (item.seed, item.run_id))
    return ModelDiagnosis(model, tuple(seeds))


def _finding(code: str, rule: str) -> Diagnosis:
    return Diagnosis(code=code, label=LABELS[code], rule=rule)


def _history_arrays(history: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    missing = [key for key in HISTORY_KEYS if key not in history]
    if missing:
        raise ValueError(f"history lacks {', '.join(missing)}")
    # dtype=float turns None into nan, so missing values are caught as non-finite.
    series = {key: np.asarray(history[key], dtype=float) for key in HISTORY_KEYS}
    lengths = {key: len(values) for key, values in series.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"history lists differ in length: {lengths}")
    if lengths["loss"] == 0:
        raise ValueError("history has no epochs")
    fit = {key: np.asarray(history.get(key, ()), dtype=float) for key in FIT_KEYS}
    inference_mode = all(len(values) == lengths["loss"] and np.isfinite(values).all() for values in fit.values())
    # fit_*: what the under/overfitting rules read as "how well the model fits its training data".
    series["fit_loss"] = fit["train_eval_loss"] if inference_mode else series["loss"]
    series["fit_acc"] = fit["train_eval_acc"] if inference_mode else series["acc"]
    series["inference_mode"] = np.asarray(inference_mode)
    return series


def _train_words(series: dict[str, np.ndarray], metric: str) -> str:
    return (FIT_WORDS if bool(series["inference_mode"]) else RUNNING_WORDS).format(metric=metric)


def _diverged_rule(series: dict[str, np.ndarray], status: str) -> str:
    reasons = []
    if status == "diverged":
        reasons.append("the run's status is 'diverged'")
    for key in HISTORY_KEYS:
        bad = np.flatnonzero(~np.isfinite(series[key]))
        if bad.size:
            epoch = int(bad[0])
            reasons.append(f"{key} is {series[key][epoch]} at epoch {epoch + 1}")
            break  # the first non-finite series is enough to explain it
    return "; ".join(reasons)


def _stuck_at_chance_rule(series: dict[str, np.ndarray], chance: float) -> str:
    train, val = series["fit_acc"][-1], series["val_acc"][-1]
    ceiling = chance + CHANCE_MARGIN
    if train <= ceiling and val <= ceiling:
        return (
            f"final {_train_words(series, 'acc')} {train:.4f} and val acc {val:.4f} are at most "
            f"{CHANCE_MARGIN:.2f} above chance ({chance:.4f})"
        )
    return ""


def _overfitting_rule(series: dict[str, np.ndarray]) -> str:
    # Overfitting is the generalisation gap opening: val_loss climbs from its minimum while the
    # training loss stays down. The gap (val_loss - train loss) is compared rather than asking
    # that the train loss fell: once a model fits its data, the inference-mode train loss only
    # wobbles around a small value (s004-m2: 0.021 at val_loss's minimum, 0.027 at the end, while
    # val_loss rose 36%), and that wobble says nothing about generalisation.
    val_loss, loss = series["val_loss"], series["fit_loss"]
    best = int(np.argmin(val_loss))
    if best == len(val_loss) - 1:
        return ""  # still improving at the end (always so with one epoch)
    rise = _relative_change(val_loss[best], val_loss[-1])
    gap_at_best, gap_at_end = val_loss[best] - loss[best], val_loss[-1] - loss[-1]
    widening, val_rise = gap_at_end - gap_at_best, val_loss[-1] - val_loss[best]
    if rise >= OVERFIT_MIN_RISE and widening >= OVERFIT_MIN_GAP_SHARE * val_rise:
        return (
            f"val_loss rose from its minimum {val_loss[best]:.4f} (epoch {best + 1}) to "
            f"{val_loss[-1]:.4f} ({rise:+.0%}) while {_train_words(series, 'loss')} went "
            f"{loss[best]:.4f} → {loss[-1]:.4f}: the gap between them widened from {gap_at_best:.4f} to {gap_at_end:.4f}"
        )
    return ""


def _underfitting_rule(series: dict[str, np.ndarray], min_train_acc: float) -> str:
    # Train loss above val loss is not used as a sign: Keras averages train loss over the
    # epoch with dropout on, so healthy dropout models show it every epoch.
    train = series["fit_acc"][-1]
    if train < min_train_acc:
        return f"final {_train_words(series, 'acc')} {train:.4f} is below {min_train_acc:.2f}"
    return ""


def _unstable_rule(series: dict[str, np.ndarray]) -> str:
    reasons = [_largest_acc_fall(series["val_acc"]), _first_loss_spike(series["val_loss"])]
    return "; ".join(reason for reason in reasons if reason)


def _largest_acc_fall(val_acc: np.ndarray) -> str:
    if len(val_acc) < 2:
        return ""
    falls = val_acc[:-1] - val_acc[1:]
    worst = int(np.argmax(falls))
    if falls[worst] > UNSTABLE_MAX_ACC_FALL:
        return (
            f"val_acc fell {falls[worst]:.4f} from epoch {worst + 1} to {worst + 2} "
            f"({val_acc[worst]:.4f} → {val_acc[worst + 1]:.4f}), more than "
            f"{UNSTABLE_MAX_ACC_FALL:.2f}"
        )
    return ""


def _first_loss_spike(val_loss: np.ndarray) -> str:
    # A spike needs an epoch before it and one after it to fall back in.
    for i in range(1, len(val_loss) - 1):
        before, peak, after = val_loss[i - 1], val_loss[i], val_loss[i + 1]
        jump = _relative_change(before, peak)
        if jump > UNSTABLE_MAX_LOSS_JUMP and after <= (before + peak) / 2:
            return (
                f"val_loss jumped {jump:+.0%} at epoch {i + 1} ({before:.4f} → {peak:.4f}) "
                f"and fell back to {after:.4f} at epoch {i + 2}"
            )
    return ""


def _healthy_rule(series: dict[str, np.ndarray]) -> str:
    parts = [f"final {_train_words(series, 'acc')} {series['fit_acc'][-1]:.4f}, val acc {series['val_acc'][-1]:.4f}"]
    if len(series["loss"]) == 1:
        parts.append("only 1 epoch, so overfitting and instability cannot be judged")
    else:
        val_loss = series["val_loss"]
        best = int(np.argmin(val_loss))
        rise = _relative_change(val_loss[best], val_loss[-1])
        parts.append(
            f"final val_loss {val_loss[-1]:.4f} is {rise:+.0%} "
            f"over its minimum {val_loss[best]:.4f} (epoch {best + 1})"
        )
    return "no rule fired: " + "; ".join(parts)


def _relative_change(start: float, end: float) -> float:
    if start == 0:
        return 0.0 if end == 0 else math.copysign(math.inf, end)
    return float((end - start) / start)


# --- Statistics ------------------------------------------------------------------------


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (n − 1 dof, ``scipy.stats.t``).

    With one value there is no spread to estimate, so the half-width is nan.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("mean_ci needs at least one value")
    _check_confidence(confidence)
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan
    standard_error = float(stats.sem(data))
    if standard_error == 0:
        return mean, 0.0  # identical values: scipy's interval is nan (0 × inf), the spread is 0
    low, high = stats.t.interval(confidence, data.size - 1, loc=mean, scale=standard_error)
    return mean, float(high - low) / 2


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
    _check_confidence(confidence)
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


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


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

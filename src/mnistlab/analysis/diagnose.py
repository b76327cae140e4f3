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

from mnistlab.training.history import COMPLETED, DIVERGED, FINISHED_STATUSES, FIT_KEYS, HISTORY_KEYS

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

FIT_WORDS = "train {metric} (inference mode, fixed training subsample)"
RUNNING_WORDS = "train {metric} (Keras running mean, dropout on)"

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


# --- Diagnosis --------------------------------------------------------------------------


def diagnose(
    history: Mapping[str, Sequence[float]],
    status: str = COMPLETED,
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
    if status not in FINISHED_STATUSES:
        raise ValueError(f"status must be one of {FINISHED_STATUSES}, got {status!r}")
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
    if status == DIVERGED:
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

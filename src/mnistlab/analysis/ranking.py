"""The report's statistics: best model, seed-matched comparisons, confusions, misclassified."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mnistlab.analysis.choice import candidate, choose_model
from mnistlab.analysis.compare import (
    McNemarResult, PairedDifference, mcnemar_exact, paired_difference, significance_sentence,
)
from mnistlab.errors import MnistlabError
from mnistlab.analysis.multiple import ALPHA, StratifiedMcNemar, holm, mcnemar_detectable, mcnemar_stratified
from mnistlab.training.history import COMPLETED

# One run's test labels and predicted classes, as read from the store.
Predictions = tuple[np.ndarray, np.ndarray]

__all__ = [
    "Predictions",
    "ModelComparison",
    "Statistics",
    "best_model",
    "best_run",
    "compare_models",
    "comparison_plan",
    "confusion_matrix",
    "mcnemar_on_runs",
    "misclassified_indices",
    "most_confused_pairs",
    "statistics",
]


@dataclass(frozen=True)
class ModelComparison:
    """Model ``a`` against model ``b`` on the runs of every seed they share.

    ``mcnemar`` is McNemar's exact test stratified by seed over all ``common_seeds``;
    ``p_adjusted`` is its Holm-adjusted p-value within the report's family of comparisons
    (equal to the raw p-value for a comparison made on its own); ``detectable`` is the smallest
    accuracy difference the test could have detected (80% power, two-sided 5%).
    """

    a: str
    b: str
    common_seeds: tuple[int, ...]
    runs_a: tuple[int, ...]
    runs_b: tuple[int, ...]
    mcnemar: StratifiedMcNemar
    difference: PairedDifference
    p_adjusted: float
    detectable: float
    sentence: str

    @property
    def significant(self) -> bool:
        """Decided on the adjusted p-value only."""
        return self.p_adjusted < ALPHA

    @property
    def established(self) -> bool:
        """Significant, and the interval over seeds excludes 0: the models differ, not just these networks."""
        return self.significant and not self.difference.includes_zero

    @property
    def seed(self) -> int:
        return self.common_seeds[0]

    @property
    def seed_note(self) -> str:
        if len(self.common_seeds) == 1:
            return f"seed {self.seed}"
        seeds = ", ".join(str(seed) for seed in self.common_seeds)
        return f"all {len(self.common_seeds)} common seeds ({seeds}), stratified by seed"


@dataclass(frozen=True)
class Statistics:
    """The best model against every other; ``skipped`` holds (model, reason) for the rest."""

    best: str
    comparisons: tuple[ModelComparison, ...]
    skipped: tuple[tuple[str, str], ...]

    def summary_sentence(self) -> str:
        """Which differences from the best model survive Holm's correction at 5%, in one sentence."""
        if not self.comparisons:
            return f"{self.best} could not be compared with any other model."
        significant = [c.b for c in self.comparisons if c.established]
        networks_only = [c.b for c in self.comparisons if c.significant and not c.established]
        unclear = [c.b for c in self.comparisons if not c.significant]
        level = f"{ALPHA * 100:g}%"
        parts = []
        if significant:
            parts.append(f"{self.best} differs significantly at {level} (McNemar, Holm-adjusted over "
                         f"{len(self.comparisons)} comparisons, and the 95% CI over seeds excludes 0) from "
                         f"{_listing(significant)}")
        if networks_only:
            lead = "" if significant else f"{self.best} "
            parts.append(f"{lead}differs from {_listing(networks_only)} on these trained networks (McNemar, "
                         "Holm-adjusted), but the 95% CI over seeds includes 0: not established beyond these seeds")
        if unclear:
            lead = "" if significant or networks_only else f"{self.best} "
            parts.append(f"{lead}is not distinguishable from noise at {level} (Holm-adjusted) from "
                         f"{_listing(unclear)}")
        return "; ".join(parts) + "."


def _listing(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# -- choosing runs ---------------------------------------------------------------------------------


def best_model(table: pd.DataFrame) -> str | None:
    """The model chosen on validation alone: highest mean final val_acc, then lowest mean val_loss.

    Choosing on test accuracy and then reporting that same test accuracy would make the figure
    optimistic (the choice peeks); the test figure of the chosen model is reported once. Under
    protocol ``test`` validation *is* the test set, and the report says so. Falls back to mean
    test accuracy when no model has a validation figure. None if no model has a test figure.

    ``table`` is a comparison table (``report.frame.comparison_from``); the rule itself is
    ``analysis.choice.choose_model``'s, which the terminal applies too.
    """
    validated = "val_acc" in table
    columns = [table["model"], table["test_acc_mean"]]
    if validated:
        columns += [table["val_acc"], table["val_loss"]]
    return choose_model(candidate(*cells) for cells in zip(*(column.tolist() for column in columns)))


def best_run(runs: pd.DataFrame, model: str) -> pd.Series:
    """The model's completed run with the highest final val_acc (ties: lowest seed).

    Chosen on validation, like the model, so the test figure shown for it is not the maximum
    over seeds of the test accuracy.
    """
    candidates = runs[(runs["model"] == model) & (runs["status"] == COMPLETED)]
    if candidates.empty:
        raise MnistlabError(f"model {model} has no completed run")
    key = "val_acc" if candidates["val_acc"].notna().any() else "test_acc"
    ordered = candidates.sort_values([key, "seed"], ascending=[False, True], kind="stable")
    return ordered.iloc[0]


_NO_RUNS = pd.DataFrame(columns=["run_id", "test_acc"])


def comparison_plan(runs: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, str]:
    """Seed-matched completed runs of models ``a`` and ``b``: a frame indexed by seed with
    columns run_a, run_b, acc_a, acc_b (seed order), or an empty frame and the reason."""
    by_seed = completed_by_seed(runs)
    return _plan(by_seed.get(a, _NO_RUNS), by_seed.get(b, _NO_RUNS), a, b)


def completed_by_seed(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each model's completed runs indexed by seed, made once so pairing a hundred models
    does not filter the whole run table a hundred times."""
    completed = runs[runs["status"] == COMPLETED].drop_duplicates(["model", "seed"])
    return {str(model): group.set_index("seed")[["run_id", "test_acc"]]
            for model, group in completed.groupby("model", sort=False)}


def _plan(side_a: pd.DataFrame, side_b: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, str]:
    if side_a.empty or side_b.empty:
        return pd.DataFrame(), f"{a if side_a.empty else b} has no completed run"
    plan = side_a.rename(columns={"run_id": "run_a", "test_acc": "acc_a"}).join(
        side_b.rename(columns={"run_id": "run_b", "test_acc": "acc_b"}), how="inner")
    if plan.empty:
        return plan, (f"no seed in common (seeds {sorted(side_a.index.tolist())} vs "
                      f"{sorted(side_b.index.tolist())}), so no paired test")
    return plan.sort_index(), ""


def _plan_runs(plan: pd.DataFrame) -> set[int]:
    return {int(run) for column in ("run_a", "run_b") for run in plan[column]}


def compare_models(plan: pd.DataFrame, a: str, b: str, predictions: Mapping[int, Predictions],
                   p_adjusted: float | None = None) -> ModelComparison:
    """McNemar over every common seed (stratified by seed) and the seed-paired accuracy difference.

    ``p_adjusted``: the Holm-adjusted p-value from the family this comparison belongs to; None
    for a comparison made on its own (a family of one, where adjusted equals raw).
    """
    seeds = [int(seed) for seed in plan.index]
    pairs = [_correct_flags(predictions, int(run_a), int(run_b))
             for run_a, run_b in zip(plan["run_a"], plan["run_b"])]
    mcnemar = mcnemar_stratified(pairs, seeds)
    difference = paired_difference(plan["acc_a"].to_numpy(), plan["acc_b"].to_numpy())
    adjusted = mcnemar.p_value if p_adjusted is None else p_adjusted
    detectable = mcnemar_detectable(mcnemar.discordant, mcnemar.n_images, len(seeds))
    as_result = McNemarResult(mcnemar.b, mcnemar.c, min(mcnemar.b, mcnemar.c), mcnemar.p_value)
    sentence = significance_sentence(a, b, as_result, difference, ALPHA,
                                     adjusted_p=None if p_adjusted is None else adjusted, detectable=detectable)
    return ModelComparison(a, b, tuple(seeds), tuple(int(r) for r in plan["run_a"]),
                           tuple(int(r) for r in plan["run_b"]), mcnemar, difference, adjusted,
                           detectable, sentence)


def _correct_flags(predictions: Mapping[int, Predictions], run_a: int, run_b: int) -> tuple[np.ndarray, np.ndarray]:
    for run_id in (run_a, run_b):
        if run_id not in predictions:
            raise MnistlabError(f"run {run_id} stored no test predictions")
    labels_a, predicted_a = predictions[run_a]
    labels_b, predicted_b = predictions[run_b]
    if not np.array_equal(labels_a, labels_b):
        raise MnistlabError(f"runs {run_a} and {run_b} were tested on different labels")
    return predicted_a == labels_a, predicted_b == labels_b


def mcnemar_on_runs(predictions: Mapping[int, Predictions], run_a: int, run_b: int) -> McNemarResult:
    """Exact McNemar test of two runs' stored test predictions; they must share the labels."""
    return mcnemar_exact(*_correct_flags(predictions, run_a, run_b))


def statistics(runs: pd.DataFrame, ranking: Sequence[str], best: str,
               load: Callable[[set[int]], Mapping[int, Predictions]]) -> Statistics:
    """``best`` against every other model of ``ranking`` (in that order), Holm-corrected.

    ``load`` reads the predictions of a set of run ids; it is called once, for exactly the
    runs the McNemar tests use (every shared seed of each pair), in one query.
    """
    by_seed = completed_by_seed(runs)
    plans, skipped = {}, []
    for other in ranking:
        if other == best:
            continue
        plan, reason = _plan(by_seed.get(best, _NO_RUNS), by_seed.get(other, _NO_RUNS), best, other)
        if plan.empty:
            skipped.append((other, reason))
        else:
            plans[other] = plan
    predictions = load({run for plan in plans.values() for run in _plan_runs(plan)})
    raw = {}
    for other, plan in plans.items():
        try:
            raw[other] = compare_models(plan, best, other, predictions)
        except MnistlabError as error:
            skipped.append((other, str(error)))
    # One family: every test of the best model against another, corrected together.
    adjusted, _ = holm([comparison.mcnemar.p_value for comparison in raw.values()])
    comparisons = tuple(compare_models(plans[other], best, other, predictions, float(p))
                        for other, p in zip(raw, adjusted))
    return Statistics(best, comparisons, tuple(skipped))


# -- one run's errors -------------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    pairs = labels.astype(np.int64) * n_classes + predicted.astype(np.int64)
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def most_confused_pairs(matrix: np.ndarray, class_names: Sequence[str], top: int = 10) -> pd.DataFrame:
    """The largest off-diagonal cells: true, predicted, count and share of that true class."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = []
    for flat in order:
        true, pred = divmod(int(flat), matrix.shape[1])
        if off[true, pred] == 0:
            break
        class_total = matrix[true].sum()
        rows.append({"true": class_names[true], "predicted": class_names[pred],
                     "count": int(off[true, pred]),
                     "share_of_true": off[true, pred] / class_total if class_total else math.nan})
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_true"])


def misclassified_indices(labels: np.ndarray, predicted: np.ndarray, limit: int = 36) -> np.ndarray:
    """Indices of the first ``limit`` wrongly predicted test images, in test-set order."""
    return np.flatnonzero(labels != predicted)[:limit]

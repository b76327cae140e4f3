"""The report's statistics: best model, seed-matched comparisons, confusions, misclassified."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mnistlab.analysis import (
    McNemarResult,
    PairedDifference,
    mcnemar_exact,
    paired_difference,
    significance_sentence,
)
from mnistlab.errors import MnistlabError
from mnistlab.report.artifacts import Predictions

__all__ = [
    "ALPHA",
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

ALPHA = 0.05


@dataclass(frozen=True)
class ModelComparison:
    """Model ``a`` against model ``b`` on the runs of their shared seeds.

    McNemar needs paired predictions, so it uses one seed: ``seed``, the first of the
    ``common_seeds``; the accuracy difference uses all of them, paired by seed.
    """

    a: str
    b: str
    seed: int
    common_seeds: tuple[int, ...]
    run_a: int
    run_b: int
    mcnemar: McNemarResult
    difference: PairedDifference
    sentence: str

    @property
    def significant(self) -> bool:
        return self.mcnemar.p_value < ALPHA

    @property
    def seed_note(self) -> str:
        if len(self.common_seeds) == 1:
            return f"seed {self.seed}"
        return f"seed {self.seed}, the first of {len(self.common_seeds)} common seeds"


@dataclass(frozen=True)
class Statistics:
    """The best model against every other; ``skipped`` holds (model, reason) for the rest."""

    best: str
    comparisons: tuple[ModelComparison, ...]
    skipped: tuple[tuple[str, str], ...]

    def summary_sentence(self) -> str:
        """Which differences from the best model are significant at 5%, in one sentence."""
        if not self.comparisons:
            return f"{self.best} could not be compared with any other model."
        significant = [c.b for c in self.comparisons if c.significant]
        equal = [c.b for c in self.comparisons if not c.significant]
        level = f"{ALPHA * 100:g}%"
        parts = []
        if significant:
            parts.append(f"{self.best} differs significantly at {level} (McNemar) from "
                         f"{_listing(significant)}")
        if equal:
            lead = "" if significant else f"{self.best} "
            parts.append(f"{lead}is not significantly different at {level} from {_listing(equal)}")
        return "; ".join(parts) + "."


def _listing(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# -- choosing runs ---------------------------------------------------------------------------------


def best_model(table: pd.DataFrame) -> str | None:
    """The model with the highest mean test accuracy in a comparison table (None if none has one)."""
    ranked = table.dropna(subset=["test_acc_mean"])
    if ranked.empty:
        return None
    return str(ranked.sort_values("test_acc_mean", ascending=False, kind="stable")["model"].iloc[0])


def best_run(runs: pd.DataFrame, model: str) -> pd.Series:
    """The model's completed run with the highest test accuracy (ties: lowest seed)."""
    candidates = runs[(runs["model"] == model) & (runs["status"] == "completed")]
    if candidates.empty:
        raise MnistlabError(f"model {model} has no completed run")
    ordered = candidates.sort_values(["test_acc", "seed"], ascending=[False, True], kind="stable")
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
    completed = runs[runs["status"] == "completed"].drop_duplicates(["model", "seed"])
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


def compare_models(plan: pd.DataFrame, a: str, b: str,
                   predictions: Mapping[int, Predictions]) -> ModelComparison:
    """McNemar on the first common seed's runs and the seed-paired accuracy difference."""
    seed = int(plan.index[0])
    run_a, run_b = int(plan["run_a"].iloc[0]), int(plan["run_b"].iloc[0])
    mcnemar = mcnemar_on_runs(predictions, run_a, run_b)
    difference = paired_difference(plan["acc_a"].to_numpy(), plan["acc_b"].to_numpy())
    return ModelComparison(a, b, seed, tuple(int(s) for s in plan.index), run_a, run_b, mcnemar,
                           difference, significance_sentence(a, b, mcnemar, difference, ALPHA))


def mcnemar_on_runs(predictions: Mapping[int, Predictions], run_a: int, run_b: int) -> McNemarResult:
    """Exact McNemar test of two runs' stored test predictions; they must share the labels."""
    for run_id in (run_a, run_b):
        if run_id not in predictions:
            raise MnistlabError(f"run {run_id} stored no test predictions")
    labels_a, predicted_a = predictions[run_a]
    labels_b, predicted_b = predictions[run_b]
    if not np.array_equal(labels_a, labels_b):
        raise MnistlabError(f"runs {run_a} and {run_b} were tested on different labels")
    return mcnemar_exact(predicted_a == labels_a, predicted_b == labels_b)


def statistics(runs: pd.DataFrame, ranking: Sequence[str], best: str,
               load: Callable[[set[int]], Mapping[int, Predictions]]) -> Statistics:
    """``best`` against every other model of ``ranking`` (in that order).

    ``load`` reads the predictions of a set of run ids; it is called once, for exactly the
    runs the McNemar tests use, so a thousand-run experiment reads ~2 per model, in one query.
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
    predictions = load({int(plan[column].iloc[0]) for plan in plans.values()
                        for column in ("run_a", "run_b")})
    comparisons = []
    for other, plan in plans.items():
        try:
            comparisons.append(compare_models(plan, best, other, predictions))
        except MnistlabError as error:
            skipped.append((other, str(error)))
    return Statistics(best, tuple(comparisons), tuple(skipped))


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

"""A against B, as ``mnistlab compare`` gives it: two runs, or two models of one experiment.

The figures live here (the CLI's table and its ``--json`` both render a ``Pair``): each side's
completed runs and test accuracies, McNemar's exact test on seed-matched test predictions, the
significance sentence, and for models the accuracy difference's interval over shared seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mnistlab.analysis.intervals import mean_ci
from mnistlab.errors import MnistlabError
from mnistlab.training.history import COMPLETED
from mnistlab.util.strict import whole_number

if TYPE_CHECKING:
    from mnistlab.runs.store import RunStore

__all__ = ["Pair", "Side", "compare_pair"]

SQL_MODEL_EXPERIMENTS = "SELECT DISTINCT experiment FROM runs WHERE model_id = ? ORDER BY experiment"


@dataclass(frozen=True)
class Side:
    """One side: its name, and its completed runs (ids, seeds, test accuracies) in seed order."""

    name: str
    run_ids: tuple[int, ...]
    seeds: tuple[int, ...]
    test_acc: tuple[float, ...]

    def interval(self) -> tuple[float, float]:
        """Mean test accuracy and the half-width of its 95% CI (nan with one run; both nan with none)."""
        return mean_ci(list(self.test_acc)) if self.test_acc else (math.nan, math.nan)

    def to_json(self) -> dict[str, Any]:
        mean, half_width = self.interval()
        return {"name": self.name, "runs": list(self.run_ids), "seeds": list(self.seeds),
                "test_acc": list(self.test_acc), "test_acc_mean": mean, "test_acc_ci95": half_width}


@dataclass(frozen=True)
class Pair:
    """The comparison: ``only_a`` / ``only_b`` are the test predictions only A (only B) got right."""

    kind: str  # "runs" or "models"
    experiment: str | None  # the models' experiment
    sides: tuple[Side, Side]
    seed_note: str  # which seeds the test pairs: "the same seed", "3 shared seeds", ...
    only_a: int
    only_b: int
    p_value: float
    sentence: str
    difference_note: str | None = None  # models: how the accuracy difference's interval was made

    @property
    def title(self) -> str:
        return "Runs compared" if self.kind == "runs" else f"Models compared in {self.experiment}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "experiment": self.experiment, "a": self.sides[0].to_json(),
                "b": self.sides[1].to_json(),
                "mcnemar": {"seeds": self.seed_note, "only_a_correct": self.only_a, "only_b_correct": self.only_b,
                            "p_value": self.p_value},
                "difference": self.difference_note, "sentence": self.sentence}


def compare_pair(store: RunStore, a: str | int, b: str | int, experiment: str | None = None) -> Pair:
    """A against B: two run ids, or two model ids of one experiment (``experiment`` is needed
    only when a model has runs in several)."""
    texts = (str(a).strip(), str(b).strip())
    ids = [whole_number(text) for text in texts]
    if all(run_id is not None for run_id in ids):
        return _compare_runs(store, int(ids[0]), int(ids[1]))  # type: ignore[arg-type]
    if any(run_id is not None for run_id in ids):
        raise MnistlabError(f"compare two run ids or two model ids, not one of each ({texts[0]}, {texts[1]})")
    return _compare_models(store, texts[0], texts[1], experiment)


def _compare_runs(store: RunStore, a: int, b: int) -> Pair:
    from mnistlab.analysis.compare import paired_difference, significance_sentence
    from mnistlab.analysis.multiple import ALPHA
    from mnistlab.analysis.ranking import mcnemar_on_runs
    from mnistlab.report.artifacts import load_predictions

    runs = {run_id: store.get_run(run_id) for run_id in (a, b)}
    for run in runs.values():
        if run.status != COMPLETED:
            raise MnistlabError(f"run {run.id} is {run.status}; only completed runs can be compared")
    result = mcnemar_on_runs(load_predictions(store, list(runs)), a, b)
    acc = [runs[run_id].final["test_acc"] for run_id in (a, b)]
    names = (f"run {a} ({runs[a].model_id})", f"run {b} ({runs[b].model_id})")
    difference = paired_difference([acc[0]], [acc[1]])
    sides = tuple(Side(name, (run_id,), (runs[run_id].seed,), (runs[run_id].final["test_acc"],))
                  for name, run_id in zip(names, (a, b)))
    seeds = "the same seed" if runs[a].seed == runs[b].seed else f"seeds {runs[a].seed} and {runs[b].seed}"
    return Pair("runs", None, sides, seeds, result.b, result.c, result.p_value,  # type: ignore[arg-type]
                significance_sentence(names[0], names[1], result, difference, ALPHA))


def _model_experiment(store: RunStore, model: str, experiment: str | None) -> str:
    from mnistlab.report.frame import experiment_config, query_frame

    if experiment is not None:
        experiment_config(store, experiment)
        return experiment
    found = query_frame(store, SQL_MODEL_EXPERIMENTS, (model,))["experiment"].tolist()
    if not found:
        raise MnistlabError(f"no run id or model {model!r} in {store.path}")
    if len(found) > 1:
        raise MnistlabError(f"model {model} has runs in experiments {', '.join(found)}; name the experiment")
    return found[0]


def _compare_models(store: RunStore, a: str, b: str, experiment: str | None) -> Pair:
    from mnistlab.analysis.ranking import comparison_plan, compare_models
    from mnistlab.report.artifacts import load_predictions
    from mnistlab.report.frame import runs_frame

    experiment = _model_experiment(store, a, experiment)
    runs = runs_frame(store, experiment)
    completed = runs[runs["status"] == COMPLETED].sort_values(["seed", "run_id"])
    sides = []
    for model in (a, b):
        mine = completed[completed["model"] == model]
        if mine.empty:
            raise MnistlabError(f"model {model} has no completed run in experiment {experiment}")
        accuracies = mine["test_acc"].dropna()
        sides.append(Side(model, tuple(int(run) for run in mine["run_id"]), tuple(int(seed) for seed in mine["seed"]),
                          tuple(float(acc) for acc in accuracies)))
    plan, reason = comparison_plan(runs, a, b)
    if plan.empty:
        raise MnistlabError(f"cannot compare {a} and {b} in {experiment}: {reason}")
    ids = {int(run) for column in ("run_a", "run_b") for run in plan[column]}
    comparison = compare_models(plan, a, b, load_predictions(store, ids))
    return Pair("models", experiment, (sides[0], sides[1]), comparison.seed_note, comparison.mcnemar.b,
                comparison.mcnemar.c, comparison.mcnemar.p_value, comparison.sentence,
                f"Accuracy difference {comparison.difference.note}.")

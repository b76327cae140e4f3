"""A store at a glance, read without pandas: what ``mnistlab ls`` and ``mnistlab show`` print of it.

``frame`` reads whole experiments into DataFrames for the report. The terminal needs less: these
functions read just that through the store's reader (``RunStore.read_rows``) and compute it as
``frame`` does, so that the terminal and the report never disagree, and the commands start
without pandas or scipy:

- ``chosen_models``: the model each experiment's report chooses (``analysis.choice``'s rule, on
  the per-model means ``frame.comparison_from`` gives it), with its mean test accuracy;
- ``model_diagnosis``: one model's diagnosis over its seeds, as ``frame.model_diagnoses`` gives it;
- ``run_json``: ``mnistlab show RUN --json``, what the run's panel shows, as plain data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mnistlab.analysis.choice import candidate, choose_model
from mnistlab.analysis.diagnose import ModelDiagnosis, diagnose, diagnose_seeds
from mnistlab.training.history import COMPLETED, FINISHED_STATUSES, FIT_KEYS, HISTORY_KEYS

if TYPE_CHECKING:
    from mnistlab.runs.store import RunStore

__all__ = ["ChosenModel", "chosen_models", "model_diagnosis", "run_json"]

_FINISHED = ", ".join(f"'{status}'" for status in FINISHED_STATUSES)
# Each finished run's test accuracy and last recorded epoch's validation figures: the columns
# frame.runs_frame gives comparison_from, which averages them per model over finished runs.
SQL_FINISHED_FIGURES = f"""
    SELECT r.experiment, r.model_id AS model, r.status, json_extract(r.final_json, '$.test_acc') AS test_acc,
           (SELECT e.val_acc FROM epochs e WHERE e.run_id = r.id ORDER BY e.epoch DESC LIMIT 1) AS val_acc,
           (SELECT e.val_loss FROM epochs e WHERE e.run_id = r.id ORDER BY e.epoch DESC LIMIT 1) AS val_loss
    FROM runs r WHERE r.status IN ({_FINISHED}) ORDER BY r.id
"""
SQL_MODEL_FINISHED = f"""
    SELECT id, seed, status FROM runs WHERE experiment = ? AND model_id = ? AND status IN ({_FINISHED}) ORDER BY id
"""


@dataclass(frozen=True)
class ChosenModel:
    """The model an experiment's report chooses on validation, its mean test accuracy, and the
    number of its completed runs (seeds) that mean is over."""

    model: str
    test_acc_mean: float
    seeds: int


@dataclass
class _ModelRuns:
    test_acc: list[float]
    val_acc: list[float]
    val_loss: list[float]
    completed: int = 0


def chosen_models(store: RunStore) -> dict[str, ChosenModel]:
    """Per experiment with a finished run that has a test figure: the model its report chooses."""
    _, rows = store.read_rows(SQL_FINISHED_FIGURES)
    experiments: dict[str, dict[str, _ModelRuns]] = {}
    for experiment, model, status, test_acc, val_acc, val_loss in rows:
        # Models in the order of their first finished run, as comparison_from groups them.
        runs = experiments.setdefault(experiment, {}).setdefault(model, _ModelRuns([], [], []))
        runs.test_acc.append(_number(test_acc))
        runs.val_acc.append(_number(val_acc))
        runs.val_loss.append(_number(val_loss))
        runs.completed += status == COMPLETED
    chosen = {}
    for experiment, models in experiments.items():
        means = {model: _test_mean(runs.test_acc) for model, runs in models.items()}
        # comparison_from's order (best mean test accuracy first, ties as grouped), which settles a full tie.
        ranked = sorted((model for model in models if not math.isnan(means[model])), key=lambda model: -means[model])
        best = choose_model(candidate(model, means[model], _mean(models[model].val_acc), _mean(models[model].val_loss))
                            for model in ranked)
        if best is not None:
            chosen[experiment] = ChosenModel(best, means[best], models[best].completed)
    return chosen


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _test_mean(values: Sequence[float]) -> float:
    """Mean test accuracy as compare.summarise_runs takes it: of the runs that have one."""
    present = np.asarray([value for value in values if not math.isnan(value)], dtype=float)
    return float(present.mean()) if present.size else math.nan


def _mean(values: Sequence[float]) -> float:
    """A mean skipping nan, summed the way pandas' Series.mean sums (nan as 0, divided by the count),
    so that a tie the report sees is a tie here, to the last bit."""
    array = np.asarray(values, dtype=float)
    missing = np.isnan(array)
    count = int(array.size - missing.sum())
    return float(np.where(missing, 0.0, array).sum() / count) if count else math.nan


def model_diagnosis(store: RunStore, experiment: str, model: str) -> ModelDiagnosis | None:
    """The model's diagnosis over its finished runs that recorded an epoch; None if it has none."""
    _, rows = store.read_rows(SQL_MODEL_FINISHED, (experiment, model))
    runs = []
    for run_id, seed, status in rows:
        history = store.history(run_id)
        if history["epoch"] and history["epoch"][-1] > 0:  # frame's "epochs > 0": the last epoch's number
            runs.append((run_id, seed, {key: history[key] for key in (*HISTORY_KEYS, *FIT_KEYS)}, status))
    return diagnose_seeds(model, runs) if runs else None


def run_json(store: RunStore, run_id: int) -> dict[str, Any]:
    """One run as ``show`` gives it: its record, its epochs, its diagnosis once it finished (None before),
    its model's diagnosis over the experiment's seeds when the model has two or more finished runs, its
    tags, the user's notes and its provenance."""
    run = store.get_run(run_id)
    history = store.history(run_id)
    epochs = [{key: values[index] for key, values in history.items()} for index in range(len(history["epoch"]))]
    finished = run.status in FINISHED_STATUSES and bool(history["epoch"])
    findings = diagnose(history, status=run.status) if finished else None
    model = model_diagnosis(store, run.experiment, run.model_id)
    across = None if model is None or len(model.seeds) < 2 else {
        "text": model.text, "verdict": model.codes, "seeds": [seed.seed for seed in model.seeds]}
    return {"run": run.to_json(), "epochs": epochs,
            "diagnosis": None if findings is None else [
                {"code": finding.code, "label": finding.label, "rule": finding.rule} for finding in findings],
            "model_diagnosis": across, "tags": store.tags(run_id),
            "user_notes": [{"text": note.text, "created_at": note.created_at} for note in store.user_notes(run_id)],
            "provenance": store.provenance(run_id)}  # None: not recorded (a run older than schema 3)

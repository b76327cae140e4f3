"""Tables of an experiment's runs, read from the run store in bulk.

Reports cover up to thousands of runs, so everything here reads a whole table in one query
(runs, epochs) rather than calling ``RunStore.get_run``/``history`` once per run. The store has
no bulk readers, so these queries run on its connection directly; they only read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mnistlab.training.history import COMPLETED, DIVERGED, FIT_KEYS, HISTORY_KEYS
from mnistlab.analysis.diagnose import ModelDiagnosis, diagnose_seeds
from mnistlab.analysis.compare import summarise_runs
from mnistlab.errors import MnistlabError
from mnistlab.training.history import EPOCH_METRICS, FINISHED_STATUSES
from mnistlab.runs.store import RunStore

__all__ = [
    "ExperimentData",
    "comparison_table",
    "comparison_from",
    "epochs_frame",
    "experiment_config",
    "load_experiment",
    "model_diagnoses",
    "query_frame",
    "runs_frame",
]

FINISHED = FINISHED_STATUSES
METRICS = EPOCH_METRICS

# json_extract pulls the final metrics out in SQLite, so no run's JSON is parsed in Python.
SQL_RUNS = """
    SELECT id AS run_id, model_id AS model, seed, status, protocol, dataset, epochs_planned,
           json_extract(final_json, '$.test_acc') AS test_acc,
           json_extract(final_json, '$.test_loss') AS test_loss,
           json_extract(final_json, '$.params') AS params,
           coalesce(json_extract(final_json, '$.description'),
                    json_extract(spec_json, '$.model.description')) AS description,
           json_extract(final_json, '$.reference_test_acc') AS reference_test_acc,
           json_extract(final_json, '$.reference_notebook') AS reference_notebook,
           json_extract(final_json, '$.reference_differences') AS reference_differences,
           json_extract(final_json, '$.images_per_second') AS images_per_second,
           json_extract(final_json, '$.diverged_epoch') AS diverged_epoch,
           json_extract(spec_json, '$.val_fraction') AS val_fraction,
           json_extract(spec_json, '$.precision') AS precision,
           device, json_extract(versions_json, '$.machine') AS machine,
           json_extract(final_json, '$.factors') AS factors
    FROM runs WHERE experiment = ? ORDER BY id
"""
SQL_EPOCHS = f"""
    SELECT e.run_id, r.model_id AS model, r.seed, e.epoch,
           {", ".join(f"e.{metric}" for metric in EPOCH_METRICS)}
    FROM epochs e JOIN runs r ON r.id = e.run_id
    WHERE r.experiment = ? ORDER BY e.run_id, e.epoch
"""

RUN_FRAME_COLUMNS = (
    "run_id", "model", "seed", "status", "epochs", "test_acc", "test_loss",
    "train_loss", "train_acc", "val_loss", "val_acc", "best_epoch", "seconds_per_epoch",
    "params", "description", "reference_test_acc", "reference_notebook", "reference_differences", "protocol",
    "dataset", "val_fraction", "precision", "images_per_second", "diverged_epoch",
    "epochs_planned", "device", "machine", "factors",
)
COMPARISON_COLUMNS = (
    "model", "description", "params", "epochs", "train_loss", "val_loss", "train_acc",
    "val_acc", "test_loss", "test_acc_mean", "test_acc_ci95", "n", "diverged", "best_epoch",
    "seconds_per_epoch", "diagnosis", "diagnosis_codes", "diagnosis_agreeing", "diagnosis_seed", "reference_test_acc", "reference_differences",
    "trained_on",
)


@dataclass(frozen=True)
class ExperimentData:
    """Everything the report needs from the store's tables, read once."""

    name: str
    config: dict[str, Any]
    runs: pd.DataFrame    # runs_frame: one row per run
    epochs: pd.DataFrame  # epochs_frame: one row per (run, epoch)

    @property
    def finished(self) -> pd.DataFrame:
        """Runs that reached an outcome (completed or diverged)."""
        return self.runs[self.runs["status"].isin(FINISHED)]

    @property
    def completed(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == COMPLETED]


# -- reading ---------------------------------------------------------------------------------


def query_frame(store: RunStore, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    """One read-only query on the store's connection, as a DataFrame with the query's columns."""
    columns, rows = store.read_rows(sql, params)
    return pd.DataFrame.from_records(rows, columns=columns)


def experiment_config(store: RunStore, experiment: str) -> dict[str, Any]:
    """The stored config of ``experiment``; a MnistlabError naming the known ones if absent."""
    known = {record.name: record.config for record in store.experiments()}
    if experiment not in known:
        names = ", ".join(sorted(known)) or "none"
        raise MnistlabError(f"no experiment {experiment!r} in {store.path} (known: {names})")
    return known[experiment]


def epochs_frame(store: RunStore, experiment: str) -> pd.DataFrame:
    """Every recorded epoch of the experiment's runs: run_id, model, seed, epoch and metrics.

    Metrics SQLite stored as NULL (NaN on the way in) come back as NaN.
    """
    frame = query_frame(store, SQL_EPOCHS, (experiment,))
    return frame.astype({metric: float for metric in METRICS})


def runs_frame(store: RunStore, experiment: str) -> pd.DataFrame:
    """One row per run of ``experiment`` (all statuses), with its final metrics.

    ``train_*``/``val_*`` are the last recorded epoch's values; ``best_epoch`` is the 1-based
    epoch of the lowest val_loss; ``seconds_per_epoch`` is the mean over recorded epochs;
    ``factors`` is a factor-study variant's levels as JSON text (None for other models).
    """
    experiment_config(store, experiment)
    return _runs_with_epochs(query_frame(store, SQL_RUNS, (experiment,)),
                             epochs_frame(store, experiment))


def load_experiment(store: RunStore, experiment: str) -> ExperimentData:
    """The experiment's config, runs and epochs: three queries whatever the number of runs."""
    config = experiment_config(store, experiment)
    epochs = epochs_frame(store, experiment)
    runs = _runs_with_epochs(query_frame(store, SQL_RUNS, (experiment,)), epochs)
    return ExperimentData(experiment, config, runs, epochs)


def _runs_with_epochs(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    per_run = _epoch_summary(epochs)
    frame = runs.merge(per_run, on="run_id", how="left")
    frame["epochs"] = frame["epochs"].fillna(0).astype(int)
    numeric = ("test_acc", "test_loss", "reference_test_acc", "val_fraction", "images_per_second",
               "params", "diverged_epoch")
    frame = frame.astype({column: float for column in numeric})
    return frame.loc[:, list(RUN_FRAME_COLUMNS)].reset_index(drop=True)


def _epoch_summary(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per run: epochs recorded, last epoch's metrics, best epoch, mean seconds per epoch."""
    # keep="last" rather than groupby().last(): last() skips NaN and would hide a diverged end.
    last = (epochs.drop_duplicates("run_id", keep="last")
            .loc[:, ["run_id", "epoch", "loss", "acc", "val_loss", "val_acc"]]
            .rename(columns={"epoch": "epochs", "loss": "train_loss", "acc": "train_acc"}))
    best = (epochs.dropna(subset=["val_loss"])
            .sort_values(["run_id", "val_loss", "epoch"], kind="stable")
            .drop_duplicates("run_id", keep="first")
            .loc[:, ["run_id", "epoch"]].rename(columns={"epoch": "best_epoch"}))
    seconds = epochs.groupby("run_id", as_index=False)["seconds"].mean()
    seconds = seconds.rename(columns={"seconds": "seconds_per_epoch"})
    summary = last.merge(best, on="run_id", how="left").merge(seconds, on="run_id", how="left")
    return summary.astype({"best_epoch": float})


# -- per-model tables ---------------------------------------------------------------------------


def model_diagnoses(data: ExperimentData) -> dict[str, ModelDiagnosis]:
    """``analysis.diagnose`` on every finished run of each model, combined over its seeds
    (``analysis.ModelDiagnosis``: the verdict most seeds share, and which seeds disagree)."""
    finished = data.finished[data.finished["epochs"] > 0].sort_values(["model", "seed", "run_id"])
    wanted = data.epochs[data.epochs["run_id"].isin(finished["run_id"])]
    histories = {run_id: group for run_id, group in wanted.groupby("run_id")}
    result = {}
    for model, runs in finished.groupby("model", sort=False):
        result[str(model)] = diagnose_seeds(str(model), (
            (row.run_id, row.seed,
             {key: histories[row.run_id][key].tolist() for key in (*HISTORY_KEYS, *FIT_KEYS)}, row.status)
            for row in runs.itertuples(index=False)))
    return result


def comparison_from(data: ExperimentData,
                    diagnoses: dict[str, ModelDiagnosis] | None = None) -> pd.DataFrame:
    """The per-model comparison table of already loaded data; see ``comparison_table``."""
    finished = data.finished
    if finished.empty:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    diagnoses = model_diagnoses(data) if diagnoses is None else diagnoses
    summary = summarise_runs(finished).reset_index()
    summary = summary.rename(columns=lambda column: column.removesuffix("_mean")
                             if column != "test_acc_mean" else column)
    summary = summary.merge(_model_facts(finished), on="model", how="left")
    summary["description"] = summary["description"].fillna("").astype(str)
    summary["diagnosis"] = [diagnoses[m].text if m in diagnoses else "" for m in summary["model"]]
    summary["diagnosis_codes"] = [diagnoses[m].codes if m in diagnoses else "" for m in summary["model"]]
    summary["diagnosis_agreeing"] = [diagnoses[m].agreeing if m in diagnoses else 0 for m in summary["model"]]
    summary["diagnosis_seed"] = [diagnoses[m].seed if m in diagnoses else math.nan
                                 for m in summary["model"]]
    return summary.loc[:, list(COMPARISON_COLUMNS)].reset_index(drop=True)


def comparison_table(store: RunStore, experiment: str) -> pd.DataFrame:
    """One row per model over its finished runs, best mean test accuracy first.

    Columns: model, description, params, epochs (most recorded by any run), train_loss,
    val_loss, train_acc, val_acc (means of the final epochs), test_loss, test_acc_mean with
    test_acc_ci95 (half-width of the 95% t interval over repeats; nan for one run), n (finished
    runs), diverged (how many of them diverged), best_epoch (mean over runs), seconds_per_epoch,
    diagnosis (over all seeds: ``overfitting (3 of 3 seeds)``, ``healthy (2 of 3 seeds; seed 1:
    overfitting)``), diagnosis_codes (the verdict's codes alone), diagnosis_agreeing (seeds that share
    it), diagnosis_seed (the seed whose run the rule texts quote), reference_test_acc (the seed
    notebook's reported test accuracy, nan for models not from a notebook).
    """
    return comparison_from(load_experiment(store, experiment))


def _model_facts(finished: pd.DataFrame) -> pd.DataFrame:
    """What describes a model rather than a run: one value per model."""
    grouped = finished.groupby("model", sort=False)
    return pd.DataFrame({
        "description": grouped["description"].first(),
        "params": grouped["params"].max(),
        "epochs": grouped["epochs"].max(),
        "diverged": grouped["status"].agg(lambda status: int(np.sum(status == DIVERGED))),
        "reference_test_acc": grouped["reference_test_acc"].first(),
        "reference_differences": grouped["reference_differences"].agg(_protocol_differences),
        "trained_on": grouped["machine"].agg(_machines),
    }).reset_index()


def _machines(values: pd.Series) -> str:
    """'' when a model's runs trained on one machine (or none recorded one); else each machine with its run
    count, so a table that mixes stores or archives from several machines says so."""
    counts = values.dropna().astype(str).value_counts()
    if len(counts) < 2:
        return ""
    return "; ".join(f"{machine} ({count} run{'s' if count > 1 else ''})" for machine, count in sorted(counts.items()))


def _protocol_differences(values: pd.Series) -> str | None:
    """A model's differences from its notebook's protocol, joined for reading: '' when every run
    followed it, None when some run did not record it (stores written before mnistlab 0.2)."""
    if values.isna().any():
        return None
    differences: list[str] = []
    for text in values:
        differences += [item for item in json.loads(text) if item not in differences]
    return "; ".join(differences)

"""Runs out: an experiment's stored runs as TensorBoard event files or MLflow runs.

One TensorBoard run (a folder `MODEL-seedN`) or one MLflow run per (model, seed): the per-epoch
metrics as scalars / metric histories with the epoch as the step, the hyperparameters (model,
seed, optimizer, batch size, epochs, dataset, protocol) as hparams / params, and the final test
figures. Both writers are optional extras; a missing one is a one-line error naming it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mnistlab.util.atomic import check_target
from mnistlab.errors import MnistlabError
from mnistlab.util.netcheck import check_reachable, host_port
from mnistlab.runs.records import RunRecord
from mnistlab.runs.store import RunStore
from mnistlab.training.history import COMPLETED, DIVERGED, FAILED, RUNNING

TARGETS = ("tensorboard", "mlflow")


def _runs(store: RunStore, experiment: str) -> list[RunRecord]:
    runs = [run for run in store.runs(experiment) if run.status in (COMPLETED, DIVERGED, RUNNING, FAILED)]
    if not runs:
        raise MnistlabError(f"{store.path}: no runs of experiment '{experiment}' in this store")
    return runs


def _hparams(run: RunRecord) -> dict[str, Any]:
    training = run.spec.get("training", {})
    optimizer = training.get("optimizer", "adam")
    return {
        "model": run.model_id, "seed": run.seed, "dataset": run.dataset, "protocol": run.protocol,
        "optimizer": optimizer if isinstance(optimizer, str) else optimizer.get("name", "?"),
        "batch_size": int(training.get("batch_size", 0)), "epochs": run.epochs_planned,
    }


def _finals(run: RunRecord) -> dict[str, float]:
    final = run.final or {}
    return {f"final/{key}": float(value) for key, value in final.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def _run_name(run: RunRecord) -> str:
    return re.sub(r"[^\w.-]", "_", f"{run.model_id}-seed{run.seed}")


def _epochs(store: RunStore, run: RunRecord) -> list[tuple[int, dict[str, float]]]:
    history = store.history(run.id)
    rows = []
    for index, epoch in enumerate(history["epoch"]):
        values = {name: history[name][index] for name in history if name != "epoch"}
        rows.append((int(epoch), {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}))
    return rows


def to_tensorboard(store: RunStore, experiment: str, folder: str | Path) -> list[Path]:
    """Event files under FOLDER/MODEL-seedN (written aside, then moved in: a rerun replaces them)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MnistlabError("--to tensorboard needs mnistlab[tensorboard]: pip install 'mnistlab[tensorboard]'") from None
    folder = Path(folder)
    runs = _runs(store, experiment)  # an unknown experiment is refused before anything is created
    check_target(folder, folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
        for run in runs:
            log_dir = Path(scratch) / _run_name(run)
            writer = SummaryWriter(log_dir=str(log_dir))
            try:
                for epoch, values in _epochs(store, run):
                    for name, value in values.items():
                        writer.add_scalar(name, value, global_step=epoch)
                # hparams in the run's own folder, so TensorBoard's HParams tab pairs them with its scalars
                writer.add_hparams(_hparams(run), _finals(run) or {"final/none": 0.0}, run_name=".")
            finally:
                writer.close()
            written.append(log_dir)
        moved = []
        for log_dir in written:
            target = folder / log_dir.name
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(log_dir), target)
            moved.append(target)
    return moved


def to_mlflow(store: RunStore, experiment: str, uri: str) -> list[str]:
    """See `_to_mlflow`; MLflow's own errors (a bad URI, a server that refuses) become one line."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise MnistlabError("--to mlflow needs mnistlab[mlflow]: pip install 'mnistlab[mlflow]'") from None
    try:
        return _to_mlflow(store, experiment, uri)
    except (MlflowException, ImportError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MnistlabError(f"mlflow at {uri}: {message}") from None


def _check_server(uri: str) -> None:
    """A tracking server must answer a connection within seconds: MLflow's client retries for
    minutes when nobody listens. Once it answers, MLflow's own requests retry less."""
    found = host_port(uri, "mlflow")
    if found is None:  # no port given: the scheme's
        host = uri.split("://", 1)[1].split("/", 1)[0].strip("[]")
        found = (host, 443 if uri.startswith("https") else 80)
    check_reachable(*found, f"mlflow at {uri}: no tracking server answers there", "start the tracking server, or give a local folder")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def _to_mlflow(store: RunStore, experiment: str, uri: str) -> list[str]:
    """MLflow runs in the experiment of the same name, tagged with experiment, model and seed.

    `uri` is a tracking URI or a local folder (an `mlruns` file store). A run exported before
    (same store and run id, recorded as tags) is replaced, so exporting again does not duplicate it.
    """
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MnistlabError("--to mlflow needs mnistlab[mlflow]: pip install 'mnistlab[mlflow]'") from None
    runs = _runs(store, experiment)  # an unknown experiment is refused before anything is created
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    if "://" not in uri:
        # A local mlruns folder: MLflow 3 keeps its file store in maintenance mode behind this switch.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        check_target(uri, folder=True)
        Path(uri).mkdir(parents=True, exist_ok=True)
        uri = Path(uri).resolve().as_uri()
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    store_path = str(Path(store.path).resolve())
    ids = []
    for run in runs:
        for old in client.search_runs([experiment_id], filter_string=f"tags.`mnistlab.run_id` = '{run.id}'"):
            if old.data.tags.get("mnistlab.runs.store") == store_path:
                client.delete_run(old.info.run_id)
        tags = {"mnistlab.experiments.definition": experiment, "mnistlab.model": run.model_id, "mnistlab.seed": str(run.seed),
                "mnistlab.run_id": str(run.id), "mnistlab.runs.store": store_path, "mnistlab.status": run.status}
        created = client.create_run(experiment_id, run_name=_run_name(run), tags=tags,
                                    start_time=int((run.started_at or 0) * 1000) or None)
        timestamp = int((run.ended_at or run.started_at or 0) * 1000)
        metrics = [Metric(name, value, timestamp, epoch) for epoch, values in _epochs(store, run) for name, value in values.items()]
        metrics += [Metric(name, value, timestamp, 0) for name, value in _finals(run).items()]
        params = [Param(key, str(value)) for key, value in _hparams(run).items()]
        for start in range(0, max(len(metrics), 1), 900):  # MLflow takes at most 1000 entries per batch
            client.log_batch(created.info.run_id, metrics=metrics[start:start + 900],
                             params=params if start == 0 else [], tags=[RunTag("mnistlab.exported", "1")] if start == 0 else [])
        client.set_terminated(created.info.run_id, "FINISHED" if run.status == COMPLETED else "FAILED",
                              end_time=int(run.ended_at * 1000) if run.ended_at else None)
        ids.append(created.info.run_id)
    return ids


__all__ = ["TARGETS", "to_mlflow", "to_tensorboard"]

"""Runs out: an experiment's stored runs as TensorBoard event files or MLflow runs; the one home of
the mapping from a run to both, which `export-runs` and live logging (live_log.py) share.

One TensorBoard run (a folder `MODEL-seedN`) or one MLflow run per (model, seed): the per-epoch
metrics as scalars / metric histories with the epoch as the step, the hyperparameters (model,
seed, optimizer, batch size, epochs, dataset, protocol) as hparams / params, and the final test
figures. Both writers are optional extras; a missing one is a one-line error naming it. A run is
written in three steps, `*_start`, `*_epochs` and `*_end`, whether all at once (export) or as it
trains (live), so an exported study and one streamed live look the same.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mnistlab.util.atomic import check_target
from mnistlab.errors import MnistlabError
from mnistlab.util.netcheck import check_reachable, host_port
from mnistlab.runs.records import RunRecord
from mnistlab.runs.store import RunStore
from mnistlab.training.history import COMPLETED, DIVERGED, FAILED, RUNNING

TARGETS = ("tensorboard", "mlflow")
MLFLOW_BATCH = 900  # MLflow takes at most 1000 entries per batch
Epochs = list[tuple[int, dict[str, float]]]


def _runs(store: RunStore, experiment: str) -> list[RunRecord]:
    runs = [run for run in store.runs(experiment) if run.status in (COMPLETED, DIVERGED, RUNNING, FAILED)]
    if not runs:
        raise MnistlabError(f"{store.path}: no runs of experiment '{experiment}' in this store")
    return runs


# -- the mapping ------------------------------------------------------------------------------------


def hparams(run: RunRecord) -> dict[str, Any]:
    """A run's hyperparameters: TensorBoard's hparams, MLflow's params."""
    training = run.spec.get("training", {})
    optimizer = training.get("optimizer", "adam")
    return {
        "model": run.model_id, "seed": run.seed, "dataset": run.dataset, "protocol": run.protocol,
        "optimizer": optimizer if isinstance(optimizer, str) else optimizer.get("name", "?"),
        "batch_size": int(training.get("batch_size", 0)), "epochs": run.epochs_planned,
    }


def final_scalars(run: RunRecord) -> dict[str, float]:
    """A run's final test figures, as `final/NAME` scalars (the finite numbers only)."""
    final = run.final or {}
    return {f"final/{key}": float(value) for key, value in final.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def run_name(run: RunRecord) -> str:
    """The TensorBoard folder and MLflow run name of a run: `MODEL-seedN`."""
    return re.sub(r"[^\w.-]", "_", f"{run.model_id}-seed{run.seed}")


def epoch_scalars(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """An epoch's metrics as scalars: a metric that is missing or not finite (a diverged loss) is left out."""
    return {name: float(value) for name, value in metrics.items()
            if name != "epoch" and value is not None and math.isfinite(value)}


def stored_epochs(store: RunStore, run: RunRecord) -> Epochs:
    """Every stored epoch of a run, (epoch, scalars), in order."""
    history = store.history(run.id)
    return [(int(epoch), epoch_scalars({name: history[name][index] for name in history}))
            for index, epoch in enumerate(history["epoch"])]


def mlflow_tags(run: RunRecord, store: RunStore) -> dict[str, str]:
    """The tags an MLflow run carries: experiment, model, seed, and the store run it came from."""
    return {"mnistlab.experiments.definition": run.experiment, "mnistlab.model": run.model_id,
            "mnistlab.seed": str(run.seed), "mnistlab.run_id": str(run.id),
            "mnistlab.runs.store": str(Path(store.path).resolve()), "mnistlab.status": run.status}


def needs_extra(kind: str, flag: str) -> MnistlabError:
    return MnistlabError(f"{flag} {kind} needs mnistlab[{kind}]: pip install 'mnistlab[{kind}]'")


# -- TensorBoard --------------------------------------------------------------------------------------


def tensorboard_start(log_dir: Path, flag: str = "--to") -> Any:
    """A SummaryWriter for one run's folder."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise needs_extra("tensorboard", flag) from None
    return SummaryWriter(log_dir=str(log_dir))


def tensorboard_epochs(writer: Any, epochs: Epochs) -> None:
    for epoch, values in epochs:
        for name, value in values.items():
            writer.add_scalar(name, value, global_step=epoch)
    writer.flush()  # a reader (TensorBoard, a test) sees each epoch as it is written


def tensorboard_end(writer: Any, run: RunRecord) -> None:
    """The run's hparams and final figures, then the writer closed."""
    try:
        # hparams in the run's own folder, so TensorBoard's HParams tab pairs them with its scalars
        writer.add_hparams(hparams(run), final_scalars(run) or {"final/none": 0.0}, run_name=".")
    finally:
        writer.close()


def to_tensorboard(store: RunStore, experiment: str, folder: str | Path) -> list[Path]:
    """Event files under FOLDER/MODEL-seedN (written aside, then moved in: a rerun replaces them)."""
    tensorboard_check()
    folder = Path(folder)
    runs = _runs(store, experiment)  # an unknown experiment is refused before anything is created
    check_target(folder, folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
        for run in runs:
            log_dir = Path(scratch) / run_name(run)
            writer = tensorboard_start(log_dir)
            try:
                tensorboard_epochs(writer, stored_epochs(store, run))
            finally:
                tensorboard_end(writer, run)
            written.append(log_dir)
        moved = []
        for log_dir in written:
            target = folder / log_dir.name
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(log_dir), target)
            moved.append(target)
    return moved


def tensorboard_check(flag: str = "--to") -> None:
    """A one-line error when the tensorboard extra is missing."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        raise needs_extra("tensorboard", flag) from None


# -- MLflow -------------------------------------------------------------------------------------------


def mlflow_parts(flag: str = "--to") -> SimpleNamespace:
    """MLflow's client and entities (the one place they are imported); a one-line error naming
    `flag` when the extra is missing."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise needs_extra("mlflow", flag) from None
    return SimpleNamespace(Metric=Metric, Param=Param, RunTag=RunTag, MlflowException=MlflowException,
                           MlflowClient=MlflowClient)


def mlflow_first_line(uri: str, exc: BaseException) -> MnistlabError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return MnistlabError(f"mlflow at {uri}: {message}")


def to_mlflow(store: RunStore, experiment: str, uri: str) -> list[str]:
    """See `_to_mlflow`; MLflow's own errors (a bad URI, a server that refuses) become one line."""
    errors = (mlflow_parts().MlflowException, ImportError)
    try:
        return _to_mlflow(store, experiment, uri)
    except errors as exc:
        raise mlflow_first_line(uri, exc) from None


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


def mlflow_uri(uri: str, create: bool = True) -> str:
    """The tracking URI for `uri` (a local folder becomes an `mlruns` file store, created when
    `create`), checked: a server must answer, a folder must be one that can be written."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    if "://" in uri:
        return uri
    # A local mlruns folder: MLflow 3 keeps its file store in maintenance mode behind this switch.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    check_target(uri, folder=True)
    if create:
        Path(uri).mkdir(parents=True, exist_ok=True)
    return Path(uri).resolve().as_uri()


def mlflow_experiment(client: Any, name: str) -> str:
    """The id of the MLflow experiment `name`, created when absent."""
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def mlflow_start(client: Any, experiment_id: str, run: RunRecord, store: RunStore) -> str:
    """A new MLflow run for a store run, with its tags and params; one written before from the same
    store run (recorded as tags) is deleted first, so writing again never duplicates it."""
    parts = mlflow_parts()
    tags = mlflow_tags(run, store)
    for old in client.search_runs([experiment_id], filter_string=f"tags.`mnistlab.run_id` = '{run.id}'"):
        if old.data.tags.get("mnistlab.runs.store") == tags["mnistlab.runs.store"]:
            client.delete_run(old.info.run_id)
    created = client.create_run(experiment_id, run_name=run_name(run), tags=tags,
                                start_time=int((run.started_at or 0) * 1000) or None)
    client.log_batch(created.info.run_id, params=[parts.Param(key, str(value)) for key, value in hparams(run).items()],
                     tags=[parts.RunTag("mnistlab.exported", "1")])
    return created.info.run_id


def mlflow_epochs(client: Any, mlflow_run: str, epochs: Epochs, timestamp: int) -> None:
    metric = mlflow_parts().Metric
    metrics = [metric(name, value, timestamp, epoch) for epoch, values in epochs for name, value in values.items()]
    for start in range(0, len(metrics), MLFLOW_BATCH):
        client.log_batch(mlflow_run, metrics=metrics[start:start + MLFLOW_BATCH])


def mlflow_end(client: Any, mlflow_run: str, run: RunRecord, timestamp: int) -> None:
    """The run's final figures and status; the MLflow run ends FINISHED (completed) or FAILED."""
    parts = mlflow_parts()
    client.log_batch(mlflow_run, metrics=[parts.Metric(name, value, timestamp, 0) for name, value in final_scalars(run).items()],
                     tags=[parts.RunTag("mnistlab.status", run.status)])
    client.set_terminated(mlflow_run, "FINISHED" if run.status == COMPLETED else "FAILED",
                          end_time=int(run.ended_at * 1000) if run.ended_at else None)


def _to_mlflow(store: RunStore, experiment: str, uri: str) -> list[str]:
    """MLflow runs in the experiment of the same name, tagged with experiment, model and seed.

    `uri` is a tracking URI or a local folder (an `mlruns` file store). A run exported before
    (same store and run id, recorded as tags) is replaced, so exporting again does not duplicate it.
    """
    runs = _runs(store, experiment)  # an unknown experiment is refused before anything is created
    client = mlflow_parts().MlflowClient(tracking_uri=mlflow_uri(uri))
    experiment_id = mlflow_experiment(client, experiment)
    ids = []
    for run in runs:
        created = mlflow_start(client, experiment_id, run, store)
        timestamp = int((run.ended_at or run.started_at or 0) * 1000)
        mlflow_epochs(client, created, stored_epochs(store, run), timestamp)
        mlflow_end(client, created, run, timestamp)
        ids.append(created)
    return ids


__all__ = ["TARGETS", "epoch_scalars", "final_scalars", "hparams", "mlflow_end", "mlflow_epochs", "mlflow_experiment",
           "mlflow_parts", "mlflow_start", "mlflow_tags", "mlflow_uri", "run_name", "stored_epochs", "tensorboard_end",
           "tensorboard_epochs", "tensorboard_start", "to_mlflow", "to_tensorboard"]

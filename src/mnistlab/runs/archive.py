"""Portable run archives: an experiment's finished runs written as one compressed tar file, and imported back.

The format (member names, bounds, the checks) is runs/archive_format.py's. Export reads the store through its
readers only. Import reads and checks the whole archive first; only then is the store opened, and the import
is one transaction (``RunStore.atomically``): a run already there with the same identity and outcome is
skipped, one with the same identity but another outcome is a conflict that refuses the whole archive, and a
failure anywhere leaves the store as it was. Imported runs keep the machine they trained on (their
``versions``), their tags, user notes (with when they were written) and recorded provenance, written by the
store's own writers in that transaction; a note says where they came from and whether their weights came along.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mnistlab
from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.runs.archive_format import (ARCHIVED_STATUSES, EPOCHS, FORMAT, FORMAT_VERSION, HISTORY_COLUMNS,
                                          MANIFEST, MODEL_FILES, MODEL_JSON, MODEL_TENSORS, PREDICTIONS, RUN_JSON,
                                          Archive, ArchiveError, ArchivedRun, compression, npy_bytes, portable,
                                          read_archive)
from mnistlab.runs.records import RunRecord, UserNote, canonical_json
from mnistlab.runs.store import ARTIFACTS_DIR, RunStore, current_owner
from mnistlab.training.history import COMPLETED, DIVERGED, FAILED, PENDING
from mnistlab.util.atomic import check_target, staging_folder, write_atomically

__all__ = ["ExportSummary", "ImportSummary", "archive_store", "export_archive", "import_archive", "import_into"]

@dataclass(frozen=True)
class ExportSummary:
    path: Path
    runs: int
    with_models: int  # runs whose model folder went along
    bytes: int


@dataclass
class ImportSummary:
    imported: list[int] = field(default_factory=list)  # new run ids in the store
    skipped: list[int] = field(default_factory=list)  # already there with the same identity and outcome


# -- writing -----------------------------------------------------------------------------------


def _run_record(run: RunRecord, predictions: bool, model: bool, tags: list[str], user_notes: list[UserNote],
                provenance: dict[str, Any] | None) -> dict[str, Any]:
    """A run's run.json (archive_format's docstring); what the user wrote and the provenance as ``portable``
    text, so that what is written here the import's checks accept."""
    return {
        "identity": {"experiment": run.experiment, "model_id": run.model_id, "spec_hash": run.spec_hash,
                     "seed": run.seed, "dataset": run.dataset, "protocol": run.protocol},
        "spec": run.spec, "epochs_planned": run.epochs_planned, "status": run.status, "final": run.final,
        "error": run.error, "notes": run.notes,
        # device and versions: the runs table's (finish_run's); recorded: the per-run provenance, None: not recorded.
        "provenance": {"device": run.device, "versions": run.versions, "recorded": portable(provenance)},
        "times": {"started_at": run.started_at, "ended_at": run.ended_at},
        "tags": tags,  # the store's rule for a tag already allows no control character
        "user_notes": [{"text": portable(note.text), "created_at": note.created_at} for note in user_notes],
        "history_columns": list(HISTORY_COLUMNS), "predictions": predictions, "model": model,
    }


def export_archive(store: RunStore, experiment: str, path: Path | str, *, with_models: bool = False) -> ExportSummary:
    """Write the experiment's completed, diverged and failed runs to ``path`` (published whole or not at all)."""
    path = Path(path)
    kind = compression(path)
    check_target(path)
    config = next((record.config for record in store.experiments() if record.name == experiment), None)
    runs = [run for run in store.runs(experiment) if run.status in ARCHIVED_STATUSES] if config is not None else []
    if not runs:
        raise ArchiveError(f"{store.path}: no completed, diverged or failed runs of experiment '{experiment}' to archive")
    members: list[tuple[str, bytes]] = []
    models = 0
    tags, user_notes, provenances = store.all_tags(), store.all_user_notes(), store.all_provenance()
    for index, run in enumerate(runs, start=1):
        history = store.history(run.id)
        epochs = np.array([[history[name][row] for name in HISTORY_COLUMNS] for row in range(len(history["epoch"]))],
                          dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS))
        stored = store.predictions(run.id)
        folder = store.run_dir(run.id, create=False)
        model = with_models and (folder / MODEL_JSON).is_file() and (folder / MODEL_TENSORS).is_file()
        record = _run_record(run, stored is not None, model, tags.get(run.id, []), user_notes.get(run.id, []),
                             provenances.get(run.id))
        members += [(f"runs/{index:05d}/{RUN_JSON}", canonical_json(record).encode()),
                    (f"runs/{index:05d}/{EPOCHS}", npy_bytes(epochs))]
        if stored is not None:
            members.append((f"runs/{index:05d}/{PREDICTIONS}", npy_bytes(np.stack(stored))))
        if model:
            models += 1
            members += [(f"models/{index:05d}/{name}", (folder / name).read_bytes()) for name in MODEL_FILES]
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "mnistlab": mnistlab.__version__,
                "created_at": time.time(), "runs": len(runs), "with_models": with_models,
                "experiments": [{"name": experiment, "config": config}]}
    members.insert(0, (MANIFEST, canonical_json(manifest).encode()))

    def write(temp: Path) -> None:
        with tarfile.open(temp, f"w:{kind}", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(manifest["created_at"]), 0o644
                tar.addfile(info, io.BytesIO(data))

    try:
        write_atomically(path, write)
    except OSError as error:
        raise EnvironmentFailure(f"{path}: cannot write the archive: {error.strerror or error}") from None
    return ExportSummary(path, len(runs), models, path.stat().st_size)


# -- importing -----------------------------------------------------------------------------------


def _same_outcome(store: RunStore, existing: RunRecord, run: ArchivedRun) -> bool:
    """Whether a stored run with an archived run's identity holds the same result (machine and times aside)."""
    if existing.status != run.record["status"] or canonical_json(existing.final) != canonical_json(run.record["final"]):
        return False
    stored = store.predictions(existing.id)
    if (stored is None) != (run.predictions is None):
        return False
    return stored is None or (np.array_equal(stored[0], run.predictions[0]) and np.array_equal(stored[1], run.predictions[1]))


def _plan(store: RunStore, archive: Archive) -> tuple[list[ArchivedRun], list[int]]:
    """Which archived runs go in, and which stored runs they already are; a conflict refuses the archive."""
    present: dict[tuple[Any, ...], RunRecord] = {}
    for experiment in {run.record["identity"]["experiment"] for run in archive.runs}:
        for stored in store.runs(experiment):
            present[(stored.experiment, stored.model_id, stored.spec_hash, stored.seed, stored.dataset,
                     stored.protocol)] = stored
    new, skipped, conflicts = [], [], []
    for run in archive.runs:
        existing = present.get(run.identity)
        if existing is None or (existing.status in (PENDING, FAILED) and run.record["status"] != FAILED):
            new.append(run)  # absent, or there without a result: the archive's result fills it in
        elif existing.status == FAILED and run.record["status"] == FAILED or _same_outcome(store, existing, run):
            skipped.append(existing.id)
        elif run.record["status"] == FAILED and existing.status in (COMPLETED, DIVERGED):
            skipped.append(existing.id)  # a failure adds nothing to a run that has its outcome
        else:
            conflicts.append(f"{run.label()} (store run {existing.id}: {existing.status}; archive: "
                             f"{run.record['status']}, another result)")
    if conflicts:
        raise ArchiveError(f"{archive.path}: {len(conflicts)} run(s) conflict with runs already in {store.path}, "
                           f"which are never overwritten: {'; '.join(conflicts[:3])}"
                           f"{' ...' if len(conflicts) > 3 else ''}; nothing was imported")
    return new, skipped


def _import_note(archive: Archive, run: ArchivedRun) -> str:
    versions = run.record["provenance"]["versions"] or {}
    ended = run.record["times"]["ended_at"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ended)) if ended is not None else "an unknown time"
    weights = "with its model folder" if run.model else "without its model weights (not in this store)"
    return (f"imported from archive {archive.path.name} {weights}; trained on {versions.get('machine', 'an unrecorded machine')}, "
            f"finished {when}")


def _write_run(store: RunStore, archive: Archive, run: ArchivedRun, owner: str) -> int:
    record, identity = run.record, run.record["identity"]
    stored = store.ensure_run(identity["experiment"], identity["model_id"], record["spec"], identity["seed"],
                              identity["dataset"], identity["protocol"], record["epochs_planned"])
    if not store.claim_run(stored.id, owner):
        raise ArchiveError(f"{archive.path}: {run.label()}: store run {stored.id} is being trained by another "
                           "process; nothing was imported")
    store.truncate_epochs(stored.id, 0)  # a failed run's partial epochs make way for the archive's
    columns = record["history_columns"]
    for row in run.epochs:
        metrics = {name: float(value) for name, value in zip(columns[1:], row[1:])}
        store.record_epoch(stored.id, int(row[0]), metrics)
    for note in record["notes"]:
        store.add_note(stored.id, note)
    _write_user_data(store, stored.id, record)
    store.add_note(stored.id, _import_note(archive, run))
    if record["status"] == FAILED:
        store.fail_run(stored.id, record["error"] or "failed (no error recorded)")
    else:
        labels, predicted = run.predictions if run.predictions is not None else (None, None)
        store.finish_run(stored.id, record["status"], record["final"] or {}, labels, predicted,
                         record["provenance"]["device"], record["provenance"]["versions"] or {})
    return stored.id


def _write_user_data(store: RunStore, run_id: int, record: dict[str, Any]) -> None:
    """The archived run's tags, user notes and recorded provenance, by the store's writers. The run may be one
    the store had without a result (pending, failed): a tag it has stays once, a note it has (same text and
    time) is not added again, and the provenance of the result the archive brings replaces the attempt's."""
    if record["tags"]:
        store.add_tags(run_id, record["tags"])  # the store keeps no tag's time that an archive could carry
    present = {(note.text, note.created_at) for note in store.user_notes(run_id)}
    for note in record["user_notes"]:
        if (note["text"], float(note["created_at"])) not in present:
            store.add_user_note(run_id, note["text"], created_at=note["created_at"])
    if record["provenance"]["recorded"] is not None:
        store.set_provenance(run_id, record["provenance"]["recorded"])


def _stage_models(store: RunStore, archive: Archive, runs: list[ArchivedRun]) -> Path | None:
    """The archived model folders written to a scratch folder inside the store and each loaded and checked
    (trained/folder.py), before the import commits."""
    with_models = [run for run in runs if run.model is not None]
    if not with_models:
        return None
    from mnistlab.trained.folder import load_model_folder  # torch, only for archives that carry models

    (store.root / ARTIFACTS_DIR).mkdir(parents=True, exist_ok=True)
    scratch = staging_folder(store.root / ARTIFACTS_DIR, ".import-")
    try:
        for number, run in enumerate(with_models):
            folder = scratch / str(number)
            folder.mkdir()
            for leaf, data in run.model.items():
                (folder / leaf).write_bytes(data)
            try:
                trained = load_model_folder(folder)
            except MnistlabError as error:
                raise ArchiveError(f"{archive.path}: {run.label()}: the archived model folder is damaged ({error}); "
                                   "nothing was imported") from None
            if trained.info.seed != run.record["identity"]["seed"]:
                raise ArchiveError(f"{archive.path}: {run.label()}: the archived model folder is of seed "
                                   f"{trained.info.seed}; nothing was imported")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch


def import_archive(store: RunStore, archive: Archive | Path | str) -> ImportSummary:
    """Bring an archive's runs into ``store`` in one transaction (module docstring); the summary says which
    run ids came in and which were there already."""
    archive = archive if isinstance(archive, Archive) else read_archive(archive)
    new, skipped = _plan(store, archive)
    summary = ImportSummary(skipped=skipped)
    scratch = _stage_models(store, archive, new)
    moved: list[Path] = []
    owner = current_owner()
    try:
        with store.atomically():
            known = {record.name for record in store.experiments()}
            for entry in archive.manifest["experiments"]:
                if entry["name"] not in known:  # a store's own config of an experiment is never replaced
                    store.save_experiment(entry["name"], entry["config"])
            staged = iter(range(len(new)))
            for run in new:
                run_id = _write_run(store, archive, run, owner)
                summary.imported.append(run_id)
                if run.model is not None and scratch is not None:
                    target = store.root / ARTIFACTS_DIR / str(run_id)
                    if target.exists() and any(target.iterdir()):
                        raise ArchiveError(f"{target}: already holds files; nothing was imported")
                    target.mkdir(parents=True, exist_ok=True)
                    source = scratch / str(next(staged))
                    for leaf in MODEL_FILES:
                        (source / leaf).replace(target / leaf)
                    moved.append(target)
    except BaseException:
        for target in moved:  # the transaction rolled back: its run ids are free again, so are their folders
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


def import_into(root: Path | str, path: Path | str) -> ImportSummary:
    """`import_archive` into the store at `root`, created if absent. The archive is checked whole before the
    store is opened, and an import that fails in a store it created removes that store again: a failure
    leaves no store behind where there was none."""
    archive = read_archive(path)
    root = Path(root)
    existed = root.exists()
    try:
        with RunStore(root) as store:
            return import_archive(store, archive)
    except BaseException:
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
        raise


def archive_store(path: Path | str, folder: Path | str) -> RunStore:
    """A fresh store in ``folder`` holding an archive's runs: how a reader of stores (the reproduction table)
    reads an archive, through the store's own readers. The caller closes it."""
    store = RunStore(folder)
    try:
        import_archive(store, path)
    except BaseException:
        store.close()
        raise
    return store

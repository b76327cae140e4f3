"""The run store: experiments, their training runs, per-epoch history and test-set predictions.

Layout of a store folder (``./mnistlab-runs/`` by default; the caller passes it)::

    <root>/store.sqlite          the database (WAL mode: also -wal and -shm files; network filesystems: shared.py)
    <root>/artifacts/<run_id>/   checkpoints and other files of one run, made by ``run_dir``

The store must survive a SIGKILL at any point and two ``mnistlab run`` processes writing it at
once. Hence every write is one short ``BEGIN IMMEDIATE`` transaction: SQLite either applies it
whole or not at all, and IMMEDIATE takes the write lock up front, so a read-modify-write (such as
claiming a run) cannot interleave with another process's and readers never have to upgrade a
lock (which in WAL mode fails at once instead of waiting out ``busy_timeout``).

A run is identified by what was trained: experiment, model, ``spec_hash`` of the resolved spec,
seed, dataset and protocol. ``ensure_run`` is idempotent on that identity, so rerunning an
experiment finds the runs it already has. A process trains a run only after ``claim_run``
succeeds; a claim held by a dead process (same host, pid gone) or one whose heartbeat is older
than the lease is stale and can be taken over, which is how a killed run gets picked up again.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import LeaseLost, StoreError, StoreUnavailable
from mnistlab.training.history import EPOCH_METRICS, FINISHED_STATUSES, RUNNING, STATUSES
from mnistlab.runs import schema
from mnistlab.runs.owners import current_owner, owner_is_dead
from mnistlab.runs.shared import hold_writer_lock, network_filesystem
from mnistlab.runs.sqlite_io import (BUSY_TIMEOUT_SECONDS, ENVIRONMENT_FAILURES, UNAVAILABLE_FAILURES, metric,
                                     prediction_row, read_only_hint, set_journal_mode)
from mnistlab.runs.records import (ExperimentRecord, RunRecord, UserNote, canonical_json, check_note, check_tag, row_json,
                                   run_record, spec_hash)
from mnistlab.util.strict import whole_number

__all__ = ["open_existing_store", "DEFAULT_HEARTBEAT_SECONDS", "DEFAULT_LEASE_SECONDS", "DEFAULT_ROOT", "RunStore",
           "current_owner"]

DEFAULT_ROOT = Path("mnistlab-runs")
DB_NAME = "store.sqlite"
ARTIFACTS_DIR = "artifacts"
# A live trainer refreshes its claim from a heartbeat thread every DEFAULT_HEARTBEAT_SECONDS,
# however long its epochs take; a claim is taken to be abandoned (even when its pid cannot be
# checked: another host) only after MISSED_HEARTBEATS heartbeats in a row did not come.
DEFAULT_HEARTBEAT_SECONDS = 10.0
MISSED_HEARTBEATS = 6
DEFAULT_LEASE_SECONDS = DEFAULT_HEARTBEAT_SECONDS * MISSED_HEARTBEATS


class RunStore:
    """An embedded SQLite store of experiments and runs; one connection per object.

    Safe to use from several processes at once; not to share between threads.
    """

    def __init__(self, root: Path | str = DEFAULT_ROOT, *, lease_seconds: float | None = None,
                 heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS) -> None:
        """``heartbeat_seconds``: how often a trainer refreshes its claim; ``lease_seconds``:
        how old a claim's heartbeat must be before another process may take the run over
        (default MISSED_HEARTBEATS heartbeats)."""
        self.root = Path(root)
        self.path = self.root / DB_NAME
        if heartbeat_seconds <= 0:
            raise ValueError(f"heartbeat_seconds must be positive, got {heartbeat_seconds}")
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.lease_seconds = (self.heartbeat_seconds * MISSED_HEARTBEATS if lease_seconds is None
                              else float(lease_seconds))
        self._outer = False  # inside atomically()
        self._make_root()
        # A network filesystem: the rollback journal and one writer at a time (shared.py says why).
        self.network = network_filesystem(self.root)
        self.journal_mode, self._lock = ("delete" if self.network else "wal"), None
        self._conn = self._connect()
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (and give the writer lock back); safe to call twice."""
        self._conn.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _make_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: run store folder is a file, not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"{self.root}: cannot create the run store folder: {exc.strerror}") from exc

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module opens no transactions of its own; _write()
        # opens each one explicitly with BEGIN IMMEDIATE.
        with self._translate():
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            with self._translate():
                conn.execute("PRAGMA foreign_keys = ON")
                set_journal_mode(conn, self.journal_mode)
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_schema(self) -> None:
        version = self._schema_version()
        if version is None:
            self._create_schema()
            version = self._schema_version()
        if version is not None and version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {version} is newer than this mnistlab "
                f"supports ({schema.SCHEMA_VERSION}); upgrade mnistlab"
            )
        if version in schema.MIGRATIONS:
            self._migrate(version)
            version = self._schema_version()
        if version != schema.SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {version} is not recognised")

    def _migrate(self, version: int) -> None:
        with self._write() as conn:  # schema.migrate: every step in order, in this one transaction
            schema.migrate(conn)

    def _schema_version(self) -> int | None:
        """The stored schema version, or None for a database without the meta table yet."""
        with self._translate():
            if self._conn.execute(schema.SQL_TABLE_EXISTS, ("meta",)).fetchone() is None:
                return None
            row = self._conn.execute(schema.SQL_GET_VERSION).fetchone()
        version = whole_number(row["value"]) if row is not None else None
        if version is None:
            raise StoreError(f"{self.path}: store has no valid schema version")
        return version

    def _create_schema(self) -> None:
        with self._write() as conn:  # under the write lock: a second process's creation is a no-op
            schema.create(conn, self.path)

    # -- transactions and errors -----------------------------------------------------------

    @contextmanager
    def _translate(self, consequence: str = "") -> Iterator[None]:
        """Turn SQLite failures the environment causes into a one-line StoreError."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if "malformed json" in message.lower():  # json_extract on a tampered row, in a bulk reader
                raise StoreError(f"{self.path}: {self._damaged_json()} is damaged (not valid JSON); "
                                 "the store was edited or corrupted") from None
            if not any(marker in message.lower() for marker in ENVIRONMENT_FAILURES):
                raise
            unavailable = any(marker in message.lower() for marker in UNAVAILABLE_FAILURES)
            kind = StoreUnavailable if unavailable else StoreError
            raise kind(f"{self.path}: {message}{read_only_hint(self.root, self.path)}{consequence}") from exc

    def _damaged_json(self) -> str:
        """Which run and field hold text that is not JSON (for a one-line error)."""
        for column in schema.JSON_COLUMNS:
            row = self._conn.execute(f"SELECT id FROM runs WHERE {column} IS NOT NULL AND NOT json_valid({column}) "
                                     "ORDER BY id LIMIT 1").fetchone()
            if row is not None:
                return f"run {row[0]}: field '{column}'"
        return "a stored JSON field"

    @contextmanager
    def atomically(self) -> Iterator[None]:
        """Every write made inside is one transaction, applied whole or not at all (an archive's
        import: a failure anywhere leaves the store as it was). Not re-entrant."""
        if self._outer:
            raise ValueError("atomically() is already open on this store")
        with self._write():
            self._outer = True
            try:
                yield
            finally:
                self._outer = False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole on success, rolled back whole on any error."""
        if self._outer:  # inside atomically(): its transaction holds this write too
            yield self._conn
            return
        if self.network is not None:  # one writer at a time there, by a lock of our own
            self._lock = hold_writer_lock(self._lock, self.root, self.network)
        with self._translate("; the change was rolled back and the store is unchanged"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # SQLite rolls some failures (a full disk among them) back by itself.
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise

    def _assert_owner(self, conn: sqlite3.Connection, run_id: int, owner: str | None) -> None:
        """Inside a write transaction: refresh ``owner``'s heartbeat, or raise LeaseLost (which
        rolls the whole transaction back) when it no longer holds the running run. ``None``
        skips the check (single-process tools and tests)."""
        if owner is None:
            return
        if conn.execute(schema.SQL_HEARTBEAT, (time.time(), run_id, owner)).rowcount == 1:
            return
        row = conn.execute(schema.SQL_OWNER, (run_id,)).fetchone()
        now = "gone" if row is None else f"{row['status']}, owner {row['owner']}"
        raise LeaseLost(f"{self.path}: run {run_id} is no longer held by {owner} ({now}); "
                        "its claim went stale and the run was left to its new owner")

    def _require_run(self, conn: sqlite3.Connection, run_id: int) -> sqlite3.Row:
        row = conn.execute(schema.SQL_RUN_BY_ID, (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no run with id {run_id}")
        return row

    # -- experiments ---------------------------------------------------------------------------

    def save_experiment(self, name: str, config: dict[str, Any]) -> None:
        """Insert the experiment, or replace its config if it is already stored."""
        now = time.time()
        with self._write() as conn:
            conn.execute(schema.SQL_UPSERT_EXPERIMENT, (name, canonical_json(config), now, now))

    def experiments(self) -> list[ExperimentRecord]:
        """All experiments, by name."""
        with self._translate():
            rows = self._conn.execute(schema.SQL_EXPERIMENTS).fetchall()
        return [ExperimentRecord(row["name"], row_json(row, "config_json", dict, self.path, f"experiment {row['name']!r}"),
                                 row["created_at"], row["updated_at"]) for row in rows]

    # -- runs ----------------------------------------------------------------------------------

    def ensure_run(self, experiment: str, model_id: str, spec: dict[str, Any], seed: int,
                   dataset: str, protocol: str, epochs_planned: int) -> RunRecord:
        """The run with this identity, created pending if absent; an existing run is returned
        unchanged. The experiment must have been saved first."""
        params = {
            "experiment": experiment, "model_id": model_id, "spec_json": canonical_json(spec),
            "spec_hash": spec_hash(spec), "seed": int(seed), "dataset": dataset,
            "protocol": protocol, "epochs_planned": int(epochs_planned),
        }
        with self._write() as conn:
            if conn.execute(schema.SQL_EXPERIMENT_EXISTS, (experiment,)).fetchone() is None:
                raise StoreError(f"{self.path}: experiment {experiment!r} is not in the store")
            # OR IGNORE: the run may exist already, created by an earlier or a concurrent run.
            conn.execute(schema.SQL_INSERT_RUN, params)
            row = conn.execute(schema.SQL_RUN_BY_IDENTITY, params).fetchone()
        return run_record(row, self.path)

    def get_run(self, run_id: int) -> RunRecord:
        """The run with this id; StoreError if there is none."""
        with self._translate():
            return run_record(self._require_run(self._conn, run_id), self.path)

    def runs(self, experiment: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs by id, optionally only those of one experiment and/or in one status."""
        if status is not None and status not in STATUSES:
            raise StoreError(f"{self.path}: unknown run status {status!r} "
                             f"(expected one of {', '.join(STATUSES)})")
        with self._translate():
            rows = self._conn.execute(schema.SQL_RUNS, {"experiment": experiment, "status": status})
            return [run_record(row, self.path) for row in rows.fetchall()]

    def find_runs(self, prefix_or_id: str) -> list[RunRecord]:
        """Runs a CLI argument names: a decimal run id, or else a prefix of the spec hash, of the
        model id or of ``experiment/model_id``. Empty when nothing matches."""
        text = prefix_or_id.strip()
        if not text:
            return []
        with self._translate():
            run_id = whole_number(text)  # ASCII digits within SQLite's range; '²' or 10**20 is no id
            if run_id is not None:
                row = self._conn.execute(schema.SQL_RUN_BY_ID, (run_id,)).fetchone()
                return [] if row is None else [run_record(row, self.path)]
            rows = self._conn.execute(schema.SQL_RUNS_BY_PREFIX, {"prefix": text}).fetchall()
        return [run_record(row, self.path) for row in rows]

    # -- claiming ------------------------------------------------------------------------------

    def claim_run(self, run_id: int, owner: str, provenance: dict[str, Any] | None = None) -> bool:
        """Mark the run running by ``owner`` (``host:pid``) if nobody else may be training it.

        True for a pending or failed run, a stale running claim, or ``owner``'s own claim;
        False for a finished run or a claim held by another live owner. ``provenance``: what is
        about to train it (util.provenance), recorded in the same transaction as the claim.
        """
        now = time.time()
        with self._write() as conn:
            state = self._require_run(conn, run_id)
            if not self._claimable(state, owner, now):
                return False
            conn.execute(schema.SQL_CLAIM, (owner, now, now, run_id))
            if provenance is not None:
                conn.execute(schema.SQL_SET_PROVENANCE, (run_id, canonical_json(provenance), now))
        return True

    def is_live(self, run: RunRecord) -> bool:
        """True while a process may be training ``run``: it is running under a claim that is not
        stale (the claimant's pid is alive here, or its heartbeat is younger than the lease)."""
        return run.status == RUNNING and not self._claim_is_stale(run.owner, run.heartbeat_at, time.time())

    def _claimable(self, state: sqlite3.Row, owner: str, now: float) -> bool:
        if state["status"] in FINISHED_STATUSES:
            return False
        if state["status"] != RUNNING or state["owner"] == owner:
            return True
        return self._claim_is_stale(state["owner"], state["heartbeat_at"], now)

    def _claim_is_stale(self, holder: str | None, heartbeat_at: float | None, now: float) -> bool:
        if holder is None or heartbeat_at is None:
            return True
        return owner_is_dead(holder) or now - heartbeat_at >= self.lease_seconds

    def heartbeat(self, run_id: int, owner: str) -> bool:
        """Refresh ``owner``'s claim; False when it no longer holds the run (it was taken over
        or finished), in which case the caller should stop training it."""
        with self._write() as conn:
            return conn.execute(schema.SQL_HEARTBEAT, (time.time(), run_id, owner)).rowcount == 1

    # -- history -------------------------------------------------------------------------------

    def record_epoch(self, run_id: int, epoch: int, metrics: dict[str, Any], *,
                     owner: str | None = None) -> None:
        """Store one epoch's metrics (keys from EPOCH_METRICS; missing ones are NULL) and refresh
        the run's heartbeat. Recording an epoch again replaces it, so a resumed run that replays
        epochs never duplicates them. SQLite stores NaN as NULL; ``history`` reads NULL as NaN.
        With ``owner``, nothing is written unless it still holds the run (else LeaseLost)."""
        unknown = sorted(set(metrics) - set(EPOCH_METRICS))
        if unknown:
            raise ValueError(f"unknown epoch metrics {unknown}; expected {list(EPOCH_METRICS)}")
        values = [metric(metrics.get(name)) for name in EPOCH_METRICS]
        with self._write() as conn:
            self._require_run(conn, run_id)
            self._assert_owner(conn, run_id, owner)
            conn.execute(schema.SQL_RECORD_EPOCH, (run_id, int(epoch), *values))
            conn.execute(schema.SQL_TOUCH_RUNNING, (time.time(), run_id))

    def truncate_epochs(self, run_id: int, after_epoch: int, *, owner: str | None = None) -> None:
        """Delete the epochs after ``after_epoch``: used when resuming from a checkpoint older
        than the last stored epoch, whose later epochs will be trained again. With ``owner``,
        only while it holds the run (else LeaseLost)."""
        with self._write() as conn:
            self._assert_owner(conn, run_id, owner)
            conn.execute(schema.SQL_TRUNCATE_EPOCHS, (run_id, int(after_epoch)))

    def history(self, run_id: int) -> dict[str, list[float]]:
        """Per-epoch metrics ordered by epoch, keyed ``epoch`` and EPOCH_METRICS; NaN where a
        metric was not recorded."""
        with self._translate():
            self._require_run(self._conn, run_id)
            rows = self._conn.execute(schema.SQL_HISTORY, (run_id,)).fetchall()
        result: dict[str, list[float]] = {"epoch": [row["epoch"] for row in rows]}
        for name in EPOCH_METRICS:
            result[name] = [math.nan if row[name] is None else row[name] for row in rows]
        return result

    # -- outcome -------------------------------------------------------------------------------

    def finish_run(self, run_id: int, status: str, final: dict[str, Any],
                   labels: np.ndarray | None, predicted: np.ndarray | None, device: str,
                   versions: dict[str, Any], *, owner: str | None = None) -> None:
        """Record a running run's outcome (``completed`` or ``diverged``), its final metrics and
        test-set predictions, all in one transaction; with ``owner``, only while it holds the
        run (else LeaseLost)."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"finish status must be one of {FINISHED_STATUSES}, got {status!r}")
        predictions = prediction_row(run_id, labels, predicted)
        now = time.time()
        with self._write() as conn:
            current = self._require_run(conn, run_id)["status"]
            if current != RUNNING:
                raise StoreError(f"{self.path}: run {run_id} is {current}, not running; "
                                 "claim it before finishing it")
            self._assert_owner(conn, run_id, owner)
            conn.execute(schema.SQL_FINISH, (status, canonical_json(final), device,
                                      canonical_json(versions), now, now, run_id))
            if predictions is not None:
                conn.execute(schema.SQL_SAVE_PREDICTIONS, predictions)

    def fail_run(self, run_id: int, error: str, *, owner: str | None = None) -> bool:
        """Mark the run failed with ``error``, unless it already finished or (with ``owner``)
        another process holds it now; a failed run can be claimed again. True if marked."""
        with self._write() as conn:
            self._require_run(conn, run_id)
            if owner is not None:
                row = conn.execute(schema.SQL_OWNER, (run_id,)).fetchone()
                if row["owner"] != owner:
                    return False
            return conn.execute(schema.SQL_FAIL, (error, time.time(), run_id)).rowcount == 1

    def add_note(self, run_id: int, text: str) -> None:
        """Append a line to the run's notes (what happened to it that its status does not say,
        such as a damaged checkpoint moved aside); notes survive reclaims and finishing."""
        with self._write() as conn:
            notes = json.loads(self._require_run(conn, run_id)["notes_json"] or "null") or []
            conn.execute(schema.SQL_SET_NOTES, (canonical_json([*notes, text]), run_id))

    def predictions(self, run_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The test-set ``(labels, predicted)`` as uint8 arrays, or None if none were stored."""
        with self._translate():
            self._require_run(self._conn, run_id)
            row = self._conn.execute(schema.SQL_PREDICTIONS, (run_id,)).fetchone()
        if row is None:
            return None
        labels = np.frombuffer(row["labels"], dtype=np.uint8).copy()
        predicted = np.frombuffer(row["predicted"], dtype=np.uint8).copy()
        if len(labels) != row["n"] or len(predicted) != row["n"]:
            raise StoreError(f"{self.path}: predictions of run {run_id} are inconsistent")
        return labels, predicted

    # -- what the user says about a run: tags and notes ------------------------------------------

    def add_tags(self, run_id: int, tags: list[str], *, created_at: float | None = None) -> list[str]:
        """Put ``tags`` on the run (a tag already there stays once); the run's tags after.
        ``created_at``: when (default now), for an importer that carries the original time."""
        checked = [check_tag(tag) for tag in tags]
        when = time.time() if created_at is None else float(created_at)
        with self._write() as conn:
            self._require_run(conn, run_id)
            conn.executemany(schema.SQL_ADD_TAG, [(run_id, tag, when) for tag in checked])
            return [row["tag"] for row in conn.execute(schema.SQL_TAGS_OF, (run_id,))]

    def remove_tags(self, run_id: int, tags: list[str]) -> list[str]:
        """Take ``tags`` off the run (absent ones are ignored); the run's tags after."""
        with self._write() as conn:
            self._require_run(conn, run_id)
            conn.executemany(schema.SQL_REMOVE_TAG, [(run_id, tag) for tag in tags])
            return [row["tag"] for row in conn.execute(schema.SQL_TAGS_OF, (run_id,))]

    def tags(self, run_id: int) -> list[str]:
        """The run's tags, sorted."""
        with self._translate():
            self._require_run(self._conn, run_id)
            return [row["tag"] for row in self._conn.execute(schema.SQL_TAGS_OF, (run_id,))]

    def all_tags(self) -> dict[int, list[str]]:
        """Every run's tags, sorted, by run id (runs without tags are absent)."""
        found: dict[int, list[str]] = {}
        with self._translate():
            for row in self._conn.execute(schema.SQL_TAGS):
                found.setdefault(row["run_id"], []).append(row["tag"])
        return found

    def add_user_note(self, run_id: int, text: str, *, created_at: float | None = None) -> UserNote:
        """Add a note written by the user (kept apart from the system's ``notes``)."""
        note = UserNote(check_note(text), time.time() if created_at is None else float(created_at))
        with self._write() as conn:
            self._require_run(conn, run_id)
            conn.execute(schema.SQL_ADD_USER_NOTE, (run_id, note.text, note.created_at))
        return note

    def user_notes(self, run_id: int) -> list[UserNote]:
        """The user's notes on the run, oldest first."""
        with self._translate():
            self._require_run(self._conn, run_id)
            rows = self._conn.execute(schema.SQL_USER_NOTES_OF, (run_id,)).fetchall()
        return [UserNote(row["text"], row["created_at"]) for row in rows]

    def all_user_notes(self) -> dict[int, list[UserNote]]:
        """Every run's user notes, oldest first, by run id (runs without notes are absent)."""
        found: dict[int, list[UserNote]] = {}
        with self._translate():
            for row in self._conn.execute(schema.SQL_USER_NOTES):
                found.setdefault(row["run_id"], []).append(UserNote(row["text"], row["created_at"]))
        return found

    # -- provenance --------------------------------------------------------------------------------

    def set_provenance(self, run_id: int, provenance: dict[str, Any]) -> None:
        """Record (or replace) what produced the run; ``claim_run`` does it for training, an
        importer calls this with the values an archive carries."""
        with self._write() as conn:
            self._require_run(conn, run_id)
            conn.execute(schema.SQL_SET_PROVENANCE, (run_id, canonical_json(provenance), time.time()))

    def provenance(self, run_id: int) -> dict[str, Any] | None:
        """What produced the run, or None when it was not recorded (runs older than schema 3)."""
        with self._translate():
            self._require_run(self._conn, run_id)
            row = self._conn.execute(schema.SQL_PROVENANCE_OF, (run_id,)).fetchone()
        return None if row is None else row_json(row, "provenance_json", dict, self.path, f"run {run_id}")

    def all_provenance(self) -> dict[int, dict[str, Any]]:
        """Every recorded provenance, by run id (runs without one are absent)."""
        with self._translate():
            rows = self._conn.execute(schema.SQL_PROVENANCES).fetchall()
        return {row["run_id"]: row_json(row, "provenance_json", dict, self.path, f"run {row['run_id']}")
                for row in rows}

    # -- removal -----------------------------------------------------------------------------------

    def remove_runs(self, run_ids: list[int], experiment: str | None = None) -> list[RunRecord]:
        """Delete the runs' rows (epochs, predictions, tags, notes, provenance) in one transaction,
        recording each in ``removed_runs`` so that their artifacts folders are deleted next (by
        the caller, or by ``pending_removals``' next reader) and their ids never reused. With
        ``experiment``, its row goes too once no run of it is left. Refused whole, with one line,
        if a live process is training any of them. The records removed."""
        with self._write() as conn:
            rows = [self._require_run(conn, run_id) for run_id in dict.fromkeys(run_ids)]
            records = [run_record(row, self.path) for row in rows]
            live = [str(record.id) for record in records if self.is_live(record)]
            if live:
                raise StoreError(f"{self.path}: {'runs' if len(live) > 1 else 'run'} {', '.join(live)} "
                                 f"{'are' if len(live) > 1 else 'is'} being trained by a live process; stop it first "
                                 "(or wait), nothing was removed")
            now = time.time()
            for record in records:
                conn.execute(schema.SQL_RECORD_REMOVAL, (record.id, record.experiment, record.model_id, now))
                for statement in schema.SQL_DELETE_RUN_ROWS:
                    conn.execute(statement, (record.id,))
            if experiment is not None and conn.execute(schema.SQL_EXPERIMENT_RUN_COUNT,
                                                       (experiment,)).fetchone()[0] == 0:
                conn.execute(schema.SQL_DELETE_EXPERIMENT, (experiment,))
        return records

    def pending_removals(self) -> list[tuple[int, str]]:
        """(id, experiment) of removed runs whose artifacts folders may still exist (a removal was
        interrupted); ``removed(run_id=..)`` or ``removed(experiment=..)`` also lists the finished ones."""
        with self._translate():
            return [(row["run_id"], row["experiment"]) for row in self._conn.execute(schema.SQL_REMOVALS_PENDING)]

    def removed(self, run_id: int | None = None, experiment: str | None = None) -> list[tuple[int, str]]:
        """(id, experiment) of the removed runs with this id or of this experiment."""
        with self._translate():
            rows = self._conn.execute(schema.SQL_REMOVED_RUN, (run_id, experiment)).fetchall()
        return [(row["run_id"], row["experiment"]) for row in rows]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's write lock for the block: no run is created, claimed or removed meanwhile
        (gc moves folders aside under it). Keep the block short: other writers wait at most
        BUSY_TIMEOUT_SECONDS."""
        with self._write():
            yield

    def removal_done(self, run_id: int) -> None:
        """Note that a removed run's artifacts folder is gone."""
        with self._write() as conn:
            conn.execute(schema.SQL_REMOVAL_DONE, (run_id,))

    def run_ids(self) -> set[int]:
        """The ids of every run in the store."""
        with self._translate():
            return {row["id"] for row in self._conn.execute(schema.SQL_RUN_IDS)}

    # -- artifacts -----------------------------------------------------------------------------

    def read_rows(self, sql: str, params: Any = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of one read-only query, for bulk readers such as the report."""
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            raise ValueError("read_rows runs SELECT queries only")
        with self._translate():
            cursor = self._conn.execute(sql, params)
            return [d[0] for d in cursor.description], [tuple(row) for row in cursor.fetchall()]

    def run_dir(self, run_id: int, create: bool = True) -> Path:
        """The run's artifacts folder, ``<root>/artifacts/<run_id>/``, created if needed (and
        ``create``: readers of a read-only store pass False)."""
        self.get_run(run_id)
        folder = self.root / ARTIFACTS_DIR / str(run_id)
        if not create:
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"{self.path}: cannot create {folder}: {exc.strerror}") from exc
        return folder


def open_existing_store(root: Path | str) -> RunStore:
    """A run store that must already exist: the read commands (ls, show, compare, report, ...)
    open it this way, so that a mistyped --store never creates one."""
    if not (Path(root) / DB_NAME).is_file():
        raise StoreError(f"{root}: no run store here (no {DB_NAME}); pass --store DIR or a model folder")
    return RunStore(root)

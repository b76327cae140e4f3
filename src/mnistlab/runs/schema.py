"""The run store's SQLite schema and every statement the store runs, in one place.

Kept apart from store.py (which holds the transactions and the records) so the tables and the
queries can be read together; only store.py runs them. ``SCHEMA_VERSION`` is what a store file
records; a newer one is refused by older code, an older one is migrated: ``MIGRATIONS`` holds one
function per version, each bringing a store of that version to the next; store.py applies them in
order, all in one transaction, so a store is never left between two versions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from mnistlab.errors import StoreError
from mnistlab.training.history import COMPLETED, DIVERGED, EPOCH_METRICS, FAILED, PENDING, RUNNING, STATUSES


SCHEMA_VERSION = 3


JSON_COLUMNS = ("spec_json", "final_json", "versions_json", "notes_json")  # the runs columns holding JSON


# Version 3 onwards: what the user says about a run, how it was produced, and what was removed.
V3_TABLES = (
    # Tags the user gives a run (`mnistlab tag`); a tag is on a run at most once.
    """CREATE TABLE IF NOT EXISTS run_tags (
        run_id     INTEGER NOT NULL REFERENCES runs(id),
        tag        TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (run_id, tag)
    )""",
    # Notes the user writes (`mnistlab note`), beside the system's own in runs.notes_json.
    """CREATE TABLE IF NOT EXISTS run_user_notes (
        id         INTEGER PRIMARY KEY,
        run_id     INTEGER NOT NULL REFERENCES runs(id),
        text       TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    # What produced a run (git state, installed distributions, command, libraries, CPU), written
    # by the process that claims it to train; absent for runs trained before version 3.
    """CREATE TABLE IF NOT EXISTS run_provenance (
        run_id          INTEGER PRIMARY KEY REFERENCES runs(id),
        provenance_json TEXT NOT NULL,
        recorded_at     REAL NOT NULL
    )""",
    # Runs removed by `mnistlab rm`: their rows went in one transaction with this row's insert;
    # files_done turns 1 once their artifacts folder is gone too (a rerun or gc finishes it).
    # Kept afterwards so that a removed run's id is never given to a new run.
    """CREATE TABLE IF NOT EXISTS removed_runs (
        run_id     INTEGER PRIMARY KEY,
        experiment TEXT NOT NULL,
        model_id   TEXT NOT NULL,
        removed_at REAL NOT NULL,
        files_done INTEGER NOT NULL DEFAULT 0
    )""",
)


SCHEMA_STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS experiments (
        name        TEXT PRIMARY KEY,
        config_json TEXT NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS runs (
        id             INTEGER PRIMARY KEY,
        experiment     TEXT NOT NULL REFERENCES experiments(name),
        model_id       TEXT NOT NULL,
        spec_json      TEXT NOT NULL,
        spec_hash      TEXT NOT NULL,
        seed           INTEGER NOT NULL,
        dataset        TEXT NOT NULL,
        protocol       TEXT NOT NULL,
        epochs_planned INTEGER NOT NULL,
        status         TEXT NOT NULL DEFAULT '{PENDING}'
                       CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
        owner          TEXT,
        heartbeat_at   REAL,
        device         TEXT,
        versions_json  TEXT,
        started_at     REAL,
        ended_at       REAL,
        final_json     TEXT,
        error          TEXT,
        notes_json     TEXT,
        UNIQUE (experiment, model_id, spec_hash, seed, dataset, protocol)
    )""",
    """CREATE TABLE IF NOT EXISTS epochs (
        run_id   INTEGER NOT NULL REFERENCES runs(id),
        epoch    INTEGER NOT NULL,
        loss     REAL,
        acc      REAL,
        val_loss REAL,
        val_acc  REAL,
        seconds  REAL,
        train_eval_loss REAL,
        train_eval_acc  REAL,
        PRIMARY KEY (run_id, epoch)
    )""",
    """CREATE TABLE IF NOT EXISTS predictions (
        run_id    INTEGER PRIMARY KEY REFERENCES runs(id),
        n         INTEGER NOT NULL,
        labels    BLOB NOT NULL,
        predicted BLOB NOT NULL
    )""",
    *V3_TABLES,
)


def _migrate_1(conn: sqlite3.Connection) -> None:
    """1 → 2: the train-mode evaluation metrics per epoch and the system's notes per run."""
    conn.execute("ALTER TABLE epochs ADD COLUMN train_eval_loss REAL")
    conn.execute("ALTER TABLE epochs ADD COLUMN train_eval_acc REAL")
    conn.execute("ALTER TABLE runs ADD COLUMN notes_json TEXT")


def _migrate_2(conn: sqlite3.Connection) -> None:
    """2 → 3: user tags and notes, provenance, removed runs (new tables; old runs have no provenance)."""
    for statement in V3_TABLES:
        conn.execute(statement)


# version → the function that brings a store of that version to the next one.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1, 2: _migrate_2}



SQL_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"


SQL_COUNT_OBJECTS = "SELECT count(*) FROM sqlite_master"


SQL_GET_VERSION = "SELECT value FROM meta WHERE key = 'schema_version'"


SQL_SET_VERSION = "UPDATE meta SET value = ? WHERE key = 'schema_version'"


SQL_INIT_VERSION = "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)"


SQL_UPSERT_EXPERIMENT = """
    INSERT INTO experiments (name, config_json, created_at, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET config_json = excluded.config_json,
                                     updated_at = excluded.updated_at
"""


SQL_EXPERIMENT_EXISTS = "SELECT 1 FROM experiments WHERE name = ?"


SQL_EXPERIMENTS = "SELECT name, config_json, created_at, updated_at FROM experiments ORDER BY name"


RUN_COLUMNS = (
    "id, experiment, model_id, spec_json, spec_hash, seed, dataset, protocol, epochs_planned, "
    "status, owner, heartbeat_at, device, versions_json, started_at, ended_at, final_json, error, notes_json"
)


# The id is past every run's and every removed run's, so a removed run's id (and artifacts folder,
# which may still be being deleted) is never handed to a new run.
SQL_INSERT_RUN = """
    INSERT OR IGNORE INTO runs
        (id, experiment, model_id, spec_json, spec_hash, seed, dataset, protocol, epochs_planned)
    VALUES ((SELECT max(coalesce((SELECT max(id) FROM runs), 0),
                        coalesce((SELECT max(run_id) FROM removed_runs), 0)) + 1),
            :experiment, :model_id, :spec_json, :spec_hash, :seed, :dataset, :protocol,
            :epochs_planned)
"""


SQL_RUN_BY_IDENTITY = f"""
    SELECT {RUN_COLUMNS} FROM runs
    WHERE experiment = :experiment AND model_id = :model_id AND spec_hash = :spec_hash
      AND seed = :seed AND dataset = :dataset AND protocol = :protocol
"""


SQL_RUN_BY_ID = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"


# NULL filters match everything, so one statement serves all four filter combinations.
SQL_RUNS = f"""
    SELECT {RUN_COLUMNS} FROM runs
    WHERE (:experiment IS NULL OR experiment = :experiment)
      AND (:status IS NULL OR status = :status)
    ORDER BY id
"""


SQL_RUNS_BY_PREFIX = f"""
    SELECT {RUN_COLUMNS} FROM runs
    WHERE substr(spec_hash, 1, length(:prefix)) = :prefix
       OR substr(model_id, 1, length(:prefix)) = :prefix
       OR substr(experiment || '/' || model_id, 1, length(:prefix)) = :prefix
    ORDER BY id
"""


SQL_CLAIM = f"""
    UPDATE runs SET status = '{RUNNING}', owner = ?, heartbeat_at = ?, started_at = ?,
                    ended_at = NULL, error = NULL
    WHERE id = ?
"""


SQL_HEARTBEAT = f"UPDATE runs SET heartbeat_at = ? WHERE id = ? AND owner = ? AND status = '{RUNNING}'"


SQL_TOUCH_RUNNING = f"UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = '{RUNNING}'"


SQL_OWNER = "SELECT owner, status FROM runs WHERE id = ?"


SQL_RECORD_EPOCH = f"""
    INSERT OR REPLACE INTO epochs (run_id, epoch, {", ".join(EPOCH_METRICS)})
    VALUES (?, ?, {", ".join("?" for _ in EPOCH_METRICS)})
"""


SQL_TRUNCATE_EPOCHS = "DELETE FROM epochs WHERE run_id = ? AND epoch > ?"


SQL_HISTORY = f"SELECT epoch, {', '.join(EPOCH_METRICS)} FROM epochs WHERE run_id = ? ORDER BY epoch"


SQL_FINISH = """
    UPDATE runs SET status = ?, final_json = ?, device = ?, versions_json = ?, ended_at = ?,
                    heartbeat_at = ?, error = NULL
    WHERE id = ?
"""


SQL_SAVE_PREDICTIONS = """
    INSERT OR REPLACE INTO predictions (run_id, n, labels, predicted) VALUES (?, ?, ?, ?)
"""


SQL_SET_NOTES = "UPDATE runs SET notes_json = ? WHERE id = ?"


SQL_PREDICTIONS = "SELECT n, labels, predicted FROM predictions WHERE run_id = ?"


# A finished run keeps its result: a failure after it completed (say, while writing a report)
# must not mark it failed.
SQL_FAIL = f"""
    UPDATE runs SET status = '{FAILED}', error = ?, ended_at = ?
    WHERE id = ? AND status NOT IN ('{COMPLETED}', '{DIVERGED}')
"""


# -- tags, user notes, provenance (version 3) -------------------------------------------------------

SQL_ADD_TAG = "INSERT OR IGNORE INTO run_tags (run_id, tag, created_at) VALUES (?, ?, ?)"


SQL_REMOVE_TAG = "DELETE FROM run_tags WHERE run_id = ? AND tag = ?"


SQL_TAGS = "SELECT run_id, tag FROM run_tags ORDER BY run_id, tag"


SQL_TAGS_OF = "SELECT tag FROM run_tags WHERE run_id = ? ORDER BY tag"


SQL_ADD_USER_NOTE = "INSERT INTO run_user_notes (run_id, text, created_at) VALUES (?, ?, ?)"


SQL_USER_NOTES = "SELECT run_id, text, created_at FROM run_user_notes ORDER BY run_id, created_at, id"


SQL_USER_NOTES_OF = "SELECT run_id, text, created_at FROM run_user_notes WHERE run_id = ? ORDER BY created_at, id"


SQL_SET_PROVENANCE = """
    INSERT INTO run_provenance (run_id, provenance_json, recorded_at) VALUES (?, ?, ?)
    ON CONFLICT (run_id) DO UPDATE SET provenance_json = excluded.provenance_json,
                                       recorded_at = excluded.recorded_at
"""


SQL_PROVENANCE_OF = "SELECT provenance_json FROM run_provenance WHERE run_id = ?"


SQL_PROVENANCES = "SELECT run_id, provenance_json FROM run_provenance ORDER BY run_id"


# -- removal (version 3) ----------------------------------------------------------------------------

# Every table holding a row per run, children first (foreign keys); `rm` deletes from each.
RUN_CHILD_TABLES = ("epochs", "predictions", "run_tags", "run_user_notes", "run_provenance")


SQL_DELETE_RUN_ROWS = tuple(f"DELETE FROM {table} WHERE run_id = ?" for table in RUN_CHILD_TABLES) + (
    "DELETE FROM runs WHERE id = ?",
)


SQL_RECORD_REMOVAL = """
    INSERT OR REPLACE INTO removed_runs (run_id, experiment, model_id, removed_at, files_done)
    VALUES (?, ?, ?, ?, 0)
"""


SQL_REMOVALS_PENDING = "SELECT run_id, experiment FROM removed_runs WHERE files_done = 0 ORDER BY run_id"


SQL_REMOVED_RUN = "SELECT run_id, experiment FROM removed_runs WHERE run_id = ? OR experiment = ? ORDER BY run_id"


SQL_REMOVAL_DONE = "UPDATE removed_runs SET files_done = 1 WHERE run_id = ?"


SQL_EXPERIMENT_RUN_COUNT = "SELECT count(*) FROM runs WHERE experiment = ?"


SQL_DELETE_EXPERIMENT = "DELETE FROM experiments WHERE name = ?"


SQL_RUN_IDS = "SELECT id FROM runs ORDER BY id"


# -- `ls`: one row per run (runs/listing.py decodes final_json: it may hold NaN, which json_extract refuses)

SQL_RUN_SUMMARIES = """
    SELECT r.id, r.experiment, r.model_id AS model, r.seed, r.status, r.dataset, r.protocol, r.epochs_planned,
           r.device, r.started_at, r.ended_at, r.final_json,
           (SELECT count(*) FROM epochs e WHERE e.run_id = r.id) AS epochs,
           (SELECT e.val_acc FROM epochs e WHERE e.run_id = r.id ORDER BY e.epoch DESC LIMIT 1) AS val_acc,
           (SELECT avg(e.seconds) FROM epochs e WHERE e.run_id = r.id) AS seconds_per_epoch
    FROM runs r
    WHERE (:experiment IS NULL OR r.experiment = :experiment)
      AND (:status IS NULL OR r.status = :status)
      AND (:model IS NULL OR r.model_id = :model)
    ORDER BY r.id
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Inside the store's write transaction: bring an older store up to SCHEMA_VERSION, each version's
    migration in order, so that a crash leaves the old version whole. The version is read again here,
    under the write lock: a concurrent process may have migrated already."""
    current = int(conn.execute(SQL_GET_VERSION).fetchone()["value"])
    for step in range(current, SCHEMA_VERSION):
        MIGRATIONS[step](conn)
    conn.execute(SQL_SET_VERSION, (str(SCHEMA_VERSION),))


def create(conn: sqlite3.Connection, path: Path) -> None:
    """Inside the store's write transaction: the tables of a new store. Two processes opening a fresh
    store at once both get here; IF NOT EXISTS and INSERT OR IGNORE make the second creation a no-op."""
    if conn.execute(SQL_TABLE_EXISTS, ("meta",)).fetchone() is None and conn.execute(SQL_COUNT_OBJECTS).fetchone()[0] > 0:
        raise StoreError(f"{path}: database is not an mnistlab run store")
    for statement in SCHEMA_STATEMENTS:
        conn.execute(statement)
    conn.execute(SQL_INIT_VERSION, (str(SCHEMA_VERSION),))

"""The run store's SQLite schema and every statement the store runs, in one place.

Kept apart from store.py (which holds the transactions and the records) so the tables and the
queries can be read together; only store.py runs them. ``SCHEMA_VERSION`` is what a store file
records; a newer one is refused by older code, an older one is migrated (store.py).
"""

from __future__ import annotations

from mnistlab.training.history import COMPLETED, DIVERGED, EPOCH_METRICS, FAILED, PENDING, RUNNING, STATUSES


SCHEMA_VERSION = 2


# Substrings of the sqlite3 messages for failures the user's environment causes (full disk,
# read-only files, a corrupt or foreign file, a store held busy too long). Anything else is a bug
# in this module and propagates unchanged.
JSON_COLUMNS = ("spec_json", "final_json", "versions_json", "notes_json")  # the runs columns holding JSON


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
)


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


SQL_INSERT_RUN = """
    INSERT OR IGNORE INTO runs
        (experiment, model_id, spec_json, spec_hash, seed, dataset, protocol, epochs_planned)
    VALUES (:experiment, :model_id, :spec_json, :spec_hash, :seed, :dataset, :protocol,
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

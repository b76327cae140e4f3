"""The store's dealings with SQLite below the SQL: its journal mode, the failures the environment
causes, and the values it binds (metrics, prediction rows); store.py runs the statements.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BUSY_TIMEOUT_SECONDS", "ENVIRONMENT_FAILURES", "UNAVAILABLE_FAILURES", "metric", "prediction_row",
           "read_only_hint", "set_journal_mode"]

BUSY_TIMEOUT_SECONDS = 30.0
WAL_RETRY_SECONDS = 0.01

# Substrings of the sqlite3 messages for failures the user's environment causes (full disk,
# read-only files, a corrupt or foreign file, a store held busy too long). Anything else is a bug
# in the store and propagates unchanged.
ENVIRONMENT_FAILURES = (
    "database or disk is full",
    "readonly database",
    "database is locked",
    "disk i/o error",
    "file is not a database",
    "database disk image is malformed",
    "unable to open database file",
)
# Of those, the ones that are the machine's fault rather than the file's: exit status 1.
UNAVAILABLE_FAILURES = (
    "database or disk is full",
    "readonly database",
    "database is locked",
    "disk i/o error",
    "unable to open database file",
)


def read_only_hint(root: Path, path: Path) -> str:
    """SQLite says "unable to open database file" when it cannot create its WAL files: say why."""
    if root.is_dir() and not os.access(root, os.W_OK | os.X_OK):
        return (" (the store folder is read-only, and SQLite must write its -wal and -shm files beside the "
                "database even to read it; copy the store to a writable folder)")
    if path.exists() and not os.access(path, os.W_OK):
        return " (the database file is read-only; copy the store to a writable folder)"
    return ""


def set_journal_mode(conn: sqlite3.Connection, mode: str) -> None:
    """``PRAGMA journal_mode = mode``: WAL on a local disk; DELETE on a network filesystem, where
    WAL's shared memory does not work across hosts (shared.py decides which)."""
    # While another process switches a fresh database to WAL, this pragma fails with
    # "database is locked" at once, without waiting on busy_timeout; so wait here instead.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute(f"PRAGMA journal_mode = {'WAL' if mode == 'wal' else 'DELETE'}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(WAL_RETRY_SECONDS)


def as_uint8(name: str, values: np.ndarray) -> np.ndarray:
    """Class indices as a 1-D uint8 array; refuses values that would wrap."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{name} must be class indices in 0..255")
    return array.astype(np.uint8)


def metric(value: Any) -> float | None:
    # float() also turns numpy scalars, which sqlite3 cannot bind, into Python floats.
    return None if value is None else float(value)


def prediction_row(run_id: int, labels: np.ndarray | None,
                   predicted: np.ndarray | None) -> tuple[int, int, bytes, bytes] | None:
    """The predictions table's row for a run's test-set labels and predictions (None: neither given)."""
    if labels is None and predicted is None:
        return None
    if labels is None or predicted is None:
        raise ValueError("labels and predicted must be given together")
    labels8, predicted8 = as_uint8("labels", labels), as_uint8("predicted", predicted)
    if labels8.shape != predicted8.shape:
        raise ValueError(f"labels {labels8.shape} and predicted {predicted8.shape} "
                         "differ in length")
    return run_id, len(labels8), labels8.tobytes(), predicted8.tobytes()

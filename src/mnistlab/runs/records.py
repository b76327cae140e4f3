"""What the store hands out: experiment and run records, decoded from their rows without trusting them.

A row may have been edited by hand or damaged: a JSON column that is not JSON, or not the kind of
value it holds, is one line naming the store, the run and the field (never a crash in a reader).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, StoreError


@dataclass(frozen=True)
class ExperimentRecord:
    """One stored experiment; ``config`` is the decoded experiment config."""

    name: str
    config: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class RunRecord:
    """One stored run. Times are Unix seconds; JSON columns are decoded (None when unset)."""

    id: int
    experiment: str
    model_id: str
    spec: dict[str, Any]
    spec_hash: str
    seed: int
    dataset: str
    protocol: str
    epochs_planned: int
    status: str
    owner: str | None
    heartbeat_at: float | None
    device: str | None
    versions: dict[str, Any] | None
    started_at: float | None
    ended_at: float | None
    final: dict[str, Any] | None
    error: str | None
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        """Every field as plain data (``spec`` is what the run's identity hashes), for --json documents."""
        return asdict(self)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def spec_hash(spec: dict[str, Any]) -> str:
    """The identity of what was trained: sha256 of the spec's canonical JSON."""
    return hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()


def row_json(row: sqlite3.Row, column: str, kind: type, path: Path | str, what: str) -> Any:
    """A JSON column of a row (None stays None), or one line naming the row and the field when it
    was tampered with (not JSON, or not the kind of value the column holds): readers never crash."""
    text = row[column]
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        value = None
    if not isinstance(value, kind):
        raise StoreError(f"{path}: {what}: field '{column}' is damaged (not a JSON {'object' if kind is dict else 'list'}); "
                         "the store was edited or corrupted")
    return value


def run_record(row: sqlite3.Row, path: Path | str) -> RunRecord:
    return RunRecord(
        id=row["id"],
        experiment=row["experiment"],
        model_id=row["model_id"],
        spec=row_json(row, "spec_json", dict, path, f"run {row['id']}"),
        spec_hash=row["spec_hash"],
        seed=row["seed"],
        dataset=row["dataset"],
        protocol=row["protocol"],
        epochs_planned=row["epochs_planned"],
        status=row["status"],
        owner=row["owner"],
        heartbeat_at=row["heartbeat_at"],
        device=row["device"],
        versions=row_json(row, "versions_json", dict, path, f"run {row['id']}"),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        final=row_json(row, "final_json", dict, path, f"run {row['id']}"),
        error=row["error"],
        notes=row_json(row, "notes_json", list, path, f"run {row['id']}") or [],
    )


@dataclass(frozen=True)
class UserNote:
    """A note the user wrote on a run (`mnistlab note`); ``created_at`` in Unix seconds."""

    text: str
    created_at: float


TAG_MAX_LENGTH = 64
NOTE_MAX_LENGTH = 10_000


def check_tag(tag: str) -> str:
    """A tag as stored: 1 to TAG_MAX_LENGTH printable characters without spaces (so that `ls --tag`
    and `--where` can name it), or a one-line MnistlabError naming it."""
    if not isinstance(tag, str) or not tag or len(tag) > TAG_MAX_LENGTH or not tag.isprintable() \
            or any(char.isspace() for char in tag):
        raise MnistlabError(f"tag {tag!r}: a tag is 1 to {TAG_MAX_LENGTH} printable characters without spaces")
    return tag


def check_note(text: str) -> str:
    """A user note as stored: non-empty text of at most NOTE_MAX_LENGTH characters."""
    if not isinstance(text, str) or not text.strip() or len(text) > NOTE_MAX_LENGTH:
        raise MnistlabError(f"note: give 1 to {NOTE_MAX_LENGTH} characters of text")
    return text

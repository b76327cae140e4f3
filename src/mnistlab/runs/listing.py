"""`mnistlab ls`'s rows: one plain dict per run, the keys of `ls --json` and the fields `--where` names.

``FIELDS`` is the one home of those keys and their kinds; ``list_runs`` filters by experiment,
status and model in SQL (bound parameters), by tag and ``--where`` in Python (runs/where.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, StoreError, did_you_mean
from mnistlab.runs import schema
from mnistlab.runs.manage import opened
from mnistlab.runs.store import DEFAULT_ROOT, RunStore
from mnistlab.runs.where import compile_where
from mnistlab.training.history import STATUSES

__all__ = ["FIELDS", "environment_json", "list_runs"]

# key → kind ("number", "text" or "list"), in the order `ls --json` gives them.
FIELDS: dict[str, str] = {
    "id": "number", "experiment": "text", "model": "text", "seed": "number", "status": "text",
    "dataset": "text", "protocol": "text", "epochs": "number", "epochs_planned": "number",
    "val_acc": "number", "test_acc": "number", "test_loss": "number", "params": "number",
    "seconds_per_epoch": "number", "device": "text", "started_at": "number", "ended_at": "number",
    "tags": "list",
}
FROM_FINAL = ("test_acc", "test_loss", "params")  # read from the run's final metrics


def _value(kind: str, value: Any) -> Any:
    """A row's value as its field's kind says, so `--where` compares like with like: NaN and infinity
    (a diverged run's loss) as None (JSON has no such numbers), and a hand-edited final metric that is
    not a number as None."""
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return None
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _row(store: RunStore, columns: list[str], values: tuple[Any, ...], tags: dict[int, list[str]]) -> dict[str, Any]:
    raw = dict(zip(columns, values))
    try:
        final = json.loads(raw.pop("final_json") or "null") or {}
    except ValueError:
        final = None
    if not isinstance(final, dict):
        raise StoreError(f"{store.path}: run {raw['id']}: field 'final_json' is damaged (not a JSON object); "
                         "the store was edited or corrupted")
    row = {**raw, **{key: final.get(key) for key in FROM_FINAL}, "tags": tags.get(raw["id"], [])}
    return {key: _value(kind, row[key]) for key, kind in FIELDS.items()}


def list_runs(store: RunStore | str | Path = DEFAULT_ROOT, experiment: str | None = None, *,
              status: str | None = None, model: str | None = None, tag: str | None = None,
              where: str | None = None) -> list[dict[str, Any]]:
    """The runs `ls` lists, as `ls --json` gives them (keys: FIELDS), filtered: of `experiment`, in
    `status`, of `model`, carrying `tag`, and where the expression `where` holds (runs/where.py)."""
    if status is not None and status not in STATUSES:
        raise MnistlabError(f"--status '{status}': choose one of {', '.join(STATUSES)}{did_you_mean(status, STATUSES)}")
    holds = compile_where(where, FIELDS) if where is not None else None  # a bad expression before the store

    def work(run_store: RunStore) -> list[dict[str, Any]]:
        if experiment is not None and experiment not in {record.name for record in run_store.experiments()}:
            raise MnistlabError(f"{run_store.root}: no experiment '{experiment}' in this store; `mnistlab ls` lists them")
        columns, values = run_store.read_rows(schema.SQL_RUN_SUMMARIES,
                                              {"experiment": experiment, "status": status, "model": model})
        tags = run_store.all_tags()
        rows = [_row(run_store, columns, row, tags) for row in values]
        return [row for row in rows if (tag is None or tag in row["tags"]) and (holds is None or holds(row))]

    return opened(store, work)


def environment_json(store: RunStore, a: int, b: int) -> dict[str, Any]:
    """Whether runs ``a`` and ``b`` were produced in the same environment, as `compare --json` gives it:
    ``recorded`` (both have provenance) and ``differences`` (one phrase each, util.provenance)."""
    from mnistlab.util.provenance import environment_differences

    provenances = [store.provenance(a), store.provenance(b)]
    recorded = all(provenance is not None for provenance in provenances)
    return {"recorded": recorded, "differences": environment_differences(*provenances) if recorded else None}

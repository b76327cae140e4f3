"""Tests of the run store: identity, history, outcome, schema checks, claims, crashes,
two concurrent writer processes and a full disk."""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mnistlab
from mnistlab.errors import StoreError
from mnistlab.runs.schema import SCHEMA_VERSION
from mnistlab.runs.records import RunRecord, spec_hash
from mnistlab.runs.store import RunStore, current_owner

SPEC = {"layers": [{"type": "Dense", "units": 10}], "training": {"epochs": 3}}
SRC_DIR = str(Path(mnistlab.__file__).resolve().parents[1])


@pytest.fixture
def store(tmp_path: Path):
    with RunStore(tmp_path / "runs") as opened:
        opened.save_experiment("exp", {"models": ["mlp"]})
        yield opened


def make_run(store: RunStore, model_id: str = "mlp", seed: int = 0) -> RunRecord:
    return store.ensure_run("exp", model_id, SPEC, seed=seed, dataset="mnist",
                            protocol="keras-2.2", epochs_planned=3)


def python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``python -c code`` with mnistlab importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC_DIR, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- identity ----------------------------------------------------------------------------------


def test_spec_hash_ignores_key_order() -> None:
    assert spec_hash({"a": 1, "b": [1, 2]}) == spec_hash({"b": [1, 2], "a": 1})
    assert spec_hash({"a": 1}) != spec_hash({"a": 2})


def test_ensure_run_is_idempotent(store: RunStore) -> None:
    first = make_run(store)
    again = store.ensure_run("exp", "mlp", dict(reversed(SPEC.items())), seed=0, dataset="mnist",
                             protocol="keras-2.2", epochs_planned=3)
    other_seed = make_run(store, seed=1)
    assert again == first
    assert other_seed.id != first.id
    assert first.status == "pending" and first.spec == SPEC and first.spec_hash == spec_hash(SPEC)
    assert [run.id for run in store.runs()] == [first.id, other_seed.id]


def test_ensure_run_needs_a_saved_experiment(store: RunStore) -> None:
    with pytest.raises(StoreError, match="experiment 'nope' is not in the store"):
        store.ensure_run("nope", "mlp", SPEC, 0, "mnist", "keras-2.2", 3)


def test_save_experiment_upserts(store: RunStore) -> None:
    store.save_experiment("exp", {"models": ["mlp", "cnn"]})
    store.save_experiment("other", {})
    experiments = store.experiments()
    assert [e.name for e in experiments] == ["exp", "other"]
    assert experiments[0].config == {"models": ["mlp", "cnn"]}
    assert experiments[0].updated_at >= experiments[0].created_at


# -- history -----------------------------------------------------------------------------------


def test_record_epoch_replay_does_not_duplicate(store: RunStore) -> None:
    run = make_run(store)
    store.record_epoch(run.id, 1, {"loss": 0.9, "acc": 0.5})
    store.record_epoch(run.id, 2, {"loss": 0.5, "acc": 0.7, "val_loss": np.float32(0.25)})
    store.record_epoch(run.id, 2, {"loss": 0.4, "acc": 0.8, "val_loss": 0.5, "seconds": 1.5})
    history = store.history(run.id)
    assert history["epoch"] == [1, 2]
    assert history["loss"] == [0.9, 0.4]
    assert history["val_loss"][1] == 0.5 and history["seconds"][1] == 1.5
    assert math.isnan(history["val_acc"][0])  # never recorded


def test_record_epoch_rejects_unknown_metrics(store: RunStore) -> None:
    run = make_run(store)
    with pytest.raises(ValueError, match="lr"):
        store.record_epoch(run.id, 1, {"loss": 0.1, "lr": 0.01})


def test_truncate_epochs(store: RunStore) -> None:
    run = make_run(store)
    for epoch in range(1, 6):
        store.record_epoch(run.id, epoch, {"loss": 1.0 / epoch})
    store.truncate_epochs(run.id, 3)
    assert store.history(run.id)["epoch"] == [1, 2, 3]


def test_record_epoch_refreshes_the_heartbeat(store: RunStore) -> None:
    run = make_run(store)
    assert store.claim_run(run.id, current_owner())
    claimed_at = store.get_run(run.id).heartbeat_at
    time.sleep(0.01)
    store.record_epoch(run.id, 1, {"loss": 1.0})
    assert store.get_run(run.id).heartbeat_at > claimed_at


# -- outcome -----------------------------------------------------------------------------------


def test_finish_run_round_trip(store: RunStore) -> None:
    run = make_run(store)
    assert store.claim_run(run.id, current_owner())
    labels = np.arange(1000) % 10
    predicted = (labels + (np.arange(1000) % 7 == 0)) % 10
    store.finish_run(run.id, "completed", {"test_acc": 0.86, "test_loss": 0.4}, labels, predicted,
                     device="cpu", versions={"torch": "2.4.0"})
    done = store.get_run(run.id)
    assert done.status == "completed" and done.ended_at is not None
    assert done.final == {"test_acc": 0.86, "test_loss": 0.4}
    assert done.device == "cpu" and done.versions == {"torch": "2.4.0"}
    stored = store.predictions(run.id)
    assert stored is not None
    assert stored[0].dtype == np.uint8 and stored[1].dtype == np.uint8
    np.testing.assert_array_equal(stored[0], labels)
    np.testing.assert_array_equal(stored[1], predicted)


def test_finish_run_without_predictions(store: RunStore) -> None:
    run = make_run(store)
    store.claim_run(run.id, current_owner())
    store.finish_run(run.id, "diverged", {"loss": math.nan}, None, None, "cuda:0", {})
    assert store.get_run(run.id).status == "diverged"
    assert math.isnan(store.get_run(run.id).final["loss"])
    assert store.predictions(run.id) is None


def test_finish_run_requires_a_claim(store: RunStore) -> None:
    run = make_run(store)
    with pytest.raises(StoreError, match="is pending, not running"):
        store.finish_run(run.id, "completed", {}, None, None, "cpu", {})


def test_fail_run_allows_a_new_claim_but_keeps_finished_runs(store: RunStore) -> None:
    failing, finished = make_run(store, seed=0), make_run(store, seed=1)
    for run in (failing, finished):
        store.claim_run(run.id, current_owner())
    store.fail_run(failing.id, "RuntimeError: out of memory")
    store.finish_run(finished.id, "completed", {}, None, None, "cpu", {})
    store.fail_run(finished.id, "report failed")
    assert store.get_run(failing.id).status == "failed"
    assert store.get_run(failing.id).error == "RuntimeError: out of memory"
    assert store.get_run(finished.id).status == "completed"
    assert store.claim_run(failing.id, "elsewhere:1")


# -- queries and artifacts ---------------------------------------------------------------------


def test_queries(store: RunStore) -> None:
    mlp, cnn = make_run(store, "mlp"), make_run(store, "cnn")
    store.claim_run(cnn.id, current_owner())
    assert [r.id for r in store.runs(experiment="exp")] == [mlp.id, cnn.id]
    assert [r.id for r in store.runs(status="running")] == [cnn.id]
    assert store.runs(experiment="missing") == []
    assert [r.id for r in store.find_runs(str(cnn.id))] == [cnn.id]
    assert [r.id for r in store.find_runs("exp/ml")] == [mlp.id]
    assert [r.id for r in store.find_runs(mlp.spec_hash[:8])] == [mlp.id, cnn.id]
    assert store.find_runs("999") == [] and store.find_runs(" ") == []
    with pytest.raises(StoreError, match="no run with id 999"):
        store.get_run(999)
    with pytest.raises(StoreError, match="unknown run status 'done'"):
        store.runs(status="done")


def test_run_dir(store: RunStore, tmp_path: Path) -> None:
    run = make_run(store)
    folder = store.run_dir(run.id)
    assert folder == tmp_path / "runs" / "artifacts" / str(run.id) and folder.is_dir()
    assert store.run_dir(run.id) == folder


# -- opening -----------------------------------------------------------------------------------


def test_newer_schema_is_rejected(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    conn.close()
    with pytest.raises(StoreError) as caught:
        RunStore(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'store.sqlite'}: store schema version {SCHEMA_VERSION + 1} is newer than "
        f"this mnistlab supports ({SCHEMA_VERSION}); upgrade mnistlab"
    )


def test_corrupt_database_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").write_bytes(b"this is not sqlite\n" * 300)
    with pytest.raises(StoreError, match=r"store\.sqlite: file is not a database"):
        RunStore(tmp_path)


def test_foreign_database_is_rejected(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="not an mnistlab run store"):
        RunStore(tmp_path)


def test_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("")
    with pytest.raises(StoreError, match="is a file"):
        RunStore(tmp_path / "runs")


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    with RunStore(tmp_path) as first:
        first.save_experiment("exp", {})
        run_id = make_run(first).id
    with RunStore(tmp_path) as second:
        assert second.get_run(run_id).model_id == "mlp"


# -- claims ------------------------------------------------------------------------------------


def test_second_owner_is_refused_while_the_first_is_alive(store: RunStore) -> None:
    run = make_run(store)
    me = current_owner()
    assert store.claim_run(run.id, me)
    assert not store.claim_run(run.id, f"{socket.gethostname()}:{dead_pid()}")
    assert not store.claim_run(run.id, "elsewhere:1")
    assert store.claim_run(run.id, me)  # a claim is re-entrant for its owner
    assert store.get_run(run.id).owner == me


def test_claim_of_a_dead_owner_is_taken_over(store: RunStore) -> None:
    run = make_run(store)
    dead = f"{socket.gethostname()}:{dead_pid()}"
    assert store.claim_run(run.id, dead)
    assert store.claim_run(run.id, current_owner())
    assert store.get_run(run.id).owner == current_owner()
    assert not store.heartbeat(run.id, dead)
    assert store.heartbeat(run.id, current_owner())


def test_claim_on_another_host_expires_with_its_lease(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        store.save_experiment("exp", {})
        run = make_run(store)
        assert store.claim_run(run.id, "elsewhere:1")
        assert not store.claim_run(run.id, current_owner())
    with RunStore(tmp_path, lease_seconds=0) as impatient:
        assert impatient.claim_run(run.id, current_owner())


def test_finished_runs_cannot_be_claimed(store: RunStore) -> None:
    run = make_run(store)
    store.claim_run(run.id, current_owner())
    store.finish_run(run.id, "completed", {}, None, None, "cpu", {})
    assert not store.claim_run(run.id, current_owner())


# -- crashes and concurrency -------------------------------------------------------------------

SIGKILLED_TRAINER = r"""
import os, signal, sys
from mnistlab.runs.store import RunStore, current_owner
store = RunStore(sys.argv[1])
run_id = int(sys.argv[2])
assert store.claim_run(run_id, current_owner())
store.record_epoch(run_id, 1, {"loss": 1.0})
with store._write() as conn:  # die in the middle of a transaction
    conn.execute("DELETE FROM epochs")
    conn.execute("UPDATE runs SET status = 'completed'")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_mid_transaction_leaves_a_consistent_store(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        store.save_experiment("exp", {})
        run_id = make_run(store).id
    proc = python(SIGKILLED_TRAINER, str(tmp_path), str(run_id))
    proc.communicate(timeout=30)
    assert proc.returncode == -9
    with RunStore(tmp_path) as store:
        run = store.get_run(run_id)
        assert run.status == "running" and run.owner.endswith(f":{proc.pid}")
        assert store.history(run_id)["epoch"] == [1]
        assert store.claim_run(run_id, current_owner())  # the dead trainer's run is picked up


CONCURRENT_TRAINER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from mnistlab.runs.store import RunStore, current_owner
root, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
owner, trained = current_owner(), []
labels = np.arange(100) % 10
with RunStore(root) as store:  # both processes create the fresh store at once
    store.save_experiment("exp", {"runs": 20})
    for i in range(20):
        run = store.ensure_run("exp", f"model-{i}", {"i": i}, 0, "mnist", "keras-2.2", 3)
        if not store.claim_run(run.id, owner):
            continue
        for epoch in range(1, 4):
            time.sleep(0.005)  # "training", so that the other process claims runs meanwhile
            store.record_epoch(run.id, epoch, {"loss": 1.0 / epoch, "acc": 0.3 * epoch})
            store.heartbeat(run.id, owner)
        store.finish_run(run.id, "completed", {"test_acc": 0.9}, labels, labels, "cpu", {})
        trained.append(run.id)
print(json.dumps(trained))
"""


def test_two_processes_share_a_store(tmp_path: Path) -> None:
    root, go = tmp_path / "runs", tmp_path / "go"
    procs = [python(CONCURRENT_TRAINER, str(root), str(go)) for _ in range(2)]
    go.touch()
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr
        assert "locked" not in stderr
    trained = [set(json.loads(stdout)) for stdout, _ in results]
    assert not trained[0] & trained[1], "a run was trained by both processes"
    with RunStore(root) as store:
        runs = store.runs()
        assert len(runs) == 20
        assert sorted(r.model_id for r in runs) == sorted(f"model-{i}" for i in range(20))
        assert trained[0] | trained[1] == {r.id for r in runs}
        for run in runs:
            assert run.status == "completed" and run.final == {"test_acc": 0.9}
            assert store.history(run.id)["epoch"] == [1, 2, 3]
            assert store.predictions(run.id) is not None


# -- environment failures ----------------------------------------------------------------------


def test_full_disk_raises_store_error_and_keeps_the_store(store: RunStore) -> None:
    run = make_run(store)
    store.claim_run(run.id, current_owner())
    store.record_epoch(run.id, 1, {"loss": 1.0})
    # Cap the database at its current size, so the next growth fails as a full disk would.
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    labels = np.arange(200_000) % 10
    with pytest.raises(StoreError) as caught:
        store.finish_run(run.id, "completed", {}, labels, labels, "cpu", {})
    message = str(caught.value)
    assert message.startswith(f"{store.path}: database or disk is full")
    assert "rolled back" in message and "\n" not in message
    assert store.get_run(run.id).status == "running"
    assert store.predictions(run.id) is None
    assert store.history(run.id)["epoch"] == [1]


def test_readonly_store_raises_store_error(store: RunStore) -> None:
    run = make_run(store)
    store._conn.execute("PRAGMA query_only = ON")  # SQLite's read-only refusal, even for root
    with pytest.raises(StoreError, match=r"store\.sqlite: attempt to write a readonly database"):
        store.record_epoch(run.id, 1, {"loss": 1.0})
    assert store.history(run.id)["epoch"] == []


# --- schema migrations ----------------------------------------------------------------------------

# The version-1 schema as mnistlab 0.1 wrote it: a fixture of an old store, not the code under test.
V1_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE experiments (name TEXT PRIMARY KEY, config_json TEXT NOT NULL, created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL)",
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, experiment TEXT NOT NULL REFERENCES experiments(name),"
    " model_id TEXT NOT NULL, spec_json TEXT NOT NULL, spec_hash TEXT NOT NULL, seed INTEGER NOT NULL,"
    " dataset TEXT NOT NULL, protocol TEXT NOT NULL, epochs_planned INTEGER NOT NULL,"
    " status TEXT NOT NULL DEFAULT 'pending', owner TEXT, heartbeat_at REAL, device TEXT, versions_json TEXT,"
    " started_at REAL, ended_at REAL, final_json TEXT, error TEXT,"
    " UNIQUE (experiment, model_id, spec_hash, seed, dataset, protocol))",
    "CREATE TABLE epochs (run_id INTEGER NOT NULL REFERENCES runs(id), epoch INTEGER NOT NULL, loss REAL, acc REAL,"
    " val_loss REAL, val_acc REAL, seconds REAL, PRIMARY KEY (run_id, epoch))",
    "CREATE TABLE predictions (run_id INTEGER PRIMARY KEY REFERENCES runs(id), n INTEGER NOT NULL,"
    " labels BLOB NOT NULL, predicted BLOB NOT NULL)",
    "INSERT INTO meta VALUES ('schema_version', '1')",
    "INSERT INTO experiments VALUES ('old', '{}', 0, 0)",
    "INSERT INTO runs (experiment, model_id, spec_json, spec_hash, seed, dataset, protocol, epochs_planned, status)"
    " VALUES ('old', 'm', '{}', 'h', 0, 'mnist', 'split', 2, 'completed')",
    "INSERT INTO epochs VALUES (1, 1, 0.5, 0.8, 0.4, 0.85, 1.5)",
)


def old_store(folder, statements: tuple[str, ...]):
    """A store folder whose database an older mnistlab wrote (the statements are its fixture)."""
    folder.mkdir()
    with sqlite3.connect(folder / "store.sqlite") as conn:
        for statement in statements:
            conn.execute(statement)
    return folder


def test_a_version_1_store_is_migrated_and_keeps_its_runs(tmp_path):
    with RunStore(old_store(tmp_path / "old", V1_SCHEMA)) as store:
        (run,) = store.runs("old")
        assert run.status == "completed" and run.notes == []
        history = store.history(run.id)
        assert history["val_acc"] == [0.85] and math.isnan(history["train_eval_acc"][0])
        store.add_note(run.id, "checkpoint moved aside")
        store.record_epoch(run.id, 2, {"loss": 0.3, "train_eval_acc": 0.9})
        assert store.get_run(run.id).notes == ["checkpoint moved aside"]
        assert store.history(run.id)["train_eval_acc"][1] == 0.9
    with sqlite3.connect(tmp_path / "old" / "store.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)


# The version-2 schema as mnistlab wrote it before tags, notes, provenance and removals: a fixture of an
# old store (copied from runs/schema.py at version 2), not the code under test.
V2_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE experiments (name TEXT PRIMARY KEY, config_json TEXT NOT NULL, created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL)",
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, experiment TEXT NOT NULL REFERENCES experiments(name),"
    " model_id TEXT NOT NULL, spec_json TEXT NOT NULL, spec_hash TEXT NOT NULL, seed INTEGER NOT NULL,"
    " dataset TEXT NOT NULL, protocol TEXT NOT NULL, epochs_planned INTEGER NOT NULL,"
    " status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'diverged',"
    " 'failed')), owner TEXT, heartbeat_at REAL, device TEXT, versions_json TEXT, started_at REAL, ended_at REAL,"
    " final_json TEXT, error TEXT, notes_json TEXT, UNIQUE (experiment, model_id, spec_hash, seed, dataset, protocol))",
    "CREATE TABLE epochs (run_id INTEGER NOT NULL REFERENCES runs(id), epoch INTEGER NOT NULL, loss REAL, acc REAL,"
    " val_loss REAL, val_acc REAL, seconds REAL, train_eval_loss REAL, train_eval_acc REAL,"
    " PRIMARY KEY (run_id, epoch))",
    "CREATE TABLE predictions (run_id INTEGER PRIMARY KEY REFERENCES runs(id), n INTEGER NOT NULL,"
    " labels BLOB NOT NULL, predicted BLOB NOT NULL)",
    "INSERT INTO meta VALUES ('schema_version', '2')",
    "INSERT INTO experiments VALUES ('old', '{}', 0, 0)",
    "INSERT INTO runs (experiment, model_id, spec_json, spec_hash, seed, dataset, protocol, epochs_planned, status,"
    " notes_json) VALUES ('old', 'm', '{}', 'h', 0, 'mnist', 'split', 2, 'completed', '[\"moved aside\"]')",
    "INSERT INTO epochs VALUES (1, 1, 0.5, 0.8, 0.4, 0.85, 1.5, NULL, NULL)",
)


def test_a_version_2_store_is_migrated_keeps_its_runs_and_has_no_provenance(tmp_path):
    with RunStore(old_store(tmp_path / "old", V2_SCHEMA)) as store:
        (run,) = store.runs("old")
        assert run.status == "completed" and run.notes == ["moved aside"]
        assert store.history(run.id)["val_acc"] == [0.85]
        assert store.provenance(run.id) is None and store.tags(run.id) == [] and store.user_notes(run.id) == []
        assert store.add_tags(run.id, ["baseline"]) == ["baseline"]
        store.add_user_note(run.id, "the first try")
        assert [note.text for note in store.user_notes(run.id)] == ["the first try"]
    with sqlite3.connect(tmp_path / "old" / "store.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION) == "3"


def test_a_failing_migration_leaves_the_old_version_whole(tmp_path, monkeypatch):
    """All steps run in one transaction: a step that fails rolls back every earlier one."""
    from mnistlab.runs import schema

    old_store(tmp_path / "old", V1_SCHEMA)

    def broken(conn):
        conn.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setitem(schema.MIGRATIONS, 2, broken)
    with pytest.raises(StoreError, match="disk I/O error"):
        RunStore(tmp_path / "old")
    with sqlite3.connect(tmp_path / "old" / "store.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta").fetchone()[0] == "1"
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        assert "notes_json" not in columns  # step 1 → 2 was rolled back with the failing 2 → 3
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0

"""Run management: tags and user notes; rm (crash-safe under SIGKILL at random moments, refusing live runs);
gc (frees exactly what its dry run listed); ls filters and --where (every accepted expression selects what a
Python filter over `ls --json` selects; injection attempts are one-line errors)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_driver import SRC, run_cli
from mnistlab import api
from mnistlab.errors import MnistlabError
from mnistlab.runs.manage import GC_ASIDE_PREFIX, remove_runs
from mnistlab.runs.store import ARTIFACTS_DIR, RunStore, current_owner
from test_report import GOOD_HISTORY, MID_HISTORY, add_run

LABELS = (np.arange(100) % 10).astype(np.uint8)


def varied_store(root: Path) -> Path:
    """Two experiments; runs completed, diverged, failed, pending and running; tags on some."""
    with RunStore(root) as store:
        store.save_experiment("alpha", {"name": "alpha"})
        store.save_experiment("beta", {"name": "beta"})
        add_run(store, "alpha", "cnn", "a CNN", None, 0, "completed", 1, GOOD_HISTORY, LABELS)  # test acc 0.99
        add_run(store, "alpha", "cnn", "a CNN", None, 1, "completed", 3, GOOD_HISTORY, LABELS)  # 0.97
        add_run(store, "alpha", "mlp", "an MLP", None, 0, "diverged", 8, MID_HISTORY, LABELS)  # 0.92
        add_run(store, "beta", "mlp", "an MLP", None, 0, "completed", 5, MID_HISTORY, LABELS)  # 0.95
        failed = store.ensure_run("beta", "cnn", {"model": {"id": "cnn"}}, 0, "synthetic", "split", 4)
        store.claim_run(failed.id, "test:1")
        store.fail_run(failed.id, "boom")
        store.ensure_run("beta", "cnn", {"model": {"id": "cnn"}}, 1, "synthetic", "test", 4)  # pending
        running = store.ensure_run("beta", "big", {"model": {"id": "big"}}, 0, "synthetic", "split", 12)
        store.claim_run(running.id, "elsewhere:1")
        store.add_tags(1, ["baseline", "best"])
        store.add_tags(4, ["baseline"])
    return root


# -- tags and notes ------------------------------------------------------------------------------


def test_tags_and_user_notes_through_the_cli_and_show(tmp_path):
    root = varied_store(tmp_path / "store")
    assert run_cli("tag", "2", "keep", "v1", "--store", root).stdout.strip() == "run 2: tags keep, v1"
    assert run_cli("tag", "2", "keep", "--store", root).stdout.strip() == "run 2: tags keep, v1"  # once only
    assert run_cli("untag", "2", "v1", "--store", root).stdout.strip() == "run 2: tags keep"
    assert run_cli("note", "2", "retrain with [bold]more[/bold] epochs", "--store", root).exit_code == 0
    with RunStore(root) as store:
        store.add_note(2, "damaged checkpoint moved to checkpoint.damaged-1")  # the system's own note
    shown = " ".join(run_cli("show", "2", "--store", root).stdout.split())
    assert "tags keep" in shown and "- damaged checkpoint moved to checkpoint.damaged-1" in shown
    assert "retrain with [bold]more[/bold] epochs" in shown  # text, never markup
    assert api.tag("2", ["x"], root) == ["keep", "x"] and api.untag(2, ["x"], root) == ["keep"]
    assert api.note(2, "second", root).text == "second"
    with RunStore(root) as store:
        assert [note.text for note in store.user_notes(2)] == ["retrain with [bold]more[/bold] epochs", "second"]


@pytest.mark.parametrize(("args", "words"), [
    (["tag", "2", "has space"], ["tag 'has space'", "without spaces"]),
    (["tag", "2", ""], ["tag ''"]),
    (["untag", "2", "never-there"], ["run 2 has no tag 'never-there'"]),
    (["note", "2", "   "], ["note: give 1 to"]),
    (["tag", "999", "x"], ["no run match '999'"]),
])
def test_bad_tags_and_notes_are_one_line_and_write_nothing(tmp_path, args, words):
    root = varied_store(tmp_path / "store")
    result = run_cli(*args, "--store", root)
    assert result.exit_code == 2 and len(result.error_lines) == 1, result
    assert all(word in result.error_lines[0] for word in words), result.error_lines
    with RunStore(root) as store:
        assert store.tags(2) == [] and store.user_notes(2) == []


# -- rm ------------------------------------------------------------------------------------------


def artifacts(root: Path, run_id: int, files: int = 0) -> Path:
    folder = root / ARTIFACTS_DIR / str(run_id)
    for index in range(files):
        (folder / "checkpoint").mkdir(parents=True, exist_ok=True)
        (folder / "checkpoint" / f"part-{index}.bin").write_bytes(b"x" * 100)
    return folder


def test_rm_removes_rows_and_artifacts_and_never_reuses_an_id(tmp_path):
    root = varied_store(tmp_path / "store")
    folder = artifacts(root, 4, files=3)
    result = run_cli("rm", "4", "--store", root)
    assert result.exit_code == 0 and "removed 1 run(s): 4 (beta/mlp, seed 0)" in result.stdout
    assert not folder.exists()
    with RunStore(root) as store:
        assert 4 not in store.run_ids() and store.pending_removals() == []
        assert store.history(1)["epoch"] and store.tags(1) == ["baseline", "best"]  # others untouched
    with RunStore(root, lease_seconds=0) as store:  # run 7's claim (another host) has expired
        store.remove_runs([7])  # the highest id: a new run must still not get 7 again
        fresh = store.ensure_run("alpha", "new", {"n": 1}, 0, "synthetic", "split", 1)
        assert fresh.id == 8
    assert "already removed: run 4" in run_cli("rm", "4", "--store", root).stdout  # a rerun: done already


def test_rm_experiment_removes_its_runs_and_its_row(tmp_path):
    root = varied_store(tmp_path / "store")
    folders = [artifacts(root, run_id, files=2) for run_id in (1, 2, 3)]
    done = api.remove_runs(experiment="alpha", store=root)
    assert [record.id for record in done.removed] == [1, 2, 3] and not any(f.exists() for f in folders)
    with RunStore(root) as store:
        assert [record.name for record in store.experiments()] == ["beta"]
        assert {run.experiment for run in store.runs()} == {"beta"}
    assert "already removed: runs 1, 2, 3 (experiment alpha)" in run_cli("rm", "--experiment", "alpha", "--store", root).stdout
    bad = run_cli("rm", "--experiment", "gamma", "--store", root)
    assert bad.exit_code == 2 and "no experiment 'gamma'" in bad.error_lines[0]


def test_rm_refuses_a_run_a_live_process_trains_and_removes_nothing(tmp_path):
    root = varied_store(tmp_path / "store")
    with RunStore(root) as store:
        store.claim_run(6, current_owner())  # this process: alive, heartbeat fresh
    folder = artifacts(root, 6, files=1)
    result = run_cli("rm", "4", "6", "--store", root)
    assert result.exit_code == 2 and len(result.error_lines) == 1
    assert "run 6 is being trained by a live process" in result.error_lines[0]
    with RunStore(root) as store:
        assert {4, 6} <= store.run_ids() and folder.exists()
        # A claim whose owner died (or whose lease expired) is no live training: removable.
        store.claim_run(7, "elsewhere:1")
    with RunStore(root, lease_seconds=0) as impatient:
        assert [record.id for record in remove_runs([7], store=impatient).removed] == [7]


KILLED_RM = r"""
import os, signal, sys
from mnistlab.runs.manage import remove_runs
kill_at = int(sys.argv[2])
if kill_at > 0:  # die at the kill_at-th file deleted, deterministically mid-removal
    real_unlink, count = os.unlink, [0]
    def unlink(*args, **kwargs):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_unlink(*args, **kwargs)
    os.unlink = unlink
print("ready", flush=True)
remove_runs(sys.argv[3:], store=sys.argv[1])
"""


def test_rm_killed_at_random_moments_leaves_no_half_removed_run_and_a_rerun_finishes(tmp_path):
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)  # printed on failure, so a failing moment can be replayed
    files = 25
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for attempt in range(6):
        root = varied_store(tmp_path / f"store-{attempt}")
        targets = [1, 2, 4]
        for run_id in targets:
            artifacts(root, run_id, files=files)
        kill_at = rng.randint(1, files * len(targets)) if attempt % 2 == 0 else 0
        child = subprocess.Popen([sys.executable, "-c", KILLED_RM, str(root), str(kill_at), *map(str, targets)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        if kill_at == 0:  # at a random time instead
            time.sleep(rng.uniform(0, 0.05))
            child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        where = f"(seed {seed}, attempt {attempt}, kill_at {kill_at})"
        with RunStore(root) as store:
            present, pending = store.run_ids(), {run_id for run_id, _ in store.pending_removals()}
            for run_id in targets:
                folder = root / ARTIFACTS_DIR / str(run_id)
                if run_id in present:  # fully present: its row and every one of its files
                    assert len(list((folder / "checkpoint").iterdir())) == files, where
                    assert store.history(run_id)["epoch"], where
                else:  # fully gone for every reader; what is left of its folder is recorded to delete
                    assert run_id in pending or not folder.exists(), where
            assert store.run_ids() >= {3, 5, 6, 7}, where  # runs not named are never touched
        rerun = remove_runs(targets, store=root)
        assert sorted([r.id for r in rerun.removed] + rerun.already) == targets, where
        with RunStore(root) as store:
            assert not (set(targets) & store.run_ids()) and store.pending_removals() == [], where
        assert not any((root / ARTIFACTS_DIR / str(run_id)).exists() for run_id in targets), where


# -- gc ------------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*") if path.is_file()}


def test_gc_frees_exactly_what_its_dry_run_listed(tmp_path):
    root = varied_store(tmp_path / "store")
    artifacts(root, 1, files=2)
    (root / ARTIFACTS_DIR / "1" / "checkpoint.damaged-1").mkdir()
    (root / ARTIFACTS_DIR / "1" / "checkpoint.damaged-1" / "state.pt").write_bytes(b"d" * 300)
    artifacts(root, 42, files=3)  # no such run: an orphan
    (root / ARTIFACTS_DIR / f"{GC_ASIDE_PREFIX}99-0").mkdir()  # left by a killed gc
    with RunStore(root) as store:
        store.claim_run(6, current_owner())  # live: its damaged checkpoint must stay
    (root / ARTIFACTS_DIR / "6" / "checkpoint.damaged-1").mkdir(parents=True)
    (root / ARTIFACTS_DIR / "6" / "checkpoint.damaged-1" / "state.pt").write_bytes(b"k" * 50)
    reports = root / "reports"
    (reports / "gone-files").mkdir(parents=True)
    for name, size in (("gone.html", 70), ("gone.md", 30), ("gone-files/curve.png", 20), ("alpha.html", 10),
                       (".gone.html.abc.part", 5)):
        (reports / name).write_bytes(b"r" * size)
    before = tree(root)
    dry = run_cli("gc", "--store", root)
    assert dry.exit_code == 0 and "can be freed; run again with --yes" in dry.stdout
    assert tree(root) == before  # a dry run deletes nothing
    listed = api.gc(root)
    assert {str(item.path.relative_to(root)) for item in listed} == {
        "artifacts/1/checkpoint.damaged-1", "artifacts/42", f"artifacts/{GC_ASIDE_PREFIX}99-0",
        "reports/gone.html", "reports/gone.md", "reports/gone-files"}
    freed = api.gc(root, yes=True)
    assert [(item.path, item.bytes) for item in freed] == [(item.path, item.bytes) for item in listed]
    after = tree(root)
    gone = {name: size for name, size in before.items() if name not in after}
    assert sum(gone.values()) == sum(item.bytes for item in listed) == 300 + 300 + 70 + 30 + 20
    assert set(after) == set(before) - set(gone)  # nothing else changed
    assert "artifacts/6/checkpoint.damaged-1/state.pt" in after and "reports/alpha.html" in after
    assert "reports/.gone.html.abc.part" in after  # a write in progress is never touched
    assert api.gc(root) == []


def test_gc_finishes_a_removal_a_kill_interrupted(tmp_path):
    root = varied_store(tmp_path / "store")
    folder = artifacts(root, 4, files=2)
    with RunStore(root) as store:
        store.remove_runs([4])  # the rows went, then (say) a SIGKILL before the folder did
        listed = api.gc(store)
        assert [(item.path, item.reason) for item in listed] == [(folder, "removed run (its removal was interrupted)")]
        assert api.gc(store, yes=True) == listed and not folder.exists() and store.pending_removals() == []


# -- ls filters and --where ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed_store(tmp_path_factory):
    root = varied_store(tmp_path_factory.mktemp("ls") / "store")
    result = run_cli("ls", "--json", "--store", root)
    assert result.exit_code == 0, result
    document = json.loads(result.stdout)
    assert document["format"] == 1 and len(document["runs"]) == 7
    return root, document["runs"]


# (expression, the same question asked in Python of an `ls --json` row)
WHERE_CASES = [
    ("test_acc > 0.96", lambda r: r["test_acc"] is not None and r["test_acc"] > 0.96),
    ("test_acc > 0.96 and epochs >= 4", lambda r: r["test_acc"] is not None and r["test_acc"] > 0.96 and r["epochs"] >= 4),
    ("status == 'completed'", lambda r: r["status"] == "completed"),
    ('status = "failed" or status == "pending"', lambda r: r["status"] in ("failed", "pending")),
    ("not status == 'completed'", lambda r: r["status"] != "completed"),
    ("status != 'completed' and model == 'cnn'", lambda r: r["status"] != "completed" and r["model"] == "cnn"),
    ("(model == 'cnn' or model == 'big') and seed == 0", lambda r: r["model"] in ("cnn", "big") and r["seed"] == 0),
    ("model == 'cnn' or model == 'big' and seed == 0", lambda r: r["model"] == "cnn" or (r["model"] == "big" and r["seed"] == 0)),
    ("test_acc == null", lambda r: r["test_acc"] is None),
    ("test_acc != null and test_acc < 0.96", lambda r: r["test_acc"] is not None and r["test_acc"] < 0.96),
    ("tags == 'baseline'", lambda r: "baseline" in r["tags"]),
    ("tags != 'baseline' AND experiment == 'alpha'", lambda r: "baseline" not in r["tags"] and r["experiment"] == "alpha"),
    ("epochs_planned >= 12", lambda r: r["epochs_planned"] >= 12),
    ("protocol == 'test' or test_loss > 0.1", lambda r: r["protocol"] == "test" or (r["test_loss"] is not None and r["test_loss"] > 0.1)),
    ("id <= 3 and not (seed == 1)", lambda r: r["id"] <= 3 and r["seed"] != 1),
    ("test_acc >= 9.5e-1", lambda r: r["test_acc"] is not None and r["test_acc"] >= 0.95),
]


@pytest.mark.parametrize(("expression", "question"), WHERE_CASES, ids=[case for case, _ in WHERE_CASES])
def test_where_selects_what_a_python_filter_over_ls_json_selects(listed_store, expression, question):
    root, rows = listed_store
    expected = [row["id"] for row in rows if question(row)]
    assert 0 < len(expected) < len(rows), "each case must tell runs apart"
    result = run_cli("ls", "--json", "--where", expression, "--store", root)
    assert result.exit_code == 0, result
    assert [row["id"] for row in json.loads(result.stdout)["runs"]] == expected
    assert [row["id"] for row in api.list_runs(root, where=expression)] == expected


def test_ls_status_model_tag_and_experiment_filters(listed_store):
    root, rows = listed_store
    cases = [(["--status", "completed"], lambda r: r["status"] == "completed"),
             (["--model", "cnn"], lambda r: r["model"] == "cnn"),
             (["--tag", "baseline"], lambda r: "baseline" in r["tags"]),
             (["beta", "--status", "completed"], lambda r: r["experiment"] == "beta" and r["status"] == "completed"),
             (["--model", "cnn", "--where", "seed == 1"], lambda r: r["model"] == "cnn" and r["seed"] == 1)]
    for args, question in cases:
        result = run_cli("ls", *args, "--json", "--store", root)
        assert [row["id"] for row in json.loads(result.stdout)["runs"]] == [r["id"] for r in rows if question(r)], args
    table = run_cli("ls", "--tag", "best", "--store", root)
    assert table.exit_code == 0 and "matching the filters (1)" in table.stdout


INJECTIONS = [
    "1=1; DROP TABLE runs",
    "status == 'completed'; DROP TABLE runs",
    "status == 'completed' -- comment",
    "status == 'x' /* comment */",
    "status == 'unterminated",
    "status == completed",
    "test_acc > 0.9 or 1=1",
    "runs.status == 'x'",
    "status == 'x' union select * from runs",
    "test_acc > '0.9'",
    "status > 1",
    "",
    "(status == 'x'",
    "status == 'x')",
    "no_such_field > 1",
    "tags > 'a'",
    "(" * 60 + "seed == 0" + ")" * 60,
]


@pytest.mark.parametrize("expression", INJECTIONS)
def test_where_refuses_injection_and_nonsense_with_one_line(listed_store, expression):
    root, _ = listed_store
    before = (root / "store.sqlite").read_bytes()
    result = run_cli("ls", "--where", expression, "--store", root)
    assert result.exit_code == 2, result
    assert len(result.error_lines) == 1 and result.error_lines[0].startswith("error: --where: ")
    assert "Traceback" not in result.stderr
    with RunStore(root) as store:
        assert len(store.runs()) == 7
    assert (root / "store.sqlite").read_bytes() == before


def test_where_names_the_field_and_the_column():
    with pytest.raises(MnistlabError, match=r"unknown field 'test_ac' at column 1 \(did you mean 'test_acc'\?\)"):
        api.list_runs("unused", where="test_ac > 1")
    with pytest.raises(MnistlabError, match="';' at column 4"):
        api.list_runs("unused", where="1=1; DROP TABLE runs")


def test_the_readers_and_writers_an_importer_uses_carry_given_values(tmp_path):
    """Archives (another issue) carry tags, user notes and provenance: the store takes them with their
    original times and gives them back, per run and in batch."""
    root = varied_store(tmp_path / "store")
    with RunStore(root) as store:
        store.add_tags(3, ["imported"], created_at=1000.0)
        note = store.add_user_note(3, "from the archive", created_at=2000.0)
        store.set_provenance(3, {"format": 1, "command": {"entry": "cli", "command": "mnistlab run x"}})
        assert note.created_at == 2000.0 and store.user_notes(3) == [note]
        assert store.all_tags() == {1: ["baseline", "best"], 3: ["imported"], 4: ["baseline"]}
        assert store.all_user_notes() == {3: [note]}
        assert store.all_provenance() == {3: {"format": 1, "command": {"entry": "cli", "command": "mnistlab run x"}}}
        assert store.provenance(3)["command"]["command"] == "mnistlab run x" and store.provenance(2) is None
        with pytest.raises(MnistlabError, match="no run with id 99"):
            store.set_provenance(99, {})
        store._conn.execute("UPDATE run_provenance SET provenance_json = 'not json' WHERE run_id = 3")
        with pytest.raises(MnistlabError, match="run 3: field 'provenance_json' is damaged"):
            store.provenance(3)


def test_ls_json_holds_no_nan_and_hand_edited_metrics_compare_as_missing(tmp_path):
    root = varied_store(tmp_path / "store")
    with RunStore(root) as store:
        store._conn.execute("""UPDATE runs SET final_json = '{"test_acc": "high", "test_loss": NaN}' WHERE id = 3""")
    result = run_cli("ls", "--json", "--where", "test_acc > 0.5 or test_loss == null", "--store", root)
    assert result.exit_code == 0, result
    row = next(row for row in json.loads(result.stdout)["runs"] if row["id"] == 3)
    assert row["test_acc"] is None and row["test_loss"] is None

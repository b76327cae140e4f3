"""Run archives: export → import reproduces the store's report, idempotent, atomic, and tampered archives refused."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pytest

from rich.console import Console

from cli_driver import run_cli
from mnistlab.cli.views import run_panel
from mnistlab import api
from mnistlab.errors import MnistlabError
from mnistlab.report.artifacts import load_weights
from mnistlab.report.content import COLUMNS, build_report, experiment_conclusions, table_rows
from mnistlab.report.frame import comparison_table
from mnistlab.report.reproduction import reproduction_table
from mnistlab.runs.archive import import_archive
from mnistlab.runs.archive_format import MAX_PROVENANCE_DEPTH, ArchiveError, read_archive
from mnistlab.runs.records import NOTE_MAX_LENGTH, UserNote
from mnistlab.runs.store import RunStore
from mnistlab.trained.folder import WEIGHTS_ELSEWHERE
from mnistlab.zoo import get_model

EXPERIMENT = "travel"
TEST_IMAGES = 1000
LABELS = (np.arange(TEST_IMAGES) % 10).astype(np.uint8)
MACHINE_A, MACHINE_B = "CPU A, 2 usable of 2 CPUs", "GPU B"
# model, seed, status, test errors (of 1000), machine
RUNS = [("s004-m1", 0, "completed", 20, MACHINE_A), ("s004-m1", 1, "completed", 24, MACHINE_A),
        ("s004-m1", 2, "completed", 18, MACHINE_A), ("s004-m2", 0, "completed", 40, MACHINE_A),
        ("s004-m2", 1, "completed", 35, MACHINE_B), ("s004-m2", 2, "completed", 45, MACHINE_A),
        ("s004-m2", 3, "diverged", None, MACHINE_B), ("s004-m1", 3, "failed", None, MACHINE_A)]


def provenance_of(torch: str, flags: list[str]) -> dict:
    """A recorded provenance of util/provenance.collect's shape (synthetic: no git, no torch)."""
    return {"format": 1, "command": {"entry": "cli", "command": "mnistlab run travel.yaml --seeds 0:4"},
            "host": "box-a", "sources": [{"file": "/work/travel.yaml", "repository": "/work", "commit": "ab" * 20,
                                           "dirty": True, "tracked": True}],
            "distributions": {"numpy": "2.1.0", "torch": torch}, "distributions_sha256": torch * 8,
            "environment": {"torch": torch, "cuda": None, "cudnn": None, "onednn": "3.5", "cpu_capability": "AVX512",
                            "python": "3.12.1", "cpu": "CPU A", "cpu_flags": flags, "machine": MACHINE_A}}


# What the user wrote on some runs, and what produced them: (model, seed) -> tags, user notes, provenance.
USER_DATA = {("s004-m1", 0): (["baseline", "keep"], [("looks right\nsecond line", 1_700_000_000.25)],
                              provenance_of("2.5.1", ["avx2", "avx512f", "fma"])),
             ("s004-m2", 1): (["keep"], [("first", 1_700_000_100.0), ("then: \tindented", 1_700_000_200.5)],
                              provenance_of("2.6.0", ["avx2", "fma"]))}


def add_run(store: RunStore, model_id: str, seed: int, status: str, errors: int | None, machine: str) -> int:
    """A run as the runner records it, under the notebook's protocol (so it counts for the reproduction table)."""
    spec = get_model(model_id)
    run = store.ensure_run(EXPERIMENT, model_id, {"model": spec.to_dict(), "precision": "fp32"}, seed, "mnist",
                           "test", 3)
    assert store.claim_run(run.id, "test:1")
    for epoch in (1, 2, 3):
        nan = status == "diverged" and epoch == 3
        store.record_epoch(run.id, epoch, {"loss": float("nan") if nan else 1.0 / epoch + 0.01 * seed,
                                           "acc": 0.8 + 0.03 * epoch, "val_loss": 1.2 / epoch, "val_acc": 0.78 + 0.03 * epoch,
                                           "seconds": 1.5})
    if status == "failed":
        store.fail_run(run.id, "RuntimeError: out of memory")
        return run.id
    predicted = None
    if errors is not None:
        predicted = LABELS.copy()
        predicted[:errors] = (LABELS[:errors] + 1) % 10
    final = {"test_acc": None if errors is None else 1 - errors / TEST_IMAGES, "test_loss": None if errors is None else errors / 500,
             "reference_test_acc": spec.reference["test_acc"], "reference_differences": [], "params": 1000,
             "diverged_epoch": 3 if status == "diverged" else None}
    store.finish_run(run.id, status, final, LABELS if errors is not None else None, predicted, "cpu",
                     {"torch": "test", "machine": machine})
    store.add_note(run.id, "a note the run made")
    return run.id


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("source") / "runs"
    with RunStore(root) as store:
        store.save_experiment(EXPERIMENT, {"name": EXPERIMENT, "protocol": "test", "dataset": "mnist"})
        for run in RUNS:
            run_id = add_run(store, *run)
            if run[:2] in USER_DATA:
                tags, notes, provenance = USER_DATA[run[:2]]
                store.add_tags(run_id, tags)
                for text, when in notes:
                    store.add_user_note(run_id, text, created_at=when)
                store.set_provenance(run_id, provenance)
    return root


@pytest.fixture(scope="module")
def archive(source, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "travel.tar.xz"
    result = run_cli("export-runs", EXPERIMENT, path, "--to", "archive", "--store", source)
    assert result.exit_code == 0, result
    assert "archived 8 run(s)" in result.stdout
    return path


def store_state(root: Path) -> list:
    """Everything a store's database holds, table by table (nothing written means this is unchanged)."""
    if not (root / "store.sqlite").exists():
        return []
    with sqlite3.connect(root / "store.sqlite") as conn:
        return [conn.execute(f"SELECT * FROM {table}").fetchall()
                for table in ("experiments", "runs", "epochs", "predictions", "run_tags", "run_user_notes",
                              "run_provenance")]


def test_export_then_import_gives_the_same_report_conclusions_and_reproduction(source, archive, tmp_path):
    result = run_cli("import-runs", archive, "--store", tmp_path / "copy")
    assert result.exit_code == 0, result
    assert "imported 8 run(s), skipped 0" in result.stdout
    with RunStore(source) as original, RunStore(tmp_path / "copy") as copy:
        assert comparison_table(original, EXPERIMENT).equals(comparison_table(copy, EXPERIMENT))
        assert experiment_conclusions(original, EXPERIMENT) == experiment_conclusions(copy, EXPERIMENT)
        assert reproduction_table([original]) == reproduction_table([copy])
        first, second = build_report(original, EXPERIMENT, detail_models=1), build_report(copy, EXPERIMENT, detail_models=1)
        assert first.rows == second.rows and first.conclusions == second.conclusions
        assert [fact for fact in first.facts if fact[0] != "Generated"] == [fact for fact in second.facts if fact[0] != "Generated"]
        assert first.statistics.summary_sentence() == second.statistics.summary_sentence()
        # Without --with-models the weights are elsewhere, which is not damage.
        assert WEIGHTS_ELSEWHERE in second.weights_note
        assert not any(label.startswith("Damaged") for label, _ in second.facts)
        # The machines, statuses, errors and notes came along; nothing of the source's ids or times is needed.
        runs = {(run.model_id, run.seed): run for run in copy.runs(EXPERIMENT)}
        assert runs[("s004-m2", 1)].versions["machine"] == MACHINE_B
        assert runs[("s004-m1", 3)].status == "failed" and "out of memory" in runs[("s004-m1", 3)].error
        assert runs[("s004-m2", 0)].notes[0] == "a note the run made" and "imported from archive" in runs[("s004-m2", 0)].notes[1]
        assert np.isnan(copy.history(runs[("s004-m2", 3)].id)["loss"][-1])
        console = Console(file=io.StringIO(), width=200)
        console.print(run_panel(copy, runs[("s004-m2", 1)].id))
        shown = console.file.getvalue()
        assert "trained on" in shown and MACHINE_B in shown  # `mnistlab show` keeps saying where it trained
    # The reproduction table reads the archive itself as well as the store, a seed in both counted once.
    from_archive = api.reproduction(archives=[archive])
    assert from_archive == api.reproduction([source]) == api.reproduction([source], archives=[archive])
    assert next(line for line in from_archive if line.model_id == "s004-m1").seeds == 3


def by_identity(store: RunStore) -> dict[tuple, int]:
    return {(run.model_id, run.seed): run.id for run in store.runs(EXPERIMENT)}


def user_data(store: RunStore) -> dict[tuple, tuple]:
    return {key: (store.tags(run_id), store.user_notes(run_id), store.provenance(run_id))
            for key, run_id in by_identity(store).items()}


def test_tags_user_notes_and_provenance_travel(source, archive, tmp_path):
    copy_root = tmp_path / "copy"
    assert run_cli("import-runs", archive, "--store", copy_root).exit_code == 0
    with RunStore(source) as original, RunStore(copy_root) as copy:
        assert user_data(copy) == user_data(original)  # tags, notes with their times, provenance or None
        assert user_data(copy)[("s004-m1", 1)] == ([], [], None)  # not recorded stays not recorded
        ids = {"source": by_identity(original), "copy": by_identity(copy)}
    roots = {"source": source, "copy": copy_root}
    seen = {}
    for name, root in roots.items():
        listed = json.loads(run_cli("ls", "--tag", "keep", "--json", "--store", root).stdout)["runs"]
        shown = json.loads(run_cli("show", str(ids[name][("s004-m2", 1)]), "--json", "--store", root).stdout)
        compared = [json.loads(run_cli("compare", str(ids[name][a]), str(ids[name][b]), "--json", "--store",
                                       root).stdout)["environment"]
                    for a, b in ((("s004-m1", 0), ("s004-m2", 1)), (("s004-m1", 0), ("s004-m1", 1)))]
        seen[name] = (sorted((run["model"], run["seed"], run["tags"]) for run in listed),
                      {key: shown[key] for key in ("tags", "user_notes", "provenance")}, compared)
    assert seen["copy"] == seen["source"]
    assert seen["copy"][0] == [("s004-m1", 0, ["baseline", "keep"]), ("s004-m2", 1, ["keep"])]
    assert seen["copy"][2][0]["recorded"] and any("torch" in phrase for phrase in seen["copy"][2][0]["differences"])
    assert seen["copy"][2][1] == {"recorded": False, "differences": None}
    result = run_cli("show", str(ids["copy"][("s004-m1", 0)]), "--store", copy_root)
    assert "baseline" in result.stdout and "looks right" in result.stdout and "mnistlab run travel.yaml" in result.stdout


def test_an_archive_of_format_1_still_imports(archive, tmp_path):
    """What the exporter wrote before version 2: provenance with only device and versions, empty sections."""
    def old(name: str, data: bytes) -> bytes:
        record = json.loads(data)
        if name == "manifest.json":
            record["version"] = 1
        elif name.endswith("run.json"):
            del record["provenance"]["recorded"]
            record["tags"], record["user_notes"] = [], []
            if name == "runs/00001/run.json":
                record["user_notes"] = ["a note as version 1 read it: text"]
        return json.dumps(record).encode()

    members = [(name, old(name, data) if name.endswith(".json") and "models/" not in name else data)
               for name, data in members_of(archive)]
    old_archive = write_tar(tmp_path / "v1.tar.xz", members)
    result = run_cli("import-runs", old_archive, "--store", tmp_path / "copy")
    assert result.exit_code == 0 and "imported 8 run(s)" in result.stdout, result
    created = json.loads(dict(members)["manifest.json"])["created_at"]
    with RunStore(tmp_path / "copy") as copy:
        data = user_data(copy)
    assert data[("s004-m1", 0)] == ([], [UserNote("a note as version 1 read it: text", created)], None)
    assert all(value == ([], [], None) for key, value in data.items() if key != ("s004-m1", 0))
    newer = write_tar(tmp_path / "v3.tar.xz", [(name, json.dumps({**json.loads(data), "version": 3}).encode())
                                                if name == "manifest.json" else (name, data)
                                                for name, data in members_of(archive)])
    with pytest.raises(ArchiveError, match="version 3 is newer than this mnistlab reads"):
        read_archive(newer)


def test_control_characters_are_replaced_on_export_so_the_archive_imports(tmp_path):
    root = tmp_path / "runs"
    with RunStore(root) as store:
        store.save_experiment(EXPERIMENT, {"name": EXPERIMENT})
        run_id = add_run(store, "s004-m1", 0, "completed", 20, MACHINE_A)
        store.add_user_note(run_id, "red \x1b[31malert\x1b[0m\nnext line", created_at=5.0)
        store.set_provenance(run_id, {"command": {"command": "mnistlab run \x07x\udcff.yaml"}})
    path = api.export_archive(EXPERIMENT, tmp_path / "one.tar.gz", root).path
    with RunStore(tmp_path / "copy") as copy:
        (new_id,) = import_archive(copy, path).imported
        assert copy.user_notes(new_id) == [UserNote("red \ufffd[31malert\ufffd[0m\nnext line", 5.0)]
        assert copy.provenance(new_id) == {"command": {"command": "mnistlab run \ufffdx\ufffd.yaml"}}


def test_runs_without_weights_say_so_and_are_not_damaged(archive, tmp_path):
    with RunStore(tmp_path / "copy") as copy:
        import_archive(copy, archive)
        run_id = next(run.id for run in copy.runs(EXPERIMENT, "completed"))
        with pytest.raises(MnistlabError, match="weights not in this store"):
            load_weights(copy, run_id)
        with pytest.raises(MnistlabError, match="weights not in this store"):
            api.load_model(copy, run_id)


def test_importing_twice_is_a_no_op(archive, tmp_path):
    root = tmp_path / "copy"
    api.import_archive(archive, root)
    before = store_state(root)
    again = api.import_archive(archive, root)
    assert again.imported == [] and len(again.skipped) == len(RUNS)
    assert store_state(root) == before


def test_a_run_without_a_result_gets_the_archives_user_data_once(archive, tmp_path):
    root = tmp_path / "other"
    tags, notes, _ = USER_DATA[("s004-m1", 0)]
    with RunStore(root) as store:  # the run is there, pending, with one of the archive's tags and its note
        store.save_experiment(EXPERIMENT, {"name": EXPERIMENT})
        pending = store.ensure_run(EXPERIMENT, "s004-m1", {"model": get_model("s004-m1").to_dict(), "precision": "fp32"},
                                   0, "mnist", "test", 3)
        store.add_tags(pending.id, ["keep", "mine"])
        store.add_user_note(pending.id, notes[0][0], created_at=notes[0][1])
        assert pending.id in import_archive(store, archive).imported
        assert store.tags(pending.id) == sorted({*tags, "mine"})
        assert store.user_notes(pending.id) == [UserNote(text, when) for text, when in notes]
        assert store.provenance(pending.id) == USER_DATA[("s004-m1", 0)][2]


def test_a_conflicting_run_is_refused_and_nothing_is_written(archive, tmp_path):
    root = tmp_path / "other"
    with RunStore(root) as store:  # the same identity (experiment, model, spec, seed, ...) with another result
        store.save_experiment(EXPERIMENT, {"name": EXPERIMENT})
        add_run(store, "s004-m1", 1, "completed", 99, MACHINE_B)
    before = store_state(root)
    result = run_cli("import-runs", archive, "--store", root)
    assert result.exit_code == 2 and len(result.error_lines) == 1, result
    assert "conflict" in result.stderr and "s004-m1 seed 1" in result.stderr and "never overwritten" in result.stderr
    assert store_state(root) == before


def test_a_failure_midway_leaves_the_store_as_it_was(archive, tmp_path, monkeypatch):
    root = tmp_path / "copy"
    with RunStore(root) as store:
        store.save_experiment("another", {"name": "another"})
        before = store_state(root)
        calls = []

        def finish(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise OSError("disk full")
            return RunStore.finish_run(store, *args, **kwargs)

        monkeypatch.setattr(store, "finish_run", finish)
        with pytest.raises(OSError):
            import_archive(store, archive)
    assert len(calls) == 3 and store_state(root) == before


def test_trained_on_note_for_a_model_from_several_machines(source):
    with RunStore(source) as store:
        table = comparison_table(store, EXPERIMENT)
    by_model = table.set_index("model")
    assert by_model.loc["s004-m1", "trained_on"] == ""
    assert MACHINE_A in by_model.loc["s004-m2", "trained_on"] and MACHINE_B in by_model.loc["s004-m2", "trained_on"]
    runs_column = [header for header, _ in COLUMNS].index("Runs")
    cells = {row[0].text: row[runs_column].text for row in table_rows(table)}
    assert "trained on" in cells["s004-m2"] and "trained on" not in cells["s004-m1"]


def test_models_travel_with_with_models(tmp_path):
    from mnistlab.nn.build import build_model
    from mnistlab.data.synthetic import synthetic_dataset
    from mnistlab.trained.folder import save_model

    root = tmp_path / "runs"
    with RunStore(root) as store:
        store.save_experiment(EXPERIMENT, {"name": EXPERIMENT})
        run_id = add_run(store, "s004-m1", 0, "completed", 20, MACHINE_A)
        save_model(store.run_dir(run_id), build_model(get_model("s004-m1"), seed=0),
                   synthetic_dataset(n_train=10, n_test=10).info, 0, {"test_acc": 0.98})
    path = tmp_path / "with.tar.gz"
    result = run_cli("export-runs", EXPERIMENT, path, "--to", "archive", "--with-models", "--store", root)
    assert result.exit_code == 0 and "1 with model folders" in result.stdout, result
    with RunStore(tmp_path / "copy") as copy:
        (new_id,) = import_archive(copy, path).imported
        assert api.load_model(copy, new_id).info.seed == 0


# -- tampered archives: each one line, exit 2, and no store created -----------------------------------------------


def members_of(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(member.name, tar.extractfile(member).read()) for member in tar]


def write_tar(path: Path, members: list[tuple[str, bytes]], sizes: dict[str, int] | None = None) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def edit_run_json(members, change):
    out = []
    for name, data in members:
        if name == "runs/00001/run.json":
            record = json.loads(data)
            change(record)
            data = json.dumps(record).encode()
        out.append((name, data))
    return out


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def tamper_traversal(members):
    return [("../../escaped.json" if name == "runs/00002/run.json" else name, data) for name, data in members]


def tamper_oversized(members):
    return [(name, b" " * (5 << 20) if name == "runs/00001/run.json" else data) for name, data in members]


def tamper_shape(members):
    return [(name, npy(np.zeros((3, TEST_IMAGES), np.uint8)) if name == "runs/00001/predictions.npy" else data)
            for name, data in members]


def tamper_columns(members):
    return [(name, npy(np.ones((3, 2))) if name == "runs/00001/epochs.npy" else data) for name, data in members]


def tamper_type(members):
    return edit_run_json(members, lambda record: record["identity"].update(seed="0"))


def tamper_final(members):
    return edit_run_json(members, lambda record: record["final"].update(test_acc="high"))


def tamper_hash(members):
    return edit_run_json(members, lambda record: record["spec"]["model"].update(id="s004-m9"))


def edit_user_data(change):
    return lambda members: edit_run_json(members, change)


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"deeper": value}
    return value


def tamper_user_note(note):
    return edit_user_data(lambda record: record.update(user_notes=[note]))


TAMPERS_USER_DATA = {
    "tag of the wrong type": (edit_user_data(lambda record: record.update(tags=[7])), "field 'tags'[0]: is int, not str"),
    "control character in a tag": (edit_user_data(lambda record: record.update(tags=["ok\x1b[2J"])), "is not a tag"),
    "tag with a space": (edit_user_data(lambda record: record.update(tags=["two words"])), "is not a tag"),
    "tags not a list": (edit_user_data(lambda record: record.update(tags="keep")), "field 'tags': is str, not list"),
    "user note as plain text": (tamper_user_note("just text"), "field 'user_notes'[0]: is str, not dict"),
    "oversize user note": (tamper_user_note({"text": "x" * (NOTE_MAX_LENGTH + 1), "created_at": 1.0}),
                           f"longer than {NOTE_MAX_LENGTH:,} characters"),
    "control character in a user note": (tamper_user_note({"text": "hi\x1b]0;owned\x07", "created_at": 1.0}),
                                         "holds a terminal control character"),
    "lone surrogate in a user note": (tamper_user_note({"text": "bad \ud800", "created_at": 1.0}),
                                      "not valid Unicode text"),
    "user note time not a number": (tamper_user_note({"text": "hi", "created_at": "today"}),
                                    "user_notes'[0].created_at: is str"),
    "user note with an extra field": (tamper_user_note({"text": "hi", "created_at": 1.0, "html": "<b>"}),
                                      "has unknown fields ['html']"),
    "too-deep provenance": (edit_user_data(lambda record: record["provenance"].update(
        recorded=nested(MAX_PROVENANCE_DEPTH + 2))), f"nests deeper than {MAX_PROVENANCE_DEPTH} levels"),
    "provenance key of the wrong kind": (edit_user_data(lambda record: record["provenance"].update(
        recorded={"environment": ["torch"]})), "provenance.recorded.environment: is list, not dict"),
    "CPU flags not text": (edit_user_data(lambda record: record["provenance"].update(
        recorded={"environment": {"cpu_flags": [1]}})), "cpu_flags[0]: is int, not str"),
    "control character in provenance": (edit_user_data(lambda record: record["provenance"].update(
        recorded={"host": "a\x1b[2Jb"})), "provenance.recorded.host: holds a terminal control character"),
    "provenance not an object": (edit_user_data(lambda record: record["provenance"].update(recorded=[1])),
                                 "provenance.recorded: is list, not dict or null"),
    "unknown provenance field": (edit_user_data(lambda record: record["provenance"].update(extra=1)),
                                 "has unknown fields ['extra']"),
}


TAMPERS = {**TAMPERS_USER_DATA, "path traversal": (tamper_traversal, "is not a name an archive holds"),
           "oversized member": (tamper_oversized, "more than the"),
           "wrong array shape": (tamper_shape, "expected uint8 [2, n]"),
           "wrong epoch columns": (tamper_columns, "expected float64"),
           "field of the wrong type": (tamper_type, "identity.seed: is str, not int"),
           "final metric of the wrong type": (tamper_final, "final.test_acc: is str"),
           "spec not matching its hash": (tamper_hash, "does not match the spec")}


@pytest.mark.parametrize("case", TAMPERS, ids=list(TAMPERS))
def test_tampered_archives_are_one_line_and_write_nothing(archive, tmp_path, case):
    tamper, words = TAMPERS[case]
    bad = write_tar(tmp_path / "bad.tar.xz", tamper(members_of(archive)))
    result = run_cli("import-runs", bad, "--store", tmp_path / "new-store")
    assert result.exit_code == 2 and len(result.error_lines) == 1, result
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new-store").exists()


def test_a_truncated_archive_is_one_line_and_writes_nothing(archive, tmp_path):
    data = archive.read_bytes()
    bad = tmp_path / "cut.tar.xz"
    bad.write_bytes(data[: len(data) // 2])
    result = run_cli("import-runs", bad, "--store", tmp_path / "new-store")
    assert result.exit_code == 2 and len(result.error_lines) == 1, result
    assert "not a readable compressed tar file" in result.stderr
    assert not (tmp_path / "new-store").exists()


def test_links_and_stray_members_are_refused(archive, tmp_path):
    bad = tmp_path / "link.tar.xz"
    with tarfile.open(bad, "w:xz") as tar:
        for name, data in members_of(archive):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("models/00001/model.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ArchiveError, match="not a regular file"):
        read_archive(bad)
    stray = write_tar(tmp_path / "stray.tar.xz", [*members_of(archive), ("runs/00042/run.json", b"{}")])
    with pytest.raises(ArchiveError, match="not one of the manifest's 8 runs"):
        read_archive(stray)


def test_a_bad_archive_name_or_missing_file_is_one_line(source, tmp_path):
    result = run_cli("export-runs", EXPERIMENT, tmp_path / "runs.zip", "--to", "archive", "--store", source)
    assert result.exit_code == 2 and "an archive's name ends in" in result.stderr and not (tmp_path / "runs.zip").exists()
    assert api.export_runs(EXPERIMENT, "archive", tmp_path / "api.tar.gz", source) == [tmp_path / "api.tar.gz"]
    result = run_cli("import-runs", tmp_path / "none.tar.xz", "--store", tmp_path / "s")
    assert result.exit_code == 2 and "no such archive file" in result.stderr and not (tmp_path / "s").exists()


def test_a_hundred_runs_without_models_are_far_below_5_mb(tmp_path):
    root = tmp_path / "runs"
    with RunStore(root) as store:
        store.save_experiment(EXPERIMENT, {"name": EXPERIMENT})
        for seed in range(100):
            add_run(store, "s004-m1", seed, "completed", 10 + seed % 30, MACHINE_A)
        summary = api.export_archive(EXPERIMENT, tmp_path / "hundred.tar.xz", store)
    assert summary.runs == 100 and summary.bytes < 1_000_000  # measured ~60 kB with 1,000 test images a run


def test_a_failed_import_into_a_new_store_leaves_no_store(archive, tmp_path, monkeypatch):
    from mnistlab.errors import StoreUnavailable

    def full(*args, **kwargs):
        raise StoreUnavailable("database or disk is full")

    monkeypatch.setattr(RunStore, "finish_run", full)
    with pytest.raises(StoreUnavailable):
        api.import_archive(archive, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()

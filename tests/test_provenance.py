"""Provenance: recorded when a run is claimed to train, shown by `show`, compared by `compare`; the git
state of the experiment file is read from a real temporary repository, clean and then dirty."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from cli_driver import run_cli
from mnistlab import api
from mnistlab.runs.store import RunStore
from mnistlab.util import provenance
from mnistlab.util.provenance import environment_differences, git_state
from test_runner import TINY_MLP

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(folder, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(folder), "PATH": "/usr/bin:/bin"}).stdout


def experiment_file(folder, data_dir, name: str = "prov"):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "dataset": str(data_dir), "protocol": "split",
                                    "defaults": {"epochs": 1, "device": "cpu", "train_limit": 64},
                                    "seeds": [0], "models": [{"spec": TINY_MLP}]}))
    return path


@pytest.fixture
def repository(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    git(folder, "init", "-q")
    (folder / "README").write_text("a study\n")
    git(folder, "add", "README")
    git(folder, "commit", "-qm", "first")
    provenance.forget()  # each test's repository is a fresh one
    yield folder
    provenance.forget()


@needs_git
def test_git_state_sees_a_dirty_tree_and_an_untracked_file(repository):
    study = repository / "study.yaml"
    study.write_text("name: x\n")
    untracked = git_state(study)
    assert untracked["commit"] == git(repository, "rev-parse", "HEAD").strip()
    assert untracked["tracked"] is False and untracked["dirty"] is True  # the file is not in the commit
    git(repository, "add", "study.yaml")
    git(repository, "commit", "-qm", "study")
    provenance.forget()
    clean = git_state(study)
    assert clean["dirty"] is False and clean["tracked"] is True
    study.write_text("name: y\n")
    provenance.forget()
    assert git_state(study)["dirty"] is True


def test_git_state_outside_a_repository_and_without_git(tmp_path, monkeypatch):
    lone = tmp_path / "lone.yaml"
    lone.write_text("x")
    provenance.forget()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    if shutil.which("git"):
        assert git_state(lone) == {"file": str(lone.resolve()), "repository": None, "commit": None, "dirty": None,
                                   "reason": "not in a git repository"}
    provenance.forget()
    monkeypatch.setenv("PATH", str(tmp_path))  # no git anywhere: recorded as such, never an error
    assert git_state(lone)["reason"] == "git not found"
    provenance.forget()


@needs_git
def test_a_run_records_its_provenance_and_show_prints_it(repository, tiny_data_dir, tmp_path):
    path = experiment_file(repository, tiny_data_dir)
    git(repository, "add", path.name)
    git(repository, "commit", "-qm", "study")
    commit = git(repository, "rev-parse", "HEAD").strip()
    store_root = tmp_path / "store"
    result = run_cli("run", path, "--store", store_root, "--quiet", "--no-report")
    assert result.exit_code == 0, result
    path.write_text(path.read_text().replace("seeds:\n- 0", "seeds:\n- 0\n- 1"))  # now the tree is dirty
    assert run_cli("run", path, "--store", store_root, "--quiet", "--no-report").exit_code == 0
    with RunStore(store_root) as store:
        first, second = (store.provenance(run.id) for run in store.runs())
    for recorded in (first, second):
        (source,) = recorded["sources"]
        assert source["file"] == str(path.resolve()) and source["commit"] == commit
        assert recorded["command"]["entry"] == "cli" and recorded["command"]["command"].startswith("mnistlab run ")
        assert recorded["distributions"]["torch"] and len(recorded["distributions_sha256"]) == 64
        assert {"torch", "cuda", "cudnn", "onednn", "cpu", "cpu_flags"} <= set(recorded["environment"])
    assert first["sources"][0]["dirty"] is False and second["sources"][0]["dirty"] is True
    shown = run_cli("show", "1", "--store", store_root)
    assert shown.exit_code == 0, shown
    text = " ".join(shown.stdout.split())
    assert f"commit {commit[:12]} (clean)" in text and "oneDNN" in text and "distributions, sha256" in text
    assert f"commit {commit[:12]} (dirty)" in " ".join(run_cli("show", "2", "--store", store_root).stdout.split())


def test_an_api_run_records_the_call(tmp_path, tiny_data_dir):
    path = experiment_file(tmp_path, tiny_data_dir, "apiprov")
    api.run(path, tmp_path / "store")
    with RunStore(tmp_path / "store") as store:
        (run,) = store.runs()
        assert store.provenance(run.id)["command"]["entry"] == "api"


def test_old_runs_show_not_recorded(tmp_path):
    from test_report import GOOD_HISTORY, add_run
    import numpy as np

    with RunStore(tmp_path / "store") as store:
        store.save_experiment("e", {})
        add_run(store, "e", "m", "a model", None, 0, "completed", 3, GOOD_HISTORY, (np.arange(100) % 10).astype(np.uint8))
    shown = run_cli("show", "1", "--store", tmp_path / "store")
    assert shown.exit_code == 0 and "not recorded (trained before mnistlab recorded it)" in " ".join(shown.stdout.split())


def test_environment_differences_name_what_differs():
    base = {"environment": {"torch": "2.4", "cuda": None, "cpu": "X", "cpu_flags": ["avx2", "fma"]},
            "distributions": {"numpy": "1.26", "torch": "2.4"}, "distributions_sha256": "a"}
    assert environment_differences(base, base) == []
    other = {"environment": {"torch": "2.5", "cuda": None, "cpu": "X", "cpu_flags": ["avx2", "avx512f", "fma"]},
             "distributions": {"numpy": "2.0", "torch": "2.5"}, "distributions_sha256": "b"}
    found = environment_differences(base, other)
    assert "torch 2.4 vs 2.5" in found
    assert any("only the second: avx512f" in phrase for phrase in found)
    assert any(phrase.startswith("installed packages (numpy 1.26 vs 2.0, torch 2.4 vs 2.5") for phrase in found)
    assert environment_differences(None, base) == []


def test_compare_says_when_two_runs_differ_in_environment(tmp_path):
    import numpy as np

    from test_report import GOOD_HISTORY, MID_HISTORY, add_run

    labels = (np.arange(100) % 10).astype(np.uint8)
    with RunStore(tmp_path / "store") as store:
        store.save_experiment("e", {})
        a = add_run(store, "e", "m", "a model", None, 0, "completed", 3, GOOD_HISTORY, labels)
        b = add_run(store, "e", "m", "a model", None, 1, "completed", 5, MID_HISTORY, labels)
        same = {"environment": {"torch": "2.4", "cpu_flags": ["avx2"]}, "distributions": {}, "distributions_sha256": "h"}
        store.set_provenance(a, same)
        assert "not recorded for run 2" in " ".join(run_cli("compare", "1", "2", "--store", tmp_path / "store").stdout.split())
        store.set_provenance(b, same)
        assert "the same libraries" in run_cli("compare", "1", "2", "--store", tmp_path / "store").stdout
        store.set_provenance(b, {**same, "environment": {"torch": "2.4", "cpu_flags": ["avx2", "amx_tile"]}})
    text = " ".join(run_cli("compare", "1", "2", "--store", tmp_path / "store").stdout.split())
    assert "Environments differ: CPU flags (only the first: none; only the second: amx_tile)" in text


def test_show_and_compare_json_carry_provenance_tags_notes_and_the_environment(tmp_path):
    import json

    import numpy as np

    from test_report import GOOD_HISTORY, MID_HISTORY, add_run

    labels = (np.arange(100) % 10).astype(np.uint8)
    root = tmp_path / "store"
    with RunStore(root) as store:
        store.save_experiment("e", {})
        a = add_run(store, "e", "m", "a model", None, 0, "completed", 3, GOOD_HISTORY, labels)
        add_run(store, "e", "m", "a model", None, 1, "completed", 5, MID_HISTORY, labels)
        store.set_provenance(a, {"environment": {"torch": "2.4"}, "distributions": {}, "distributions_sha256": "h"})
        store.add_tags(a, ["keep"])
        store.add_user_note(a, "look again", created_at=5.0)
    shown = json.loads(run_cli("show", "1", "--json", "--store", root).stdout)
    assert shown["tags"] == ["keep"] and shown["user_notes"] == [{"text": "look again", "created_at": 5.0}]
    assert shown["provenance"]["environment"] == {"torch": "2.4"}
    assert json.loads(run_cli("show", "2", "--json", "--store", root).stdout)["provenance"] is None
    compared = json.loads(run_cli("compare", "1", "2", "--json", "--store", root).stdout)
    assert compared["environment"] == {"recorded": False, "differences": None}

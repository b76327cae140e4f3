"""Durability: one atomic writer (fsynced), environment failures as one line with exit status 1,
bounded decompression of IDX files, and reports that survive damaged runs."""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import sqlite3
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError

from mnistlab.util import atomic
from mnistlab.data.datasets import load_dataset
from mnistlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from mnistlab.data.synthetic import synthetic_dataset, write_dataset
from mnistlab.errors import DataError, EnvironmentFailure
from mnistlab.experiments.definition import parse_experiment
from mnistlab.runs.runner import run_experiment
from mnistlab.runs.store import RunStore

from cli_driver import run_cli
from test_runner import tiny_experiment

SRC = Path(__file__).parents[1] / "src" / "mnistlab"
DISK_FULL = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


# -- the atomic writer ------------------------------------------------------------------------


def test_atomic_writes_have_one_home():
    """No module but atomic.py makes temporary files to publish: each uses the one writer."""
    offenders = [path.name for path in SRC.rglob("*.py")
                 if path.name != "atomic.py" and ("mkstemp" in path.read_text() or "mkdtemp" in path.read_text())]
    assert offenders == []


def test_write_syncs_the_file_and_the_folder_then_renames(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    target = tmp_path / "page.html"
    target.write_text("old")
    atomic.write_text(target, "new")
    assert target.read_text() == "new" and len(synced) == 2  # the file, then its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "weights.json"
    target.write_text("old")

    def half_then_fail(temp: Path) -> None:
        temp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(temp))

    with pytest.raises(OSError, match="No space left"):
        atomic.write_atomically(target, half_then_fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["weights.json"]


def test_a_safetensors_failure_becomes_an_os_error(tmp_path):
    def fail(temp: Path) -> None:
        raise SafetensorError(DISK_FULL)

    with pytest.raises(OSError) as caught:
        atomic.write_atomically(tmp_path / "x.safetensors", fail)
    assert caught.value.errno == errno.ENOSPC and caught.value.strerror == os.strerror(errno.ENOSPC)
    assert list(tmp_path.iterdir()) == []


def test_replace_folder_swaps_whole_and_drops_stale_files(tmp_path):
    folder = tmp_path / "figs"
    atomic.replace_folder(folder, {"a.png": b"1", "b.png": b"2"})
    atomic.replace_folder(folder, {"a.png": b"3"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"] and (folder / "a.png").read_bytes() == b"3"


# -- a full disk during a checkpoint ----------------------------------------------------------


def test_safetensors_disk_full_during_a_checkpoint_is_an_environment_failure(tmp_path, tiny_data_dir, monkeypatch):
    from mnistlab.training import checkpoint

    def disk_full(tensors, path):
        Path(path).write_bytes(b"partial")
        raise SafetensorError(DISK_FULL)

    experiment = parse_experiment(tiny_experiment(tiny_data_dir, name="full", seeds=(0,)))
    with RunStore(tmp_path / "store") as store:
        monkeypatch.setattr(checkpoint, "save_file", disk_full)
        with pytest.raises(EnvironmentFailure, match="No space left on device") as caught:
            run_experiment(experiment, store)
        assert caught.value.exit_code == 1 and "\n" not in str(caught.value)
        failed = store.runs("full")[0]
        assert failed.status == "failed" and "No space left" in failed.error
        folder = store.run_dir(failed.id) / "checkpoint"
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # nothing half-written
        monkeypatch.undo()
        assert len(run_experiment(experiment, store).trained) == 2  # space is back


def test_cli_train_disk_full_is_one_line_exit_1(tmp_path, tiny_data_dir, tiny_spec_file, monkeypatch):
    from mnistlab.training import checkpoint

    monkeypatch.setattr(checkpoint, "save_file", lambda tensors, path: (_ for _ in ()).throw(SafetensorError(DISK_FULL)))
    result = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--epochs", "1", "--device", "cpu",
                     "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 1 and len(result.error_lines) == 1
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr


# -- bounded decompression ----------------------------------------------------------------------


def idx_header(*dims: int) -> bytes:
    magic = IMAGES_MAGIC if len(dims) == 3 else LABELS_MAGIC
    return struct.pack(f">I{len(dims)}I", magic, *dims)


def write_gzip_bomb(path: Path, header: bytes, gigabytes: int) -> None:
    """``header`` then ``gigabytes`` GB of zeros, gzipped to a few MB. Written streaming: one
    member of 1 MiB of zeros (~1 KB compressed), repeated; gzip readers treat the members as
    one stream."""
    zeros = gzip.compress(bytes(2**20), compresslevel=9, mtime=0)
    with open(path, "wb") as handle:
        handle.write(gzip.compress(header, mtime=0))
        for _ in range(gigabytes * 1024):
            handle.write(zeros)


def test_gzip_bomb_is_refused_before_it_fills_memory(tmp_path, tiny_dataset):
    folder = write_dataset(tiny_dataset, tmp_path / "bomb", gz=True)
    bomb = folder / "train-images-idx3-ubyte.gz"
    write_gzip_bomb(bomb, idx_header(len(tiny_dataset.train_labels), 28, 28), gigabytes=3)
    assert bomb.stat().st_size < 10 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="has trailing bytes") as caught:
            load_dataset(str(folder))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(bomb) in str(caught.value)
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB while reading a 3 GB bomb"


def test_header_declaring_billions_of_images_is_refused_unread(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_gzip_bomb(path, idx_header(4_000_000_000, 28, 28), gigabytes=1)
    with pytest.raises(DataError, match=r"declares 4,000,000,000 x 28 x 28, more than the 10,000,000 items"):
        read_idx(path)
    raw = tmp_path / "big-side"
    raw.write_bytes(idx_header(1, 100_000, 100_000))
    with pytest.raises(DataError, match="at most 64x64"):
        read_idx(raw)


def test_registered_dataset_file_must_declare_its_known_count(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_header(400, 28, 28) + bytes(400 * 784))
    assert read_idx(path).shape == (400, 28, 28)
    with pytest.raises(DataError, match="declares 400 items, this dataset has 60,000"):
        read_idx(path, count=60_000)


def test_custom_dataset_with_zero_images_is_one_line(tmp_path, tiny_spec_file):
    empty = synthetic_dataset(n_train=0, n_test=10)
    folder = write_dataset(empty, tmp_path / "empty")
    with pytest.raises(DataError, match="holds no images; a dataset needs at least one train image"):
        load_dataset(str(folder))
    result = run_cli("train", tiny_spec_file, "--dataset", folder, "--epochs", "1", "--quiet")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "holds no images" in result.stderr


# -- reports over damaged runs and a failing environment ----------------------------------------


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory, tiny_data_dir) -> Path:
    root = tmp_path_factory.mktemp("finished") / "store"
    with RunStore(root) as store:
        run_experiment(parse_experiment(tiny_experiment(tiny_data_dir, name="dmg")), store)
    return root


def copy_store(finished_store: Path, tmp_path: Path) -> Path:
    return shutil.copytree(finished_store, tmp_path / "store")


def damage_every_run(root: Path, damage) -> None:
    for folder in (root / "artifacts").iterdir():
        damage(folder)


def report(root: Path, out: Path):
    return run_cli("report", "dmg", "--store", root, "--out", out)


def _legacy(damage):
    """An older store's run: kernels in weights.safetensors + weights.json, no model folder."""
    def apply(folder: Path) -> None:
        from safetensors.numpy import save_file

        (folder / "model.json").unlink()
        save_file({"dense_1": np.zeros((10, 4), dtype=np.float32)}, str(folder / "weights.safetensors"))
        (folder / "weights.json").write_text('{"layers": ["dense_1"]}')
        damage(folder)
    return apply


DAMAGES = {
    "truncated model tensors": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:50]),
                                "damaged model folder"),
    "garbage model.json": (lambda f: (f / "model.json").write_bytes(b"\xff garbage"), "damaged model folder"),
    "truncated weights (older store)": (_legacy(lambda f: (f / "weights.safetensors").write_bytes(b"\x00" * 50)),
                                        "damaged weights file"),
    "garbage weights.json (older store)": (_legacy(lambda f: (f / "weights.json").write_bytes(b"\xff garbage")),
                                           "damaged layer list"),
    "weights.json of a list (older store)": (_legacy(lambda f: (f / "weights.json").write_text('{"layers": 5}')),
                                             "damaged layer list"),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_report_over_damaged_weights_names_them_and_writes_the_rest(name, finished_store, tmp_path):
    damage, words = DAMAGES[name]
    root = copy_store(finished_store, tmp_path)
    damage_every_run(root, damage)
    result = report(root, tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    page = (tmp_path / "out" / "dmg.html").read_text()
    markdown = (tmp_path / "out" / "dmg.md").read_text()
    for text in (page, markdown):
        assert "Damaged run" in text and words in text
    assert 'id="comparison"' in page  # the rest of the report is there


def test_report_over_corrupt_predictions_names_them_and_writes_the_rest(finished_store, tmp_path):
    root = copy_store(finished_store, tmp_path)
    with sqlite3.connect(root / "store.sqlite") as conn:
        conn.execute("UPDATE predictions SET labels = X'00'")
    result = report(root, tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    markdown = (tmp_path / "out" / "dmg.md").read_text()
    assert "Damaged run" in markdown and "test predictions of run" in markdown and "are damaged" in markdown


def test_report_on_a_full_disk_is_one_line_exit_1_and_writes_nothing(finished_store, tmp_path, monkeypatch):
    from mnistlab.report import writer

    def disk_full(path, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(writer, "write_text", disk_full)
    out = tmp_path / "out"
    result = report(copy_store(finished_store, tmp_path), out)
    assert result.exit_code == 1 and len(result.error_lines) == 1
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "dmg.html").exists() and not (out / "dmg.md").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def _make_read_only(paths: list[Path]) -> bool:
    """Read-only for real: chattr +i as root (root ignores permissions), chmod otherwise."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True)
        return done.returncode == 0
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)
    return True


def _make_writable(paths: list[Path]) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
    for path in paths:
        path.chmod(path.stat().st_mode | 0o200)


def test_report_on_a_read_only_store_is_one_line_exit_1(finished_store, tmp_path):
    root = copy_store(finished_store, tmp_path)
    paths = [root, *root.rglob("*")]
    if shutil.which("chattr") is None and os.geteuid() == 0 or not _make_read_only(paths):
        pytest.skip("cannot make a folder read-only here")
    try:
        try:
            (root / "probe").touch()
        except OSError:
            pass
        else:
            pytest.skip("the folder stayed writable")
        result = report(root, tmp_path / "out")
    finally:
        _make_writable(paths)
    assert result.exit_code == 1 and len(result.error_lines) == 1, result.stderr
    assert "store.sqlite" in result.stderr and "Traceback" not in result.stderr
    assert "read-only" in result.stderr and "copy the store to a writable folder" in result.stderr


def test_published_files_get_ordinary_permissions(tmp_path):
    from mnistlab.util.atomic import write_text

    mask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "report.md", "text")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644

"""Tests for mnistlab.data.datasets, idx and synthetic: IDX files, checks, lookup, download, splits, synthetic data."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.data import datasets as data
from mnistlab.data import idx, synthetic
from mnistlab.data.datasets import DatasetInfo
from mnistlab.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the real cache or /usr/share/datasets, and none reaches the network."""
    monkeypatch.setattr(data, "CACHE_ROOT", tmp_path / "cache")
    monkeypatch.setattr(data, "SYSTEM_ROOT", tmp_path / "system")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.ENV_VAR, raising=False)


def tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Small IDX-ready arrays per role, taken from the synthetic dataset."""
    ds = synthetic.synthetic_dataset(n_train=30, n_test=20, seed=seed)
    return {
        "train_images": ds.train_images.numpy(),
        "train_labels": ds.train_labels.numpy().astype(np.uint8),
        "test_images": ds.test_images.numpy(),
        "test_labels": ds.test_labels.numpy().astype(np.uint8),
    }


def idx_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    return idx.write_idx(tmp_path / "scratch.idx", array, gz=False).read_bytes()


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DatasetInfo:
    """A registered dataset 'tiny' whose checksums match tiny_arrays(seed=0)."""
    digests = {role: hashlib.sha256(idx_bytes(array, tmp_path)).hexdigest()
               for role, array in tiny_arrays().items()}
    info = DatasetInfo(
        name="tiny",
        files={role: f"{role.replace('_', '-')}-idx" for role in data.ROLES},
        sha256=digests,
        class_names=tuple("abcdefghij"),
        mirrors=("https://a.example/", "https://b.example/"),
    )
    monkeypatch.setitem(data.DATASETS, "tiny", info)
    return info


def write_tiny(directory: Path, info: DatasetInfo, gz: bool = True,
               arrays: dict[str, np.ndarray] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for role, array in (arrays or tiny_arrays()).items():
        name = info.files[role] + (".gz" if gz else "")
        idx.write_idx(directory / name, array, gz=gz)
    return directory


def file_of(info: DatasetInfo, directory: Path, role: str, gz: bool = True) -> Path:
    return directory / (info.files[role] + (".gz" if gz else ""))


def assert_one_line_naming(error: pytest.ExceptionInfo[DataError], path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("shape", [(7, 28, 28), (5, 3, 4), (9,), (0,)])
def test_idx_round_trip(tmp_path: Path, gz: bool, shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = idx.write_idx(tmp_path / ("x.gz" if gz else "x"), array, gz=gz)
    back = idx.read_idx(path)
    assert back.dtype == np.uint8
    assert back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian(tmp_path: Path) -> None:
    raw = idx_bytes(np.zeros((2, 28, 27), dtype=np.uint8), tmp_path)
    assert raw[:16] == bytes.fromhex("00000803 00000002 0000001c 0000001b")


def test_write_idx_rejects_other_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        idx.write_idx(tmp_path / "x", np.zeros((2, 2), dtype=np.uint8), gz=False)
    with pytest.raises(ValueError):
        idx.write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64), gz=False)


@pytest.mark.parametrize("keep", [0, 3, 10, 16, 16 + 784, 16 + 2 * 784 - 1])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    raw = idx_bytes(np.ones((2, 28, 28), dtype=np.uint8), tmp_path)
    path = tmp_path / "short-idx"
    path.write_bytes(raw[:keep])
    with pytest.raises(DataError, match="truncated|too short") as error:
        idx.read_idx(path)
    assert_one_line_naming(error, path)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "long-idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones(5, dtype=np.uint8), tmp_path) + b"\0"))
    with pytest.raises(DataError, match="trailing") as error:
        idx.read_idx(path)
    assert_one_line_naming(error, path)


def test_wrong_magic(tmp_path: Path) -> None:
    raw = bytearray(idx_bytes(np.ones(5, dtype=np.uint8), tmp_path))
    raw[3] = 0x02  # 0x00000802 is the int8 flavour: not one of ours
    path = tmp_path / "odd-idx"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="magic 0x00000802") as error:
        idx.read_idx(path)
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("kind", ["garbage", "cut"])
def test_corrupt_gzip(tmp_path: Path, kind: str) -> None:
    packed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8), tmp_path))
    path = tmp_path / "bad-idx.gz"
    path.write_bytes(b"not gzip at all" if kind == "garbage" else packed[: len(packed) // 2])
    with pytest.raises(DataError, match="gzip") as error:
        idx.read_idx(path)
    assert_one_line_naming(error, path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere-idx"
    with pytest.raises(DataError) as error:
        idx.read_idx(path)
    assert_one_line_naming(error, path)


# --------------------------------------------------------------------------- registry


def test_registry_entries_are_complete() -> None:
    for name, info in data.DATASETS.items():
        assert info.name == name
        assert set(info.files) == set(data.ROLES) == set(info.sha256)
        assert all(len(digest) == 64 for digest in info.sha256.values())
        assert len(info.class_names) == 10
        assert info.mirrors and all(url.endswith("/") for url in info.mirrors)
    assert {"mnist", "fashion-mnist"} <= set(data.DATASETS)


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'.*mnist"):
        data.load_dataset("nope")


# --------------------------------------------------------------------------- loading and checks


@pytest.mark.parametrize("gz", [True, False])
def test_load_tiny(tmp_path: Path, tiny: DatasetInfo, gz: bool) -> None:
    directory = write_tiny(tmp_path / "d" / "tiny", tiny, gz=gz)
    ds = data.load_dataset("tiny", data_dir=tmp_path / "d")
    arrays = tiny_arrays()
    assert ds.source_dir == directory
    assert ds.info is tiny
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape == (30, 28, 28)
    assert ds.train_labels.dtype == torch.int64 and ds.train_labels.shape == (30,)
    assert ds.test_images.shape == (20, 28, 28) and ds.test_labels.shape == (20,)
    np.testing.assert_array_equal(ds.test_images.numpy(), arrays["test_images"])
    np.testing.assert_array_equal(ds.test_labels.numpy(), arrays["test_labels"])


def test_wrong_checksum(tmp_path: Path, tiny: DatasetInfo) -> None:
    write_tiny(tmp_path, tiny, arrays=tiny_arrays(seed=1))
    with pytest.raises(DataError, match="sha256") as error:
        data.load_dataset("tiny", data_dir=tmp_path)
    assert_one_line_naming(error, file_of(tiny, tmp_path, "train_images"))
    data.load_dataset("tiny", data_dir=tmp_path, verify=False)


def test_count_mismatch(tmp_path: Path, tiny: DatasetInfo) -> None:
    arrays = tiny_arrays()
    arrays["test_labels"] = arrays["test_labels"][:-1]
    write_tiny(tmp_path, tiny, arrays=arrays)
    with pytest.raises(DataError, match="20 images.*19 labels") as error:
        data.load_dataset("tiny", data_dir=tmp_path, verify=False)
    assert_one_line_naming(error, file_of(tiny, tmp_path, "test_images"))
    assert str(file_of(tiny, tmp_path, "test_labels")) in str(error.value)


def test_label_out_of_range(tmp_path: Path, tiny: DatasetInfo) -> None:
    arrays = tiny_arrays()
    arrays["train_labels"][3] = 10
    write_tiny(tmp_path, tiny, arrays=arrays)
    with pytest.raises(DataError, match="label 10") as error:
        data.load_dataset("tiny", data_dir=tmp_path, verify=False)
    assert_one_line_naming(error, file_of(tiny, tmp_path, "train_labels"))


def test_images_in_a_label_slot(tmp_path: Path, tiny: DatasetInfo) -> None:
    arrays = tiny_arrays()
    arrays["train_labels"] = arrays["train_images"]
    write_tiny(tmp_path, tiny, arrays=arrays)
    with pytest.raises(DataError, match="shape") as error:
        data.load_dataset("tiny", data_dir=tmp_path, verify=False)
    assert_one_line_naming(error, file_of(tiny, tmp_path, "train_labels"))


# --------------------------------------------------------------------------- lookup


def test_lookup_order(tmp_path: Path, tiny: DatasetInfo,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    system = write_tiny(data.SYSTEM_ROOT / "tiny", tiny)
    assert data.find_dataset_dir("tiny") == system
    cache = write_tiny(data.CACHE_ROOT / "tiny", tiny, gz=False)
    assert data.find_dataset_dir("tiny") == cache
    env = write_tiny(tmp_path / "env", tiny)  # files directly in the folder
    monkeypatch.setenv(data.ENV_VAR, str(env))
    assert data.find_dataset_dir("tiny") == env
    explicit = write_tiny(tmp_path / "explicit" / "tiny", tiny)
    assert data.find_dataset_dir("tiny", data_dir=tmp_path / "explicit") == explicit
    assert data.find_dataset_dir("tiny", data_dir=str(explicit)) == explicit


def test_named_subfolder_beats_files_beside_it(tmp_path: Path, tiny: DatasetInfo) -> None:
    write_tiny(tmp_path, tiny)
    inner = write_tiny(tmp_path / "tiny", tiny)
    assert data.find_dataset_dir("tiny", data_dir=tmp_path) == inner


def test_incomplete_folder_is_skipped(tmp_path: Path, tiny: DatasetInfo, no_env: None) -> None:
    partial = write_tiny(tmp_path / "partial", tiny)
    file_of(tiny, partial, "test_labels").unlink()
    cache = write_tiny(data.CACHE_ROOT / "tiny", tiny)
    assert data.find_dataset_dir("tiny", data_dir=partial) == cache


def test_missing_dataset_lists_places(tmp_path: Path, tiny: DatasetInfo, no_env: None) -> None:
    partial = write_tiny(tmp_path / "given", tiny)
    file_of(tiny, partial, "test_labels").unlink()
    with pytest.raises(DataError) as error:
        data.load_dataset("tiny", data_dir=partial)
    message = str(error.value)
    assert "\n" not in message
    for place in (partial / "tiny", partial, data.CACHE_ROOT / "tiny", data.SYSTEM_ROOT / "tiny"):
        assert str(place) in message
    assert f"lacks {tiny.files['test_labels']}" in message
    assert "--data-dir" in message and data.ENV_VAR in message and "--download" in message


def test_missing_dataset_lists_env_folder(tmp_path: Path, tiny: DatasetInfo,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "from-env"))
    with pytest.raises(DataError) as error:
        data.find_dataset_dir("tiny")
    assert str(tmp_path / "from-env" / "tiny") in str(error.value)
    assert "unset" not in str(error.value)


# --------------------------------------------------------------------------- download


class FakeResponse(io.BytesIO):
    """What urlopen returns, enough for the loader: a readable context manager."""


def serve(monkeypatch: pytest.MonkeyPatch, pages: dict[str, bytes]) -> list[str]:
    """Route urlopen to ``pages``; a URL not in it fails like a dead mirror. Returns the log."""
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> FakeResponse:
        requested.append(url)
        if url not in pages:
            raise urllib.error.URLError("connection refused")
        return FakeResponse(pages[url])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def gz_pages(info: DatasetInfo, mirror: str, arrays: dict[str, np.ndarray],
             tmp_path: Path) -> dict[str, bytes]:
    return {f"{mirror}{info.files[role]}.gz": gzip.compress(idx_bytes(array, tmp_path))
            for role, array in arrays.items()}


def test_download_falls_back_to_next_mirror(tmp_path: Path, tiny: DatasetInfo, no_env: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    requested = serve(monkeypatch, gz_pages(tiny, tiny.mirrors[1], tiny_arrays(), tmp_path))
    ds = data.load_dataset("tiny", download=True)
    target = data.CACHE_ROOT / "tiny"
    assert ds.source_dir == target
    expected = sorted(f"{filename}.gz" for filename in tiny.files.values())
    assert sorted(path.name for path in target.iterdir()) == expected
    assert len(requested) == 8  # every file: first mirror refused, second served
    data.load_dataset("tiny", download=True)
    assert len(requested) == 8  # found in the cache: nothing fetched again


def test_download_fetches_only_missing_files(tmp_path: Path, tiny: DatasetInfo, no_env: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny(data.CACHE_ROOT / "tiny", tiny)
    file_of(tiny, data.CACHE_ROOT / "tiny", "train_images").unlink()
    requested = serve(monkeypatch, gz_pages(tiny, tiny.mirrors[0], tiny_arrays(), tmp_path))
    data.load_dataset("tiny", download=True)
    assert requested == [f"{tiny.mirrors[0]}{tiny.files['train_images']}.gz"]


def test_download_rejects_bad_checksum(tmp_path: Path, tiny: DatasetInfo, no_env: None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pages = gz_pages(tiny, tiny.mirrors[0], tiny_arrays(seed=1), tmp_path)
    serve(monkeypatch, pages)
    with pytest.raises(DataError, match="download failed.*sha256") as error:
        data.load_dataset("tiny", download=True)
    assert_one_line_naming(error, file_of(tiny, data.CACHE_ROOT / "tiny", "train_images"))
    assert list((data.CACHE_ROOT / "tiny").iterdir()) == []  # nothing half-made left behind


def test_download_not_attempted_unless_asked(tiny: DatasetInfo, no_env: None) -> None:
    # The autouse fixture turns any urlopen call into an AssertionError.
    with pytest.raises(DataError, match="not found"):
        data.load_dataset("tiny")


# --------------------------------------------------------------------------- splits


def labels_with_counts(counts: list[int], seed: int = 0) -> torch.Tensor:
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_split_on_mnist_sized_labels() -> None:
    labels = labels_with_counts(MNIST_TRAIN_COUNTS)
    train_idx, val_idx = data.stratified_split(labels, 0.1, seed=0)
    assert len(val_idx) == 6000 and len(train_idx) == 54000
    assert train_idx.dtype == val_idx.dtype == torch.int64
    together = torch.cat([train_idx, val_idx]).sort().values
    assert torch.equal(together, torch.arange(60000))
    val_counts = torch.bincount(labels[val_idx], minlength=10).tolist()
    for count, in_val in zip(MNIST_TRAIN_COUNTS, val_counts):
        assert abs(in_val - 0.1 * count) < 1


def test_split_distributes_remainders_exactly() -> None:
    labels = labels_with_counts([15] * 10)  # each class's share is 1.5
    _, val_idx = data.stratified_split(labels, 0.1, seed=3)
    assert len(val_idx) == 15
    val_counts = torch.bincount(labels[val_idx], minlength=10).tolist()
    assert val_counts == [2] * 5 + [1] * 5  # ties go to the lower classes


def test_split_is_deterministic_per_seed() -> None:
    labels = labels_with_counts([50, 70, 30])
    first = data.stratified_split(labels, 0.2, seed=7)
    again = data.stratified_split(labels, 0.2, seed=7)
    other = data.stratified_split(labels, 0.2, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])


def test_split_edge_fractions() -> None:
    labels = labels_with_counts([4, 6])
    train_idx, val_idx = data.stratified_split(labels, 0.0, seed=0)
    assert len(val_idx) == 0 and len(train_idx) == 10
    train_idx, val_idx = data.stratified_split(labels, 1.0, seed=0)
    assert len(val_idx) == 10 and len(train_idx) == 0
    with pytest.raises(ValueError):
        data.stratified_split(labels, 1.5, seed=0)


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_dataset_shape_and_determinism() -> None:
    ds = synthetic.synthetic_dataset(n_train=100, n_test=40, seed=5)
    assert ds.train_images.shape == (100, 28, 28) and ds.train_images.dtype == torch.uint8
    assert ds.train_labels.shape == (100,) and ds.train_labels.dtype == torch.int64
    assert ds.test_images.shape == (40, 28, 28) and ds.test_labels.shape == (40,)
    assert torch.bincount(ds.train_labels).tolist() == [10] * 10
    assert ds.source_dir is None and len(ds.info.class_names) == 10
    same = synthetic.synthetic_dataset(n_train=100, n_test=40, seed=5)
    other = synthetic.synthetic_dataset(n_train=100, n_test=40, seed=6)
    assert torch.equal(ds.train_images, same.train_images)
    assert torch.equal(ds.test_labels, same.test_labels)
    assert not torch.equal(ds.train_images, other.train_images)


def test_synthetic_dataset_is_learnable() -> None:
    ds = synthetic.synthetic_dataset(n_train=500, n_test=200, seed=0)
    x_train, x_test = ds.train_images.float().flatten(1), ds.test_images.float().flatten(1)
    means = torch.stack([x_train[ds.train_labels == c].mean(0) for c in range(10)])
    predicted = torch.cdist(x_test, means).argmin(1)
    assert (predicted == ds.test_labels).float().mean() > 0.9


# --------------------------------------------------------------------------- real datasets


def require(name: str) -> None:
    """Skip unless $MNISTLAB_DATA_DIR holds ``name`` (the cache is a temp folder here)."""
    if not os.environ.get(data.ENV_VAR):
        pytest.skip(f"{data.ENV_VAR} is unset")
    try:
        data.find_dataset_dir(name)
    except DataError as error:
        pytest.skip(str(error))


@pytest.mark.integration
def test_real_mnist() -> None:
    require("mnist")
    ds = data.load_dataset("mnist")
    assert ds.train_images.shape == (60000, 28, 28) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (10000, 28, 28) and len(ds.test_labels) == 10000
    assert torch.bincount(ds.train_labels).tolist() == MNIST_TRAIN_COUNTS
    _, val_idx = data.stratified_split(ds.train_labels, 0.1, seed=0)
    assert len(val_idx) == 6000


@pytest.mark.integration
def test_real_fashion_mnist() -> None:
    require("fashion-mnist")
    ds = data.load_dataset("fashion-mnist")
    assert ds.train_images.shape == (60000, 28, 28) and len(ds.train_labels) == 60000
    assert ds.test_images.shape == (10000, 28, 28) and len(ds.test_labels) == 10000
    assert torch.bincount(ds.train_labels).tolist() == [6000] * 10
    assert ds.info.class_names[9] == "Ankle boot"


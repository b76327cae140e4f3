"""Datasets: the registry, checksums, lookup, download, loading and splits.

The IDX file format is in ``idx``; generated data for tests and benchmarks in ``synthetic``.

Images are kept as uint8 tensors (N x 28 x 28) and labels as int64; scaling to floats happens
where batches are used, so the whole dataset stays small enough to live on the device.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import math
import os
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import platformdirs

from mnistlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, IdxHeader, parse_idx, read_bounded
from mnistlab.errors import DataError
from mnistlab.util.atomic import write_bytes

# torch is imported by the functions that make tensors, not here: the CLI reads the registry
# (DATASETS) for its help text at startup, and `mnistlab ls` must start without loading torch.
if TYPE_CHECKING:
    import torch

ROLES = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_SIZE = 28
ENV_VAR = "MNISTLAB_DATA_DIR"

# Module-level so tests (and packagers) can point them elsewhere; read at call time.
CACHE_ROOT = Path(platformdirs.user_cache_dir("mnistlab")) / "datasets"
SYSTEM_ROOT = Path("/usr/share/datasets")

DOWNLOAD_TIMEOUT_S = 60.0
MAX_DOWNLOAD_BYTES = 256 * 2**20  # a downloaded file of unknown size decompresses to at most this


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is made of and how to check and fetch it.

    ``files`` maps each role to its decompressed file name; on disk a file may also be gzipped
    (``name.gz``). ``sha256`` holds the digest of the decompressed bytes per role, so a
    recompressed copy (Debian's Fashion-MNIST) checks out the same as the original.
    """

    name: str
    files: dict[str, str]
    sha256: dict[str, str]
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]
    # Items per role of a registered dataset: a file's header must declare exactly these, so
    # reading it stops at the known size. Empty for folders of one's own (capped instead).
    counts: dict[str, int] = field(default_factory=dict)


# The file names of every MNIST-family set (and of a folder of one's own), per role.
STANDARD_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_STANDARD_COUNTS = {"train_images": 60_000, "train_labels": 60_000, "test_images": 10_000, "test_labels": 10_000}

# KMNIST is left out on purpose: only the digests of its .gz files are published, and the
# registry checks decompressed bytes; a guessed digest would reject every good copy.
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        files=dict(STANDARD_FILES),
        sha256={
            "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        class_names=tuple(str(digit) for digit in range(10)),
        counts=dict(_STANDARD_COUNTS),
        # yann.lecun.com now refuses plain downloads; these are the mirrors torchvision and
        # TensorFlow use.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        files=dict(STANDARD_FILES),
        sha256={
            "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        counts=dict(_STANDARD_COUNTS),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
    ),
}


@dataclass
class Dataset:
    """A loaded dataset: uint8 images (N x 28 x 28) and int64 labels (N), train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    info: DatasetInfo
    source_dir: Path | None  # None for generated data


# --------------------------------------------------------------------------- registry and lookup


def custom_dataset_info(folder: Path) -> DatasetInfo:
    """A dataset of one's own: the standard file names in ``folder``, ten classes, no checksums."""
    info = DatasetInfo(name=str(folder), files=dict(STANDARD_FILES), sha256={},
                       class_names=tuple(str(c) for c in range(10)), mirrors=())
    _, missing = present_files(info, folder)
    if missing:
        lacking = ", ".join(f"{info.files[role]}[.gz]" for role in missing)
        raise DataError(f"{folder}: not a dataset folder; it lacks {lacking}")
    return info


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}, "
                        "or a folder holding the four IDX files") from None


def find_dataset_dir(name: str, data_dir: Path | str | None = None,
                     download: bool = False) -> Path:
    """The first folder holding all files of ``name``; download into the cache if asked.

    Searched in order: ``data_dir``, ``$MNISTLAB_DATA_DIR`` (each as ``<dir>/<name>`` or
    ``<dir>`` itself), the user cache, then ``/usr/share/datasets/<name>`` (Debian).
    """
    info = dataset_info(name)
    notes = []
    for directory in _candidate_dirs(name, data_dir):
        found, missing = present_files(info, directory)
        if not missing:
            return directory
        lacking = ", ".join(info.files[role] for role in missing)
        notes.append(f"{directory} (lacks {lacking})" if found else str(directory))
    if download:
        return _download(info, CACHE_ROOT / name)
    env_note = "" if os.environ.get(ENV_VAR) else f" ({ENV_VAR} is unset)"
    raise DataError(
        f"dataset {name} not found{env_note}; looked in: {'; '.join(notes)}; pass --data-dir DIR "
        f"or set {ENV_VAR}=DIR (DIR holding {name}/ or its files, raw or .gz), or add --download"
    )


def _candidate_dirs(name: str, data_dir: Path | str | None) -> list[Path]:
    roots = [Path(root) for root in (data_dir, os.environ.get(ENV_VAR)) if root]
    candidates = [form for root in roots for form in (root / name, root)]
    return candidates + [CACHE_ROOT / name, SYSTEM_ROOT / name]


def present_files(info: DatasetInfo, directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Which of ``info``'s files ``directory`` holds, each raw or gzipped: per role, the file found
    (raw preferred: no decompression), and the roles with no file.

    Only names are looked at, nothing is read: what lookup and preflight checks need to choose a
    folder or name what it lacks.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, filename in info.files.items():
        options = (directory / filename, directory / f"{filename}.gz")
        path = next((option for option in options if option.is_file()), None)
        if path is None:
            missing.append(role)
        else:
            found[role] = path
    return found, missing


# --------------------------------------------------------------------------- download


def _download(info: DatasetInfo, target: Path) -> Path:
    """Fetch the files ``target`` lacks from the mirrors; each lands whole or not at all."""
    target.mkdir(parents=True, exist_ok=True)
    _, missing = present_files(info, target)
    for role in missing:
        _download_file(info, role, target)
    return target


def _download_file(info: DatasetInfo, role: str, target: Path) -> None:
    filename = f"{info.files[role]}.gz"
    failures = []
    for mirror in info.mirrors:
        url = mirror + filename
        try:
            raw = _fetch(url)
            _check_sha256(_gunzip(raw, url, _file_size(info, role)), info.sha256[role], url, info.name)
        # URLError and socket errors are OSErrors; a bad body shows up as DataError.
        except (OSError, http.client.HTTPException, DataError) as error:
            failures.append(f"{url}: {error}")
            continue
        write_bytes(target / filename, raw)
        return
    raise DataError(
        f"{target / filename}: download failed ({' | '.join(failures) or 'no mirrors'}); "
        f"check the network, or fetch the files by hand and pass --data-dir"
    )


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def _file_size(info: DatasetInfo, role: str) -> int:
    """The decompressed size of a registered dataset's file (header plus payload), or the cap
    on any download when the registry does not know it."""
    if role not in info.counts:
        return MAX_DOWNLOAD_BYTES
    if role.endswith("images"):
        return IdxHeader(IMAGES_MAGIC, (info.counts[role], IMAGE_SIZE, IMAGE_SIZE)).file_size
    return IdxHeader(LABELS_MAGIC, (info.counts[role],)).file_size


def _gunzip(raw: bytes, source: Path | str, limit: int) -> bytes:
    """Decompress a downloaded ``.gz`` body, refusing it past ``limit`` bytes."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{source}: corrupt gzip data ({error}); delete it and download "
                        f"or copy it again") from error
    if len(data) > limit:
        raise DataError(f"{source}: decompresses past the {limit:,} bytes it should have; refused")
    return data


# --------------------------------------------------------------------------- loading


def load_dataset(name: str = "mnist", data_dir: Path | str | None = None,
                 download: bool = False, verify: bool = True) -> Dataset:
    """Find, check and load a dataset as uint8 images and int64 labels.

    ``name`` is a registered dataset, or a folder holding the four standard IDX files of a
    dataset of your own (no published checksum, so only the structure is checked).
    """
    import torch

    if name not in DATASETS and Path(name).is_dir():
        info = custom_dataset_info(Path(name))
        source_dir = Path(name)
        verify = False
    else:
        info = dataset_info(name)
        source_dir = find_dataset_dir(name, data_dir, download)
    paths, _ = present_files(info, source_dir)
    arrays = {role: _load_file(info, role, paths[role], verify) for role in ROLES}
    for split in ("train", "test"):
        _check_pair(arrays, paths, split, len(info.class_names))
        if not len(arrays[f"{split}_images"]):
            raise DataError(f"{paths[f'{split}_images']}: holds no images; a dataset needs at least one "
                            f"{split} image: replace the file")
    return Dataset(
        train_images=torch.from_numpy(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        info=info,
        source_dir=source_dir,
    )


def _load_file(info: DatasetInfo, role: str, path: Path, verify: bool) -> np.ndarray:
    data = read_bounded(path, info.counts.get(role))
    if verify:
        _check_sha256(data, info.sha256[role], path, info.name)
    array = parse_idx(data, path)
    wanted = (3, (IMAGE_SIZE, IMAGE_SIZE)) if role.endswith("images") else (1, ())
    if (array.ndim, array.shape[1:]) != wanted:
        raise DataError(f"{path}: holds an array of shape {array.shape}, not the {role} of "
                        f"{info.name}; replace it with {info.files[role]}")
    return array


def _check_sha256(data: bytes, expected: str, source: Path | str, dataset: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{source}: sha256 of the decompressed content is {actual}, not {expected} as "
            f"{dataset} expects; the file is corrupt or from another dataset: replace it"
        )


def _check_pair(arrays: dict[str, np.ndarray], paths: dict[str, Path], split: str,
                num_classes: int) -> None:
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
    if len(images) != len(labels):
        raise DataError(
            f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels; "
            f"the two files do not belong together: replace them with a matching pair"
        )
    if len(labels) and labels.max() >= num_classes:
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0..{num_classes - 1}; "
                        f"replace the file")


# --------------------------------------------------------------------------- splits


def stratified_split(labels: torch.Tensor, fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified holdout: (train_idx, val_idx), both sorted int64 CPU tensors.

    Each class sends about ``fraction`` of its members to validation, and the total is exactly
    ``round(fraction * len(labels))``.
    """
    import torch

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"validation fraction must lie in [0, 1], got {fraction}")
    labels = labels.detach().cpu().reshape(-1)
    classes, counts = torch.unique(labels, sorted=True, return_counts=True)
    quotas = _class_quotas(counts.tolist(), fraction)
    generator = torch.Generator().manual_seed(seed)
    val_parts = []
    for cls, quota in zip(classes.tolist(), quotas):
        members = torch.nonzero(labels == cls).reshape(-1)
        picked = torch.randperm(len(members), generator=generator)[:quota]
        val_parts.append(members[picked])
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    if val_parts:
        is_val[torch.cat(val_parts)] = True
    return torch.nonzero(~is_val).reshape(-1), torch.nonzero(is_val).reshape(-1)


def _class_quotas(counts: list[int], fraction: float) -> list[int]:
    """Validation size per class: floors of the exact shares, then the leftover units to the
    largest remainders (ties to the lower class) so the sum is round(fraction * total)."""
    shares = [fraction * count for count in counts]
    quotas = [math.floor(share) for share in shares]
    leftover = round(fraction * sum(counts)) - sum(quotas)
    by_remainder = sorted(range(len(counts)), key=lambda at: (quotas[at] - shares[at], at))
    for at in by_remainder[:leftover]:
        quotas[at] += 1
    return quotas



def dataset_status(name: str, found: Dataset | DataError) -> dict[str, Any]:
    """One dataset as `mnistlab data` shows it (its table and its --json), from a load that gave the
    Dataset or the DataError saying why not."""
    if isinstance(found, DataError):
        return {"name": name, "ok": False, "train": None, "test": None, "folder": None, "error": str(found)}
    return {"name": name, "ok": True, "train": len(found.train_labels), "test": len(found.test_labels),
            "folder": None if found.source_dir is None else str(found.source_dir), "error": None}

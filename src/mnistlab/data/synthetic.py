"""Synthetic data for tests and benchmarks: a tiny MNIST-shaped dataset, and writing one to a folder.

Nothing in the package itself uses it; it lets tests train real models in seconds without a download.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mnistlab.data.datasets import IMAGE_SIZE, STANDARD_FILES, Dataset, DatasetInfo
from mnistlab.data.idx import write_idx

SYNTHETIC_INFO = DatasetInfo(
    name="synthetic",
    files={},
    sha256={},
    class_names=tuple(str(digit) for digit in range(10)),
    mirrors=(),
)


def synthetic_dataset(n_train: int = 600, n_test: int = 200, seed: int = 0) -> Dataset:
    """Tiny generated data shaped like MNIST that a small model learns in a few steps.

    Class ``c`` is a bright blob at angle 36°·c on a ring around the centre, jittered by a
    pixel or two and overlaid with noise, so classes are separable but not trivially.
    """
    generator = torch.Generator().manual_seed(seed)
    train_images, train_labels = _synthetic_split(n_train, generator)
    test_images, test_labels = _synthetic_split(n_test, generator)
    return Dataset(train_images, train_labels, test_images, test_labels,
                   info=SYNTHETIC_INFO, source_dir=None)


def _synthetic_split(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = len(SYNTHETIC_INFO.class_names)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    images = _jitter(_blob_templates(num_classes)[labels], 2, generator)
    images = images * (0.6 + 0.4 * torch.rand(n, 1, 1, generator=generator))
    images = images + 0.15 * torch.rand(n, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels.to(torch.int64)


def _jitter(images: torch.Tensor, most: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``most`` pixels each way, filling with zeros."""
    n, height, width = images.shape
    padded = torch.nn.functional.pad(images, (most, most, most, most))
    offsets = torch.randint(0, 2 * most + 1, (n, 2), generator=generator)
    rows = torch.arange(height) + offsets[:, :1]
    cols = torch.arange(width) + offsets[:, 1:]
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _blob_templates(num_classes: int) -> torch.Tensor:
    """One Gaussian blob (sigma 2.5 px) per class on a ring of radius 8 px; values in [0, 1]."""
    axis = torch.arange(IMAGE_SIZE, dtype=torch.float32)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    centre = (IMAGE_SIZE - 1) / 2
    templates = []
    for cls in range(num_classes):
        angle = 2 * math.pi * cls / num_classes
        row, col = centre + 8 * math.sin(angle), centre + 8 * math.cos(angle)
        templates.append(torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 2.5 ** 2)))
    return torch.stack(templates)


def write_dataset(dataset: Dataset, folder: Path | str, gz: bool = False) -> Path:
    """Write a dataset as the four standard IDX files, loadable with ``load_dataset(folder)``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "train_images": dataset.train_images, "train_labels": dataset.train_labels,
        "test_images": dataset.test_images, "test_labels": dataset.test_labels,
    }
    for role, tensor in tensors.items():
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{STANDARD_FILES[role]}{suffix}", tensor.numpy().astype(np.uint8), gz)
    return folder

"""Shared fixtures: tiny generated datasets and specs, never the network.

A test that trains asserts with a margin CPU rounding cannot cross, or asserts the property: tests/README.md.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from mnistlab.data.synthetic import synthetic_dataset, write_dataset

REAL_DATA_DIR = os.environ.get("MNISTLAB_DATA_DIR")
# The CPU-path probe's cache (nn/cpu_paths.py) goes to a folder of this test session's, never the
# user's cache; subprocesses (the CLI tests) inherit it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mnistlab-test-cache-")


def real_data_available(name: str = "mnist") -> bool:
    """True when MNISTLAB_DATA_DIR points at the real files (integration tests need them)."""
    if not REAL_DATA_DIR:
        return False
    root = Path(REAL_DATA_DIR)
    return any((folder / "train-images-idx3-ubyte.gz").exists() or (folder / "train-images-idx3-ubyte").exists()
               for folder in (root / name, root))


needs_mnist = pytest.mark.skipif(not real_data_available(), reason="MNISTLAB_DATA_DIR with real MNIST not set")

TINY_CNN = """\
id: tiny-cnn
description: a small CNN for tests
input: [28, 28, 1]
layers:
  - {type: Conv2D, filters: 4, kernel_size: 3, strides: 2, activation: relu}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Dropout, rate: 0.25}
  - {type: Flatten}
  - {type: Dense, units: 16, activation: relu}
  - {type: BatchNormalization}
  - {type: Dense, units: 10, activation: softmax}
training: {optimizer: adam, batch_size: 32, epochs: 2}
"""


@pytest.fixture(scope="session")
def tiny_dataset():
    return synthetic_dataset(n_train=400, n_test=100, seed=0)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory, tiny_dataset) -> Path:
    """The synthetic dataset written as IDX files, usable as `--dataset DIR`."""
    return write_dataset(tiny_dataset, tmp_path_factory.mktemp("tinydata"))


@pytest.fixture()
def tiny_spec_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CNN)
    return path


CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out of this closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def artifacts_dir(fallback: Path) -> Path:
    """Where screenshots go: $MNISTLAB_ARTIFACTS (CI keeps it), else the test's tmp_path."""
    folder = Path(os.environ.get("MNISTLAB_ARTIFACTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def browser_page(page_path: Path) -> Iterator[tuple[object, list[str]]]:
    """A headless-Chromium page showing `page_path`, and the console/page errors it raised."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_path.as_uri(), wait_until="load")
            yield page, errors
        finally:
            browser.close()

"""How big a run archive of N runs without models is (issue 22: 100 runs well under 5 MB).

A store of N runs made as the runner makes them, with what a real run holds: a zoo model's spec, its
notebook's epochs of history, the final metrics, and 10,000 test predictions (MNIST's test labels in a
fixed random order, about 1% of them wrong at random places, as a 99% model's are). Then the archive is
written as .tar.xz and .tar.gz and their sizes printed. Cheap: no training; a few seconds.

    PYTHONPATH=src python benchmarks/archive_size.py [--runs 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mnistlab import api
from mnistlab.runs.store import RunStore
from mnistlab.zoo import get_model

MODELS = ("s000-m1", "s002-m9", "s004-m2", "s003-m1")  # CNNs and an MLP; specs of different sizes
TEST_IMAGES = 10_000


def fill(store: RunStore, runs: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, TEST_IMAGES).astype(np.uint8)
    store.save_experiment("sizes", {"name": "sizes", "protocol": "test"})
    for number in range(runs):
        spec = get_model(MODELS[number % len(MODELS)])
        run = store.ensure_run("sizes", spec.id, {"model": spec.to_dict(), "precision": "fp32"}, number // len(MODELS),
                               "mnist", "test", spec.training.epochs)
        store.claim_run(run.id, "bench:1")
        for epoch in range(1, spec.training.epochs + 1):
            store.record_epoch(run.id, epoch, {name: float(rng.random()) for name in
                                               ("loss", "acc", "val_loss", "val_acc", "seconds",
                                                "train_eval_loss", "train_eval_acc")})
        predicted = labels.copy()
        wrong = rng.choice(TEST_IMAGES, size=int(rng.integers(60, 160)), replace=False)
        predicted[wrong] = (labels[wrong] + rng.integers(1, 10, len(wrong))) % 10
        final = {"test_acc": 1 - len(wrong) / TEST_IMAGES, "test_loss": float(rng.random()), "params": 123456,
                 "reference_test_acc": (spec.reference or {}).get("test_acc"), "reference_differences": [],
                 "images_per_second": float(rng.random() * 1e4), "threads": 2}
        store.finish_run(run.id, "completed", final, labels, predicted, "cpu",
                         {"mnistlab": "0.x", "torch": "2.x", "numpy": "2.x", "python": "3.11",
                          "machine": "AMD EPYC, 2 usable of 2 CPUs"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, RunStore(Path(scratch) / "runs") as store:
        fill(store, args.runs)
        for suffix in (".tar.xz", ".tar.gz"):
            done = api.export_archive("sizes", Path(scratch) / f"sizes{suffix}", store)
            print(f"{done.runs} runs without models, {suffix}: {done.bytes:,} bytes ({done.bytes / 1e6:.3f} MB, "
                  f"{done.bytes / done.runs / 1e3:.1f} kB a run)")


if __name__ == "__main__":
    main()

"""How long ``write_report`` takes on a large experiment (not a test).

Builds a synthetic store the way the runner writes one (100 models x 10 seeds x 12 epochs by
default, with 10,000 test predictions and a small weights file per run) in a temp folder, then
times ``write_report`` on it. Target: under 10 s on a 2-core CPU.

    PYTHONPATH=src python benchmarks/bench_report.py [--models 100] [--seeds 10] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import shutil
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from mnistlab.report import write_report
from mnistlab.runs.store import RunStore

EXPERIMENT = "bench"
LAYERS = {"conv2d_1": (8, 1, 3, 3), "conv2d_2": (16, 8, 3, 3), "dense_1": (32, 256), "dense_2": (10, 32)}
DIVERGED_SHARE = 0.02  # a few runs diverge, as real sweeps do


def model_spec(model: str, epochs: int) -> dict:
    return {"id": model, "description": f"synthetic benchmark model {model}", "input": [28, 28, 1],
            "layers": [{"type": "Conv2D", "filters": 8, "kernel_size": 3}, {"type": "Flatten"},
                       {"type": "Dense", "units": 10, "activation": "softmax"}],
            "training": {"optimizer": "adam", "batch_size": 128, "epochs": epochs}}


def history(rng: np.random.Generator, final_acc: float, epochs: int, diverged: bool) -> list[dict[str, float]]:
    """Per-epoch metrics rising towards ``final_acc`` with noise; NaN from mid-run if diverged."""
    rows = []
    for epoch in range(1, epochs + 1):
        progress = 1 - math.exp(-epoch / 3)
        acc = final_acc * progress + 0.1 * (1 - progress) + rng.normal(0, 0.003)
        val_acc = acc - 0.002 + rng.normal(0, 0.003)
        row = {"loss": -math.log(max(acc, 1e-3)) + 0.02, "acc": acc, "val_loss": -math.log(max(val_acc, 1e-3)) + 0.03,
               "val_acc": val_acc, "seconds": 2.0 + rng.normal(0, 0.05)}
        if diverged and epoch > epochs // 2:
            row = {key: (math.nan if key != "seconds" else value) for key, value in row.items()}
        rows.append(row)
    return rows


def add_run(store: RunStore, model: str, seed: int, epochs: int, labels: np.ndarray, quality: float,
            rng: np.random.Generator) -> None:
    spec = {"model": model_spec(model, epochs), "train_limit": None, "precision": "fp32", "val_fraction": 0.1}
    run = store.ensure_run(EXPERIMENT, model, spec=spec, seed=seed, dataset="mnist", protocol="split",
                           epochs_planned=epochs)
    store.claim_run(run.id, "bench:1")
    diverged = rng.random() < DIVERGED_SHARE
    for epoch, metrics in enumerate(history(rng, quality, epochs, diverged), start=1):
        store.record_epoch(run.id, epoch, metrics)
    predicted = None
    if not diverged:
        predicted = labels.copy()
        wrong = rng.random(len(labels)) > quality + rng.normal(0, 0.001)
        predicted[wrong] = (labels[wrong] + rng.integers(1, 10, int(wrong.sum()))) % 10
    test_acc = None if predicted is None else float(np.mean(predicted == labels))
    final = {"test_loss": None if diverged else 0.03, "test_acc": test_acc, "diverged_epoch": epochs // 2 + 1 if diverged else None,
             "images_per_second": 20000.0, "params": 12345, "description": f"synthetic benchmark model {model}",
             "reference_test_acc": None, "reference_notebook": None}
    store.finish_run(run.id, "diverged" if diverged else "completed", final=final,
                     labels=None if diverged else labels, predicted=predicted, device="cpu", versions={})
    folder = store.run_dir(run.id)
    save_file({name: rng.normal(0, 0.1, shape).astype(np.float32) for name, shape in LAYERS.items()},
              folder / "weights.safetensors")
    (folder / "weights.json").write_text(json.dumps({"layers": list(LAYERS)}))


def build_store(root: Path, models: int, seeds: int, epochs: int, test_size: int) -> RunStore:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, test_size).astype(np.uint8)
    store = RunStore(root)
    names = [f"bench-m{index:03d}" for index in range(1, models + 1)]
    store.save_experiment(EXPERIMENT, {"name": EXPERIMENT, "description": "report benchmark", "dataset": "mnist",
                                       "protocol": "split", "defaults": {"epochs": epochs, "batch_size": 128},
                                       "models": names, "seeds": list(range(seeds))})
    for index, model in enumerate(names):
        quality = 0.95 + 0.045 * index / max(models - 1, 1)
        for seed in range(seeds):
            add_run(store, model, seed, epochs, labels, quality, rng)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="times to write the report; the best is reported")
    parser.add_argument("--dir", type=Path, help="where the temporary store goes (default: the system's)")
    parser.add_argument("--out", type=Path, help="also keep the report in this folder, to look at")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="mnistlab-bench-") as temp:
        started = time.perf_counter()
        store = build_store(Path(temp) / "runs", args.models, args.seeds, args.epochs, args.test_size)
        print(f"store: {args.models * args.seeds} runs ({args.models} models x {args.seeds} seeds x "
              f"{args.epochs} epochs) built in {time.perf_counter() - started:.1f} s under {temp}")
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            paths = write_report(store, EXPERIMENT, Path(temp) / "report")
            timings.append(time.perf_counter() - started)
        store.close()
        if args.out is not None:
            shutil.copytree(paths.html.parent, args.out, dirs_exist_ok=True)
        size = paths.html.stat().st_size / 1e6
        print(f"write_report: best {min(timings):.2f} s, all {', '.join(f'{t:.2f}' for t in timings)} s "
              f"(HTML {size:.1f} MB, target < 10 s on 2 CPU cores)")


if __name__ == "__main__":
    main()

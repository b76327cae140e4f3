"""GPU benchmark: mnistlab single-seed and bundled vs plain PyTorch and Lightning, on one GPU, in one run.

Sections (all by default, or pick with --sections):
  models   per-model training images/s: mnistlab one seed, mnistlab a bundle of --bundle seeds,
           plain PyTorch (DataLoader, torch_peer.py), PyTorch Lightning (lightning_peer.py)
  scaling  bundle scaling: images/s (all seeds together) for K = 1, 2, 4, 8, 16, 32 seeds of s000-m1 and s004-m2
  epoch    one s000-m1 epoch on all 60,000 images (training steps only), and the wall time of that epoch
  to-99    time to 99.0% test accuracy for the fastest zoo model that reaches it
  options  the engine's options, one seed of s000-m1, s000-m7 and s004-m2 under each: precision fp32 /
           tf32 / bf16, torch.compile (default and "reduce-overhead", i.e. CUDA graphs), deterministic
           kernels; what the defaults and the README's advice are chosen by
  study    the whole seed study (35 models × 3 seeds at the notebooks' epochs): per-model epoch times
           measured on a part of an epoch and extrapolated to the notebooks' epochs (said so in the output)

Every mnistlab figure is the engine's own `images_per_second` (training steps only, epochs after the
first, device synchronised once per epoch); the peers are timed per epoch after a warm-up epoch.
Each measurement runs --repeats times and the median is reported, with every repeat kept in the JSON.

    python benchmarks/bench_gpu.py --out benchmarks/results-gpu.json --markdown benchmarks/results-gpu.md
    python benchmarks/bench_gpu.py --device cpu --quick --out /tmp/gpu-smoke.json   # smoke test, any machine

On the GPU machine mnistlab's dependencies that are missing there are installed from a wheel folder
carried with the tree (benchmarks/gpu_wheels.sh makes it; benchmarks/README.md has the commands).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the peers beside this file
try:
    import mnistlab  # noqa: F401
except ImportError:  # src layout, run from a checkout
    sys.path.insert(0, str(HERE.parent / "src"))

SECTIONS = ("models", "scaling", "epoch", "to-99", "options", "study")
OPTION_MODELS = ["s000-m1", "s000-m7", "s004-m2"]  # small models: where per-step overhead shows
# Each variant: TrainConfig fields over the defaults (fp32, no compile, default kernels).
OPTION_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32 (default)": {}, "tf32": {"precision": "tf32"}, "bf16": {"precision": "bf16"},
    "compile": {"compile": True}, "compile reduce-overhead": {"compile": "reduce-overhead"},
    "deterministic": {"deterministic": True},
}
DEFAULT_MODELS = ["s000-m1", "s000-m7", "s002-m1", "s002-m8", "s003-m1", "s004-m2"]
SCALING_MODELS = ["s000-m1", "s004-m2"]
SCALING_K = [1, 2, 4, 8, 16, 32]
TO_99_CANDIDATES = ["s002-m1", "s002-m3", "s003-m2"]  # cheapest zoo models whose notebooks passed 99%
TARGET_ACC = 0.99
STUDY_SEEDS = 3


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def repeated(repeats: int, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a measurement `repeats` times; the median images/s, with every repeat kept."""
    runs = [measure() for _ in range(repeats)]
    rates = [run["images_per_second"] for run in runs]
    return {"images_per_second": median(rates), "repeats": runs}


def configs(seeds: list[int], epochs: int, images: int | None, device: str, protocol: str = "test",
            **options: Any) -> list[Any]:
    from mnistlab.training.config import TrainConfig

    return [TrainConfig(epochs=epochs, seed=seed, train_limit=images, device=device, validate_on=protocol,  # type: ignore[arg-type]
                        **options) for seed in seeds]


def mnistlab_rate(spec: Any, dataset: Any, seeds: list[int], epochs: int, images: int | None, device: str,
                  **options: Any) -> dict[str, Any]:
    """One seed through engine.fit, several through bundle.fit_bundle: the engine's own images/s."""
    from mnistlab.training.engine import fit

    started = time.perf_counter()
    if len(seeds) == 1:
        histories = [fit(spec, dataset, configs(seeds, epochs, images, device, **options)[0])]
    else:
        from mnistlab.training.bundle import fit_bundle

        histories = fit_bundle(spec, dataset, configs(seeds, epochs, images, device, **options))
    first = histories[0]
    return {"images_per_second": first.images_per_second, "note": first.images_per_second_note,
            "seeds": len(seeds), "images": first.train_images, "epochs": epochs,
            "epoch_seconds": [[e["seconds"] for e in h.epochs] for h in histories],
            "wall_seconds": time.perf_counter() - started}


def peer_images(dataset: Any, images: int | None) -> tuple[Any, Any]:
    count = len(dataset.train_labels) if images is None else images
    return dataset.train_images[:count], dataset.train_labels[:count]


def section_models(args: argparse.Namespace, dataset: Any) -> list[dict[str, Any]]:
    from lightning_peer import train_lightning
    from torch_peer import train_dataloader

    from mnistlab.zoo import get_model

    rows = []
    for model_id in args.models:
        spec = get_model(model_id)
        batch = spec.training.batch_size
        x, y = peer_images(dataset, args.images)
        row: dict[str, Any] = {"model": model_id, "batch_size": batch}
        row["mnistlab"] = repeated(args.repeats, lambda: mnistlab_rate(spec, dataset, [0], 3, args.images, args.device))
        row["mnistlab_bundle"] = repeated(args.repeats, lambda: mnistlab_rate(
            spec, dataset, list(range(args.bundle)), 3, args.images, args.device))
        row["torch"] = repeated(args.repeats, lambda: train_dataloader(spec, x, y, batch, 2, args.device))
        try:
            row["lightning"] = repeated(args.repeats, lambda: train_lightning(spec, x, y, batch, 2, args.device))
        except ImportError as error:
            row["lightning"] = {"images_per_second": math.nan, "error": f"lightning not installed: {error}"}
        rows.append(row)
        print(f"models: {model_id} " + ", ".join(
            f"{key} {row[key]['images_per_second']:,.0f}/s" for key in ("mnistlab", "mnistlab_bundle", "torch", "lightning")),
            flush=True)
    return rows


def section_scaling(args: argparse.Namespace, dataset: Any) -> list[dict[str, Any]]:
    from mnistlab.zoo import get_model

    rows = []
    for model_id in SCALING_MODELS:
        spec = get_model(model_id)
        for k in args.scaling_k:
            result = repeated(args.repeats, lambda: mnistlab_rate(spec, dataset, list(range(k)), 3, args.images, args.device))
            rows.append({"model": model_id, "seeds": k, **result})
            print(f"scaling: {model_id} K={k} {result['images_per_second']:,.0f} images/s (all seeds)", flush=True)
    return rows


def section_epoch(args: argparse.Namespace, dataset: Any) -> dict[str, Any]:
    """s000-m1 on all training images: training seconds per epoch (after the first) and wall seconds."""
    from mnistlab.zoo import get_model

    spec = get_model("s000-m1")
    images = None if not args.quick else args.images
    result = repeated(args.repeats, lambda: mnistlab_rate(spec, dataset, [0], 3, images, args.device))
    count = result["repeats"][0]["images"]
    result["train_seconds_per_epoch"] = count / result["images_per_second"]
    result["wall_seconds_per_epoch"] = median([statistics.median(r["epoch_seconds"][0][1:]) for r in result["repeats"]])
    print(f"epoch: s000-m1 {count:,} images: {result['train_seconds_per_epoch']:.2f} s training, "
          f"{result['wall_seconds_per_epoch']:.2f} s with validation", flush=True)
    return result


def _train_until(spec: Any, dataset: Any, device: str, max_epochs: int, images: int | None) -> dict[str, Any]:
    """Train one seed, testing after every epoch; training seconds (device-synchronised) until TARGET_ACC."""
    import torch

    from mnistlab.nn.build import build_model
    from mnistlab.training.config import TrainConfig, resolve_device
    from mnistlab.training.engine import evaluate, place_data, train_epoch
    from mnistlab.training.optim import make_optimizer

    target = resolve_device(device)
    data = place_data(dataset, TrainConfig(validate_on="test", train_limit=images), target)
    model = build_model(spec, seed=0).to(target)
    optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)
    trained, curve = 0.0, []
    for epoch in range(1, max_epochs + 1):
        if target.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss_sum, _ = train_epoch(model, optimizer, data, spec.training.batch_size, 0, epoch, "fp32")
        loss_sum.item()  # synchronises the device
        trained += time.perf_counter() - started
        _, correct, _ = evaluate(model, data.test_x, data.test_y, "fp32")
        acc = correct.item() / len(data.test_y)
        curve.append({"epoch": epoch, "train_seconds": trained, "test_acc": acc})
        if acc >= TARGET_ACC:
            return {"model": spec.id, "reached": True, "epochs": epoch, "train_seconds": trained, "curve": curve}
    return {"model": spec.id, "reached": False, "epochs": max_epochs, "train_seconds": trained, "curve": curve}


def section_to_99(args: argparse.Namespace, dataset: Any) -> dict[str, Any]:
    from mnistlab.zoo import get_model

    results = []
    for model_id in TO_99_CANDIDATES:
        spec = get_model(model_id)
        result = _train_until(spec, dataset, args.device, 1 if args.quick else spec.training.epochs, args.images if args.quick else None)
        results.append(result)
        print(f"to-99: {model_id} " + (f"{result['train_seconds']:.2f} s of training ({result['epochs']} epochs, "
              "first-epoch warm-up included)" if result["reached"] else
              f"did not reach {TARGET_ACC:.1%} in {result['epochs']} epochs"), flush=True)
    reached = [r for r in results if r["reached"]]
    return {"candidates": results, "fastest": min(reached, key=lambda r: r["train_seconds"]) if reached else None}


def section_options(args: argparse.Namespace, dataset: Any) -> list[dict[str, Any]]:
    """One seed per model under each engine option; an option the device cannot do is recorded as refused."""
    from mnistlab.errors import MnistlabError
    from mnistlab.zoo import get_model

    rows = []
    for model_id in OPTION_MODELS:
        spec = get_model(model_id)
        for name, options in OPTION_VARIANTS.items():
            try:
                result = repeated(args.repeats, lambda: mnistlab_rate(spec, dataset, [0], 3, args.images, args.device,
                                                                      **options))
            except MnistlabError as error:  # e.g. tf32 on a CPU
                result = {"images_per_second": math.nan, "refused": str(error)}
            rows.append({"model": model_id, "variant": name, "options": options, **result})
            shown = f"{result['images_per_second']:,.0f} images/s" if "refused" not in result else result["refused"]
            print(f"options: {model_id} {name}: {shown}", flush=True)
    return rows


def section_study(args: argparse.Namespace, dataset: Any) -> dict[str, Any]:
    """Per model: a bundle of 3 seeds trained 2 short epochs; the second's time per image, scaled to the
    notebook's epochs on 60,000 images (validation and test passes estimated at 1/3 of a training pass)."""
    from mnistlab.zoo import zoo_models

    rows, total = [], 0.0
    full = len(dataset.train_labels)
    models = zoo_models()
    if args.quick:  # a smoke test: two models, not the study (s002-m10 alone is hours on a CPU)
        models = {model_id: models[model_id] for model_id in args.models}
    for model_id, spec in models.items():
        images = args.study_images
        result = mnistlab_rate(spec, dataset, list(range(STUDY_SEEDS)), 2, images, args.device)
        per_image = 1.0 / result["images_per_second"]  # seconds per image for all 3 seeds together
        epochs = (spec.reference or {}).get("epochs") or spec.training.epochs
        evaluation = len(dataset.test_labels) * STUDY_SEEDS / 3  # inference ≈ a third of a training step
        seconds = epochs * (full * STUDY_SEEDS + evaluation) * per_image
        total += seconds
        rows.append({"model": model_id, "epochs": epochs, "measured_images": result["images"],
                     "images_per_second": result["images_per_second"], "extrapolated_seconds": seconds})
        print(f"study: {model_id} {result['images_per_second']:,.0f} images/s ×{STUDY_SEEDS} seeds → "
              f"{seconds:.1f} s for {epochs} epochs", flush=True)
    return {"models": rows, "extrapolated_total_seconds": total, "complete": len(rows) == len(zoo_models()), "method": (
        f"extrapolated: each model measured as a bundle of {STUDY_SEEDS} seeds on {args.study_images:,} images "
        "(second epoch), scaled to the notebook's epochs on the whole training set, plus test passes at a third "
        "of a training step's cost")}


def machine(device: str) -> dict[str, Any]:
    import torch

    from mnistlab.util.machine import describe

    info = {"device": device, "processor": describe(device), "torch": torch.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    return info


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results['machine']['processor']} (torch {results['machine']['torch']}, "
             f"CUDA {results['machine']['cuda']}); medians of {results['repeats']} repeats.", ""]
    if "models" in results:
        lines += ["| model | batch | mnistlab 1 seed | mnistlab bundle (all seeds) | PyTorch DataLoader | Lightning |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in results["models"]:
            cells = [f"{row[key]['images_per_second']:,.0f}" for key in ("mnistlab", "mnistlab_bundle", "torch", "lightning")]
            lines.append(f"| {row['model']} | {row['batch_size']} | " + " | ".join(cells) + " |")
        lines.append("")
    if "scaling" in results:
        lines += ["| model | seeds K | images/s (all seeds) | × one seed |", "|---|---:|---:|---:|"]
        base = {r["model"]: r["images_per_second"] for r in results["scaling"] if r["seeds"] == 1}
        for row in results["scaling"]:
            ratio = row["images_per_second"] / base[row["model"]] if row["model"] in base else math.nan
            lines.append(f"| {row['model']} | {row['seeds']} | {row['images_per_second']:,.0f} | {ratio:.2f} |")
        lines.append("")
    if "epoch" in results:
        epoch = results["epoch"]
        lines += [f"s000-m1 epoch: {epoch['train_seconds_per_epoch']:.2f} s of training steps, "
                  f"{epoch['wall_seconds_per_epoch']:.2f} s with validation.", ""]
    if "to-99" in results:
        fastest = results["to-99"]["fastest"]
        lines += [f"Time to {TARGET_ACC:.1%} test accuracy: " + (
            f"{fastest['model']}, {fastest['train_seconds']:.2f} s of training ({fastest['epochs']} epochs)."
            if fastest else "no candidate reached it."), ""]
    if "options" in results:
        names = list(OPTION_VARIANTS)
        lines += ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for model_id in OPTION_MODELS:
            found = {row["variant"]: row for row in results["options"] if row["model"] == model_id}
            cells = ["refused" if "refused" in found.get(name, {}) else
                     f"{found[name]['images_per_second']:,.0f}" if name in found else "–" for name in names]
            lines.append(f"| {model_id} | " + " | ".join(cells) + " |")
        lines += ["", "Images/s of one seed (training steps, epochs 2+); refused: the device cannot do it.", ""]
    if "study" in results:
        study = results["study"]
        scope = "35 models" if study["complete"] else f"only {len(study['models'])} models (--quick)"
        lines += [f"Seed study ({scope} × {STUDY_SEEDS} seeds, notebook epochs): "
                  f"{study['extrapolated_total_seconds'] / 60:.1f} min, {study['method']}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--bundle", type=int, default=8, help="seeds in the models section's bundle")
    parser.add_argument("--scaling-k", nargs="+", type=int, default=SCALING_K)
    parser.add_argument("--images", type=int, default=None, help="training images per epoch (default: all 60,000)")
    parser.add_argument("--study-images", type=int, default=12_800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny epochs, one repeat, small K")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: MNISTLAB_DATA_DIR)")
    parser.add_argument("--out", default=str(HERE / "results-gpu.json"))
    parser.add_argument("--markdown", default=None, help="also write the Markdown tables here")
    args = parser.parse_args()
    if args.quick:
        args.images, args.study_images, args.repeats = 512, 512, 1
        args.scaling_k, args.bundle, args.models = [1, 2], 2, args.models[:2]

    from mnistlab.data.datasets import load_dataset

    dataset = load_dataset("mnist", data_dir=args.data_dir)
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(args.device), "repeats": args.repeats, "quick": args.quick}
    runners = {"models": section_models, "scaling": section_scaling, "epoch": section_epoch,
               "to-99": section_to_99, "options": section_options, "study": section_study}
    for section in args.sections:
        results[section] = runners[section](args, dataset)
    results["wall_seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results) + "\n")
    print(markdown(results))
    print(f"wrote {args.out} ({results['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU sections of bench_train.py: seed bundles, a busy machine, memory-bound models.

    python benchmarks/bench_train.py --section memory-bound [--repeats 3]
    python benchmarks/bench_train.py --section busy [--repeats 3] [--keras-python /path/to/python]
    python benchmarks/bench_train.py --section bundles [--repeats 3]
    python benchmarks/bench_train.py --section spin [--repeats 2]

Every measurement is its own subprocess, and the variants of one comparison run interleaved
(A, B, A, B, ...) so that a shared machine's load falls on both alike; each row reports the median
of --repeats and every single figure. Short epochs (train_limit) keep a section to a few minutes.

- memory-bound: s000-m6 and s000-m9, "before" (build.FUSED off and libgomp's default spinning,
  i.e. GOMP_SPINCOUNT=300000, as mnistlab was before fused.py and its short spin count) against
  "after" (mnistlab's defaults), images/s of engine.train_epoch.
- busy: s000-m1, idle and with one core held by a `while True: pass` process of the same niceness,
  for mnistlab with libgomp's default spin, mnistlab's default (the spin count mnistlab/__init__.py chooses),
  passive waiting (OMP_WAIT_POLICY=PASSIVE), and Keras 3 on TensorFlow;
  the share is busy ÷ idle images/s; plus s000-m6 (3,072 images) idle under each mnistlab policy.
- spin: s000-m1 and s004-m2 under each of SPIN_SWEEP's spin counts, idle and with one core busy
  (what mnistlab's choice of GOMP_SPINCOUNT at import rests on).
- bundles: a single-model batch-size sweep for s000-m7 (the ceiling a bundle could reach), then 8
  seeds of s000-m7 and of s004-m2 trained with `mnistlab.training.bundle.fit_bundle` against 8 sequential
  `engine.fit` runs of the same configs: training images/s (steps only, epochs 2+, as History
  reports it), and in the JSON also the wall-clock rate with validation and test evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
RESULT_PREFIX = "RESULT "
# libgomp's own default spin count: mnistlab before it set a short one (mnistlab/__init__.py; it does
# so only when neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is in the environment).
SPIN_ENV = {"GOMP_SPINCOUNT": "300000"}
# No spinning at all: the remedy mnistlab used before the short spin count measured better.
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
sys.path.insert(0, str(SRC))
from mnistlab import BUSY_SPINCOUNT, IDLE_SPINCOUNT  # the defaults, from their one home

DEFAULT_LABEL = f"mnistlab default (GOMP_SPINCOUNT {IDLE_SPINCOUNT} idle / {BUSY_SPINCOUNT} busy at start)"
# The idle choice kept while load arrives later (mnistlab chose when the machine was idle).
KEPT_LABEL = f"mnistlab idle choice kept (GOMP_SPINCOUNT={IDLE_SPINCOUNT})"


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- workers (run in their own process) -----------------------------------------------------


def worker_fit(args: argparse.Namespace) -> None:
    """8 seeds (--seeds) of one model: `fit_bundle` once, or `fit` per seed; wall time of all."""
    import torch

    from mnistlab.data.datasets import load_dataset
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import fit
    from mnistlab.zoo import get_model

    spec = get_model(args.model)
    dataset = load_dataset("mnist")
    configs = [TrainConfig(seed=seed, device="cpu", epochs=args.epochs, train_limit=args.images)
               for seed in range(args.seeds)]
    started = time.perf_counter()
    if args.mode == "bundle":
        from mnistlab.training.bundle import fit_bundle

        histories = fit_bundle(spec, dataset, configs)
    else:
        histories = [fit(spec, dataset, config) for config in configs]
    seconds = time.perf_counter() - started
    # Training steps only, epochs 2+ (as History.images_per_second): a bundle's History already
    # reports K x images / s; sequential runs add up as total images / total training seconds.
    rates = [h.images_per_second for h in histories]
    train_rate = rates[0] if args.mode == "bundle" else len(rates) / sum(1 / r for r in rates)
    emit({"model": spec.id, "mode": args.mode, "seeds": args.seeds, "images": args.images, "epochs": args.epochs,
          "seconds": seconds, "images_per_second": train_rate,
          "wall_images_per_second": args.seeds * args.images * args.epochs / seconds,
          "note": "images_per_second: training steps only, epochs 2+; wall_images_per_second: everything "
                  "(validation every epoch, the test set once per seed, building, stacking)",
          "threads": torch.get_num_threads(), "test_acc": [h.test_acc for h in histories]})


# --- orchestration --------------------------------------------------------------------------


def run(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def base_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.update(extra or {})
    return env


def mnistlab_cmd(model: str, images: int, epochs: int, batch_size: int | None = None,
                 unfused: bool = False) -> list[str]:
    command = [sys.executable, str(HERE / "bench_train.py"), "--worker", "mnistlab", "--model", model,
               "--images", str(images), "--epochs", str(epochs)]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    return command + (["--unfused"] if unfused else [])


class Hog:
    """One core held by a busy loop (same niceness as us) while the block runs."""

    def __enter__(self) -> "Hog":
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def interleaved(variants: dict[str, tuple[list[str], dict[str, str], bool]], repeats: int, timeout: float,
                key: str = "images_per_second") -> dict[str, dict[str, Any]]:
    """Run each variant `repeats` times, round-robin; {variant: {median, all, runs}}."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, (command, env, hog) in variants.items():
            if hog:
                with Hog():
                    result = run(command, env, timeout)
            else:
                result = run(command, env, timeout)
            runs[name].append(result)
            shown = f"{result[key]:,.0f}" if key in result else result.get("error", "?")
            print(f"  [{repeat + 1}/{repeats}] {name:32s} {shown}", flush=True)
    out = {}
    for name, results in runs.items():
        values = [r[key] for r in results if key in r]
        out[name] = {"median": statistics.median(values) if values else None, "all": values,
                     "errors": [r["error"] for r in results if "error" in r]}
    return out


def section_memory_bound(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    rows = {}
    for model, images, epochs in (("s000-m6", 3072, 2), ("s000-m9", 512, 2)):
        print(f"{model}: {images} images x {epochs} timed epochs (+1 warm-up)", flush=True)
        rows[model] = interleaved({
            "before (unfused, spinning)": (mnistlab_cmd(model, images, epochs, unfused=True),
                                           base_env(threads, SPIN_ENV), False),
            "unfused, mnistlab's waiting (fusion alone)": (mnistlab_cmd(model, images, epochs, unfused=True),
                                                base_env(threads), False),
            "after (fused, mnistlab default)": (mnistlab_cmd(model, images, epochs), base_env(threads), False),
        }, args.repeats, args.timeout)
    return rows


def section_busy(args: argparse.Namespace, threads: int, workdir: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from common import architecture_json
    from mnistlab.data.datasets import load_dataset
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import place_data
    from mnistlab.zoo import get_model

    model, images, epochs = "s000-m1", 3840, 2
    spec = get_model(model)
    arch_file = workdir / f"{model}.json"
    arch_file.write_text(json.dumps(architecture_json(spec)))
    full = place_data(load_dataset("mnist"), TrainConfig(train_limit=images), torch.device("cpu"))
    np.save(workdir / "x.npy", full.train_x.numpy())
    np.save(workdir / "y.npy", full.train_y.numpy())
    keras = [str(args.keras_python), str(HERE / "keras_peer.py"), "--arch", str(arch_file), "--threads",
             str(threads), "--x", str(workdir / "x.npy"), "--y", str(workdir / "y.npy"), "--epochs", str(epochs)]
    variants: dict[str, tuple[list[str], dict[str, str], bool]] = {}
    for label, env in (("mnistlab spinning (before)", SPIN_ENV), (DEFAULT_LABEL, {}),
                       (KEPT_LABEL, {"GOMP_SPINCOUNT": IDLE_SPINCOUNT}),
                       ("mnistlab passive (OMP_WAIT_POLICY=PASSIVE)", PASSIVE_ENV)):
        variants[f"{label}, idle"] = (mnistlab_cmd(model, images, epochs), base_env(threads, env), False)
        variants[f"{label}, one core busy"] = (mnistlab_cmd(model, images, epochs), base_env(threads, env), True)
        # What the waiting costs a memory-bound model with many short parallel regions, on an idle machine.
        variants[f"{label}, s000-m6 idle"] = (mnistlab_cmd("s000-m6", 3072, epochs), base_env(threads, env), False)
    if args.keras_python.exists():
        variants["keras, idle"] = (keras, base_env(threads), False)
        variants["keras, one core busy"] = (keras, base_env(threads), True)
    else:
        print(f"  no Keras interpreter at {args.keras_python}: Keras left out", flush=True)
    print(f"{model}: {images} images x {epochs} timed epochs (+1 warm-up), {threads} threads", flush=True)
    rows = interleaved(variants, args.repeats, args.timeout)
    shares = {}
    for label in ("mnistlab spinning (before)", DEFAULT_LABEL, KEPT_LABEL, "mnistlab passive (OMP_WAIT_POLICY=PASSIVE)",
                  "keras"):
        idle, busy = rows.get(f"{label}, idle"), rows.get(f"{label}, one core busy")
        if idle and busy and idle["median"] and busy["median"]:
            shares[label] = busy["median"] / idle["median"]
    return {"model": model, "rows": rows, "busy_share": shares}


# The spin counts swept (libgomp's iterations; PASSIVE: no spinning) by the spin section.
SPIN_SWEEP = ("1000", "10000", "30000", "100000", "300000", "PASSIVE")


def section_spin(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Each spin count, idle and with one core busy, on a conv model and the spin-sensitive MLP:
    the measurements behind mnistlab's idle / busy choice (mnistlab/__init__.py)."""
    rows: dict[str, Any] = {}
    for model, images in (("s000-m1", 3840), ("s004-m2", 25600)):
        print(f"{model}: {images} images x 2 timed epochs (+1 warm-up), {threads} threads", flush=True)
        variants: dict[str, tuple[list[str], dict[str, str], bool]] = {}
        for spin in SPIN_SWEEP:
            env = PASSIVE_ENV if spin == "PASSIVE" else {"GOMP_SPINCOUNT": spin}
            for busy in (False, True):
                variants[f"{spin}, {'one core busy' if busy else 'idle'}"] = (
                    mnistlab_cmd(model, images, 2), base_env(threads, env), busy)
        rows[model] = interleaved(variants, args.repeats, args.timeout)
    return rows


def section_bundles(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print("s000-m7 batch-size sweep (single model): the ceiling a bundle could reach", flush=True)
    sweep = {f"batch {b}": (mnistlab_cmd("s000-m7", 8192, 2, batch_size=b), base_env(threads), False)
             for b in (128, 256, 512, 1024, 2048)}
    out["sweep"] = interleaved(sweep, args.repeats, args.timeout)
    for model, images in (("s000-m7", 3840), ("s004-m2", 12800)):
        print(f"{model}: 8 seeds x {images} images x 3 epochs (the first untimed), bundled vs sequential", flush=True)
        variants = {mode: ([sys.executable, str(HERE / "cpu_sections.py"), "--worker", "fit", "--mode", mode,
                            "--model", model, "--seeds", "8", "--images", str(images), "--epochs", "3"],
                           base_env(threads), False) for mode in ("sequential", "bundle")}
        out[model] = interleaved(variants, args.repeats, args.timeout)
        seq, bun = out[model]["sequential"]["median"], out[model]["bundle"]["median"]
        out[model]["speedup"] = bun / seq if seq and bun else None
    return out


def markdown(section: str, results: dict[str, Any]) -> list[str]:
    def cell(entry: dict[str, Any]) -> str:
        if entry["median"] is None:
            return "failed: " + "; ".join(e.splitlines()[-1] for e in entry["errors"])[:200]
        return f"{entry['median']:,.0f} ({', '.join(f'{v:,.0f}' for v in entry['all'])})"

    lines = ["| measurement | images/s, median (all runs) |", "|---|---:|"]
    if section == "memory-bound":
        for model, rows in results.items():
            for name, entry in rows.items():
                lines.append(f"| {model} {name} | {cell(entry)} |")
            before, after = rows["before (unfused, spinning)"]["median"], rows["after (fused, mnistlab default)"]["median"]
            if before and after:
                lines.append(f"| **{model} after ÷ before** | **{after / before:.2f}×** |")
    elif section == "spin":
        lines = ["| model | spin count | idle images/s (runs) | one core busy images/s (runs) | busy ÷ idle |",
                 "|---|---|---:|---:|---:|"]
        for model, rows in results.items():
            for spin in SPIN_SWEEP:
                idle, busy = rows[f"{spin}, idle"], rows[f"{spin}, one core busy"]
                share = (f"{100 * busy['median'] / idle['median']:.0f}%" if idle["median"] and busy["median"] else "—")
                lines.append(f"| {model} | {spin} | {cell(idle)} | {cell(busy)} | {share} |")
    elif section == "busy":
        for name, entry in results["rows"].items():
            model = "" if "s000-m6" in name else f"{results['model']} "
            lines.append(f"| {model}{name} | {cell(entry)} |")
        for label, share in results["busy_share"].items():
            lines.append(f"| **{label}: busy ÷ idle** | **{100 * share:.0f}%** |")
    else:
        for name, entry in results["sweep"].items():
            lines.append(f"| s000-m7 single model, {name} | {cell(entry)} |")
        for model in ("s000-m7", "s004-m2"):
            for mode in ("sequential", "bundle"):
                lines.append(f"| {model} 8 seeds {mode} | {cell(results[model][mode])} |")
            speedup = results[model].get("speedup")
            lines.append(f"| **{model} bundle ÷ sequential** | **{speedup:.2f}×** |" if speedup
                         else f"| {model} bundle ÷ sequential | — |")
    return lines


def main(args: argparse.Namespace) -> int:
    """Entry from bench_train.py --section."""
    sys.path.insert(0, str(HERE))
    from common import cpu_line, machine_info, usable_cpus

    threads = usable_cpus()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mnistlab-cpu-"))
    results: dict[str, Any] = {"section": args.section, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "machine": machine_info(threads), "repeats": args.repeats}
    if args.section == "memory-bound":
        results["results"] = section_memory_bound(args, threads)
    elif args.section == "busy":
        results["results"] = section_busy(args, threads, workdir)
    elif args.section == "spin":
        results["results"] = section_spin(args, threads)
    else:
        results["results"] = section_bundles(args, threads)
    results["seconds"] = time.perf_counter() - started
    out = args.out if args.out != HERE / "results.json" else HERE / f"results-{args.section}.json"
    out.write_text(json.dumps(results, indent=2))
    lines = markdown(args.section, results["results"])
    print()
    print(cpu_line(results["machine"]) + "\n")
    print("\n".join(lines))
    print(f"\n{args.section}: {results['seconds']:.0f} s, {threads} threads; results: {out}")
    failed = json.dumps(results["results"]).count('"median": null')
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["fit"], required=True)
    parser.add_argument("--mode", choices=["bundle", "sequential"], required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    worker_fit(parser.parse_args())

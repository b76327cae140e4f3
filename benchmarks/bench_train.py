"""Training speed of mnistlab against Keras 3 (TensorFlow) and plain PyTorch, side by side.

    python benchmarks/bench_train.py [--models s000-m1 ...] [--quick] [--out benchmarks/results.json]
                                     [--markdown] [--repeats R] [--frameworks ...]

Every measurement runs in its own subprocess, one after another, so thread pools, allocators
and OpenMP runtimes of different frameworks never share a process or the CPU:

    matmul_peak.py                    the machine's fp32 / bf16 matmul GFLOP/s (the roofline)
    bench_train.py --worker mnistlab  mnistlab's own loop: engine.train_epoch (fp32, bf16 autocast)
    keras_peer.py  (its own venv)     Keras 3 model.fit on TensorFlow, same architecture as JSON
    torch_peer.py                     plain PyTorch: TensorDataset + DataLoader + torch.optim

All of them train the same model on the same first N images of mnistlab's training split, at
the spec's batch size, with the spec's optimizer, for one warm-up epoch (not timed: graph
tracing, allocator growth, oneDNN primitive creation) and E timed epochs. Images per second is
N * E / (wall time of the timed epochs). N and E are picked per model so that mnistlab fp32's
timed part takes about --target-seconds: by default from the model's FLOPs at an assumed
--assumed-gflops training rate (the same N on every run of every machine, so re-runs compare),
or with --sizing probe from a short mnistlab fp32 probe on this machine. Threads: every worker is given the usable core count (affinity mask and cgroup
quota) as OMP/MKL threads and as its framework's intra-op thread count.

FLOPs: mnistlab.training.cost.forward_flops (2 per multiply-add of Conv2D and Dense layers from the spec's
static shapes; bias, activation, pooling, BatchNorm and the loss are not counted), times
cost.TRAIN_STEP_FORWARDS (3) for a training step (the backward pass costs about twice the forward).
"% of peak" = images/s x training FLOPs per image / measured matmul GFLOP/s of the same dtype.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SRC = REPO / "src"
KERAS_PYTHON = HERE / ".venv-keras" / "bin" / "python"
DEFAULT_MODELS = ["s000-m1", "s000-m2", "s002-m8", "s002-m10", "s004-m2"]
FRAMEWORKS = ["mnistlab-fp32", "mnistlab-bf16", "keras", "torch"]
# Measured only when asked (--frameworks ... mnistlab-bf32): oneDNN's implicit bf16, for CPUs with bf16 hardware.
OPTIONAL_FRAMEWORKS = ["mnistlab-bf32"]
RESULT_PREFIX = "RESULT "

try:  # src layout: runnable from a checkout without `pip install -e .`
    import mnistlab  # noqa: F401
except ImportError:
    sys.path.insert(0, str(SRC))

from common import architecture_json, cpu_line, machine_info  # noqa: E402  (shared with cpu_sections.py)
from mnistlab.util.machine import usable_cpus  # the engine's own count
from mnistlab import without_chosen_spin_count

# --- small helpers shared by the orchestrator and the workers -------------------------------


def median_attempt(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """The attempt with the median throughput (the lower middle one of an even count)."""
    ranked = sorted(attempts, key=lambda a: a["images_per_second"])
    return ranked[(len(ranked) - 1) // 2]



def emit(result: dict[str, Any]) -> None:
    """Workers report one JSON line on stdout, after anything else they printed."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def epoch_summary(seconds: list[float], images: int, warmup: int = 1) -> dict[str, Any]:
    """images/s over the timed epochs (all but the first `warmup`), plus the per-epoch rates."""
    timed = seconds[warmup:]
    return {
        "epoch_seconds": seconds,
        "timed_epochs": len(timed),
        "timed_seconds": sum(timed),
        "images_per_second": images * len(timed) / sum(timed),
        "per_epoch_images_per_second": [images / s for s in timed],
    }


# --- model arithmetic (from the spec's static shapes; no forward pass) -----------------------


def model_facts(spec: Any) -> dict[str, Any]:
    """Parameter counts, forward MACs of Conv2D / Dense layers and training FLOPs (mnistlab.training.cost's count)."""
    from mnistlab.training.cost import TRAIN_STEP_FORWARDS, forward_flops
    from mnistlab.spec.model import resolve

    resolved = resolve(spec)
    flops = forward_flops(spec)
    return {
        "params": resolved.total_params,
        "trainable_params": resolved.trainable_params,
        "forward_macs": flops // 2,
        "train_flops_per_image": TRAIN_STEP_FORWARDS * flops,
    }


# --- the mnistlab worker ---------------------------------------------------------------------


def mnistlab_worker(args: argparse.Namespace) -> None:
    """Time mnistlab's own training loop: `engine.train_epoch` on the device-resident subset, inside the
    CPU context `fit` trains in (precision.run_numerics: its precision, and freed memory kept)."""
    import torch

    from mnistlab.training.precision import run_numerics

    with run_numerics(torch.device("cpu"), args.precision):
        timed_mnistlab(args)


def timed_mnistlab(args: argparse.Namespace) -> None:
    import torch

    from mnistlab.nn.build import build_model
    from mnistlab.data.datasets import load_dataset
    from mnistlab.training.config import TrainConfig, configure_threads
    from mnistlab.training.engine import machine_paths, place_data, train_epoch
    from mnistlab.training.optim import make_optimizer
    from mnistlab.zoo import get_model

    if args.unfused:  # the plain modules, as before fused.py (cpu_sections.py's "before")
        import mnistlab.nn.build

        mnistlab.nn.build.FUSED = False
    configure_threads()  # the engine's own thread policy, as `fit` applies it
    spec = get_model(args.model)
    batch_size = args.batch_size or spec.training.batch_size
    dataset = load_dataset("mnist")
    config = TrainConfig(batch_size=batch_size, precision=args.precision, train_limit=args.images,
                         device="cpu", seed=0)
    data = place_data(dataset, config, torch.device("cpu"))
    model = build_model(spec, seed=0)
    machine_paths(model, config, torch.device("cpu"))  # the kernel paths `fit` takes here (cpu_paths.py)
    optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)
    base = {"framework": f"mnistlab-{args.precision}", "model": spec.id, "images": len(data.train_y),
            "batch_size": batch_size, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads()}

    if args.probe:  # a few steps to size the real run: warm up one batch, then time >= 2 s
        from mnistlab.training.engine import DeviceData

        def run(batches: int) -> float:
            n = min(batches * batch_size, len(data.train_y))
            sub = DeviceData(data.train_x[:n], data.train_y[:n], data.val_x, data.val_y, data.test_x, data.test_y)
            started = time.perf_counter()
            loss, _ = train_epoch(model, optimizer, sub, batch_size, 0, 1, args.precision)
            loss.item()
            return n / (time.perf_counter() - started)

        run(1)
        batches, rate = 2, 0.0
        while True:
            started = time.perf_counter()
            rate = run(batches)
            if time.perf_counter() - started >= args.probe_seconds or batches * batch_size >= len(data.train_y):
                break
            batches *= 2
        emit({**base, "probe": True, "images_per_second": rate})
        return

    seconds = []
    for epoch in range(1, args.epochs + 2):  # epoch 1 is the warm-up
        started = time.perf_counter()
        loss_sum, correct = train_epoch(model, optimizer, data, batch_size, 0, epoch, args.precision)
        loss = loss_sum.item() / len(data.train_y)  # the one host read per epoch, as fit does
        seconds.append(time.perf_counter() - started)
    emit({**base, **epoch_summary(seconds, len(data.train_y)), "final_loss": loss,
          "final_acc": correct.item() / len(data.train_y)})


# --- orchestration ---------------------------------------------------------------------------


def worker_env(threads: int) -> dict[str, str]:
    # Without the spin count `import mnistlab` chose for this process: a peer waits as it would for its
    # own user (libgomp's default), and mnistlab's worker chooses again for the machine as it is then.
    env = without_chosen_spin_count(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def cpu_busy(seconds: float = 2.0) -> float | None:
    """Fraction of all CPUs busy over `seconds` (from /proc/stat), None where unavailable."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])
    try:
        busy1, total1 = sample()
        time.sleep(seconds)
        busy2, total2 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (busy2 - busy1) / max(1, total2 - total1)


def wait_for_idle(limit: float) -> float | None:
    """Wait (at most `limit` s) until other processes use < 10% of the CPUs; the last busy fraction."""
    deadline = time.monotonic() + limit
    busy = cpu_busy()
    while busy is not None and busy >= 0.10 and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


WAIT_IDLE = 0.0  # set from --wait-idle


def run_worker(label: str, command: list[str], threads: int, timeout: float, verbose: bool) -> dict[str, Any]:
    """Run one measurement subprocess; return its RESULT line (or an `error` entry)."""
    busy_before = wait_for_idle(WAIT_IDLE) if WAIT_IDLE > 0 else None
    if verbose:
        print(f"    $ {' '.join(command)}", file=sys.stderr)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=worker_env(threads),
                              timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"{label}: timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    results = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        return {"error": f"{label}: exit {proc.returncode}\n{tail}"}
    result = json.loads(results[-1])
    result["process_seconds"] = wall
    result["load_average_before"] = load_before  # > 0.5 means others shared the cores
    result["cpu_busy_before"] = busy_before  # with --wait-idle: others' CPU use just before the start
    return result


def choose_size(rate: float, batch_size: int, target_seconds: float, max_images: int) -> tuple[int, int]:
    """(N images, E timed epochs): E >= 2 epochs of >= 2 batches, timed part ~ target_seconds."""
    epochs = 2
    wanted = rate * target_seconds / epochs
    images = max(2, round(wanted / batch_size)) * batch_size
    images = min(images, (max_images // batch_size) * batch_size)
    epochs = max(2, math.ceil(target_seconds / (images / rate)))
    return images, epochs


def best_peak(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest fp32 and bf16 matmul seen over the peak runs (others' load only slows them)."""
    good = [r for r in runs if "error" not in r]
    for run in runs:
        if "error" in run:
            print(run["error"], file=sys.stderr)
    if not good:
        return {"error": "no matmul peak measured"}
    best: dict[str, Any] = {}
    for dtype in ("fp32", "bf16"):
        winner = max(good, key=lambda r: r[f"{dtype}_gflops"])
        best[f"{dtype}_gflops"] = winner[f"{dtype}_gflops"]
        best[f"best_size_{dtype}"] = winner[f"best_size_{dtype}"]
    print(f"  matmul peak: fp32 {best['fp32_gflops']:.0f} GFLOP/s, bf16 {best['bf16_gflops']:.0f} GFLOP/s", flush=True)
    return best


def contention(result: dict[str, Any]) -> str:
    if result.get("cpu_busy_before") is not None:
        return f"CPUs {100 * result['cpu_busy_before']:.0f}% busy before"
    return f"load average before {result['load_average_before']:.2f}"


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def rate_of(entry: dict[str, Any] | None) -> float | None:
    return entry.get("images_per_second") if entry and "error" not in entry else None


def summarise(results: dict[str, Any]) -> None:
    """Speedups and % of peak per model, geometric means across models."""
    peak = results.get("matmul_peak", {})
    speedups: dict[str, list[float]] = {k: [] for k in ("fp32_vs_keras", "bf16_vs_keras", "fp32_vs_torch", "bf16_vs_torch",
                                                        "bf32_vs_keras")}
    for row in results["models"]:
        runs = row.get("runs", {})
        fp32, bf16 = rate_of(runs.get("mnistlab-fp32")), rate_of(runs.get("mnistlab-bf16"))
        keras, torch_ = rate_of(runs.get("keras")), rate_of(runs.get("torch"))
        bf32 = rate_of(runs.get("mnistlab-bf32"))
        row["speedup"] = {
            "fp32_vs_keras": ratio(fp32, keras), "bf16_vs_keras": ratio(bf16, keras),
            "fp32_vs_torch": ratio(fp32, torch_), "bf16_vs_torch": ratio(bf16, torch_),
            "bf32_vs_keras": ratio(bf32, keras),
        }
        for key, value in row["speedup"].items():
            if value:
                speedups[key].append(value)
        flops = row["train_flops_per_image"]
        peak = peak if "error" not in peak else {}
        row["percent_of_peak"] = {
            "mnistlab-fp32": 100 * fp32 * flops / (peak["fp32_gflops"] * 1e9) if fp32 and peak.get("fp32_gflops") else None,
            "mnistlab-bf16": 100 * bf16 * flops / (peak["bf16_gflops"] * 1e9) if bf16 and peak.get("bf16_gflops") else None,
            "keras": 100 * keras * flops / (peak["fp32_gflops"] * 1e9) if keras and peak.get("fp32_gflops") else None,
        }
    results["geomean_speedup"] = {key: geomean(values) for key, values in speedups.items()}
    results["geomean_models"] = {key: len(values) for key, values in speedups.items()}


def _f(value: float | None, spec: str = ".0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "params", "batch", "optimizer", "N×E", "mnistlab fp32", "mnistlab bf16", "Keras fp32",
              "PyTorch DataLoader", "fp32/Keras", "bf16/Keras", "fp32/DataLoader", "% peak fp32", "% peak bf16"]
    bf32 = any("mnistlab-bf32" in row.get("runs", {}) for row in results["models"])
    if bf32:  # only when measured (--frameworks ... mnistlab-bf32)
        header += ["mnistlab bf32", "bf32/Keras"]
    rows = []
    for row in results["models"]:
        if "runs" not in row:
            continue
        runs, speed, peak = row["runs"], row.get("speedup", {}), row.get("percent_of_peak", {})
        rows.append([
            row["model"], f"{row['params']:,}", str(row["batch_size"]), row["optimizer"],
            f"{row['images']}×{row['epochs']}",
            _f(rate_of(runs.get("mnistlab-fp32"))), _f(rate_of(runs.get("mnistlab-bf16"))),
            _f(rate_of(runs.get("keras"))), _f(rate_of(runs.get("torch"))),
            _f(speed.get("fp32_vs_keras"), ".2f", "×"), _f(speed.get("bf16_vs_keras"), ".2f", "×"),
            _f(speed.get("fp32_vs_torch"), ".2f", "×"),
            _f(peak.get("mnistlab-fp32"), ".1f", "%"), _f(peak.get("mnistlab-bf16"), ".1f", "%"),
        ] + ([_f(rate_of(runs.get("mnistlab-bf32"))), _f(speed.get("bf32_vs_keras"), ".2f", "×")] if bf32 else []))
    g = results.get("geomean_speedup", {})
    rows.append(["geometric mean", "", "", "", "", "", "", "", "",
                 _f(g.get("fp32_vs_keras"), ".2f", "×"), _f(g.get("bf16_vs_keras"), ".2f", "×"),
                 _f(g.get("fp32_vs_torch"), ".2f", "×"), "", ""]
                + (["", _f(g.get("bf32_vs_keras"), ".2f", "×")] if bf32 else []))
    return header, rows


def print_table(results: dict[str, Any]) -> None:
    header, rows = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(cpu_line(results["machine"]))  # a figure is never quoted without its CPU
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def machine_lines(results: dict[str, Any]) -> list[str]:
    m, peak = results["machine"], results.get("matmul_peak", {})
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["cpu_flags"].items())
    keras = next((r["runs"]["keras"] for r in results["models"] if rate_of(r.get("runs", {}).get("keras"))), {})
    threads = results.get("threads_seen", {})
    lines = [
        f"CPU: {m['cpu']}; {m['logical_cpus']} logical CPUs, {m['usable_cpus']} usable; {m['memory_gib']} GiB memory",
        f"CPU flags: {flags}",
        f"Software: Python {m['python']}, torch {m['torch']} (CPU capability {m['torch_cpu_capability']}, "
        f"oneDNN {'on' if m['mkldnn'] else 'off'}), TensorFlow {keras.get('tensorflow', '?')}, "
        f"Keras {keras.get('keras', '?')} (jit_compile {keras.get('jit_compile', '?')}, "
        f"oneDNN opts {keras.get('onednn_opts', '?')})",
        f"Threads: {m['threads_used']} for every framework (OMP/MKL_NUM_THREADS; torch intra-op "
        f"{threads.get('torch_intra', '?')}, inter-op {threads.get('torch_interop', '?')}; "
        f"TF intra-op {keras.get('intra_op_threads', '?')}, inter-op {keras.get('inter_op_threads', '?')})",
    ]
    if peak.get("fp32_gflops"):
        lines.append(f"Matmul peak (torch, {peak.get('best_size_fp32')}² fp32 / {peak.get('best_size_bf16')}² bf16): "
                     f"fp32 {peak['fp32_gflops']:.0f} GFLOP/s, bf16 {peak['bf16_gflops']:.0f} GFLOP/s")
    lines.append(f"Load average at start: {', '.join(f'{x:.2f}' for x in m['load_average_at_start'] or [])}")
    return lines


def print_markdown(results: dict[str, Any]) -> None:
    header, rows = table_rows(results)
    print(f"{cpu_line(results['machine'])}\n")
    print("Training throughput, images/s (higher is better); speedups are mnistlab ÷ peer.\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 4 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        cells = [f"**{c}**" if r[0] == "geometric mean" and c else c for c in r]
        print("| " + " | ".join(cells) + " |")
    g = results.get("geomean_speedup", {})
    n = results.get("geomean_models", {})
    print()
    print(f"Geometric mean over {n.get('fp32_vs_keras', 0)} models: mnistlab fp32 is "
          f"{_f(g.get('fp32_vs_keras'), '.2f', '×')} Keras (target ≥ 2×), mnistlab bf16 is "
          f"{_f(g.get('bf16_vs_keras'), '.2f', '×')} Keras (target ≥ 3×); against the PyTorch DataLoader loop: "
          f"fp32 {_f(g.get('fp32_vs_torch'), '.2f', '×')}, bf16 {_f(g.get('bf16_vs_torch'), '.2f', '×')}.")
    print()
    for line in machine_lines(results):
        print(f"- {line}")
    print(f"- Method: each framework in its own process, sequentially; N images × E timed epochs after one "
          f"untimed warm-up epoch, same images, batch size and optimizer; "
          f"% of peak counts forward Conv2D/Dense FLOPs × 3 (backward ≈ 2× forward) against the matmul peak of "
          f"the same dtype. Date: {results['date']}.")
    for row in results["models"]:
        if row.get("param_check"):
            print(f"- Keras translation check: {row['param_check']}")


def params_check(row: dict[str, Any], keras_result: dict[str, Any] | None) -> str | None:
    if not keras_result or "keras_params" not in keras_result:
        return None
    ok = keras_result["keras_params"] == row["params"]
    row["param_check_ok"] = ok
    return (f"{row['model']}: mnistlab {row['params']:,} params, Keras count_params() "
            f"{keras_result['keras_params']:,}: {'OK' if ok else 'MISMATCH'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo ids (default: the five issue models)")
    parser.add_argument("--frameworks", nargs="+", default=FRAMEWORKS, choices=FRAMEWORKS + OPTIONAL_FRAMEWORKS)
    parser.add_argument("--quick", action="store_true", help="short runs (~2 s timed) to smoke-test the harness")
    parser.add_argument("--target-seconds", type=float, default=None,
                        help="timed seconds per mnistlab fp32 measurement (default 10, --quick 2)")
    parser.add_argument("--sizing", choices=["flops", "probe"], default="flops",
                        help="how N and E are chosen: from FLOPs at --assumed-gflops (default, reproducible) "
                             "or from a short mnistlab fp32 probe run")
    parser.add_argument("--assumed-gflops", type=float, default=100.0,
                        help="training GFLOP/s assumed by --sizing flops (default 100: about half the 2-core "
                             "Zen 4 fp32 matmul peak)")
    parser.add_argument("--images", type=int, help="N images per epoch for every model (overrides --sizing)")
    parser.add_argument("--epochs", type=int, help="timed epochs E (default: from the sizing, at least 2)")
    parser.add_argument("--repeats", type=int, default=1, help="R interleaved rounds of every framework; the median round is reported")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table for RESULTS.md")
    parser.add_argument("--check-params", action="store_true", help="only build the Keras models and compare params")
    parser.add_argument("--keras-python", type=Path, default=KERAS_PYTHON,
                        help="interpreter of the Keras venv (made by benchmarks/setup_env.sh)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per measurement subprocess")
    parser.add_argument("--data-dir", type=Path,
                        help="folder holding mnist/ (default: $MNISTLAB_DATA_DIR, else ../shared/datasets if present)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each measurement wait up to SECONDS for the CPUs to be idle (< 10%% busy); "
                             "for shared machines")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--section", choices=["bundles", "busy", "memory-bound", "spin"],
                        help="a CPU section instead of the peer comparison (cpu_sections.py; uses --repeats, "
                             "default 3 there, --keras-python, --out, --timeout)")
    # worker mode (internal)
    parser.add_argument("--worker", choices=["mnistlab"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--unfused", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == "mnistlab":
        mnistlab_worker(args)
        return 0

    # Workers inherit the environment, so they find the same data.
    if args.data_dir:
        os.environ["MNISTLAB_DATA_DIR"] = str(args.data_dir.resolve())
    elif "MNISTLAB_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "datasets" / "mnist").is_dir():
        os.environ["MNISTLAB_DATA_DIR"] = str(REPO.parent / "shared" / "datasets")

    if args.section:
        import cpu_sections

        if args.repeats == 1 and "--repeats" not in (argv if argv is not None else sys.argv):
            args.repeats = 3
        return cpu_sections.main(args)

    from mnistlab.data.datasets import load_dataset
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import place_data
    from mnistlab.zoo import get_model
    import numpy as np
    import torch

    global WAIT_IDLE
    WAIT_IDLE = args.wait_idle
    threads = usable_cpus()
    torch.set_num_threads(1)  # the orchestrator itself stays out of the workers' way
    target = args.target_seconds or (2.0 if args.quick else 10.0)
    specs = [get_model(name) for name in args.models]
    want_keras = "keras" in args.frameworks or args.check_params
    if want_keras and not args.keras_python.exists():
        print(f"error: no Keras interpreter at {args.keras_python}; run `bash benchmarks/setup_env.sh` "
              f"(or leave keras out of --frameworks)", file=sys.stderr)
        return 2

    # The same first-N images of the training split for every framework (mnistlab's workers
    # rebuild it with place_data(train_limit=N); the peers read it from .npy files).
    if not args.check_params:
        full = place_data(load_dataset("mnist"), TrainConfig(), torch.device("cpu"))
        max_images = len(full.train_y)

    workdir = Path(tempfile.mkdtemp(prefix="mnistlab-bench-"))
    failures = 0
    try:
        rows = []
        for spec in specs:
            arch = architecture_json(spec)
            (workdir / f"{spec.id}.json").write_text(json.dumps(arch))
            rows.append({"model": spec.id, **model_facts(spec), "batch_size": spec.training.batch_size,
                         "optimizer": spec.training.optimizer.name})

        if args.check_params:
            for row in rows:
                result = run_worker(f"keras check {row['model']}", [str(args.keras_python), str(HERE / "keras_peer.py"),
                                    "--arch", str(workdir / f"{row['model']}.json"), "--check-only",
                                    "--threads", str(threads)], threads, args.timeout, args.verbose)
                line = params_check(row, result) or result.get("error", "no result")
                print(line)
                failures += 0 if row.get("param_check_ok") else 1
            return 1 if failures else 0

        peak_runs: list[dict[str, Any]] = []
        results: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine_info(threads),
            "settings": {"quick": args.quick, "target_seconds": target, "repeats": args.repeats,
                         "frameworks": args.frameworks, "warmup_epochs": 1, "sizing": args.sizing,
                         "assumed_gflops": args.assumed_gflops, "wait_idle_seconds": args.wait_idle},
            "flops_note": "forward MACs of Conv2D/Dense x2 = forward FLOPs; training step = 3x forward "
                          "(backward ~ 2x forward); other layers not counted",
            "models": rows,
        }
        print(f"machine: {results['machine']['cpu']}, {threads} threads, torch {results['machine']['torch']}")

        print("matmul peak ...", flush=True)
        peak_command = [sys.executable, str(HERE / "matmul_peak.py"), "--threads", str(threads)] + (
            ["--quick"] if args.quick else [])
        peak_runs = [run_worker("matmul_peak", peak_command, threads, args.timeout, args.verbose)]
        results["matmul_peak"] = best_peak(peak_runs)
        results["matmul_peak_runs"] = peak_runs

        results["data"] = {"dataset": "mnist", "split_train_images": max_images,
                           "subset": "the first N images of mnistlab's stratified training split (file order)"}

        for spec, row in zip(specs, rows):
            print(f"{spec.id}: {row['params']:,} params, {row['train_flops_per_image'] / 1e6:.1f} MFLOP/image/step",
                  flush=True)
            bs = row["batch_size"]
            if args.images:
                images = min((args.images // bs) * bs or bs, max_images)
                epochs = args.epochs or 2
            elif args.sizing == "flops":
                images, epochs = choose_size(args.assumed_gflops * 1e9 / row["train_flops_per_image"], bs,
                                             target, max_images)
                epochs = args.epochs or epochs
            else:
                probe = run_worker(f"probe {spec.id}", [sys.executable, str(HERE / "bench_train.py"), "--worker", "mnistlab",
                                   "--model", spec.id, "--probe", "--probe-seconds", "1" if args.quick else "2",
                                   "--images", str(max_images)], threads, args.timeout, args.verbose)
                if "error" in probe:
                    print(probe["error"], file=sys.stderr)
                    failures += 1
                    continue
                row["probe_images_per_second"] = probe["images_per_second"]
                images, epochs = choose_size(probe["images_per_second"], bs, target, max_images)
                epochs = args.epochs or epochs
            row["images"], row["epochs"] = images, epochs
            np.save(workdir / f"{spec.id}-x.npy", full.train_x[:images].numpy())
            np.save(workdir / f"{spec.id}-y.npy", full.train_y[:images].numpy())
            print(f"  N = {images} images × {epochs} timed epochs (+1 warm-up)", flush=True)

            common = ["--images", str(images), "--epochs", str(epochs)]
            data_args = ["--x", str(workdir / f"{spec.id}-x.npy"), "--y", str(workdir / f"{spec.id}-y.npy")]
            commands = {
                "mnistlab-fp32": [sys.executable, str(HERE / "bench_train.py"), "--worker", "mnistlab",
                                  "--model", spec.id, "--precision", "fp32", *common],
                "mnistlab-bf16": [sys.executable, str(HERE / "bench_train.py"), "--worker", "mnistlab",
                                  "--model", spec.id, "--precision", "bf16", *common],
                "mnistlab-bf32": [sys.executable, str(HERE / "bench_train.py"), "--worker", "mnistlab",
                                  "--model", spec.id, "--precision", "bf32", *common],
                "keras": [str(args.keras_python), str(HERE / "keras_peer.py"), "--arch", str(workdir / f"{spec.id}.json"),
                          "--threads", str(threads), *data_args, "--epochs", str(epochs)],
                "torch": [sys.executable, str(HERE / "torch_peer.py"), "--arch", str(workdir / f"{spec.id}.json"),
                          "--threads", str(threads), *data_args, "--epochs", str(epochs)],
            }
            row["runs"] = {}
            # Repeats are interleaved (every framework once per round, the order rotated each round), so a
            # slow spell of the machine falls on all frameworks alike; the median of the rounds is reported.
            attempts: dict[str, list[dict[str, Any]]] = {framework: [] for framework in args.frameworks}
            for round_index in range(args.repeats):
                shift = round_index % len(args.frameworks)
                for framework in args.frameworks[shift:] + args.frameworks[:shift]:
                    if attempts[framework] and "error" in attempts[framework][-1]:
                        continue
                    attempts[framework].append(run_worker(f"{framework} {spec.id}", commands[framework], threads,
                                                          args.timeout, args.verbose))
            for framework in args.frameworks:
                good = [a for a in attempts[framework] if "error" not in a]
                best = median_attempt(good) if good else attempts[framework][-1]
                if len(attempts[framework]) > 1:
                    best = {**best, "all_images_per_second": [a.get("images_per_second") for a in attempts[framework]]}
                row["runs"][framework] = best
                if "error" in best:
                    failures += 1
                    print(f"  {framework:14s} FAILED: {best['error']}", file=sys.stderr)
                else:
                    per_epoch = ", ".join(f"{r:.0f}" for r in best["per_epoch_images_per_second"])
                    rounds = ", ".join(f"{a['images_per_second']:.0f}" for a in good)
                    print(f"  {framework:14s} {best['images_per_second']:10.1f} img/s median of [{rounds}]  (epochs: {per_epoch}; "
                          f"warm-up {best['epoch_seconds'][0]:.1f} s, timed {best['timed_seconds']:.1f} s; {contention(best)})",
                          flush=True)
                    if framework.startswith("mnistlab"):
                        results["threads_seen"] = {"torch_intra": best["threads"], "torch_interop": best["interop_threads"]}
            check = params_check(row, row["runs"].get("keras"))
            if check:
                row["param_check"] = check
                print(f"  params check: {check}")
                failures += 0 if row["param_check_ok"] else 1
            summarise(results)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))  # after every model: partial results survive

        print("matmul peak again (the better of the two is used) ...", flush=True)
        peak_runs.append(run_worker("matmul_peak", peak_command, threads, args.timeout, args.verbose))
        results["matmul_peak"] = best_peak(peak_runs)
        summarise(results)
        results["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        args.out.write_text(json.dumps(results, indent=2))
        print()
        print_table(results)
        g = results["geomean_speedup"]
        print(f"\ngeometric mean speedup vs Keras: fp32 {_f(g['fp32_vs_keras'], '.2f', '×')} (target ≥ 2×), "
              f"bf16 {_f(g['bf16_vs_keras'], '.2f', '×')} (target ≥ 3×); vs PyTorch DataLoader: "
              f"fp32 {_f(g['fp32_vs_torch'], '.2f', '×')}, bf16 {_f(g['bf16_vs_torch'], '.2f', '×')}")
        for line in machine_lines(results):
            print(line)
        print(f"results: {args.out}")
        if args.markdown:
            print()
            print_markdown(results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

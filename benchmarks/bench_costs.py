"""Per-model cost of every zoo model on this machine: forward MFLOP/image, fp32 and bf16 images/s
from a short probe, and the hours one seed takes under its notebook's protocol.

    python benchmarks/bench_costs.py [--seconds 4] [--models s000-m1 ...] [--precisions fp32 bf16]
                                     [--out benchmarks/results-costs.json]

Each model is probed with `mnistlab.training.cost.probe_throughput` (the engine's own training and
evaluation steps on random images of the model's input shape, warm-up excluded; a model whose one
step outlasts the budget is measured by that step), one model and precision after another in one
process, at the usable core count. Hours per seed: `mnistlab.training.cost.estimate_training` at the fp32
rates, for the notebook's epochs on its whole training set (60,000 images) validated each epoch on
the 10,000 test images, as the reproduction runs are trained. Prints the machine (CPU model and
the flags that decide its speed) and a Markdown table for RESULTS.md; writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_info  # noqa: E402  (the benchmarks' one machine description)

from mnistlab.training.cost import FLOPS_COUNTED, epoch_images, estimate_training, forward_flops, probe_throughput  # noqa: E402
from mnistlab.util.machine import usable_cpus  # noqa: E402
from mnistlab.training.config import NOTEBOOK_PROTOCOL  # noqa: E402
from mnistlab.zoo import zoo_models  # noqa: E402


def notebook_epochs(spec: Any) -> int:
    """The epochs the notebook trained for (its reference), else the spec's."""
    return int((spec.reference or {}).get("epochs") or spec.training.epochs)


def measure(model_ids: list[str], precisions: list[str], seconds: float,
            done: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    """Probe each model in each precision; `done(rows so far)` after each model, so an interrupted
    run keeps what it measured (a model whose one step takes many minutes can take a long time)."""
    train_images, val_images, test_images = epoch_images("mnist", NOTEBOOK_PROTOCOL)
    models = zoo_models()
    rows = []
    for model_id in model_ids:
        spec = models[model_id]
        row: dict[str, Any] = {"model": model_id, "forward_flops": forward_flops(spec),
                               "batch_size": spec.training.batch_size, "notebook_epochs": notebook_epochs(spec),
                               "probes": {}}
        for precision in precisions:
            speed = probe_throughput(spec, precision=precision, seconds=seconds, device="cpu")
            row["probes"][precision] = speed.to_json()
            print(f"{model_id} {precision}: train {speed.train_images_per_second:,.1f} img/s "
                  f"({speed.train_steps} steps{', warm-up timed' if speed.warmup_timed else ''}), eval "
                  f"{speed.eval_images_per_second:,.1f} img/s, {speed.seconds:.1f} s", flush=True)
            cost = estimate_training(speed, epochs=row["notebook_epochs"], train_images=train_images,
                                     val_images=val_images, test_images=test_images)
            row.setdefault("estimates", {})[precision] = cost.to_json()
        rows.append(row)
        done(rows)
    return rows


def _rate(row: dict[str, Any], precision: str) -> str:
    probe = row["probes"].get(precision)
    if probe is None:
        return "–"
    mark = "*" if probe["warmup_timed"] else ""
    return f"{probe['train_images_per_second']:,.0f}{mark}"


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| model | forward MFLOP/image | fp32 img/s | bf16 img/s | notebook epochs | hours per seed (fp32) |",
           "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        estimate = row.get("estimates", {}).get("fp32")
        hours = f"{estimate['hours']:.2f}" if estimate else "–"
        out.append(f"| {row['model']} | {row['forward_flops'] / 1e6:,.1f} | {_rate(row, 'fp32')} | "
                   f"{_rate(row, 'bf16')} | {row['notebook_epochs']} | {hours} |")
    fp32 = [r["estimates"]["fp32"]["hours"] for r in rows if "fp32" in r.get("estimates", {})]
    if fp32:
        out.append(f"| **all {len(fp32)}** |  |  |  |  | **{sum(fp32):,.1f}** |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="zoo ids (default: all 35)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--seconds", type=float, default=4.0, help="probe length per model and precision")
    parser.add_argument("--out", type=Path, default=HERE / "results-costs.json")
    args = parser.parse_args(argv)
    model_ids = args.models or list(zoo_models())
    unknown = [m for m in model_ids if m not in zoo_models()]
    if unknown:
        parser.error(f"unknown zoo ids: {', '.join(unknown)}")
    machine = machine_info(usable_cpus())
    started = time.time()
    result: dict[str, Any] = {"machine": machine, "seconds_per_probe": args.seconds, "flops_counted": FLOPS_COUNTED,
                              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started))}

    def write(rows: list[dict[str, Any]]) -> None:
        result.update(wall_seconds=time.time() - started, rows=rows)
        args.out.write_text(json.dumps(result, indent=2))

    rows = measure(model_ids, args.precisions, args.seconds, write)
    print()
    print("\n".join(markdown(rows)))
    print()
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in machine["cpu_flags"].items())
    print(f"- CPU: {machine['cpu']}; {machine['logical_cpus']} logical CPUs, {machine['usable_cpus']} usable, "
          f"{machine['threads_used']} threads; {machine['memory_gib']} GiB memory")
    print(f"- CPU flags: {flags}")
    print(f"- Software: Python {machine['python']}, torch {machine['torch']} (CPU capability "
          f"{machine['torch_cpu_capability']}, oneDNN {'on' if machine['mkldnn'] else 'off'})")
    print(f"- Load average at start: {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'] or [])}")
    print(f"- Probes: {args.seconds:g} s per model and precision; whole run {result['wall_seconds']:.0f} s, "
          f"started {result['started_utc']} UTC; * = one step outlasted the probe, measured by its warm-up step")
    print(f"- FLOPs: {FLOPS_COUNTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

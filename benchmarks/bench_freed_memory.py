"""Freed memory kept while training (util/memory.py) against glibc's default, in one process.

Each policy runs in a process of its own (glibc's default is dynamic thresholds that any mallopt call
ends for the process), the two alternating for `--rounds` rounds: each process times s000-m1's first
convolution (forward and backward, batch 128) `--steps` times and then `engine.train_epoch` on
`--images` images of the model (after one warm-up epoch), inside `keep_freed_memory()` or not.
Medians of the rounds; every round's figure is printed.

    PYTHONPATH=src python benchmarks/bench_freed_memory.py --model s000-m1 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_line, machine_info  # noqa: E402  (the machine description shared by the benchmarks)

import torch  # noqa: E402  (after mnistlab, which common imports: the spin count is chosen first)
import torch.nn.functional as F  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="s000-m1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--images", type=int, default=3840)
    parser.add_argument("--worker", choices=["kept", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    from mnistlab.data.synthetic import synthetic_dataset
    from mnistlab.nn.build import build_model
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import place_data, train_epoch
    from mnistlab.training.optim import make_optimizer
    from mnistlab.util.machine import usable_cpus
    from mnistlab.util.memory import keep_freed_memory
    from mnistlab.zoo import get_model

    threads = usable_cpus()
    torch.set_num_threads(threads)
    if not args.worker:
        print(cpu_line(machine_info(threads)), flush=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 28, 28, generator=generator)
    weight = (torch.rand(32, 1, 3, 3, generator=generator) * 0.1).requires_grad_()
    bias = torch.zeros(32, requires_grad=True)
    grad = torch.rand(128, 32, 26, 26, generator=generator)

    spec = get_model(args.model)
    batch = spec.training.batch_size
    config = TrainConfig(batch_size=batch, train_limit=args.images, device="cpu", seed=0)
    data = place_data(synthetic_dataset(n_train=args.images, n_test=100), config, torch.device("cpu"))
    model = build_model(spec, seed=0)
    optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)

    if args.worker:
        with keep_freed_memory() if args.worker == "kept" else contextlib.nullcontext():
            train_epoch(model, optimizer, data, batch, 0, 1, "fp32")[0].item()  # warm-up
            times = []
            for _ in range(args.steps):
                started = time.perf_counter()
                F.conv2d(x, weight, bias).backward(grad)
                times.append(time.perf_counter() - started)
            started = time.perf_counter()
            train_epoch(model, optimizer, data, batch, 0, 2, "fp32")[0].item()
            step = (time.perf_counter() - started) / -(-len(data.train_y) // batch)
        print("RESULT " + json.dumps({"conv": 1e3 * statistics.median(times), "step": 1e3 * step}))
        return 0

    results: dict[str, dict[str, list[float]]] = {"kept": {"conv": [], "step": []}, "glibc default": {"conv": [], "step": []}}
    for round_index in range(args.rounds):
        order = ["kept", "glibc default"] if round_index % 2 else ["glibc default", "kept"]
        for policy in order:
            command = [sys.executable, __file__, "--worker", "kept" if policy == "kept" else "default",
                       "--model", args.model, "--steps", str(args.steps), "--images", str(args.images)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            figures = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
            for key in ("conv", "step"):
                results[policy][key].append(figures[key])
    print(f"\n| freed memory | first conv fwd+bwd, ms (median of {args.steps} per round) | {args.model} step, ms |")
    print("|---|---:|---:|")
    for policy, figures in results.items():
        conv, step = figures["conv"], figures["step"]
        print(f"| {policy} | {statistics.median(conv):.2f} ({', '.join(f'{v:.2f}' for v in conv)}) | "
              f"{statistics.median(step):.2f} ({', '.join(f'{v:.1f}' for v in step)}) |")
    print(f"\nmedians of {args.rounds} rounds, the two policies alternating; {threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())

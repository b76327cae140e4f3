"""Where a training step's CPU time goes: mnistlab's own step beside a plain PyTorch loop (issue 25, item 1).

Both loops train the same architecture (mnistlab.nn.build.build_model, as torch_peer.py does) on the
same real MNIST images, batch size from the spec:

- mnistlab: `engine.train_epoch` itself (build_model, make_optimizer's Keras-2.2 optimizer,
  cross-entropy, the engine's device-resident uint8 data path with per-batch gather and scaling);
- plain PyTorch: float images held in memory, `torch.randperm` per epoch, slicing batches (no
  DataLoader), `torch.optim.Adam` (its default foreach path) with Keras's hyperparameters, `F.cross_entropy`.

Each loop is warmed up for one pass; then, `--repeats` times, each loop runs one unprofiled and one
profiled pass of `--steps` steps, the two loops interleaved so that a change in load falls on both.
Every op's self-CPU time is put in one group by its name and the nearest enclosing region:
backward (under an `autograd::engine::evaluate_function`), optimizer (under `Optimizer.step` /
`Optimizer.zero_grad`), RNG (rand/bernoulli/randperm/uniform/normal draws), casts/copies (to/copy/
index/clone and the input scaling outside backward and optimizer), forward (everything else).
"Python and other" is what the ops' self times leave of the profiled pass: the interpreter, dispatch
outside ops and the profiler's own cost (so it is an upper bound). NumPy work inside `Optimizer.step`
(mnistlab's correctly rounded sqrt) is that region's self time, so it counts as optimizer.

The profiler's self-CPU times are per-thread wall-clock spans: on a loaded machine they include time
the thread was preempted. So the absolute figure, "CPU ms/step", is measured without the profiler as
process CPU time (time.process_time) over `--steps` steps at one thread (torch.set_num_threads(1)),
which preemption does not inflate, and split into groups by the profiled passes' shares.

    PYTHONPATH=src python benchmarks/profile_step.py --models s000-m1 s004-m2 --steps 30
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_line, machine_info  # noqa: E402  (the machine description shared by the benchmarks)

GROUPS = ("forward", "backward", "optimizer", "RNG", "casts/copies", "Python and other")
RNG_OPS = ("aten::rand", "aten::bernoulli", "aten::randperm", "aten::uniform_", "aten::normal_",
           "aten::random_")
COPY_OPS = ("aten::to", "aten::_to_copy", "aten::copy_", "aten::index", "aten::index_select", "aten::clone",
            "aten::contiguous", "aten::div_", "aten::empty_strided", "aten::reshape", "aten::view",
            "aten::slice", "aten::t", "aten::detach")


def group_of(name: str, ancestors: list[str]) -> str:
    """The group an op's self time is counted in: by name first for RNG, then by enclosing region."""
    if name.startswith(RNG_OPS):
        return "RNG"
    if any(a.startswith("autograd::engine::evaluate_function") for a in ancestors):
        return "backward"
    if any(a.startswith(("Optimizer.step", "Optimizer.zero_grad")) for a in ancestors):
        return "optimizer"
    if name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
        return "optimizer"
    if name in COPY_OPS:
        return "casts/copies"
    return "forward"


def grouped_self_ms(prof: Any) -> tuple[dict[str, float], dict[str, float]]:
    """Self-CPU milliseconds by group, and by op name (the top ops), over all of a profile's events."""
    groups: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type.name != "CPU":
            continue
        ancestors, parent = [], event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        ms = event.self_cpu_time_total / 1000.0
        groups[group_of(event.name, ancestors)] += ms
        ops[event.name] += ms
    return dict(groups), dict(ops)


def mnistlab_pass(spec: Any, dataset: Any, steps: int) -> Callable[[int], None]:
    """One call: one `engine.train_epoch` of `steps` steps (epoch number given), state kept across calls."""
    import torch

    from mnistlab.nn.build import build_model
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.engine import place_data, train_epoch
    from mnistlab.training.optim import make_optimizer

    batch = spec.training.batch_size
    config = TrainConfig(batch_size=batch, train_limit=steps * batch, device="cpu", seed=0)
    data = place_data(dataset, config, torch.device("cpu"))
    model = build_model(spec, seed=0)
    optimizer = make_optimizer(spec.training.optimizer.name, model.parameters(), **spec.training.optimizer.args)

    def run(epoch: int) -> None:
        loss, _ = train_epoch(model, optimizer, data, batch, 0, epoch, "fp32")
        loss.item()

    return run


def plain_pass(spec: Any, dataset: Any, steps: int) -> Callable[[int], None]:
    """The loop a PyTorch user writes without a DataLoader: float images in memory, torch.optim.Adam."""
    import torch
    import torch.nn.functional as F

    from mnistlab.nn.build import build_model, prepare_input
    from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_peer import make_torch_optimizer

    batch = spec.training.batch_size
    x = prepare_input(dataset.train_images[: steps * batch], spec.input)
    y = dataset.train_labels[: steps * batch].long()
    torch.manual_seed(0)
    model = build_model(spec, seed=0)
    args = dict(OPTIMIZER_DEFAULTS[spec.training.optimizer.name])
    args.update({("lr" if k == "learning_rate" else k): v for k, v in spec.training.optimizer.args.items()})
    optimizer = make_torch_optimizer(torch, spec.training.optimizer.name, args, model.parameters())

    def run(epoch: int) -> None:
        model.train()
        order = torch.randperm(len(y))
        total = torch.zeros(())
        for step in range(steps):
            index = order[step * batch : (step + 1) * batch]
            xb, yb = x[index], y[index]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        total.item()

    return run


def measure(runs: dict[str, Callable[[int], None]], steps: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Per loop, medians over `repeats` passes: unprofiled process CPU ms/step, and the profiled passes'
    shares. The loops' passes are interleaved, so a change in the machine's load falls on both."""
    import statistics

    import torch
    from torch.profiler import ProfilerActivity, profile

    for run in runs.values():
        run(1)  # warm-up: allocation, oneDNN primitive creation, optimizer state
    cpu_ms: dict[str, list[float]] = defaultdict(list)
    shares: dict[str, list[dict[str, float]]] = defaultdict(list)
    op_share: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for repeat in range(repeats):
        for label, run in runs.items():
            started = time.process_time()
            run(2 + 2 * repeat)
            cpu_ms[label].append((time.process_time() - started) * 1000.0 / steps)
        for label, run in runs.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                started = time.perf_counter()
                run(3 + 2 * repeat)
                wall_ms = (time.perf_counter() - started) * 1000.0
            groups, ops = grouped_self_ms(prof)
            # Time in no op (the interpreter, the profiler itself) is what the ops' self times leave
            # of the pass; both are wall-clock spans of the one thread, so preemption inflates both.
            groups["Python and other"] = max(0.0, wall_ms - sum(groups.values()))
            total = sum(groups.values())
            shares[label].append({g: groups.get(g, 0.0) / total for g in GROUPS})
            for name, ms in ops.items():
                op_share[label][name].append(ms / total)
    results = {}
    for label in runs:
        cpu = statistics.median(cpu_ms[label])
        share = {g: statistics.median(s[g] for s in shares[label]) for g in GROUPS}
        top = sorted(((n, statistics.median(v) * cpu) for n, v in op_share[label].items()), key=lambda kv: -kv[1])
        results[label] = {"cpu_ms_per_step": cpu, "cpu_ms_runs": cpu_ms[label], "threads": torch.get_num_threads(),
                          "group_share": share, "group_ms_per_step": {g: share[g] * cpu for g in GROUPS},
                          "top_ops": top[:8]}
    return results


def print_markdown(machine: dict[str, Any], results: dict[str, dict[str, Any]], steps: int, repeats: int) -> None:
    print(f"{cpu_line(machine)} (capability {machine['torch_cpu_capability']}); load average at start "
          f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_start'] or [])}\n")
    print("| model | loop | CPU ms/step | " + " | ".join(GROUPS) + " |")
    print("|---|---|---:|" + "---:|" * len(GROUPS))
    for label, r in results.items():
        model, loop = label.split(" ", 1)
        cells = [f"{r['group_ms_per_step'][g]:.2f} ({100 * r['group_share'][g]:.0f}%)" for g in GROUPS]
        print(f"| {model} | {loop} | {r['cpu_ms_per_step']:.2f} | " + " | ".join(cells) + " |")
    print(f"\nCPU ms/step: process CPU time (time.process_time) of an unprofiled pass of {steps} steps, "
          f"median of {repeats}, the two loops' passes interleaved, after one warm-up pass. Groups: that time split by the shares of the "
          f"profiler's self-CPU times in profiled passes (median share of {repeats}); ms (share).\n")
    for label, r in results.items():
        top = "; ".join(f"{n} {ms:.2f}" for n, ms in r["top_ops"])
        print(f"- {label} top ops (self ms/step): {top}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["s000-m1", "s004-m2"])
    parser.add_argument("--steps", type=int, default=30, help="profiled steps per loop (one pass each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="profiled and unprofiled passes per loop")
    args = parser.parse_args(argv)

    import torch

    from mnistlab.data.datasets import load_dataset
    from mnistlab.zoo import get_model

    torch.set_num_threads(args.threads)
    dataset = load_dataset("mnist")
    results: dict[str, dict[str, Any]] = {}
    for name in args.models:
        spec = get_model(name)
        runs = {f"{spec.id} {loop}": make(spec, dataset, args.steps)
                for loop, make in (("mnistlab", mnistlab_pass), ("plain PyTorch", plain_pass))}
        for label, result in measure(runs, args.steps, args.repeats).items():
            results[label] = result
            print(f"{label}: {result['cpu_ms_per_step']:.2f} CPU ms/step (passes: "
                  f"{', '.join(f'{ms:.1f}' for ms in result['cpu_ms_runs'])})", file=sys.stderr, flush=True)
    print_markdown(machine_info(args.threads), results, args.steps, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())

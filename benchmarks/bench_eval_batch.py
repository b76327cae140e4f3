"""The CPU evaluation batch: `engine.evaluate` images/s on 10,000 images at each batch size, per model.

What training/eval_batch.py's rule rests on: on the Intel Xeon with AMX the fastest batch followed the
model's activation bytes per image (benchmarks/RESULTS.md, "Evaluation batch"). Each size is timed in
`--repeats` rounds (the sizes interleaved within a round), the median reported; inside the CPU context
training runs in (run_numerics). Prints also the batch the rule gives each model on this machine.

    PYTHONPATH=src python benchmarks/bench_eval_batch.py --models s000-m1 s000-m4 s000-m9 s004-m1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_line, machine_info  # noqa: E402  (the machine description shared by the benchmarks)

import torch  # noqa: E402  (after mnistlab, which common imports: the spin count is chosen first)

BATCHES = (64, 128, 256, 512, 1024, 2048)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["s000-m1", "s000-m4", "s000-m6", "s000-m9", "s002-m1",
                                                        "s002-m8", "s004-m1", "s004-m2"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mnistlab.training.engine as engine
    from mnistlab.data.synthetic import synthetic_dataset
    from mnistlab.nn.build import build_model
    from mnistlab.training.eval_batch import cpu_eval_batch
    from mnistlab.training.limits import activation_bytes_per_image
    from mnistlab.training.precision import run_numerics
    from mnistlab.util.machine import usable_cpus
    from mnistlab.zoo import get_model

    threads = usable_cpus()
    torch.set_num_threads(threads)
    print(cpu_line(machine_info(threads)), flush=True)
    data = synthetic_dataset(n_train=100, n_test=10_000)
    x, y = data.test_images, data.test_labels
    print("| model | activation KiB/image | " + " | ".join(f"batch {b}" for b in BATCHES) + " | the rule's batch here |")
    print("|---|---:|" + "---:|" * len(BATCHES) + "---:|")
    chosen_by_rule = engine.eval_batch_size
    for name in args.models:
        model = build_model(get_model(name), seed=0)
        rates: dict[int, list[float]] = {b: [] for b in BATCHES}
        with run_numerics(torch.device("cpu"), "fp32"):
            rule = cpu_eval_batch(model.resolved)
            for _ in range(args.repeats):
                for batch in BATCHES:
                    engine.eval_batch_size = lambda *_, batch=batch, **__: batch  # this size, for this call
                    engine.evaluate(model, x[: 2 * batch], y[: 2 * batch], "fp32")  # oneDNN's primitives for it
                    started = time.perf_counter()
                    engine.evaluate(model, x, y, "fp32")
                    rates[batch].append(len(y) / (time.perf_counter() - started))
        engine.eval_batch_size = chosen_by_rule
        cells = " | ".join(f"{statistics.median(r):,.0f}" for r in rates.values())
        kib = activation_bytes_per_image(model.resolved) / 1024
        print(f"| {name} | {kib:,.0f} | {cells} | {rule} |", flush=True)
    print(f"\nimages/s, median of {args.repeats} rounds, 10,000 synthetic images, {threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())

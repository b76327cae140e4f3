"""Accuracy of the bf32 precision (oneDNN's implicit bf16 in fp32 matmuls/convs) beside strict fp32 (issue 25, item 4).

For each model and seed, trains the same run twice through `mnistlab.api.train`, once per
precision, with the spec's epochs (or `--epochs`) on real MNIST and the notebooks' protocol
(validate on the test set), and prints the test accuracy of each, the per-seed difference, and
the mean difference with its range. Default models: the nine 004 MLPs and two of the cheapest
CNNs (s000-m4, s000-m7); three seeds.

It means something only on a CPU with bf16 arithmetic in hardware (AVX-512 BF16 or AMX): elsewhere
oneDNN runs fp32 (or emulates), and mnistlab refuses bf32 in one line unless MNISTLAB_FORCE_BF32=1,
so this script stops with that line.

    PYTHONPATH=src python benchmarks/bf32_accuracy.py [--models s004-m1 ...] [--seeds 0 1 2] [--epochs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_line, machine_info  # noqa: E402

DEFAULT_MODELS = [f"s004-m{i}" for i in range(1, 10)] + ["s000-m4", "s000-m7"]
PRECISIONS = ("fp32", "bf32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="default: each spec's (the notebook's)")
    args = parser.parse_args(argv)

    from mnistlab import api
    from mnistlab.errors import MnistlabError
    from mnistlab.util.machine import usable_cpus

    import torch

    from mnistlab.training.precision import check_precision

    print(cpu_line(machine_info(usable_cpus())) + "\n", flush=True)
    try:  # before any training: the refusal on a CPU without bf16 hardware costs nothing
        check_precision("bf32", torch.device("cpu"))
    except MnistlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    for model in args.models:
        accuracy: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for seed in args.seeds:
            for precision in PRECISIONS:
                try:
                    history = api.train(model, "mnist", seed=seed, epochs=args.epochs, device="cpu",
                                        precision=precision, validate_on="test")
                except MnistlabError as error:
                    print(f"error: {error}", file=sys.stderr)
                    return 2
                accuracy[precision].append(100.0 * history.test_acc)
                print(f"  {model} seed {seed} {precision}: test accuracy {accuracy[precision][-1]:.2f}%",
                      file=sys.stderr, flush=True)
        rows.append({"model": model, **accuracy})

    print("| model | fp32 test acc % (per seed) | bf32 test acc % (per seed) | bf32 − fp32, mean (min, max) |")
    print("|---|---|---|---:|")
    for row in rows:
        diffs = [b - f for f, b in zip(row["fp32"], row["bf32"])]
        print(f"| {row['model']} | {' / '.join(f'{a:.2f}' for a in row['fp32'])} | "
              f"{' / '.join(f'{a:.2f}' for a in row['bf32'])} | "
              f"{statistics.mean(diffs):+.2f} ({min(diffs):+.2f}, {max(diffs):+.2f}) |")
    print(f"\nSeeds {', '.join(map(str, args.seeds))}; epochs: {args.epochs or 'each spec’s'}; "
          "validation on the test set (the notebooks' protocol); the same seed draws the same initial "
          "weights, shuffles and dropout masks under both precisions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

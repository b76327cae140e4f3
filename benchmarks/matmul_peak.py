"""The machine's measured matmul throughput with torch: the roofline the training numbers sit under.

Large square matmuls (C = A @ B, 2·n³ FLOPs each) in fp32 and in bf16 (bf16 inputs and output,
fp32 accumulation inside oneDNN), at the given thread count, repeated for about a second per
size after a warm-up; the peak reported is the best single call over all sizes (other processes
on a shared machine only ever slow a call down), and each size's median is kept beside it.

    python benchmarks/matmul_peak.py [--threads 2] [--sizes 1024 2048 4096] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

RESULT_PREFIX = "RESULT "


def measure(torch, n: int, dtype, seconds: float) -> tuple[float, float]:
    """(best, median) GFLOP/s of repeated n x n matmuls; the best is the least disturbed call."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    torch.matmul(a, b, out=c)  # warm-up: packing buffers, oneDNN primitive
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        started = time.perf_counter()
        torch.matmul(a, b, out=c)
        rates.append(2 * n**3 / (time.perf_counter() - started) / 1e9)
    return max(rates), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per (size, dtype)")
    parser.add_argument("--quick", action="store_true", help="sizes 1024 2048, 0.5 s each")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.seconds = [1024, 2048], 0.5

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": {}}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best, best_n = 0.0, None
        for n in args.sizes:
            rate, median = measure(torch, n, dtype, args.seconds)
            result["sizes"][f"{label}_{n}"] = {"best": rate, "median": median}
            print(f"{label} {n}x{n}: best {rate:8.1f} GFLOP/s, median {median:8.1f}", flush=True)
            if rate > best:
                best, best_n = rate, n
        result[f"{label}_gflops"] = best
        result[f"best_size_{label}"] = best_n
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

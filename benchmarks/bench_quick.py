"""How long the README's main command takes: `mnistlab run quick` from an empty store (not a test).

Each repeat is a fresh process and a fresh store, the report included, exactly as a newcomer runs it.
Prints every wall time, the median, and the machine; the budget is 3 minutes on a 2-core CPU.

    MNISTLAB_DATA_DIR=../shared/datasets python benchmarks/bench_quick.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 180.0


def one_run() -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mnistlab", "run", "quick", "--store", str(Path(folder) / "runs"), "--quiet"],
                       check=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-quick.json"))
    args = parser.parse_args()
    if not os.environ.get("MNISTLAB_DATA_DIR"):
        sys.exit("set MNISTLAB_DATA_DIR to the folder holding mnist/")
    loads, times = [], []
    for _ in range(args.repeats):
        loads.append(os.getloadavg()[0])
        times.append(one_run())
        print(f"quick: {times[-1]:.1f} s (1-minute load average before: {loads[-1]:.2f})", flush=True)
    median = statistics.median(times)
    result = {"times_s": times, "median_s": median, "budget_s": BUDGET_SECONDS, "load_before": loads,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "python": platform.python_version()}
    args.out.write_text(json.dumps(result, indent=1))
    print(f"median {median:.1f} s over {len(times)} runs (budget {BUDGET_SECONDS:.0f} s): "
          f"{'within' if median <= BUDGET_SECONDS else 'OVER'} budget")


if __name__ == "__main__":
    main()

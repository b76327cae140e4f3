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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_line, machine_info  # noqa: E402
from mnistlab.util.machine import usable_cpus  # noqa: E402

BUDGET_SECONDS = 180.0


def one_run(keep: Path | None) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = keep if keep is not None else Path(folder) / "runs"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mnistlab", "run", "quick", "--store", str(store), "--quiet"], check=True)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-quick.json"))
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each repeat's store as DIR/run-K (to read the margins off them afterwards)")
    args = parser.parse_args()
    if not os.environ.get("MNISTLAB_DATA_DIR"):
        sys.exit("set MNISTLAB_DATA_DIR to the folder holding mnist/")
    loads, times = [], []
    for repeat in range(args.repeats):
        keep = None if args.keep is None else args.keep / f"run-{repeat + 1}"
        if keep is not None and keep.exists():
            sys.exit(f"{keep} exists: each repeat starts from an empty store")
        loads.append(os.getloadavg()[0])
        times.append(one_run(keep))
        print(f"quick: {times[-1]:.1f} s (1-minute load average before: {loads[-1]:.2f})", flush=True)
    median = statistics.median(times)
    result = {"times_s": times, "median_s": median, "budget_s": BUDGET_SECONDS, "load_before": loads,
              "machine": cpu_line(machine_info(usable_cpus())),
              "python": platform.python_version()}
    args.out.write_text(json.dumps(result, indent=1))
    print(result["machine"])
    print(f"median {median:.1f} s over {len(times)} runs (budget {BUDGET_SECONDS:.0f} s): "
          f"{'within' if median <= BUDGET_SECONDS else 'OVER'} budget")


if __name__ == "__main__":
    main()

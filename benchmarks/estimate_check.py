"""`mnistlab run --dry-run`'s estimate against the measured time, per model (issue 22, item 4).

For each model: an experiment of that model alone, one seed, under its notebook's protocol (its epochs,
all 60,000 training images, validation on the test set) — first `api.dry_run` (the probe, nothing
written), then `api.run` into a scratch store, timed. Prints the estimate, the measured time (the sum of
the run's epoch seconds, which is what the estimate counts, and the wall time of the whole run, which also
holds loading data, building, checkpoints and the store) and the error. Trains for real: minutes per model
on a 2-core CPU; run it on an idle machine (pause the reproduction job: SIGSTOP, then SIGCONT).

    PYTHONPATH=src MNISTLAB_DATA_DIR=... nice -n 19 python benchmarks/estimate_check.py s003-m1 s004-m2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mnistlab import api
from mnistlab.util.machine import describe


def check(model: str, probe_seconds: float) -> None:
    study = {"name": f"estimate-{model}", "protocol": "test", "seeds": [0], "defaults": {"device": "cpu"},
             "models": [{"model": model}]}
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "runs"
        plan = api.dry_run(study, store, probe_seconds=probe_seconds)
        estimate = plan.seconds
        started = time.perf_counter()
        outcome = api.run(study, store)
        wall = time.perf_counter() - started
        with api.open_store(store, create=False) as opened:
            (run_id,) = outcome.trained
            epochs = sum(opened.history(run_id)["seconds"])
    print(f"{model}: estimate {estimate:,.0f} s; measured {epochs:,.0f} s in epochs ({wall:,.0f} s wall); "
          f"error {100 * (estimate - epochs) / epochs:+.1f}% of the epochs' time, "
          f"{100 * (estimate - wall) / wall:+.1f}% of the wall time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--probe-seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"on {describe('cpu')}")
    for model in args.models:
        check(model, args.probe_seconds)


if __name__ == "__main__":
    main()

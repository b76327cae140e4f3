"""The live displays' own share of a study's wall time (issue 20: under 2%), measured directly.

Two parts. "display": for each model, a study (that model, `--seeds` seeds) runs through `api.run`
inside a real Jupyter kernel (nbclient + ipykernel, as a notebook runs it), with the LiveStudyDisplay
that `progress="auto"` makes there, passed in so its clock can be read afterwards: `overhead_seconds`
is the time spent inside the display's code (bookkeeping, SVG curves, HTML, sending it to the
notebook), `wall_seconds` the study's wall time from the display's start to its last redraw; the tqdm
bars are not counted. Each model is measured in a fresh kernel twice: "cold", nothing loaded before,
and "warm", after matplotlib, pandas and scipy were loaded (as after a History or a report was shown
in that notebook; the display itself needs none of them).

"report": the same study as `mnistlab run` trains it (cli/app.py, cli/live.py), in a fresh
interpreter: a LiveReport listener whose own thread rewrites the HTML report (marked in progress) as
runs finish, throttled, then `finish` writes the final one. Its share is the seconds that thread spent
writing (`write_seconds`, a write still in flight when training ended included, which `mnistlab run`
waits for: "thread stopped"; and its CPU time, `write_cpu_seconds`) over the training's wall time;
the final report (`finish`) is reported apart.

Prints Markdown tables for benchmarks/RESULTS.md.

    MNISTLAB_DATA_DIR=../shared/datasets PYTHONPATH=src python benchmarks/bench_live_display.py
    python benchmarks/bench_live_display.py --models s004-m1 --epochs 1 --train-limit 1000   # smoke, ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine_info

RESULT = "BENCH-RESULT "
CELL = """
{prelude}
import json
from mnistlab import api
from mnistlab.report.study_view import LiveStudyDisplay

display = LiveStudyDisplay()  # what progress="auto" makes in a notebook, kept to read its clock
study = json.loads({study!r})
outcome = api.run(study, {store!r}, progress=display)
print({result!r} + json.dumps({{"model": "{model}", "runs": len(outcome.trained), "wall": display.wall_seconds,
                                 "display": display.overhead_seconds, "redraws": display.redraws,
                                 "figures": display.figure_redraws}}))
"""


PRELUDES = {"cold": "", "warm": "import mnistlab.report.plots  # loaded, as after a History or report was shown"}
# As `mnistlab run` does (cli/app.py, cli/live.py): the live report is a listener; leaving the block
# stops its thread (a write in flight finishes), then finish writes the last state.
REPORT_SCRIPT = """
import json, sys, time
from mnistlab import api

study, store = json.loads(sys.argv[1]), sys.argv[2]
with api.LiveReport(store, study["name"], dataset=study["dataset"]) as live:
    started = time.perf_counter()
    outcome = api.run(study, store, progress="none", listeners=[live])
    wall = time.perf_counter() - started
stopped = time.perf_counter() - started  # the thread stopped: a write in flight when training ended is done
paths = live.finish(outcome.run_ids)
print({result!r} + json.dumps({{"model": study["models"][0]["model"], "runs": len(outcome.trained), "wall": wall,
                                 "stopped": stopped,
                                 "writing": live.write_seconds, "writing_cpu": live.write_cpu_seconds,
                                 "writes": live.writes, "final": live.finish_seconds,
                                 "final_written": paths is not None}}))
"""


def source_env() -> dict[str, str]:
    """The environment with this checkout's src first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                         *filter(None, [env.get("PYTHONPATH")])])
    return env


def study_of(model: str, seeds: int, epochs: int, train_limit: int, name: str) -> dict:
    return {"name": name, "dataset": "mnist", "protocol": "split", "seeds": list(range(seeds)),
            "defaults": {"epochs": epochs, "train_limit": train_limit}, "models": [{"model": model}]}


def measure(model: str, mode: str, seeds: int, epochs: int, train_limit: int, store: Path, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient

    study = json.dumps(study_of(model, seeds, epochs, train_limit, f"live-{model}"))
    source = CELL.format(prelude=PRELUDES[mode], model=model, study=study, store=str(store), result=RESULT)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(notebook, timeout=timeout, kernel_name="python3").execute(env=source_env())
    text = "".join(output.get("text", "") for output in notebook.cells[0].outputs if output.output_type == "stream")
    errors = [output for output in notebook.cells[0].outputs if output.output_type == "error"]
    if errors:
        raise SystemExit(f"{model}: the study failed in the kernel: {errors[0].ename}: {errors[0].evalue}")
    line = next(line for line in text.splitlines() if line.startswith(RESULT))
    return {"mode": mode, **json.loads(line.removeprefix(RESULT))}


def measure_report(model: str, seeds: int, epochs: int, train_limit: int, store: Path, timeout: int) -> dict:
    study = study_of(model, seeds, epochs, train_limit, f"report-{model}")
    done = subprocess.run([sys.executable, "-c", REPORT_SCRIPT.format(result=RESULT), json.dumps(study), str(store)],
                          capture_output=True, text=True, env=source_env(), timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{model}: the run-style study failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(lines[0].removeprefix(RESULT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["s004-m1", "s002-m1"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="default: the quick study's")
    parser.add_argument("--train-limit", type=int, default=6000, help="default: the quick study's")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one study may take")
    parser.add_argument("--modes", nargs="+", choices=sorted(PRELUDES), default=["cold", "warm"])
    parser.add_argument("--parts", nargs="+", choices=["display", "report"], default=["display", "report"])
    args = parser.parse_args()
    if "display" in args.parts:
        try:
            import nbclient  # noqa: F401
            import ipykernel  # noqa: F401
        except ImportError:
            raise SystemExit("needs the notebook tools: pip install -e '.[test]'") from None
    displays, reports = [], []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as folder:
        for model in args.models:  # each study in a fresh store: the whole study trains each time
            for mode in args.modes if "display" in args.parts else ():
                displays.append(measure(model, mode, args.seeds, args.epochs, args.train_limit,
                                        Path(folder) / f"{model}-{mode}", args.timeout))
                print(json.dumps(displays[-1]), file=sys.stderr)
            if "report" in args.parts:
                reports.append(measure_report(model, args.seeds, args.epochs, args.train_limit,
                                              Path(folder) / f"{model}-report", args.timeout))
                print(json.dumps(reports[-1]), file=sys.stderr)
    machine = machine_info(threads=0)
    setting = (f"{machine['cpu']}, {machine['usable_cpus']} usable CPUs; {args.seeds} seeds x {args.epochs} epochs "
               f"on {args.train_limit:,} images")
    if displays:
        print(f"\nLive notebook display's share of wall time ({setting}, in a Jupyter kernel):\n")
        print("| model | kernel | runs | wall (s) | display (s) | share | redraws | model figures drawn |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for row in displays:
            print(f"| {row['model']} | {row['mode']} | {row['runs']} | {row['wall']:.1f} | {row['display']:.3f} | "
                  f"{row['display'] / row['wall']:.2%} | {row['redraws']} | {row['figures']} |")
    if reports:
        print(f"\nLive report's share of wall time (`mnistlab run`'s, its own thread; {setting}):\n")
        print("| model | runs | training wall (s) | thread stopped (s) | writing (s) | share | writing CPU (s) "
              "| CPU share | reports written | final report (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in reports:
            print(f"| {row['model']} | {row['runs']} | {row['wall']:.1f} | {row['stopped']:.1f} | "
                  f"{row['writing']:.2f} | "
                  f"{row['writing'] / row['wall']:.2%} | {row['writing_cpu']:.2f} | "
                  f"{row['writing_cpu'] / row['wall']:.2%} | {row['writes']} | {row['final']:.2f} |")

if __name__ == "__main__":
    main()

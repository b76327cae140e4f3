"""The live notebook display's own share of a study's wall time (issue 20: under 2%), measured directly.

For each model, a study (that model, `--seeds` seeds) runs through `api.run` inside a real Jupyter
kernel (nbclient + ipykernel, as a notebook runs it), with the LiveStudyDisplay that `progress="auto"`
makes there, passed in so its clock can be read afterwards: `overhead_seconds` is the time spent inside
the display's code (bookkeeping, figures, HTML, sending it to the notebook), `wall_seconds` the study's
wall time from the display's start to its last redraw; the tqdm bars are not counted. Each model is
measured in a fresh kernel twice: "cold", where the display's first figures also load matplotlib,
pandas and scipy, and "warm", where they are loaded already (as after a History or a report was
shown in that notebook). Prints a Markdown table for benchmarks/RESULTS.md.

    MNISTLAB_DATA_DIR=../shared/datasets PYTHONPATH=src python benchmarks/bench_live_display.py
    python benchmarks/bench_live_display.py --models s004-m1 --epochs 1 --train-limit 1000   # smoke, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
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
study = {{"name": "live-{model}", "dataset": "mnist", "protocol": "split", "seeds": list(range({seeds})),
          "defaults": {{"epochs": {epochs}, "train_limit": {train_limit}}}, "models": [{{"model": "{model}"}}]}}
outcome = api.run(study, {store!r}, progress=display)
print({result!r} + json.dumps({{"model": "{model}", "runs": len(outcome.trained), "wall": display.wall_seconds,
                                 "display": display.overhead_seconds, "redraws": display.redraws,
                                 "figures": display.figure_redraws}}))
"""


PRELUDES = {"cold": "", "warm": "import mnistlab.report.plots  # loaded, as after a History or report was shown"}


def measure(model: str, mode: str, seeds: int, epochs: int, train_limit: int, store: Path, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient

    source = CELL.format(prelude=PRELUDES[mode], model=model, seeds=seeds, epochs=epochs, train_limit=train_limit,
                         store=str(store), result=RESULT)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), *filter(None, [env.get("PYTHONPATH")])])
    NotebookClient(notebook, timeout=timeout, kernel_name="python3").execute(env=env)
    text = "".join(output.get("text", "") for output in notebook.cells[0].outputs if output.output_type == "stream")
    errors = [output for output in notebook.cells[0].outputs if output.output_type == "error"]
    if errors:
        raise SystemExit(f"{model}: the study failed in the kernel: {errors[0].ename}: {errors[0].evalue}")
    line = next(line for line in text.splitlines() if line.startswith(RESULT))
    return {"mode": mode, **json.loads(line.removeprefix(RESULT))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["s004-m1", "s002-m1"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="default: the quick study's")
    parser.add_argument("--train-limit", type=int, default=6000, help="default: the quick study's")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one study may take")
    parser.add_argument("--modes", nargs="+", choices=sorted(PRELUDES), default=["cold", "warm"])
    args = parser.parse_args()
    try:
        import nbclient  # noqa: F401
        import ipykernel  # noqa: F401
    except ImportError:
        raise SystemExit("needs the notebook tools: pip install -e '.[test]'") from None
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as folder:
        for model in args.models:
            for mode in args.modes:  # each in a fresh store: the whole study trains each time
                result = measure(model, mode, args.seeds, args.epochs, args.train_limit,
                                 Path(folder) / f"{model}-{mode}", args.timeout)
                rows.append(result)
                print(json.dumps(result), file=sys.stderr)
    machine = machine_info(threads=0)
    print(f"\nLive display share of wall time ({machine['cpu']}, {machine['usable_cpus']} usable CPUs; "
          f"{args.seeds} seeds x {args.epochs} epochs "
          f"on {args.train_limit:,} images, in a Jupyter kernel):\n")
    print("| model | kernel | runs | wall (s) | display (s) | share | redraws | model figures drawn |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['model']} | {row['mode']} | {row['runs']} | {row['wall']:.1f} | {row['display']:.2f} | "
              f"{row['display'] / row['wall']:.2%} | {row['redraws']} | {row['figures']} |")


if __name__ == "__main__":
    main()

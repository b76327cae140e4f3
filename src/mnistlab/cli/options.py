"""Options that several commands share or that would crowd app.py: `--store`, `--json`, `run`'s overrides, its
dry run, `run --until-decided` with its settings (runs/sequential.py has their rules), and the run archives' options.

Their rules live elsewhere (experiments/overrides.py reads the override strings, cli/json_output.py
shapes a --json document); here only how Typer offers them. app.py and store_commands.py both use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["ArchivesOption", "BudgetOption", "DryRunOption", "EpochsOverride", "FlushDenormalOption", "JsonOption",
           "MarginOption", "MaxSeedsOption", "ModelsOverride", "OverrunOption", "PRECISION_HELP", "ProbeSecondsOption", "SeedsOverride",
           "SetOverride", "StoreOption", "UntilDecidedOption", "VaryOverride", "WithModelsOption"]

# Defaults to runs/store.py's DEFAULT_ROOT, the one home of the folder's name, which --help shows.
StoreOption = Annotated[Path, typer.Option("--store", envvar="MNISTLAB_STORE", help="Run store folder.")]

PRECISION_HELP = ("fp32 (strict float32, as Keras), tf32 (CUDA tensor cores), bf16 autocast, or bf32 (CPU: "
                  "oneDNN's implicit bf16 in fp32 matmuls and convolutions; needs AVX-512 BF16 or AMX).")
FlushDenormalOption = Annotated[bool, typer.Option(
    "--flush-denormal", help="Flush subnormal floats to zero on every CPU thread, as TensorFlow (so Keras 2.2) "
                             "does; faster late in overfitting runs, other numbers.")]

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on stdout (its first key, \"format\", is the JSON format version).")]

EpochsOverride = Annotated[Optional[int], typer.Option(
    "--epochs", min=1, help="Override: every model trains N epochs (a derived experiment NAME+epochs=N).")]
SeedsOverride = Annotated[Optional[str], typer.Option(
    "--seeds", help="Override: the seeds, START:STOP as Python's range (0:5 is 0 to 4) or a list (0,1,2).")]
ModelsOverride = Annotated[Optional[str], typer.Option(
    "--models", help="Override: only the file's entries with these model ids (s002-m1,s004-m1).")]
SetOverride = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override any field of the file: PATH=VALUE, list items by index from 0 "
                  "(defaults.train_limit=5000, models.1.epochs=3); the value is read as YAML. Repeatable.")]
VaryOverride = Annotated[Optional[list[str]], typer.Option(
    "--vary", help="Override: add or replace a factor on every model entry, FACTOR=L1,L2 (dropout=0,0.5). "
                   "Repeatable.")]

UntilDecidedOption = Annotated[bool, typer.Option(
    "--until-decided", help="Train in rounds, adding seeds only where a comparison with the reference is still open.")]
MaxSeedsOption = Annotated[Optional[int], typer.Option(
    "--max-seeds", min=2, help="With --until-decided: the most seeds per model (default 10).")]
BudgetOption = Annotated[Optional[str], typer.Option(
    "--budget", help="With --until-decided: a time budget (30m, 2h, 90s); no run starts that cannot finish in it.")]
OverrunOption = Annotated[bool, typer.Option(
    "--overrun", help="With --until-decided --budget: start a run while any budget is left, even one whose estimate "
                      "does not fit (the study may end after the budget).")]
MarginOption = Annotated[Optional[float], typer.Option(
    "--margin", min=0.0, help="With --until-decided: the equivalence margin in points (default 0.2).")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", help="List the models × seeds not done yet with an estimated time here (a short probe of each "
                      "model); train and write nothing.")]
ProbeSecondsOption = Annotated[Optional[float], typer.Option(
    "--probe-seconds", help="With --dry-run: how long each model's probe measures (default 10, at most 30).")]
WithModelsOption = Annotated[bool, typer.Option(
    "--with-models", help="Archive: also carry each completed run's model folder (weights).")]
ArchivesOption = Annotated[Optional[list[Path]], typer.Option(
    "--archive", help="Run archive(s) (export-runs --to archive) to read too; repeat for several.")]

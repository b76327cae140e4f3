"""Options that several commands share or that would crowd app.py: `--json`, `run`'s overrides, and
`run --until-decided` with its settings (runs/sequential.py has their rules).

Their rules live elsewhere (experiments/overrides.py reads the override strings, cli/json_output.py
shapes a --json document); here only how Typer offers them.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

__all__ = ["BudgetOption", "EpochsOverride", "JsonOption", "MarginOption", "MaxSeedsOption", "ModelsOverride",
           "SeedsOverride", "SetOverride", "UntilDecidedOption", "VaryOverride"]

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
MarginOption = Annotated[Optional[float], typer.Option(
    "--margin", min=0.0, help="With --until-decided: the equivalence margin in points (default 0.2).")]

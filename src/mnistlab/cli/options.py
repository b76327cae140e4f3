"""Options that several commands share or that would crowd app.py: `--json`, and `run`'s overrides.

Their rules live elsewhere (experiments/overrides.py reads the override strings, cli/json_output.py
shapes a --json document); here only how Typer offers them.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

__all__ = ["EpochsOverride", "FlushDenormalOption", "JsonOption", "ModelsOverride", "PRECISION_HELP", "SeedsOverride",
           "SetOverride", "VaryOverride"]

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

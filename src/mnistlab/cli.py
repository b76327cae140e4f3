"""The `mnistlab` command: a thin Typer layer over the Python API.

Every user error surfaces as a MnistlabError; `main` prints its one line and exits with 2, with
no traceback. Ctrl-C exits with 130 and leaves the last checkpoint intact.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from mnistlab.errors import MnistlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Design, train and compare neural networks on MNIST-family datasets (Keras 2.2 semantics, PyTorch speed).",
)
console = Console()
err_console = Console(stderr=True)

DataDirOption = Annotated[
    Optional[Path],
    typer.Option("--data-dir", envvar="MNISTLAB_DATA_DIR", help="Folder holding the dataset files (or <name>/ subfolders)."),
]


class Protocol(str, Enum):
    split = "split"
    test = "test"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


@app.command()
def zoo() -> None:
    """List the built-in seed models with their parameter counts and the notebook's test accuracy."""
    from mnistlab.spec import resolve
    from mnistlab.zoo import zoo_models

    table = Table(title="mnistlab zoo (models from the seed notebooks)")
    for column in ("id", "params", "optimizer", "epochs", "seed test acc", "description"):
        table.add_column(column, justify="right" if column in ("params", "epochs", "seed test acc") else "left")
    for spec in zoo_models().values():
        reference = spec.reference or {}
        acc = reference.get("test_acc")
        table.add_row(
            spec.id,
            f"{resolve(spec).total_params:,}",
            spec.training.optimizer.name,
            str(spec.training.epochs),
            f"{acc * 100:.2f}%" if acc is not None else "—",
            spec.description,
        )
    console.print(table)


@app.command()
def summary(
    model: Annotated[str, typer.Argument(help="Zoo id (s002-m10) or spec file (file.yaml or file.yaml:MODEL_ID).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Print a Keras-style summary: layers, output shapes, parameter counts."""
    from mnistlab.api import model_spec
    from mnistlab.summary import summary_data, summary_text

    spec = model_spec(model)
    if as_json:
        print(json.dumps(summary_data(spec), indent=2))
    else:
        print(summary_text(spec))


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Zoo id or spec file (file.yaml or file.yaml:MODEL_ID).")],
    dataset: Annotated[str, typer.Option(help="mnist, fashion-mnist or kmnist.")] = "mnist",
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds initial weights, shuffles and dropout.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="fp32, or bf16 autocast.")] = Precision.fp32,
    validate_on: Annotated[
        Protocol, typer.Option(help="split: a stratified 10% of train; test: the seeds' practice.")
    ] = Protocol.split,
    train_limit: Annotated[Optional[int], typer.Option(min=1, help="Train on the first N training images.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for checkpoints and history.json.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="Use torch.compile.")] = False,
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the history at the end.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Train one model and evaluate it once on the test set."""
    from mnistlab.api import model_spec
    from mnistlab.data import load_dataset
    from mnistlab.engine import Reporter, TrainConfig, fit
    from mnistlab.progress import RichReporter

    spec = model_spec(model)
    data = load_dataset(dataset, data_dir=data_dir, download=download)
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, seed=seed, device=device, precision=precision.value,
        validate_on=validate_on.value, train_limit=train_limit, out_dir=out, resume=resume, compile=compile,
    )
    reporter = Reporter() if quiet or as_json else RichReporter(err_console if as_json else console)
    history = fit(spec, data, config, reporter=reporter)
    result = history.to_json()
    if out is not None:
        (out / "history.json").write_text(json.dumps(history.to_json(predictions=True)))
    if as_json:
        print(json.dumps(result))
    elif not quiet:
        if history.status == "diverged":
            console.print(f"[red]diverged[/red] at epoch {history.diverged_epoch} (non-finite loss); run stopped")
        else:
            console.print(
                f"Test loss: {history.test_loss:.4f}  Test accuracy: {history.test_acc:.4f}  "
                f"({history.images_per_second:,.0f} images/s, {history.images_per_second_note})"
            )


def main() -> None:
    """Console-script entry point: one-line errors, exit 2; Ctrl-C exits 130."""
    try:
        code = app(standalone_mode=False)
    except click.ClickException as exc:  # usage errors: click's own message, its exit code (2)
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        err_console.print("interrupted; the last completed epoch's checkpoint is intact (use --resume)")
        sys.exit(130)
    except MnistlabError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

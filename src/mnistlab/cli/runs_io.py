"""`mnistlab export-runs` and `import-runs`: an experiment's runs out to TensorBoard, MLflow or a run archive,
and archives back into a store (app.py registers them; the work is mnistlab.api's)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mnistlab.cli.options import StoreOption, WithModelsOption
from mnistlab.cli.output import say
from mnistlab.errors import MnistlabError
from mnistlab.runs.store import DEFAULT_ROOT

__all__ = ["RunsTarget", "export_runs", "import_runs"]


class RunsTarget(str, Enum):
    tensorboard = "tensorboard"
    mlflow = "mlflow"
    archive = "archive"


def export_runs(
    experiment: Annotated[str, typer.Argument(help="Experiment name (as stored) or file.")],
    destination: Annotated[str, typer.Argument(
        help="TensorBoard: a folder. MLflow: a tracking URI or a local mlruns folder. Archive: a .tar.xz or "
             ".tar.gz file.")],
    to: Annotated[RunsTarget, typer.Option("--to", help="Where the runs go.")],
    with_models: WithModelsOption = False,
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Export an experiment's runs to TensorBoard, MLflow (one run per model and seed) or a portable archive."""
    from mnistlab import api

    if to == RunsTarget.archive:
        done = api.export_archive(experiment, destination, store, with_models=with_models)
        say(f"archived {done.runs} run(s) ({done.with_models} with model folders) in {done.path}: "
            f"{done.bytes / 1e6:.2f} MB")
        return
    if with_models:
        raise MnistlabError("export-runs: --with-models is for --to archive")
    written = api.export_runs(api.experiment_name(experiment), to.value, destination, store)
    say(f"exported {len(written)} run(s) to {to.value} at {destination}")


def import_runs(
    archive: Annotated[Path, typer.Argument(help="A run archive (export-runs --to archive).")],
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Bring an archive's runs into a store (created if absent): already-present runs are skipped, all or nothing."""
    from mnistlab import api

    done = api.import_archive(archive, store)
    say(f"imported {len(done.imported)} run(s), skipped {len(done.skipped)} already in {store}")

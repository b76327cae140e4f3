"""The entry points that read a study back: its report, comparison and conclusions, the reproduction
table, and its runs exported (TensorBoard, MLflow, archives) or imported."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mnistlab.util.atomic import check_target, write_text
from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.runs.store import DEFAULT_ROOT, RunStore, open_existing_store
from mnistlab.report.folders import REPORTS_DIR
from mnistlab.report.notebook import Comparison, ReportView
from mnistlab.api.studies import estimate, experiment_name

if TYPE_CHECKING:
    from mnistlab.experiments.definition import Experiment
    from mnistlab.report.conclusions import Conclusions
    from mnistlab.report.reproduction import ModelReproduction
    from mnistlab.report.writer import ReportPaths
    from mnistlab.runs.archive import ExportSummary, ImportSummary

__all__ = ["comparison", "conclusions", "export_archive", "export_runs", "import_archive", "report", "reproduction", "show_report"]


def report(experiment: str | Path | Experiment, store: RunStore | str | Path = DEFAULT_ROOT,
           out: str | Path | None = None, data_dir: str | Path | None = None, *, dataset: str | None = None,
           settled: Sequence[int] | None = None) -> ReportPaths | None:
    """Write the experiment's report: one self-contained HTML page and a Markdown file, in `out`
    (default: STORE/reports). `experiment`: its stored name, a built-in name, its file, or the Experiment.

    `dataset`: the dataset whose test images the misclassified grid shows (default: the Experiment's
    given one, else the one it was stored with); when it cannot be loaded, the report says the grid
    needs it. `settled`: write only if none of these runs is pending or running any more
    (`RunOutcome.run_ids`, asked after this process's last write, as `mnistlab run` does); None is
    returned otherwise."""
    from mnistlab.experiments.definition import Experiment

    if isinstance(experiment, Experiment):
        name, given, dataset = experiment.name, experiment.name, dataset or experiment.dataset
    else:
        name, given = experiment_name(experiment), str(experiment)  # a file's errors come before the store's
    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return _report(opened, name, given, Path(out) if out is not None else Path(store) / REPORTS_DIR,
                           data_dir, dataset, settled)
    return _report(store, name, given, Path(out) if out is not None else store.root / REPORTS_DIR,
                   data_dir, dataset, settled)


def _report(store: RunStore, name: str, given: str, out: Path, data_dir: str | Path | None, dataset: str | None,
            settled: Sequence[int] | None) -> ReportPaths | None:
    from mnistlab.report.writer import experiment_config, report_images, write_report

    config = experiment_config(store, name, given)
    if settled is not None:
        from mnistlab.runs.runner import experiment_settled

        if not experiment_settled(store, list(settled)):
            return None
    return write_report(store, name, out, dataset=report_images(dataset or config.get("dataset", "mnist"), data_dir))


def show_report(store: RunStore | str | Path, experiment: str | Path | Experiment, out: str | Path | None = None,
                data_dir: str | Path | None = None) -> ReportView:
    """Write the experiment's report (as `report`); a notebook shows the page on disk (`.path`) in an iframe."""
    return ReportView.from_file(report(experiment, store, out, data_dir).html)  # type: ignore[union-attr]


def comparison(experiment: str | Path, store: RunStore | str | Path = DEFAULT_ROOT) -> Comparison:
    """The comparison table (`.table`, a DataFrame) and its best model; a notebook shows it as the report does."""
    from mnistlab.report.notebook import comparison_of

    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return comparison(experiment, opened)
    return comparison_of(store, experiment_name(experiment))


def conclusions(experiment: str | Path, store: RunStore | str | Path = DEFAULT_ROOT) -> Conclusions:
    """The report's written conclusions (one sentence per finding, Holm-corrected), without a figure."""
    from mnistlab.report.content import experiment_conclusions

    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return conclusions(experiment, opened)
    return experiment_conclusions(store, experiment_name(experiment))


def reproduction(stores: list[str | Path] | str | Path = (), out: str | Path | None = None,
                 estimate_seconds: float | None = None, archives: Sequence[str | Path] = ()) -> list["ModelReproduction"]:
    """Each seed model's notebook figure against mnistlab's runs under the notebook's protocol in ``stores`` and
    run ``archives`` (any mix; a seed in several counts once); with ``out``, also write the Markdown document
    (docs/REPRODUCTION.md is made this way). With ``estimate_seconds``, every model not run yet is probed that
    long here (fp32) and the document gives its estimated hours per seed under its notebook's protocol."""
    from mnistlab.training.cost import check_probe_seconds
    from mnistlab.report.reproduction import render_markdown, reproduction_from

    roots = [stores] if isinstance(stores, (str, Path)) else list(stores)
    if out is not None:
        check_target(out)
    if not roots and not archives:
        raise MnistlabError("mnistlab reproduction: give at least one run store (--store DIR) or archive (--archive FILE)")
    if estimate_seconds is not None:
        check_probe_seconds(estimate_seconds, "reproduction: estimate_seconds")
    lines = reproduction_from(roots, archives)
    if out is not None:
        estimates = {line.model_id: estimate(line.model_id, probe_seconds=estimate_seconds, device="cpu")
                     for line in lines if line.verdict == "not run"} if estimate_seconds is not None else None
        text = render_markdown(lines, [str(source) for source in [*roots, *archives]], estimates)
        try:
            write_text(Path(out), text)
        except OSError as error:
            raise EnvironmentFailure(f"{out}: cannot write the reproduction table: {error.strerror or error}") from None
    return lines


def export_runs(experiment: str, to: str, destination: str | Path,
                store: RunStore | str | Path = DEFAULT_ROOT) -> list[Any]:
    """An experiment's runs to TensorBoard (`to="tensorboard"`, a folder), MLflow (`to="mlflow"`, a tracking URI
    or a local mlruns folder: one run per (model, seed), metrics per epoch, hparams) or a run archive (`to="archive"`)."""
    from mnistlab.interop.tracking import TARGETS, to_mlflow, to_tensorboard

    if to == "archive":  # a portable run archive (`export_archive`), without model folders
        return [export_archive(experiment, destination, store).path]
    if to not in TARGETS:
        raise MnistlabError(f"export-runs: unknown target '{to}'; choose {', '.join(TARGETS)} or archive")
    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return export_runs(experiment, to, destination, opened)
    if to == "tensorboard":
        return to_tensorboard(store, experiment, destination)
    return to_mlflow(store, experiment, str(destination))


def export_archive(experiment: str | Path, path: str | Path, store: RunStore | str | Path = DEFAULT_ROOT, *,
                   with_models: bool = False) -> ExportSummary:
    """The experiment's completed, diverged and failed runs as one portable archive (`.tar.xz` or `.tar.gz`,
    runs/archive.py): spec, history, final metrics, test predictions, machine, notes; `with_models`: model folders."""
    from mnistlab.runs.archive import export_archive as export

    if not isinstance(store, RunStore):
        with open_existing_store(store) as opened:
            return export(opened, experiment_name(experiment), path, with_models=with_models)
    return export(store, experiment_name(experiment), path, with_models=with_models)


def import_archive(path: str | Path, store: RunStore | str | Path = DEFAULT_ROOT) -> ImportSummary:
    """Bring an archive's runs into `store` (created if absent) in one transaction: runs already there are
    skipped, a conflicting one refuses the archive, and the archive is checked whole before the store is opened."""
    from mnistlab.runs.archive import import_archive as bring, import_into

    return bring(store, path) if isinstance(store, RunStore) else import_into(store, path)

"""``write_report``: the HTML page, the Markdown file and its figures, each replaced whole."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.util.atomic import replace_folder, write_text
from mnistlab.data.datasets import Dataset, load_dataset
from mnistlab.errors import DataError, EnvironmentFailure, MnistlabError
from mnistlab.report.content import DEFAULT_DETAIL_MODELS, InProgress, build_report
from mnistlab.report.html import render_html
from mnistlab.report.markdown import render_markdown
from mnistlab.runs.store import RunStore

__all__ = ["ReportPaths", "experiment_config", "report_images", "report_stem", "write_report"]


# Characters a report's file name keeps from the experiment's name: safe on every common file system,
# and enough to keep a derived experiment's `+key=a,b` apart from the file's own (`:`, `/`, spaces go).
_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._+=,-]+")


def report_stem(experiment: str) -> str:
    """The file name (without suffix) of an experiment's report: `study+epochs=20` stays itself."""
    return _UNSAFE_IN_FILE_NAMES.sub("-", experiment).strip("-.") or "experiment"


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path


def write_report(store: RunStore, experiment: str, out_dir: Path, dataset: Dataset | None = None,
                 detail_models: int = DEFAULT_DETAIL_MODELS, live: InProgress | None = None) -> ReportPaths:
    """Write ``<experiment>.html`` (self-contained) and ``<experiment>.md`` with its figures in
    ``<experiment>-files/`` into ``out_dir``.

    ``dataset`` supplies the test images for the grid of misclassified images (left out, and
    the page says why, when None). ``detail_models`` caps the per-model curve plots to the top
    models by mean test accuracy. `live`: the study is still running (report/live.py): the page says
    how far it is and reloads itself. MnistlabError when the experiment has no completed run.
    """
    out_dir = Path(out_dir)
    stem = report_stem(experiment)
    files_dir = f"{stem}-files"
    _check_folder(out_dir)  # first: a folder that cannot be made costs no figures
    report = build_report(store, experiment, dataset, detail_models)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        replace_folder(out_dir / files_dir, {f"{plot.name}.png": plot.png for plot in report.plots})
        markdown = write_text(out_dir / f"{stem}.md", render_markdown(report, files_dir, live))
        html = write_text(out_dir / f"{stem}.html", render_html(report, live))
    except OSError as error:
        # Each file is replaced whole, so what is there is the previous report or the new one.
        raise _cannot_write(error, out_dir) from None
    return ReportPaths(html=html, markdown=markdown)


def _check_folder(out_dir: Path) -> None:
    """Refuse, before any work and creating nothing, a report folder that cannot be made: a file in
    the way, or a folder this process may not write in (a live report tries again after each run)."""
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is not a folder" if not existing.is_dir() else "is not writable"
        raise EnvironmentFailure(f"{out_dir}: cannot write the report: {existing} {why}; choose another --out")


def _cannot_write(error: OSError, out_dir: Path) -> EnvironmentFailure:
    return EnvironmentFailure(f"{error.filename or out_dir}: cannot write the report: {error.strerror or error}; "
                              "free space or choose another --out")


def report_images(dataset: str, data_dir: Path | str | None = None) -> Dataset | None:
    """The dataset whose test images a report shows, or None when it cannot be loaded (the report
    then says the grid of misclassified images needs it)."""
    try:
        return load_dataset(dataset, data_dir=data_dir)
    except DataError:
        return None


def experiment_config(store: RunStore, experiment: str, given: str | None = None) -> dict[str, Any]:
    """The stored config of `experiment`; a one-line MnistlabError naming `given` (what the user
    typed: a name or a file) when the store has no such experiment."""
    config = next((record.config for record in store.experiments() if record.name == experiment), None)
    if config is None:
        raise MnistlabError(f"{store.root}: no experiment '{experiment}' in this store; "
                            f"run it first with `mnistlab run {given or experiment}`")
    return config

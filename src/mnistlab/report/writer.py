"""``write_report``: the HTML page, the Markdown file and its figures, each replaced whole."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mnistlab.util.atomic import replace_folder, write_text
from mnistlab.data.datasets import Dataset
from mnistlab.errors import EnvironmentFailure
from mnistlab.report.content import DEFAULT_DETAIL_MODELS, build_report
from mnistlab.report.html import render_html
from mnistlab.report.markdown import render_markdown
from mnistlab.runs.store import RunStore

__all__ = ["ReportPaths", "report_stem", "write_report"]

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
                 detail_models: int = DEFAULT_DETAIL_MODELS) -> ReportPaths:
    """Write ``<experiment>.html`` (self-contained) and ``<experiment>.md`` with its figures in
    ``<experiment>-files/`` into ``out_dir``.

    ``dataset`` supplies the test images for the grid of misclassified images (left out, and
    the page says why, when None). ``detail_models`` caps the per-model curve plots to the top
    models by mean test accuracy. MnistlabError when the experiment has no completed run.
    """
    report = build_report(store, experiment, dataset, detail_models)
    out_dir = Path(out_dir)
    stem = report_stem(experiment)
    files_dir = f"{stem}-files"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        replace_folder(out_dir / files_dir, {f"{plot.name}.png": plot.png for plot in report.plots})
        markdown = write_text(out_dir / f"{stem}.md", render_markdown(report, files_dir))
        html = write_text(out_dir / f"{stem}.html", render_html(report))
    except OSError as error:
        # Each file is replaced whole, so what is there is the previous report or the new one.
        where = error.filename or out_dir
        raise EnvironmentFailure(f"{where}: cannot write the report: {error.strerror or error}; "
                                 "free space or choose another --out") from None
    return ReportPaths(html=html, markdown=markdown)

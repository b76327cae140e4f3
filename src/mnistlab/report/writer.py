"""``write_report``: the HTML page, the Markdown file and its figures, each replaced whole."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mnistlab.data import Dataset
from mnistlab.report.content import DEFAULT_DETAIL_MODELS, build_report, slug
from mnistlab.report.html import render_html
from mnistlab.report.markdown import render_markdown
from mnistlab.store import RunStore

__all__ = ["ReportPaths", "write_report"]


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
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = slug(experiment)
    files_dir = f"{stem}-files"
    _replace_folder(out_dir / files_dir, {f"{plot.name}.png": plot.png for plot in report.plots})
    markdown = _write_atomically(out_dir / f"{stem}.md", render_markdown(report, files_dir))
    html = _write_atomically(out_dir / f"{stem}.html", render_html(report))
    return ReportPaths(html=html, markdown=markdown)


def _write_atomically(path: Path, text: str) -> Path:
    # Temp file in the same folder, then rename: a reader (or a crash) never sees half a page.
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as temp:
            temp.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _replace_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Fill a fresh temp folder, then swap it in for ``folder``: the old figures stay whole
    until the new ones are all written, and stale figures of models since dropped go."""
    fresh = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for name, data in files.items():
            (fresh / name).write_bytes(data)
        if folder.exists():
            # A directory cannot be renamed over a non-empty one: move the old aside first.
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            os.replace(folder, old / folder.name)
            os.replace(fresh, folder)
            shutil.rmtree(old)
        else:
            os.replace(fresh, folder)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise

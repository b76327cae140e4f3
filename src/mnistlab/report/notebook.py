"""Objects that show themselves in a notebook: History, the comparison table, the conclusions, the report.

Each display is one macro of templates/notebook.html.j2, rendered with autoescape, so every user string
(model ids, descriptions, experiment names) is text; figures are PNG data: URIs and nothing is fetched,
so a saved notebook shows the same offline. `ReportView` embeds the report's own page, read from disk,
in an iframe's `srcdoc` (attribute-escaped): the page in the notebook is the page on disk.

Importing this module is light (no matplotlib, pandas or Jinja until something is shown), and it
registers the renderers of `History` and `Conclusions` with `util.display`, which their `_repr_html_`
asks: they live in modules that may not import this one. `mnistlab.api` imports it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.errors import EnvironmentFailure
from mnistlab.training.history import EPOCH_METRICS
from mnistlab.util.display import register_html

if TYPE_CHECKING:
    from jinja2 import Template

    from mnistlab.report.conclusions import Conclusions
    from mnistlab.runs.store import RunStore
    from mnistlab.training.history import History

__all__ = ["REPORT_HEIGHT", "Comparison", "ReportView", "comparison_of", "conclusions_html", "curve_images",
           "history_html", "number", "render"]

TEMPLATE = "notebook.html.j2"
REPORT_HEIGHT = 900  # px: the report's first screen (title, facts, conclusions) without scrolling the notebook
DASH = "—"  # a number that is missing or not finite


@functools.cache
def _template() -> Template:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    # autoescape=True: every value is text, never markup; srcdoc's page is escaped as an attribute.
    environment = Environment(loader=PackageLoader("mnistlab.report", "templates"), autoescape=True,
                              undefined=StrictUndefined)
    return environment.get_template(TEMPLATE)


def render(macro: str, **values: Any) -> str:
    """One display's HTML: the template's macro `macro` called with `values`."""
    return str(getattr(_template().module, macro)(**values))


def number(value: Any, digits: int = 4) -> str:
    """A metric as the displays write it; DASH when it is missing or not finite."""
    if value is None or not math.isfinite(float(value)):
        return DASH
    return f"{float(value):.{digits}f}"


def curve_images(epochs: Any, model: str) -> list[tuple[str, str]]:
    """(title, data URI) of one model's loss and accuracy figures, the report's own (mean and seed band)."""
    from mnistlab.report import plots

    figures = (plots.loss_figure(epochs, model), plots.accuracy_figure(epochs, model))
    return [(figure.axes[0].get_title(), plots.png_data_uri(plots.figure_png(figure))) for figure in figures]


# -- History ---------------------------------------------------------------------------------------


def history_html(history: History) -> str:
    """A run's facts, its loss and accuracy curves, and its metrics per epoch."""
    import pandas as pd

    shown = [key for key in EPOCH_METRICS if any(math.isfinite(value) for value in history.series(key))]
    rows = [[str(int(epoch["epoch"])), *(number(epoch.get(key), 1 if key == "seconds" else 4) for key in shown)]
            for epoch in history.epochs]
    images: list[tuple[str, str]] = []
    if history.epochs:
        frame = pd.DataFrame([{"run_id": 0, "model": history.model_id, "seed": history.seed, **epoch}
                              for epoch in history.epochs])
        images = curve_images(frame, history.model_id)
    items = [("status", history.status + (f" at epoch {history.diverged_epoch}" if history.diverged_epoch else "")),
             ("test accuracy", number(history.test_acc)), ("test loss", number(history.test_loss)),
             ("epochs", str(len(history.epochs))), ("validation", history.protocol),
             ("images per epoch", f"{history.train_images:,}"), ("device", history.device)]
    if history.images_per_second:
        items.append(("images/s", f"{history.images_per_second:,.0f}"))
    if history.best_epoch is not None:
        items.append(("best epoch", f"{history.best_epoch}" + (" (stopped early)" if history.stopped_early else "")))
    return render("history", title=f"{history.model_id}, seed {history.seed}", items=items,
                  columns=["epoch", *shown], rows=rows, images=images)


# -- conclusions and the comparison table -----------------------------------------------------------


def conclusions_html(conclusions: Conclusions) -> str:
    return render("conclusions", title="Conclusions", sentences=list(conclusions.sentences),
                  method=conclusions.method)


@dataclass(frozen=True)
class Comparison:
    """An experiment's comparison table: `table` as numbers (a pandas DataFrame, best mean test
    accuracy first, the report's columns), shown as the report shows it, the best model marked."""

    experiment: str
    table: Any = field(repr=False)
    best: str | None

    def _repr_html_(self) -> str:
        from mnistlab.report.content import COLUMNS, TEXT_COLUMNS, table_rows

        rows = table_rows(self.table)
        models = self.table["model"].tolist()
        note = (f"{self.best}, chosen on validation alone, is marked; its test accuracy is the one to report."
                if self.best is not None else "No model has a test figure yet.")
        return render("comparison", title=f"Comparison: {self.experiment}", columns=[header for header, _ in COLUMNS],
                      rows=[[cell.text for cell in row] for row in rows], text_columns=TEXT_COLUMNS,
                      classes=["best" if model == self.best else "" for model in models], note=note)


def comparison_of(store: RunStore, experiment: str) -> Comparison:
    from mnistlab.analysis.ranking import best_model
    from mnistlab.report.frame import comparison_table

    table = comparison_table(store, experiment)
    return Comparison(experiment, table, best_model(table))


# -- the report --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportView:
    """A written report's page, shown in a notebook as it is on disk (an iframe whose `srcdoc` is the page)."""

    path: Path
    page: str = field(repr=False)
    height: int = REPORT_HEIGHT

    @classmethod
    def from_file(cls, path: Path, height: int = REPORT_HEIGHT) -> ReportView:
        try:
            return cls(Path(path), Path(path).read_text(encoding="utf-8"), height)
        except OSError as error:
            raise EnvironmentFailure(f"{path}: cannot read the report: {error.strerror or error}") from None

    def _repr_html_(self) -> str:
        # sandbox: the page's script (its sortable table) runs, in an origin of its own.
        return render("report_frame", title=f"Report: {self.path}", page=self.page, height=self.height)


register_html("mnistlab.training.history.History", history_html)
register_html("mnistlab.report.conclusions.Conclusions", conclusions_html)

"""The report as one self-contained HTML page: figures as PNG data URIs, CSS and JS inline."""

from __future__ import annotations

import functools

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from mnistlab.report.content import TEST_ACC_HEADER, TEXT_COLUMNS, InProgress, Report
from mnistlab.report.sequential import HEADERS as UNTIL_DECIDED_HEADERS

__all__ = ["render_html"]

TEMPLATE = "report.html.j2"


@functools.cache
def _template() -> Template:
    # autoescape=True: every value (model descriptions, rule texts) is text, never markup.
    environment = Environment(loader=PackageLoader("mnistlab.report", "templates"),
                              autoescape=True, undefined=StrictUndefined,
                              trim_blocks=False, lstrip_blocks=False)
    return environment.get_template(TEMPLATE)


def render_html(report: Report, live: InProgress | None = None) -> str:
    """The page's text; the comparison table starts sorted by mean test accuracy. `live`: the study
    is still running, so the page says how far it is and reloads itself."""
    return _template().render(report=report, text_columns=TEXT_COLUMNS, live=live,
                              sorted_column=report.columns.index(TEST_ACC_HEADER),
                              until_decided_headers=UNTIL_DECIDED_HEADERS)

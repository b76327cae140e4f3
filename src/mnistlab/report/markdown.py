"""The report as Markdown (GitHub flavour): the page's content, figures as PNG files beside it."""

from __future__ import annotations

from collections.abc import Sequence

from mnistlab.report.content import TEXT_COLUMNS, InProgress, Plot, Report
from mnistlab.report.sequential import HEADERS
from mnistlab.util.safetext import markdown as escape_html

__all__ = ["render_markdown"]


def _escape(text: str) -> str:
    """Text safe inside a GFM table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def gfm_table(headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: Sequence[int] = ()) -> list[str]:
    """A GFM table; columns not in ``text_columns`` are right-aligned (numbers)."""
    align = ["---" if index in text_columns else "---:" for index in range(len(headers))]
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    return lines


def _image(plot: Plot, files_dir: str) -> str:
    return f"![{_escape(plot.title)}]({files_dir}/{plot.name}.png)"


def _header(report: Report) -> list[str]:
    lines = [f"# {report.title}", ""]
    if report.description:
        lines += [report.description, ""]
    lines += [f"- **{label}:** {value}" for label, value in report.facts]
    return lines + ["", f"**Protocol:** {report.protocol}.", ""]


def _comparison(report: Report) -> list[str]:
    text_columns = [index for index, column in enumerate(report.columns) if column in TEXT_COLUMNS]
    rows = [[cell.text for cell in row] for row in report.rows]
    return ["## Comparison", "",
            "One row per model, best mean test accuracy first; losses and accuracies are means over "
            "runs of the final epoch.", "",
            *gfm_table(report.columns, rows, text_columns), ""]


def _conclusions(report: Report) -> list[str]:
    lines = ["## Conclusions", ""]
    # No escaping here: render_markdown escapes the whole document once (escaping twice shows "&lt;").
    lines += [f"- {sentence}" for sentence in report.conclusions.sentences]
    return lines + ["", report.conclusions.method, ""]


def _effects(report: Report, files_dir: str) -> list[str]:
    if report.effects is None:
        return []
    lines = ["## Factor effects", "", report.effects_note, ""]
    lines += [_image(plot, files_dir) for plot in report.effects_plots]
    headers = ["Metric", "Contrast", "Estimate", "95% CI", "p", "Holm-adjusted p", "Detectable (80% power)", "Verdict"]
    return lines + [""] + gfm_table(headers, report.effect_rows, (0, 1, 7)) + [""]


def _diagnoses(report: Report) -> list[str]:
    lines = ["## Diagnoses", "", report.diagnosis_note, ""]
    for item in report.diagnoses:
        lines += [f"### {item.model}: {item.text}", "", f"Rule texts from run {item.run_id}, seed {item.seed}:", ""]
        lines += [f"- **{finding.label}:** {finding.rule}" for finding in item.findings]
        lines.append("")
    return lines


def _statistics(report: Report) -> list[str]:
    lines = ["## Statistics", "", report.statistics_note, ""]
    stats = report.statistics
    if stats is None:
        return lines
    lines += [f"**{stats.summary_sentence()}**", ""]
    for comparison in stats.comparisons:
        lines.append(f"- {comparison.sentence} _(McNemar on {comparison.seed_note}: "
                     f"{comparison.mcnemar.b} test predictions only {comparison.a} got right, "
                     f"{comparison.mcnemar.c} only {comparison.b}; difference "
                     f"{comparison.difference.note}"
                     + (f"; {report.outperform[comparison.b]}" if report.outperform and comparison.b in report.outperform
                        else "") + ")_")
    if stats.skipped:
        lines += ["", "Not compared:", ""] + [f"- {model}: {reason}" for model, reason in stats.skipped]
    return lines + [""]


def _until_decided(report: Report) -> list[str]:
    section = report.until_decided
    if section is None:
        return []
    return ["## Until decided", "", f"**{section.guarantee}**", "", section.note, "",
            *gfm_table(HEADERS, section.rows, (0, 1)), "", section.open_note, ""]


def _figures(report: Report, files_dir: str) -> list[str]:
    lines = ["## Training curves", ""]
    if report.curves_note:
        lines += [report.curves_note, ""]
    lines += [_image(plot, files_dir) for plot in report.curves]
    lines += ["", "### All models", "", _image(report.overlay, files_dir), "", "## Weights of the best run", ""]
    if report.weights is not None:
        lines += [_image(report.weights, files_dir), ""]
    return lines + [report.weights_note, ""]


def _best(report: Report, files_dir: str) -> list[str]:
    best = report.best
    lines = [f"## Best model: {best.model}", "",
             f"Its run with the highest validation accuracy: run {best.run_id}, seed {best.seed}, test accuracy {best.test_acc * 100:.2f}%.", ""]
    if best.confusion is not None:
        lines += [_image(best.confusion, files_dir), ""]
    lines += ["### Most confused pairs", ""]
    if len(best.pairs):
        rows = [[pair.true, pair.predicted, str(pair.count), f"{pair.share_of_true * 100:.2f}%"]
                for pair in best.pairs.itertuples()]
        lines += gfm_table(["True", "Predicted", "Count", "Share of true class"], rows, (0, 1))
    else:
        lines.append("No test image was misclassified.")
    lines += ["", "### Misclassified test images", ""]
    if best.misclassified is not None:
        lines += [_image(best.misclassified, files_dir), ""]
    for note in best.notes:
        lines += [note, ""]
    return lines


def render_markdown(report: Report, files_dir: str, live: InProgress | None = None) -> str:
    """The Markdown text; figures are referenced as ``<files_dir>/<plot name>.png``. `live`: the
    study is still running (the first lines say how far it is)."""
    status = [f"**{live.text[0].upper()}{live.text[1:]}** (rewritten as runs finish).", ""] if live else []
    sections = (status, _header(report), _conclusions(report), _until_decided(report), _comparison(report),
                _effects(report, files_dir),
                _diagnoses(report), _statistics(report),
                _figures(report, files_dir), _best(report, files_dir))
    text = "\n".join(line for section in sections for line in section).rstrip() + "\n"
    # Model ids, descriptions, layer and class names are user text, and this page emits no HTML of
    # its own: escaping the whole document leaves no raw tag from any of them, whatever section.
    return escape_html(text)

"""User strings are text: the one home for making them safe to show on a terminal or in Markdown.

Model ids, descriptions, layer names, experiment names and error messages come from files users
(or others) write. On a terminal they must not be read as rich markup (`[bold red]`, or a `[/]`
that crashes the renderer) nor carry control characters (ESC sequences that move the cursor or
retitle the window, CR that overwrites a line, bidirectional overrides that reorder text). In
Markdown they must not carry raw HTML. HTML pages escape through Jinja2's autoescape, not here; markup
written by hand (the live display's SVG curves) escapes through `xml_text`.
"""

from __future__ import annotations

import html
import unicodedata


from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
_KEPT = {"\n", "\t"}


def _unsafe(char: str) -> bool:
    # Cc: C0 and C1 controls (ESC, CR, BEL, CSI ...); Cf's bidi controls reorder what is shown.
    category = unicodedata.category(char)
    return char not in _KEPT and (category == "Cc" or (category == "Cf" and unicodedata.bidirectional(char) in
                                                        ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI")))


def clean(value: object) -> str:
    """`str(value)` with terminal control characters replaced by U+FFFD (newlines and tabs kept)."""
    text = str(value)
    if text.isprintable():  # the common case, fast: no control or format characters at all
        return text
    return "".join(REPLACEMENT if _unsafe(char) else char for char in text)


def one_line(value: object) -> str:
    """`clean(value)` on one line: newlines and tabs become spaces (for error lines and table cells)."""
    return " ".join(clean(value).replace("\t", " ").split("\n"))


def text(value: object, style: str | Style | None = None) -> Text:
    """A rich Text of a user string: never parsed as markup, control characters replaced."""
    return Text(clean(value), style=style or "")


def markup(value: object) -> str:
    """A user string to splice into a rich markup string: escaped and cleaned."""
    return escape(clean(value))


def markdown(value: object) -> str:
    """User text (or a whole Markdown document built from it) with HTML escaped: `<script>` becomes
    `&lt;script&gt;`, which Markdown renders as the literal text. Control characters are replaced."""
    return html.escape(clean(value), quote=False)


def xml_text(value: object) -> str:
    """A user string as the text (or a quoted attribute) of hand-written XML/SVG: on one line, control
    characters replaced (XML 1.0 forbids most), and `<`, `>`, `&` and both quotes escaped."""
    return html.escape(one_line(value), quote=True)


class _Cleaned:
    """Renders another renderable with control characters replaced in its text (not its styles)."""

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for segment in console.render(self.inner, options):
            if segment.control or segment.text.isprintable() or segment.text == "\n":
                yield segment
            else:
                yield Segment(clean(segment.text), segment.style)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.inner)


class _CleanHook:
    """A console render hook that wraps everything printed in `_Cleaned`."""

    def process_renderables(self, renderables: list[RenderableType]) -> list[RenderableType]:
        return [_Cleaned(renderable) for renderable in renderables]


def safe_console(**options: object) -> Console:
    """A Console for user data: plain strings are never markup or emoji codes, and control
    characters in any text it prints are replaced. Style with `text(value, style)` or Text."""
    console = Console(markup=False, emoji=False, **options)  # type: ignore[arg-type]
    console.push_render_hook(_CleanHook())  # type: ignore[arg-type]
    return console


__all__ = ["REPLACEMENT", "clean", "markdown", "markup", "one_line", "safe_console", "text", "xml_text"]



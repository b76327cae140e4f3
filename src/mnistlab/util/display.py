"""How objects below the report layer show themselves in a notebook: the registry of their HTML renderers.

`History` (training) and `Conclusions` (report) have a `_repr_html_` that a notebook calls, but the
HTML needs figures, and nothing below the report layer may import matplotlib, nor may a low module
import a higher one. So each such `_repr_html_` asks `html_of(self)`, and `mnistlab.report.notebook`
registers the renderers when it is imported (`mnistlab.api` imports it). Types are named by their
module and qualified name, so registering one imports nothing. Without a renderer `html_of` returns
None, which tells IPython to fall back to the plain repr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["html_of", "register_html", "type_name"]

Renderer = Callable[[Any], str]
RENDERERS: dict[str, Renderer] = {}


def type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def register_html(name: str, render: Renderer) -> None:
    """Show instances of the type called `name` ("package.module.Class") as `render(obj)`'s HTML."""
    RENDERERS[name] = render


def html_of(obj: Any) -> str | None:
    """The registered renderer's HTML for `obj`, or None when its type has none."""
    render = RENDERERS.get(type_name(type(obj)))
    return render(obj) if render is not None else None

"""YAML loading that remembers where each mapping came from, so errors can name file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mnistlab.errors import SpecError


class LineDict(dict):
    """A dict that knows the 1-based line of the YAML mapping it was read from."""

    line: int | None = None


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are LineDicts carrying their source line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        mapping = LineDict(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _LineLoader.construct_mapping,  # type: ignore[arg-type]
)


def line_of(value: Any) -> int | None:
    """The source line of a mapping read by `load_yaml`, or None for anything else."""
    return getattr(value, "line", None)


def load_yaml(path: Path) -> Any:
    """Read a YAML file; a missing file or a syntax error becomes a one-line SpecError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpecError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None

"""The one place YAML is read: mappings remember their line, and hostile files fail in one line.

Every YAML file the package reads goes through `load_yaml` (or `parse_yaml` for text), so the
same guards hold everywhere: the file must be UTF-8, a mapping may not repeat a key (PyYAML
silently keeps the last one), and aliases may not expand past `MAX_YAML_NODES` nodes. PyYAML
shares an aliased node instead of copying it, so a "billion laughs" file loads cheaply, but
anything that walks the result (validation, hashing, JSON) would expand it: the bound is on the
expanded size, computed on the composed node graph before anything is constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mnistlab.errors import SpecError

# Nodes a document may expand to once every alias is substituted. The largest built-in file
# expands to a few thousand; an experiment with a hundred inline models stays far below.
# Override by assigning `mnistlab.util.yamlio.MAX_YAML_NODES` (read at call time).
MAX_YAML_NODES = 200_000


class LineDict(dict):
    """A dict that knows the 1-based line of the YAML mapping it was read from."""

    line: int | None = None


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _TooLarge(Exception):
    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are LineDicts carrying their source line, without duplicate keys."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # merged keys may be overridden on purpose; complex keys fail below
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        mapping = LineDict(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _LineLoader.construct_mapping,  # type: ignore[arg-type]
)


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_NODES nodes, or refer to themselves.

    Sizes are memoised per node object (an alias is the same object as its anchor), so this
    takes time proportional to the distinct nodes, however far they would expand.
    """
    limit = MAX_YAML_NODES
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # Iterative post-order walk: deeply nested documents must not hit Python's recursion limit.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            active.discard(key)
            if sizes[key] > limit:
                raise _TooLarge(f"the YAML expands to more than {limit:,} nodes (aliases that multiply, "
                                "e.g. a 'billion laughs' file)", node.start_mark.line + 1)
            continue
        if key in sizes:
            continue
        if key in active:
            raise _TooLarge("an alias refers to the node that contains it (a recursive alias)", node.start_mark.line + 1)
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def line_of(value: Any) -> int | None:
    """The source line of a mapping read by `load_yaml`, or None for anything else."""
    return getattr(value, "line", None)


def load_yaml(path: Path) -> Any:
    """Read a YAML file; every problem with it becomes a one-line SpecError naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a YAML file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from None
    return parse_yaml(text, path)


def parse_yaml(text: str, source: Path | str = "<string>") -> Any:
    """YAML text → data, with the same guards as `load_yaml`; errors name `source`."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except _DuplicateKey as dup:
        raise SpecError(
            f"{source}:{dup.second}: duplicate key '{dup.key}' (first at line {dup.first}); keep only one"
        ) from None
    except _TooLarge as big:
        where = f"{source}:{big.line}" if big.line else str(source)
        raise SpecError(f"{where}: refused: {big.reason}") from None
    except RecursionError:
        raise SpecError(f"{source}: refused: the YAML is nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else str(source)
        raise SpecError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None

"""The one shape of every `--json` document a command prints on stdout.

Each document is one JSON object whose first key is ``"format"``: the version of the JSON
interface, raised whenever a key changes meaning or disappears (adding keys keeps it). Scripts
check it once instead of guessing from the keys present. JSON lines written to stderr during
training carry their own version (``report.progress.LOG_FORMAT_VERSION``).

NaN and infinity are not JSON: a missing or diverged figure (a NaN loss, a mean over no runs) is
written as ``null``, never as the bare ``NaN`` that strict parsers refuse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["JSON_FORMAT_VERSION", "finite", "json_document", "print_json"]

JSON_FORMAT_VERSION = 1


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (numpy's included) replaced by None, tuples as lists."""
    if isinstance(value, Mapping):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):  # numpy scalars
        return finite(value.item())
    return value


def json_document(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with the format version first; a payload may not set "format" itself."""
    if "format" in payload:
        raise ValueError("a --json payload may not carry its own 'format' key")
    return {"format": JSON_FORMAT_VERSION, **finite(payload)}


def print_json(payload: Mapping[str, Any], indent: int | None = None) -> None:
    """Print one --json document on stdout; allow_nan=False backs ``finite``: nothing non-JSON gets out."""
    print(json.dumps(json_document(payload), indent=indent, allow_nan=False))

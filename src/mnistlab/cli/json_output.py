"""The one shape of every `--json` document a command prints on stdout.

Each document is one JSON object whose first key is ``"format"``: the version of the JSON
interface, raised whenever a key changes meaning or disappears (adding keys keeps it). Scripts
check it once instead of guessing from the keys present. JSON lines written to stderr during
training carry their own version (``report.progress.LOG_FORMAT_VERSION``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["JSON_FORMAT_VERSION", "json_document", "print_json"]

JSON_FORMAT_VERSION = 1


def json_document(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with the format version first; a payload may not set "format" itself."""
    if "format" in payload:
        raise ValueError("a --json payload may not carry its own 'format' key")
    return {"format": JSON_FORMAT_VERSION, **payload}


def print_json(payload: Mapping[str, Any], indent: int | None = None) -> None:
    """Print one --json document on stdout (NaN and infinity are not JSON: refused, never written)."""
    print(json.dumps(json_document(payload), indent=indent, allow_nan=False))

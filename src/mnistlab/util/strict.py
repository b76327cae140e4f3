"""Whole numbers typed by users or read from files, parsed the strict way: the one home of that rule.

`str.isdigit()` is true of '²' and '٣', which `int()` then refuses or reads as another digit; and a
run id past SQLite's integer range raises OverflowError inside sqlite3. Here a whole number is
ASCII digits only, with an optional upper bound, so every such failure is a clean "not a number".
"""

from __future__ import annotations

SQLITE_MAX_INT = 2**63 - 1  # SQLite's INTEGER range: run ids, schema versions
_MAX_DIGITS = 30  # no bound used here needs more; int() of longer text is never attempted


def whole_number(text: object, upper: int | None = SQLITE_MAX_INT) -> int | None:
    """`text` as a non-negative int if it is ASCII digits only (surrounding spaces allowed) and at
    most `upper`; else None."""
    value = str(text).strip()
    if not value or len(value) > _MAX_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if upper is None or number <= upper else None


__all__ = ["SQLITE_MAX_INT", "whole_number"]

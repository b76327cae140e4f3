"""Where reports go by default: its one home, light enough for the CLI to import at start-up (writer.py pulls
in pandas and matplotlib)."""

from __future__ import annotations

__all__ = ["REPORTS_DIR"]

REPORTS_DIR = "reports"  # STORE/reports: where `run` and `report` write, and where `gc` looks for orphans

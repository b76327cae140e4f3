"""The progress log formats that `--log-format` offers and `progress.make_reporter` accepts.

Their home is this module of its own, which imports nothing, rather than progress.py: the CLI builds
its options from them at startup, and progress.py's reporters need the training engine (and torch),
which `mnistlab ls` must start without.
"""

from __future__ import annotations

# text: a progress bar on a terminal, else one line per epoch; json: one JSON object per line.
LOG_FORMATS: tuple[str, ...] = ("text", "json")

__all__ = ["LOG_FORMATS"]

"""The one exception family users see.

Every error a user can cause (bad spec, bad data file, bad experiment, unknown model) is a
``MnistlabError`` whose message is a single line naming the file, the model, the layer and the
field where they apply. The CLI prints that line and exits with status 2, never a traceback.
"""

from __future__ import annotations


class MnistlabError(Exception):
    """A user-facing error with a one-line message."""

    exit_code = 2

    def __init__(self, message: str = "", *args: object) -> None:
        # Messages quote user strings (names, ids, paths), which may hold line breaks: one line
        # by construction, with the breaks shown as escapes.
        if isinstance(message, str):
            message = message.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(message, *args)


class SpecError(MnistlabError):
    """A model or experiment spec is malformed."""


class DataError(MnistlabError):
    """A dataset file is missing, truncated, corrupt or of the wrong kind."""


class StoreError(MnistlabError):
    """The run store cannot be used (newer schema, unwritable, inconsistent)."""

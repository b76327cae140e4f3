"""The one exception family users see.

Every error a user can cause (bad spec, bad data file, bad experiment, unknown model) is a
``MnistlabError`` whose message is a single line naming the file, the model, the layer and the
field where they apply. The CLI prints that line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(word: str, choices: Iterable[str], limit: int = 1, ignore_case: bool = True) -> list[str]:
    """The choices closest to a mistyped word, best first (difflib's ratio, cutoff 0.6).

    The one matcher behind every "did you mean" a user sees. With ``ignore_case`` the match is
    made on lower-cased text and the choice is returned as spelled, so 'conv2d' finds 'Conv2D'.
    """
    if not ignore_case:
        return difflib.get_close_matches(word, list(choices), n=limit)
    lowered = {choice.lower(): choice for choice in choices}
    return [lowered[match] for match in difflib.get_close_matches(word.lower(), list(lowered), n=limit)]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close choice exists, else ''."""
    close = close_matches(word, choices)
    return f" (did you mean '{close[0]}'?)" if close else ""


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


class EnvironmentFailure(MnistlabError):
    """The machine, not the input, is at fault (full disk, read-only folder): exit status 1."""

    exit_code = 1


class StoreUnavailable(StoreError, EnvironmentFailure):
    """The run store cannot be written or read because of the environment (full disk, read-only,
    held busy too long, I/O error)."""

    exit_code = 1


class LeaseLost(StoreError):
    """This process no longer owns the run it was training (its claim went stale and another
    process took it over, or the run finished): it must stop that run and write nothing more."""

    exit_code = 1


class CheckpointError(MnistlabError):
    """A checkpoint is damaged or belongs to another run; it is never loaded."""


class CheckpointWriteError(EnvironmentFailure):
    """A checkpoint could not be written (full disk, read-only folder); the previous one is whole."""


class ArtifactError(MnistlabError):
    """A stored run's file (weights, predictions) is damaged; reports show the run as damaged."""


class MissingDependency(EnvironmentFailure):
    """An optional extra the feature needs is not installed (an environment failure: exit 1)."""

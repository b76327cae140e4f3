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

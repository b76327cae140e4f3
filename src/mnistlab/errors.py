"""The one exception family users see.

Every error a user can cause (bad spec, bad data file, bad experiment, unknown model) is a
``MnistlabError`` whose message is a single line naming the file, the model, the layer and the
field where they apply. The CLI prints that line and exits with status 2, never a traceback.
"""

from __future__ import annotations


class MnistlabError(Exception):
    """A user-facing error with a one-line message."""

    exit_code = 2


class SpecError(MnistlabError):
    """A model or experiment spec is malformed."""


class DataError(MnistlabError):
    """A dataset file is missing, truncated, corrupt or of the wrong kind."""


class StoreError(MnistlabError):
    """The run store cannot be used (newer schema, unwritable, inconsistent)."""


class MissingDependency(MnistlabError):
    """An optional extra the feature needs is not installed (an environment failure: exit 1)."""

    exit_code = 1

"""The field types of the spec language: strict numbers, Keras pairs, names, initializers.

Strict because YAML is loose: `true` is not the integer 1, "32" is not 32, and 2.0 is not an
integer either; a spec that says otherwise is a mistake to report, not a value to coerce. The
names a field accepts (activations, initializers) come from the Keras vocabulary.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator

from mnistlab.errors import did_you_mean
from mnistlab.spec.vocabulary import ACTIVATIONS, INITIALIZER_KEYS, INITIALIZERS, initializer_key

# Seeds feed torch and numpy generators, which take 0 <= seed < 2**63 (engine folds the epoch in
# modulo this bound).
SEED_BOUND = 2**63


class FieldProblem(Exception):
    """A problem in one field of one layer (or of the optimizer), raised while resolving shapes.

    It carries the field's dotted name apart from the message, so whoever catches it can prefix
    the file, model and layer: the raiser knows the field, the catcher knows where it is.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # ints are accepted, bools are not
Seed = Annotated[int, Strict(), Field(ge=0, lt=SEED_BOUND)]


def _as_pair(value: Any) -> Any:
    """Keras accepts an int or a pair for kernel sizes and strides."""
    if isinstance(value, bool):
        return value  # let pydantic reject it
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list):
        return tuple(value)
    return value


PositivePair = Annotated[
    tuple[PositiveInt, PositiveInt], BeforeValidator(_as_pair)
]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


ActivationName = Annotated[Literal[ACTIVATIONS], BeforeValidator(_lower)]  # type: ignore[valid-type]
Padding = Annotated[Literal["valid", "same"], BeforeValidator(_lower)]


class Initializer(BaseModel):
    """A kernel initializer; only random_normal takes arguments (mean, stddev)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal[INITIALIZERS]  # type: ignore[valid-type]
    mean: Float = 0.0
    stddev: Annotated[Float, Field(gt=0)] = 0.05

    @field_validator("name", mode="before")
    @classmethod
    def _canonical(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        key = initializer_key(value)
        if key in INITIALIZER_KEYS:
            return INITIALIZER_KEYS[key]
        raise ValueError(f"unknown initializer '{value}'{did_you_mean(value, INITIALIZERS)}")


def _as_initializer(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


InitializerArg = Annotated[Initializer, BeforeValidator(_as_initializer)]

"""The layers of the spec language: Keras 2.2's layers, each knowing its output shape and parameters.

Each layer computes its static output shape and parameter counts as Keras layers do, so summaries
and validation need no forward pass; a shape that does not work is a FieldProblem naming the field.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict

from mnistlab.spec.fields import (
    ActivationName,
    FieldProblem,
    Float,
    Initializer,
    InitializerArg,
    Int,
    Padding,
    PositiveInt,
    PositivePair,
)

Shape = tuple[int, ...]  # Keras order without the batch dimension: (H, W, C) or (features,)


def format_shape(shape: Shape) -> str:
    """Python's tuple notation, as Keras prints shapes: (12,) and (28, 28, 1).

    Error messages quote shapes this way so they read like the Keras summary a user knows.
    """
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


class Layer(BaseModel):
    """Fields every layer has; subclasses add their Keras arguments and shape rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    inputs: list[str] | None = None

    keras_prefix: ClassVar[str]  # Keras's automatic-name stem: conv2d_1, dense_2, ...

    def output_shape(self, shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def param_counts(self, shapes: list[Shape]) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts for these input shapes."""
        return (0, 0)

    @property
    def activation_name(self) -> str:
        return getattr(self, "activation", "linear")


def _single(shapes: list[Shape], field: str = "inputs") -> Shape:
    if len(shapes) != 1:
        raise FieldProblem(field, f"takes one input, got {len(shapes)}")
    return shapes[0]


def _image(shape: Shape, what: str) -> Shape:
    if len(shape) != 3:
        raise FieldProblem(
            "inputs", f"{what} needs an image input (H, W, C), got {format_shape(shape)}; use 'input: [28, 28, 1]'"
        )
    return shape


def window_output(size: int, kernel: int, stride: int, padding: str) -> int:
    """TensorFlow's output length: 'same' → ceil(in / stride); 'valid' → floor((in - k) / stride) + 1."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after); the odd pixel goes after (bottom/right)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windowed_shape(shape: Shape, kernel: tuple[int, int], strides: tuple[int, int], padding: str, field: str,
                    what: str) -> tuple[int, int]:
    height, width = shape[0], shape[1]
    if padding == "valid" and (kernel[0] > height or kernel[1] > width):
        raise FieldProblem(
            field,
            f"{what} {kernel[0]}x{kernel[1]} is larger than its {height}x{width} input with padding 'valid'",
        )
    return (
        window_output(height, kernel[0], strides[0], padding),
        window_output(width, kernel[1], strides[1], padding),
    )


class _KernelLayer(Layer):
    """Arguments shared by the layers with a kernel (Conv2D, Dense)."""

    activation: ActivationName = "linear"
    kernel_initializer: InitializerArg = Initializer(name="glorot_uniform")
    use_bias: Annotated[bool, Strict()] = True


class Conv2D(_KernelLayer):
    type: Literal["Conv2D"] = "Conv2D"
    filters: PositiveInt
    kernel_size: PositivePair
    strides: PositivePair = (1, 1)
    padding: Padding = "valid"

    keras_prefix: ClassVar[str] = "conv2d"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        shape = _image(_single(shapes), "Conv2D")
        h, w = _windowed_shape(shape, self.kernel_size, self.strides, self.padding, "kernel_size", "kernel")
        return (h, w, self.filters)

    def param_counts(self, shapes: list[Shape]) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return (kh * kw * shapes[0][-1] * self.filters + (self.filters if self.use_bias else 0), 0)


class MaxPooling2D(Layer):
    type: Literal["MaxPooling2D"] = "MaxPooling2D"
    pool_size: PositivePair = (2, 2)
    strides: PositivePair | None = None  # Keras: defaults to pool_size
    padding: Padding = "valid"

    keras_prefix: ClassVar[str] = "max_pooling2d"

    @property
    def effective_strides(self) -> tuple[int, int]:
        return self.strides if self.strides is not None else self.pool_size

    def output_shape(self, shapes: list[Shape]) -> Shape:
        shape = _image(_single(shapes), "MaxPooling2D")
        h, w = _windowed_shape(shape, self.pool_size, self.effective_strides, self.padding, "pool_size", "pool")
        return (h, w, shape[2])


class Dropout(Layer):
    type: Literal["Dropout"] = "Dropout"
    rate: Annotated[Float, Field(ge=0.0, lt=1.0)]

    keras_prefix: ClassVar[str] = "dropout"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return _single(shapes)


class BatchNormalization(Layer):
    type: Literal["BatchNormalization"] = "BatchNormalization"
    momentum: Annotated[Float, Field(ge=0.0, lt=1.0)] = 0.99
    epsilon: Annotated[Float, Field(gt=0.0)] = 1e-3

    keras_prefix: ClassVar[str] = "batch_normalization"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return _single(shapes)

    def param_counts(self, shapes: list[Shape]) -> tuple[int, int]:
        features = shapes[0][-1]  # per channel after a conv, per feature after a Dense
        return (2 * features, 2 * features)  # gamma, beta trainable; moving mean/variance not


class Flatten(Layer):
    type: Literal["Flatten"] = "Flatten"

    keras_prefix: ClassVar[str] = "flatten"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return (math.prod(_single(shapes)),)


class Dense(_KernelLayer):
    type: Literal["Dense"] = "Dense"
    units: PositiveInt

    keras_prefix: ClassVar[str] = "dense"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        shape = _single(shapes)
        if len(shape) != 1:
            raise FieldProblem(
                "inputs", f"Dense on an un-flattened {format_shape(shape)} input; add a Flatten layer before it"
            )
        return (self.units,)

    def param_counts(self, shapes: list[Shape]) -> tuple[int, int]:
        return (shapes[0][0] * self.units + (self.units if self.use_bias else 0), 0)


class Activation(Layer):
    type: Literal["Activation"] = "Activation"
    activation: ActivationName

    keras_prefix: ClassVar[str] = "activation"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return _single(shapes)


class Concatenate(Layer):
    type: Literal["Concatenate"] = "Concatenate"
    axis: Int = -1

    keras_prefix: ClassVar[str] = "concatenate"

    def output_shape(self, shapes: list[Shape]) -> Shape:
        if len(shapes) < 2:
            raise FieldProblem("inputs", f"Concatenate needs two or more inputs, got {len(shapes)}")
        rank = len(shapes[0])
        axis = self.axis if self.axis >= 0 else rank + self.axis
        if not 0 <= axis < rank:
            raise FieldProblem("axis", f"axis {self.axis} is out of range for rank-{rank} inputs")
        for shape in shapes[1:]:
            if len(shape) != rank or any(a != b for i, (a, b) in enumerate(zip(shape, shapes[0])) if i != axis):
                listed = ", ".join(format_shape(s) for s in shapes)
                raise FieldProblem("inputs", f"input shapes {listed} differ outside axis {self.axis}")
        return tuple(sum(s[i] for s in shapes) if i == axis else shapes[0][i] for i in range(rank))


LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.model_fields["type"].default: cls
    for cls in (Conv2D, MaxPooling2D, Dropout, BatchNormalization, Flatten, Dense, Activation, Concatenate)
}

AnyLayer = Annotated[
    Union[Conv2D, MaxPooling2D, Dropout, BatchNormalization, Flatten, Dense, Activation, Concatenate],
    Field(discriminator="type"),
]


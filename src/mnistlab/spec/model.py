"""The model spec language: Keras 2.2 vocabulary, validated before anything runs.

A spec is data (YAML or Python). Each layer knows its own output shape and parameter count, as
Keras layers do, so summaries and validation need no forward pass. Every problem a user can
make is reported as one line naming the file (and line), the model, the layer and the field.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
)

from mnistlab.errors import SpecError
from mnistlab.util.yamlio import line_of

Shape = tuple[int, ...]  # Keras order without the batch dimension: (H, W, C) or (features,)
N_CLASSES = 10
INPUT_NAME = "input"

# Seeds feed torch and numpy generators, which take 0 <= seed < 2**63 (engine folds the epoch in
# modulo this bound).
SEED_BOUND = 2**63

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close choice exists, else ''."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


class _Problem(Exception):
    """A problem in one field of one layer, raised while resolving shapes."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- argument types -------------------------------------------------------------------------

# Strict: YAML's `true` is not the integer 1, "32" is not 32, and 2.0 is not an integer either.
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


ActivationName = Annotated[Literal["relu", "sigmoid", "tanh", "softmax", "linear"], BeforeValidator(_lower)]
Padding = Annotated[Literal["valid", "same"], BeforeValidator(_lower)]

# Keras class spellings and short names mapped to the canonical snake_case names.
_INITIALIZER_ALIASES = {
    "glorotuniform": "glorot_uniform",
    "glorotnormal": "glorot_normal",
    "henormal": "he_normal",
    "heuniform": "he_uniform",
    "randomnormal": "random_normal",
    "normal": "random_normal",
    "zeros": "zeros",
    "zero": "zeros",
}
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "random_normal", "zeros")


class Initializer(BaseModel):
    """A kernel initializer; only random_normal takes arguments (mean, stddev)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "random_normal", "zeros"]
    mean: Float = 0.0
    stddev: Annotated[Float, Field(gt=0)] = 0.05

    @field_validator("name", mode="before")
    @classmethod
    def _canonical(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        key = value.replace("_", "").lower()
        if key in _INITIALIZER_ALIASES:
            return _INITIALIZER_ALIASES[key]
        raise ValueError(f"unknown initializer '{value}'{did_you_mean(value, INITIALIZERS)}")


def _as_initializer(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


InitializerArg = Annotated[Initializer, BeforeValidator(_as_initializer)]


# --- layers ---------------------------------------------------------------------------------


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
        raise _Problem(field, f"takes one input, got {len(shapes)}")
    return shapes[0]


def _image(shape: Shape, what: str) -> Shape:
    if len(shape) != 3:
        raise _Problem("inputs", f"{what} needs an image input (H, W, C), got {_fmt(shape)}; use 'input: [28, 28, 1]'")
    return shape


def _fmt(shape: Shape) -> str:
    """Python's tuple notation, as Keras prints shapes: (12,) and (28, 28, 1)."""
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


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


def _windowed_shape(shape: Shape, kernel: tuple[int, int], strides: tuple[int, int], padding: str, field: str, what: str) -> tuple[int, int]:
    height, width = shape[0], shape[1]
    if padding == "valid" and (kernel[0] > height or kernel[1] > width):
        raise _Problem(
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
            raise _Problem("inputs", f"Dense on an un-flattened {_fmt(shape)} input; add a Flatten layer before it")
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
            raise _Problem("inputs", f"Concatenate needs two or more inputs, got {len(shapes)}")
        rank = len(shapes[0])
        axis = self.axis if self.axis >= 0 else rank + self.axis
        if not 0 <= axis < rank:
            raise _Problem("axis", f"axis {self.axis} is out of range for rank-{rank} inputs")
        for shape in shapes[1:]:
            if len(shape) != rank or any(a != b for i, (a, b) in enumerate(zip(shape, shapes[0])) if i != axis):
                listed = ", ".join(_fmt(s) for s in shapes)
                raise _Problem("inputs", f"input shapes {listed} differ outside axis {self.axis}")
        return tuple(sum(s[i] for s in shapes) if i == axis else shapes[0][i] for i in range(rank))


LAYER_CLASSES: dict[str, type[Layer]] = {
    cls.model_fields["type"].default: cls
    for cls in (Conv2D, MaxPooling2D, Dropout, BatchNormalization, Flatten, Dense, Activation, Concatenate)
}
# Other spellings Keras itself accepts.
_LAYER_ALIASES = {"Convolution2D": "Conv2D", "MaxPool2D": "MaxPooling2D", "BatchNorm": "BatchNormalization"}

AnyLayer = Annotated[
    Union[Conv2D, MaxPooling2D, Dropout, BatchNormalization, Flatten, Dense, Activation, Concatenate],
    Field(discriminator="type"),
]


# --- training -------------------------------------------------------------------------------


class OptimizerSpec(BaseModel):
    """An optimizer name plus Keras 2.2 arguments; unset arguments take Keras 2.2 defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "adam"
    args: dict[str, Union[Float, Annotated[bool, Strict()]]] = Field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> "OptimizerSpec":
        if isinstance(value, OptimizerSpec):
            return value
        if isinstance(value, str):
            return cls(name=value.lower())
        if isinstance(value, dict):
            data = dict(value)
            name = data.pop("name", None)
            if not isinstance(name, str):
                raise _Problem("optimizer.name", "an optimizer mapping needs a 'name'")
            return cls(name=name.lower(), args=data)
        raise _Problem("optimizer", "must be a name such as 'adam' or a mapping with 'name' and arguments")

    def check(self) -> None:
        """Unknown optimizers and arguments are rejected here, before any training."""
        from mnistlab.training.optim import KERAS_DEFAULTS  # optim imports torch; keep spec import light

        if self.name not in KERAS_DEFAULTS:
            names = sorted(KERAS_DEFAULTS)
            raise _Problem(
                "optimizer",
                f"unknown optimizer '{self.name}'{did_you_mean(self.name, names)}; choose one of {', '.join(names)}",
            )
        defaults = {**KERAS_DEFAULTS[self.name], "learning_rate": KERAS_DEFAULTS[self.name].get("lr", 0.0)}
        for arg, value in self.args.items():
            if arg not in defaults:
                raise _Problem(
                    f"optimizer.{arg}",
                    f"{self.name} has no argument '{arg}'{did_you_mean(arg, sorted(defaults))}",
                )
            # A switch (amsgrad, nesterov) takes true/false; a rate or coefficient takes a number.
            wants_bool = isinstance(defaults[arg], bool)
            if isinstance(value, bool) != wants_bool:
                kind = "true or false" if wants_bool else "a number"
                raise _Problem(f"optimizer.{arg}", f"must be {kind}, got {str(value).lower()}")

    def to_yaml_value(self) -> str | dict[str, Any]:
        return self.name if not self.args else {"name": self.name, **self.args}


class Training(BaseModel):
    """How a model is trained. Batch size and epochs default to Keras's mnist_cnn example (128, 12)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: OptimizerSpec = OptimizerSpec()
    batch_size: PositiveInt = 128
    epochs: PositiveInt = 12

    @field_validator("optimizer", mode="before")
    @classmethod
    def _parse_optimizer(cls, value: Any) -> Any:
        try:
            return OptimizerSpec.parse(value)
        except _Problem as problem:
            raise ValueError(problem.message) from None


# --- models ---------------------------------------------------------------------------------


class ModelSpec(BaseModel):
    """One model: its input, layers, training settings, and (for zoo models) the seed's figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1)]
    description: str = ""
    input: tuple[PositiveInt, ...] = (28, 28, 1)
    layers: list[AnyLayer]
    training: Training = Training()
    reference: dict[str, Any] | None = None
    decisions: list[str] = Field(default_factory=list)

    _source: str | None = PrivateAttr(default=None)
    _layer_lines: list[int | None] = PrivateAttr(default_factory=list)

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, tuple) and len(value) not in (1, 3):
            raise ValueError("must be [height, width, channels] or [features], e.g. [28, 28, 1] or [784]")
        return value

    @property
    def source(self) -> str | None:
        """'file:line' where the model was defined, when it came from a file."""
        return self._source

    def to_dict(self) -> dict[str, Any]:
        """Plain data that `parse_model` reads back to an equal spec (used for hashing and storage)."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"reference", "decisions"})
        data["training"]["optimizer"] = self.training.optimizer.to_yaml_value()
        return data

    def with_training(self, **changes: Any) -> "ModelSpec":
        """A copy with some training settings changed; bad values raise ValueError (or ValidationError)."""
        current = {**self.training.model_dump(), "optimizer": self.training.optimizer.to_yaml_value()}
        training = Training.model_validate({**current, **changes})
        if "optimizer" in changes:
            try:
                training.optimizer.check()
            except _Problem as problem:
                raise ValueError(f"field '{problem.field}': {problem.message}") from None
        copy = self.model_copy(update={"training": training})
        copy._source, copy._layer_lines = self._source, self._layer_lines
        return copy


@dataclass(frozen=True)
class Node:
    """A layer placed in the model: its name, inputs, static output shape and parameter counts."""

    index: int  # 1-based position in the spec's layer list
    name: str
    layer: Layer
    inputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    trainable: int
    non_trainable: int

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


@dataclass(frozen=True)
class Resolved:
    """A validated model: nodes in execution order, and whether it is a graph (functional API)."""

    spec: ModelSpec
    nodes: tuple[Node, ...]
    is_graph: bool

    @property
    def output_shape(self) -> Shape:
        return self.nodes[-1].output_shape

    @property
    def trainable_params(self) -> int:
        return sum(n.trainable for n in self.nodes)

    @property
    def non_trainable_params(self) -> int:
        return sum(n.non_trainable for n in self.nodes)

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params


def _where(spec: ModelSpec, index: int | None = None) -> str:
    """'file:line: model 'id'' prefix, using the layer's own line when known."""
    line_source = spec.source
    if index is not None and spec._layer_lines and index - 1 < len(spec._layer_lines):
        line = spec._layer_lines[index - 1]
        if line is not None and line_source is not None:
            line_source = f"{line_source.rsplit(':', 1)[0]}:{line}"
    prefix = f"{line_source}: " if line_source else ""
    return f"{prefix}model '{spec.id}'"


def _layer_label(index: int, name: str, layer: Layer | str) -> str:
    kind = layer if isinstance(layer, str) else layer.type  # type: ignore[attr-defined]
    return f"layer {index} ({name}, {kind})"


def resolve(spec: ModelSpec) -> Resolved:
    """Place every layer, compute static shapes and parameter counts, and check the whole graph."""
    shapes: dict[str, Shape] = {INPUT_NAME: tuple(spec.input)}
    counters: dict[str, int] = {}
    used: set[str] = set()
    nodes: list[Node] = []
    is_graph = any(layer.inputs is not None for layer in spec.layers)
    previous = INPUT_NAME
    for index, layer in enumerate(spec.layers, start=1):
        prefix = layer.keras_prefix
        counters[prefix] = counters.get(prefix, 0) + 1
        name = layer.name or f"{prefix}_{counters[prefix]}"
        label = _layer_label(index, name, layer)
        if name in shapes:
            raise SpecError(f"{_where(spec, index)}: {label}: field 'name': '{name}' is already used by another layer")
        inputs = tuple(layer.inputs) if layer.inputs is not None else (previous,)
        for source in inputs:
            if source not in shapes:
                raise SpecError(
                    f"{_where(spec, index)}: {label}: field 'inputs': no layer named '{source}' before this one"
                    f"{did_you_mean(source, list(shapes))}"
                )
        input_shapes = tuple(shapes[s] for s in inputs)
        try:
            out = layer.output_shape(list(input_shapes))
            trainable, non_trainable = layer.param_counts(list(input_shapes))
        except _Problem as problem:
            raise SpecError(f"{_where(spec, index)}: {label}: field '{problem.field}': {problem.message}") from None
        if layer.activation_name == "softmax" and index != len(spec.layers):
            raise SpecError(
                f"{_where(spec, index)}: {label}: field 'activation': softmax must be the last layer's activation"
            )
        used.update(inputs)
        shapes[name] = out
        nodes.append(Node(index, name, layer, inputs, input_shapes, out, trainable, non_trainable))
        previous = name
    _check_output(spec, nodes)
    dangling = [n for n in nodes[:-1] if n.name not in used]
    if dangling:
        node = dangling[0]
        raise SpecError(
            f"{_where(spec, node.index)}: {_layer_label(node.index, node.name, node.layer)}: field 'inputs': "
            "this layer's output is never used; connect it or remove it"
        )
    return Resolved(spec=spec, nodes=tuple(nodes), is_graph=is_graph)


def _check_output(spec: ModelSpec, nodes: list[Node]) -> None:
    if not nodes:
        raise SpecError(f"{_where(spec)}: field 'layers': a model needs at least one layer")
    last = nodes[-1]
    label = _layer_label(last.index, last.name, last.layer)
    if last.layer.activation_name != "softmax":
        raise SpecError(
            f"{_where(spec, last.index)}: {label}: field 'activation': the last layer must end in softmax "
            "(categorical cross-entropy on class probabilities, as in Keras)"
        )
    if last.output_shape != (N_CLASSES,):
        raise SpecError(
            f"{_where(spec, last.index)}: {label}: field 'units': the output must be {N_CLASSES} classes, "
            f"got {_fmt(last.output_shape)}"
        )


# --- reading specs from data ----------------------------------------------------------------

_MODEL_KEYS = tuple(ModelSpec.model_fields)


_NESTED_MODELS: dict[str, type[BaseModel]] = {"kernel_initializer": Initializer, "training": Training}


def _field_choices(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The valid names where an unknown field sits (inside kernel_initializer or training too)."""
    for part in loc[:-1]:
        model = _NESTED_MODELS.get(part, model)
    return [f for f in model.model_fields if f != "type"]


def _first_error(exc: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """The most useful pydantic error as (dotted field, plain message).

    An unknown field is reported before a missing one: `filter: 32` makes `filters` missing
    too, and "did you mean 'filters'?" is the message that helps.
    """
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(p) for p in err["loc"]]
    if "args" in loc[:-1]:  # optimizer arguments: 'optimizer.lr', not 'optimizer.args.lr.float' (a union member)
        at = loc.index("args")
        loc = loc[:at] + loc[at + 1 : at + 2]
    field = ".".join(loc) if loc else "?"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = f"unknown argument '{loc[-1]}'{did_you_mean(loc[-1], _field_choices(model, loc))}"
    elif err["type"] == "missing":
        message = "is required"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif isinstance(err.get("input"), bool) and err["type"] in ("int_type", "float_type"):
        kind = "a whole number" if err["type"] == "int_type" else "a number"
        message = f"must be {kind}, not {str(err['input']).lower()}"
    return field, message


def _default_name(kind: str, counters: dict[str, int]) -> str:
    """Keras's automatic name (`dense_2`) for the next layer of this kind."""
    prefix = LAYER_CLASSES[kind].keras_prefix
    return f"{prefix}_{counters.get(prefix, 0) + 1}"


def _parse_layer(spec_id: str, where: str, index: int, raw: Any, counters: dict[str, int]) -> Layer:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: model '{spec_id}': layer {index}: field 'type': a layer must be a mapping with a 'type'")
    kind = raw.get("type")
    name = raw.get("name") or "?"
    if not isinstance(kind, str):
        raise SpecError(f"{where}: model '{spec_id}': layer {index} ({name}): field 'type': is required, e.g. 'Conv2D'")
    kind = _LAYER_ALIASES.get(kind, kind)
    if kind not in LAYER_CLASSES:
        raise SpecError(
            f"{where}: model '{spec_id}': layer {index} ({name}): field 'type': unknown layer '{kind}'"
            f"{did_you_mean(kind, list(LAYER_CLASSES))}"
        )
    cls = LAYER_CLASSES[kind]
    name = raw.get("name") or _default_name(kind, counters)
    prefix = cls.keras_prefix
    counters[prefix] = counters.get(prefix, 0) + 1
    data = {**raw, "type": kind}
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        field, message = _first_error(exc, cls)
        raise SpecError(f"{where}: model '{spec_id}': {_layer_label(index, name, kind)}: field '{field}': {message}") from None


def parse_model(raw: Any, source: str | Path | None = None) -> ModelSpec:
    """Validate one model mapping (from YAML or Python) into a resolved-checked ModelSpec."""
    file = str(source) if source is not None else "<python>"
    line = line_of(raw)
    where = f"{file}:{line}" if line else file
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a model must be a mapping with 'id' and 'layers'")
    spec_id = str(raw.get("id") or "?")
    for key in raw:
        if key not in _MODEL_KEYS:
            raise SpecError(f"{where}: model '{spec_id}': field '{key}': unknown field{did_you_mean(str(key), _MODEL_KEYS)}")
    raw_layers = raw.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(f"{where}: model '{spec_id}': field 'layers': must be a non-empty list of layers")
    layers = []
    counters: dict[str, int] = {}
    for index, raw_layer in enumerate(raw_layers, start=1):
        layer_where = f"{file}:{line_of(raw_layer)}" if line_of(raw_layer) else where
        layers.append(_parse_layer(spec_id, layer_where, index, raw_layer, counters))
    try:
        spec = ModelSpec.model_validate({**raw, "layers": layers})
    except ValidationError as exc:
        field, message = _first_error(exc, ModelSpec)
        raise SpecError(f"{where}: model '{spec_id}': field '{field}': {message}") from None
    spec._source = where
    spec._layer_lines = [line_of(r) for r in raw_layers]
    try:
        spec.training.optimizer.check()
    except _Problem as problem:
        raise SpecError(f"{where}: model '{spec_id}': field 'training.{problem.field}': {problem.message}") from None
    resolve(spec)
    return spec


def parse_models(data: Any, source: str | Path | None = None) -> list[ModelSpec]:
    """A file holds one model mapping or a `models:` list; ids must be unique within it."""
    if isinstance(data, dict) and "models" in data:
        raw_models = data["models"]
        if not isinstance(raw_models, list):
            raise SpecError(f"{source}: field 'models': must be a list of models")
    else:
        raw_models = [data]
    specs = [parse_model(raw, source) for raw in raw_models]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise SpecError(f"{spec.source}: model '{spec.id}': field 'id': duplicate model id")
        seen.add(spec.id)
    return specs


def load_spec_file(path: str | Path) -> list[ModelSpec]:
    """Every model in a YAML spec file."""
    from mnistlab.util.yamlio import load_yaml

    path = Path(path)
    return parse_models(load_yaml(path), path)

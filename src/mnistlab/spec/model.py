"""A model spec as a whole: its training settings, the ModelSpec, and resolving it into a graph.

A spec is data (YAML or Python). Resolving places every layer, computes static shapes and
parameter counts and checks the whole graph before anything runs; every problem a user can make
is reported as one line naming the file (and line), the model, the layer and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, Strict, field_validator

from mnistlab.errors import SpecError, did_you_mean
from mnistlab.spec.fields import FieldProblem, Float, PositiveInt
from mnistlab.spec.layers import AnyLayer, Layer, Shape, format_shape
from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS

N_CLASSES = 10
INPUT_NAME = "input"


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
                raise FieldProblem("optimizer.name", "an optimizer mapping needs a 'name'")
            return cls(name=name.lower(), args=data)
        raise FieldProblem("optimizer", "must be a name such as 'adam' or a mapping with 'name' and arguments")

    def check(self) -> None:
        """Unknown optimizers and arguments are rejected here, before any training."""
        if self.name not in OPTIMIZER_DEFAULTS:
            names = sorted(OPTIMIZER_DEFAULTS)
            raise FieldProblem(
                "optimizer",
                f"unknown optimizer '{self.name}'{did_you_mean(self.name, names)}; choose one of {', '.join(names)}",
            )
        defaults = {**OPTIMIZER_DEFAULTS[self.name], "learning_rate": OPTIMIZER_DEFAULTS[self.name].get("lr", 0.0)}
        for arg, value in self.args.items():
            if arg not in defaults:
                raise FieldProblem(
                    f"optimizer.{arg}",
                    f"{self.name} has no argument '{arg}'{did_you_mean(arg, sorted(defaults))}",
                )
            # A switch (amsgrad, nesterov) takes true/false; a rate or coefficient takes a number.
            wants_bool = isinstance(defaults[arg], bool)
            if isinstance(value, bool) != wants_bool:
                kind = "true or false" if wants_bool else "a number"
                raise FieldProblem(f"optimizer.{arg}", f"must be {kind}, got {str(value).lower()}")

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
        except FieldProblem as problem:
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

    def record_source(self, where: str, layer_lines: list[int | None]) -> None:
        """Remember where the model was read from ('file:line') and each layer's line, for messages."""
        self._source = where
        self._layer_lines = layer_lines

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
            except FieldProblem as problem:
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


def model_location(spec: ModelSpec, index: int | None = None) -> str:
    """'file:line: model 'id'' prefix, using the layer's own line when known.

    Every message about a model starts with it, so a user can jump to the line from the terminal.
    """
    line_source = spec.source
    if index is not None and spec._layer_lines and index - 1 < len(spec._layer_lines):
        line = spec._layer_lines[index - 1]
        if line is not None and line_source is not None:
            line_source = f"{line_source.rsplit(':', 1)[0]}:{line}"
    prefix = f"{line_source}: " if line_source else ""
    return f"{prefix}model '{spec.id}'"


def layer_label(index: int, name: str, layer: Layer | str) -> str:
    """'layer 3 (dense_1, Dense)': a layer's position, name and type, as messages name a layer.

    `layer` may be the type's name alone, for a layer that failed to parse into a Layer.
    """
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
        label = layer_label(index, name, layer)
        if name in shapes:
            raise SpecError(
                f"{model_location(spec, index)}: {label}: field 'name': '{name}' is already used by another layer"
            )
        inputs = tuple(layer.inputs) if layer.inputs is not None else (previous,)
        for source in inputs:
            if source not in shapes:
                raise SpecError(
                    f"{model_location(spec, index)}: {label}: field 'inputs': no layer named '{source}' before this one"
                    f"{did_you_mean(source, list(shapes))}"
                )
        input_shapes = tuple(shapes[s] for s in inputs)
        try:
            out = layer.output_shape(list(input_shapes))
            trainable, non_trainable = layer.param_counts(list(input_shapes))
        except FieldProblem as problem:
            where = model_location(spec, index)
            raise SpecError(f"{where}: {label}: field '{problem.field}': {problem.message}") from None
        if layer.activation_name == "softmax" and index != len(spec.layers):
            raise SpecError(
                f"{model_location(spec, index)}: {label}: field 'activation': "
                "softmax must be the last layer's activation"
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
            f"{model_location(spec, node.index)}: {layer_label(node.index, node.name, node.layer)}: field 'inputs': "
            "this layer's output is never used; connect it or remove it"
        )
    return Resolved(spec=spec, nodes=tuple(nodes), is_graph=is_graph)


def _check_output(spec: ModelSpec, nodes: list[Node]) -> None:
    if not nodes:
        raise SpecError(f"{model_location(spec)}: field 'layers': a model needs at least one layer")
    last = nodes[-1]
    label = layer_label(last.index, last.name, last.layer)
    if last.layer.activation_name != "softmax":
        raise SpecError(
            f"{model_location(spec, last.index)}: {label}: field 'activation': the last layer must end in softmax "
            "(categorical cross-entropy on class probabilities, as in Keras)"
        )
    if last.output_shape != (N_CLASSES,):
        raise SpecError(
            f"{model_location(spec, last.index)}: {label}: field 'units': the output must be {N_CLASSES} classes, "
            f"got {format_shape(last.output_shape)}"
        )

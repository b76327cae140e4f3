"""Reading model specs from data (YAML or Python dicts), with every error as one file:line message.

Each problem names the file and line, the model, the layer and the field, in words a Keras user
knows: an unknown field gets a "did you mean", pydantic's messages are made plain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mnistlab.errors import SpecError, did_you_mean
from mnistlab.spec.fields import FieldProblem, Initializer
from mnistlab.spec.layers import LAYER_CLASSES, Layer
from mnistlab.spec.model import ModelSpec, Training, layer_label, resolve
from mnistlab.spec.vocabulary import SPEC_LAYER_ALIASES
from mnistlab.util.yamlio import line_of, load_yaml

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
        raise SpecError(
            f"{where}: model '{spec_id}': layer {index}: field 'type': a layer must be a mapping with a 'type'"
        )
    kind = raw.get("type")
    name = raw.get("name") or "?"
    if not isinstance(kind, str):
        raise SpecError(f"{where}: model '{spec_id}': layer {index} ({name}): field 'type': is required, e.g. 'Conv2D'")
    kind = SPEC_LAYER_ALIASES.get(kind, kind)
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
        label = layer_label(index, name, kind)
        raise SpecError(f"{where}: model '{spec_id}': {label}: field '{field}': {message}") from None


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
            raise SpecError(
                f"{where}: model '{spec_id}': field '{key}': unknown field{did_you_mean(str(key), _MODEL_KEYS)}"
            )
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
    spec.record_source(where, [line_of(r) for r in raw_layers])
    try:
        spec.training.optimizer.check()
    except FieldProblem as problem:
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
    path = Path(path)
    return parse_models(load_yaml(path), path)

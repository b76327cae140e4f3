"""Factor grids: variants of one base model, each level of each named factor editing the spec.

An experiment entry with ``vary:`` trains every combination of its factors' levels (or a listed
``subset``) with everything else held fixed, so a report can estimate the effect of each
factor rather than compare unrelated models. A factor is one of three forms:

* ``dropout: [0, 0.2, 0.5]`` — the factor's name is an edit and each level a value of it;
* ``bn: {edit: batchnorm, levels: [off, on]}`` — a named factor over one edit;
* ``norm: {plain: {batchnorm: off}, bn: {batchnorm: on, dropout: 0}}`` — named levels, each a
  set of edits.

The first level listed is the reference the report measures effects from. Variant ids are the
base id followed by ``.factor-level`` per factor (``s004-m2.depth-2.norm-bn``): stable, and safe
in shells and terminals (letters, digits, '.', '_' and '-' only).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnistlab.errors import SpecError, did_you_mean
from mnistlab.training.limits import MAX_LAYERS, MAX_VARIANTS
from mnistlab.spec.model import ModelSpec
from mnistlab.spec.parse import parse_model
from mnistlab.spec.vocabulary import ACTIVATIONS

__all__ = ["EDITS", "Factor", "FactorError", "Level", "Variant", "apply_edits", "level_text", "parse_factors",
           "variant_id", "variants"]

# Every edit a level can make, in the order they are applied: structure first (depth, width,
# kernels), then what is inserted into it (pooling, batch norm, dropout), then training.
EDITS = ("depth", "width", "kernel_size", "activation", "initializer", "pooling", "batchnorm", "dropout",
         "optimizer", "batch_size", "epochs")
TRAINING_EDITS = ("optimizer", "batch_size", "epochs")
KERNELS = ("Conv2D", "Dense")
# What a level name or variant id may not hold: anything a shell or terminal would read specially.
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FactorError(ValueError):
    """A problem in one factor: ``field`` is where (``vary.depth``), the message says what."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Level:
    name: str
    edits: dict[str, Any]


@dataclass(frozen=True)
class Factor:
    name: str
    levels: tuple[Level, ...]


@dataclass(frozen=True)
class Variant:
    spec: ModelSpec
    levels: dict[str, str]  # factor name → level name, in factor order


def level_text(value: Any) -> str:
    """A level value as a readable, shell-safe name: on/off, 0.2, 3x3, sgd-lr0.1."""
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, (list, tuple)):
        text = "x".join(level_text(v) for v in value)
    elif isinstance(value, Mapping):
        name = value.get("name", "")
        args = "-".join(f"{k}{level_text(v)}" for k, v in value.items() if k != "name")
        text = "-".join(part for part in (str(name), args) if part)
    else:
        text = str(value)
    return _SAFE.sub("-", text).strip("-") or "level"


def _check_edit(field: str, edit: Any) -> str:
    if not isinstance(edit, str) or edit not in EDITS:
        raise FactorError(field, f"unknown edit '{edit}'{did_you_mean(str(edit), EDITS)}; choose one of {', '.join(EDITS)}")
    return edit


def parse_factors(vary: Any) -> list[Factor]:
    """The factors of a ``vary:`` mapping, checked for form (values are checked when applied)."""
    if not isinstance(vary, Mapping) or not vary:
        raise FactorError("vary", "must map factor names to their levels, e.g. {dropout: [0, 0.5]}")
    factors = []
    for name, raw in vary.items():
        field = f"vary.{name}"
        if not isinstance(name, str) or not _SAFE.sub("", name) == name or not name:
            raise FactorError(field, "factor names may hold only letters, digits, '.', '_' and '-'")
        if isinstance(raw, list):
            edit = _check_edit(field, name)
            levels = [Level(level_text(value), {edit: value}) for value in raw]
        elif isinstance(raw, Mapping) and "edit" in raw:
            edit = _check_edit(f"{field}.edit", raw["edit"])
            if set(raw) != {"edit", "levels"} or not isinstance(raw["levels"], list):
                raise FactorError(field, "a factor with 'edit' needs exactly 'edit' and a 'levels' list")
            levels = [Level(level_text(value), {edit: value}) for value in raw["levels"]]
        elif isinstance(raw, Mapping):
            levels = []
            for level, edits in raw.items():
                if not isinstance(edits, Mapping) or not edits:
                    raise FactorError(f"{field}.{level_text(level)}", "a named level maps edits to values, e.g. {batchnorm: on}")
                for edit in edits:
                    _check_edit(f"{field}.{level_text(level)}", edit)
                levels.append(Level(level_text(level), dict(edits)))
        else:
            raise FactorError(field, "levels must be a list of values, {edit: ..., levels: [...]}, "
                                     "or a mapping of level names to edits")
        if len(levels) < 2:
            raise FactorError(field, "a factor needs two or more levels")
        names = [level.name for level in levels]
        if len(set(names)) != len(names):
            raise FactorError(field, f"levels {names} are not distinct once written as names")
        factors.append(Factor(name, tuple(levels)))
    return factors


def variant_id(base_id: str, levels: Mapping[str, str]) -> str:
    return ".".join([base_id, *(f"{factor}-{level}" for factor, level in levels.items())])


def variants(base: ModelSpec, factors: Sequence[Factor], subset: Sequence[Mapping[str, Any]] | None = None,
             max_variants: int | None = None) -> list[Variant]:
    """Every combination of levels (or the listed ``subset``), each applied to ``base``.

    The grid is counted before it is built: more than ``max_variants`` (default
    limits.MAX_VARIANTS) is refused at once, not after building a product that fills memory."""
    cap = max_variants if max_variants is not None else MAX_VARIANTS
    count = len(subset) if subset is not None else math.prod(len(factor.levels) for factor in factors)
    if count > cap:
        sizes = " x ".join(str(len(factor.levels)) for factor in factors)
        raise FactorError("vary", f"the grid has {count:,} variants ({sizes}), over the limit of {cap:,}; "
                                  "list a 'subset' or raise max_variants")
    combos = _chosen(factors, subset) if subset is not None else list(itertools.product(*(f.levels for f in factors)))
    result = []
    for combo in combos:
        levels = {factor.name: level.name for factor, level in zip(factors, combo)}
        edits: dict[str, Any] = {}
        for factor, level in zip(factors, combo):
            for edit, value in level.edits.items():
                if edit in edits and edits[edit] != value:
                    raise FactorError(f"vary.{factor.name}", f"level '{level.name}' sets '{edit}', which another factor also sets")
                edits[edit] = value
        description = ", ".join(f"{k}={v}" for k, v in levels.items())
        spec = apply_edits(base, edits, variant_id(base.id, levels), f"{base.description} [variant: {description}]".strip())
        result.append(Variant(spec, levels))
    return result


def _chosen(factors: Sequence[Factor], subset: Sequence[Mapping[str, Any]]) -> list[tuple[Level, ...]]:
    """The listed combinations, each looked up level by level (the full grid is never built)."""
    names = [factor.name for factor in factors]
    by_name = [{level.name: level for level in factor.levels} for factor in factors]
    wanted: list[tuple[Level, ...]] = []
    for index, row in enumerate(subset, start=1):
        field = f"subset[{index}]"
        if not isinstance(row, Mapping) or set(row) != set(names):
            raise FactorError(field, f"each subset entry names a level of every factor ({', '.join(names)})")
        key = tuple(level_text(row[name]) for name in names)
        if any(name not in levels for name, levels in zip(key, by_name)):
            raise FactorError(field, f"no such combination of levels: {dict(zip(names, key))}")
        combo = tuple(levels[name] for name, levels in zip(key, by_name))
        if combo in wanted:
            raise FactorError(field, "this combination is listed twice")
        wanted.append(combo)
    if not wanted:
        raise FactorError("subset", "list at least one combination of levels")
    return wanted


# -- editing a spec --------------------------------------------------------------------------------


def apply_edits(base: ModelSpec, edits: Mapping[str, Any], new_id: str, description: str) -> ModelSpec:
    """A validated copy of ``base`` with ``edits`` applied (in EDITS order), called ``new_id``."""
    data = base.to_dict()
    layers = copy.deepcopy(data["layers"])
    structural = [edit for edit in EDITS if edit in edits and edit not in TRAINING_EDITS]
    if structural and any("inputs" in layer for layer in layers):
        raise FactorError("vary", f"model '{base.id}' is a graph (layers with 'inputs'); "
                                  f"{', '.join(structural)} edits need a sequential model")
    for edit in structural:
        layers = _LAYER_EDITS[edit](layers, edits[edit])
    data.update(id=new_id, description=description, layers=layers)
    for edit in TRAINING_EDITS:
        if edit in edits:
            data["training"][edit] = edits[edit]
    try:
        return parse_model(data, f"variant {new_id}")
    except SpecError as exc:
        raise FactorError("vary", str(exc)) from None  # names the variant, its layer and field


def _kernels(layers: list[dict]) -> list[int]:
    return [i for i, layer in enumerate(layers) if layer["type"] in KERNELS]


def _hidden(layers: list[dict]) -> list[int]:
    """Kernel layers other than the output layer (the last one)."""
    return _kernels(layers)[:-1]


def _is_on(value: Any, edit: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("on", "off", "yes", "no", "true", "false"):
        return value.lower() in ("on", "yes", "true")
    raise FactorError(f"vary.{edit}", f"level {value!r} must be on or off")


def _number(value: Any, edit: str, kind: type, low: float, high: float | None = None) -> Any:
    # Finite first: float('inf').is_integer() is False but round(inf) and int(1e18 copies) are not.
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (kind is int and not float(value).is_integer())):
        raise FactorError(f"vary.{edit}", f"level {value!r} must be {'an integer' if kind is int else 'a finite number'}")
    if value < low or (high is not None and value >= high):
        bound = f"at least {low}" if high is None else f"in [{low}, {high})"
        raise FactorError(f"vary.{edit}", f"level {value!r} must be {bound}")
    return kind(value)


def _blocks(layers: list[dict]) -> list[tuple[int, int]]:
    """(start, end) of each repeatable block: a kernel layer and what follows it up to the next
    kernel layer or Flatten. Conv blocks when the model has a Flatten, else hidden Dense blocks."""
    flatten = next((i for i, layer in enumerate(layers) if layer["type"] == "Flatten"), None)
    kinds = ("Conv2D",) if flatten is not None else ("Dense",)
    stops = {i for i, layer in enumerate(layers) if layer["type"] in (*KERNELS, "Flatten")}
    starts = [i for i in _hidden(layers) if layers[i]["type"] in kinds and (flatten is None or i < flatten)]
    return [(start, min(stop for stop in stops | {len(layers)} if stop > start)) for start in starts]


def _depth(layers: list[dict], value: Any) -> list[dict]:
    depth = _number(value, "depth", int, 1)
    blocks = _blocks(layers)
    if not blocks:
        raise FactorError("vary.depth", "the model has no hidden block to repeat or drop")
    if depth <= len(blocks):
        drop = {i for start, end in blocks[depth:] for i in range(start, end)}
        return [layer for i, layer in enumerate(layers) if i not in drop]
    start, end = blocks[-1]
    # Counted before the copies are made: depth 10**18 is refused in microseconds, not by MemoryError.
    total = len(layers) + (depth - len(blocks)) * (end - start)
    if total > MAX_LAYERS:
        raise FactorError("vary.depth", f"level {value!r} makes a model of {total:,} layers, over the limit of "
                                        f"{MAX_LAYERS:,} (limits.MAX_LAYERS)")
    # Repeated copies get Keras's automatic names: a user-given name may appear only once.
    copies = [{k: v for k, v in layer.items() if k != "name"} for layer in layers[start:end]]
    return layers[:end] + copy.deepcopy(copies) * (depth - len(blocks)) + layers[end:]


def _width(layers: list[dict], value: Any) -> list[dict]:
    scale = _number(value, "width", float, 1e-9)
    for i in _hidden(layers):
        key = "filters" if layers[i]["type"] == "Conv2D" else "units"
        layers[i][key] = max(1, round(layers[i][key] * scale))
    return layers


def _kernel_size(layers: list[dict], value: Any) -> list[dict]:
    convs = [layer for layer in layers if layer["type"] == "Conv2D"]
    if not convs:
        raise FactorError("vary.kernel_size", "the model has no Conv2D layer")
    sizes = value if isinstance(value, list) else [value, value]
    if len(sizes) != 2:
        raise FactorError("vary.kernel_size", f"level {value!r} must be a size or [height, width]")
    pair = [_number(size, "kernel_size", int, 1) for size in sizes]
    for layer in convs:
        layer["kernel_size"] = list(pair)
    return layers


def _activation(layers: list[dict], value: Any) -> list[dict]:
    hidden = [name for name in ACTIVATIONS if name != "softmax"]
    if not isinstance(value, str) or value.lower() not in hidden:
        raise FactorError("vary.activation", f"level {value!r} must be one of {', '.join(hidden)}")
    for i in _hidden(layers):
        layers[i]["activation"] = value.lower()
    for layer in layers[:-1]:
        if layer["type"] == "Activation":
            layer["activation"] = value.lower()
    return layers


def _initializer(layers: list[dict], value: Any) -> list[dict]:
    for i in _hidden(layers):
        layers[i]["kernel_initializer"] = copy.deepcopy(value)
    return layers


def _after_block_head(layers: list[dict], index: int, also: tuple[str, ...]) -> int:
    """The position just after a kernel layer and the layers of ``also`` that follow it."""
    position = index + 1
    while position < len(layers) and layers[position]["type"] in also:
        position += 1
    return position


def _insert_after_hidden(layers: list[dict], layer: dict, also: tuple[str, ...], kinds: tuple[str, ...] = KERNELS) -> list[dict]:
    for i in reversed([i for i in _hidden(layers) if layers[i]["type"] in kinds]):
        layers.insert(_after_block_head(layers, i, also), dict(layer))
    return layers


def _pooling(layers: list[dict], value: Any) -> list[dict]:
    if value in (False, 0, "none", "off"):
        return [layer for layer in layers if layer["type"] != "MaxPooling2D"]
    size = _number(value, "pooling", int, 1)
    pools = [layer for layer in layers if layer["type"] == "MaxPooling2D"]
    for layer in pools:
        layer["pool_size"] = [size, size]
        layer.pop("strides", None)  # Keras: strides default to the pool size
    if pools:
        return layers
    if not any(layer["type"] == "Conv2D" for layer in layers):
        raise FactorError("vary.pooling", "the model has no Conv2D layer to pool after")
    return _insert_after_hidden(layers, {"type": "MaxPooling2D", "pool_size": [size, size]},
                                ("BatchNormalization", "Activation", "Dropout"), ("Conv2D",))


def _batchnorm(layers: list[dict], value: Any) -> list[dict]:
    if not _is_on(value, "batchnorm"):
        return [layer for layer in layers if layer["type"] != "BatchNormalization"]
    for i in reversed(_hidden(layers)):
        if i + 1 >= len(layers) or layers[i + 1]["type"] != "BatchNormalization":
            layers.insert(i + 1, {"type": "BatchNormalization"})
    return layers


def _dropout(layers: list[dict], value: Any) -> list[dict]:
    rate = _number(value, "dropout", float, 0.0, 1.0)
    if rate == 0:
        return [layer for layer in layers if layer["type"] != "Dropout"]
    dropouts = [layer for layer in layers if layer["type"] == "Dropout"]
    for layer in dropouts:
        layer["rate"] = rate
    if dropouts:
        return layers
    # As the seeds place it: after each hidden kernel layer and its batch norm / activation.
    return _insert_after_hidden(layers, {"type": "Dropout", "rate": rate}, ("BatchNormalization", "Activation"))


_LAYER_EDITS = {
    "depth": _depth, "width": _width, "kernel_size": _kernel_size, "activation": _activation,
    "initializer": _initializer, "pooling": _pooling, "batchnorm": _batchnorm, "dropout": _dropout,
}

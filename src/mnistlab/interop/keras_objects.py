"""What reading Keras code builds: layers, graph nodes, tensors, optimizers and models, and the result.

The interpreter evaluates Keras calls into these plain records instead of running Keras. A record
collects the problems found while building it; a model with any problem is skipped, never guessed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from mnistlab.interop.python_subset import Loc, Ref
from mnistlab.spec.model import ModelSpec

# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A model (or a place where models are built) that could not be translated, and why."""

    model: str
    where: str  # "line 12" or "cell 3 line 2"
    problems: tuple[str, ...]  # each starts with its own location

    def __str__(self) -> str:
        return f"{self.where}: model '{self.model}' skipped: " + "; ".join(self.problems)


@dataclass(frozen=True)
class ImportResult:
    """The specs translated from one file, and the models that were not."""

    source: str
    specs: list[ModelSpec]
    skipped: list[Skipped]


# --- references into Keras ----------------------------------------------------------------------


def keras_path(ref: Ref) -> str | None:
    """The path inside Keras ('layers.Dense'), whatever the spelling; None if not Keras."""
    for prefix in ("tensorflow.python.keras.", "tensorflow.keras.", "keras.src.", "keras."):
        if ref.path.startswith(prefix):
            return ref.path[len(prefix):]
    if ref.path.startswith("?"):  # a bare name never imported: read as Keras's
        return ref.path[1:]
    return None


def is_tf_keras(ref: Ref) -> bool:
    """Whether the reference is tf.keras's (whose learning-rate defaults differ from Keras 2.2's)."""
    return ref.path.startswith("tensorflow.")


# --- what the interpreter builds ----------------------------------------------------------------


@dataclass
class LayerObj:
    """A Keras layer object: its spec mapping (or problems), its own input shape and name."""

    kind: str
    config: dict[str, Any]
    loc: Loc
    problems: list[str] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None
    input_shape_problem: str | None = None
    bn_axis: int | None = None
    used: bool = False


_CREATION = itertools.count()


@dataclass
class Node:
    """A layer applied to tensors in the functional API: one node of the model's graph."""

    layer: LayerObj
    inputs: list["Node"]  # empty for the graph's input
    var: str | None = None
    name: str | None = None
    order: int = field(default_factory=lambda: next(_CREATION))  # creation order: the spec lists layers in it


@dataclass(frozen=True)
class Tensor:
    """A Keras tensor: the output of a graph node."""

    node: Node
    shape_input: tuple[int, ...] | None  # the graph input's shape (for Input nodes)


@dataclass
class Optimizer:
    """An optimizer as compile() will get it: spec name, arguments that differ from Keras 2.2's."""

    name: str
    args: dict[str, Any]
    problems: list[str]
    notes: list[str]


@dataclass
class Model:
    """A Sequential or functional model, with how it is compiled and fit."""

    var: str | None
    loc: Loc
    kind: str  # "sequential" | "functional"
    tf_keras: bool
    name: str | None = None
    layers: list[LayerObj] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None
    output: Node | None = None
    input_node: Node | None = None
    optimizer: Optimizer | None = None
    loss_problem: str | None = None
    batch_size: int | None = None
    epochs: int = 0
    fitted_at: Loc | None = None
    compiled: bool = False
    input_problem: bool = False  # the input shape's problem is already among `problems`
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

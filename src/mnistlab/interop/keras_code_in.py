"""Keras model code in: read `.py` / `.ipynb` Keras code into mnistlab specs, never executing it.

The code is parsed with `ast` and walked top to bottom by a small interpreter that knows only what
model definitions need: imports (to tell `keras.layers.Dense` from `numpy.concatenate`), constants
and tuples, the shapes `mnist.load_data()` returns (so `input_dim = X_train.shape[1]` after a
reshape is known), `Sequential([...])` / `.add()`, the functional API, `compile()` and `fit()`.
Everything else evaluates to "unknown"; an unknown value that reaches a model is a problem with its
line number, and a model with any problem is skipped, never guessed.

This module is the entry point and the last step: what the interpreter built becomes specs,
validated by the spec parser with its messages moved back to the Keras code's lines. The steps
before it live apart: `notebook` reads the file's code, `python_subset` evaluates Python safely,
`keras_interpreter` and `keras_training_calls` give Keras calls their meaning, and `spec_yaml`
writes the result.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, SpecError
from mnistlab.interop.keras_interpreter import KerasInterpreter
from mnistlab.interop.keras_objects import ImportResult, LayerObj, Model, Node, Skipped
from mnistlab.interop.notebook import blank_magics, code_cells
from mnistlab.interop.python_subset import MAX_NESTING, Loc, nesting
from mnistlab.spec.layers import LAYER_CLASSES
from mnistlab.spec.model import INPUT_NAME, ModelSpec, resolve
from mnistlab.spec.parse import parse_model


# --- reading a file ---------------------------------------------------------------------------


def import_keras_code(path: str | Path) -> ImportResult:
    """Translate every Keras model defined in a .py or .ipynb file into a spec."""
    path = Path(path)
    interpreter = KerasInterpreter()
    for cell, code in code_cells(path):
        interpreter.cell = cell
        where = f"{path}: cell {cell}" if cell is not None else str(path)
        try:
            tree = ast.parse(blank_magics(code), filename=str(path))
        except (RecursionError, MemoryError):
            raise MnistlabError(f"{where}: code nested too deeply to parse; refused") from None
        except SyntaxError as exc:
            where = Loc(exc.lineno or 0, cell)
            if cell is None:
                raise MnistlabError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from None
            for model in interpreter.models:
                model.problems.append(f"{where}: this cell is not valid Python ({exc.msg}) and may change the model")
            continue
        depth, line = nesting(tree)
        if depth > MAX_NESTING:
            raise MnistlabError(f"{where}: line {line}: an expression nested {depth} deep (more than {MAX_NESTING}); "
                                "refused, not evaluated")
        try:
            interpreter.run(tree.body)
        except RecursionError:  # a guard behind the nesting bound
            raise MnistlabError(f"{where}: code nested too deeply to evaluate; refused") from None
    return _results(path, interpreter)


def _results(path: Path, interpreter: KerasInterpreter) -> ImportResult:
    bases = [m.name or m.var or "model" for m in interpreter.models]
    counts = {base: bases.count(base) for base in bases}
    specs: list[ModelSpec] = []
    skipped = list(interpreter.skipped)
    taken: set[str] = set()
    for model, base in zip(interpreter.models, bases):
        spec_id = base if counts[base] == 1 else f"{base}-{model.loc.suffix}"
        while spec_id in taken:
            spec_id += "_"
        taken.add(spec_id)
        spec, problems, _ = _to_spec(model, spec_id)
        if spec is None:
            skipped.append(Skipped(spec_id, str(model.loc), tuple(problems)))
        else:
            specs.append(spec)
    return ImportResult(str(path), specs, skipped)


# --- from models to specs ----------------------------------------------------------------------


def _graph_layers(model: Model) -> tuple[list[tuple[LayerObj, list[Node], Node]], list[str]]:
    """The nodes the output depends on, in creation order (Keras ignores unused branches)."""
    order: list[Node] = []
    seen: set[int] = set()

    def visit(node: Node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.inputs:
            visit(parent)
        order.append(node)

    assert model.output is not None
    visit(model.output)
    problems = []
    inputs = [n for n in order if not n.inputs]
    if len(inputs) != 1 or inputs[0] is not model.input_node:
        problems.append(f"{model.loc}: the model's output does not come from its one Input")
    order.sort(key=lambda n: n.order)
    return [(n.layer, n.inputs, n) for n in order if n.inputs], problems


def _name_graph(entries: list[tuple[LayerObj, list[Node], Node]], input_node: Node) -> None:
    """Names for graph nodes: the layer's name=, else the variable it was assigned to, made unique."""
    used = {INPUT_NAME}
    input_node.name = INPUT_NAME
    for layer, _, node in entries:
        base = layer.config.get("name") or node.var or None
        if base is None:
            node.name = None
            continue
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        node.name = name
        used.add(name)
    # Unnamed nodes get Keras-style names that do not collide with the chosen ones.
    counters: dict[str, int] = {}
    for layer, _, node in entries:
        if node.name is None:
            prefix = LAYER_CLASSES[layer.kind].keras_prefix
            while True:
                counters[prefix] = counters.get(prefix, 0) + 1
                name = f"{prefix}_{counters[prefix]}"
                if name not in used:
                    break
            node.name = name
            used.add(name)


def _to_spec(model: Model, spec_id: str) -> tuple[ModelSpec | None, list[str], list[str]]:
    """The spec for one model, or None with the problems that prevent it; plus notes."""
    problems = list(model.problems)
    notes = list(model.notes)
    raw_layers: list[dict[str, Any]] = []
    layer_locs: list[Loc] = []
    if model.kind == "sequential":
        entries = [(layer, None) for layer in model.layers]
        if not model.layers:
            problems.append(f"{model.loc}: the model has no layers")
        if model.input_shape is None and not model.input_problem:
            problems.append(f"{model.loc}: no input shape (give the first layer input_shape=...)")
    else:
        if model.output is None:
            return None, problems or [f"{model.loc}: the functional model is incomplete"], notes
        graph, graph_problems = _graph_layers(model)
        problems += graph_problems
        assert model.input_node is not None
        _name_graph(graph, model.input_node)
        entries = [(layer, (node, parents)) for layer, parents, node in graph]
    for layer, graph_node in entries:
        problems += layer.problems
        if layer.kind == "Input":
            problems.append(f"{layer.loc}: an Input layer in the middle of a model")
            continue
        if layer.input_shape is not None and raw_layers and model.kind == "sequential":
            notes.append(f"{layer.loc}: input_shape on a layer other than the first is ignored, as Keras does")
        raw = {"type": layer.kind, **layer.config}
        if graph_node is not None:
            node, parents = graph_node
            raw["name"] = node.name
            raw["inputs"] = [p.name for p in parents]
        raw_layers.append(raw)
        layer_locs.append(layer.loc)
    if model.optimizer is not None:
        problems += model.optimizer.problems
        notes += model.optimizer.notes
    if not model.compiled:
        notes.append(f"{model.loc}: the model is never compiled; optimizer adam (mnistlab's default)")
    if model.fitted_at is None:
        notes.append(f"{model.loc}: the model is never fit; batch size and epochs take mnistlab's defaults (128, 12)")
    if problems:
        return None, problems, notes
    training: dict[str, Any] = {}
    if model.optimizer is not None:
        optimizer = model.optimizer
        training["optimizer"] = {"name": optimizer.name, **optimizer.args} if optimizer.args else optimizer.name
    if model.fitted_at is not None:
        training["batch_size"], training["epochs"] = model.batch_size, model.epochs
    raw_model = {"id": spec_id, "input": list(model.input_shape or ()), "layers": raw_layers, "training": training}
    try:
        spec = parse_model(raw_model)
    except SpecError as exc:
        return None, [_relocate(str(exc), spec_id, layer_locs, model.loc)], notes
    bn_problem = _check_bn_axes(spec, [layer for layer, _ in entries if layer.kind != "Input"])
    if bn_problem:
        return None, [bn_problem], notes
    return spec.model_copy(update={"decisions": notes}), [], notes


def _relocate(message: str, spec_id: str, locs: list[Loc], model_loc: Loc) -> str:
    """parse_model's message with the Keras code's location instead of the spec's."""
    message = re.sub(r"^<python>(:\d+)?: model '[^']*': ", "", message)
    found = re.match(r"layer (\d+) ", message)
    where = locs[int(found.group(1)) - 1] if found and int(found.group(1)) - 1 < len(locs) else model_loc
    return f"{where}: {message}"


def _check_bn_axes(spec: ModelSpec, layers: list[LayerObj]) -> str | None:
    """BatchNormalization must normalise the channel (last) axis, the only one mnistlab supports."""
    for node, layer in zip(resolve(spec).nodes, layers):
        if layer.bn_axis is None:
            continue
        rank = len(node.input_shapes[0]) + 1  # Keras counts the batch axis
        if layer.bn_axis not in (-1, rank - 1):
            return f"{layer.loc}: BatchNormalization(axis={layer.bn_axis}) is not the channel axis"
    return None


__all__ = ["import_keras_code"]

"""Keras code out: a spec as plain, runnable Keras 3 / tf.keras code with Keras 2.2's defaults spelled out.

Today's Keras changed defaults the seed notebooks relied on (Adadelta's learning rate went from 1.0
to 0.001; Adagrad's accumulators now start at 0.1), so every argument that matters is written
explicitly: initializers, BatchNormalization's momentum and epsilon, and every optimizer argument.
`mnistlab import-keras` reads the code back to the same spec (tested for every zoo model).
"""

from __future__ import annotations

import ast
import keyword
import re
import textwrap

from mnistlab.errors import MnistlabError
from mnistlab.spec.fields import Initializer
from mnistlab.spec.layers import (
    Activation,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPooling2D,
)
from mnistlab.spec.model import INPUT_NAME, N_CLASSES, ModelSpec, resolve
from mnistlab.spec.parse import parse_model
from mnistlab.spec.vocabulary import INITIALIZER_CLASSES, OPTIMIZER_CLASSES, OPTIMIZER_DEFAULTS

_NADAM_SCHEDULE_DECAY = 0.004  # fixed inside Keras 3's and tf.keras's Nadam
_RESERVED = {"keras", "layers", "initializers", "optimizers", "model", "inputs", "x_train", "y_train", "x_test",
             "y_test", "loss", "accuracy"}


def _number(value: float | int | bool) -> str:
    return repr(value)


def _pair(value: tuple[int, int]) -> str:
    return f"({value[0]}, {value[1]})"


def _initializer(init: Initializer) -> str:
    if init.name == "random_normal":
        arguments = f"mean={_number(init.mean)}, stddev={_number(init.stddev)}"
        return f"initializers.{INITIALIZER_CLASSES[init.name]}({arguments})"
    return f"initializers.{INITIALIZER_CLASSES[init.name]}()"


def _kernel_arguments(layer: Conv2D | Dense) -> list[str]:
    return [f"activation={layer.activation!r}", f"use_bias={layer.use_bias}",
            f"kernel_initializer={_initializer(layer.kernel_initializer)}",
            "bias_initializer=initializers.Zeros()"]


def _layer_call(layer: Layer, rank: int, name: str | None) -> str:
    """`layers.X(...)` for one spec layer; `rank` is its input's rank without the batch axis."""
    if isinstance(layer, Conv2D):
        args = [f"filters={layer.filters}", f"kernel_size={_pair(layer.kernel_size)}", f"strides={_pair(layer.strides)}",
                f"padding={layer.padding!r}", *_kernel_arguments(layer)]
    elif isinstance(layer, Dense):
        args = [f"units={layer.units}", *_kernel_arguments(layer)]
    elif isinstance(layer, MaxPooling2D):
        strides = _pair(layer.strides) if layer.strides is not None else "None"
        args = [f"pool_size={_pair(layer.pool_size)}", f"strides={strides}", f"padding={layer.padding!r}"]
    elif isinstance(layer, Dropout):
        args = [f"rate={_number(layer.rate)}"]
    elif isinstance(layer, BatchNormalization):
        args = ["axis=-1", f"momentum={_number(layer.momentum)}", f"epsilon={_number(layer.epsilon)}"]
    elif isinstance(layer, Flatten):
        args = []
    elif isinstance(layer, Activation):
        args = [repr(layer.activation)]
    elif isinstance(layer, Concatenate):
        # The spec's axis leaves out the batch axis; Keras counts it.
        args = [f"axis={layer.axis + 1 if layer.axis >= 0 else layer.axis}"]
    else:  # pragma: no cover - every spec layer type is handled above
        raise MnistlabError(f"layer type {layer.type} has no Keras export")  # type: ignore[attr-defined]
    if name is not None:
        args.append(f"name={name!r}")  # Python's own quoting: a name is a literal, never code
    return f"layers.{layer.type}({', '.join(args)})"  # type: ignore[attr-defined]


def _optimizer_call(spec: ModelSpec) -> str:
    optimizer = spec.training.optimizer
    given = {("lr" if key == "learning_rate" else key): value for key, value in optimizer.args.items()}
    values = {**OPTIMIZER_DEFAULTS[optimizer.name], **given}
    lr, decay = values.pop("lr"), values.pop("decay", 0.0)
    # Keras 2.2's time-inverse decay, lr / (1 + decay * iterations), is today's InverseTimeDecay.
    learning_rate = (_number(lr) if not decay else
                     f"optimizers.schedules.InverseTimeDecay({_number(lr)}, decay_steps=1, decay_rate={_number(decay)})")
    if optimizer.name == "nadam":
        schedule = values.pop("schedule_decay")
        if schedule != _NADAM_SCHEDULE_DECAY:
            raise MnistlabError(f"model '{spec.id}': Nadam schedule_decay={schedule} has no equivalent in today's Keras "
                                f"(fixed at {_NADAM_SCHEDULE_DECAY})")
    args = [f"learning_rate={learning_rate}", *(f"{key}={_number(value)}" for key, value in values.items())]
    if optimizer.name == "adagrad":
        args.append("initial_accumulator_value=0.0")  # Keras 2.2's accumulators start at zero (today: 0.1)
    return f"optimizers.{OPTIMIZER_CLASSES[optimizer.name]}({', '.join(args)})"


def _variable(name: str, taken: set[str]) -> str:
    # ASCII only: `\W` would keep letters such as '²' that are not valid in identifiers.
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not base or base[0].isdigit() or keyword.iskeyword(base) or base in _RESERVED:
        base = f"x_{base}"
    variable, n = base, 1
    while variable in taken:
        n += 1
        variable = f"{base}_{n}"
    taken.add(variable)
    return variable


def _docstring_text(value: str) -> str:
    """A user string made inert inside the generated module docstring: control characters and
    line breaks become spaces, and backslashes and double quotes are escaped, so no escape
    sequence of the user's acts and no quote can close the docstring."""
    printable = "".join(char if char.isprintable() else " " for char in value)
    return printable.replace("\\", "\\\\").replace('"', '\\"')


def _placeholders(spec: ModelSpec) -> ModelSpec:
    """The same spec with every user string (id, description, layer names) replaced by a fixed
    ASCII placeholder: what the generated code must match in structure."""
    data = spec.to_dict()
    renamed = {}
    for index, layer in enumerate(data["layers"]):
        if "name" in layer:
            renamed[layer["name"]] = layer["name"] = f"layer{index}"
    for layer in data["layers"]:
        if "inputs" in layer:
            layer["inputs"] = [renamed.get(name, name) for name in layer["inputs"]]
    data.update(id="model", description="description" if spec.description else "")
    return parse_model(data)


class _Canonical(ast.NodeTransformer):
    """Blanks string constants and numbers variables by first use: what user strings may change."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        return ast.Constant("") if isinstance(node.value, str) else node

    def visit_Name(self, node: ast.Name) -> ast.Name:
        # Graph variables are derived from layer names (ASCII identifiers only); a Name runs nothing.
        node.id = self.names.setdefault(node.id, f"v{len(self.names)}")
        return node


def _shape_of(code: str) -> str:
    return ast.dump(_Canonical().visit(ast.parse(code)))


def export_keras_code(spec: ModelSpec) -> str:
    """Runnable Keras 3 / tf.keras code for the spec: the model, compile(), and a training script.

    The code is checked with `ast` before it is returned: it must have the structure of the same
    spec with every user string replaced by a placeholder, so a name or id can change string
    constants only, never add code (the script is one users run)."""
    code = _render(spec)
    if _shape_of(code) != _shape_of(_render(_placeholders(spec))):
        raise MnistlabError(f"model '{spec.id}': export-keras refused: a user string (id, description or layer "
                            "name) would change the generated code's structure")
    return code


def _render(spec: ModelSpec) -> str:
    resolved = resolve(spec)
    shape = ", ".join(map(str, spec.input)) + ("," if len(spec.input) == 1 else "")
    header = [
        f'"""Keras code for the mnistlab model {_docstring_text(repr(spec.id))}, written by `mnistlab export-keras`.',
        "",
        *([*textwrap.wrap(_docstring_text(spec.description), 96), ""] if spec.description else []),
        "Keras 3 or tf.keras (TensorFlow 2.x; there, `from tensorflow import keras` instead of `import keras`).",
        "Keras 2.2's defaults, which the seed notebooks ran with, are written out: initializers,",
        "BatchNormalization's momentum and epsilon and every optimizer argument (today's Keras",
        "changed some, e.g. Adadelta's learning rate 1.0 -> 0.001). Run as a script, it trains on",
        "MNIST as the notebooks did (the test set as validation data).",
        '"""',
        "import keras",
        "from keras import initializers, layers, optimizers",
        "",
    ]
    body: list[str] = []
    if not resolved.is_graph:
        body.append("model = keras.Sequential(")
        body.append("    [")
        body.append(f"        keras.Input(shape=({shape})),")
        for node in resolved.nodes:
            body.append(f"        {_layer_call(node.layer, len(node.input_shapes[0]), node.layer.name)},")
        body.append("    ],")
        body.append(f"    name={spec.id!r},")
        body.append(")")
    else:
        taken: set[str] = set()
        variables = {INPUT_NAME: _variable("inputs", set())}
        taken.add(variables[INPUT_NAME])
        body.append(f"{variables[INPUT_NAME]} = keras.Input(shape=({shape}))")
        for node in resolved.nodes:
            variables[node.name] = _variable(node.name, taken)
            sources = [variables[source] for source in node.inputs]
            argument = f"[{', '.join(sources)}]" if isinstance(node.layer, Concatenate) else sources[0]
            call = _layer_call(node.layer, len(node.input_shapes[0]), node.name)
            body.append(f"{variables[node.name]} = {call}({argument})")
        output = variables[resolved.nodes[-1].name]
        body.append(f"model = keras.Model(inputs={variables[INPUT_NAME]}, outputs={output}, name={spec.id!r})")
    body += [
        "model.compile(",
        f"    optimizer={_optimizer_call(spec)},",
        '    loss="categorical_crossentropy",',
        '    metrics=["accuracy"],',
        ")",
        "",
        'if __name__ == "__main__":',
        "    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()",
        f"    x_train = x_train.reshape((-1, {shape})).astype(\"float32\") / 255",
        f"    x_test = x_test.reshape((-1, {shape})).astype(\"float32\") / 255",
        f"    y_train = keras.utils.to_categorical(y_train, {N_CLASSES})",
        f"    y_test = keras.utils.to_categorical(y_test, {N_CLASSES})",
        "    model.summary()",
        f"    model.fit(x_train, y_train, batch_size={spec.training.batch_size}, epochs={spec.training.epochs}, "
        "validation_data=(x_test, y_test))",
        "    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)",
        '    print(f"test loss {loss:.4f}, test accuracy {accuracy:.4f}")',
    ]
    return "\n".join(header + body) + "\n"


__all__ = ["export_keras_code"]

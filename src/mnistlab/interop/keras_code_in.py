"""Keras model code in: read `.py` / `.ipynb` Keras code into mnistlab specs, never executing it.

The code is parsed with `ast` and walked top to bottom by a small interpreter that knows only what
model definitions need: imports (to tell `keras.layers.Dense` from `numpy.concatenate`), constants
and tuples, the shapes `mnist.load_data()` returns (so `input_dim = X_train.shape[1]` after a
reshape is known), `Sequential([...])` / `.add()`, the functional API, `compile()` and `fit()`.
Everything else evaluates to "unknown"; an unknown value that reaches a model is a problem with its
line number, and a model with any problem is skipped, never guessed.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mnistlab.errors import MnistlabError, SpecError
from mnistlab.spec.model import INPUT_NAME, LAYER_CLASSES, ModelSpec, parse_model, resolve

# Bounds on what the importer evaluates, checked before it evaluates: model code needs small
# numbers and shallow expressions, and hostile code could otherwise hold the machine
# (`10**10**10`), overflow Python's int-to-str limit, or exhaust the C stack (a 1,000-term sum).
MAX_INT_BITS = 64  # larger integer constants and results are not evaluated
MAX_NESTING = 100  # deeper expressions (and notebook JSON) are refused with one line

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


# --- values the interpreter passes around ------------------------------------------------------


@dataclass(frozen=True)
class Loc:
    line: int
    cell: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}" if self.cell is None else f"cell {self.cell} line {self.line}"

    @property
    def suffix(self) -> str:
        return f"line{self.line}" if self.cell is None else f"cell{self.cell}-line{self.line}"


@dataclass(frozen=True)
class Unknown:
    """A value the importer does not compute; `why` says where and what."""

    why: str


@dataclass(frozen=True)
class Ref:
    """A module, class or function reached through imports: a dotted path such as keras.layers.Dense."""

    path: str

    @property
    def keras(self) -> str | None:
        """The path inside Keras ('layers.Dense'), whatever the spelling; None if not Keras."""
        for prefix in ("tensorflow.python.keras.", "tensorflow.keras.", "keras.src.", "keras."):
            if self.path.startswith(prefix):
                return self.path[len(prefix):]
        if self.path.startswith("?"):  # a bare name never imported: read as Keras's
            return self.path[1:]
        return None

    @property
    def tf_keras(self) -> bool:
        return self.path.startswith("tensorflow.")


@dataclass(frozen=True)
class Array:
    """A NumPy array whose shape is known (from a dataset's load_data and reshapes)."""

    shape: tuple[int, ...]


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
    layer: LayerObj
    inputs: list["Node"]  # empty for the graph's input
    var: str | None = None
    name: str | None = None
    order: int = field(default_factory=lambda: next(_CREATION))  # creation order: the spec lists layers in it


@dataclass(frozen=True)
class Tensor:
    node: Node
    shape_input: tuple[int, ...] | None  # the graph input's shape (for Input nodes)


@dataclass
class Optimizer:
    name: str
    args: dict[str, Any]
    problems: list[str]
    notes: list[str]


@dataclass
class Model:
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


@dataclass(frozen=True)
class Method:
    owner: Any
    name: str


# --- Keras vocabulary -------------------------------------------------------------------------

# Keras 2 positional argument order of each layer we translate.
_POSITIONAL = {
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation",
               "use_bias", "kernel_initializer", "bias_initializer"),
    "Dense": ("units", "activation", "use_bias", "kernel_initializer", "bias_initializer"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "Dropout": ("rate", "noise_shape", "seed"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "Flatten": ("data_format",),
    "Activation": ("activation",),
    "Concatenate": ("axis",),
}
_SPEC_ARGS = {
    "Conv2D": {"filters", "kernel_size", "strides", "padding", "activation", "use_bias", "kernel_initializer"},
    "Dense": {"units", "activation", "use_bias", "kernel_initializer"},
    "MaxPooling2D": {"pool_size", "strides", "padding"},
    "Dropout": {"rate"},
    "BatchNormalization": {"momentum", "epsilon"},
    "Flatten": set(),
    "Activation": {"activation"},
    "Concatenate": set(),
}
_LAYER_ALIASES = {"Convolution2D": "Conv2D", "Conv2d": "Conv2D", "MaxPool2D": "MaxPooling2D"}
_NONE_ONLY = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
              "bias_constraint", "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
              "noise_shape")
# Arguments accepted when they hold Keras's default value (they change nothing).
_DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "data_format": (None, "channels_last"),
    "dilation_rate": (1, (1, 1)),
    "groups": (1,),
    "center": (True,),
    "scale": (True,),
    "trainable": (True,),
    "dtype": (None, "float32"),
    "seed": (),  # any value: Dropout's seed only changes which units drop; mnistlab seeds each run
    **{name: (None,) for name in _NONE_ONLY},
}
_ONES_INIT = ("ones", "Ones")
_BN_INITS = {"beta_initializer": "zeros", "gamma_initializer": "ones", "moving_mean_initializer": "zeros",
             "moving_variance_initializer": "ones"}

_ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")
_ACTIVATION_LAYERS = {"ReLU": "relu", "Softmax": "softmax"}

# Keras initializer spellings → spec initializer names (None: takes arguments, handled apart).
_INITIALIZERS = {
    "glorot_uniform": "glorot_uniform", "GlorotUniform": "glorot_uniform",
    "glorot_normal": "glorot_normal", "GlorotNormal": "glorot_normal",
    "he_normal": "he_normal", "HeNormal": "he_normal",
    "he_uniform": "he_uniform", "HeUniform": "he_uniform",
    "zeros": "zeros", "Zeros": "zeros", "zero": "zeros",
    "random_normal": "random_normal", "RandomNormal": "random_normal", "normal": "random_normal",
}
# VarianceScaling(scale, mode, distribution) forms of the named initializers.
_VARIANCE_SCALING = {
    (1.0, "fan_avg", "uniform"): "glorot_uniform",
    (1.0, "fan_avg", "normal"): "glorot_normal",
    (1.0, "fan_avg", "truncated_normal"): "glorot_normal",
    (2.0, "fan_in", "normal"): "he_normal",
    (2.0, "fan_in", "truncated_normal"): "he_normal",
    (2.0, "fan_in", "uniform"): "he_uniform",
}

_OPTIMIZER_NAMES = {"sgd": "sgd", "rmsprop": "rmsprop", "adagrad": "adagrad", "adadelta": "adadelta",
                    "adam": "adam", "adamax": "adamax", "nadam": "nadam"}
# tf.keras (TF 2.x) and Keras 3 changed these learning-rate defaults; Keras 2.2's are in optim.py.
_TF_KERAS_LR = {"adadelta": 0.001, "adagrad": 0.001, "adamax": 0.001, "nadam": 0.001}
_LOSSES_OK = {"categorical_crossentropy", "CategoricalCrossentropy"}
_LOSSES_SPARSE = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
# fit() arguments that do not change the trained model as mnistlab trains it.
_FIT_IGNORED = {"x", "y", "verbose", "validation_data", "validation_split", "validation_freq", "shuffle",
                "use_multiprocessing", "workers", "max_queue_size"}
_HARMLESS_CALLBACKS = {"ModelCheckpoint", "TensorBoard", "CSVLogger", "History", "ProgbarLogger", "BaseLogger",
                       "TerminateOnNaN", "PlotLossesKeras"}
_DATASETS = {"mnist", "fashion_mnist"}
_MODEL_METHODS_IGNORED = {"summary", "evaluate", "predict", "predict_classes", "predict_proba", "save",
                          "save_weights", "get_weights", "count_params", "to_json", "to_yaml", "get_config",
                          "get_layer", "test_on_batch", "evaluate_generator", "predict_generator",
                          "load_weights", "reset_states"}


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


# --- the interpreter ---------------------------------------------------------------------------


class _Interpreter:
    """Walks module-level statements, keeping an environment of plain values, layers and models."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}
        self.models: list[Model] = []
        self.skipped: list[Skipped] = []
        self.cell: int | None = None
        self.functions: dict[str, Loc] = {}
        self.function_names: dict[str, set[str]] = {}  # the names each function defined in the file uses

    # locations and snippets
    def loc(self, node: ast.AST) -> Loc:
        return Loc(getattr(node, "lineno", 0), self.cell)

    def unknown(self, node: ast.AST, what: str | None = None) -> Unknown:
        text = what or f"`{_snippet(node)}` is not evaluated"
        return Unknown(f"{self.loc(node)}: {text}")

    # statements
    def run(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.env[alias.asname] = Ref(alias.name)
                else:
                    top = alias.name.split(".")[0]
                    self.env[top] = Ref(top)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if alias.name != "*":
                    self.env[alias.asname or alias.name] = Ref(f"{module}.{alias.name}")
        elif isinstance(node, ast.Assign):
            value = self.eval(node.value)
            for target in node.targets:
                self.assign(target, value, node)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self.assign(node.target, self.eval(node.value), node)
        elif isinstance(node, ast.AugAssign):
            current = self.eval(node.target) if isinstance(node.target, ast.Name) else None
            value = self.binop(node.op, current, self.eval(node.value), node) if current is not None else None
            if value is not None:
                self.assign(node.target, value, node)
        elif isinstance(node, ast.Expr):
            self.eval(node.value)
        elif isinstance(node, ast.If):
            self.if_statement(node)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            self.run(node.body)
        elif isinstance(node, ast.Try):
            self.run(node.body)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.env[node.name] = Unknown(f"{self.loc(node)}: '{node.name}' is defined in the file and not evaluated")
            self.functions[node.name] = self.loc(node)
            self.function_names[node.name] = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            self.not_read(node, f"{'function' if not isinstance(node, ast.ClassDef) else 'class'} '{node.name}'")
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            self.not_read(node, "a loop")
            self.taint(node, "used in a loop, which the importer does not run")
            for name in _assigned_names(node):
                self.env[name] = Unknown(f"{self.loc(node)}: '{name}' is assigned in a loop")

    def not_read(self, node: ast.stmt, what: str) -> None:
        """Models built inside functions, classes or loops are listed, not read."""
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and _callee_tail(inner.func) in ("Sequential", "Model"):
                where = Loc(inner.lineno, self.cell)
                self.skipped.append(Skipped(
                    _target_name(node, inner) or "model", str(where),
                    (f"{where}: built inside {what}, which the importer does not run; build it at the top level",),
                ))

    def taint(self, node: ast.AST, why: str) -> None:
        """Models a statement that is not run could change get a problem: what it does is not known."""
        for inner in ast.walk(node):
            if isinstance(inner, ast.Name) and isinstance(self.env.get(inner.id), Model):
                model: Model = self.env[inner.id]
                problem = f"{Loc(inner.lineno, self.cell)}: '{inner.id}' is {why}"
                if problem not in model.problems:
                    model.problems.append(problem)

    def if_statement(self, node: ast.If) -> None:
        branch = self.condition(node.test)
        if branch is True:
            self.run(node.body)
        elif branch is False:
            self.run(node.orelse)
        else:
            self.not_read(node, f"an 'if' whose condition is not known ({self.loc(node)})")
            self.taint(node, "used under a condition that is not known")
            for name in _assigned_names(node):
                self.env[name] = Unknown(f"{self.loc(node)}: '{name}' is assigned under a condition that is not known")

    def condition(self, test: ast.expr) -> bool | None:
        # `if K.image_data_format() == 'channels_first':` — Keras's default (and TensorFlow's) is channels_last.
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Call):
            if _callee_tail(test.left.func) == "image_data_format":
                other = self.eval(test.comparators[0])
                if other in ("channels_first", "channels_last"):
                    equal = other == "channels_last"
                    if isinstance(test.ops[0], ast.Eq):
                        return equal
                    if isinstance(test.ops[0], ast.NotEq):
                        return not equal
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__":
            other = self.eval(test.comparators[0])
            if other == "__main__" and isinstance(test.ops[0], ast.Eq):
                return True  # the script is what was run
        value = self.eval(test)
        if isinstance(value, (bool, int, float, str)) and not isinstance(value, Unknown):
            return bool(value)
        return None

    def assign(self, target: ast.expr, value: Any, node: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
            if isinstance(value, Tensor) and value.node.var is None:
                value.node.var = target.id
            if isinstance(value, Model) and value.var is None:
                value.var = target.id
        elif isinstance(target, (ast.Tuple, ast.List)):
            names = target.elts
            if isinstance(value, (tuple, list)) and len(value) == len(names):
                for sub, item in zip(names, value):
                    self.assign(sub, item, node)
            else:
                for sub in names:
                    self.assign(sub, self.unknown(node, f"`{_snippet(node)}` is not unpacked"), node)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name):
                owner = self.env.get(root.id)
                if isinstance(owner, Model):
                    owner.problems.append(f"{self.loc(node)}: `{_snippet(target)} = ...` changes the model after it is built")
                elif isinstance(owner, LayerObj):
                    owner.problems.append(f"{self.loc(node)}: `{_snippet(target)} = ...` changes the layer")

    # expressions
    def eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int) and abs(node.value).bit_length() > MAX_INT_BITS:
                return self.unknown(node, f"an integer of more than {MAX_INT_BITS} bits is not evaluated")
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            return Ref("?" + node.id)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self.eval(e) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.eval(node.operand)
            return -value if _is_number(value) else self.unknown(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.eval(node.left), self.eval(node.right), node)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.eval(node.value), node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        return self.unknown(node)

    def binop(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        if _is_number(left) and _is_number(right):
            operations: dict[type, Callable[[Any, Any], Any]] = {
                ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
                ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Pow: lambda a, b: a**b,
            }
            if isinstance(op, ast.Pow) and _too_big_power(left, right):
                return self.unknown(node, f"`{_snippet(node)}` would be larger than {MAX_INT_BITS} bits; not evaluated")
            if type(op) in operations:
                try:
                    result = operations[type(op)](left, right)
                except (ZeroDivisionError, OverflowError, ValueError):
                    return self.unknown(node)
                if isinstance(result, int) and abs(result).bit_length() > MAX_INT_BITS:
                    return self.unknown(node, f"`{_snippet(node)}` is larger than {MAX_INT_BITS} bits; not evaluated")
                return result
        if isinstance(left, Array) and _is_number(right):
            return left  # x / 255, x - mean: the shape stays
        if isinstance(left, tuple) and isinstance(right, tuple) and isinstance(op, ast.Add):
            return left + right
        return self.unknown(node)

    def attribute(self, owner: Any, node: ast.Attribute) -> Any:
        if isinstance(owner, Ref):
            return Ref(f"{owner.path}.{node.attr}")
        if isinstance(owner, Array):
            if node.attr == "shape":
                return owner.shape
            return Method(owner, node.attr)
        if isinstance(owner, (Model, LayerObj)):
            return Method(owner, node.attr)
        if isinstance(owner, Unknown):
            return owner
        return self.unknown(node)

    def subscript(self, node: ast.Subscript) -> Any:
        owner = self.eval(node.value)
        if isinstance(owner, (tuple, list)):
            if isinstance(node.slice, ast.Slice):
                parts = [self.eval(p) if p is not None else None for p in (node.slice.lower, node.slice.upper, node.slice.step)]
                if all(p is None or isinstance(p, int) for p in parts):
                    return owner[slice(*parts)]
            else:
                index = self.eval(node.slice)
                if isinstance(index, int) and -len(owner) <= index < len(owner):
                    return owner[index]
        return self.unknown(node)

    # calls
    def call(self, node: ast.Call) -> Any:
        func = self.eval(node.func)
        if isinstance(func, Method):
            return self.method(func, node)
        if isinstance(func, LayerObj):
            return self.apply_layer(func, node)
        if isinstance(func, Model):
            func.problems.append(f"{self.loc(node)}: calling a model on a tensor (nested models) is not supported")
            return self.unknown(node)
        if isinstance(func, Ref):
            keras_path = func.keras
            if keras_path is not None:
                result = self.keras_call(keras_path.split(".")[-1], keras_path, func, node)
                if result is not None:
                    return result
            if func.path.split(".")[-1] == "load_data" and func.path.split(".")[-2:-1] and func.path.split(".")[-2] in _DATASETS:
                train, test = Array((60000, 28, 28)), Array((10000, 28, 28))
                return ((train, Array((60000,))), (test, Array((10000,))))
        self.check_model_arguments(node, func)
        return self.unknown(node)

    def check_model_arguments(self, node: ast.Call, func: Any) -> None:
        """A model handed to a function defined in the file may be changed there: say so."""
        name = _callee_tail(node.func)
        if name not in self.functions:
            return
        for used in self.function_names[name]:  # a model the function reaches as a global
            if isinstance(self.env.get(used), Model):
                model: Model = self.env[used]
                model.problems.append(f"{self.loc(node)}: '{name}' (defined in the file, not read) uses '{used}'")
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Name) and isinstance(self.env.get(arg.id), Model):
                model: Model = self.env[arg.id]
                model.problems.append(f"{self.loc(node)}: passed to '{name}' (defined in the file), which is not read")

    def method(self, method: Method, node: ast.Call) -> Any:
        owner = method.owner
        if isinstance(owner, Array):
            if method.name == "reshape":
                args = [self.eval(a) for a in node.args]
                shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
                return _reshape(owner, list(shape)) or self.unknown(node)
            if method.name in ("astype", "copy"):
                return owner
            return self.unknown(node)
        if isinstance(owner, Model):
            return self.model_method(owner, method.name, node)
        return self.unknown(node)

    def arguments(self, node: ast.Call, positional: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, ast.AST], list[str]]:
        """Keyword-ordered arguments: (values, their AST nodes, problems)."""
        values: dict[str, Any] = {}
        nodes: dict[str, ast.AST] = {}
        problems: list[str] = []
        for index, arg in enumerate(node.args):
            if isinstance(arg, ast.Starred) or index >= len(positional):
                problems.append(f"{self.loc(arg)}: positional argument `{_snippet(arg)}` is not understood")
                continue
            values[positional[index]], nodes[positional[index]] = self.eval(arg), arg
        for keyword in node.keywords:
            if keyword.arg is None:
                problems.append(f"{self.loc(keyword.value)}: `**{_snippet(keyword.value)}` is not understood")
                continue
            values[keyword.arg], nodes[keyword.arg] = self.eval(keyword.value), keyword.value
        return values, nodes, problems

    def keras_call(self, name: str, path: str, ref: Ref, node: ast.Call) -> Any:
        kind = _LAYER_ALIASES.get(name, name)
        if kind in _POSITIONAL or kind in _ACTIVATION_LAYERS:
            return self.make_layer(kind, node)
        if name in ("Input", "InputLayer"):
            return self.make_input(name, node)
        if name == "concatenate":
            return self.concatenate_function(node)
        if name == "Sequential":
            return self.make_sequential(node, ref)
        if name == "Model" and not path.startswith("layers"):
            return self.make_functional(node, ref)
        if name.lower() in _OPTIMIZER_NAMES and (path.startswith("optimizers") or path.count(".") == 0):
            return self.make_optimizer(name, node, ref)
        if path.startswith("layers.") and name[:1].isupper():
            supported = ", ".join(sorted({*_POSITIONAL, *_ACTIVATION_LAYERS, "Input", "InputLayer"}))
            return self.unknown(node, f"Keras layer {name} is not supported (mnistlab has {supported})")
        if name == "InverseTimeDecay":
            return self.inverse_time_decay(node)
        if name == "image_data_format":
            return "channels_last"
        if path.startswith("datasets.") and name == "load_data":
            return None  # handled by the caller's dataset rule
        if path.startswith("initializers") or name in _INITIALIZERS or name == "VarianceScaling":
            return self.make_initializer(name, node)
        return None

    def inverse_time_decay(self, node: ast.Call) -> Any:
        """InverseTimeDecay(lr, decay_steps=1, decay_rate=d) is Keras 2.2's `decay=d` (lr / (1 + d * t))."""
        values, _, problems = self.arguments(node, ("initial_learning_rate", "decay_steps", "decay_rate", "staircase"))
        lr, steps, rate = values.get("initial_learning_rate"), values.get("decay_steps"), values.get("decay_rate")
        if problems or steps != 1 or values.get("staircase", False) or not _is_number(lr) or not _is_number(rate):
            return self.unknown(node, f"`{_snippet(node)}` is not Keras 2.2's decay (decay_steps=1, no staircase)")
        return ("InverseTimeDecay", (lr, rate))

    def make_layer(self, kind: str, node: ast.Call) -> LayerObj:
        loc = self.loc(node)
        if kind in _ACTIVATION_LAYERS:
            layer = LayerObj("Activation", {"activation": _ACTIVATION_LAYERS[kind]}, loc)
            values, nodes, problems = self.arguments(node, ())
            layer.problems += problems
            for key, value in values.items():
                if key == "name" and isinstance(value, str):
                    layer.config["name"] = value
                elif key not in ("dtype", "trainable") or value not in _DEFAULT_ONLY[key]:
                    layer.problems.append(f"{self.loc(nodes[key])}: {kind}({key}=...) is not supported")
            return layer
        values, nodes, problems = self.arguments(node, _POSITIONAL[kind])
        layer = LayerObj(kind, {}, loc, problems=list(problems))
        for key, value in values.items():
            where = self.loc(nodes[key])
            if isinstance(value, Unknown):
                layer.problems.append(f"{value.why} (argument '{key}' of {kind})")
                continue
            if key == "name":
                if isinstance(value, str):
                    layer.config["name"] = value
                else:
                    layer.problems.append(f"{where}: {kind} name must be a string")
            elif key in ("input_shape", "batch_input_shape", "input_dim"):
                self.layer_input_shape(layer, key, value, where)
            elif key in _SPEC_ARGS[kind]:
                converted = self.convert(kind, key, value, where, layer)
                if converted is not None:
                    layer.config[key] = converted
            elif kind == "BatchNormalization" and key == "axis":
                if isinstance(value, int):
                    layer.bn_axis = value
                else:
                    layer.problems.append(f"{where}: BatchNormalization axis {value!r} is not supported")
            elif kind == "Concatenate" and key == "axis":
                if isinstance(value, int) and value != 0:
                    layer.config["axis"] = value - 1 if value > 0 else value  # Keras counts the batch axis
                else:
                    layer.problems.append(f"{where}: Concatenate axis {value!r} is not supported")
            elif key == "bias_initializer":
                init = value if isinstance(value, dict) else _initializer_from_string(value)
                if not (isinstance(init, dict) and init.get("name") == "zeros"):
                    layer.problems.append(f"{where}: bias_initializer `{_snippet(nodes[key])}` is not supported (biases start at zero)")
            elif key in _BN_INITS and kind == "BatchNormalization":
                expected = _BN_INITS[key]
                init = value if isinstance(value, dict) else _initializer_from_string(value)
                ok = (isinstance(init, dict) and init.get("name") == expected) or (expected == "ones" and value in _ONES_INIT)
                if not ok:
                    layer.problems.append(f"{where}: {key} `{_snippet(nodes[key])}` is not supported")
            elif key in _DEFAULT_ONLY:
                allowed = _DEFAULT_ONLY[key]
                if key == "seed" and kind == "Dropout":
                    continue
                if value not in allowed:
                    layer.problems.append(f"{where}: {kind}({key}={_snippet(nodes[key])}) is not supported")
            else:
                layer.problems.append(f"{where}: {kind} argument '{key}' is not supported")
        return layer

    def layer_input_shape(self, layer: LayerObj, key: str, value: Any, where: Loc) -> None:
        if key == "input_dim" and isinstance(value, int):
            layer.input_shape = (value,)
        elif key == "batch_input_shape" and isinstance(value, (tuple, list)) and value:
            shape = tuple(value[1:])
            layer.input_shape = shape if all(isinstance(s, int) for s in shape) else None
        elif isinstance(value, (tuple, list)) and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            layer.input_shape = tuple(value)
        else:
            layer.input_shape_problem = f"{where}: {key} {value!r} is not a tuple of integers"
        if layer.input_shape is not None and len(layer.input_shape) == 3 and layer.input_shape[0] in (1, 3) and layer.input_shape[-1] not in (1, 3):
            layer.input_shape_problem = (f"{where}: input shape {_shape_text(layer.input_shape)} is channels-first; "
                                         "mnistlab models are channels-last (H, W, C)")

    def convert(self, kind: str, key: str, value: Any, where: Loc, layer: LayerObj) -> Any:
        if key == "activation":
            name = _activation_name(value)
            if name is None:
                layer.problems.append(f"{where}: activation {_value_text(value)} is not supported "
                                      f"(mnistlab has {', '.join(_ACTIVATIONS)})")
            return name
        if key == "kernel_initializer":
            init = value if isinstance(value, dict) else _initializer_from_string(value)
            if not isinstance(init, dict):
                layer.problems.append(f"{where}: kernel_initializer {_value_text(value)} is not supported")
                return None
            if "problem" in init:
                layer.problems.append(f"{where}: {init['problem']}")
                return None
            return init
        if key in ("kernel_size", "pool_size", "strides") and isinstance(value, list):
            return tuple(value)
        return value

    def make_input(self, name: str, node: ast.Call) -> Any:
        values, nodes, problems = self.arguments(node, ("shape",) if name == "Input" else ("input_shape",))
        layer = LayerObj("Input", {}, self.loc(node), problems=list(problems))
        for key, value in values.items():
            if key in ("shape", "input_shape", "batch_shape", "batch_input_shape"):
                self.layer_input_shape(layer, "batch_input_shape" if key.startswith("batch") else "input_shape", value,
                                       self.loc(nodes[key]))
            elif key == "name" or (key == "dtype" and value in (None, "float32")):
                continue
            else:
                layer.problems.append(f"{self.loc(nodes[key])}: {name} argument '{key}' is not supported")
        if layer.input_shape is None and layer.input_shape_problem is None:
            layer.input_shape_problem = f"{self.loc(node)}: {name} without a shape"
        if name == "InputLayer":
            return layer  # a layer object for Sequential([...])
        return Tensor(Node(layer, []), layer.input_shape)

    def concatenate_function(self, node: ast.Call) -> Any:
        tensors = self.eval(node.args[0]) if node.args else None
        layer = self.make_layer("Concatenate", ast.Call(func=node.func, args=[], keywords=node.keywords,
                                                         lineno=node.lineno, col_offset=node.col_offset))
        return self.connect(layer, tensors, node)

    def apply_layer(self, layer: LayerObj, node: ast.Call) -> Any:
        if len(node.args) != 1 or node.keywords:
            layer.problems.append(f"{self.loc(node)}: a layer is called with {len(node.args)} positional arguments")
            return self.unknown(node)
        return self.connect(layer, self.eval(node.args[0]), node)

    def connect(self, layer: LayerObj, inputs: Any, node: ast.Call) -> Any:
        if layer.used:
            layer.problems.append(f"{self.loc(node)}: the same layer object is applied twice (shared weights are not supported)")
        layer.used = True
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not items or not all(isinstance(t, Tensor) for t in items):
            bad = next((t for t in items if not isinstance(t, Tensor)), None)
            why = bad.why if isinstance(bad, Unknown) else f"{self.loc(node)}: `{_snippet(node)}` is not applied to Keras tensors"
            return Unknown(why)
        if isinstance(inputs, (list, tuple)) and layer.kind != "Concatenate":
            layer.problems.append(f"{self.loc(node)}: {layer.kind} applied to a list of tensors")
        return Tensor(Node(layer, [t.node for t in items]), None)

    def make_sequential(self, node: ast.Call, ref: Ref) -> Model:
        values, nodes, problems = self.arguments(node, ("layers", "name"))
        model = Model(None, self.loc(node), "sequential", ref.tf_keras, problems=list(problems))
        for key, value in values.items():
            if key == "name" and isinstance(value, str):
                model.name = value
            elif key == "layers" and isinstance(value, (list, tuple)):
                for item in value:
                    self.add_layer(model, item, node)
            elif key == "layers" and value is None:
                continue
            else:
                model.problems.append(f"{self.loc(nodes[key])}: Sequential argument `{_snippet(nodes[key])}` is not understood")
        self.models.append(model)
        return model

    def add_layer(self, model: Model, item: Any, node: ast.AST) -> None:
        if isinstance(item, Tensor) and item.node.layer.kind == "Input" and not model.layers:
            self.take_input(model, item.node.layer)  # keras.Input(shape=...) as the first element
        elif isinstance(item, LayerObj) and item.kind == "Input" and not model.layers:
            self.take_input(model, item)
        elif isinstance(item, LayerObj):
            if model.fitted_at is not None:
                model.problems.append(f"{self.loc(node)}: a layer is added after fit() at {model.fitted_at}")
            if not model.layers and item.input_shape is not None:
                self.take_input(model, item)
            elif not model.layers and item.input_shape_problem:
                model.problems.append(item.input_shape_problem)
                model.input_problem = True
            model.layers.append(item)
        elif isinstance(item, Unknown):
            model.problems.append(f"{item.why} (a layer of the model)")
        else:
            model.problems.append(f"{self.loc(node)}: `{_snippet(node)}` does not add a Keras layer")

    def take_input(self, model: Model, layer: LayerObj) -> None:
        if layer.input_shape_problem:
            model.problems.append(layer.input_shape_problem)
            model.input_problem = True
        elif layer.input_shape is not None:
            model.input_shape = layer.input_shape
        model.problems += layer.problems if layer.kind == "Input" else []

    def make_functional(self, node: ast.Call, ref: Ref) -> Any:
        values, nodes, problems = self.arguments(node, ("inputs", "outputs", "name"))
        model = Model(None, self.loc(node), "functional", ref.tf_keras, problems=list(problems))
        if isinstance(values.get("name"), str):
            model.name = values["name"]
        inputs, outputs = values.get("inputs", values.get("input")), values.get("outputs", values.get("output"))
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            inputs = inputs[0]
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        if not isinstance(inputs, Tensor) or inputs.node.layer.kind != "Input":
            why = inputs.why if isinstance(inputs, Unknown) else f"{self.loc(node)}: the model's inputs are not one keras Input"
            model.problems.append(why)
        elif not isinstance(outputs, Tensor):
            why = outputs.why if isinstance(outputs, Unknown) else f"{self.loc(node)}: the model's outputs are not one Keras tensor"
            model.problems.append(why)
        else:
            model.input_node, model.output = inputs.node, outputs.node
            self.take_input(model, inputs.node.layer)
        self.models.append(model)
        return model

    def model_method(self, model: Model, name: str, node: ast.Call) -> Any:
        where = self.loc(node)
        if name == "add":
            if model.kind != "sequential":
                model.problems.append(f"{where}: add() on a functional model")
            elif len(node.args) == 1:
                self.add_layer(model, self.eval(node.args[0]), node.args[0])
            else:
                model.problems.append(f"{where}: add() takes one layer")
        elif name == "pop":
            if model.layers:
                model.layers.pop()
        elif name == "compile":
            self.compile(model, node)
        elif name in ("fit", "fit_generator"):
            self.fit(model, name, node)
        elif name in _MODEL_METHODS_IGNORED:
            pass
        else:
            model.problems.append(f"{where}: {name}() on the model is not understood")
        return self.unknown(node)

    def compile(self, model: Model, node: ast.Call) -> None:
        where = self.loc(node)
        if model.fitted_at is not None:
            model.problems.append(f"{where}: compiled again after fit() at {model.fitted_at}")
        values, nodes, problems = self.arguments(node, ("optimizer", "loss", "metrics"))
        model.problems += problems
        model.compiled = True
        optimizer = values.get("optimizer", "rmsprop")  # Keras 2.2's compile() default
        if isinstance(optimizer, str):
            key = optimizer.lower()
            if key in _OPTIMIZER_NAMES:
                optimizer = self.optimizer_defaults(_OPTIMIZER_NAMES[key], {}, model.tf_keras, where)
            else:
                model.problems.append(f"{where}: optimizer '{optimizer}' is not supported")
                optimizer = None
        if isinstance(optimizer, Optimizer):
            model.optimizer = optimizer
        elif optimizer is not None:
            why = optimizer.why if isinstance(optimizer, Unknown) else f"{where}: optimizer `{_snippet(nodes['optimizer'])}` is not understood"
            model.problems.append(why)
        loss = values.get("loss")
        loss_name = loss if isinstance(loss, str) else (loss.path.split(".")[-1] if isinstance(loss, Ref) else None)
        if isinstance(loss, Unknown) and isinstance(nodes.get("loss"), ast.Call):
            loss_name = _callee_tail(nodes["loss"].func)  # CategoricalCrossentropy()
            if nodes["loss"].args or nodes["loss"].keywords:
                loss_name = None
        if loss_name in _LOSSES_SPARSE:
            model.notes.append(f"{where}: sparse_categorical_crossentropy on integer labels is categorical cross-entropy")
        elif loss_name not in _LOSSES_OK:
            text = _snippet(nodes["loss"]) if "loss" in nodes else "no loss"
            model.problems.append(f"{where}: loss {text} is not supported (mnistlab trains with categorical cross-entropy)")
        for key in values:
            if key not in ("optimizer", "loss", "metrics", "weighted_metrics"):
                model.problems.append(f"{self.loc(nodes[key])}: compile argument '{key}' is not supported")

    def optimizer_defaults(self, name: str, args: dict[str, Any], tf_keras: bool, where: Loc) -> Optimizer:
        """An optimizer with the arguments given; learning-rate defaults depend on the Keras that runs it."""
        optimizer = Optimizer(name, dict(args), [], [])
        if "lr" not in args and name in _TF_KERAS_LR:
            if tf_keras:
                optimizer.args["lr"] = _TF_KERAS_LR[name]
                optimizer.notes.append(f"{where}: {name} from tf.keras without a learning rate: tf.keras's default "
                                       f"{_TF_KERAS_LR[name]} (Keras 2.2's differs)")
            else:
                optimizer.notes.append(f"{where}: {name} without a learning rate: Keras 2.2's default "
                                       f"(tf.keras and Keras 3 use {_TF_KERAS_LR[name]})")
        return optimizer

    def make_optimizer(self, name: str, node: ast.Call, ref: Ref) -> Optimizer:
        from mnistlab.training.optim import KERAS_DEFAULTS

        key = _OPTIMIZER_NAMES[name.lower()]
        allowed = tuple(KERAS_DEFAULTS[key])
        values, nodes, problems = self.arguments(node, ("lr",) + tuple(a for a in allowed if a != "lr"))
        args: dict[str, Any] = {}
        for arg, value in values.items():
            where = self.loc(nodes[arg])
            canonical = "lr" if arg == "learning_rate" else ("lr" if arg == "lr" else arg)
            if canonical == "lr" and isinstance(value, tuple) and len(value) == 2 and value[0] == "InverseTimeDecay":
                args["lr"], args["decay"] = value[1]
                continue
            if arg in ("name", "clipnorm", "clipvalue", "global_clipnorm") and (arg == "name" or value is None):
                continue
            if key == "adagrad" and arg == "initial_accumulator_value" and value == 0.0:
                continue  # Keras 2.2's accumulators start at zero (what mnistlab does)
            if canonical not in allowed:
                problems.append(f"{where}: {name} argument '{arg}' is not supported")
            elif isinstance(value, bool) or _is_number(value):
                args[canonical] = value
            else:
                problems.append(f"{value.why if isinstance(value, Unknown) else f'{where}: {name} {arg}={_snippet(nodes[arg])} is not a number'}")
        optimizer = self.optimizer_defaults(key, args, ref.tf_keras, self.loc(node))
        optimizer.problems += problems
        # Arguments equal to Keras 2.2's defaults are dropped: `Adadelta(learning_rate=1.0)` is 'adadelta'.
        optimizer.args = {k: v for k, v in optimizer.args.items() if KERAS_DEFAULTS[key].get(k) != v}
        return optimizer

    def make_initializer(self, name: str, node: ast.Call) -> Any:
        values, nodes, _ = self.arguments(node, ("mean", "stddev", "seed") if name in ("RandomNormal", "random_normal", "normal")
                                          else ("scale", "mode", "distribution", "seed") if name == "VarianceScaling" else ("seed",))
        if name == "VarianceScaling":
            key = (float(values.get("scale", 1.0)), values.get("mode", "fan_in"), values.get("distribution", "normal"))
            found = _VARIANCE_SCALING.get(key)  # type: ignore[arg-type]
            return {"name": found} if found else {"problem": f"VarianceScaling{key} is not one of mnistlab's initializers"}
        canonical = _INITIALIZERS.get(name)
        if canonical is None:
            return {"problem": f"initializer {name} is not supported"}
        init: dict[str, Any] = {"name": canonical}
        for key, value in values.items():
            if key == "seed":
                continue  # seeds only pick the random draw; mnistlab seeds each run
            if key in ("mean", "stddev") and canonical == "random_normal" and _is_number(value):
                init[key] = float(value)
            else:
                return {"problem": f"{name}({key}={_value_text(value)}) is not supported"}
        return init

    def fit(self, model: Model, name: str, node: ast.Call) -> None:
        where = self.loc(node)
        values, nodes, problems = self.arguments(node, ("x", "y", "batch_size", "epochs"))
        model.problems += problems
        if name == "fit_generator" or "steps_per_epoch" in values:
            model.problems.append(f"{where}: {name}() with a generator (data augmentation) is not supported")
            return
        batch = values.get("batch_size", 32)  # Keras's fit() defaults: batch_size 32, epochs 1
        epochs = values.get("epochs", values.get("nb_epoch", 1))
        for key, value in values.items():
            if key in ("batch_size", "epochs", "nb_epoch"):
                if isinstance(value, Unknown):
                    model.problems.append(f"{value.why} (fit's {key})")
            elif key == "callbacks":
                self.check_callbacks(model, nodes[key])
            elif key == "shuffle" and value is False:
                model.problems.append(f"{self.loc(nodes[key])}: fit(shuffle=False) is not supported")
            elif key not in _FIT_IGNORED:
                model.problems.append(f"{self.loc(nodes[key])}: fit argument '{key}' is not supported")
        if not isinstance(batch, int) or not isinstance(epochs, int):
            return
        if model.kind == "sequential" and model.input_shape is None and isinstance(values.get("x"), Array):
            model.input_shape = values["x"].shape[1:]  # Keras builds a model without input_shape from the data
            model.notes.append(f"{where}: input shape {_shape_text(model.input_shape)} taken from the data given to fit()")
        if model.batch_size is not None and model.batch_size != batch:
            model.problems.append(f"{where}: fit() again with another batch size ({batch}, before {model.batch_size})")
        model.batch_size = batch
        model.epochs += epochs
        model.fitted_at = where

    def check_callbacks(self, model: Model, node: ast.AST) -> None:
        items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
        for item in items:
            if isinstance(item, ast.Call) and _callee_tail(item.func) in _HARMLESS_CALLBACKS:
                continue
            model.problems.append(f"{self.loc(item)}: callback `{_snippet(item)}` changes training and is not supported")


# --- helpers ----------------------------------------------------------------------------------


def _snippet(node: ast.AST, limit: int = 60) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _callee_tail(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _target_name(statement: ast.stmt, call: ast.Call) -> str | None:
    for node in ast.walk(statement):
        if isinstance(node, ast.Assign) and node.value is call and isinstance(node.targets[0], ast.Name):
            return node.targets[0].id
    return None


def _assigned_names(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store):
            names.add(inner.id)
    return names


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _too_big_power(base: Any, exponent: Any) -> bool:
    """Whether base**exponent (numbers) would pass MAX_INT_BITS: judged from the operands' sizes,
    without computing it (10**10**10 would take hours and gigabytes)."""
    if not isinstance(base, int) or not isinstance(exponent, int) or exponent <= 0 or abs(base) <= 1:
        return False  # floats overflow to OverflowError quickly; x**0, 1**n, 0**n, n**-k are small
    return (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS


def _nesting(tree: ast.AST) -> tuple[int, int]:
    """The deepest nesting in ``tree`` and the line where it is, walked without recursion."""
    deepest, line = 0, 0
    stack = [(tree, 1, 0)]
    while stack:
        node, depth, lineno = stack.pop()
        lineno = getattr(node, "lineno", lineno)
        if depth > deepest:
            deepest, line = depth, lineno
        stack.extend((child, depth + 1, lineno) for child in ast.iter_child_nodes(node))
    return deepest, line


def _value_text(value: Any) -> str:
    if isinstance(value, Ref):
        return value.path.lstrip("?")
    if isinstance(value, Unknown):
        return "(not evaluated)"
    return repr(value)


def _activation_name(value: Any) -> str | None:
    if value is None:
        return "linear"
    if isinstance(value, Ref):
        value = value.path.split(".")[-1]
    if isinstance(value, str) and value.lower() in _ACTIVATIONS:
        return value.lower()
    return None


def _initializer_from_string(value: Any) -> dict[str, Any] | None:
    if isinstance(value, Ref):  # keras.initializers.he_normal passed uncalled
        value = value.path.split(".")[-1]
    if isinstance(value, str) and value in _INITIALIZERS:
        return {"name": _INITIALIZERS[value]}
    if isinstance(value, str):
        return {"problem": f"initializer '{value}' is not supported"}
    return None


def _reshape(array: Array, shape: list[Any]) -> Array | None:
    if not all(isinstance(s, int) for s in shape):
        return None
    total = math.prod(array.shape)
    if shape.count(-1) == 1:
        known = math.prod(s for s in shape if s != -1)
        if known <= 0 or total % known:
            return None
        shape = [total // known if s == -1 else s for s in shape]
    return Array(tuple(shape)) if math.prod(shape) == total else None


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
        training["optimizer"] = {"name": model.optimizer.name, **model.optimizer.args} if model.optimizer.args else model.optimizer.name
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


# --- reading files ------------------------------------------------------------------------------

_MAGIC = re.compile(r"^\s*[%!]")


def _blank_magics(code: str) -> str:
    """IPython magics and shell lines (`%matplotlib`, `!pip`) become blank lines: line numbers stay."""
    return "\n".join("" if _MAGIC.match(line) else line for line in code.split("\n"))


def _cells(path: Path) -> list[tuple[int | None, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MnistlabError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistlabError(f"{path}: cannot read: {exc}") from None
    if path.suffix == ".ipynb":
        try:
            notebook = json.loads(text)
            cells = notebook["cells"]
        except RecursionError:
            raise MnistlabError(f"{path}: notebook JSON nested too deeply to read; refused") from None
        except (ValueError, KeyError, TypeError):
            raise MnistlabError(f"{path}: not a Jupyter notebook (no JSON 'cells' list)") from None
        if not isinstance(cells, list):
            raise MnistlabError(f"{path}: not a Jupyter notebook ('cells' is not a list)")
        code_cells: list[tuple[int | None, str]] = []
        for number, cell in enumerate(cells, start=1):
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                source = cell.get("source", "")
                if isinstance(source, list) and all(isinstance(line, str) for line in source):
                    source = "".join(source)
                if not isinstance(source, str):
                    raise MnistlabError(f"{path}: cell {number}: field 'source': must be text or a list of lines")
                code_cells.append((number, source))
        return code_cells
    if path.suffix != ".py":
        raise MnistlabError(f"{path}: import-keras reads .py and .ipynb files")
    return [(None, text)]


def import_keras_code(path: str | Path) -> ImportResult:
    """Translate every Keras model defined in a .py or .ipynb file into a spec."""
    path = Path(path)
    interpreter = _Interpreter()
    for cell, code in _cells(path):
        interpreter.cell = cell
        where = f"{path}: cell {cell}" if cell is not None else str(path)
        try:
            tree = ast.parse(_blank_magics(code), filename=str(path))
        except (RecursionError, MemoryError):
            raise MnistlabError(f"{where}: code nested too deeply to parse; refused") from None
        except SyntaxError as exc:
            where = Loc(exc.lineno or 0, cell)
            if cell is None:
                raise MnistlabError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from None
            for model in interpreter.models:
                model.problems.append(f"{where}: this cell is not valid Python ({exc.msg}) and may change the model")
            continue
        depth, line = _nesting(tree)
        if depth > MAX_NESTING:
            raise MnistlabError(f"{where}: line {line}: an expression nested {depth} deep (more than {MAX_NESTING}); "
                                "refused, not evaluated")
        try:
            interpreter.run(tree.body)
        except RecursionError:  # a guard behind the nesting bound
            raise MnistlabError(f"{where}: code nested too deeply to evaluate; refused") from None
    return _results(path, interpreter)


def _results(path: Path, interpreter: _Interpreter) -> ImportResult:
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


# --- writing specs ----------------------------------------------------------------------------


_KEY_ORDER = ("type", "name", "filters", "units", "kernel_size", "pool_size", "rate", "strides", "padding",
              "activation", "kernel_initializer", "use_bias", "momentum", "epsilon", "axis", "inputs")


def _compact_layer(layer: Any) -> dict[str, Any]:
    """A layer as the zoo writes it: only what differs from Keras's defaults, in a readable order."""
    data = layer.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    init = data.get("kernel_initializer")
    if isinstance(init, dict) and set(init) == {"name"}:
        data["kernel_initializer"] = init["name"]
    for key in ("kernel_size", "pool_size", "strides"):
        value = data.get(key)
        if isinstance(value, list) and len(set(value)) == 1:
            data[key] = value[0]
    data["type"] = layer.type
    return {key: data[key] for key in sorted(data, key=lambda k: _KEY_ORDER.index(k) if k in _KEY_ORDER else 99)}


def specs_yaml(result: ImportResult) -> str:
    """The translated specs as one YAML spec file (`models:`), with each import decision recorded."""
    import yaml

    def flow(value: Any) -> str:
        # Dumped inside a list so that scalars come out without YAML's '...' document end.
        return yaml.safe_dump([value], default_flow_style=True, width=10_000, sort_keys=False).strip()[1:-1]

    lines = [f"# Translated by `mnistlab import-keras` from {Path(result.source).name}.", "models:"]
    for spec in result.specs:
        lines.append(f"  - id: {flow(spec.id)}")
        lines.append(f"    input: {flow(list(spec.input))}")
        lines.append("    layers:")
        lines += [f"      - {flow(_compact_layer(layer))}" for layer in spec.layers]
        training = {"optimizer": spec.training.optimizer.to_yaml_value(), "batch_size": spec.training.batch_size,
                    "epochs": spec.training.epochs}
        lines.append(f"    training: {flow(training)}")
        if spec.decisions:
            lines.append("    decisions:")
            lines += [f"      - {flow(d)}" for d in spec.decisions]
    for item in result.skipped:
        lines.append(f"# skipped: {' '.join(str(item).split())}")
    return "\n".join(lines) + "\n"


__all__ = ["ImportResult", "Skipped", "import_keras_code", "specs_yaml"]

"""The interpreter of Keras model-building code: layers, inputs, Sequential and functional models.

It walks the code with the Python subset's evaluator and gives Keras calls their meaning:
`layers.Dense(...)` becomes a layer record holding its spec mapping, calling a layer on a tensor
adds a graph node, `Sequential([...])` / `.add()` and `Model(inputs, outputs)` become models, and
compile() and fit() set their training (keras_training_calls). Only the layers and arguments a
spec can say are read; every other one is a problem with its line, never a guess.
"""

from __future__ import annotations

import ast
from typing import Any

from mnistlab.interop.keras_objects import LayerObj, Model, Node, Skipped, Tensor, is_tf_keras, keras_path
from mnistlab.interop.keras_training_calls import KerasTrainingCalls
from mnistlab.interop.python_subset import (
    Array,
    Loc,
    Method,
    Ref,
    Unknown,
    callee_tail,
    is_number,
    reshape,
    snippet,
    target_name,
    value_text,
)
from mnistlab.spec.layers import format_shape
from mnistlab.spec.vocabulary import (
    ACTIVATION_LAYERS,
    ACTIVATIONS,
    CODE_LAYER_ALIASES,
    INITIALIZER_SPELLINGS,
    OPTIMIZER_DEFAULTS,
    VARIANCE_SCALING_FORMS,
)

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
_DATASETS = {"mnist", "fashion_mnist"}
_MODEL_METHODS_IGNORED = {"summary", "evaluate", "predict", "predict_classes", "predict_proba", "save",
                          "save_weights", "get_weights", "count_params", "to_json", "to_yaml", "get_config",
                          "get_layer", "test_on_batch", "evaluate_generator", "predict_generator",
                          "load_weights", "reset_states"}


class KerasInterpreter(KerasTrainingCalls):
    """Walks Keras model-building code, keeping layers, tensors and models in its environment."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[Model] = []
        self.skipped: list[Skipped] = []

    # statements the evaluator does not run
    def not_read(self, node: ast.stmt, what: str) -> None:
        """Models built inside functions, classes or loops are listed, not read."""
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and callee_tail(inner.func) in ("Sequential", "Model"):
                where = Loc(inner.lineno, self.cell)
                self.skipped.append(Skipped(
                    target_name(node, inner) or "model", str(where),
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

    def condition(self, test: ast.expr) -> bool | None:
        # `if K.image_data_format() == 'channels_first':` — Keras's default (and TensorFlow's) is channels_last.
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Call):
            if callee_tail(test.left.func) == "image_data_format":
                other = self.eval(test.comparators[0])
                if other in ("channels_first", "channels_last"):
                    equal = other == "channels_last"
                    if isinstance(test.ops[0], ast.Eq):
                        return equal
                    if isinstance(test.ops[0], ast.NotEq):
                        return not equal
        return super().condition(test)

    def bound(self, name: str, value: Any) -> None:
        """A tensor or model takes the name of the first variable it is assigned to."""
        if isinstance(value, Tensor) and value.node.var is None:
            value.node.var = name
        if isinstance(value, Model) and value.var is None:
            value.var = name

    def changed(self, owner: Any, target: ast.expr, node: ast.stmt) -> None:
        """Changing a model or layer by assignment is a change the spec cannot say."""
        if isinstance(owner, Model):
            owner.problems.append(f"{self.loc(node)}: `{snippet(target)} = ...` changes the model after it is built")
        elif isinstance(owner, LayerObj):
            owner.problems.append(f"{self.loc(node)}: `{snippet(target)} = ...` changes the layer")

    def attribute(self, owner: Any, node: ast.Attribute) -> Any:
        if isinstance(owner, (Model, LayerObj)):
            return Method(owner, node.attr)
        return super().attribute(owner, node)

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
            inside_keras = keras_path(func)
            if inside_keras is not None:
                result = self.keras_call(inside_keras.split(".")[-1], inside_keras, func, node)
                if result is not None:
                    return result
            parts = func.path.split(".")
            if parts[-1] == "load_data" and parts[-2:-1] and parts[-2] in _DATASETS:
                train, test = Array((60000, 28, 28)), Array((10000, 28, 28))
                return ((train, Array((60000,))), (test, Array((10000,))))
        self.check_model_arguments(node, func)
        return self.unknown(node)

    def check_model_arguments(self, node: ast.Call, func: Any) -> None:
        """A model handed to a function defined in the file may be changed there: say so."""
        name = callee_tail(node.func)
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
                return reshape(owner, list(shape)) or self.unknown(node)
            if method.name in ("astype", "copy"):
                return owner
            return self.unknown(node)
        if isinstance(owner, Model):
            return self.model_method(owner, method.name, node)
        return self.unknown(node)

    def keras_call(self, name: str, path: str, ref: Ref, node: ast.Call) -> Any:
        kind = CODE_LAYER_ALIASES.get(name, name)
        if kind in _POSITIONAL or kind in ACTIVATION_LAYERS:
            return self.make_layer(kind, node)
        if name in ("Input", "InputLayer"):
            return self.make_input(name, node)
        if name == "concatenate":
            return self.concatenate_function(node)
        if name == "Sequential":
            return self.make_sequential(node, ref)
        if name == "Model" and not path.startswith("layers"):
            return self.make_functional(node, ref)
        if name.lower() in OPTIMIZER_DEFAULTS and (path.startswith("optimizers") or path.count(".") == 0):
            return self.make_optimizer(name, node, ref)
        if path.startswith("layers.") and name[:1].isupper():
            supported = ", ".join(sorted({*_POSITIONAL, *ACTIVATION_LAYERS, "Input", "InputLayer"}))
            return self.unknown(node, f"Keras layer {name} is not supported (mnistlab has {supported})")
        if name == "InverseTimeDecay":
            return self.inverse_time_decay(node)
        if name == "image_data_format":
            return "channels_last"
        if path.startswith("datasets.") and name == "load_data":
            return None  # handled by the caller's dataset rule
        if path.startswith("initializers") or name in INITIALIZER_SPELLINGS or name == "VarianceScaling":
            return self.make_initializer(name, node)
        return None

    def make_layer(self, kind: str, node: ast.Call) -> LayerObj:
        loc = self.loc(node)
        if kind in ACTIVATION_LAYERS:
            layer = LayerObj("Activation", {"activation": ACTIVATION_LAYERS[kind]}, loc)
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
                    layer.problems.append(f"{where}: bias_initializer `{snippet(nodes[key])}` is not supported "
                                          "(biases start at zero)")
            elif key in _BN_INITS and kind == "BatchNormalization":
                expected = _BN_INITS[key]
                init = value if isinstance(value, dict) else _initializer_from_string(value)
                ok = ((isinstance(init, dict) and init.get("name") == expected)
                      or (expected == "ones" and value in _ONES_INIT))
                if not ok:
                    layer.problems.append(f"{where}: {key} `{snippet(nodes[key])}` is not supported")
            elif key in _DEFAULT_ONLY:
                allowed = _DEFAULT_ONLY[key]
                if key == "seed" and kind == "Dropout":
                    continue
                if value not in allowed:
                    layer.problems.append(f"{where}: {kind}({key}={snippet(nodes[key])}) is not supported")
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
        shape = layer.input_shape
        if shape is not None and len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3):
            layer.input_shape_problem = (f"{where}: input shape {format_shape(layer.input_shape)} is channels-first; "
                                         "mnistlab models are channels-last (H, W, C)")

    def convert(self, kind: str, key: str, value: Any, where: Loc, layer: LayerObj) -> Any:
        if key == "activation":
            name = _activation_name(value)
            if name is None:
                layer.problems.append(f"{where}: activation {value_text(value)} is not supported "
                                      f"(mnistlab has {', '.join(ACTIVATIONS)})")
            return name
        if key == "kernel_initializer":
            init = value if isinstance(value, dict) else _initializer_from_string(value)
            if not isinstance(init, dict):
                layer.problems.append(f"{where}: kernel_initializer {value_text(value)} is not supported")
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
            layer.problems.append(f"{self.loc(node)}: the same layer object is applied twice "
                                  "(shared weights are not supported)")
        layer.used = True
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not items or not all(isinstance(t, Tensor) for t in items):
            bad = next((t for t in items if not isinstance(t, Tensor)), None)
            why = (bad.why if isinstance(bad, Unknown)
                   else f"{self.loc(node)}: `{snippet(node)}` is not applied to Keras tensors")
            return Unknown(why)
        if isinstance(inputs, (list, tuple)) and layer.kind != "Concatenate":
            layer.problems.append(f"{self.loc(node)}: {layer.kind} applied to a list of tensors")
        return Tensor(Node(layer, [t.node for t in items]), None)

    def make_sequential(self, node: ast.Call, ref: Ref) -> Model:
        values, nodes, problems = self.arguments(node, ("layers", "name"))
        model = Model(None, self.loc(node), "sequential", is_tf_keras(ref), problems=list(problems))
        for key, value in values.items():
            if key == "name" and isinstance(value, str):
                model.name = value
            elif key == "layers" and isinstance(value, (list, tuple)):
                for item in value:
                    self.add_layer(model, item, node)
            elif key == "layers" and value is None:
                continue
            else:
                model.problems.append(f"{self.loc(nodes[key])}: Sequential argument `{snippet(nodes[key])}` "
                                      "is not understood")
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
            model.problems.append(f"{self.loc(node)}: `{snippet(node)}` does not add a Keras layer")

    def take_input(self, model: Model, layer: LayerObj) -> None:
        if layer.input_shape_problem:
            model.problems.append(layer.input_shape_problem)
            model.input_problem = True
        elif layer.input_shape is not None:
            model.input_shape = layer.input_shape
        model.problems += layer.problems if layer.kind == "Input" else []

    def make_functional(self, node: ast.Call, ref: Ref) -> Any:
        values, nodes, problems = self.arguments(node, ("inputs", "outputs", "name"))
        model = Model(None, self.loc(node), "functional", is_tf_keras(ref), problems=list(problems))
        if isinstance(values.get("name"), str):
            model.name = values["name"]
        inputs, outputs = values.get("inputs", values.get("input")), values.get("outputs", values.get("output"))
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            inputs = inputs[0]
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        if not isinstance(inputs, Tensor) or inputs.node.layer.kind != "Input":
            why = (inputs.why if isinstance(inputs, Unknown)
                   else f"{self.loc(node)}: the model's inputs are not one keras Input")
            model.problems.append(why)
        elif not isinstance(outputs, Tensor):
            why = (outputs.why if isinstance(outputs, Unknown)
                   else f"{self.loc(node)}: the model's outputs are not one Keras tensor")
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

    def make_initializer(self, name: str, node: ast.Call) -> Any:
        positional = (("mean", "stddev", "seed") if name in ("RandomNormal", "random_normal", "normal")
                      else ("scale", "mode", "distribution", "seed") if name == "VarianceScaling" else ("seed",))
        values, nodes, _ = self.arguments(node, positional)
        if name == "VarianceScaling":
            key = (float(values.get("scale", 1.0)), values.get("mode", "fan_in"), values.get("distribution", "normal"))
            found = VARIANCE_SCALING_FORMS.get(key)  # type: ignore[arg-type]
            if found:
                return {"name": found}
            return {"problem": f"VarianceScaling{key} is not one of mnistlab's initializers"}
        canonical = INITIALIZER_SPELLINGS.get(name)
        if canonical is None:
            return {"problem": f"initializer {name} is not supported"}
        init: dict[str, Any] = {"name": canonical}
        for key, value in values.items():
            if key == "seed":
                continue  # seeds only pick the random draw; mnistlab seeds each run
            if key in ("mean", "stddev") and canonical == "random_normal" and is_number(value):
                init[key] = float(value)
            else:
                return {"problem": f"{name}({key}={value_text(value)}) is not supported"}
        return init


# --- helpers ----------------------------------------------------------------------------------


def _activation_name(value: Any) -> str | None:
    if value is None:
        return "linear"
    if isinstance(value, Ref):
        value = value.path.split(".")[-1]
    if isinstance(value, str) and value.lower() in ACTIVATIONS:
        return value.lower()
    return None


def _initializer_from_string(value: Any) -> dict[str, Any] | None:
    if isinstance(value, Ref):  # keras.initializers.he_normal passed uncalled
        value = value.path.split(".")[-1]
    if isinstance(value, str) and value in INITIALIZER_SPELLINGS:
        return {"name": INITIALIZER_SPELLINGS[value]}
    if isinstance(value, str):
        return {"problem": f"initializer '{value}' is not supported"}
    return None

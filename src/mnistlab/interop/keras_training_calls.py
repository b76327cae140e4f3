"""Reading how Keras code trains a model: compile(), optimizers and their schedules, fit() and callbacks.

Each call becomes settings of the spec's `training` (optimizer, batch size, epochs) or a problem:
a loss other than categorical cross-entropy, a callback that changes training, or an argument whose
effect mnistlab does not reproduce. Learning-rate defaults depend on the Keras that runs the code.
"""

from __future__ import annotations

import ast
from typing import Any

from mnistlab.interop.keras_objects import Model, Optimizer, is_tf_keras
from mnistlab.interop.python_subset import Array, Loc, PythonSubset, Ref, Unknown, callee_tail, is_number, snippet
from mnistlab.spec.layers import format_shape
from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS

# tf.keras (TF 2.x) and Keras 3 changed these learning-rate defaults; Keras 2.2's are in the vocabulary.
_TF_KERAS_LR = {"adadelta": 0.001, "adagrad": 0.001, "adamax": 0.001, "nadam": 0.001}
_LOSSES_OK = {"categorical_crossentropy", "CategoricalCrossentropy"}
_LOSSES_SPARSE = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
# fit() arguments that do not change the trained model as mnistlab trains it.
_FIT_IGNORED = {"x", "y", "verbose", "validation_data", "validation_split", "validation_freq", "shuffle",
                "use_multiprocessing", "workers", "max_queue_size"}
_HARMLESS_CALLBACKS = {"ModelCheckpoint", "TensorBoard", "CSVLogger", "History", "ProgbarLogger", "BaseLogger",
                       "TerminateOnNaN", "PlotLossesKeras"}


class KerasTrainingCalls(PythonSubset):
    """The training half of the Keras interpreter: what compile(), optimizers and fit() set."""

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
            if key in OPTIMIZER_DEFAULTS:
                optimizer = self.optimizer_defaults(key, {}, model.tf_keras, where)
            else:
                model.problems.append(f"{where}: optimizer '{optimizer}' is not supported")
                optimizer = None
        if isinstance(optimizer, Optimizer):
            model.optimizer = optimizer
        elif optimizer is not None:
            why = (optimizer.why if isinstance(optimizer, Unknown)
                   else f"{where}: optimizer `{snippet(nodes['optimizer'])}` is not understood")
            model.problems.append(why)
        loss = values.get("loss")
        loss_name = loss if isinstance(loss, str) else (loss.path.split(".")[-1] if isinstance(loss, Ref) else None)
        if isinstance(loss, Unknown) and isinstance(nodes.get("loss"), ast.Call):
            loss_name = callee_tail(nodes["loss"].func)  # CategoricalCrossentropy()
            if nodes["loss"].args or nodes["loss"].keywords:
                loss_name = None
        if loss_name in _LOSSES_SPARSE:
            model.notes.append(f"{where}: sparse_categorical_crossentropy on integer labels is "
                               "categorical cross-entropy")
        elif loss_name not in _LOSSES_OK:
            text = snippet(nodes["loss"]) if "loss" in nodes else "no loss"
            model.problems.append(f"{where}: loss {text} is not supported "
                                  "(mnistlab trains with categorical cross-entropy)")
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
        key = name.lower()
        allowed = tuple(OPTIMIZER_DEFAULTS[key])
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
            elif isinstance(value, bool) or is_number(value):
                args[canonical] = value
            else:
                problems.append(value.why if isinstance(value, Unknown)
                                else f"{where}: {name} {arg}={snippet(nodes[arg])} is not a number")
        optimizer = self.optimizer_defaults(key, args, is_tf_keras(ref), self.loc(node))
        optimizer.problems += problems
        # Arguments equal to Keras 2.2's defaults are dropped: `Adadelta(learning_rate=1.0)` is 'adadelta'.
        optimizer.args = {k: v for k, v in optimizer.args.items() if OPTIMIZER_DEFAULTS[key].get(k) != v}
        return optimizer

    def inverse_time_decay(self, node: ast.Call) -> Any:
        """InverseTimeDecay(lr, decay_steps=1, decay_rate=d) is Keras 2.2's `decay=d` (lr / (1 + d * t))."""
        values, _, problems = self.arguments(node, ("initial_learning_rate", "decay_steps", "decay_rate", "staircase"))
        lr, steps, rate = values.get("initial_learning_rate"), values.get("decay_steps"), values.get("decay_rate")
        if problems or steps != 1 or values.get("staircase", False) or not is_number(lr) or not is_number(rate):
            return self.unknown(node, f"`{snippet(node)}` is not Keras 2.2's decay (decay_steps=1, no staircase)")
        return ("InverseTimeDecay", (lr, rate))

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
            model.notes.append(f"{where}: input shape {format_shape(model.input_shape)} "
                               "taken from the data given to fit()")
        if model.batch_size is not None and model.batch_size != batch:
            model.problems.append(f"{where}: fit() again with another batch size ({batch}, before {model.batch_size})")
        model.batch_size = batch
        model.epochs += epochs
        model.fitted_at = where

    def check_callbacks(self, model: Model, node: ast.AST) -> None:
        items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
        for item in items:
            if isinstance(item, ast.Call) and callee_tail(item.func) in _HARMLESS_CALLBACKS:
                continue
            model.problems.append(f"{self.loc(item)}: callback `{snippet(item)}` changes training and is not supported")

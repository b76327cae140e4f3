"""Keras's names in one table: spec parsing, Keras code in and Keras code out all read them here.

A spec speaks Keras 2.2 so that a Keras user can write one without a manual; the importer reads
Keras code into specs and the exporter writes specs back as Keras code. The three must agree on
every name, so each name is stated once, here, and every lookup table the three need is derived
from it. Plain data: the spec layer imports it without pulling in torch or the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --- activations ----------------------------------------------------------------------------

ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "tanh", "softmax", "linear")

# Keras layer classes that are one activation and nothing else: read as an Activation layer.
ACTIVATION_LAYERS: dict[str, str] = {"ReLU": "relu", "Softmax": "softmax"}

# --- layers ---------------------------------------------------------------------------------

# Other spellings of a layer class that Keras itself accepts (keras.layers.Convolution2D is Conv2D).
KERAS_LAYER_ALIASES: dict[str, str] = {"Convolution2D": "Conv2D", "MaxPool2D": "MaxPooling2D"}

# Each reader accepts one more alias than the other; both behaviours are kept as they were:
# - a spec may write the shorthand `type: BatchNorm`, which is no Keras class, so Keras code that
#   calls `layers.BatchNorm(...)` is refused as a layer Keras does not have;
# - Keras code may write `Conv2d` (a common slip: PyTorch's spelling), while a spec's
#   `type: Conv2d` is refused with "did you mean 'Conv2D'?" (spec layer types match case exactly).
SPEC_LAYER_ALIASES: dict[str, str] = {**KERAS_LAYER_ALIASES, "BatchNorm": "BatchNormalization"}
CODE_LAYER_ALIASES: dict[str, str] = {**KERAS_LAYER_ALIASES, "Conv2d": "Conv2D"}

# --- optimizers -----------------------------------------------------------------------------

# Keras 2.2's K.epsilon(): every optimizer's `epsilon=None` resolves to it (torch uses 1e-8..1e-10).
KERAS_EPSILON = 1e-7


@dataclass(frozen=True)
class OptimizerEntry:
    """One Keras 2.2 optimizer: its class in keras.optimizers and its arguments' defaults.

    `defaults` lists the arguments in Keras 2.2's signature order (positional Keras code relies
    on it, and exported code writes them in it) with the values Keras 2.2 used; the training code
    constructs its transcriptions from them, so they are the one source of those numbers.
    """

    keras_class: str
    defaults: dict[str, Any]


# Keyed by Keras's string name (`optimizer='adam'`), which is also the spec's optimizer name.
KERAS_OPTIMIZERS: dict[str, OptimizerEntry] = {
    "sgd": OptimizerEntry("SGD", {"lr": 0.01, "momentum": 0.0, "decay": 0.0, "nesterov": False}),
    "rmsprop": OptimizerEntry("RMSprop", {"lr": 0.001, "rho": 0.9, "epsilon": KERAS_EPSILON, "decay": 0.0}),
    "adagrad": OptimizerEntry("Adagrad", {"lr": 0.01, "epsilon": KERAS_EPSILON, "decay": 0.0}),
    "adadelta": OptimizerEntry("Adadelta", {"lr": 1.0, "rho": 0.95, "epsilon": KERAS_EPSILON, "decay": 0.0}),
    "adam": OptimizerEntry("Adam", {"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": KERAS_EPSILON,
                                    "decay": 0.0, "amsgrad": False}),
    "adamax": OptimizerEntry("Adamax", {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": KERAS_EPSILON,
                                        "decay": 0.0}),
    "nadam": OptimizerEntry("Nadam", {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": KERAS_EPSILON,
                                      "schedule_decay": 0.004, "decay": 0.0}),
}

# Derived lookups: spec name → Keras 2.2's argument defaults, and spec name → Keras class.
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {name: entry.defaults for name, entry in KERAS_OPTIMIZERS.items()}
OPTIMIZER_CLASSES: dict[str, str] = {name: entry.keras_class for name, entry in KERAS_OPTIMIZERS.items()}

# --- initializers ---------------------------------------------------------------------------

# Spec initializer name (also Keras's function name) → Keras class name. Only random_normal
# takes arguments (mean, stddev).
INITIALIZER_CLASSES: dict[str, str] = {
    "glorot_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal",
    "he_normal": "HeNormal",
    "he_uniform": "HeUniform",
    "random_normal": "RandomNormal",
    "zeros": "Zeros",
}
INITIALIZERS: tuple[str, ...] = tuple(INITIALIZER_CLASSES)

# Keras 2's short names for two of them.
INITIALIZER_SHORT_NAMES: dict[str, str] = {"zero": "zeros", "normal": "random_normal"}

# Every spelling Keras code uses, exactly as written (function, class or short name) → spec name.
INITIALIZER_SPELLINGS: dict[str, str] = {
    **{name: name for name in INITIALIZERS},
    **{keras_class: name for name, keras_class in INITIALIZER_CLASSES.items()},
    **INITIALIZER_SHORT_NAMES,
}


def initializer_key(spelling: str) -> str:
    """A spelling with case and underscores dropped: specs accept 'HeNormal', 'he_normal', 'HE_NORMAL'."""
    return spelling.replace("_", "").lower()


# What a spec accepts: any spelling above, whatever its case and underscores → spec name.
INITIALIZER_KEYS: dict[str, str] = {initializer_key(spelling): name for spelling, name in INITIALIZER_SPELLINGS.items()}

# VarianceScaling(scale, mode, distribution) forms of the named initializers.
VARIANCE_SCALING_FORMS: dict[tuple[float, str, str], str] = {
    (1.0, "fan_avg", "uniform"): "glorot_uniform",
    (1.0, "fan_avg", "normal"): "glorot_normal",
    (1.0, "fan_avg", "truncated_normal"): "glorot_normal",
    (2.0, "fan_in", "normal"): "he_normal",
    (2.0, "fan_in", "truncated_normal"): "he_normal",
    (2.0, "fan_in", "uniform"): "he_uniform",
}

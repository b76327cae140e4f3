"""Keras 3 peer: the same architecture trained with `model.fit` on the TensorFlow backend.

Runs in its own virtual environment (benchmarks/setup_env.sh) and never imports mnistlab or
torch: the architecture comes as JSON written by bench_train.py (resolved layers with names,
inputs and Keras arguments; optimizer with Keras 2.2 names and defaults).

This is Keras's normal usage: the images are a float32 numpy array in memory (N, 28, 28, 1) or
(N, 784) scaled to [0, 1], labels one-hot, categorical cross-entropy on the softmax output,
`fit(batch_size=..., shuffle=True, verbose=0)` with accuracy as a metric. jit_compile is left at
Keras's default ("auto", which is off on a CPU-only machine). Epoch times come from a callback;
the first epoch (tf.function tracing, oneDNN primitive creation) is reported but not timed.

    python keras_peer.py --arch model.json --x images.npy --y labels.npy --epochs 2 --threads 2
    python keras_peer.py --arch model.json --check-only      # build, print count_params()
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

RESULT_PREFIX = "RESULT "


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="JSON written by bench_train.py")
    parser.add_argument("--x", help=".npy uint8 images (N, 28, 28)")
    parser.add_argument("--y", help=".npy int labels (N,)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (one untimed warm-up comes first)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-only", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    # Must precede any op: TensorFlow fixes its thread pools when the runtime starts.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    arch = json.loads(open(args.arch).read())
    keras.utils.set_random_seed(args.seed)
    model = build(keras, arch)
    info = {"framework": "keras", "model": arch["id"], "keras_params": int(model.count_params()),
            "tensorflow": tf.__version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")}
    if args.check_only:
        print(f"{arch['id']}: Keras count_params() = {info['keras_params']:,}, "
              f"mnistlab = {arch['total_params']:,}")
        emit(info)
        return 0 if info["keras_params"] == arch["total_params"] else 1

    batch_size = args.batch_size or arch["batch_size"]
    x = np.load(args.x).astype(np.float32) / 255.0
    x = x.reshape((len(x), *arch["input"]))
    y = keras.utils.to_categorical(np.load(args.y), 10).astype(np.float32)
    model.compile(optimizer=optimizer(keras, arch["optimizer"]), loss="categorical_crossentropy",
                  metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    history = model.fit(x, y, batch_size=batch_size, epochs=args.epochs + 1, shuffle=True, verbose=0,
                        callbacks=[timer])
    timed = timer.seconds[1:]
    emit({**info, "images": len(x), "batch_size": batch_size, "jit_compile": str(model.jit_compile),
          "epoch_seconds": timer.seconds, "timed_epochs": len(timed), "timed_seconds": sum(timed),
          "images_per_second": len(x) * len(timed) / sum(timed),
          "per_epoch_images_per_second": [len(x) / s for s in timed],
          "final_loss": float(history.history["loss"][-1]), "final_acc": float(history.history["accuracy"][-1])})
    return 0


def initializer(keras, spec: dict):
    name = spec["name"]
    if name == "random_normal":
        return keras.initializers.RandomNormal(mean=spec.get("mean", 0.0), stddev=spec.get("stddev", 0.05))
    return name  # glorot_uniform, glorot_normal, he_normal, he_uniform, zeros: Keras's own names


def make_layer(keras, name: str, layer: dict):
    L, kind = keras.layers, layer["type"]
    if kind == "Conv2D":
        return L.Conv2D(layer["filters"], tuple(layer["kernel_size"]), strides=tuple(layer["strides"]),
                        padding=layer["padding"], activation=layer["activation"], use_bias=layer["use_bias"],
                        kernel_initializer=initializer(keras, layer["kernel_initializer"]), name=name)
    if kind == "MaxPooling2D":
        strides = tuple(layer["strides"]) if layer.get("strides") else None
        return L.MaxPooling2D(tuple(layer["pool_size"]), strides=strides, padding=layer["padding"], name=name)
    if kind == "Dense":
        return L.Dense(layer["units"], activation=layer["activation"], use_bias=layer["use_bias"],
                       kernel_initializer=initializer(keras, layer["kernel_initializer"]), name=name)
    if kind == "BatchNormalization":
        return L.BatchNormalization(momentum=layer["momentum"], epsilon=layer["epsilon"], name=name)
    if kind == "Dropout":
        return L.Dropout(layer["rate"], name=name)
    if kind == "Flatten":
        return L.Flatten(name=name)
    if kind == "Activation":
        return L.Activation(layer["activation"], name=name)
    if kind == "Concatenate":
        return L.Concatenate(axis=layer["axis"], name=name)
    raise ValueError(f"no Keras translation for layer type {kind!r}")


def build(keras, arch: dict):
    """The functional-API model of the resolved nodes (a chain or a graph alike)."""
    values = {"input": keras.Input(shape=tuple(arch["input"]), name="input")}
    for node in arch["nodes"]:
        inputs = [values[name] for name in node["inputs"]]
        layer = make_layer(keras, node["name"], node["layer"])
        values[node["name"]] = layer(inputs if len(inputs) > 1 else inputs[0])
        expected = tuple(node["output_shape"])
        got = tuple(values[node["name"]].shape[1:])
        if got != expected:
            raise AssertionError(f"{arch['id']}: layer {node['name']}: Keras output shape {got}, mnistlab {expected}")
    return keras.Model(values["input"], values[arch["nodes"][-1]["name"]], name=arch["id"].replace("-", "_"))


def optimizer(keras, spec: dict):
    """Keras 3 optimizer with Keras 2.2's hyperparameters (lr spelled learning_rate)."""
    name, a = spec["name"], dict(spec["args"])
    if a.get("decay"):
        raise ValueError(f"{name}: decay={a['decay']} has no Keras 3 equivalent here")
    O, lr = keras.optimizers, a["lr"]
    if name == "adam":
        return O.Adam(learning_rate=lr, beta_1=a["beta_1"], beta_2=a["beta_2"], epsilon=a["epsilon"], amsgrad=a["amsgrad"])
    if name == "adadelta":  # Keras 3 defaults to learning_rate 0.001; Keras 2.2 used 1.0
        return O.Adadelta(learning_rate=lr, rho=a["rho"], epsilon=a["epsilon"])
    if name == "sgd":
        return O.SGD(learning_rate=lr, momentum=a["momentum"], nesterov=a["nesterov"])
    if name == "rmsprop":
        return O.RMSprop(learning_rate=lr, rho=a["rho"], epsilon=a["epsilon"])
    if name == "adagrad":
        return O.Adagrad(learning_rate=lr, epsilon=a["epsilon"], initial_accumulator_value=0.0)
    if name == "adamax":
        return O.Adamax(learning_rate=lr, beta_1=a["beta_1"], beta_2=a["beta_2"], epsilon=a["epsilon"])
    if name == "nadam":
        return O.Nadam(learning_rate=lr, beta_1=a["beta_1"], beta_2=a["beta_2"], epsilon=a["epsilon"])
    raise ValueError(f"no Keras translation for optimizer {name!r}")


if __name__ == "__main__":
    sys.exit(main())

"""Keras code in: the seed notebooks' model code imports to the zoo's models, and what cannot be
translated is listed with its line and skipped, never guessed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cli_driver import run_cli
from mnistlab import api
from mnistlab.interop.spec_yaml import specs_yaml
from mnistlab.spec.model import INPUT_NAME, ModelSpec, resolve
from mnistlab.spec.parse import load_spec_file
from mnistlab.spec.summary import summary_data
from mnistlab.zoo import zoo_models

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
SEED_FIXTURES = {"seed_000.py": "s000", "seed_001.py": "s001", "seed_002.py": "s002", "seed_003.py": "s003",
                 "seed_004.py": "s004"}


def _rows(spec: ModelSpec) -> list[tuple[str, list[Any], int]]:
    """The summary layer by layer, without names: (type, output shape, parameters)."""
    return [(row["type"], row["output_shape"], row["params"]) for row in summary_data(spec)["layers"]]


def _graph(spec: ModelSpec) -> tuple[Any, ...]:
    """The model as a graph, independent of layer names and of the order the layers are listed in:
    each node is its layer's configuration, output shape, parameters and its inputs' nodes (in order)."""
    resolved = resolve(spec)
    nodes = {node.name: node for node in resolved.nodes}

    def canonical(name: str) -> tuple[Any, ...]:
        if name == INPUT_NAME:
            return ("input", tuple(spec.input))
        node = nodes[name]
        config = node.layer.model_dump(exclude={"name", "inputs"})
        return (json.dumps(config, sort_keys=True), node.output_shape, node.params, tuple(canonical(i) for i in node.inputs))

    return canonical(resolved.nodes[-1].name)


def _configs(spec: ModelSpec) -> list[dict[str, Any]]:
    return [layer.model_dump(exclude={"name", "inputs"}) for layer in spec.layers]


def _zoo(prefix: str) -> list[ModelSpec]:
    return [spec for model_id, spec in zoo_models().items() if model_id.startswith(prefix + "-")]


@pytest.mark.parametrize("fixture", sorted(SEED_FIXTURES))
def test_seed_notebook_code_imports_to_the_zoo_models(fixture: str) -> None:
    result = api.import_keras(FIXTURES / fixture)
    assert result.skipped == []
    expected = _zoo(SEED_FIXTURES[fixture])
    assert len(result.specs) == len(expected)
    for imported, zoo in zip(result.specs, expected):
        assert imported.input == zoo.input, zoo.id
        assert imported.training == zoo.training, zoo.id
        ours, theirs = summary_data(imported), summary_data(zoo)
        assert [ours[k] for k in ("total_params", "trainable_params", "non_trainable_params")] == \
               [theirs[k] for k in ("total_params", "trainable_params", "non_trainable_params")], zoo.id
        if resolve(zoo).is_graph:
            # s002-m10: the zoo lists the layers in the printed summary's order, where Keras printed
            # layer_4's 1x1 conv (conv2d_49) before layer_1..layer_3 (see its `decisions:`); the code
            # defines them in the order layer_1..layer_4. Same graph, rows in another order: the
            # graphs are compared node by node through their connections, and the rows as multisets.
            assert _graph(imported) == _graph(zoo), zoo.id
            assert sorted(map(repr, _rows(imported))) == sorted(map(repr, _rows(zoo))), zoo.id
        else:
            assert _rows(imported) == _rows(zoo), zoo.id
            assert _configs(imported) == _configs(zoo), zoo.id  # activations and initializers too


def test_reused_variable_names_are_told_apart_by_line() -> None:
    ids = [spec.id for spec in api.import_keras(FIXTURES / "seed_002.py").specs]
    assert len(set(ids)) == 10 and all(i.startswith("model-line") for i in ids)
    assert [spec.id for spec in api.import_keras(FIXTURES / "seed_003.py").specs] == ["model3", "model5", "model7"]


def test_the_seed_004_code_as_ocrd_is_not_what_ran(tmp_path: Path) -> None:
    """Where the zoo follows the printed summary over the OCR'd code (s004-m3, m5, m6), the fixture
    is written as the summary; the literal OCR'd code is refused (m3) or differs from the zoo (m5, m6)."""
    text = (FIXTURES / "seed_004.py").read_text()
    zoo = {spec.id: spec for spec in _zoo("s004")}
    dense10 = "model_relu.add(Dense(output_dim, activation='softmax'))\n"
    m3 = text.replace(dense10 + "# SUMMARY WINS (zoo s004-m3)", dense10 + dense10 + "# (zoo s004-m3)")
    bn_m5 = "model_batch.add(BatchNormalization())\n\nmodel_batch.add(Dense(128"
    dense128 = "model_batch.add(Dense(128, activation='relu', kernel_initializer=RandomNormal(mean=0.0, stddev=0.55, seed=None)))\n"
    m5 = text.replace(bn_m5, dense128 + "\nmodel_batch.add(Dense(128", 1)
    m6 = text.replace("model_drop.add(BatchNormalization())\nmodel_drop.add(Dropout(0.5))\n\nmodel_drop.add(Dense(output_dim",
                      "model_drop.add(Dropout(0.5))\nmodel_drop.add(Dropout(0.5))\n\nmodel_drop.add(Dense(output_dim", 1)
    assert len({text, m3, m5, m6}) == 4
    results = {}
    for name, variant in (("m3", m3), ("m5", m5), ("m6", m6)):
        results[name] = api.import_keras(_write(tmp_path / f"{name}.py", variant))
    (skipped,) = results["m3"].skipped
    assert "softmax must be the last layer's activation" in str(skipped)
    first_softmax = m3[: m3.index("# (zoo s004-m3)")].count("\n") - 1  # the first of the two softmax lines
    assert skipped.problems[0].startswith(f"line {first_softmax}:")
    assert len(results["m3"].specs) == 8
    m5_spec = results["m5"].specs[4]
    assert _rows(m5_spec) != _rows(zoo["s004-m5"])
    assert summary_data(m5_spec)["total_params"] != 571_018
    m6_spec = results["m6"].specs[6]
    assert _rows(m6_spec) != _rows(zoo["s004-m7"])  # m6 in the notebook's order is s004-m7 in the zoo
    assert summary_data(zoo["s004-m7"])["total_params"] == 219_338


# --- spellings and styles -----------------------------------------------------------------------


def _import(tmp_path: Path, code: str, name: str = "models.py") -> Any:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return api.import_keras(path)


def test_functional_api_with_tf_keras_spellings_and_names(tmp_path: Path) -> None:
    result = _import(tmp_path, """
        import tensorflow as tf
        from tensorflow.keras import layers
        inputs = tf.keras.Input(shape=(28, 28, 1))
        a = layers.Conv2D(8, 3, padding='same', activation='relu')(inputs)
        b = tf.keras.layers.Conv2D(8, (5, 5), padding='same', activation='relu')(inputs)
        x = layers.concatenate([a, b], axis=3)
        x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)
        outputs = layers.Dense(10, activation=tf.nn.softmax)(x)
        net = tf.keras.Model(inputs=inputs, outputs=outputs, name='two-towers')
        net.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.1, momentum=0.9), loss='categorical_crossentropy')
        net.fit(x_train, y_train, batch_size=64, epochs=3)
    """)
    (spec,) = result.specs
    assert spec.id == "two-towers"
    assert spec.training.optimizer.to_yaml_value() == {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    assert (spec.training.batch_size, spec.training.epochs) == (64, 3)
    rows = _rows(spec)
    assert rows[0] == ("InputLayer", [None, 28, 28, 1], 0)
    assert ("Concatenate", [None, 28, 28, 16], 0) in rows
    assert rows[-1] == ("Dense", [None, 10], 14 * 14 * 16 * 10 + 10)
    concat = next(layer for layer in spec.layers if layer.type == "Concatenate")
    assert concat.axis == 2  # Keras's axis 3 counts the batch axis


def test_sequential_list_bare_names_strings_and_lr(tmp_path: Path) -> None:
    result = _import(tmp_path, """
        from keras.models import Sequential
        from keras.layers import *
        from keras import optimizers
        num_classes = 10
        hidden = (64, 32)
        model = Sequential([
            Dense(hidden[0], input_dim=784, activation='relu', kernel_initializer='he_normal'),
            Dropout(rate=0.2),
            Dense(hidden[1]),
            Activation('tanh'),
            Dense(num_classes, activation='softmax'),
        ])
        model.compile(optimizer=optimizers.Adam(lr=0.0005), loss='categorical_crossentropy', metrics=['accuracy'])
        model.fit(x, y, batch_size=256, epochs=5)
        other = Sequential(name='plain')
        other.add(Flatten(input_shape=(28, 28, 1)))
        other.add(Dense(10, activation='softmax'))
        other.compile('adadelta', 'categorical_crossentropy')
    """)
    first, second = result.specs
    assert first.id == "model" and first.input == (784,)
    assert [layer.type for layer in first.layers] == ["Dense", "Dropout", "Dense", "Activation", "Dense"]
    assert first.training.optimizer.to_yaml_value() == {"name": "adam", "lr": 0.0005}
    assert second.id == "plain" and second.training.optimizer.name == "adadelta"
    assert (second.training.batch_size, second.training.epochs) == (128, 12)  # never fit: mnistlab's defaults
    assert any("never fit" in d for d in second.decisions)
    assert any("Keras 2.2's default" in d for d in second.decisions)  # adadelta's lr 1.0, said out loud


def test_optimizer_defaults_follow_the_keras_that_runs_the_code(tmp_path: Path) -> None:
    code = """
        from {module} import Sequential, layers, optimizers
        model = Sequential([layers.Dense(10, activation='softmax', input_shape=(784,))])
        model.compile(optimizer=optimizers.Adadelta(), loss='categorical_crossentropy')
    """
    (keras22,) = _import(tmp_path, code.format(module="keras"), "a.py").specs
    (tf_keras,) = _import(tmp_path, code.format(module="tensorflow.keras"), "b.py").specs
    assert keras22.training.optimizer.to_yaml_value() == "adadelta"  # Keras 2.2: lr 1.0
    assert tf_keras.training.optimizer.to_yaml_value() == {"name": "adadelta", "lr": 0.001}
    (explicit,) = _import(tmp_path, code.format(module="keras").replace("Adadelta()", "Adadelta(learning_rate=1.0, rho=0.95)"),
                          "c.py").specs
    assert explicit.training.optimizer.to_yaml_value() == "adadelta"  # Keras 2.2's defaults, written out


def test_untranslatable_models_are_listed_with_their_lines_and_skipped(tmp_path: Path) -> None:
    result = _import(tmp_path, """
        import numpy as np
        import keras
        from keras import layers
        good = keras.Sequential([layers.Dense(10, activation='softmax', input_shape=(784,))])
        bad = keras.Sequential()
        bad.add(layers.Dense(64, activation='elu', input_shape=(784,)))
        bad.add(layers.Dense(10, activation='softmax', kernel_regularizer=keras.regularizers.l2(0.01)))
        width = np.random.randint(10, 100)
        worse = keras.Sequential([layers.Dense(width, input_shape=(784,)), layers.Dense(10, activation='softmax')])
        aug = keras.Sequential([layers.Dense(10, activation='softmax', input_shape=(784,))])
        aug.compile('adam', 'categorical_crossentropy')
        aug.fit(x, y, callbacks=[keras.callbacks.LearningRateScheduler(lambda e: 0.1)])
        for units in (32, 64):
            looped = keras.Sequential([layers.Dense(units, input_shape=(784,)), layers.Dense(10, activation='softmax')])
    """)
    assert [spec.id for spec in result.specs] == ["good"]
    skipped = {item.model: item for item in result.skipped}
    assert set(skipped) == {"bad", "worse", "aug", "looped"}
    assert skipped["bad"].where == "line 6"
    assert any(p.startswith("line 7:") and "elu" in p for p in skipped["bad"].problems)
    assert any(p.startswith("line 8:") and "kernel_regularizer" in p for p in skipped["bad"].problems)
    assert any(p.startswith("line 9:") for p in skipped["worse"].problems)  # where `width` came from
    assert any(p.startswith("line 13:") and "callback" in p for p in skipped["aug"].problems)
    assert skipped["looped"].problems[0].startswith("line 15:")


def test_numpy_concatenate_is_not_a_keras_layer(tmp_path: Path) -> None:
    result = _import(tmp_path, """
        import numpy as np
        from keras.layers import Input, Dense, Flatten
        from keras.models import Model
        x = Input(shape=(28, 28, 1))
        y = np.concatenate([x, x])
        out = Dense(10, activation='softmax')(Flatten()(y))
        model = Model(x, out)
    """)
    assert result.specs == []
    assert "line 6" in str(result.skipped[0])


def test_notebook_cells_and_magics(tmp_path: Path) -> None:
    cells = [
        {"cell_type": "markdown", "source": ["# A model\n"]},
        {"cell_type": "code", "source": ["%matplotlib inline\n", "!pip install keras\n", "import keras\n",
                                         "from keras import layers\n", "input_shape = (28, 28, 1)\n"]},
        {"cell_type": "code", "source": ["model = keras.Sequential()\n",
                                         "model.add(layers.Conv2D(4, 3, input_shape=input_shape))\n",
                                         "model.add(layers.Flatten())\n",
                                         "model.add(layers.Dense(10, activation='softmax'))\n"]},
        {"cell_type": "code", "source": "model.compile(optimizer='adam', loss='categorical_crossentropy')\n"
                                        "model.fit(x, y, batch_size=32, epochs=2)\n"},
        {"cell_type": "code", "source": ["model = keras.Sequential()\n", "model.add(layers.Dense(10, input_shape=(5,), activation='gelu'))\n"]},
    ]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    result = api.import_keras(path)
    (spec,) = result.specs
    assert spec.id == "model-cell3-line1"
    assert (spec.training.batch_size, spec.training.epochs) == (32, 2)
    (skipped,) = result.skipped
    assert skipped.model == "model-cell5-line1" and "cell 5 line 2" in skipped.problems[0]


def test_written_yaml_reads_back_to_the_same_specs(tmp_path: Path) -> None:
    for fixture in SEED_FIXTURES:
        result = api.import_keras(FIXTURES / fixture)
        path = tmp_path / f"{fixture}.yaml"
        path.write_text(specs_yaml(result))
        back = load_spec_file(path)
        assert [s.to_dict() for s in back] == [s.to_dict() for s in result.specs]


# --- the command ------------------------------------------------------------------------------


def test_cli_prints_or_writes_specs(tmp_path: Path) -> None:
    code, out, err = run_cli("import-keras", FIXTURES / "seed_003.py")
    assert code == 0 and err == ""
    assert [s.id for s in load_spec_file(_write(tmp_path / "out.yaml", out))] == ["model3", "model5", "model7"]
    target = tmp_path / "specs.yaml"
    code, out, _ = run_cli("import-keras", FIXTURES / "seed_001.py", "--output", target)
    assert code == 0 and "wrote 4 model(s)" in out
    code, out, _ = run_cli("summary", f"{target}:model4")
    assert code == 0 and "1,358,858" in out


def test_cli_exit_2_when_nothing_translates(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.py", "import keras\nm = keras.Sequential([keras.layers.Dense(10, activation='selu', input_shape=(4,))])\n")
    code, out, err = run_cli("import-keras", path)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("skipped: line 2: model 'm' skipped: line 2: activation 'selu'")
    assert lines[-1] == f"error: {path}: no model could be translated (1 skipped, listed above)"
    code, _, err = run_cli("import-keras", _write(tmp_path / "broken.py", "model = (\n"))
    assert code == 2 and "broken.py:1: not valid Python" in err
    code, _, err = run_cli("import-keras", tmp_path / "missing.py")
    assert code == 2 and "no such file" in err


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_models_changed_where_the_importer_cannot_follow_are_skipped(tmp_path: Path) -> None:
    result = _import(tmp_path, """
        import sys
        from keras.models import Sequential
        from keras.layers import Dense, GlobalAveragePooling2D, BatchNormalization
        a = Sequential([Dense(10, activation='softmax', input_shape=(784,))])
        if len(sys.argv) > 1:
            a.add(BatchNormalization())
        b = Sequential([Dense(10, activation='softmax', input_shape=(784,))])
        def grow():
            b.add(Dense(10, activation='softmax'))
        grow()
        c = Sequential([Dense(10, activation='softmax', input_shape=(784,))])
        c.load_weights('c.h5')
        d = Sequential([GlobalAveragePooling2D(input_shape=(28, 28, 1)), Dense(10, activation='softmax')])
    """)
    assert [spec.id for spec in result.specs] == ["c"]
    problems = {item.model: " ".join(item.problems) for item in result.skipped}
    assert "line 7: 'a' is used under a condition that is not known" in problems["a"]
    assert "line 11: 'grow' (defined in the file, not read) uses 'b'" in problems["b"]
    assert "line 14: Keras layer GlobalAveragePooling2D is not supported" in problems["d"]


def test_input_shapes_that_cannot_be_used(tmp_path: Path) -> None:
    result = _import(tmp_path, """
        from keras.models import Sequential
        from keras.layers import Conv2D, Dense, Flatten
        first = Sequential([Conv2D(8, 3, input_shape=(1, 28, 28)), Flatten(), Dense(10, activation='softmax')])
        none = Sequential([Flatten(), Dense(10, activation='softmax')])
        fitted = Sequential([Flatten(), Dense(10, activation='softmax')])
        fitted.compile('sgd', 'categorical_crossentropy')
        fitted.fit(x, y)
    """)
    problems = {item.model: item.problems for item in result.skipped}
    assert problems["first"] == ("line 4: input shape (1, 28, 28) is channels-first; mnistlab models are channels-last (H, W, C)",)
    assert problems["none"] == ("line 5: no input shape (give the first layer input_shape=...)",)
    assert problems["fitted"] == ("line 6: no input shape (give the first layer input_shape=...)",)  # x is not known


def test_input_shape_from_the_data_given_to_fit(tmp_path: Path) -> None:
    (spec,) = _import(tmp_path, """
        import keras
        (x_train, y_train), _ = keras.datasets.mnist.load_data()
        x_train = x_train.reshape(-1, 784) / 255.0
        model = keras.Sequential([keras.layers.Dense(10, activation='softmax')])
        model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')
        model.fit(x_train, y_train, epochs=2)
    """).specs
    assert spec.input == (784,) and (spec.training.batch_size, spec.training.epochs) == (32, 2)  # Keras's fit() defaults
    assert any("taken from the data given to fit()" in d for d in spec.decisions)

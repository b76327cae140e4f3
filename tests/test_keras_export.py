"""Keras code out: every zoo model exports to Keras code that imports back to the same spec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cli_driver import run_cli
from mnistlab import api
from mnistlab.spec import ModelSpec, resolve
from mnistlab.zoo import zoo_models


def _normalized(spec: ModelSpec) -> tuple:
    """A spec up to its id and prose: input, training, and each placed layer (name, config, inputs)."""
    nodes = [(n.name, n.layer.model_dump(exclude={"name", "inputs"}), n.inputs) for n in resolve(spec).nodes]
    return spec.input, spec.training, nodes


@pytest.mark.parametrize("model_id", list(zoo_models()))
def test_export_then_import_gives_the_same_spec(model_id: str, tmp_path: Path) -> None:
    spec = zoo_models()[model_id]
    code = api.export_keras(model_id)
    ast.parse(code)
    path = tmp_path / "exported.py"
    path.write_text(code)
    result = api.import_keras(path)
    assert result.skipped == []
    (back,) = result.specs
    assert back.id == model_id
    assert _normalized(back) == _normalized(spec)


def test_keras_22_defaults_are_written_out() -> None:
    code = api.export_keras("s000-m5")  # Adadelta, BatchNormalization, glorot_uniform
    assert "optimizers.Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-07)" in code
    assert "layers.BatchNormalization(axis=-1, momentum=0.99, epsilon=0.001)" in code
    assert "kernel_initializer=initializers.GlorotUniform(), bias_initializer=initializers.Zeros()" in code
    assert "initializers.RandomNormal(mean=0.0, stddev=0.039)" in api.export_keras("s004-m4")
    assert "initializers.HeNormal()" in api.export_keras("s001-m4")


def test_non_default_optimizer_arguments_round_trip(tmp_path: Path) -> None:
    for optimizer in ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "decay": 1e-4},
                      {"name": "adagrad", "learning_rate": 0.05}, {"name": "rmsprop", "rho": 0.8},
                      {"name": "nadam", "lr": 0.001}):
        spec = api.model_spec("s004-m1").with_training(optimizer=optimizer)
        path = tmp_path / "m.py"
        path.write_text(api.export_keras(spec))
        (back,) = api.import_keras(path).specs
        expected = {("lr" if k == "learning_rate" else k): v for k, v in optimizer.items()}
        assert back.training.optimizer.to_yaml_value() == expected


def test_cli_prints_the_code() -> None:
    code, out, err = run_cli("export-keras", "s002-m10")
    assert code == 0 and err == ""
    assert "keras.Model(inputs=x_inputs, outputs=output_layer, name='s002-m10')" in out
    code, _, err = run_cli("export-keras", "s999-m1")
    assert code == 2 and "unknown model 's999-m1'" in err

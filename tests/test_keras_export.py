"""Keras code out: every zoo model exports to Keras code that imports back to the same spec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cli_driver import run_cli
from mnistlab import api
from mnistlab.spec.model import ModelSpec, resolve
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


# --- hostile strings: the generated script is code a user runs, so names must stay data -----------

# Each would run `touch PWNED` if pasted between quotes or into the docstring unescaped.
PAYLOAD = '__import__("os").system("touch PWNED")'
HOSTILE_NAMES = [f'x" if {PAYLOAD} else "x', f"x' if {PAYLOAD} else 'x", f'x"""; {PAYLOAD}; """x',
                 f"x\\\n{PAYLOAD}", f"x\n{PAYLOAD}\n", "\\N{", "x\\", "²"]
HOSTILE_ID = f'm"""\n{PAYLOAD}\n"""'

# A stand-in for keras: every attribute, call and operation gives another stand-in, so the
# generated script runs end to end (model, compile, fit, evaluate) without Keras.
KERAS_STUB = '''
class _Stub:
    def __init__(self, *args, **kwargs): pass
    def __getattr__(self, name): return _Stub()
    def __call__(self, *args, **kwargs): return _Stub()
    def __iter__(self): return iter((_Stub(), _Stub()))
    def __truediv__(self, other): return _Stub()
    def __format__(self, spec): return "0"

def __getattr__(name):
    return _Stub()
'''


def _run_generated(code: str, tmp_path: Path) -> None:
    """Run the exported script with keras stubbed, in a fresh folder: it must run, and do nothing else."""
    import subprocess
    import sys

    ast.parse(code)
    folder = tmp_path / "run"
    (folder / "keras").mkdir(parents=True)
    (folder / "keras" / "__init__.py").write_text(KERAS_STUB)
    (folder / "script.py").write_text(code)
    done = subprocess.run([sys.executable, "script.py"], cwd=folder, env={"PYTHONPATH": str(folder)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["keras", "script.py"], "the generated script ran user code"


def _hostile_spec(graph: bool) -> dict:
    names = HOSTILE_NAMES
    layers = [{"type": "Dense", "units": 4, "activation": "relu", "name": name} for name in names[:-1]]
    if graph:
        for layer, source in zip(layers, ["input", *names[:-2]]):
            layer["inputs"] = [source]
    last = {"type": "Dense", "units": 10, "activation": "softmax", "name": names[-1]}
    if graph:
        last["inputs"] = [names[-2]]
    return {"id": HOSTILE_ID, "description": f'"""\n{PAYLOAD}\n"""\\', "input": [784], "layers": [*layers, last]}


@pytest.mark.parametrize("graph", [False, True], ids=["sequential", "functional"])
def test_hostile_names_from_python_never_run(graph: bool, tmp_path: Path) -> None:
    code = api.export_keras(_hostile_spec(graph))
    _run_generated(code, tmp_path)
    for name in HOSTILE_NAMES:
        assert repr(name) in code  # quoted by Python itself


def test_hostile_names_from_yaml_never_run(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(_hostile_spec(graph=True)))
    code, out, err = run_cli("export-keras", path)
    assert code == 0, err
    _run_generated(out, tmp_path)


def test_hostile_names_through_import_keras_never_run(tmp_path: Path) -> None:
    import json

    name = HOSTILE_NAMES[0]
    source = ("import keras\nfrom keras import layers\n"
              f"model = keras.Sequential(name={HOSTILE_ID!r})\n"
              f"model.add(layers.Dense(10, input_shape=(784,), activation='softmax', name={name!r}))\n")
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": source}], "metadata": {},
                                    "nbformat": 4, "nbformat_minor": 5}))
    code, _, err = run_cli("import-keras", notebook, "--output", tmp_path / "specs.yaml")
    assert code == 0, err
    code, out, err = run_cli("export-keras", tmp_path / "specs.yaml")
    assert code == 0, err
    _run_generated(out, tmp_path)
    assert repr(name) in out


def test_structure_check_refuses_code_that_differs_from_the_placeholder_spec(monkeypatch) -> None:
    from mnistlab.interop import keras_code_out as keras_export
    from mnistlab.errors import MnistlabError

    real = keras_export._render
    monkeypatch.setattr(keras_export, "_render", lambda spec: real(spec) + (
        "import os\n" if spec.id != "model" else ""))  # as if a user string had smuggled in a statement
    with pytest.raises(MnistlabError, match="structure"):
        keras_export.export_keras_code(api.model_spec("s004-m1"))


def test_the_reported_layer_name_never_runs(tmp_path: Path) -> None:
    # The case: with the name pasted between "…" the script compiled and ran os.system.
    spec = {"id": "m", "input": [784], "layers": [
        {"type": "Dense", "units": 10, "activation": "softmax", "name": HOSTILE_NAMES[0]}]}
    _run_generated(api.export_keras(spec), tmp_path)

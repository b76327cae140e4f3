"""Keras weights in: HDF5 files written by real Keras (tests/fixtures/keras_weights/make_fixtures.py)
load into the PyTorch model and give the probabilities Keras computed, within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")

from cli_driver import run_cli  # noqa: E402
from mnistlab import api
from mnistlab.interop import keras_weights# noqa: E402
from mnistlab.nn.build import prepare_input  # noqa: E402
from mnistlab.spec.model import resolve  # noqa: E402
from mnistlab.spec.parse import load_spec_file  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "keras_weights"
# cnn_same: 'same' convs 3x3/2, 4x4/2 (even kernel, strided), 2x2/2 with the odd pixel padded
# bottom/right, BatchNormalization on channels, a 3x3 'same' pool, Flatten -> Dense; saved with
# save_weights. towers: a functional graph (two towers concatenated), BatchNormalization on the
# flattened features, Dense; saved with model.save (weights under 'model_weights').
MODELS = ("cnn_same", "towers")


def _probabilities(network: torch.nn.Module, name: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(FIXTURES / f"{name}.npz")
    spec = load_spec_file(FIXTURES / f"{name}.yaml")[0]
    with torch.no_grad():
        logits = network(prepare_input(torch.from_numpy(data["inputs"]), spec.input))
    return torch.softmax(logits, dim=1).numpy(), data["outputs"]


@pytest.mark.parametrize("name", MODELS)
def test_keras_weights_give_kerass_outputs(name: str) -> None:
    network = api.load_keras_weights(str(FIXTURES / f"{name}.yaml"), FIXTURES / f"{name}.h5")
    ours, keras = _probabilities(network, name)
    assert np.abs(ours - keras).max() < 1e-4
    assert (ours.argmax(1) == keras.argmax(1)).all()


@pytest.mark.parametrize("name", MODELS)
def test_the_flatten_order_matters(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without reordering the features after Flatten from (H, W, C) to (C, H, W) the outputs differ:
    the fixtures check the permutation, not only the kernel transposes."""
    monkeypatch.setattr(keras_weights, "_feature_orders",
                        lambda spec: {n: None for n in ["input", *(node.name for node in resolve(spec).nodes)]})
    network = api.load_keras_weights(str(FIXTURES / f"{name}.yaml"), FIXTURES / f"{name}.h5")
    ours, keras = _probabilities(network, name)
    assert np.abs(ours - keras).max() > 1e-2


def test_cli_writes_a_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "from-keras"
    code, out, err = run_cli("import-keras-weights", FIXTURES / "cnn_same.yaml", FIXTURES / "cnn_same.h5", "--output", folder)
    assert code == 0 and "wrote model folder" in out and err == ""
    info = json.loads((folder / "model.json").read_text())
    assert info["format"] == "mnistlab-model" and info["spec"]["id"] == "cnn-same"
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    assert tensors["conv2d_1.weight"].shape == (4, 1, 3, 3)  # (out, in, H, W)
    assert tensors["dense_1.weight"].shape == (12, 80)  # (out, in)
    assert {"batch_normalization_1.running_mean", "batch_normalization_1.running_var"} <= set(tensors)


def test_mismatched_weights_are_one_line(tmp_path: Path) -> None:
    code, _, err = run_cli("import-keras-weights", "s000-m1", FIXTURES / "cnn_same.h5", "--output", tmp_path / "x")
    assert code == 2 and "holds 6 layers with weights; model 's000-m1' has 3" in err
    assert not (tmp_path / "x").exists()
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    code, _, err = run_cli("import-keras-weights", "s000-m1", tmp_path / "bad.h5", "--output", tmp_path / "y")
    assert code == 2 and "bad.h5: not a readable HDF5 file" in err and len(err.strip().splitlines()) == 1

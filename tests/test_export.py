"""Exported models (ONNX, torch.export .pt2, safetensors) compute what the PyTorch model does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mnistlab import api
from mnistlab.nn.build import build_model
from mnistlab.data.synthetic import SYNTHETIC_INFO, synthetic_dataset
from mnistlab.errors import MnistlabError
from mnistlab.trained.folder import TrainedModel, load_layer_state, load_model_folder, save_model

from cli_driver import run_cli
from conftest import TINY_CNN

TOLERANCE = 1e-4


def keras_images(model: TrainedModel, images: torch.Tensor) -> np.ndarray:
    """uint8 [N, 28, 28] → float32 in [0, 1] in the layout exported models take."""
    return (images.numpy().astype(np.float32) / 255).reshape(len(images), *model.input_shape)


def assert_onnx_matches(model: TrainedModel, onnx_path: Path, images: np.ndarray) -> None:
    """Same predicted class wherever PyTorch's top two probabilities differ by more than 1e-4,
    and every probability within 1e-4, at several batch sizes (the batch is dynamic)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    [given] = session.get_inputs()
    assert given.name == "images" and given.shape[1:] == list(model.input_shape) and isinstance(given.shape[0], str)
    with torch.inference_mode():
        expected = model(torch.from_numpy(images)).numpy()
    for batch in (1, 7, len(images)):
        got = np.concatenate([session.run(None, {"images": images[i : i + batch]})[0]
                              for i in range(0, len(images), batch)])
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOLERANCE
        ordered = np.sort(expected, axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > TOLERANCE
        assert clear.sum() > 0.9 * len(images)
        assert np.array_equal(got.argmax(1)[clear], expected.argmax(1)[clear])


@pytest.fixture(scope="module")
def synthetic_1000():
    return synthetic_dataset(n_train=600, n_test=1000, seed=3)


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory, synthetic_1000) -> TrainedModel:
    """The tiny CNN (Conv2D, MaxPooling2D, Dropout, Dense, BatchNormalization) trained 2 epochs."""
    import yaml

    out = tmp_path_factory.mktemp("cnn")
    api.train(yaml.safe_load(TINY_CNN), dataset=synthetic_1000, epochs=2, out_dir=out, device="cpu")
    return api.load_model(out)


def untrained(spec_id: str, folder: Path) -> TrainedModel:
    """A zoo model with its initial weights, kept and loaded as a trained one would be."""
    save_model(folder, build_model(api.model_spec(spec_id), seed=0), SYNTHETIC_INFO, 0, {})
    return load_model_folder(folder)


def test_onnx_matches_pytorch_on_1000_synthetic_images(trained_cnn, synthetic_1000, tmp_path):
    path = api.export_model(trained_cnn, tmp_path / "cnn.onnx", "onnx")
    assert_onnx_matches(trained_cnn, path, keras_images(trained_cnn, synthetic_1000.test_images))
    # It learnt something: chance is 0.1, and 0.15 is 5 binomial sd above it on 1,000 images. Measured
    # 0.235 after 2 epochs on 600 images, mid-way up a steep learning curve, so the bound sits well below
    # it (0.2 left 3.5 points to a CPU that rounds differently; tests/README.md).
    assert api.evaluate(trained_cnn, synthetic_1000).accuracy > 0.15


@pytest.mark.parametrize("spec_id", ["s004-m1", "s002-m10"])  # an MLP ([N, 784]); the inception-style graph
def test_onnx_matches_pytorch_for_an_mlp_and_a_graph(spec_id, synthetic_1000, tmp_path):
    model = untrained(spec_id, tmp_path / "model")
    path = api.export_model(model, tmp_path / f"{spec_id}.onnx", "onnx")
    assert_onnx_matches(model, path, keras_images(model, synthetic_1000.test_images[:200]))


def test_onnx_file_carries_its_input_convention(trained_cnn, tmp_path):
    onnx = pytest.importorskip("onnx")
    path = api.export_model(trained_cnn, tmp_path / "m.onnx", "onnx")
    properties = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert properties["input"].startswith("float32 in [0, 1], shape [N, 28, 28, 1]")
    assert json.loads(properties["class_names"]) == [str(d) for d in range(10)]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # an ordinary file, not a private temp file


@pytest.mark.parametrize("spec_id", ["tiny", "s004-m1"])
def test_pt2_round_trip(spec_id, trained_cnn, synthetic_1000, tmp_path):
    model = trained_cnn if spec_id == "tiny" else untrained(spec_id, tmp_path / "model")
    result = run_cli("export", model.source, "--format", "pt2", "--output", tmp_path / "m.pt2")
    assert result.exit_code == 0, result.stderr
    assert "input: float32 in [0, 1]" in result.stdout
    extra = {"mnistlab.json": ""}
    program = torch.export.load(tmp_path / "m.pt2", extra_files=extra)
    assert json.loads(extra["mnistlab.json"])["model"] == model.spec.id
    loaded = program.module()
    for batch in (1, 5, 300):
        images = torch.from_numpy(keras_images(model, synthetic_1000.test_images[:batch]))
        with torch.inference_mode():
            assert torch.allclose(loaded(images), model(images), atol=1e-6)


def test_safetensors_export_is_the_state_with_its_layout(trained_cnn, synthetic_1000, tmp_path):
    path = api.export_model(trained_cnn, tmp_path / "m.safetensors", "safetensors")
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["input"] == "float32 in [0, 1], shape [N, 28, 28, 1] (NHWC), N dynamic"
    assert meta["model"] == "tiny-cnn" and json.loads(meta["spec"]) == trained_cnn.spec.to_dict()
    network = build_model(api.model_spec(json.loads(meta["spec"])), seed=99)
    load_layer_state(network, load_file(path), path)
    rebuilt = TrainedModel(network, trained_cnn.info)
    images = torch.from_numpy(keras_images(trained_cnn, synthetic_1000.test_images[:50]))
    assert torch.equal(rebuilt(images), trained_cnn(images))


def test_missing_onnx_extra_is_one_line_and_exit_1(trained_cnn, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    result = run_cli("export", trained_cnn.source, "--format", "onnx", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 1 and len(result.error_lines) == 1
    assert "pip install 'mnistlab[onnx]'" in result.stderr and "onnxscript" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_bad_export_requests(trained_cnn, tmp_path, monkeypatch):
    result = run_cli("export", trained_cnn.source, "--format", "tflite", "--output", tmp_path / "m")
    assert result.exit_code == 2 and "unknown format 'tflite'" in result.stderr
    result = run_cli("export", trained_cnn.source, "--format", "pt2", "--output", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.stderr

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mnistlab.trained.export.save_file", full_disk)
    with pytest.raises(MnistlabError, match="No space left"):
        api.export_model(trained_cnn, tmp_path / "m.safetensors", "safetensors")
    assert os.listdir(tmp_path) == []  # nothing half-written, no temporary file left

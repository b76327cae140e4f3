"""End to end on real MNIST: train into a store, predict a PNG with the CLI, export ONNX, same class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mnistlab import api
from mnistlab.data.datasets import load_dataset
from mnistlab.data.images import read_inputs

from cli_driver import run_cli
from conftest import needs_mnist, real_data_available
from test_export import assert_onnx_matches, keras_images

pytestmark = [needs_mnist, pytest.mark.integration]

SMALL_CNN = {
    "id": "small-cnn",
    "layers": [
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "activation": "relu"},
        {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "Flatten"},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "training": {"optimizer": "adam", "batch_size": 32, "epochs": 1},
}


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """`mnistlab run` of a small CNN on the first 2,000 real training images, one epoch."""
    folder = tmp_path_factory.mktemp("e2e")
    experiment = {"name": "e2e", "dataset": "mnist", "defaults": {"epochs": 1, "train_limit": 2000, "device": "cpu"},
                  "seeds": [0], "models": [{"spec": SMALL_CNN}]}
    (folder / "e2e.yaml").write_text(yaml.safe_dump(experiment))
    result = run_cli("run", folder / "e2e.yaml", "--store", folder / "store", "--no-report", "--quiet")
    assert result.exit_code == 0, result.stderr
    return folder / "store"


def test_train_predict_png_export_onnx_same_class(store, mnist, tmp_path):
    model = api.load_model(store, 1)
    with torch.inference_mode():
        probabilities = model(torch.from_numpy(keras_images(model, mnist.test_images[:100]))).numpy()
    ordered = np.sort(probabilities, axis=1)
    right = (probabilities.argmax(1) == mnist.test_labels[:100].numpy()) & (ordered[:, -1] - ordered[:, -2] > 0.5)
    index = int(np.flatnonzero(right)[0])  # a test digit this model gets right, clearly
    label = int(mnist.test_labels[index])
    # Saved as a user's picture would be: dark ink on white paper, four times MNIST's size.
    picture = tmp_path / "digit.png"
    Image.fromarray(255 - mnist.test_images[index].numpy()).resize((112, 112), Image.Resampling.BICUBIC).save(picture)

    predicted = run_cli("predict", "small-cnn", picture, "--store", store, "--json")
    assert predicted.exit_code == 0, predicted.stderr
    [row] = json.loads(predicted.stdout)["predictions"]
    assert row["class"] == label and row["note"] == "inverted: dark digit on light background"

    onnx_path = tmp_path / "small-cnn.onnx"
    exported = run_cli("export", "1", "--format", "onnx", "--output", onnx_path, "--store", store)
    assert exported.exit_code == 0, exported.stderr
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    image = read_inputs(picture).images.reshape(1, 28, 28, 1)
    [onnx_probabilities] = session.run(None, {"images": image})
    assert int(onnx_probabilities.argmax()) == label
    for entry in row["top"]:  # the CLI's probabilities for the same picture
        assert abs(float(onnx_probabilities[0, entry["class"]]) - entry["probability"]) <= 1e-4

    # And the whole ONNX model against PyTorch on 1,000 real test images.
    assert_onnx_matches(model, onnx_path, keras_images(model, mnist.test_images[:1000]))


def test_evaluate_again_matches_the_run_and_leaves_the_store_alone(store):
    database = store / "store.sqlite"
    before = database.read_bytes()
    result = run_cli("evaluate", "small-cnn", "--store", store, "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    with api.open_store(store) as opened:
        final = opened.get_run(1).final
    assert figures["images"] == 10_000 and figures["accuracy"] == pytest.approx(final["test_acc"], abs=1e-12)
    assert figures["accuracy"] > 0.5  # one epoch on 1,800 images: far above chance, far from good
    if real_data_available("fashion-mnist"):
        other = run_cli("evaluate", "small-cnn", "--store", store, "--dataset", "fashion-mnist")
        assert other.exit_code == 0, other.stderr
        assert "fashion-mnist test set, 10,000 images" in other.stdout and "Ankle boot" in other.stdout
    assert database.read_bytes() == before

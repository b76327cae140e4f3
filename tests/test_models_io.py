"""Trained models kept, loaded, used: the model folder, load_model, predict and evaluate."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from mnistlab import api
from mnistlab.nn.build import build_model
from mnistlab.data.idx import read_idx
from mnistlab.data.synthetic import synthetic_dataset
from mnistlab.errors import MnistlabError
from mnistlab.experiments.definition import parse_experiment
from mnistlab.trained.folder import MODEL_JSON, MODEL_TENSORS, TrainedModel, layer_state, load_model_folder
from mnistlab.report import load_weights
from mnistlab.runs.runner import run_experiment
from mnistlab.runs.store import RunStore

from cli_driver import run_cli
from conftest import TINY_CNN

TINY_MLP = {
    "id": "tiny-mlp",
    "input": [784],
    "layers": [
        {"type": "Dense", "units": 32, "activation": "relu"},
        {"type": "BatchNormalization"},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ],
    "training": {"optimizer": "adam", "batch_size": 32, "epochs": 3},
}


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory, tiny_data_dir) -> Path:
    """A store holding one completed tiny MLP run and one tiny CNN run (3 epochs on generated data)."""
    root = tmp_path_factory.mktemp("models") / "store"
    experiment = parse_experiment({
        "name": "kept", "dataset": str(tiny_data_dir), "protocol": "split",
        "defaults": {"epochs": 3, "device": "cpu"}, "seeds": [0],
        "models": [{"spec": TINY_MLP}, {"spec": yaml.safe_load(TINY_CNN)}],
    })
    with RunStore(root) as store:
        outcome = run_experiment(experiment, store)
        assert len(outcome.trained) == 2
    return root


def run_ids(root: Path) -> dict[str, int]:
    with RunStore(root) as store:
        return {record.model_id: record.id for record in store.runs("kept")}


def store_fingerprint(root: Path) -> tuple[str, list[str]]:
    """The database file's sha256 and every file under the store: equal means nothing was written."""
    digest = hashlib.sha256((root / "store.sqlite").read_bytes()).hexdigest()
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != "store.sqlite-shm"
                   and p.name != "store.sqlite-wal")
    return digest, files


# --- the model folder ------------------------------------------------------------------------


def test_a_completed_run_keeps_its_whole_model(trained_store):
    with RunStore(trained_store) as store:
        for record in store.runs("kept"):
            folder = store.run_dir(record.id)
            info = json.loads((folder / MODEL_JSON).read_text())
            assert info["format"] == "mnistlab-model" and info["version"] == 1
            assert info["spec"] == record.spec["model"]  # the spec that was trained, epochs included
            assert info["seed"] == 0 and info["class_names"] == [str(d) for d in range(10)]
            assert info["metrics"]["test_acc"] == pytest.approx(record.final["test_acc"])
            tensors = load_file(folder / MODEL_TENSORS)
            assert {"batch_normalization_1.running_mean", "batch_normalization_1.running_var",
                    "batch_normalization_1.num_batches_tracked", "dense_1.bias"} <= set(tensors)
            # Moving statistics were trained, not left at their initial values.
            assert not torch.equal(tensors["batch_normalization_1.running_var"],
                                   torch.ones_like(tensors["batch_normalization_1.running_var"]))
            assert not (folder / "checkpoint").exists()


def test_load_model_from_store_and_from_folder_reproduces_the_stored_test_results(trained_store, tiny_dataset):
    ids = run_ids(trained_store)
    with RunStore(trained_store) as store:
        for model_id, run_id in ids.items():
            record = store.get_run(run_id)
            labels, predicted = store.predictions(run_id)
            model = api.load_model(store, run_id)
            assert isinstance(model, TrainedModel) and not model.training
            assert not any(p.requires_grad for p in model.parameters())
            again = api.evaluate(model, tiny_dataset)
            # The same computation as training's final test pass: identical figures.
            assert again.accuracy == pytest.approx(record.final["test_acc"], abs=1e-12)
            assert again.loss == pytest.approx(record.final["test_loss"], rel=1e-5)
            expected = np.zeros((10, 10), dtype=np.int64)
            np.add.at(expected, (labels, predicted), 1)
            assert np.array_equal(again.confusion, expected)
            by_path = api.load_model(trained_store, run_id)
            from_folder = api.load_model(store.run_dir(run_id))
            images = tiny_dataset.test_images[:8].numpy()
            probabilities = api.predict(model, images).probabilities
            assert np.array_equal(probabilities, api.predict(by_path, images).probabilities)
            assert np.array_equal(probabilities, api.predict(from_folder, images).probabilities)
            assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
            assert np.array_equal(probabilities.argmax(1), predicted[:8])


def test_model_takes_images_as_keras_users_hold_them(trained_store, tiny_dataset):
    ids = run_ids(trained_store)
    cnn = api.load_model(trained_store, ids["tiny-cnn"])
    mlp = api.load_model(trained_store, ids["tiny-mlp"])
    images = tiny_dataset.test_images[:5].float() / 255
    nhwc = cnn(images.reshape(5, 28, 28, 1))
    assert nhwc.shape == (5, 10) and torch.allclose(nhwc.sum(1), torch.ones(5))
    logits = cnn.network(images.reshape(5, 1, 28, 28))  # the network itself: NCHW in, logits out
    assert torch.allclose(nhwc, torch.softmax(logits, 1), atol=1e-6)
    flat = mlp(images.reshape(5, 784))
    assert flat.shape == (5, 10) and torch.allclose(flat.sum(1), torch.ones(5))


def test_train_out_folder_is_a_model_folder(tmp_path, tiny_data_dir, tiny_spec_file, tiny_dataset):
    out = tmp_path / "out"
    result = run_cli("train", tiny_spec_file, "--dataset", tiny_data_dir, "--epochs", "1", "--out", out, "--quiet",
                     "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    model = api.load_model(out)
    assert model.spec.id == "tiny-cnn" and model.info.dataset == str(tiny_data_dir)
    history = json.loads((out / "history.json").read_text())
    assert api.evaluate(model, tiny_dataset).accuracy == pytest.approx(history["test_acc"], abs=1e-12)
    # The Python API's train(out_dir=...) keeps it too.
    api.train(tiny_spec_file.as_posix() + ":tiny-cnn", dataset=tiny_dataset, epochs=1, out_dir=tmp_path / "py",
              device="cpu")
    assert api.load_model(tmp_path / "py").info.metrics["epochs"] == 1


def test_the_report_reads_kernels_from_the_model_folder(trained_store):
    ids = run_ids(trained_store)
    with RunStore(trained_store) as store:
        weights = load_weights(store, ids["tiny-cnn"])
        network = api.load_model(store, ids["tiny-cnn"]).network
    assert list(weights) == ["conv2d_1", "dense_1", "dense_2"]
    for name, kernel in network.weighted_layers():
        assert np.array_equal(weights[name], kernel.numpy())


def test_layer_state_round_trips_every_parameter_and_buffer():
    spec = api.model_spec("s002-m10")  # a graph with Concatenate and BatchNormalization
    source, target = build_model(spec, seed=1), build_model(spec, seed=2)
    from mnistlab.trained.folder import load_layer_state

    load_layer_state(target, layer_state(source), "<test>")
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert torch.equal(a, b), name
    assert len(layer_state(source)) == len(source.state_dict())


# --- damaged folders: one line naming the file -------------------------------------------------


def _copy_model(trained_store: Path, tmp_path: Path, model_id: str = "tiny-cnn") -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    source = trained_store / "artifacts" / str(run_ids(trained_store)[model_id])
    for name in (MODEL_JSON, MODEL_TENSORS):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def _edit_json(folder: Path, change) -> None:
    data = json.loads((folder / MODEL_JSON).read_text())
    change(data)
    (folder / MODEL_JSON).write_text(json.dumps(data))


def _edit_tensors(folder: Path, change) -> None:
    tensors = load_file(folder / MODEL_TENSORS)
    change(tensors)
    save_file(tensors, folder / MODEL_TENSORS)


DAMAGE = {
    "json-truncated": (lambda f: (f / MODEL_JSON).write_text((f / MODEL_JSON).read_text()[:40]), MODEL_JSON,
                       "not valid JSON"),
    "json-not-ours": (lambda f: (f / MODEL_JSON).write_text('{"hello": 1}'), MODEL_JSON, "not an mnistlab model"),
    "json-newer": (lambda f: _edit_json(f, lambda d: d.update(version=99)), MODEL_JSON, "newer"),
    "json-no-seed": (lambda f: _edit_json(f, lambda d: d.pop("seed")), MODEL_JSON, "field 'seed'"),
    "json-bad-spec": (lambda f: _edit_json(f, lambda d: d["spec"]["layers"][0].update(filters="x")), MODEL_JSON,
                      "filters"),
    "json-class-names": (lambda f: _edit_json(f, lambda d: d.update(class_names=["a", "b"])), MODEL_JSON,
                         "class_names"),
    "tensors-missing": (lambda f: (f / MODEL_TENSORS).unlink(), MODEL_TENSORS, "missing"),
    "tensors-truncated": (lambda f: (f / MODEL_TENSORS).write_bytes((f / MODEL_TENSORS).read_bytes()[:100]),
                          MODEL_TENSORS, "cannot be read"),
    "tensor-absent": (lambda f: _edit_tensors(f, lambda t: t.pop("dense_1.bias")), MODEL_TENSORS, "dense_1.bias"),
    "tensor-extra": (lambda f: _edit_tensors(f, lambda t: t.update({"dense_9.weight": torch.zeros(2)})),
                     MODEL_TENSORS, "dense_9.weight"),
    "tensor-shape": (lambda f: _edit_tensors(f, lambda t: t.update({"dense_1.bias": torch.zeros(3)})),
                     MODEL_TENSORS, "shape"),
    "tensor-nan": (lambda f: _edit_tensors(f, lambda t: t["conv2d_1.weight"].view(-1).__setitem__(0, float("nan"))),
                   MODEL_TENSORS, "NaN"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_model_folder_is_one_line_naming_the_file(damage, trained_store, tmp_path):
    folder = _copy_model(trained_store, tmp_path)
    break_it, file_name, fragment = DAMAGE[damage]
    break_it(folder)
    with pytest.raises(MnistlabError) as info:
        load_model_folder(folder)
    message = str(info.value)
    assert file_name in message and fragment in message and "\n" not in message
    result = run_cli("predict", folder, tmp_path / "none.npy")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and file_name in result.stderr
    assert "Traceback" not in result.stderr


def test_runs_without_a_model_say_why(tmp_path, trained_store):
    result = run_cli("predict", "no-such-run", tmp_path / "x.npy", "--store", trained_store)
    assert result.exit_code == 2 and "no run match 'no-such-run'" in result.stderr
    result = run_cli("predict", "1", tmp_path / "x.npy", "--store", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no run store" in result.stderr
    assert not (tmp_path / "nowhere").exists()  # looking never creates a store
    with pytest.raises(MnistlabError, match="not a model folder"):
        api.load_model(tmp_path)


# --- predict -----------------------------------------------------------------------------------


def test_predict_accepts_every_array_layout_and_scale(trained_store, tiny_dataset):
    model = api.load_model(trained_store, run_ids(trained_store)["tiny-cnn"])
    images = tiny_dataset.test_images[:4].numpy()
    expected = api.predict(model, images).probabilities
    for variant in (images.reshape(4, 28, 28, 1), images.reshape(4, 784), images.astype(np.float32) / 255,
                    torch.from_numpy(images)):
        assert np.allclose(api.predict(model, variant).probabilities, expected, atol=1e-6)
    single = api.predict(model, images[0])
    assert single.probabilities.shape == (1, 10) and np.allclose(single.probabilities[0], expected[0], atol=1e-6)
    for bad, fragment in ((images.reshape(4, 14, 56), "shape [4, 14, 56]"),
                          (images.astype(np.float32), "outside [0, 1]"),
                          (np.full((1, 28, 28), np.nan, dtype=np.float32), "NaN"),
                          (images.astype(bool), "bool")):
        with pytest.raises(MnistlabError, match=fragment.replace("[", r"\[")):
            api.predict(model, bad)


def test_predict_cli_reads_pictures_arrays_and_idx_files(trained_store, tiny_data_dir, tiny_dataset, tmp_path):
    run_id = run_ids(trained_store)["tiny-cnn"]
    model = api.load_model(trained_store, run_id)
    images = tiny_dataset.test_images[:3].numpy()
    np.save(tmp_path / "three.npy", images)
    Image.fromarray(images[0]).save(tmp_path / "light.png")
    # The same digit drawn dark on white, four times larger, as a user's picture would be.
    Image.fromarray(255 - images[0]).resize((112, 112), Image.Resampling.BICUBIC).save(tmp_path / "dark.png")
    idx = tiny_data_dir / "t10k-images-idx3-ubyte"
    result = run_cli("predict", str(run_id), tmp_path / "light.png", tmp_path / "dark.png", tmp_path / "three.npy",
                     idx, "--store", trained_store, "--json", "--top", "2")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"]["id"] == "tiny-cnn"
    rows = {row["input"]: row for row in document["predictions"]}
    assert len(rows) == 2 + 3 + len(read_idx(idx))
    light, dark = rows[str(tmp_path / "light.png")], rows[str(tmp_path / "dark.png")]
    assert light["note"].startswith("not inverted") and dark["note"].startswith("inverted")
    expected = api.predict(model, images).probabilities
    for i in range(3):
        row = rows[f"{tmp_path / 'three.npy'}[{i}]"]
        assert row["class"] == int(expected[i].argmax()) and len(row["top"]) == 2
        assert row["top"][0]["probability"] == pytest.approx(float(expected[i].max()), abs=1e-6)
        assert row["top"][0]["probability"] >= row["top"][1]["probability"]
    assert rows[f"{idx}[0]"]["class"] == rows[f"{tmp_path / 'three.npy'}[0]"]["class"]

    text = run_cli("predict", str(run_id), tmp_path / "dark.png", "--store", trained_store)
    assert text.exit_code == 0
    assert "dark.png: " in text.stdout and "inverted: dark digit on light background" in text.stdout
    assert "top 3:" in text.stdout


def test_predict_names_fashion_classes(tmp_path, tiny_dataset):
    import dataclasses

    from mnistlab.data.datasets import DATASETS
    from mnistlab.trained.folder import save_model

    fashion = dataclasses.replace(tiny_dataset, info=DATASETS["fashion-mnist"])
    save_model(tmp_path / "m", build_model(api.model_spec(TINY_MLP)), fashion.info, 0, {})
    np.save(tmp_path / "x.npy", tiny_dataset.test_images[:1].numpy())
    result = run_cli("predict", tmp_path / "m", tmp_path / "x.npy")
    assert result.exit_code == 0, result.stderr
    names = DATASETS["fashion-mnist"].class_names
    assert any(f"({name})" in result.stdout.splitlines()[1] for name in names)


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.write_text("not a picture"), "not a readable image"),
    (lambda p: Image.new("L", (40, 40), 255).save(p), "no digit found"),
])
def test_bad_pictures_are_one_line(make, fragment, trained_store, tmp_path):
    picture = tmp_path / "bad.png"
    make(picture)
    result = run_cli("predict", "tiny-cnn", picture, "--store", trained_store)
    assert result.exit_code == 2 and len(result.error_lines) == 1
    assert result.error_lines[0].startswith(f"error: {picture}: ") and fragment in result.stderr


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((2, 27, 28), dtype=np.uint8), "shape [2, 27, 28]"),
    (np.full((1, 784), np.nan, dtype=np.float32), "NaN"),
    (np.array([{"a": 1}], dtype=object), "not a readable .npy"),
])
def test_bad_arrays_are_one_line(array, fragment, trained_store, tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    result = run_cli("predict", "tiny-mlp", path, "--store", trained_store)
    assert result.exit_code == 2 and len(result.error_lines) == 1
    assert str(path) in result.stderr and fragment in result.stderr


def test_an_idx_labels_file_is_refused(trained_store, tiny_data_dir):
    labels = tiny_data_dir / "t10k-labels-idx1-ubyte"
    result = run_cli("predict", "tiny-mlp", labels, "--store", trained_store)
    assert result.exit_code == 2 and "labels?" in result.stderr and str(labels) in result.stderr


# --- evaluate ------------------------------------------------------------------------------------


def test_evaluate_cli_prints_and_never_writes_the_store(trained_store, tiny_data_dir):
    before = store_fingerprint(trained_store)
    result = run_cli("evaluate", "tiny-mlp", "--store", trained_store, "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    with RunStore(trained_store) as store:
        record = store.get_run(run_ids(trained_store)["tiny-mlp"])
    assert figures["accuracy"] == pytest.approx(record.final["test_acc"], abs=1e-12)
    assert figures["images"] == 100 and sum(map(sum, figures["confusion_matrix"])) == 100
    text = run_cli("evaluate", "tiny-cnn", "--store", trained_store, "--dataset", tiny_data_dir)
    assert text.exit_code == 0 and "confusion matrix" in text.stdout and "accuracy" in text.stdout
    exported = run_cli("export", "tiny-cnn", "--store", trained_store, "--format", "safetensors", "--output",
                       trained_store.parent / "out.safetensors")
    assert exported.exit_code == 0
    assert store_fingerprint(trained_store) == before


def test_evaluate_on_another_dataset(trained_store, tmp_path):
    from mnistlab.data.synthetic import write_dataset

    other = write_dataset(synthetic_dataset(n_train=20, n_test=50, seed=7), tmp_path / "other")
    model = api.load_model(trained_store, run_ids(trained_store)["tiny-cnn"])
    result = api.evaluate(model, str(other))
    assert result.images == 50 and result.dataset == str(other) and result.trained_on != result.dataset
    assert result.confusion.sum() == 50 and 0.0 <= result.accuracy <= 1.0
    assert result.accuracy == pytest.approx(np.trace(result.confusion) / 50)


def test_a_keras_weights_folder_predicts_what_keras_did(tmp_path):
    """import-keras-weights writes a model folder; loaded here, it gives Keras's own outputs."""
    pytest.importorskip("h5py")
    fixtures = Path(__file__).parent / "fixtures" / "keras_weights"
    result = run_cli("import-keras-weights", fixtures / "cnn_same.yaml", fixtures / "cnn_same.h5", "--output",
                     tmp_path / "from-keras")
    assert result.exit_code == 0, result.stderr
    data = np.load(fixtures / "cnn_same.npz")
    model = api.load_model(tmp_path / "from-keras")
    probabilities = api.predict(model, data["inputs"]).probabilities
    assert np.abs(probabilities - data["outputs"]).max() < 1e-4

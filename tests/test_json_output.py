"""Every reading command's --json: one JSON document on stdout, "format" first, holding what its text says."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cli_driver import run_cli
from mnistlab import api
from mnistlab.cli.json_output import JSON_FORMAT_VERSION, json_document
from test_runner import tiny_experiment


def _json(*args) -> dict:
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result
    document = json.loads(result.stdout)  # strict: a bare NaN would not parse in most readers either
    assert list(document)[0] == "format" and document["format"] == JSON_FORMAT_VERSION
    return document


def _text(*args) -> str:
    result = run_cli(*args)
    assert result.exit_code == 0, result
    return " ".join(result.stdout.split())  # tables wrap cells on a narrow console: compare words


def test_a_document_has_its_version_first_and_no_nan():
    assert json_document({"x": [1.0, math.nan], "y": {"z": math.inf}, "n": np.float32(0.5)}) == \
        {"format": JSON_FORMAT_VERSION, "x": [1.0, None], "y": {"z": None}, "n": 0.5}
    with pytest.raises(ValueError, match="format"):
        json_document({"format": 2})


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory, tiny_data_dir):
    """Two tiny models x two seeds, trained as `mnistlab run` trains them (each run folder a model folder)."""
    root = tmp_path_factory.mktemp("json") / "store"
    with api.open_store(root) as store:
        outcome = api.run(tiny_experiment(tiny_data_dir, name="tiny"), store)
        assert len(outcome.trained) == 4 and not outcome.failed
    return root


def test_show_json_holds_the_panels_facts(trained_store):
    document = _json("show", "1", "--store", trained_store)
    run = document["run"]
    assert run["id"] == 1 and run["experiment"] == "tiny" and run["status"] == "completed"
    assert [epoch["epoch"] for epoch in document["epochs"]] == [1]
    assert {finding["code"] for finding in document["diagnosis"]}
    text = _text("show", "1", "--store", trained_store)
    assert f"run 1: {run['model_id']}, seed {run['seed']}" in text
    assert f"{run['final']['test_acc'] * 100:.2f}%" in text
    for finding in document["diagnosis"]:
        assert finding["label"] in text
    assert document["model_diagnosis"]["seeds"] == [0, 1] and document["model_diagnosis"]["text"] in text


@pytest.mark.parametrize("pair", [("1", "3"), ("tiny-mlp", "tiny-cnn")], ids=["runs", "models"])
def test_compare_json_holds_the_tables_facts(trained_store, pair):
    document = _json("compare", *pair, "--store", trained_store)
    assert document["kind"] == ("runs" if pair[0].isdigit() else "models")
    text = _text("compare", *pair, "--store", trained_store)
    assert document["sentence"] in text
    counts = document["mcnemar"]
    assert f"{counts['only_a_correct']} test predictions only {document['a']['name']} got right" in text
    assert 0.0 <= counts["p_value"] <= 1.0
    for side in ("a", "b"):
        assert ", ".join(map(str, document[side]["seeds"])) in text


def test_conclusions_json_holds_the_sentences(trained_store):
    document = _json("conclusions", "tiny", "--store", trained_store)
    assert document["experiment"] == "tiny" and document["sentences"]
    lines = run_cli("conclusions", "tiny", "--store", trained_store).stdout.splitlines()
    assert lines[:len(document["sentences"])] == [f"- {sentence}" for sentence in document["sentences"]]
    assert document["method"] == lines[len(document["sentences"])]


def test_reproduction_json_holds_every_models_verdict(trained_store):
    document = _json("reproduction", "--store", trained_store)
    assert document["rule"].startswith("reproduced when")
    assert {line["model"] for line in document["models"]} == set(api.zoo_models())
    assert {line["verdict"] for line in document["models"]} == {"not run"}  # the store holds no zoo model
    assert _text("reproduction", "--store", trained_store).count("not run") == len(document["models"])


def test_evaluate_and_predict_json(trained_store, tiny_data_dir, tmp_path):
    evaluation = _json("evaluate", "1", "--dataset", tiny_data_dir, "--store", trained_store)
    assert evaluation["images"] == 100 and sum(map(sum, evaluation["confusion_matrix"])) == 100
    assert f"accuracy {evaluation['accuracy']:.4f}" in _text("evaluate", "1", "--dataset", tiny_data_dir,
                                                              "--store", trained_store)
    images = tmp_path / "two.npy"
    np.save(images, np.zeros((2, 28, 28), dtype=np.uint8))
    prediction = _json("predict", "1", images, "--store", trained_store)
    assert prediction["model"]["id"] == "tiny-mlp" and len(prediction["predictions"]) == 2
    first = prediction["predictions"][0]
    assert "top 3: " in _text("predict", "1", images, "--store", trained_store)
    assert first["class"] == first["top"][0]["class"]


def test_zoo_experiments_and_data_json():
    zoo = _json("zoo")
    text = _text("zoo")
    assert len(zoo["models"]) == len(api.zoo_models())
    for model in zoo["models"]:
        assert model["id"] in text and f"{model['params']:,}" in text
    experiments = _json("experiments")
    listed = _text("experiments")
    assert {one["name"] for one in experiments["experiments"]} == set(api.builtin_experiments())
    for one in experiments["experiments"]:
        assert one["name"] in listed
    data = run_cli("data", "--json")
    table = run_cli("data")
    assert data.exit_code == table.exit_code
    words = " ".join(table.stdout.split())
    for one in json.loads(data.stdout)["datasets"]:
        assert one["name"] in words
        assert (f"{one['train']:,}" in words) if one["ok"] else (one["error"] is not None)


def test_the_commands_that_had_json_keep_their_keys(tiny_spec_file):
    summary = _json("summary", tiny_spec_file)
    assert {"model", "layers", "total_params"} <= set(summary) and summary["model"] == "tiny-cnn"


def test_an_error_with_json_is_one_line_and_no_document(trained_store):
    result = run_cli("show", "99", "--store", trained_store, "--json")
    assert result.exit_code == 2 and result.stdout == "" and len(result.error_lines) == 1

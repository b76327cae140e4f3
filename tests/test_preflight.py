"""Validation before anything runs (issue 8): specs against the dataset and the size limits,
seeds, resume epochs, and whole experiments checked before the store is touched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from cli_driver import run_cli
from conftest import TINY_CNN
from mnistlab.training import engine
from mnistlab.training import limits
from mnistlab.data.idx import write_idx
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.errors import MnistlabError, SpecError
from mnistlab.experiments.definition import parse_experiment
from mnistlab.training.limits import DataShape, Limits, check_model, dataset_shape
from mnistlab.runs.runner import run_experiment
from mnistlab.spec.parse import parse_model
from mnistlab.runs.store import RunStore
from mnistlab.zoo import get_model

DENSE = [{"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}]


def flat_spec(**changes) -> dict:
    return {"id": "flat", "layers": [dict(layer) for layer in DENSE], "training": {"batch_size": 32, "epochs": 1}, **changes}


@pytest.fixture()
def no_build(monkeypatch):
    """Fail the test if fit gets as far as building a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before validation refused it")
    monkeypatch.setattr(engine, "build_model", refuse)


@pytest.mark.parametrize("spec, words", [
    (flat_spec(input=[100], layers=[{"type": "Dense", "units": 10, "activation": "softmax"}]),
     ["model 'flat'", "field 'input'", "(100,) does not fit synthetic's 28x28"]),
    (flat_spec(input=[32, 32, 1]), ["field 'input'", "(32, 32, 1) does not fit", "[28, 28, 1] or [784]"]),
    (flat_spec(layers=[{"type": "Flatten"}, {"type": "Dense", "units": 1_000_000_000},
                       {"type": "Dense", "units": 10, "activation": "softmax"}]),
     ["layer 2 (dense_1, Dense)", "field 'units'", "over the limit of 200,000,000"]),
    (flat_spec(layers=[{"type": "Conv2D", "filters": 1_000_000_000, "kernel_size": 3}, *DENSE]),
     ["layer 1 (conv2d_1, Conv2D)", "field 'filters'", "parameters"]),
])
def test_fit_refuses_before_building(tiny_dataset, no_build, spec, words):
    with pytest.raises(SpecError) as info:
        fit(parse_model(spec), tiny_dataset, TrainConfig(device="cpu"))
    assert all(word in str(info.value) for word in words), str(info.value)


@pytest.mark.parametrize("config, words", [
    (TrainConfig(seed=2**63), ["model 'flat'", "seed 9223372036854775808", "from 0 to 9223372036854775807"]),
    (TrainConfig(seed=-1), ["seed -1"]),
    (TrainConfig(seed=True), ["seed True"]),
    (TrainConfig(seed=1e23), ["seed 1e+23"]),  # type: ignore[arg-type]
    (TrainConfig(epochs=True), ["field 'epochs'"]),  # type: ignore[arg-type]
    (TrainConfig(batch_size=-4), ["field 'batch_size'", "above 0"]),
    (TrainConfig(train_limit=0.5), ["field 'train_limit'"]),  # type: ignore[arg-type]
    (TrainConfig(max_params=100), ["field 'units'", "over the limit of 100", "max_params"]),
    (TrainConfig(precision="fp16"), ["field 'precision'", "fp32, tf32, bf16 or bf32", "'fp16'"]),  # type: ignore[arg-type]
    (TrainConfig(validate_on="train"), ["field 'validate_on'", "split or test"]),  # type: ignore[arg-type]
    (TrainConfig(val_fraction=1.5), ["field 'val_fraction'", "between 0 and 1"]),
    (TrainConfig(max_params=True), ["field 'max_params'"]),  # type: ignore[arg-type]
    (TrainConfig(max_activation_mib=1, batch_size=1000), ["MiB of activations", "over the limit of 1 MiB"]),
])
def test_fit_checks_its_config_before_building(tiny_dataset, no_build, config, words):
    with pytest.raises(MnistlabError) as info:
        fit(parse_model(flat_spec()), tiny_dataset, config)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_limits_are_overridable_module_wide(monkeypatch):
    spec = get_model("s000-m1")
    mnist = dataset_shape("mnist")
    check_model(spec, mnist, 128)
    monkeypatch.setattr(limits, "MAX_PARAMS", 1000)
    with pytest.raises(SpecError, match="over the limit of 1,000"):
        check_model(spec, mnist, 128)
    check_model(spec, mnist, 128, Limits(max_params=10**9))  # a per-run override wins


def test_class_count_must_match_the_dataset():
    with pytest.raises(SpecError, match="field 'units': five has 5 classes, but the model outputs \\(10,\\)"):
        check_model(parse_model(flat_spec()), DataShape("five", (28, 28), 5), 32)


def test_resume_with_fewer_epochs_than_the_checkpoint_is_refused(tmp_path, tiny_data_dir):
    out = tmp_path / "out"
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_CNN)
    common = ("train", spec, "--dataset", tiny_data_dir, "--train-limit", "64", "--out", out, "--quiet", "--device", "cpu")
    assert run_cli(*common, "--epochs", "5").exit_code == 0
    result = run_cli(*common, "--epochs", "2", "--resume")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "Traceback" not in result.stderr
    assert "already holds 5 epochs" in result.stderr and "--epochs 5 or more" in result.stderr
    again = run_cli(*common, "--epochs", "5", "--resume")  # the same count is fine: nothing left to train
    assert again.exit_code == 0, again


def _tiny_experiment(data: str, **changes) -> dict:
    cnn = yaml.safe_load(TINY_CNN)
    return {"name": "pre", "dataset": data, "seeds": [0, 1], "defaults": {"device": "cpu", "epochs": 1},
            "models": [{"spec": cnn}], **changes}


def _assert_store_untouched(root) -> None:
    with RunStore(root) as store:
        assert store.experiments() == [] and store.runs() == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_device_is_refused_before_the_store_is_touched(tmp_path, tiny_dataset, tiny_data_dir):
    study = parse_experiment(_tiny_experiment(str(tiny_data_dir), defaults={"device": "cuda"}), "exp.yaml")
    with RunStore(tmp_path / "runs") as store:
        with pytest.raises(MnistlabError, match="exp.yaml: experiment 'pre': field 'defaults.device'.*no CUDA device"):
            run_experiment(study, store, "exp.yaml", dataset=tiny_dataset)
    _assert_store_untouched(tmp_path / "runs")


def test_missing_dataset_folder_is_refused_before_the_store_is_touched(tmp_path):
    study = parse_experiment(_tiny_experiment(str(tmp_path / "nowhere")), "exp.yaml")
    with RunStore(tmp_path / "runs") as store:
        with pytest.raises(MnistlabError, match="unknown dataset"):
            run_experiment(study, store, "exp.yaml")
    _assert_store_untouched(tmp_path / "runs")


def test_a_folder_of_other_sized_images_is_refused_from_its_header(tmp_path):
    folder = tmp_path / "big-images"
    folder.mkdir()
    for name, array in (("train-images-idx3-ubyte", np.zeros((4, 32, 32), np.uint8)),
                        ("t10k-images-idx3-ubyte", np.zeros((2, 32, 32), np.uint8)),
                        ("train-labels-idx1-ubyte", np.zeros(4, np.uint8)), ("t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))):
        write_idx(folder / f"{name}.gz", array, gz=True)
    assert dataset_shape(str(folder)).image == (32, 32)
    study = parse_experiment(_tiny_experiment(str(folder)), "exp.yaml")
    with RunStore(tmp_path / "runs") as store:
        with pytest.raises(SpecError, match="field 'input': \\(28, 28, 1\\) does not fit .*32x32"):
            run_experiment(study, store, "exp.yaml")
    _assert_store_untouched(tmp_path / "runs")


def test_cli_run_with_an_absent_device_leaves_no_store(tmp_path, tiny_data_dir):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_tiny_experiment(str(tiny_data_dir), defaults={"device": "cuda"})))
    result = run_cli("run", path, "--store", tmp_path / "runs")
    assert result.exit_code == 2 and len(result.error_lines) == 1 and "defaults.device" in result.stderr
    _assert_store_untouched(tmp_path / "runs")

"""The training engine: determinism, divergence, BatchNormalization statistics, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml

from mnistlab.api import train
from mnistlab.nn.build import build_model
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.util.machine import usable_cpus
from mnistlab.errors import MnistlabError
from mnistlab.spec.parse import parse_model
from cli_driver import sigkill_after_checkpoint, spawn_cli

from conftest import TINY_CNN, needs_mnist

METRICS = ("loss", "acc", "val_loss", "val_acc")


def tiny_spec(**training):
    raw = yaml.safe_load(TINY_CNN)
    raw["training"].update(training)
    return parse_model(raw)


def metric_rows(history):
    return [[e[k] for k in METRICS] for e in history.epochs]


def test_same_seed_gives_identical_history(tiny_dataset):
    first = fit(tiny_spec(), tiny_dataset, TrainConfig(seed=3, device="cpu"))
    second = fit(tiny_spec(), tiny_dataset, TrainConfig(seed=3, device="cpu"))
    assert metric_rows(first) == metric_rows(second)  # bit-for-bit, not approximately
    assert first.test_predictions == second.test_predictions


def test_different_seeds_give_different_weights_and_histories(tiny_dataset):
    a, b = build_model(tiny_spec(), seed=1), build_model(tiny_spec(), seed=2)
    assert not torch.equal(a.layers[0][0].weight, b.layers[0][0].weight)
    first = fit(tiny_spec(), tiny_dataset, TrainConfig(seed=1, device="cpu"))
    second = fit(tiny_spec(), tiny_dataset, TrainConfig(seed=2, device="cpu"))
    assert metric_rows(first) != metric_rows(second)


def test_training_learns_the_synthetic_task(tiny_dataset):
    history = fit(tiny_spec(epochs=10), tiny_dataset, TrainConfig(seed=0, device="cpu", validate_on="test"))
    assert history.status == "completed"
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    assert history.test_acc > 0.5
    assert len(history.test_predictions) == len(tiny_dataset.test_labels)


def test_split_protocol_holds_out_ten_percent(tiny_dataset):
    history = fit(tiny_spec(epochs=1), tiny_dataset, TrainConfig(seed=0, device="cpu"))
    assert history.protocol == "split"
    # 10% of 400 = 40 validation images: every val_acc is a multiple of 1/40.
    assert math.isclose(history.epochs[0]["val_acc"] * 40, round(history.epochs[0]["val_acc"] * 40))


def test_huge_learning_rate_ends_diverged_without_exception(tiny_dataset):
    spec = tiny_spec(optimizer={"name": "sgd", "lr": 1e12}, epochs=5)
    history = fit(spec, tiny_dataset, TrainConfig(seed=0, device="cpu"))
    assert history.status == "diverged"
    assert history.diverged_epoch is not None and history.diverged_epoch <= 5
    assert history.test_acc is None  # a diverged model is not evaluated
    assert not math.isfinite(history.epochs[-1]["loss"]) or not math.isfinite(history.epochs[-1]["val_loss"])


def test_batchnorm_running_statistics_follow_keras_formula():
    """Keras 2.2.4: moving = m·moving + (1−m)·batch, variance made unbiased with n/(n−1−ε)."""
    spec = parse_model({
        "id": "bn", "input": [6],
        "layers": [{"type": "BatchNormalization"}, {"type": "Dense", "units": 10, "activation": "softmax"}],
    })
    bn = build_model(spec, seed=0).layers[0]
    bn.train()
    momentum, eps = 0.99, 1e-3
    mean, var = np.zeros(6), np.ones(6)
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = rng.normal(2.0, 3.0, size=(32, 6)).astype(np.float32)
        bn(torch.from_numpy(batch))
        n = batch.shape[0]
        mean = momentum * mean + (1 - momentum) * batch.mean(0)
        var = momentum * var + (1 - momentum) * batch.var(0) * n / (n - (1.0 + eps))
    assert np.allclose(bn.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    # PyTorch's n/(n−1) vs Keras's n/(n−1.001) differ by about 1e-5 relative at n=32.
    assert np.allclose(bn.running_var.numpy(), var, rtol=1e-4)
    assert bn.eps == eps


def test_in_process_resume_matches_uninterrupted(tmp_path, tiny_dataset):
    full = fit(tiny_spec(epochs=4), tiny_dataset, TrainConfig(seed=5, device="cpu"))
    fit(tiny_spec(epochs=2), tiny_dataset, TrainConfig(seed=5, device="cpu", out_dir=tmp_path))
    resumed = fit(tiny_spec(epochs=4), tiny_dataset, TrainConfig(seed=5, device="cpu", out_dir=tmp_path, resume=True))
    assert metric_rows(resumed) == metric_rows(full)
    assert resumed.test_predictions == full.test_predictions


def test_existing_checkpoint_needs_resume_flag(tmp_path, tiny_dataset):
    fit(tiny_spec(epochs=1), tiny_dataset, TrainConfig(seed=0, device="cpu", out_dir=tmp_path))
    with pytest.raises(MnistlabError, match="--resume"):
        fit(tiny_spec(epochs=2), tiny_dataset, TrainConfig(seed=0, device="cpu", out_dir=tmp_path))
    with pytest.raises(MnistlabError, match="different run"):
        fit(tiny_spec(epochs=2), tiny_dataset, TrainConfig(seed=9, device="cpu", out_dir=tmp_path, resume=True))


def test_checkpoint_holds_no_pickle(tmp_path, tiny_dataset):
    fit(tiny_spec(epochs=1), tiny_dataset, TrainConfig(seed=0, device="cpu", out_dir=tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.json", "epoch-1.safetensors"]
    json.loads((tmp_path / "checkpoint.json").read_text())


def test_usable_cpus_is_positive_and_bounded():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)



def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    """A real process killed mid-epoch with SIGKILL, resumed, ends with the same history."""
    from mnistlab.data.synthetic import synthetic_dataset, write_dataset

    data_dir = write_dataset(synthetic_dataset(n_train=6000, n_test=200, seed=1), tmp_path / "data")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(TINY_CNN.replace("epochs: 2", "epochs: 5").replace("filters: 4", "filters: 32"))
    common = ["train", str(spec_file), "--dataset", str(data_dir), "--seed", "7", "--quiet", "--device", "cpu"]

    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    assert spawn_cli(*common, "--out", str(reference_dir)).wait(timeout=300) == 0

    pointer = killed_dir / "checkpoint.json"
    sigkill_after_checkpoint(spawn_cli(*common, "--out", str(killed_dir)), pointer, epoch=2)
    assert json.loads(pointer.read_text())["epoch"] < 5, "killed too late to test a resume"

    assert spawn_cli(*common, "--out", str(killed_dir), "--resume").wait(timeout=300) == 0
    reference = json.loads((reference_dir / "history.json").read_text())
    resumed = json.loads((killed_dir / "history.json").read_text())
    for key in (*METRICS, "test_loss", "test_acc", "test_predictions"):
        assert resumed[key] == reference[key], key


@needs_mnist
@pytest.mark.integration
def test_s000_m1_one_epoch_reaches_97_percent():
    history = train("s000-m1", epochs=1, validate_on="test", device="cpu")
    # Measured 0.9813 (AMD EPYC, default kernels): 0.975 left 0.6 points, within what another CPU's
    # rounding moves a one-epoch result on full MNIST (tests/README.md); a broken engine is far below.
    assert history.test_acc >= 0.97


@needs_mnist
@pytest.mark.integration
def test_s001_m3_sigmoid_sgd_stays_at_chance():
    """Keras 2.2's SGD default (lr 0.01) cannot move the sigmoid net in one epoch: the notebook's 11%."""
    history = train("s001-m3", epochs=1, validate_on="test", device="cpu")
    assert history.test_acc <= 0.15


def test_bf16_autocast_trains(tiny_dataset):
    history = fit(tiny_spec(epochs=3), tiny_dataset, TrainConfig(seed=0, device="cpu", precision="bf16"))
    assert history.status == "completed"
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]


def test_ctrl_c_exits_130_and_leaves_a_loadable_checkpoint(tmp_path):
    from mnistlab.training.checkpoint import load_checkpoint
    from mnistlab.data.synthetic import synthetic_dataset, write_dataset
    from mnistlab.training.optim import make_optimizer

    data_dir = write_dataset(synthetic_dataset(n_train=6000, n_test=100, seed=1), tmp_path / "data")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(TINY_CNN.replace("epochs: 2", "epochs: 50").replace("filters: 4", "filters: 32"))
    out = tmp_path / "out"
    process = spawn_cli("train", str(spec_file), "--dataset", str(data_dir), "--quiet", "--device", "cpu", "--out", str(out),
                   stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.json").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and "--resume" in err
    spec = parse_model(yaml.safe_load(spec_file.read_text()))
    model = build_model(spec)
    info = load_checkpoint(out, model, make_optimizer("adam", model.parameters()), torch.device("cpu"))
    assert info["epoch"] >= 1

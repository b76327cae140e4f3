"""The fused ReLU → BatchNormalization → Dropout chain and 1x1 convs equal the plain ops; threads are
fixed per run and reused on resume (how idle threads wait: test_openmp_memory.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import mnistlab.nn.build as build
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import fit
from mnistlab.util.machine import usable_cpus
from mnistlab.nn.fused import FusedBatchNorm, PointwiseConv2d, bn_dropout, bn_dropout_reference, dropout_mask
from mnistlab.spec.parse import parse_model

CHAIN = """\
id: chain
input: [28, 28, 1]
layers:
  - {type: Conv2D, filters: 6, kernel_size: 1, activation: relu}
  - {type: BatchNormalization}
  - {type: Dropout, rate: 0.3}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Conv2D, filters: 5, kernel_size: 1, activation: relu}
  - {type: BatchNormalization}
  - {type: Dropout, rate: 0.4}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Conv2D, filters: 4, kernel_size: 3, activation: tanh}
  - {type: BatchNormalization}
  - {type: Flatten}
  - {type: Dense, units: 8, activation: relu}
  - {type: BatchNormalization}
  - {type: Dropout, rate: 0.5}
  - {type: Dense, units: 10, activation: softmax}
training: {optimizer: adam, batch_size: 16, epochs: 2}
"""


def chain_spec():
    import yaml

    return parse_model(yaml.safe_load(CHAIN))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape", [(6, 5, 7, 7), (9, 4)])
@pytest.mark.parametrize("with_dropout", [True, False])
def test_bn_dropout_equals_unfused_ops_in_float64(relu, shape, with_dropout):
    gen = torch.Generator().manual_seed(3)
    channels = shape[1]
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    weight = torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5
    bias = torch.randn(channels, generator=gen, dtype=torch.float64)
    upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
    rate = 0.3
    keep = dropout_mask(shape, rate, generator=torch.Generator().manual_seed(11)) if with_dropout else None
    results = []
    for fn in (bn_dropout, bn_dropout_reference):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
        mean, var = torch.zeros(channels, dtype=torch.float64), torch.ones(channels, dtype=torch.float64)
        out = fn(xs, ws, bs, mean, var, 0.01, 1e-3, keep, rate if with_dropout else 0.0, relu)
        (out * upstream).sum().backward()
        results.append((out.detach(), xs.grad, ws.grad, bs.grad, mean, var))
    for fused, plain in zip(*results):
        torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    if with_dropout:  # the mask really dropped something, and the test compared it
        assert 0 < int((keep == 0).sum()) < keep.numel()


def test_dropout_mask_keeps_one_minus_rate_and_follows_its_generator():
    mask = dropout_mask((200_000,), 0.3, generator=torch.Generator().manual_seed(0))
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(float(mask.mean()) - 0.7) < 0.005
    again = dropout_mask((200_000,), 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def test_pointwise_conv_equals_conv2d_forward_and_backward():
    torch.manual_seed(0)
    for cin in (1, 5):
        conv = torch.nn.Conv2d(cin, 7, 1).double()
        fast = PointwiseConv2d.from_conv(conv)
        assert fast.weight is conv.weight and fast.bias is conv.bias  # the same Parameters
        x = torch.randn(3, cin, 6, 5, dtype=torch.float64)
        for memory_format in (torch.contiguous_format, torch.channels_last):
            xa = x.clone().contiguous(memory_format=memory_format).requires_grad_()
            xb = x.clone().requires_grad_()
            fast.zero_grad()
            ya = fast(xa)
            (ya * ya).sum().backward()
            grads = [p.grad.clone() for p in fast.parameters()]
            conv.zero_grad()
            yb = conv(xb)
            (yb * yb).sum().backward()
            torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-12)
            for got, want in zip(grads, [p.grad for p in conv.parameters()]):
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _models(monkeypatch):
    spec = chain_spec()
    return build.build_model(spec, seed=4, fused=True).double(), build.build_model(spec, seed=4, fused=False).double()


def test_fused_model_has_the_plain_models_state_and_fuses_the_chains(monkeypatch):
    fused, plain = _models(monkeypatch)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value)
    assert sum(isinstance(m, FusedBatchNorm) for m in fused.modules()) == 4
    assert sum(isinstance(m, PointwiseConv2d) for m in fused.modules()) == 2
    assert not any(isinstance(m, (FusedBatchNorm, PointwiseConv2d)) for m in plain.modules())


def test_fused_model_equals_plain_model_float64_forward_backward_with_the_same_masks(monkeypatch):
    """Train steps of the whole model, each with its own dropout generator seeded alike: the plain
    model's SeededDropout layers and the fused chains draw the same masks in the same order."""
    from mnistlab.nn.rng import set_dropout_generator

    fused, plain = _models(monkeypatch)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(16, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=gen)
    outputs = []
    for model in (fused, plain):
        model.train()
        set_dropout_generator(model, torch.Generator().manual_seed(123))
        losses = []
        for _ in range(2):  # two steps: running statistics feed nothing, gradients everything
            model.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            losses.append(loss.detach())
        outputs.append((losses, {k: p.grad.clone() for k, p in model.named_parameters()}, model.state_dict()))
    (fused_losses, fused_grads, fused_state), (plain_losses, plain_grads, plain_state) = outputs
    torch.testing.assert_close(fused_losses, plain_losses, rtol=1e-12, atol=1e-12)
    for key in plain_grads:
        torch.testing.assert_close(fused_grads[key], plain_grads[key], rtol=1e-10, atol=1e-12)
    for key in plain_state:  # running statistics and num_batches_tracked
        torch.testing.assert_close(fused_state[key], plain_state[key], rtol=1e-12, atol=1e-12)
    fused.eval(), plain.eval()
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-12, atol=1e-12)


def test_fused_training_is_deterministic_and_resumes_exactly(tmp_path, tiny_dataset):
    spec = chain_spec()
    full = fit(spec, tiny_dataset, TrainConfig(seed=1, device="cpu", epochs=3))
    again = fit(spec, tiny_dataset, TrainConfig(seed=1, device="cpu", epochs=3))
    assert full.epochs[-1]["loss"] == again.epochs[-1]["loss"]
    fit(spec, tiny_dataset, TrainConfig(seed=1, device="cpu", epochs=2, out_dir=tmp_path))
    resumed = fit(spec, tiny_dataset, TrainConfig(seed=1, device="cpu", epochs=3, out_dir=tmp_path, resume=True))
    assert [e["loss"] for e in resumed.epochs] == [e["loss"] for e in full.epochs]
    assert resumed.test_predictions == full.test_predictions
    identity = json.loads((tmp_path / "checkpoint.json").read_text())["identity"]
    assert identity["fused"] == "fused-v1"


# --- threads --------------------------------------------------------------------------------


def test_threads_recorded_in_history_and_checkpoint_and_reused_on_resume(tmp_path, tiny_dataset):
    from tests.test_engine import tiny_spec

    before = torch.get_num_threads()
    try:
        history = fit(tiny_spec(epochs=1), tiny_dataset, TrainConfig(seed=0, device="cpu", out_dir=tmp_path, threads=1))
        assert history.threads == 1 and history.to_json()["threads"] == 1
        assert json.loads((tmp_path / "checkpoint.json").read_text())["identity"]["threads"] == 1
        torch.set_num_threads(2)
        resumed = fit(tiny_spec(epochs=2), tiny_dataset, TrainConfig(seed=0, device="cpu", out_dir=tmp_path, resume=True))
        assert resumed.threads == 1 and torch.get_num_threads() == 1  # the checkpoint's count, not the default
        default = fit(tiny_spec(epochs=1), tiny_dataset, TrainConfig(seed=0, device="cpu"))
        assert default.threads == usable_cpus()
    finally:
        torch.set_num_threads(before)


def test_a_different_thread_count_is_another_run(tmp_path, tiny_dataset):
    from mnistlab.errors import MnistlabError
    from tests.test_engine import tiny_spec

    before = torch.get_num_threads()
    try:
        fit(tiny_spec(epochs=1), tiny_dataset, TrainConfig(seed=0, device="cpu", out_dir=tmp_path, threads=1))
        with pytest.raises(MnistlabError, match="different run"):
            fit(tiny_spec(epochs=2), tiny_dataset, TrainConfig(seed=0, device="cpu", out_dir=tmp_path,
                                                               resume=True, threads=2))
        for bad in (0, -1, True, 1.5):
            with pytest.raises(MnistlabError, match="threads"):
                fit(tiny_spec(epochs=1), tiny_dataset, TrainConfig(seed=0, device="cpu", threads=bad))
    finally:
        torch.set_num_threads(before)


def test_runner_final_metrics_record_threads():
    from mnistlab.training.history import History
    from mnistlab.experiments.definition import expand, parse_experiment
    from mnistlab.runs.tasks import final_metrics

    task = expand(parse_experiment({"name": "t", "models": [{"model": "s004-m1"}], "seeds": [0]}))[0]
    history = History(model_id="s004-m1", seed=0, protocol="split", device="cpu", threads=3)
    assert final_metrics(task, history, 100)["threads"] == 3


def test_experiment_default_threads_reach_the_runs_config():
    from mnistlab.experiments.definition import expand, parse_experiment
    from mnistlab.runs.tasks import task_config

    raw = {"name": "t", "models": [{"model": "s004-m1"}], "seeds": [0, 1], "defaults": {"threads": 1}}
    tasks = expand(parse_experiment(raw))
    assert [task.threads for task in tasks] == [1, 1]
    assert task_config(tasks[0], None).threads == 1
    unset = expand(parse_experiment({"name": "t", "models": [{"model": "s004-m1"}], "seeds": [0]}))
    assert task_config(unset[0], None).threads is None

"""cost.py: FLOP counts by hand, the probe's rates and time cap, the estimate's arithmetic, bad input in one line.

No test pins a measured speed: rates are only checked to be positive and finite.
"""

from __future__ import annotations

import math

import pytest

from mnistlab import api
from mnistlab.training.cost import (ESTIMATE_INCLUDES, Throughput, epoch_images, estimate_training, forward_flops,
                           probe_throughput)
from mnistlab.training.config import TRAIN_EVAL_IMAGES
from mnistlab.errors import MnistlabError
from mnistlab.report.reproduction import render_markdown, reproduction_table
from mnistlab.spec.parse import parse_model
from mnistlab.runs.store import RunStore
from mnistlab.zoo import get_model

TINY = {"id": "tiny", "input": [784], "layers": [{"type": "Dense", "units": 16, "activation": "relu"},
                                                  {"type": "Dense", "units": 10, "activation": "softmax"}],
        "training": {"optimizer": "adam", "batch_size": 32, "epochs": 1}}


def fake_throughput(train: float = 1000.0, evaluation: float = 4000.0, model_id: str = "s000-m1") -> Throughput:
    return Throughput(model_id=model_id, precision="fp32", machine="Test CPU, 2 usable of 2 CPUs", threads=2,
                      batch_size=128, train_images_per_second=train, train_steps=10,
                      eval_images_per_second=evaluation, eval_images=2560, warmup_timed=False, seconds=5.0)


def test_flops_of_a_dense_mlp_by_hand():
    # s004-m1: 784 -> 256 -> 64 -> 10; 2 FLOPs per multiply-add, bias and ReLU not counted.
    spec = get_model("s004-m1")
    assert [layer.units for layer in spec.layers if layer.type == "Dense"] == [256, 64, 10]
    assert forward_flops(spec) == 2 * (784 * 256 + 256 * 64 + 64 * 10)


def test_flops_of_a_conv_net_by_hand():
    # s000-m1: 3x3 conv 1->32 (26x26 out), 3x3 conv 32->64 (24x24 out), Flatten 36,864 -> Dense 10.
    assert forward_flops(get_model("s000-m1")) == 2 * (3 * 3 * 1 * 32 * 26 * 26 + 3 * 3 * 32 * 64 * 24 * 24
                                                       + 24 * 24 * 64 * 10)


def test_flops_of_same_padding_pooling_and_batch_norm():
    # s001-m1: 'same' convs keep 28x28 and 14x14; pooling, batch norm and dropout cost nothing counted.
    expected = 2 * (3 * 3 * 1 * 16 * 28 * 28 + 3 * 3 * 16 * 32 * 28 * 28 + 3 * 3 * 32 * 64 * 14 * 14
                    + 3 * 3 * 64 * 128 * 14 * 14 + 7 * 7 * 128 * 512 + 512 * 10)
    assert forward_flops(get_model("s001-m1")) == expected


def test_estimate_is_epochs_times_images_over_rates():
    cost = estimate_training(fake_throughput(1000.0, 4000.0), epochs=12, train_images=60_000, val_images=10_000,
                             test_images=10_000)
    assert cost.train_images == 60_000 and cost.train_eval_images == TRAIN_EVAL_IMAGES
    assert cost.train_seconds == pytest.approx(12 * 60_000 / 1000.0)
    assert cost.eval_seconds == pytest.approx((12 * (10_000 + TRAIN_EVAL_IMAGES) + 10_000) / 4000.0)
    assert cost.seconds == pytest.approx(cost.train_seconds + cost.eval_seconds)
    assert cost.hours == pytest.approx(cost.seconds / 3600)
    assert cost.to_json()["includes"] == ESTIMATE_INCLUDES


def test_the_training_metrics_subsample_is_at_most_the_images_trained_on():
    cost = estimate_training(fake_throughput(), epochs=1, train_images=1000, val_images=100, test_images=100)
    assert cost.train_eval_images == 1000


def test_epoch_images_follow_the_protocol():
    assert epoch_images("mnist", "test") == (60_000, 10_000, 10_000)
    assert epoch_images("mnist", "split") == (54_000, 6_000, 10_000)
    assert epoch_images("mnist", "split", train_limit=12_000) == (12_000, 6_000, 10_000)


@pytest.mark.parametrize(("call", "words"), [
    (lambda: estimate_training(fake_throughput(), epochs=-1, train_images=10, val_images=10, test_images=10),
     ["field 'epochs'", "-1"]),
    (lambda: estimate_training(fake_throughput(), epochs=1, train_images=0, val_images=10, test_images=10),
     ["field 'train_images'"]),
    (lambda: probe_throughput(parse_model(TINY), precision="fp16", seconds=1, device="cpu"),
     ["field 'precision'", "fp16"]),
    (lambda: probe_throughput(parse_model(TINY), seconds=31, device="cpu"), ["probe seconds", "at most 30"]),
    (lambda: probe_throughput(parse_model(TINY), seconds=0, device="cpu"), ["probe seconds", "above 0"]),
    (lambda: api.estimate("s004-m1", epochs=0), ["field 'epochs'"]),
    (lambda: epoch_images("nowhere"), ["dataset 'nowhere'"]),
])
def test_bad_input_is_one_line(call, words):
    with pytest.raises(MnistlabError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_probe_measures_real_steps_and_restores_threads():
    import torch

    before = torch.get_num_threads()
    speed = probe_throughput(parse_model(TINY), seconds=0.5, threads=1, device="cpu")
    assert torch.get_num_threads() == before
    assert speed.train_steps >= 1 and speed.eval_images >= 1 and speed.threads == 1 and speed.batch_size == 32
    for rate in (speed.train_images_per_second, speed.eval_images_per_second):
        assert rate > 0 and math.isfinite(rate)


def test_probe_stops_after_one_step_when_a_step_outlasts_its_budget():
    # No step takes under a microsecond: the warm-up is then the whole measurement, and the probe stops.
    speed = probe_throughput(get_model("s004-m1"), seconds=1e-6, device="cpu")
    assert speed.train_steps == 1 and speed.warmup_timed
    assert speed.train_images_per_second > 0 and math.isfinite(speed.train_images_per_second)


def test_api_estimate_probes_and_estimates():
    cost = api.estimate(TINY, epochs=2, train_images=640, probe_seconds=0.3, device="cpu")
    assert cost.epochs == 2 and cost.train_images == 640 and cost.val_images == 10_000
    assert cost.seconds > 0 and math.isfinite(cost.seconds)


def test_the_document_gives_estimates_only_for_models_not_run(tmp_path):
    with RunStore(tmp_path / "runs") as store:
        lines = reproduction_table([store])
    estimates = {"s000-m1": estimate_training(fake_throughput(1000.0, 4000.0), epochs=12, train_images=60_000,
                                              val_images=10_000, test_images=10_000)}
    text = render_markdown(lines, ["runs"], estimates)
    row = next(row for row in text.splitlines() if row.startswith("| s000-m1 "))
    assert row.endswith(f"| {estimates['s000-m1'].hours:.1f} |") and "| not run |" in row
    other = next(row for row in text.splitlines() if row.startswith("| s000-m2 "))
    assert other.endswith("| – |")
    assert "Test CPU, 2 usable of 2 CPUs" in text and "est. hours/seed" in text

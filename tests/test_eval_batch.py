"""The CPU evaluation batch: a cache budget measured once per machine, each model's batch what fits it."""

from __future__ import annotations

import json

import pytest

from mnistlab.nn.cpu_paths import CACHE_FILE_NAME, machine_key
from mnistlab.spec.model import resolve
from mnistlab.training import eval_batch
from mnistlab.training.eval_batch import (EVAL_BATCH_RANGE, KEY_SUFFIX, PROBE_BATCHES, budget_from, cpu_eval_batch,
                                          eval_budget_bytes)
from mnistlab.training.limits import activation_bytes_per_image
from mnistlab.zoo import get_model


def per_image(model: str) -> int:
    return activation_bytes_per_image(resolve(get_model(model)))


def test_each_model_gets_the_largest_power_of_two_that_fits_the_budget():
    budget = 128 * per_image("s000-m1")
    assert cpu_eval_batch(resolve(get_model("s000-m1")), budget=budget) == 128
    assert cpu_eval_batch(resolve(get_model("s000-m1")), budget=budget - 1) == 64  # 127 fit: the power below
    assert cpu_eval_batch(resolve(get_model("s000-m9")), budget=budget) == EVAL_BATCH_RANGE[0]  # never below
    assert cpu_eval_batch(resolve(get_model("s004-m1")), budget=budget) == EVAL_BATCH_RANGE[1]  # nor above
    small = cpu_eval_batch(resolve(get_model("s000-m4")), budget=budget)
    assert small > 128 and small & (small - 1) == 0  # a smaller model, a larger batch
    # K stacked seeds hold K models' activations
    assert cpu_eval_batch(resolve(get_model("s000-m4")), seeds=2, budget=budget) == small // 2


def test_the_budget_is_the_largest_batch_within_five_percent_of_the_fastest():
    rates = {"64": 9266.0, "128": 9284.0, "256": 7177.0, "512": 4368.0, "1024": 3890.0}
    assert budget_from(rates)["probe_batch"] == 128
    assert budget_from(rates)["budget_bytes"] == 128 * per_image("s000-m1")
    assert budget_from({"64": 100.0, "128": 90.0, "256": 96.0})["probe_batch"] == 256


def test_the_budget_is_probed_once_then_read_from_the_cache(tmp_path):
    calls = []

    def probe():
        calls.append(1)
        return {"64": 1.0, "128": 2.0}

    assert eval_budget_bytes(probe, tmp_path) == 128 * per_image("s000-m1") and calls == [1]
    assert eval_budget_bytes(lambda: pytest.fail("probed again"), tmp_path) == 128 * per_image("s000-m1")
    assert json.loads((tmp_path / CACHE_FILE_NAME).read_text())[machine_key() + KEY_SUFFIX]["probe_batch"] == 128


def test_the_probe_measures_every_batch_size():
    rates = eval_batch.probe()
    assert set(rates) == {str(b) for b in PROBE_BATCHES} and all(r > 0 for r in rates.values())

"""The notebook's figure is a yardstick only for runs made under the notebook's protocol."""

from __future__ import annotations

from mnistlab.experiments.reference import protocol_differences
from mnistlab.report.frame import _protocol_differences
from mnistlab.zoo import get_model

import pandas as pd


def test_the_notebooks_own_protocol_has_no_differences():
    spec = get_model("s000-m1")  # 12 epochs, batch 128, adam, full training set, validated on test
    assert protocol_differences(spec, "test", 60_000, 60_000) == []


def test_each_difference_is_named():
    spec = get_model("s000-m1").with_training(epochs=4, batch_size=64, optimizer="sgd")
    assert protocol_differences(spec, "split", 12_000, 60_000) == [
        "4 epochs on 12,000 images vs 12 on 60,000",
        "batch size 64 vs 128",
        "optimizer sgd vs adam",
        "validated on a held-out split vs on the test set",
    ]


def test_fewer_images_alone_is_a_different_protocol():
    spec = get_model("s004-m2")
    assert protocol_differences(spec, "test", 54_000, 60_000) == ["20 epochs on 54,000 images vs 20 on 60,000"]


def test_a_model_without_a_notebook_has_nothing_to_differ_from_but_the_validation():
    from mnistlab.spec.parse import parse_model

    spec = parse_model({"id": "mine", "input": [784], "layers": [{"type": "Dense", "units": 10, "activation": "softmax"}]})
    assert protocol_differences(spec, "test", 100, 60_000) == []


def test_model_level_differences_join_runs_and_flag_unrecorded_ones():
    assert _protocol_differences(pd.Series(['["a", "b"]', '["b", "c"]'])) == "a; b; c"
    assert _protocol_differences(pd.Series(["[]", "[]"])) == ""
    assert _protocol_differences(pd.Series(["[]", None])) is None

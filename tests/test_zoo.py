"""The zoo against the seed notebooks' printed summaries, and the built torch modules against both.

Keras counts a BatchNormalization layer's moving mean and variance as (non-trainable) parameters;
PyTorch keeps them as buffers, so the module's count here is parameters + running_mean/var.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest
import torch
from torch import nn

from mnistlab.nn.build import build_model
from mnistlab.spec.layers import BatchNormalization, Conv2D, Dense
from mnistlab.spec.model import resolve
from mnistlab.spec.parse import parse_model
from mnistlab.spec.summary import summary_data
from mnistlab.zoo import zoo_models
from cli_driver import run_cli

ZOO_IDS = (
    [f"s000-m{i}" for i in range(1, 10)]
    + [f"s001-m{i}" for i in range(1, 5)]
    + [f"s002-m{i}" for i in range(1, 11)]
    + [f"s003-m{i}" for i in range(1, 4)]
    + [f"s004-m{i}" for i in range(1, 10)]
)


def _has_printed_summary(model_id: str) -> bool:
    spec = zoo_models().get(model_id)
    return spec is not None and "summary" in (spec.reference or {})


PRINTED = [i for i in ZOO_IDS if _has_printed_summary(i)]


@lru_cache(maxsize=None)
def built(model_id: str) -> nn.Module:
    return build_model(zoo_models()[model_id], seed=0).eval()


def module_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) as Keras counts them: parameters plus BatchNorm moving statistics."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    moving = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    return params + moving, trainable


def test_zoo_ids_exactly():
    assert len(ZOO_IDS) == 35
    assert list(zoo_models()) == ZOO_IDS


def test_printed_summaries_exist_for_s001_to_s004():
    # Guards the table below against going vacuous: s000 printed no summaries, the others did.
    assert PRINTED == [i for i in ZOO_IDS if not i.startswith("s000")]


@pytest.mark.parametrize("model_id", PRINTED)
def test_summary_equals_printed_summary(model_id):
    spec = zoo_models()[model_id]
    printed = spec.reference["summary"]
    ours = summary_data(spec)
    got_rows = [(row["type"], list(row["output_shape"][1:]), row["params"]) for row in ours["layers"]]
    want_rows = [(row["type"], list(row["output_shape"]), row["params"]) for row in printed["layers"]]
    assert all(row["output_shape"][0] is None for row in ours["layers"])  # the batch dimension
    assert got_rows == want_rows
    assert ours["total_params"] == printed["total_params"]
    assert ours["trainable_params"] == printed["trainable_params"]
    assert ours["non_trainable_params"] == printed["non_trainable_params"]
    assert printed["total_params"] == printed["trainable_params"] + printed["non_trainable_params"]
    assert sum(row["params"] for row in printed["layers"]) == printed["total_params"]


@pytest.mark.parametrize("model_id", ZOO_IDS)
def test_built_module_counts_equal_summary(model_id):
    data = summary_data(zoo_models()[model_id])
    total, trainable = module_counts(built(model_id))
    assert total == data["total_params"]
    assert trainable == data["trainable_params"]
    assert total - trainable == data["non_trainable_params"]


@pytest.mark.parametrize("model_id", ZOO_IDS)
def test_forward_pass_gives_ten_logits(model_id):
    spec = zoo_models()[model_id]
    shape = spec.input
    x = torch.zeros(2, shape[2], shape[0], shape[1]) if len(shape) == 3 else torch.zeros(2, shape[0])
    with torch.no_grad():
        out = built(model_id)(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("model_id", ["s000-m1", "s002-m10", "s003-m2", "s004-m9"])
def test_real_layer_shapes_equal_static_ones(model_id):
    """Every layer's real output tensor has the summary's shape (NCHW shown as Keras's HWC)."""
    model = built(model_id)
    nodes = resolve(zoo_models()[model_id]).nodes
    seen: dict[int, tuple[int, ...]] = {}
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, tuple(out.shape[1:])))
        for i, layer in enumerate(model.layers)
    ]
    shape = zoo_models()[model_id].input
    x = torch.zeros(2, shape[2], shape[0], shape[1]) if len(shape) == 3 else torch.zeros(2, shape[0])
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for i, node in enumerate(nodes):
        real = seen[i]
        keras = (real[1], real[2], real[0]) if len(real) == 3 else real
        assert keras == node.output_shape, node.name


# --- Keras's parameter formulas on hand-computed cases -----------------------------------------


@pytest.mark.parametrize(
    ("layer", "input_shape", "expected"),
    [
        (Conv2D(filters=32, kernel_size=3), (28, 28, 1), (320, 0)),  # 3*3*1*32 + 32
        (Conv2D(filters=64, kernel_size=3), (26, 26, 32), (18496, 0)),  # 3*3*32*64 + 64
        (Conv2D(filters=64, kernel_size=[5, 3], use_bias=False), (28, 28, 2), (1920, 0)),  # 5*3*2*64
        (Dense(units=128), (9216,), (1179776, 0)),  # 9216*128 + 128
        (Dense(units=10, use_bias=False), (128,), (1280, 0)),
        (BatchNormalization(), (24, 24, 64), (128, 128)),  # gamma, beta | moving mean, variance
        (BatchNormalization(), (512,), (1024, 1024)),
    ],
)
def test_keras_param_formulas(layer, input_shape, expected):
    assert layer.param_counts([input_shape]) == expected


def test_keras_param_formulas_in_a_model():
    spec = parse_model(
        {
            "id": "mnist-cnn",
            "input": [28, 28, 1],
            "layers": [
                {"type": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"},
                {"type": "Conv2D", "filters": 64, "kernel_size": 3, "activation": "relu"},
                {"type": "BatchNormalization"},
                {"type": "MaxPooling2D", "pool_size": 2},
                {"type": "Flatten"},
                {"type": "Dense", "units": 128, "activation": "relu"},
                {"type": "Dense", "units": 10, "activation": "softmax"},
            ],
        }
    )
    rows = {row["name"]: row for row in summary_data(spec)["layers"]}
    assert rows["conv2d_1"]["params"] == 320
    assert rows["batch_normalization_1"]["params"] == 256
    assert rows["flatten_1"]["output_shape"] == [None, 9216]
    assert rows["dense_1"]["params"] == 1_179_776
    resolved = resolve(spec)
    assert resolved.non_trainable_params == 128
    assert resolved.total_params == 320 + 18496 + 256 + 1_179_776 + 1290
    assert module_counts(build_model(spec)) == (resolved.total_params, resolved.trainable_params)


# --- the CLI --------------------------------------------------------------------------------------



def test_cli_summary_text(monkeypatch, capsys):
    code, out, err = run_cli("summary", "s002-m10")
    assert code == 0, err
    assert "Total params: 37,987,722" in out
    assert "Trainable params: 37,986,442" in out
    assert "Non-trainable params: 1,280" in out
    assert "merged_layers (Concatenate)" in out
    assert "(None, 28, 28, 128)" in out


def test_cli_summary_json(monkeypatch, capsys):
    code, out, err = run_cli("summary", "s002-m10", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"layers", "total_params", "trainable_params", "non_trainable_params"} <= data.keys()
    assert (data["total_params"], data["trainable_params"], data["non_trainable_params"]) == (37987722, 37986442, 1280)
    for row in data["layers"]:
        assert {"name", "type", "output_shape", "params"} <= row.keys()
    printed = zoo_models()["s002-m10"].reference["summary"]["layers"]
    assert [(r["type"], r["output_shape"][1:], r["params"]) for r in data["layers"]] == [
        (r["type"], r["output_shape"], r["params"]) for r in printed
    ]
    assert data["layers"][0]["type"] == "InputLayer"


def test_cli_summary_of_a_spec_file(monkeypatch, capsys, tmp_path):
    path = tmp_path / "mlp.yaml"
    path.write_text("id: mlp\ninput: [784]\nlayers:\n  - {type: Dense, units: 10, activation: softmax}\n")
    code, out, err = run_cli("summary", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["total_params"] == 7850


def test_cli_zoo_lists_every_model(monkeypatch, capsys):
    code, out, err = run_cli("zoo")
    assert code == 0, err
    first_cells = [m.group(1) for m in re.finditer(r"^\s*[│|]\s*(s\d{3}-m\d+)\s", out, re.MULTILINE)]
    assert first_cells == ZOO_IDS  # one row each, in notebook order (descriptions may mention ids too)
    assert "37,987,722" in out

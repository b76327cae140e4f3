"""Kernel initializers against the distributions Keras 2.2 defines.

Keras 2.2.4 (keras/initializers.py): glorot_uniform / he_uniform draw U(-limit, limit) with
limit = sqrt(6 / fan); glorot_normal / he_normal draw a normal truncated at two standard deviations
whose raw stddev is sqrt(2 / fan) / 0.87962566103423978 (scipy.stats.truncnorm.std(-2, 2)), so the
truncated draw has stddev sqrt(2 / fan). fan_in / fan_out are computed here by hand from the
layer sizes (receptive field x channels for a conv). Draws are at fixed seeds, so the
Kolmogorov-Smirnov p-values below are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from torch import nn

from mnistlab.nn.build import build_model, fans, init_kernel
from mnistlab.spec.fields import Initializer
from mnistlab.spec.parse import parse_model
from mnistlab.zoo import zoo_models

TRUNCNORM_STD = 0.87962566103423978


def _dense(n_in: int, n_out: int) -> tuple[torch.Tensor, int, int]:
    return nn.Linear(n_in, n_out).weight, n_in, n_out


def _conv(k: int, c_in: int, c_out: int) -> tuple[torch.Tensor, int, int]:
    return nn.Conv2d(c_in, c_out, k).weight, k * k * c_in, k * k * c_out


# (id, factory) - big enough for tight statistics; some with fan_in != fan_out to catch swaps.
KERNELS = {
    "dense_1000x1000": lambda: _dense(1000, 1000),
    "dense_800x200": lambda: _dense(800, 200),
    "conv_5x5x64x64": lambda: _conv(5, 64, 64),
    "conv_3x3x128x32": lambda: _conv(3, 128, 32),
}


def truncnorm2_cdf(z: np.ndarray) -> np.ndarray:
    """CDF of the standard normal truncated to [-2, 2] (scipy.stats.truncnorm(-2, 2).cdf, vectorised fast)."""
    lo, hi = scipy.special.ndtr(-2.0), scipy.special.ndtr(2.0)
    return np.clip((scipy.special.ndtr(z) - lo) / (hi - lo), 0.0, 1.0)


def draw(kernel_id: str, init: Initializer, seed: int = 1234) -> tuple[np.ndarray, int, int]:
    weight, fan_in, fan_out = KERNELS[kernel_id]()
    init_kernel(weight, init, torch.Generator().manual_seed(seed))
    return weight.detach().double().numpy().ravel(), fan_in, fan_out


@pytest.mark.parametrize("kernel_id", list(KERNELS))
def test_fans_are_keras_fans(kernel_id):
    weight, fan_in, fan_out = KERNELS[kernel_id]()
    assert fans(weight) == (fan_in, fan_out)


def test_hand_computed_fans():
    assert _conv(5, 64, 64)[1:] == (1600, 1600)
    assert _conv(3, 128, 32)[1:] == (1152, 288)


@pytest.mark.parametrize("kernel_id", list(KERNELS))
@pytest.mark.parametrize(
    ("name", "limit_of"),
    [
        ("glorot_uniform", lambda fi, fo: math.sqrt(6.0 / (fi + fo))),
        ("he_uniform", lambda fi, fo: math.sqrt(6.0 / fi)),
    ],
    ids=["glorot_uniform", "he_uniform"],
)
def test_uniform_initializers(kernel_id, name, limit_of):
    w, fan_in, fan_out = draw(kernel_id, Initializer(name=name))
    limit = limit_of(fan_in, fan_out)
    assert np.abs(w).max() <= limit * (1 + 1e-6)
    assert w.max() == pytest.approx(limit, rel=1e-3)
    assert w.min() == pytest.approx(-limit, rel=1e-3)
    assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    assert abs(w.mean()) < 5 * limit / math.sqrt(3 * w.size)
    p = scipy.stats.kstest(w, scipy.stats.uniform(loc=-limit, scale=2 * limit).cdf).pvalue
    assert p > 1e-3


@pytest.mark.parametrize("kernel_id", list(KERNELS))
@pytest.mark.parametrize(
    ("name", "variance_of"),
    [
        ("he_normal", lambda fi, fo: 2.0 / fi),
        ("glorot_normal", lambda fi, fo: 2.0 / (fi + fo)),
    ],
    ids=["he_normal", "glorot_normal"],
)
def test_truncated_normal_initializers(kernel_id, name, variance_of):
    w, fan_in, fan_out = draw(kernel_id, Initializer(name=name))
    target_std = math.sqrt(variance_of(fan_in, fan_out))
    sigma_raw = target_std / TRUNCNORM_STD
    assert np.abs(w).max() <= 2 * sigma_raw * (1 + 1e-6)  # truncated at two raw stddevs
    assert np.abs(w).max() == pytest.approx(2 * sigma_raw, rel=1e-2)  # ...and the tails reach it
    assert w.std() == pytest.approx(target_std, rel=0.02)
    assert abs(w.mean()) < 5 * target_std / math.sqrt(w.size)
    p = scipy.stats.kstest(w, lambda x: truncnorm2_cdf(x / sigma_raw)).pvalue
    assert p > 1e-3


def test_truncnorm_constant_and_cdf_are_scipys():
    assert scipy.stats.truncnorm(-2, 2).std() == pytest.approx(TRUNCNORM_STD, rel=1e-12)
    z = np.linspace(-2.5, 2.5, 101)
    np.testing.assert_allclose(truncnorm2_cdf(z), scipy.stats.truncnorm(-2, 2).cdf(z), atol=1e-12)


@pytest.mark.parametrize(("mean", "stddev"), [(0.0, 0.039), (0.0, 0.55), (0.0, 0.05), (0.5, 0.125)])
@pytest.mark.parametrize("kernel_id", ["dense_1000x1000", "conv_5x5x64x64"])
def test_random_normal(kernel_id, mean, stddev):
    w, _, _ = draw(kernel_id, Initializer(name="random_normal", mean=mean, stddev=stddev))
    assert w.mean() == pytest.approx(mean, abs=5 * stddev / math.sqrt(w.size))
    assert w.std() == pytest.approx(stddev, rel=0.02)
    p = scipy.stats.kstest(w, scipy.stats.norm(loc=mean, scale=stddev).cdf).pvalue
    assert p > 1e-3


def test_random_normal_defaults_are_keras():
    init = Initializer(name="random_normal")
    assert (init.mean, init.stddev) == (0.0, 0.05)


@pytest.mark.parametrize("kernel_id", list(KERNELS))
def test_zeros(kernel_id):
    w, _, _ = draw(kernel_id, Initializer(name="zeros"))
    assert not w.any()


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("GlorotUniform", "glorot_uniform"), ("HeNormal", "he_normal"), ("RandomNormal", "random_normal"),
     ("he_uniform", "he_uniform"), ("Zeros", "zeros"), ("normal", "random_normal")],
)
def test_keras_class_spellings(spelling, canonical):
    assert Initializer.model_validate({"name": spelling}).name == canonical


# --- reproducibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["glorot_uniform", "he_uniform", "he_normal", "glorot_normal", "random_normal"])
def test_same_seed_same_weights_other_seed_different(name):
    a, _, _ = draw("dense_800x200", Initializer(name=name), seed=7)
    b, _, _ = draw("dense_800x200", Initializer(name=name), seed=7)
    c, _, _ = draw("dense_800x200", Initializer(name=name), seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model_id", ["s000-m8", "s003-m2", "s004-m4"])
def test_build_model_seeded(model_id):
    spec = zoo_models()[model_id]
    first, again, other = (_state(build_model(spec, seed=s)) for s in (3, 3, 4))
    assert first.keys() == again.keys() == other.keys()
    for key in first:
        torch.testing.assert_close(first[key], again[key], rtol=0, atol=0)
    kernels = [k for k in first if k.endswith("weight") and first[k].dim() >= 2]
    assert kernels
    assert all(not torch.equal(first[k], other[k]) for k in kernels)


# --- what build_model puts in place -------------------------------------------------------------


@pytest.mark.parametrize("model_id", ["s000-m8", "s002-m1", "s003-m2", "s004-m7"])
def test_biases_zero_and_batchnorm_keras_defaults(model_id):
    model = build_model(zoo_models()[model_id], seed=11)
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None]
    assert biases
    assert all(not b.any() for b in biases)
    for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))  # gamma
        assert not bn.bias.any()  # beta
        assert not bn.running_mean.any()
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def test_use_bias_false_builds_no_bias():
    spec = parse_model(
        {"id": "nobias", "input": [784], "layers": [{"type": "Dense", "units": 10, "activation": "softmax", "use_bias": False}]}
    )
    linear = next(m for m in build_model(spec).modules() if isinstance(m, nn.Linear))
    assert linear.bias is None


def test_build_model_uses_each_layers_initializer():
    # s004-m4: Dense 784->256 RandomNormal(0, 0.039), BN, Dense 256->64 RandomNormal(0, 0.55), BN,
    # Dense 64->10 glorot_uniform (Keras's default, the output layer names none).
    model = build_model(zoo_models()["s004-m4"], seed=0)
    linears = [m.weight.detach().double().numpy().ravel() for m in model.modules() if isinstance(m, nn.Linear)]
    first, second, out = linears
    assert first.std() == pytest.approx(0.039, rel=0.02)
    assert second.std() == pytest.approx(0.55, rel=0.03)
    limit = math.sqrt(6.0 / (64 + 10))
    assert np.abs(out).max() <= limit * (1 + 1e-6)
    assert np.abs(out).max() > 0.9 * limit


def test_build_model_he_normal_dense():
    # s003-m2's Dense 80->256 is he_normal: truncated at 2*sqrt(2/80)/0.8796, stddev sqrt(2/80).
    model = build_model(zoo_models()["s003-m2"], seed=0)
    w = next(m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == 80).weight
    w = w.detach().double().numpy().ravel()
    target = math.sqrt(2.0 / 80)
    assert np.abs(w).max() <= 2 * target / TRUNCNORM_STD * (1 + 1e-6)
    assert w.std() == pytest.approx(target, rel=0.03)

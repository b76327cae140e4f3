"""TensorFlow padding semantics: static shapes (spec resolution) against real torch tensors.

'same' gives ceil(in / stride) with the odd padding pixel on the bottom/right; 'valid' gives
floor((in - k) / stride) + 1. Expected values are computed here from those formulas and from a
NumPy transcription of TensorFlow's conv / max-pool, sharing no code with mnistlab.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnistlab.nn.build import build_model
from mnistlab.spec.model import resolve
from mnistlab.spec.parse import parse_model

KERNELS = [1, 2, 3, 4, 5]
STRIDES = [1, 2, 3]
SIZES = list(range(5, 13))  # input heights 5..12; widths run the other way (12..5)
PADDINGS = ["same", "valid"]
SOFTMAX = {"type": "Dense", "units": 10, "activation": "softmax"}


def tf_out(size: int, kernel: int, stride: int, padding: str) -> int:
    """TensorFlow's output length, restated from its documentation."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def tf_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after): the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def one_layer_model(layer: dict, input_shape: list[int]):
    """A model whose first layer is `layer`, completed so that it validates (Flatten, softmax)."""
    spec = parse_model(
        {"id": "probe", "input": input_shape, "layers": [layer, {"type": "Flatten"}, SOFTMAX]}
    )
    return spec


def first_layer_output(spec, x: torch.Tensor) -> torch.Tensor:
    model = build_model(spec, seed=0).eval()
    with torch.no_grad():
        return model.layers[0](x)


def nchw_to_hwc(t: torch.Tensor) -> tuple[int, ...]:
    n, c, h, w = t.shape
    return (h, w, c)


# --- NumPy reference: TensorFlow conv2d / max_pool with explicit (before, after) padding ------


def np_tf_conv(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], padding: str) -> np.ndarray:
    """x: (C, H, W), w: (F, C, kh, kw) → (F, H', W'), cross-correlation as TF computes it."""
    _, h, wd = x.shape
    f, _, kh, kw = w.shape
    if padding == "same":
        (pt, pb), (pl, pr) = tf_pads(h, kh, stride[0]), tf_pads(wd, kw, stride[1])
    else:
        pt = pb = pl = pr = 0
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr)))
    oh, ow = tf_out(h, kh, stride[0], padding), tf_out(wd, kw, stride[1], padding)
    out = np.zeros((f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw]
            out[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return out


def np_tf_maxpool(x: np.ndarray, pool: tuple[int, int], stride: tuple[int, int], padding: str) -> np.ndarray:
    """x: (C, H, W) → (C, H', W'); TF never lets a padded position win."""
    _, h, wd = x.shape
    if padding == "same":
        (pt, pb), (pl, pr) = tf_pads(h, pool[0], stride[0]), tf_pads(wd, pool[1], stride[1])
    else:
        pt = pb = pl = pr = 0
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr)), constant_values=-np.inf)
    oh, ow = tf_out(h, pool[0], stride[0], padding), tf_out(wd, pool[1], stride[1], padding)
    out = np.empty((x.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = xp[:, i * stride[0] : i * stride[0] + pool[0], j * stride[1] : j * stride[1] + pool[1]].max(axis=(1, 2))
    return out


# --- the formulas themselves ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [
        (28, 3, 1, "valid", 26),
        (28, 3, 1, "same", 28),
        (28, 2, 2, "valid", 14),
        (5, 2, 2, "same", 3),
        (5, 2, 2, "valid", 2),
        (7, 3, 3, "same", 3),
        (7, 3, 3, "valid", 2),
        (12, 5, 3, "valid", 3),
        (12, 1, 3, "same", 4),
    ],
)
def test_tf_formula_hand_cases(size, kernel, stride, padding, expected):
    assert tf_out(size, kernel, stride, padding) == expected


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [(3, 2, 1, (0, 1)), (5, 4, 1, (1, 2)), (5, 3, 1, (1, 1)), (6, 3, 2, (0, 1)), (4, 1, 2, (0, 0)), (5, 5, 3, (1, 2))],
)
def test_tf_same_padding_puts_odd_pixel_after(size, kernel, stride, pads):
    assert tf_pads(size, kernel, stride) == pads


# --- static (spec) and dynamic (torch) shapes agree with TensorFlow ----------------------------


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_conv2d_output_shape_static_and_real(kernel, stride, padding):
    for height in SIZES:
        width = 17 - height  # a non-square input catches swapped H/W
        layer = {"type": "Conv2D", "filters": 3, "kernel_size": kernel, "strides": stride, "padding": padding}
        spec = one_layer_model(layer, [height, width, 2])
        expected = (tf_out(height, kernel, stride, padding), tf_out(width, kernel, stride, padding), 3)
        assert resolve(spec).nodes[0].output_shape == expected, (height, width)
        real = first_layer_output(spec, torch.zeros(2, 2, height, width))
        assert nchw_to_hwc(real) == expected, (height, width)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("pool", KERNELS)
def test_maxpooling_output_shape_static_and_real(pool, stride, padding):
    for height in SIZES:
        width = 17 - height
        layer = {"type": "MaxPooling2D", "pool_size": pool, "strides": stride, "padding": padding}
        spec = one_layer_model(layer, [height, width, 3])
        expected = (tf_out(height, pool, stride, padding), tf_out(width, pool, stride, padding), 3)
        assert resolve(spec).nodes[0].output_shape == expected, (height, width)
        real = first_layer_output(spec, torch.zeros(2, 3, height, width))
        assert nchw_to_hwc(real) == expected, (height, width)


@pytest.mark.parametrize("pool", [2, 3])
def test_maxpooling_strides_default_to_pool_size(pool):
    spec = one_layer_model({"type": "MaxPooling2D", "pool_size": pool}, [12, 11, 1])
    expected = ((12 - pool) // pool + 1, (11 - pool) // pool + 1, 1)
    assert resolve(spec).nodes[0].output_shape == expected
    assert nchw_to_hwc(first_layer_output(spec, torch.zeros(1, 1, 12, 11))) == expected


@pytest.mark.parametrize(
    ("kernel", "strides", "padding", "input_shape"),
    [
        ([2, 3], [1, 2], "same", [7, 10, 1]),
        ([3, 2], [2, 1], "same", [8, 9, 2]),
        ([1, 4], [3, 2], "valid", [11, 6, 1]),
        ([5, 1], [1, 3], "valid", [9, 12, 1]),
    ],
)
def test_rectangular_kernels_and_strides(kernel, strides, padding, input_shape):
    h, w, c = input_shape
    for layer in (
        {"type": "Conv2D", "filters": 2, "kernel_size": kernel, "strides": strides, "padding": padding},
        {"type": "MaxPooling2D", "pool_size": kernel, "strides": strides, "padding": padding},
    ):
        spec = one_layer_model(layer, input_shape)
        channels = 2 if layer["type"] == "Conv2D" else c
        expected = (tf_out(h, kernel[0], strides[0], padding), tf_out(w, kernel[1], strides[1], padding), channels)
        assert resolve(spec).nodes[0].output_shape == expected
        assert nchw_to_hwc(first_layer_output(spec, torch.zeros(1, c, h, w))) == expected


@pytest.mark.parametrize(("size", "kernel", "stride"), [(3, 5, 1), (3, 5, 3), (2, 4, 1), (4, 5, 2)])
def test_same_allows_window_larger_than_input(size, kernel, stride):
    # TensorFlow accepts it with 'same' (only 'valid' needs k <= in).
    for layer in (
        {"type": "Conv2D", "filters": 2, "kernel_size": kernel, "strides": stride, "padding": "same"},
        {"type": "MaxPooling2D", "pool_size": kernel, "strides": stride, "padding": "same"},
    ):
        spec = one_layer_model(layer, [size, size, 2])
        expected = (math.ceil(size / stride), math.ceil(size / stride), 2)
        assert resolve(spec).nodes[0].output_shape == expected
        assert nchw_to_hwc(first_layer_output(spec, torch.randn(1, 2, size, size))) == expected


# --- values: TF's padding placement -----------------------------------------------------------


def _set_kernel(spec, kernel: np.ndarray):
    model = build_model(spec, seed=0).eval()
    conv = next(m for m in model.layers[0].modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(kernel, dtype=torch.float32))
        if conv.bias is not None:
            conv.bias.zero_()
    return model


def _conv_2x2_same_on_3x3(tap: tuple[int, int]) -> np.ndarray:
    spec = one_layer_model(
        {"type": "Conv2D", "filters": 1, "kernel_size": 2, "padding": "same"}, [3, 3, 1]
    )
    kernel = np.zeros((1, 1, 2, 2))
    kernel[0, 0, tap[0], tap[1]] = 1.0
    model = _set_kernel(spec, kernel)
    x = torch.arange(1, 10, dtype=torch.float32).reshape(1, 1, 3, 3)  # no zeros among the real pixels
    with torch.no_grad():
        return model.layers[0](x)[0, 0].numpy()


def test_same_conv_even_kernel_pads_nothing_on_top_left():
    # The top-left tap reads the window's own corner: with the padding all on the bottom/right,
    # every output is the input pixel itself (PyTorch-style top/left padding would shift it).
    out = _conv_2x2_same_on_3x3((0, 0))
    np.testing.assert_array_equal(out, np.arange(1, 10).reshape(3, 3))


def test_same_conv_even_kernel_pads_bottom_and_right():
    # The bottom-right tap reads one pixel down-right: the last row and column hit the padding.
    out = _conv_2x2_same_on_3x3((1, 1))
    expected = np.array([[5, 6, 0], [8, 9, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("size", "kernel", "stride"),
    [(3, 2, 1), (5, 4, 1), (6, 3, 2), (5, 2, 2), (7, 5, 3), (8, 4, 3), (9, 3, 1), (10, 5, 2)],
)
def test_same_conv_values_equal_tensorflow_reference(size, kernel, stride):
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    width = size + 1
    spec = one_layer_model(
        {"type": "Conv2D", "filters": 3, "kernel_size": kernel, "strides": stride, "padding": "same"}, [size, width, 2]
    )
    weights = rng.standard_normal((3, 2, kernel, kernel))
    model = _set_kernel(spec, weights)
    x = rng.standard_normal((2, size, width))
    with torch.no_grad():
        real = model.layers[0](torch.as_tensor(x[None], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(real, np_tf_conv(x, weights, (stride, stride), "same"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("size", "pool", "stride"),
    [(3, 2, 1), (5, 2, 2), (5, 3, 1), (7, 3, 2), (7, 4, 3), (8, 5, 3), (28, 3, 1), (11, 2, 2)],
)
def test_same_maxpool_values_equal_tensorflow_reference(size, pool, stride):
    rng = np.random.default_rng(size * 100 + pool * 10 + stride)
    spec = one_layer_model(
        {"type": "MaxPooling2D", "pool_size": pool, "strides": stride, "padding": "same"}, [size, size + 2, 2]
    )
    x = rng.standard_normal((2, size, size + 2))
    real = first_layer_output(spec, torch.as_tensor(x[None], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(real, np_tf_maxpool(x, (pool, pool), (stride, stride), "same"), rtol=1e-6)


@pytest.mark.parametrize(("size", "pool", "stride"), [(3, 2, 1), (5, 3, 1), (5, 2, 2), (7, 4, 3), (6, 5, 1)])
def test_same_maxpool_never_selects_padding(size, pool, stride):
    # All inputs negative: a zero-valued pad would win every window it touches.
    x = -1.0 - torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)
    spec = one_layer_model(
        {"type": "MaxPooling2D", "pool_size": pool, "strides": stride, "padding": "same"}, [size, size, 1]
    )
    out = first_layer_output(spec, x)
    assert out.shape[-2:] == (math.ceil(size / stride), math.ceil(size / stride))
    assert torch.isfinite(out).all()
    assert (out < 0).all(), out
    assert set(out.flatten().tolist()) <= set(x.flatten().tolist())


# --- Concatenate: the static axis is the real one ---------------------------------------------


@pytest.mark.parametrize(("axis", "expected"), [(-1, (6, 6, 5)), (2, (6, 6, 5)), (0, (12, 6, 2)), (1, (6, 12, 2))])
def test_concatenate_axis_static_equals_real(axis, expected):
    conv = {"type": "Conv2D", "kernel_size": 3, "padding": "same", "inputs": ["input"]}
    spec = parse_model(
        {
            "id": "concat",
            "input": [6, 6, 1],
            "layers": [
                {**conv, "name": "a", "filters": 2},
                {**conv, "name": "b", "filters": 2 if axis in (0, 1) else 3},  # channels must match off-axis
                {"name": "m", "type": "Concatenate", "axis": axis, "inputs": ["a", "b"]},
                {"name": "f", "type": "Flatten", "inputs": ["m"]},
                {**SOFTMAX, "inputs": ["f"]},
            ],
        }
    )
    resolved = resolve(spec)
    assert resolved.nodes[2].output_shape == expected
    model = build_model(spec).eval()
    seen = {}
    handle = model.layers[2].register_forward_hook(lambda _m, _i, out: seen.setdefault("m", out))
    with torch.no_grad():
        model(torch.zeros(1, 1, 6, 6))
    handle.remove()
    assert nchw_to_hwc(seen["m"]) == expected

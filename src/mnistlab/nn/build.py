"""Spec → torch.nn.Module with Keras 2.2 semantics.

Tensors run in PyTorch's NCHW layout; shapes are reported in Keras's (H, W, C). TensorFlow
'same' padding is reproduced exactly (the odd pixel on the bottom/right), max-pooling pads with
-inf so padding is never picked, BatchNormalization uses Keras's momentum and epsilon, and
kernels are drawn with Keras 2.2's initializers from a seeded generator. The final softmax is
not applied in `forward`: the engine takes log_softmax of the logits, which equals Keras's
clipped cross-entropy on probabilities without its float underflow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.nn.fused import fuse_chains
from mnistlab.nn.rng import SeededDropout
from mnistlab.spec.layers import (
    Activation,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPooling2D,
    same_padding,
)
from mnistlab.spec.fields import Initializer
from mnistlab.spec.model import INPUT_NAME, ModelSpec, Node, Resolved, resolve

# scipy.stats.truncnorm.std(a=-2, b=2): Keras 2.2.3+ divides by it so that the truncated
# normal has the intended variance after truncation at two standard deviations.
_TRUNCATED_STD = 0.87962566103423978

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "linear": nn.Identity,
    "softmax": nn.Identity,  # only allowed last; the loss applies log_softmax to the logits
}


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """Keras's fan_in / fan_out: receptive field × channels for convs, in/out for Dense."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def init_kernel(weight: torch.Tensor, init: Initializer, generator: torch.Generator) -> None:
    """Fill a kernel as the Keras 2.2 initializer of that name would."""
    fan_in, fan_out = fans(weight)
    with torch.no_grad():
        if init.name == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            weight.uniform_(-limit, limit, generator=generator)
        elif init.name == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            weight.uniform_(-limit, limit, generator=generator)
        elif init.name in ("glorot_normal", "he_normal"):
            variance = 2.0 / (fan_in + fan_out) if init.name == "glorot_normal" else 2.0 / fan_in
            std = math.sqrt(variance) / _TRUNCATED_STD
            nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)
        elif init.name == "random_normal":
            weight.normal_(init.mean, init.stddev, generator=generator)
        elif init.name == "zeros":
            weight.zero_()
        else:  # pragma: no cover - the spec's Literal rules this out
            raise ValueError(init.name)


class TFSamePad(nn.Module):
    """Asymmetric TensorFlow 'same' padding; `value=-inf` for pooling so pads never win."""

    def __init__(self, pads: tuple[int, int, int, int], value: float = 0.0) -> None:
        super().__init__()
        self.pads = pads  # (left, right, top, bottom) as F.pad wants
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, value=self.value)


def _padding_for(node: Node, kernel: tuple[int, int], strides: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = node.input_shapes[0][0], node.input_shapes[0][1]
    top, bottom = same_padding(height, kernel[0], strides[0])
    left, right = same_padding(width, kernel[1], strides[1])
    return (left, right, top, bottom)


# Measured on a 2-core Zen 4 (benchmarks/): oneDNN's conv backward runs 'valid' convs with a
# handful of output pixels at 15-70 GFLOP/s against ~200 for large ones (s002-m10's 3x3 kernel on
# a 3x3 input); the same maths as unfold + one GEMM runs near peak. Below 64 input channels the
# conv is cheap either way; above 9 output pixels the GEMM form measured slower.
GEMM_MAX_OUTPUT_PIXELS = 9
# The fused forms of fused.py (ReLU → BatchNormalization → Dropout as one autograd Function, the
# 1x1 convs feeding them as matmuls in channels-last). False builds the plain modules: the
# benchmarks' "before" and the equality tests' reference.
FUSED = True
GEMM_MIN_IN_CHANNELS = 64


class ConvAsGemm(nn.Module):
    """A stride-1, unpadded convolution computed as unfold + matmul on the conv's own weight.

    `gemm` False runs the wrapped conv itself: the form a machine's probe chose (cpu_paths.py),
    with the same parameters and state dict keys either way."""

    def __init__(self, conv: nn.Conv2d, out_hw: tuple[int, int]) -> None:
        super().__init__()
        self.conv = conv  # keeps the parameters (and their names) where weight plots look for them
        self.out_hw = out_hw
        self.gemm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gemm:
            return self.conv(x)
        weight = self.conv.weight.reshape(self.conv.out_channels, -1)
        batch = x.shape[0]
        if self.out_hw == (1, 1):  # the kernel covers the input: a Dense layer on (C, H, W)
            y = F.linear(x.reshape(batch, -1), weight, self.conv.bias)
            return y.reshape(batch, -1, 1, 1)
        columns = F.unfold(x, self.conv.kernel_size).transpose(1, 2)  # (N, pixels, C*kh*kw)
        y = F.linear(columns, weight, self.conv.bias)
        return y.transpose(1, 2).reshape(batch, -1, *self.out_hw)


def _fast_form(conv: nn.Conv2d, node: Node) -> nn.Module:
    out_h, out_w = node.output_shape[0], node.output_shape[1]
    small = out_h * out_w <= GEMM_MAX_OUTPUT_PIXELS and conv.in_channels >= GEMM_MIN_IN_CHANNELS
    if small and conv.padding == (0, 0) and conv.stride == (1, 1):
        return ConvAsGemm(conv, (out_h, out_w))
    return conv


def _conv(node: Node, layer: Conv2D, generator: torch.Generator) -> nn.Module:
    conv = nn.Conv2d(node.input_shapes[0][2], layer.filters, layer.kernel_size, layer.strides, bias=layer.use_bias)
    init_kernel(conv.weight, layer.kernel_initializer, generator)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    parts: list[nn.Module] = []
    if layer.padding == "same":
        pads = _padding_for(node, layer.kernel_size, layer.strides)
        left, right, top, bottom = pads
        if left == right and top == bottom:
            conv.padding = (top, left)  # symmetric: let the convolution pad, no extra copy
        else:
            parts.append(TFSamePad(pads))
    parts += [_fast_form(conv, node), _ACTIVATIONS[layer.activation]()]
    return nn.Sequential(*parts)


def _pool(node: Node, layer: MaxPooling2D) -> nn.Module:
    strides = layer.effective_strides
    pool = nn.MaxPool2d(layer.pool_size, strides)
    if layer.padding == "same" and any(_padding_for(node, layer.pool_size, strides)):
        return nn.Sequential(TFSamePad(_padding_for(node, layer.pool_size, strides), value=-math.inf), pool)
    return pool


def _dense(node: Node, layer: Dense, generator: torch.Generator) -> nn.Module:
    linear = nn.Linear(node.input_shapes[0][0], layer.units, bias=layer.use_bias)
    init_kernel(linear.weight, layer.kernel_initializer, generator)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return nn.Sequential(linear, _ACTIVATIONS[layer.activation]())


def _batch_norm(node: Node, layer: BatchNormalization) -> nn.Module:
    features = node.input_shapes[0][-1]
    cls = nn.BatchNorm2d if len(node.input_shapes[0]) == 3 else nn.BatchNorm1d
    # PyTorch's momentum is the weight of the new batch statistic; Keras's is the old value's.
    return cls(features, eps=layer.epsilon, momentum=1.0 - layer.momentum)


class Concat(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


def _torch_axis(node: Node, axis: int) -> int:
    """Keras axis over (H, W, C) → PyTorch axis over (N, C, H, W) or (N, F)."""
    rank = len(node.input_shapes[0])
    axis = axis if axis >= 0 else rank + axis
    return {0: 2, 1: 3, 2: 1}[axis] if rank == 3 else axis + 1


def layer_module(node: Node, generator: torch.Generator) -> nn.Module:
    """The torch module computing one node."""
    layer: Layer = node.layer
    if isinstance(layer, Conv2D):
        return _conv(node, layer, generator)
    if isinstance(layer, MaxPooling2D):
        return _pool(node, layer)
    if isinstance(layer, Dense):
        return _dense(node, layer, generator)
    if isinstance(layer, BatchNormalization):
        return _batch_norm(node, layer)
    if isinstance(layer, Dropout):
        return SeededDropout(layer.rate)  # masks from the run's own generator (rng.py)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Activation):
        return _ACTIVATIONS[layer.activation]()
    if isinstance(layer, Concatenate):
        return Concat(_torch_axis(node, layer.axis))
    raise TypeError(f"no builder for {type(layer).__name__}")  # pragma: no cover


class KerasModel(nn.Module):
    """A built spec. `forward` takes float inputs in NCHW (or N×features) and returns logits."""

    def __init__(self, resolved: Resolved, seed: int = 0, fused: bool | None = None) -> None:
        super().__init__()
        self.resolved = resolved
        generator = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(layer_module(node, generator) for node in resolved.nodes)
        if (FUSED if fused is None else fused) and _fusable(resolved):  # ReLU → BN → Dropout as one op (fused.py)
            fuse_chains(self.layers)
        names = [INPUT_NAME] + [node.name for node in resolved.nodes]
        # Each node reads its inputs by position in the list of values computed so far.
        self._wiring = [tuple(names.index(i) for i in node.inputs) for node in resolved.nodes]
        self._sequential = not resolved.is_graph
        self.input_shape = resolved.spec.input

    @property
    def spec(self) -> ModelSpec:
        return self.resolved.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._sequential:
            for layer in self.layers:
                x = layer(x)
            return x
        values = [x]
        for layer, wiring in zip(self.layers, self._wiring):
            values.append(layer(*(values[i] for i in wiring)))
        return values[-1]

    def weighted_layers(self) -> list[tuple[str, torch.Tensor]]:
        """(layer name, kernel) for each Conv2D / Dense, for weight-distribution plots."""
        out = []
        for node, module in zip(self.resolved.nodes, self.layers):
            for sub in module.modules():
                if isinstance(sub, (nn.Conv2d, nn.Linear)):
                    out.append((node.name, sub.weight))
        return out


def _fusable(resolved: Resolved) -> bool:
    """Sequential, with BatchNormalization: fused.py has a chain to fuse."""
    return not resolved.is_graph and any(isinstance(n.layer, BatchNormalization) for n in resolved.nodes)


def fuses(resolved: Resolved) -> bool:
    """Whether `build_model` (fused=None) runs fused.py's chains for this model."""
    return FUSED and _fusable(resolved)


def build_model(spec: ModelSpec | Resolved, seed: int = 0, fused: bool | None = None) -> KerasModel:
    """Build a model with Keras 2.2 initialisation drawn from `seed`."""
    resolved = spec if isinstance(spec, Resolved) else resolve(spec)
    return KerasModel(resolved, seed=seed, fused=fused)


def prepare_input(images: torch.Tensor, input_shape: tuple[int, ...],
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, H, W) images → float in [0, 1], shaped (N, 1, H, W) or (N, H*W) for the model."""
    x = images.to(dtype).div_(255.0) if images.dtype == torch.uint8 else images.to(dtype)
    if len(input_shape) == 1:
        return x.reshape(x.shape[0], -1)
    return x.reshape(x.shape[0], input_shape[2], input_shape[0], input_shape[1])

"""Fused forms of the memory-bound layer chains: 1x1 convolutions and ReLU → BatchNormalization → Dropout.

Why: s000-m6 and s000-m9 (1x1 convs, each followed by BatchNormalization, dropout and pooling on
28×28 maps) spend their time in element-wise passes, not in matmuls. torch.profiler on this
2-core CPU (benchmarks/RESULTS.md) put s000-m6's step in oneDNN's backward of the 1x1 convolutions
(~30%: a 1x1 conv in NCHW is one matrix product per image, which oneDNN runs far below peak),
`bernoulli_` drawing the dropout masks (~22%), and the separate mul / div / fill / threshold
passes of ReLU, dropout and their backwards (~30%).

What this module does instead, keeping Keras's maths exactly:
- `PointwiseConv2d`: a 1x1, stride-1, unpadded convolution as one `F.linear` over channels-last
  pixels; its output stays channels-last, so the batch norm, pooling and next 1x1 of the chain
  run on contiguous channels too.
- `bn_dropout`: ReLU (optional), training-mode BatchNormalization and inverted dropout as one
  autograd Function: the dropout scale 1/(1-rate) is folded into BatchNormalization's gamma and
  beta (one kernel writes the scaled output), the mask (1.0 kept, 0.0 dropped; float, so applying
  it is a vectorised multiply) is applied in place, and the backward is one multiply, one
  BatchNormalization-backward kernel and one ReLU-backward pass. Masks are drawn by
  `dropout_mask` exactly as rng.py draws them (`torch.rand` >= rate, from the run's dropout
  generator), which is ~3x cheaper per element than `bernoulli_` here.
- `fuse_chains`: rewrites a built sequential model's layers in place (same parameters, same state
  dict keys), so checkpoints, exports and the stacked bundle layout see the same model.

All functions work on (N, C, H, W) or (N, C) tensors with per-channel parameters, so a bundle of
K seeds laid out as (N, K·C, H, W) uses them unchanged (masks drawn per seed and concatenated).
`tests/test_fused.py` checks the fused forms against the unfused ops in float64, forward and
backward, with the same masks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.nn.rng import SeededDropout

# Recorded in the checkpoint identity: the fused kernels round differently from the plain ops, so
# a run checkpointed by one continues (within rounding, not bit for bit) differently under the other.
FUSED_SCHEME = "fused-v1"


def dropout_mask(shape: torch.Size | tuple[int, ...], rate: float, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Which units dropout keeps: 1.0 with probability 1 - rate, else 0.0 (Keras drops `rate`).

    The same draw as rng.keep_mask (one float32 `torch.rand` of the input's shape, kept where
    >= rate), so fused and plain models, single runs and bundles drop the same units; float, not
    bool: a bool mask costs a conversion pass (mul) or runs unvectorised (masked_fill_).
    """
    return torch.rand(shape, generator=generator, device=device).ge_(rate)


class _BNDropout(torch.autograd.Function):
    """ReLU? → training-mode batch norm → inverted dropout with a given mask, in few passes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                keep: torch.Tensor | None, scale: float, momentum: float, eps: float,
                relu: bool) -> torch.Tensor:
        a = torch.relu(x) if relu else x
        # Dropout's 1/(1-rate) folded into gamma and beta: one kernel normalises and scales.
        w, b = (weight * scale, bias * scale) if scale != 1.0 else (weight, bias)
        out, save_mean, save_invstd = torch.native_batch_norm(a, w, b, running_mean, running_var, True,
                                                               momentum, eps)
        if keep is not None:
            out.mul_(keep)
        ctx.save_for_backward(a, w, save_mean, save_invstd, keep)
        ctx.scale, ctx.eps, ctx.relu = scale, eps, relu
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, w, save_mean, save_invstd, keep = ctx.saved_tensors
        grad = grad * keep if keep is not None else grad.contiguous()
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_a, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad, a, w, None, None, save_mean, save_invstd, True, ctx.eps, wanted)
        # The kernel saw gamma·scale and beta·scale: their gradients are scale × the true ones'
        # partner terms, so multiply back (grad_a already carries the scale through w).
        if grad_w is not None and ctx.scale != 1.0:
            grad_w = grad_w * ctx.scale
        if grad_b is not None and ctx.scale != 1.0:
            grad_b = grad_b * ctx.scale
        if grad_a is not None and ctx.relu:
            grad_a = torch.ops.aten.threshold_backward(grad_a, a, 0)
        return grad_a, grad_w, grad_b, None, None, None, None, None, None, None


def bn_dropout(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               momentum: float, eps: float, keep: torch.Tensor | None = None, rate: float = 0.0,
               relu: bool = False) -> torch.Tensor:
    """Training-mode `dropout(batch_norm(relu?(x)))` with dropout mask `keep` (None: no dropout).

    Equals inverted dropout `batch_norm(...) * keep / (1 - rate)` after
    `F.batch_norm(..., training=True)`; running statistics are updated in place as that does.
    """
    scale = 1.0 / (1.0 - rate) if keep is not None else 1.0
    return _BNDropout.apply(x, weight, bias, running_mean, running_var, keep, scale, momentum, eps, relu)


def bn_dropout_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                         momentum: float, eps: float, keep: torch.Tensor | None = None, rate: float = 0.0,
                         relu: bool = False) -> torch.Tensor:
    """The same chain as separate PyTorch ops: what `bn_dropout` must equal (and the bf16 path)."""
    a = torch.relu(x) if relu else x
    out = F.batch_norm(a, running_mean, running_var, weight, bias, True, momentum, eps)
    return out * keep / (1.0 - rate) if keep is not None else out


def fused_kernels_apply(x: torch.Tensor) -> bool:
    """Whether `bn_dropout` takes this input: float32/float64 outside autocast (under bf16 autocast
    the chain runs as `bn_dropout_reference`, the separate ops, which autocast handles)."""
    return x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(x.device.type)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, unpadded convolution as one matrix product over channels-last pixels.

    A subclass, so parameter names, checkpoints, exports and weight plots see an ordinary Conv2d.
    Its output is logically (N, C, H, W) but channels-last in memory: the batch norm, pooling and
    the next pointwise conv of a fused chain then run on contiguous channels (vectorised), and the
    matrix product needs no transposed copies.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "PointwiseConv2d":
        new = cls(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None, device="meta")
        new.weight, new.bias = conv.weight, conv.bias  # the very same Parameters
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp = x.permute(0, 2, 3, 1)  # (N, H, W, C): a view, free for channels-last (and 1-channel) input
        # Also for one input channel: a broadcast multiply measured slower (its weight gradient
        # materialises grad * x before summing; the GEMM's does not).
        y = F.linear(xp, self.weight.view(self.out_channels, self.in_channels), self.bias)
        return y.permute(0, 3, 1, 2)


def is_pointwise(conv: nn.Module) -> bool:
    """A convolution `PointwiseConv2d` computes: 1x1, stride 1, no padding, no groups or dilation."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1)


class FusedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNormalization that also applies the activation before it and the Dropout after it.

    Built from the model's own BatchNorm module (same parameters and buffers, so the state dict's
    keys are unchanged); the conv's ReLU and the Dropout module become Identity. In inference
    mode it is ReLU then batch norm on the moving averages (dropout is off), as unfused.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, relu: bool, dropout: SeededDropout | None) -> None:
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.load_state_dict(bn.state_dict())
        self.relu = relu
        # The Dropout module it replaces, kept as a child: the engine hands it the run's generator
        # (rng.set_dropout_generator) and the mask is drawn from it at the same point of the forward.
        self.dropout = dropout
        self.rate = dropout.rate if dropout is not None else 0.0
        self._rank = 4 if isinstance(bn, nn.BatchNorm2d) else 2

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != self._rank:
            raise ValueError(f"expected {self._rank}D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(torch.relu(x) if self.relu else x)
        self.num_batches_tracked.add_(1)
        keep = (dropout_mask(x.shape, self.rate, x.device, self.dropout.generator)
                if self.dropout is not None and self.rate > 0 else None)
        rate = self.rate if keep is not None else 0.0
        if fused_kernels_apply(x):
            return bn_dropout(x, self.weight, self.bias, self.running_mean, self.running_var,
                              float(self.momentum), self.eps, keep, rate, self.relu)
        return bn_dropout_reference(x, self.weight, self.bias, self.running_mean, self.running_var,
                                    float(self.momentum), self.eps, keep, rate, self.relu)


def fuse_chains(layers: nn.ModuleList) -> None:
    """Fuse each [conv/dense with ReLU or linear] → BatchNormalization → Dropout? run in `layers`.

    Only sequential models are passed here, so each layer's output feeds exactly the next one.
    """
    for i, module in enumerate(layers):
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not module.affine:
            continue
        if not module.track_running_stats or module.momentum is None:
            continue
        relu = False
        before = layers[i - 1] if i > 0 else None
        if isinstance(before, nn.Sequential) and isinstance(before[-1], nn.ReLU):
            before[-1] = nn.Identity()
            relu = True
        if isinstance(before, nn.Sequential) and is_pointwise(before[0]):
            before[0] = PointwiseConv2d.from_conv(before[0])
        dropout = None
        if i + 1 < len(layers) and isinstance(layers[i + 1], SeededDropout):
            dropout = layers[i + 1]
            layers[i + 1] = nn.Identity()
        layers[i] = FusedBatchNorm(module, relu, dropout)

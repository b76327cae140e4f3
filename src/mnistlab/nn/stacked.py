"""K copies of one built model as one batched computation (a seed bundle's network).

Layout (chosen by measurement over torch.func's vmap, benchmarks/RESULTS.md): image tensors are
(B, K*C, H, W), seed k owning channels k*C..(k+1)*C-1, so a convolution is one grouped conv
(groups=K), max-pooling and 'same' padding run unchanged, and BatchNormalization is
`F.batch_norm` over K*C channels, which is K BatchNormalizations with per-seed batch statistics
and per-seed moving averages. Feature tensors are (K, B, F): Dense is `torch.baddbmm`.

Each stacked parameter is the K seeds' tensors stacked on a new first dimension, in the order of
the single model's `parameters()`, so an element-wise Keras optimizer over the stacked parameters
keeps per-seed state, and `unstack` writes seed k back into an ordinary `KerasModel`.

Seeds never mix: every operation here is per channel group, per batch matrix or element-wise, so
a NaN in one seed's numbers cannot reach another's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.nn.build import ConvAsGemm, KerasModel, TFSamePad, Concat
from mnistlab.nn.rng import SeededDropout, keep_mask
from mnistlab.nn.fused import FusedBatchNorm, bn_dropout, dropout_mask, fused_kernels_apply

_ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity, TFSamePad, nn.MaxPool2d)


class StackedModel(nn.Module):
    """The seeds of ``models`` (built from one spec) as one network: (B, K*C, H, W) or (K, B, F) in,
    (K, B, classes) logits out."""

    def __init__(self, models: list[KerasModel]) -> None:
        super().__init__()
        template = models[0]
        self.template = [template]  # a list: not registered, its own parameters are not ours
        self.k = len(models)
        self.input_shape = template.input_shape
        self.param_names = [name for name, _ in template.named_parameters()]
        self.buffer_names = [name for name, _ in template.named_buffers()]
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([dict(m.named_parameters())[name].detach() for m in models]).contiguous())
            for name in self.param_names
        )
        for number, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{number}", torch.stack([dict(m.named_buffers())[name] for m in models]).clone())
        self._params = {name: p for name, p in zip(self.param_names, self.stacked)}
        self.generators: list[torch.Generator | None] = [None] * self.k

    def _buffer(self, name: str) -> torch.Tensor:
        return getattr(self, f"buffer{self.buffer_names.index(name)}")

    def unstack(self, index: int, model: KerasModel) -> None:
        """Copy seed ``index``'s parameters and buffers into ``model`` (built from the same spec)."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self._params[name][index])
            for name, b in model.named_buffers():
                b.copy_(self._buffer(name)[index])

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        template = self.template[0]
        if template._sequential:
            for number, layer in enumerate(template.layers):
                x = self._layer(layer, f"layers.{number}", x)
            return x
        values = [x]
        for number, (layer, wiring) in enumerate(zip(template.layers, template._wiring)):
            values.append(self._layer(layer, f"layers.{number}", *(values[i] for i in wiring)))
        return values[-1]

    def _layer(self, module: nn.Module, name: str, *xs: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Sequential):
            (x,) = xs
            for child_name, child in module.named_children():
                x = self._layer(child, f"{name}.{child_name}", x)
            return x
        if isinstance(module, Concat):
            return self._concat(module.dim, xs)
        (x,) = xs
        if isinstance(module, nn.Conv2d):
            return self._conv(module, name, x)
        if isinstance(module, ConvAsGemm):
            if not module.gemm:  # the plain conv chosen for this machine (cpu_paths.py)
                return self._conv(module.conv, f"{name}.conv", x)
            return self._conv_as_gemm(module, f"{name}.conv", x)
        if isinstance(module, nn.Linear):
            return self._linear(name, x)
        if isinstance(module, FusedBatchNorm):
            return self._fused_batch_norm(module, name, x)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return self._batch_norm(module, name, x)
        if isinstance(module, SeededDropout):
            return self._dropout(module, x)
        if isinstance(module, nn.Flatten):
            if x.dim() == 3:  # already (K, B, F)
                return x
            return x.reshape(x.shape[0], self.k, -1).transpose(0, 1)  # per seed, in NCHW order
        if isinstance(module, _ELEMENTWISE):
            return module(x)  # element-wise, or per channel plane: the layout does not matter
        raise TypeError(f"no stacked form for {type(module).__name__}")  # pragma: no cover

    def _bias(self, name: str) -> torch.Tensor | None:
        return self._params.get(f"{name}.bias")

    def _conv(self, conv: nn.Conv2d, name: str, x: torch.Tensor) -> torch.Tensor:
        weight = self._params[f"{name}.weight"]  # (K, O, C, kh, kw)
        bias = self._bias(name)
        return F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                        conv.stride, conv.padding, conv.dilation, groups=self.k)

    def _conv_as_gemm(self, module: ConvAsGemm, name: str, x: torch.Tensor) -> torch.Tensor:
        weight = self._params[f"{name}.weight"]
        weight = weight.reshape(self.k, weight.shape[1], -1)  # (K, O, C*kh*kw)
        bias = self._bias(name)
        batch = x.shape[0]
        if module.out_hw == (1, 1):  # the kernel covers the input: a Dense layer on (C, H, W)
            y = self._matmul(x.reshape(batch, self.k, -1).transpose(0, 1), weight, bias)  # (K, B, O)
            return y.transpose(0, 1).reshape(batch, -1, 1, 1)
        columns = F.unfold(x, module.conv.kernel_size)  # (B, K*C*kh*kw, pixels), seed-major
        columns = columns.reshape(batch, self.k, weight.shape[2], -1)
        y = torch.matmul(weight, columns)  # (B, K, O, pixels)
        if bias is not None:
            y = y + bias.unsqueeze(-1)
        return y.reshape(batch, -1, *module.out_hw)

    @staticmethod
    def _matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """(K, B, I) @ (K, O, I)ᵀ + (K, O) → (K, B, O)."""
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self._matmul(x, self._params[f"{name}.weight"], self._bias(name))

    # (K, B, F) features as (B, K*F) channels, one per seed and feature: the layout batch norm takes.
    @staticmethod
    def _as_channels(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 3 else x

    def _from_channels(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return y.reshape(like.shape[1], self.k, -1).transpose(0, 1) if like.dim() == 3 else y

    def _bn_state(self, name: str, training: bool) -> tuple[torch.Tensor, ...]:
        """Weight, bias, running mean and variance over K*C channels (views: updates reach the buffers)."""
        if training:
            self._buffer(f"{name}.num_batches_tracked").add_(1)
        return (self._params[f"{name}.weight"].reshape(-1), self._params[f"{name}.bias"].reshape(-1),
                self._buffer(f"{name}.running_mean").view(-1), self._buffer(f"{name}.running_var").view(-1))

    def _seed_masks(self, x: torch.Tensor, draw: Callable[[tuple[int, ...], torch.Generator | None], torch.Tensor]
                    ) -> torch.Tensor:
        """One mask per seed, each `draw(shape, generator)` of the shape its single run draws, from
        its own generator, stacked into the layout of `x`: (K, B, F) or (B, K*C, H, W)."""
        if x.dim() == 3:  # seed k draws (B, F)
            return torch.stack([draw(tuple(x.shape[1:]), g) for g in self.generators])
        seed_shape = (x.shape[0], x.shape[1] // self.k, *x.shape[2:])  # seed k draws its own (B, C, H, W)
        return torch.stack([draw(seed_shape, g) for g in self.generators], dim=1).reshape(x.shape)

    def _batch_norm(self, bn: nn.modules.batchnorm._BatchNorm, name: str, x: torch.Tensor) -> torch.Tensor:
        weight, bias, mean, var = self._bn_state(name, self.training)
        y = F.batch_norm(self._as_channels(x), mean, var, weight, bias, self.training, bn.momentum, bn.eps)
        return self._from_channels(y, x)

    def _fused_batch_norm(self, bn: FusedBatchNorm, name: str, x: torch.Tensor) -> torch.Tensor:
        """ReLU → BatchNormalization → Dropout as one fused.bn_dropout over K*C channels, each seed's
        mask drawn from its own generator as its single run draws it."""
        if not self.training or not fused_kernels_apply(x):  # inference or autocast: the parts one by one
            x = self._batch_norm(bn, name, torch.relu(x) if bn.relu else x)
            return self._dropout(bn.dropout, x) if bn.dropout is not None else x
        weight, bias, mean, var = self._bn_state(name, True)
        keep = None
        if bn.dropout is not None and bn.rate > 0:
            keep = self._as_channels(self._seed_masks(x, lambda shape, g: dropout_mask(shape, bn.rate, x.device, g)))
        y = bn_dropout(self._as_channels(x), weight, bias, mean, var, float(bn.momentum), bn.eps, keep,
                       bn.rate if keep is not None else 0.0, bn.relu)
        return self._from_channels(y, x)

    def _dropout(self, dropout: SeededDropout, x: torch.Tensor) -> torch.Tensor:
        if not self.training or dropout.rate == 0.0:
            return x
        return x * self._seed_masks(x, lambda shape, g: keep_mask(shape, dropout.rate, g, x.device, x.dtype))

    def _concat(self, dim: int, xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if xs[0].dim() == 3:  # (K, B, F): torch's (N, F) axis 1 is our axis 2
            return torch.cat(xs, dim=dim + 1)
        batch = xs[0].shape[0]
        parts = [x.reshape(batch, self.k, -1, *x.shape[2:]) for x in xs]  # (B, K, C, H, W)
        joined = torch.cat(parts, dim=dim + 1)
        return joined.reshape(batch, -1, *joined.shape[3:])


def stack_inputs(x: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Per-seed model inputs (K, B, ...) as prepared by `prepare_input` → the stacked layout."""
    if len(input_shape) == 1:
        return x  # (K, B, F)
    k, batch = x.shape[:2]
    return x.transpose(0, 1).reshape(batch, k * x.shape[2], *x.shape[3:])


def shared_inputs(x: torch.Tensor, k: int, input_shape: tuple[int, ...]) -> torch.Tensor:
    """One batch every seed sees (validation, test) → the stacked layout."""
    if len(input_shape) == 1:
        return x.unsqueeze(0).expand(k, *x.shape)
    return x.repeat(1, k, 1, 1)

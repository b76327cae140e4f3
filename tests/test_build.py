"""Builder details that shapes alone do not show: the GEMM form of small convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnistlab.nn.build import ConvAsGemm, build_model
from mnistlab.zoo import get_model


@pytest.mark.parametrize(("size", "kernel"), [(3, 3), (7, 5), (4, 2), (5, 5)])
def test_conv_as_gemm_equals_the_convolution_forward_and_backward(size, kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, kernel).double()
    out = size - kernel + 1
    gemm = ConvAsGemm(conv, (out, out))
    x = torch.randn(3, 8, size, size, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    expected, got = conv(x), gemm(x2)
    assert got.shape == expected.shape == (3, 6, out, out)
    assert torch.allclose(got, expected, atol=1e-12)
    grad = torch.randn_like(expected)
    w_grad_conv = torch.autograd.grad(expected, (x, conv.weight, conv.bias), grad)
    w_grad_gemm = torch.autograd.grad(got, (x2, conv.weight, conv.bias), grad)
    for a, b in zip(w_grad_conv, w_grad_gemm):
        assert torch.allclose(a, b, atol=1e-12)


def test_inception_model_uses_the_gemm_form_only_for_its_small_convs():
    model = build_model(get_model("s002-m10"))
    gemms = [m for m in model.modules() if isinstance(m, ConvAsGemm)]
    assert sorted(g.out_hw for g in gemms) == [(1, 1), (3, 3)]  # conv2d_52 (7→3 px) and conv2d_53 (3→1 px)
    names = [name for name, _ in model.weighted_layers()]
    assert len(names) == 11  # every Conv2D and Dense still reports its kernel for the weight plots

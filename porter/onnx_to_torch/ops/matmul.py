"""Matrix products: nn.Linear when the right-hand side is a constant matrix."""

from __future__ import annotations

import torch
from torch import nn

from porter.onnx_to_torch.context import is_const, module, rank
from porter.onnx_to_torch.registry import register


def _linear(x, weight, bias=None, *, named_after=None):
    """y = x @ weight.T + bias as an nn.Linear (weight is [out, in])."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = nn.Parameter(weight.contiguous())
    if bias is not None:
        layer.bias = nn.Parameter(bias.contiguous())
    return module(layer, x, named_after=named_after)


@register("MatMul")
def MatMul(A, B):
    if is_const(B) and B.dim() == 2 and B.is_floating_point() and not is_const(A):
        return _linear(A, B.T, named_after=B)
    return torch.matmul(A, B)


def _bias_row(C, n):
    """C as a length-n bias when it broadcasts the same way over every row, else None."""
    if C is None or not is_const(C) or C.numel() not in (1, n) or (C.dim() == 2 and C.shape[0] != 1):
        return None
    return C.reshape(-1).expand(n)


@register("Gemm", since=7)
def Gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    if is_const(B) and not transA and not is_const(A) and rank(A) == 2 and B.is_floating_point():
        weight = alpha * (B if transB else B.T)
        bias = _bias_row(C, weight.shape[0])
        if C is None or bias is not None:
            return _linear(A, weight, beta * bias if bias is not None else None, named_after=B)
    a = A.T if transA else A
    b = B.T if transB else B
    y = torch.matmul(a, b)
    y = y if alpha == 1.0 else alpha * y
    if C is None:
        return y
    return y + (C if beta == 1.0 else beta * C)


@register("Einsum")
def Einsum(*inputs, equation):
    return torch.einsum(equation, *inputs)


@register("Det")
def Det(X):
    return torch.linalg.det(X)

"""Activations: native nn modules where torch has the same function, formulas otherwise."""

from __future__ import annotations

import math

import torch
from torch import nn

from porter.onnx_to_torch.context import as_number, dtype, dynamic_dims, is_proxy, module, prod
from porter.onnx_to_torch.registry import register

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


@register("Relu", since=6)
def Relu(x):
    return module(nn.ReLU(), x)


@register("Sigmoid", since=6)
def Sigmoid(x):
    return module(nn.Sigmoid(), x)


@register("Tanh", since=6)
def Tanh(x):
    return module(nn.Tanh(), x)


@register("LeakyRelu", since=6)
def LeakyRelu(x, *, alpha=0.01):
    return module(nn.LeakyReLU(alpha), x)


@register("Elu", since=6)
def Elu(x, *, alpha=1.0):
    return module(nn.ELU(alpha), x)


@register("Celu")
def Celu(x, *, alpha=1.0):
    return module(nn.CELU(alpha), x)


@register("Selu", since=6)
def Selu(x, *, alpha=SELU_ALPHA, gamma=SELU_GAMMA):
    if math.isclose(alpha, SELU_ALPHA, rel_tol=1e-6) and math.isclose(gamma, SELU_GAMMA, rel_tol=1e-6):
        return module(nn.SELU(), x)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@register("PRelu", since=7)
def PRelu(x, slope):
    # ONNX broadcasts slope numpy-style; nn.PReLU only knows one slope per channel.
    return torch.where(x < 0, x * slope, x)


@register("HardSigmoid", since=6)
def HardSigmoid(x, *, alpha=0.2, beta=0.5):
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return module(nn.Hardsigmoid(), x)
    return torch.clamp(x * alpha + beta, 0, 1)


@register("HardSwish")
def HardSwish(x):
    return module(nn.Hardswish(), x)


@register("Softplus")
def Softplus(x):
    return torch.log1p(torch.exp(x))  # nn.Softplus switches to x above 20; ONNX does not


@register("Softsign")
def Softsign(x):
    return module(nn.Softsign(), x)


@register("Mish")
def Mish(x):
    return module(nn.Mish(), x)


@register("ThresholdedRelu")
def ThresholdedRelu(x, *, alpha=1.0):
    return module(nn.Threshold(alpha, 0.0), x)


@register("Shrink")
def Shrink(x, *, bias=0.0, lambd=0.5):
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@register("Gelu")
def Gelu(x, *, approximate="none"):
    return module(nn.GELU(approximate=approximate), x)


@register("Swish")
def Swish(x, *, alpha=1.0):
    return module(nn.SiLU(), x) if alpha == 1.0 else x * torch.sigmoid(alpha * x)


@register("Clip", since=11)
def Clip(x, min=None, max=None):
    low, high = as_number(min), as_number(max)
    constant_bounds = not is_proxy(low) and not is_proxy(high)
    if constant_bounds and (low, high) == (0, 6) and dtype(x).is_floating_point:  # Keras' relu6
        return module(nn.ReLU6(), x)
    if low is None and high is None:
        return x
    return torch.clamp(x, low, high)


@register("Clip", since=6, until=10)
def Clip_6(x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38):
    return torch.clamp(x, min, max)


# -- softmax family: opset 13 works on one axis, earlier versions on x flattened to 2-D at `axis` --
def _on_2d(x, axis, fn):
    dims = dynamic_dims(x)
    axis = axis % len(dims) if dims else 0
    flat = x.reshape(prod(dims[:axis]), -1)
    return fn(flat, 1).reshape(dims)


def _hardmax(x, axis):
    return torch.zeros_like(x).scatter(axis, torch.argmax(x, axis, keepdim=True), 1.0)


@register("Softmax", since=13)
def Softmax(x, *, axis=-1):
    return module(nn.Softmax(dim=axis), x)


@register("Softmax", until=12)
def Softmax_1(x, *, axis=1):
    return _on_2d(x, axis, lambda t, d: torch.softmax(t, d))


@register("LogSoftmax", since=13)
def LogSoftmax(x, *, axis=-1):
    return module(nn.LogSoftmax(dim=axis), x)


@register("LogSoftmax", until=12)
def LogSoftmax_1(x, *, axis=1):
    return _on_2d(x, axis, lambda t, d: torch.log_softmax(t, d))


@register("Hardmax", since=13)
def Hardmax(x, *, axis=-1):
    return _hardmax(x, axis)


@register("Hardmax", until=12)
def Hardmax_1(x, *, axis=1):
    return _on_2d(x, axis, _hardmax)


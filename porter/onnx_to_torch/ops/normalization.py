"""Normalization layers: native nn modules (in eval mode) when statistics and weights are constants."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit, is_const, module, output_count, rank
from porter.onnx_to_torch.registry import register

_BATCH_NORM = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_INSTANCE_NORM = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}


def _all_const(*tensors) -> bool:
    return all(t is None or is_const(t) for t in tensors)


@register("BatchNormalization", since=9, allowed={"training_mode": (0, 1)})
def BatchNormalization(X, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    if training_mode:  # batch statistics, and the updated running ones as extra outputs
        result = emit(runtime.batch_norm_training, X, scale, B, input_mean, input_var, epsilon, momentum)
        return [result[i] for i in range(output_count())]
    if not (_all_const(scale, B, input_mean, input_var) and rank(X) in _BATCH_NORM):
        return F.batch_norm(X, input_mean, input_var, scale, B, False, 0.0, epsilon)
    layer = _BATCH_NORM[rank(X)](scale.shape[0], eps=epsilon, momentum=1 - momentum)
    layer.weight, layer.bias = nn.Parameter(scale), nn.Parameter(B)
    layer.running_mean, layer.running_var = input_mean, input_var
    return module(layer.eval(), X, named_after=scale)


@register("InstanceNormalization", since=6)
def InstanceNormalization(input, scale, B, *, epsilon=1e-5):
    if not (_all_const(scale, B) and rank(input) in _INSTANCE_NORM):
        return F.instance_norm(input, weight=scale, bias=B, eps=epsilon)
    layer = _INSTANCE_NORM[rank(input)](scale.shape[0], eps=epsilon, affine=True)
    layer.weight, layer.bias = nn.Parameter(scale), nn.Parameter(B)
    return module(layer, input, named_after=scale)


def _moments(x, dims):
    mean = x.mean(dim=dims, keepdim=True)
    return mean, ((x - mean) ** 2).mean(dim=dims, keepdim=True)


@register("LayerNormalization")
def LayerNormalization(X, Scale, B=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    r = rank(X)
    dims = tuple(range(axis % r, r))
    mean, var = _moments(X, dims)
    inv_std = torch.rsqrt(var + epsilon)
    if _all_const(Scale, B) and Scale.dim() == len(dims):
        layer = nn.LayerNorm(list(Scale.shape), eps=epsilon, bias=B is not None)
        layer.weight = nn.Parameter(Scale)
        if B is not None:
            layer.bias = nn.Parameter(B)
        y = module(layer, X, named_after=Scale)
    else:
        y = (X - mean) * inv_std * Scale + (B if B is not None else 0)
    return y, mean, inv_std  # unused outputs are dropped from the graph


@register("RMSNormalization")
def RMSNormalization(X, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    r = rank(X)
    dims = tuple(range(axis % r, r))
    if is_const(scale) and scale.dim() == len(dims):
        layer = nn.RMSNorm(list(scale.shape), eps=epsilon)
        layer.weight = nn.Parameter(scale)
        return module(layer, X, named_after=scale)
    return X * torch.rsqrt((X * X).mean(dim=dims, keepdim=True) + epsilon) * scale


@register("GroupNormalization", since=21)
def GroupNormalization(X, scale, bias, *, epsilon=1e-5, num_groups, stash_type=1):
    if not _all_const(scale, bias):
        return F.group_norm(X, num_groups, scale, bias, epsilon)
    layer = nn.GroupNorm(num_groups, scale.shape[0], eps=epsilon)
    layer.weight, layer.bias = nn.Parameter(scale), nn.Parameter(bias)
    return module(layer, X, named_after=scale)


@register("GroupNormalization", since=18, until=20)
def GroupNormalization_18(X, scale, bias, *, epsilon=1e-5, num_groups):
    # Opset 18 gives one scale/bias per group; opset 21 (and torch) one per channel.
    grouped = F.group_norm(X, num_groups, None, None, epsilon).unflatten(1, (num_groups, -1))
    view = [1, num_groups] + [1] * (rank(X) - 1)
    return (grouped * scale.reshape(view) + bias.reshape(view)).flatten(1, 2)


@register("LRN")
def LRN(X, *, alpha=1e-4, beta=0.75, bias=1.0, size):
    return module(nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=bias), X)


@register("MeanVarianceNormalization", since=9)
def MeanVarianceNormalization(X, *, axes=(0, 2, 3)):
    dims = tuple(axes)
    mean = X.mean(dim=dims, keepdim=True)
    variance = (X * X).mean(dim=dims, keepdim=True) - mean * mean
    return (X - mean) / (torch.sqrt(variance) + 1e-9)


@register("LpNormalization")
def LpNormalization(input, *, axis=-1, p=2):
    norm = torch.linalg.vector_norm(input, ord=p, dim=axis, keepdim=True)
    # A zero norm gives zeros (opset 22's spec), not 0/0 = NaN.
    return torch.where(norm == 0, torch.zeros_like(input), input / norm)

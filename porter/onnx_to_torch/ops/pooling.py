"""Pooling: nn.MaxPoolNd / nn.AvgPoolNd / nn.AdaptiveAvgPoolNd(1) for the global variants;
dilated average/Lp pooling gathers its windows (runtime.pool_windows)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit, module, rank
from porter.onnx_to_torch.ops.spatial import AUTO_PADS, defaults, explicitly_padded, pad_input
from porter.errors import UnsupportedModelError
from porter.onnx_to_torch.registry import register

_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_MAX_FN = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_ADAPTIVE_MAX = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}


def _half_kernel(kernel):
    return lambda begins: all(b <= k // 2 for b, k in zip(begins, kernel))  # torch's limit


@register("MaxPool", since=8, allowed={"auto_pad": AUTO_PADS, "storage_order": (0, 1)})
def MaxPool(X, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, pads=None,
            storage_order=0, strides=None):
    n = len(kernel_shape)
    strides, dilations = defaults(n, strides, dilations)
    padded, padding = pad_input(X, auto_pad, pads, kernel_shape, strides, dilations, -math.inf,
                                fits=_half_kernel(kernel_shape))
    pool = _MAX[n](kernel_shape, strides, padding, dilations, ceil_mode=bool(ceil_mode))
    _, indices = _MAX_FN[n](padded, kernel_shape, strides, padding, dilations, bool(ceil_mode), True)
    if storage_order and n != 2:
        raise UnsupportedModelError("MaxPool storage_order=1 is defined here for 2-D pooling only")
    return module(pool, padded), emit(runtime.maxpool_indices, X, indices, bool(storage_order))


def _avg_pool(x, kernel, strides, padding, ceil_mode, count_include_pad):
    return module(_AVG[len(kernel)](kernel, strides, padding, ceil_mode=bool(ceil_mode),
                                    count_include_pad=bool(count_include_pad)), x)


def _pool_windows(X, kind, auto_pad, ceil_mode, count_include_pad, dilations, kernel, pads, strides, p=2):
    """torch's pooling layers take no dilations: gather the dilated windows (runtime.pool_windows)."""
    n = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = auto_pad
    else:
        pads = [0] * (2 * n) if auto_pad == "VALID" else list(pads or [0] * (2 * n))
    return emit(runtime.pool_windows, X, kind, list(kernel), strides, dilations, pads, bool(ceil_mode),
                bool(count_include_pad), p)


@register("AveragePool", since=7, allowed={"auto_pad": AUTO_PADS})
def AveragePool(X, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape,
                pads=None, strides=None):
    n = len(kernel_shape)
    strides, dilations = defaults(n, strides, dilations)
    if any(d != 1 for d in dilations):
        return _pool_windows(X, "avg", auto_pad, ceil_mode, count_include_pad, dilations, kernel_shape, pads,
                             strides)
    fits = _half_kernel(kernel_shape)
    padded, padding = pad_input(X, auto_pad, pads, kernel_shape, strides, dilations, 0.0, fits=fits)
    if not explicitly_padded(X, auto_pad, pads, kernel_shape, strides, dilations, fits) or count_include_pad:
        return _avg_pool(padded, kernel_shape, strides, padding, ceil_mode, count_include_pad)
    # Uneven pads excluded from the count: average of x over the average of a 0/1 validity mask.
    mask, _ = pad_input(torch.ones_like(X), auto_pad, pads, kernel_shape, strides, dilations, 0.0, fits=fits, like=X)
    total = _avg_pool(padded, kernel_shape, strides, padding, ceil_mode, True)
    return total / _avg_pool(mask, kernel_shape, strides, padding, ceil_mode, True)


@register("GlobalAveragePool")
def GlobalAveragePool(X):
    return module(_ADAPTIVE_AVG[rank(X) - 2](1), X)


@register("GlobalMaxPool")
def GlobalMaxPool(X):
    return module(_ADAPTIVE_MAX[rank(X) - 2](1), X)


@register("LpPool", since=11, allowed={"auto_pad": AUTO_PADS})
def LpPool(X, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, p=2, pads=None, strides=None):
    n = len(kernel_shape)
    strides, dilations = defaults(n, strides, dilations)
    if any(d != 1 for d in dilations):
        return _pool_windows(X, "lp", auto_pad, ceil_mode, 0, dilations, kernel_shape, pads, strides, p)
    powered, padding = pad_input(torch.abs(X) ** p, auto_pad, pads, kernel_shape, strides, dilations, 0.0,
                                 fits=_half_kernel(kernel_shape), like=X)
    mean = _avg_pool(powered, kernel_shape, strides, padding, ceil_mode, True)
    return (mean * math.prod(kernel_shape)) ** (1.0 / p)


@register("GlobalLpPool", since=2)
def GlobalLpPool(X, *, p=2):
    dims = tuple(range(2, rank(X)))
    return torch.sum(torch.abs(X) ** p, dim=dims, keepdim=True) ** (1.0 / p)

"""Gather/scatter and other index-driven ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import dtype, emit, is_const, rank, scalar
from porter.onnx_to_torch.registry import register


def _positive(axis: int, r: int) -> int:
    return axis + r if axis < 0 else axis


def _wrap(indices, data, axis):
    """ONNX allows negative indices counting from the end; torch.gather/scatter do not."""
    if is_const(indices) and bool((indices >= 0).all()):
        return indices.long()
    return torch.where(indices < 0, indices + data.size(axis), indices).long()


@register("Gather")
def Gather(data, indices, *, axis=0):
    axis = _positive(axis, rank(data))
    if is_const(indices) and indices.dim() == 0:
        index = int(indices)  # basic indexing: reads as x[:, 3]
    else:
        index = indices.long() if dtype(indices) != torch.int64 else indices
    # numpy-style advanced indexing has exactly Gather's output shape and negative indices.
    return data[(slice(None),) * axis + (index,)]


@register("GatherElements")
def GatherElements(data, indices, *, axis=0):
    return torch.gather(data, axis, _wrap(indices, data, axis))


@register("GatherND")
def GatherND(data, indices, *, batch_dims=0):
    return emit(runtime.gather_nd, data, indices, batch_dims)


_REDUCTIONS = {"none": None, "add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@register("ScatterElements", allowed={"reduction": _REDUCTIONS})
def ScatterElements(data, indices, updates, *, axis=0, reduction="none"):
    index = _wrap(indices, data, axis)
    if reduction == "none":
        return torch.scatter(data, axis, index, updates)
    return torch.scatter_reduce(data, axis, index, updates, _REDUCTIONS[reduction], include_self=True)


@register("Scatter", since=9)
def Scatter(data, indices, updates, *, axis=0):
    return torch.scatter(data, axis, _wrap(indices, data, axis), updates)


@register("ScatterND", allowed={"reduction": _REDUCTIONS})
def ScatterND(data, indices, updates, *, reduction="none"):
    return emit(runtime.scatter_nd, data, indices, updates, reduction)


@register("OneHot", shape_inputs=(1,))
def OneHot(indices, depth, values, *, axis=-1):
    depth = int(scalar(depth)) if is_const(depth) else emit(int, scalar(depth))
    out_axis = _positive(axis, rank(indices) + 1)
    indices = indices.long()
    hot = F.one_hot(torch.where(indices < 0, indices + depth, indices), depth).movedim(-1, out_axis)
    return torch.where(hot.bool(), values[1], values[0])


@register("NonZero")
def NonZero(x):
    return torch.nonzero(x).T


@register("Trilu", shape_inputs=(1,))
def Trilu(input, k=None, *, upper=1):
    k = scalar(k) if k is not None else 0
    return torch.triu(input, k) if upper else torch.tril(input, k)


@register("Compress")
def Compress(input, condition, *, axis=None):
    if axis is None:
        input, axis = input.reshape(-1), 0
    # A condition shorter than the axis selects nothing past its end.
    kept = torch.nonzero(condition).reshape(-1)
    return torch.index_select(input, axis, kept)



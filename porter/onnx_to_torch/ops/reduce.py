"""Reductions (ReduceX, ArgMax/ArgMin), running sums and products, and TopK.

Reduce ops took ``axes`` as an attribute until opset 13 (ReduceSum) or 18 (the
rest), and as an optional input since; one kernel serves both forms.
"""

from __future__ import annotations

import torch

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import (
    dtype, dynamic_dims, emit, ints, is_const, is_proxy, rank, scalar, static_shape,
)
from porter.onnx_to_torch.registry import register


def _extreme(x, dims, keepdim, largest):
    """torch.amax/amin where every reduced dim is statically non-empty, else runtime.reduce_extreme."""
    shape = static_shape(x)
    if not is_proxy(dims) and all(shape[d % len(shape)] for d in dims):  # None (unknown) or 0 -> the helper
        return (torch.amax if largest else torch.amin)(x, dim=dims, keepdim=keepdim)
    return emit(runtime.reduce_extreme, x, dims, keepdim, largest)


_KERNELS = {
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: _extreme(x, d, k, True),
    "ReduceMin": lambda x, d, k: _extreme(x, d, k, False),
    "ReduceProd": lambda x, d, k: emit(runtime.reduce_prod, x, d, k),
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
}
_AXES_INPUT_SINCE = {"ReduceSum": 13}


def _reduce(kernel, data, axes, keepdims, noop_with_empty_axes):
    if is_proxy(axes):  # axes known only at run time
        if noop_with_empty_axes:
            raise UnsupportedModelError("noop_with_empty_axes=1 needs constant axes")
        return kernel(data, emit(runtime.reduction_axes, axes, rank(data)), bool(keepdims))
    if not axes:
        if noop_with_empty_axes:
            return data
        axes = range(rank(data))
    dims = tuple(sorted(a % rank(data) for a in axes)) if rank(data) else ()
    if not dims:  # a 0-D input: reducing nothing
        return data
    return kernel(data, dims, bool(keepdims))


def _register_reduction(op_type, kernel):
    since = _AXES_INPUT_SINCE.get(op_type, 18)

    @register(op_type, until=since - 1)
    def with_axes_attribute(data, *, axes=None, keepdims=1):
        return _reduce(kernel, data, axes, keepdims, 0)

    @register(op_type, since=since, shape_inputs=(1,))
    def with_axes_input(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        if noop_with_empty_axes and is_proxy(axes) and static_shape(axes) == [0]:
            return data  # run-time axes, but declared empty
        return _reduce(kernel, data, ints(axes), keepdims, noop_with_empty_axes)


for _op, _kernel in _KERNELS.items():
    _register_reduction(_op, _kernel)


def _arg_reduce(fn, data, axis, keepdims, select_last_index):
    if not select_last_index:
        return fn(data, dim=axis, keepdim=bool(keepdims))
    # torch picks the first of equal values; flip to find the last one.
    size = data.shape[axis] if is_const(data) else dynamic_dims(data)[axis]
    return size - 1 - fn(torch.flip(data, (axis,)), dim=axis, keepdim=bool(keepdims))


@register("ArgMax")
def ArgMax(data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg_reduce(torch.argmax, data, axis, keepdims, select_last_index)


@register("ArgMin")
def ArgMin(data, *, axis=0, keepdims=1, select_last_index=0):
    return _arg_reduce(torch.argmin, data, axis, keepdims, select_last_index)


@register("CumSum", shape_inputs=(1,))
def CumSum(x, axis, *, exclusive=0, reverse=0):
    axis = scalar(axis)
    y = torch.flip(x, (axis,)) if reverse else x
    y = torch.cumsum(y, dim=axis, dtype=dtype(x))  # torch would widen int32 to int64
    if exclusive:
        y = y - (torch.flip(x, (axis,)) if reverse else x)
    return torch.flip(y, (axis,)) if reverse else y


@register("CumProd", shape_inputs=(1,))
def CumProd(x, axis, *, exclusive=0, reverse=0):
    axis = scalar(axis) % rank(x)
    y = torch.flip(x, (axis,)) if reverse else x
    if exclusive:  # shift right by one behind a leading 1 (not a division: x may hold zeros)
        lead = (slice(None),) * axis
        y = torch.cat([torch.ones_like(y[lead + (slice(0, 1),)]), y[lead + (slice(None, -1),)]], dim=axis)
    y = torch.cumprod(y, dim=axis, dtype=dtype(x))  # torch would widen int32 to int64
    return torch.flip(y, (axis,)) if reverse else y


@register("TopK", since=10, shape_inputs=(1,))
def TopK(X, K, *, axis=-1, largest=1, sorted=1):
    # A stable sort, not torch.topk: ONNX gives equal values in index order, topk in no fixed order.
    values, indices = torch.sort(X, dim=axis, descending=bool(largest), stable=True)
    k = scalar(K)
    return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)

"""Ops that make tensors (Constant, ConstantOfShape, Range, EyeLike) or change their type (Cast, BitCast)."""

from __future__ import annotations

import torch

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch.context import dtype as dtype_of, dynamic_dims, emit, ints, is_const, scalar
from porter.onnx_to_torch.registry import register
from porter.onnx_to_torch.tensors import ONNX_TO_TORCH, from_proto, torch_dtype

_NO_STRINGS = {"value_string": lambda v: False, "value_strings": lambda v: False}


@register("Constant", allowed=_NO_STRINGS)
def Constant(*, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             value_string=None, value_strings=None, sparse_value=None):
    if value is not None:
        return value
    if sparse_value is not None:
        return _dense(sparse_value)
    if value_float is not None:
        return torch.tensor(value_float, dtype=torch.float32)
    if value_floats is not None:
        return torch.tensor(value_floats, dtype=torch.float32)
    if value_int is not None:
        return torch.tensor(value_int, dtype=torch.int64)
    return torch.tensor(value_ints, dtype=torch.int64)


def _dense(sparse) -> torch.Tensor:
    values = from_proto(sparse.values)
    indices = from_proto(sparse.indices)
    dense = values.new_zeros(list(sparse.dims))
    if indices.dim() == 1:  # linearised indices
        return dense.reshape(-1).index_put((indices,), values).reshape(list(sparse.dims))
    return dense.index_put(tuple(indices.T), values)


@register("ConstantOfShape", shape_inputs=(0,))
def ConstantOfShape(input, *, value=None):
    fill = value if value is not None else torch.zeros(1, dtype=torch.float32)
    return emit(torch.full, ints(input), fill.reshape(-1)[0].item(), dtype=fill.dtype)


@register("Range", shape_inputs=(0, 1, 2))
def Range(start, limit, delta):
    return emit(torch.arange, scalar(start), scalar(limit), scalar(delta), dtype=dtype_of(start))


@register("EyeLike", allowed={"dtype": lambda t: torch_dtype(t) is not None})
def EyeLike(input, *, dtype=None, k=0):
    rows, cols = input.shape if is_const(input) else dynamic_dims(input)
    out_dtype = torch_dtype(dtype) if dtype is not None else dtype_of(input)
    # ones on diagonal k: keep j - i >= k (triu) and j - i <= k (tril)
    return emit(torch.ones, rows, cols, dtype=out_dtype).triu(k).tril(k)


def _supported_type(to):
    return to in ONNX_TO_TORCH


@register("Cast", since=6, allowed={"to": _supported_type, "saturate": (1,), "round_mode": ("up",)})
def Cast(input, *, to, saturate=1, round_mode="up"):
    return input.to(torch_dtype(to))


@register("BitCast", allowed={"to": _supported_type})
def BitCast(input, *, to):
    # The same bits read as another type (little endian, as torch stores them). torch's view(dtype)
    # would also take another width and resize the last dim; ONNX allows only the same width.
    target = torch_dtype(to)
    if target.itemsize != dtype_of(input).itemsize:
        raise UnsupportedModelError(f"BitCast from {dtype_of(input)} to {target}: the widths differ")
    return input.view(target)


@register("CastLike", allowed={"saturate": (1,), "round_mode": ("up",)})
def CastLike(input, target_type, *, saturate=1, round_mode="up"):
    return input.to(dtype_of(target_type))


@register("Dropout", since=12)
def Dropout(data, ratio=None, training_mode=None, *, seed=None):
    # Inference only: the output is the input, and the mask all ones.
    return data, emit(torch.ones_like, data, dtype=torch.bool)


@register("Dropout", since=7, until=10)
def Dropout_7(data, *, ratio=0.5):
    return data, emit(torch.ones_like, data, dtype=torch.bool)

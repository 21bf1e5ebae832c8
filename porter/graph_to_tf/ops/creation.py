"""Tensors made from sizes and values: full, arange, scalar_tensor, *_like. The dtype is the one
torch.export recorded (torch infers it from the fill value and the default dtype)."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import out_dtype, shape_arg
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _fill(shape, value, dtype):
    if hasattr(value, "dtype"):
        value = tf.cast(value, dtype)
    elif dtype == tf.bool:
        value = bool(value)
    return tf.fill(shape, tf.constant(value, dtype) if not hasattr(value, "dtype") else value)


@register(aten.full.default)
def full(size, fill_value, dtype=None, layout=None, device=None, pin_memory=None):
    return _fill(shape_arg(size), fill_value, out_dtype())


@register(aten.zeros.default)
def zeros(size, dtype=None, layout=None, device=None, pin_memory=None):
    return tf.zeros(shape_arg(size), out_dtype())


@register(aten.ones.default)
def ones(size, dtype=None, layout=None, device=None, pin_memory=None):
    return tf.ones(shape_arg(size), out_dtype())


@register(aten.empty.memory_format)
def empty(size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    # torch leaves the values undefined; zeros keep the output deterministic
    return tf.zeros(shape_arg(size), out_dtype())


@register(aten.empty_strided.default)
def empty_strided(size, stride, dtype=None, layout=None, device=None, pin_memory=None):
    return tf.zeros(shape_arg(size), out_dtype())


@register(aten.full_like.default)
def full_like(x, fill_value, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    return _fill(tf.shape(x), fill_value, out_dtype())


@register(aten.zeros_like.default)
def zeros_like(x, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    return tf.zeros(tf.shape(x), out_dtype())


@register(aten.ones_like.default)
def ones_like(x, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    return tf.ones(tf.shape(x), out_dtype())


@register(aten.empty_like.default)
def empty_like(x, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    return tf.zeros(tf.shape(x), out_dtype())


@register(aten.scalar_tensor.default)
def scalar_tensor(s, dtype=None, layout=None, device=None, pin_memory=None):
    value = tf.cast(s, out_dtype()) if hasattr(s, "dtype") else tf.constant(s, out_dtype())
    return tf.reshape(value, [])


@register(aten.arange.start_step, aten.arange.start)
def arange(start, end, step=1, dtype=None, layout=None, device=None, pin_memory=None):
    dtype = out_dtype()
    # integer ranges count in int64 (ends may be symbolic int32 scalars); float ranges as torch:
    # start + i * step, which tf.range also computes
    compute = tf.int64 if dtype.is_integer else dtype
    if dtype.is_integer and any(isinstance(v, float) for v in (start, end, step)):
        compute = tf.float64  # torch: float bounds, integer output (values start + i*step, truncated)
    values = [tf.cast(v, compute) if hasattr(v, "dtype") else tf.constant(v, compute) for v in (start, end, step)]
    return tf.cast(tf.range(*values), dtype)


@register(aten.arange.default)
def arange_end(end, dtype=None, layout=None, device=None, pin_memory=None):
    return arange(0, end, 1)


@register(aten.empty_permuted.default)
def empty_permuted(size, physical_layout, dtype=None, layout=None, device=None, pin_memory=None):
    # the physical layout is a memory order torch keeps; TF tensors have only the logical one
    return tf.zeros(shape_arg(size), out_dtype())

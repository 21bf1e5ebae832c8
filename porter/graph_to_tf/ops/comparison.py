"""Comparisons, logical ops and where. Comparisons promote both sides the way torch does
(computed from the recorded inputs), since the output dtype (bool) does not say how."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import arg_meta, is_tensor, out_dtype, tf_dtype
from porter.graph_to_tf.ops.elementwise import operand
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _promoted(x, other):
    a, b = arg_meta(0), arg_meta(1)
    dtype = tf_dtype(torch.result_type(a, b) if isinstance(b, torch.Tensor) or isinstance(a, torch.Tensor) else
                     torch.float32)
    return operand(x, dtype), operand(other, dtype)


def _compare(name, fn):
    def convert(x, other):
        a, b = _promoted(x, other)
        if a.dtype == tf.bool and fn not in (tf.equal, tf.not_equal):
            a, b = tf.cast(a, tf.int8), tf.cast(b, tf.int8)
        return fn(a, b)

    convert.__name__ = name
    register(getattr(aten, name).Tensor, getattr(aten, name).Scalar)(convert)


for _name, _fn in {"eq": tf.equal, "ne": tf.not_equal, "lt": tf.less, "le": tf.less_equal, "gt": tf.greater,
                   "ge": tf.greater_equal}.items():
    _compare(_name, _fn)


def _as_bool(x):
    return x if x.dtype == tf.bool else tf.not_equal(x, tf.zeros([], x.dtype))


@register(aten.logical_not.default)
def logical_not(x):
    return tf.logical_not(_as_bool(x))


@register(aten.logical_and.default)
def logical_and(x, other):
    return tf.logical_and(_as_bool(x), _as_bool(other))


@register(aten.logical_or.default)
def logical_or(x, other):
    return tf.logical_or(_as_bool(x), _as_bool(other))


@register(aten.logical_xor.default)
def logical_xor(x, other):
    return tf.math.logical_xor(_as_bool(x), _as_bool(other))


@register(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def where(condition, x, other):
    dtype = out_dtype()
    return tf.where(_as_bool(condition), operand(x, dtype), operand(other, dtype))


@register(aten.isnan.default)
def isnan(x):
    return tf.math.is_nan(x) if x.dtype.is_floating else tf.zeros_like(x, tf.bool)


@register(aten.isinf.default)
def isinf(x):
    return tf.math.is_inf(x) if x.dtype.is_floating else tf.zeros_like(x, tf.bool)


@register(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def masked_fill(x, mask, value):
    value = value if is_tensor(value) else tf.constant(value, x.dtype)
    return tf.where(_as_bool(mask), tf.cast(value, x.dtype), x)

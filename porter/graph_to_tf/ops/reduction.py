"""Reductions over dims (an empty or missing dim list means all dims, as in torch)."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import axis, out_dtype, rank
from porter.graph_to_tf.ops.elementwise import operand
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _axes(x, dims):
    if dims is None or (not isinstance(dims, int) and len(dims) == 0):
        return None
    dims = [dims] if isinstance(dims, int) else dims
    return [axis(d, max(rank(x), 1)) for d in dims] if rank(x) else None


def _reduce(fn, x, dims, keepdim, dtype=None):
    return fn(x, axis=_axes(x, dims), keepdims=bool(keepdim) and rank(x) > 0)


@register(aten.sum.dim_IntList, aten.sum.default)
def sum_(x, dim=None, keepdim=False, dtype=None):
    x = operand(x, out_dtype())
    if x.dtype == tf.bool:
        x = tf.cast(x, tf.int64)
    return _reduce(tf.reduce_sum, x, dim, keepdim)


@register(aten.mean.dim, aten.mean.default)
def mean(x, dim=None, keepdim=False, dtype=None):
    return _reduce(tf.reduce_mean, operand(x, out_dtype()), dim, keepdim)


@register(aten.prod.dim_int, aten.prod.default)
def prod(x, dim=None, keepdim=False, dtype=None):
    return _reduce(tf.reduce_prod, operand(x, out_dtype()), dim, keepdim)


def _extreme(fn, bool_fn):
    def convert(x, dim=None, keepdim=False):
        return _reduce(bool_fn if x.dtype == tf.bool else fn, x, dim, keepdim)

    return convert


amax = register(aten.amax.default, aten.max.default)(_extreme(tf.reduce_max, tf.reduce_any))
amin = register(aten.amin.default, aten.min.default)(_extreme(tf.reduce_min, tf.reduce_all))


@register(aten.any.dim, aten.any.dims, aten.any.default)
def any_(x, dim=None, keepdim=False):
    x = x if x.dtype == tf.bool else tf.not_equal(x, tf.zeros([], x.dtype))
    return _reduce(tf.reduce_any, x, dim, keepdim)


@register(aten.all.dim, aten.all.dims, aten.all.default)
def all_(x, dim=None, keepdim=False):
    x = x if x.dtype == tf.bool else tf.not_equal(x, tf.zeros([], x.dtype))
    return _reduce(tf.reduce_all, x, dim, keepdim)


def _arg(fn, x, dim, keepdim):
    if dim is None:
        x, dim, keepdim = tf.reshape(x, [-1]), 0, False
    if rank(x) == 0:
        return tf.zeros([], tf.int64)
    d = axis(dim, rank(x))
    out = fn(x, axis=d, output_type=tf.int64)
    return tf.expand_dims(out, d) if keepdim else out


@register(aten.argmax.default)
def argmax(x, dim=None, keepdim=False):
    return _arg(tf.argmax, x, dim, keepdim)


@register(aten.argmin.default)
def argmin(x, dim=None, keepdim=False):
    return _arg(tf.argmin, x, dim, keepdim)


@register(aten.max.dim)
def max_dim(x, dim, keepdim=False):
    return _reduce(tf.reduce_max, x, dim, keepdim), _arg(tf.argmax, x, dim, keepdim)


@register(aten.min.dim)
def min_dim(x, dim, keepdim=False):
    return _reduce(tf.reduce_min, x, dim, keepdim), _arg(tf.argmin, x, dim, keepdim)


@register(aten.var.correction)
def var(x, dim=None, correction=None, keepdim=False):
    axes = _axes(x, dim)
    mean_ = tf.reduce_mean(x, axis=axes, keepdims=True)
    squares = tf.reduce_sum(tf.square(x - mean_), axis=axes, keepdims=bool(keepdim))
    n = tf.cast(tf.size(x), x.dtype) / tf.cast(tf.size(mean_), x.dtype)
    return squares / (n - (1 if correction is None else correction))


@register(aten.cumsum.default)
def cumsum(x, dim, dtype=None):
    x = operand(x, out_dtype())
    return tf.cumsum(x, axis=axis(dim, max(rank(x), 1))) if rank(x) else x


@register(aten.histc.default)
def histc(x, bins=100, min=0, max=0):
    """Counts in ``bins`` equal-width bins over [min, max] (the data's range when both are 0); values
    outside are dropped and ``max`` itself counts in the last bin, as in torch."""
    x = tf.reshape(x, [-1])
    low, high = (tf.constant(min, x.dtype), tf.constant(max, x.dtype))
    if min == max:
        low, high = tf.reduce_min(x), tf.reduce_max(x)
        same = tf.equal(low, high)
        low, high = tf.where(same, low - 1, low), tf.where(same, high + 1, high)
    inside = (x >= low) & (x <= high)
    position = tf.cast(tf.floor((x - low) * bins / (high - low)), tf.int32)
    position = tf.clip_by_value(position, 0, bins - 1)
    counts = tf.math.unsorted_segment_sum(tf.cast(inside, x.dtype), position, bins)
    return counts


@register(aten.linalg_vector_norm.default)
def linalg_vector_norm(x, ord=2, dim=None, keepdim=False, dtype=None):
    x = tf.abs(operand(x, out_dtype()))
    if ord == 2:
        return tf.sqrt(_reduce(tf.reduce_sum, tf.square(x), dim, keepdim))
    if ord == 1:
        return _reduce(tf.reduce_sum, x, dim, keepdim)
    if ord == float("inf"):
        return _reduce(tf.reduce_max, x, dim, keepdim)
    if ord == float("-inf"):
        return _reduce(tf.reduce_min, x, dim, keepdim)
    if ord == 0:
        return _reduce(tf.reduce_sum, tf.cast(tf.not_equal(x, 0), x.dtype), dim, keepdim)
    return tf.pow(_reduce(tf.reduce_sum, tf.pow(x, ord), dim, keepdim), 1.0 / ord)

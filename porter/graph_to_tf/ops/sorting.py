"""topk and sort: values and int64 indices along a dim, as tf.math.top_k / tf.argsort on the last
axis (TFLite maps TopKV2 to a builtin), with the dim moved last and back when it is not."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import axis, rank
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _to_last(x, d):
    """(x with axis ``d`` moved last, the permutation that moves it back)."""
    n = rank(x)
    if d == n - 1:
        return x, None
    order = [i for i in range(n) if i != d] + [d]
    back = [order.index(i) for i in range(n)]
    return tf.transpose(x, order), back


def _back(values, back):
    return values if back is None else tf.transpose(values, back)


@register(aten.topk.default)
def topk(x, k, dim=-1, largest=True, sorted=True):
    if rank(x) == 0:
        return x, tf.zeros([], tf.int64)
    d = axis(dim, rank(x))
    moved, back = _to_last(x, d)
    flipped = x.dtype == tf.bool
    if flipped:
        moved = tf.cast(moved, tf.int8)
    keyed = moved if largest else -moved
    values, indices = tf.math.top_k(keyed, k=k if isinstance(k, int) else tf.cast(k, tf.int32), sorted=True)
    values = values if largest else -values
    if flipped:
        values = tf.cast(values, tf.bool)
    return _back(values, back), _back(tf.cast(indices, tf.int64), back)


@register(aten.sort.default)
def sort(x, dim=-1, descending=False):
    return sort_stable(x, None, dim, descending)


@register(aten.sort.stable)
def sort_stable(x, stable=None, dim=-1, descending=False):
    # stable either way: equal keys keep their order, which is what torch's CPU sort gives
    if rank(x) == 0:
        return x, tf.zeros([], tf.int64)
    d = axis(dim, rank(x))
    moved, back = _to_last(x, d)
    keys = tf.cast(moved, tf.int32) if moved.dtype == tf.bool else moved
    indices = tf.argsort(keys, axis=-1, direction="DESCENDING" if descending else "ASCENDING", stable=True)
    values = tf.gather(moved, indices, batch_dims=rank(x) - 1)
    return _back(values, back), _back(tf.cast(indices, tf.int64), back)

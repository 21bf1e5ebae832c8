"""Symbolic sizes and Python-level nodes: sym_size becomes tf.shape(x)[i] (or the static int),
and arithmetic on sizes stays integer math on int32 scalars at run time."""

from __future__ import annotations

import operator

import tensorflow as tf
import torch

from porter.graph_to_tf.context import dim, rank
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


@register(aten.sym_size.int)
def sym_size(x, d):
    return dim(x, d + rank(x) if d < 0 else d)


@register(aten.sym_numel.default)
def sym_numel(x):
    return tf.size(x)


def _getitem_check(node):
    # max_pool2d_with_indices computes no indices; refuse a graph that reads them
    source = node.args[0]
    if getattr(source, "target", None) is aten.max_pool2d_with_indices.default and node.args[1] == 1 and node.users:
        return "max_pool2d indices are used, which are not converted yet"
    return None


@register(operator.getitem, check=_getitem_check)
def getitem(values, i):
    return values[i]


def _both_static(a, b):
    return isinstance(a, (int, float)) and isinstance(b, (int, float))


@register(operator.add)
def add(a, b):
    return a + b


@register(operator.sub)
def sub(a, b):
    return a - b


@register(operator.mul)
def mul(a, b):
    return a * b


@register(operator.floordiv)
def floordiv(a, b):
    return a // b


@register(operator.mod)
def mod(a, b):
    return a % b


@register(operator.neg)
def neg(a):
    return -a


@register(operator.truediv)
def truediv(a, b):
    return a / b if _both_static(a, b) else tf.cast(a, tf.float64) / tf.cast(b, tf.float64)


def _compare(fn):
    def convert(a, b):
        return fn(a, b)

    return convert


for _op in (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge):
    register(_op)(_compare(_op))


@register(torch.sym_max)
def sym_max(a, b):
    return max(a, b) if _both_static(a, b) else tf.maximum(a, b)


@register(torch.sym_min)
def sym_min(a, b):
    return min(a, b) if _both_static(a, b) else tf.minimum(a, b)


@register(torch.sym_float)
def sym_float(a):
    return float(a) if isinstance(a, int) else tf.cast(a, tf.float32)


@register(torch.sym_int)
def sym_int(a):
    return int(a) if isinstance(a, (int, float)) else tf.cast(a, tf.int32)

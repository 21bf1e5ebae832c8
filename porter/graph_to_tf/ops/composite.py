"""Composite ops that torch.export's graph keeps before decomposition (linear, layer_norm, dropout, transpose,
conv1d/conv2d, flatten, silu, matmul). Where every op of an exported graph has a converter, porter converts it as
exported and skips run_decompositions (decompositions.py): on bert-base that re-trace is 3.3 s of a 12.7 s run.
Each converter computes what the op's core-ATen decomposition computes."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import axis, dim, out_dtype, out_meta, rank, shape_arg
from porter.graph_to_tf.ops.activation import log_softmax, sigmoid, softmax
from porter.graph_to_tf.ops.linalg import convolution
from porter.graph_to_tf.ops.normalization import native_layer_norm
from porter.graph_to_tf.ops.shape import to_copy
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


@register(aten.linear.default)
def linear(x, weight, bias=None):
    # as the decomposition does it: rows flattened to 2-D (one MatMul, TFLite's FULLY_CONNECTED), then back
    n = rank(x)
    rows = tf.reshape(x, [-1, weight.shape[1]]) if n != 2 else x
    y = tf.matmul(rows, weight, transpose_b=True)
    if bias is not None:
        y = y + bias
    if n == 2:
        return y
    return tf.reshape(y, shape_arg([dim(x, i) for i in range(n - 1)] + [weight.shape[0]]))


@register(aten.matmul.default)
def matmul(x, other):
    if rank(x) == 1 or rank(other) == 1:  # torch's vector cases: promote, multiply, drop the added dims
        a = x[None] if rank(x) == 1 else x
        b = other[:, None] if rank(other) == 1 else other
        y = tf.matmul(a, b)
        added = ([-2] if rank(x) == 1 else []) + ([-1] if rank(other) == 1 else [])
        return tf.squeeze(y, added)
    return tf.matmul(x, other)


@register(aten.layer_norm.default)
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return native_layer_norm(x, normalized_shape, weight, bias, eps)[0]


def _dropout_check(node):
    train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", False)
    return "dropout in training mode (export the model in eval mode)" if train else None


@register(aten.dropout.default, check=_dropout_check)
def dropout(x, p, train):
    return tf.identity(x)


@register(aten.transpose.int)
def transpose(x, dim0, dim1):
    n = rank(x)
    if n == 0:  # torch accepts dims 0 / -1 on a scalar
        return tf.identity(x)
    perm = list(range(n))
    a, b = axis(dim0, n), axis(dim1, n)
    perm[a], perm[b] = perm[b], perm[a]
    return tf.transpose(x, perm)


def _conv_nd_check(node):
    weight = node.args[1].meta["val"]
    return None if weight.dim() in (3, 4) else f"only 1-D and 2-D convolution is converted, not {weight.dim() - 2}-D"


@register(aten.conv1d.default, aten.conv2d.default, check=_conv_nd_check)
def conv(x, weight, bias=None, stride=(1,), padding=(0,), dilation=(1,), groups=1):
    if rank(x) == len(weight.shape) - 1:  # unbatched (C, L) or (C, H, W), as torch allows
        return conv(x[None], weight, bias, stride, padding, dilation, groups)[0]
    return convolution(x, weight, bias, list(stride), list(padding), list(dilation), False, [0], groups)


@register(aten.flatten.using_ints)
def flatten(x, start_dim=0, end_dim=-1):
    n = rank(x)
    if n == 0:
        return tf.reshape(x, [1])
    start, end = axis(start_dim, n), axis(end_dim, n)
    sizes = [dim(x, i) for i in range(start)] + [-1] + [dim(x, i) for i in range(end + 1, n)]
    return tf.reshape(x, shape_arg(sizes))


@register(aten.silu.default)
def silu(x):
    return x * sigmoid(x)


def _cast_to_output(x):
    return to_copy(x, dtype=out_meta().dtype)  # _to_copy's converter: bool as != 0, as torch casts


@register(aten.to.dtype)
def to_dtype(x, dtype, non_blocking=False, copy=False, memory_format=None):
    return _cast_to_output(x)


@register(aten.to.device)
def to_device(x, device, dtype, non_blocking=False, copy=False, memory_format=None):
    return _cast_to_output(x)


@register(aten.to.dtype_layout)
def to_dtype_layout(x, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False, copy=False,
                    memory_format=None):
    return _cast_to_output(x)


@register(aten.new_ones.default)
def new_ones(x, size, dtype=None, layout=None, device=None, pin_memory=None):
    return tf.ones(shape_arg(size), out_dtype())


@register(aten.__and__.Tensor)
def and_tensor(x, other):
    if x.dtype == tf.bool:
        return tf.logical_and(x, tf.cast(other, tf.bool) if other.dtype != tf.bool else other)
    return tf.bitwise.bitwise_and(x, tf.cast(other, x.dtype))


@register(aten.softmax.int)
def softmax_int(x, dim, dtype=None):
    return softmax(_cast_to_output(x), dim)


@register(aten.log_softmax.int)
def log_softmax_int(x, dim, dtype=None):
    return log_softmax(_cast_to_output(x), dim)

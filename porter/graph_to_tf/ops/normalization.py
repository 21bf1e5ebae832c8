"""Layer, batch (inference) and group norm, computed as torch does: population variance,
rsqrt(var + eps), then the affine. The extra outputs (mean, rstd) are returned as torch shapes them."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import dim, rank
from porter.graph_to_tf.layout import from_nhwc, twin
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


@register(aten.native_layer_norm.default)
def native_layer_norm(x, normalized_shape, weight, bias, eps):
    axes = list(range(rank(x) - len(normalized_shape), rank(x)))
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    centered = x - mean
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=axes, keepdims=True) + eps)
    y = centered * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean, rstd


def _channel(v, n):
    # a per-channel vector broadcast over NC... (channels on axis 1)
    return tf.reshape(v, [-1] + [1] * (n - 2))


@register(aten._native_batch_norm_legit_no_training.default)
def batch_norm_inference(x, weight, bias, running_mean, running_var, momentum, eps):
    n = rank(x)
    inv = tf.math.rsqrt(tf.cast(running_var, x.dtype) + eps)

    def normalize(v, channel):
        v = (v - channel(running_mean)) * channel(inv)
        v = v * channel(weight) if weight is not None else v
        return v + channel(bias) if bias is not None else v

    nhwc = twin(x)
    # channels last: the per-channel vectors broadcast over the last axis as they are
    y = from_nhwc(normalize(nhwc, lambda c: c)) if nhwc is not None else normalize(x, lambda c: _channel(c, n))
    empty = tf.zeros([0], x.dtype)
    return y, empty, empty


@register(aten.native_group_norm.default)
def native_group_norm(x, weight, bias, N, C, HxW, group, eps):
    n = rank(x)
    grouped = tf.reshape(x, [dim(x, 0), group, -1])
    mean = tf.reduce_mean(grouped, axis=2, keepdims=True)
    centered = grouped - mean
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=2, keepdims=True) + eps)
    y = tf.reshape(centered * rstd, tf.shape(x))
    if weight is not None:
        y = y * _channel(weight, n)
    if bias is not None:
        y = y + _channel(bias, n)
    return y, tf.squeeze(mean, 2), tf.squeeze(rstd, 2)

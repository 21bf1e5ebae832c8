"""Activations and softmax, as the TF ops TFLite maps to builtins (GELU stays GELU, not erf)."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import axis, out_dtype, rank
from porter.graph_to_tf.ops.elementwise import operand
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


@register(aten.relu.default)
def relu(x):
    return tf.nn.relu(x)


@register(aten.gelu.default)
def gelu(x, approximate="none"):
    return tf.nn.gelu(x, approximate=approximate == "tanh")


@register(aten.sigmoid.default)
def sigmoid(x):
    return tf.sigmoid(operand(x, out_dtype()))


@register(aten.hardtanh.default)
def hardtanh(x, min_val=-1.0, max_val=1.0):
    return tf.clip_by_value(x, min_val, max_val)


@register(aten.leaky_relu.default)
def leaky_relu(x, negative_slope=0.01):
    return tf.where(x > 0, x, x * negative_slope)


@register(aten.elu.default)
def elu(x, alpha=1.0, scale=1.0, input_scale=1.0):
    return scale * tf.where(x > 0, x, alpha * tf.math.expm1(x * input_scale))


@register(aten._softmax.default)
def softmax(x, dim, half_to_float=False):
    return tf.nn.softmax(x, axis=axis(dim, rank(x)))


@register(aten._log_softmax.default)
def log_softmax(x, dim, half_to_float=False):
    return tf.nn.log_softmax(x, axis=axis(dim, rank(x)))

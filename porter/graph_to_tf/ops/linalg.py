"""Matrix products and convolution. Convolutions keep torch's NCHW tensors and transpose to
NHWC around the TF op (TF's CPU kernels only run NHWC); layout.py keeps one transpose per NHWC stretch."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import rank
from porter.graph_to_tf.layout import from_nhwc, to_nhwc
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


@register(aten.mm.default, aten.bmm.default)
def mm(x, other):
    return tf.matmul(x, other)


@register(aten.addmm.default)
def addmm(bias, x, other, beta=1, alpha=1):
    product = tf.matmul(x, other)
    product = product * alpha if alpha != 1 else product
    return product + (bias * beta if beta != 1 else bias)


@register(aten.baddbmm.default)
def baddbmm(bias, x, other, beta=1, alpha=1):
    return addmm(bias, x, other, beta, alpha)


def _conv_check(node):
    transposed = node.args[6]
    weight = node.args[1].meta["val"]
    if transposed and any(d != 1 for d in node.args[5]):
        return "transposed convolution with dilation is not converted yet"
    if weight.dim() not in (3, 4):
        return f"only 1-D and 2-D convolution is converted, not {weight.dim() - 2}-D"
    return None


@register(aten.convolution.default, check=_conv_check)
def convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    one_d = rank(x) == 3
    spatial = rank(x) - 2
    # conv2d(padding="valid") and friends record one value for every spatial dim
    stride, padding, dilation, output_padding = ([*v] * spatial if len(v) == 1 else list(v)
                                                 for v in (stride, padding, dilation, output_padding or [0]))
    if one_d:  # conv1d as conv2d over a height of 1
        x, weight = tf.expand_dims(x, 2), tf.expand_dims(weight, 2)
        stride, padding, dilation, output_padding = [1, *stride], [0, *padding], [1, *dilation], [0, *output_padding]
    nhwc = tf.transpose(x, [0, 2, 3, 1]) if one_d else to_nhwc(x)
    if transposed:
        y = _conv_transpose(nhwc, weight, stride, padding, output_padding, groups)
        if bias is not None:
            y = tf.nn.bias_add(y, bias)
        return tf.squeeze(tf.transpose(y, [0, 3, 1, 2]), 2) if one_d else from_nhwc(y)
    pads = [[0, 0], [padding[0], padding[0]], [padding[1], padding[1]], [0, 0]]
    kernel = tf.transpose(weight, [2, 3, 1, 0])  # OIHW -> HWIO
    in_channels = x.shape[1]
    if groups == 1:
        y = tf.nn.conv2d(nhwc, kernel, [1, *stride, 1], pads, dilations=[1, *dilation, 1])
    elif groups == in_channels and in_channels is not None and (max(dilation) == 1 or max(stride) == 1):
        # depthwise: HWIO (kh, kw, 1, C*m) is TF's (kh, kw, C, m), output channel c*m + j in both
        depth = tf.reshape(kernel, [kernel.shape[0], kernel.shape[1], groups, weight.shape[0] // groups])
        y = tf.nn.depthwise_conv2d(tf.pad(nhwc, pads), depth, [1, *stride, 1], "VALID", dilations=list(dilation))
    else:
        # TF's CPU conv2d has no groups: one conv per group
        xs = tf.split(nhwc, groups, axis=3)
        ks = tf.split(kernel, groups, axis=3)
        y = tf.concat([tf.nn.conv2d(a, k, [1, *stride, 1], pads, dilations=[1, *dilation, 1]) for a, k in zip(xs, ks)], 3)
    if bias is not None:
        y = tf.nn.bias_add(y, bias)
    return tf.squeeze(tf.transpose(y, [0, 3, 1, 2]), 2) if one_d else from_nhwc(y)


def _conv_transpose(nhwc, weight, stride, padding, output_padding, groups):
    """torch's conv_transpose on NHWC: TF's conv2d_transpose at its full ("VALID") size, (H - 1) * s + k, then
    cropped by ``padding`` at both ends and grown by ``output_padding`` at the end, as torch defines the output.
    torch's weight is (in, out / groups, kh, kw); TF's filter (kh, kw, out, in). One op per group."""
    kh, kw = weight.shape[2], weight.shape[3]
    shape = tf.shape(nhwc)
    full = [(shape[1] - 1) * stride[0] + kh, (shape[2] - 1) * stride[1] + kw]
    xs = tf.split(nhwc, groups, axis=3) if groups > 1 else [nhwc]
    ws = tf.split(weight, groups, axis=0) if groups > 1 else [weight]
    ys = []
    for a, w in zip(xs, ws):
        kernel = tf.transpose(w, [2, 3, 1, 0])
        out_shape = tf.stack([shape[0], full[0], full[1], kernel.shape[2]])
        ys.append(tf.nn.conv2d_transpose(a, kernel, out_shape, [1, *stride, 1], "VALID"))
    y = tf.concat(ys, 3) if len(ys) > 1 else ys[0]
    extra = [max(0, op - p) for op, p in zip(output_padding, padding)]
    if any(extra):  # output_padding beyond the cropped padding: zeros at the end (torch's output there is the bias)
        y = tf.pad(y, [[0, 0], [0, extra[0]], [0, extra[1]], [0, 0]])
    size = [f - 2 * p + op for f, p, op in zip(full, padding, output_padding)]
    return y[:, padding[0]:padding[0] + size[0], padding[1]:padding[1] + size[1], :]


@register("transformers.grouped_mm_fallback.default")
def grouped_mm(x, weight, offs):
    """transformers' MoE grouped matmul: rows sorted by expert, ``offs`` the cumulative row count per
    expert; row i (in expert g: offs[g-1] <= i < offs[g]) is ``x[i] @ weight[g]``, rows past offs[-1]
    are 0. Every expert's product over all rows, then each row's own expert picked: E dense matmuls,
    no data-dependent shapes."""
    experts = weight.shape[0]
    rows = tf.range(tf.shape(x)[0], dtype=tf.int64)
    group = tf.reduce_sum(tf.cast(tf.cast(offs, tf.int64)[None, :] <= rows[:, None], tf.int32), axis=1)  # (S,)
    products = tf.matmul(tf.broadcast_to(x[None], tf.concat([[experts], tf.shape(x)], 0)), weight)  # (E, S, out)
    picked = tf.one_hot(group, experts, dtype=x.dtype)  # (S, E); all zero past the last expert
    return tf.reduce_sum(tf.transpose(picked)[:, :, None] * products, axis=0)

"""2-D pooling in NCHW, transposed to NHWC around the TF op. torch's padding and ceil_mode become
explicit pads (-inf for max; for average, a count of the cells each window may divide by)."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import dim, rank
from porter.graph_to_tf.layout import from_nhwc, to_nhwc
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _pair(v):
    return [v[0], v[0]] if len(v) == 1 else list(v)


def _ceil_extra(n, k, s, p, ceil_mode):
    """Cells to add after the input so a VALID window count equals torch's output size."""
    if not isinstance(n, int):
        if not ceil_mode:
            return 0
        # the same arithmetic on the run-time size (an int32 scalar)
        span = n + 2 * p - k
        out = -tf.math.floordiv(-span, s) + 1
        out = tf.where((out - 1) * s >= n + p, out - 1, out)
        return tf.maximum((out - 1) * s + k - (n + 2 * p), 0)
    span = n + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # torch drops a last window that starts in the padding
        out -= 1
    return max((out - 1) * s + k - (n + 2 * p), 0)


def _padded_nhwc(x, kernel, stride, padding, ceil_mode, value):
    nhwc = to_nhwc(x)
    extra = [_ceil_extra(dim(x, 2 + i), kernel[i], stride[i], padding[i], ceil_mode) for i in range(2)]
    pads = [[0, 0], [padding[0], padding[0] + extra[0]], [padding[1], padding[1] + extra[1]], [0, 0]]
    return tf.pad(nhwc, pads, constant_values=value), pads


def _max_check(node):
    dilation = node.args[4] if len(node.args) > 4 else [1]
    return None if all(d == 1 for d in dilation) else "dilated max pooling is not converted yet"


@register(aten.max_pool2d_with_indices.default, check=_max_check)
def max_pool2d_with_indices(x, kernel_size, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
    kernel = _pair(kernel_size)
    stride = _pair(stride) if stride else kernel
    lowest = float("-inf") if x.dtype.is_floating else x.dtype.min
    padded, _ = _padded_nhwc(x, kernel, stride, _pair(padding), ceil_mode, lowest)
    y = tf.nn.max_pool2d(padded, kernel, [1, *stride, 1], "VALID")
    # the indices are not computed: a graph that reads them is refused by the getitem check
    return from_nhwc(y), None


@register(aten.avg_pool2d.default)
def avg_pool2d(x, kernel_size, stride=(), padding=(0,), ceil_mode=False, count_include_pad=True, divisor_override=None):
    kernel = _pair(kernel_size)
    stride = _pair(stride) if stride else kernel
    padding = _pair(padding)
    padded, pads = _padded_nhwc(x, kernel, stride, padding, ceil_mode, 0.0)
    window = float(kernel[0] * kernel[1])
    sums = tf.nn.avg_pool2d(padded, kernel, [1, *stride, 1], "VALID") * window
    if divisor_override:
        y = sums / divisor_override
    elif not any(padding) and all(isinstance(pads[i][1], int) and pads[i][1] == 0 for i in (1, 2)):
        y = sums / window
    else:
        ones = tf.ones_like(x[:, :1])
        ones = tf.transpose(ones, [0, 2, 3, 1])
        # the explicit padding counts when count_include_pad; the ceil_mode overhang never does
        pad_value = 1.0 if count_include_pad else 0.0
        counted = tf.pad(ones, [[0, 0], [padding[0], padding[0]], [padding[1], padding[1]], [0, 0]], constant_values=pad_value)
        counted = tf.pad(counted, [[0, 0], [0, pads[1][1] - padding[0]], [0, pads[2][1] - padding[1]], [0, 0]])
        counts = tf.nn.avg_pool2d(counted, kernel, [1, *stride, 1], "VALID") * window
        y = sums / counts
    return from_nhwc(y)


@register(aten._adaptive_avg_pool2d.default)
def adaptive_avg_pool2d(x, output_size):
    if rank(x) == 3:  # unbatched (C, H, W)
        return adaptive_avg_pool2d(x[None], output_size)[0]
    out_h, out_w = _pair(output_size)
    if (out_h, out_w) == (1, 1):
        return tf.reduce_mean(x, axis=[2, 3], keepdims=True)
    h, w = dim(x, 2), dim(x, 3)
    if isinstance(h, int) and isinstance(w, int) and h % out_h == 0 and w % out_w == 0:
        kernel = [h // out_h, w // out_w]
        y = tf.nn.avg_pool2d(to_nhwc(x), kernel, [1, *kernel, 1], "VALID")
        return from_nhwc(y)
    # torch's windows: [floor(i*H/out), ceil((i+1)*H/out)) per output cell
    rows = []
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        cells = [tf.reduce_mean(x[:, :, h0:h1, (j * w) // out_w:-((-(j + 1) * w) // out_w)], axis=[2, 3])
                 for j in range(out_w)]
        rows.append(tf.stack(cells, axis=-1))
    return tf.stack(rows, axis=-2)

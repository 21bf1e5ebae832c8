"""Upsampling in NCHW as TF's ResizeBilinear / ResizeNearestNeighbor on NHWC (TFLite builtins).
torch's align_corners=False is TF's half_pixel_centers for bilinear; torch's nearest is
floor(dst * in / out), which is TF's nearest with neither flag."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import dim, shape_arg
from porter.graph_to_tf.layout import from_nhwc, to_nhwc
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _size(x, output_size, scale_factors):
    if output_size is not None:
        return output_size
    return [dim(x, 2 + i) * s if isinstance(dim(x, 2 + i), int) and float(s).is_integer()
            else tf.cast(tf.floor(tf.cast(dim(x, 2 + i), tf.float64) * s), tf.int32) for i, s in enumerate(scale_factors)]


def _check(node):
    scales = node.args[-1] if node.args[-1] is not None else None
    output_size = node.args[1]
    if output_size is None and scales is not None and any(not float(s).is_integer() for s in scales):
        return "upsampling by a fractional scale factor (torch maps coordinates by 1/scale, not in/out) is not converted"
    return None


@register(aten.upsample_bilinear2d.vec, check=_check)
def upsample_bilinear2d(x, output_size, align_corners, scale_factors):
    size = shape_arg(_size(x, output_size, scale_factors))
    nhwc = to_nhwc(x)
    y = tf.compat.v1.image.resize_bilinear(nhwc, size, align_corners=bool(align_corners),
                                           half_pixel_centers=not align_corners)
    return from_nhwc(tf.cast(y, x.dtype))


@register(aten.upsample_bilinear2d.default)
def upsample_bilinear2d_sizes(x, output_size, align_corners, scales_h=None, scales_w=None):
    return upsample_bilinear2d(x, output_size, align_corners, None)


@register(aten.upsample_nearest2d.vec, check=_check)
def upsample_nearest2d(x, output_size, scale_factors):
    size = shape_arg(_size(x, output_size, scale_factors))
    nhwc = to_nhwc(x)
    y = tf.compat.v1.image.resize_nearest_neighbor(nhwc, size, align_corners=False, half_pixel_centers=False)
    return from_nhwc(y)


@register(aten.upsample_nearest2d.default)
def upsample_nearest2d_sizes(x, output_size, scales_h=None, scales_w=None):
    return upsample_nearest2d(x, output_size, None)

"""Ops that place values by index or geometry: ReverseSequence, Unique, CenterCropPad, Col2Im,
AffineGrid, MaxUnpool, TensorScatter, RotaryEmbedding.

Native torch where it computes the same (F.affine_grid; torch.unique under Unique); the rest are
runtime helpers copied into model.py, since their output shapes or loops depend on values.
"""

from __future__ import annotations

import torch.nn.functional as F

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit, ints
from porter.onnx_to_torch.registry import register


@register("ReverseSequence")
def ReverseSequence(input, sequence_lens, *, batch_axis=1, time_axis=0):
    return emit(runtime.reverse_sequence, input, sequence_lens, batch_axis, time_axis)


@register("Unique")
def Unique(X, *, axis=None, sorted=1):
    result = emit(runtime.onnx_unique, X, axis, bool(sorted))
    return [result[i] for i in range(4)]


@register("CenterCropPad", shape_inputs=(1,))
def CenterCropPad(input_data, shape, *, axes=None):
    return emit(runtime.center_crop_pad, input_data, ints(shape), axes)


@register("Col2Im", shape_inputs=(1, 2))
def Col2Im(input, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    return emit(runtime.col2im, input, ints(image_shape), ints(block_shape), dilations, pads, strides)


@register("AffineGrid", shape_inputs=(1,))
def AffineGrid(theta, size, *, align_corners=0):
    return emit(F.affine_grid, theta, ints(size), align_corners=bool(align_corners))


@register("MaxUnpool", since=9, shape_inputs=(2,))
def MaxUnpool(X, I, output_shape=None, *, kernel_shape, pads=None, strides=None):
    return emit(runtime.max_unpool, X, I, ints(output_shape), kernel_shape, pads, strides)


@register("TensorScatter", allowed={"mode": ("linear", "circular")})
def TensorScatter(past_cache, update, write_indices=None, *, axis=-2, mode="linear"):
    return emit(runtime.tensor_scatter, past_cache, update, write_indices, axis, mode == "circular")


@register("RotaryEmbedding")
def RotaryEmbedding(X, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                    rotary_embedding_dim=0):
    return emit(runtime.rotary_embedding, X, cos_cache, sin_cache, position_ids, bool(interleaved), num_heads,
                rotary_embedding_dim)

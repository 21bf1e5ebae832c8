"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the integer
matmul/conv ops (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv).

Integer arithmetic is done exactly: products and sums in float64 (exact for 8/16-bit operands,
whose int32 accumulators stay far below 2**53; torch has no integer matmul/conv kernels on CPU),
then cast to int32. Rounding is half to even (torch.round), as the spec says.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch.context import dtype, dynamic_dims, rank, static_shape
from porter.onnx_to_torch.ops.spatial import AUTO_PADS, defaults, pad_input
from porter.onnx_to_torch.registry import register
from porter.onnx_to_torch.tensors import torch_dtype

_INTEGER_RANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255), torch.int16: (-32768, 32767),
                  torch.uint16: (0, 65535), torch.int32: (-2**31, 2**31 - 1)}


def _integer(type_) -> torch.dtype:
    if type_ not in _INTEGER_RANGE:
        raise UnsupportedModelError(f"quantized type {type_} is not supported (8/16/32-bit integers are)",
                                    hint="float8/int4 quantization has no torch equivalent here")
    return type_


def _along(scale, x, axis: int, block_size: int):
    """A scale/zero point shaped to broadcast against ``x``: per tensor, per ``axis``, or per block."""
    r = rank(x)
    axis = axis % r if r else 0
    if block_size:
        size = dynamic_dims(x)[axis]
        return scale.repeat_interleave(block_size, dim=axis).narrow(axis, 0, size)
    if rank(scale) == 1 and static_shape(scale)[0] != 1:
        return scale.reshape([-1 if i == axis else 1 for i in range(r)])
    return scale.reshape(())


def _quantize(x, scale, zero_point, target):
    low, high = _INTEGER_RANGE[target]
    compute = torch.float64 if dtype(x) == torch.float64 else torch.float32
    y = torch.round(x.to(compute) / scale.to(compute))
    if zero_point is not None:
        y = y + zero_point.to(compute)
    return y.clamp(low, high).to(target)


@register("QuantizeLinear", since=10, allowed={"saturate": (1,), "precision": (0,)})
def QuantizeLinear(x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0, saturate=1,
                   precision=0):
    if y_zero_point is not None:
        target = _integer(dtype(y_zero_point))
    else:
        target = _integer(torch_dtype(output_dtype) if output_dtype else torch.uint8)
    zero = _along(y_zero_point, x, axis, block_size) if y_zero_point is not None else None
    return _quantize(x, _along(y_scale, x, axis, block_size), zero, target)


@register("DequantizeLinear", since=10, allowed={"output_dtype": lambda t: t == 0 or torch_dtype(t) is not None})
def DequantizeLinear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    _integer(dtype(x))
    out = torch_dtype(output_dtype) if output_dtype else dtype(x_scale)
    value = x.to(torch.float32)
    if x_zero_point is not None:
        value = value - _along(x_zero_point, x, axis, block_size).to(torch.float32)
    return (value * _along(x_scale, x, axis, block_size).to(torch.float32)).to(out)


@register("DynamicQuantizeLinear")
def DynamicQuantizeLinear(x):
    # uint8, range widened to include 0; scale 1/255 when the input is all zeros
    high = torch.clamp(torch.max(x), min=0)
    low = torch.clamp(torch.min(x), max=0)
    span = torch.where(high == low, torch.ones_like(high), high - low)
    scale = span / 255
    zero_point = torch.round(torch.clamp(-low / scale, 0, 255))
    y = torch.clamp(torch.round(x / scale) + zero_point, 0, 255)
    return y.to(torch.uint8), scale, zero_point.to(torch.uint8)


def _centered(v, zero_point):
    """``v - zero_point`` in float64: exact for 8/16-bit integers."""
    v = v.to(torch.float64)
    return v - zero_point.to(torch.float64) if zero_point is not None else v


@register("MatMulInteger")
def MatMulInteger(A, B, a_zero_point=None, b_zero_point=None):
    if a_zero_point is not None and rank(a_zero_point) == 1 and rank(A) >= 2:
        a_zero_point = a_zero_point.reshape(-1, 1)  # per row of A
    return torch.matmul(_centered(A, a_zero_point), _centered(B, b_zero_point)).to(torch.int32)


@register("QLinearMatMul", since=10)
def QLinearMatMul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    product = torch.matmul(_centered(a, a_zero_point), _centered(b, b_zero_point))
    # the multiplier is formed in the scales' own type, as the reference does
    y = product * (a_scale * b_scale / y_scale).to(torch.float64) + y_zero_point.to(torch.float64)
    low, high = _INTEGER_RANGE[_integer(dtype(y_zero_point))]
    return torch.round(y).clamp(low, high).to(dtype(y_zero_point))


_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _integer_conv(X, W, auto_pad, dilations, group, kernel_shape, pads, strides):
    n = rank(W) - 2
    kernel = list(kernel_shape or static_shape(W)[2:])
    strides, dilations = defaults(n, strides, dilations)
    X, padding = pad_input(X, auto_pad, pads, kernel, strides, dilations, 0.0)
    return _CONV_FN[n](X, W, None, strides, padding, dilations, group)


def _per_channel(zero_point, w):
    if zero_point is not None and rank(zero_point) == 1 and static_shape(zero_point)[0] != 1:
        return zero_point.reshape([-1] + [1] * (rank(w) - 1))
    return zero_point


@register("ConvInteger", allowed={"auto_pad": AUTO_PADS})
def ConvInteger(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None, group=1,
                kernel_shape=None, pads=None, strides=None):
    # pads are zeros of x - x_zero_point, as the reference pads after centering
    y = _integer_conv(_centered(x, x_zero_point), _centered(w, _per_channel(w_zero_point, w)),
                      auto_pad, dilations, group, kernel_shape, pads, strides)
    return y.to(torch.int32)


@register("QLinearConv", allowed={"auto_pad": AUTO_PADS})
def QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None, *,
                auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    y = _integer_conv(_centered(x, x_zero_point), _centered(w, _per_channel(w_zero_point, w)),
                      auto_pad, dilations, group, kernel_shape, pads, strides)
    if B is not None:
        y = y + B.to(torch.float64).reshape([-1] + [1] * (rank(x) - 2))
    w_scale = _per_channel(w_scale, w).reshape([-1] + [1] * (rank(x) - 2)) if rank(w_scale) == 1 else w_scale
    y = y * (x_scale * w_scale / y_scale).to(torch.float64)
    target = dtype(y_zero_point) if y_zero_point is not None else dtype(x)
    if y_zero_point is not None:
        y = y + y_zero_point.to(torch.float64)
    low, high = _INTEGER_RANGE[_integer(target)]
    return torch.round(y.clamp(low, high)).to(target)

"""Conv and ConvTranspose: nn.ConvNd / nn.ConvTransposeNd when the weights are constants; CausalConvWithState."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit, is_const, module, rank, static_shape
from porter.onnx_to_torch.ops.spatial import AUTO_PADS, defaults, pad_input
from porter.onnx_to_torch.registry import register

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _load(layer: nn.Module, weight, bias) -> nn.Module:
    layer.weight = nn.Parameter(weight)
    if bias is not None:
        layer.bias = nn.Parameter(bias)
    return layer


@register("Conv", allowed={"auto_pad": AUTO_PADS})
def Conv(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    n = rank(W) - 2
    kernel = list(kernel_shape or static_shape(W)[2:])
    strides, dilations = defaults(n, strides, dilations)
    X, padding = pad_input(X, auto_pad, pads, kernel, strides, dilations, 0.0)
    if not (is_const(W) and (B is None or is_const(B))) or n not in _CONV:
        return _CONV_FN[n](X, W, B, strides, padding, dilations, group)
    layer = _CONV[n](W.shape[1] * group, W.shape[0], kernel, stride=strides, padding=padding,
                     dilation=dilations, groups=group, bias=B is not None)
    return module(_load(layer, W, B), X, named_after=W)


def _transpose_pads(X, auto_pad, pads, kernel, strides, dilations, output_padding, output_shape):
    n = len(kernel)
    if output_shape is None and auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return list(pads or [0] * (2 * n))
    sizes = static_shape(X)[2:]
    if any(s is None for s in sizes):
        raise UnsupportedModelError("ConvTranspose with output_shape/auto_pad needs static spatial input sizes")
    wanted = output_shape[-n:] if output_shape is not None else [s * st for s, st in zip(sizes, strides)]
    begins, ends = [], []
    for size, want, k, s, d, extra in zip(sizes, wanted, kernel, strides, dilations, output_padding):
        total = s * (size - 1) + extra + (k - 1) * d + 1 - want
        small = total // 2
        # the spec (and onnxruntime): only SAME_UPPER puts the smaller half first; NOTSET splits as SAME_LOWER
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - small if auto_pad == "SAME_UPPER" else small)
    return begins + ends


@register("ConvTranspose", allowed={"auto_pad": AUTO_PADS})
def ConvTranspose(X, W, B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                  output_padding=None, output_shape=None, pads=None, strides=None):
    n = rank(W) - 2
    kernel = list(kernel_shape or static_shape(W)[2:])
    strides, dilations = defaults(n, strides, dilations)
    output_padding = list(output_padding or [0] * n)
    pads = _transpose_pads(X, auto_pad, pads, kernel, strides, dilations, output_padding, output_shape)
    begins, ends = pads[:n], pads[n:]
    # An output_shape beyond the natural output gives negative end pads: more output_padding (torch's limit).
    for i, end in enumerate(ends):
        if end < 0:
            output_padding[i], ends[i] = output_padding[i] - end, 0
    if min(begins) < 0 or any(p >= max(s, d) for p, s, d in zip(output_padding, strides, dilations)):
        raise UnsupportedModelError(
            f"ConvTranspose: output_shape={output_shape} lies too far beyond the natural output for torch "
            f"(pads {begins + ends}, output_padding {output_padding} must stay below the stride or dilation)")
    symmetric = begins == ends
    padding = begins if symmetric else [0] * n
    if is_const(W) and (B is None or is_const(B)):
        layer = _CONV_T[n](W.shape[0], W.shape[1] * group, kernel, stride=strides, padding=padding,
                           output_padding=output_padding, groups=group, bias=B is not None, dilation=dilations)
        y = module(_load(layer, W, B), X, named_after=W)
    else:
        conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
        y = conv_t(X, W, B, strides, padding, output_padding, group, dilations)
    if symmetric:
        return y
    # Uneven pads: convolve unpadded, then crop each side (pads shrink a transposed conv's output).
    crop = tuple(slice(b, -e if e else None) for b, e in zip(begins, ends))
    return y[(slice(None), slice(None)) + crop]


@register("CausalConvWithState", allowed={"activation": ("none", "silu", "swish")})
def CausalConvWithState(input, weight, bias=None, past_state=None, *, activation="none"):
    out = emit(runtime.causal_conv_with_state, input, weight, bias, past_state, activation != "none")
    return out[0], out[1]

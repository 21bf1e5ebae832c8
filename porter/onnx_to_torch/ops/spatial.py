"""Padding rules shared by convolution and pooling (no converters here)."""

from __future__ import annotations

import torch.nn.functional as F

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit, static_shape

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def defaults(n, strides, dilations):
    return list(strides or [1] * n), list(dilations or [1] * n)


def resolve_pads(x, auto_pad, pads, kernel, strides, dilations, like=None):
    """Explicit ONNX pads [begins..., ends...], or None when they depend on run-time sizes."""
    n = len(kernel)
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sizes = static_shape(like if like is not None else x)[2:]
        if any(s is None for s in sizes):
            return None
        return runtime.same_pads(sizes, kernel, strides, dilations, auto_pad == "SAME_UPPER")
    return list(pads or [0] * (2 * n))


def pad_input(x, auto_pad, pads, kernel, strides, dilations, value, fits=lambda begins: True, like=None):
    """Returns (x, padding): symmetric pads the torch op can take itself stay in ``padding``;
    anything else is applied to ``x`` here with F.pad and ``padding`` becomes zeros."""
    n = len(kernel)
    resolved = resolve_pads(x, auto_pad, pads, kernel, strides, dilations, like)
    if resolved is None:
        return emit(runtime.pad_same, x, list(kernel), strides, dilations, auto_pad == "SAME_UPPER", value), [0] * n
    begins, ends = resolved[:n], resolved[n:]
    if begins == ends and fits(begins):
        return x, begins
    return F.pad(x, runtime.onnx_pads_to_torch([0, 0, *begins, 0, 0, *ends]), value=value), [0] * n


def explicitly_padded(x, auto_pad, pads, kernel, strides, dilations, fits=lambda begins: True) -> bool:
    resolved = resolve_pads(x, auto_pad, pads, kernel, strides, dilations)
    n = len(kernel)
    return resolved is None or not (resolved[:n] == resolved[n:] and fits(resolved[:n]))

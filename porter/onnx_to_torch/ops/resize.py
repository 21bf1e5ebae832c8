"""Resize/Upsample: F.interpolate where torch's sampling matches ONNX's, index gathering for nearest."""

from __future__ import annotations

import torch.nn.functional as F

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import current, emit, is_const, method, rank, static_shape
from porter.onnx_to_torch.registry import register

_COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
_ROUNDING = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_TORCH_MODES = {("linear", 1): "linear", ("linear", 2): "bilinear", ("linear", 3): "trilinear", ("cubic", 2): "bicubic"}


def _given(v):
    """A scales/sizes input as a list (a run-time list when not constant), None when absent or empty."""
    if v is None or (is_const(v) and v.numel() == 0):
        return None
    return v.reshape(-1).tolist() if is_const(v) else method(v, "tolist")


def _check_torch_can(X, mode, coordinates, cubic_a, exclude_outside):
    spatial = rank(X) - 2
    if mode == "nearest":
        return
    if (_TORCH_MODES.get((mode, spatial)) is None or coordinates not in ("half_pixel", "align_corners")
            or (mode == "cubic" and (cubic_a != -0.75 or exclude_outside))):
        raise UnsupportedModelError(
            f"node {current().node_label!r} (Resize): mode={mode!r} with coordinate_transformation_mode="
            f"{coordinates!r}, cubic_coeff_a={cubic_a} on a rank-{rank(X)} input has no torch equivalent")


def _resize(X, scales, sizes, axes, mode, coordinates, rounding, cubic_a=-0.75, exclude_outside=0):
    _check_torch_can(X, mode, coordinates, cubic_a, exclude_outside)
    shape = static_shape(X)
    if None in shape or (scales is not None and not isinstance(scales, list)) or (
            sizes is not None and not isinstance(sizes, list)):
        return emit(runtime.onnx_resize, X, scales, sizes, axes, mode, coordinates, rounding)
    out_sizes, out_scales = runtime.resize_targets(shape, scales, sizes, axes)
    if mode == "nearest":
        return emit(runtime.resize_nearest, X, out_sizes, out_scales, coordinates, rounding)
    if out_scales[:2] != [1.0, 1.0]:
        raise UnsupportedModelError(f"node {current().node_label!r} (Resize): torch cannot resize batch/channels")
    torch_mode = _TORCH_MODES[(mode, rank(X) - 2)]
    align = coordinates == "align_corners"
    if sizes is not None:
        return F.interpolate(X, size=out_sizes[2:], mode=torch_mode, align_corners=align)
    return F.interpolate(X, scale_factor=out_scales[2:], mode=torch_mode, align_corners=align)


@register("Resize", since=11, allowed={
    "coordinate_transformation_mode": _COORDINATES, "nearest_mode": _ROUNDING, "antialias": (0,),
    "mode": ("nearest", "linear", "cubic"), "keep_aspect_ratio_policy": ("stretch",)})
def Resize(X, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
           coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
           nearest_mode="round_prefer_floor"):
    return _resize(X, _given(scales), _given(sizes), axes, mode, coordinate_transformation_mode,
                   nearest_mode, cubic_coeff_a, exclude_outside)


@register("Resize", since=10, until=10, allowed={"mode": ("nearest",)})
def Resize_10(X, scales, *, mode="nearest"):
    return _resize(X, _given(scales), None, None, mode, "asymmetric", "floor")


@register("Upsample", since=9, allowed={"mode": ("nearest",)})
def Upsample(X, scales, *, mode="nearest"):
    return _resize(X, _given(scales), None, None, mode, "asymmetric", "floor")


_GRID_MODES = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest", "cubic": "bicubic",
               "bicubic": "bicubic"}


@register("GridSample", allowed={"mode": _GRID_MODES, "padding_mode": ("zeros", "border", "reflection")})
def GridSample(X, grid, *, align_corners=0, mode="linear", padding_mode="zeros"):
    return F.grid_sample(X, grid, mode=_GRID_MODES[mode], padding_mode=padding_mode,
                         align_corners=bool(align_corners))

"""Resize/Upsample: F.interpolate where torch's sampling matches ONNX's, index gathering for nearest,
and the spec's own per-axis sampling matrices (runtime.resize_reference) for every other mode."""

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


def _torch_can(X, mode, coordinates, cubic_a, exclude_outside):
    """Whether F.interpolate (or nearest's index gathering) samples exactly where ONNX does
    (align_corners is not: ONNX spaces samples over in*scale, torch over the rounded size)."""
    if mode == "nearest":
        return coordinates in _COORDINATES
    return (_TORCH_MODES.get((mode, rank(X) - 2)) is not None and coordinates == "half_pixel"
            and not (mode == "cubic" and (cubic_a != -0.75 or exclude_outside)))


def _reference(X, scales, sizes, axes, mode, coordinates, rounding, cubic_a, exclude_outside, antialias,
               policy, roi, extrapolation_value):
    """runtime.onnx_resize_reference: the spec's own sampling, when F.interpolate has no equal."""
    if coordinates == "tf_crop_and_resize" and roi is None:
        raise UnsupportedModelError(
            f"node {current().node_label!r} (Resize): coordinate_transformation_mode='tf_crop_and_resize' "
            "needs the roi input")
    return emit(runtime.onnx_resize_reference, X, roi, scales, sizes, axes, policy, mode, coordinates, rounding,
                float(cubic_a), bool(exclude_outside), bool(antialias), float(extrapolation_value))


def _resize(X, scales, sizes, axes, mode, coordinates, rounding, cubic_a=-0.75, exclude_outside=0, antialias=0,
            policy="stretch", roi=None, extrapolation_value=0.0):
    if antialias or policy != "stretch" or not _torch_can(X, mode, coordinates, cubic_a, exclude_outside):
        return _reference(X, scales, sizes, axes, mode, coordinates, rounding, cubic_a, exclude_outside, antialias,
                          policy, roi, extrapolation_value)
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
    "coordinate_transformation_mode": _COORDINATES + ("half_pixel_symmetric", "tf_crop_and_resize"),
    "nearest_mode": _ROUNDING, "antialias": (0, 1), "mode": ("nearest", "linear", "cubic"),
    "keep_aspect_ratio_policy": ("stretch", "not_larger", "not_smaller")})
def Resize(X, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
           coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
           nearest_mode="round_prefer_floor"):
    if antialias and mode == "nearest":
        raise UnsupportedModelError(f"node {current().node_label!r} (Resize): antialias=1 is defined for "
                                    "linear and cubic modes only, not mode='nearest'")
    return _resize(X, _given(scales), _given(sizes), axes, mode, coordinate_transformation_mode,
                   nearest_mode, cubic_coeff_a, exclude_outside, antialias, keep_aspect_ratio_policy, _given(roi),
                   extrapolation_value)


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

"""Ops that move data around without computing on it: shapes, reshapes, slicing, padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import (
    SymShape, dtype, dynamic_dims, emit, ints, is_const, is_proxy, module, output_count, prod, rank, scalar,
    static_shape,
)
from porter.onnx_to_torch.registry import register


def _positive(axis: int, r: int) -> int:
    return axis + r if axis < 0 else axis


@register("Shape")
def Shape(data, *, start=0, end=None):
    if is_const(data):
        return torch.tensor(data.shape, dtype=torch.int64)[start:end]
    return SymShape(dynamic_dims(data)[start:end]).simplify()


@register("Size")
def Size(data):
    if is_const(data):
        return torch.tensor(data.numel(), dtype=torch.int64)
    return SymShape([prod(dynamic_dims(data))], scalar=True).simplify()


@register("Reshape", since=5, shape_inputs=(1,))
def Reshape(data, shape, *, allowzero=0):
    sizes = ints(shape)
    if is_proxy(sizes):
        return emit(runtime.onnx_reshape, data, sizes, allowzero)
    if not allowzero and any(not is_proxy(s) and s == 0 for s in sizes):
        dims = dynamic_dims(data) if not is_const(data) else list(data.shape)
        sizes = [dims[i] if not is_proxy(s) and s == 0 else s for i, s in enumerate(sizes)]
    return data.reshape(sizes)


@register("Flatten")
def Flatten(x, *, axis=1):
    axis = _positive(axis, rank(x))
    if axis == 1 and rank(x) > 1:
        return module(torch.nn.Flatten(), x)
    return x.reshape(prod(dynamic_dims(x)[:axis]) if not is_const(x) else prod(x.shape[:axis]), -1)


@register("Squeeze", since=13, shape_inputs=(1,))
def Squeeze(data, axes=None):
    if axes is None:
        return torch.squeeze(data)
    if is_proxy(axes):  # axes known only at run time: the output rank is still rank - len(axes)
        return _typed(emit(runtime.onnx_squeeze, data, ints(axes)), data, axes, -1)
    return torch.squeeze(data, tuple(ints(axes)))


@register("Squeeze", until=12)
def Squeeze_1(data, *, axes=None):
    return torch.squeeze(data, tuple(axes)) if axes else torch.squeeze(data)


def _unsqueeze(data, axes):
    out_rank = rank(data) + len(axes)
    for axis in sorted(_positive(a, out_rank) for a in axes):
        data = data.unsqueeze(axis)
    return data


@register("Unsqueeze", since=13, shape_inputs=(1,))
def Unsqueeze(data, axes):
    if is_proxy(axes):
        return _typed(emit(runtime.onnx_unsqueeze, data, ints(axes)), data, axes, 1)
    return _unsqueeze(data, ints(axes))


def _typed(result, like, axes, sign):
    """Record the (dtype, rank) of a runtime helper's result, which meta tensors cannot work out."""
    (count,) = static_shape(axes) or [None]
    if count is None:
        raise UnsupportedModelError("Squeeze/Unsqueeze axes of unknown length at run time",
                                    hint="give the axes input a static shape")
    result.node.meta["onnx_type"] = (dtype(like), rank(like) + sign * count)
    return result


@register("Unsqueeze", until=12)
def Unsqueeze_1(data, *, axes):
    return _unsqueeze(data, axes)


@register("Transpose")
def Transpose(data, *, perm=None):
    return data.permute(perm if perm is not None else list(reversed(range(rank(data)))))


@register("Concat", since=4)
def Concat(*inputs, axis):
    return torch.cat(list(inputs), dim=axis)


def _split(x, sizes, axis, count):
    if sizes is not None:
        return torch.split(x, sizes, dim=axis)
    size = dynamic_dims(x)[axis] if not is_const(x) else x.shape[axis]
    return torch.split(x, (size + count - 1) // count, dim=axis)  # last piece may be smaller


@register("Split", since=18, shape_inputs=(1,))
def Split(input, split=None, *, axis=0, num_outputs=None):
    return _split(input, ints(split), axis, num_outputs or output_count())


@register("Split", since=13, until=17, shape_inputs=(1,))
def Split_13(input, split=None, *, axis=0):
    return _split(input, ints(split), axis, output_count())


@register("Split", since=2, until=12)
def Split_2(input, *, axis=0, split=None):
    return _split(input, split, axis, output_count())


@register("Slice", since=10, shape_inputs=(1, 2, 3, 4))
def Slice(data, starts, ends, axes=None, steps=None):
    starts, ends, axes, steps = ints(starts), ints(ends), ints(axes), ints(steps)
    if any(is_proxy(v) for v in (starts, ends, axes, steps)):  # a run-time list: only eager mode
        return emit(runtime.onnx_slice, data, starts, ends, axes, steps)
    return _slice(data, starts, ends, axes, steps)


@register("Slice", until=9)
def Slice_1(data, *, starts, ends, axes=None):
    return _slice(data, starts, ends, axes, None)


def _slice(data, starts, ends, axes, steps):
    r = rank(data)
    axes = [_positive(a, r) for a in (axes if axes is not None else range(len(starts)))]
    steps = steps if steps is not None else [1] * len(starts)
    if any(not is_proxy(s) and s < 0 for s in steps):
        return emit(runtime.onnx_slice, data, starts, ends, axes, steps)
    index = [slice(None)] * (max(axes) + 1)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis] = slice(start, end, None if not is_proxy(step) and step == 1 else step)
    return data[tuple(index)]


@register("Expand", shape_inputs=(1,))
def Expand(input, shape):
    sizes = ints(shape)
    if is_proxy(sizes):
        return emit(runtime.onnx_fix_expand, input, sizes)
    r, n = rank(input), len(sizes)
    full = [1] * (r - n) + list(sizes)
    # ONNX broadcasts both ways: a 1 in `shape` keeps the input's size, which torch spells -1.
    existing = range(len(full) - r, len(full))
    target = [-1 if i in existing and not is_proxy(s) and s == 1 else s for i, s in enumerate(full)]
    return input.expand(target)


@register("Tile", since=6, shape_inputs=(1,))
def Tile(input, repeats):
    return input.repeat(ints(repeats))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(data, pads, value, mode, axes=None):
    r = rank(data)
    if axes is not None:  # expand per-axis pads to every axis
        axes = [_positive(a, r) for a in axes]
        full = [0] * (2 * r)
        for i, axis in enumerate(axes):
            full[axis], full[axis + r] = pads[i], pads[i + len(axes)]
        pads = full
    torch_pads = runtime.onnx_pads_to_torch(list(pads))
    if mode == "constant":
        return F.pad(data, torch_pads, value=0 if value is None else value)
    return F.pad(data, torch_pads, mode=_PAD_MODES[mode])


@register("Pad", since=11, shape_inputs=(1, 2, 3), allowed={"mode": _PAD_MODES})
def Pad(data, pads, constant_value=None, axes=None, *, mode="constant"):
    pads, axes = ints(pads), ints(axes)
    if is_proxy(pads) or is_proxy(axes) or any(is_proxy(p) for p in pads):
        return emit(runtime.onnx_pad, data, pads, scalar(constant_value), mode, axes)
    return _pad(data, pads, scalar(constant_value), mode, axes)


@register("Pad", since=2, until=10, allowed={"mode": _PAD_MODES})
def Pad_2(data, *, pads, mode="constant", value=0.0):
    return _pad(data, pads, value, mode)


@register("DepthToSpace", allowed={"mode": ("DCR", "CRD")})
def DepthToSpace(input, *, blocksize, mode="DCR"):
    if mode == "CRD":
        return module(torch.nn.PixelShuffle(blocksize), input)
    return emit(runtime.depth_to_space_dcr, input, blocksize)


@register("SpaceToDepth")
def SpaceToDepth(input, *, blocksize):
    return emit(runtime.space_to_depth, input, blocksize)


@register("Identity")
def Identity(input):
    return (input,)  # a 1-tuple: a sequence (a list) is one value, not one per output

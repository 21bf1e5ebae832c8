"""Run-time helpers for ONNX semantics torch has no single function for.

The converted graph calls these by name, and codegen copies their source into
the generated model.py, so each must depend only on ``torch`` and on the other
helpers here (listed in ``HELPER_DEPENDENCIES``).
"""

from __future__ import annotations

import torch


def onnx_pads_to_torch(pads):
    """ONNX [b1, b2, .., e1, e2, ..] -> F.pad's [b_last, e_last, b_prev, e_prev, ..], trailing zeros dropped."""
    r = len(pads) // 2
    out = []
    for d in reversed(range(r)):
        out += [pads[d], pads[d + r]]
    while len(out) > 2 and out[-1] == 0 and out[-2] == 0:
        out = out[:-2]
    return out


def same_pads(sizes, kernel, strides, dilations, upper):
    """ONNX auto_pad SAME_UPPER/SAME_LOWER pads for spatial ``sizes``."""
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = (size + s - 1) // s
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if upper else total - small)
        ends.append(total - small if upper else small)
    return begins + ends


def pad_same(x, kernel, strides, dilations, upper, value):
    """Pad the spatial dims of NC... ``x`` as ONNX auto_pad SAME_* does."""
    pads = same_pads(list(x.shape[2:]), kernel, strides, dilations, upper)
    return torch.nn.functional.pad(x, onnx_pads_to_torch([0, 0] + pads[: len(kernel)] + [0, 0] + pads[len(kernel):]), value=value)


def onnx_reshape(x, shape, allowzero):
    """Reshape with ONNX's rule that a 0 copies the input's size (unless allowzero)."""
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def onnx_expand(x, shape):
    """ONNX Expand broadcasts both ways: a 1 in ``shape`` keeps the input's size."""
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(shape)))


def onnx_slice(x, starts, ends, axes, steps):
    """ONNX Slice, including negative steps (torch slicing only steps forward)."""
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis]
        if step > 0:
            x = x[(slice(None),) * (axis % x.dim()) + (slice(start, end, step),)]
            continue
        start = min(max(start + size if start < 0 else start, 0), size - 1)
        end = min(max(end + size if end < 0 else end, -1), size - 1)
        flipped = x.flip(axis)
        x = flipped[(slice(None),) * (axis % x.dim()) + (slice(size - 1 - start, size - 1 - end, -step),)]
    return x


def gather_nd(data, indices, batch_dims):
    """ONNX GatherND: the last axis of ``indices`` addresses the leading dims of ``data``."""
    batch_shape = data.shape[:batch_dims]
    batch = 1
    for size in batch_shape:
        batch *= size
    data = data.reshape((batch,) + tuple(data.shape[batch_dims:]))
    indices = indices.reshape((batch,) + tuple(indices.shape[batch_dims:]))
    depth = indices.shape[-1]
    batch_index = torch.arange(batch).reshape((batch,) + (1,) * (indices.dim() - 2))
    address = [indices[..., i] for i in range(depth)]
    out = data[(batch_index,) + tuple(address)]
    return out.reshape(tuple(batch_shape) + tuple(out.shape[1:]))


def scatter_nd(data, indices, updates, reduction):
    """ONNX ScatterND: write ``updates`` at the leading-dim addresses in ``indices``."""
    depth = indices.shape[-1]
    lead = data.shape[:depth]
    flat_index = torch.zeros(indices.shape[:-1], dtype=torch.int64)
    for i in range(depth):
        flat_index = flat_index * lead[i] + indices[..., i] % lead[i]
    rows = data.reshape((-1,) + tuple(data.shape[depth:])).flatten(1) if data.dim() > depth else data.reshape(-1, 1)
    values = updates.reshape(flat_index.numel(), -1)
    where = flat_index.reshape(-1, 1).expand(-1, rows.shape[1])
    if reduction == "none":
        rows = rows.scatter(0, where, values)
    else:
        reduce = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[reduction]
        rows = rows.scatter_reduce(0, where, values, reduce, include_self=True)
    return rows.reshape(data.shape)


def nearest_indices(in_size, out_size, scale, mode, rounding):
    """Source index per output position for ONNX Resize(mode="nearest")."""
    x = torch.arange(out_size, dtype=torch.float64)
    if mode == "asymmetric":
        src = x / scale
    elif mode == "align_corners":
        src = x * ((in_size - 1) / (out_size - 1)) if out_size > 1 else x * 0
    elif mode == "pytorch_half_pixel":
        src = (x + 0.5) / scale - 0.5 if out_size > 1 else x * 0
    elif mode == "tf_half_pixel_for_nn":
        src = (x + 0.5) / scale
    else:  # half_pixel
        src = (x + 0.5) / scale - 0.5
    if rounding == "floor":
        index = torch.floor(src)
    elif rounding == "ceil":
        index = torch.ceil(src)
    elif rounding == "round_prefer_ceil":
        index = torch.floor(src + 0.5)
    else:  # round_prefer_floor
        index = torch.ceil(src - 0.5)
    return index.clamp(0, in_size - 1).to(torch.int64)


def resize_nearest(x, out_sizes, scales, mode, rounding):
    """ONNX Resize(mode="nearest") on every axis, by gathering source indices."""
    for axis in range(x.dim()):
        in_size, out_size = x.shape[axis], out_sizes[axis]
        if in_size == out_size and scales[axis] == 1.0:
            continue
        index = nearest_indices(in_size, out_size, scales[axis], mode, rounding)
        x = x.index_select(axis, index)
    return x


def space_to_depth(x, blocksize):
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // blocksize, blocksize, w // blocksize, blocksize)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n, c * blocksize * blocksize, h // blocksize, w // blocksize)


def depth_to_space_dcr(x, blocksize):
    n, c, h, w = x.shape
    x = x.reshape(n, blocksize, blocksize, c // (blocksize * blocksize), h, w)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(n, c // (blocksize * blocksize), h * blocksize, w * blocksize)


HELPER_DEPENDENCIES = {
    "pad_same": ["same_pads", "onnx_pads_to_torch"],
    "resize_nearest": ["nearest_indices"],
}

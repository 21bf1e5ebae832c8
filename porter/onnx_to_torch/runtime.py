"""Run-time helpers for ONNX semantics torch has no single function for.

The converted graph calls these by name, and codegen copies their source into
the generated model.py, so each must depend only on ``torch`` and on the other
helpers here (codegen finds those by name).
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


def onnx_fix_expand(x, shape):
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
        scale = scales[axis] if scales[axis] is not None else out_size / in_size
        if in_size == out_size and scale == 1.0:
            continue
        index = nearest_indices(in_size, out_size, scale, mode, rounding)
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


def maxpool_indices(x, indices, column_major=False):
    """torch numbers max positions per (n, c) plane; ONNX numbers them over the whole tensor
    (and with storage_order=1, a 2-D plane column by column)."""
    if column_major:
        height, width = x.shape[2], x.shape[3]
        indices = (indices % width) * height + torch.div(indices, width, rounding_mode="floor")
    offsets = torch.arange(x.shape[0] * x.shape[1]).reshape(x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))
    return indices + offsets * x[0, 0].numel()



def pool_windows(x, kind, kernel, strides, dilations, pads, ceil_mode, count_include_pad, p=2):
    """ONNX AveragePool/LpPool with any dilations, window by window (onnx.reference's pool):
    ``pads`` ([begins..., ends...], or "SAME_UPPER"/"SAME_LOWER") count as zeros only with
    count_include_pad; the tail ceil_mode adds never counts; a ceil_mode window starts inside."""
    n = len(kernel)
    sizes = list(x.shape[2:])
    if isinstance(pads, str):
        pads = same_pads(sizes, kernel, strides, dilations, pads == "SAME_UPPER")
    counted = torch.ones([1, 1] + sizes, dtype=x.dtype)
    if kind == "lp":
        x = torch.abs(x) ** p
    x = torch.nn.functional.pad(x, onnx_pads_to_torch([0, 0] + pads[:n] + [0, 0] + pads[n:]))
    counted = torch.nn.functional.pad(counted, onnx_pads_to_torch([0, 0] + pads[:n] + [0, 0] + pads[n:]),
                                      value=1.0 if count_include_pad else 0.0)
    tails = []
    for i in range(n):
        span = dilations[i] * (kernel[i] - 1) + 1
        length = sizes[i] + pads[i] + pads[n + i]
        out = (length - span) // strides[i] + 1
        if ceil_mode:
            out = -(-(length - span) // strides[i]) + 1
            if (out - 1) * strides[i] >= sizes[i] + pads[i]:
                out -= 1
        tails.append(max((out - 1) * strides[i] + span - length, 0))
    x = torch.nn.functional.pad(x, onnx_pads_to_torch([0, 0] + [0] * n + [0, 0] + tails))
    counted = torch.nn.functional.pad(counted, onnx_pads_to_torch([0, 0] + [0] * n + [0, 0] + tails))
    for i in range(n):
        span = dilations[i] * (kernel[i] - 1) + 1
        x = x.unfold(2 + i, span, strides[i])[..., ::dilations[i]]
        counted = counted.unfold(2 + i, span, strides[i])[..., ::dilations[i]]
    window = tuple(range(-n, 0))
    total = x.sum(dim=window)
    if kind == "lp":
        return total ** (1.0 / p)
    return total / counted.sum(dim=window)


def reduce_prod(x, dims, keepdim):
    """torch.prod reduces one dim at a time."""
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


def batch_norm_training(x, scale, bias, mean, var, epsilon, momentum):
    """ONNX BatchNormalization(training_mode=1): normalise by the batch's mean and biased variance;
    also return the running statistics blended as running * momentum + batch * (1 - momentum)."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    batch_mean = x.mean(dim=dims)
    batch_var = x.var(dim=dims, unbiased=False)
    y = (x - batch_mean.reshape(shape)) / torch.sqrt(batch_var.reshape(shape) + epsilon)
    y = y * scale.reshape(shape) + bias.reshape(shape)
    return y, mean * momentum + batch_mean * (1 - momentum), var * momentum + batch_var * (1 - momentum)


def array_feature_extractor(x, indices):
    """ai.onnx.ml ArrayFeatureExtractor: pick entries of the last axis; a 1-D input gives one row
    (as onnxruntime and onnx.reference do)."""
    picked = x.index_select(x.dim() - 1, indices.reshape(-1).long())
    return picked.reshape(1, -1) if x.dim() == 1 else picked


def reduce_extreme(x, dims, keepdim, largest):
    """ReduceMax/ReduceMin; over an empty set ONNX gives the identity (-inf/+inf, the dtype's min/max),
    where torch.amax/amin raise."""
    dims = sorted(d % x.dim() for d in dims)
    if all(x.shape[d] for d in dims):
        return torch.amax(x, dim=dims, keepdim=keepdim) if largest else torch.amin(x, dim=dims, keepdim=keepdim)
    shape = [1 if d in dims else size for d, size in enumerate(x.shape) if keepdim or d not in dims]
    if x.dtype.is_floating_point:
        fill = -float("inf") if largest else float("inf")
    elif x.dtype == torch.bool:
        fill = not largest
    else:
        fill = torch.iinfo(x.dtype).min if largest else torch.iinfo(x.dtype).max
    return torch.full(shape, fill, dtype=x.dtype)


def reduction_axes(axes, rank):
    """Run-time ONNX reduce axes: an empty list means every axis."""
    return list(axes) if len(axes) else list(range(rank))


def resize_targets(shape, scales, sizes, axes):
    """ONNX Resize output sizes and per-axis scales (sizes win over scales when both are given)."""
    r = len(shape)
    axes = [a % r for a in axes] if axes is not None else list(range(r))
    out_sizes, out_scales = list(shape), [1.0] * r
    if sizes is not None and len(sizes):
        for axis, size in zip(axes, sizes):
            out_sizes[axis], out_scales[axis] = int(size), size / shape[axis]
    else:
        for axis, scale in zip(axes, scales):
            out_sizes[axis], out_scales[axis] = int(shape[axis] * scale), float(scale)
    return out_sizes, out_scales


def onnx_resize(x, scales, sizes, axes, mode, coordinates, rounding):
    """ONNX Resize for sizes/scales known only at run time."""
    out_sizes, out_scales = resize_targets(list(x.shape), scales, sizes, axes)
    if mode == "nearest":
        return resize_nearest(x, out_sizes, out_scales, coordinates, rounding)
    torch_mode = {"linear": ["linear", "bilinear", "trilinear"][x.dim() - 3], "cubic": "bicubic"}[mode]
    align = coordinates == "align_corners"
    if sizes is not None and len(sizes):
        return torch.nn.functional.interpolate(x, size=out_sizes[2:], mode=torch_mode, align_corners=align)
    return torch.nn.functional.interpolate(x, scale_factor=out_scales[2:], mode=torch_mode, align_corners=align)


def resize_source_coordinates(in_size, out_size, scale, mode, roi_start=0.0, roi_end=1.0):
    """Where each output position of one axis samples the input (ONNX Resize's coordinate_transformation_mode)."""
    x = torch.arange(out_size, dtype=torch.float64)
    length = scale * in_size  # the spec's output_width: not rounded
    if mode == "align_corners":
        return x * 0 if length == 1 else x * (in_size - 1) / (length - 1)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_crop_and_resize":
        if length == 1:
            return x * 0 + (roi_end - roi_start) * (in_size - 1) / 2 + roi_start * (in_size - 1)
        return x * (roi_end - roi_start) * (in_size - 1) / (length - 1) + roi_start * (in_size - 1)
    if mode == "pytorch_half_pixel":
        return x * 0 - 0.5 if length == 1 else (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        return in_size / 2 * (1 - out_size / length) + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5  # half_pixel


def resize_weights(in_size, out_size, scale, mode, coordinates, rounding, cubic_a, exclude_outside, antialias,
                   roi_start=0.0, roi_end=1.0):
    """The [out, in] matrix of ONNX Resize along one axis (onnx.reference's _interpolate_1d_with_x):
    n neighbours of each source coordinate, the input's edge repeated beyond its ends, and
    a mask of the outputs that sample outside the input (tf_crop_and_resize extrapolates there)."""
    src = resize_source_coordinates(in_size, out_size, scale, coordinates, roi_start, roi_end)
    whole = src == torch.floor(src)
    base = torch.floor(src) - whole.double()  # an exact source position is the ratio-1 end of its left pair
    ratio = torch.where(whole, torch.ones_like(src), src - torch.floor(src))
    if mode == "nearest":
        first = 0
        if rounding == "round_prefer_floor":
            right = ratio > 0.5
        elif rounding == "round_prefer_ceil":
            right = ratio >= 0.5
        else:
            right = torch.full_like(ratio, rounding == "ceil", dtype=torch.bool)
        right = right | whole
        coeffs = torch.stack([~right, right], 1).double()
    else:
        stretch = min(scale, 1.0) if antialias else 1.0  # antialias widens the filter by 1/scale
        reach = 1 if mode == "linear" else 2
        first = int(torch.floor(torch.tensor(-reach / stretch)).item()) + 1 if antialias else 1 - reach
        offsets = torch.arange(first, 2 - first, dtype=torch.float64)
        t = (torch.abs(offsets[None, :] - ratio[:, None]) * stretch)
        if mode == "linear":
            coeffs = torch.clamp(1 - t, 0, 1)
        else:
            a = cubic_a
            near = ((a + 2) * t - (a + 3)) * t * t + 1
            far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
            coeffs = torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))
        if antialias:
            coeffs = coeffs / coeffs.sum(1, keepdim=True)
    index = base[:, None].long() + first + torch.arange(coeffs.shape[1])[None, :]
    if exclude_outside:
        coeffs = torch.where((index < 0) | (index >= in_size), torch.zeros_like(coeffs), coeffs)
        coeffs = coeffs / coeffs.sum(1, keepdim=True)
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    weights.scatter_add_(1, index.clamp(0, in_size - 1), coeffs)
    outside = (src < 0) | (src > in_size - 1) if coordinates == "tf_crop_and_resize" else torch.zeros_like(whole)
    return weights, outside


def resize_reference(x, out_sizes, scales, mode, coordinates, rounding, cubic_a, exclude_outside, antialias,
                     roi, extrapolation_value):
    """ONNX Resize exactly as its reference defines it, one axis at a time (linear maps commute),
    for the modes F.interpolate has no equal of; ``roi`` is [starts..., ends...] over every axis."""
    dtype = x.dtype
    y = x.double()
    outside = torch.zeros(out_sizes, dtype=torch.bool)
    r = x.dim()
    for axis in range(r):
        in_size, out_size = x.shape[axis], out_sizes[axis]
        if in_size == out_size and scales[axis] == 1.0 and coordinates != "tf_crop_and_resize":
            continue
        weights, out_axis = resize_weights(in_size, out_size, scales[axis], mode, coordinates, rounding, cubic_a,
                                           exclude_outside, antialias, roi[axis], roi[r + axis])
        if mode == "nearest":
            y = y.index_select(axis, weights.argmax(1))
        else:
            y = torch.movedim(torch.movedim(y, axis, -1) @ weights.T, -1, axis)
        shape = [1] * r
        shape[axis] = out_size
        outside = outside | out_axis.reshape(shape)
    y = torch.where(outside, torch.full_like(y, extrapolation_value), y)
    if dtype.is_floating_point:
        return y.to(dtype)
    info = torch.iinfo(dtype)
    return torch.round(y).clamp(info.min, info.max).to(dtype)


def resize_policy_targets(shape, sizes, axes, policy):
    """Output sizes and scales for Resize(sizes, keep_aspect_ratio_policy=not_larger/not_smaller):
    one scale for every listed axis, the sizes rounded half up."""
    r = len(shape)
    axes = [a % r for a in axes] if axes is not None else list(range(r))
    ratios = [size / shape[axis] for axis, size in zip(axes, sizes)]
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    out_sizes, out_scales = list(shape), [1.0] * r
    for axis in axes:
        out_sizes[axis], out_scales[axis] = int(scale * shape[axis] + 0.5), scale
    return out_sizes, out_scales


def onnx_resize_reference(x, roi, scales, sizes, axes, policy, mode, coordinates, rounding, cubic_a,
                          exclude_outside, antialias, extrapolation_value):
    """ONNX Resize by its reference sampling with scales/sizes/roi given as lists (known at run time);
    ``roi`` lists starts then ends for ``axes`` (every axis when None)."""
    shape, r = list(x.shape), x.dim()
    if sizes is not None and len(sizes) and policy != "stretch":
        out_sizes, out_scales = resize_policy_targets(shape, sizes, axes, policy)
    else:
        out_sizes, out_scales = resize_targets(shape, scales, sizes, axes)
    full_roi = [0.0] * r + [1.0] * r
    if coordinates == "tf_crop_and_resize":
        listed = [a % r for a in axes] if axes is not None else list(range(r))
        for i, axis in enumerate(listed):
            full_roi[axis], full_roi[r + axis] = float(roi[i]), float(roi[len(listed) + i])
    return resize_reference(x, out_sizes, out_scales, mode, coordinates, rounding, cubic_a, exclude_outside,
                            antialias, full_roi, extrapolation_value)


def onnx_pad(x, pads, value, mode, axes):
    """ONNX Pad with pads known only at run time."""
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
    pads = [int(p) for p in pads]
    if axes is not None:  # pads for the listed axes only
        full = [0] * (2 * x.dim())
        for i, axis in enumerate(axes):
            full[axis % x.dim()], full[axis % x.dim() + x.dim()] = pads[i], pads[i + len(axes)]
        pads = full
    torch_pads = onnx_pads_to_torch(pads)
    if mode == "constant":
        return torch.nn.functional.pad(x, torch_pads, value=0 if value is None else value)
    return torch.nn.functional.pad(x, torch_pads, mode=modes[mode])


def onnx_attention(q, k, v, attn_mask, past_key, past_value, nonpad_kv_seqlen, scale, is_causal,
                   q_num_heads, kv_num_heads, softcap, qk_matmul_output_mode, softmax_dtype=None):
    """ONNX Attention (opsets 23, 24), following onnx.reference's op_attention step by step.

    As onnx 1.22 specifies: softcap acts on the raw scores before the mask is added (so a -inf
    mask stays -inf), and qk_matmul_output is the raw scores (mode 0, where onnx.reference
    returns them softcapped but the spec and onnxruntime do not), softcapped (1), masked (2)
    or the softmax (3)."""
    three_d = q.dim() == 3
    batch = q.shape[0]
    if three_d:  # [batch, seq, heads * head_size] -> [batch, heads, seq, head_size]
        q = q.reshape(batch, q.shape[1], q_num_heads, -1).transpose(1, 2)
        k = k.reshape(batch, k.shape[1], kv_num_heads, -1).transpose(1, 2)
        v = v.reshape(batch, v.shape[1], kv_num_heads, -1).transpose(1, 2)
    root_scale = (scale if scale is not None else q.shape[3] ** -0.5) ** 0.5
    past_length = past_key.shape[2] if past_key is not None else 0
    if past_key is not None:
        k = torch.cat([past_key, k], 2)
    if past_value is not None:
        v = torch.cat([past_value, v], 2)
    present_key, present_value = k, v
    q_length, kv_length = q.shape[2], k.shape[2]
    bias = torch.zeros(q_length, kv_length, dtype=q.dtype)
    if attn_mask is not None:
        missing = kv_length - attn_mask.shape[-1]
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype).masked_fill(~attn_mask, float("-inf"))
        if missing > 0:
            attn_mask = torch.nn.functional.pad(attn_mask, [0, missing], value=float("-inf"))
        bias = bias + attn_mask
    if is_causal:
        future = torch.ones(q_length, kv_length - past_length, dtype=torch.bool).triu(1)
        bias = bias.masked_fill(torch.nn.functional.pad(future, [past_length, 0], value=False), float("-inf"))
    if nonpad_kv_seqlen is not None:
        valid = torch.arange(kv_length) < nonpad_kv_seqlen[:, None]
        bias = bias + torch.zeros(valid.shape, dtype=q.dtype).masked_fill(~valid, float("-inf"))[:, None, None, :]
    if q.shape[1] != k.shape[1]:  # grouped-query attention shares each kv head
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    qk = (q * root_scale) @ (k * root_scale).transpose(-1, -2)
    capped = softcap * torch.tanh(qk / softcap) if softcap and softcap > 0 else qk
    scores = capped + bias
    probs = torch.softmax(scores.to(softmax_dtype or scores.dtype), dim=-1)
    qk_out = (qk, capped, scores, probs)[qk_matmul_output_mode].to(q.dtype)
    y = (probs @ v.to(probs.dtype)).to(q.dtype)
    if three_d:
        y = y.transpose(1, 2).reshape(batch, q_length, -1)
    return y, present_key, present_value, qk_out


def loop_goes_on(cond, bounded):
    """bool(cond). Under torch.export a run-time cond of a loop bounded by its trip count is asserted
    instead (the exported program runs every trip and fails if cond would have stopped it earlier)."""
    if isinstance(cond, torch.Tensor) and bounded and torch.compiler.is_exporting():
        torch._check(cond.reshape(-1)[0].item())
        return True
    return bool(cond)


def onnx_loop(body, trip_count, cond, carried, outer, empty_scans):
    """ONNX Loop: run ``body(i, cond, *carried, *outer)`` -> (cond, *carried, *scan_items) while
    i < trip_count (None: no limit) and cond holds (None: always); scan items are stacked on a new
    axis 0. ``empty_scans``: (dtype, trailing shape) of each scan output, for a loop that never runs."""
    if isinstance(trip_count, torch.Tensor):
        trip_count = int(trip_count)
    going = True if cond is None else cond
    carried = list(carried)
    scans = [[] for _ in empty_scans]
    i = 0
    while trip_count is None or i < trip_count:
        if not loop_goes_on(going, trip_count is not None):
            break
        flag = going.reshape(()).to(torch.bool) if isinstance(going, torch.Tensor) else torch.tensor(bool(going))
        out = body(torch.tensor(i, dtype=torch.int64), flag, *carried, *outer)
        going = out[0]
        carried = list(out[1:1 + len(carried)])
        for items, item in zip(scans, out[1 + len(carried):]):
            items.append(item)
        i += 1
    stacked = [torch.stack(items) if items else torch.zeros([0] + list(shape), dtype=dtype)
               for items, (dtype, shape) in zip(scans, empty_scans)]
    return tuple(carried) + tuple(stacked)


def onnx_scan(body, states, scans, outer, in_axes, in_reverse, out_axes, out_reverse):
    """ONNX Scan (opset 9+): ``body(*states, *slices, *outer)`` -> (*states, *scan_items) once per
    slice of the scan inputs along ``in_axes``; scan items are stacked along ``out_axes``."""
    states = list(states)
    length = scans[0].shape[in_axes[0]]
    steps = []
    for t in range(length):
        slices = [x.select(axis, length - 1 - t if reverse else t)
                  for x, axis, reverse in zip(scans, in_axes, in_reverse)]
        out = body(*states, *slices, *outer)
        states = list(out[:len(states)])
        steps.append(out[len(states):])
    results = []
    for k, (axis, reverse) in enumerate(zip(out_axes, out_reverse)):
        items = [step[k] for step in steps]
        results.append(torch.stack(items[::-1] if reverse else items, axis))
    return tuple(states) + tuple(results)


def onnx_scan8(body, states, scans, outer, in_reverse, n_outputs):
    """ONNX Scan opset 8: axis 0 of every input is a batch; each batch item is scanned along its axis 0."""
    per_item = [onnx_scan(body, [s[b] for s in states], [x[b] for x in scans], outer, [0] * len(scans),
                          in_reverse, [0] * n_outputs, [0] * n_outputs) for b in range(scans[0].shape[0])]
    return tuple(torch.stack([out[k] for out in per_item]) for k in range(len(states) + n_outputs))


def onnx_if(cond, then_branch, else_branch, then_inputs, else_inputs):
    """ONNX If: one of two subgraph modules, chosen at run time (torch.cond under torch.export,
    which needs both branches to return tensors of the same shapes)."""
    if isinstance(cond, torch.Tensor) and torch.compiler.is_exporting():
        n = len(then_inputs)
        return tuple(torch.cond(cond.reshape(()).to(torch.bool), lambda *a: tuple(then_branch(*a[:n])),
                                lambda *a: tuple(else_branch(*a[n:])), tuple(then_inputs) + tuple(else_inputs)))
    if bool(cond):
        return then_branch(*then_inputs)
    return else_branch(*else_inputs)


def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_hertz, upper_hertz):
    """ONNX MelWeightMatrix: triangular filters on the mel scale, spectrogram bins x mel bins (float64).
    Band edges are floored to whole bins as the ONNX reference does."""
    bins = torch.arange(num_mel_bins + 2, dtype=torch.float64)
    low_mel = 2595 * torch.log10(torch.tensor(1 + lower_hertz / 700, dtype=torch.float64))
    high_mel = 2595 * torch.log10(torch.tensor(1 + upper_hertz / 700, dtype=torch.float64))
    hertz = 700 * (10 ** ((bins * ((high_mel - low_mel) / (num_mel_bins + 2)) + low_mel) / 2595) - 1)
    edges = torch.floor_divide((dft_length + 1) * hertz, sample_rate).long().tolist()
    out = torch.zeros(dft_length // 2 + 1, num_mel_bins, dtype=torch.float64)
    for i in range(num_mel_bins):
        low, center, high = edges[i], edges[i + 1], edges[i + 2]
        if center == low:
            out[center, i] = 1
        else:
            for j in range(low, center + 1):
                out[j, i] = (j - low) / (center - low)
        for j in range(center, high):
            out[j, i] = (high - j) / (high - center)
    return out


def onnx_squeeze(x, axes):
    return torch.squeeze(x, tuple(axes))


def onnx_unsqueeze(x, axes):
    """ONNX Unsqueeze: ``axes`` index the output, so insert them in increasing order."""
    rank = x.dim() + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        x = x.unsqueeze(axis)
    return x


def sequence_insert(sequence, tensor, position):
    """ONNX SequenceInsert: a new list; ``position`` None appends, a negative one counts from the end."""
    out = list(sequence)
    if position is None:
        out.append(tensor)
    else:
        out.insert(int(position) % (len(out) + 1) if int(position) < 0 else int(position), tensor)
    return out


def sequence_at(sequence, position):
    return sequence[int(position)]


def sequence_erase(sequence, position):
    out = list(sequence)
    del out[-1 if position is None else int(position)]
    return out


def sequence_length(sequence):
    return torch.tensor(len(sequence), dtype=torch.int64)


def split_to_sequence(x, split, axis, keepdims):
    """ONNX SplitToSequence: pieces of size 1 (squeezed unless keepdims) without ``split``, else as Split."""
    if split is None:
        pieces = torch.split(x, 1, axis)
        return [p.squeeze(axis) for p in pieces] if not keepdims else list(pieces)
    if split.dim() == 0:
        return list(torch.split(x, int(split), axis))
    return list(torch.split(x, [int(s) for s in split.tolist()], axis))


def optional_has_element(value):
    return torch.tensor(value is not None)


def sequence_map(body, sequence, additional, per_item, outer, n_outputs):
    """ONNX SequenceMap: ``body`` on each item of ``sequence`` (and of the sequences among
    ``additional``; tensors there go to every call); each output collected into a list."""
    outputs = [[] for _ in range(n_outputs)]
    for i in range(len(sequence)):
        args = [a[i] if item else a for a, item in zip(additional, per_item)]
        for collected, value in zip(outputs, body(sequence[i], *args, *outer)):
            collected.append(value)
    return tuple(outputs)


def reverse_sequence(x, lengths, batch_axis, time_axis):
    """ONNX ReverseSequence: reverse the first lengths[b] steps along ``time_axis`` of each batch item."""
    out = x.clone()
    for b, n in enumerate(lengths.tolist()):
        item = x.select(batch_axis, b)
        axis = time_axis - (1 if time_axis > batch_axis else 0)
        out.select(batch_axis, b).narrow(axis, 0, n).copy_(item.narrow(axis, 0, n).flip(axis))
    return out


def onnx_unique(x, axis, sort):
    """ONNX Unique -> (values, first-occurrence indices, inverse indices, counts); unsorted keeps the
    order of first occurrence."""
    if axis is None:
        x, axis = x.reshape(-1), 0
    axis = axis % x.dim()
    values, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True, dim=axis)
    positions = torch.arange(inverse.numel(), dtype=torch.int64)
    first = torch.full((counts.numel(),), inverse.numel(), dtype=torch.int64)
    first = first.scatter_reduce(0, inverse.reshape(-1), positions, "amin")
    if not sort:
        order = torch.argsort(first)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), dtype=torch.int64)
        values, first, counts, inverse = values.index_select(axis, order), first[order], counts[order], rank[inverse]
    return values, first, inverse.reshape(-1).to(torch.int64), counts.to(torch.int64)


def center_crop_pad(x, shape, axes):
    """ONNX CenterCropPad: crop or zero-pad each of ``axes`` to ``shape`` around the centre."""
    axes = list(range(x.dim())) if axes is None else [a % x.dim() for a in axes]
    for axis, size in zip(axes, shape):
        current = x.shape[axis]
        if size < current:
            x = x.narrow(axis, (current - size) // 2, size)
        elif size > current:
            before = (size - current) // 2
            pad_shape = list(x.shape)
            pad_shape[axis] = size
            out = torch.zeros(pad_shape, dtype=x.dtype)
            out.narrow(axis, before, current).copy_(x)
            x = out
    return x


def col2im(cols, image_shape, block_shape, dilations, pads, strides):
    """ONNX Col2Im in any number of spatial dims: (N, C*prod(block), L) -> (N, C, *image_shape),
    overlapping blocks summed."""
    n = len(block_shape)
    dilations = dilations or [1] * n
    strides = strides or [1] * n
    pads = pads or [0] * (2 * n)
    padded = [image_shape[i] + pads[i] + pads[i + n] for i in range(n)]
    blocks = [(padded[i] - dilations[i] * (block_shape[i] - 1) - 1) // strides[i] + 1 for i in range(n)]
    kernel = 1
    for k in block_shape:
        kernel *= k
    batch, channels = cols.shape[0], cols.shape[1] // kernel
    cols = cols.reshape([batch, channels, kernel] + blocks)
    out = torch.zeros([batch, channels] + padded, dtype=cols.dtype)
    for k in range(kernel):
        offset, rest = [], k
        for size in reversed(block_shape):
            offset.insert(0, rest % size)
            rest //= size
        index = [slice(None), slice(None)] + [
            slice(offset[i] * dilations[i], offset[i] * dilations[i] + strides[i] * (blocks[i] - 1) + 1, strides[i])
            for i in range(n)]
        out[tuple(index)] += cols[:, :, k]
    crop = [slice(None), slice(None)] + [slice(pads[i], pads[i] + image_shape[i]) for i in range(n)]
    return out[tuple(crop)]


def max_unpool(x, indices, output_shape, kernel, pads, strides):
    """ONNX MaxUnpool: ``indices`` (as MaxPool writes them) are flat over the whole output tensor."""
    n = len(kernel)
    strides = strides or [1] * n
    pads = pads or [0] * (2 * n)
    if output_shape is None:
        spatial = [(x.shape[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[i + n] for i in range(n)]
        output_shape = list(x.shape[:2]) + spatial
    out = torch.zeros(int(torch.tensor(output_shape).prod()), dtype=x.dtype)
    out.scatter_(0, indices.reshape(-1), x.reshape(-1))
    return out.reshape(list(output_shape))


def tensor_scatter(cache, update, write_indices, axis, circular):
    """ONNX TensorScatter: write ``update`` into ``cache`` along ``axis`` from write_indices[batch] on."""
    axis = axis % cache.dim()
    out = cache.clone()
    length, steps = cache.shape[axis], update.shape[axis]
    starts = [0] * cache.shape[0] if write_indices is None else write_indices.tolist()
    for b, start in enumerate(starts):
        positions = torch.arange(start, start + steps)
        if circular:
            positions = positions % length
        out[b].index_copy_(axis - 1, positions, update[b]) if axis > 0 else out.index_copy_(0, positions, update)
    return out


def causal_conv_with_state(x, weight, bias, past_state, silu):
    """ONNX CausalConvWithState: a depthwise conv1d over [past_state (zeros when absent), x]; the
    new state is the last k - 1 steps of that concatenation."""
    k = weight.shape[2]
    padded = torch.cat([past_state, x], 2) if past_state is not None else torch.nn.functional.pad(x, [k - 1, 0])
    y = torch.nn.functional.conv1d(padded, weight, bias, groups=x.shape[1])
    if silu:  # in float32 at least, as onnx.reference does, so float16 rounds once
        y = torch.nn.functional.silu(y.to(torch.promote_types(y.dtype, torch.float32))).to(x.dtype)
    return y, padded[:, :, padded.shape[2] - (k - 1):]


def _heads_first(x, heads):
    """[batch, time, heads * dim] -> [batch, heads, time, dim]."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def linear_attention(q, k, v, past_state, decay, beta, q_num_heads, kv_num_heads, scale, update_rule):
    """ONNX LinearAttention, the recurrence run token by token as onnx.reference does, in float32
    at least; each kv head's state is shared by q_num_heads // kv_num_heads query heads."""
    work = torch.promote_types(q.dtype, torch.float32)
    q4, k4, v4 = (_heads_first(t, h).to(work) for t, h in ((q, q_num_heads), (k, kv_num_heads), (v, kv_num_heads)))
    batch, _, steps, d_k = q4.shape
    if not scale:
        scale = d_k ** -0.5
    if decay is not None:  # [B, T, H_kv] (one per head) or [B, T, H_kv * d_k] -> [B, H_kv, T, 1 or d_k]
        decay = _heads_first(decay, kv_num_heads).to(work).exp()
    if beta is not None:  # [B, T, H_kv or 1] -> [B, H_kv or 1, T, 1]
        beta = beta.transpose(1, 2).unsqueeze(-1).to(work)
    state = (past_state.to(work) if past_state is not None
             else torch.zeros(batch, kv_num_heads, d_k, v4.shape[3], dtype=work))
    outputs = []
    for t in range(steps):
        k_t, v_t = k4[:, :, t], v4[:, :, t]
        if update_rule in ("gated", "gated_delta"):
            state = state * decay[:, :, t, :, None]
        if update_rule in ("delta", "gated_delta"):  # write only what the state does not yet recall for k_t
            v_t = beta[:, :, t] * (v_t - torch.einsum("bhdm,bhd->bhm", state, k_t))
        state = state + k_t[..., :, None] * v_t[..., None, :]
        shared = state.repeat_interleave(q_num_heads // kv_num_heads, dim=1)
        outputs.append(scale * torch.einsum("bhd,bhdm->bhm", q4[:, :, t], shared))
    y = torch.stack(outputs, 2) if outputs else q4.new_zeros(batch, q_num_heads, 0, v4.shape[3])
    y = y.transpose(1, 2).reshape(batch, steps, -1).to(q.dtype)
    return y, state.to(past_state.dtype if past_state is not None else q.dtype)


def rotary_embedding(x, cos_cache, sin_cache, position_ids, interleaved, num_heads, rotary_dim):
    """ONNX RotaryEmbedding on (batch, heads, seq, head) or (batch, seq, hidden) inputs."""
    shape = x.shape
    if x.dim() == 4:
        x = x.transpose(1, 2)
    else:
        x = x.reshape(shape[0], shape[1], num_heads, shape[2] // num_heads)
    rotary_dim = rotary_dim or x.shape[3]
    rotate, keep = x[..., :rotary_dim], x[..., rotary_dim:]
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    cos, sin = cos_cache.unsqueeze(2), sin_cache.unsqueeze(2)
    if interleaved:
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate.chunk(2, dim=-1)
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        rotated = torch.stack((real, imag), dim=-1).reshape(rotate.shape)
    else:
        rotated = torch.cat((real, imag), dim=-1)
    out = torch.cat((rotated, keep), dim=-1)
    return out.reshape(shape) if len(shape) == 3 else out.transpose(1, 2)


def onnx_dft(x, length, axis, inverse, onesided):
    """ONNX DFT: the last axis of ``x`` holds [real] or [real, imag]; ``axis`` counts it too.
    Computed in complex128 and returned as [real, imag] in the input's type."""
    axis = axis % x.dim()
    signal = x.to(torch.float64)
    signal = torch.complex(signal[..., 0], signal[..., 1]) if x.shape[-1] == 2 else signal[..., 0].to(torch.complex128)
    n = length or signal.shape[axis]
    out = torch.fft.ifft(signal, n, axis) if inverse else torch.fft.fft(signal, n, axis)
    if onesided:
        out = out.narrow(axis, 0, n // 2 + 1)
    return torch.view_as_real(out).to(x.dtype)


def onnx_stft(signal, step, window, length, onesided):
    """ONNX STFT: (batch, samples, 1|2) -> (batch, frames, bins, 2), each frame times ``window``."""
    if length is None:
        length = window.shape[0] if window is not None else signal.shape[-2]
    frames = signal.unfold(1, length, step)  # (batch, frames, 1|2, length)
    frames = frames.transpose(-1, -2)
    if window is not None:
        frames = frames * window.to(frames.dtype).reshape(-1, 1)
    return onnx_dft(frames, length, 2, False, onesided)


def tfidf_vectorizer(x, pool, ngram_counts, ngram_indexes, min_n, max_n, max_skip, mode, weights):
    """ONNX TfIdfVectorizer on int token ids: count each pooled n-gram of size min_n..max_n, its items
    (skip + 1) apart for skip 0..max_skip (unigrams once), then weigh (TF, IDF, TFIDF) as float32."""
    table, gram_id = {}, 0
    for size in range(1, len(ngram_counts) + 1):
        start = ngram_counts[size - 1]
        end = ngram_counts[size] if size < len(ngram_counts) else len(pool)
        for i in range(start, end, size):
            if min_n <= size <= max_n:
                table[tuple(pool[i:i + size])] = ngram_indexes[gram_id]
            gram_id += 1
    width = max(ngram_indexes) + 1
    rows = x.reshape(1, -1) if x.dim() < 2 else x
    counts = torch.zeros(rows.shape[0], width, dtype=torch.float32)
    for r, row in enumerate(rows.tolist()):
        for distance in range(1, max_skip + 2):
            for n in range(max(min_n, 1 if distance == 1 else 2), max_n + 1):
                for i in range(len(row) - distance * (n - 1)):
                    index = table.get(tuple(row[i:i + distance * (n - 1) + 1:distance]))
                    if index is not None:
                        counts[r, index] += 1
    if mode == "IDF":
        counts = (counts > 0).to(torch.float32)
    if mode != "TF" and weights:
        counts = counts * torch.tensor(weights, dtype=torch.float32)
    return counts.reshape(width) if x.dim() < 2 else counts


def _corners(box, center):
    """(y1, x1, y2, x2) with y1 <= y2, x1 <= x2, from ONNX's corner pairs or [x, y, w, h] centres."""
    if center:
        x, y, w, h = box
        return y - h / 2, x - w / 2, y + h / 2, x + w / 2
    y1, x1, y2, x2 = box
    return min(y1, y2), min(x1, x2), max(y1, y2), max(x1, x2)


def _iou(a, b):
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[3], b[3]) - max(a[1], b[1])
    if height <= 0 or width <= 0:
        return 0.0
    inter = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def non_max_suppression(boxes, scores, max_per_class, iou_threshold, score_threshold, center):
    """ONNX NonMaxSuppression -> (selected, 3) int64 rows of [batch, class, box]."""
    limit = int(max_per_class.reshape(-1)[0]) if max_per_class is not None and max_per_class.numel() else 0
    iou_limit = float(iou_threshold.reshape(-1)[0]) if iou_threshold is not None and iou_threshold.numel() else 0.0
    floor = float(score_threshold.reshape(-1)[0]) if score_threshold is not None and score_threshold.numel() else None
    selected = []
    for b in range(boxes.shape[0]):
        corners = [_corners(box, center) for box in boxes[b].tolist()]
        for c in range(scores.shape[1]):
            class_scores = scores[b, c].tolist()
            order = sorted((i for i in range(len(class_scores)) if floor is None or class_scores[i] > floor),
                           key=lambda i: (-class_scores[i], i))
            kept = []
            for i in order:
                if len(kept) >= limit:
                    break
                if all(_iou(corners[i], corners[j]) <= iou_limit for j in kept):
                    kept.append(i)
                    selected.append([b, c, i])
    return torch.tensor(selected, dtype=torch.int64).reshape(-1, 3)

"""Embedding, gather, index (advanced indexing), index_select and scatter. Indices stay int64:
TF's gather kernels take int64 indices. Negative indices wrap as in torch."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import axis, dim, rank
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def _wrap(index, n):
    """Negative indices counted from the end, as torch (and numpy) do; TF would fail on them."""
    n = tf.cast(n, index.dtype)
    return tf.where(index < 0, index + n, index)


@register(aten.embedding.default)
def embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return tf.gather(weight, indices)


@register(aten.index_select.default)
def index_select(x, dim_, index):
    d = axis(dim_, max(rank(x), 1))
    return tf.gather(x, _wrap(index, dim(x, d)), axis=d) if rank(x) else tf.reshape(x, [])


@register(aten.select_scatter.default)
def select_scatter(x, src, dim_, index):
    d = axis(dim_, rank(x))
    positions = tf.range(dim(x, d))
    mask_shape = [1] * rank(x)
    mask_shape[d] = -1
    mask = tf.reshape(tf.equal(positions, tf.cast(_wrap(tf.constant(index), dim(x, d)), tf.int32)), mask_shape)
    return tf.where(mask, tf.expand_dims(tf.cast(src, x.dtype), d), x)


def _full_index(index, d, n):
    """gather_nd coordinates for torch.gather along ``d``: every other coordinate is the element's own."""
    grids = tf.meshgrid(*[tf.range(dim(index, i), dtype=tf.int64) for i in range(n)], indexing="ij")
    grids[d] = tf.cast(index, tf.int64)
    return tf.stack(grids, axis=-1)


@register(aten.gather.default)
def gather(x, dim_, index, sparse_grad=False):
    n = rank(x)
    if n == 0:
        return x
    d = axis(dim_, n)
    return tf.gather_nd(_read(x), _full_index(_wrap(index, dim(x, d)), d, n))


def _read(x):
    """A weight's value as a tensor: gather_nd straight on a tf.Variable is ResourceGatherNd, which TFLite's
    converter cannot freeze (it freezes ReadVariableOp and ResourceGather): CodeGen's position table needs it."""
    return tf.convert_to_tensor(x) if isinstance(x, tf.Variable) else x


def _index_check(node):
    indices = node.args[1]
    for i in indices:
        if i is not None and i.meta["val"].dtype == torch.bool:
            return "boolean mask indexing (data-dependent shape) is not converted yet"
    return None


@register(aten.index.Tensor, check=_index_check)
def index(x, indices):
    n = rank(x)
    positions = [i for i, v in enumerate(indices) if v is not None]
    wrapped = [_wrap(tf.cast(indices[p], tf.int64), dim(x, p)) for p in positions]
    shape = wrapped[0].shape
    target = tf.shape(wrapped[0])
    for w in wrapped[1:]:
        target = tf.broadcast_dynamic_shape(target, tf.shape(w))
    coords = tf.stack([tf.broadcast_to(w, target) for w in wrapped], axis=-1)
    rest = [i for i in range(n) if i not in positions]
    moved = tf.transpose(x, positions + rest) if positions + rest != list(range(n)) else _read(x)
    out = tf.gather_nd(moved, coords)  # index dims, then the untouched dims in order
    index_rank = max(len(w.shape) for w in wrapped) if shape is not None else 1
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    if adjacent and positions[0] > 0:
        # numpy rule: adjacent indexed dims stay in place
        before = list(range(index_rank, index_rank + positions[0]))
        order = before + list(range(index_rank)) + list(range(index_rank + positions[0], rank(out)))
        out = tf.transpose(out, order)
    return out


def _scatter(x, d, index, src, reduce_fn):
    n = rank(x)
    coords = _full_index(_wrap(index, dim(x, d)), d, n)
    src = tf.broadcast_to(tf.cast(src, x.dtype), tf.shape(index)) if n else src
    if src.shape != index.shape and n:
        src = src[tuple(slice(0, dim(index, i)) for i in range(n))]
    return reduce_fn(x, coords, src)


@register(aten.scatter.src, aten.scatter.value)
def scatter(x, dim_, index, src):
    if rank(x) == 0:
        return tf.cast(src, x.dtype) if hasattr(src, "dtype") else tf.constant(src, x.dtype)
    if not hasattr(src, "dtype"):
        src = tf.fill(tf.shape(index), tf.constant(src, x.dtype))
    return _scatter(x, axis(dim_, rank(x)), index, src, tf.tensor_scatter_nd_update)


@register(aten.scatter_add.default)
def scatter_add(x, dim_, index, src):
    if rank(x) == 0:
        return x + tf.cast(src, x.dtype)
    return _scatter(x, axis(dim_, rank(x)), index, src, tf.tensor_scatter_nd_add)


@register(aten.slice_scatter.default)
def slice_scatter(x, src, dim_=0, start=None, end=None, step=1):
    """``x`` with ``x[..., start:end:step, ...]`` (along ``dim_``) replaced by ``src``."""
    d = axis(dim_, rank(x))
    n = dim(x, d)
    positions = tf.range(n)
    begin = 0 if start is None else start
    stop = n if end is None or (isinstance(end, int) and end >= 2**62) else end
    begin = tf.where(begin < 0, begin + n, begin) if not isinstance(begin, int) or begin < 0 else begin
    stop = tf.minimum(tf.where(stop < 0, stop + n, stop), n) if not isinstance(stop, int) or stop < 0 else stop
    # which target position each src row lands on, and which src row fills each target position
    hit = (positions >= begin) & (positions < stop) & (tf.math.floormod(positions - begin, step) == 0)
    source_row = tf.where(hit, (positions - begin) // step, 0)
    shape = [1] * rank(x)
    shape[d] = -1
    taken = tf.gather(tf.cast(src, x.dtype), source_row, axis=d)
    return tf.where(tf.reshape(hit, shape), taken, x)


@register(aten.copy.default)
def copy(x, src, non_blocking=False):
    return tf.broadcast_to(tf.cast(src, x.dtype), tf.shape(x))


def _index_put_check(node):
    indices = node.args[1]
    present = [i for i in indices if i is not None]
    if not present:
        return "index_put without an index tensor"
    bools = [i for i in present if i.meta["val"].dtype == torch.bool]
    if bools and (len(indices) != 1):
        return "index_put with a boolean mask among other indices is not converted yet"
    if not bools and any(i is None for i in indices):
        return "index_put with a full slice before an index tensor is not converted yet"
    return None


@register(aten.index_put.default, check=_index_put_check)
def index_put(x, indices, values, accumulate=False):
    """``x[indices] = values`` (``+=`` when accumulate): scattered updates into a copy of ``x``."""
    values = tf.cast(values, x.dtype)
    if indices[0].dtype == tf.bool:
        # a mask over the leading dims: where(), with values broadcast (a scalar or one row) or scattered
        mask = indices[0]
        lead = rank(mask)
        expanded = tf.reshape(mask, tf.concat([tf.shape(mask), tf.ones([rank(x) - lead], tf.int32)], 0))
        if values.shape.num_elements() == 1 or rank(values) <= rank(x) - lead:
            update = tf.broadcast_to(values, tf.shape(x))
            return tf.where(expanded, x + update if accumulate else update, x)
        coords = tf.where(mask)
        fn = tf.tensor_scatter_nd_add if accumulate else tf.tensor_scatter_nd_update
        return fn(x, coords, values)
    k = len(indices)
    wrapped = [_wrap(tf.cast(i, tf.int64), dim(x, p)) for p, i in enumerate(indices)]
    target = tf.shape(wrapped[0])
    for w in wrapped[1:]:
        target = tf.broadcast_dynamic_shape(target, tf.shape(w))
    coords = tf.stack([tf.broadcast_to(w, target) for w in wrapped], axis=-1)
    update_shape = tf.concat([target, tf.shape(x)[k:]], 0)
    updates = tf.broadcast_to(values, update_shape)
    fn = tf.tensor_scatter_nd_add if accumulate else tf.tensor_scatter_nd_update
    return fn(x, coords, updates)

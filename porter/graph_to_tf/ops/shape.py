"""Views, reshapes, slicing, concatenation, padding and copies. Sizes may be symbolic
(int32 scalars at run time): shape_arg turns a mixed list into what tf.reshape takes."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import axis, dim, rank, shape_arg, size, tf_dtype
from porter.graph_to_tf.registry import register

aten = torch.ops.aten

_INT64_MAX = 2**63 - 1


@register(aten.view.default, aten._unsafe_view.default, aten.reshape.default)
def view(x, sizes):
    return tf.reshape(x, shape_arg(sizes))


@register(aten.permute.default)
def permute(x, dims):
    return tf.transpose(x, [axis(d, rank(x)) for d in dims])


@register(aten.expand.default)
def expand(x, sizes, implicit=False):
    offset = len(sizes) - rank(x)
    target = [dim(x, i - offset) if (isinstance(s, int) and s == -1) else s for i, s in enumerate(sizes)]
    return tf.broadcast_to(x, shape_arg(target))


@register(aten.unsqueeze.default)
def unsqueeze(x, dim):
    return tf.expand_dims(x, axis(dim, rank(x) + 1))


@register(aten.squeeze.dims, aten.squeeze.dim, aten.squeeze.default)
def squeeze(x, dim=None):
    dims = range(rank(x)) if dim is None else [dim] if isinstance(dim, int) else dim
    # torch skips dims that are not 1; TF would raise
    keep = [axis(d, rank(x)) for d in dims if rank(x) and x.shape[axis(d, rank(x))] == 1]
    return tf.squeeze(x, keep) if keep else x


def _bound(v):
    if v is None or (isinstance(v, int) and v >= _INT64_MAX // 2):
        return None
    return size(v)


@register(aten.slice.Tensor)
def slice_(x, dim=0, start=None, end=None, step=1):
    index = [slice(None)] * rank(x)
    index[axis(dim, rank(x))] = slice(_bound(start), _bound(end), step)
    return x[tuple(index)]


@register(aten.select.int)
def select(x, dim, index):
    key = [slice(None)] * rank(x)
    key[axis(dim, rank(x))] = size(index)
    return x[tuple(key)]


@register(aten.cat.default)
def cat(tensors, dim=0):
    # torch lets a 1-D empty tensor join anything; TF does not
    tensors = [t for t in tensors if not (rank(t) == 1 and t.shape[0] == 0)] or tensors[:1]
    dtype = tensors[0].dtype
    return tf.concat([tf.cast(t, dtype) for t in tensors], axis(dim, rank(tensors[0])))


@register(aten.split_with_sizes.default)
def split_with_sizes(x, split_sizes, dim=0):
    return tuple(tf.split(x, [size(s) for s in split_sizes], axis=axis(dim, rank(x))))


@register(aten.split.Tensor)
def split(x, split_size, dim=0):
    d = axis(dim, rank(x))
    n = dim_ = x.shape[d]
    sizes = [split_size] * (dim_ // split_size) + ([n % split_size] if n % split_size else [])
    return tuple(tf.split(x, sizes, axis=d))


@register(aten.unbind.int)
def unbind(x, dim=0):
    return tuple(tf.unstack(x, axis=axis(dim, rank(x))))


@register(aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default, aten.detach.default)
def clone(x, memory_format=None):
    return tf.identity(x)


@register(aten._to_copy.default)
def to_copy(x, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False, memory_format=None):
    if dtype is None:
        return tf.identity(x)
    target = tf_dtype(dtype)
    if target == tf.bool and x.dtype != tf.bool:
        return tf.not_equal(x, tf.zeros([], x.dtype))
    return tf.cast(x, target)


@register(aten.constant_pad_nd.default)
def constant_pad_nd(x, pad, value=0):
    # torch lists (before, after) pairs from the last dim backwards; negative pads crop
    n = rank(x)
    pairs = [[0, 0] for _ in range(n)]
    for i in range(len(pad) // 2):
        pairs[n - 1 - i] = [pad[2 * i], pad[2 * i + 1]]
    crop = [slice(-b if b < 0 else None, a if a < 0 else None) for b, a in pairs]
    pairs = [[max(b, 0), max(a, 0)] for b, a in pairs]
    return tf.pad(x, pairs, constant_values=tf.cast(value, x.dtype))[tuple(crop)]


@register(aten.repeat.default)
def repeat(x, repeats):
    extra = len(repeats) - rank(x)
    x = tf.reshape(x, [1] * extra + [dim(x, i) for i in range(rank(x))]) if extra else x
    return tf.tile(x, shape_arg(repeats))


@register(aten.flip.default)
def flip(x, dims):
    return tf.reverse(x, [axis(d, rank(x)) for d in dims])


@register(aten.roll.default)
def roll(x, shifts, dims=()):
    if not dims:
        return tf.reshape(tf.roll(tf.reshape(x, [-1]), shifts, 0), tf.shape(x))
    return tf.roll(x, list(shifts), [axis(d, rank(x)) for d in dims])


def _contiguous_strides(sizes):
    strides, step = [], 1
    for s in reversed(sizes):
        strides.append(step)
        step *= s
    return list(reversed(strides))


def _as_strided_check(node):
    """Only the as_strided that is a reshape: the input contiguous with offset 0, the output's strides
    the contiguous ones (size-1 dims ignored) and as many elements (adaptive_avg_pool1d's decomposition)."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true as known

    def value(v):
        return v.meta["val"] if isinstance(v, torch.fx.Node) else v

    source = node.args[0].meta["val"]
    sizes, strides = [value(s) for s in node.args[1]], [value(s) for s in node.args[2]]
    offset = value(node.args[3]) if len(node.args) > 3 else 0
    try:
        if not known(offset == 0) or not source.is_contiguous() or not known(source.numel() == _numel(sizes)):
            return "as_strided other than a reshape of a contiguous tensor is not converted"
        expected = _contiguous_strides(sizes)
        if any(not known(sz == 1) and not known(st == ex) for sz, st, ex in zip(sizes, strides, expected)):
            return "as_strided with non-contiguous strides is not converted"
    except Exception:  # noqa: BLE001 - a symbolic comparison torch cannot decide
        return "as_strided over symbolic sizes that cannot be proven a reshape"
    return None


def _numel(sizes):
    n = 1
    for s in sizes:
        n = n * s
    return n


@register(aten.as_strided.default, check=_as_strided_check)
def as_strided(x, sizes, stride, storage_offset=None):
    return tf.reshape(x, shape_arg(sizes))

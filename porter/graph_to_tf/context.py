"""What converters share: dtype mapping, the node being converted, and sizes that may be symbolic.

A symbolic size (a SymInt in the ExportedProgram) is a scalar int32 TF tensor at run time
(``tf.shape(x)[i]`` and integer math on it); a static size stays a Python int, so TF sees
constant shapes wherever torch.export did.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_STATE = threading.local()

_TORCH_TO_TF = {
    torch.float32: "float32", torch.float64: "float64", torch.float16: "float16", torch.bfloat16: "bfloat16",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8",
    torch.bool: "bool", torch.complex64: "complex64",
}


def tf_dtype(dtype: torch.dtype):
    import tensorflow as tf

    return getattr(tf, _TORCH_TO_TF[dtype])


def torch_dtype(tf_type) -> torch.dtype:
    name = tf_type.name if hasattr(tf_type, "name") else str(tf_type)
    return next(t for t, n in _TORCH_TO_TF.items() if n == name)


@contextlib.contextmanager
def converting(node):
    """Make ``node`` the current one for the converters' helpers below."""
    previous = getattr(_STATE, "node", None)
    _STATE.node = node
    try:
        yield
    finally:
        _STATE.node = previous


def current_node():
    return _STATE.node


def out_meta(index: int | None = None):
    """The FakeTensor torch.export recorded for the current node's output (``index`` for tuples)."""
    val = _STATE.node.meta.get("val")
    return val[index] if index is not None else val


def out_dtype(index: int | None = None):
    """The TF dtype torch produces here: the authority for type promotion."""
    return tf_dtype(out_meta(index).dtype)


def arg_meta(position: int):
    """The recorded value of the current node's ``position``-th argument (FakeTensor, number or None)."""
    arg = _STATE.node.args[position]
    return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg


def is_tensor(value) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "shape") and not isinstance(value, (int, float, bool))


def size(value):
    """A size as TF accepts it: a Python int, or an int32 scalar tensor."""
    import tensorflow as tf

    if isinstance(value, (int, bool)):
        return int(value)
    return tf.cast(value, tf.int32)


def shape_arg(sizes):
    """A list of sizes (ints and symbolic scalars) as a static list, or an int32 tensor when any is symbolic."""
    import tensorflow as tf

    sizes = [size(s) for s in sizes]
    if all(isinstance(s, int) for s in sizes):
        return sizes
    return tf.stack([tf.constant(s, tf.int32) if isinstance(s, int) else s for s in sizes])


def dim(x, axis: int):
    """Size of ``x`` along ``axis``: a Python int where TF knows it statically."""
    import tensorflow as tf

    static = x.shape[axis]
    return int(static) if static is not None else tf.shape(x)[axis]


def rank(x) -> int:
    return len(x.shape)


def axis(a: int, n: int) -> int:
    return a + n if a < 0 else a

"""Channels-last twins: one transpose at each end of an NHWC stretch, not a pair around every op.

TF's CPU convolutions and pools run NHWC while the graph keeps torch's NCHW. An NHWC op returns its result
transposed back to NCHW (``from_nhwc``) and remembers the NHWC tensor it came from (its twin); the next NHWC op
takes the twin (``to_nhwc``) instead of transposing again. Ops that do not care about layout (elementwise
activations, same-rank adds and muls, inference BatchNorm) compute a twin too, from their inputs' twins
(``propagate``), and their NCHW result is the twin transposed back. An NCHW value nothing reads is dead in the
function graph, and TF prunes it when the function runs (and the TFLite converter when it converts): a
conv -> bn -> relu -> conv -> add chain keeps the transpose into its first op and out of its last.
"""

from __future__ import annotations

import contextlib
import threading

_STATE = threading.local()

NCHW_TO_NHWC = [0, 2, 3, 1]
NHWC_TO_NCHW = [0, 3, 1, 2]

# ops whose result at every position depends only on the operands at that position (or on scalars), so the same
# op over NHWC twins gives the NHWC twin of the result; binary ones need a twin for every 4-D operand
ELEMENTWISE = {
    "aten.relu.default", "aten.relu6.default", "aten.sigmoid.default", "aten.silu.default", "aten.gelu.default",
    "aten.tanh.default", "aten.hardtanh.default", "aten.leaky_relu.default", "aten.elu.default",
    "aten.hardswish.default", "aten.hardsigmoid.default", "aten.clamp.default", "aten.clamp_min.default",
    "aten.clamp_max.default", "aten.neg.default", "aten.abs.default", "aten.exp.default", "aten.sqrt.default",
    "aten.rsqrt.default", "aten.mish.default", "aten.softplus.default",
    "aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor", "aten.add.Scalar",
    "aten.sub.Scalar", "aten.mul.Scalar", "aten.div.Scalar", "aten.maximum.default", "aten.minimum.default",
    "aten.clone.default", "aten.alias.default", "aten.dropout.default",
}


@contextlib.contextmanager
def scope():
    """Twins live for one run of the graph (one trace, or one eager localisation pass)."""
    previous = getattr(_STATE, "twins", None)
    _STATE.twins = {}
    try:
        yield
    finally:
        _STATE.twins = previous


def _twins():
    return getattr(_STATE, "twins", None)


def twin(x):
    """The NHWC twin of the NCHW tensor ``x``, or None."""
    twins = _twins()
    found = twins.get(id(x)) if twins is not None else None
    return found[1] if found is not None and found[0] is x else None  # the tensor itself is kept: ids are not reused


def remember(x, nhwc) -> None:
    twins = _twins()
    if twins is not None:
        twins[id(x)] = (x, nhwc)


def to_nhwc(x):
    import tensorflow as tf

    found = twin(x)
    return found if found is not None else tf.transpose(x, NCHW_TO_NHWC)


def from_nhwc(y):
    import tensorflow as tf

    x = tf.transpose(y, NHWC_TO_NCHW)
    remember(x, y)
    return x


def propagate(name: str, fn, args, kwargs, result):
    """``result`` of the elementwise op ``name`` on ``args``; where every 4-D operand has an NHWC twin, the op runs on
    the twins instead and the NCHW result is the twin's transpose (so nothing NCHW is computed unless read)."""
    import tensorflow as tf

    if name not in ELEMENTWISE or _twins() is None or not isinstance(result, tf.Tensor) or len(result.shape) != 4:
        return result
    twinned = []
    for arg in args:
        if isinstance(arg, (tf.Tensor, tf.Variable)) and len(arg.shape) > 0:
            found = twin(arg) if len(arg.shape) == 4 else None
            if found is None:  # a 4-D operand without a twin, or a lower-rank one that broadcasts by NCHW axes
                return result
            twinned.append(found)
        else:
            twinned.append(arg)
    if not any(t is not a for t, a in zip(twinned, args)):
        return result
    return from_nhwc(fn(*twinned, **kwargs))

"""Element-wise arithmetic and math. Operands are cast to the dtype torch.export recorded for the
output, which is torch's own type promotion (TF does not promote)."""

from __future__ import annotations

import tensorflow as tf
import torch

from porter.graph_to_tf.context import current_node, is_tensor, out_dtype
from porter.graph_to_tf.registry import register

aten = torch.ops.aten


def operand(value, dtype):
    """``value`` (tensor, variable or Python number) as a tensor of ``dtype``."""
    if is_tensor(value):
        return value if value.dtype == dtype else tf.cast(value, dtype)
    return tf.constant(value, dtype)


def _binary(x, y):
    dtype = out_dtype()
    return operand(x, dtype), operand(y, dtype)


@register(aten.add.Tensor, aten.add.Scalar)
def add(x, other, alpha=1):
    a, b = _binary(x, other)
    if a.dtype == tf.bool:
        return tf.logical_or(a, b)
    return a + (b * operand(alpha, b.dtype) if alpha != 1 else b)


@register(aten.sub.Tensor, aten.sub.Scalar)
def sub(x, other, alpha=1):
    a, b = _binary(x, other)
    return a - (b * operand(alpha, b.dtype) if alpha != 1 else b)


@register(aten.rsub.Scalar)
def rsub(x, other, alpha=1):
    return sub(other, x, alpha)


@register(aten.mul.Tensor, aten.mul.Scalar)
def mul(x, other):
    a, b = _binary(x, other)
    return tf.logical_and(a, b) if a.dtype == tf.bool else a * b


@register(aten.div.Tensor, aten.div.Scalar)
def div(x, other):
    a, b = _binary(x, other)
    return a / b


@register(aten.div.Tensor_mode, aten.div.Scalar_mode)
def div_mode(x, other, rounding_mode=None):
    a, b = _binary(x, other)
    if rounding_mode is None:
        return a / b
    if a.dtype.is_integer:
        if _int32_indices(current_node().args[0], other):
            a32 = tf.math.floordiv(tf.cast(a, tf.int32), tf.constant(other, tf.int32)) if rounding_mode == "floor" \
                else tf.truncatediv(tf.cast(a, tf.int32), tf.constant(other, tf.int32))
            return tf.cast(a32, a.dtype)
        return tf.math.floordiv(a, b) if rounding_mode == "floor" else tf.truncatediv(a, b)
    q = a / b
    return tf.floor(q) if rounding_mode == "floor" else tf.where(q < 0, tf.math.ceil(q), tf.floor(q))


@register(aten.floor_divide.default, aten.floor_divide.Scalar)
def floor_divide(x, other):
    return div_mode(x, other, rounding_mode="floor")


# Shape-only ops: the values that come out are values that went in.
_SAME_VALUES = {"aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.permute.default",
                "aten.transpose.int", "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default",
                "aten.unsqueeze.default", "aten.clone.default", "aten.alias.default", "aten.slice.Tensor",
                "aten.select.int", "aten.flatten.using_ints", "aten.expand.default", "aten.contiguous.default"}


def _int32_indices(node, divisor) -> bool:
    """An int64 dividend whose values are indices that porter's own sort/topk converters computed in int32
    (tf.argsort, tf.math.top_k), seen through shape-only ops, divided by an int32 constant: the division is
    exact in int32. TFLite has FloorDiv for int32 only, so this keeps an MoE router's ``idx // top_k`` a builtin."""
    from porter.graph_to_tf.registry import op_name

    if not isinstance(divisor, int) or isinstance(divisor, bool) or not 0 < abs(divisor) < 2**31:
        return False
    while getattr(node, "op", None) == "call_function" and op_name(node.target) in _SAME_VALUES:
        node = node.args[0]
    if getattr(node, "op", None) != "call_function" or op_name(node.target) != "operator.getitem" or node.args[1] != 1:
        return False
    source = node.args[0]
    return getattr(source, "op", None) == "call_function" and op_name(source.target) in (
        "aten.sort.default", "aten.sort.stable", "aten.topk.default")


@register(aten.remainder.Tensor, aten.remainder.Scalar)
def remainder(x, other):
    a, b = _binary(x, other)
    return tf.math.floormod(a, b)


@register(aten.fmod.Tensor, aten.fmod.Scalar)
def fmod(x, other):
    a, b = _binary(x, other)
    return tf.truncatemod(a, b)


@register(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar)
def pow_(x, exponent):
    dtype = out_dtype()
    if not is_tensor(exponent) and is_tensor(x) and dtype.is_floating:
        # torch special-cases these exponents; match it bit for bit where TF has the same op
        special = {2: tf.math.square, 0.5: tf.math.sqrt, -1: tf.math.reciprocal, 1: tf.identity}
        if exponent in special:
            return special[exponent](operand(x, dtype))
    a, b = operand(x, dtype), operand(exponent, dtype)
    return tf.pow(a, b)


@register(aten.maximum.default)
def maximum(x, other):
    a, b = _binary(x, other)
    return tf.logical_or(a, b) if a.dtype == tf.bool else tf.maximum(a, b)


@register(aten.minimum.default)
def minimum(x, other):
    a, b = _binary(x, other)
    return tf.logical_and(a, b) if a.dtype == tf.bool else tf.minimum(a, b)


@register(aten.atan2.default)
def atan2(x, other):
    a, b = _binary(x, other)
    return tf.math.atan2(a, b)


@register(aten.clamp.default, aten.clamp.Tensor)
def clamp(x, min=None, max=None):
    dtype = out_dtype()
    y = operand(x, dtype)
    if min is not None:
        y = tf.maximum(y, operand(min, dtype))
    if max is not None:
        y = tf.minimum(y, operand(max, dtype))
    return y


def _unary(name, fn, *, floating=True):
    def convert(x):
        dtype = out_dtype()
        return fn(operand(x, dtype) if floating else x)

    convert.__name__ = name
    register(getattr(aten, name).default)(convert)


for _name, _fn in {
    "abs": tf.abs, "neg": tf.negative, "exp": tf.exp, "log": tf.math.log, "sqrt": tf.sqrt, "rsqrt": tf.math.rsqrt,
    "sin": tf.sin, "cos": tf.cos, "tan": tf.tan, "asin": tf.asin, "acos": tf.acos, "atan": tf.atan, "sinh": tf.sinh,
    "cosh": tf.cosh, "tanh": tf.tanh, "asinh": tf.asinh, "acosh": tf.acosh, "atanh": tf.atanh, "erf": tf.math.erf,
    "reciprocal": tf.math.reciprocal, "floor": tf.floor, "ceil": tf.math.ceil, "log1p": tf.math.log1p,
    "expm1": tf.math.expm1, "sign": tf.sign, "trunc": lambda v: tf.where(v < 0, tf.math.ceil(v), tf.floor(v)), "log2": tf.experimental.numpy.log2,
    "log10": tf.experimental.numpy.log10, "exp2": lambda v: tf.pow(tf.constant(2, v.dtype), v),
    "round": tf.math.round, "erfinv": tf.math.erfinv,
}.items():
    _unary(_name, _fn)


@register(aten.bitwise_not.default)
def bitwise_not(x):
    return tf.logical_not(x) if x.dtype == tf.bool else tf.bitwise.invert(x)


def _bitwise(name, logical, bitwise):
    def convert(x, other):
        a, b = _binary(x, other)
        return logical(a, b) if a.dtype == tf.bool else bitwise(a, b)

    convert.__name__ = name
    register(getattr(aten, name).Tensor, getattr(aten, name).Scalar)(convert)


_bitwise("bitwise_and", tf.logical_and, tf.bitwise.bitwise_and)
_bitwise("bitwise_or", tf.logical_or, tf.bitwise.bitwise_or)
_bitwise("bitwise_xor", tf.math.logical_xor, tf.bitwise.bitwise_xor)


@register(aten.round.decimals)
def round_decimals(x, decimals=0):
    # torch: nearbyint(x * 10^d) / 10^d, or nearbyint(x / 10^-d) * 10^-d for negative d
    scale = tf.constant(10.0 ** abs(decimals), x.dtype)
    return tf.math.round(x * scale) / scale if decimals >= 0 else tf.math.round(x / scale) * scale

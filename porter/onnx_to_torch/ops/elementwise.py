"""Element-wise math, comparison, logic and bitwise ops (ONNX broadcasting is numpy's, as torch's)."""

from __future__ import annotations

import functools

import torch

from porter.onnx_to_torch.context import as_number, dtype, is_proxy
from porter.onnx_to_torch.registry import register
from porter.onnx_to_torch.tensors import is_integer


_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def via_int64(fn):
    """torch has no kernels for uint16/32/64 arithmetic: compute in int64, cast back."""

    @functools.wraps(fn)
    def wrapper(*inputs, **attrs):
        unsigned = next((dtype(v) for v in inputs if v is not None and dtype(v) in _WIDE_UNSIGNED), None)
        if unsigned is None:
            return fn(*inputs, **attrs)
        out = fn(*[v.to(torch.int64) for v in inputs], **attrs)
        return out if dtype(out) == torch.bool else out.to(unsigned)

    return wrapper


def _operands(a, b):
    # A 0-D constant next to a run-time tensor reads better as a Python number; ONNX
    # guarantees both sides share a dtype, so this changes no type promotion.
    if is_proxy(a):
        b = as_number(b)
    if is_proxy(b):
        a = as_number(a)
    return a, b


# -- arithmetic (opset 7+: numpy broadcasting; earlier versions had a `broadcast` attribute) --
@register("Add", since=7)
@via_int64
def Add(a, b):
    a, b = _operands(a, b)
    return a + b


@register("Sub", since=7)
@via_int64
def Sub(a, b):
    a, b = _operands(a, b)
    return a - b


@register("Mul", since=7)
@via_int64
def Mul(a, b):
    a, b = _operands(a, b)
    return a * b


@register("Div", since=7)
@via_int64
def Div(a, b):
    if is_integer(dtype(a)):  # ONNX integer division truncates toward zero
        return torch.div(a, b, rounding_mode="trunc")
    a, b = _operands(a, b)
    return a / b


@register("Pow", since=7)
def Pow(x, y):
    out = torch.pow(x, y)
    # ONNX keeps the base's type even for an int base and float exponent.
    return out if dtype(x) == dtype(y) else out.to(dtype(x))


@register("Mod")
@via_int64
def Mod(a, b, *, fmod=0):
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


@register("BitShift")
@via_int64
def BitShift(x, y, *, direction):
    return torch.bitwise_left_shift(x, y) if direction == "LEFT" else torch.bitwise_right_shift(x, y)


# -- variadic (opset 8+: broadcasting) --
@register("Sum", since=8)
def Sum(*inputs):
    return functools.reduce(torch.add, inputs)


@register("Mean", since=8)
def Mean(*inputs):
    return functools.reduce(torch.add, inputs) / len(inputs)


@register("Max", since=8)
@via_int64
def Max(*inputs):
    return functools.reduce(torch.maximum, inputs)


@register("Min", since=8)
@via_int64
def Min(*inputs):
    return functools.reduce(torch.minimum, inputs)


# -- unary math --
@register("Abs", since=6)
def Abs(x):
    return torch.abs(x)


@register("Neg", since=6)
def Neg(x):
    return torch.neg(x)


@register("Reciprocal", since=6)
def Reciprocal(x):
    return torch.reciprocal(x)


@register("Sqrt", since=6)
def Sqrt(x):
    return torch.sqrt(x)


@register("Exp", since=6)
def Exp(x):
    return torch.exp(x)


@register("Log", since=6)
def Log(x):
    return torch.log(x)


@register("Ceil", since=6)
def Ceil(x):
    return torch.ceil(x)


@register("Floor", since=6)
def Floor(x):
    return torch.floor(x)


@register("Round")
def Round(x):
    return torch.round(x)  # both round half to even


@register("Sign")
def Sign(x):
    return torch.sign(x)


@register("Erf")
def Erf(x):
    return torch.erf(x)


@register("Sin")
def Sin(x):
    return torch.sin(x)


@register("Cos")
def Cos(x):
    return torch.cos(x)


@register("Tan")
def Tan(x):
    return torch.tan(x)


@register("Asin")
def Asin(x):
    return torch.asin(x)


@register("Acos")
def Acos(x):
    return torch.acos(x)


@register("Atan")
def Atan(x):
    return torch.atan(x)


@register("Sinh")
def Sinh(x):
    return torch.sinh(x)


@register("Cosh")
def Cosh(x):
    return torch.cosh(x)


@register("Asinh")
def Asinh(x):
    return torch.asinh(x)


@register("Acosh")
def Acosh(x):
    return torch.acosh(x)


@register("Atanh")
def Atanh(x):
    return torch.atanh(x)


@register("IsNaN")
def IsNaN(x):
    return torch.isnan(x)


@register("IsInf")
def IsInf(x, *, detect_negative=1, detect_positive=1):
    if detect_negative and detect_positive:
        return torch.isinf(x)
    return torch.isneginf(x) if detect_negative else torch.isposinf(x)


# -- comparison and logic --
@register("Equal", since=7)
def Equal(a, b):
    return torch.eq(a, b)


@register("Greater", since=7)
@via_int64
def Greater(a, b):
    return torch.gt(a, b)


@register("Less", since=7)
@via_int64
def Less(a, b):
    return torch.lt(a, b)


@register("GreaterOrEqual")
@via_int64
def GreaterOrEqual(a, b):
    return torch.ge(a, b)


@register("LessOrEqual")
@via_int64
def LessOrEqual(a, b):
    return torch.le(a, b)


@register("And", since=7)
def And(a, b):
    return torch.logical_and(a, b)


@register("Or", since=7)
def Or(a, b):
    return torch.logical_or(a, b)


@register("Xor", since=7)
def Xor(a, b):
    return torch.logical_xor(a, b)


@register("Not")
def Not(x):
    return torch.logical_not(x)


@register("BitwiseAnd")
@via_int64
def BitwiseAnd(a, b):
    return torch.bitwise_and(a, b)


@register("BitwiseOr")
@via_int64
def BitwiseOr(a, b):
    return torch.bitwise_or(a, b)


@register("BitwiseXor")
@via_int64
def BitwiseXor(a, b):
    return torch.bitwise_xor(a, b)


@register("BitwiseNot")
@via_int64
def BitwiseNot(x):
    return torch.bitwise_not(x)


@register("Where", since=9)
def Where(condition, x, y):
    return torch.where(condition, x, y)

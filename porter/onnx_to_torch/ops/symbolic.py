"""Shape arithmetic on SymShape values (the int64 tensors ``Shape`` produces).

Exporters compute sizes as Shape -> Gather -> Concat -> Reshape chains. Doing
that arithmetic here, on Python ints and symbolic sizes, instead of on run-time
tensors keeps the converted module free of tensor-to-int conversions, so
torch.export and torch.compile see plain symbolic sizes. Each function returns
NotImplemented when it cannot stay symbolic; the op's converter then runs on a
materialised tensor instead.
"""

from __future__ import annotations

import operator

import torch

from porter.onnx_to_torch.context import SymShape, is_const, is_proxy

SYMBOLIC: dict = {}


def symbolic(op_type):
    def decorate(fn):
        SYMBOLIC[op_type] = fn
        return fn

    return decorate


def _items(v):
    """(items, is_scalar) of a SymShape or a small int constant, else None."""
    if isinstance(v, SymShape):
        return v.items, v.scalar
    if is_const(v) and not v.is_floating_point() and v.dim() <= 1 and v.numel() <= 16:
        return [int(i) for i in v.reshape(-1).tolist()], v.dim() == 0
    return None


@symbolic("Shape")
def shape(data, *, start=0, end=None):
    return torch.tensor([len(data.items)] if not data.scalar else [], dtype=torch.int64)[start:end]


@symbolic("Identity")
def identity(x):
    return x


@symbolic("Cast")
def cast(x, *, to, saturate=1, round_mode="up"):
    from onnx import TensorProto

    return x if to in (TensorProto.INT64, TensorProto.INT32) else NotImplemented


@symbolic("Gather")
def gather(data, indices, *, axis=0):
    if not isinstance(data, SymShape) or not is_const(indices):
        return NotImplemented
    picked = [data.items[int(i)] for i in indices.reshape(-1).tolist()]
    return SymShape(picked, scalar=indices.dim() == 0)


@symbolic("Concat")
def concat(*inputs, axis):
    parts = [_items(v) for v in inputs]
    if any(p is None or p[1] for p in parts):
        return NotImplemented
    return SymShape([i for items, _ in parts for i in items])


@symbolic("Unsqueeze")
def unsqueeze(data, axes=None, **attrs):
    return SymShape(data.items) if isinstance(data, SymShape) and data.scalar else NotImplemented


@symbolic("Squeeze")
def squeeze(data, axes=None, **attrs):
    if isinstance(data, SymShape) and not data.scalar and len(data.items) == 1:
        return SymShape(data.items, scalar=True)
    return NotImplemented


@symbolic("Slice")
def slice_(data, starts=None, ends=None, axes=None, steps=None, **attrs):
    bounds = [_items(v) if v is not None else ([1], False) for v in (starts, ends, steps)]
    if not isinstance(data, SymShape) or data.scalar or any(b is None for b in bounds):
        return NotImplemented
    (start,), (end,), (step,) = (b[0] for b in bounds)
    return SymShape(data.items[start:end:step])


def _elementwise(op, a, b):
    left, right = _items(a), _items(b)
    if left is None or right is None:
        return NotImplemented
    (xs, x_scalar), (ys, y_scalar) = left, right
    n = max(len(xs), len(ys))
    if len(xs) not in (1, n) or len(ys) not in (1, n):
        return NotImplemented
    xs, ys = xs * (n // len(xs)), ys * (n // len(ys))
    return SymShape([op(x, y) for x, y in zip(xs, ys)], scalar=x_scalar and y_scalar).simplify()


@symbolic("Add")
def add(a, b):
    return _elementwise(operator.add, a, b)


@symbolic("Sub")
def sub(a, b):
    return _elementwise(operator.sub, a, b)


@symbolic("Mul")
def mul(a, b):
    return _elementwise(operator.mul, a, b)


@symbolic("Div")
def div(a, b):
    return _elementwise(operator.floordiv, a, b)  # sizes are non-negative: floor == trunc


@symbolic("Equal")
def equal(a, b):
    left, right = _items(a), _items(b)
    if left is None or right is None:
        return NotImplemented

    def known(x, y):
        if not is_proxy(x) and not is_proxy(y):
            return x == y
        constant = y if is_proxy(x) else x
        return False if not is_proxy(constant) and constant < 0 else None  # a size is never negative

    n = max(len(left[0]), len(right[0]))
    xs, ys = left[0] * (n // len(left[0])), right[0] * (n // len(right[0]))
    answers = [known(x, y) for x, y in zip(xs, ys)]
    if None in answers:
        return NotImplemented
    out = torch.tensor(answers, dtype=torch.bool)
    return out.reshape(()) if left[1] and right[1] else out


@symbolic("Where")
def where(condition, x, y):
    left, right = _items(x), _items(y)
    if not is_const(condition) or left is None or right is None:
        return NotImplemented
    chosen = condition.reshape(-1).tolist()
    n = len(chosen)
    xs, ys = left[0] * (n // len(left[0])), right[0] * (n // len(right[0]))
    return SymShape([a if c else b for c, a, b in zip(chosen, xs, ys)]).simplify()

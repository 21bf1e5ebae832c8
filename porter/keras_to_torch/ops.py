"""Translators for keras.ops calls in a functional graph (``x + 3.0``, ``x * gate``: operations, not layers;
MobileNetV3's hard sigmoid, ConvNeXt's residuals) and for the custom layers keras.applications defines
(ConvNeXt's LayerScale). Registered under "op.<Class>" so keras.ops.Add never meets keras.layers.Add."""

from __future__ import annotations

from porter.keras_to_torch.layers import Emit, Inputs, _check, _w, translator

_BINARY = {"op.Add": "+", "op.Subtract": "-", "op.Multiply": "*", "op.Divide": "/", "op.TrueDivide": "/",
           "op.NotEqual": "!=", "op.Equal": "=="}  # (not_)equal: the masks of Embedding(mask_zero) and Masking


@translator(*_BINARY)
def binary(call, x: Inputs, cfg):
    """Two operands, each a tensor of the graph or a Python number (broadcast as Keras does)."""
    args = call.args
    _check(call, len(args) == 2 and not call.layer._inbound_nodes[0].arguments.kwargs, "keyword arguments")
    consts = [a for a in args if a is not None]
    _check(call, all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in consts),
           f"a constant operand that is no Python number ({[type(a).__name__ for a in consts]})")
    ranks = {len(s) for s in x.shapes}
    same = len(ranks) == 1 and len({tuple(s) for s in x.shapes}) == 1
    # channels-first only where no broadcasting between tensors could change meaning
    layout = "cf" if same and min(ranks) >= 3 and "cf" in x.layouts else "cl"
    if not consts and len(x.vars) == 1:  # x * x
        layout = x.layout(0)
    operands, i = [], 0
    for a in args:
        if a is None:
            operands.append(x.get(min(i, len(x.vars) - 1), layout if len(x.vars) > 1 else "any"))
            i += 1
        else:
            operands.append(repr(float(a)))
    if len(x.vars) == 1:
        layout = x.layout(0)
    return Emit(None, f"({operands[0]} {_BINARY[call.cls]} {operands[1]})", layout)


@translator("LayerScale")
def layer_scale(call, x: Inputs, cfg):
    w = call.layer.weights  # one unnamed variable (Keras calls it "variable"): the per-channel gamma
    _check(call, len(w) == 1 and tuple(w[0].shape) == (x.shapes[0][-1],), "weights other than one gamma per channel")
    return Emit(f"LayerScale({int(w[0].shape[0])})", f"self.{call.var}({x.get(0, 'cl')})", "cl",
                [_w(call, "gamma", w[0], "same")], helpers={"LayerScale"})


@translator("CustomScaleLayer")
def custom_scale(call, x: Inputs, cfg):
    """InceptionResNetV2's residual: inputs[0] + inputs[1] * scale (a Python number)."""
    scale = cfg["scale"]
    _check(call, len(x.vars) == 2 and isinstance(scale, (int, float)) and not isinstance(scale, bool),
           f"{len(x.vars)} inputs, scale {scale!r} (two inputs and a number)")
    same = len({tuple(s) for s in x.shapes}) == 1
    layout = "cf" if same and len(x.shapes[0]) >= 3 and "cf" in x.layouts else "cl"
    return Emit(None, f"({x.get(0, layout)} + {x.get(1, layout)} * {float(scale)!r})", layout)


@translator("op.Any", "op.All")
def any_all(call, x: Inputs, cfg):
    """Masking's mask: any(not_equal(x, mask_value), axis=-1)."""
    op = call.layer
    axis, keepdims = getattr(op, "axis", None), bool(getattr(op, "keepdims", False))
    _check(call, len(x.vars) == 1 and isinstance(axis, (list, tuple)) and len(axis) == 1, f"axis={axis!r}")
    fn = "any" if call.cls == "op.Any" else "all"
    return Emit(None, f"{x.get(0, 'cl')}.{fn}({int(axis[0])}, keepdim={keepdims})", "cl")

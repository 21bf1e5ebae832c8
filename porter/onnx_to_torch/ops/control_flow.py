"""Control flow: Loop, Scan and If (ops whose bodies are ONNX subgraphs).

Each body becomes its own GraphModule, a named child of the result (its initializers and the
constant outer tensors it reads are its own parameters/buffers; the run-time outer tensors it
reads are extra inputs after its own). The graph then calls a runtime helper (onnx_loop,
onnx_scan, onnx_if) that runs the body in a Python loop, so codegen writes the body as a class
of its own and copies the helper into model.py. An If on a constant condition is inlined.
"""

from __future__ import annotations

import torch

from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import (
    SymShape, dtype, emit, has_proxy, inline, is_const, output_count, rank, scalar, subgraph, submodule,
)
from porter.onnx_to_torch.registry import register
from porter.onnx_to_torch.tensors import torch_dtype


def _type(value, drop_axis: bool = False):
    """(dtype, shape with every size unknown) of a value fed to a body, or None when unknown."""
    try:
        return dtype(value), [None] * (rank(value) - (1 if drop_axis else 0))
    except Exception:  # the body's own declared types (or shape inference) must do
        return None


def _call(helper, gm, suffix: str, args: tuple, types: list):
    """``helper(body, *args)``: folded now when nothing is a run-time value, else a graph node; one
    value per ONNX output, typed (dtype, rank) from ``types`` where known."""
    if not has_proxy(args):
        with torch.no_grad():
            result = helper(gm, *args)
    else:
        result = emit(helper, submodule(gm, suffix), *args)
    outputs = [result[i] for i in range(output_count())]
    for value, known in zip(outputs, types):
        if known is not None and not is_const(value):
            value.node.meta["onnx_type"] = known
    return outputs


def _shifted(known, by: int):
    """A (dtype, rank) or (dtype, shape) with ``by`` more (or fewer) axes."""
    if known is None:
        return None
    if isinstance(known[1], list):
        return known[0], [None] * (len(known[1]) + by)
    return known[0], known[1] + by


def _empty_scan(info, known):
    """(dtype, trailing shape) of a Loop scan output that got no items; unknown sizes read 0."""
    tensor_type = info.type.tensor_type
    elem = torch_dtype(tensor_type.elem_type) if tensor_type.elem_type else None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor_type.shape.dim]
    if not tensor_type.HasField("shape") and known is not None:
        dims = [0] * known[1]
    return elem or (known[0] if known else torch.float32), dims


@register("Loop", shape_inputs=(0,))
def Loop(M, cond, *v_initial, body):
    carried = len(v_initial)
    gm, outer = subgraph(body, [(torch.int64, []), (torch.bool, [])] + [_type(v) for v in v_initial])
    body_types = gm.porter_output_types
    n_scan = len(body.output) - 1 - carried
    if n_scan < 0:
        raise UnsupportedModelError(f"Loop body returns {len(body.output)} values for {carried} loop-carried ones")
    trips = None if M is None else (scalar(M) if isinstance(M, SymShape) or is_const(M) else M)
    if is_const(cond):
        cond = bool(cond)
    empty = [_empty_scan(info, body_types[1 + carried + k]) for k, info in enumerate(body.output[1 + carried:])]
    types = body_types[1:1 + carried] + [_shifted(t, 1) for t in body_types[1 + carried:]]
    return _call(runtime.onnx_loop, gm, "body", (trips, cond, list(v_initial), outer, empty), types)


@register("Scan", since=9)
def Scan(*inputs, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):
    n_state = len(inputs) - num_scan_inputs
    states, scans = list(inputs[:n_state]), list(inputs[n_state:])
    n_out = len(body.output) - n_state
    in_axes = [a % rank(x) for a, x in zip(scan_input_axes or [0] * len(scans), scans)]
    in_reverse = [bool(d) for d in scan_input_directions or [0] * len(scans)]
    out_axes = list(scan_output_axes or [0] * n_out)
    out_reverse = [bool(d) for d in scan_output_directions or [0] * n_out]
    gm, outer = subgraph(body, [_type(s) for s in states] + [_type(x, drop_axis=True) for x in scans])
    body_types = gm.porter_output_types
    types = body_types[:n_state] + [_shifted(t, 1) for t in body_types[n_state:]]
    return _call(runtime.onnx_scan, gm, "body",
                 (states, scans, outer, in_axes, in_reverse, out_axes, out_reverse), types)


@register("Scan", since=8, until=8)
def Scan_8(sequence_lens, *inputs, body, num_scan_inputs, directions=None):
    if sequence_lens is not None:
        raise UnsupportedModelError("Scan (opset 8) with sequence_lens is not supported")
    n_state = len(inputs) - num_scan_inputs
    states, scans = list(inputs[:n_state]), list(inputs[n_state:])
    n_out = len(body.output) - n_state
    in_reverse = [bool(d) for d in directions or [0] * len(scans)]
    gm, outer = subgraph(body, [_type(s, drop_axis=True) for s in states]
                         + [_shifted(_type(x, drop_axis=True), -1) for x in scans])
    body_types = gm.porter_output_types
    types = [_shifted(t, 1) for t in body_types[:n_state]] + [_shifted(t, 2) for t in body_types[n_state:]]
    return _call(runtime.onnx_scan8, gm, "body", (states, scans, outer, in_reverse, n_out), types)


@register("If")
def If(cond, *, then_branch, else_branch):
    if is_const(cond):
        return inline(then_branch if bool(cond.reshape(-1)[0]) else else_branch)
    then_gm, then_outer = subgraph(then_branch)
    else_gm, else_outer = subgraph(else_branch)
    then_types, else_types = then_gm.porter_output_types, else_gm.porter_output_types
    result = emit(runtime.onnx_if, cond, submodule(then_gm, "then_branch"), submodule(else_gm, "else_branch"),
                  then_outer, else_outer)
    outputs = [result[i] for i in range(output_count())]
    for value, known, other in zip(outputs, then_types, else_types):
        if known is not None and known == other:
            value.node.meta["onnx_type"] = known
    return outputs

"""Sequence and optional values: a sequence is a Python list of tensors, an optional a tensor (or
list) or None. A converter returns one value as a 1-tuple, since a bare list reads as one value per
output.

A sequence whose length is known while converting (SequenceConstruct, SequenceEmpty, inserts into
those) stays a Python list and every op on it is plain list work; a sequence that arrives at run
time (a graph input, a Loop/If result) goes through the small runtime helpers instead.
"""

from __future__ import annotations

import torch

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import current, emit, has_proxy, is_const, is_proxy, output_count, subgraph, submodule
from porter.onnx_to_torch.registry import register


def _index(position):
    return None if position is None else (int(position) if is_const(position) else position)


@register("SequenceConstruct")
def SequenceConstruct(*inputs):
    return (list(inputs),)


@register("SequenceEmpty")
def SequenceEmpty(*, dtype=None):
    return ([],)


@register("SequenceInsert")
def SequenceInsert(input_sequence, tensor, position=None):
    return emit(runtime.sequence_insert, input_sequence, tensor, _index(position))


@register("SequenceAt")
def SequenceAt(input_sequence, position):
    return emit(runtime.sequence_at, input_sequence, _index(position))


@register("SequenceErase")
def SequenceErase(input_sequence, position=None):
    return emit(runtime.sequence_erase, input_sequence, _index(position))


@register("SequenceLength")
def SequenceLength(input_sequence):
    if isinstance(input_sequence, list):
        return torch.tensor(len(input_sequence), dtype=torch.int64)
    return emit(runtime.sequence_length, input_sequence)


@register("SplitToSequence", since=11)
def SplitToSequence(input, split=None, *, axis=0, keepdims=1):
    return emit(runtime.split_to_sequence, input, split, axis, bool(keepdims))


@register("ConcatFromSequence")
def ConcatFromSequence(input_sequence, *, axis, new_axis=0):
    if new_axis:
        return emit(torch.stack, input_sequence, axis)
    return emit(torch.cat, input_sequence, axis)


@register("Optional")
def Optional(input=None, *, type=None):
    return (input,)


@register("OptionalHasElement", since=15)
def OptionalHasElement(input=None):
    if is_proxy(input):  # a run-time optional: None or a value
        return emit(runtime.optional_has_element, input)
    return torch.tensor(input is not None)


@register("OptionalGetElement", since=15)
def OptionalGetElement(input):
    return (input,)


def _is_sequence(name: str, value) -> bool:
    if isinstance(value, list):
        return True
    graph = current().model.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.name == name:
            return info.type.WhichOneof("value") == "sequence_type"
    return False


@register("SequenceMap")
def SequenceMap(input_sequence, *additional_inputs, body):
    names = list(current().node.input[1:])
    per_item = [_is_sequence(n, v) for n, v in zip(names, additional_inputs)]
    gm, outer = subgraph(body)
    args = (input_sequence, list(additional_inputs), per_item, outer, output_count())
    if not has_proxy(args):
        with torch.no_grad():
            result = runtime.sequence_map(gm, *args)
    else:
        result = emit(runtime.sequence_map, submodule(gm, "body"), *args)
    return [result[i] for i in range(output_count())]

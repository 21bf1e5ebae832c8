"""The Keras functional graph, read from the model: one LayerCall per layer, inputs named by variable."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

RESERVED = {"self", "torch", "nn", "F", "os", "math", "Model", "load"}


@dataclass
class LayerCall:
    layer: object  # the Keras layer
    cls: str  # its class name
    name: str  # its Keras name
    var: str  # its Python name (module attribute and output variable)
    inputs: list[str] = field(default_factory=list)  # variables of its input tensors
    in_shapes: list[tuple] = field(default_factory=list)
    out_shape: tuple = ()


@dataclass
class KerasGraph:
    inputs: list[tuple[str, str, tuple, str]]  # (runner name, variable, shape, dtype) per model input
    calls: list[LayerCall]  # in graph order
    outputs: list[str]  # variables of the model's outputs
    output_names: list[str]  # as the Keras runner names them
    problems: list[str]  # why a layer cannot be written (empty: every layer can)


def python_name(name: str, taken: set) -> str:
    var = re.sub(r"\W", "_", name) or "layer"
    if var[0].isdigit() or keyword.iskeyword(var) or var in RESERVED or var.startswith("__"):
        var = f"l_{var}"
    base, i = var, 1
    while var in taken:
        i += 1
        var = f"{base}_{i}"
    taken.add(var)
    return var


def _history(tensor):
    h = tensor._keras_history
    return h.operation, h.node_index, h.tensor_index


def read_graph(model) -> KerasGraph:
    from porter.frameworks import keras

    k = keras()
    problems, taken = [], set()
    tensor_var: dict[tuple, str] = {}
    inputs = []
    for t in model.inputs:
        op, node_index, tensor_index = _history(t)
        var = python_name(t.name.split(":")[0], taken)
        tensor_var[(op.name, node_index, tensor_index)] = var
        inputs.append((t.name.split(":")[0], var, tuple(t.shape), getattr(t.dtype, "name", None) or str(t.dtype)))
    pending = []
    for layer in model.layers:
        if isinstance(layer, k.layers.InputLayer):
            continue
        if isinstance(layer, k.Model):
            problems.append(f"layer {layer.name!r} ({type(layer).__name__}) is a nested model")
            continue
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            problems.append(f"layer {layer.name!r} ({type(layer).__name__}) is called {len(nodes)} times (a shared layer)")
            continue
        pending.append((layer, layer._inbound_nodes.index(nodes[0]), nodes[0]))
    calls = []
    while pending:  # graph order: model.layers order, each layer once its inputs exist
        for i, (layer, node_index, node) in enumerate(pending):
            keys = [_history(t) for t in node.input_tensors]
            if all((op.name, ni, ti) in tensor_var for op, ni, ti in keys):
                break
        else:
            problems += [f"layer {layer.name!r}: an input is not produced inside the model" for layer, _, _ in pending]
            break
        pending.pop(i)
        if len(node.output_tensors) != 1:
            problems.append(f"layer {layer.name!r} ({type(layer).__name__}) has {len(node.output_tensors)} outputs")
            continue
        var = python_name(layer.name, taken)
        tensor_var[(layer.name, node_index, 0)] = var
        calls.append(LayerCall(layer, type(layer).__name__, layer.name, var,
                               [tensor_var[(op.name, ni, ti)] for op, ni, ti in keys],
                               [tuple(t.shape) for t in node.input_tensors], tuple(node.output_tensors[0].shape)))
    outputs = []
    for t in model.outputs:
        op, ni, ti = _history(t)
        outputs.append(tensor_var.get((op.name, ni, ti), "?"))
    names = list(getattr(model, "output_names", None) or [])
    output_names = names if len(names) == len(model.outputs) else [t.name.split(":")[0] for t in model.outputs]
    return KerasGraph(inputs, calls, outputs, output_names, problems)


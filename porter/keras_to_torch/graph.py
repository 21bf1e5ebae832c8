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
    args: tuple = ()  # a keras.ops call's positional arguments, None where a tensor goes (x + 3.0: (None, 3.0))
    out_vars: list[str] = field(default_factory=list)  # one variable per output tensor (LSTM(return_state): 3)
    out_shapes: list[tuple] = field(default_factory=list)
    # per input: None (no Keras mask), the index among the inputs of the mask tensor Keras hands the layer with it
    # (Keras 3 writes the mask as ops in the graph: Embedding's not_equal(ids, 0)), or -1 (a mask not handed in)
    in_masks: list = field(default_factory=list)
    node: object = None  # the Keras node of the call (which input is MultiHeadAttention's key, its attention_mask)

    def __post_init__(self):
        self.out_vars = self.out_vars or [self.var]
        self.out_shapes = self.out_shapes or [self.out_shape]


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


def _mask_indexes(node) -> list:
    """See LayerCall.in_masks. The mask a layer is handed is its call's ``mask`` argument (Keras 3 writes it
    as ops in the graph: Embedding's not_equal(ids, 0)); a reloaded model's tensors may carry an equal mask
    that is another object, so the argument, not the tensor's own mask, says which input it is."""
    from keras.src.backend.common.masking import get_keras_mask

    inputs = list(node.input_tensors)
    masks = [None if get_keras_mask(t) is None else -1 for t in inputs]
    given = node.arguments.kwargs.get("mask") if hasattr(node, "arguments") else None
    if given is not None and not isinstance(given, (list, tuple)):
        j = next((j for j, t in enumerate(inputs) if t is given), None)
        if j is not None and j != 0:
            masks[0] = j
    return masks


def _history(tensor):
    h = tensor._keras_history
    return h.operation, h.node_index, h.tensor_index


def _inlined(op, k) -> list | None:
    """The layers of a Sequential called once on one tensor (ConvNeXt's stem and downsampling blocks), written
    inline as a chain under their own Keras names; None for any other operation. (After loading, the
    Sequential's layers carry extra nodes of their own, so the chain is read from ``layers``, not nodes.)"""
    nodes = getattr(op, "_inbound_nodes", [])
    if not isinstance(op, k.Sequential) or len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    layers = [layer for layer in op.layers if not isinstance(layer, k.layers.InputLayer)]
    if any(isinstance(layer, k.Model) for layer in layers):
        return None
    return layers


def functional_of(model):
    """The functional graph of ``model``: a Keras 3 Sequential (the most common model on disk, tf_keras .h5
    files included) keeps one as ``_functional`` once its input shape is known; it has no ``operations``."""
    from porter.errors import PorterError
    from porter.process.frameworks import keras

    if not isinstance(model, keras().Sequential):
        return model
    functional = getattr(model, "_functional", None)
    if functional is None:
        raise PorterError(f"the Sequential model {model.name!r} has no input shape, so its layers cannot be traced",
                          hint="build it with keras.Input(shape) as its first layer (or call it once) before saving")
    return functional


def read_graph(model, reserved=()) -> KerasGraph:
    """``reserved``: names model.py defines besides the layers (its helper functions and classes): no layer's
    variable may shadow them (a layer named 'center_crop' beside the center_crop helper)."""
    from porter.process.frameworks import keras

    k = keras()
    model = functional_of(model)
    problems, taken = [], set(reserved)
    tensor_var: dict[tuple, str] = {}
    inputs = []
    for t in model.inputs:
        op, node_index, tensor_index = _history(t)
        var = python_name(t.name.split(":")[0], taken)
        tensor_var[(op.name, node_index, tensor_index)] = var
        inputs.append((t.name.split(":")[0], var, tuple(t.shape), getattr(t.dtype, "name", None) or str(t.dtype)))
    in_graph = {id(n) for ns in getattr(model, "_nodes_by_depth", {}).values() for n in ns}
    pending = []
    for layer in model.operations:  # layers and keras.ops calls (x + 3.0 is an op, not a layer)
        if isinstance(layer, k.layers.InputLayer):
            continue
        if isinstance(layer, k.Model) and _inlined(layer, k) is None:
            problems.append(f"layer {layer.name!r} ({type(layer).__name__}) is a nested model")
            continue
        # only the calls inside this graph: a loaded Sequential's layers also keep nodes of its earlier builds
        nodes = [n for n in layer._inbound_nodes if not in_graph or id(n) in in_graph]
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
        chain = _inlined(layer, k)
        if chain is not None:
            (source,), shape = [tensor_var[(op.name, ni, ti)] for op, ni, ti in keys], tuple(node.input_tensors[0].shape)
            for inner in chain:
                out_shape = tuple(inner.compute_output_shape(shape))
                calls.append(LayerCall(inner, type(inner).__name__, inner.name, python_name(inner.name, taken),
                                       [source], [shape], out_shape))
                source, shape = calls[-1].var, out_shape
            tensor_var[(layer.name, node_index, 0)] = source
            continue
        var = python_name(layer.name, taken)
        # a layer with several outputs (an RNN's return_state): one variable each, the first named after the layer
        out_vars = [var] + [python_name(f"{layer.name}_{i}", taken) for i in range(1, len(node.output_tensors))]
        for i, v in enumerate(out_vars):
            tensor_var[(layer.name, node_index, i)] = v
        is_op = not isinstance(layer, k.layers.Layer)
        args = tuple(None if isinstance(a, k.KerasTensor) else a for a in node.arguments.args) if is_op else ()
        calls.append(LayerCall(layer, ("op." if is_op else "") + type(layer).__name__, layer.name, var,
                               [tensor_var[(op.name, ni, ti)] for op, ni, ti in keys],
                               [tuple(t.shape) for t in node.input_tensors], tuple(node.output_tensors[0].shape), args,
                               out_vars, [tuple(t.shape) for t in node.output_tensors],
                               _mask_indexes(node), node))
    outputs = []
    for t in model.outputs:
        op, ni, ti = _history(t)
        outputs.append(tensor_var.get((op.name, ni, ti), "?"))
    names = list(getattr(model, "output_names", None) or [])
    output_names = names if len(names) == len(model.outputs) else [t.name.split(":")[0] for t in model.outputs]
    return KerasGraph(inputs, calls, outputs, output_names, problems)


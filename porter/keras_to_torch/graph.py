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
    # the torch module's attribute (self.<module>): ``var`` for a layer's first call; a shared layer's later
    # calls (the same Keras layer called again, or a nested model used twice) call the first call's module
    module: str = ""

    def __post_init__(self):
        self.out_vars = self.out_vars or [self.var]
        self.out_shapes = self.out_shapes or [self.out_shape]
        self.module = self.module or self.var


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


def _handed_masks(layer, args, kwargs) -> dict:
    """``kwargs`` with the masks Keras hands ``layer`` called on ``args`` said explicitly, as Layer.__call__ fills them
    in (its step 6: ``mask`` from the one tensor argument, ``<arg>_mask`` from each of several): a node records
    the keyword arguments it was called with, and a mask Keras adds to given ones is not among them."""
    from keras.src import tree
    from keras.src.backend.common.masking import get_keras_mask
    from keras.src.layers.layer import CallSpec

    spec = CallSpec(layer._call_signature, layer._call_context_args, args, dict(kwargs))
    tensors = spec.tensor_arguments_dict
    wanted = {"mask": next(iter(tensors.values()))} if len(tensors) == 1 else \
        {f"{name}_mask": value for name, value in tensors.items()} if len(tensors) > 1 else {}
    kwargs = dict(kwargs)
    for name, value in wanted.items():
        if name in spec.argument_names and spec.arguments_dict[name] is None:
            mask = tree.map_structure(get_keras_mask, value)
            if any(m is not None for m in tree.flatten(mask)):
                kwargs[name] = mask
    return kwargs


def _subclassed(name: str, layer) -> str:
    return (f"layer {name!r} ({type(layer).__name__}) is a nested model that is not functional: a subclassed "
            f"keras.Model whose call() is Python code, with no graph of layers to write (model.export('DIR') saves "
            "its traced graph, which converts through ONNX)")


def _history(tensor):
    h = tensor._keras_history
    return h.operation, h.node_index, h.tensor_index


def _key(tensor) -> tuple:
    op, node_index, tensor_index = _history(tensor)
    return id(op), node_index, tensor_index


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
    variable may shadow them (a layer named 'center_crop' beside the center_crop helper).

    A nested model (a functional model or Sequential used as a layer: a keras.applications backbone, an
    encoder, ConvNeXt's stem), at any depth, is written inline: its layers become calls of the outer graph,
    named ``<model>/<layer>``, fed the variables the outer call hands it. A layer called more than once (a
    shared layer, or every layer of a nested model used twice) is one torch module, called at each call site
    with its own output variable, so its weights are shared and their gradients add up as in Keras."""
    from porter.process.frameworks import keras

    model = functional_of(model)
    taken = set(reserved)
    inputs = []
    for t in model.inputs:
        name = t.name.split(":")[0]
        inputs.append((name, python_name(name, taken), tuple(t.shape), getattr(t.dtype, "name", None) or str(t.dtype)))
    in_vars = [var for _, var, _, _ in inputs]
    reader = _Reader(keras(), set(taken))
    outputs = reader.walk(model, in_vars, "")
    crossing = reader.crossing or any(var in call.inputs for var, (_, start) in reader.masked.items()
                                      for call in reader.calls[start:])
    if crossing:  # a mask crosses a nested model's boundary, which the saved graph does not show: see _Reader.replay
        reader = _Reader(keras(), set(taken))
        fresh = [keras().Input(batch_shape=t.shape, dtype=t.dtype) for t in model.inputs]
        reader.tensor_var.update({_key(t): var for t, var in zip(fresh, in_vars)})
        ends = reader.replay(model, fresh, "")
        outputs = [reader.tensor_var.get(_key(t), "?") if t is not None else "?" for t in ends]
    return KerasGraph(inputs, reader.calls, outputs, keras_output_names(model), reader.problems)


def dict_of(model, side: str) -> dict | None:
    """``model.input`` / ``model.output`` where it is a dict (a model called on a dict, or returning one), else None
    (a Sequential never called has neither: Keras raises)."""
    try:
        struct = getattr(model, side)
    except (AttributeError, ValueError):
        return None
    return struct if isinstance(struct, dict) else None


def keras_inputs(model) -> tuple[list[str], list]:
    """(names, tensors) of a Keras model's inputs: a dict's keys and values where it is called on a dict, else its
    input layers' names and ``model.inputs``."""
    by_key = dict_of(model, "input")
    if by_key is not None:
        return list(by_key), list(by_key.values())
    return [t.name.split(":")[0] for t in model.inputs], list(model.inputs)


def keras_output_names(model) -> list[str]:
    """The names of a Keras model's outputs, as the Keras runner and a written model.py both give them: a dict's
    keys, else its output layers' names (``model.output_names``), a repeated one numbered in order (Bidirectional(merge_mode=None)
    puts the forward and the backward output of one layer 'bi' among them: 'bi', 'bi_1')."""
    outputs = dict_of(model, "output")
    if outputs is not None:  # a dict of outputs: its keys, in model.outputs' order (the keys sorted)
        key_of = {id(t): k for k, t in outputs.items()}
        return [key_of[id(t)] for t in model.outputs]
    names = list(getattr(model, "output_names", None) or [])
    names = [str(n) for n in names] if len(names) == len(model.outputs) else [t.name.split(":")[0] for t in model.outputs]
    taken, unique = set(names), []
    for name in names:
        if name in unique:
            i = 1
            while f"{name}_{i}" in taken:
                i += 1
            name = f"{name}_{i}"
            taken.add(name)
        unique.append(name)
    return unique


class _Reader:
    """The calls of a functional graph and of the models nested in it, in graph order."""

    def __init__(self, k, taken: set):
        self.k, self.taken = k, taken
        self.calls: list[LayerCall] = []
        self.problems: list[str] = []
        self.modules: dict[int, str] = {}  # id(Keras layer) -> its module's attribute (its first call's variable)
        self.count: dict[int, int] = {}  # id(Keras layer) -> calls written so far
        self.masked: dict[str, tuple] = {}  # output variable of a nested model that carries a mask -> (model, call index)
        self.crossing = False  # a Keras mask is handed into a nested model: its graph is to be replayed
        self.tensor_var: dict[tuple, str] = {}  # replay: _key(re-traced tensor) -> its variable

    def walk(self, model, in_vars: list, prefix: str) -> list:
        """Append the calls of functional ``model`` fed ``in_vars``; the variables of its outputs ("?": none)."""
        k = self.k
        tensor_var = {_key(t): var for t, var in zip(model.inputs, in_vars)}
        in_graph = {id(n) for ns in getattr(model, "_nodes_by_depth", {}).values() for n in ns}
        pending = []
        for layer in model.operations:  # layers and keras.ops calls (x + 3.0 is an op, not a layer)
            if isinstance(layer, k.layers.InputLayer):
                continue
            # only the calls inside this graph: a loaded Sequential's layers also keep nodes of its earlier builds
            nodes = [n for n in layer._inbound_nodes if not in_graph or id(n) in in_graph]
            pending += [(layer, layer._inbound_nodes.index(n), n) for n in nodes]
        while pending:  # graph order: model.layers order, each call once its inputs exist
            for i, (layer, node_index, node) in enumerate(pending):
                if all(_key(t) in tensor_var for t in node.input_tensors):
                    break
            else:
                self.problems += [f"layer {prefix + layer.name!r}: an input is not produced inside the model"
                                  for layer, _, _ in pending]
                break
            pending.pop(i)
            sources = [tensor_var[_key(t)] for t in node.input_tensors]
            if isinstance(layer, k.Model):
                outs = self._nested(layer, node, sources, prefix)
            else:
                outs = self._call(layer, node, sources, prefix)
            for j, var in enumerate(outs):
                tensor_var[(id(layer), node_index, j)] = var
        return [tensor_var.get(_key(t), "?") for t in model.outputs]

    def _nested(self, layer, node, sources: list, prefix: str) -> list:
        from porter.errors import PorterError

        name = prefix + layer.name
        try:
            inner = functional_of(layer)
        except PorterError as exc:
            self.problems.append(f"layer {name!r} ({type(layer).__name__}) is a nested model that cannot be read: {exc}")
            return []
        if not hasattr(inner, "operations") or not hasattr(inner, "inputs"):
            self.problems.append(_subclassed(name, layer))
            return []
        if any(m is not None for m in _mask_indexes(node)):  # Keras hands it to the inner layers at run time
            self.crossing = True  # read_graph replays the model (replay), which shows it
            self.problems.append(f"layer {name!r} ({type(layer).__name__}): a Keras mask reaches this nested model "
                                 "(Embedding(mask_zero=True) or Masking before it); Keras hands it to the layers "
                                 "inside at run time, which its graph does not show")
            return []
        if len(sources) != len(inner.inputs) or len(node.output_tensors) != len(inner.outputs):
            self.problems.append(f"layer {name!r} ({type(layer).__name__}): a nested model called with "
                                 f"{len(sources)} tensors for its {len(inner.inputs)} inputs")
            return []
        outs = self.walk(inner, sources, name + "/")
        # a mask on a nested model's output (its Embedding(mask_zero=True)) reaches the layers after it at run time,
        # but the outer graph does not show it (their calls get mask=None): a later call that takes it makes
        # read_graph replay the model (replay), which shows it
        from keras.src.backend.common.masking import get_keras_mask

        for t, var in zip(inner.outputs, outs):
            if get_keras_mask(t) is not None:
                self.masked.setdefault(var, (name, len(self.calls)))
        return outs

    def _call(self, layer, node, sources: list, prefix: str) -> list:
        k = self.k
        first = self.modules.get(id(layer))
        n = self.count[id(layer)] = self.count.get(id(layer), 0) + 1
        # a shared layer's later calls: their own variables (<layer>_call2), one module (the first call's)
        var = python_name(layer.name if first is None else f"{layer.name}_call{n}", self.taken)
        self.modules.setdefault(id(layer), var)
        # a layer with several outputs (an RNN's return_state): one variable each, the first named after the layer
        out_vars = [var] + [python_name(f"{layer.name if first is None else var}_{i}", self.taken)
                            for i in range(1, len(node.output_tensors))]
        is_op = not isinstance(layer, k.layers.Layer)
        args = tuple(None if isinstance(a, k.KerasTensor) else a for a in node.arguments.args) if is_op else ()
        self.calls.append(LayerCall(layer, ("op." if is_op else "") + type(layer).__name__, prefix + layer.name, var,
                                    sources, [tuple(t.shape) for t in node.input_tensors],
                                    tuple(node.output_tensors[0].shape), args, out_vars,
                                    [tuple(t.shape) for t in node.output_tensors], _mask_indexes(node), node,
                                    module=first or var))
        return out_vars

    # -- replay: the graph as Keras runs it, for a mask that crosses a nested model's boundary -----------------

    def replay(self, model, in_tensors: list, prefix: str) -> list:
        """Call every layer of functional ``model`` again on symbolic tensors standing for its inputs, and read those
        calls; the tensors of its outputs (None: not produced).

        A Keras mask that crosses a nested model's boundary (an Embedding(mask_zero=True) outside feeding an LSTM
        inside, or inside feeding one outside) is handed on at run time, where the saved graph has no trace of it:
        the nested model's call sets its mask on the inner inputs (Functional.call) and every layer called on a
        tensor that carries a mask gets it (Layer.__call__), its output carrying the mask its compute_mask gives.
        Replayed as Keras' Functional runs its graph (each node's recorded arguments filled in, the layer called;
        a nested model's mask set on its inputs, its own graph replayed inline), the calls on symbolic tensors go
        through the same Layer.__call__, so the masks travel as they do at run time and their computations
        (not_equal(ids, 0)...) become calls of the graph. The replayed calls are new nodes of the same layers, so
        weights and names are the model's."""
        k = self.k
        new = {id(t): n for t, n in zip(model.inputs, in_tensors)}  # id(tensor of the saved graph) -> re-traced one
        in_graph = {id(n) for ns in getattr(model, "_nodes_by_depth", {}).values() for n in ns}
        pending = [(layer, n) for layer in model.operations if not isinstance(layer, k.layers.InputLayer)
                   for n in layer._inbound_nodes if not in_graph or id(n) in in_graph]
        while pending:
            for i, (layer, node) in enumerate(pending):
                if all(id(t) in new for t in node.input_tensors):
                    break
            else:
                self.problems += [f"layer {prefix + layer.name!r}: an input is not produced inside the model"
                                  for layer, _ in pending]
                break
            pending.pop(i)
            args, kwargs = node.arguments.fill_in(new)
            if isinstance(layer, k.Model):
                outs = self._replay_nested(layer, args, kwargs, prefix)
            else:
                outs = self._replay_call(layer, args, kwargs, prefix)
            if outs is None or len(outs) != len(node.output_tensors):
                return [None] * len(model.outputs)
            new.update({id(t): n for t, n in zip(node.output_tensors, outs)})
        return [new.get(id(t)) for t in model.outputs]

    def _replay_call(self, layer, args, kwargs, prefix: str):
        from keras.src import tree

        try:
            if isinstance(layer, self.k.layers.Layer):
                kwargs = _handed_masks(layer, args, kwargs)
            outs = tree.flatten(layer(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 (a layer Keras cannot call again on symbolic tensors)
            self.problems.append(f"layer {prefix + layer.name!r} ({type(layer).__name__}): Keras could not trace its "
                                 f"call again to follow a mask across a nested model ({type(exc).__name__}: {exc})")
            return None
        h = outs[0]._keras_history
        node = h.operation._inbound_nodes[h.node_index]
        out_vars = self._call(layer, node, [self._var(t, prefix) for t in node.input_tensors], prefix)
        self.tensor_var.update({_key(t): v for t, v in zip(node.output_tensors, out_vars)})
        return list(node.output_tensors)

    def _var(self, tensor, prefix: str) -> str:
        """The variable of a re-traced tensor; a mask Keras computed on the way (Embedding's not_equal(ids, 0), a
        layer's compute_mask) is read as calls of its ops first."""
        key = _key(tensor)
        if key not in self.tensor_var:
            op, node_index, _ = _history(tensor)
            node = op._inbound_nodes[node_index]
            if isinstance(op, self.k.layers.InputLayer) or not node.input_tensors:
                self.problems.append(f"a tensor made by {op.name!r} is not produced inside the model")
                return "?"
            out_vars = self._call(op, node, [self._var(t, prefix) for t in node.input_tensors], prefix)
            self.tensor_var.update({_key(t): v for t, v in zip(node.output_tensors, out_vars)})
        return self.tensor_var[key]

    def _replay_nested(self, layer, args, kwargs, prefix: str):
        from keras.src import tree
        from keras.src.backend.common.masking import set_keras_mask

        from porter.errors import PorterError

        name = prefix + layer.name
        try:
            inner = functional_of(layer)
        except PorterError as exc:
            self.problems.append(f"layer {name!r} ({type(layer).__name__}) is a nested model that cannot be read: {exc}")
            return None
        if not hasattr(inner, "operations") or not hasattr(inner, "inputs"):
            self.problems.append(_subclassed(name, layer))
            return None
        others = {key: v for key, v in kwargs.items() if key not in ("mask", "training") and v is not None}
        inputs = args[0] if len(args) == 1 else None
        if others or isinstance(inputs, dict) or inputs is None:
            self.problems.append(f"layer {name!r} ({type(layer).__name__}): a nested model called with arguments "
                                 "besides its inputs and their mask, or with its inputs as a dict")
            return None
        inputs = tree.flatten(inputs)
        if len(inputs) != len(inner.inputs):
            self.problems.append(f"layer {name!r} ({type(layer).__name__}): a nested model called with "
                                 f"{len(inputs)} tensors for its {len(inner.inputs)} inputs")
            return None
        masks = kwargs.get("mask")
        if masks is not None:  # as Functional.call: the mask it is handed is set on its inputs
            masks = tree.flatten(masks) if isinstance(masks, (list, tuple)) else [masks]
            for x, m in zip(inputs, masks):
                if m is not None:
                    set_keras_mask(x, m)
        outs = self.replay(inner, inputs, name + "/")
        return None if any(t is None for t in outs) else outs

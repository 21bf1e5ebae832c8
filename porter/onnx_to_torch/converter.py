"""ONNX ModelProto -> torch.fx.GraphModule: check everything first, then convert node by node."""

from __future__ import annotations

import keyword
import operator
import os
import re
from collections import Counter
from pathlib import Path

import onnx
import torch
import torch.fx as fx
from onnx import helper

from porter.errors import CannotConvertYet, PorterError, UnsupportedModelError
from porter.onnx_to_torch import context, ops  # noqa: F401  (ops registers the converters)
from porter.onnx_to_torch.context import SymShape, materialize
from porter.onnx_to_torch.ops.symbolic import SYMBOLIC
from porter.onnx_to_torch.registry import ONNX_DOMAINS, lookup
from porter.onnx_to_torch.tensors import from_proto, torch_dtype

CONVERTER_NAME = "porter's ONNX->torch converter"


def onnx_to_torch(model_or_path) -> fx.GraphModule:
    """Convert an ONNX model (a path or an ``onnx.ModelProto``) into a torch.fx.GraphModule."""
    model = _load(model_or_path)
    opsets = _opsets(model)
    check_model(model, opsets)
    return _Conversion(_with_inferred_types(model), opsets).run()


def _load(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise PorterError(f"expected a path or an onnx.ModelProto, got {type(model_or_path).__name__}")
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
        raise PorterError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a damaged file
        raise PorterError(f"cannot read ONNX file {path}: {exc}",
                          hint="the file is corrupt or not an ONNX model") from exc
    from porter.routes.onnx_graph import load_external_data

    load_external_data(model, Path(path))  # each location checked to be a file in the model's folder
    if not model.graph.output:
        raise PorterError(f"cannot read ONNX file {path}: it holds no graph outputs",
                          hint="the file is corrupt or not an ONNX model")
    return model


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    opsets = {("" if o.domain in ONNX_DOMAINS else o.domain): o.version for o in model.opset_import}
    opsets.setdefault("", onnx.defs.onnx_opset_version())
    return opsets


def attribute_value(attr: onnx.AttributeProto):
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return from_proto(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def check_model(model: onnx.ModelProto, opsets: dict[str, int]) -> None:
    """Raise one UnsupportedModelError listing every op and attribute porter cannot convert."""
    missing: Counter = Counter()
    problems: list[str] = []
    _check_graph(model.graph, opsets, missing, problems)
    for value in [*model.graph.input, *model.graph.output]:
        if not _supported_value_type(value.type):
            problems.append(f"graph input/output {value.name!r}: only tensors and sequences/optionals of "
                            f"them are supported, not {value.type.WhichOneof('value')}")
    if not missing and not problems:
        return
    opset = opsets[""]
    foreign = {op: n for op, n in missing.items() if "." not in op and not onnx.defs.has(op)}
    if foreign:  # an exporter's leftovers (tf2onnx writes TF ops it cannot convert as they are)
        listed = ", ".join(f"{op} x{count}" for op, count in sorted(foreign.items()))
        raise UnsupportedModelError(
            f"the graph holds ops that ONNX does not define: {listed}",
            problems=[f"also not supported by {CONVERTER_NAME}: {op} x{n}" for op, n in sorted(missing.items()) if op not in foreign],
            hint="the exporter that wrote this file left them unconverted; re-export the model without them")
    if missing:
        listed = ", ".join(f"{op} x{count}" for op, count in sorted(missing.items()))
        message = f"ops not supported by {CONVERTER_NAME} (opset {opset}): {listed}"
    else:
        message = f"{len(problems)} unsupported attribute value(s) or types for {CONVERTER_NAME} (opset {opset})"
    raise CannotConvertYet(message, problems=problems,
                           hint="export the model with these ops decomposed, or add a converter "
                                "in porter/onnx_to_torch/ops/")


def _supported_value_type(type_proto) -> bool:
    """Tensors, and sequences/optionals of them (Python lists and None in the converted module)."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return True
    if kind == "sequence_type":
        return _supported_value_type(type_proto.sequence_type.elem_type)
    if kind == "optional_type":
        return _supported_value_type(type_proto.optional_type.elem_type)
    return False


def _check_graph(graph: onnx.GraphProto, opsets: dict[str, int], missing: Counter, problems: list[str]) -> None:
    """Tally the ops and attributes of ``graph`` and of its subgraphs (Loop/Scan/If bodies)."""
    for index, node in enumerate(graph.node):
        domain = "" if node.domain in ONNX_DOMAINS else node.domain
        converter = lookup(domain, node.op_type, opsets.get(domain, 1))
        if converter is None:
            missing[node.op_type if not domain else f"{domain}.{node.op_type}"] += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _check_graph(attr.g, opsets, missing, problems)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _check_graph(g, opsets, missing, problems)
            if converter is None:
                continue
            why = converter.attribute_problem(attr.name, attribute_value(attr))
            if why:
                problems.append(f"node {node.name or f'#{index}'!r} ({node.op_type}): {why}")


def free_names(graph: onnx.GraphProto) -> list[str]:
    """Names ``graph`` (or a subgraph inside it) reads from an enclosing graph, in order of first use."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    found: list[str] = []

    def use(name):
        if name not in defined and name not in found:
            found.append(name)

    for node in graph.node:
        for name in node.input:
            use(name)
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for g in subgraphs:
                for name in free_names(g):
                    use(name)
        defined.update(node.output)
    for out in graph.output:
        use(out.name)
    return found


def _with_inferred_types(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is a help for rank/dtype look-ups, not a requirement
        return model


def _value_types(graph: onnx.GraphProto) -> dict:
    types = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        dtype = torch_dtype(tensor_type.elem_type)
        if dtype is None or not tensor_type.HasField("shape"):
            continue
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        types[info.name] = (dtype, shape)
    return types


def sanitize(name: str, fallback: str = "value") -> str:
    ident = re.sub(r"\W+", "_", name).strip("_") or fallback
    if ident[0].isdigit():
        ident = f"{fallback}_{ident}"
    if keyword.iskeyword(ident) or ident == "self":
        ident += "_"
    return ident


class _Tracer(fx.Tracer):
    """Records torch calls made on proxies; a constant tensor argument becomes a named attribute."""

    def __init__(self, conversion: "_Conversion"):
        super().__init__()
        self.conversion = conversion

    def create_arg(self, a):
        if isinstance(a, torch.Tensor):
            return self.conversion.constant_node(a)
        return super().create_arg(a)


class _Conversion:
    def __init__(self, model: onnx.ModelProto, opsets: dict[str, int],
                 graph: onnx.GraphProto | None = None, types: dict | None = None):
        self.model = model
        self.graph_proto = graph if graph is not None else model.graph
        self.opsets = opsets
        self.root = torch.nn.Module()
        self.tracer = _Tracer(self)
        self.tracer.root = self.root
        self.graph = fx.Graph(tracer_cls=_Tracer)
        self.tracer.graph = self.graph
        self.types = {**(types or {}), **_value_types(self.graph_proto)}
        self.env: dict[str, object] = {}
        self.const_names: dict[int, str] = {}  # id(tensor) -> the ONNX name it came from
        self.const_nodes: dict[int, fx.Node] = {}
        self.parameter_ids: set[int] = set()
        self.attr_names: set[str] = set()
        self.node_label = "graph"

    # -- naming -------------------------------------------------------------------------
    def _unique_attr(self, base: str) -> str:
        name, i = base, 1
        while name in self.attr_names or hasattr(self.root, name):
            i += 1
            name = f"{base}_{i}"
        self.attr_names.add(name)
        return name

    def add_module(self, mod: torch.nn.Module, named_after: torch.Tensor | None = None) -> str:
        label = self.node_label
        weight_name = self.const_names.get(id(named_after)) if named_after is not None else None
        if weight_name and re.search(r"[._/]weight$", weight_name):
            label = re.sub(r"[._/]weight$", "", weight_name)
        name = self._unique_attr(sanitize(label.lower(), "layer"))
        self.root.add_module(name, mod.eval())
        return name

    def constant_node(self, tensor: torch.Tensor) -> fx.Node:
        key = id(tensor)
        if key not in self.const_nodes:
            name = self._unique_attr(sanitize(self.const_names.get(key, "const"), "const"))
            if key in self.parameter_ids:
                self.root.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))
            else:
                self.root.register_buffer(name, tensor)
            self.const_nodes[key] = self.graph.get_attr(name)
            self._keep_alive = getattr(self, "_keep_alive", []) + [tensor]  # ids must stay unique
        return self.const_nodes[key]

    def _bind(self, name: str, value) -> None:
        if not name:
            return
        if isinstance(value, SymShape):
            value = value.simplify()
        if isinstance(value, torch.Tensor):
            self.const_names.setdefault(id(value), name)
        elif isinstance(value, fx.Proxy):
            meta = self.types.get(name)
            value.node.meta["onnx_name"] = name
            if meta is not None:
                value.node.meta["onnx_type"] = (meta[0], len(meta[1]))
                value.node.meta["onnx_shape"] = meta[1]
        self.env[name] = value

    # -- conversion ---------------------------------------------------------------------
    def run(self, outer_constants: dict | None = None, outer_inputs: tuple[str, ...] = (),
            subgraph: bool = False) -> fx.GraphModule:
        """Convert the graph; a subgraph also gets the outer tensors it reads: constants as its own
        attributes, run-time ones as inputs after its own, and it always returns a tuple."""
        graph = self.graph_proto
        for name, tensor in (outer_constants or {}).items():
            self._bind(name, tensor)
        for init in graph.initializer:
            tensor = from_proto(init)
            if tensor.is_floating_point():
                self.parameter_ids.add(id(tensor))
            self._bind(init.name, tensor)
        input_names = [i.name for i in graph.input if i.name not in self.env or subgraph]
        token = context._active.set(self)
        try:
            for name in [*input_names, *outer_inputs]:
                placeholder = self.tracer.create_proxy("placeholder", sanitize(name, "input"), (), {})
                self._bind(name, placeholder)
            for index, node in enumerate(graph.node):
                self._convert_node(index, node)
            outputs = [self._output_node(o.name) for o in graph.output]
            output_types = [self._type_of(self.env[o.name]) for o in graph.output] if subgraph else None
        finally:
            context._active.reset(token)
        self.graph.output(tuple(outputs) if subgraph or len(outputs) != 1 else outputs[0])
        self._fuse_linear_bias()
        self._drop_unused_nodes()
        self.graph.lint()
        module = fx.GraphModule(self.root, self.graph, class_name="OnnxModule")
        module.onnx_input_names = input_names
        module.onnx_output_names = [o.name for o in graph.output]
        if subgraph:
            module.porter_output_types = output_types
        return module.eval()

    @staticmethod
    def _type_of(value):
        """(dtype, rank) of a converted value, or None when unknown."""
        try:
            return context.dtype(value), context.rank(value)
        except Exception:  # unknown: the caller goes without
            return None

    # -- subgraphs (Loop / Scan / If bodies) ----------------------------------------------
    def convert_subgraph(self, graph: onnx.GraphProto, input_types: list | None = None):
        """``graph`` as a GraphModule taking its own inputs, then the run-time outer tensors it reads;
        returns it with those outer values (constants it reads become its own attributes)."""
        constants, dynamic = {}, []
        for name in free_names(graph):
            if name not in self.env:
                raise UnsupportedModelError(f"a subgraph of node {self.node_label!r} reads {name!r}, "
                                            "which is not defined before it")
            value = self.env[name]
            if isinstance(value, SymShape):
                value = value.simplify()
            if isinstance(value, torch.Tensor):
                constants[name] = value
            else:
                dynamic.append(name)
        types = dict(self.types)
        for name in dynamic:
            known = self._type_of(self.env[name]) if name not in types else None
            if known is not None:
                types[name] = (known[0], [None] * known[1])
        for info, known in zip(graph.input, input_types or []):
            if known is not None:
                types[info.name] = known
        sub = _Conversion(self.model, self.opsets, graph=graph, types=types)
        sub.const_names.update(self.const_names)
        sub.parameter_ids.update({id(t) for t in constants.values()} & self.parameter_ids)
        sub._keep_alive = list(constants.values())
        node, label = self.node, self.node_label
        try:
            gm = sub.run(constants, tuple(dynamic), subgraph=True)
        finally:
            self.node, self.node_label = node, label
        return gm, [materialize(self.env[name]) for name in dynamic]

    def add_submodule(self, gm: fx.GraphModule, suffix: str) -> fx.Proxy:
        """``gm`` as a named child of the result, read by a get_attr node (passed to a runtime helper)."""
        name = self._unique_attr(sanitize(f"{self.node_label}_{suffix}".lower(), "subgraph"))
        self.root.add_module(name, gm)
        proxy = self.tracer.create_proxy("get_attr", name, (), {})
        proxy.node.meta["porter_fake"] = None  # no meta-tensor stand-in for a module
        return proxy

    def inline_subgraph(self, graph: onnx.GraphProto) -> list:
        """Convert ``graph``'s nodes into this graph (an If whose condition is a constant)."""
        env, node, label = dict(self.env), self.node, self.node_label
        try:
            for init in graph.initializer:
                tensor = from_proto(init)
                if tensor.is_floating_point():
                    self.parameter_ids.add(id(tensor))
                self._bind(init.name, tensor)
            for index, inner in enumerate(graph.node):
                self._convert_node(index, inner)
            return [self.env[o.name] for o in graph.output]
        finally:
            self.env, self.node, self.node_label = env, node, label

    def _fuse_linear_bias(self) -> None:
        """A Keras Dense reaches ONNX as MatMul + Add (tf2onnx keeps the bias apart): the Add's
        constant becomes the nn.Linear's bias, so the layer reads as one nn.Linear(bias=True)."""
        for node in list(self.graph.nodes):
            if node.op != "call_module" or len(node.users) != 1:
                continue
            layer = getattr(self.root, node.target)
            if not isinstance(layer, torch.nn.Linear) or layer.bias is not None:
                continue
            (add,) = node.users
            if add.op != "call_function" or add.target not in (operator.add, torch.add) or len(add.args) != 2 or add.kwargs:
                continue
            other = add.args[1] if add.args[0] is node else add.args[0]
            if not isinstance(other, fx.Node) or other.op != "get_attr" or other is node:
                continue
            value = getattr(self.root, other.target)
            # only a 1-D bias of out_features: anything of higher rank would broadcast the output up
            if value.dim() != 1 or value.shape[0] != layer.out_features or value.dtype != layer.weight.dtype:
                continue
            layer.bias = torch.nn.Parameter(value.detach().clone())
            add.replace_all_uses_with(node)
            self.graph.erase_node(add)

    def _drop_unused_nodes(self) -> None:
        # Converters may compute outputs nobody reads (e.g. LayerNormalization's mean);
        # every op they emit is pure, so unread nodes can go.
        for node in reversed(list(self.graph.nodes)):
            if node.op not in ("placeholder", "output") and not node.users:
                self.graph.erase_node(node)
        used = {n.target for n in self.graph.nodes if n.op in ("get_attr", "call_module")}
        for name in list(self.attr_names - used):
            delattr(self.root, name)

    def _output_node(self, name: str):
        value = materialize(self.env[name])
        if isinstance(value, fx.Proxy):
            return value.node
        return self.tracer.create_arg(value)

    def _convert_node(self, index: int, node: onnx.NodeProto) -> None:
        domain = "" if node.domain in ONNX_DOMAINS else node.domain
        converter = lookup(domain, node.op_type, self.opsets.get(domain, 1))
        self.node_label = node.name or f"{node.op_type}_{index}"
        self.node = node
        inputs = [self.env[name] if name else None for name in node.input]
        attrs = {a.name: attribute_value(a) for a in node.attribute}
        result = NotImplemented
        if any(isinstance(v, SymShape) for v in inputs) and node.op_type in SYMBOLIC:
            result = SYMBOLIC[node.op_type](*inputs, **attrs)
        if result is NotImplemented:
            inputs = [v if i in converter.shape_inputs else materialize(v) for i, v in enumerate(inputs)]
            try:
                result = converter.fn(*inputs, **attrs)
            except PorterError:
                raise
            except Exception as exc:
                raise UnsupportedModelError(
                    f"cannot convert node {self.node_label!r} ({node.op_type}): {type(exc).__name__}: {exc}") from exc
        if isinstance(result, fx.Proxy) and len(node.output) > 1:  # e.g. torch.split, torch.topk
            result = [result[i] for i in range(len(node.output))]
        results = result if isinstance(result, (tuple, list)) else (result,)
        for name, value in zip(node.output, results):
            self._bind(name, value)

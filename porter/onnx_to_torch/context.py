"""What a converter may ask of the conversion in progress.

Values flowing between converters are one of:
  * ``torch.Tensor`` - a constant (initializer, Constant node, or folded result);
  * ``torch.fx.Proxy`` - a tensor known only at run time;
  * ``SymShape`` - an int64 tensor of run-time sizes (from ``Shape``), kept as a
    list of Python ints and symbolic sizes so that Reshape/Expand/... receive real
    sizes and the module stays traceable by torch.export with dynamic shapes;
  * ``None`` - an omitted optional input.
"""

from __future__ import annotations

import contextvars
import copy
import math

import torch
import torch.fx as fx

from porter.errors import UnsupportedModelError

_active = contextvars.ContextVar("porter_onnx_conversion")


def current():
    return _active.get()


class SymShape:
    """An int64 tensor (1-D, or 0-D when ``scalar``) whose items may be symbolic sizes."""

    def __init__(self, items, scalar: bool = False):
        self.items = list(items)
        self.scalar = scalar
        assert not scalar or len(self.items) == 1

    def __repr__(self):
        return f"SymShape({self.items}, scalar={self.scalar})"

    def simplify(self):
        """A constant tensor when no item is symbolic any more."""
        if any(isinstance(i, fx.Proxy) for i in self.items):
            return self
        t = torch.tensor(self.items, dtype=torch.int64)
        return t.reshape(()) if self.scalar else t


def is_proxy(v) -> bool:
    return isinstance(v, fx.Proxy)


def is_const(v) -> bool:
    return isinstance(v, torch.Tensor)


def _has_proxy(obj) -> bool:
    if isinstance(obj, fx.Proxy):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_has_proxy(o) for o in obj)
    if isinstance(obj, dict):
        return any(_has_proxy(o) for o in obj.values())
    if isinstance(obj, slice):
        return _has_proxy([obj.start, obj.stop, obj.step])
    return False


def emit(fn, *args, **kwargs):
    """Call ``fn`` now when every argument is known, else record it as a graph node."""
    if _has_proxy(args) or _has_proxy(kwargs):
        # "<fn>_out", not fx's default "<fn>": generated code must not shadow the helper's name.
        name = f"{fn.__name__}_out" if fn.__module__.endswith("runtime") else None
        return current().tracer.create_proxy("call_function", fn, args, kwargs, name=name)
    return fn(*args, **kwargs)


def method(obj, name: str, *args, **kwargs):
    """``obj.name(*args)``, recorded as a node when anything is a run-time value."""
    if _has_proxy(obj) or _has_proxy(args) or _has_proxy(kwargs):
        return current().tracer.create_proxy("call_method", name, (obj, *args), kwargs)
    return getattr(obj, name)(*args, **kwargs)


def module(mod: torch.nn.Module, *args, named_after: torch.Tensor | None = None):
    """Run a native torch module on ``args``: it becomes a named submodule of the result,
    named after the initializer ``named_after`` ("conv1.weight" -> "conv1") or else the node."""
    if not _has_proxy(args):
        with torch.no_grad():
            return mod(*args)
    conversion = current()
    name = conversion.add_module(mod, named_after)
    return conversion.tracer.create_proxy("call_module", name, args, {})


def _fake(node: fx.Node):
    """A meta-device stand-in for ``node``'s value: right dtype and rank, sizes guessed where dynamic."""
    if "porter_fake" in node.meta:
        return node.meta["porter_fake"]
    conversion = current()
    if "onnx_type" in node.meta:
        dtype_, rank_ = node.meta["onnx_type"]
        shape = node.meta.get("onnx_shape") or [None] * rank_
        fake = torch.empty([1 if d is None else d for d in shape], dtype=dtype_, device="meta")
    elif node.op == "get_attr":
        fake = getattr(conversion.root, node.target).to("meta")
    else:
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), _fake)
        if node.op == "call_function":
            fake = node.target(*args, **kwargs)
        elif node.op == "call_method":
            fake = getattr(args[0], node.target)(*args[1:], **kwargs)
        elif node.op == "call_module":
            fake = copy.deepcopy(getattr(conversion.root, node.target)).to("meta")(*args, **kwargs)
        else:
            raise LookupError(node.name)
    node.meta["porter_fake"] = fake
    return fake


def _meta(x):
    meta = x.node.meta.get("onnx_type")
    if meta is None:
        # A value a converter made on its way (not an ONNX tensor): run its ops on meta tensors.
        try:
            fake = _fake(x.node)
            if isinstance(fake, torch.Tensor):
                meta = x.node.meta["onnx_type"] = (fake.dtype, fake.dim())
        except Exception:  # an op meta tensors cannot run: report the value as unknown below
            meta = None
    if meta is None:
        raise UnsupportedModelError(
            f"the rank/type of {x.node.meta.get('onnx_name', x.node.name)!r} is unknown",
            hint="run onnx.shape_inference.infer_shapes on the model, or give the graph inputs full types")
    return meta


def rank(x) -> int:
    if isinstance(x, SymShape):
        return 0 if x.scalar else 1
    return x.dim() if is_const(x) else _meta(x)[1]


def dtype(x) -> torch.dtype:
    if isinstance(x, SymShape):
        return torch.int64
    return x.dtype if is_const(x) else _meta(x)[0]


def static_shape(x) -> list:
    """Dims known when converting: ints, or None where the dim is dynamic."""
    if is_const(x):
        return list(x.shape)
    if isinstance(x, SymShape):
        return [] if x.scalar else [len(x.items)]
    shape = x.node.meta.get("onnx_shape")
    if shape is None:
        return [None] * rank(x)
    return list(shape)


def ints(v) -> list | None:
    """A shape-like input as a list of sizes (ints, or symbolic sizes at run time)."""
    if v is None:
        return None
    if isinstance(v, SymShape):
        return list(v.items)
    if is_const(v):
        return [int(i) for i in v.reshape(-1).tolist()]
    return method(method(v, "reshape", -1), "tolist")


def scalar(v):
    """A 0-D/1-element input as a Python number (or a run-time one)."""
    if v is None:
        return None
    if isinstance(v, SymShape):
        return v.items[0]
    if is_const(v):
        return v.reshape(-1)[0].item()
    return method(v, "item")


def materialize(v):
    """Turn a SymShape into a tensor: a constant, or a run-time ``torch.tensor`` node."""
    if not isinstance(v, SymShape):
        return v
    simple = v.simplify()
    if not isinstance(simple, SymShape):
        return simple
    t = emit(torch.tensor, simple.items, dtype=torch.int64)
    return emit(torch.reshape, t, ()) if v.scalar else t


def as_number(v):
    """A 0-D constant as a Python scalar (reads better in the generated code); others unchanged."""
    if is_const(v) and v.dim() == 0 and not v.is_complex():
        return v.item()
    return v


def prod(items):
    return math.prod(items) if not _has_proxy(items) else _proxy_prod(items)


def _proxy_prod(items):
    out = 1
    for i in items:
        out = out * i
    return out


def dynamic_dims(x) -> list:
    """Sizes of a run-time tensor: ints where ONNX knows them, ``x.size(i)`` nodes elsewhere."""
    return [d if d is not None else method(x, "size", i) for i, d in enumerate(static_shape(x))]


def output_count() -> int:
    """How many outputs the ONNX node being converted declares."""
    return len(current().node.output)


def has_proxy(obj) -> bool:
    """Whether ``obj`` (or anything in it) is a run-time value."""
    return _has_proxy(obj)


def subgraph(graph, input_types: list | None = None):
    """Convert an ONNX subgraph (a Loop/Scan body, an If branch) on its own: returns the GraphModule,
    which takes the graph's inputs and then the run-time outer tensors it reads, and those outer values.
    ``input_types``: (dtype, shape) per graph input where the graph does not declare it."""
    return current().convert_subgraph(graph, input_types)


def submodule(gm, suffix: str):
    """``gm`` as a named child of the result; returns the run-time value to hand to a runtime helper."""
    return current().add_submodule(gm, suffix)


def inline(graph) -> list:
    """Convert a subgraph's nodes into the graph being built; returns its output values."""
    return current().inline_subgraph(graph)

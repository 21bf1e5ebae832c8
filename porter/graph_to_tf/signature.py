"""What the ExportedProgram's signature says about the TF signature: user inputs by name with
their dynamic dims, user outputs named from the output pytree, and the weights to lift."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class InputSpec:
    name: str  # the forward's argument name (the placeholder's)
    placeholder: str
    dtype: object  # torch dtype
    shape: tuple  # ints, None for a dynamic dim
    dynamic: dict = field(default_factory=dict)  # axis -> "s0 in [2, 1024]"
    constant: object = None  # value of a non-tensor input torch.export baked in
    is_tensor: bool = True

    def tf_spec(self):
        import tensorflow as tf

        from porter.graph_to_tf.context import tf_dtype

        return tf.TensorSpec(self.shape, tf_dtype(self.dtype), name=self.name)


def user_inputs(program) -> list[InputSpec]:
    from torch.export.graph_signature import InputKind, TensorArgument

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        if not isinstance(spec.arg, TensorArgument):
            name = getattr(spec.arg, "name", None) or f"const_{len(specs)}"
            specs.append(InputSpec(name, name, None, (), constant=getattr(spec.arg, "value", None), is_tensor=False))
            continue
        val = placeholders[spec.arg.name].meta["val"]
        shape, dynamic = [], {}
        for i, d in enumerate(val.shape):
            fixed = _fixed(program, d)
            if fixed is not None:
                shape.append(fixed)
                continue
            shape.append(None)
            dynamic[i] = _describe(program, d)
        specs.append(InputSpec(spec.arg.name, spec.arg.name, val.dtype, tuple(shape), dynamic))
    return specs


def _fixed(program, d) -> int | None:
    """``d``'s one value where the program allows only one: a plain int, a SymInt whose expression torch.export
    specialised to a number (Dim.AUTO on a model that guards on the size: HF MobileNetV2's TF-style padding), or a
    symbol whose range is a single value. Such a dim must be static in the TF signature: the graph computes with
    that value (paddings, reshapes) and would run wrong, not fail, at another size."""
    if isinstance(d, int):
        return d
    expr = d.node.expr
    if getattr(expr, "is_number", False):
        return int(expr)
    bounds = program.range_constraints.get(expr)
    if bounds is not None and bounds.lower == bounds.upper:
        return int(bounds.lower)
    return None


def _describe(program, d) -> str:
    expr = d.node.expr
    bounds = program.range_constraints.get(expr)
    return f"{expr} in [{bounds.lower}, {bounds.upper}]" if bounds is not None else str(expr)


def weights(program) -> dict[str, tuple[str, object, bool]]:
    """placeholder name -> (state-dict key, torch tensor, trainable) for parameters, buffers and lifted constants."""
    from torch.export.graph_signature import InputKind

    out = {}
    for spec in program.graph_signature.input_specs:
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            source = program.state_dict if spec.target in program.state_dict else program.constants
            out[spec.arg.name] = (spec.target, source[spec.target], spec.kind == InputKind.PARAMETER)
    return out


def output_names(program) -> list[str]:
    """Names for the user outputs: ModelOutput / dict keys (``last_hidden_state``), else output_<i>."""
    spec = program.call_spec.out_spec
    names = _leaf_names(spec, "") if spec is not None else []
    n = len(program.graph_signature.user_outputs)
    if len(names) != n:
        names = ["output"] if n == 1 else [f"output_{i}" for i in range(n)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        name = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name) or "output"
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name] - 1}")
    return unique


def _leaf_names(spec, prefix: str) -> list[str]:
    if spec.is_leaf():
        return [prefix or "output"]
    children = list(spec.children())
    context = spec.context
    if isinstance(context, (list, tuple)) and len(context) == len(children) and all(isinstance(k, str) for k in context):
        keys = list(context)
    elif len(children) == 1:
        return _leaf_names(children[0], prefix)
    else:
        keys = [str(i) for i in range(len(children))]
        prefix = prefix or "output"
    names = []
    for key, child in zip(keys, children):
        names += _leaf_names(child, f"{prefix}_{key}" if prefix else key)
    return names


def variable_name(target: str) -> str:
    """A weight's state-dict key as a TF variable name (TF allows [A-Za-z0-9_.\\-/])."""
    return re.sub(r"[^A-Za-z0-9_.\-/]", "_", target)

"""Which ATen ops reach the converters: torch's core-ATen table, less the ops TF has natively.

``torch.export.default_decompositions()`` lowers every non-core op to core ATen. We keep:
- ``aten.gelu``: decomposed it becomes ``erf`` arithmetic; kept, it becomes ``tf.nn.gelu``,
  which TFLite maps to its GELU builtin (erf needs the Flex delegate);
- ``aten.scaled_dot_product_attention``: its decomposition fails to re-trace some HF models with
  dynamic shapes (GPT-2: "Cannot view a tensor with shape [s0, s1, 32] and strides ...") and it is
  one fused op on the TF side anyway.

A graph whose every op already has a converter (ops/composite.py converts the composite ops
torch.export keeps: linear, layer_norm, ...) and that mutates nothing is converted as exported:
run_decompositions re-traces the whole model (3.3 s on bert-base, more than the export itself).
"""

from __future__ import annotations

KEPT = ("aten.gelu.default", "aten.scaled_dot_product_attention.default")


def decomposition_table() -> dict:
    import torch

    table = torch.export.default_decompositions()
    for name in KEPT:
        table.pop(_overload(name), None)
    return table


def decompose(ep):
    """``ep`` itself where it converts as exported (converts_as_exported), else ``ep`` lowered to core ATen plus
    KEPT (a new ExportedProgram; ``ep`` is not changed)."""
    if converts_as_exported(ep):
        return ep
    return ep.run_decompositions(decomposition_table())


def converts_as_exported(ep) -> bool:
    """Every call in ``ep``'s graph has a converter that accepts it, none mutates its inputs, and the program
    mutates no buffer or user input (those need functionalisation, which run_decompositions does)."""
    from porter.graph_to_tf.check import SKIPPED, all_nodes
    from porter.graph_to_tf.registry import lookup, op_name

    signature = ep.graph_signature
    if getattr(signature, "buffers_to_mutate", None) or getattr(signature, "user_inputs_to_mutate", None):
        return False
    for node in all_nodes(ep.graph):
        if node.op != "call_function" or op_name(node.target) in SKIPPED:
            continue
        schema = getattr(node.target, "_schema", None)
        converter = lookup(node.target)
        if converter is None or (schema is not None and schema.is_mutable):
            return False
        if converter.check is not None and converter.check(node):
            return False
    return True


def _overload(name: str):
    import torch

    _, op, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, op), overload)

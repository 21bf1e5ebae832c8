"""Which ATen ops reach the converters: torch's core-ATen table, less the ops TF has natively.

``torch.export.default_decompositions()`` lowers every non-core op to core ATen. We keep:
- ``aten.gelu``: decomposed it becomes ``erf`` arithmetic; kept, it becomes ``tf.nn.gelu``,
  which TFLite maps to its GELU builtin (erf needs the Flex delegate);
- ``aten.scaled_dot_product_attention``: its decomposition fails to re-trace some HF models with
  dynamic shapes (GPT-2: "Cannot view a tensor with shape [s0, s1, 32] and strides ...") and it is
  one fused op on the TF side anyway.
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
    """``ep`` lowered to core ATen plus KEPT (a new ExportedProgram; ``ep`` is not changed)."""
    return ep.run_decompositions(decomposition_table())


def _overload(name: str):
    import torch

    _, op, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, op), overload)

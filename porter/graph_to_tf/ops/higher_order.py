"""Higher-order ops torch.export keeps around a region of the model: their body (a submodule of the
ExportedProgram) runs inline, converted op by op like the rest of the graph.

Converting them is what lets a decoder with rotary embeddings (transformers computes cos/sin under
``torch.no_grad()`` / ``torch.autocast(enabled=False)``) take the converted-as-exported path instead of
run_decompositions, which re-traces the whole model to inline them.
"""

from __future__ import annotations

import torch

from porter.graph_to_tf.registry import register
from porter.graph_to_tf.runner import run_subgraph

higher_order = torch.ops.higher_order


@register(higher_order.wrap_with_set_grad_enabled)
def wrap_with_set_grad_enabled(enable_grad, body, *operands):
    # grad mode changes nothing a TF inference graph computes
    return run_subgraph(body, operands)


def _autocast_check(node):
    # (device_type, dtype, enabled, cache_enabled, body, *operands): an enabled region changes dtypes op by op
    if len(node.args) > 2 and node.args[2]:
        return f"an enabled torch.autocast region ({node.args[0]}, {node.args[1]}) is not converted"
    return None


@register(higher_order.wrap_with_autocast, check=_autocast_check)
def wrap_with_autocast(device_type, dtype, enabled, cache_enabled, body, *operands):
    return run_subgraph(body, operands)

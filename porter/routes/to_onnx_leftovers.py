"""Ops in an ONNX graph that ONNX does not define: what an exporter (tf2onnx) left unconverted.

tf2onnx does not fail on a TF op it cannot convert: it logs it and writes the TF op into the
ONNX graph as is (ConvNeXt: `Erfc`, `StatefulPartitionedCall`). Blaming the next tool for them,
or calling the user's model bad, points at the wrong thing: they are named with the tool that left them.
"""

from __future__ import annotations

from collections import Counter

ONNX_DOMAINS = ("", "ai.onnx")


def foreign_nodes(graph) -> list:
    """Nodes in the ONNX domain whose op type ONNX does not define (subgraphs included)."""
    import onnx

    found = []
    for node in graph.node:
        if node.domain in ONNX_DOMAINS and not onnx.defs.has(node.op_type):
            found.append(node)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                found += foreign_nodes(sub)
    return found


def foreign_ops(graph) -> Counter:
    """op -> count of foreign_nodes."""
    return Counter(node.op_type for node in foreign_nodes(graph))


def listed(ops: Counter) -> str:
    return ", ".join(f"{op} x{count}" for op, count in sorted(ops.items()))


def check_tf2onnx_output(model) -> None:
    """Raise CannotConvertYet naming the TF ops tf2onnx could not convert, and the nodes that hold them."""
    from porter.errors import CannotConvertYet

    nodes = foreign_nodes(model.graph)
    if not nodes:
        return
    raise CannotConvertYet(
        f"tf2onnx could not convert the TF ops {listed(Counter(n.op_type for n in nodes))}: "
        "it left them in the ONNX graph as TF ops",
        problems=[f"{n.op_type}: node {n.name!r}" for n in nodes[:10]] + ([f"... {len(nodes) - 10} more"] if len(nodes) > 10 else []),
        hint="these are tf2onnx's limits, not a fault in the model file; a model built without them "
             "(e.g. gelu(approximate=True) instead of erf-based gelu) converts",
    )

"""Ops in an ONNX graph that ONNX does not define: what an exporter (tf2onnx) left unconverted.

tf2onnx does not fail on a TF op it cannot convert: it logs it and writes the TF op into the
ONNX graph as is (ConvNeXt: `Erfc`, `StatefulPartitionedCall`). Blaming the next tool for them,
or calling the user's model bad, points at the wrong thing: they are named with the tool that left them.
"""

from __future__ import annotations

from collections import Counter

ONNX_DOMAINS = ("", "ai.onnx")

# TF ops tf2onnx 1.17 leaves as they are although ONNX ops express them exactly as TF defines them:
# rewritten in place (rewrite_tf_leftovers) before anything else reads the graph. Keras' and
# tf.nn.gelu's exact gelu is 0.5 * x * erfc(-x / sqrt(2)), so Erfc is in every erf-based GELU.
# Constants take the input's dtype through CastLike: tf2onnx writes no dtype on the nodes it left.
# Not here, and still refused by check_tf2onnx_output: TF ops with no exact ONNX expression
# (Erfinv, Lgamma, Digamma, Ndtri, BesselI0e, BesselI1e, ...).
REWRITTEN = {
    "Erfc": "1 - Erf(x)",
    "Expm1": "Exp(x) - 1",
    "Log1p": "Log(1 + x)",
    "Xlogy": "Where(x == 0, 0, x * Log(y))",
    "Xlog1py": "Where(x == 0, 0, x * Log(1 + y))",
}


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


def _rewrite(node) -> list:
    """The ONNX nodes that compute ``node`` (one of REWRITTEN), writing its output name."""
    from onnx import TensorProto, helper

    base = node.name or node.output[0]
    out = node.output[0]
    made = []

    def add(op, inputs, **attrs):
        name = f"{base}/{op}_{len(made)}"
        made.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def scalar(value, like):
        const = add("Constant", [], value=helper.make_tensor("v", TensorProto.FLOAT, [], [value]))
        return add("CastLike", [const, like])

    op, x = node.op_type, node.input[0]
    if op == "Erfc":
        result = ("Sub", [scalar(1.0, x), add("Erf", [x])])
    elif op == "Expm1":
        result = ("Sub", [add("Exp", [x]), scalar(1.0, x)])
    elif op == "Log1p":
        result = ("Log", [add("Add", [scalar(1.0, x), x])])
    else:  # Xlogy, Xlog1py: 0 where x == 0 (whatever y is), as TF defines them
        y = node.input[1]
        if op == "Xlog1py":
            y = add("Add", [scalar(1.0, y), y])
        zero = scalar(0.0, x)
        product = add("Mul", [x, add("Log", [y])])
        result = ("Where", [add("Equal", [x, zero]), zero, product])
    made.append(helper.make_node(result[0], result[1], [out], name=f"{base}/{result[0]}"))
    return made


def rewrite_tf_leftovers(graph) -> Counter:
    """Replace, in place and subgraphs included, the TF ops in REWRITTEN by the ONNX ops that compute them.
    Returns op -> count of what was rewritten."""
    import onnx

    done = Counter()
    kept = []
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                done += rewrite_tf_leftovers(sub)
        if node.domain in ONNX_DOMAINS and node.op_type in REWRITTEN and not onnx.defs.has(node.op_type):
            expected_inputs = 2 if node.op_type.startswith("Xlog") else 1
            if len(node.input) == expected_inputs and len(node.output) == 1:
                kept += _rewrite(node)
                done[node.op_type] += 1
                continue
        kept.append(node)
    if done:
        del graph.node[:]
        graph.node.extend(kept)
    return done


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
        hint="these are tf2onnx's limits, not a fault in the model file; porter rewrites the ones ONNX "
             f"expresses exactly ({', '.join(sorted(REWRITTEN))}), these have no ONNX equivalent: "
             "a model built without them converts",
    )

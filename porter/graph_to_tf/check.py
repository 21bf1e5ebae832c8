"""Check the whole graph before converting: every op without a converter (or a call its converter
refuses) is listed at once, with counts and the modules that use it."""

from __future__ import annotations

from collections import Counter, defaultdict

from porter.errors import UnsupportedModelError
from porter.graph_to_tf.registry import lookup, op_name

# Nodes that carry no computation on the TF side.
SKIPPED = ("aten._assert_tensor_metadata.default", "aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default",
           "aten._assert_async.msg", "aten.sym_constrain_range.default")


def module_path(node) -> str:
    """The innermost nn.Module path that produced ``node`` ('' at the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self___", "")


def all_nodes(graph):
    """``graph``'s nodes, and those of the bodies its higher-order ops run (get_attr submodules), depth first."""
    for node in graph.nodes:
        yield node
        if node.op == "call_function":
            for arg in node.args:
                if getattr(arg, "op", None) == "get_attr":
                    body = getattr(graph.owning_module, arg.target, None)
                    if hasattr(body, "graph"):
                        yield from all_nodes(body.graph)


def check_supported(graph) -> None:
    counts: Counter = Counter()
    where: dict[str, set] = defaultdict(set)
    refusals: list[str] = []
    for node in all_nodes(graph):
        if node.op != "call_function" or op_name(node.target) in SKIPPED:
            continue
        name = op_name(node.target)
        converter = lookup(node.target)
        if converter is None:
            counts[name] += 1
            where[name].add(module_path(node) or "<top>")
            continue
        problem = converter.check(node) if converter.check else None
        if problem:
            refusals.append(f"{name} at {node.name} ({module_path(node) or '<top>'}): {problem}")
    if not counts and not refusals:
        return
    problems = [f"{name} x{n} (in {', '.join(sorted(where[name])[:5])}{' ...' if len(where[name]) > 5 else ''})"
                for name, n in counts.most_common()] + refusals
    raise UnsupportedModelError(
        f"porter's torch.export -> TF converter has no converter for {len(counts)} op(s)"
        + (f" and refuses {len(refusals)} call(s)" if refusals else ""),
        problems=problems,
        hint="export a variant of the model without these ops, or add converters in porter/graph_to_tf/ops/")

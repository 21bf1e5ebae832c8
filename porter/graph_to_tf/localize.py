"""Name the first ATen node whose TF value differs from torch's: the decomposed graph run by
torch.fx.Interpreter next to the same graph run eagerly by the TF converters, compared node by node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Divergence:
    node: str
    op: str
    module_path: str
    max_abs: float
    shape: tuple

    def __str__(self) -> str:
        where = f" in {self.module_path}" if self.module_path else ""
        return f"first divergence at {self.node} = {self.op}{where}: max abs error {self.max_abs:.3g}, shape {self.shape}"


def torch_values(program, feeds: dict) -> dict:
    """Every node's value when torch runs the decomposed graph on ``feeds`` (name -> numpy)."""
    import torch
    from torch.export.graph_signature import InputKind

    args = []
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            args.append(torch.from_numpy(np.asarray(feeds[spec.arg.name])) if spec.arg.name in feeds
                        else getattr(spec.arg, "value", None))
        else:
            source = program.state_dict if spec.target in program.state_dict else program.constants
            args.append(source[spec.target])
    values = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            values[node.name] = result = super().run_node(node)
            return result

    with torch.no_grad():
        Recorder(program.graph_module).run(*args)
    return values


def _max_abs(a, b) -> float | None:
    """Max abs difference of two tensors (NaN where exactly one side is NaN); None when not comparable."""
    import torch

    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        errors = [_max_abs(x, y) for x, y in zip(a, b)]
        errors = [e for e in errors if e is not None]
        return max(errors) if errors else None
    if not isinstance(a, torch.Tensor) or b is None or not hasattr(b, "numpy"):
        return None
    x = a.detach().numpy().astype(np.float64)
    y = np.asarray(b.numpy(), dtype=np.float64)
    if x.shape != y.shape:
        return float("inf")
    if x.size == 0:
        return 0.0
    both_nan = np.isnan(x) & np.isnan(y)
    same_inf = np.isinf(x) & (x == y)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(x - y))
    return float(np.nan_to_num(diff, nan=np.inf).max())


def first_divergence(ep, converted, feeds: dict, atol: float = 1e-5) -> Divergence | None:
    """The first node (in graph order) whose TF value differs from torch's by more than ``atol``, or None."""
    import tensorflow as tf

    from porter.graph_to_tf.check import module_path
    from porter.graph_to_tf.registry import op_name

    program = converted.program
    if ep is not converted.source and ep is not converted.program:
        from porter.graph_to_tf.decompositions import decompose

        program = decompose(ep)
    expected = torch_values(program, feeds)
    found: list[Divergence] = []

    def compare(node, value):
        if found or node.op != "call_function":
            return
        error = _max_abs(expected.get(node.name), value)
        if error is not None and error > atol:
            shape = tuple(expected[node.name].shape) if hasattr(expected[node.name], "shape") else ()
            found.append(Divergence(node.name, op_name(node.target), module_path(node), error, shape))

    runner = converted.runner
    if program is not converted.program:
        from porter.graph_to_tf.runner import GraphRunner

        runner = GraphRunner(program, {**converted.runner.variables}, converted.inputs)
    args = [tf.convert_to_tensor(feeds[s.name], s.tf_spec().dtype) for s in converted.inputs if s.is_tensor]
    runner.run(*args, hook=compare)
    return found[0] if found else None

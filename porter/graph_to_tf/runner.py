"""Run a decomposed ExportedProgram's graph with TF ops, node by node.

Inside ``tf.function`` this builds the SavedModel's graph (the walk happens once, at trace time);
run eagerly with a ``hook`` it yields every node's value for localisation.
"""

from __future__ import annotations

import torch

from porter.graph_to_tf import layout
from porter.graph_to_tf.check import SKIPPED
from porter.graph_to_tf.context import converting
from porter.graph_to_tf.registry import lookup, op_name


class GraphRunner:
    def __init__(self, program, variables: dict, inputs: list):
        """``variables``: placeholder name -> tf.Variable; ``inputs``: signature.InputSpec per user input."""
        from torch.export.graph_signature import OutputKind

        self.graph = program.graph
        self.variables = variables
        self.inputs = inputs
        self.outputs = [spec.arg.name for spec in program.graph_signature.output_specs
                        if spec.kind == OutputKind.USER_OUTPUT and hasattr(spec.arg, "name")]

    def run(self, *values, hook=None) -> list:
        """The user outputs, given one value per tensor user input (in signature order)."""
        with layout.scope():
            return self._run(values, hook)

    def _run(self, values, hook) -> list:
        given = iter(values)
        feeds = {spec.placeholder: (next(given) if spec.is_tensor else spec.constant) for spec in self.inputs}
        env = run_nodes(self.graph, lambda node: self.variables[node.name] if node.name in self.variables
                        else feeds.get(node.name), hook)
        return [env[name] for name in self.outputs]


def run_nodes(graph, bind, hook=None) -> dict:
    """Every node's TF value (by name) up to the output node; ``bind(placeholder)`` gives the inputs' values. A
    get_attr node's value is the submodule it names (the body a higher-order op such as wrap_with_set_grad_enabled
    runs: ops/higher_order.py)."""
    env: dict = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            env[node.name] = bind(node)
        elif node.op == "call_function":
            env[node.name] = _call(node, env)
        elif node.op == "get_attr":
            env[node.name] = getattr(graph.owning_module, node.target)
        elif node.op == "output":
            break
        else:
            raise NotImplementedError(f"{node.op} nodes ({node.name}) are not converted")
        if hook is not None:
            hook(node, env[node.name])
    return env


def run_subgraph(module, operands) -> tuple:
    """The outputs of a higher-order op's body (a GraphModule whose placeholders take ``operands`` in order)."""
    given = iter(operands)
    env = run_nodes(module.graph, lambda node: next(given))
    output = next(node for node in module.graph.nodes if node.op == "output")
    values = torch.fx.node.map_arg(output.args[0], lambda n: env[n.name])
    return tuple(values) if isinstance(values, (tuple, list)) else (values,)


def _call(node, env):
    if op_name(node.target) in SKIPPED:
        return None
    converter = lookup(node.target)
    args = torch.fx.node.map_arg(node.args, lambda n: env[n.name])
    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name])
    with converting(node):
        try:
            return layout.propagate(op_name(node.target), converter.fn, args, kwargs, converter.fn(*args, **kwargs))
        except Exception as error:  # name the node: a traceback into TF alone does not
            error.add_note(f"while converting {node.name} = {op_name(node.target)}"
                           f"{' in ' + _path(node) if _path(node) else ''}")
            raise


def _path(node) -> str:
    from porter.graph_to_tf.check import module_path

    return module_path(node)

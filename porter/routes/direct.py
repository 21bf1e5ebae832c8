"""The direct route: a zoo entry on both sides, weights moved by the rules in mappings/<family>.toml."""

from __future__ import annotations

import numpy as np

from porter.mapping import Plan, RuleSet


def torch_to_keras(entry, source, config: dict):
    """Build porter's Keras model from ``config`` and fill it from a torch TensorSource.
    Returns (model, plan)."""
    impl = entry.impl
    model = impl.build_keras(config, deferred=True)  # variables get memory only when their weight arrives
    variables = impl.keras_variables(model)
    rules = RuleSet.load(entry.family, source="torch", **entry.mapping_params)
    plan = rules.plan(source.shapes, {k: tuple(v.shape) for k, v in variables.items()})
    for target, array in plan.run(source.get):
        impl.initialize_variable(variables[target], array)
    return model, plan


def keras_to_torch(entry, model, config: dict) -> tuple[dict[str, np.ndarray], Plan]:
    """The torch state dict (numpy) for a Keras zoo model, by the same rules read backwards."""
    impl = entry.impl
    variables = impl.keras_variables(model)
    rules = RuleSet.load(entry.family, source="tf", **entry.mapping_params)
    plan = rules.plan({k: tuple(v.shape) for k, v in variables.items()}, impl.torch_target_shapes(config))
    return dict(plan.run(lambda k: np.asarray(variables[k].numpy()))), plan

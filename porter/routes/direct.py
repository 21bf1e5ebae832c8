"""The direct route: a zoo entry on both sides, weights moved by the rules in mappings/<family>.toml."""

from __future__ import annotations

import numpy as np

from porter import progress
from porter.mapping import Plan, RuleSet


def rules_for(entry, config: dict, source: str) -> RuleSet:
    """The entry's rules for one direction; a family whose placeholders depend on the config
    (the base model's prefix inside a task head, tied embeddings) gives them through mapping_params."""
    params = entry.impl.mapping_params(config) if hasattr(entry.impl, "mapping_params") else entry.mapping_params
    return RuleSet.load(entry.family, source=source, **params)


def torch_to_keras(entry, source, config: dict):
    """Build porter's Keras model from ``config`` and fill it from a torch TensorSource.
    Returns (model, plan)."""
    impl = entry.impl
    with progress.step(f"building porter's Keras {entry.name}"):
        model = impl.build_keras(config, deferred=True)  # variables get memory only when their weight arrives
    variables = impl.keras_variables(model)
    rules = rules_for(entry, config, "torch")
    plan = rules.plan(source.shapes, {k: tuple(v.shape) for k, v in variables.items()})
    with progress.step(f"mapping {len(plan.steps)} tensors"):
        for target, array in plan.run(source.get):
            impl.initialize_variable(variables[target], array)
    return model, plan


def keras_to_torch(entry, model, config: dict) -> tuple[dict[str, np.ndarray], Plan]:
    """The torch state dict (numpy) for a Keras zoo model, by the same rules read backwards."""
    impl = entry.impl
    variables = impl.keras_variables(model)
    rules = rules_for(entry, config, "tf")
    plan = rules.plan({k: tuple(v.shape) for k, v in variables.items()}, impl.torch_target_shapes(config))
    with progress.step(f"mapping {len(plan.steps)} tensors"):
        return dict(plan.run(lambda k: np.asarray(variables[k].numpy()))), plan

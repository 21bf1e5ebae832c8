"""Why `porter verify --train` takes its step in float64, and the casts that let it.

The step's gradients are only determined to 1e-4 where no activation sits within float32 noise of a kink
(ReLU/ReLU6 at 0 and 6, max pooling ties). MobileNetV2 (alpha 0.35, 96 px, BatchNorm in training mode)
shows it: after 17 blocks of batch-normalised convolutions the float32 forward pass is ~1e-4 away from
the float64 one *in each framework* (Keras 1.3e-4, torch 8.8e-5 at Conv_1_bn); one of Conv_1_bn's 46,080
pre-activations is -1.4e-5 in float64 and torch but +1.8e-5 in Keras float32, so ReLU6 lets its
gradient (9.9e-4) through in Keras only; BatchNorm's backward spreads it over the channel, and earlier
flips add up to 0.30 on Conv1's kernel gradient. Keras float32 is that far from Keras float64 too
(0.30 on Conv1's gradient, 1.13 on the logits after the step): a float32 comparison at 1e-4 measures the
noise, not the conversion. In float64 the same pair agrees to 6e-15 (loss), 1e-12 (gradients) and 2e-10
(logits after the step), while a wrong BatchNorm convention or weight still differs by far more than 1e-4.
"""

from __future__ import annotations

import numpy as np


def keras_in_float64(model):
    """(a float64 copy of the Keras model with the same weights, None) or (None, why not): the model is
    rebuilt from its config with every float32 dtype policy set to float64."""
    try:
        from porter.process.frameworks import keras

        k = keras()
        clone = type(model).from_config(_float64_config(model.get_config()))
        build = model.get_build_config() if not clone.built else None
        if build:  # a subclassed model (porter's BERT) is built by its build config, as load_model builds it
            clone.build_from_config(build)
        pairs = _paired_variables(model.weights, clone.weights)
        if pairs is None:
            return None, "its float64 copy does not hold the same variables"
        for source, v in pairs:
            v.assign(np.asarray(source.numpy()).astype(k.backend.standardize_dtype(v.dtype)))
    except Exception as error:  # a model whose config does not round-trip: the step falls back to float32
        return None, f"it cannot be rebuilt in float64 ({type(error).__name__}: {error})"
    return clone, None


def _paired_variables(old, new):
    """[(variable of the model, its float64 counterpart)] or None. By path; else in order where every pair has
    the same shape, layer and variable name: a layer inside a nested Sequential (ConvNeXt's downsampling blocks)
    loses the Sequential's prefix from its variables' paths when rebuilt from config, and an unnamed variable
    (ConvNeXt's LayerScale "variable") gets a new numeric suffix ("variable_18")."""
    import re

    by_path = {v.path: v for v in old}
    if sorted(by_path) == sorted(v.path for v in new):
        return [(by_path[v.path], v) for v in new]
    tail = lambda v: [*v.path.split("/")[-2:-1], re.sub(r"_\d+$", "", v.path.split("/")[-1])]  # noqa: E731
    if len(old) != len(new) or any(tail(a) != tail(b) or tuple(a.shape) != tuple(b.shape) for a, b in zip(old, new)):
        return None
    return list(zip(old, new))


def _float64_config(obj):
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and obj.get("config", {}).get("name") == "float32":
            return {**obj, "config": {**obj["config"], "name": "float64"}}
        return {k: ("float64" if k == "dtype" and v == "float32" else _float64_config(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float64_config(v) for v in obj]
    return obj


def feed_as(feed: dict, dtype: str) -> dict:
    """The batch with its float inputs cast to ``dtype`` (integer ids unchanged)."""
    return {n: (a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a) for n, a in feed.items()}

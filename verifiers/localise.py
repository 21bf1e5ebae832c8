"""Localisation for the direct route: the first layer whose activations diverge.

The mapping rules already know which Keras variable a torch parameter becomes, so they
pair a torch module (a parameter's module path, ``encoder.layer.1.intermediate.dense``)
with a Keras layer (the variable's layer path, ``bert/encoder/layer_._1/intermediate/dense``).
Both models run one input set with their activations captured (torch forward hooks;
Keras layers' ``call`` wrapped for the run), and the pairs are compared in torch's
execution order with the output's tolerances; the first pair outside them is reported.
"""

from __future__ import annotations

import numpy as np

from porter.readers.hf_load import load_zoo_torch
from porter.verifiers.compare import compare

KERAS_FORMATS = ("keras", "h5", "hf_tf_h5", "saved_model")


def localise(reference, candidate, feed: dict, info, *, atol=None, rtol=None, label: str = "") -> dict | None:
    """``reference``/``candidate``: activated runners (one torch HF folder, one Keras zoo model).
    Returns the report block, or None when this pair of formats cannot be localised."""
    sides = {r.framework: r for r in (reference, candidate)}
    if set(sides) != {"torch", "tf"} or info is None or sides["torch"].artifact.format != "hf":
        return None
    if sides["tf"].artifact.format not in KERAS_FORMATS:
        return None
    torch_model = _torch_model(sides["torch"], info)
    keras_model = _keras_model(sides["tf"])
    pairs = mapped_pairs(info.entry, torch_model, info.config)
    # a keras-hub task model's layers are named inside its backbone, as the rules name them
    layers = keras_layers(getattr(keras_model, "backbone", keras_model))
    # a Keras Dense with a fused activation (keras-hub's feed-forward) outputs what torch's Linear
    # plus its activation module do: not comparable with the Linear alone
    pairs = {m: k for m, k in pairs.items() if k in layers and not _fused_activation(layers[k])}
    t_acts, order = _torch_activations(torch_model, feed, pairs)
    k_acts = _keras_activations(keras_model, feed, {pairs[m]: layers[pairs[m]] for m in pairs},
                                getattr(info.entry.impl, "keras_call", None))
    mask = next((feed[m] for m in info.entry.defined_where.values() if m in feed), None)
    torch_is_reference = reference.framework == "torch"
    checked = 0
    for module in order:
        a, b = t_acts[module], k_acts.get(pairs[module])
        if b is not None and a.shape != b.shape and a.size == b.size and (a.shape[:2] == b.shape[:2] or a.shape[-1] == b.shape[-1]):
            # keras-hub's per-head projections: (batch, seq, heads, head_dim) vs torch's (batch, seq, heads*head_dim);
            # porter's BERT encoder runs on (batch * seq, hidden) vs torch's (batch, seq, hidden)
            b = b.reshape(a.shape)
        if b is None or a.shape != b.shape:
            continue
        checked += 1
        ref, cand = (a, b) if torch_is_reference else (b, a)
        valid = mask if mask is not None and a.shape[: np.ndim(mask)] == np.shape(mask) else None
        c = compare(module, ref, cand, atol=atol, rtol=rtol, allow_degenerate=True, valid=valid)
        if not c.passed:
            return {
                "found": True,
                "torch_module": module,
                "keras_layer": pairs[module],
                "shape": list(a.shape),
                "max_abs": c.max_abs,
                "max_rel": c.max_rel,
                "mismatched": c.mismatched,
                "atol": c.atol,
                "rtol": c.rtol,
                "input": label,
                "checked_layers": checked,
            }
    return {"found": False, "checked_layers": checked, "input": label,
            "note": "every mapped layer agrees within tolerance; the difference arises between them (e.g. in an activation or mask)"}


def mapped_pairs(entry, torch_model, config: dict | None = None) -> dict[str, str]:
    """torch module path -> Keras layer path, from the entry's mapping rules."""
    from porter.mapping import RuleSet
    from porter.routes.direct import rules_for

    rules = rules_for(entry, config, "torch") if config is not None else RuleSet.load(entry.family, source="torch", **entry.mapping_params)
    pairs = {}
    for name, _ in torch_model.named_parameters():
        target = next((t for r in rules.rules if (t := r.match_source(name)) is not None), None)
        if target is not None:
            pairs[name.rpartition(".")[0]] = target.rpartition("/")[0]
    return pairs


def _fused_activation(layer) -> bool:
    act = getattr(layer, "activation", None)
    return act is not None and getattr(act, "__name__", "") != "linear"


def keras_layers(model) -> dict:
    """Layer path ('bert/encoder/layer_._0/intermediate/dense') -> layer, from the layer tree."""
    out = {}

    def walk(layer, prefix):
        for sub in getattr(layer, "_layers", []):
            path = f"{prefix}{sub.name}"
            out[path] = sub
            walk(sub, path + "/")

    walk(model, "")
    return out


def _torch_model(runner, info):
    model = getattr(runner, "model", None)
    return model if model is not None else load_zoo_torch(info.entry, runner.artifact.path)


def _keras_model(runner):
    model = getattr(runner, "model", None)
    if model is None:  # a SavedModel: porter's model.keras beside it carries the layers
        from porter.routes.tf_weights import load_keras_artifact

        model, _ = load_keras_artifact(runner.artifact)
    return model


def _torch_activations(model, feed, pairs):
    from porter.process.frameworks import torch

    t = torch()
    acts, order, handles = {}, [], []
    for module_name in pairs:
        def hook(_module, _inputs, output, name=module_name):
            if isinstance(output, t.Tensor) and name not in acts:
                acts[name] = output.detach().float().cpu().numpy()
                order.append(name)

        handles.append(model.get_submodule(module_name).register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        with t.inference_mode():
            # token ids as int64; pixel_values keep their float dtype
            model(**{k: t.as_tensor(np.asarray(v, dtype=np.float32 if k == "pixel_values" else np.int64), device=device)
                     for k, v in feed.items()})
    finally:
        for h in handles:
            h.remove()
    return acts, order


def _keras_activations(model, feed, layers: dict, keras_call=None) -> dict:
    acts = {}
    for path, layer in layers.items():
        original = layer.call

        def call(*args, _original=original, _path=path, **kwargs):
            out = _original(*args, **kwargs)
            if _path not in acts and hasattr(out, "shape"):
                acts[_path] = np.asarray(out)
            return out

        object.__setattr__(layer, "call", call)
    try:
        if keras_call is not None:  # a model with its own input names (keras-hub's token_ids...)
            keras_call(model, feed)
        else:
            model({k: np.asarray(v, dtype=np.int32) for k, v in feed.items()})
    finally:
        for layer in layers.values():
            object.__delattr__(layer, "call")
    return acts

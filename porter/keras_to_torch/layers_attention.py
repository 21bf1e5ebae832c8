"""Translators for Attention, AdditiveAttention, EinsumDense and GroupedQueryAttention (runtime_attention.py).

Their modules keep Keras' weights in Keras' shapes, so every weight maps as it is ("same"); the layers'
tensors are channels-last (Keras' order) in and out.
"""

from __future__ import annotations

from porter.keras_to_torch import layers as L
from porter.keras_to_torch.layers import Emit, Inputs, _check, _w, _weights, translator


def _roles(call, x: Inputs, roles: dict, allowed: set) -> dict:
    """{role: the input's expression} for the tensors of ``roles`` (role -> Keras tensor, or None)."""
    kwargs = dict(call.node.arguments.kwargs)
    _check(call, not (set(kwargs) - allowed), f"call arguments {sorted(set(kwargs) - allowed)}")
    index = {id(t): i for i, t in enumerate(call.node.input_tensors)}
    parts = {}
    for role, t in roles.items():
        if t is None:
            continue
        _check(call, id(t) in index, f"its {role} (not a tensor of the model)")
        _check(call, len(t.shape) == 3, f"a rank-{len(t.shape)} {role} (only (batch, steps, features))")
        parts[role] = x.get(index[id(t)], "cl")
    return parts


@translator("Attention", "AdditiveAttention")
def attention(call, x: Inputs, cfg):
    """Keras' [query, value, (key)] list; use_causal_mask, return_attention_scores; dropout acts in train() only."""
    args, kwargs = list(call.node.arguments.args), dict(call.node.arguments.kwargs)
    inputs = args[0] if args else kwargs.get("inputs")
    _check(call, isinstance(inputs, (list, tuple)) and len(args) <= 1, "inputs not given as [query, value, key]")
    # a mask list reaches it as a call argument (plan_model refuses the Keras masks its inputs carry)
    _check(call, kwargs.get("mask") is None, "the mask argument (query/value masks)")
    parts = _roles(call, x, dict(zip(("query", "value", "key"), inputs)),
                   {"inputs", "mask", "training", "return_attention_scores", "use_causal_mask"})
    layer = call.layer
    if call.cls == "AdditiveAttention":
        mode, scale = "additive", (int(x.shapes[0][-1]),) if layer.use_scale else None
    else:
        mode, scale = cfg.get("score_mode", "dot"), () if layer.use_scale else None
        _check(call, mode in ("dot", "concat"), f"score_mode={mode!r}")
    causal, scores = bool(kwargs.get("use_causal_mask")), bool(kwargs.get("return_attention_scores"))
    dropout = float(cfg.get("dropout") or 0.0)
    module = (f"KerasAttention({mode!r}, scale_shape={scale}, causal={causal}, dropout={dropout!r}, "
              f"return_scores={scores})")
    w = _weights(layer)
    weights = [_w(call, name, w[name], "same") for name in ("scale", "concat_score_weight") if name in w]
    call_args = [parts["query"], parts["value"]] + ([f"key={parts['key']}"] if "key" in parts else [])
    return Emit(module, f"self.{call.var}({', '.join(call_args)})", "cl", weights, helpers={"KerasAttention"},
                outputs=2 if scores else 1)


@translator("EinsumDense")
def einsum_dense(call, x: Inputs, cfg):
    """torch.einsum with Keras' own equation, kernel and bias (bias broadcast from the first biased axis on)."""
    layer = call.layer
    _check(call, not getattr(layer, "lora_enabled", False), "LoRA weights")
    _check(call, getattr(layer, "quantization_mode", None) is None, f"quantization_mode={layer.quantization_mode!r}")
    w = _weights(layer)
    bias = w.get("bias")
    module = (f"KerasEinsumDense({cfg['equation']!r}, {tuple(w['kernel'].shape)}, "
              f"{tuple(bias.shape) if bias is not None else None})")
    weights = [_w(call, "kernel", w["kernel"], "same")] + ([_w(call, "bias", bias, "same")] if bias is not None else [])
    act = L.activation_name(call, cfg.get("activation") or "linear")
    expr = L.apply_activation(act, f"self.{call.var}({x.get(0, 'cl')})", "cl")
    return Emit(module, expr, "cl", weights, helpers={"KerasEinsumDense"})


@translator("GroupedQueryAttention")
def grouped_query_attention(call, x: Inputs, cfg):
    _check(call, all(m is None for m in call.in_masks), "Keras masks on its inputs (query/value/key masks)")
    node = call.node
    args, kwargs = list(node.arguments.args), dict(node.arguments.kwargs)
    for name in ("query_mask", "value_mask", "key_mask"):
        _check(call, kwargs.get(name) is None, f"{name} given")
    roles = dict(zip(("query", "value", "key", "query_mask", "value_mask", "key_mask", "attention_mask"), args))
    _check(call, all(roles.get(n) is None for n in ("query_mask", "value_mask", "key_mask")), "query/value/key masks")
    roles.update({k: v for k, v in kwargs.items() if k in ("query", "value", "key", "attention_mask")})
    parts = _roles(call, x, {k: v for k, v in roles.items() if k in ("query", "value", "key", "attention_mask")},
                   {"query", "value", "key", "query_mask", "value_mask", "key_mask", "attention_mask",
                    "return_attention_scores", "training", "use_causal_mask"})
    layer = call.layer
    w = {v.path.split("/")[-2] + "/" + v.name: v for v in layer.weights}  # "query/kernel", "attention_output/bias"
    bias, gate = bool(cfg.get("use_bias", True)), bool(cfg.get("use_gate", False))
    dims = {n: tuple(w[f"{n}/kernel"].shape)[0] for n in ("query", "key", "value")}
    causal, scores = bool(kwargs.get("use_causal_mask")), bool(kwargs.get("return_attention_scores"))
    window = cfg.get("sliding_window")
    module = (f"KerasGroupedQueryAttention({dims['query']}, {dims['key']}, {dims['value']}, "
              f"query_heads={int(cfg['num_query_heads'])}, kv_heads={int(cfg['num_key_value_heads'])}, "
              f"head_dim={int(cfg['head_dim'])}, bias={bias}, causal={causal}"
              + (f", sliding_window={int(window)}" if window is not None else "") + (", gate=True" if gate else "")
              + (f", dropout={float(cfg['dropout'])!r}" if cfg.get("dropout") else "")
              + (", return_scores=True" if scores else "") + ")")
    weights = []
    for name in ("query", "key", "value") + (("gate",) if gate else ()) + ("attention_output",):
        weights += [_w(call, f"{name}.{kind}", w[f"{name}/{kind}"], "same") for kind in ("kernel", "bias")
                    if kind == "kernel" or bias]
    call_args = [parts["query"], parts["value"]] + [f"{k}={parts[k]}" for k in ("key", "attention_mask") if k in parts]
    return Emit(module, f"self.{call.var}({', '.join(call_args)})", "cl", weights,
                helpers={"KerasEinsumDense", "KerasGroupedQueryAttention"}, outputs=2 if scores else 1)

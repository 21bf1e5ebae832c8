"""Translators for the shape, normalization, transposed-convolution, wrapper and attention layers."""

from __future__ import annotations

from porter.keras_to_torch import layers as L
from porter.keras_to_torch.graph import LayerCall
from porter.keras_to_torch.layers import Emit, Inputs, _check, _conv_common, _w, _weights, to_cl, translator


@translator("UpSampling1D")
def upsampling_1d(call, x: Inputs, cfg):
    return Emit(None, f"{x.get(0, 'cl')}.repeat_interleave({int(cfg['size'])}, dim=1)", "cl")


@translator("UpSampling2D", "UpSampling3D")
def upsampling(call, x: Inputs, cfg):
    _check(call, cfg.get("data_format", "channels_last") == "channels_last", "data_format='channels_first'")
    spatial = len(x.shapes[0]) - 2
    size = tuple(int(s) for s in (cfg["size"] if isinstance(cfg["size"], (list, tuple)) else [cfg["size"]] * spatial))
    mode = cfg.get("interpolation", "nearest")
    # Keras' bilinear is tf.image.resize (half-pixel centres, no antialias when enlarging): align_corners=False
    _check(call, mode in ("nearest", "bilinear"), f"interpolation={mode!r}")
    extra = ", align_corners=False" if mode == "bilinear" else ""
    return Emit(f"nn.Upsample(scale_factor={size}, mode={mode!r}{extra})", f"self.{call.var}({x.get(0, 'cf')})", "cf")


@translator("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def conv_transpose(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    kernel, stride, dilation = _conv_common(call, cfg, rank)
    _check(call, all(d == 1 for d in dilation), f"dilation_rate={dilation}")
    _check(call, cfg.get("output_padding") is None, f"output_padding={cfg.get('output_padding')}")
    _check(call, cfg["padding"] in ("valid", "same"), f"padding={cfg['padding']!r}")
    w = _weights(call.layer)
    channels, out, bias = int(x.shapes[0][-1]), int(cfg["filters"]), bool(cfg.get("use_bias", True))
    # TF's 'same' output is size * stride: the full transposed output cropped by max(k - s, 0) (more at the
    # end, as TF pads), or extended by s - k through output_padding where the kernel is smaller than the stride
    extend = tuple(max(s - k, 0) for k, s in zip(kernel, stride)) if cfg["padding"] == "same" else (0,) * len(kernel)
    dim = rank - 2
    module = (f"nn.ConvTranspose{dim}d({channels}, {out}, kernel_size={kernel}, stride={stride}, "
              f"output_padding={extend}, bias={bias})")
    expr = f"self.{call.var}({x.get(0, 'cf')})"
    if cfg["padding"] == "same":
        totals = [max(k - s, 0) for k, s in zip(kernel, stride)]
        if any(totals):
            expr += "[:, :, " + ", ".join(f"{t // 2}:{-(t - t // 2) if t - t // 2 else ''}" for t in totals) + "]"
    weights = [_w(call, "weight", w["kernel"], "conv")]  # (*k, out, in) -> (in, out, *k)
    if bias:
        weights.append(_w(call, "bias", w["bias"], "same"))
    act = L.activation_name(call, cfg.get("activation", "linear"))
    return Emit(module, L.apply_activation(act, expr, "cf"), "cf", weights)


@translator("ZeroPadding3D")
def zero_padding_3d(call, x: Inputs, cfg):
    _check(call, cfg.get("data_format", "channels_last") == "channels_last", "data_format='channels_first'")
    pads = cfg["padding"]
    pairs = [tuple(p) if isinstance(p, (list, tuple)) else (p, p) for p in
             (pads if isinstance(pads, (list, tuple)) else [pads] * 3)]
    flat = tuple(int(v) for pair in reversed(pairs) for v in pair)  # F.pad order: last dim first
    return Emit(f"nn.ZeroPad3d({flat})", f"self.{call.var}({x.get(0, 'cf')})", "cf")


@translator("Permute")
def permute(call, x: Inputs, cfg):
    dims = tuple(int(d) for d in cfg["dims"])
    return Emit(None, f"{x.get(0, 'cl')}.permute(0, {', '.join(map(str, dims))})", "cl")


@translator("RepeatVector")
def repeat_vector(call, x: Inputs, cfg):
    return Emit(None, f"{x.get(0, 'cl')}.unsqueeze(1).repeat(1, {int(cfg['n'])}, 1)", "cl")


def _axes(cfg, rank) -> list[int]:
    axis = cfg.get("axis", -1)
    return sorted(a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis]))


@translator("UnitNormalization")
def unit_norm(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    v, dims = x.get(0, "cl"), tuple(_axes(cfg, rank))
    _check(call, 0 not in dims, "the batch axis")
    return Emit(None, f"{v} * torch.rsqrt(torch.clamp(torch.square({v}).sum({dims}, keepdim=True), min=1e-12))", "cl")


@translator("LayerNormalization")
def layer_norm(call, x: Inputs, cfg):
    """nn.LayerNorm over the trailing axes Keras normalises (one or several); gamma/beta have their shape."""
    rank = len(x.shapes[0])
    axes = _axes(cfg, rank)
    _check(call, axes == list(range(rank - len(axes), rank)) and 0 not in axes, f"axis={cfg.get('axis')} (trailing axes only)")
    _check(call, not cfg.get("rms_scaling"), "rms_scaling=True")
    _check(call, cfg.get("center", True) == cfg.get("scale", True), "center and scale differ")
    w = _weights(call.layer)
    affine = bool(cfg.get("scale", True))
    shape = [int(x.shapes[0][a]) for a in axes]
    shape_src = shape[0] if len(shape) == 1 else shape
    module = f"nn.LayerNorm({shape_src}, eps={float(cfg['epsilon'])!r}, elementwise_affine={affine})"
    weights = [_w(call, "weight", w["gamma"], "same"), _w(call, "bias", w["beta"], "same")] if affine else []
    return Emit(module, f"self.{call.var}({x.get(0, 'cl')})", "cl", weights)


@translator("GroupNormalization")
def group_norm(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    _check(call, _axes(cfg, rank) == [rank - 1], f"axis={cfg.get('axis')} (only the channels axis)")
    _check(call, cfg.get("center", True) == cfg.get("scale", True), "center and scale differ")
    w = _weights(call.layer)
    affine = bool(cfg.get("scale", True))
    module = (f"nn.GroupNorm({int(cfg['groups'])}, {int(x.shapes[0][-1])}, eps={float(cfg['epsilon'])!r}, "
              f"affine={affine})")
    weights = [_w(call, "weight", w["gamma"], "same"), _w(call, "bias", w["beta"], "same")] if affine else []
    return Emit(module, f"self.{call.var}({x.get(0, 'cf')})", "cf" if rank > 2 else "cl", weights)


@translator("TimeDistributed")
def time_distributed(call, x: Inputs, cfg):
    """The wrapped layer's own translation, on every timestep: its module is this layer's (keys ``<name>.weight``).
    Keras hands a mask to the wrapped layer only where its call takes one: a layer that does not (Dense) is applied
    to every step, masked ones included, and the mask goes on unchanged to later layers (Keras' graph carries it).
    Keras calls the layer once per timestep: a BatchNormalization in train() loops over time as Keras does
    (per-step batch statistics, one running-statistics update per step); every other case folds time into the batch."""
    inner = call.layer.layer
    fn = L.TRANSLATORS.get(type(inner).__name__)
    _check(call, fn is not None and x.data() == [0], f"a wrapped {type(inner).__name__}")
    _check(call, x.mask(0) is None or not getattr(inner, "_call_has_mask_arg", False),
           f"a Keras mask, which Keras hands on to the wrapped {type(inner).__name__}")
    shape = (None, *x.shapes[0][2:])
    sub = LayerCall(inner, type(inner).__name__, inner.name, call.var, ["t"], [shape],
                    tuple(inner.compute_output_shape(shape)))
    emit = fn(sub, Inputs(sub, {"t": "cl"}), inner.get_config())
    _check(call, emit.outputs == 1, "a wrapped layer with several outputs")
    expr = to_cl(f"({emit.expr})", len(sub.out_shape)) if emit.layout == "cf" and len(sub.out_shape) >= 3 else emit.expr
    per_step = ", per_step=self.training" if type(inner).__name__ == "BatchNormalization" and inner.trainable else ""
    emit.expr = f"time_distributed({x.get(0, 'cl')}, lambda t: {expr}{per_step})"
    emit.layout = "cl"
    emit.helpers = set(emit.helpers) | {"time_distributed"}
    return emit


time_distributed.uses_mask = True  # a mask it meets is passed over: the wrapped layer's call takes none (checked)


@translator("MultiHeadAttention")
def multi_head_attention(call, x: Inputs, cfg):
    layer, node = call.layer, call.node
    _check(call, all(m is None for m in call.in_masks), "Keras masks on its inputs (query_mask/value_mask)")
    axes = cfg.get("attention_axes")
    _check(call, axes is None or [int(a) % 3 for a in axes] == [1], f"attention_axes={axes}")  # the sequence axis only
    args, kwargs = list(node.arguments.args), dict(node.arguments.kwargs)
    _check(call, not kwargs.get("return_attention_scores"), "return_attention_scores=True")
    roles = dict(zip(("query", "value", "key", "attention_mask"), args))
    roles.update({k: v for k, v in kwargs.items() if k in ("query", "value", "key", "attention_mask")})
    _check(call, not (set(kwargs) - {"query", "value", "key", "attention_mask", "use_causal_mask", "training",
                                      "return_attention_scores"}), f"arguments {sorted(kwargs)}")
    index = {id(t): i for i, t in enumerate(node.input_tensors)}
    parts = {}
    for role, t in roles.items():
        if t is None:
            continue
        _check(call, id(t) in index and len(t.shape) == (3 if role != "attention_mask" else 3), f"its {role}")
        parts[role] = x.get(index[id(t)], "cl")
    w = {v.path.split("/")[-2] + "/" + v.name: v for v in layer.weights}
    heads, key_dim = int(cfg["num_heads"]), int(cfg["key_dim"])
    value_dim, bias = int(cfg.get("value_dim") or key_dim), bool(cfg.get("use_bias", True))
    shape = lambda name: tuple(w[f"{name}/kernel"].shape)  # noqa: E731
    out_dim = shape("attention_output")[-1]
    causal, dropout = bool(kwargs.get("use_causal_mask")), float(cfg.get("dropout") or 0.0)
    module = (f"KerasMultiHeadAttention({shape('query')[0]}, {shape('key')[0]}, {shape('value')[0]}, heads={heads}, "
              f"key_dim={key_dim}, value_dim={value_dim}, out_dim={out_dim}, bias={bias}, causal={causal}"
              + (f", dropout={dropout!r})" if dropout else ")"))
    weights = []
    for keras_name, attr in (("query", "query"), ("key", "key"), ("value", "value"), ("attention_output", "output")):
        weights.append(_w(call, f"{attr}_kernel", w[f"{keras_name}/kernel"], "same"))
        if bias:
            weights.append(_w(call, f"{attr}_bias", w[f"{keras_name}/bias"], "same"))
    call_args = [parts["query"], parts["value"]] + [f"{k}={parts[k]}" for k in ("key", "attention_mask") if k in parts]
    return Emit(module, f"self.{call.var}({', '.join(call_args)})", "cl", weights, helpers={"KerasMultiHeadAttention"})

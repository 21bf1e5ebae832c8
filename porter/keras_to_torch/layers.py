"""One translator per Keras layer class: the torch module that stands for it, its line in forward, its weights.

Tensors inside the generated model are channels-first ("cf": NCHW, what torch's convolutions take) where
a layer needs it, else in the Keras order ("cl": channels last). A translator asks for its inputs in the
layout it needs (``Inputs.get``); the permute is written inline, so Flatten, Reshape and Dense see the
Keras (channels-last) order and the model computes what Keras computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from porter.errors import PorterError

TRANSLATORS = {}


class Unsupported(PorterError):
    """A Keras layer (or one of its settings) that the keras layers writer has no torch counterpart for."""


@dataclass
class Weight:
    torch_key: str  # e.g. "conv1.weight"
    keras_path: str  # the Keras variable's path, e.g. "conv1/kernel"
    transform: str  # how the Keras array becomes the torch one (TRANSFORMS)
    trainable: bool
    value: object = None  # the array itself, for a constant that is no Keras variable (Normalization's mean)


@dataclass
class Emit:
    module: str | None  # constructor source for self.<var>, or None (an op with no weights, e.g. Add)
    expr: str  # the forward expression for the layer's output
    layout: str  # "cf" or "cl": the layout of that output
    weights: list[Weight] = field(default_factory=list)
    helpers: set = field(default_factory=set)
    frozen: list[str] = field(default_factory=list)  # attributes of the module that Keras does not train
    outputs: int = 1  # how many tensors expr returns (an RNN with return_state: output and states)


def _conv_kernel(a):
    return np.transpose(a, (a.ndim - 1, a.ndim - 2, *range(a.ndim - 2)))


def _depthwise_kernel(a):  # (*k, in, mult) -> (in * mult, 1, *k): output channel c * mult + m, as Keras
    k = a.shape[:-2]
    return np.moveaxis(a.reshape(*k, -1), -1, 0)[:, None]


TRANSFORMS = {"same": lambda a: a, "dense": lambda a: np.transpose(a), "conv": _conv_kernel, "depthwise": _depthwise_kernel}


def translator(*classes):
    def register(fn):
        for cls in classes:
            TRANSLATORS[cls] = fn
        return fn
    return register


def to_cf(expr: str, rank: int) -> str:
    return f"{expr}.permute(0, {rank - 1}, {', '.join(str(i) for i in range(1, rank - 1))})"


def to_cl(expr: str, rank: int) -> str:
    return f"{expr}.permute(0, {', '.join(str(i) for i in range(2, rank))}, 1)"


class Inputs:
    """A layer call's inputs, each with its variable, layout and Keras shape."""

    def __init__(self, call, layouts: dict):
        self.call = call
        self.vars = call.inputs
        self.layouts = [layouts[v] for v in call.inputs]
        self.shapes = call.in_shapes
        self._masks = list(getattr(call, "in_masks", []) or [None] * len(call.inputs))

    def mask(self, i: int) -> str | None:
        """The variable holding input ``i``'s Keras mask (None: it has none)."""
        m = self._masks[i] if i < len(self._masks) else None
        if m is None:
            return None
        _check(self.call, m >= 0, "a Keras mask that is not one of its inputs")
        return self.vars[m]

    def data(self) -> list[int]:
        """The inputs that are not another input's mask."""
        return [i for i in range(len(self.vars)) if i not in self._masks]

    def get(self, i: int, want: str) -> str:
        """Input ``i`` as an expression in layout ``want`` ("cf", "cl" or "any")."""
        var, have, rank = self.vars[i], self.layouts[i], len(self.shapes[i])
        if want == "any" or have == want or rank < 3:
            return var
        return to_cf(var, rank) if want == "cf" else to_cl(var, rank)

    def layout(self, i: int) -> str:
        return "cl" if len(self.shapes[i]) < 3 else self.layouts[i]


def _weights(layer) -> dict:
    return {v.name: v for v in layer.weights}


def _w(call, torch_attr: str, variable, transform: str) -> Weight:
    return Weight(f"{call.var}.{torch_attr}", variable.path, transform, bool(variable.trainable))


def _check(call, condition: bool, what: str) -> None:
    if not condition:
        raise Unsupported(f"layer {call.name!r} ({call.cls}): {what}")


# -- activations ------------------------------------------------------------------------------

_ACT_MODULES = {
    "linear": "nn.Identity()", "relu": "nn.ReLU()", "relu6": "nn.ReLU6()", "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()",
    "swish": "nn.SiLU()", "silu": "nn.SiLU()", "hard_swish": "nn.Hardswish()", "hard_silu": "nn.Hardswish()",
    "hard_sigmoid": "nn.Hardsigmoid()", "elu": "nn.ELU()", "selu": "nn.SELU()", "softplus": "nn.Softplus()",
    "softsign": "nn.Softsign()", "leaky_relu": "nn.LeakyReLU(0.2)", "mish": "nn.Mish()",
    "gelu": "nn.GELU(approximate='none')",  # keras.activations.gelu: approximate=False by default
}


def activation_name(call, value) -> str:
    _check(call, isinstance(value, str), f"activation {value!r} is not a built-in Keras activation")
    _check(call, value in _ACT_MODULES or value == "softmax", f"activation {value!r} has no torch counterpart here")
    return value


def activation_module(name: str, layout: str) -> str:
    return f"nn.Softmax(dim={1 if layout == 'cf' else -1})" if name == "softmax" else _ACT_MODULES[name]


def apply_activation(name: str, expr: str, layout: str) -> str:
    """A layer's fused activation (Dense(activation='softmax')...), written as a torch function call."""
    if name == "linear":
        return expr
    if name == "softmax":
        return f"torch.softmax({expr}, dim={1 if layout == 'cf' else -1})"
    calls = {"relu": "torch.relu({})", "relu6": "F.relu6({})", "sigmoid": "torch.sigmoid({})", "tanh": "torch.tanh({})",
             "swish": "F.silu({})", "silu": "F.silu({})", "hard_swish": "F.hardswish({})", "hard_silu": "F.hardswish({})",
             "hard_sigmoid": "F.hardsigmoid({})", "elu": "F.elu({})", "selu": "F.selu({})", "softplus": "F.softplus({})",
             "softsign": "F.softsign({})", "leaky_relu": "F.leaky_relu({}, 0.2)", "mish": "F.mish({})",
             "gelu": "F.gelu({})"}
    return calls[name].format(expr)


@translator("Activation")
def activation(call, x: Inputs, cfg):
    name = activation_name(call, cfg["activation"])
    layout = x.layout(0)
    return Emit(activation_module(name, layout), f"self.{call.var}({x.get(0, 'any')})", layout)


@translator("ReLU")
def relu(call, x: Inputs, cfg):
    top, slope, threshold = cfg.get("max_value"), cfg.get("negative_slope", 0.0), cfg.get("threshold", 0.0)
    _check(call, not threshold, f"threshold={threshold} has no torch module")
    if top is None:
        module = "nn.ReLU()" if not slope else f"nn.LeakyReLU({slope!r})"
    else:
        _check(call, not slope, "max_value with negative_slope has no torch module")
        module = "nn.ReLU6()" if float(top) == 6.0 else f"nn.Hardtanh(0.0, {float(top)!r})"
    return Emit(module, f"self.{call.var}({x.get(0, 'any')})", x.layout(0))


@translator("LeakyReLU")
def leaky_relu(call, x: Inputs, cfg):
    return Emit(f"nn.LeakyReLU({cfg.get('negative_slope', 0.3)!r})", f"self.{call.var}({x.get(0, 'any')})", x.layout(0))


@translator("Softmax")
def softmax(call, x: Inputs, cfg):
    axis = cfg.get("axis", -1)
    rank = len(x.shapes[0])
    _check(call, axis in (-1, rank - 1), f"axis={axis} (only the last axis)")
    layout = x.layout(0)
    return Emit(activation_module("softmax", layout), f"self.{call.var}({x.get(0, 'any')})", layout)


@translator("Dropout")
def dropout(call, x: Inputs, cfg):
    noise = cfg.get("noise_shape")
    if noise is None:
        return Emit(f"nn.Dropout(p={float(cfg['rate'])!r})", f"self.{call.var}({x.get(0, 'any')})", x.layout(0))
    # one mask broadcast over the axes noise_shape sets to 1 (EfficientNet's per-sample drop: (None, 1, 1, 1))
    rank, layout = len(x.shapes[0]), x.layout(0)
    _check(call, len(noise) == rank, f"noise_shape {tuple(noise)} for a rank-{rank} input")
    noise = [None if d is None else int(d) for d in noise]
    if layout == "cf" and rank >= 3:  # the mask's axes in the order the tensor has here
        noise = [noise[0], noise[-1], *noise[1:-1]]
    return Emit(f"KerasDropout({float(cfg['rate'])!r}, {tuple(noise)!r})", f"self.{call.var}({x.get(0, 'any')})",
                layout, helpers={"KerasDropout"})


# -- convolutions and dense --------------------------------------------------------------------


def _padding(call, cfg, kernel, stride, dilation, helpers: set, x: str) -> tuple[str, str]:
    """(the padding argument of the torch conv, the input expression) for Keras' padding."""
    mode = cfg["padding"]
    _check(call, mode in ("valid", "same") or (mode == "causal" and len(kernel) == 1), f"padding={mode!r}")
    if mode == "valid":
        return "0", x
    if mode == "causal":  # Conv1D: (k - 1) * d zeros before the sequence, none after (Keras pads, then 'valid')
        return "0", f"F.pad({x}, ({(kernel[0] - 1) * dilation[0]}, 0))"
    totals = [(k - 1) * d for k, d in zip(kernel, dilation)]
    if all(s == 1 for s in stride) and all(t % 2 == 0 for t in totals):
        return repr(tuple(t // 2 for t in totals)), x  # symmetric: torch's own padding
    helpers.add("tf_same_pad")  # stride > 1 or an even kernel: TF pads more at the end
    return "0", f"tf_same_pad({x}, {tuple(kernel)}, {tuple(stride)}, {tuple(dilation)})"


def _conv_common(call, cfg, rank):
    _check(call, cfg.get("data_format", "channels_last") == "channels_last", "data_format='channels_first'")
    spatial = rank - 2
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * spatial  # noqa: E731
    return as_tuple(cfg["kernel_size"]), as_tuple(cfg["strides"]), as_tuple(cfg.get("dilation_rate", 1))


@translator("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "DepthwiseConv1D")
def conv(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    kernel, stride, dilation = _conv_common(call, cfg, rank)
    _check(call, not (any(s > 1 for s in stride) and any(d > 1 for d in dilation)), "strides and dilation both > 1")
    w = _weights(call.layer)
    channels = int(x.shapes[0][-1])
    if call.cls.startswith("Depthwise"):
        mult = int(cfg.get("depth_multiplier", 1))
        out, groups, kernel_w, transform = channels * mult, channels, w["kernel"], "depthwise"
    else:
        out, groups, kernel_w, transform = int(cfg["filters"]), int(cfg.get("groups", 1)), w["kernel"], "conv"
    helpers = set()
    padding, arg = _padding(call, cfg, kernel, stride, dilation, helpers, x.get(0, "cf"))
    dim = rank - 2
    module = (f"nn.Conv{dim}d({channels}, {out}, kernel_size={kernel}, stride={stride}, padding={padding}, "
              f"dilation={dilation}, groups={groups}, bias={bool(cfg.get('use_bias', True))})")
    weights = [_w(call, "weight", kernel_w, transform)]
    if cfg.get("use_bias", True):
        weights.append(_w(call, "bias", w["bias"], "same"))
    act = activation_name(call, cfg.get("activation", "linear"))
    return Emit(module, apply_activation(act, f"self.{call.var}({arg})", "cf"), "cf", weights, helpers)


@translator("SeparableConv2D", "SeparableConv1D")
def separable_conv(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    kernel, stride, dilation = _conv_common(call, cfg, rank)
    w = _weights(call.layer)
    channels, mult, out = int(x.shapes[0][-1]), int(cfg.get("depth_multiplier", 1)), int(cfg["filters"])
    helpers = {"SeparableConv2d"}
    padding, arg = _padding(call, cfg, kernel, stride, dilation, helpers, x.get(0, "cf"))
    dim = rank - 2
    bias = bool(cfg.get("use_bias", True))
    module = (f"SeparableConv2d(nn.Conv{dim}d({channels}, {channels * mult}, kernel_size={kernel}, stride={stride}, "
              f"padding={padding}, dilation={dilation}, groups={channels}, bias=False), "
              f"nn.Conv{dim}d({channels * mult}, {out}, kernel_size=1, bias={bias}))")
    weights = [_w(call, "depthwise.weight", w["depthwise_kernel"], "depthwise"),
               _w(call, "pointwise.weight", w["pointwise_kernel"], "conv")]
    if bias:
        weights.append(_w(call, "pointwise.bias", w["bias"], "same"))
    act = activation_name(call, cfg.get("activation", "linear"))
    return Emit(module, apply_activation(act, f"self.{call.var}({arg})", "cf"), "cf", weights, helpers)


@translator("Dense")
def dense(call, x: Inputs, cfg):
    w = _weights(call.layer)
    _check(call, getattr(call.layer, "lora_enabled", False) is False, "LoRA weights")
    _check(call, "kernel" in w and tuple(w["kernel"].shape)[0] == x.shapes[0][-1], "a quantized or unusual kernel")
    units, bias = int(cfg["units"]), bool(cfg.get("use_bias", True))
    module = f"nn.Linear({int(x.shapes[0][-1])}, {units}, bias={bias})"
    weights = [_w(call, "weight", w["kernel"], "dense")] + ([_w(call, "bias", w["bias"], "same")] if bias else [])
    act = activation_name(call, cfg.get("activation", "linear"))
    return Emit(module, apply_activation(act, f"self.{call.var}({x.get(0, 'cl')})", "cl"), "cl", weights)


@translator("Embedding")
def embedding(call, x: Inputs, cfg):
    w = _weights(call.layer)
    _check(call, "embeddings" in w, "a quantized embedding table")
    module = f"nn.Embedding({int(cfg['input_dim'])}, {int(cfg['output_dim'])})"
    # mask_zero: Keras writes the mask into the graph as not_equal(ids, 0) (ops.py), read by the layers that use it
    return Emit(module, f"self.{call.var}({x.get(0, 'cl')}.long())", "cl", [_w(call, "weight", w["embeddings"], "same")])


# -- normalization ------------------------------------------------------------------------------


def _single_axis(cfg):
    """A normalization layer's ``axis``: Keras saves it as an int or a one-element list."""
    axis = cfg.get("axis", -1)
    return axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis


@translator("BatchNormalization")
def batch_norm(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    axis = _single_axis(cfg)
    _check(call, axis in (-1, rank - 1), f"axis={axis} (only the channels-last axis)")
    _check(call, not cfg.get("renorm") and not cfg.get("synchronized"), "renorm or synchronized batch norm")
    _check(call, 2 <= rank <= 5, f"rank-{rank} input")
    w = _weights(call.layer)
    channels = int(x.shapes[0][-1])
    cls = {5: "KerasBatchNorm3d", 4: "KerasBatchNorm2d"}.get(rank, "KerasBatchNorm1d")
    momentum = float(f"{1.0 - float(cfg['momentum']):.12g}")  # torch's convention: Keras 0.99 is torch 0.01
    trainable = bool(call.layer.trainable)
    module = (f"{cls}({channels}, eps={float(cfg['epsilon'])!r}, momentum={momentum!r}"
              + ("" if cfg.get("scale", True) else ", scale=False") + ("" if cfg.get("center", True) else ", center=False")
              + ("" if trainable else ", keras_trainable=False") + ")")
    weights = []
    if cfg.get("scale", True):
        weights.append(_w(call, "weight", w["gamma"], "same"))
    if cfg.get("center", True):
        weights.append(_w(call, "bias", w["beta"], "same"))
    weights += [_w(call, "running_mean", w["moving_mean"], "same"), _w(call, "running_var", w["moving_variance"], "same")]
    return Emit(module, f"self.{call.var}({x.get(0, 'cf')})", "cf" if rank > 2 else "cl", weights, {cls})


@translator("Rescaling")
def rescaling(call, x: Inputs, cfg):
    scale, offset = cfg.get("scale", 1.0), cfg.get("offset", 0.0)
    _check(call, all(isinstance(v, (int, float)) for v in (scale, offset)), "per-channel scale/offset")
    return Emit(f"Rescaling({float(scale)!r}, {float(offset)!r})", f"self.{call.var}({x.get(0, 'any')})", x.layout(0),
                helpers={"Rescaling"})


@translator("Normalization")
def normalization(call, x: Inputs, cfg):
    _check(call, not cfg.get("invert"), "invert=True")
    layer = call.layer
    mean = np.asarray(layer.mean, dtype=np.float32)
    shape = list(mean.shape)
    keep = [f"{call.var}.mean", f"{call.var}.variance"]
    emit = Emit(f"KerasNormalization({shape})", f"self.{call.var}({x.get(0, 'cl')})", "cl", helpers={"KerasNormalization"})
    variance = np.asarray(layer.variance, dtype=np.float32).reshape(shape)
    emit.weights = [Weight(keep[0], f"{call.name}.mean", "same", False, mean),
                    Weight(keep[1], f"{call.name}.variance", "same", False, variance)]
    return emit


# -- pooling, padding, shapes -------------------------------------------------------------------


@translator("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
def pooling(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    _check(call, cfg.get("data_format", "channels_last") == "channels_last", "data_format='channels_first'")
    spatial = rank - 2
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * spatial  # noqa: E731
    kernel = as_tuple(cfg["pool_size"])
    stride = as_tuple(cfg.get("strides") or cfg["pool_size"])
    kind = "Max" if call.cls.startswith("Max") else "Avg"
    module = f"nn.{kind}Pool{spatial}d(kernel_size={kernel}, stride={stride})"
    arg = x.get(0, "cf")
    if cfg["padding"] == "valid":
        return Emit(module, f"self.{call.var}({arg})", "cf")
    _check(call, cfg["padding"] == "same", f"padding={cfg['padding']!r}")
    if kind == "Max":
        expr = f"self.{call.var}(tf_same_pad({arg}, {kernel}, {stride}, {(1,) * spatial}, value=float('-inf')))"
        return Emit(module, expr, "cf", helpers={"tf_same_pad"})
    return Emit(module, f"tf_avg_pool_same(self.{call.var}, {arg})", "cf", helpers={"tf_avg_pool_same", "tf_same_pad"})


@translator("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
            "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")
def global_pooling(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    _check(call, cfg.get("data_format", "channels_last") == "channels_last", "data_format='channels_first'")
    kind = "Max" if "Max" in call.cls else "Avg"
    spatial = rank - 2
    mask = x.mask(0) if call.cls == "GlobalAveragePooling1D" else None
    if mask is not None:  # Keras: the mean over the steps the mask keeps (zeros elsewhere, divided by their count)
        keep = f"{mask}.to({x.vars[0]}.dtype)[:, :, None]"
        pooled = f"(({x.get(0, 'cl')} * {keep}).sum(1, keepdim=True) / {keep}.sum(1, keepdim=True))"
        return Emit(None, pooled if cfg.get("keepdims") else f"{pooled}[:, 0]", "cl")
    module = f"nn.Adaptive{kind}Pool{spatial}d(1)"
    pooled = f"self.{call.var}({x.get(0, 'cf')})"
    if cfg.get("keepdims"):
        return Emit(module, pooled, "cf")
    return Emit(module, f"torch.flatten({pooled}, 1)", "cl")


global_pooling.uses_mask = True  # GlobalAveragePooling1D averages over the steps its mask keeps


@translator("ZeroPadding1D", "ZeroPadding2D")
def zero_padding(call, x: Inputs, cfg):
    _check(call, cfg.get("data_format", "channels_last") == "channels_last", "data_format='channels_first'")
    pads = cfg["padding"]
    spatial = len(x.shapes[0]) - 2
    pairs = [tuple(p) if isinstance(p, (list, tuple)) else (p, p) for p in
             (pads if isinstance(pads, (list, tuple)) and spatial > 1 else [pads] * spatial)]
    flat = tuple(int(v) for pair in reversed(pairs) for v in pair)  # F.pad order: last dim first
    module = f"nn.ZeroPad{spatial}d({flat})" if spatial == 2 else f"nn.ConstantPad1d({flat}, 0.0)"
    return Emit(module, f"self.{call.var}({x.get(0, 'cf')})", "cf")


@translator("Cropping1D", "Cropping2D", "Cropping3D")
def cropping(call, x: Inputs, cfg):
    _check(call, cfg.get("data_format", "channels_last") == "channels_last", "data_format='channels_first'")
    spatial = len(x.shapes[0]) - 2
    crops = cfg["cropping"]
    pairs = [tuple(crops)] if spatial == 1 else [tuple(p) for p in crops]
    _check(call, len(pairs) == spatial and all(len(p) == 2 for p in pairs), f"cropping={crops!r}")
    cuts = ", ".join(f"{int(a)}:{-int(b) if int(b) else ''}" for a, b in pairs)
    return Emit(None, f"{x.get(0, 'cf')}[:, :, {cuts}]", "cf")


@translator("Flatten")
def flatten(call, x: Inputs, cfg):
    return Emit("nn.Flatten()", f"self.{call.var}({x.get(0, 'cl')})", "cl")  # Keras order: channels last


@translator("Reshape")
def reshape(call, x: Inputs, cfg):
    target = tuple(int(d) for d in cfg["target_shape"])
    return Emit(None, f"{x.get(0, 'cl')}.reshape(-1, *{target})" if -1 not in target else
                f"{x.get(0, 'cl')}.reshape({x.vars[0]}.shape[0], *{target})", "cl")


@translator("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def merge(call, x: Inputs, cfg):
    ranks = {len(s) for s in x.shapes}
    layout = "cf" if len(ranks) == 1 and min(ranks) >= 3 and "cf" in x.layouts else "cl"
    args = [x.get(i, layout) for i in range(len(x.vars))]
    if call.cls == "Subtract":
        expr = f"{args[0]} - {args[1]}"
    elif call.cls in ("Add", "Multiply"):
        expr = (" + " if call.cls == "Add" else " * ").join(args)
    elif call.cls == "Average":
        expr = f"({' + '.join(args)}) / {len(args)}"
    else:
        fn = "torch.maximum" if call.cls == "Maximum" else "torch.minimum"
        expr = args[0]
        for a in args[1:]:
            expr = f"{fn}({expr}, {a})"
    return Emit(None, expr, layout)


@translator("Concatenate")
def concatenate(call, x: Inputs, cfg):
    rank = len(x.shapes[0])
    axis = cfg.get("axis", -1) % rank
    layout = "cf" if rank >= 3 and axis == rank - 1 and "cf" in x.layouts else "cl"
    dim = 1 if layout == "cf" else axis
    return Emit(None, f"torch.cat([{', '.join(x.get(i, layout) for i in range(len(x.vars)))}], dim={dim})", layout)

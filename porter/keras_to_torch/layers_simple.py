"""Translators for Keras' simple layers: Identity, ELU, PReLU, RMSNormalization, Dot, CenterCrop, Resizing, the
noise and dropout variants (AlphaDropout, GaussianDropout, GaussianNoise, SpatialDropout1D/2D/3D),
ActivityRegularization and AdaptiveAverage/MaxPooling1D/2D/3D.

The classes and functions under "runtime" are copied into model.py where a model uses them (codegen._helpers):
they may use only math, torch, F and nn, and each other.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from porter.keras_to_torch.layers import TRANSFORMS, Emit, Inputs, _check, _w, _weights, translator

# a Keras array of one value per channel (PReLU's alpha of shape (1, 1, C)) -> torch's (C,)
TRANSFORMS.setdefault("flat", lambda a: np.reshape(a, (-1,)))

# helpers written into model.py (in this order) and the helpers each needs
HELPERS = ["KerasPReLU", "GaussianDropout", "GaussianNoise", "keras_resize", "center_crop"]
NEEDS = {"center_crop": ["keras_resize"]}


def _channels_last(cfg) -> bool:
    fmt = cfg.get("data_format") or "channels_last"
    return fmt == "channels_last"


def _same(emit_module, call, x: Inputs, helpers=()):
    """An element-wise module: it takes its input in whatever layout it comes."""
    return Emit(emit_module, f"self.{call.var}({x.get(0, 'any')})", x.layout(0), helpers=set(helpers))


# -- activations ----------------------------------------------------------------------------------


@translator("Identity")
def identity(call, x: Inputs, cfg):
    return Emit(None, x.get(0, "any"), x.layout(0))


@translator("ELU")
def elu(call, x: Inputs, cfg):
    # Keras: x if x > 0 else alpha * (exp(x) - 1), as torch's ELU
    return _same(f"nn.ELU(alpha={float(cfg.get('alpha', 1.0))!r})", call, x)


@translator("PReLU")
def prelu(call, x: Inputs, cfg):
    """Keras: relu(x) - alpha * relu(-x), alpha of the input's shape (batch left out) with 1 on shared_axes.
    nn.PReLU where alpha is one value or one per channel (the last axis); else KerasPReLU (alpha as Keras has it)."""
    alpha = _weights(call.layer)["alpha"]
    shape, rank = tuple(int(d) for d in alpha.shape), len(x.shapes[0])
    if all(d == 1 for d in shape):
        return Emit("nn.PReLU(1)", f"self.{call.var}({x.get(0, 'any')})", x.layout(0),
                    [_w(call, "weight", alpha, "flat")])
    if all(d == 1 for d in shape[:-1]):  # per channel: nn.PReLU reads channels on dim 1 (channels-first)
        layout = "cf" if rank >= 3 else "cl"
        return Emit(f"nn.PReLU({shape[-1]})", f"self.{call.var}({x.get(0, layout)})", layout,
                    [_w(call, "weight", alpha, "flat")])
    return Emit(f"KerasPReLU({shape})", f"self.{call.var}({x.get(0, 'cl')})", "cl", [_w(call, "alpha", alpha, "same")],
                helpers={"KerasPReLU"})


# -- normalization and merging --------------------------------------------------------------------


@translator("RMSNormalization")
def rms_norm(call, x: Inputs, cfg):
    """Keras: x * rsqrt(mean(x^2 over axis) + epsilon) * scale, as nn.RMSNorm over the same trailing axes.
    (Keras' scale has the shape of the normalised axes and broadcasts from the end: only trailing axes work there.)"""
    rank = len(x.shapes[0])
    axis = cfg.get("axis", -1)
    axes = sorted(int(a) % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    _check(call, 0 not in axes and axes == list(range(rank - len(axes), rank)), f"axis={axis} (trailing axes only)")
    shape = [int(x.shapes[0][a]) for a in axes]
    module = f"nn.RMSNorm({shape}, eps={float(cfg.get('epsilon', 1e-6))!r})"
    scale = _weights(call.layer)["scale"]
    return Emit(module, f"self.{call.var}({x.get(0, 'cl')})", "cl", [_w(call, "weight", scale, "same")])


@translator("Dot")
def dot(call, x: Inputs, cfg):
    """keras.layers.Dot's batch_dot as one einsum: x's axes (its summed one left out), then y's (batch and summed
    one left out); a rank-1 result gets a trailing 1 as Keras gives it. normalize: Keras' L2 normalisation,
    x * min(rsqrt(sum(x^2)), 1 / epsilon), along each summed axis first."""
    import keras

    _check(call, len(x.vars) == 2, f"{len(x.vars)} inputs")
    ranks = [len(s) for s in x.shapes]
    axes = cfg["axes"]
    axes = [axes, axes] if isinstance(axes, int) else list(axes)
    axes = [int(a) % r if int(a) < 0 else int(a) for a, r in zip(axes, ranks)]
    _check(call, 0 not in axes, f"axes={cfg['axes']} (the batch axis)")
    args = [x.get(i, "cl") for i in range(2)]
    if cfg.get("normalize"):
        cap = 1.0 / float(keras.config.epsilon())
        args = [f"{a} * torch.clamp(torch.rsqrt(torch.square({a}).sum({ax}, keepdim=True)), max={cap!r})"
                for a, ax in zip(args, axes)]
    letters = iter("cdefghijklmnopqrstuvwxyz")
    left = ["b"] + [next(letters) for _ in range(ranks[0] - 1)]
    right = ["b"] + [next(letters) for _ in range(ranks[1] - 1)]
    right[axes[1]] = left[axes[0]]  # the summed axis
    out = [c for i, c in enumerate(left) if i != axes[0]] + [c for i, c in enumerate(right) if i not in (0, axes[1])]
    expr = f"torch.einsum('{''.join(left)},{''.join(right)}->{''.join(out)}', {args[0]}, {args[1]})"
    return Emit(None, f"{expr}.unsqueeze(1)" if len(out) == 1 else expr, "cl")


# -- images -------------------------------------------------------------------------------------


def _image_input(call, x: Inputs, cfg):
    """(NCHW expression, its layout name): channels_last images are permuted, channels_first ones are NCHW in Keras."""
    _check(call, len(x.shapes[0]) == 4, f"a rank-{len(x.shapes[0])} input (batches of images only)")
    return (x.get(0, "cf"), "cf") if _channels_last(cfg) else (x.get(0, "cl"), "cl")


@translator("Resizing")
def resizing(call, x: Inputs, cfg):
    """tf.image.resize: bilinear is F.interpolate's (half-pixel centres, with or without antialias), nearest is
    'nearest-exact' (half-pixel centres; antialias has no effect). crop_to_aspect_ratio crops the centre first."""
    mode = cfg.get("interpolation", "bilinear")
    _check(call, mode in ("bilinear", "nearest"), f"interpolation={mode!r} (only bilinear and nearest)")
    _check(call, not cfg.get("pad_to_aspect_ratio"), "pad_to_aspect_ratio=True")
    arg, layout = _image_input(call, x, cfg)
    size = (int(cfg["height"]), int(cfg["width"]))
    antialias = bool(cfg.get("antialias")) and mode == "bilinear"
    expr = f"keras_resize({arg}, {size}, {mode!r}, antialias={antialias}, crop={bool(cfg.get('crop_to_aspect_ratio'))})"
    return Emit(None, expr, layout, helpers={"keras_resize"})


@translator("CenterCrop")
def center_crop_layer(call, x: Inputs, cfg):
    arg, layout = _image_input(call, x, cfg)
    return Emit(None, f"center_crop({arg}, {int(cfg['height'])}, {int(cfg['width'])})", layout,
                helpers={"center_crop", "keras_resize"})


@translator("AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
            "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D")
def adaptive_pooling(call, x: Inputs, cfg):
    """Keras' windows run from floor(i * n / out) to ceil((i + 1) * n / out) (its small/big two-pool gather),
    torch's adaptive pooling's very windows: nn.Adaptive{Avg,Max}Pool on channels-first."""
    spatial = len(x.shapes[0]) - 2
    size = cfg["output_size"]
    size = tuple(int(s) for s in (size if isinstance(size, (list, tuple)) else [size] * spatial))
    kind = "Max" if "Max" in call.cls else "Avg"
    arg, layout = (x.get(0, "cf"), "cf") if _channels_last(cfg) else (x.get(0, "cl"), "cl")
    module = f"nn.Adaptive{kind}Pool{spatial}d({size[0] if spatial == 1 else size})"
    return Emit(module, f"self.{call.var}({arg})", layout)


# -- regularization: identity at inference ----------------------------------------------------------


@translator("AlphaDropout")
def alpha_dropout(call, x: Inputs, cfg):
    _check(call, cfg.get("noise_shape") is None, f"noise_shape={cfg.get('noise_shape')}")
    # Keras' formula (SELU's alpha', then a * x + b keeping mean and variance) is torch's F.alpha_dropout's
    return _same(f"nn.AlphaDropout(p={float(cfg['rate'])!r})", call, x)


@translator("GaussianDropout")
def gaussian_dropout(call, x: Inputs, cfg):
    return _same(f"GaussianDropout({float(cfg['rate'])!r})", call, x, {"GaussianDropout"})


@translator("GaussianNoise")
def gaussian_noise(call, x: Inputs, cfg):
    return _same(f"GaussianNoise({float(cfg['stddev'])!r})", call, x, {"GaussianNoise"})


@translator("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")
def spatial_dropout(call, x: Inputs, cfg):
    """Keras drops whole channels (noise shape (batch, 1, ..., channels)): torch's Dropout1d/2d/3d on channels-first."""
    spatial = len(x.shapes[0]) - 2
    arg, layout = (x.get(0, "cf"), "cf") if _channels_last(cfg) else (x.get(0, "cl"), "cl")
    return Emit(f"nn.Dropout{spatial}d(p={float(cfg['rate'])!r})", f"self.{call.var}({arg})", layout)


@translator("ActivityRegularization")
def activity_regularization(call, x: Inputs, cfg):
    # Keras adds l1 * sum(|y|) + l2 * sum(y^2) of the output to the training loss (model.losses): model.py's
    # forward has no place for that loss, so training would differ (porter's --train compares the MSE alone)
    l1, l2 = float(cfg.get("l1") or 0.0), float(cfg.get("l2") or 0.0)
    _check(call, l1 == 0.0 and l2 == 0.0, f"l1={l1}, l2={l2}: Keras adds this activity penalty to the training loss, "
           "which a torch forward cannot carry (set both to 0 or remove the layer to convert)")
    return Emit(None, x.get(0, "any"), x.layout(0))


# -- runtime: copied into model.py where used ---------------------------------------------------------


class KerasPReLU(nn.Module):
    """Keras PReLU with alpha of any shape (Keras' own: the input's shape, 1 on shared axes, channels last):
    relu(x) - alpha * relu(-x)."""

    def __init__(self, shape):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        return F.relu(x) - self.alpha * F.relu(-x)


class GaussianDropout(nn.Dropout):
    """Keras GaussianDropout: in train(), x times N(1, sqrt(p / (1 - p))) noise; identity in eval(). An nn.Dropout,
    so whatever sets dropout rates (verify --train sets them to 0) finds it."""

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return x * (1.0 + math.sqrt(self.p / (1.0 - self.p)) * torch.randn_like(x))


class GaussianNoise(nn.Module):
    """Keras GaussianNoise: in train(), x plus N(0, stddev) noise; identity in eval()."""

    def __init__(self, stddev):
        super().__init__()
        self.stddev = stddev

    def forward(self, x):
        if not self.training or self.stddev == 0.0:
            return x
        return x + self.stddev * torch.randn_like(x)


def keras_resize(x, size, mode, antialias=False, crop=False):
    """Keras Resizing (tf.image.resize) of NCHW images to ``size``; ``crop``: first the centred box of the target's
    aspect ratio (Keras' crop_to_aspect_ratio / smart_resize, integer box as Keras computes it)."""
    if crop:
        height, width = x.shape[2], x.shape[3]
        crop_h = max(min(height, int(float(width * size[0]) / size[1])), 1)
        crop_w = max(min(width, int(float(height * size[1]) / size[0])), 1)
        top, left = int(float(height - crop_h) / 2), int(float(width - crop_w) / 2)
        x = x[:, :, top:top + crop_h, left:left + crop_w]
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def center_crop(x, height, width):
    """Keras CenterCrop of NCHW images: the centred height x width box, or, where the image is smaller on an axis,
    Keras' smart_resize (the centred box of that aspect ratio, resized bilinearly)."""
    top, left = x.shape[2] - height, x.shape[3] - width
    if top < 0 or left < 0:
        return keras_resize(x, (height, width), "bilinear", crop=True)
    return x[:, :, top // 2:top // 2 + height, left // 2:left // 2 + width]

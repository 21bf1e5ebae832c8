"""What a generated model.py carries besides torch: copied in as source where the model uses it.

Keras BatchNormalization differs from torch's in two ways that matter for training:
- the running variance: Keras updates moving_variance with the *biased* batch variance (tf.nn.moments),
  torch's BatchNorm with the unbiased one (n / (n - 1) times larger);
- momentum: Keras keeps ``moving * momentum + batch * (1 - momentum)``, torch
  ``running * (1 - momentum) + batch * momentum``: Keras 0.99 is torch 0.01.
KerasBatchNorm1d/2d are torch's BatchNorm modules (same buffers and parameters) whose forward does it
the Keras way; in eval() both normalise with the running statistics.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def keras_batch_norm(bn, x):
    """Keras BatchNormalization over dim 1 (channels): batch statistics in train() (biased variance,
    which also updates running_var), running statistics in eval() or when Keras did not train the layer."""
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    if bn.training and bn.keras_trainable:
        mean = x.mean(dims)
        var = torch.square(x - mean.detach().view(shape)).mean(dims)  # tf.nn.moments: biased
        with torch.no_grad():
            bn.running_mean.mul_(1.0 - bn.momentum).add_(mean * bn.momentum)
            bn.running_var.mul_(1.0 - bn.momentum).add_(var * bn.momentum)
            bn.num_batches_tracked.add_(1)
    else:
        mean, var = bn.running_mean, bn.running_var
    inv = torch.rsqrt(var + bn.eps)  # as tf.nn.batch_normalization
    if bn.weight is not None:
        inv = inv * bn.weight
    shift = -mean * inv if bn.bias is None else bn.bias - mean * inv
    return x * inv.view(shape) + shift.view(shape)


def keras_batch_norm_options(bn, scale, center, keras_trainable):
    """Keras' scale=False/center=False drop gamma/beta; keras_trainable=False (a frozen BatchNormalization)
    is kept for --train, where Keras then normalises with the moving statistics."""
    bn.keras_trainable = keras_trainable
    if not scale:
        bn.register_parameter("weight", None)
    if not center:
        bn.register_parameter("bias", None)


class KerasBatchNorm(nn.Module):
    """Keras' training semantics (see keras_batch_norm) for the torch BatchNorm class it is mixed into;
    ``momentum`` is torch's (1 - Keras')."""

    def __init__(self, num_features, eps, momentum, scale=True, center=True, keras_trainable=True):
        super().__init__(num_features, eps=eps, momentum=momentum)
        keras_batch_norm_options(self, scale, center, keras_trainable)

    def forward(self, x):
        return keras_batch_norm(self, x)


class KerasBatchNorm1d(KerasBatchNorm, nn.BatchNorm1d):
    pass


class KerasBatchNorm2d(KerasBatchNorm, nn.BatchNorm2d):
    pass


class KerasBatchNorm3d(KerasBatchNorm, nn.BatchNorm3d):
    pass


def tf_same_pad(x, kernel, stride, dilation, value=0.0):
    """Pad the spatial dims (2...) of an NC... tensor as TensorFlow's padding='same' does: the
    total is what makes the output size ceil(size / stride), the extra element at the end."""
    pads = []
    for size, k, s, d in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), reversed(dilation)):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def tf_avg_pool_same(pool, x):
    """TensorFlow's average pooling with padding='same': the mean over the window's elements inside the input."""
    kernel, stride = pool.kernel_size, pool.stride
    kernel = (kernel,) * (x.dim() - 2) if isinstance(kernel, int) else kernel
    stride = (stride,) * (x.dim() - 2) if isinstance(stride, int) else stride
    ones = torch.ones_like(x[:1, :1])
    dilation = (1,) * len(kernel)
    return pool(tf_same_pad(x, kernel, stride, dilation)) / pool(tf_same_pad(ones, kernel, stride, dilation))


def frozen(module, *names):
    """Turn the named parameters of ``module`` (dotted: inside a submodule) into buffers: weights Keras does not train."""
    for name in names:
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        attr = name.rsplit(".", 1)[-1]
        value = getattr(owner, attr)
        if isinstance(value, nn.Parameter):
            delattr(owner, attr)
            owner.register_buffer(attr, value.detach())
            if isinstance(owner, nn.RNNBase):  # torch's RNNs run from a list of their weights: rebuild it
                owner._init_flat_weights()
    return module


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D: a depthwise nn.Conv2d (groups = in channels) then a 1x1 pointwise nn.Conv2d."""

    def __init__(self, depthwise, pointwise):
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class Rescaling(nn.Module):
    """Keras Rescaling: x * scale + offset, scale and offset rounded to float32 as Keras does in every dtype
    (TensorFlow backend: tf.cast of a Python float goes through a float32 tensor, so a float64 Keras model
    multiplies by float32(1/255), 6e-8 off 1/255; in float32 nothing changes)."""

    def __init__(self, scale, offset):
        super().__init__()
        self.scale = torch.tensor(scale, dtype=torch.float32).item()
        self.offset = torch.tensor(offset, dtype=torch.float32).item()

    def forward(self, x):
        return x * self.scale + self.offset


class KerasNormalization(nn.Module):
    """Keras Normalization: (x - mean) / max(sqrt(variance), 1e-7), mean and variance broadcast in the Keras layout."""

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))

    def forward(self, x):
        return (x - self.mean) / torch.clamp(torch.sqrt(self.variance), min=1e-7)


class LayerScale(nn.Module):
    """ConvNeXt's LayerScale: x * gamma, one trained scale per channel (the last axis, as Keras)."""

    def __init__(self, channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.gamma


class KerasDropout(nn.Dropout):
    """Keras Dropout with noise_shape: one keep/drop mask of ``noise_shape`` (None: the input's size on that
    axis) broadcast over the others, kept values scaled by 1 / (1 - p); identity in eval(). An nn.Dropout, so
    whatever sets dropout rates (verify --train sets them to 0) finds it."""

    def __init__(self, p, noise_shape):
        super().__init__(p)
        self.noise_shape = noise_shape

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        shape = [n if d is None else d for n, d in zip(x.shape, self.noise_shape)]
        keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

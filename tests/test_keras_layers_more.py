"""The keras layers writer on shape, normalization, transposed-convolution, wrapper and attention layers:
UpSampling1D/2D/3D, Conv1D/2D/3DTranspose, Conv3D, Cropping1D/2D/3D, ZeroPadding3D, TimeDistributed,
MultiHeadAttention, GroupNormalization, UnitNormalization, LayerNormalization over several axes, Permute and
RepeatVector. Each matches Keras at two input shapes (fp32, abs 1e-5); those with weights take one float64
`--train` step as Keras does."""

import numpy as np
import pytest
from keras_layers_support import check, informative, keras


def _run(name, shape, build, tmp_path, batches=(2, 3), train=True, shape2=None):
    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input(shape, name="x")
    model = informative(k.Model(x, build(k, x), name=name))
    rng = np.random.default_rng(0)
    full = lambda s: tuple(8 if d is None else d for d in s)  # noqa: E731
    feeds = [[rng.normal(size=(batches[0], *full(shape))).astype("float32")],
             [rng.normal(size=(batches[1], *full(shape2 or shape))).astype("float32")]]
    return check(model, feeds, tmp_path, train=train)


CASES = {
    "upsampling1d": ((None, 3), lambda k, x: k.layers.Dense(2, name="d")(k.layers.UpSampling1D(3, name="up")(x)), (5, 3)),
    "upsampling2d": ((None, None, 3), lambda k, x: k.layers.Conv2D(2, 3, name="c")(k.layers.UpSampling2D((2, 3), name="up")(x)), (5, 4, 3)),
    "upsampling2d_bilinear": ((None, None, 3), lambda k, x: k.layers.Conv2D(2, 1, name="c")(
        k.layers.UpSampling2D(2, interpolation="bilinear", name="up")(x)), (3, 5, 3)),
    "upsampling3d": ((None, None, None, 2), lambda k, x: k.layers.Conv3D(2, 1, name="c")(k.layers.UpSampling3D((1, 2, 2), name="up")(x)), (3, 2, 4, 2)),
    "conv1d_transpose": ((None, 3), lambda k, x: k.layers.Conv1DTranspose(4, 3, strides=2, padding="same", name="ct")(x), (5, 3)),
    "conv2d_transpose_valid": ((None, None, 3), lambda k, x: k.layers.Conv2DTranspose(4, (3, 2), strides=(2, 1), name="ct")(x), (5, 6, 3)),
    "conv2d_transpose_same": ((None, None, 3), lambda k, x: k.layers.Conv2DTranspose(4, 4, strides=2, padding="same", activation="relu", name="ct")(x), (3, 5, 3)),
    "conv2d_transpose_small_kernel": ((None, None, 3), lambda k, x: k.layers.Conv2DTranspose(2, 1, strides=2, padding="same", name="ct")(x), (3, 5, 3)),
    "conv3d_transpose": ((None, None, None, 2), lambda k, x: k.layers.Conv3DTranspose(3, 3, strides=(1, 2, 2), padding="same", name="ct")(x), (2, 3, 5, 2)),
    "conv3d": ((None, None, None, 2), lambda k, x: k.layers.Conv3D(3, 3, strides=2, padding="same", name="c3")(x), (5, 6, 7, 2)),
    "cropping1d": ((None, 3), lambda k, x: k.layers.Dense(2, name="d")(k.layers.Cropping1D((1, 2), name="crop")(x)), (6, 3)),
    "cropping2d": ((None, None, 3), lambda k, x: k.layers.Conv2D(2, 1, name="c")(k.layers.Cropping2D(((1, 0), (2, 1)), name="crop")(x)), (5, 7, 3)),
    "cropping3d": ((None, None, None, 2), lambda k, x: k.layers.Conv3D(2, 1, name="c")(k.layers.Cropping3D(((1, 0), (0, 1), (1, 1)), name="crop")(x)), (4, 5, 6, 2)),
    "zeropadding3d": ((None, None, None, 2), lambda k, x: k.layers.Conv3D(2, 2, name="c")(k.layers.ZeroPadding3D(((1, 0), (0, 2), (1, 1)), name="pad")(x)), (3, 2, 4, 2)),
    "time_distributed_dense": ((None, 4), lambda k, x: k.layers.TimeDistributed(k.layers.Dense(3, activation="tanh"), name="td")(x), (7, 4)),
    "time_distributed_conv2d": ((4, 6, 6, 2), lambda k, x: k.layers.TimeDistributed(k.layers.Conv2D(3, 3, strides=2, padding="same"), name="td")(x), None),
    "group_norm": ((None, None, 6), lambda k, x: k.layers.GroupNormalization(3, name="gn")(k.layers.Conv2D(6, 1, name="c")(x)), (5, 3, 6)),
    "group_norm_seq": ((None, 4), lambda k, x: k.layers.GroupNormalization(2, epsilon=1e-5, name="gn")(x), (9, 4)),
    "unit_norm": ((None, 4), lambda k, x: k.layers.UnitNormalization(name="un")(k.layers.Dense(4, name="d")(x)), (3, 4)),
    "unit_norm_axes": ((5, 4), lambda k, x: k.layers.UnitNormalization(axis=[1, 2], name="un")(k.layers.Dense(4, name="d")(x)), None),
    "layer_norm_axes": ((None, 5, 4), lambda k, x: k.layers.LayerNormalization(axis=[-2, -1], name="ln")(x), (3, 5, 4)),
    "layer_norm_hwc": ((4, 4, 3), lambda k, x: k.layers.LayerNormalization(axis=[1, 2, 3], name="ln")(k.layers.Conv2D(3, 1, name="c")(x)), None),
    "permute": ((4, 6, 3), lambda k, x: k.layers.Dense(2, name="d")(k.layers.Permute((3, 1, 2), name="perm")(k.layers.Conv2D(3, 1, name="c")(x))), None),
    "repeat_vector": ((5,), lambda k, x: k.layers.Dense(2, name="d")(k.layers.RepeatVector(3, name="rep")(x)), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_keras_and_trains(case, tmp_path):
    shape, build, shape2 = CASES[case]
    _run(case, shape, build, tmp_path, shape2=shape2)


@pytest.mark.parametrize("variant", ["self", "cross_key_mask", "causal", "dropout"])
def test_multi_head_attention(variant, tmp_path):
    k = keras()
    k.utils.set_random_seed(0)
    q = k.Input((None, 6), name="q")
    v = k.Input((None, 4), name="v")
    # dropout: identity at inference; verify --train sets Keras' and torch's rate to 0
    mha = k.layers.MultiHeadAttention(2, 3, value_dim=5, output_shape=7, dropout=0.2 if variant == "dropout" else 0.0,
                                      name="mha")
    inputs = [q]
    if variant in ("self", "dropout"):
        out = mha(q, q)
    elif variant == "causal":
        out = mha(q, q, use_causal_mask=True)
    else:
        key = k.Input((None, 3), name="key")
        mask = k.Input((None, None), name="mask")
        out = mha(q, v, key=key, attention_mask=mask)
        inputs = [q, v, key, mask]
    model = informative(k.Model(inputs, out, name=f"mha_{variant}"))
    rng = np.random.default_rng(0)
    feeds = []
    for batch, t, s in ((2, 5, 4), (3, 3, 6)):
        feed = [rng.normal(size=(batch, t, 6)).astype("float32")]
        if variant == "cross_key_mask":
            m = (rng.uniform(size=(batch, t, s)) > 0.3).astype("float32")
            m[:, :, 0] = 1.0
            feed += [rng.normal(size=(batch, s, 4)).astype("float32"), rng.normal(size=(batch, s, 3)).astype("float32"), m]
        feeds.append(feed)
    code = check(model, feeds, tmp_path, train=variant != "cross_key_mask")
    assert "self.mha = KerasMultiHeadAttention(" in code
    assert ("dropout=0.2" in code) == (variant == "dropout")

"""The keras layers writer on simple layers (and Conv1D padding="causal"): Identity, ELU, PReLU, RMSNormalization, Dot, CenterCrop, Resizing,
AlphaDropout, GaussianDropout, GaussianNoise, SpatialDropout1D/2D/3D, ActivityRegularization and
AdaptiveAverage/MaxPooling1D/2D/3D. Each matches Keras at two input shapes (fp32, abs 1e-5); a model with weights
takes one float64 `--train` step as Keras does (dropout rates 0 there). A wrongly mapped PReLU alpha or RMSNorm
scale fails the comparison; an ActivityRegularization with a penalty is refused."""

import numpy as np
import pytest
from keras_layers_support import check, informative, keras


def _alphas(model):
    """PReLU's alpha away from its init (zeros), different per element: a misplaced one must show."""
    rng = np.random.default_rng(1)
    for v in model.weights:
        if v.path.endswith("/alpha"):
            v.assign(rng.uniform(0.05, 0.6, v.shape).astype("float32"))
    return model


def _run(name, shape, build, tmp_path, shape2=None, train=True, batches=(2, 3)):
    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input(shape, name="x")
    model = _alphas(informative(k.Model(x, build(k, x), name=name)))
    rng = np.random.default_rng(0)
    full = lambda s: tuple(8 if d is None else d for d in s)  # noqa: E731
    feeds = [[rng.normal(size=(batches[0], *full(shape))).astype("float32")],
             [rng.normal(size=(batches[1], *full(shape2 or shape))).astype("float32")]]
    code = check(model, feeds, tmp_path, train=train is True)
    if train == "float32":  # TF has no float64 kernel for this layer (MaxPool3D, antialiased resize's gradient)
        from porter.verifiers.training import verify_training

        trained = verify_training(tmp_path / f"{name}.keras", tmp_path / f"{name}-torch", lr=0.1)  # float64 asked
        assert trained.passed and trained.dtype == "float32", trained.to_dict()
        assert any("no float64 kernel" in n for n in trained.notes), trained.notes
    return code


def _dense(k, y, name="d"):
    return k.layers.Dense(3, name=name)(y)


def _conv(k, y, dim=2):
    return getattr(k.layers, f"Conv{dim}D")(3, 1, name="c")(y)


CASES = {
    # name: (input shape, build, second shape (None: the first, another batch), train)
    "identity": ((None, 4), lambda k, x: _dense(k, k.layers.Identity(name="id")(x)), (5, 4), True),
    "elu": ((None, 4), lambda k, x: k.layers.ELU(alpha=0.7, name="elu")(_dense(k, x)), (5, 4), True),
    "prelu_per_channel": ((None, None, 3), lambda k, x: k.layers.PReLU(shared_axes=[1, 2], name="pr")(_conv(k, x)),
                          (5, 7, 3), True),
    "prelu_full": ((5, 4), lambda k, x: k.layers.PReLU(name="pr")(_dense(k, x)), None, True),
    "prelu_one": ((None, 4), lambda k, x: k.layers.PReLU(shared_axes=[1, 2], name="pr")(_dense(k, x)), (6, 4), True),
    "prelu_dense": ((4,), lambda k, x: k.layers.PReLU(name="pr")(_dense(k, x)), None, True),
    "rms_norm": ((None, 4), lambda k, x: k.layers.RMSNormalization(name="rms")(_dense(k, x)), (5, 4), True),
    "rms_norm_axes": ((5, 4), lambda k, x: k.layers.RMSNormalization(axis=[-2, -1], epsilon=1e-3, name="rms")(_dense(k, x)),
                      None, True),
    "center_crop": ((None, None, 3), lambda k, x: k.layers.CenterCrop(4, 5, name="cc")(_conv(k, x)), (7, 6, 3), True),
    "center_crop_smaller": ((None, None, 3), lambda k, x: k.layers.CenterCrop(5, 4, name="cc")(_conv(k, x)), (3, 9, 3), True),
    "conv1d_causal": ((None, 3), lambda k, x: k.layers.Conv1D(4, 3, padding="causal", dilation_rate=2, name="cc1")(x),
                      (9, 3), True),
    "conv1d_causal_strided": ((None, 3), lambda k, x: k.layers.Conv1D(4, 4, strides=2, padding="causal", name="cc2")(x),
                              (11, 3), True),
    "batchnorm_rank5": ((None, None, None, 3), lambda k, x: k.layers.BatchNormalization(name="bn5")(
        k.layers.Conv3D(4, 1, name="c3")(x)), (2, 4, 6, 3), True),
    # a preprocessing layer's call defaults to training=True: the BatchNorm after it must still be in inference mode
    # on the Keras side of the comparison (the runner passes training=False)
    "crop_then_batchnorm": ((None, None, 3), lambda k, x: k.layers.BatchNormalization(name="bn")(
        k.layers.CenterCrop(4, 5, name="cc")(_conv(k, x))), (7, 6, 3), True),
    # Keras' default names are the helpers' names in model.py: the layers' variables must not shadow them
    "helper_names": ((None, None, 3), lambda k, x: k.layers.CenterCrop(4, 5, name="center_crop")(
        k.layers.Resizing(9, 8, name="keras_resize")(_conv(k, x))), (7, 6, 3), True),
    "resizing_bilinear": ((None, None, 3), lambda k, x: k.layers.Resizing(5, 7, name="rs")(_conv(k, x)), (3, 10, 3), True),
    "resizing_nearest": ((None, None, 3), lambda k, x: k.layers.Resizing(11, 6, interpolation="nearest", name="rs")(_conv(k, x)),
                         (5, 7, 3), True),
    "resizing_antialias_crop": ((None, None, 3), lambda k, x: k.layers.Resizing(
        3, 4, antialias=True, crop_to_aspect_ratio=True, name="rs")(_conv(k, x)), (13, 7, 3), "float32"),
    "resizing_channels_first": ((3, None, None), lambda k, x: k.layers.Resizing(4, 6, data_format="channels_first",
                                                                              name="rs")(x), (3, 5, 7), False),
    "alpha_dropout": ((None, 4), lambda k, x: _dense(k, k.layers.AlphaDropout(0.3, name="drop")(x)), (5, 4), True),
    "gaussian_dropout": ((None, 4), lambda k, x: _dense(k, k.layers.GaussianDropout(0.3, name="drop")(x)), (5, 4), True),
    # no --train: porter's training step zeroes Keras' dropout rates, not GaussianNoise's stddev (its noise cannot agree)
    "gaussian_noise": ((None, 4), lambda k, x: _dense(k, k.layers.GaussianNoise(0.3, name="noise")(x)), (5, 4), False),
    "spatial_dropout1d": ((None, 4), lambda k, x: _dense(k, k.layers.SpatialDropout1D(0.3, name="drop")(x)), (5, 4), True),
    "spatial_dropout2d": ((None, None, 3), lambda k, x: _conv(k, k.layers.SpatialDropout2D(0.3, name="drop")(x)),
                          (5, 7, 3), True),
    "spatial_dropout3d": ((None, None, None, 2), lambda k, x: _conv(k, k.layers.SpatialDropout3D(0.3, name="drop")(x), 3),
                          (3, 2, 4, 2), True),
    "activity_regularization": ((None, 4), lambda k, x: _dense(k, k.layers.ActivityRegularization(name="ar")(x)), (5, 4), True),
}
# Keras' adaptive pooling needs static sizes: two models (two input shapes) per class; 3 -> 5 enlarges
for _dim, _shapes, _out in ((1, [(10, 3), (3, 3)], 4), (2, [(7, 9, 3), (3, 2, 3)], (3, 5)), (3, [(5, 4, 6, 2), (2, 3, 3, 2)], 3)):
    for _kind in ("Average", "Max"):
        for _i, _shape in enumerate(_shapes):
            CASES[f"adaptive_{_kind.lower()}{_dim}d_{_i}"] = (
                _shape, lambda k, x, d=_dim, kind=_kind, out=_out: getattr(k.layers, f"Adaptive{kind}Pooling{d}D")(
                    out, name="pool")(_conv(k, x, d)), None, "float32" if _dim == 3 else True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_keras_and_trains(case, tmp_path):
    shape, build, shape2, train = CASES[case]
    _run(case, shape, build, tmp_path, shape2=shape2, train=train)


def test_written_modules(tmp_path):
    """torch's own modules where they compute what Keras does."""
    code = _run("prelu_per_channel", *CASES["prelu_per_channel"][:2], tmp_path, shape2=(5, 7, 3))
    assert "self.pr = nn.PReLU(3)" in code
    for sub in "bcd":
        (tmp_path / sub).mkdir()
    code = _run("prelu_full", *CASES["prelu_full"][:2], tmp_path / "b")
    assert "self.pr = KerasPReLU((5, 3))" in code
    code = _run("spatial_dropout2d", *CASES["spatial_dropout2d"][:2], tmp_path / "c", shape2=(5, 7, 3))
    assert "self.drop = nn.Dropout2d(p=0.3)" in code
    code = _run("resizing_nearest", *CASES["resizing_nearest"][:2], tmp_path / "d", shape2=(5, 7, 3))
    assert "keras_resize(" in code and "'nearest'" in code


@pytest.mark.parametrize("variant", ["rank2", "seq_last", "seq_mixed_normalize", "rank2_rank3"])
def test_dot(variant, tmp_path):
    k = keras()
    k.utils.set_random_seed(0)
    shapes, axes, normalize = {"rank2": ([(4,), (4,)], 1, False), "seq_last": ([(None, 3), (None, 3)], (2, 2), False),
                               "seq_mixed_normalize": ([(5, 3), (4, 5)], (1, 2), True),
                               "rank2_rank3": ([(3,), (3, 4)], (1, 1), False)}[variant]
    a, b = k.Input(shapes[0], name="a"), k.Input(shapes[1], name="b")
    ya = k.layers.Dense(shapes[0][-1], name="da")(a)  # weights: the --train step runs
    out = k.layers.Dot(axes=axes, normalize=normalize, name="dot")([ya, b])
    if variant == "rank2":  # (batch, 1): one number at batch 1, which porter's check calls degenerate
        out = k.layers.Dense(3, name="after")(out)
    model = informative(k.Model([a, b], out, name=f"dot_{variant}"))
    rng = np.random.default_rng(0)
    feeds = []
    for batch, t in ((2, 5), (3, 2)):
        full = lambda s: tuple(t if d is None else d for d in s)  # noqa: E731
        feeds.append([rng.normal(size=(batch, *full(s))).astype("float32") for s in shapes])
    check(model, feeds, tmp_path)


def test_dropouts_act_in_train_mode(tmp_path):
    """Identity in eval(); in train() what torch's counterparts do with Keras' rate: whole channels dropped by
    SpatialDropout2D, GaussianDropout's multiplicative noise of mean 1, GaussianNoise's additive noise."""
    import torch
    from tests_support import convert_keras_strict, load_written_model

    k = keras()
    x = k.Input((6, 6, 8), name="x")
    y = k.layers.SpatialDropout2D(0.5, name="sd")(x)
    y = k.layers.GaussianDropout(0.2, name="gd")(y)
    model = k.Model(x, k.layers.GaussianNoise(0.1, name="gn")(y), name="noisy")
    out, result = convert_keras_strict(model, tmp_path)
    assert result.passed, result.verification.failures()
    torch_model = load_written_model(out).train()
    ones = torch.ones(64, 6, 6, 8)
    torch_model.gn.stddev = 0.0
    torch_model.gd.p = 0.0
    got = torch_model(ones).permute(0, 3, 1, 2).reshape(64 * 8, 36)
    per_channel = got.std(1)
    assert torch.all(per_channel == 0) and 0.35 < (got[:, 0] == 0).float().mean() < 0.65  # whole channels dropped
    assert set(torch.unique(got).tolist()) <= {0.0, 2.0}
    torch_model.sd.p, torch_model.gd.p = 0.0, 0.2
    got = torch_model(ones)
    assert abs(float(got.mean()) - 1.0) < 0.02 and abs(float(got.std()) - 0.5) < 0.02  # sqrt(0.2 / 0.8)
    torch_model.gd.p, torch_model.gn.stddev = 0.0, 0.1
    assert abs(float(torch_model(ones).std()) - 0.1) < 0.01
    torch_model.eval()
    assert torch.equal(torch_model(ones), ones)


def test_activity_regularization_with_a_penalty_is_refused():
    from porter.keras_to_torch.codegen import plan_model

    k = keras()
    x = k.Input((4,), name="x")
    model = k.Model(x, k.layers.ActivityRegularization(l1=0.01, name="ar")(k.layers.Dense(3, name="d")(x)))
    plan = plan_model(model)
    assert any("'ar'" in p and "l1=0.01" in p and "training loss" in p for p in plan.unsupported), plan.unsupported


@pytest.mark.parametrize("case", ["prelu_per_channel", "prelu_full", "rms_norm_axes"])
def test_wrongly_mapped_weight_fails(case, tmp_path, monkeypatch):
    """The same conversion with PReLU's alpha / RMSNorm's scale in the wrong order: porter's own comparison fails."""
    from porter.keras_to_torch.layers import TRANSFORMS

    reverse = lambda a: np.ascontiguousarray(np.reshape(a, -1)[::-1].reshape(a.shape))  # noqa: E731
    if case == "prelu_per_channel":
        monkeypatch.setitem(TRANSFORMS, "flat", lambda a: reverse(a).reshape(-1))
    else:
        monkeypatch.setitem(TRANSFORMS, "same", lambda a: reverse(a) if a.ndim >= 2 else a)
    from tests_support import convert_keras_strict

    shape, build, _, _ = CASES[case]
    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input(shape, name="x")
    model = _alphas(informative(k.Model(x, build(k, x), name=case)))
    _, result = convert_keras_strict(model, tmp_path)
    assert result.route == "keras layers" and not result.passed


def test_masked_global_average_pooling_averages_the_kept_steps(tmp_path):
    """Embedding(mask_zero) -> GlobalAveragePooling1D: Keras averages only the unmasked steps; ids post-padded with 0
    (and one row of a single token) must give Keras' numbers, and the padded steps must not count."""
    k = keras()
    k.utils.set_random_seed(0)
    ids = k.Input((None,), dtype="int32", name="ids")
    pooled = k.layers.GlobalAveragePooling1D(name="gap")(k.layers.Embedding(20, 4, mask_zero=True, name="emb")(ids))
    model = informative(k.Model(ids, k.layers.Dense(3, name="d")(pooled), name="masked_gap"))
    rng = np.random.default_rng(0)
    feeds = []
    for batch, steps in ((2, 6), (3, 9)):
        a = rng.integers(1, 20, size=(batch, steps)).astype("int32")
        a[0, steps // 2:] = 0
        a[-1, 1:] = 0
        feeds.append([a])
    code = check(model, feeds, tmp_path)
    assert ".sum(1, keepdim=True)" in code  # the masked mean, not AdaptiveAvgPool1d over every step


def test_float_ids_into_an_embedding_are_generated_as_whole_numbers(tmp_path):
    """keras.Input without a dtype feeding an Embedding: porter's own verification draws whole-number ids inside
    the table (N(0, 1) floats made the written model's lookup fail), and --train does the same."""
    k = keras()
    k.utils.set_random_seed(0)
    ids = k.Input((None,), name="ids")  # float32
    hidden = k.layers.GRU(4, name="gru")(k.layers.Embedding(25, 6, mask_zero=True, name="emb")(ids))
    model = informative(k.Model(ids, k.layers.Dense(2, name="d")(hidden), name="float_ids"))
    rng = np.random.default_rng(1)
    feeds = [[rng.integers(1, 25, size=(batch, steps)).astype("float32")] for batch, steps in ((2, 5), (3, 8))]
    feeds[1][0][0, 4:] = 0  # padding
    check(model, feeds, tmp_path)

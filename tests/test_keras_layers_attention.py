"""The keras layers writer on Attention, AdditiveAttention, EinsumDense, GroupedQueryAttention and
ConvLSTM1D/2D/3D. Each model matches Keras at two input shapes (fp32, abs 1e-5); those with weights take one
float64 `--train` step as Keras does. A weight mapped to the wrong place fails the conversion's own check,
and what the writer does not reproduce is refused by name."""

import numpy as np
import pytest
from keras_layers_support import check, fails_comparison, informative, keras, mis_mapped


def _model(name, shapes, build, seed=0):
    """``shapes``: {input name: shape}; ``build(k, *inputs)`` returns the outputs."""
    k = keras()
    k.utils.set_random_seed(seed)
    inputs = [k.Input(s, name=n) for n, s in shapes.items()]
    model = informative(k.Model(inputs, build(k, *inputs), name=name))
    for v in model.weights:  # Attention(score_mode='concat')'s weight starts at 1: move it
        if v.name == "concat_score_weight":
            v.assign(np.float32(0.7))
    return model


def _feeds(shapes, fills, seed=0):
    """Two feeds: ``fills`` gives each None dimension per feed, e.g. [{"t": 5, "s": 4}, {"t": 3, "s": 6}]."""
    rng = np.random.default_rng(seed)
    feeds = []
    for batch, fill in zip((2, 3), fills):
        feed = []
        for shape in shapes.values():
            dims = [fill[d] if isinstance(d, str) else d for d in shape]
            feed.append(rng.normal(size=(batch, *dims)).astype("float32"))
        feeds.append(feed)
    return feeds


def _symbolic(shapes):  # Keras shapes: the named dimensions are None
    return {n: tuple(None if isinstance(d, str) else d for d in s) for n, s in shapes.items()}


def _run(name, shapes, build, tmp_path, fills=({"t": 5, "s": 4}, {"t": 3, "s": 6}), train=True):
    model = _model(name, _symbolic(shapes), build)
    return check(model, _feeds(shapes, fills), tmp_path, train=train)


# -- Attention / AdditiveAttention -------------------------------------------------------------------

ATTENTION = {
    # name: (inputs, build)
    "dot_scale": ({"q": ("t", 4), "v": ("s", 4)},
                  lambda k, q, v: k.layers.Attention(use_scale=True, name="att")([k.layers.Dense(4, name="d")(q), v])),
    "dot_causal_self": ({"q": ("t", 4)}, lambda k, q: k.layers.Attention(use_scale=True, name="att")(
        [k.layers.Dense(4, name="d")(q), q], use_causal_mask=True)),
    "concat_key_scores": ({"q": ("t", 4), "v": ("s", 3), "key": ("s", 4)}, lambda k, q, v, key: k.layers.Attention(
        use_scale=True, score_mode="concat", name="att")([k.layers.Dense(4, name="d")(q), v, key], return_attention_scores=True)),
    "concat_no_scale": ({"q": ("t", 4), "v": ("s", 4)}, lambda k, q, v: k.layers.Attention(
        score_mode="concat", name="att")([k.layers.Dense(4, name="d")(q), v])),
    "additive": ({"q": ("t", 4), "v": ("s", 3), "key": ("s", 4)},
                 lambda k, q, v, key: k.layers.AdditiveAttention(name="att")([k.layers.Dense(4, name="d")(q), v, key])),
    "additive_causal_no_scale": ({"q": ("t", 4)}, lambda k, q: k.layers.AdditiveAttention(use_scale=False, name="att")(
        [k.layers.Dense(4, name="d")(q), q], use_causal_mask=True, return_attention_scores=True)),
}


@pytest.mark.parametrize("case", sorted(ATTENTION))
def test_attention(case, tmp_path):
    shapes, build = ATTENTION[case]
    fills = ({"t": 5, "s": 5}, {"t": 3, "s": 3}) if len(shapes) == 1 else ({"t": 5, "s": 4}, {"t": 3, "s": 6})
    code = _run(f"att_{case}", shapes, build, tmp_path, fills=fills)
    assert "self.att = KerasAttention(" in code


def test_attention_dropout_is_identity_at_inference(tmp_path):
    """dropout acts on the attention weights in train() only (an nn.Dropout inside the module)."""
    code = _run("att_dropout", {"q": ("t", 4), "v": ("s", 4)},
                lambda k, q, v: k.layers.Attention(dropout=0.4, name="att")([k.layers.Dense(4, name="d")(q), v]),
                tmp_path)
    assert "dropout=0.4" in code


# -- EinsumDense -----------------------------------------------------------------------------------

EINSUM = {
    "heads": ({"x": ("t", 4)}, lambda k, x: k.layers.EinsumDense("abc,cde->abde", (None, 3, 2), bias_axes="de",
                                                                    activation="relu", name="ed")(x)),
    "ellipsis": ({"x": (3, "t", 4)}, lambda k, x: k.layers.EinsumDense("...b,bc->...c", 5, bias_axes="c",
                                                                         activation="tanh", name="ed")(x)),
    "flat_no_bias": ({"x": (6,)}, lambda k, x: k.layers.EinsumDense("ab,bc->ac", 3, name="ed")(x)),
    "bias_on_time_axis": ({"x": (5, 4)}, lambda k, x: k.layers.EinsumDense("abc,cd->abd", (5, 3), bias_axes="b",
                                                                             name="ed")(x)),
    "right_ellipsis": ({"x": (4, 3, 2)}, lambda k, x: k.layers.EinsumDense("ab...,bc->ac...", (5, 3, 2), bias_axes="c",
                                                                             name="ed")(x)),
}


@pytest.mark.parametrize("case", sorted(EINSUM))
def test_einsum_dense(case, tmp_path):
    shapes, build = EINSUM[case]
    code = _run(f"ed_{case}", shapes, build, tmp_path)
    assert "self.ed = KerasEinsumDense(" in code


# -- GroupedQueryAttention ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["self", "causal_gate_window_no_bias", "scores", "cross_key_mask", "dropout"])
def test_grouped_query_attention(variant, tmp_path):
    options = {"use_bias": False, "use_gate": True, "sliding_window": 2} if variant.startswith("causal") else {}
    if variant == "dropout":  # identity at inference; verify --train sets the rate to 0 on both sides
        options = {"dropout": 0.3}
    shapes = {"q": ("t", 6)}
    if variant == "cross_key_mask":
        shapes.update({"v": ("s", 6), "key": ("s", 5), "mask": ("t", "s")})

    def build(k, q, *rest):
        gqa = k.layers.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, name="gqa", **options)
        if variant == "cross_key_mask":
            v, key, mask = rest
            return gqa(q, v, key=key, attention_mask=mask)
        return gqa(q, q, use_causal_mask=variant.startswith("causal"), return_attention_scores=variant == "scores")

    model = _model(f"gqa_{variant}", _symbolic(shapes), build)
    fills = ({"t": 5, "s": 4}, {"t": 3, "s": 6})
    feeds = _feeds(shapes, fills)
    if variant == "cross_key_mask":  # a 0/1 mask, every query keeping its first key
        for feed in feeds:
            m = (np.random.default_rng(1).uniform(size=feed[3].shape) > 0.3).astype("float32")
            m[:, :, 0] = 1.0
            feed[3] = m
    code = check(model, feeds, tmp_path, train=variant != "cross_key_mask")
    assert "self.gqa = KerasGroupedQueryAttention(" in code and "query_heads=4, kv_heads=2" in code


# -- ConvLSTM1D / 2D / 3D --------------------------------------------------------------------------

CONVLSTM = {
    "1d_same_sequences": ({"x": ("t", 6, 2)}, lambda k, x: k.layers.ConvLSTM1D(3, 3, padding="same", return_sequences=True,
                                                                               name="cl")(x)),
    "2d_strided_same_state": ({"x": ("t", 5, 5, 2)}, lambda k, x: k.layers.ConvLSTM2D(
        2, (3, 2), strides=2, padding="same", return_state=True, name="cl")(x)),
    "2d_dilated_backwards": ({"x": ("t", 6, 6, 2)}, lambda k, x: k.layers.ConvLSTM2D(
        2, 2, dilation_rate=2, go_backwards=True, return_sequences=True, use_bias=False, activation="relu",
        recurrent_activation="hard_sigmoid", name="cl")(x)),
    "3d_same": ({"x": ("t", 3, 3, 3, 1)}, lambda k, x: k.layers.ConvLSTM3D(2, 2, padding="same", name="cl")(x)),
}


@pytest.mark.parametrize("case", sorted(CONVLSTM))
def test_conv_lstm(case, tmp_path):
    shapes, build = CONVLSTM[case]
    code = _run(f"convlstm_{case}", shapes, build, tmp_path, fills=({"t": 3}, {"t": 2}))
    assert "self.cl = KerasConvLSTM(" in code


# -- a mis-mapped weight fails; what is not reproduced is refused --------------------------------------


def test_mis_mapped_key_value_kernels_fail(monkeypatch, tmp_path):
    def swap(emit):  # key and value kernels have one shape here: only the numbers can tell them apart
        key = next(w for w in emit.weights if w.torch_key.endswith(".key.kernel"))
        value = next(w for w in emit.weights if w.torch_key.endswith(".value.kernel"))
        key.keras_path, value.keras_path = value.keras_path, key.keras_path

    mis_mapped(monkeypatch, "GroupedQueryAttention", swap)
    model = _model("gqa_swapped", {"q": (None, 6)},
                   lambda k, q: k.layers.GroupQueryAttention(3, 4, 2, name="gqa")(q, q))
    assert fails_comparison(model, tmp_path)


def test_mis_mapped_conv_lstm_gates_fail(monkeypatch, tmp_path):
    from porter.keras_to_torch import layers as L

    def gates_if_swapped(a):  # torch kernel (4 * filters, in, *k): i and f blocks exchanged
        i, f, c, o = np.split(L.TRANSFORMS["conv"](a), 4, axis=0)
        return np.concatenate([f, i, c, o], axis=0)

    monkeypatch.setitem(L.TRANSFORMS, "conv_gates_swapped", gates_if_swapped)

    def swap(emit):
        next(w for w in emit.weights if w.torch_key.endswith("input_conv.weight")).transform = "conv_gates_swapped"

    mis_mapped(monkeypatch, "ConvLSTM1D", swap)
    model = _model("convlstm_swapped", {"x": (None, 6, 2)}, lambda k, x: k.layers.ConvLSTM1D(3, 3, name="cl")(x))
    assert fails_comparison(model, tmp_path)


def test_mis_mapped_einsum_bias_fails(monkeypatch, tmp_path):
    from porter.keras_to_torch import layers as L

    monkeypatch.setitem(L.TRANSFORMS, "reversed", lambda a: a[::-1].copy())

    def swap(emit):
        next(w for w in emit.weights if w.torch_key.endswith(".bias")).transform = "reversed"

    mis_mapped(monkeypatch, "EinsumDense", swap)
    model = _model("ed_swapped", {"x": (None, 4)},
                   lambda k, x: k.layers.EinsumDense("abc,cd->abd", (None, 3), bias_axes="d", name="ed")(x))
    assert fails_comparison(model, tmp_path)


@pytest.mark.parametrize("case", ["attention_mask_argument", "convlstm_dropout", "convlstm_channels_first",
                                  "gqa_value_mask", "keras_mask"])
def test_refused_by_name(case):
    from porter.keras_to_torch.codegen import plan_model

    k = keras()
    if case == "attention_mask_argument":
        q, qm = k.Input((None, 4), name="q"), k.Input((None,), dtype="bool", name="qm")
        model = k.Model([q, qm], k.layers.Attention(name="att")([q, q], mask=[qm, qm]))
        want = "'att' (Attention): the mask argument"
    elif case == "gqa_value_mask":
        q, vm = k.Input((None, 6), name="q"), k.Input((None,), dtype="bool", name="vm")
        model = k.Model([q, vm], k.layers.GroupQueryAttention(3, 4, 2, name="gqa")(q, q, value_mask=vm))
        want = "'gqa' (GroupedQueryAttention): value_mask given"
    elif case == "convlstm_dropout":
        x = k.Input((None, 6, 2), name="x")
        model = k.Model(x, k.layers.ConvLSTM1D(2, 3, dropout=0.2, name="cl")(x))
        want = "'cl' (ConvLSTM1D): dropout or recurrent_dropout"
    elif case == "keras_mask":  # Embedding(mask_zero=True) hands both a mask: refused, not ignored
        ids = k.Input((None,), dtype="int32", name="ids")
        e = k.layers.Embedding(11, 6, mask_zero=True, name="embed")(ids)
        model = k.Model(ids, [k.layers.Attention(name="att")([e, e]), k.layers.GroupQueryAttention(3, 4, 2, name="gqa")(e, e)])
        assert "'gqa' (GroupedQueryAttention): Keras masks on its inputs" in "; ".join(plan_model(model).unsupported)
        want = "'att' (Attention): a Keras mask reaches it"
    else:
        x = k.Input((None, 2, 6, 6), name="x")
        model = k.Model(x, k.layers.ConvLSTM2D(2, 3, data_format="channels_first", name="cl")(x))
        want = "'cl' (ConvLSTM2D): data_format='channels_first'"
    assert want in "; ".join(plan_model(model).unsupported)

"""What the keras layers writer used to refuse, now written (or refused with the way forward): Bidirectional with
merge_mode=None (two outputs of one layer, the forward and the backward), a Keras mask crossing a nested model's
boundary (into it, or out of it), and a subclassed keras.Model used as a layer (exit 2: its call() is code the file
does not hold; model.export -> SavedModel -> ONNX is the way). Each written model matches Keras at two input shapes
(fp32, abs 1e-5), in float64, and takes one float64 `--train` step as Keras does; a swapped or dropped piece fails."""

import re

import numpy as np
from keras_layers_support import check, fails_comparison, informative, keras, mis_mapped

RNG = np.random.default_rng(20)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _ids(batch, steps, vocab, seed=0):
    """Ids with padding (0) at the end of one row and at the start of another, and one row unpadded."""
    ids = np.random.default_rng(seed).integers(1, vocab, size=(batch, steps)).astype("int32")
    ids[0, -2:] = 0
    ids[-1, :2] = 0
    return ids


def _bidirectional_none(k, name="bidir_none"):
    x = k.Input((None, 4), name="x")
    outs = k.layers.Bidirectional(k.layers.LSTM(3, return_sequences=True, return_state=True), merge_mode=None,
                                  name="bi")(x)
    return informative(k.Model(x, list(outs), name=name))


def test_bidirectional_merge_mode_none(tmp_path):
    """merge_mode=None: [forward, backward (in the input's order), forward h, c, backward h, c], six outputs of
    one layer, named as the Keras runner names them ('bi', 'bi_1', ...)."""
    k = keras()
    k.utils.set_random_seed(0)
    model = _bidirectional_none(k)
    code = check(model, [[_normal(2, 5, 4)], [_normal(3, 7, 4)]], tmp_path)
    assert "merge_mode=None" in code and "bi, bi_1, bi_2, bi_3, bi_4, bi_5 = self.bi(x)" in code
    assert "onnx_output_names = ['bi', 'bi_1', 'bi_2', 'bi_3', 'bi_4', 'bi_5']" in code


def test_bidirectional_merge_mode_none_masked(tmp_path):
    """With a mask (Embedding(mask_zero=True)): the step loop, masked steps zero in both directions as in Keras."""
    k = keras()
    k.utils.set_random_seed(1)
    ids = k.Input((None,), dtype="int32", name="ids")
    e = k.layers.Embedding(12, 4, mask_zero=True, name="emb")(ids)
    f, b = k.layers.Bidirectional(k.layers.GRU(3, return_sequences=True), merge_mode=None, name="bi")(e)
    model = informative(k.Model(ids, [f, b], name="bidir_none_masked"))
    code = check(model, [[_ids(2, 5, 12)], [_ids(3, 7, 12, seed=1)]], tmp_path)
    assert re.search(r"bi, bi_1 = self\.bi\(emb, not_equal\w*\)", code), code


def test_bidirectional_merge_mode_none_swapped_directions_fail(monkeypatch, tmp_path):
    """The forward and the backward layer's weights exchanged (same shapes): the comparison must fail."""
    def swap(emit):
        for w in emit.weights:
            w.torch_key = w.torch_key.replace("forward_layer", "@").replace("backward_layer", "forward_layer") \
                .replace("@", "backward_layer")

    mis_mapped(monkeypatch, "Bidirectional", swap)
    k = keras()
    k.utils.set_random_seed(0)
    assert fails_comparison(_bidirectional_none(k, "bidir_none_swapped"), tmp_path)


def _mask_into_nested(k, name="mask_into_nested"):
    """The Embedding(mask_zero=True) outside, the LSTM inside a nested model (behind a Dense, which hands the mask
    on): Keras masks the LSTM at run time though neither graph shows it."""
    i = k.Input((None, 4))
    inner = k.Model(i, k.layers.LSTM(3, name="inner_lstm")(k.layers.Dense(4, activation="tanh", name="inner_fc")(i)),
                    name="encoder")
    ids = k.Input((None,), dtype="int32", name="ids")
    out = k.layers.Dense(2, name="head")(inner(k.layers.Embedding(12, 4, mask_zero=True, name="emb")(ids)))
    return informative(k.Model(ids, out, name=name))


def test_mask_into_a_nested_model(tmp_path):
    k = keras()
    k.utils.set_random_seed(2)
    code = check(_mask_into_nested(k), [[_ids(2, 5, 12)], [_ids(3, 7, 12, seed=1)]], tmp_path)
    assert re.search(r"inner_lstm = self\.inner_lstm\(inner_fc, not_equal\w*\)", code), code


def test_mask_into_a_nested_model_dropped_fails(monkeypatch, tmp_path):
    """The written LSTM run without its mask: the comparison with Keras (which masks it) must fail."""
    def unmask(emit):
        emit.expr = re.sub(r", not_equal\w*\)", ")", emit.expr)

    mis_mapped(monkeypatch, "LSTM", unmask)
    k = keras()
    k.utils.set_random_seed(2)
    assert fails_comparison(_mask_into_nested(k, "mask_into_nested_dropped"), tmp_path)


def test_mask_out_of_a_nested_sequential(tmp_path):
    """The Embedding(mask_zero=True) inside a nested Sequential (and a Dense after it there), the GRU outside."""
    k = keras()
    k.utils.set_random_seed(3)
    embedder = k.Sequential([k.Input((None,), dtype="int32"), k.layers.Embedding(12, 4, mask_zero=True, name="emb"),
                             k.layers.Dense(4, name="emb_fc")], name="embedder")
    ids = k.Input((None,), dtype="int32", name="ids")
    model = informative(k.Model(ids, k.layers.GRU(3, name="gru")(embedder(ids)), name="mask_out_of_nested"))
    code = check(model, [[_ids(2, 5, 12)], [_ids(3, 7, 12, seed=1)]], tmp_path)
    assert re.search(r"gru = self\.gru\(emb_fc, not_equal\w*\)", code), code


def test_subclassed_model_nested_in_a_functional_model_is_refused_with_the_way_forward(cli, tmp_path):
    """A keras.Model subclass used as a layer: its call() is Python code the .keras file does not hold, so nothing
    can rebuild it; exit 2 naming the layer and its class, and model.export -> SavedModel -> ONNX."""
    k = keras()

    class Block(k.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = k.layers.Dense(4)

        def call(self, x):
            return self.d(x) * 2.0

    x = k.Input((5,), name="x")
    path = tmp_path / "sub_nested.keras"
    k.Model(x, k.layers.Dense(2, name="head")(Block(name="block")(x)), name="sub_nested").save(str(path))
    code, text = cli("convert", path, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    flat = " ".join(text.split())
    assert code == 2, text
    for needle in ("layer 'block' is a subclassed Keras model of class 'Block'", "used as a layer", "call()",
                   "model.export('DIR')", "SavedModel", "through ONNX"):
        assert needle in flat, f"{needle!r} not in {text}"
    assert "Traceback" not in text and not (tmp_path / "out").exists()


def test_keras3_h5_with_a_mask_op_layer_converts(cli, tmp_path):
    """Keras 3 writes an Embedding(mask_zero=True)'s mask into an .h5 as a NotEqual op layer without its module, which
    its own .h5 loader does not know; porter locates Keras' own op class (safe_mode stays on) and the model converts,
    masked as the model that was saved: the written model against the in-memory original at padded ids."""
    import torch
    from tests_support import load_written_model

    from porter.verifiers.training import verify_training

    k = keras()
    k.utils.set_random_seed(4)
    ids = k.Input((None,), dtype="int32", name="ids")
    x = k.layers.GRU(3, return_sequences=True, name="gru")(k.layers.Embedding(12, 4, mask_zero=True, name="emb")(ids))
    model = informative(k.Model(ids, k.layers.Dense(2, name="head")(k.layers.GlobalAveragePooling1D(name="pool")(x)),
                                name="text_gru_h5"))
    path, out = tmp_path / "text_gru.h5", tmp_path / "out"
    model.save(str(path))
    code, text = cli("convert", path, "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0 and "PASSED" in text and "route: keras layers" in " ".join(text.split()), text
    written = load_written_model(out)
    for feed in (_ids(2, 5, 12), _ids(3, 7, 12, seed=1)):
        want = np.asarray(model(feed, training=False))
        with torch.no_grad():
            got = written(torch.from_numpy(feed)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1.3e-6)
        # the mask matters at these ids (a reload that lost it would show): the same layers run unmasked
        plain = np.asarray(model.get_layer("emb")(feed))  # a numpy copy carries no mask
        unmasked = model.get_layer("head")(model.get_layer("pool")(model.get_layer("gru")(plain)))
        assert np.abs(np.asarray(unmasked) - want).max() > 1e-3
    trained = verify_training(path, out, lr=0.1)
    assert trained.passed and trained.dtype == "float64", trained.to_dict()
    assert max(g.max_abs for g in trained.groups if g.kind == "gradient") <= 1e-7


def test_only_keras_op_classes_are_located_in_an_h5_config():
    """The translation gives a module only to an entry that is one of Keras' own op classes with an op's config: a
    custom layer named like an op (its config holds 'trainable'), an op config with an argument the op does not
    take, a Keras layer and an unknown name are left as they are (Keras then refuses what it cannot build)."""
    from porter.readers.keras2_config import h5_config_text, op_layers_located

    def entry(name, **config):
        return {"class_name": name, "config": {"name": name.lower(), **config}, "inbound_nodes": []}

    layers = [entry("NotEqual"), entry("Any", axis=-1, keepdims=False), entry("Mean", trainable=True, axis=-1),
              entry("NotEqual", evil=1), entry("Dense", units=2), entry("subprocess")]
    config = {"class_name": "Functional", "config": {"layers": layers}}
    assert op_layers_located(config)
    assert [e.get("module") for e in layers] == ["keras.src.ops.numpy", "keras.src.ops.numpy", None, None, None, None]
    text = '{"class_name": "Functional", "config": {"layers": []}}'
    assert h5_config_text(text, "3.15.1") is text  # nothing to locate: the text as it is

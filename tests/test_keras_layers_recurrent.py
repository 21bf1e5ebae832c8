"""The keras layers writer on Keras' recurrent layers: SimpleRNN, LSTM, GRU (reset_after True and False),
return_sequences / return_state / go_backwards, Bidirectional's merge modes, and the masks that
Embedding(mask_zero=True) and Masking hand them (Keras skips masked timesteps). Each model matches Keras at
two sequence shapes (fp32, abs 1e-5) and takes one float64 `--train` step as Keras does."""

import numpy as np
import pytest
from keras_layers_support import check, informative, keras

RNG = np.random.default_rng(0)


def _seq(batch, steps, features=5):
    return RNG.normal(size=(batch, steps, features)).astype("float32")


def _model(name, layer_fn, features=5):
    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input((None, features), name="x")
    out = layer_fn(k, x)
    return informative(k.Model(x, out, name=name))


@pytest.mark.parametrize("cls", ["SimpleRNN", "LSTM", "GRU"])
@pytest.mark.parametrize("options", [
    {"return_sequences": True},
    {"return_state": True},
    {"go_backwards": True, "return_sequences": True},
    {"go_backwards": True, "return_state": True},
])
def test_recurrent_layer_matches_keras(cls, options, tmp_path):
    name = f"{cls.lower()}_{'_'.join(options)}"
    model = _model(name, lambda k, x: getattr(k.layers, cls)(4, name="rnn", **options)(x))
    code = check(model, [[_seq(2, 7)], [_seq(3, 3)]], tmp_path)
    native = {"SimpleRNN": "KerasSimpleRNN(", "LSTM": "KerasLSTM(", "GRU": "KerasGRU("}[cls]
    assert f"self.rnn = {native}5, 4" in code  # torch's own nn.RNN / nn.LSTM / nn.GRU underneath


def test_gru_reset_after_false_and_other_activations(tmp_path):
    def build(k, x):
        a = k.layers.GRU(4, reset_after=False, return_sequences=True, name="gru_v1")(x)
        b = k.layers.LSTM(3, activation="relu", recurrent_activation="hard_sigmoid", name="lstm_relu")(a)
        c = k.layers.SimpleRNN(3, activation="relu", name="srnn_relu")(a)
        return [b, c]

    code = check(_model("gru_v1", build), [[_seq(2, 6)], [_seq(1, 9)]], tmp_path)
    assert "self.gru_v1 = KerasRNN('gru'" in code and "reset_after=False" in code
    assert "self.lstm_relu = KerasRNN('lstm'" in code and "self.srnn_relu = KerasSimpleRNN(" in code


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_merge_modes(merge_mode, tmp_path):
    def build(k, x):
        y = k.layers.Bidirectional(k.layers.LSTM(3, return_sequences=True), merge_mode=merge_mode, name="bi_seq")(x)
        return k.layers.Bidirectional(k.layers.GRU(2), merge_mode=merge_mode, name="bi_last")(y)

    code = check(_model(f"bi_{merge_mode}", build), [[_seq(2, 5)], [_seq(3, 8)]], tmp_path)
    assert f"merge_mode={merge_mode!r}" in code


def test_bidirectional_return_state(tmp_path):
    model = _model("bi_state", lambda k, x: k.layers.Bidirectional(k.layers.LSTM(3, return_state=True), name="bi")(x))
    check(model, [[_seq(2, 5)], [_seq(1, 2)]], tmp_path)


def _ids(batch, steps, vocab=100, seed=0):
    """Ids with zeros (padding) at the end of some rows and in the middle of others: masked timesteps."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, steps)).astype("int32")
    ids[0, -2:] = 0
    ids[-1, 1] = 0
    ids[-1, 0] = 0  # a masked first step: Keras' output there is zero
    return ids


@pytest.mark.parametrize("cls", ["SimpleRNN", "LSTM", "GRU"])
def test_embedding_mask_zero_skips_padding(cls, tmp_path):
    k = keras()
    k.utils.set_random_seed(0)
    ids = k.Input((None,), dtype="int32", name="ids")
    e = k.layers.Embedding(100, 6, mask_zero=True, name="embed")(ids)  # the verifier draws ids below 100
    seq = getattr(k.layers, cls)(4, return_sequences=True, name="rnn_seq")(e)
    seq = k.layers.Dense(4, name="proj")(seq)  # the mask passes through Dense to the next RNN
    last, state = getattr(k.layers, cls)(3, return_state=True, go_backwards=True, name="rnn_last")(seq)[:2]
    bi = k.layers.Bidirectional(getattr(k.layers, cls)(2, return_sequences=True), name="bi")(e)
    model = informative(k.Model(ids, [seq, last, state, bi], name=f"masked_{cls.lower()}"))
    code = check(model, [[_ids(3, 6)], [_ids(2, 9, seed=1)]], tmp_path)
    assert "(ids != 0.0)" in code or "(ids != 0)" in code
    assert "KerasRNN(" in code


def test_masking_layer(tmp_path):
    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input((None, 5), name="x")
    m = k.layers.Masking(mask_value=0.0, name="mask")(x)
    y = k.layers.LSTM(4, return_sequences=True, name="lstm")(m)
    y = k.layers.GRU(3, reset_after=False, name="gru")(y)
    model = informative(k.Model(x, y, name="masking"))
    feeds = []
    for batch, steps in ((3, 6), (2, 4)):
        a = _seq(batch, steps)
        a[0, -2:] = 0.0
        a[-1, 1] = 0.0
        feeds.append([a])
    code = check(model, feeds, tmp_path)
    assert ".any(-1, keepdim=False)" in code


def test_mask_into_an_unhandled_consumer_is_refused():
    """A mask reaching a layer that would apply it but has no masked translation: named, not ignored."""
    from porter.keras_to_torch.codegen import plan_model

    k = keras()
    ids = k.Input((None,), dtype="int32", name="ids")
    e = k.layers.Embedding(11, 6, mask_zero=True, name="embed")(ids)
    # Attention's call takes the query/value masks, and its translator refuses them rather than drop them
    y = k.layers.Attention(name="att")([e, e])
    text = "; ".join(plan_model(k.Model(ids, y)).unsupported)
    assert "'att' (Attention)" in text and "mask" in text, text

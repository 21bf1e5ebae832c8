"""The keras layers writer on recurrent layers started from given states and on TimeDistributed as Keras 3 runs
it: LSTM / GRU (reset_after True and False) / SimpleRNN / Bidirectional called with ``initial_state`` (an
encoder-decoder: the decoder starts from the encoder's return_state outputs, in Keras' order: LSTM h then c,
Bidirectional the forward layer's states then the backward's); a mask reaching TimeDistributed(Dense) (Keras
applies Dense to every step and passes the mask on); TimeDistributed(BatchNormalization) in training (Keras
calls the layer once per timestep: per-step batch statistics, the moving statistics updated once per step).
Each model matches Keras at two shapes (fp32, abs 1e-5) and takes one float64 `--train` step as Keras does; a
swapped state or a folded time axis must fail."""

import re

import numpy as np
import pytest
from keras_layers_support import check, fails_comparison, informative, keras, mis_mapped
from tests_support import convert_keras_strict

RNG = np.random.default_rng(0)


def _seq(batch, steps, features=5):
    return RNG.normal(size=(batch, steps, features)).astype("float32")


def _ids(batch, steps, vocab, seed=0):
    """Ids with padding zeros at the end of one row and in the middle (and at the start) of another."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, steps)).astype("int32")
    ids[0, -2:] = 0
    ids[-1, :2] = 0
    return ids


def _seq2seq(name, cls="LSTM", reset_after=True, units=6):
    """Encoder (Embedding(mask_zero) -> RNN(return_state)) and decoder (Embedding(mask_zero) -> RNN started
    from the encoder's states, return_state too) -> Dense."""
    k = keras()
    k.utils.set_random_seed(0)
    L = k.layers
    kw = {"reset_after": reset_after} if cls == "GRU" else {}
    enc_ids = k.Input((None,), dtype="int32", name="encoder_ids")
    dec_ids = k.Input((None,), dtype="int32", name="decoder_ids")
    e = L.Embedding(50, 5, mask_zero=True, name="enc_embed")(enc_ids)
    _, *states = getattr(L, cls)(units, return_state=True, name="encoder", **kw)(e)
    d = L.Embedding(40, 5, mask_zero=True, name="dec_embed")(dec_ids)
    y, *dec_states = getattr(L, cls)(units, return_sequences=True, return_state=True, name="decoder", **kw)(
        d, initial_state=states if len(states) > 1 else states[0])
    out = L.Dense(7, name="next_token")(y)
    return informative(k.Model([enc_ids, dec_ids], [out, *dec_states], name=name))


def _seq2seq_feeds():
    # encoder and decoder lengths differ; the verifier's own ids (with zeros) are drawn below each vocabulary
    return [[_ids(3, 6, 50), _ids(3, 4, 40, seed=1)], [_ids(2, 9, 50, seed=2), _ids(2, 11, 40, seed=3)]]


def test_encoder_decoder_lstm_initial_state(tmp_path):
    """Keras 3 hands a layer its input's mask only where the call has one tensor argument: the decoder, also
    given initial_state, runs over every step (checked against Keras with padded decoder ids)."""
    code = check(_seq2seq("seq2seq_lstm"), _seq2seq_feeds(), tmp_path)
    assert "self.decoder = KerasLSTM(5, 6" in code  # no mask reaches it: torch's nn.LSTM
    assert re.search(r"self\.decoder\(dec_embed, initial_state=\[encoder_1, encoder_2\]\)", code), code


@pytest.mark.parametrize("cls,reset_after", [("GRU", True), ("GRU", False), ("SimpleRNN", True)])
def test_gru_and_simple_rnn_initial_state(cls, reset_after, tmp_path):
    code = check(_seq2seq(f"seq2seq_{cls.lower()}_{reset_after}", cls, reset_after), _seq2seq_feeds(), tmp_path)
    assert "initial_state=[encoder_1]" in code
    if cls == "GRU" and not reset_after:
        assert "self.decoder = KerasRNN('gru'" in code


def test_initial_state_with_an_explicit_mask(tmp_path):
    """mask= passed beside initial_state: Keras skips the masked steps from the given states (the step loop)."""
    k = keras()
    k.utils.set_random_seed(0)
    ids = k.Input((None,), dtype="int32", name="ids")
    h0 = k.Input((4,), name="h0")
    c0 = k.Input((4,), name="c0")
    e = k.layers.Embedding(30, 5, name="embed")(ids)
    mask = k.ops.not_equal(ids, 0)
    y = k.layers.LSTM(4, return_sequences=True, name="lstm")(e, initial_state=[h0, c0], mask=mask)
    y2 = k.layers.GRU(3, reset_after=False, name="gru")(e, initial_state=k.layers.Dense(3, name="h_gru")(h0), mask=mask)
    model = informative(k.Model([ids, h0, c0], [y, y2], name="explicit_mask"))
    state = lambda batch: RNG.normal(size=(batch, 4)).astype("float32")  # noqa: E731
    feeds = [[_ids(3, 6, 30), state(3), state(3)], [_ids(2, 9, 30, seed=1), state(2), state(2)]]
    code = check(model, feeds, tmp_path)
    assert "self.lstm = KerasRNN('lstm'" in code and "initial_state=[h0, c0]" in code


@pytest.mark.parametrize("cls", ["LSTM", "GRU"])
def test_bidirectional_initial_state(cls, tmp_path):
    """Keras: the first half of initial_state starts the forward layer, the second the backward one."""
    k = keras()
    k.utils.set_random_seed(0)
    L = k.layers
    src = k.Input((None, 5), name="src")
    tgt = k.Input((None, 3), name="tgt")
    _, *states = L.Bidirectional(getattr(L, cls)(4, return_state=True), name="bi_encoder")(src)
    y, *out_states = L.Bidirectional(getattr(L, cls)(4, return_sequences=True, return_state=True), name="bi_decoder")(
        tgt, initial_state=states)
    model = informative(k.Model([src, tgt], [y, *out_states], name=f"bi_state_{cls.lower()}"))
    code = check(model, [[_seq(2, 5), _seq(2, 3, 3)], [_seq(3, 2), _seq(3, 7, 3)]], tmp_path)
    given = ", ".join(f"bi_encoder_{i}" for i in range(1, len(states) + 1))  # forward's states, then backward's
    assert f"self.bi_decoder(tgt, initial_state=[{given}])" in code


def test_bilstm_mask_zero_then_time_distributed_dense(tmp_path):
    """Dense's call takes no mask: Keras applies it to every step (masked ones too) and TimeDistributed passes
    the mask on to the next layer (a GRU that skips the padded steps)."""
    k = keras()
    k.utils.set_random_seed(0)
    L = k.layers
    ids = k.Input((None,), dtype="int32", name="ids")
    x = L.Embedding(60, 6, mask_zero=True, name="embed")(ids)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bilstm")(x)
    tags = L.TimeDistributed(L.Dense(5), name="tags")(x)
    last = L.GRU(3, name="gru_after")(tags)
    model = informative(k.Model(ids, [tags, last], name="tagger"))
    code = check(model, [[_ids(3, 6, 60)], [_ids(2, 9, 60, seed=1)]], tmp_path)
    assert "time_distributed(bilstm, lambda t:" in code
    assert "self.gru_after = KerasRNN('gru'" in code  # the mask reaches it through TimeDistributed


def _video(name):
    k = keras()
    k.utils.set_random_seed(0)
    L = k.layers
    clip = k.Input((None, 8, 8, 3), name="frames")
    x = L.TimeDistributed(L.Conv2D(4, 3, activation="relu"), name="td_conv")(clip)
    x = L.TimeDistributed(L.BatchNormalization(momentum=0.8), name="td_bn")(x)
    x = L.TimeDistributed(L.Flatten(), name="td_flat")(x)
    x = L.LSTM(4, name="lstm")(x)
    return informative(k.Model(clip, L.Dense(3, name="head")(x), name=name))


def _frames(batch, steps):
    return RNG.normal(size=(batch, steps, 8, 8, 3)).astype("float32")


def test_time_distributed_conv_batchnorm_trains_per_step(tmp_path):
    code = check(_video("td_video"), [[_frames(2, 3)], [_frames(3, 5)]], tmp_path)
    assert "per_step=self.training" in code


def test_time_distributed_batchnorm_per_step_in_train_only():
    """train(): one BatchNorm call per step (running statistics moved T times); eval(): folded, the same numbers."""
    import torch
    from porter.keras_to_torch.runtime import KerasBatchNorm1d
    from porter.keras_to_torch.runtime_rnn import time_distributed

    torch.manual_seed(0)
    bn = KerasBatchNorm1d(3, eps=1e-3, momentum=0.5)
    x = torch.randn(4, 5, 3) * torch.arange(1, 6)[None, :, None]  # each step its own scale
    y = time_distributed(x, bn, per_step=True)
    assert int(bn.num_batches_tracked) == 5
    for t in range(5):
        step = x[:, t]
        want = (step - step.mean(0)) / torch.sqrt(step.var(0, unbiased=False) + 1e-3)
        torch.testing.assert_close(y[:, t], want, atol=1e-5, rtol=0)
    bn.eval()
    torch.testing.assert_close(time_distributed(x, bn, per_step=True), time_distributed(x, bn), atol=0, rtol=0)


# -- what must fail ----------------------------------------------------------------------------------------


def _reverse_states(emit):
    def flip(m):
        states = m.group(1).split(", ")
        half = len(states) // 2
        return f"initial_state=[{', '.join(states[half:] + states[:half])}]"

    emit.expr = re.sub(r"initial_state=\[([^\]]+)\]", flip, emit.expr)


def test_swapped_h_and_c_fail(monkeypatch, tmp_path):
    mis_mapped(monkeypatch, "LSTM", _reverse_states)
    assert fails_comparison(_seq2seq("seq2seq_swapped"), tmp_path)


def test_swapped_forward_and_backward_states_fail(monkeypatch, tmp_path):
    mis_mapped(monkeypatch, "Bidirectional", _reverse_states)
    k = keras()
    k.utils.set_random_seed(0)
    src = k.Input((None, 5), name="src")
    _, *states = k.layers.Bidirectional(k.layers.GRU(4, return_state=True), name="enc")(src)
    y = k.layers.Bidirectional(k.layers.GRU(4), name="dec")(src, initial_state=states)
    assert fails_comparison(informative(k.Model(src, y, name="bi_swapped")), tmp_path)


def test_folded_batchnorm_in_training_fails_the_step(monkeypatch, tmp_path):
    """Time folded into the batch (one set of batch statistics for all steps): inference matches, the step not."""
    from porter.verifiers.training import verify_training

    def fold(emit):
        emit.expr = emit.expr.replace(", per_step=self.training", "")

    mis_mapped(monkeypatch, "TimeDistributed", fold)
    model = _video("td_folded")
    out, result = convert_keras_strict(model, tmp_path)
    assert result.passed and "per_step=self.training" not in (out / "model.py").read_text()
    assert not verify_training(tmp_path / "td_folded.keras", out, lr=0.1).passed

"""A corpus of small Keras models of the kinds a migrating team has, each converted TF -> torch by
`porter convert` (route auto, in a subprocess) and then checked here beyond porter's own verification.

Per model: the route porter took, its exit code, the max abs error its verification reported, the written
model.py against Keras (the saved file, reloaded) at two input shapes porter's verification does not use
(it draws batch 1 and 3, sequence length 5 and 41, image sides 32 and 48; here batch 5 and 2 at other
lengths / sizes where the model allows; token ids post-padded with 0 where an Embedding masks them),
fp32 tolerance abs 1e-5 + rel 1.3e-6, and the float64 training step
(porter.verifiers.training.verify_training, lr 0.1) where the model has trainable weights.

Weights are informative: biases, betas, LayerNorm/RMSNorm scales and PReLU slopes moved away from their
init; BatchNormalization calibrated (one training-mode pass, momentum 0, dropout off) on inputs of the
model's own kind, then its moving statistics perturbed, so a statistic mapped to the wrong place shows.

    python benchmarks/keras_corpus.py [--only NAME,NAME] [--work DIR] [--json out.json]

Where porter writes nothing (exit 2: it could not run its own verification inputs), the same conversion is run
again with --no-verify and the checks are made on that folder (route marked '*'; it does not count as on the route).
The table's "conv s" is the `porter convert` subprocess, "total s" everything for the model.

Prints a table and totals; asserts nothing (the times are what this machine measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests_support, keras_layers_support

ATOL, RTOL = 1e-5, 1.3e-6  # porter's fp32 defaults


def _keras():
    import keras

    return keras


# ------------------------------------------------------------------ inputs
def token_ids(rng, batch, length, vocab, pad=True):
    """Ids in [1, vocab), post-padded with 0 (the first row full length, one row of length 1 when batch > 2)."""
    ids = rng.integers(1, vocab, size=(batch, length)).astype("int32")
    if pad:
        lengths = rng.integers(1, length + 1, size=batch)
        lengths[0] = length
        if batch > 2:
            lengths[-1] = 1
        ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids


def normal(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


@dataclass
class Case:
    name: str
    kind: str
    model: object
    feed: object  # (rng, batch, size) -> list of arrays, in the model's input order
    unseen: tuple  # two (batch, size) pairs porter's verification does not draw
    calib: object = None  # (rng) -> list of arrays for BatchNorm calibration (default feed(rng, 16, unseen[0][1]))
    fmt: str = "keras"
    note: str = ""


# ------------------------------------------------------------------ the corpus
def corpus() -> list[Case]:
    k = _keras()
    L = k.layers
    cases = []

    def add(fn):
        k.utils.set_random_seed(len(cases))
        cases.append(fn())
        return fn

    # --- text classifiers: Embedding(mask_zero=True) + recurrent layers
    @add
    def text_lstm():
        m = k.Sequential([k.Input((None,), dtype="int32", name="ids"), L.Embedding(500, 16, mask_zero=True),
                          L.LSTM(12), L.Dense(3, activation="softmax")], name="text_lstm")
        return Case("text_lstm", "text cls: Sequential Embedding(mask) + LSTM", m,
                    lambda r, b, s: [token_ids(r, b, s, 500)], ((5, 13), (2, 7)))

    @add
    def text_bigru():
        ids = k.Input((None,), dtype="int32", name="ids")
        x = L.Embedding(300, 16, mask_zero=True)(ids)
        x = L.Bidirectional(L.GRU(8, return_sequences=True))(x)
        x = L.GlobalAveragePooling1D()(x)  # masked mean
        x = L.Dropout(0.2)(x)
        out = L.Dense(1, activation="sigmoid", name="positive")(x)
        return Case("text_bigru", "text cls: Bidirectional(GRU) + masked GAP, sigmoid", k.Model(ids, out, name="text_bigru"),
                    lambda r, b, s: [token_ids(r, b, s, 300)], ((5, 13), (2, 7)))

    @add
    def text_stacked():
        ids = k.Input((None,), dtype="int32", name="ids")
        x = L.Embedding(400, 12, mask_zero=True)(ids)
        x = L.Bidirectional(L.LSTM(8, return_sequences=True), merge_mode="sum")(x)
        x = L.GRU(8, go_backwards=True)(x)
        out = L.Dense(4, name="logits")(x)
        return Case("text_stacked", "text cls: BiLSTM(sum) -> GRU(go_backwards)", k.Model(ids, out, name="text_stacked"),
                    lambda r, b, s: [token_ids(r, b, s, 400)], ((5, 13), (2, 7)))

    @add
    def text_tagger():
        ids = k.Input((None,), dtype="int32", name="ids")
        x = L.Embedding(250, 12, mask_zero=True)(ids)
        x = L.Bidirectional(L.LSTM(8, return_sequences=True))(x)
        out = L.TimeDistributed(L.Dense(5))(x)
        return Case("text_tagger", "sequence tagger: BiLSTM + TimeDistributed(Dense)", k.Model(ids, out, name="text_tagger"),
                    lambda r, b, s: [token_ids(r, b, s, 250)], ((5, 13), (2, 7)))

    @add
    def char_cnn():  # a character-level model: a vocabulary of 40 symbols
        m = k.Sequential([k.Input((None,), dtype="int32", name="chars"), L.Embedding(40, 8),
                          L.Conv1D(16, 3, padding="same", activation="relu"), L.GlobalMaxPooling1D(),
                          L.Dense(3)], name="char_cnn")
        return Case("char_cnn", "char-level CNN, vocab 40 (< 100)", m,
                    lambda r, b, s: [token_ids(r, b, s, 40, pad=False)], ((5, 13), (2, 7)))

    @add
    def text_float_ids():  # keras.Input(shape=(None,)) with no dtype: ids arrive as float32, Embedding casts
        ids = k.Input((None,), name="tokens")
        x = L.Embedding(1000, 8, mask_zero=True)(ids)
        x = L.GRU(8)(x)
        out = L.Dense(2)(x)
        return Case("text_float_ids", "text cls: float32 Input (no dtype) + Embedding(mask) + GRU",
                    k.Model(ids, out, name="text_float_ids"),
                    lambda r, b, s: [token_ids(r, b, s, 1000).astype("float32")], ((5, 13), (2, 7)))

    @add
    def seq2seq():
        enc_ids = k.Input((None,), dtype="int32", name="encoder_ids")
        dec_ids = k.Input((None,), dtype="int32", name="decoder_ids")
        e = L.Embedding(300, 12, mask_zero=True, name="enc_embed")(enc_ids)
        _, h, c = L.LSTM(16, return_state=True, name="encoder")(e)
        d = L.Embedding(200, 12, mask_zero=True, name="dec_embed")(dec_ids)
        y = L.LSTM(16, return_sequences=True, name="decoder")(d, initial_state=[h, c])
        out = L.Dense(200, activation="softmax", name="next_token")(y)
        # encoder and decoder lengths differ at the unseen shapes: size s -> encoder s, decoder s - 4
        return Case("seq2seq", "seq2seq LSTM encoder-decoder, 2 inputs, initial_state", k.Model([enc_ids, dec_ids], out, name="seq2seq"),
                    lambda r, b, s: [token_ids(r, b, s, 300), token_ids(r, b, max(2, s - 4), 200)], ((5, 13), (2, 11)))

    # --- audio
    @add
    def audio_mfcc_seq():
        m = k.Sequential([k.Input((None, 13), name="mfcc"),
                          L.Conv1D(16, 5, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling1D(2),
                          L.Conv1D(16, 3, padding="same"), L.BatchNormalization(), L.Activation("relu"),
                          L.GlobalAveragePooling1D(), L.Dropout(0.3), L.Dense(4)], name="audio_mfcc_seq")
        return Case("audio_mfcc_seq", "audio cls: Sequential Conv1D/BN/MaxPool1D on MFCCs", m,
                    lambda r, b, s: [normal(r, b, s, 13)], ((5, 37), (2, 64)))

    @add
    def audio_raw():
        wav = k.Input((None, 1), name="waveform")
        x = L.Conv1D(8, 9, strides=4, padding="same")(wav)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.AveragePooling1D(2, padding="same")(x)
        x = L.Conv1D(12, 3, dilation_rate=2, padding="causal")(x)
        x = L.BatchNormalization(momentum=0.9)(x)
        x = L.LeakyReLU(0.1)(x)
        x = L.GlobalMaxPooling1D()(x)
        out = L.Dense(6)(x)
        return Case("audio_raw", "audio cls: raw waveform, strided/causal/dilated Conv1D, BN", k.Model(wav, out, name="audio_raw"),
                    lambda r, b, s: [normal(r, b, s, 1)], ((5, 203), (2, 150)))

    # --- vision
    def conv_bn(x, f, name):
        x = L.Conv2D(f, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = L.BatchNormalization(name=f"{name}_bn")(x)
        return L.Activation("relu", name=f"{name}_relu")(x)

    @add
    def unet_transpose():
        img = k.Input((None, None, 3), name="image")
        c1 = conv_bn(img, 8, "d1")
        p1 = L.MaxPooling2D()(c1)
        c2 = conv_bn(p1, 16, "d2")
        p2 = L.MaxPooling2D()(c2)
        b = conv_bn(p2, 16, "mid")
        u2 = L.Conv2DTranspose(16, 2, strides=2, padding="same")(b)
        c3 = conv_bn(L.Concatenate()([u2, c2]), 16, "u2")
        u1 = L.Conv2DTranspose(8, 2, strides=2, padding="same")(c3)
        c4 = conv_bn(L.Concatenate()([u1, c1]), 8, "u1")
        out = L.Conv2D(2, 1, name="mask_logits")(c4)
        return Case("unet_transpose", "UNet: MaxPool2D, Conv2DTranspose, Concatenate, BN", k.Model(img, out, name="unet_transpose"),
                    lambda r, b, s: [normal(r, b, s, s, 3)], ((5, 24), (2, 40)))

    @add
    def unet_upsample():
        img = k.Input((None, None, 1), name="image")
        c1 = conv_bn(img, 8, "d1")
        p1 = L.MaxPooling2D()(c1)
        c2 = conv_bn(p1, 16, "d2")
        u1 = L.UpSampling2D(interpolation="bilinear")(c2)
        c3 = conv_bn(L.Concatenate()([u1, c1]), 8, "u1")
        u0 = L.UpSampling2D()(L.MaxPooling2D()(c3))
        out = L.Conv2D(1, 1, activation="sigmoid", name="mask")(L.Add()([u0, c3]))
        return Case("unet_upsample", "UNet: UpSampling2D bilinear + nearest, Concatenate, Add", k.Model(img, out, name="unet_upsample"),
                    lambda r, b, s: [normal(r, b, s, s, 1)], ((5, 24), (2, 40)))

    @add
    def cnn_seq_dropout():
        m = k.Sequential([k.Input((28, 28, 1), name="digit"),
                          L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(), L.Conv2D(16, 3, activation="relu"),
                          L.MaxPooling2D(), L.Dropout(0.25), L.Flatten(), L.Dense(32, activation="relu"),
                          L.Dropout(0.5), L.Dense(10, activation="softmax")], name="cnn_seq_dropout")
        return Case("cnn_seq_dropout", "CNN Sequential: Conv2D/MaxPool/Dropout/Flatten/Dense", m,
                    lambda r, b, s: [r.uniform(0, 1, (b, 28, 28, 1)).astype("float32")], ((5, None), (2, None)))

    @add
    def preprocess_front():
        img = k.Input((None, None, 3), name="pixels")
        x = L.Rescaling(1.0 / 127.5, offset=-1.0)(img)
        x = L.Resizing(40, 40)(x)
        x = L.CenterCrop(32, 32)(x)
        x = L.Conv2D(8, 3, strides=2, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
        x = L.DepthwiseConv2D(3, padding="same")(x)
        x = L.GlobalAveragePooling2D()(x)
        out = L.Dense(5)(x)
        return Case("preprocess_front", "Rescaling/Resizing/CenterCrop in front of a CNN", k.Model(img, out, name="preprocess_front"),
                    lambda r, b, s: [r.uniform(0, 255, (b, s, s + 7, 3)).astype("float32")], ((5, 50), (2, 37)))

    @add
    def sr_prelu():
        img = k.Input((None, None, 3), name="lowres")
        x = L.Conv2D(12, 3, padding="same")(img)
        x = L.PReLU(shared_axes=[1, 2])(x)
        y = L.Conv2D(12, 3, padding="same")(x)
        y = L.BatchNormalization()(y)
        y = L.PReLU(shared_axes=[1, 2])(y)
        x = L.Add()([x, y])
        x = L.Conv2D(12, 3, padding="same")(x)
        x = L.UpSampling2D(2)(x)
        out = L.Conv2D(3, 3, padding="same")(x)
        return Case("sr_prelu", "super-resolution: PReLU(shared_axes), residual, UpSampling2D", k.Model(img, out, name="sr_prelu"),
                    lambda r, b, s: [normal(r, b, s, s, 3)], ((5, 20), (2, 13)))

    # --- attention
    @add
    def transformer_block():
        ids = k.Input((None,), dtype="int32", name="ids")
        x = L.Embedding(300, 16, name="tok")(ids)
        a = L.MultiHeadAttention(num_heads=2, key_dim=8, dropout=0.1, name="mha")(x, x)
        x = L.LayerNormalization(epsilon=1e-6, name="ln1")(L.Add()([x, a]))
        f = L.Dense(32, activation="gelu", name="ffn1")(x)
        f = L.Dense(16, name="ffn2")(f)
        x = L.LayerNormalization(epsilon=1e-6, name="ln2")(L.Add()([x, L.Dropout(0.1)(f)]))
        x = L.GlobalAveragePooling1D()(x)
        out = L.Dense(2, name="logits")(x)
        return Case("transformer_block", "transformer encoder block: MHA, LayerNorm, gelu FFN, residuals",
                    k.Model(ids, out, name="transformer_block"),
                    lambda r, b, s: [token_ids(r, b, s, 300, pad=False)], ((5, 13), (2, 7)))

    @add
    def causal_decoder():
        x_in = k.Input((None, 16), name="x")
        a = L.MultiHeadAttention(num_heads=4, key_dim=4, name="self_attn")(x_in, x_in, use_causal_mask=True)
        x = L.LayerNormalization()(L.Add()([x_in, a]))
        f = L.Dense(32, activation=k.activations.gelu)(x)
        f = L.Dense(16)(f)
        x = L.LayerNormalization()(L.Add()([x, f]))
        out = L.Dense(8, name="next")(x)
        return Case("causal_decoder", "decoder block: MHA(use_causal_mask=True)", k.Model(x_in, out, name="causal_decoder"),
                    lambda r, b, s: [normal(r, b, s, 16)], ((5, 13), (2, 7)))

    @add
    def gqa_block():
        x_in = k.Input((None, 16), name="x")
        a = L.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2, name="gqa")(x_in, x_in)
        x = L.RMSNormalization(name="rms1")(L.Add()([x_in, a]))
        f = L.Dense(32, activation="silu")(x)
        f = L.Dense(16)(f)
        x = L.RMSNormalization(name="rms2")(L.Add()([x, f]))
        out = L.Dense(8, name="head")(x)
        return Case("gqa_block", "GroupQueryAttention + RMSNormalization block", k.Model(x_in, out, name="gqa_block"),
                    lambda r, b, s: [normal(r, b, s, 16)], ((5, 13), (2, 7)))

    @add
    def einsum_dense():
        x_in = k.Input((None, 12), name="features")
        x = L.EinsumDense("abc,cd->abd", output_shape=(None, 16), bias_axes="d", activation="relu")(x_in)
        x = L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 8), bias_axes="de")(x)
        x = L.Reshape((-1, 16))(x)
        x = L.GlobalAveragePooling1D()(x)
        out = L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c")(x)
        return Case("einsum_dense", "EinsumDense (3 equations) + Reshape", k.Model(x_in, out, name="einsum_dense"),
                    lambda r, b, s: [normal(r, b, s, 12)], ((5, 13), (2, 7)))

    # --- video
    @add
    def convlstm_video():
        clip = k.Input((None, 12, 12, 1), name="frames")
        x = L.ConvLSTM2D(4, 3, padding="same", return_sequences=True)(clip)
        x = L.BatchNormalization()(x)
        x = L.ConvLSTM2D(4, 3, padding="same")(x)
        x = L.GlobalAveragePooling2D()(x)
        out = L.Dense(3)(x)
        return Case("convlstm_video", "video: ConvLSTM2D x2 + BN", k.Model(clip, out, name="convlstm_video"),
                    lambda r, b, s: [normal(r, b, s, 12, 12, 1)], ((5, 3), (2, 6)))

    @add
    def td_cnn_video():
        clip = k.Input((None, 16, 16, 3), name="frames")
        x = L.TimeDistributed(L.Conv2D(8, 3, activation="relu"))(clip)
        x = L.TimeDistributed(L.BatchNormalization())(x)
        x = L.TimeDistributed(L.MaxPooling2D())(x)
        x = L.TimeDistributed(L.Flatten())(x)
        x = L.LSTM(8)(x)
        out = L.Dense(4)(x)
        return Case("td_cnn_video", "video: TimeDistributed(Conv2D/BN/MaxPool/Flatten) + LSTM", k.Model(clip, out, name="td_cnn_video"),
                    lambda r, b, s: [normal(r, b, s, 16, 16, 3)], ((5, 3), (2, 6)))

    # --- tabular / MLP
    @add
    def mlp_seq():
        m = k.Sequential([k.Input((20,), name="features"), L.Dense(32, activation="relu"), L.BatchNormalization(),
                          L.Dropout(0.2), L.Dense(16, activation="tanh"), L.Dense(3, activation="softmax")], name="mlp_seq")
        return Case("mlp_seq", "MLP Sequential: Dense/BN/Dropout", m, lambda r, b, s: [normal(r, b, 20)], ((5, None), (2, None)))

    @add
    def act_mix():
        x_in = k.Input((24,), name="x")
        x = L.Dense(32)(x_in)
        x = L.PReLU()(x)
        x = L.Dense(32)(x)
        x = L.ELU(alpha=0.5)(x)
        x = L.RMSNormalization()(x)
        out = L.Dense(4)(x)
        return Case("act_mix", "PReLU, ELU(alpha=0.5), RMSNormalization", k.Model(x_in, out, name="act_mix"),
                    lambda r, b, s: [normal(r, b, 24)], ((5, None), (2, None)))

    @add
    def multi_output():
        img = k.Input((32, 32, 3), name="image")
        x = conv_bn(img, 8, "stem")
        x = L.MaxPooling2D()(x)
        x = conv_bn(x, 16, "body")
        g = L.GlobalAveragePooling2D()(x)
        cls = L.Dense(5, activation="softmax", name="class_probs")(g)
        box = L.Dense(4, name="box")(g)
        seg = L.Conv2D(1, 1, activation="sigmoid", name="seg")(x)
        return Case("multi_output", "multi-output: class softmax, box regression, seg map", k.Model(img, [cls, box, seg], name="multi_output"),
                    lambda r, b, s: [normal(r, b, 32, 32, 3)], ((5, None), (2, None)))

    @add
    def nested():
        inner = k.Sequential([k.Input((None, None, 3)), L.Conv2D(8, 3, padding="same", use_bias=False),
                              L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(), L.Conv2D(16, 3, padding="same"),
                              L.GlobalAveragePooling2D()], name="backbone")
        f_in = k.Input((16,))
        head = k.Model(f_in, L.Dense(3)(L.Dropout(0.2)(L.Dense(16, activation="relu")(f_in))), name="head")
        img = k.Input((None, None, 3), name="image")
        out = head(inner(img))
        return Case("nested", "nested: Sequential backbone + functional head inside a Model", k.Model(img, out, name="nested"),
                    lambda r, b, s: [normal(r, b, s, s, 3)], ((5, 24), (2, 20)))

    @add
    def shared_dense():
        a = k.Input((10,), name="left")
        b = k.Input((10,), name="right")
        tower = L.Dense(16, activation="relu", name="shared_tower")
        proj = L.Dense(8, name="shared_proj")
        ea, eb = proj(tower(a)), proj(tower(b))
        diff = L.Subtract()([ea, eb])
        prod = L.Multiply()([ea, eb])
        out = L.Dense(1, name="same")(L.Concatenate()([diff, prod]))
        return Case("shared_dense", "siamese: shared Dense tower called twice", k.Model([a, b], out, name="shared_dense"),
                    lambda r, bb, s: [normal(r, bb, 10), normal(r, bb, 10)], ((5, None), (2, None)))

    @add
    def shared_lstm():
        q1 = k.Input((None,), dtype="int32", name="question1")
        q2 = k.Input((None,), dtype="int32", name="question2")
        emb = L.Embedding(400, 12, mask_zero=True, name="shared_embed")
        enc = L.LSTM(8, name="shared_lstm")
        v1, v2 = enc(emb(q1)), enc(emb(q2))
        out = L.Dense(2, name="dup")(L.Concatenate()([v1, v2, L.Multiply()([v1, v2])]))
        return Case("shared_lstm", "question pairs: shared Embedding(mask)+LSTM called twice", k.Model([q1, q2], out, name="shared_lstm"),
                    lambda r, b, s: [token_ids(r, b, s, 400), token_ids(r, b, max(2, s - 3), 400)], ((5, 13), (2, 9)))

    # --- Keras 3 .h5 files
    @add
    def mlp_h5():
        m = k.Sequential([k.Input((12,), name="x"), L.Dense(16, activation="relu"), L.BatchNormalization(),
                          L.Dense(4)], name="mlp_h5")
        return Case("mlp_h5", "MLP Sequential saved as .h5", m, lambda r, b, s: [normal(r, b, 12)], ((5, None), (2, None)), fmt="h5")

    @add
    def text_gru_h5():
        ids = k.Input((None,), dtype="int32", name="ids")
        x = L.Embedding(300, 8, mask_zero=True)(ids)
        x = L.GRU(8, return_sequences=True)(x)
        x = L.GlobalMaxPooling1D()(x)
        out = L.Dense(3)(x)
        return Case("text_gru_h5", "text cls (functional) saved as .h5", k.Model(ids, out, name="text_gru_h5"),
                    lambda r, b, s: [token_ids(r, b, s, 300)], ((5, 13), (2, 7)), fmt="h5")

    @add
    def audio_cnn_h5():
        mel = k.Input((None, 16), name="mel")
        x = L.Conv1D(12, 3, padding="same", use_bias=False)(mel)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.MaxPooling1D(2)(x)
        x = L.Conv1D(12, 3, padding="same", activation="relu")(x)
        x = L.GlobalAveragePooling1D()(x)
        out = L.Dense(4, activation="softmax")(x)
        return Case("audio_cnn_h5", "audio cls (functional, Conv1D/BN) saved as .h5", k.Model(mel, out, name="audio_cnn_h5"),
                    lambda r, b, s: [normal(r, b, s, 16)], ((5, 37), (2, 64)), fmt="h5")

    # --- what the writer used to refuse (issue 20): merge_mode=None, masks crossing a nested model's boundary
    # (last in the list: each entry's seed is its position, so the ones above keep theirs)
    @add
    def bidir_none():
        ids = k.Input((None,), dtype="int32", name="ids")
        x = L.Embedding(300, 12, mask_zero=True)(ids)
        fwd, bwd = L.Bidirectional(L.LSTM(8, return_sequences=True), merge_mode=None, name="bi")(x)
        return Case("bidir_none", "tagger: Bidirectional(merge_mode=None), two outputs", k.Model(ids, [fwd, bwd], name="bidir_none"),
                    lambda r, b, s: [token_ids(r, b, s, 300)], ((5, 13), (2, 9)))

    @add
    def nested_mask_in():
        seq = k.Input((None, 12))
        encoder = k.Model(seq, L.GRU(8, name="enc_gru")(L.Dense(12, activation="tanh", name="enc_fc")(seq)), name="encoder")
        ids = k.Input((None,), dtype="int32", name="ids")
        out = L.Dense(3, name="cls")(encoder(L.Embedding(300, 12, mask_zero=True, name="embed")(ids)))
        return Case("nested_mask_in", "text cls: Embedding(mask) into a nested encoder's GRU", k.Model(ids, out, name="nested_mask_in"),
                    lambda r, b, s: [token_ids(r, b, s, 300)], ((5, 13), (2, 9)))

    @add
    def nested_mask_out():
        embedder = k.Sequential([k.Input((None,), dtype="int32"), L.Embedding(300, 12, mask_zero=True, name="embed"),
                                 L.Dense(12, name="embed_proj")], name="embedder")
        ids = k.Input((None,), dtype="int32", name="ids")
        x = L.Bidirectional(L.LSTM(8, return_sequences=True), name="bilstm")(embedder(ids))
        out = L.Dense(3, name="cls")(L.GlobalAveragePooling1D()(x))
        return Case("nested_mask_out", "text cls: nested Sequential Embedding(mask), BiLSTM outside", k.Model(ids, out, name="nested_mask_out"),
                    lambda r, b, s: [token_ids(r, b, s, 300)], ((5, 13), (2, 9)))

    return cases


# ------------------------------------------------------------------ informative weights
def all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def informative(case: Case, seed: int = 0):
    """Biases/betas/scales/PReLU slopes away from init; BatchNorm calibrated then perturbed."""
    k = _keras()
    model = case.model
    from keras_layers_support import informative as away_from_init  # the layer tests' rule (tests/ is on sys.path)

    away_from_init(model, seed)  # biases and betas N(0, 0.3), scales U(0.5, 1.5)
    rng = np.random.default_rng(seed + 1)
    for v in model.weights:
        if v.trainable and v.path.rsplit("/", 1)[-1] == "alpha":  # PReLU's slopes start at 0
            v.assign(rng.uniform(0.05, 0.4, v.shape).astype("float32"))
    layers = all_layers(model)
    norms = [layer for layer in layers if isinstance(layer, k.layers.BatchNormalization)]
    if not norms:
        return model
    drops = [layer for layer in layers if "Dropout" in type(layer).__name__]
    saved = [(layer, layer.momentum) for layer in norms] + [(layer, layer.rate) for layer in drops]
    for layer in norms:
        layer.momentum = 0.0
    for layer in drops:
        layer.rate = 0.0
    feed = case.calib(rng) if case.calib else case.feed(rng, 16, case.unseen[0][1])
    model(feed if len(feed) > 1 else feed[0], training=True)
    for layer, value in saved:
        if isinstance(layer, k.layers.BatchNormalization):
            layer.momentum = value
        else:
            layer.rate = value
    for layer in norms:
        var = layer.moving_variance.numpy()
        layer.moving_mean.assign((layer.moving_mean.numpy() + 0.1 * np.sqrt(var) * rng.standard_normal(var.shape)).astype("float32"))
        layer.moving_variance.assign((var * rng.uniform(0.8, 1.25, var.shape)).astype("float32"))
    return model


# ------------------------------------------------------------------ per model
def _convert(src: Path, out: Path, timeout: float, *extra: str) -> tuple[int, str, dict, float]:
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "porter.cli", "-q", "convert", str(src), "--from", "tf", "--to", "torch",
                          "--out", str(out), "--force", *extra], capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    report_path = out / "porter_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return run.returncode, (run.stderr + run.stdout).strip(), report, seconds


def _listify(x):
    return [np.asarray(o) for o in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]


def unseen_check(keras_model, out: Path, case: Case) -> tuple[float, bool, list[str]]:
    """The written model against Keras at the two unseen shapes: (max abs, passed, problems)."""
    import torch

    from tests_support import load_written_model

    torch_model = load_written_model(out)
    worst, ok, problems = 0.0, True, []
    for i, (batch, size) in enumerate(case.unseen):
        feed = case.feed(np.random.default_rng(100 + i), batch, size)
        want = _listify(keras_model(feed if len(feed) > 1 else feed[0], training=False))
        label = "x".join(str(d) for d in feed[0].shape)
        try:
            with torch.no_grad():
                result = torch_model(*[torch.from_numpy(a) for a in feed])
            got = [t.numpy() for t in result] if isinstance(result, (list, tuple)) else [result.numpy()]
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems.append(f"{label}: torch raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            ok, worst = False, float("inf")
            continue
        if len(got) != len(want):
            problems.append(f"{label}: {len(got)} outputs, Keras {len(want)}")
            ok, worst = False, float("inf")
            continue
        for j, (w, g) in enumerate(zip(want, got)):
            if w.shape != g.shape:
                problems.append(f"{label}: output {j} shape {g.shape}, Keras {w.shape}")
                ok, worst = False, float("inf")
                continue
            diff = np.abs(w.astype(np.float64) - g.astype(np.float64))
            m = float(diff.max()) if diff.size else 0.0
            worst = max(worst, m)
            bad = ~(diff <= ATOL + RTOL * np.abs(w))
            if bad.any() or not np.isfinite(g).all():
                ok = False
                where = tuple(int(t) for t in np.unravel_index(np.argmax(diff), diff.shape))
                problems.append(f"{label}: output {j} max abs {m:.3g} at {where}, {int(bad.sum())}/{diff.size} outside tolerance")
    return worst, ok, problems


def train_check(src: Path, out: Path, keras_model) -> tuple[str, list[str]]:
    if not keras_model.trainable_variables:
        return "n.a.", []
    from porter.verifiers.training import verify_training

    try:
        result = verify_training(src, out, lr=0.1)
    except Exception as exc:  # noqa: BLE001
        return "error", [f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"]
    if result.passed:
        return "passed", [f"({result.dtype})"] if result.dtype != "float64" else []
    d = result.to_dict()
    why = [f"dtype {result.dtype}; loss {d['loss']}; first diverging layer: {result.first_diverging_layer}"]
    why += [f"{g.layer} {g.kind} max abs {g.max_abs:.3g}" for g in result.groups if not g.passed][:6]
    why += [f"output {n} after step max abs {o['max_abs']:.3g}" for n, o in result.outputs.items() if not o["passed"]]
    return "failed", why


def run_case(case: Case, work: Path, timeout: float) -> dict:
    k = _keras()
    t0 = time.perf_counter()
    row = {"model": case.name, "kind": case.kind, "format": case.fmt, "route": "-", "exit": None, "verify_max_abs": float("nan"),
           "unseen_max_abs": float("nan"), "unseen_passed": False, "train": "-", "problems": []}
    try:
        informative(case)
        src = work / f"{case.name}.{case.fmt}"
        case.model.save(str(src))
        out = work / f"{case.name}-torch"
        code, text, report, row["convert_seconds"] = _convert(src, out, timeout)
        row["exit"] = code
        row["route"] = report.get("route", "-")
        if report.get("route") != "keras layers" and report.get("route_reason"):
            row["problems"].append(f"route reason: {report['route_reason']}")
        worst = (report.get("verification") or {}).get("max_abs_error") or {}
        row["verify_max_abs"] = max(worst.values()) if worst else float("nan")
        if code != 0:
            lines = [ln for ln in text.splitlines() if ln.startswith(("error", "hint", "failed", "note")) or "FAIL" in ln]
            row["problems"].append(f"convert exit {code}: " + " | ".join(lines[:4])[:600])
        if not (out / "model.py").exists():
            # nothing written (porter could not verify): the same conversion with --no-verify, so that the checks
            # below still say whether the written model is right (marked '*' in the table)
            code2, text2, report, _ = _convert(src, out, timeout, "--no-verify")
            if code2 != 0 or not (out / "model.py").exists():
                row["problems"].append(f"--no-verify exit {code2}: {text2[-300:]}")
                row["seconds"] = time.perf_counter() - t0
                return row
            row["route"] = report.get("route", "-")
            row["no_verify"] = True
        try:
            reloaded = k.saving.load_model(str(src), safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001 - Keras cannot read its own file back (a Keras 3 .h5's op layers)
            reloaded = case.model  # the model that was saved, in memory
            row["problems"].append(f"note: Keras cannot load {src.name} back ({type(exc).__name__}): checked against "
                                   "the model that was saved")
        row["unseen_max_abs"], row["unseen_passed"], problems = unseen_check(reloaded, out, case)
        row["problems"] += [f"unseen: {p}" for p in problems]
        if report.get("writer") == "keras layers" or report.get("route") == "keras layers":
            row["train"], why = train_check(src, out, reloaded)
            row["problems"] += [f"train: {w}" for w in why]
        else:
            row["train"] = "n.a."
    except Exception as exc:  # noqa: BLE001 - the benchmark reports and goes on
        row["problems"].append(f"benchmark: {type(exc).__name__}: {exc}"[:400] + "\n" + traceback.format_exc()[-800:])
    row["seconds"] = time.perf_counter() - t0
    return row


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else ("inf" if x == float("inf") else f"{x:.2g}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--work", type=Path, default=None, help="keep the models and conversions here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="porter-keras-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    only = {n for n in args.only.split(",") if n}
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # the .h5 "legacy format" warning
    rows = []
    t_all = time.perf_counter()
    for case in corpus():
        if only and case.name not in only:
            continue
        row = run_case(case, work, args.timeout)
        rows.append(row)
        print(f"  {row['model']:18s} {row['route']:13s} exit {row['exit']}  {row['seconds']:.1f}s", flush=True)
    header = f"{'model':18s} {'fmt':5s} {'kind':58s} {'route':13s} {'exit':>4s} {'verify':>8s} {'unseen':>8s} {'train':7s} {'conv s':>6s} {'total s':>7s}"
    print()
    print(header)  # '*': porter wrote nothing (exit 2); route, unseen and train are from the same conversion with --no-verify
    print("-" * len(header))
    for r in rows:
        unseen = _fmt(r["unseen_max_abs"]) + ("" if r["unseen_passed"] or np.isnan(r["unseen_max_abs"]) else "!")
        route = r["route"] + ("*" if r.get("no_verify") else "")
        print(f"{r['model']:18s} {r['format']:5s} {r['kind'][:58]:58s} {route:13s} {str(r['exit']):>4s} "
              f"{_fmt(r['verify_max_abs']):>8s} {unseen:>8s} {r['train']:7s} {r.get('convert_seconds', float('nan')):6.1f} {r['seconds']:7.1f}")
    n = len(rows)
    on_route = sum(r["route"] == "keras layers" and not r.get("no_verify") for r in rows)
    converted = sum(r["exit"] == 0 for r in rows)
    unseen_ok = sum(bool(r["unseen_passed"]) for r in rows)
    trainable = [r for r in rows if r["train"] != "n.a."]
    train_ok = sum(r["train"] == "passed" for r in rows)
    all_ok = sum(r["route"] == "keras layers" and r["exit"] == 0 and not r.get("no_verify") and r["unseen_passed"] and r["train"] in ("passed", "n.a.")
                 for r in rows)
    print()
    print(f"{on_route}/{n} on the keras layers route, {converted}/{n} convert exit 0, {unseen_ok}/{n} correct at two unseen "
          f"shapes, {train_ok}/{len(trainable)} --train passing; {all_ok}/{n} pass everything; {time.perf_counter() - t_all:.0f} s")
    failing = [r for r in rows if r["problems"]]
    if failing:
        print("\nproblems:")
        for r in failing:
            print(f"  {r['model']}:")
            for p in r["problems"]:
                print(f"    - {p}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ONNX RNN/GRU/LSTM -> torch: native nn.LSTM/nn.GRU from models torch and Keras export, the unrolled
fallback against onnxruntime, and the refusals (ONNX's own node tests run in test_onnx_conformance.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from tests_support import run_onnx
from torch import nn

import porter
from porter.errors import UnsupportedModelError
from porter.onnx_to_torch import onnx_to_torch

ATOL = 1e-5


class Recurrent(nn.Module):
    """A bidirectional batch-first LSTM and a GRU side by side, every output returned (Y, h_n, c_n)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=1, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(4, 5, batch_first=True)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        z, g = self.gru(x)
        return y, h, c, z, g


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    module = Recurrent().eval()
    path = tmp_path_factory.mktemp("rnn") / "recurrent.onnx"
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 5, 4),), str(path), dynamo=True,
                          dynamic_shapes=({0: batch, 1: seq},), input_names=["x"], verbose=False)
    return module, onnx_to_torch(path)


def test_torch_lstm_and_gru_round_trip_as_native_modules(exported):
    module, gm = exported
    kinds = {type(m) for m in gm.children()}
    assert {nn.LSTM, nn.GRU} <= kinds
    (lstm,) = [m for m in gm.children() if isinstance(m, nn.LSTM)]
    assert lstm.bidirectional and lstm.num_layers == 1
    for batch, seq in [(3, 7), (1, 2)]:  # neither is the export example's (2, 5)
        x = torch.randn(batch, seq, 4)
        with torch.no_grad():
            want, got = module(x), gm(x)
        assert len(got) == len(want) == 5
        for w, g in zip(want, got):
            torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_a_perturbed_lstm_weight_changes_the_output(exported):
    module, gm = exported
    x = torch.randn(3, 7, 4)
    with torch.no_grad():
        want = module(x)[0]
        (lstm,) = [m for m in gm.children() if isinstance(m, nn.LSTM)]
        lstm.weight_hh_l0[0, 0] += 1e-3
        try:
            got = gm(x)[0]
        finally:
            lstm.weight_hh_l0[0, 0] -= 1e-3
    assert (got - want).abs().max().item() > ATOL


def _keras_model(second):
    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(0)
    seq = k.Input((None, 6), name="seq")  # dynamic time
    x = k.layers.LSTM(8, return_sequences=True, name="lstm")(seq)
    x = second(k)(x)
    return k.Model(seq, k.layers.Dense(3, name="head")(x))


def _convert_keras(model, tmp_path):
    """Through tf2onnx + porter's ONNX converter (--route onnx): auto now keeps the recurrent layers as modules
    (the keras layers writer; tests/test_keras_layers_recurrent.py); this tests ONNX's LSTM node and Loop."""
    path = tmp_path / "rnn.keras"
    model.save(str(path))
    out = tmp_path / "out"
    return out, porter.convert(str(path), source="tf", target="torch", out=out, route="onnx")


def test_keras_lstms_to_torch(tmp_path):
    out, result = _convert_keras(_keras_model(lambda k: k.layers.LSTM(5, name="lstm2")), tmp_path)
    assert result.passed, result.verification.failures()
    report = json.loads((out / "porter_report.json").read_text())
    assert max(report["verification"]["max_abs_error"].values()) <= ATOL
    assert report["static_dims"] == []
    assert {tuple(s["input_shapes"]["seq"][:2]) for s in report["verification"]["shapes"]} == {
        (1, 5), (1, 41), (3, 5), (3, 41)}  # two batch sizes x two sequence lengths
    assert (out / "model.py").read_text().count("nn.LSTM(") == 2


def test_keras_gru(tmp_path):
    """tf2onnx (1.17) writes a Keras 3 GRU as a Loop over the GRU cell, not as an ONNX GRU node:
    porter converts the Loop (its body a submodule run by a runtime helper) and it must verify."""
    out, result = _convert_keras(_keras_model(lambda k: k.layers.GRU(5, name="gru")), tmp_path)
    assert result.passed, result.verification.failures()
    report = json.loads((out / "porter_report.json").read_text())
    assert max(report["verification"]["max_abs_error"].values()) <= ATOL
    source = (out / "model.py").read_text()
    assert "def onnx_loop(" in source and "porter" not in source.replace("by porter", "")


# -- hand-built nodes: the unrolled fallback and the native module against onnxruntime ----------------
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _node_model(kind, *, const_weights, direction="forward", layout=0, seq="T", seed=0, **attrs):
    rng = np.random.RandomState(seed)
    dirs, gates, hidden, batch = (2 if direction == "bidirectional" else 1), GATES[kind], 3, 2
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    arrays = {"W": rng.randn(dirs, gates * hidden, 4), "R": rng.randn(dirs, gates * hidden, hidden),
              "B": rng.randn(dirs, 2 * gates * hidden), "initial_h": rng.randn(*state_shape)}
    names = ["X", "W", "R", "B", "", "initial_h"]
    if kind == "LSTM":
        arrays["initial_c"] = rng.randn(*state_shape)
        names.append("initial_c")
    arrays = {n: (a * 0.5).astype(np.float32) for n, a in arrays.items()}
    weights = {n: a for n, a in arrays.items() if n in ("W", "R", "B")}
    outputs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    node = helper.make_node(kind, names, outputs, hidden_size=3, direction=direction, layout=layout, **attrs)
    x_shape = [seq, batch, 4] if layout == 0 else [batch, seq, 4]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in arrays.items()
               if not (const_weights and n in weights)]
    inits = [numpy_helper.from_array(a, n) for n, a in weights.items()] if const_weights else []
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                    for o in outputs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    feeds = {n: a for n, a in arrays.items() if not (const_weights and n in weights)}
    return model, feeds


def _run(gm, x, feeds):
    args = [torch.from_numpy(x)] + [torch.from_numpy(feeds[n]) for n in gm.onnx_input_names[1:]]
    with torch.no_grad():
        return [o.numpy() for o in gm(*args)]


def _onnxruntime(model, x, feeds):
    return run_onnx(model, {"X": x, **feeds})


NATIVE = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}


@pytest.mark.parametrize("kind,attrs", [
    ("LSTM", {}), ("GRU", {"linear_before_reset": 1}), ("RNN", {}),  # native
    ("LSTM", {"clip": 0.4, "input_forget": 1}), ("GRU", {}),  # unrolled (GRU: linear_before_reset=0)
    # alpha/beta chosen so that the spec's reading (consumed in order) and onnxruntime's RNN kernel's
    # (indexed by direction) agree: HardSigmoid(0.2, 0.4), then LeakyRelu(0.3)
    ("RNN", {"activations": ["HardSigmoid", "LeakyRelu"], "activation_alpha": [0.2, 0.3],
             "activation_beta": [0.4, 0.0]}),
])
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_nodes_match_onnxruntime(kind, attrs, direction):
    if direction == "reverse" and "activations" in attrs:  # one direction: one RNN activation
        attrs = {name: values[:1] for name, values in attrs.items()}
    model, feeds = _node_model(kind, const_weights=True, direction=direction, seq=5, **attrs)
    gm = onnx_to_torch(model)
    native = attrs == {"linear_before_reset": 1} or (not attrs and kind != "GRU")
    assert any(isinstance(m, NATIVE[kind]) for m in gm.children()) == native
    x = np.random.RandomState(1).randn(5, 2, 4).astype(np.float32)
    for got, want in zip(_run(gm, x, feeds), _onnxruntime(model, x, feeds)):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_batch_first_native_module_matches_the_unrolled_fallback(kind):
    """layout=1 (which onnxruntime does not run): the native module (constant weights, dynamic time)
    against the fallback (run-time weights), on the same weights."""
    attrs = {"linear_before_reset": 1} if kind == "GRU" else {}
    native, feeds = _node_model(kind, const_weights=True, direction="bidirectional", layout=1, **attrs)
    fallback, all_feeds = _node_model(kind, const_weights=False, direction="bidirectional", layout=1, seq=6, **attrs)
    gm_native, gm_fallback = onnx_to_torch(native), onnx_to_torch(fallback)
    assert any(isinstance(m, NATIVE[kind]) for m in gm_native.children())
    assert not any(isinstance(m, NATIVE[kind]) for m in gm_fallback.children())
    x = np.random.RandomState(2).randn(2, 6, 4).astype(np.float32)
    for got, want in zip(_run(gm_native, x, feeds), _run(gm_fallback, x, all_feeds)):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)
    assert _run(gm_native, x[:, :3], feeds)[0].shape == (2, 3, 2, 3)  # [batch, seq, dirs, hidden]


def test_what_needs_the_fallback_with_a_dynamic_sequence_length_is_refused():
    model, _ = _node_model("LSTM", const_weights=True, clip=1.0)
    with pytest.raises(UnsupportedModelError, match=r"'LSTM_0' \(LSTM\): no native nn.LSTM .*\(clip\).*dynamic"):
        onnx_to_torch(model)


def test_unknown_activation_is_listed_by_the_pre_check():
    model, _ = _node_model("RNN", const_weights=True, activations=["Gelu"])
    with pytest.raises(UnsupportedModelError) as info:
        onnx_to_torch(model)
    assert info.value.problems == ["node '#0' (RNN): attribute activations=['Gelu'] is not supported"]

"""The float64 floor verdict (verifiers/noise_floor.py): each float32 output judged against the reference run in
float64, allowed FLOOR_K times the reference's own float32 error. Honest conversions pass (a deep conv net that
today's fixed 1e-5 flags included); every perturbation class fails; where float64 cannot run, or the user fixed a
tolerance, the fixed rule judges and the report says so."""

import json

import numpy as np
import pytest
from tests_support import load_benchmark

import porter
from porter.verifiers import noise_floor
from porter.verifiers.compare import compare


def _bench():
    return load_benchmark("noise_floor")


def _outputs(result):
    return [o for s in result.shapes for o in s.outputs]


def _judged(name, ref32, ref64, cand):
    o = compare(name, ref32, cand)
    noise_floor.judge(o, ref32, ref64, cand)
    return o


# ------------------------------------------------------------------ the rule itself, on arrays


def test_rule_passes_float32_noise_and_fails_a_larger_error():
    rng = np.random.default_rng(0)
    ref64 = rng.standard_normal((4, 64)) * 3
    ref32 = (ref64 + rng.standard_normal(ref64.shape) * 2e-5).astype(np.float32)  # a deep net's float32 error
    honest = (ref64 + rng.standard_normal(ref64.shape) * 2e-5).astype(np.float32)
    assert not compare("predictions", ref32, honest).passed  # today's fixed rule: a false alarm at 1e-5
    o = _judged("predictions", ref32, ref64, honest)
    assert o.passed and o.rule == "float64 floor" and o.floor_k == noise_floor.FLOOR_K
    assert o.floor > 5e-5 and 0.3 < o.floor_ratio < 3 and o.error_vs_float64 < o.floor_bound
    bad = (ref64 + rng.standard_normal(ref64.shape) * 2e-5 * 2 * noise_floor.FLOOR_K).astype(np.float32)
    o = _judged("predictions", ref32, ref64, bad)
    assert not o.passed and "float32 floor" in o.reason and o.floor_ratio > noise_floor.FLOOR_K
    assert o.mismatched > 0


def test_a_floor_float32_cannot_resolve_is_said_with_what_the_pass_cannot_see():
    """An ill-conditioned net (EfficientNetB6 with random weights: floor 4.15 on logits of spread ~2) passes by the
    floor, and the note says float32 cannot resolve it and which defects the pass cannot see; a well-conditioned
    output (floor 1e-5 of its scale) gets no such note."""
    rng = np.random.default_rng(1)
    ref64 = rng.standard_normal((3, 10)) * 2
    noisy32 = (ref64 + rng.standard_normal(ref64.shape) * 0.5).astype(np.float32)
    cand = (ref64 + rng.standard_normal(ref64.shape) * 0.5).astype(np.float32)
    coarse = _judged("predictions", noisy32, ref64, cand)
    fine32 = (ref64 + rng.standard_normal(ref64.shape) * 2e-5).astype(np.float32)
    fine = _judged("predictions", fine32, ref64, (ref64 + rng.standard_normal(ref64.shape) * 2e-5).astype(np.float32))
    assert coarse.passed and noise_floor.coarse(coarse) and fine.passed and not noise_floor.coarse(fine)
    feeds = [{"x": np.zeros((3, 10), np.float32)}, {"x": np.zeros((1, 10), np.float32)}]
    notes = noise_floor.coarse_notes(feeds, [[coarse], [fine]])
    assert len(notes) == 1 and "predictions" in notes[0] and "float32 cannot resolve" in notes[0]
    assert f"{coarse.floor_bound:.3g}" in notes[0]


def test_an_output_exact_in_float32_still_lets_the_candidate_round_differently():
    """floor 0 (a shallow output): a few ulps at the output's magnitude pass, more does not."""
    ref64 = np.linspace(-2, 2, 33)
    ref32 = ref64.astype(np.float32)
    exact = ref32.astype(np.float64)
    one_ulp = np.nextafter(ref32, np.float32(np.inf))
    o = _judged("y", ref32, exact, one_ulp)
    assert o.passed and o.floor == 0.0
    o = _judged("y", ref32, exact, ref32 + np.float32(1e-5))
    assert not o.passed and o.floor_ratio == float("inf")


def test_names_do_not_change_the_floor_verdict():
    rng = np.random.default_rng(1)
    ref64 = rng.standard_normal(100)
    ref32 = (ref64 + 1e-6 * rng.standard_normal(100)).astype(np.float32)
    cand = (ref64 + 5e-5).astype(np.float32)  # 50 floors: outside, whatever the name
    assert compare("logits", ref32, cand).passed  # the fixed rule's 1e-4 for logits
    assert not _judged("logits", ref32, ref64, cand).passed
    assert not _judged("last_hidden_state", ref32, ref64, cand).passed


# ------------------------------------------------------------------ tiny BERT (direct route): torch reference in float64


def _perturbed_bert(tiny_bert, tmp_path, case):
    path = _bench().perturbed_hf(tiny_bert, case, tmp_path / f"bert-{case}")
    assert path is not None, case
    return path


def test_honest_bert_is_judged_by_the_floor_in_every_report(cli, tiny_bert, tiny_bert_tf, tmp_path):
    paths = {k: tmp_path / f"r.{k}" for k in ("json", "md", "xml", "html")}
    code, out = cli("verify", tiny_bert, tiny_bert_tf, "--report", paths["json"], "--markdown", paths["md"],
                    "--junit", paths["xml"], "--html", paths["html"])
    assert code == 0, out
    report = json.loads(paths["json"].read_text())
    outputs = [o for s in report["shapes"] for o in s["outputs"]]
    assert outputs and all(o["rule"] == "float64 floor" for o in outputs)
    for o in outputs:  # per output and shape: the error against float64, the floor, their ratio
        assert o["floor"] > 0 and o["error_vs_float64"] > 0 and o["floor_ratio"] <= 3  # measured <= 2.3
        assert o["error_vs_float64"] <= o["floor_bound"]
    summary = report["noise_floor"]
    assert summary["k"] == noise_floor.FLOOR_K and set(summary["outputs"]) == {"last_hidden_state", "pooler_output"}
    assert all(v["rules"] == ["float64 floor"] and v["worst_ratio"] > 0 for v in summary["outputs"].values())
    assert any("judged against the reference run in float64" in n for n in report["notes"])
    md = paths["md"].read_text()
    assert "err vs fp64 / fp32 floor (ratio)" in md and "float64 floor (<= 8x)" in md
    assert "rule=float64_floor" in paths["xml"].read_text()
    flat = " ".join(out.split())
    assert "judged by the float64 floor" in flat


@pytest.mark.parametrize("case", ["weight", "ln", "transpose", "heads"])
def test_each_defect_in_bert_fails(tiny_bert, tiny_bert_tf, tmp_path, case):
    """One weight x (1 + 1e-3 N(0,1)), a LayerNorm weight x 1.01, a transposed square kernel, two heads swapped:
    each fails under the floor (the defect is in the reference; the verdict is symmetric)."""
    result = porter.verify(str(_perturbed_bert(tiny_bert, tmp_path, case)), str(tiny_bert_tf))
    assert not result.passed
    failing = [o for o in _outputs(result) if not o.passed]
    assert failing and all(o.rule == "float64 floor" and o.floor_ratio > noise_floor.FLOOR_K for o in failing)
    assert any("float32 floor" in f for f in result.failures())


def test_heads_permuted_consistently_pass_and_swapped_in_value_only_fail(tiny_bert, tiny_bert_tf, tmp_path):
    """The positive control of the heads class: heads 0 and 1 exchanged in query, key and value and in the output
    projection's columns is the same function (other float32 rounding); exchanged in the value alone it is not."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(tiny_bert).eval()
    d = model.config.hidden_size // model.config.num_attention_heads
    order = torch.arange(model.config.hidden_size)
    order[:d], order[d:2 * d] = torch.arange(d, 2 * d), torch.arange(d)
    attention = model.encoder.layer[1].attention
    with torch.no_grad():
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            linear.weight.copy_(linear.weight[order].clone())
            linear.bias.copy_(linear.bias[order].clone())
        attention.output.dense.weight.copy_(attention.output.dense.weight[:, order].clone())
    model.save_pretrained(tmp_path / "permuted")
    result = porter.verify(str(tmp_path / "permuted"), str(tiny_bert_tf))
    assert result.passed, result.failures()
    assert all(o.rule == "float64 floor" for o in _outputs(result))
    assert not porter.verify(str(_perturbed_bert(tiny_bert, tmp_path, "heads")), str(tiny_bert_tf)).passed


# ------------------------------------------------------------------ a Keras CNN with BatchNorm (TF -> torch): Keras reference in float64


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory):
    """A calibrated 6-block conv net with BatchNorm, converted by the keras layers writer: (source, out)."""
    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(0)
    x = k.Input((24, 24, 3), name="image")
    h = x
    for i in range(6):
        h = k.layers.Conv2D(12, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = k.layers.BatchNormalization(name=f"bn{i}")(h)
        h = k.layers.ReLU()(h)
    h = k.layers.GlobalAveragePooling2D()(h)
    model = k.Model(x, k.layers.Dense(5, name="predictions")(h), name="cnn")
    rng = np.random.default_rng(0)
    norms = [layer for layer in model.layers if isinstance(layer, k.layers.BatchNormalization)]
    for layer in norms:  # calibrated on a batch, then moved so they are no plain re-normalisation
        layer.momentum = 0.0
        layer.beta.assign((0.5 + 0.2 * rng.standard_normal(layer.beta.shape)).astype("float32"))
    model(rng.standard_normal((16, 24, 24, 3)).astype("float32"), training=True)
    for layer in norms:
        layer.moving_variance.assign((layer.moving_variance.numpy() * rng.uniform(0.8, 1.25, 12)).astype("float32"))
    work = tmp_path_factory.mktemp("keras-cnn")
    src = work / "cnn.keras"
    model.save(str(src))
    out = work / "cnn-torch"
    result = porter.convert(str(src), source="tf", target="torch", out=out)
    assert result.passed, result.verification.failures()
    return src, out


def _keras_inputs():
    rng = np.random.default_rng(3)
    return [{"image": rng.standard_normal((b, 24, 24, 3)).astype("float32")} for b in (1, 3)]


def test_keras_reference_in_float64_passes_the_honest_conversion(keras_cnn):
    src, out = keras_cnn
    result = porter.verify(str(src), str(out), inputs=_keras_inputs())
    assert result.passed, result.failures()
    assert all(o.rule == "float64 floor" and o.floor > 0 and o.floor_ratio <= 3 for o in _outputs(result))


@pytest.mark.parametrize("case", ["bn_var", "weight", "transpose"])
def test_each_defect_in_the_keras_cnn_fails(keras_cnn, tmp_path, case):
    src, out = keras_cnn
    bad = _bench().perturbed_keras(src, case, tmp_path / f"cnn-{case}.keras")
    result = porter.verify(str(bad), str(out), inputs=_keras_inputs())
    assert not result.passed
    assert all(o.rule == "float64 floor" and o.floor_ratio > noise_floor.FLOOR_K for o in _outputs(result))


# ------------------------------------------------------------------ the fixed rule, said why


def test_given_atol_keeps_a_fixed_tolerance_and_says_the_floor_was_not_used(tiny_bert, tiny_bert_tf, tmp_path):
    result = porter.verify(str(tiny_bert), str(tiny_bert_tf), atol=1e-5, rtol=1.3e-6)
    assert result.passed
    assert all(o.rule == "fixed tolerance" and o.floor is None and "--atol/--rtol given" in o.floor_note for o in _outputs(result))
    assert any("float64 floor not used: --atol/--rtol given" in n for n in result.notes)
    # a perturbation under the given tolerance passes, as the user asked (no floor)
    loose = porter.verify(str(_perturbed_bert(tiny_bert, tmp_path, "weight")), str(tiny_bert_tf), atol=1e-3, rtol=0)
    assert loose.passed


def test_a_per_output_tolerance_fixes_only_that_output(tiny_bert, tiny_bert_tf):
    result = porter.verify(str(tiny_bert), str(tiny_bert_tf), per_output_atol={"pooler_output": 1e-5})
    rules = {o.name: o.rule for o in _outputs(result)}
    assert rules == {"last_hidden_state": "float64 floor", "pooler_output": "fixed tolerance"}


def test_a_reference_without_float64_falls_back_and_says_why(tiny_bert, tiny_bert_tf):
    """The SavedModel as the reference: its runner has no float64 path. The fixed rule judges, and says so."""
    result = porter.verify(str(tiny_bert_tf), str(tiny_bert))
    assert result.passed, result.failures()
    assert all(o.rule == "fixed tolerance" and "SavedModelRunner" in o.floor_note for o in _outputs(result))
    assert any(n.startswith("float64 floor not used: the reference's runner (SavedModelRunner) has no float64 path")
               for n in result.notes)
    report = result.to_dict()["noise_floor"]["outputs"]["last_hidden_state"]
    assert report["rules"] == ["fixed tolerance"] and report["fixed_because"]


def test_a_float64_run_that_fails_is_the_fixed_rule_never_a_crash(tiny_bert, tiny_bert_tf, tmp_path, monkeypatch):
    from porter.verifiers.runners.torch_hf import HFTorchRunner

    real = noise_floor._torch_float64

    def broken(runner):
        assert isinstance(runner, HFTorchRunner)

        class Boom:
            def __enter__(self):
                def call(feed):
                    raise RuntimeError('"addmm" not implemented for \'Double\'')
                return call

            def __exit__(self, *exc):
                return False
        return Boom()

    monkeypatch.setattr(noise_floor, "_torch_float64", broken)
    result = porter.verify(str(tiny_bert), str(tiny_bert_tf))
    monkeypatch.setattr(noise_floor, "_torch_float64", real)
    assert result.passed
    assert all(o.rule == "fixed tolerance" and "failed in float64" in o.floor_note for o in _outputs(result))
    assert any("RuntimeError" in n and "float64 floor not used" in n for n in result.notes)
    # and the fixed rule still catches a real defect
    bad = porter.verify(str(_perturbed_bert(tiny_bert, tmp_path, "ln")), str(tiny_bert_tf))
    assert not bad.passed


def test_not_enough_memory_for_float64_is_the_fixed_rule(tiny_bert, tiny_bert_tf, monkeypatch):
    import porter.resources.memory_estimate as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)
    result = porter.verify(str(tiny_bert), str(tiny_bert_tf))
    assert result.passed
    assert all(o.rule == "fixed tolerance" and "is available" in o.floor_note for o in _outputs(result))
    assert any("float64 floor not used: the float64 reference needs about" in n for n in result.notes)


def test_a_16bit_reference_keeps_the_fixed_rule():
    o = compare("y", np.ones(4, np.float16), np.ones(4, np.float16))
    assert noise_floor.applies(np.ones(4, np.float16), np.ones(4, np.float16)) == "reference output is float16"
    assert noise_floor.applies(np.ones(4, np.float32), np.ones(4, np.float16)) == "candidate output is float16"
    assert o.rule == ""


# ------------------------------------------------------------------ the false alarm today's rule raises on a deep conv net


def test_deep_conv_net_false_alarm_now_passes_and_a_defect_still_fails(tmp_path):
    """keras.applications MobileNetV3Small (96 px, calibrated, not conditioned: the test models as they were) TF ->
    torch (NCHW): the conversion is exact in float64, but Keras float32 is itself ~3e-5 from Keras float64, so
    today's fixed 1e-5 fails it (measured 4.1e-5 on predictions). The floor passes it (err/floor 1.6) and still
    fails a BatchNorm variance x 1.01 (ratio ~7e3)."""
    apps = load_benchmark("keras_apps_all")
    src = tmp_path / "MobileNetV3Small.keras"
    apps.build("MobileNetV3Small", 96, damp=1.0, beta=0.0).save(str(src))
    out = tmp_path / "mnv3-torch"
    result = porter.convert(str(src), source="tf", target="torch", out=out, layout="nchw")
    assert result.passed, result.verification.failures()
    from porter.process.frameworks import keras

    name = keras().models.load_model(str(src), compile=False).inputs[0].name.split(":")[0]
    rng = np.random.default_rng(5)
    inputs = [{name: apps.images("MobileNetV3Small", b, 96, rng)} for b in (1, 3)]
    honest = porter.verify(str(src), str(out), inputs=inputs)
    assert honest.passed, honest.failures()
    outputs = _outputs(honest)
    assert all(o.rule == "float64 floor" and o.floor_ratio <= 3 for o in outputs)
    assert max(o.max_abs for o in outputs) > 1e-5  # what today's rule would have flagged
    fixed = porter.verify(str(src), str(out), inputs=inputs, atol=1e-5, rtol=1.3e-6)
    assert not fixed.passed  # the same conversion under today's fixed tolerance: the false alarm
    bad = _bench().perturbed_keras(src, "bn_var", tmp_path / "mnv3-bn.keras")
    result = porter.verify(str(bad), str(out), inputs=inputs)
    assert not result.passed and all(o.floor_ratio > 100 for o in _outputs(result))


# ------------------------------------------------------------------ onnxruntime: float64 where its kernels allow


def _onnx(path, conv: bool):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if conv:  # onnxruntime's CPU Conv has no float64 kernel
        weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
        nodes = [helper.make_node("Conv", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])
    else:
        weight = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
                 helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_reference_runs_in_float64_where_its_ops_allow(tmp_path):
    path = _onnx(tmp_path / "mlp.onnx", conv=False)
    feeds = [{"x": np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)}]
    result = porter.verify(str(path), str(path), inputs=feeds)
    assert result.passed and all(o.rule == "float64 floor" and o.floor > 0 for o in _outputs(result))


def test_an_op_without_float64_is_the_fixed_rule_said_why(tmp_path):
    path = _onnx(tmp_path / "conv.onnx", conv=True)
    feeds = [{"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}]
    result = porter.verify(str(path), str(path), inputs=feeds)
    assert result.passed
    (o,) = _outputs(result)
    assert o.rule == "fixed tolerance" and "onnxruntime cannot run this graph in float64" in o.floor_note and "Conv" in o.floor_note
    assert any(n.startswith("float64 floor not used: onnxruntime cannot run") for n in result.notes)


def test_recorded_outputs_are_the_fixed_rule():
    from porter.verifiers.recorded import RecordedRunner

    with pytest.raises(noise_floor.NoFloat64, match="recorded outputs"):
        with noise_floor.float64_of(RecordedRunner("e.npz", {}, {})):
            pass

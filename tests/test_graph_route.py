"""`porter convert --from torch --to tf` on the graph route: transformers (or a .pt2) -> torch.export ->
porter/graph_to_tf -> SavedModel. auto takes it for HF folders outside the zoo, variants the direct route
cannot reproduce and .pt2 files; ops without a converter send auto to the ONNX route (and --route graph
to exit 2, naming them). The written SavedModel is checked here through plain tf.saved_model.load at
shapes porter never verifies with."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hf_tiny import make_tiny, perturb_norms
from tests_support import save_pt2

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

DECODER = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 37, "max_position_embeddings": 64}
# decoders outside porter's zoo: (class, config, output compared, tolerance)
DECODERS = {
    "gpt_neox": ("GPTNeoXForCausalLM", dict(DECODER, rotary_pct=0.5), "logits", 1e-4),
    "phi": ("PhiModel", dict(DECODER, partial_rotary_factor=0.5), "last_hidden_state", 1e-5),
}
UNUSED_SHAPES = [(3, 11), (1, 2)]  # porter verifies at batch 1/3 x sequence 5/41


def _report(out) -> dict:
    return json.loads((out / "porter_report.json").read_text())


def _save_decoder(path, kind):
    cls_name, kwargs, _, _ = DECODERS[kind]
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(transformers.CONFIG_MAPPING[kind](**kwargs)).eval()
    perturb_norms(model)
    model.save_pretrained(path)
    return path


def _text_feeds(batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    if batch > 1:
        mask[-1, seq // 2:] = 0  # right padding in the last row
    return {"input_ids": rng.integers(0, 99, (batch, seq)).astype(np.int64), "attention_mask": mask}


def _serve(out, signature="serving_default"):
    import tensorflow as tf

    return tf.saved_model.load(str(out)).signatures[signature]


@pytest.fixture(scope="module", params=sorted(DECODERS))
def decoder(request, tmp_path_factory):
    from cli_runner import make_cli

    kind = request.param
    root = tmp_path_factory.mktemp(f"graph-{kind}")
    src, out = _save_decoder(root / kind, kind), root / "tf"
    code, text = make_cli()("convert", src, "--from", "torch", "--to", "tf", "--out", out)
    return kind, src, out, code, text


def test_decoder_outside_the_zoo_takes_the_graph_route(decoder):
    kind, _, out, code, text = decoder
    assert code == 0, text
    report = _report(out)
    assert report["route"] == "graph" and report["status"] == "passed"
    assert f"model_type '{kind}'" in report["route_reason"] and "route: graph" in text
    assert report["static_dims"] == [] and report["dynamic_dims_kept"]
    assert set(report["dynamic_dims"]["input_ids"]) == {"0", "1"}
    assert {tuple(s["input_shapes"]["input_ids"]) for s in report["verification"]["shapes"]} >= {(1, 5), (3, 41)}
    assert "transformers" in report["comparison"]["reference"]
    assert not list(out.glob("*.onnx"))


def test_saved_model_matches_transformers_at_shapes_porter_never_uses(decoder):
    import tensorflow as tf

    kind, src, out, code, text = decoder
    assert code == 0, text
    cls_name, _, output, tol = DECODERS[kind]
    model = getattr(transformers, cls_name).from_pretrained(src).eval()
    serve = _serve(out)
    for batch, seq in UNUSED_SHAPES:
        feeds = _text_feeds(batch, seq)
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, use_cache=False)[output].numpy()
        got = serve(**{k: tf.constant(v.astype(np.int32)) for k, v in feeds.items()})[output].numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= tol, (kind, batch, seq)


def test_int32_and_int64_signatures_agree_at_a_shape_porter_never_uses(decoder):
    """As on the direct route: serving_default takes int32 ids, serving_int64 int64, same dims and outputs."""
    import tensorflow as tf

    kind, _, out, code, text = decoder
    assert code == 0, text
    loaded = tf.saved_model.load(str(out))
    causal = DECODERS[kind][0].endswith("ForCausalLM")  # a causal LM also serves prefill/decode (test_graph_kv_cache)
    assert sorted(loaded.signatures) == sorted(["serving_default", "serving_int64"] + (["prefill", "decode"] if causal else []))
    feeds = _text_feeds(2, 13, seed=1)
    got = {}
    for key, dtype in (("serving_default", np.int32), ("serving_int64", np.int64)):
        serve = loaded.signatures[key]
        assert {n: s.dtype for n, s in serve.structured_input_signature[1].items()} == {
            n: tf.as_dtype(dtype) for n in feeds}
        got[key] = {k: v.numpy() for k, v in serve(**{k: tf.constant(v.astype(dtype)) for k, v in feeds.items()}).items()}
    assert list(got["serving_default"]) == list(got["serving_int64"]) == [DECODERS[kind][2]]
    for name, value in got["serving_default"].items():
        np.testing.assert_array_equal(value, got["serving_int64"][name])
    report = _report(out)
    assert report["inputs"]["input_ids"] == {"dtype": "int32", "shape": [None, None]}
    assert report["signatures"]["serving_int64"]["input_ids"] == {"dtype": "int64", "shape": [None, None]}


def test_signature_keeps_transformers_names_and_dynamic_dims(decoder):
    kind, _, out, code, text = decoder
    assert code == 0, text
    for key, dtype in (("serving_default", "int32"), ("serving_int64", "int64")):
        serve = _serve(out, key)
        inputs = serve.structured_input_signature[1]
        assert sorted(inputs) == ["attention_mask", "input_ids"]
        for spec in inputs.values():
            assert spec.shape.as_list() == [None, None] and spec.dtype.name == dtype
        assert list(serve.structured_outputs) == [DECODERS[kind][2]]


# -- .pt2 ----------------------------------------------------------------------------------------


class _MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.norm = torch.nn.Linear(16, 8), torch.nn.LayerNorm(8)

    def forward(self, x):
        return torch.nn.functional.gelu(self.norm(self.lin(x)))


class _Spectrum(torch.nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x, dim=-1).abs()


@pytest.fixture(scope="module")
def mlp_pt2(tmp_path_factory):
    torch.manual_seed(0)
    model = _MLP().eval()
    perturb_norms(model)
    return model, save_pt2(model, torch.randn(3, 16), tmp_path_factory.mktemp("pt2") / "mlp.pt2", {0: ("batch", 1, 64)})


def test_pt2_takes_the_graph_route(mlp_pt2, cli, tmp_path):
    import tensorflow as tf

    model, path = mlp_pt2
    out = tmp_path / "tf"
    code, text = cli("convert", path, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, text
    report = _report(out)
    assert report["route"] == "graph" and report["status"] == "passed" and report["static_dims"] == []
    serve = _serve(out)
    (name, spec), = serve.structured_input_signature[1].items()
    assert name == "x" and spec.shape.as_list() == [None, 16]
    x = np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32)
    (got,) = serve(x=tf.constant(x)).values()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(got.numpy() - want).max() <= 1e-5


def test_an_op_without_converter_exits_2_on_graph(cli, tmp_path):
    path = save_pt2(_Spectrum().eval(), torch.randn(2, 16), tmp_path / "fft.pt2", {0: ("batch", 1, 64)})
    out = tmp_path / "tf"
    code, text = cli("convert", path, "--from", "torch", "--to", "tf", "--out", out, "--route", "graph")
    assert code == 2, text
    assert "aten._fft_r2c.default x1" in text and "porter/graph_to_tf/ops" in text and "Traceback" not in text
    assert not out.exists()


def _without_converter(monkeypatch, name):
    """The converter of ``name`` removed for this test (an op porter may gain a converter for any day)."""
    from porter.graph_to_tf import registry

    registry.registered()  # the ops modules are imported
    for key in [k for k in registry._REGISTRY if registry.op_name(k) == name]:
        monkeypatch.delitem(registry._REGISTRY, key)


def test_a_missing_converter_is_listed_on_every_route_choice(mlp_pt2, cli, tmp_path, monkeypatch):
    """No onnx2tf to fall back to: auto and --route graph both exit 2 naming the op, its count and where it is used."""
    _without_converter(monkeypatch, "aten.gelu.default")
    _, path = mlp_pt2
    for route in ("graph", "auto"):
        out = tmp_path / route
        code, text = cli("convert", path, "--from", "torch", "--to", "tf", "--out", out, "--route", route)
        assert code == 2 and "aten.gelu.default x1" in text and "Traceback" not in text, text
        assert not out.exists()


def test_a_mismatch_names_the_first_diverging_node(mlp_pt2, cli, tmp_path, monkeypatch):
    """A wrong converter (relu for gelu): verification fails (exit 1) and the report names the node."""
    from porter.graph_to_tf import registry

    registry.registered()
    key = next(k for k in registry._REGISTRY if registry.op_name(k) == "aten.gelu.default")
    import tensorflow as tf

    monkeypatch.setitem(registry._REGISTRY, key, registry.Converter(lambda x, approximate="none": tf.nn.relu(x), key))
    _, path = mlp_pt2
    out = tmp_path / "tf"
    code, text = cli("convert", path, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 1, text
    report = _report(out)
    assert report["status"] == "failed" and report["localisation"]["op"] == "aten.gelu.default"
    assert any("first divergence" in n and "aten.gelu.default" in n for n in report["verification"]["notes"])


# -- zoo families whose direct route refuses the folder --------------------------------------------


def test_vit_model_with_pooler_takes_the_graph_route(cli, tmp_path):
    src, out = make_tiny(tmp_path / "vit", "vit"), tmp_path / "tf"
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, text
    report = _report(out)
    assert report["route"] == "graph" and "pooler" in report["route_reason"]
    assert report["inputs"]["pixel_values"]["shape"] == [None, 3, 32, 32]
    for name in ("last_hidden_state", "pooler_output"):
        assert report["verification"]["max_abs_error"][name] <= 1e-5
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "d", "--route", "direct")
    assert code == 2 and "--route onnx" in text


def test_a_head_the_direct_route_lacks_takes_the_graph_route(cli, tmp_path):
    """LlamaForSequenceClassification: keras-hub has no such Llama task, so auto converts it through transformers."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**DECODER, num_key_value_heads=2, num_labels=3, pad_token_id=0)
    model = transformers.LlamaForSequenceClassification(config).eval()
    perturb_norms(model)
    model.save_pretrained(tmp_path / "hf")
    out = tmp_path / "tf"
    code, text = cli("convert", tmp_path / "hf", "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, text
    report = _report(out)
    assert report["route"] == "graph" and "LlamaForSequenceClassification" in report["route_reason"]
    assert report["outputs"] == ["logits"] and report["verification"]["max_abs_error"]["logits"] <= 1e-4


def _decoder_folder(tmp_path):
    return _save_decoder(tmp_path / "gpt_neox", "gpt_neox")


def test_dims_torch_refuses_are_left_to_torch(cli, tmp_path, monkeypatch):
    """Named Dims torch.export refuses (here: a sequence range that excludes the example): retried with Dim.AUTO,
    and the report says how the dims were exported and which stayed dynamic."""
    from porter.routes import hf_source

    original = hf_source.export_dims

    def narrow(hf, auto=False):
        if auto:
            return original(hf, auto=True)
        seq = torch.export.Dim("sequence", min=2, max=4)
        return [{1: seq} for _ in hf.input_names]

    monkeypatch.setattr(hf_source, "export_dims", narrow)
    out = tmp_path / "tf"
    code, text = cli("convert", _decoder_folder(tmp_path), "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, text
    report = _report(out)
    assert report["graph"]["export"] == "auto" and any("Dim.AUTO" in n for n in report["notes"])
    assert set(report["dynamic_dims"]["input_ids"]) == {"0", "1"} and report["static_dims"] == []


def test_a_model_torch_export_cannot_trace_exits_2_with_what_to_try(cli, tmp_path, monkeypatch):
    from porter.errors import PorterError
    from porter.routes import hf_source

    def refuse(module, args, dynamic_shapes, name):
        raise PorterError(f"torch.export cannot trace {name}: RuntimeError: data-dependent branch")

    monkeypatch.setattr(hf_source, "trace", refuse)
    out = tmp_path / "tf"
    code, text = cli("convert", _decoder_folder(tmp_path), "--from", "torch", "--to", "tf", "--out", out)
    assert code == 2, text
    flat = " ".join(text.split())
    assert "data-dependent branch" in flat and "--static-shapes" in flat and ".pt2" in flat
    assert not out.exists()


def test_inputs_outside_a_pt2_dim_range_are_named_before_converting(cli, tmp_path):
    """--inputs sizes outside the ExportedProgram's Dim range (or off a static dim): exit 2 naming the input, the
    axis and the range, nothing written; inside the range they verify."""
    torch.manual_seed(0)
    path = save_pt2(torch.nn.Linear(8, 3).eval(), torch.randn(2, 8), tmp_path / "lin.pt2", {0: ("batch", 1, 4)})
    for name, shape, needle in (("big", (9, 8), "axis 0 is 9, outside the dim's range [1, 4]"),
                                ("wrong", (2, 7), "axis 1 is 7; the model takes only 8 there")):
        np.savez(tmp_path / f"{name}.npz", input=np.ones(shape, np.float32))
        code, text = cli("convert", path, "--from", "torch", "--to", "tf", "--inputs", tmp_path / f"{name}.npz",
                         "--out", tmp_path / name)
        assert code == 2 and needle in text and "Traceback" not in text, text
        assert not (tmp_path / name).exists()
    np.savez(tmp_path / "fits.npz", input=np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32))
    code, text = cli("convert", path, "--from", "torch", "--to", "tf", "--inputs", tmp_path / "fits.npz", "--out", tmp_path / "ok")
    assert code == 0, text

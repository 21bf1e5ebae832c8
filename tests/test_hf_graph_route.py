"""HF folders outside the zoo, torch -> TF on the graph route: transformers builds the model the
folder describes, torch.export -> porter's ATen -> TF converter writes it, and porter verifies it at batch 1 and 3, a
short and a long sequence; a written model with fixed dims fails unless --static-shapes.
Bad input (remote code, unknown model_type, weights that do not fit) is refused with exit 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hf_tiny import make_tiny
from tests_support import save_pt2



@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return lambda kind, **kw: make_tiny(root / kind, kind, **kw) if not (root / kind).exists() else root / kind


def _report(out):
    return json.loads((out / "porter_report.json").read_text())


def _shapes(report) -> list[dict]:
    return [s["input_shapes"] for s in report["verification"]["shapes"]]


def _serve(out, feeds: dict) -> dict:
    import tensorflow as tf

    signatures = tf.saved_model.load(str(out)).signatures
    integer = any(np.asarray(v).dtype.kind == "i" for v in feeds.values())
    fn = signatures["serving_int64" if integer else "serving_default"]  # serving_default takes int32 ids
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


def _torch(folder, feeds: dict) -> dict:
    from porter.routes import hf_source

    model, config, name = hf_source.load(folder)
    described = hf_source.describe(model, config, name)
    return hf_source.run(model, feeds, described.output_names)


# -- conversions ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distilbert_tf(folders, tmp_path_factory):
    """The tiny DistilBERT converted by `porter convert` (auto route), once for the module."""
    from typer.testing import CliRunner

    from porter.cli import app

    src, out = folders("distilbert"), tmp_path_factory.mktemp("conv") / "distilbert-tf"
    # distilbert has a direct-route family now: this module is about the graph route
    res = CliRunner().invoke(app, ["convert", str(src), "--from", "torch", "--to", "tf", "--out", str(out), "--route", "graph"])
    return src, out, res.exit_code, res.output


def test_distilbert_keeps_batch_and_sequence(distilbert_tf):
    """A text encoder: both dims stay dynamic, 4 shapes verified at 1e-5, and the SavedModel serves
    two shapes the verification did not use, matching transformers."""
    src, out, code, text = distilbert_tf
    assert code == 0, text
    report = _report(out)
    assert report["route"] == "graph" and report["architecture"] == "DistilBertModel"
    assert report["route_reason"] == "--route graph"
    assert "route: graph - --route graph" in text
    assert report["static_dims"] == [] and report["dynamic_dims_kept"]
    shapes = {tuple(s["input_ids"]) for s in _shapes(report)}
    assert {(1, 5), (3, 5), (1, 41), (3, 41)} <= shapes
    assert report["verification"]["max_abs_error"]["last_hidden_state"] <= 1e-5
    rng = np.random.default_rng(7)
    for batch, seq in ((2, 17), (5, 9)):
        ids = rng.integers(0, 99, size=(batch, seq)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[1:, seq - 3:] = 0
        feeds = {"input_ids": ids, "attention_mask": mask}
        want, got = _torch(src, feeds), _serve(out, feeds)
        assert np.abs(want["last_hidden_state"] - got["last_hidden_state"]).max() <= 1e-5


def test_a_changed_weight_fails_against_the_converted_model(distilbert_tf, tmp_path):
    """The negative: the converted DistilBERT against its source with one LayerNorm weight moved by 1e-3."""
    from safetensors.torch import load_file, save_file

    import porter

    src, out, code, _ = distilbert_tf
    assert code == 0
    changed = tmp_path / "changed"
    shutil.copytree(src, changed)
    state = load_file(str(changed / "model.safetensors"))
    key = next(k for k in state if k.endswith("output_layer_norm.weight"))
    state[key][3] += 1e-3
    save_file(state, str(changed / "model.safetensors"), metadata={"format": "pt"})
    result = porter.verify(changed, out)
    assert not result and result.worst()["last_hidden_state"] > 1e-5


def test_image_classifier_with_fixed_image_size_needs_static_shapes(folders, cli, tmp_path):
    """ResNetForImageClassification (BatchNorm statistics perturbed): onnx2tf keeps the batch but not
    height and width. Without --static-shapes that fails (exit 1, naming the dims); with it, the
    conversion passes and the report, the console and the signature show the fixed dims."""
    src = folders("resnet-cls")
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "a", "--route", "graph")
    report = _report(tmp_path / "a")
    fixed = report["static_dims"]
    if not fixed:  # onnx2tf kept every dim: nothing to refuse
        assert code == 0, text
        pytest.skip("onnx2tf kept every dim of this ResNet")
    assert code == 1 and report["status"] == "failed"
    flat = " ".join(text.split())  # the console wraps long lines
    assert "pass --static-shapes" in flat and "fixed dims that the source takes at any size" in flat
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "b", "--static-shapes", "--route", "graph")
    assert code == 0, text
    report = _report(tmp_path / "b")
    assert report["static_shapes"] is True and report["static_dims"] == fixed
    assert "static dims: the written model takes only pixel_values axis" in text
    assert any("--static-shapes" in n for n in report["verification"]["notes"])
    assert report["architecture"] == "ResNetForImageClassification"
    assert report["verification"]["max_abs_error"]["logits"] <= 1e-4
    import tensorflow as tf

    spec = tf.saved_model.load(str(tmp_path / "b")).signatures["serving_default"].structured_input_signature[1]["pixel_values"]
    for d in fixed:
        assert spec.shape[d["axis"]] == d["size"]
    batches = {s["pixel_values"][0] for s in _shapes(report)}
    assert 1 in batches and max(batches) >= 3


@pytest.mark.slow
def test_whisper_encoder(folders, cli, tmp_path):
    """An audio encoder: input_features [batch, mel bins, 2 x max_source_positions], batch dynamic."""
    src, out = folders("whisper-encoder"), tmp_path / "out"
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", out, "--route", "graph")
    assert code == 0, text
    report = _report(out)
    assert report["architecture"] == "WhisperEncoder" and report["static_dims"] == []
    assert report["inputs"]["input_features"]["shape"] == [None, 8, 32]
    assert {s["input_features"][0] for s in _shapes(report)} >= {1, 3}
    assert report["verification"]["max_abs_error"]["last_hidden_state"] <= 1e-5


@pytest.mark.slow
def test_convnext_keeps_batch_and_image_size(folders, cli, tmp_path):
    """A CNN with every dim dynamic through onnx2tf: the outputs keep NCHW (channels-last is undone)."""
    src, out = folders("convnext"), tmp_path / "out"
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", out, "--route", "graph")
    assert code == 0, text
    report = _report(out)
    assert report["static_dims"] == [] and report["inputs"]["pixel_values"]["shape"] == [None, 3, None, None]
    assert {tuple(s["pixel_values"][2:]) for s in _shapes(report)} == {(32, 32), (48, 48)}
    for name in ("last_hidden_state", "pooler_output"):
        assert report["verification"]["max_abs_error"][name] <= 1e-5
    feeds = {"pixel_values": np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)}
    want, got = _torch(src, feeds), _serve(out, feeds)  # a size the verification did not use
    assert got["last_hidden_state"].shape == want["last_hidden_state"].shape == (2, 16, 8, 8)
    assert np.abs(got["last_hidden_state"] - want["last_hidden_state"]).max() <= 1e-5


@pytest.mark.slow
def test_vit_keeps_the_batch(folders, cli, tmp_path):
    """A vision transformer: its class token (Expand -> Concat) and the mask transformers builds would
    make onnx2tf fix the batch; porter's rewrites keep it. Height and width are the source's own
    config.image_size (its position table fixes them)."""
    src, out = folders("vit"), tmp_path / "out"
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", out, "--route", "graph")
    assert code == 0, text
    report = _report(out)
    assert report["route_reason"] == "--route graph" and report["static_dims"] == []
    assert report["inputs"]["pixel_values"]["shape"] == [None, 3, 32, 32]
    assert {s["pixel_values"][0] for s in _shapes(report)} == {1, 2, 3, 5}
    for name in ("last_hidden_state", "pooler_output"):
        assert report["verification"]["max_abs_error"][name] <= 1e-5
    feeds = {"pixel_values": np.random.default_rng(5).standard_normal((4, 3, 32, 32)).astype(np.float32)}
    want, got = _torch(src, feeds), _serve(out, feeds)
    assert np.abs(got["last_hidden_state"] - want["last_hidden_state"]).max() <= 1e-5


# -- bad input: exit 2, nothing written -----------------------------------------------------------


def _edit_config(folder, tmp_path, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_auto_map_is_refused(folders, cli, tmp_path):
    src = _edit_config(folders("distilbert"), tmp_path, auto_map={"AutoModel": "modeling_evil.EvilModel"})
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "out")
    assert code == 2
    assert "config.json has auto_map" in text and "trust_remote_code" in text
    assert not (tmp_path / "out").exists()


def test_unknown_model_type_is_refused(folders, cli, tmp_path):
    src = _edit_config(folders("distilbert"), tmp_path, model_type="porter-no-such-model")
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "out")
    assert code == 2
    assert "model_type 'porter-no-such-model' is not one that transformers" in text
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_fit_the_config_are_refused(folders, cli, tmp_path):
    src = _edit_config(folders("distilbert"), tmp_path, vocab_size=120)
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "out", "--route", "graph")
    assert code == 2
    assert "do not fit its config.json" in text and "word_embeddings.weight: checkpoint (99, 32) vs model (120, 32)" in text
    assert not (tmp_path / "out").exists()


def test_a_task_head_without_its_weights_is_refused(folders, cli, tmp_path):
    """architectures names a classifier, the checkpoint holds the base model: the head's tensors are named."""
    src = _edit_config(folders("distilbert"), tmp_path, architectures=["DistilBertForSequenceClassification"])
    code, text = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "out", "--route", "graph")
    assert code == 2
    assert "classifier.weight: missing from the checkpoint" in text


# -- .pt2 dim ranges bound the generated shapes --------------------------------------------------------


def test_pt2_dim_ranges_bound_generated_lengths(tmp_path):
    """A Conv1d exported with length in [64, 256]: porter's inputs stay inside, at two lengths and batch 1 and 3."""
    import torch

    import porter

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 6, 5)

        def forward(self, x):
            return self.conv(x)

    torch.manual_seed(0)
    path = save_pt2(Conv().eval(), torch.randn(2, 4, 80), tmp_path / "conv.pt2", {0: ("batch", 1, 64), 2: ("length", 64, 256)})
    result = porter.verify(path, path)
    assert result
    shapes = [tuple(s.input_shapes["x"]) for s in result.shapes]
    assert all(64 <= s[2] <= 256 for s in shapes) and len({s[2] for s in shapes}) == 2
    assert {s[0] for s in shapes} == {1, 3}


def test_a_model_torch_export_cannot_trace_is_refused(folders, cli, tmp_path, monkeypatch):
    """Data-dependent control flow (here patched into DistilBERT's forward): exit 2 with torch's own reason."""
    import transformers

    original = transformers.DistilBertModel.forward

    def branching(self, input_ids=None, attention_mask=None, **kwargs):
        if input_ids.sum() > 10:  # a branch on the values: torch.export cannot trace it
            return original(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return original(self, input_ids=input_ids * 0, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(transformers.DistilBertModel, "forward", branching)
    code, text = cli("convert", folders("distilbert"), "--from", "torch", "--to", "tf", "--out", tmp_path / "out", "--route", "graph")
    assert code == 2, text
    assert "torch.export cannot trace DistilBertModel" in text and "data-dependent" in " ".join(text.split()).lower()
    assert not (tmp_path / "out").exists()

"""`porter convert --from torch --to tflite` on the graph route: torch.export -> porter's ATen -> TF converter ->
SavedModel -> TFLiteConverter with built-in ops only. The .tflite must run in plain LiteRT: checked here in a
fresh process that imports numpy and ai_edge_litert only (TensorFlow never imported there, which would link
the Flex delegate and hide missing ops), at shapes of its own, with its dynamic dims resized."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from tests_support import save_pt2

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("ai_edge_litert")

# ERNIE: a BERT-like encoder with exact GELU, outside porter's zoo (`porter zoo list`)
ERNIE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64, hidden_act="gelu")
SHAPES = [(1, 9), (3, 33)]  # the last row of a batch above 1 is right-padded


def _report(out) -> dict:
    return json.loads((out / "porter_report.json").read_text())


def _text_feeds(batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    if batch > 1:
        mask[-1, seq // 2:] = 0
    return {"input_ids": rng.integers(0, 99, (batch, seq)).astype(np.int64), "attention_mask": mask,
            "token_type_ids": rng.integers(0, 2, (batch, seq)).astype(np.int64)}


@pytest.fixture(scope="module")
def ernie(tmp_path_factory):
    from cli_runner import make_cli

    root = tmp_path_factory.mktemp("graph-tflite")
    torch.manual_seed(0)
    model = transformers.ErnieModel(transformers.ErnieConfig(**ERNIE)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(root / "ernie")
    out = root / "tflite"
    t0 = time.perf_counter()
    code, text = make_cli()("convert", root / "ernie", "--from", "torch", "--to", "tflite", "--route", "graph", "--out", out)
    return root / "ernie", out, code, text, time.perf_counter() - t0


def test_encoder_converts_to_builtin_ops_only(ernie):
    _, out, code, text, seconds = ernie
    assert code == 0, text
    report = _report(out)
    assert report["route"] == "graph" and report["to"] == "tflite" and report["status"] == "passed", report
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite", "porter_report.json"]
    lite = report["tflite"]
    assert not lite["flex"] and lite["flex_ops"] == [] and lite["custom_ops"] == []
    assert "GELU" in lite["ops"]  # exact GELU as TFLite's builtin, not FlexErf
    assert b"Flex" not in (out / "model.tflite").read_bytes()
    assert sorted(lite["inputs"]) == ["attention_mask", "input_ids", "token_type_ids"]
    for name in lite["inputs"]:
        assert lite["inputs"][name] == {"dtype": "int64", "shape_signature": [-1, -1]}
    assert report["static_dims"] == [] and report["dynamic_dims_kept"]
    assert "LiteRT" in report["comparison"]["candidate"]
    errors = report["verification"]["max_abs_error"]
    print(f"ernie: {seconds:.1f}s, ops {lite['ops']}, verification max abs {errors}")


def test_tflite_runs_in_litert_alone_at_other_shapes(ernie):
    from porter.verifiers.runners.litert_isolated import run_isolated

    src, out, code, text, _ = ernie
    assert code == 0, text
    model = transformers.ErnieModel.from_pretrained(src).eval()
    feeds = [_text_feeds(b, s, seed=b) for b, s in SHAPES]
    got, info = run_isolated(out / "model.tflite", feeds)
    assert info["final"] == {"done": True, "tensorflow_imported": False, "runtime": info["described"]["runtime"]}
    assert info["described"]["runtime"].startswith("ai_edge_litert")
    for (b, s), feed, outs in zip(SHAPES, feeds, got):
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()
        assert outs["last_hidden_state"].shape == want.shape == (b, s, 32)
        err = float(np.abs(outs["last_hidden_state"] - want).max())
        print(f"ernie LiteRT {b}x{s}: max abs {err:.2e}")
        assert err <= 1e-4, (b, s, err)


def test_litert_child_refuses_a_static_dim_resize(ernie, tmp_path):
    """resize_tensor_input(strict=True) in the child: a shape the signature does not allow fails clearly."""
    from porter.verifiers.runners.litert_isolated import run_isolated

    from porter.errors import PorterError

    _, out, code, text, _ = ernie
    assert code == 0, text
    with pytest.raises(PorterError, match="could not run"):
        run_isolated(out / "model.tflite", [dict(_text_feeds(2, 5), input_ids=np.zeros((2, 5, 1), np.int64))])
    with pytest.raises(PorterError, match="missing \\['token_type_ids'\\]"):
        run_isolated(out / "model.tflite", [{k: v for k, v in _text_feeds(2, 5).items() if k != "token_type_ids"}])


class _Cosh(torch.nn.Module):
    """torch.cosh: converted to tf.math.cosh, which TFLite has no builtin for (FlexCosh)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, x):
        return torch.cosh(self.lin(x) * 0.5)


class _Erfinv(torch.nn.Module):
    """torch.erfinv: tf.math.erfinv has neither a TFLite builtin nor a Flex kernel."""

    def forward(self, x):
        return torch.erfinv(torch.tanh(x) * 0.5)


def test_flex_op_needs_allow_flex(cli, tmp_path):
    path = save_pt2(_Cosh().eval(), torch.randn(2, 8), tmp_path / "cosh.pt2", {0: ("batch", 1, 64)})
    code, text = cli("convert", path, "--from", "torch", "--to", "tflite", "--route", "graph", "--out", tmp_path / "refused")
    assert code == 2, text
    assert "Cosh" in text and "FlexCosh" in text and "--allow-flex" in text and "aten.cosh" in text
    assert not (tmp_path / "refused").exists()
    # verified: TensorFlow 2.21's tf.lite.Interpreter has no Flex delegate and LiteRT none, so nothing here runs
    # FlexCosh: refused as unverifiable, nothing written
    code, text = cli("convert", path, "--from", "torch", "--to", "tflite", "--allow-flex", "--out", tmp_path / "unverified")
    assert code == 2 and "FlexCosh" in text and "cannot be verified" in text and "--no-verify" in text, text
    assert not (tmp_path / "unverified").exists()
    out = tmp_path / "flex"
    code, text = cli("convert", path, "--from", "torch", "--to", "tflite", "--allow-flex", "--no-verify", "--out", out)
    assert code == 0, text
    report = _report(out)
    assert report["route"] == "graph"  # auto: the graph route
    lite = report["tflite"]
    assert lite["flex"] and lite["flex_ops"] == ["FlexCosh"] and lite["allow_flex"]
    assert lite["inputs"]["x"]["shape_signature"] == [-1, 8]
    assert any("FlexCosh" in n for n in report["notes"])


def test_flex_model_does_not_run_in_litert_alone(cli, tmp_path):
    from porter.verifiers.runners.litert_isolated import run_isolated

    from porter.errors import PorterError

    path = save_pt2(_Cosh().eval(), torch.randn(2, 8), tmp_path / "cosh.pt2", {0: ("batch", 1, 64)})
    code, text = cli("convert", path, "--from", "torch", "--to", "tflite", "--allow-flex", "--no-verify", "--out", tmp_path / "o")
    assert code == 0, text
    with pytest.raises(PorterError, match="Flex|custom op"):
        run_isolated(tmp_path / "o" / "model.tflite", [{"x": np.ones((1, 8), np.float32)}])


def test_op_without_builtin_or_flex_is_refused_even_with_allow_flex(cli, tmp_path):
    path = save_pt2(_Erfinv().eval(), torch.randn(2, 8), tmp_path / "erfinv.pt2", {0: ("batch", 1, 64)})
    code, text = cli("convert", path, "--from", "torch", "--to", "tflite", "--allow-flex", "--out", tmp_path / "o")
    assert code == 2, text
    assert "Erfinv" in text and "neither a TFLite builtin nor a Select-TF" in text


def test_allow_flex_is_for_tflite_only(cli, tmp_path):
    code, text = cli("convert", tmp_path / "missing.pt2", "--from", "torch", "--to", "tf", "--allow-flex", "--out", tmp_path / "o")
    assert code == 2 and "--allow-flex" in text


class _Router(torch.nn.Module):
    """An MoE router's index arithmetic: top-k experts per token, flattened and sorted, each slot's token found by
    ``index // top_k`` (int64 in torch; TFLite's FloorDiv builtin takes int32 only)."""

    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(8, 4)

    def forward(self, x):
        experts = torch.topk(self.gate(x).softmax(-1), 2, dim=-1)[1].reshape(-1)
        order = torch.sort(experts)[1]
        token = order // 2
        return x.reshape(-1, 8)[token] * (token.float()[:, None] + 1)


class _FloorDivide(torch.nn.Module):
    def forward(self, x):
        return torch.floor_divide(x, 3)


def test_router_index_division_stays_builtin(cli, tmp_path):
    torch.manual_seed(0)
    path = save_pt2(_Router().eval(), torch.randn(6, 8), tmp_path / "router.pt2", {0: ("tokens", 2, 64)})
    out = tmp_path / "o"
    code, text = cli("convert", path, "--from", "torch", "--to", "tflite", "--out", out)
    assert code == 0, text  # verified by LiteRT alone
    assert not _report(out)["tflite"]["flex_ops"]


def test_int64_floor_divide_of_plain_values_is_not_narrowed(cli, tmp_path):
    """Values that are not porter's own int32 indices keep int64 division (exact beyond 2**31): Flex, named."""
    path = save_pt2(_FloorDivide().eval(), torch.tensor([[2**40 + 7, -5], [9, 4]]), tmp_path / "div.pt2", {0: ("batch", 1, 64)})
    code, text = cli("convert", path, "--from", "torch", "--to", "tflite", "--out", tmp_path / "o")
    assert code == 2 and "FloorDiv" in text, text
    code, text = cli("convert", path, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf")
    assert code == 0, text

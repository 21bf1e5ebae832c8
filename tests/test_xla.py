"""`porter convert --xla`: the SavedModel's serving function carries jit_compile (XLA) and is verified as
compiled; refused where no porter-written SavedModel is (--to torch, the ONNX route)."""

from __future__ import annotations

import json

import pytest


def _xla_functions(folder) -> list[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    functions = saved.meta_graphs[0].graph_def.library.function
    return [f.signature.name for f in functions if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]


@pytest.mark.slow
def test_xla_signature_verified_as_compiled(tiny_bert, cli, tmp_path):
    out = tmp_path / "xla"
    code, text = cli("convert", tiny_bert, "--from", "torch", "--to", "tf", "--out", out, "--xla")
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["xla"] is True and report["status"] == "passed"
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    assert len(report["verification"]["shapes"]) >= 3  # compiled per shape, each one run
    assert _xla_functions(out) == [n for n in _xla_functions(out) if "serve" in n] != []


def test_without_xla_nothing_is_compiled(tiny_bert_tf):
    assert _xla_functions(tiny_bert_tf) == []
    assert json.loads((tiny_bert_tf / "porter_report.json").read_text())["xla"] is False


@pytest.mark.parametrize("args, needle", [
    (("--from", "tf", "--to", "torch"), "--to torch writes none"),
    (("--from", "torch", "--to", "tf", "--route", "graph"), "--xla is not supported on the graph route"),
])
def test_xla_refused_where_porter_writes_no_savedmodel(tiny_bert, tiny_bert_tf, cli, tmp_path, args, needle):
    source = tiny_bert_tf if args[1] == "tf" else tiny_bert
    out = tmp_path / "out"
    code, text = cli("convert", source, *args, "--out", out, "--xla")
    assert code == 2 and needle in text, text
    assert not out.exists()

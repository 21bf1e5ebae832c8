"""A BERT/RoBERTa folder whose config.json names a head (BertForSequenceClassification...): porter's direct
BERT is the bare encoder, so auto takes transformers + torch.export (the graph route) and keeps the head (logits verified against
transformers); --route direct refuses naming the head and the flag, never a silently headless model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_tiny import make_tiny


@pytest.fixture(scope="module")
def bert_cls(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("heads") / "bert-cls", "bert-cls")


@pytest.mark.slow
def test_auto_keeps_the_head_through_the_graph_route(bert_cls, cli, tmp_path):
    out = tmp_path / "tf"
    code, text = cli("convert", bert_cls, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, text
    assert "BertForSequenceClassification" in text and "keeps the head" in text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "graph" and report["status"] == "passed"
    errors = report["verification"]["max_abs_error"]
    assert list(errors) == ["logits"] and errors["logits"] <= 1e-4
    from porter.process.frameworks import tensorflow

    fn = tensorflow().saved_model.load(str(out)).signatures["serving_default"]
    ids = np.array([[5, 7, 9, 11]], np.int64)
    got = fn(input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))["logits"].numpy()
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(bert_cls).eval()
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert got.shape == (1, 3) and np.abs(got - want).max() <= 1e-4


def test_direct_refuses_naming_the_head_and_the_flag(bert_cls, cli, tmp_path):
    out = tmp_path / "tf"
    code, text = cli("convert", bert_cls, "--from", "torch", "--to", "tf", "--out", out, "--route", "direct")
    assert code == 2, text
    assert "names BertForSequenceClassification" in text and "--route onnx" in text
    assert not out.exists() and "Traceback" not in text


def test_bare_encoder_still_takes_the_direct_route(tiny_bert, cli, tmp_path):
    out = tmp_path / "tf"
    code, text = cli("convert", tiny_bert, "--from", "torch", "--to", "tf", "--out", out, "--no-verify")
    assert code == 0, text
    assert json.loads((out / "porter_report.json").read_text())["route"] == "direct"

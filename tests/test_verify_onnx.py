"""`porter verify` of a torch model against its ONNX export (onnxruntime runner), at the fp32 defaults."""

import json

import pytest


def _export(hf_folder, path):
    import torch
    import transformers

    model = transformers.BertModel.from_pretrained(str(hf_folder)).eval()

    class Outputs(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state, out.pooler_output

    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # an all-ones example lets the exporter drop the mask: the graph would ignore padding
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=64)
    dims = {name: {0: batch, 1: seq} for name in ("input_ids", "attention_mask", "token_type_ids")}
    torch.onnx.export(
        Outputs(model).eval(), (ids, mask, torch.zeros_like(ids)), str(path), dynamo=True, dynamic_shapes=dims,
        input_names=list(dims), output_names=["last_hidden_state", "pooler_output"], verbose=False,
    )
    return path


@pytest.mark.slow
def test_torch_against_its_onnx_export(cli, tiny_bert, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = _export(tiny_bert, tmp_path / "bert.onnx")
    code, output = cli("verify", tiny_bert, onnx, "--report", tmp_path / "r.json")
    assert code == 0, output
    report = json.loads((tmp_path / "r.json").read_text())
    assert {s["label"] for s in report["shapes"]} == {"1x5", "3x5", "1x41", "3x41"}
    assert report["localisation"] is None and report["tolerances"]["pooler_output"]["atol"] == 1e-5

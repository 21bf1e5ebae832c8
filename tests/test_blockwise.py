"""Block-wise float32 verification of the direct route's decoders (verifiers/blockwise.py): transformers' blocks
streamed from the checkpoint one at a time, each against the same block of the written keras-hub model on the same
hidden states. A correct conversion passes every block of every decoder family; a RMSNorm weight moved by 1% in one
block of the written model fails that block, by name, also where the bf16 end-to-end reference passes it; the
report gives every block's error and the worst; where not even the bf16 reference fits, the end-to-end comparison
is streamed too instead of refusing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from porter.resources import memory_estimate, reference_plan
from porter.resources.memory_estimate import GB
from test_hf_direct import cli, make_checkpoint  # noqa: F401  (cli: the module-scoped runner)

RSS = int(0.4 * GB)


def _convert(cli, src, out, *extra):
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", out, *extra)
    report = json.loads((out / "porter_report.json").read_text()) if (out / "porter_report.json").exists() else None
    return code, " ".join(output.split()), report


def _moved_norm(monkeypatch, variable: str, factor: float = 1.01):
    """The written model's ``variable`` (a norm scale) multiplied by ``factor`` after mapping."""
    from porter.routes import direct

    mapped = direct.torch_to_keras

    def slipped(entry, source, config):
        model, plan = mapped(entry, source, config)
        v = entry.impl.keras_variables(model)[variable]
        v.assign(np.asarray(v.numpy()) * np.asarray(factor, dtype=np.asarray(v.numpy()).dtype))
        return model, plan

    monkeypatch.setattr(direct, "torch_to_keras", slipped)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("bw-llama") / "hf", "llama", True, tied=False)


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory):
    """8 blocks: as in a real decoder, one block and the token tables are well under the whole model (with 2 tiny
    blocks, the block-wise estimate is above the bf16 reference's)."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("bw-llama-bf16")
    src = make_checkpoint(root / "fp32", "llama", True, tied=False, num_hidden_layers=8)
    transformers.AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16).save_pretrained(str(root / "hf"))
    return root / "hf"


@pytest.fixture
def available(monkeypatch):
    monkeypatch.setattr(memory_estimate, "_rss_bytes", lambda: RSS)

    def set_available(nbytes):
        for module in (memory_estimate, reference_plan):
            monkeypatch.setattr(module, "available_bytes", lambda: nbytes)

    return set_available


def _estimates(folder):
    from porter.readers.checkpoints import open_torch_checkpoint
    from porter.resources.memory_estimate import estimate_torch_to_tf

    ckpt = open_torch_checkpoint(folder)
    f32, half = (estimate_torch_to_tf(ckpt.shapes, ckpt.dtypes, "bfloat16", True, current_rss=RSS, reference_dtype=d)
                 for d in ("float32", "bfloat16"))
    return f32, half, reference_plan.estimate_blockwise(ckpt.shapes, ckpt.dtypes, "bfloat16", RSS)


# ------------------------------------------------------------------------------------------------ every family
@pytest.mark.parametrize("family,causal,tied", [
    ("llama", True, False), ("qwen3", True, True), ("gemma", True, True), ("gpt2", True, True), ("mistral", False, None),
    ("qwen2", True, False),
])
def test_every_block_passes_on_a_correct_conversion(family, causal, tied, tmp_path):
    """The in-memory Keras model porter maps, block by block against transformers' streamed blocks."""
    from porter import zoo
    from porter.readers.checkpoints import open_torch_checkpoint
    from porter.routes.direct import torch_to_keras
    from porter.verifiers.blockwise import verify_blocks
    from porter.zoo.keras_hub.entry import full_config

    src = make_checkpoint(tmp_path / "hf", family, causal, tied)
    config = full_config(json.loads((src / "config.json").read_text()))
    model, _ = torch_to_keras(zoo.ENTRIES[config["model_type"]], open_torch_checkpoint(src), dict(config))
    result = verify_blocks(src, model, config, weights_from="in memory")
    names = [c.name for c in result.checks]
    assert names == ["embedding", "block 0", "block 1", "final norm"] + (["logits"] if causal else []), names
    assert result.passed, result.summary()
    assert all(c.comparison.max_abs <= 1e-5 for c in result.checks if c.name != "logits")
    # each block judged against its own float32 floor: transformers' block again in float64 on the same input
    assert {c.comparison.rule for c in result.checks if c.name.startswith("block ")} == {"float64 floor"}
    assert all(c.comparison.floor_ratio <= 8 for c in result.checks if c.name.startswith("block "))
    assert result.summary().startswith("verified block by block in float32")


# ------------------------------------------------------------------------------------------------ the CLI flag
def test_verify_blocks_flag_reports_every_block(cli, llama, tmp_path):
    code, output, report = _convert(cli, llama, tmp_path / "tf", "--verify-blocks")
    assert code == 0, output
    assert "verified block by block in float32" in output and "worst block: block" in output
    blocks = report["blockwise"]
    assert blocks["verified"] == "block by block in float32" and blocks["passed"] and blocks["failed"] == []
    assert blocks["reason"] == "asked for by --verify-blocks"
    assert [b["name"] for b in blocks["blocks"]] == ["embedding", "block 0", "block 1", "final norm", "logits"]
    assert all(b["passed"] and b["max_abs"] <= b["atol"] and b["seconds"] >= 0 for b in blocks["blocks"])
    worst = max((b for b in blocks["blocks"] if b["name"].startswith("block ")), key=lambda b: b["max_abs"])
    assert blocks["worst_block"] == worst["name"] and blocks["worst_max_abs"] == worst["max_abs"]
    assert blocks["candidate_weights"] == "the Keras model just written, in memory"
    assert report["status"] == "passed" and "blockwise" in report["peak_rss_mb"]


def test_norm_moved_one_percent_in_one_block_fails_that_block(cli, llama, tmp_path, monkeypatch):
    _moved_norm(monkeypatch, "transformer_layer_1/feedforward_layernorm/scale")
    code, output, report = _convert(cli, llama, tmp_path / "tf", "--verify-blocks")
    assert code == 1, output
    assert "FAILED at block 1" in output and "block-wise float32: block 1 differs" in output
    blocks = report["blockwise"]
    assert not blocks["passed"] and blocks["failed"] == ["block 1"]  # the later checks run on transformers' inputs
    bad = next(b for b in blocks["blocks"] if b["name"] == "block 1")
    assert bad["rule"] == "float64 floor" and bad["floor_ratio"] > 100  # a float32 floor of ~1e-7
    assert bad["max_abs"] > 3 * bad["atol"]  # 7.3e-5: the tiny block's MLP output is small
    assert report["status"] == "failed"


def test_given_tolerances_judge_every_block_fixed(tmp_path):
    """--atol/--rtol keep a fixed tolerance: no float64 run, and the report says so."""
    from porter import zoo
    from porter.readers.checkpoints import open_torch_checkpoint
    from porter.routes.direct import torch_to_keras
    from porter.verifiers.blockwise import verify_blocks
    from porter.zoo.keras_hub.entry import full_config

    src = make_checkpoint(tmp_path / "hf", "llama", False)
    config = full_config(json.loads((src / "config.json").read_text()))
    model, _ = torch_to_keras(zoo.ENTRIES[config["model_type"]], open_torch_checkpoint(src), dict(config))
    result = verify_blocks(src, model, config, atol=1e-5, rtol=1e-6)
    blocks = [c for c in result.checks if c.name.startswith("block ")]
    assert result.passed and all(c.comparison.rule == "fixed tolerance" and c.comparison.floor is None for c in blocks)
    assert blocks[0].to_dict()["floor_note"] == "--atol/--rtol given: a fixed tolerance"


def test_refused_off_the_decoders():
    from porter.errors import PorterError

    with pytest.raises(PorterError, match="--verify-blocks"):
        reference_plan.plan_reference(None, {"w": (2, 2)}, {"w": "float32"}, "float32", "float32", True, False,
                                      model_type="distilbert", verify_blocks=True)


# ------------------------------------------------------------------------------------------------ memory plan
def test_taken_with_the_bf16_fallback_and_sees_what_it_cannot(cli, bf16_llama, available, tmp_path, monkeypatch):
    """Where a float32 reference does not fit, the bf16 end-to-end reference runs as before and every block is also
    verified in float32: a 1% RMSNorm error passes the bf16 comparison and fails its block."""
    f32, half, _ = _estimates(bf16_llama)
    available((f32.total + half.total) // 2)
    _moved_norm(monkeypatch, "transformer_layer_0/self_attention_layernorm/scale")
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf")
    assert code == 1, output
    assert report["reference"]["dtype"] == "bfloat16"  # today's fallback, unchanged
    outputs = [o for s in report["verification"]["shapes"] for o in s["outputs"]]
    assert outputs and all(o["passed"] and o["dtype"] == "bfloat16" for o in outputs)  # blind to it
    assert report["blockwise"]["failed"] == ["block 0"] and "does not fit" in report["blockwise"]["reason"]
    assert "every block was also verified in float32" in output and "FAILED at block 0" in output


def test_streamed_when_not_even_the_bf16_reference_fits(cli, bf16_llama, available, tmp_path):
    f32, half, blocks = _estimates(bf16_llama)
    assert blocks.total < half.total
    available((blocks.total + half.total) // 2)
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf")
    assert code == 0, output
    assert report["reference"]["loader"] == reference_plan.STREAMED_LOADER and report["reference"]["dtype"] == "bfloat16"
    assert report["memory_estimate_mb"]["reference_dtype"] == "float32, one block at a time"
    assert [s["label"] for s in report["verification"]["shapes"]] == ["1x16", "2x12"]
    assert report["verification"]["candidate"] == "the written Keras model (in memory)"
    assert report["blockwise"]["passed"] and len(report["blockwise"]["blocks"]) == 11  # embedding, 8 blocks, norm, logits
    assert "against the written Keras model in memory" in output and "verified block by block in float32" in output


def test_refused_when_not_even_the_blocks_fit(cli, bf16_llama, available, tmp_path):
    _, _, blocks = _estimates(bf16_llama)
    available(blocks.total - 1)
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf")
    assert code == 2 and report is None and not (tmp_path / "tf").exists(), output
    assert "one decoder block of each side in float32" in output and "--ignore-memory-estimate" in output

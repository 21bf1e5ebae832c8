"""Shared fixtures: tiny BERT/RoBERTa checkpoints with informative weights, and an in-process CLI."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `porter convert --to tf` verifies its SavedModel in a fresh TensorFlow-only process by default; the child's
# TensorFlow import costs 3-10 s per conversion on 2 cores, ~100 conversions here. The suite runs them in-process;
# tests/test_fresh_process.py and the shared tiny_bert_tf conversion below run the default (the child).
os.environ.setdefault("PORTER_FRESH_PROCESS", "0")

import pytest  # noqa: E402

TINY_BERT = dict(
    model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
)
TINY_ROBERTA = dict(TINY_BERT, model_type="roberta", type_vocab_size=1, pad_token_id=1, max_position_embeddings=40)


def make_hf_checkpoint(path, config: dict, seed: int = 0, **save_kwargs):
    """A transformers model saved with save_pretrained, its LayerNorms moved away from 1/0."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.CONFIG_MAPPING[config["model_type"]](**{k: v for k, v in config.items() if k != "model_type"})
    model = transformers.AutoModel.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(path, **save_kwargs)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-bert", TINY_BERT)


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-roberta", TINY_ROBERTA)


@pytest.fixture(scope="session")
def tiny_bert_tf(tiny_bert, tmp_path_factory):
    """porter's own TF conversion of tiny_bert (converted once per session)."""
    import porter

    out = tmp_path_factory.mktemp("conv") / "tiny-bert-tf"
    with fresh_process():
        result = porter.convert(str(tiny_bert), source="torch", target="tf", out=out)
    assert result.passed
    return out


@contextlib.contextmanager
def fresh_process():
    """porter's default: the SavedModel verified by TensorFlow alone in a child process."""
    previous = os.environ.get("PORTER_FRESH_PROCESS")
    os.environ["PORTER_FRESH_PROCESS"] = "1"
    try:
        yield
    finally:
        os.environ["PORTER_FRESH_PROCESS"] = previous if previous is not None else "0"


@pytest.fixture
def cli():
    """Run `porter ...` in this process; returns (exit code, output)."""
    from cli_runner import make_cli

    return make_cli()

"""Causal LMs that serve: the SavedModel's prefill/decode signatures (zoo/keras_hub/kv_cache.py) and the verification
by generation (verifiers/generation.py): greedy tokens through the two signatures alone, in a TensorFlow-only
process, equal to transformers' generate for 3 prompts of different lengths (one right-padded batch, so every row
decodes at its own position), logits within the fp32 tolerance; a decode at the wrong position fails the check;
--max-cache-len beyond the model's positions and on a model that is not a causal LM exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_hf_direct import make_checkpoint as make_tiny_checkpoint

CACHE = 64
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "attn.c_proj")


def make_checkpoint(path, family: str, causal: bool, tied=None, attention_scale: float = 4.0):
    """test_hf_direct's tiny checkpoint with its attention weights scaled up: at init the next token hangs on the
    current one alone (the residual path), so a cache that is wrong would still give the same greedy tokens;
    scaled, each token depends on the context the cache holds."""
    import torch
    import transformers

    make_tiny_checkpoint(path, family, causal, tied)
    cls = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    model = cls.from_pretrained(str(path))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(a in name for a in ATTENTION) and name.endswith("weight"):
                p.mul_(attention_scale)
    model.save_pretrained(path)
    return path
# Llama with GQA (4 query heads, 2 key/value heads), GPT-2 (learned positions), Qwen3 (q/k norms), Gemma (scaled embedding)
CASES = [("llama", False), ("gpt2", None), ("qwen3", True), ("gemma", None)]
USER_PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [1], [3, 4, 5, 6]]


@pytest.fixture(scope="module")
def cli():
    from cli_runner import make_cli

    return make_cli()


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def converted(request, tmp_path_factory, cli):
    family, tied = request.param
    root = tmp_path_factory.mktemp(f"kv-{family}")
    src = make_checkpoint(root / "hf", family, True, tied)
    prompts = []
    if family == "gpt2":  # the user's own token ids (--prompts) instead of porter's random ones
        (root / "prompts.json").write_text(json.dumps(USER_PROMPTS))
        prompts = ["--prompts", root / "prompts.json"]
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", root / "tf", "--max-cache-len", CACHE,
                       "--prefill-lengths", "8,16", *prompts)
    assert code == 0, output
    return family, src, root / "tf", output


def test_generation_verified_for_three_prompts(converted):
    family, _, out, output = converted
    report = json.loads((out / "porter_report.json").read_text())
    gen = report["generation"]
    assert gen["passed"], gen
    assert len(set(gen["prompt_lengths"])) >= 3
    assert gen["tokens_matched"] == gen["tokens"] == 32 * len(gen["prompt_lengths"])
    assert all(p["first_divergence"] is None and p["max_abs"] <= gen["atol"] for p in gen["prompts"])
    assert gen["atol"] == pytest.approx(1e-4)
    imported = gen["child"]["imported"]
    assert not (imported["porter"] or imported["torch"] or imported["keras_hub"])  # TensorFlow alone generated
    assert "generation (passed)" in output and "96/96 tokens" in output


def test_signatures_and_cache_layout(converted):
    import tensorflow as tf

    family, src, out, _ = converted
    layers = json.loads((src / "config.json").read_text()).get("n_layer") or 2
    report = json.loads((out / "porter_report.json").read_text())
    layout = report["kv_cache"]
    assert layout["max_cache_len"] == CACHE and layout["layers"] == layers
    assert layout["axes"] == ["batch", "cache_position", "kv_head", "head_dim"]
    model = tf.saved_model.load(str(out))
    assert {"serving_default", "prefill", "decode"} <= set(model.signatures)
    decode = model.signatures["decode"]
    names = {f"kv_cache_{kv}_{i}" for i in range(layers) for kv in "kv"}
    assert set(decode.structured_input_signature[1]) == names | {"input_ids", "cache_position"}
    assert set(decode.structured_outputs) == names | {"logits", "cache_position"}
    for name in names:
        assert decode.structured_input_signature[1][name].shape.as_list() == [None, *layout["shape"][1:]]
    # batch and prompt length dynamic: two rows of different lengths, each row's next position is its length
    ids = np.array([[3, 4, 5, 6], [7, 8, 0, 0]], np.int32)
    mask = (ids != 0).astype(np.int32)
    pre = model.signatures["prefill"](input_ids=ids, attention_mask=mask)
    assert pre["cache_position"].numpy().tolist() == [4, 2]
    assert pre["kv_cache_k_0"].shape == (2, CACHE, *layout["shape"][2:])
    assert not np.any(pre["kv_cache_k_0"].numpy()[1, 2:])  # padded positions hold no K/V
    state = {k: v for k, v in pre.items() if k.startswith("kv_cache_")}
    step = decode(input_ids=np.array([[9], [9]], np.int32), cache_position=pre["cache_position"], **state)
    assert step["logits"].shape == (2, 1, json.loads((src / "config.json").read_text())["vocab_size"])
    assert step["cache_position"].numpy().tolist() == [5, 3]
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_cache_len"):
        decode(input_ids=np.array([[9], [9]], np.int32), cache_position=np.array([CACHE, 0], np.int32), **state)


def test_tflite_prefill_decode_generate_as_transformers_in_litert_alone(converted):
    """model.tflite: prefill_8, prefill_16 and decode (batch 1, litert-torch's names), built-in ops only, generating
    transformers' tokens in a process that never imported TensorFlow."""
    from ai_edge_litert.interpreter import Interpreter

    family, src, out, output = converted
    report = json.loads((out / "porter_report.json").read_text())
    lite = report["generation"]["tflite"]
    assert lite["passed"] and lite["tokens_matched"] == lite["tokens"] == 96, lite
    # 3 and 8 through prefill_8, 13 through prefill_16 (GPT-2: the user's prompts, all through prefill_8)
    assert lite["prompt_lengths"] == ([len(p) for p in USER_PROMPTS] if family == "gpt2" else [3, 8, 13])
    assert not any(lite["child"]["imported"].values())  # no tensorflow, porter, keras or torch in the LiteRT process
    assert "the .tflite's prefill_<len> + decode" in output
    interp = Interpreter(model_path=str(out / "model.tflite"))
    signatures = interp.get_signature_list()
    assert set(signatures) == {"prefill_8", "prefill_16", "decode"}
    layers = json.loads((src / "config.json").read_text()).get("n_layer") or 2
    names = {f"kv_cache_{kv}_{i}" for i in range(layers) for kv in "kv"}
    assert set(signatures["decode"]["inputs"]) == names | {"tokens", "input_pos"}
    assert set(signatures["prefill_16"]["outputs"]) == names | {"logits"}
    details = interp.get_signature_runner("decode").get_input_details()
    assert list(details["kv_cache_k_0"]["shape"]) == [1, *report["kv_cache"]["shape"][1:]]


def test_user_prompts_are_the_ones_generated_from(converted):
    family, _, out, _ = converted
    if family != "gpt2":
        pytest.skip("--prompts is given to the GPT-2 conversion")
    gen = json.loads((out / "porter_report.json").read_text())["generation"]
    assert gen["prompt_lengths"] == [len(p) for p in USER_PROMPTS]
    assert gen["passed"] and gen["tokens_matched"] == 96 and gen["tflite"]["tokens_matched"] == 96


@pytest.mark.parametrize("content, shown", [
    ([[1, 2, 500]], "prompt 0: token id 500 is outside the vocabulary [0, "),
    ([[1, 2], [-1]], "prompt 1: token id -1 is outside the vocabulary"),
    ([[1] * 70], "prompt 0: 70 tokens, past max_cache_len - 1 (63)"),
    ([[1] * 20], "prompt 0: 20 tokens, past the longest --prefill-lengths (16)"),
    ({"ids": [1, 2]}, "holds a JSON dict, not a non-empty list of prompts"),
    ([[]], "prompt 0: a empty list, not a non-empty list of token ids"),
])
def test_bad_prompt_file_exit_2(content, shown, tmp_path, cli):
    src = make_checkpoint(tmp_path / "hf", "llama", True, False)
    (tmp_path / "p.json").write_text(json.dumps(content))
    lengths = ["--prefill-lengths", "8,16"] if "prefill" in shown else []
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--max-cache-len", CACHE,
                       "--prompts", tmp_path / "p.json", *lengths)
    assert code == 2, output
    assert shown in " ".join(output.split()) and "p.json" in output
    assert not (tmp_path / "tf").exists()


def test_prompts_without_verification_or_a_causal_lm_exit_2(tmp_path, cli):
    (tmp_path / "p.json").write_text("[[1, 2]]")
    src = make_checkpoint(tmp_path / "hf", "llama", True, False)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--no-verify",
                       "--prompts", tmp_path / "p.json")
    assert code == 2 and "--prompts" in output, output
    base = make_checkpoint(tmp_path / "base", "llama", False)
    code, output = cli("convert", base, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf2",
                       "--prompts", tmp_path / "p.json")
    assert code == 2 and "not a causal LM" in output, output
    assert not (tmp_path / "tf").exists() and not (tmp_path / "tf2").exists()


def test_compare_near_tie_and_divergence():
    """A differing token fails unless the reference's two best logits are within atol (either is right there)."""
    from porter.verifiers.generation import compare

    ref_logits = np.zeros((4, 5), np.float32)
    ref_logits[:, 1] = 1.0
    ref_logits[2, 3] = 1.0 - 1e-6  # step 2: a near-tie between tokens 1 and 3
    ref = [([1, 1, 1, 1], ref_logits)]
    cand = ref_logits[None].copy()
    tie = compare(ref, np.array([[1, 1, 3, 1]]), cand, [3], 1e-4, 1.3e-6)[0]
    assert tie.first_divergence == 2 and tie.near_tie and tie.passed and tie.tokens_matched == 2
    wrong = compare(ref, np.array([[1, 4, 1, 1]]), cand, [3], 1e-4, 1.3e-6)[0]
    assert wrong.first_divergence == 1 and not wrong.near_tie and not wrong.passed
    cand[0, 3, 0] = 0.01  # tokens equal, a logit off by 1e-2 at step 3
    off = compare(ref, np.array([[1, 1, 1, 1]]), cand, [3], 1e-4, 1.3e-6)[0]
    assert not off.passed and off.worst_step == 3 and off.max_abs == pytest.approx(0.01)


def test_plan_fits_the_cache():
    from porter.verifiers.generation import plan

    assert plan(4096) == ([3, 8, 13], 32)
    lengths, new = plan(20)
    assert max(lengths) + new <= 20 and len(lengths) == 3


def test_decode_at_one_index_for_the_batch_fails(tmp_path, cli, monkeypatch):
    """keras-hub's own cache takes one update index for the whole batch: a decode that passes it the batch's
    longest position (right-padded rows then decode past their own ends) generates other tokens for the shorter
    prompts. The conversion exits 1, and the report says where generation first diverged; serving_default, which
    has no cache, still verifies."""
    import tensorflow as tf

    real = tf.map_fn

    def one_index(fn, elems, **kwargs):  # kv_cache's decode maps over (ids, cache, cache_position) per row
        ids, cache, position = elems
        return real(fn, (ids, cache, tf.fill(tf.shape(position), tf.reduce_max(position))), **kwargs)

    monkeypatch.setattr(tf, "map_fn", one_index)
    src = make_checkpoint(tmp_path / "hf", "llama", True, False)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--max-cache-len", CACHE)
    assert code == 1, output
    report = json.loads((tmp_path / "tf" / "porter_report.json").read_text())
    assert report["verification"]["max_abs_error"]["logits"] <= 1e-4
    gen = report["generation"]
    assert not gen["passed"] and gen["tokens_matched"] < gen["tokens"]
    shortest, *_, longest = sorted(gen["prompts"], key=lambda p: p["length"])
    assert shortest["first_divergence"] is not None and not shortest["passed"]
    assert longest["passed"]  # the longest row's position was right
    assert "generation (FAILED)" in output and "first divergence" in output


def test_max_cache_len_beyond_positions_exit_2(tmp_path, cli):
    src = make_checkpoint(tmp_path / "hf", "llama", True, False)  # max_position_embeddings=128
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--max-cache-len", 500)
    assert code == 2, output
    assert "500" in output and "max_position_embeddings=128" in output
    assert not (tmp_path / "tf").exists()


@pytest.mark.parametrize("kind", ["llama-base", "bert-cls"])
def test_max_cache_len_on_a_model_that_is_not_a_causal_lm_exit_2(kind, tmp_path, cli):
    if kind == "llama-base":
        src = make_checkpoint(tmp_path / "hf", "llama", False)
    else:
        from hf_tiny import make_tiny

        src = make_tiny(tmp_path / "hf", kind)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--max-cache-len", 32)
    assert code == 2, output
    assert "--max-cache-len 32" in output and "not a causal LM" in output
    assert not (tmp_path / "tf").exists()


@pytest.mark.parametrize("lengths, shown", [("100", "--prefill-lengths 100 is outside 1..max_cache_len (64)"),
                                            ("8,x", "'8,x' is not a comma-separated list of integers")])
def test_bad_prefill_lengths_exit_2(lengths, shown, tmp_path, cli):
    src = make_checkpoint(tmp_path / "hf", "llama", True, False)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--max-cache-len", CACHE,
                       "--prefill-lengths", lengths)
    assert code == 2, output
    assert shown in " ".join(output.split())
    assert not (tmp_path / "tf").exists()


def test_prefill_lengths_on_a_bf16_model_exit_2(tmp_path, cli):
    """TFLite's built-in ops take no bfloat16: refused before anything is written, naming the dtype and the fix."""
    src = make_checkpoint(tmp_path / "hf", "llama", True, False)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--dtype", "bfloat16",
                       "--prefill-lengths", "8")
    assert code == 2, output
    assert "bfloat16" in output and "--dtype float32" in output
    assert not (tmp_path / "tf").exists()


def test_max_cache_len_with_another_target_exit_2(tmp_path, cli):
    src = make_checkpoint(tmp_path / "hf", "llama", True, False)
    code, output = cli("convert", src, "--from", "torch", "--to", "onnx", "--out", tmp_path / "o", "--max-cache-len", 32)
    assert code == 2, output
    assert "--max-cache-len 32" in output

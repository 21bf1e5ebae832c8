"""HF decoder families on the direct route, keras-hub as the Keras side: torch -> tf verified at
4 shapes (batch 1 and >= 3, sequence 5 and >= 40), the SavedModel's serving_default called directly
at 2 more, model.keras reloaded in safe mode, tf -> torch bit-exact, and the refusals (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from tests_support import (
    assert_perturbed_keras_hub_copy_fails_localised,
    hidden_state_error,
)

SMALL = dict(vocab_size=150, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=48, max_position_embeddings=128)
CONFIGS = {
    "gpt2": dict(vocab_size=120, n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "llama": SMALL,
    "mistral": dict(SMALL, head_dim=16, sliding_window=None),
    "qwen2": SMALL,
    "qwen3": dict(SMALL, head_dim=16),
    "gemma": dict(SMALL, head_dim=16),
}
# (family, head, tie_word_embeddings): every base model, and a causal LM per family, tied and untied
CASES = [(f, "base", None) for f in CONFIGS] + [
    ("gpt2", "causal", True), ("llama", "causal", False), ("llama", "causal", True), ("mistral", "causal", True),
    ("qwen2", "causal", False), ("qwen3", "causal", True), ("gemma", "causal", True),
]
IDS = [f"{f}-{h}" + ("" if t is None else "-tied" if t else "-untied") for f, h, t in CASES]
HIDDEN_ATOL, LOGITS_ATOL = 1e-5, 1e-4


def make_checkpoint(path, family: str, causal: bool, tied=None, seed: int = 0, **override):
    """save_pretrained of a tiny model with informative weights: norms moved away from 1/0, biases
    non-zero, embeddings (and an untied head) at unit scale so logits are not near zero."""
    import torch
    import transformers

    torch.manual_seed(seed)
    kwargs = dict(CONFIGS[family], **override)
    if tied is not None:
        kwargs["tie_word_embeddings"] = tied
    config = transformers.CONFIG_MAPPING[family](**kwargs)
    model = (transformers.AutoModelForCausalLM if causal else transformers.AutoModel).from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
            elif "wte" in name or "embed_tokens" in name or "lm_head" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def converted(request, tmp_path_factory, cli):
    family, head, tied = request.param
    root = tmp_path_factory.mktemp(IDS[CASES.index(request.param)])
    src = make_checkpoint(root / "hf", family, head == "causal", tied)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", root / "tf")
    assert code == 0, output
    return request.param, src, root / "tf"


@pytest.fixture(scope="module")
def cli():  # module-scoped: the module's conversions are fixtures too
    from cli_runner import make_cli

    return make_cli()


def _torch_outputs(src, feed):
    import torch
    from porter.zoo.keras_hub.entry import load_torch

    with torch.no_grad():
        return load_torch(src)(**{k: torch.as_tensor(v) for k, v in feed.items()})


def _feed(batch, seq, vocab, seed):
    rng = np.random.default_rng(seed)
    lengths = [seq] + list(rng.integers(2, seq + 1, size=batch - 1))
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return {"input_ids": np.where(mask == 1, rng.integers(0, vocab, size=(batch, seq)), 0), "attention_mask": mask}


def test_verified_at_four_shapes_within_tolerance(converted):
    (family, head, _), _, out = converted
    report = json.loads((out / "porter_report.json").read_text())
    assert report["status"] == "passed" and report["route"] == "direct" and report["model"] == family
    output, atol = ("logits", LOGITS_ATOL) if head == "causal" else ("last_hidden_state", HIDDEN_ATOL)
    worst = report["verification"]["max_abs_error"]
    assert set(worst) == {output}
    assert 0 < worst[output] <= atol  # not exactly 0: the two sides really ran
    sizes = [tuple(s["input_shapes"]["input_ids"]) for s in report["verification"]["shapes"]]
    assert len(sizes) >= 4
    assert min(b for b, _ in sizes) == 1 and max(b for b, _ in sizes) >= 3
    assert min(s for _, s in sizes) <= 5 and max(s for _, s in sizes) >= 40


def test_serving_default_direct_at_two_more_shapes(converted):
    import tensorflow as tf

    (family, head, _), src, out = converted
    fn = tf.saved_model.load(str(out)).signatures["serving_default"]
    _, specs = fn.structured_input_signature
    assert sorted(specs) == ["attention_mask", "input_ids"]
    assert all(s.shape.as_list() == [None, None] for s in specs.values())  # batch and sequence dynamic
    output = "logits" if head == "causal" else "last_hidden_state"
    assert list(fn.structured_outputs) == [output]
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    for batch, seq in ((2, 17), (5, 33)):
        feed = _feed(batch, seq, vocab, seed=batch)
        got = fn(**{k: tf.constant(v, tf.int32) for k, v in feed.items()})[output].numpy()
        want = getattr(_torch_outputs(src, feed), output).numpy()
        assert got.shape == want.shape
        assert hidden_state_error(want, got, feed["attention_mask"]) <= (LOGITS_ATOL if head == "causal" else HIDDEN_ATOL)


def test_keras_file_verifies_against_transformers(converted, cli):
    """model.keras itself (the Keras runner, config.json read beside it), not only the SavedModel."""
    _, src, out = converted
    code, output = cli("verify", src, out / "model.keras")
    assert code == 0, output


def test_keras_file_reloads_safely_as_the_keras_hub_class(converted):
    import keras_hub
    from porter.zoo.keras_hub import families
    from porter.zoo.keras_hub.saved import register_if_keras_hub

    from porter.process.frameworks import keras

    (family, head, tied), _, out = converted
    register_if_keras_hub(out / "model.keras")
    model = keras().saving.load_model(str(out / "model.keras"), safe_mode=True)
    fam = families.FAMILIES[family]
    backbone_cls = getattr(keras_hub.models, fam.backbone)
    if head == "causal":
        assert type(model) is getattr(keras_hub.models, next(iter(fam.task.values())))
        assert isinstance(model.backbone, backbone_cls)
    else:
        assert isinstance(model, backbone_cls)
    # porter's own class only where keras-hub's cannot reproduce transformers: a tied Llama (keras-hub's get_config
    # drops tie_word_embeddings; base models are built tied) and Qwen3 at rms_norm_eps 1e-6 (its q/k norm epsilon)
    needs = {"llama": ["porter>LlamaBackbone"] if tied is not False else [], "qwen3": ["porter>Qwen3Backbone"]}.get(family, [])
    found = json.loads((out / "porter_report.json").read_text())["fresh_process"]["model.keras"]
    assert found["porter_classes"] == needs and found["loads_without_porter"] is (not needs), found
    if not needs:
        assert type(getattr(model, "backbone", model)) is backbone_cls  # keras-hub's own class, not a subclass


def test_causal_lm_generates_as_transformers(converted):
    """model.keras is a keras-hub CausalLM a user can generate() with (its cached decoding path, not
    the one verified above): greedy tokens equal transformers' greedy generate."""
    import torch
    from porter.zoo.keras_hub.saved import register_if_keras_hub

    from porter.process.frameworks import keras

    (_, head, _), src, out = converted
    if head != "causal":
        pytest.skip("a base model has no LM head")
    register_if_keras_hub(out / "model.keras")
    model = keras().saving.load_model(str(out / "model.keras"), safe_mode=True)
    model.compile(sampler="greedy")
    prompt, new = [5, 17, 33, 2, 9], 7
    ids = np.zeros((1, len(prompt) + new), "int32")
    ids[0, : len(prompt)] = prompt
    got = model.generate({"token_ids": ids, "padding_mask": (ids != 0) | (np.arange(ids.shape[1]) < len(prompt))},
                         stop_token_ids=None)["token_ids"][0]
    from porter.zoo.keras_hub.entry import load_torch

    with torch.no_grad():
        want = load_torch(src).generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                        max_new_tokens=new, min_new_tokens=new, do_sample=False)[0]
    assert got.tolist() == want.tolist()


def test_round_trip_is_bit_exact(converted, tmp_path, cli):
    _, src, out = converted
    code, output = cli("convert", out, "--from", "tf", "--to", "torch", "--out", tmp_path / "back")
    assert code == 0, output
    original, back = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert set(back) == set(original)  # a tied head is not written, as transformers 5 does not write it
    for key, value in original.items():
        assert back[key].dtype == value.dtype and back[key].tobytes() == value.tobytes(), key


@pytest.mark.parametrize("family,override", [
    ("llama", {"rope_parameters": {"rope_type": "linear", "rope_theta": 5000.0, "factor": 2.0}}),
    ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    ("mistral", {"sliding_window": 8}),  # shorter than the 40-token inputs: the window really cuts
    ("qwen2", {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 3.0}}),
    ("qwen3", {"rope_parameters": {"rope_type": "linear", "rope_theta": 20000.0, "factor": 3.0}}),
])
def test_config_translations_verified(family, override, tmp_path, cli):
    """rope scaling and sliding windows reach keras-hub as transformers 5 means them."""
    src = make_checkpoint(tmp_path / "hf", family, False, **override)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf")
    assert code == 0, output
    worst = json.loads((tmp_path / "tf" / "porter_report.json").read_text())["verification"]["max_abs_error"]
    assert worst["last_hidden_state"] <= HIDDEN_ATOL


# ---------------------------------------------------------------- negatives
@pytest.mark.parametrize("family,causal,variable", [
    ("gpt2", True, "transformer_layer_1/feedforward_output_dense/bias"),
    ("llama", False, "transformer_layer_0/self_attention/key/kernel"),
])
def test_perturbed_weight_fails_verify_and_is_localised(family, causal, variable, tmp_path, cli):
    src = make_checkpoint(tmp_path / "hf", family, causal, seed=1)
    code, _ = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf")
    assert code == 0
    assert_perturbed_keras_hub_copy_fails_localised(cli, src, tmp_path / "tf", variable, tmp_path)


def test_without_porters_qwen3_correction_keras_hub_fails_at_q_norm(tmp_path, monkeypatch):
    """Why zoo/keras_hub/fixes.py exists: keras-hub's (0.30 to 0.32) own Qwen3Backbone misses transformers
    by 6e-5 to 1e-3 (more with larger activations), and localisation names the per-head query norm (if keras-hub fixes it, this fails)."""
    from porter.zoo.keras_hub import fixes

    import porter

    monkeypatch.delitem(fixes.BACKBONES, "Qwen3Backbone")
    src = make_checkpoint(tmp_path / "hf", "qwen3", False)
    result = porter.convert(str(src), source="torch", target="tf", out=tmp_path / "tf")
    assert not result.passed
    assert result.verification.to_dict()["max_abs_error"]["last_hidden_state"] > HIDDEN_ATOL
    where = result.verification.localisation
    assert where["found"] and where["torch_module"] == "layers.0.self_attn.q_norm"
    assert where["keras_layer"] == "transformer_layer_0/self_attention/query_dense_layernorm"


@pytest.mark.parametrize("family,causal,override,key", [
    ("llama", False, {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0,
                                          "original_max_position_embeddings": 64}}, "rope_type"),
    ("gpt2", True, {"tie_word_embeddings": False}, "tie_word_embeddings"),
    ("qwen2", False, {"use_sliding_window": True, "sliding_window": 16}, "use_sliding_window"),
    ("llama", False, {"attention_bias": True}, "attention_bias"),
    ("gpt2", False, {"activation_function": "relu"}, "activation_function"),
])
def test_options_keras_hub_cannot_reproduce_exit_2(family, causal, override, key, tmp_path, cli):
    src = make_checkpoint(tmp_path / "hf", family, causal, **override)
    # the direct route's refusal (auto takes the graph route instead: tests/test_graph_route.py)
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--route", "direct")
    assert code == 2, output
    assert key in output and "--route onnx" in output
    assert not (tmp_path / "tf").exists()


def test_unsupported_head_exit_2(tmp_path, cli):
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**SMALL, num_labels=3, pad_token_id=0)
    transformers.LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "hf")
    code, output = cli("convert", tmp_path / "hf", "--from", "torch", "--to", "tf", "--out", tmp_path / "tf", "--route", "direct")
    assert code == 2 and "LlamaForSequenceClassification" in output and "--route onnx" in output


def test_zoo_list_and_show(cli):
    code, output = cli("zoo", "list")
    assert code == 0
    for family, cls in (("gpt2", "GPT2Backbone"), ("llama", "LlamaBackbone"), ("gemma", "GemmaBackbone")):
        line = next(ln for ln in output.splitlines() if ln.startswith(family + " "))
        assert "direct" in line and f"keras_hub.models.{cls}" in line
    code, output = cli("zoo", "show", "gpt2")
    assert code == 0
    assert "{prefix}h.{i}.attn.c_attn.weight -> transformer_layer_{i}/self_attention/query/kernel + " in output
    assert "tied to {prefix}wte.weight" in output


def test_base_model_prefix_is_transformers_own():
    """families.py keeps each family's base_model_prefix (so mapping needs no transformers import): it must
    equal transformers' attribute on the base class and on every head class porter converts."""
    import transformers

    from porter.zoo.keras_hub import families

    for fam in families.FAMILIES.values():
        for cls in (fam.base, *fam.task):
            assert getattr(transformers, cls).base_model_prefix == fam.base_model_prefix, (fam.model_type, cls)

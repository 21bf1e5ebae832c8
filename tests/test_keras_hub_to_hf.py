"""keras-hub models -> HF PyTorch folders: a user's keras-hub backbone or CausalLM, saved as .keras or as
a save_to_preset folder, converted through the families' rules backwards; verified at 4 shapes, loaded
strictly by transformers, checked again on an input of the test's own; the config translation
round-trips; a perturbed written weight fails verify (exit 1); an unknown keras-hub family and an option
transformers cannot express are refused (exit 2, nothing written)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

HIDDEN_ATOL, LOGITS_ATOL = 1e-5, 1e-4
DECODER = dict(vocabulary_size=96, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
               intermediate_dim=48)
BACKBONES = {  # keras-hub constructor kwargs per family, tiny
    "gpt2": ("GPT2Backbone", dict(vocabulary_size=96, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=48,
                                  max_sequence_length=64)),
    "llama": ("LlamaBackbone", DECODER),
    "mistral": ("MistralBackbone", dict(DECODER, sliding_window=None)),
    "qwen2": ("Qwen2Backbone", DECODER),
    # keras-hub's own Qwen3 q/k norms use 1e-5 whatever layer_norm_epsilon says: at 1e-5 a transformers config fits
    "qwen3": ("Qwen3Backbone", dict(DECODER, head_dim=8, sliding_window_size=None, layer_norm_epsilon=1e-5)),
    "gemma": ("GemmaBackbone", dict(DECODER, head_dim=8)),
    "distilbert": ("DistilBertBackbone", dict(vocabulary_size=96, num_layers=2, num_heads=4, hidden_dim=32,
                                              intermediate_dim=48, max_sequence_length=64)),
    "albert": ("AlbertBackbone", dict(vocabulary_size=96, num_layers=4, num_heads=4, embedding_dim=16, hidden_dim=32,
                                      intermediate_dim=48, num_groups=2, num_inner_repetitions=1, max_sequence_length=64)),
    "electra": ("ElectraBackbone", dict(vocab_size=96, num_layers=2, num_heads=4, hidden_dim=32, embedding_dim=16,
                                        intermediate_dim=48, max_sequence_length=64)),
    "dinov2": ("DINOV2Backbone", dict(patch_size=4, num_layers=2, hidden_dim=32, num_heads=4, intermediate_dim=64,
                                      layer_scale_init_value=0.5, image_shape=(16, 16, 3),
                                      position_embedding_shape=(16, 16, 3), apply_layernorm=True)),
    # keras-hub's own classes where porter's direct route uses a subclass (blocks from 1; XLM-R positions from 0)
    "vit": ("ViTBackbone", dict(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=48,
                                layer_norm_epsilon=1e-6)),
    "deit": ("DeiTBackbone", dict(image_shape=(16, 16, 3), patch_size=4, num_layers=3, num_heads=4, hidden_dim=32,
                                  intermediate_dim=48, layer_norm_epsilon=1e-5)),
    "xlm-roberta": ("XLMRobertaBackbone", dict(vocabulary_size=96, num_layers=2, num_heads=4, hidden_dim=32,
                                               intermediate_dim=48, max_sequence_length=64)),
}
TASKS = {"gpt2": "GPT2CausalLM", "llama": "LlamaCausalLM", "mistral": "MistralCausalLM", "qwen2": "Qwen2CausalLM",
         "qwen3": "Qwen3CausalLM", "gemma": "GemmaCausalLM", "distilbert": ("DistilBertTextClassifier", {"num_classes": 3}),
         "vit": ("ViTImageClassifier", {"num_classes": 3}), "deit": ("DeiTImageClassifier", {"num_classes": 4})}
# (family, backbone | causal, .keras | preset); "causal" is the family's task model (DistilBERT's is a classifier)
CASES = [("gpt2", "backbone", "keras"), ("gpt2", "causal", "preset"), ("llama", "causal", "keras"),
         ("llama", "causal", "preset"), ("llama", "backbone", "preset"), ("mistral", "causal", "keras"),
         ("qwen2", "causal", "preset"), ("qwen3", "causal", "keras"), ("gemma", "causal", "keras"),
         ("gemma", "backbone", "preset"), ("distilbert", "backbone", "keras"), ("distilbert", "causal", "preset"),
         ("albert", "backbone", "preset"), ("electra", "backbone", "keras"), ("dinov2", "backbone", "keras"),
         ("vit", "causal", "keras"), ("deit", "causal", "preset"), ("xlm-roberta", "backbone", "keras"),
         ("xlm-roberta", "backbone", "preset")]
IDS = ["-".join(c) for c in CASES]
MAX_ABS: dict[str, float] = {}


def _hub():
    from porter.zoo.keras_hub.entry import _keras_hub

    return _keras_hub()


def build(family: str, head: str, seed: int = 0, **override):
    """A tiny keras-hub model with informative weights: norms moved away from 1/0, embeddings at a scale
    that gives logits well away from zero."""
    import keras

    hub = _hub()
    keras.utils.set_random_seed(seed)
    cls, kwargs = BACKBONES[family]
    model = getattr(hub.models, cls)(**dict(kwargs, **override))
    if head == "causal":
        task, task_kwargs = TASKS[family] if isinstance(TASKS[family], tuple) else (TASKS[family], {})
        model = getattr(hub.models, task)(backbone=model, preprocessor=None, **task_kwargs)
    rng = np.random.default_rng(seed)
    backbone_ids = {id(v) for v in getattr(model, "backbone", model).weights}
    for v in model.weights:
        if id(v) not in backbone_ids:  # a classifier head: logits of order 1
            v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
        elif "norm" in v.path or re.search(r"/ln(_\d)?/", v.path):  # ViT/DeiT name their norms ln_1, ln_2, ln
            v.assign(v.numpy() + rng.normal(0, 0.2, v.shape).astype("float32"))
        elif "embedding" in v.path and not (family == "dinov2" and "position" in v.path):
            # (DINOv2 derives an interpolated copy of its position table when built: left as built)
            v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return model


def save(model, path, fmt):
    if fmt == "keras":
        path = path.with_suffix(".keras")
        model.save(str(path))
    else:
        model.save_to_preset(str(path))
    return path


def feed(family, seed=7, batch=2, seq=9, vocab=96):
    from porter.zoo.keras_hub.families import FAMILIES

    rng = np.random.default_rng(seed)
    if "pixel_values" in FAMILIES[family].keras_inputs:
        return {"pixel_values": rng.normal(0, 1, size=(batch, 3, 16, 16)).astype(np.float32)}
    ids = rng.integers(0, vocab, size=(batch, seq))
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[1, seq - 3:] = 0  # right padding, as a causal LM is fed
    if family == "xlm-roberta":  # real text: XLM-R's pad id (1) only as padding (transformers' positions skip it)
        ids = np.where(mask == 1, np.where(ids == 1, 2, ids), 1)
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def cli():  # module-scoped: the module's conversions are fixtures too
    from cli_runner import make_cli

    return make_cli()


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def converted(request, tmp_path_factory, cli):
    family, head, fmt = request.param
    root = tmp_path_factory.mktemp(IDS[CASES.index(request.param)])
    # a base model: Llama built tied (keras-hub's default keeps an LM head, converted as the causal LM: tested below)
    model = build(family, head, **({"tie_word_embeddings": True} if (family, head) == ("llama", "backbone") else {}))
    src = save(model, root / "model", fmt)
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", root / "hf")
    assert code == 0, output
    return request.param, model, src, root / "hf"


def test_verified_at_four_shapes(converted):
    (family, head, fmt), _, _, out = converted
    report = json.loads((out / "porter_report.json").read_text())
    verification = report["verification"]
    assert verification["status"] == "passed" and report["route"] == "direct"
    shapes = verification["shapes"]
    assert len(shapes) >= 4 and {next(iter(s["input_shapes"].values()))[0] for s in shapes} >= {1, 3}
    for s in shapes:
        for o in s["outputs"]:
            assert o["max_abs"] <= (LOGITS_ATOL if o["name"] == "logits" else HIDDEN_ATOL), (s["label"], o["name"], o["max_abs"])
    worst = max(o["max_abs"] for s in shapes for o in s["outputs"])
    # the outputs are informative: a mapping slip could not hide under near-zero values
    assert all(o["cosine"] > 0.999999 for s in shapes for o in s["outputs"])
    MAX_ABS["-".join((family, head, fmt))] = worst
    print(f"\n{family} {head} {fmt}: max abs {worst:.3g} over {len(shapes)} shapes")


def test_from_pretrained_strict_and_own_input(converted):
    import torch
    import transformers

    (family, head, _), model, _, out = converted
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family
    arch = config["architectures"][0]
    from porter.zoo.keras_hub.families import FAMILIES

    fam = FAMILIES[family]
    assert arch == (next(iter(fam.task)) if head == "causal" else fam.base)
    hf, info = getattr(transformers, arch).from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    x = feed(family)
    from porter.zoo.keras_hub.entry import keras_call

    keras_out = keras_call(model, x)
    with torch.no_grad():
        res = hf.eval()(**{k: torch.from_numpy(v) for k, v in x.items()})
    for name, want in keras_out.items():
        got, want = getattr(res, name).numpy(), np.asarray(want)
        if want.ndim == 3 and "attention_mask" in x:  # per token: padded positions are undefined
            keep = x["attention_mask"].astype(bool)
            got, want = got[keep], want[keep]
        err = np.abs(got - want).max()
        assert err <= (LOGITS_ATOL if name == "logits" else HIDDEN_ATOL), (name, err)
        assert np.abs(want).max() > 0.1, name


def test_perturbed_written_weight_fails_verify(converted, cli, tmp_path):
    from safetensors.numpy import load_file, save_file

    (family, head, _), _, src, out = converted
    if (family, head) not in (("llama", "causal"), ("gpt2", "backbone"), ("vit", "causal"), ("xlm-roberta", "backbone")):
        pytest.skip("one negative per rule file is enough")
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    state = load_file(bad / "model.safetensors")
    key = next(k for k in state if "norm" in k.lower() or "ln_" in k)
    state[key] = state[key] + 0.05
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    code, output = cli("verify", src, bad)
    assert code == 1, output


def test_config_round_trips():
    """transformers config -> keras-hub kwargs -> transformers config -> the same kwargs, and the same HF
    fields; llama's linear rope is written as equivalent llama3 parameters (only its kwargs round-trip)."""
    from porter.zoo.keras_hub.entry import full_config
    from porter.zoo.keras_hub.families import FAMILIES
    from porter.zoo.keras_hub.to_hf import INVERSES

    small = dict(vocab_size=150, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=48, rms_norm_eps=1e-5, max_position_embeddings=128)
    cases = [
        ("gpt2", dict(vocab_size=120, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=80)),
        ("llama", dict(small, rope_parameters={"rope_type": "default", "rope_theta": 5e5}, tie_word_embeddings=True)),
        ("llama", dict(small, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
        ("llama", dict(small, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0})),
        ("mistral", dict(small, head_dim=16, sliding_window=None)),
        ("qwen2", dict(small, rope_parameters={"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0})),
        ("qwen3", dict(small, head_dim=16, tie_word_embeddings=False)),
        ("gemma", dict(small, head_dim=16)),
        ("distilbert", dict(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64)),
        ("albert", dict(vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_hidden_groups=2,
                        num_attention_heads=4, intermediate_size=48, max_position_embeddings=64, type_vocab_size=3)),
        ("electra", dict(vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=48, max_position_embeddings=64, hidden_act="gelu")),
        ("dinov2", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=28,
                        patch_size=7, layerscale_value=0.3)),
    ]
    fields = ("vocab_size", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads", "n_head",
              "num_key_value_heads", "intermediate_size", "n_inner", "rms_norm_eps", "layer_norm_epsilon",
              "tie_word_embeddings", "n_positions", "rope_parameters", "head_dim", "dim", "n_layers", "n_heads",
              "hidden_dim", "max_position_embeddings", "embedding_size", "num_hidden_groups", "inner_group_num",
              "type_vocab_size", "hidden_act", "layer_norm_eps", "patch_size", "mlp_ratio", "image_size", "layerscale_value")
    for family, kwargs in cases:
        fam = FAMILIES[family]
        head = next(iter(fam.task), None)
        hf = full_config(dict(kwargs, model_type=family, architectures=[head or fam.base]))
        keras_kwargs = fam.translate(hf, head)
        back = full_config(dict(INVERSES[family](keras_kwargs, head), model_type=family, architectures=[head or fam.base]))
        assert fam.translate(back, head) == keras_kwargs, family
        if hf.get("rope_parameters", {}).get("rope_type") == "linear" and family == "llama":
            continue
        # rotary decoders: keras-hub keeps no position limit, so max_position_embeddings comes back as transformers' default
        kept = [f for f in fields if not (f == "max_position_embeddings" and "rope_parameters" in hf)]
        differ = {f: (hf.get(f), back.get(f)) for f in kept if f in hf and hf.get(f) != back.get(f)}
        assert not differ, (family, differ)


def _no_output(out):
    return not out.exists()


def test_unknown_keras_hub_family_is_refused(cli, tmp_path):
    hub = _hub()
    bart = hub.models.BartBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                   max_sequence_length=16)
    for fmt in ("keras", "preset"):
        src = save(bart, tmp_path / f"bart_{fmt}", fmt)
        out = tmp_path / f"out_{fmt}"
        code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", out)
        text = " ".join(output.split())
        assert code == 2, output
        assert "BartBackbone" in text and "LlamaCausalLM" in text and "GPT2Backbone" in text, output
        assert "Traceback" not in output and _no_output(out)


@pytest.mark.parametrize("family, option, shown", [
    # keras-hub's Llama takes rope_position_scaling_factor (and 0.30 ignores it): no transformers Llama config
    # gives it back, so it is named, not dropped
    ("llama", {"rope_position_scaling_factor": 2.0}, "rope_position_scaling_factor=2.0"),
    # keras-hub's (0.30 to 0.32) Qwen3 q/k norms keep 1e-5 at layer_norm_epsilon=1e-6: no transformers Qwen3 config
    # reproduces that (verification measured 1.7e-4 in logits, 4e-3 at q_norm), so it is refused up front
    ("qwen3", {"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon=1e-06"),
])
def test_option_transformers_cannot_express_is_refused(cli, tmp_path, family, option, shown):
    model = build(family, "causal", **option)
    src = save(model, tmp_path / family, "keras")
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    assert code == 2, output
    assert shown in " ".join(output.split()), output
    assert _no_output(tmp_path / "out")


def test_backbone_with_untied_head_converts_as_causal_lm(cli, tmp_path):
    """keras-hub's LlamaBackbone (and every MistralBackbone) keeps its own LM head: LlamaModel has no place
    for it, so it is written as LlamaForCausalLM, the head bit-exact, logits verified."""
    from safetensors.numpy import load_file

    model = build("llama", "backbone")  # keras-hub's default: tie_word_embeddings=False
    head = model.token_embedding.reverse_embeddings.numpy()
    src = save(model, tmp_path / "llama", "preset")
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", tmp_path / "hf")
    assert code == 0, output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is False
    np.testing.assert_array_equal(load_file(tmp_path / "hf" / "model.safetensors")["lm_head.weight"], head.T)
    report = json.loads((tmp_path / "hf" / "porter_report.json").read_text())
    assert report["mapping"]["ignored"] == [] and report["verification"]["status"] == "passed"
    assert set(report["verification"]["max_abs_error"]) == {"logits"}


def test_family_without_inverse_is_refused(monkeypatch):
    """A family of the table whose config porter cannot yet write back is named, with those it can."""
    from porter.zoo.keras_hub import to_hf

    from porter.errors import UnsupportedModelError

    monkeypatch.delitem(to_hf.INVERSES, "gpt2")
    with pytest.raises(UnsupportedModelError) as err:
        to_hf.hf_config(build("gpt2", "backbone"), "model.keras")
    assert "GPT2Backbone" in err.value.message and "gpt2 family" in err.value.message and "llama" in err.value.message


def test_tied_llama_keras_file_reloads_tied(cli, tmp_path):
    """keras-hub (0.30 to 0.32) leaves tie_word_embeddings out of LlamaBackbone's config: its own load_model fails on a
    tied Llama's .keras; porter loads it again tied, and the written folder is a tied LlamaForCausalLM."""
    model = build("llama", "causal", tie_word_embeddings=True)
    src = save(model, tmp_path / "llama", "keras")
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", tmp_path / "hf")
    assert code == 0, output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    report = json.loads((tmp_path / "hf" / "porter_report.json").read_text())
    assert report["verification"]["status"] == "passed" and report["verification"]["max_abs_error"]["logits"] <= LOGITS_ATOL


def test_inspect_names_the_keras_hub_family(cli, tmp_path):
    src = save(build("gpt2", "backbone"), tmp_path / "gpt2", "preset")
    code, output = cli("inspect", src)
    text = " ".join(output.split())
    assert code == 0, output
    assert "keras-hub preset folder" in text and "keras-hub GPT2Backbone (family gpt2; mapping: mappings/gpt2.toml); route: direct" in text


def test_plain_xlm_roberta_positions_shifted_and_pooler_placeholder(cli, tmp_path):
    """keras-hub's own XLMRobertaBackbone counts positions from 0 and has no token-type row or pooler: its table
    is written padding_idx + 1 = 2 rows down (rows 0..1 zeros), the token-type row and the pooler are zeros, the
    config says the pooler is a placeholder, and only last_hidden_state is compared."""
    from safetensors.numpy import load_file

    model = build("xlm-roberta", "backbone")
    table = model.embeddings.position_embedding.position_embeddings.numpy()
    src = save(model, tmp_path / "xlmr", "keras")
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", tmp_path / "hf")
    assert code == 0, output
    state = load_file(tmp_path / "hf" / "model.safetensors")
    positions = state["embeddings.position_embeddings.weight"]
    assert positions.shape == (64 + 2, 32) and not positions[:2].any()
    np.testing.assert_array_equal(positions[2:], table)
    assert not state["embeddings.token_type_embeddings.weight"].any()
    assert not state["pooler.dense.weight"].any() and not state["pooler.dense.bias"].any()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["max_position_embeddings"], config["pad_token_id"], config["type_vocab_size"]) == (66, 1, 1)
    assert config["porter_pooler_placeholder"] is True and config["layer_norm_eps"] == 1e-5
    report = json.loads((tmp_path / "hf" / "porter_report.json").read_text())
    assert set(report["verification"]["max_abs_error"]) == {"last_hidden_state"}
    assert any("pooler_output: not compared" in n for n in report["verification"]["notes"])


def test_plain_vit_blocks_from_one_map_in_order(tmp_path):
    """keras-hub's own ViT names its blocks transformer_block_1..N: block n is written as transformers' layer n-1
    (a swap of two blocks' names would still fill every target: checked tensor by tensor)."""
    from porter.zoo.keras_hub.entry import keras_variables

    model = build("vit", "causal")
    plain = {v.path: v.numpy() for v in model.backbone.weights}
    names = keras_variables(model)
    assert "vit_encoder/transformer_block_0/ln_1/gamma" in names and not any("transformer_block_2" in k for k in names)
    for n in (1, 2):
        want = next(a for p, a in plain.items() if f"transformer_block_{n}/" in p and p.endswith("ln_1/gamma"))
        np.testing.assert_array_equal(names[f"vit_encoder/transformer_block_{n - 1}/ln_1/gamma"].numpy(), want)


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_plain_vision_backbone_alone_is_refused(family, cli, tmp_path):
    """transformers' ViTModel/DeiTModel always build a pooler keras-hub's backbone has no weights for: the
    backbone alone is refused (exit 2, nothing written), naming the image classifier that converts."""
    src = save(build(family, "backbone"), tmp_path / family, "keras")
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    text = " ".join(output.split())
    assert code == 2, output
    assert "pooler" in text and "ImageClassifier" in text and "Traceback" not in output
    assert _no_output(tmp_path / "out")


def test_vision_and_xlmr_config_round_trips():
    """transformers config -> porter's keras-hub kwargs -> transformers config: the same kwargs and fields."""
    from porter.zoo.keras_hub.entry import full_config
    from porter.zoo.keras_hub.families import FAMILIES
    from porter.zoo.keras_hub.to_hf import INVERSES

    vision = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=40, layer_norm_eps=1e-5, qkv_bias=False)
    cases = [("vit", vision), ("deit", vision),
             ("xlm-roberta", dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=70, layer_norm_eps=1e-6, pad_token_id=3,
                                  type_vocab_size=1))]
    fields = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "layer_norm_eps", "qkv_bias", "vocab_size", "max_position_embeddings", "pad_token_id", "type_vocab_size")
    for family, kwargs in cases:
        fam = FAMILIES[family]
        head = next(iter(fam.task), None)
        hf = full_config(dict(kwargs, model_type=family, architectures=[head or fam.base]))
        keras_kwargs = fam.translate(hf, head)
        back = full_config(dict(INVERSES[family](keras_kwargs, head), model_type=family, architectures=[head or fam.base]))
        assert fam.translate(back, head) == keras_kwargs, family
        differ = {f: (hf.get(f), back.get(f)) for f in fields if f in hf and hf.get(f) != back.get(f)}
        assert not differ, (family, differ)

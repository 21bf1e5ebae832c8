"""Tiny transformers models through porter.graph_to_tf: exported with dynamic batch and sequence,
saved, reloaded and compared with torch at the export shape and two others (right padding in the
last row). The SavedModel's serving signature keeps batch and sequence as None."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
transformers = pytest.importorskip("transformers")

from torch.export import Dim

from porter.graph_to_tf import convert_exported, first_divergence

DECODER = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 37, "max_position_embeddings": 64}
MODELS = {
    "bert": ("BertModel", {"model_type": "bert", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64}),
    "gpt2": ("GPT2Model", {"model_type": "gpt2", "vocab_size": 99, "n_embd": 32, "n_layer": 2, "n_head": 4,
                           "n_positions": 64, "bos_token_id": 0, "eos_token_id": 0}),
    "llama": ("LlamaForCausalLM", {**DECODER, "model_type": "llama"}),
    "qwen2": ("Qwen2Model", {**DECODER, "model_type": "qwen2"}),
}
EXPORT_SHAPE, OTHER_SHAPES = (2, 9), [(1, 5), (3, 17)]


def _model(kind):
    from hf_tiny import perturb_norms

    cls_name, kwargs = MODELS[kind]
    kwargs = dict(kwargs)
    config = transformers.CONFIG_MAPPING[kwargs.pop("model_type")](**kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)._from_config(config, attn_implementation="sdpa").eval()
    perturb_norms(model)
    return model


def _feeds(batch, seq):
    g = torch.Generator().manual_seed(batch * 100 + seq)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq - 2:] = 0  # right padding in one row
    return {"input_ids": torch.randint(0, 99, (batch, seq), generator=g), "attention_mask": mask}


def _extra(kind):
    return {} if kind == "bert" else {"use_cache": False}


@pytest.fixture(scope="module", params=sorted(MODELS))
def converted(request, tmp_path_factory):
    kind = request.param
    model = _model(kind)
    batch, seq = Dim("batch", max=1024), Dim("seq", max=64)
    extra = _extra(kind)
    ep = torch.export.export(model, (), {**_feeds(*EXPORT_SHAPE), **extra}, strict=False,
                             dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
                                             **{k: None for k in extra}})
    out = tmp_path_factory.mktemp("g2tf") / kind
    return kind, model, ep, convert_exported(ep, out), out


@pytest.mark.parametrize("signature,ids", [("serving_default", np.int32), ("serving_int64", np.int64)])
def test_outputs_match_torch_at_three_shapes(converted, signature, ids):
    kind, model, _, result, out = converted
    serve = tf.saved_model.load(str(out)).signatures[signature]
    for shape in [EXPORT_SHAPE, *OTHER_SHAPES]:
        feeds = _feeds(*shape)
        with torch.no_grad():
            want = model(**feeds, **_extra(kind))
        got = serve(**{k: tf.constant(v.numpy().astype(ids)) for k, v in feeds.items()})
        assert sorted(got) == sorted(result.output_names)
        for name in result.output_names:
            error = float(np.abs(got[name].numpy() - want[name].numpy()).max())
            assert error <= 1e-5, f"{kind} {name} at {shape} ({signature}): {error}"


def test_signature_keeps_batch_and_sequence_dynamic(converted):
    kind, _, _, result, out = converted
    signatures = tf.saved_model.load(str(out)).signatures
    assert sorted(signatures) == ["serving_default", "serving_int64"]  # as on the direct route
    for key, dtype in (("serving_default", tf.int32), ("serving_int64", tf.int64)):
        inputs = signatures[key].structured_input_signature[1]
        assert sorted(inputs) == ["attention_mask", "input_ids"]
        for spec in inputs.values():
            assert spec.shape.as_list() == [None, None] and spec.dtype == dtype
        assert sorted(signatures[key].structured_outputs) == sorted(result.output_names)
    assert result.inputs[0].dtype == torch.int64  # the program's own dtype, cast to inside serving_default
    assert result.input_names == ["input_ids", "attention_mask"]
    assert result.dynamic_dims["input_ids"].keys() == {0, 1}
    expected = {"bert": ["last_hidden_state", "pooler_output"], "llama": ["logits"]}.get(kind, ["last_hidden_state"])
    assert result.output_names == expected


def test_first_divergence_is_none_when_equal(converted):
    kind, _, ep, result, _ = converted
    if kind != "gpt2":
        pytest.skip("one model is enough for the node-by-node walk")
    assert first_divergence(ep, result, {k: v.numpy() for k, v in _feeds(1, 5).items()}) is None

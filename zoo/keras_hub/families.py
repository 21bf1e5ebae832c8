"""HF model families whose Keras side is a keras-hub backbone (or task model): the table porter reads.

A ``Family`` says, for one transformers ``model_type``:
- ``backbone`` / ``task``: the keras-hub classes (``keras_hub.models.<name>``), the task class
  keyed by the transformers head class it stands for (``LlamaForCausalLM`` -> ``LlamaCausalLM``);
- ``base``: the transformers base class (used when config.json names no ``architectures``);
- ``translate(config, head)``: transformers 5 config (complete, defaults filled) -> the keras-hub
  constructor kwargs. It refuses, with a PorterError naming the config key, every option the
  keras-hub class cannot reproduce; it never guesses;
- ``mapping``: mappings/<mapping>.toml, whose torch names carry ``{prefix}`` (the base model's
  prefix inside a task model: "model." for LlamaForCausalLM, "" for LlamaModel);
- ``notes``: what porter had to know to make keras-hub reproduce transformers (shown by
  ``porter zoo show``).

Adding a family (an encoder such as distilbert or vit, say) is one entry in ``FAMILIES`` with its
translator, its ``keras_inputs`` / ``keras_outputs`` where they are not a decoder's, and one rule
file in mappings/; zoo/keras_hub/entry.py is the one implementation every family shares (inputs
generated there are token ids with right-padded masks: an image family adds its own to
``entry.input_sets``), and a keras-hub bug gets a registered subclass in fixes.py.

Nothing here imports a framework: ``porter zoo list`` reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from porter.errors import UnsupportedModelError


@dataclass(frozen=True)
class Family:
    model_type: str
    backbone: str
    base: str
    translate: Callable[[dict, str | None], dict]
    task: dict = field(default_factory=dict)  # transformers head class -> keras-hub task class
    mapping: str = ""
    notes: str = ""
    # a task model whose keras-hub class always ties its LM head to the embedding
    always_tied: bool = False
    # transformers input name -> keras-hub input name (the SavedModel takes transformers' names)
    keras_inputs: dict = field(default_factory=lambda: {"input_ids": "token_ids", "attention_mask": "padding_mask"})
    # the backbone's output -> transformers' name ("" when the backbone returns one tensor;
    # a dict-returning backbone maps its keys: {"sequence_output": "last_hidden_state", ...}).
    # A task model returns one tensor, named "logits".
    keras_outputs: dict = field(default_factory=lambda: {"": "last_hidden_state"})
    # transformers' base_model_prefix (the base model's attribute inside a head class), kept here so that mapping
    # a checkpoint needs neither transformers nor torch (1.8 s, ~0.4 GB); tests/test_hf_direct.py holds
    # it equal to transformers' own for every class of the family
    base_model_prefix: str = "model"

    @property
    def mapping_file(self) -> str:
        return self.mapping or self.model_type


def refuse(config: dict, key: str, why: str, family: str):
    return UnsupportedModelError(
        f"config.json {key}={config.get(key)!r}: {why}, so keras-hub's {family} cannot reproduce this model",
        hint="convert it through transformers + ONNX instead: pass --route onnx",
    )


def _require(config, key, allowed, family, why=None):
    if config.get(key) not in allowed:
        raise refuse(config, key, why or f"keras-hub's {family} supports only {' / '.join(map(repr, allowed))}", family)


def _rope(config: dict, family: str, supported=("default",)) -> tuple[float, dict]:
    """(theta, rope parameters) from transformers 5's ``rope_parameters`` (where rope_theta and the
    scaling type moved; older configs are read into it by transformers' own config class)."""
    rope = dict(config.get("rope_parameters") or {})
    if not rope and "rope_theta" in config:
        rope = {"rope_theta": config["rope_theta"], **(config.get("rope_scaling") or {})}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in supported:
        raise UnsupportedModelError(
            f"config.json rope_parameters.rope_type={kind!r}: keras-hub's {family} implements only {', '.join(map(repr, supported))}",
            hint="convert it through transformers + ONNX instead: pass --route onnx",
        )
    return float(rope.get("rope_theta", 10000.0)), rope


def _head_dim(config) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _plain_head_dim(config, family):
    if _head_dim(config) * config["num_attention_heads"] != config["hidden_size"]:
        raise refuse(config, "head_dim", f"keras-hub's {family} derives it as hidden_size / num_attention_heads "
                     f"= {config['hidden_size'] // config['num_attention_heads']}", family)


def _no_sliding(config, family, key="use_sliding_window"):
    if config.get(key):
        raise refuse(config, key, "sliding-window attention is not reproduced here", family)


def _silu(config, family):
    _require(config, "hidden_act", ("silu", "swish"), family)


# ------------------------------------------------------------------ translators
def gpt2(config, head):
    f = "GPT2Backbone"
    _require(config, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), f, "keras-hub's GPT2 uses the tanh GELU")
    _require(config, "layer_norm_epsilon", (1e-5,), f, "keras-hub's GPT2 fixes it at 1e-5")
    _require(config, "scale_attn_weights", (True,), f)
    _require(config, "scale_attn_by_inverse_layer_idx", (False,), f)
    _require(config, "reorder_and_upcast_attn", (False,), f)
    return dict(vocabulary_size=config["vocab_size"], num_layers=config["n_layer"], num_heads=config["n_head"],
                hidden_dim=config["n_embd"], intermediate_dim=config.get("n_inner") or 4 * config["n_embd"],
                dropout=0.0, max_sequence_length=config["n_positions"])


def _decoder_common(config):
    return dict(vocabulary_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
                num_query_heads=config["num_attention_heads"], num_key_value_heads=config.get("num_key_value_heads")
                or config["num_attention_heads"], hidden_dim=config["hidden_size"],
                intermediate_dim=config["intermediate_size"], layer_norm_epsilon=config["rms_norm_eps"], dropout=0)


def llama(config, head):
    f = "LlamaBackbone"
    _silu(config, f)
    _require(config, "attention_bias", (False, None), f)
    _require(config, "mlp_bias", (False, None), f)
    _plain_head_dim(config, f)
    theta, rope = _rope(config, f, ("default", "linear", "llama3"))
    kwargs = dict(_decoder_common(config), rope_max_wavelength=theta,
                  tie_word_embeddings=bool(config.get("tie_word_embeddings")) if head else True)
    if rope.get("rope_type") == "linear":
        # keras-hub's (0.30 to 0.32) LlamaRotaryEmbedding ignores rope_position_scaling_factor (its own inverse
        # frequencies skip the base class's division). Linear scaling divides every frequency by
        # factor: llama3 smoothing does exactly that when every wavelength (>= 2*pi) is beyond
        # pretraining_sequence_length / low_freq_factor = 1 (and none lies in the smoothed band [0.5, 1]).
        kwargs.update(rope_frequency_adjustment_factor=float(rope["factor"]), rope_low_freq_factor=1.0,
                      rope_high_freq_factor=2.0, rope_pretraining_sequence_length=1)
    elif rope.get("rope_type") == "llama3":
        kwargs.update(rope_frequency_adjustment_factor=float(rope["factor"]), rope_low_freq_factor=float(rope["low_freq_factor"]),
                      rope_high_freq_factor=float(rope["high_freq_factor"]),
                      rope_pretraining_sequence_length=int(rope["original_max_position_embeddings"]))
    return kwargs


def mistral(config, head):
    f = "MistralBackbone"
    _silu(config, f)
    theta, rope = _rope(config, f, ("default", "linear"))
    return dict(_decoder_common(config), rope_max_wavelength=theta, rope_scaling_factor=float(rope.get("factor", 1.0)),
                head_dim=_head_dim(config), sliding_window=config.get("sliding_window"))


def qwen2(config, head):
    f = "Qwen2Backbone"
    _silu(config, f)
    _plain_head_dim(config, f)
    _no_sliding(config, f)
    theta, rope = _rope(config, f, ("default", "linear"))
    return dict(_decoder_common(config), rope_max_wavelength=theta, rope_scaling_factor=float(rope.get("factor", 1.0)),
                tie_word_embeddings=bool(config.get("tie_word_embeddings")) if head else True)


def qwen3(config, head):
    f = "Qwen3Backbone"
    _silu(config, f)
    _require(config, "attention_bias", (False, None), f)
    _no_sliding(config, f)
    theta, rope = _rope(config, f, ("default", "linear"))
    return dict(_decoder_common(config), head_dim=_head_dim(config), rope_max_wavelength=theta,
                rope_scaling_factor=float(rope.get("factor", 1.0)), sliding_window_size=None,
                tie_word_embeddings=bool(config.get("tie_word_embeddings")) if head else True)


def gemma(config, head):
    f = "GemmaBackbone"
    act = config.get("hidden_activation") or config.get("hidden_act")
    if act not in ("gelu_pytorch_tanh", "gelu_new"):
        raise refuse(config, "hidden_activation", "keras-hub's Gemma uses the tanh GELU", f)
    _require(config, "attention_bias", (False, None), f)
    theta, _ = _rope(config, f)
    if theta != 10000.0:
        raise refuse({"rope_theta": theta}, "rope_theta", "keras-hub's Gemma fixes the rotary base at 10000", f)
    common = _decoder_common(config)
    # keras-hub's Gemma halves intermediate_dim for each of its two gate projections
    common["intermediate_dim"] = 2 * config["intermediate_size"]
    return dict(common, head_dim=_head_dim(config), query_head_dim_normalize=True)


# ------------------------------------------------------------------ encoders
_TEXT = {"input_ids": "token_ids", "attention_mask": "padding_mask"}
_TEXT_SEGMENTS = dict(_TEXT, token_type_ids="segment_ids")


def _num_labels(config) -> int:
    return len(config.get("id2label") or {}) or int(config.get("num_labels", 2))


def _single_label(config, family):
    # keras-hub's text classifiers return raw logits: the loss (problem_type) is the trainer's business,
    # but transformers' regression head (num_labels=1) is still a Dense: accepted as is
    _require(config, "problem_type", (None, "single_label_classification", "multi_label_classification", "regression"), family)


def distilbert(config, head):
    f = "DistilBertBackbone"
    _require(config, "activation", ("gelu",), f, "keras-hub's DistilBERT uses the exact GELU")
    _require(config, "sinusoidal_pos_embds", (False, None), f, "keras-hub's DistilBERT learns its position table")
    kwargs = dict(vocabulary_size=config["vocab_size"], num_layers=config["n_layers"], num_heads=config["n_heads"],
                  hidden_dim=config["dim"], intermediate_dim=config["hidden_dim"], dropout=0.0,
                  max_sequence_length=config["max_position_embeddings"])
    if head:
        _single_label(config, f)
    return kwargs


def _bert_like(config, family, activations):
    _require(config, "hidden_act", activations, family)
    _require(config, "layer_norm_eps", (1e-12,), family, f"keras-hub's {family} fixes it at 1e-12")
    _require(config, "position_embedding_type", ("absolute", None), family)
    return dict(num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
                hidden_dim=config["hidden_size"], embedding_dim=config["embedding_size"],
                intermediate_dim=config["intermediate_size"], dropout=0.0,
                max_sequence_length=config["max_position_embeddings"], num_segments=config["type_vocab_size"])


def albert(config, head):
    f = "AlbertBackbone"
    kwargs = _bert_like(config, f, ("gelu_new", "gelu_pytorch_tanh"))
    groups, layers = config["num_hidden_groups"], config["num_hidden_layers"]
    if layers % groups:
        raise refuse(config, "num_hidden_groups", f"keras-hub's {f} needs num_hidden_layers ({layers}) divisible by it", f)
    return dict(kwargs, vocabulary_size=config["vocab_size"], num_groups=groups,
                num_inner_repetitions=config["inner_group_num"])


def electra(config, head):
    f = "ElectraBackbone"
    kwargs = _bert_like(config, f, ("gelu", "gelu_new", "gelu_pytorch_tanh"))
    # porter's ElectraBackbone (fixes.py) sets the exact GELU transformers' "gelu" means
    act = "gelu" if config["hidden_act"] == "gelu" else "gelu_new"
    return dict(kwargs, vocab_size=config["vocab_size"], feedforward_activation=act)


def dinov2(config, head):
    f = "DINOV2Backbone"
    _require(config, "hidden_act", ("gelu",), f, "keras-hub's DINOv2 uses the exact GELU")
    _require(config, "layer_norm_eps", (1e-6,), f, "keras-hub's DINOv2 fixes it at 1e-6")
    _require(config, "qkv_bias", (True,), f)
    _require(config, "use_swiglu_ffn", (False,), f, "only the plain MLP is translated here")
    _require(config, "apply_layernorm", (True,), f)
    _require(config, "num_channels", (3,), f)
    if config.get("num_register_tokens"):
        raise refuse(config, "num_register_tokens", "registers are DINOv2-with-registers, another model_type", f)
    size = (config["image_size"], config["image_size"], 3)
    # the position table at the configured size: transformers uses it as is there (no interpolation),
    # keras-hub's interpolated copy equals it (position_embedding_shape = image_shape)
    return dict(patch_size=config["patch_size"], num_layers=config["num_hidden_layers"], hidden_dim=config["hidden_size"],
                num_heads=config["num_attention_heads"], intermediate_dim=int(config["hidden_size"] * config["mlp_ratio"]),
                layer_scale_init_value=float(config["layerscale_value"]), use_mask_token=True, dropout_rate=0.0,
                drop_path_rate=0.0, image_shape=size, position_embedding_shape=size, apply_layernorm=True,
                # keras-hub names DINOv2's layers after the backbone (name=None builds "embeddings", a reloaded
                # model.keras "dinov2_backbone_embeddings"): named, so variable paths stay stable
                name="dinov2_backbone")


def _needs_classifier_head(head, name: str, backbone: str) -> None:
    """transformers' bare ViTModel/DeiTModel end in a pooler (dense + tanh) that keras-hub's backbones lack."""
    if not head:
        raise UnsupportedModelError(
            f"config.json names no architectures (or {name}Model): transformers' {name}Model has a pooler (dense + tanh) "
            f"that keras-hub's {backbone} lacks, so porter's {name.lower()} direct route converts "
            f"{name}ForImageClassification only",
            hint="convert it through transformers + ONNX instead: pass --route onnx")


def vit(config, head):
    f = "ViTBackbone"
    _needs_classifier_head(head, "ViT", f)
    _require(config, "hidden_act", ("gelu",), f, "keras-hub's ViT uses the exact GELU")
    _require(config, "num_channels", (3,), f)
    size = config["image_size"]
    return dict(image_shape=(size, size, 3), patch_size=config["patch_size"], num_layers=config["num_hidden_layers"],
                num_heads=config["num_attention_heads"], hidden_dim=config["hidden_size"],
                mlp_dim=config["intermediate_size"], dropout_rate=0.0, attention_dropout=0.0,
                layer_norm_epsilon=float(config["layer_norm_eps"]), use_mha_bias=bool(config["qkv_bias"]),
                use_mlp_bias=True, use_class_token=True, use_patch_bias=True)


def deit(config, head):
    f = "DeiTBackbone"
    _needs_classifier_head(head, "DeiT", f)
    _require(config, "hidden_act", ("gelu",), f, "keras-hub's DeiT uses the exact GELU")
    _require(config, "num_channels", (3,), f)
    size = config["image_size"]
    return dict(image_shape=(size, size, 3), patch_size=config["patch_size"], num_layers=config["num_hidden_layers"],
                num_heads=config["num_attention_heads"], hidden_dim=config["hidden_size"],
                intermediate_dim=config["intermediate_size"], dropout_rate=0.0, attention_dropout=0.0,
                layer_norm_epsilon=float(config["layer_norm_eps"]), use_mha_bias=bool(config["qkv_bias"]))


def xlm_roberta(config, head):
    f = "XLMRobertaBackbone"
    _require(config, "hidden_act", ("gelu",), f, "keras-hub's encoder layers use the exact GELU")
    _require(config, "position_embedding_type", ("absolute", None), f)
    _require(config, "is_decoder", (False, None), f)
    _require(config, "type_vocab_size", (1,), f, "porter's XLM-RoBERTa serves no token_type_ids (XLM-R checkpoints have one type)")
    # porter's XLMRobertaBackbone (fixes.py) holds transformers' embedding and pooler
    return dict(vocabulary_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
                num_heads=config["num_attention_heads"], hidden_dim=config["hidden_size"],
                intermediate_dim=config["intermediate_size"], dropout=0.0,
                max_sequence_length=config["max_position_embeddings"], pad_token_id=config["pad_token_id"],
                type_vocab_size=config["type_vocab_size"], layer_norm_epsilon=float(config["layer_norm_eps"]))


def task_kwargs(config: dict, head: str | None) -> dict:
    """A sequence-classification task model's own kwargs (num_classes, no dropout at inference)."""
    if head and head.endswith("ForSequenceClassification"):
        return dict(num_classes=_num_labels(config), dropout=0.0)
    if head and head.endswith("ForImageClassification"):  # a linear classifier on the class token
        extra = {"intermediate_dim": None} if head.startswith("ViT") else {}
        return dict(num_classes=_num_labels(config), pooling="token", dropout=0.0, **extra)
    return {}


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("gpt2", "GPT2Backbone", "GPT2Model", gpt2, {"GPT2LMHeadModel": "GPT2CausalLM"}, base_model_prefix="transformer", always_tied=True,
               notes="c_attn (fused q,k,v; Conv1D (in, out) layout) split by the rules; keras-hub's GPT2 fixes "
                     "layer_norm_epsilon=1e-5 and the tanh GELU, and always ties its LM head"),
        Family("llama", "LlamaBackbone", "LlamaModel", llama, {"LlamaForCausalLM": "LlamaCausalLM"}, mapping="llama",
               notes="rope_parameters (transformers 5) -> rope_max_wavelength; llama3 rope scaling translated, and linear scaling written as llama3 parameters that divide every frequency (keras-hub (0.30 to 0.32) ignores Llama's rope_position_scaling_factor); "
                     "base models are built tied (they have no LM head); one porter-own correction (zoo/keras_hub/fixes.py), for tied models only: keras-hub (0.30 to 0.32) leaves tie_word_embeddings out of LlamaBackbone.get_config, so a tied model.keras reloaded untied; a tied model's model.keras holds porter>LlamaBackbone, a keras_hub LlamaBackbone subclass, an untied LlamaForCausalLM's keras-hub's own LlamaBackbone (loads without porter)"),
        Family("mistral", "MistralBackbone", "MistralModel", mistral, {"MistralForCausalLM": "MistralCausalLM"}, mapping="llama",
               notes="keras-hub's Mistral always keeps a separate reverse embedding: tied checkpoints fill it from "
                     "embed_tokens (tied_to in the rules); sliding_window passed through"),
        Family("qwen2", "Qwen2Backbone", "Qwen2Model", qwen2, {"Qwen2ForCausalLM": "Qwen2CausalLM"}, mapping="llama",
               notes="q/k/v biases as (heads, head_dim); use_sliding_window refused"),
        Family("qwen3", "Qwen3Backbone", "Qwen3Model", qwen3, {"Qwen3ForCausalLM": "Qwen3CausalLM"}, mapping="llama",
               notes="one porter-own correction (zoo/keras_hub/fixes.py): keras-hub (0.30 to 0.32) builds the per-head q_norm/k_norm with epsilon 1e-5 whatever rms_norm_eps says (a 1e-3 error at transformers' 1e-6); model.keras holds porter>Qwen3Backbone, a keras_hub Qwen3Backbone subclass (keras-hub's own at rms_norm_eps 1e-5, where its q/k norms are right); use_sliding_window refused"),
        Family("gemma", "GemmaBackbone", "GemmaModel", gemma, {"GemmaForCausalLM": "GemmaCausalLM"}, always_tied=True,
               notes="intermediate_dim = 2 x intermediate_size (keras-hub halves it per gate); q/k/v kernels are "
                     "heads-first (heads, hidden, head_dim); rotary base fixed at 10000; LM head always tied"),
        Family("distilbert", "DistilBertBackbone", "DistilBertModel", distilbert,
               {"DistilBertForSequenceClassification": "DistilBertTextClassifier"}, base_model_prefix="distilbert", keras_inputs=_TEXT,
               notes="no config translation beyond names (dim -> hidden_dim, hidden_dim -> intermediate_dim); the "
                     "classifier head (pre_classifier + ReLU + classifier on the first token) is keras-hub's "
                     "DistilBertTextClassifier (pooled_dense + logits), built without a preprocessor and dropout 0; "
                     "keras-hub's backbone exposes its token table twice (token_embedding/ is an alias, ignored by the rules)"),
        Family("xlm-roberta", "XLMRobertaBackbone", "XLMRobertaModel", xlm_roberta, base_model_prefix="roberta", keras_inputs=_TEXT,
               keras_outputs={"sequence_output": "last_hidden_state", "pooled_output": "pooler_output"},
               notes="one layer of porter's own (zoo/keras_hub/fixes.py, porter>XLMRobertaBackbone, a keras_hub "
                     "XLMRobertaBackbone subclass with keras-hub's TransformerEncoder layers): keras-hub's (0.30 to 0.32) embedding "
                     "counts positions from 0 where transformers counts from padding_idx + 1 over non-pad tokens (the "
                     "table's first rows would be lost: no bit-exact way back), has no token-type row (transformers "
                     "adds token_type_embeddings[0] to every token) and no pooler; layer_norm_eps passed through. Base "
                     "model only (its outputs are a dict; keras-hub's XLMRobertaTextClassifier wants one tensor); model.keras is "
                     "that backbone's graph as a plain Functional model of keras-hub's layers (loads without porter; "
                     "entry.SAVED_PLAIN), the transformers config inside"),
        Family("albert", "AlbertBackbone", "AlbertModel", albert, base_model_prefix="albert", keras_inputs=_TEXT_SEGMENTS,
               keras_outputs={"sequence_output": "last_hidden_state", "pooled_output": "pooler_output"},
               notes="num_hidden_groups -> num_groups, inner_group_num -> num_inner_repetitions (layers shared per "
                     "group as transformers does); embedding_size -> embedding_dim (the projection to hidden_dim); "
                     "keras-hub fixes the tanh GELU (gelu_new, ALBERT's default) and layer_norm_eps 1e-12"),
        Family("electra", "ElectraBackbone", "ElectraModel", electra, base_model_prefix="electra", keras_inputs=_TEXT_SEGMENTS,
               keras_outputs={"sequence_output": "last_hidden_state"},
               notes="one porter-own correction (zoo/keras_hub/fixes.py): keras-hub's (0.30 to 0.32) ElectraBackbone hard-codes the "
                     "tanh GELU, transformers' ELECTRA uses the exact one (hidden_act='gelu'; ~1e-3 apart): porter>ElectraBackbone "
                     "sets feedforward_activation (keras-hub's own class for hidden_act gelu_new / gelu_pytorch_tanh), and its model.keras is "
                     "a plain Functional model of keras-hub's layers, the exact GELU in their configs (loads without porter); transformers' ElectraModel has no pooler, so "
                     "keras-hub's pooled_dense has no torch weight (it keeps keras-hub's initializer; ignored by the rules) and pooled_output is not served"),
        Family("vit", "ViTBackbone", "ViTModel", vit, {"ViTForImageClassification": "ViTImageClassifier"}, base_model_prefix="vit",
               keras_inputs={"pixel_values": "images"},
               notes="ViTForImageClassification -> ViTImageClassifier (pooling='token', a linear head on the class "
                     "token after the final norm); the base ViTModel is refused (its pooler has no keras-hub "
                     "counterpart); image size fixed (learned position table), batch dynamic; keras-hub's own ViTBackbone (model.keras loads "
                     "without porter): keras-hub (0.30 to 0.32) numbers ViT's blocks from 1, and its variables are read under "
                     "names counted from 0 (zoo/keras_hub/plain.py) so one rule binds layer.{i} to transformer_block_{i}"),
        Family("deit", "DeiTBackbone", "DeiTModel", deit, {"DeiTForImageClassification": "DeiTImageClassifier"}, base_model_prefix="deit",
               keras_inputs={"pixel_values": "images"},
               notes="DeiTForImageClassification -> DeiTImageClassifier (pooling='token': the class token, not the "
                     "distillation token, as transformers' DeiTForImageClassification); DeiTForImageClassificationWithTeacher "
                     "and the base DeiTModel (a pooler keras-hub lacks) are refused; image size fixed, batch dynamic; "
                     "keras-hub's own DeiTBackbone, its blocks read from 0 as for ViT"),
        Family("dinov2", "DINOV2Backbone", "Dinov2Model", dinov2, base_model_prefix="dinov2", keras_inputs={"pixel_values": "images"},
               notes="image_shape = position_embedding_shape = image_size (dims kept: batch; the image size is fixed, "
                     "as keras-hub builds its position table for one size); apply_layernorm=True (transformers' "
                     "last_hidden_state is after the final norm); intermediate_dim = hidden_size x mlp_ratio; keras-hub's "
                     "interpolated_position_embeddings is filled from the same table (tied_to); pixel_values served NCHW "
                     "as transformers takes them, transposed to keras-hub's NHWC inside serving_default"),
    )
}

"""keras-hub models back to Hugging Face: the family from the keras-hub class, the transformers config
from the keras-hub config (each family's translator run backwards, then forwards again as the check).

A user's keras-hub model (a ``.keras`` file or a ``save_to_preset`` folder) carries no transformers
config.json. The family is found by class name in the families table (``LlamaBackbone`` -> llama base
model, ``LlamaCausalLM`` -> ``LlamaForCausalLM``); ``INVERSES`` turns the backbone's ``get_config`` into
transformers' keys. The result is accepted only when the family's forward translator, given it, gives
back the model's own constructor arguments; every argument it does not produce must sit at the
class's default. So an option transformers cannot express is refused, never dropped.

Light: no framework is imported at module level.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

from porter.errors import PorterError, UnsupportedModelError
from porter.checks.model_files import read_json
from porter.zoo.keras_hub.families import FAMILIES, Family

# keras-hub config keys that are Keras' own bookkeeping, or change training only (dropout)
_NOT_MODEL = ("name", "trainable", "dtype")


def _tied(cfg: dict, backbone, default: bool = True) -> bool:
    # the attribute first: keras-hub's (0.30 to 0.32) LlamaBackbone.get_config leaves tie_word_embeddings out
    return bool(getattr(backbone, "tie_word_embeddings", cfg.get("tie_word_embeddings", default)))


def _gpt2(cfg, head, backbone=None):
    return dict(vocab_size=cfg["vocabulary_size"], n_layer=cfg["num_layers"], n_head=cfg["num_heads"],
                n_embd=cfg["hidden_dim"], n_inner=cfg["intermediate_dim"], n_positions=cfg["max_sequence_length"],
                activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
                resid_pdrop=cfg.get("dropout", 0.0), embd_pdrop=cfg.get("dropout", 0.0), attn_pdrop=cfg.get("dropout", 0.0))


def _decoder(cfg):
    return dict(vocab_size=cfg["vocabulary_size"], num_hidden_layers=cfg["num_layers"],
                num_attention_heads=cfg["num_query_heads"], num_key_value_heads=cfg["num_key_value_heads"],
                hidden_size=cfg["hidden_dim"], intermediate_size=cfg["intermediate_dim"],
                rms_norm_eps=cfg["layer_norm_epsilon"], hidden_act="silu", attention_dropout=cfg.get("dropout", 0.0))


def _rope(theta, factor=1.0):
    if factor in (None, 1.0):
        return {"rope_type": "default", "rope_theta": float(theta)}
    return {"rope_type": "linear", "rope_theta": float(theta), "factor": float(factor)}


def _llama(cfg, head, backbone=None):
    rope = _rope(cfg["rope_max_wavelength"])
    if cfg.get("rope_frequency_adjustment_factor") is not None:
        rope = {"rope_type": "llama3", "rope_theta": float(cfg["rope_max_wavelength"]),
                "factor": float(cfg["rope_frequency_adjustment_factor"]), "low_freq_factor": float(cfg["rope_low_freq_factor"]),
                "high_freq_factor": float(cfg["rope_high_freq_factor"]),
                "original_max_position_embeddings": int(cfg["rope_pretraining_sequence_length"])}
    return dict(_decoder(cfg), rope_parameters=rope, attention_bias=False, mlp_bias=False,
                tie_word_embeddings=_tied(cfg, backbone, False))


def _mistral(cfg, head, backbone=None):
    head_dim = cfg.get("head_dim") or cfg["hidden_dim"] // cfg["num_query_heads"]
    # keras-hub's Mistral keeps its own LM head (reverse embedding): untied
    return dict(_decoder(cfg), rope_parameters=_rope(cfg["rope_max_wavelength"], cfg.get("rope_scaling_factor")),
                head_dim=head_dim, sliding_window=cfg.get("sliding_window"), tie_word_embeddings=False)


def _qwen2(cfg, head, backbone=None):
    return dict(_decoder(cfg), rope_parameters=_rope(cfg["rope_max_wavelength"], cfg.get("rope_scaling_factor")),
                use_sliding_window=False, tie_word_embeddings=_tied(cfg, backbone))


def _qwen3(cfg, head, backbone=None):
    from porter.zoo.keras_hub.fixes import Qwen3Backbone

    if backbone is not None and not isinstance(backbone, Qwen3Backbone) and cfg["layer_norm_epsilon"] != 1e-5:
        # keras-hub (0.30 to 0.32) builds the per-head q/k norms with epsilon 1e-5 whatever layer_norm_epsilon says;
        # transformers' Qwen3 uses rms_norm_eps for every norm: no config gives both (a ~1e-3 difference)
        raise UnsupportedModelError(
            f"keras-hub's Qwen3Backbone layer_norm_epsilon={cfg['layer_norm_epsilon']!r}: keras-hub (0.30 to 0.32) uses 1e-5 in "
            "its q/k norms regardless, transformers' Qwen3 one rms_norm_eps everywhere, so no transformers config "
            "reproduces this model", hint="a model built with layer_norm_epsilon=1e-5 (or written by porter) converts")
    return dict(_decoder(cfg), rope_parameters=_rope(cfg["rope_max_wavelength"], cfg.get("rope_scaling_factor")),
                head_dim=cfg["head_dim"], attention_bias=False, use_sliding_window=False, tie_word_embeddings=_tied(cfg, backbone))


def _gemma(cfg, head, backbone=None):
    out = dict(_decoder(cfg), head_dim=cfg["head_dim"], intermediate_size=cfg["intermediate_dim"] // 2,
               hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh", attention_bias=False,
               rope_parameters=_rope(10000.0), tie_word_embeddings=True)
    return out


def _distilbert(cfg, head, backbone=None):
    return dict(vocab_size=cfg["vocabulary_size"], n_layers=cfg["num_layers"], n_heads=cfg["num_heads"], dim=cfg["hidden_dim"],
                hidden_dim=cfg["intermediate_dim"], max_position_embeddings=cfg["max_sequence_length"], activation="gelu",
                sinusoidal_pos_embds=False, dropout=cfg.get("dropout", 0.0), attention_dropout=cfg.get("dropout", 0.0))


def _bert_like(cfg, act):
    return dict(num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"], hidden_size=cfg["hidden_dim"],
                embedding_size=cfg["embedding_dim"], intermediate_size=cfg["intermediate_dim"],
                max_position_embeddings=cfg["max_sequence_length"], type_vocab_size=cfg["num_segments"], hidden_act=act,
                layer_norm_eps=1e-12, position_embedding_type="absolute", hidden_dropout_prob=cfg.get("dropout", 0.0),
                attention_probs_dropout_prob=cfg.get("dropout", 0.0))


def _albert(cfg, head, backbone=None):
    return dict(_bert_like(cfg, "gelu_new"), vocab_size=cfg["vocabulary_size"], num_hidden_groups=cfg["num_groups"],
                inner_group_num=cfg["num_inner_repetitions"])


def _electra(cfg, head, backbone=None):
    # keras-hub's own ElectraBackbone hard-codes the tanh GELU; porter's subclass names its activation
    return dict(_bert_like(cfg, cfg.get("feedforward_activation", "gelu_new")), vocab_size=cfg["vocab_size"])


def _mlp_ratio(cfg) -> int:
    if cfg["intermediate_dim"] % cfg["hidden_dim"]:  # transformers 5's Dinov2Config takes an integer ratio
        raise UnsupportedModelError(f"keras-hub's DINOV2Backbone intermediate_dim={cfg['intermediate_dim']}: transformers' "
                                    f"Dinov2 config gives it as an integer mlp_ratio x hidden_dim ({cfg['hidden_dim']})")
    return cfg["intermediate_dim"] // cfg["hidden_dim"]


def _dinov2(cfg, head, backbone=None):
    height, width, channels = cfg["image_shape"]
    if height != width:
        raise UnsupportedModelError(f"keras-hub's DINOV2Backbone image_shape={cfg['image_shape']!r}: transformers' "
                                    "Dinov2 config has one square image_size")
    return dict(patch_size=cfg["patch_size"], num_hidden_layers=cfg["num_layers"], hidden_size=cfg["hidden_dim"],
                num_attention_heads=cfg["num_heads"], mlp_ratio=_mlp_ratio(cfg),
                layerscale_value=float(cfg["layer_scale_init_value"]), image_size=height, num_channels=channels,
                hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True, use_swiglu_ffn=False, apply_layernorm=True)


def _square(cfg, key, backbone):
    value = cfg[key]
    sides = list(value[:2]) if isinstance(value, (list, tuple)) else [value, value]
    if sides[0] != sides[1]:
        raise UnsupportedModelError(f"keras-hub's {type(backbone).__name__} {key}={value!r}: transformers' config has one "
                                    "square size", hint="only square images and patches convert")
    return int(sides[0])


def _vision_transformer(cfg, head, backbone, what):
    if head is None:  # transformers' ViTModel/DeiTModel always build a pooler keras-hub has no weights for
        raise UnsupportedModelError(
            f"keras-hub's {type(backbone).__name__} alone: transformers' {what}Model always has a pooler (dense + tanh) "
            f"that keras-hub's backbone lacks, so porter writes {what}ForImageClassification only",
            hint=f"save the {what}ImageClassifier built on this backbone")
    height, width, channels = cfg["image_shape"]
    return dict(image_size=_square({"image_shape": (height, width)}, "image_shape", backbone),
                patch_size=_square(cfg, "patch_size", backbone), num_channels=channels,
                num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"], hidden_size=cfg["hidden_dim"],
                layer_norm_eps=float(cfg["layer_norm_epsilon"]), qkv_bias=bool(cfg.get("use_mha_bias", True)),
                hidden_act="gelu", hidden_dropout_prob=cfg.get("dropout_rate", 0.0),
                attention_probs_dropout_prob=cfg.get("attention_dropout", 0.0))


def _vit(cfg, head, backbone=None):
    return dict(_vision_transformer(cfg, head, backbone, "ViT"), intermediate_size=cfg["mlp_dim"])


def _deit(cfg, head, backbone=None):  # the distillation token: DeiTForImageClassification always has one
    return dict(_vision_transformer(cfg, head, backbone, "DeiT"), intermediate_size=cfg["intermediate_dim"])


def _xlm_roberta(cfg, head, backbone=None):
    """``cfg`` as porter's XLMRobertaBackbone holds it (keras-hub's own is read so by plain.porter_config)."""
    return dict(vocab_size=cfg["vocabulary_size"], num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
                hidden_size=cfg["hidden_dim"], intermediate_size=cfg["intermediate_dim"],
                max_position_embeddings=cfg["max_sequence_length"], pad_token_id=cfg["pad_token_id"],
                type_vocab_size=cfg["type_vocab_size"], layer_norm_eps=float(cfg["layer_norm_epsilon"]), hidden_act="gelu",
                hidden_dropout_prob=cfg.get("dropout", 0.0), attention_probs_dropout_prob=cfg.get("dropout", 0.0))


INVERSES = {"vit": _vit, "deit": _deit, "xlm-roberta": _xlm_roberta, "distilbert": _distilbert, "albert": _albert, "electra": _electra, "dinov2": _dinov2, "gpt2": _gpt2, "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma": _gemma}
"""model_type -> keras-hub backbone config -> transformers config keys (the forward translators'
inverses). A family of the table without one here is refused, named."""


# ------------------------------------------------------------------ recognise
def family_of(model, origin) -> tuple[Family, str | None]:
    """(family, transformers head class or None) for a keras-hub model, by its exact class: the table's
    names resolved in keras_hub.models (keras-hub aliases some: Qwen2CausalLM is QwenCausalLM), and
    porter's registered corrections of them."""
    from porter.zoo.keras_hub.entry import _keras_hub
    from porter.zoo.keras_hub.fixes import BACKBONES

    models = _keras_hub().models
    for fam in FAMILIES.values():
        if type(model) in (getattr(models, fam.backbone, None), BACKBONES.get(fam.backbone)):
            return fam, None
        for hf_head, task in fam.task.items():
            if type(model) is getattr(models, task, None):
                return fam, hf_head
    known = sorted({fam.backbone for fam in FAMILIES.values()} | {t for fam in FAMILIES.values() for t in fam.task.values()})
    raise UnsupportedModelError(
        f"{origin} holds keras-hub's {type(model).__name__}, a family porter has no rules for; porter converts keras-hub "
        f"{', '.join(known)} (families {', '.join(FAMILIES)})",
        hint="models outside these families have no direct route to transformers: save one of these classes",
    )


def is_keras_hub(model) -> bool:
    return any(c.__module__.startswith("keras_hub") for c in type(model).__mro__)


def keep_lm_head(model, origin):
    """A backbone holding an untied LM head (keras-hub's reverse embedding, a trained weight transformers'
    base model has no place for: LlamaBackbone's default, every MistralBackbone) is converted as its
    family's causal LM, so the head is kept, not dropped; verification then compares logits."""
    fam, head = family_of(model, origin)
    embedding = getattr(model, "token_embedding", None)
    causal = [t for h, t in fam.task.items() if h.endswith("ForCausalLM")]
    if head or not causal or embedding is None or getattr(embedding, "tie_weights", True):
        return model
    from porter.zoo.keras_hub.entry import _keras_hub

    return getattr(_keras_hub().models, causal[0])(backbone=model, preprocessor=None)


def user_model(model, origin):
    """(model to convert, its transformers config) for a user's keras-hub model."""
    model = keep_lm_head(model, origin)
    return model, hf_config(model, origin)


# ------------------------------------------------------------------ the config
def hf_config(model, origin) -> dict:
    """The transformers config.json (architectures named) for a keras-hub backbone or task model."""
    fam, head = family_of(model, origin)
    inverse = INVERSES.get(fam.model_type)
    if inverse is None:
        raise UnsupportedModelError(
            f"{origin} holds keras-hub's {type(model).__name__}: porter's {fam.model_type} family converts "
            f"transformers -> keras-hub, but does not yet translate keras-hub's config back "
            f"(it does for {', '.join(INVERSES)})",
            hint="convert from the transformers checkpoint instead, or save one of those families",
        )
    from porter.zoo.keras_hub.plain import plain_class, porter_config

    backbone = getattr(model, "backbone", model)
    cfg, backbone_cls = porter_config(backbone, backbone.get_config())
    try:
        inverse_config = inverse(cfg, head, backbone)
    except PorterError as exc:
        raise type(exc)(f"{origin}: {exc.message}", hint=exc.hint) from None
    config = dict(inverse_config, model_type=fam.model_type, architectures=[head or fam.base])
    if plain_class(backbone) == "XLMRobertaBackbone":
        config["porter_pooler_placeholder"] = True  # zeros: keras-hub's XLM-R has no pooler (plain.py)
    task = model.get_config() if head else {}
    if task.get("num_classes"):
        config["num_labels"] = int(task["num_classes"])
    check_round_trip(fam, head, config, cfg, backbone_cls, origin)
    if head:
        check_task_round_trip(fam, head, config, model, origin)
    return config


def check_round_trip(fam: Family, head, config: dict, keras_config: dict, backbone_cls, origin) -> None:
    """The family's forward translator, given ``config``, must give back the model's own arguments;
    every argument it leaves out must be at the class's default. All differences listed at once."""
    from porter.zoo.keras_hub.entry import full_config

    try:
        full = full_config(config)
    except Exception as exc:  # transformers' own config validation
        raise UnsupportedModelError(f"{origin}: keras-hub's {backbone_cls.__name__} written back as a transformers "
                                    f"{fam.model_type} config is refused by transformers: {exc}") from None
    try:
        forward = fam.translate(full, head)
    except PorterError as exc:
        raise UnsupportedModelError(f"{origin}: keras-hub's {backbone_cls.__name__} written back as transformers "
                                    f"config is refused by porter's {fam.model_type} family: {exc.message}") from None
    defaults = {k: p.default for k, p in inspect.signature(backbone_cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    problems = []
    for key, value in keras_config.items():
        if key in _NOT_MODEL or "dropout" in key or (key == "tie_word_embeddings" and not head):
            continue  # dropout: training only; a base model has no LM head to tie
        if value is None and key in _DERIVED:
            value = _DERIVED[key](keras_config)
        want = forward.get(key, defaults.get(key, _NO_DEFAULT))
        if not _same(value, want):
            problems.append(f"{key}={value!r} (transformers' {fam.model_type} config gives {want!r})"
                            if want is not _NO_DEFAULT else f"{key}={value!r} has no transformers counterpart here")
    if problems:
        raise UnsupportedModelError(
            f"{origin}: keras-hub's {backbone_cls.__name__} has options transformers' {fam.base} cannot express",
            problems=problems, hint="set them to keras-hub's defaults, or keep the model in Keras")


def check_task_round_trip(fam: Family, head: str, config: dict, model, origin) -> None:
    """A task model's own arguments (num_classes, a classifier's activation...) are those of the task model
    porter builds for ``config`` (families.task_kwargs) on the same backbone (its get_config resolves
    defaults such as hidden_dim=None the same way)."""
    from porter.zoo.keras_hub.entry import full_config
    from porter.zoo.keras_hub.families import task_kwargs

    task_cls = type(model)
    built = task_cls(backbone=model.backbone, preprocessor=None, **task_kwargs(full_config(config), head)).get_config()
    problems = [f"{key}={value!r} (porter builds {built.get(key)!r})" for key, value in model.get_config().items()
                if key not in (*_NOT_MODEL, "backbone", "preprocessor") and "dropout" not in key
                and not _same(value, built.get(key, _NO_DEFAULT))]
    if problems:
        raise UnsupportedModelError(f"{origin}: keras-hub's {task_cls.__name__} has options transformers' {head} "
                                    "cannot express", problems=problems, hint="set them to keras-hub's defaults")


_NO_DEFAULT = object()
# keras-hub arguments whose None means a value derived from the others
_DERIVED = {"head_dim": lambda c: c["hidden_dim"] // c["num_query_heads"]}


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


# ------------------------------------------------------------------ loading
def keras_hub_class_of_file(path: Path) -> str | None:
    """The keras-hub class a .keras file's config names (no framework imported), else None."""
    import zipfile

    from porter.checks.keras_archive import archive_config

    if not zipfile.is_zipfile(path):  # a legacy .h5
        return None
    # size and depth checked: a hostile config is refused here, where the route is chosen, not read whole
    return _keras_hub_class(archive_config(path))


def describe_source(artifact) -> str | None:
    """`porter inspect`'s line for a keras-hub .keras file or preset folder (None for anything else)."""
    path = Path(artifact.path)
    if artifact.format == "keras":
        name = keras_hub_class_of_file(path)
    elif artifact.format == "keras_hub_preset":
        spec = path / ("task.json" if (path / "task.json").is_file() else "config.json")
        name = _keras_hub_class(read_json(spec, path))
    else:
        return None
    if name is None:
        return None
    fam = next((f for f in FAMILIES.values() if name in (f.backbone, *f.task.values())), None)
    family = f"family {fam.model_type}; mapping: mappings/{fam.mapping_file}.toml" if fam else "family checked when loaded"
    return f"keras-hub {name} ({family}); route: direct, --from tf --to torch writes an HF folder"


def _keras_hub_class(top) -> str | None:
    if isinstance(top, dict) and str(top.get("module", "")).startswith("keras_hub"):
        return str(top.get("class_name"))
    return None


def is_preset_folder(path: Path, names: set) -> bool:
    """A keras-hub ``save_to_preset`` folder: config.json naming a keras_hub class + model.weights.h5."""
    if not {"config.json", "metadata.json"} <= names or not names & {"model.weights.h5", "model.weights.json"}:
        return False
    return _keras_hub_class(read_json(path / "config.json", path)) is not None  # size and depth checked


def load_preset(path: Path):
    """A keras-hub preset folder, read locally: the task (task.json) if saved, else the backbone; classes
    rebuilt with Keras' safe_mode deserialiser (never the network, never code), weights from the h5 files."""
    from porter.zoo.keras_hub.entry import _keras_hub

    _keras_hub()  # registers keras-hub's classes
    import porter.zoo.keras_hub.fixes  # noqa: F401  porter's registered subclasses
    import keras

    from porter.checks.keras_archive import check_preset

    spec_file = path / ("task.json" if (path / "task.json").is_file() else "config.json")
    if _keras_hub_class(read_json(spec_file, path)) is None:
        raise PorterError(f"{spec_file} does not name a keras_hub class", hint="save the model with keras-hub's save_to_preset")
    if (path / "model.weights.json").is_file() and not (path / "model.weights.h5").is_file():
        raise PorterError(f"{path}: sharded keras-hub weights (model.weights.json) are not read yet",
                          hint="save the preset with max_shard_size=None (one model.weights.h5)")
    spec = check_preset(path)  # before Keras builds (allocates) anything: what the files declare, checked
    def load(spec):
        model = keras.saving.deserialize_keras_object(spec, safe_mode=True)
        backbone = getattr(model, "backbone", model)
        backbone.load_weights(str(path / "model.weights.h5"))
        if model is not backbone and (path / "task.weights.h5").is_file():
            model.load_task_weights(str(path / "task.weights.h5"))
        return model

    return _load_tied_llama_too(load, spec, path, "a keras-hub preset")


def load_keras_file(path: Path):
    """A .keras file holding a keras-hub model (safe_mode), a tied Llama included (see below)."""
    import keras

    from porter.checks.keras_archive import check_keras_archive

    check_keras_archive(path)  # (once per file) before Keras builds or unpacks anything

    def load(spec):
        if spec is None:
            return keras.saving.load_model(str(path), safe_mode=True, compile=False)
        model = keras.saving.deserialize_keras_object(spec, safe_mode=True)
        model.load_weights(str(path))
        return model

    return _load_tied_llama_too(load, None, path, "a .keras file")


def _load_tied_llama_too(load, spec, path: Path, what: str):
    """keras-hub's (0.30 to 0.32) LlamaBackbone.get_config leaves out tie_word_embeddings, so a tied Llama's file
    (no separate LM head stored) does not reload in keras-hub itself; loaded again tied when that is why."""
    try:
        return load(spec)
    except Exception as exc:  # Keras raises plain ValueErrors for files that do not fit
        first = exc
    if spec is None:
        from porter.checks.keras_archive import archive_config

        spec = archive_config(path)  # size and depth checked
    node = _llama_backbone_node(spec)
    if node is not None and "tie_word_embeddings" not in node["config"] and "reverse_embeddings" in str(first):
        node["config"]["tie_word_embeddings"] = True
        try:
            return load(spec)
        except Exception:
            pass
    raise PorterError(f"{path} could not be loaded as {what} (safe_mode=True): {first}") from None


def _llama_backbone_node(spec):
    if not isinstance(spec, dict):
        return None
    if spec.get("class_name") == "LlamaBackbone" and str(spec.get("module", "")).startswith("keras_hub"):
        return spec
    return _llama_backbone_node((spec.get("config") or {}).get("backbone"))

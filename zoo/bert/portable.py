"""BERT/RoBERTa as a Keras Functional model of keras and keras-hub layers only: the ``model.keras`` porter writes,
which loads with ``keras.saving.load_model`` (safe_mode) wherever keras + keras_hub are installed, no porter.

keras-hub's own BertBackbone does not reproduce transformers' BERT: it hard-codes the tanh GELU (transformers'
"gelu" is the exact one, ~1e-3 apart in hidden states) and layer_norm_eps 1e-12, and its RobertaBackbone has no
pooler and no token-type row. Its layers do reproduce both: keras-hub's TransformerEncoder (post-norm, the
activation and epsilon given), keras' Embedding, LayerNormalization and Dense, and the position ids computed by
keras ops in the graph (RoBERTa counts them from padding_idx + 1 over non-pad tokens), all serialisable.

porter's own Keras model (keras_model.py, TFBertModel's variable names, which the rules in mappings/bert.toml and
legacy tf_model.h5 files use) stays the model porter converts and exports; ``to_portable`` copies its weights
into this form for saving, ``from_portable`` copies them back when porter reads a model.keras. One table of
variable pairs (``_pairs``) serves both directions; q/k/v and the attention output are the same numbers in
keras-hub's (heads, head_dim) layout, a reshape.
"""

from __future__ import annotations

from porter.errors import PorterError

_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_PLAIN = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "tanh": "tanh"}


def _activation(name: str):
    if name in _TANH_GELU:
        from keras_hub.src.utils.keras_utils import gelu_approximate  # registered: keras_hub>gelu_approximate

        return gelu_approximate
    if name in _PLAIN:
        return _PLAIN[name]
    raise PorterError(f"config.json hidden_act={name!r} has no serialisable Keras activation")


def build(config: dict, dtype: str = "float32"):
    """The Functional model for ``config`` (transformers' BERT/RoBERTa config, defaults filled), random weights."""
    import keras
    import keras_hub

    ops = keras.ops
    hidden, eps = config["hidden_size"], float(config.get("layer_norm_eps", 1e-12))
    names = ("input_ids", "attention_mask", "token_type_ids")
    ids, mask, types = (keras.Input((None,), dtype="int32", name=n) for n in names)
    if config.get("model_type") == "roberta":  # positions from padding_idx + 1; padding gets padding_idx
        pad = int(config.get("pad_token_id", 1))
        not_pad = ops.cast(ops.not_equal(ids, pad), "int32")
        positions = ops.cumsum(not_pad, axis=1) * not_pad + pad
    else:
        positions = ops.cumsum(ops.ones_like(ids), axis=1) - 1

    def table(rows, name):
        return keras.layers.Embedding(rows, hidden, name=name, dtype=dtype)

    x = keras.layers.Add(name="embeddings_add", dtype=dtype)([
        table(config["vocab_size"], "word_embeddings")(ids),
        table(config["max_position_embeddings"], "position_embeddings")(positions),
        table(config["type_vocab_size"], "token_type_embeddings")(types)])
    x = keras.layers.LayerNormalization(epsilon=eps, name="embeddings_layer_norm", dtype=dtype)(x)
    for i in range(config["num_hidden_layers"]):
        x = keras_hub.layers.TransformerEncoder(
            config["intermediate_size"], config["num_attention_heads"], dropout=0.0,
            activation=_activation(config.get("hidden_act", "gelu")), layer_norm_epsilon=eps,
            name=f"transformer_layer_{i}", dtype=dtype)(x, padding_mask=mask)
    outputs = {"last_hidden_state": x}
    if config.get("add_pooling_layer", True):
        outputs["pooler_output"] = keras.layers.Dense(hidden, activation="tanh", name="pooler_dense", dtype=dtype)(x[:, 0, :])
    return keras.Model(dict(zip(names, (ids, mask, types))), outputs, name=config.get("model_type", "bert"))


def _pairs(porter_model, portable) -> list:
    """(porter's variable, the Functional's variable) for every weight."""
    from porter.zoo.bert.keras_model import variables_by_name

    ours = variables_by_name(porter_model)
    root = porter_model.main.name
    layer = portable.get_layer
    pairs = [("embeddings/word_embeddings/weight", layer("word_embeddings").embeddings),
             ("embeddings/position_embeddings/embeddings", layer("position_embeddings").embeddings),
             ("embeddings/token_type_embeddings/embeddings", layer("token_type_embeddings").embeddings),
             ("embeddings/LayerNorm/gamma", layer("embeddings_layer_norm").gamma),
             ("embeddings/LayerNorm/beta", layer("embeddings_layer_norm").beta)]
    for i in range(porter_model.hf_config["num_hidden_layers"]):
        enc = layer(f"transformer_layer_{i}")
        att = enc._self_attention_layer
        at = f"encoder/layer_._{i}/"
        for name, dense in (("query", att._query_dense), ("key", att._key_dense), ("value", att._value_dense)):
            pairs += [(f"{at}attention/self/{name}/kernel", dense.kernel), (f"{at}attention/self/{name}/bias", dense.bias)]
        pairs += [(f"{at}attention/output/dense/kernel", att._output_dense.kernel),
                  (f"{at}attention/output/dense/bias", att._output_dense.bias),
                  (f"{at}attention/output/LayerNorm/gamma", enc._self_attention_layer_norm.gamma),
                  (f"{at}attention/output/LayerNorm/beta", enc._self_attention_layer_norm.beta),
                  (f"{at}intermediate/dense/kernel", enc._feedforward_intermediate_dense.kernel),
                  (f"{at}intermediate/dense/bias", enc._feedforward_intermediate_dense.bias),
                  (f"{at}output/dense/kernel", enc._feedforward_output_dense.kernel),
                  (f"{at}output/dense/bias", enc._feedforward_output_dense.bias),
                  (f"{at}output/LayerNorm/gamma", enc._feedforward_layer_norm.gamma),
                  (f"{at}output/LayerNorm/beta", enc._feedforward_layer_norm.beta)]
    if porter_model.main.pooler is not None:
        dense = layer("pooler_dense")
        pairs += [("pooler/dense/kernel", dense.kernel), ("pooler/dense/bias", dense.bias)]
    found = [(ours[f"{root}/{name}"], v) for name, v in pairs]
    if len(found) != len(ours) or len(found) != len(portable.weights):
        raise PorterError(f"porter's {root} model and its portable form hold different weights "
                          f"({len(ours)} and {len(portable.weights)}, {len(found)} paired)")
    return found


def _copy(pairs, forward: bool) -> None:
    import numpy as np

    for ours, theirs in pairs:
        src, dst = (ours, theirs) if forward else (theirs, ours)
        dst.assign(np.reshape(np.asarray(src.numpy()), tuple(dst.shape)))


def to_portable(porter_model):
    """porter's Keras BERT/RoBERTa -> the Functional model holding the same weights (its dtype policy too)."""
    config = porter_model.hf_config
    portable = build(config, dtype=porter_model.dtype_policy.name)
    _copy(_pairs(porter_model, portable), forward=True)
    return portable


def _check_sizes(portable, config: dict, origin: str) -> None:
    """The config's sizes against the weights the file holds, before porter's model is built from the config (a
    declared size is not trusted: a vocab_size of 10**9 would be allocated)."""
    layer = portable.get_layer
    encoders = [lay for lay in portable.layers if lay.name.startswith("transformer_layer_")]
    held = {"vocab_size": layer("word_embeddings").input_dim, "max_position_embeddings": layer("position_embeddings").input_dim,
            "type_vocab_size": layer("token_type_embeddings").input_dim, "hidden_size": layer("word_embeddings").output_dim,
            "num_hidden_layers": len(encoders),
            "intermediate_size": encoders[0].intermediate_dim if encoders else config.get("intermediate_size"),
            "num_attention_heads": encoders[0].num_heads if encoders else config.get("num_attention_heads")}
    problems = [f"{k}: {config.get(k)!r} in the config, {v} in the weights" for k, v in held.items() if config.get(k) != v]
    if problems:
        raise PorterError(f"{origin}: its transformers config does not describe the weights it holds", problems=problems,
                          hint="put the config.json porter wrote for this model.keras beside it")


def from_portable(portable, config: dict, origin: str = "model.keras"):
    """A model.keras porter wrote (the Functional model) -> porter's Keras model, for the rules and the exporters."""
    from porter.zoo.bert.keras_model import build as build_porter

    _check_sizes(portable, config, origin)
    weights_dtype = portable.weights[0].dtype if portable.weights else "float32"
    model = build_porter(dict(config, _porter_dtype=str(getattr(weights_dtype, "name", weights_dtype))), zero_init=True)
    _copy(_pairs(model, portable), forward=False)
    return model


def is_portable(model) -> bool:
    """Whether a loaded Keras model is the Functional form this module writes (by its layers, not its class)."""
    import keras

    if not isinstance(model, keras.Model) or type(model).__name__ != "Functional":
        return False
    names = {layer.name for layer in getattr(model, "layers", [])}
    return {"word_embeddings", "position_embeddings", "token_type_embeddings", "embeddings_layer_norm"} <= names

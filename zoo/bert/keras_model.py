"""porter's Keras 3 BERT/RoBERTa, functionally identical to transformers' torch BertModel 5.x.

Layer names reproduce transformers 4.x TFBertModel, so variables are named
``bert/encoder/layer_._0/attention/self/query/kernel`` ... as in a legacy
``tf_model.h5``, and the rules in mappings/bert.toml target those names.
"""

from __future__ import annotations

import json
import math

from porter.process.frameworks import keras as _keras

keras = _keras()
ops = keras.ops

_ACTIVATIONS = {
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_fast": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
    "tanh": keras.activations.tanh,
}


# torch.finfo(dtype).min, as transformers masks padded keys
_LOWEST = {"float64": -1.7976931348623157e308, "float32": -3.4028234663852886e38, "float16": -65504.0, "bfloat16": -3.3895313892515355e38}


def activation(name: str):
    from porter.errors import UnsupportedModelError

    if name not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"config.json hidden_act={name!r} is not supported by porter's Keras BERT",
            hint=f"supported: {', '.join(sorted(_ACTIVATIONS))}",
        )
    return _ACTIVATIONS[name]


def _init(config):
    # Models built only to receive converted weights skip random init (it costs seconds on bert-base).
    if config.get("_porter_zero_init"):
        return "zeros"
    return keras.initializers.TruncatedNormal(stddev=config.get("initializer_range", 0.02))


def _dense(units, name, config):
    return keras.layers.Dense(units, name=name, kernel_initializer=_init(config))


def _layer_norm(name, config):
    return keras.layers.LayerNormalization(epsilon=config.get("layer_norm_eps", 1e-12), name=name)


@keras.saving.register_keras_serializable(package="porter")
class Table(keras.layers.Layer):
    """An embedding table whose variable name is chosen (TFBertModel used 'weight' and 'embeddings')."""

    def __init__(self, rows, dim, var_name="embeddings", initializer="zeros", **kw):
        super().__init__(**kw)
        self.rows, self.dim, self.var_name, self.initializer = rows, dim, var_name, initializer

    def build(self, input_shape=None):
        self.table = self.add_weight(name=self.var_name, shape=(self.rows, self.dim), initializer=self.initializer)

    def call(self, ids):
        return ops.take(self.table, ids, axis=0)

    def get_config(self):
        init = keras.initializers.serialize(keras.initializers.get(self.initializer))
        return {**super().get_config(), "rows": self.rows, "dim": self.dim, "var_name": self.var_name, "initializer": init}


class Embeddings(keras.layers.Layer):
    def __init__(self, config, **kw):
        super().__init__(name="embeddings", **kw)
        hidden, init = config["hidden_size"], _init(config)
        self.is_roberta = config.get("model_type") == "roberta"
        self.padding_idx = config.get("pad_token_id", 1)
        self.word_embeddings = Table(config["vocab_size"], hidden, "weight", init, name="word_embeddings")
        self.position_embeddings = Table(config["max_position_embeddings"], hidden, "embeddings", init, name="position_embeddings")
        self.token_type_embeddings = Table(config["type_vocab_size"], hidden, "embeddings", init, name="token_type_embeddings")
        self.LayerNorm = _layer_norm("LayerNorm", config)
        self.hidden = hidden

    def build(self, input_shape=None):
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            table.build()
        self.LayerNorm.build((None, None, self.hidden))

    def call(self, input_ids, token_type_ids):
        if self.is_roberta:
            # RoBERTa counts positions from padding_idx + 1 and gives padding the padding position.
            not_pad = ops.cast(ops.not_equal(input_ids, self.padding_idx), "int32")
            position_ids = ops.cumsum(not_pad, axis=1) * not_pad + self.padding_idx
        else:
            position_ids = ops.expand_dims(ops.arange(ops.shape(input_ids)[1], dtype="int32"), 0)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.LayerNorm(x)


class SelfAttention(keras.layers.Layer):
    def __init__(self, config, **kw):
        super().__init__(name="self", **kw)
        self.heads = config["num_attention_heads"]
        self.head_dim = config["hidden_size"] // self.heads
        self.query = _dense(config["hidden_size"], "query", config)
        self.key = _dense(config["hidden_size"], "key", config)
        self.value = _dense(config["hidden_size"], "value", config)

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)

    def call(self, x, additive_mask):
        # x is (batch * seq, hidden); the mask (batch, 1, 1, seq) gives batch and seq back
        b, s = ops.shape(additive_mask)[0], ops.shape(additive_mask)[3]

        def split(t):
            return ops.transpose(ops.reshape(t, (b, s, self.heads, self.head_dim)), (0, 2, 1, 3))

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / math.sqrt(self.head_dim))
        probs = ops.softmax(scores + additive_mask, axis=-1)
        ctx = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))
        return ops.reshape(ctx, (-1, self.heads * self.head_dim))


class DenseLayerNorm(keras.layers.Layer):
    """Dense, then residual add and LayerNorm: 'attention/output' and 'output' in TFBertModel."""

    def __init__(self, config, name, in_dim, **kw):
        super().__init__(name=name, **kw)
        self.in_dim, self.hidden = in_dim, config["hidden_size"]
        self.dense = _dense(config["hidden_size"], "dense", config)
        self.LayerNorm = _layer_norm("LayerNorm", config)

    def build(self, input_shape=None):
        self.dense.build((None, self.in_dim))
        self.LayerNorm.build((None, self.hidden))

    def call(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class Attention(keras.layers.Layer):
    def __init__(self, config, **kw):
        super().__init__(name="attention", **kw)
        self.self_attention = SelfAttention(config)
        self.dense_output = DenseLayerNorm(config, "output", config["hidden_size"])

    def build(self, input_shape):
        self.self_attention.build(input_shape)
        self.dense_output.build()

    def call(self, x, additive_mask):
        return self.dense_output(self.self_attention(x, additive_mask), x)


class Intermediate(keras.layers.Layer):
    def __init__(self, config, **kw):
        super().__init__(name="intermediate", **kw)
        self.dense = _dense(config["intermediate_size"], "dense", config)
        self.act = activation(config.get("hidden_act", "gelu"))

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.act(self.dense(x))


class Layer(keras.layers.Layer):
    def __init__(self, config, index, **kw):
        super().__init__(name=f"layer_._{index}", **kw)
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.bert_output = DenseLayerNorm(config, "output", config["intermediate_size"])

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.intermediate.build(input_shape)
        self.bert_output.build()

    def call(self, x, additive_mask):
        x = self.attention(x, additive_mask)
        return self.bert_output(self.intermediate(x), x)


class Encoder(keras.layers.Layer):
    def __init__(self, config, **kw):
        super().__init__(name="encoder", **kw)
        self.layers_ = [Layer(config, i) for i in range(config["num_hidden_layers"])]

    def build(self, input_shape):
        for layer in self.layers_:
            layer.build(input_shape)

    def call(self, x, additive_mask):
        for layer in self.layers_:
            x = layer(x, additive_mask)
        return x


class Pooler(keras.layers.Layer):
    def __init__(self, config, **kw):
        super().__init__(name="pooler", **kw)
        self.dense = keras.layers.Dense(config["hidden_size"], activation="tanh", name="dense", kernel_initializer=_init(config))

    def build(self, input_shape):
        self.dense.build((None, input_shape[-1]))

    def call(self, x):
        return self.dense(x[:, 0])


class MainLayer(keras.layers.Layer):
    def __init__(self, config, **kw):
        super().__init__(name=config.get("model_type", "bert"), **kw)
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if config.get("add_pooling_layer", True) else None
        self.hidden = config["hidden_size"]

    def build(self, input_shape=None):
        # Explicit builds: letting Keras infer shapes by tracing every layer costs seconds on bert-base.
        self.embeddings.build()
        self.encoder.build((None, self.hidden))  # (batch * seq, hidden): see call
        if self.pooler is not None:
            self.pooler.build((None, None, self.hidden))

    def call(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        # (batch, 1, 1, keys): 0 where attended, the dtype's lowest value where padded, as transformers does.
        # The lowest value of the compute dtype: fp32's would be -inf in fp16, and 0 * -inf is NaN.
        mask = ops.cast(attention_mask[:, None, None, :], x.dtype)
        additive_mask = (1.0 - mask) * _LOWEST[keras.backend.standardize_dtype(x.dtype)]
        # The encoder runs on (batch * seq, hidden): a Dense on a 3-d input is tf.tensordot, a dozen shape ops
        # around each MatMul (3.7k graph nodes for bert-base, against 1.3k this way); the same MatMul either way.
        shape = ops.shape(x)
        x = ops.reshape(self.encoder(ops.reshape(x, (-1, self.hidden)), additive_mask), shape)
        outputs = {"last_hidden_state": x}
        if self.pooler is not None:
            outputs["pooler_output"] = self.pooler(x)
        return outputs


@keras.saving.register_keras_serializable(package="porter")
class BertModel(keras.Model):
    """Inputs: a dict with input_ids and optionally attention_mask, token_type_ids (integer, (batch, seq))."""

    def __init__(self, config: dict, **kw):
        kw.setdefault("name", f"tf_{config.get('model_type', 'bert')}_model")
        # The weights' dtype (porter's key: the one that survives a save/load of model.keras).
        # Keras layers take the global policy when built, and sub-layers do not inherit a parent's.
        policy = config.get("_porter_dtype") or "float32"
        kw.pop("dtype", None)
        super().__init__(dtype=policy, **kw)
        # kept as JSON text: Keras would wrap a dict attribute in tracking containers that hold the model
        self._hf_config_json = json.dumps(config)
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            self.main = MainLayer(config)
        finally:
            keras.config.set_dtype_policy(previous)

    def build(self, input_shape=None):
        self.main.build()
        self.built = True

    @property
    def hf_config(self) -> dict:
        return json.loads(self._hf_config_json)

    def call(self, inputs):
        input_ids = ops.cast(inputs["input_ids"], "int32")
        mask = inputs.get("attention_mask")
        types = inputs.get("token_type_ids")
        mask = ops.ones_like(input_ids) if mask is None else ops.cast(mask, "int32")
        types = ops.zeros_like(input_ids) if types is None else ops.cast(types, "int32")
        return self.main(input_ids, mask, types)

    def get_config(self):
        config = {k: v for k, v in self.hf_config.items() if k != "_porter_zero_init"}
        return {**super().get_config(), "config": config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        hf = dict(config.pop("config"))
        hf["_porter_zero_init"] = True  # weights come from the file
        policy = config.get("dtype")
        if (policy.get("config", {}).get("name") if isinstance(policy, dict) else policy) == "float64":
            hf["_porter_dtype"] = "float64"  # the float64 copy the verifier's floor asks for (training_float64.py)
        return cls(hf, **{k: v for k, v in config.items() if k in ("name", "trainable", "dtype")})


def build(config: dict, *, zero_init: bool = False, deferred: bool = False) -> BertModel:
    """Build every variable: random, zeros, or (``deferred``) not yet allocated at all,
    to be created straight from converted weights by ``initialize``."""
    model = BertModel(dict(config, _porter_zero_init=zero_init or deferred))
    if deferred:
        from keras.src.backend.common.stateless_scope import StatelessScope

        with StatelessScope(initialize_variables=False):
            model.build({"input_ids": (None, None)})
    else:
        model.build({"input_ids": (None, None)})
    return model


def initialize(variable, array) -> None:
    """Create a deferred variable from ``array``. Keras has no public API for this; allocating
    zeros and then assigning holds bert-base twice over (0.45 GB more peak memory)."""
    variable._initializer = lambda shape, dtype=None: array
    variable._deferred_initialize()
    # Keras keeps deferred variables in a global list that the next stateless scope (any symbolic
    # call, e.g. a later load_model) initializes: one already initialized here would raise there
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    if pending:
        pending[:] = [v for v in pending if v is not variable]


def variables_by_name(model: BertModel) -> dict:
    """TFBertModel-style names ('bert/encoder/...') -> Keras variables.

    Built from the layer tree, not ``Variable.path``: a model rebuilt by
    ``load_model`` gets different paths, while layer names survive saving."""
    out = {}

    def walk(layer, prefix):
        for v in layer._trainable_variables + layer._non_trainable_variables:
            out[f"{prefix}{v.name}"] = v
        for sub in layer._layers:
            walk(sub, f"{prefix}{sub.name}/")

    walk(model.main, f"{model.main.name}/")
    return out

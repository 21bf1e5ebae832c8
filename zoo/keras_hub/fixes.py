"""porter's own corrections to keras-hub classes, where keras-hub (0.30 to 0.32) does not reproduce transformers.

Each is built only where it is needed (backbone_class: keras-hub's own class otherwise, so model.keras loads without
porter). Each is a registered subclass (``porter>Name``) of the keras-hub class, so ``model.keras`` still
holds a ``keras_hub`` backbone by isinstance, reloads with ``safe_mode=True`` once porter's zoo is
imported, and a keras-hub task model (``Qwen3CausalLM``) takes it as its backbone.
"""

from __future__ import annotations

from porter.zoo.keras_hub.entry import _keras_hub

hub = _keras_hub()
keras = __import__("keras")


@keras.saving.register_keras_serializable(package="porter")
class Qwen3Backbone(hub.models.Qwen3Backbone):
    """keras-hub's (0.30 to 0.32) Qwen3Decoder builds its attention without ``layer_norm_epsilon``, so the
    per-head q/k RMSNorms use 1e-5 whatever the config says; transformers uses rms_norm_eps
    (1e-6 in Qwen3's configs), a 1e-3 difference in hidden states. The norms read their epsilon
    when called: set it from the backbone's own argument."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for layer in self.transformer_layers:
            attention = layer._self_attention_layer
            attention._query_dense_layer_norm.epsilon = self.layer_norm_epsilon
            attention._key_dense_layer_norm.epsilon = self.layer_norm_epsilon


@keras.saving.register_keras_serializable(package="porter")
class LlamaBackbone(hub.models.LlamaBackbone):
    """keras-hub's (0.30 to 0.32) LlamaBackbone.get_config leaves out ``tie_word_embeddings``: a tied Llama's
    model.keras reloads untied and its weights no longer fit. Write it into the config."""

    def get_config(self):
        return {**super().get_config(), "tie_word_embeddings": self.tie_word_embeddings}


@keras.saving.register_keras_serializable(package="porter")
class ElectraBackbone(hub.models.ElectraBackbone):
    """keras-hub's (0.30 to 0.32) ElectraBackbone hard-codes the tanh-approximate GELU in its feed-forward;
    transformers' ELECTRA configs say hidden_act="gelu" (exact erf GELU), a ~1e-3 difference in
    hidden states. ``feedforward_activation`` (the transformers name: "gelu" exact, "gelu_new" tanh)
    is set on each layer's intermediate Dense, which reads it when called, and kept in the config."""

    def __init__(self, *args, feedforward_activation="gelu_new", **kwargs):
        super().__init__(*args, **kwargs)
        self.feedforward_activation = feedforward_activation
        if feedforward_activation == "gelu":
            exact = keras.activations.get("gelu")  # approximate=False
            for layer in self.transformer_layers:
                layer.activation = exact
                layer._feedforward_intermediate_dense.activation = exact

    def get_config(self):
        return {**super().get_config(), "feedforward_activation": self.feedforward_activation}


def _blocks_from_zero(backbone) -> None:
    """keras-hub (0.30 to 0.32) names ViT's and DeiT's blocks from 1 (transformer_block_1 is transformers'
    layer.0), and porter's rules bind one layer index on both sides: the blocks are renamed from 0.
    Names only: the weights, the graph and the saved file's layout are keras-hub's."""
    encoder = next(layer for layer in backbone._layers if layer.name.endswith("encoder"))
    blocks = [layer for layer in encoder._layers if layer.name.startswith("transformer_block_")]
    for i, block in enumerate(blocks):
        block.name = f"transformer_block_{i}"


@keras.saving.register_keras_serializable(package="porter")
class ViTBackbone(hub.models.ViTBackbone):
    """keras-hub's ViTBackbone with its blocks numbered from 0 (_blocks_from_zero). No longer built (keras-hub's own
    class is, PLAIN_WHEN); kept registered so a model.keras written by an earlier porter still loads and converts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _blocks_from_zero(self)


@keras.saving.register_keras_serializable(package="porter")
class DeiTBackbone(hub.models.DeiTBackbone):
    """keras-hub's DeiTBackbone with its blocks numbered from 0 (_blocks_from_zero). No longer built, as ViTBackbone."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _blocks_from_zero(self)


@keras.saving.register_keras_serializable(package="porter")
class XLMRobertaBackbone(hub.models.XLMRobertaBackbone):
    """transformers' XLM-RoBERTa embedding, which keras-hub's (0.30 to 0.32) XLMRobertaBackbone does not
    reproduce: positions counted from padding_idx + 1 over non-pad tokens (keras-hub counts from 0,
    so rows 0..pad of the checkpoint's table would have nowhere to go), a token-type row added to
    every token (keras-hub has none) and the pooler (dense + tanh on <s>). The encoder layers are
    keras-hub's TransformerEncoder as XLMRobertaBackbone builds them; the graph is built here, so
    the constructor of the keras-hub class is not run (its own embedding would be unused)."""

    def __init__(self, vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, dropout=0.0,
                 max_sequence_length=514, pad_token_id=1, type_vocab_size=1, layer_norm_epsilon=1e-5, dtype=None, **kwargs):
        from keras import ops

        from keras_hub.src.layers.modeling.reversible_embedding import ReversibleEmbedding
        from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder

        self.token_embedding = ReversibleEmbedding(vocabulary_size, hidden_dim, dtype=dtype, name="token_embedding")
        self.position_embedding = keras.layers.Embedding(max_sequence_length, hidden_dim, dtype=dtype, name="position_embedding")
        self.token_type_embedding = keras.layers.Embedding(type_vocab_size, hidden_dim, dtype=dtype, name="token_type_embedding")
        self.embeddings_layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_layer_norm")
        self.transformer_layers = [
            TransformerEncoder(num_heads=num_heads, intermediate_dim=intermediate_dim, activation="gelu", dropout=dropout,
                               layer_norm_epsilon=layer_norm_epsilon, dtype=dtype, name=f"transformer_layer_{i}")
            for i in range(num_layers)]
        self.pooled_dense = keras.layers.Dense(hidden_dim, activation="tanh", dtype=dtype, name="pooled_dense")

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        # transformers' create_position_ids_from_input_ids: pad + running count of non-pad tokens
        not_pad = ops.cast(ops.not_equal(token_ids, pad_token_id), "int32")
        positions = ops.cumsum(not_pad, axis=1) * not_pad + pad_token_id
        x = self.token_embedding(token_ids) + self.position_embedding(positions)
        x = x + self.token_type_embedding(ops.zeros_like(token_ids))  # token_type_ids default to 0
        x = self.embeddings_layer_norm(x)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        pooled = self.pooled_dense(x[:, 0, :])
        hub.models.Backbone.__init__(self, inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                                     outputs={"sequence_output": x, "pooled_output": pooled}, dtype=dtype, **kwargs)
        self.vocabulary_size, self.num_layers, self.num_heads = vocabulary_size, num_layers, num_heads
        self.hidden_dim, self.intermediate_dim, self.dropout = hidden_dim, intermediate_dim, dropout
        self.max_sequence_length, self.pad_token_id, self.type_vocab_size = max_sequence_length, pad_token_id, type_vocab_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.start_token_index = 0

    def get_config(self):
        return {**super().get_config(), "pad_token_id": self.pad_token_id, "type_vocab_size": self.type_vocab_size,
                "layer_norm_epsilon": self.layer_norm_epsilon}


# every registered correction, by the keras-hub class it corrects: what porter recognises in a model.keras
BACKBONES = {"Qwen3Backbone": Qwen3Backbone, "XLMRobertaBackbone": XLMRobertaBackbone, "LlamaBackbone": LlamaBackbone, "ElectraBackbone": ElectraBackbone,
             "ViTBackbone": ViTBackbone, "DeiTBackbone": DeiTBackbone}

# Where keras-hub's own class reproduces transformers for these arguments, it is the one built, so model.keras loads
# with keras + keras_hub alone (report["fresh_process"]["model.keras"]); porter's correction only where it is needed.
PLAIN_WHEN = {
    # get_config drops tie_word_embeddings and the class's default is False: an untied model reloads as it was
    "LlamaBackbone": lambda kwargs: not kwargs.get("tie_word_embeddings"),
    # keras-hub's tanh GELU is transformers' gelu_new
    "ElectraBackbone": lambda kwargs: kwargs.get("feedforward_activation", "gelu_new") != "gelu",
    # keras-hub's q/k norms use 1e-5 whatever the config says: right when rms_norm_eps is 1e-5
    "Qwen3Backbone": lambda kwargs: kwargs.get("layer_norm_epsilon") == 1e-5,
    # keras-hub numbers the blocks from 1: its variables are read under porter's names (plain.porter_names), so the
    # rules bind layer.{i} to transformer_block_{i} either way, and porter's renaming subclass is not needed
    "ViTBackbone": lambda kwargs: True,
    "DeiTBackbone": lambda kwargs: True,
}
_PORTER_ARGUMENTS = {"ElectraBackbone": ("feedforward_activation",)}  # arguments keras-hub's class does not take


def backbone_class(name: str, kwargs: dict) -> tuple[type, dict]:
    """(the class to build ``name`` with, its arguments): keras-hub's own where PLAIN_WHEN says it reproduces
    transformers for ``kwargs``, else porter's correction (BACKBONES)."""
    porter_cls = BACKBONES.get(name)
    if porter_cls is None or PLAIN_WHEN.get(name, lambda _: False)(kwargs):
        dropped = _PORTER_ARGUMENTS.get(name, ())
        return getattr(hub.models, name), {k: v for k, v in kwargs.items() if k not in dropped}
    return porter_cls, kwargs

"""BERT and RoBERTa: transformers' torch models <-> porter's Keras 3 model (keras_model.py)."""

from __future__ import annotations

from porter.zoo import ZooEntry, register

_IO = dict(
    inputs=("input_ids", "attention_mask", "token_type_ids"),
    outputs=("last_hidden_state", "pooler_output"),
    defined_where={"last_hidden_state": "attention_mask"},
)

BERT = register(
    ZooEntry(
        name="bert",
        family="bert",
        module="porter.zoo.bert.entry",
        description="BERT encoder (transformers BertModel); default: the real all-MiniLM-L6-v2 weights",
        torch_class="transformers.BertModel",
        mapping_params={"root": "bert"},
        **_IO,
    )
)
ROBERTA = register(
    ZooEntry(
        name="roberta",
        family="bert",
        module="porter.zoo.bert.entry",
        description="RoBERTa encoder (transformers RobertaModel): BERT with offset positions",
        torch_class="transformers.RobertaModel",
        mapping_params={"root": "roberta"},
        **_IO,
    )
)

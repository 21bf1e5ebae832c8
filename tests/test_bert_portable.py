"""porter's BERT/RoBERTa model.keras: keras' and keras-hub's layers only (zoo/bert/portable.py), the same weights as
porter's own Keras model, read back into it bit-exactly; an older model.keras (porter>BertModel) still reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_BERT, TINY_ROBERTA, make_hf_checkpoint

from porter.zoo import keras_file

pytest.importorskip("tensorflow")


def _feed(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 99, (3, 11)).astype("int32")
    mask = np.ones_like(ids)
    mask[2, 6:], ids[2, 6:] = 0, 1  # right padding with RoBERTa's pad id: its positions count non-pad tokens
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.mark.parametrize("config", [dict(TINY_BERT, layer_norm_eps=1e-5), dict(TINY_ROBERTA, hidden_act="gelu_new"),
                                    dict(TINY_BERT, hidden_act="relu", add_pooling_layer=False)],
                         ids=["bert-eps1e-5", "roberta-tanh-gelu", "bert-relu-no-pooler"])
def test_portable_form_computes_what_porters_model_computes(config, tmp_path):
    """Same outputs (float32 rounding apart), saved and reloaded with safe_mode, and back to porter's model exactly."""
    import keras

    from porter.zoo.bert import keras_model, portable

    model = keras_model.build(dict(config, model_type=config["model_type"]))
    rng = np.random.default_rng(1)
    for v in model.weights:  # informative: every weight at unit scale, LayerNorms included
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    form = portable.to_portable(model)
    feed = _feed()
    ours, theirs = model(feed), form(feed)
    assert set(ours) == set(theirs)
    valid = feed["attention_mask"][..., None].astype(bool)
    assert np.abs(np.where(valid, np.asarray(ours["last_hidden_state"]) - np.asarray(theirs["last_hidden_state"]), 0)).max() <= 2e-6
    path = tmp_path / "m.keras"
    form.save(str(path))
    keras_file.add_config(path, config)
    loaded = keras.saving.load_model(str(path), safe_mode=True)
    assert portable.is_portable(loaded) and keras_file.read_config(path)["model_type"] == config["model_type"]
    back = portable.from_portable(loaded, config)
    for a, b in zip(model.weights, back.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_wrong_pairing_changes_the_outputs():
    """Negative: the pairing is what makes the forms agree; swapping two layers' query kernels is seen."""
    from porter.zoo.bert import keras_model, portable

    model = keras_model.build(TINY_BERT)
    rng = np.random.default_rng(2)
    for v in model.weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    form = portable.to_portable(model)
    q0 = form.get_layer("transformer_layer_0")._self_attention_layer._query_dense.kernel
    q1 = form.get_layer("transformer_layer_1")._self_attention_layer._query_dense.kernel
    a, b = q0.numpy(), q1.numpy()
    q0.assign(b)
    q1.assign(a)
    feed = _feed()
    assert np.abs(np.asarray(model(feed)["pooler_output"]) - np.asarray(form(feed)["pooler_output"])).max() > 1e-3


@pytest.mark.parametrize("config", [TINY_BERT, TINY_ROBERTA], ids=["bert", "roberta"])
def test_model_keras_converts_back_bit_exact(config, tmp_path):
    """torch -> tf -> (model.keras alone, moved away from its config.json) -> torch: the same tensors, bit for bit."""
    import shutil

    from safetensors.numpy import load_file

    import porter

    src = make_hf_checkpoint(tmp_path / "hf", config)
    assert porter.convert(str(src), source="torch", target="tf", out=tmp_path / "tf").passed
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "tf" / "model.keras", alone / "model.keras")  # its config is inside the archive
    back = porter.convert(str(alone / "model.keras"), source="tf", target="torch", out=tmp_path / "back")
    assert back.passed and back.route == "direct"
    original, written = load_file(src / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    shared = set(original) & set(written)
    assert len(shared) >= 30
    for k in shared:
        np.testing.assert_array_equal(original[k], written[k], err_msg=k)


def test_model_keras_of_an_earlier_porter_still_converts_back(tiny_bert, tmp_path):
    """A model.keras holding porter>BertModel (what porter wrote before the portable form) reads as before."""
    from porter.process.frameworks import save_keras
    from porter.readers.artifacts import detect
    from porter.routes.tf_weights import load_keras_artifact

    import porter

    tf_dir = tmp_path / "tf"
    assert porter.convert(str(tiny_bert), source="torch", target="tf", out=tf_dir).passed
    model, config = load_keras_artifact(detect(tf_dir / "model.keras"))
    old = tmp_path / "old"
    old.mkdir()
    save_keras(model, old / "model.keras")
    assert '"porter>BertModel"' in __import__("zipfile").ZipFile(old / "model.keras").read("config.json").decode()
    back = porter.convert(str(old / "model.keras"), source="tf", target="torch", out=tmp_path / "back")
    assert back.passed and back.route == "direct"


def test_portable_model_keras_without_its_config_is_refused(tiny_bert, tmp_path, cli):
    """Bad input: the portable form with neither the config inside nor config.json beside: exit 2 naming both."""
    from porter.zoo.bert import keras_model, portable

    model = keras_model.build(json.loads((tiny_bert / "config.json").read_text()))
    portable.to_portable(model).save(str(tmp_path / "model.keras"))  # no add_config
    code, text = cli("convert", tmp_path / "model.keras", "--from", "tf", "--to", "torch", "--route", "direct",
                     "--out", tmp_path / "out")
    assert code == 2 and keras_file.CONFIG_MEMBER in text and "config.json" in text, text
    assert "Traceback" not in text and not (tmp_path / "out").exists()


def test_portable_model_keras_whose_config_overstates_a_size_is_refused(tiny_bert, tmp_path, cli):
    """Bad input: a config inside the archive declaring a vocabulary the weights do not hold: exit 2 naming the key,
    before porter's model is built from it (nothing allocated at the declared size)."""
    from porter.zoo.bert import keras_model, portable

    config = json.loads((tiny_bert / "config.json").read_text())
    portable.to_portable(keras_model.build(config)).save(str(tmp_path / "model.keras"))
    keras_file.add_config(tmp_path / "model.keras", dict(config, vocab_size=10**9))
    code, text = cli("convert", tmp_path / "model.keras", "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    assert code == 2 and "vocab_size" in text and "1000000000" in text, text
    assert "Traceback" not in text and not (tmp_path / "out").exists()


def test_bf16_bert_keeps_its_dtype_in_the_portable_form(tiny_bert, tmp_path):
    """--dtype bfloat16: model.keras holds bfloat16 weights (its layers' dtype policy), and reads back as bf16."""
    import keras

    import porter

    tf_dir = tmp_path / "tf"
    assert porter.convert(str(tiny_bert), source="torch", target="tf", out=tf_dir, dtype="bfloat16").passed
    model = keras.saving.load_model(str(tf_dir / "model.keras"), safe_mode=True)
    assert {v.dtype for v in model.weights} == {"bfloat16"}
    back = porter.convert(str(tf_dir / "model.keras"), source="tf", target="torch", out=tmp_path / "back")
    assert back.passed and json.loads((tmp_path / "back" / "config.json").read_text())["dtype"] == "bfloat16"

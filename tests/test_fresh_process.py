"""Artifacts loaded by the runtime that serves them, in a fresh process that never imports porter, torch or
transformers (verifiers/runners/runtime_child.py): `porter convert --to tf` verifies its SavedModel with TensorFlow
alone, and says whether model.keras loads with keras + keras_hub alone or needs porter's own classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_hf_direct import make_checkpoint
from tests_support import hidden_state_error

pytest.importorskip("tensorflow")


@pytest.fixture(autouse=True, scope="module")
def _default_fresh_process():
    """The suite turns the child off (conftest.py); these tests are about it."""
    from conftest import fresh_process

    with fresh_process():
        yield


def _report(out) -> dict:
    return json.loads((out / "porter_report.json").read_text())


def _bert_feed(batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (batch, seq))
    mask = np.ones_like(ids)
    if batch > 1:
        mask[-1, seq // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _agrees_with_torch_at_two_shapes(child, model) -> None:
    """A child's BERT outputs at 1x9 and 3x33 (padded) within 1e-5 of transformers' (padding not compared)."""
    import torch

    for batch, seq in ((1, 9), (3, 33)):
        feed = _bert_feed(batch, seq)
        got = child.run({k: v.astype(np.int32) for k, v in feed.items()})
        with torch.no_grad():
            ref = model(**{k: torch.as_tensor(v) for k, v in feed.items()})
        assert hidden_state_error(ref.last_hidden_state.numpy(), got["last_hidden_state"], feed["attention_mask"]) <= 1e-5
        assert np.abs(ref.pooler_output.numpy() - got["pooler_output"]).max() <= 1e-5


def test_convert_verifies_the_saved_model_in_tensorflow_alone(tiny_bert_tf):
    report = _report(tiny_bert_tf)
    assert report["status"] == "passed"
    assert "TensorFlow alone in a fresh process" in report["fresh_process"]["saved_model"], report["fresh_process"]
    keras_file = report["fresh_process"]["model.keras"]
    assert keras_file["loads_without_porter"] is True and keras_file["porter_classes"] == [], keras_file
    # model.keras verified too, by keras + keras_hub alone, against the same torch reference at the same shapes
    checked = keras_file["verification"]
    assert checked["status"] == "passed" and checked["candidate"].endswith("model.keras"), checked
    assert [s["label"] for s in checked["shapes"]] == [s["label"] for s in report["verification"]["shapes"]]
    assert max(checked["max_abs_error"].values()) <= 1e-5, checked["max_abs_error"]
    assert any("model.keras passed in keras + keras_hub alone" in n for n in report["verification"]["notes"])


def test_saved_model_runs_in_tensorflow_alone_at_two_shapes(tiny_bert, tiny_bert_tf):
    from porter.verifiers.runners.runtime_isolated import RuntimeProcess
    from porter.zoo.bert.entry import load_torch

    model = load_torch(tiny_bert)
    child = RuntimeProcess(tiny_bert_tf, "saved_model")
    try:
        assert child.described["runtime"].startswith("TensorFlow") and "alone" in child.described["runtime"]
        assert {d["dtype"] for d in child.described["inputs"].values()} == {"int32"}
        _agrees_with_torch_at_two_shapes(child, model)
    finally:
        final = child.close()
    assert final["imported"] == [], final  # torch, porter, transformers, keras_hub: none imported in the child


def test_bert_keras_file_runs_in_keras_alone_at_two_shapes(tiny_bert, tiny_bert_tf):
    """porter's BERT model.keras is keras' and keras-hub's layers only (zoo/bert/portable.py): load_model and a
    call, in a process that never imports porter, torch or transformers, give torch's outputs."""
    from porter.verifiers.runners.runtime_isolated import RuntimeProcess, keras_alone
    from porter.zoo.bert.entry import load_torch

    found = keras_alone(tiny_bert_tf / "model.keras")
    assert found["loads_without_porter"] is True and found["porter_classes"] == [], found
    assert found["class"].endswith("Functional") and "alone" in found["runtime"], found
    model = load_torch(tiny_bert)
    child = RuntimeProcess(tiny_bert_tf / "model.keras", "keras")
    try:
        _agrees_with_torch_at_two_shapes(child, model)
    finally:
        final = child.close()
    assert final["imported"] == [], final


def test_keras_file_with_a_wrong_weight_fails_in_keras_alone(tiny_bert, tiny_bert_tf, tmp_path):
    """The keras-only verification compares outputs: a model.keras with one LayerNorm moved fails it (exit 1 in
    convert), where loading alone would have passed."""
    import shutil

    import keras

    import porter
    from porter.zoo import keras_file

    folder = tmp_path / "tampered"
    shutil.copytree(tiny_bert_tf, folder)
    model = keras.saving.load_model(str(folder / "model.keras"), safe_mode=True)
    gamma = model.get_layer("transformer_layer_1")._feedforward_layer_norm.gamma
    gamma.assign(gamma.numpy() * 1.01)
    (folder / "model.keras").unlink()
    model.save(str(folder / "model.keras"))
    keras_file.add_config(folder / "model.keras", json.loads((tiny_bert_tf / "config.json").read_text()))
    result = porter.verify(str(tiny_bert), str(folder / "model.keras"), candidate_options={"isolated": True})
    assert not result.passed and any(o.name == "last_hidden_state" and not o.passed for s in result.shapes for o in s.outputs)


@pytest.fixture(scope="module")
def gpt2_tf(tmp_path_factory):
    import porter

    root = tmp_path_factory.mktemp("fresh-gpt2")
    src = make_checkpoint(root / "hf", "gpt2", False)
    result = porter.convert(str(src), source="torch", target="tf", out=root / "tf")
    assert result.passed
    return root / "tf"


def test_gpt2_keras_file_loads_with_keras_hub_alone(gpt2_tf):
    from porter.verifiers.runners.runtime_isolated import keras_alone

    report = _report(gpt2_tf)
    assert report["fresh_process"]["model.keras"]["loads_without_porter"] is True
    found = keras_alone(gpt2_tf / "model.keras")
    assert found["loads_without_porter"] is True and found["porter_classes"] == [], found
    assert found["class"].startswith("keras_hub."), found


def test_saved_model_needing_an_op_library_is_reported(tmp_path):
    """A signature with a tensorflow_text op (keras-hub tokenizers use them): TensorFlow alone cannot load it, and
    the fresh-process runner says so (bad input, exit 2) instead of passing because porter's process had the op."""
    tf = pytest.importorskip("tensorflow")
    text = pytest.importorskip("tensorflow_text")

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
        def serve(self, s):
            return {"y": text.case_fold_utf8(s)}

    m = M()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.serve})
    from porter.errors import PorterError
    from porter.verifiers.runners import open_runner

    with pytest.raises(PorterError) as err:
        with open_runner(tmp_path / "sm", isolated=True):
            pass
    assert "TensorFlow alone could not load" in err.value.message and "CaseFoldUTF8" in err.value.message, err.value.message
    assert "tensorflow_text" in (err.value.hint or ""), err.value.hint


def test_fresh_process_can_be_turned_off(tiny_bert, tmp_path, monkeypatch):
    import porter

    monkeypatch.setenv("PORTER_FRESH_PROCESS", "0")
    result = porter.convert(str(tiny_bert), source="torch", target="tf", out=tmp_path / "tf")
    assert result.passed
    assert "porter's own process" in result.report["fresh_process"]["saved_model"]


def test_the_child_says_when_a_forbidden_module_was_imported(tiny_bert_tf):
    """The child's own check: started from a process that had porter imported, it reports it and exits 3."""
    import subprocess
    import sys

    from porter.verifiers.runners.runtime_isolated import CHILD

    code = (f"import sys, runpy, porter; sys.argv = [{str(CHILD)!r}, {str(tiny_bert_tf)!r}, '--runtime', 'saved_model']; "
            f"runpy.run_path({str(CHILD)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], input="", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["imported"] == ["porter"]


@pytest.fixture(scope="module")
def bert_back(tiny_bert_tf, tmp_path_factory):
    import porter

    out = tmp_path_factory.mktemp("fresh-back") / "torch"
    result = porter.convert(str(tiny_bert_tf), source="tf", target="torch", out=out)
    assert result.passed
    return out


def test_torch_folder_is_verified_by_torch_alone(bert_back):
    """tf -> torch: the written Hugging Face folder is run by torch + transformers alone, in a fresh process."""
    from porter.verifiers.runners import open_runner

    assert "torch alone in a fresh process" in _report(bert_back)["fresh_process"]["torch"]
    ids = np.array([[5, 6, 7, 8]], dtype=np.int64)
    runner = open_runner(bert_back, isolated=True)
    with runner:
        assert "transformers" in runner.runtime and "alone" in runner.runtime, runner.runtime
        out = runner.infer({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        assert set(out) == {"last_hidden_state", "pooler_output"} and out["last_hidden_state"].shape == (1, 4, 32)
    assert runner.final["imported"] == [], runner.final  # no TensorFlow, keras or porter in the child


def test_torch_folder_with_a_wrong_weight_fails_in_torch_alone(tiny_bert, bert_back, tmp_path):
    """Negative: one LayerNorm weight moved 1% in the written safetensors: the torch-only verification fails."""
    import shutil

    from safetensors.numpy import load_file, save_file

    import porter

    folder = tmp_path / "tampered"
    shutil.copytree(bert_back, folder)
    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.endswith("output.LayerNorm.weight"))
    state[key] = state[key] * 1.01
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    result = porter.verify(str(tiny_bert), str(folder), candidate_options={"isolated": True})
    assert not result.passed


def test_model_py_is_verified_by_torch_alone(tmp_path):
    """The keras layers writer's model.py + model.safetensors run by torch alone (no porter, keras or TensorFlow):
    model.py is self-contained; a model.py changed after porter wrote it is not imported (exit 2)."""
    import keras

    import porter
    from porter.errors import PorterError
    from porter.verifiers.runners import open_runner

    inputs = keras.Input((8,))
    x = keras.layers.LayerNormalization()(keras.layers.Dense(16, activation="relu")(inputs))
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(str(tmp_path / "small.keras"))
    result = porter.convert(str(tmp_path / "small.keras"), source="tf", target="torch", out=tmp_path / "torch")
    assert result.passed and "torch alone" in result.report["fresh_process"]["torch"]
    runner = open_runner(tmp_path / "torch", isolated=True)
    with runner:
        assert runner.runtime.endswith("alone (model.py)"), runner.runtime
        out = runner.infer({runner.input_names[0]: np.ones((2, 8), np.float32)})
        assert next(iter(out.values())).shape == (2, 3)
    assert runner.final["imported"] == [], runner.final
    code = tmp_path / "torch" / "model.py"
    code.write_text(code.read_text() + "\n# changed\n")
    with pytest.raises(PorterError) as err:
        open_runner(tmp_path / "torch", isolated=True).activate()
    assert "changed after porter wrote it" in err.value.message


def test_porter_verify_runs_the_candidate_by_its_own_runtime(tiny_bert, tiny_bert_tf, cli):
    """`porter verify` (the CI gate) runs a SavedModel candidate by TensorFlow alone and porter's model.keras by keras
    + keras_hub alone, each in a fresh process, and says so; PORTER_FRESH_PROCESS=0 keeps both in porter's process."""
    import os

    for candidate, runtime in ((tiny_bert_tf, "TensorFlow"), (tiny_bert_tf / "model.keras", "keras")):
        code, text = cli("verify", tiny_bert, candidate)
        assert code == 0, text
        assert f"candidate run by {runtime}" in text and "in a fresh process" in text, text
    os.environ["PORTER_FRESH_PROCESS"] = "0"
    try:
        code, text = cli("verify", tiny_bert, tiny_bert_tf)
    finally:
        os.environ["PORTER_FRESH_PROCESS"] = "1"
    assert code == 0 and "in a fresh process" not in text, text


def test_which_candidates_run_in_a_fresh_process(tiny_bert_tf, tmp_path):
    """The runtime-alone child where porter has one for the format; a user's own Keras model, --latency and a GPU
    stay in porter's process."""
    import keras

    from porter.readers.artifacts import detect
    from porter.verifiers.runners.runtime_isolated import fresh_candidate_options

    assert fresh_candidate_options(detect(tiny_bert_tf)) == {"isolated": True}
    assert fresh_candidate_options(detect(tiny_bert_tf / "model.keras")) == {"isolated": True}
    assert fresh_candidate_options(detect(tiny_bert_tf), latency=True) is None
    assert fresh_candidate_options(detect(tiny_bert_tf), device="cuda") is None
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(str(tmp_path / "mine.keras"))
    assert fresh_candidate_options(detect(tmp_path / "mine.keras")) is None


def test_children_started_ahead_are_taken_over_or_stopped(tiny_bert_tf):
    """start_ahead: the child imports its runtime early; the next RuntimeProcess for the same file takes it over (and
    only then it loads the model); drop_ahead stops the ones nobody took. A conversion leaves none behind."""
    from porter.verifiers.runners.runtime_isolated import RuntimeProcess

    assert RuntimeProcess._ahead == {}  # the module's conversions took or stopped theirs
    RuntimeProcess.start_ahead(tiny_bert_tf, "saved_model")
    RuntimeProcess.start_ahead(tiny_bert_tf / "model.keras", "keras")
    early = RuntimeProcess._ahead[(str(tiny_bert_tf.resolve()), "saved_model", None)]._proc
    child = RuntimeProcess(tiny_bert_tf, "saved_model")
    try:
        assert child._proc is early and child.described["runtime"].startswith("TensorFlow")
    finally:
        assert child.close()["imported"] == []
    untaken = next(iter(RuntimeProcess._ahead.values()))._proc
    RuntimeProcess.drop_ahead()
    assert RuntimeProcess._ahead == {} and untaken.poll() is not None


def test_a_zoo_variant_the_zoo_refuses_stays_verifiable(tmp_path, cli):
    """A BertForSequenceClassification folder (the zoo's bert is the bare encoder): `porter verify` runs it as
    transformers does, in porter's process, instead of failing on the zoo's refusal in the torch-only runner."""
    import transformers

    from conftest import TINY_BERT
    from porter.readers.artifacts import detect
    from porter.verifiers.runners.runtime_isolated import fresh_candidate_options

    config = transformers.BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"}, num_labels=3)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(tmp_path / "cls")
    assert fresh_candidate_options(detect(tmp_path / "cls")) is None
    code, text = cli("verify", tmp_path / "cls", tmp_path / "cls")
    assert code == 0, text

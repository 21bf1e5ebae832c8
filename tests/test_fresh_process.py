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


def test_convert_verifies_the_saved_model_in_tensorflow_alone(tiny_bert_tf):
    report = _report(tiny_bert_tf)
    assert report["status"] == "passed"
    assert "TensorFlow alone in a fresh process" in report["fresh_process"]["saved_model"], report["fresh_process"]
    keras_file = report["fresh_process"]["model.keras"]
    assert keras_file["loads_without_porter"] is False and keras_file["porter_classes"] == ["porter>BertModel"]


def test_saved_model_runs_in_tensorflow_alone_at_two_shapes(tiny_bert, tiny_bert_tf):
    import torch

    from porter.verifiers.runners.runtime_isolated import RuntimeProcess
    from porter.zoo.bert.entry import load_torch

    model = load_torch(tiny_bert)
    child = RuntimeProcess(tiny_bert_tf, "saved_model")
    try:
        assert child.described["runtime"].startswith("TensorFlow") and "alone" in child.described["runtime"]
        assert {d["dtype"] for d in child.described["inputs"].values()} == {"int32"}
        for batch, seq in ((1, 9), (3, 33)):
            feed = _bert_feed(batch, seq)
            got = child.run({k: v.astype(np.int32) for k, v in feed.items()})
            with torch.no_grad():
                ref = model(**{k: torch.as_tensor(v) for k, v in feed.items()})
            assert hidden_state_error(ref.last_hidden_state.numpy(), got["last_hidden_state"], feed["attention_mask"]) <= 1e-5
            assert np.abs(ref.pooler_output.numpy() - got["pooler_output"]).max() <= 1e-5
    finally:
        final = child.close()
    assert final["imported"] == [], final  # torch, porter, transformers, keras_hub: none imported in the child


def test_bert_keras_file_needs_porter_outside_it(tiny_bert_tf):
    from porter.verifiers.runners.runtime_isolated import keras_alone

    found = keras_alone(tiny_bert_tf / "model.keras")
    assert found["loads_without_porter"] is False and found["porter_classes"] == ["porter>BertModel"]
    assert "BertModel" in found["error"], found


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

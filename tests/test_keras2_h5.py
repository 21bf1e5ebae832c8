"""tf_keras (Keras 2) legacy .h5 files (`model.save('m.h5')`) on the keras layers route: their model_config is
translated for Keras 3 (porter/readers/keras2_config.py: an RNN's time_major, MultiHeadAttention's build shapes
and softmax_robust_masking, tensors passed by keyword, a nested model's node numbers) before check_keras_h5
counts what it declares and before Keras 3 rebuilds it; the hostile-file checks stay.
Fixtures: tests/fixtures/keras2_h5/<name>.h5 (+ .npz: inputs and tf_keras' own outputs), made by make_keras2_h5.py
with tf_keras 2.21."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "keras2_h5"


def _copy(name, tmp_path) -> Path:
    return Path(shutil.copy(FIXTURES / f"{name}.h5", tmp_path / f"{name}.h5"))


def _edit_config(path: Path, edit) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        text = f.attrs["model_config"]
        config = json.loads(text.decode() if isinstance(text, bytes) else text)
        edit(config)
        f.attrs["model_config"] = json.dumps(config).encode()


def _layer(config, name) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == name)


@pytest.mark.parametrize("name, classes", [
    ("lstm", {"Embedding", "LSTM", "Dense"}),
    ("gru_attention", {"MultiHeadAttention", "GRU", "LayerNormalization", "Dense"}),
])
def test_keras2_h5_converts_on_the_layers_route_and_trains(name, classes, cli, tmp_path):
    out = tmp_path / "pt"
    code, text = cli("convert", FIXTURES / f"{name}.h5", "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "keras layers" and report["status"] == "passed", report.get("route_reason")
    assert classes <= set(report["keras_layers"]["classes"])
    code, text = cli("verify", FIXTURES / f"{name}.h5", out, "--train")
    assert code == 0, text


@pytest.mark.parametrize("name", ["lstm", "gru_attention"])
def test_keras3_rebuild_computes_what_tf_keras_computed(name):
    """The reference the conversion is verified against is Keras 3's rebuild: it is held to tf_keras' own outputs
    (a padded batch for the masked LSTM), so a translation that changed what a layer does shows here."""
    from porter.readers.artifacts import detect
    from porter.routes.tf_weights import load_keras_artifact

    data = np.load(FIXTURES / f"{name}.npz")
    model, config = load_keras_artifact(detect(FIXTURES / f"{name}.h5"))
    assert config is None
    np.testing.assert_allclose(np.asarray(model(data["input"], training=False)), data["output"], atol=1e-5, rtol=1e-5)


def test_the_translation_leaves_keras3_files_alone():
    from porter.readers.keras2_config import h5_config_text, written_by_keras2

    assert written_by_keras2(b"2.21.0") and written_by_keras2("2.15.0") and written_by_keras2(None)
    assert not written_by_keras2("3.15.1")
    text = '{"class_name": "LSTM", "config": {"time_major": false}}'
    assert h5_config_text(text, "3.15.1") == text
    assert json.loads(h5_config_text(text, "2.21.0")) == {"class_name": "LSTM", "config": {}}


def test_keras2_h5_declaring_500m_units_is_still_refused(cli, tmp_path):
    path = _copy("lstm", tmp_path)
    _edit_config(path, lambda c: _layer(c, "cls")["config"].update(units=500_000_000))
    code, out = cli("convert", path, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    assert code == 2 and "lstm.h5" in out and "model_config declares" in out and "'model_weights' hold" in out, out
    assert "damaged or hostile" in out and not (tmp_path / "out").exists()


def test_damaged_keras2_h5_is_refused_as_such(cli, tmp_path):
    path = tmp_path / "lstm.h5"
    path.write_bytes((FIXTURES / "lstm.h5").read_bytes()[:4096])  # cut short
    code, out = cli("convert", path, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    assert code == 2 and "lstm.h5" in out and "damaged or hostile" in out and "Traceback" not in out, out


def test_keras2_option_keras3_lacks_is_named_with_the_way_forward(cli, tmp_path):
    """time_major=True is a behaviour Keras 3's LSTM does not have: left in the config, so Keras 3's refusal names
    it, and the hint says the file came from Keras 2 and how to convert it anyway."""
    path = _copy("lstm", tmp_path)
    _edit_config(path, lambda c: _layer(c, "lstm")["config"].update(time_major=True))
    code, out = cli("convert", path, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    assert code == 2 and "time_major" in out, out
    assert "written by Keras 2" in out and "save_format='tf'" in out and "damaged or hostile" not in out, out

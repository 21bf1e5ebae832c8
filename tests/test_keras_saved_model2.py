"""Keras 2 (tf_keras) SavedModel folders, `model.save(dir)` with keras_metadata.pb, on the keras layers route:
layers read from the metadata, weights from the checkpoint (porter/readers/keras2_saved_model.py), verified
against the SavedModel's own serving signature, and `--train` against the Keras model read from it.
Fixtures: tests/fixtures/keras2_saved_model/*.tar.xz, made by make_keras2_saved_model.py with tf_keras 2.21."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "keras2_saved_model"
MAX_ABS = 1e-5


def _folder(name, tmp_path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    with tarfile.open(FIXTURES / f"{name}.tar.xz") as tar:
        tar.extractall(folder, filter="data")
    assert (folder / "keras_metadata.pb").is_file() and (folder / "saved_model.pb").is_file()
    return folder


@pytest.mark.parametrize("name, classes", [
    ("functional", {"Conv1D", "BatchNormalization", "Bidirectional", "Dense"}),
    ("sequential", {"Conv2D", "BatchNormalization", "MaxPooling2D", "Dense", "Dropout"}),
    ("nested", {"MultiHeadAttention", "GRU", "TimeDistributed", "LayerNormalization", "Dense"}),
    ("text", {"Embedding", "LSTM", "Dense"}),
])
def test_keras2_saved_model_converts_on_the_layers_route_and_trains(name, classes, cli, tmp_path):
    folder, out = _folder(name, tmp_path), tmp_path / "pt"
    code, text = cli("convert", folder, "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "keras layers" and report["status"] == "passed", report.get("route_reason")
    assert classes <= set(report["keras_layers"]["classes"])
    compared = [o["max_abs"] for s in report["verification"]["shapes"] for o in s["outputs"]]
    print(name, compared)
    assert len(compared) >= 2 and max(compared) <= MAX_ABS
    assert report["verification"]["reference"] == str(folder)  # the SavedModel's own signature
    code, text = cli("verify", folder, out, "--train")
    assert code == 0, text


def test_a_weight_on_the_wrong_role_fails_verification(monkeypatch, tmp_path):
    """The forward and backward LSTM of the Bidirectional swapped while reading: the SavedModel's signature catches it."""
    import porter
    from porter.readers import keras2_saved_model as reader

    role = reader._role
    swap = {"forward": "backward", "backward": "forward"}
    monkeypatch.setattr(reader, "_role", lambda parts: tuple(swap.get(r, r) for r in role(parts))
                        if any("_layer" in p for p in parts) else role(parts))
    result = porter.convert(str(_folder("functional", tmp_path)), source="tf", target="torch", out=tmp_path / "pt")
    assert not result.passed


def test_subclassed_model_falls_back_and_says_why(cli, tmp_path):
    out = tmp_path / "pt"
    code, text = cli("convert", _folder("subclassed", tmp_path), "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "onnx"
    assert "could not read this Keras 2 SavedModel's layers" in report["route_reason"]
    assert "subclassed model of class 'Subclassed'" in report["route_reason"]


def test_tf_ops_on_keras_tensors_fall_back_and_say_why(cli, tmp_path):
    out = tmp_path / "pt"
    code, text = cli("convert", _folder("tf_ops", tmp_path), "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "onnx" and "TensorFlow ops called on Keras tensors" in report["route_reason"]
    assert "tf.__operators__.getitem" in report["route_reason"]


def test_unreadable_metadata_falls_back_and_says_why(cli, tmp_path):
    folder, out = _folder("sequential", tmp_path), tmp_path / "pt"
    (folder / "keras_metadata.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")  # a field longer than the file
    code, text = cli("convert", folder, "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "onnx" and "not a Keras SavedMetadata protobuf" in report["route_reason"]


def test_metadata_reader_reads_the_layer_configs(tmp_path):
    from porter.readers.keras2_saved_model import model_config, read_metadata

    folder = _folder("sequential", tmp_path)
    nodes = read_metadata(folder)
    assert nodes["root"][0] == "_tf_keras_sequential"
    config = json.loads(model_config(folder))
    assert config["class_name"] == "Sequential"
    assert [layer["config"]["name"] for layer in config["config"]["layers"]][1:] == \
        ["conv", "bn", "relu", "pool", "flat", "fc", "drop", "out"]


def test_variables_linked_outside_the_folder_are_refused(cli, tmp_path):
    folder = _folder("sequential", tmp_path)
    data = next((folder / "variables").glob("variables.data-*"))
    outside = tmp_path / "elsewhere.bin"
    data.rename(outside)
    data.symlink_to(outside)
    code, text = cli("convert", folder, "--from", "tf", "--to", "torch", "--out", tmp_path / "out")
    assert code == 2, text
    assert data.name in text and not (tmp_path / "out").exists()

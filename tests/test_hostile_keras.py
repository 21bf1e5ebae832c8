"""Hostile Keras files, made here from a tiny real model: refused (exit 2, naming the file, the entry or key,
the declared size and the limit) before Keras builds or unpacks anything, within 1 GB of memory above the
imports, nothing written at --out; genuine models still load, and the weights the config declares (counted
by Keras without allocating them) are exactly the real model's."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests_support import porter_measured

UNITS = '"units": 3'
DEEP = "[" * 100_000 + "]" * 100_000


def _tiny(tmp_path: Path, name: str = "tiny.keras") -> Path:
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs))
    model.save(tmp_path / name)
    return tmp_path / name


def _rewrite(src: Path, dst: Path, name: str, write, compress=zipfile.ZIP_STORED) -> Path:
    """``src`` with entry ``name`` replaced by what ``write(member, old_bytes)`` streams into it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename == name:
                entry = zipfile.ZipInfo(name)
                entry.compress_type = compress
                with zout.open(entry, "w", force_zip64=True) as member:
                    write(member, zin.read(info))
            else:
                zout.writestr(info, zin.read(info))
    return dst


def _big_dense_config(member, old: bytes) -> None:
    assert UNITS.encode() in old
    member.write(old.replace(UNITS.encode(), b'"units": 500000000'))  # an 8 GB kernel


def _convert(path: Path, out: Path) -> list:
    return ["convert", path, "--from", "tf", "--to", "torch", "--out", out]


# -- memory bombs: measured in a process of their own ------------------------------------------------


def _zeros(member, old: bytes) -> None:
    for _ in range(32):
        member.write(bytes(64 << 20))  # 2 GiB of zeros, deflated to ~2 MB


def _whitespace_after(member, old: bytes) -> None:
    member.write(old)
    for _ in range(16):
        member.write(b" " * (64 << 20))  # 1 GiB of whitespace after the JSON


BOMBS = {  # name: (entry, how it is written, deflated, what the message must hold)
    "dense of 500M units": ("config.json", _big_dense_config, False,
                            ("config.json", "'dense/kernel'", "4 x 500,000,000 float32", "10,000,000,000 bytes", "'model.weights.h5' holds")),
    "2 GB zip bomb weights": ("model.weights.h5", _zeros, True, ("'model.weights.h5'", "2,147,483,648 bytes", "limit of")),
    "1 GB whitespace config": ("config.json", _whitespace_after, True, ("'config.json'", "1,073,74", "limit of 67,108,864")),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BOMBS))
def test_memory_bomb_is_refused_before_keras_builds_or_unpacks(case, tmp_path):
    entry, write, deflated, shown = BOMBS[case]
    bomb = _rewrite(_tiny(tmp_path), tmp_path / "bomb.keras", entry, write,
                    zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED)
    assert bomb.stat().st_size < 5e6
    code, err, grown, _ = porter_measured(_convert(bomb, tmp_path / "out"))
    assert code == 2 and "bomb.keras" in err, err[-3000:]
    assert all(s in err for s in shown), err[-3000:]
    assert grown < 1.0, f"grew {grown} GB above the imports"
    assert not (tmp_path / "out").exists()


def test_deep_config_is_bad_input(tmp_path, cli):
    deep = _rewrite(_tiny(tmp_path), tmp_path / "deep.keras", "config.json",
                    lambda member, old: member.write(old[:-1] + b', "x": ' + DEEP.encode() + b"}"))
    for args in (_convert(deep, tmp_path / "out"), ("inspect", deep)):
        code, out = cli(*args)
        assert code == 2 and "deep.keras" in out and "'config.json'" in out, out
        assert "nested 100001 levels deep" in out and "past porter's limit of 200" in out, out
    assert not (tmp_path / "out").exists()


def test_recursion_in_keras_itself_is_bad_input(tmp_path):
    """A config under porter's depth limit that Keras cannot build without overflowing the stack (here: 60
    Sequentials one inside the other, 183 levels, on a small stack) is bad input naming the file, not a bug."""
    import inspect

    from porter.errors import PorterError
    from porter.checks.keras_archive import declared_weights
    from porter.checks.model_files import depth_of

    config = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2},
              "registered_name": None, "build_config": {"input_shape": [None, 4]}}
    for i in range(60):
        config = {"module": "keras", "class_name": "Sequential", "config": {"name": f"s{i}", "layers": [config]},
                  "registered_name": None}
    assert depth_of(json.dumps(config)) < 200
    assert declared_weights(config, "deep.keras").total == 40  # Keras builds it on Python's usual stack
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 100)
    try:
        with pytest.raises(PorterError, match=r"deep.keras: its config nests too deeply for Keras"):
            declared_weights(config, "deep.keras")
    finally:
        sys.setrecursionlimit(limit)


def test_legacy_h5_declaring_500m_units_is_refused(tmp_path, cli):
    import h5py
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs)).save(tmp_path / "bomb.h5")
    with h5py.File(tmp_path / "bomb.h5", "r+") as f:
        text = f.attrs["model_config"]
        f.attrs["model_config"] = (text.decode() if isinstance(text, bytes) else text).replace(UNITS, '"units": 500000000').encode()
    code, out = cli(*_convert(tmp_path / "bomb.h5", tmp_path / "out"))
    assert code == 2 and "bomb.h5" in out and "model_config declares 10,000,000,000 bytes" in out, out
    assert "'dense/kernel'" in out and "'model_weights' hold 60 bytes" in out, out
    assert not (tmp_path / "out").exists()


def test_legacy_h5_config_of_70mb_whitespace_is_refused_unread(tmp_path, cli):
    """tf_keras stores model_config as a variable-length string, whose size HDF5 tells only by reading it: it is
    bounded by the file's bytes outside its datasets."""
    import h5py
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs)).save(tmp_path / "bomb.h5")
    with h5py.File(tmp_path / "bomb.h5", "r+") as f:
        text = f.attrs["model_config"]
        del f.attrs["model_config"]
        f.attrs["model_config"] = (text.decode() if isinstance(text, bytes) else text) + " " * (70 << 20)
    code, out = cli(*_convert(tmp_path / "bomb.h5", tmp_path / "out"))
    assert code == 2 and "bomb.h5: attribute 'model_config' is a variable-length string in the 73,4" in out, out
    assert "past porter's limit of 67,108,864" in out, out
    assert not (tmp_path / "out").exists()


def test_keras_hub_preset_declaring_more_than_its_weights_is_refused(tmp_path, cli):
    from porter.zoo.keras_hub.entry import _keras_hub

    hub = _keras_hub()
    hub.models.GPT2Backbone(vocabulary_size=96, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                            max_sequence_length=16).save_to_preset(str(tmp_path / "preset"))
    config = json.loads((tmp_path / "preset" / "config.json").read_text())
    config["config"]["vocabulary_size"] = 500_000_000
    (tmp_path / "preset" / "config.json").write_text(json.dumps(config))
    code, out = cli(*_convert(tmp_path / "preset", tmp_path / "out"))
    assert code == 2 and "preset" in out and "config.json declares 16,0" in out and "model.weights.h5' holds" in out, out
    assert "token_embedding" in out and "500,000,000 x 8 float32" in out, out
    assert not (tmp_path / "out").exists()


def test_archive_entries_are_checked(tmp_path):
    """Two entries of one name, weights far past what the config declares (a stored bomb too), and weights
    that do not fit in memory are refused by what the archive and config declare."""
    from porter.errors import PorterError
    from porter.checks.keras_archive import check_keras_archive

    tiny = _tiny(tmp_path)
    twice = tmp_path / "twice.keras"
    with zipfile.ZipFile(tiny) as zin, zipfile.ZipFile(twice, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zout.writestr("config.json", zin.read("config.json"))
    with pytest.raises(PorterError, match="twice.keras: holds two entries named 'config.json'"):
        check_keras_archive(twice)

    padded = _rewrite(tiny, tmp_path / "padded.keras", "model.weights.h5",
                      lambda member, old: member.write(old + bytes(8 << 20)))
    with pytest.raises(PorterError, match=r"entry 'model.weights.h5' declares 8,\d{3},\d{3} bytes unpacked, past porter's limit"):
        check_keras_archive(padded)


def test_weights_past_the_memory_available_are_refused(tmp_path, monkeypatch):
    import porter.resources.memory_estimate
    from porter.errors import PorterError
    from porter.checks.keras_archive import check_keras_archive

    monkeypatch.setattr(porter.resources.memory_estimate, "available_bytes", lambda: 50)
    with pytest.raises(PorterError, match="declares 60 bytes of weights .* more than the 50 bytes of memory available"):
        check_keras_archive(_tiny(tmp_path))


# -- genuine models ------------------------------------------------------------------------------------


def _trained(tmp_path: Path) -> Path:
    """A model saved compiled after training: model.weights.h5 holds Adam's state (3x the weights) too."""
    import keras

    inputs = keras.Input((40,))
    model = keras.Model(inputs, keras.layers.Dense(30, name="dense")(inputs))
    model.compile("adam", "mse")
    model.fit(np.zeros((8, 40)), np.zeros((8, 30)), verbose=0)
    model.save(tmp_path / "trained.keras")
    return tmp_path / "trained.keras"


def test_genuine_models_still_convert(tmp_path, cli):
    import keras

    tiny = _tiny(tmp_path)
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs)).save(tmp_path / "tiny.h5")
    deflated = _rewrite(tiny, tmp_path / "deflated.keras", "model.weights.h5", lambda member, old: member.write(old),
                        zipfile.ZIP_DEFLATED)  # its HDF5 metadata read from a temporary copy, not the zip stream
    for model in (tiny, deflated, tmp_path / "tiny.h5", _trained(tmp_path)):
        code, out = cli(*_convert(model, tmp_path / f"out-{model.name}"))
        assert code == 0, out
        assert (tmp_path / f"out-{model.name}" / "model.safetensors").is_file()


def test_declared_weights_are_the_real_weights_and_nothing_is_allocated(tmp_path):
    import keras
    from keras.src.backend.common import global_state

    from porter.checks.keras_archive import archive_config, declared_weights

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    for path in (_tiny(tmp_path), _trained(tmp_path)):
        declared = declared_weights(archive_config(path), path)
        real = keras.saving.load_model(path, compile=False)
        assert declared.total == sum(v.numpy().nbytes for v in real.weights) and declared.count == len(real.weights)
    # the dropped models' variables are not left for Keras' next scope to initialize
    assert list(global_state.get_global_attribute("uninitialized_variables") or []) == pending
    big = json.loads(json.dumps(archive_config(path)).replace('"units": 30', '"units": 500000000'))
    declared = declared_weights(big, path)  # Keras builds it without allocating 80 GB
    assert declared.total == (40 + 1) * 500_000_000 * 4 and declared.largest[1] == (40, 500_000_000)


def test_weights_metadata_is_read_without_the_data(tmp_path, monkeypatch):
    import keras

    import porter.checks.keras_archive as ka

    inputs = keras.Input((1000,))
    keras.Model(inputs, keras.layers.Dense(4000, name="dense")(inputs)).save(tmp_path / "m.keras")  # 16 MB
    read = []
    original = ka._Window.readinto
    monkeypatch.setattr(ka._Window, "readinto", lambda self, buffer: read.append(original(self, buffer)) or read[-1])
    ka.check_keras_archive(tmp_path / "m.keras")
    assert 0 < sum(read) < 1e6, sum(read)

"""Weights move one tensor at a time with no extra full copy: safetensors read in their stored dtype
(bf16 bit-exact, never widened), the mapping drops each source array once its variable is filled,
and the .keras weights are written a slice at a time yet load back identically (safe_mode)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from porter.errors import PorterError


def _save(tmp_path, tensors):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_safetensors_read_in_stored_dtype_bit_exact(tmp_path, dtype):
    import torch

    from porter.readers.checkpoints import open_torch_checkpoint

    torch.manual_seed(0)
    weights = {"a.weight": torch.randn(7, 5).to(getattr(torch, dtype)), "b.bias": torch.randn(3).to(getattr(torch, dtype))}
    source = open_torch_checkpoint(_save(tmp_path, weights))
    for key, tensor in weights.items():
        array = source.get(key)
        assert str(array.dtype) == dtype and array.shape == tuple(tensor.shape)
        bits = array.view(np.uint16 if dtype != "float32" else np.uint32)
        expected = tensor.view(torch.int16 if dtype != "float32" else torch.int32).numpy().view(bits.dtype)
        np.testing.assert_array_equal(bits, expected)  # every bit, not within a tolerance


def test_truncated_safetensors_refused_naming_tensor(tmp_path):
    import torch

    from porter.readers.checkpoints import open_torch_checkpoint

    path = _save(tmp_path, {"w": torch.ones(64, 64)})
    source = open_torch_checkpoint(path)
    path.write_bytes(path.read_bytes()[:-100])  # cut after the shapes were read
    with pytest.raises(PorterError, match=r"'w'.*(cut short|truncated)"):
        source.get("w")


def test_mapping_drops_each_source_before_the_next_read():
    """A transposed tensor: its source must be gone by the time the next tensor is read."""
    from porter.mapping import Plan, Step, Transpose

    alive = []

    class Tracked(np.ndarray):
        pass

    def get(key):
        gc.collect()
        alive.append([r for r in refs if r() is not None])
        array = np.arange(12, dtype=np.float32).reshape(3, 4).view(Tracked) + int(key[1])
        refs.append(weakref.ref(array))
        return array

    refs: list = []
    steps = [Step(f"s{i}", f"s{i}", f"t{i}", (Transpose((1, 0)),), (3, 4), (4, 3)) for i in range(3)]
    out = {}
    for target, array in Plan(steps, []).run(get):
        out[target] = np.array(array)
        del array
    assert alive == [[], [], []]
    np.testing.assert_array_equal(out["t2"], np.arange(12, dtype=np.float32).reshape(3, 4).T + 2)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_streamed_keras_save_loads_identically(tmp_path, monkeypatch, dtype):
    import keras

    from porter.output import keras_h5_streaming
    from porter.process.frameworks import save_keras

    monkeypatch.setattr(keras_h5_streaming, "CHUNK_BYTES", 64)  # many slices per variable, and a ragged last one
    rng = np.random.default_rng(0)
    inputs = keras.Input((13,))
    model = keras.Model(inputs, keras.layers.Dense(37, dtype=dtype)(keras.layers.Dense(13, dtype=dtype)(inputs)))
    for v in model.weights:
        v.assign(rng.standard_normal(tuple(v.shape)).astype(np.float32))
    ours, theirs = tmp_path / "ours.keras", tmp_path / "theirs.keras"
    save_keras(model, ours)
    model.save(str(theirs))
    loaded = keras.saving.load_model(str(ours), safe_mode=True)
    reference = keras.saving.load_model(str(theirs), safe_mode=True)
    assert len(loaded.weights) == len(model.weights) == 4
    for mine, ref, orig in zip(loaded.weights, reference.weights, model.weights):
        assert mine.dtype == ref.dtype == dtype
        np.testing.assert_array_equal(np.asarray(mine.numpy(), np.float32), np.asarray(orig.numpy(), np.float32))
        np.testing.assert_array_equal(np.asarray(mine.numpy(), np.float32), np.asarray(ref.numpy(), np.float32))
    x = rng.standard_normal((2, 13)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x), np.float32), np.asarray(model(x), np.float32))

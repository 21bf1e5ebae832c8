"""Shared by tests/test_keras_layers_*.py: a tiny Keras model converted by the keras layers writer, compared with
Keras at two input shapes (fp32, abs 1e-5) and, where it has weights, one float64 `--train` step."""

import numpy as np
from tests_support import convert_keras_strict, load_written_model


def keras():
    from porter.process.frameworks import keras as _keras

    return _keras()


def informative(model, seed=0):
    """Biases and scales away from their init (zeros / ones): a weight mapped to the wrong place must show."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "int" in str(v.dtype) or not v.trainable:
            continue
        name = v.path.rsplit("/", 1)[-1]
        if name in ("bias", "beta") or name.endswith("_bias"):
            v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
        elif name in ("gamma", "scale"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


def check(model, feeds, tmp_path, train=True, atol=1e-5, float64_atol=1e-12):
    """``feeds``: two lists of input arrays (two shapes). Returns the written model.py text. The written module in
    float64 is also compared with the Keras model rebuilt in float64, relative to the output's scale
    (``float64_atol``, None where the layer does not allow it: the float32 difference alone says little about a
    mapping that is off by 1e-6)."""
    import torch

    out, result = convert_keras_strict(model, tmp_path)
    assert result.route == "keras layers", result.report.get("route_reason")
    assert result.passed, result.verification.failures()
    torch_model = load_written_model(out)
    for feed in feeds:
        want = model(feed if len(feed) > 1 else feed[0], training=False)  # not the call context's flag
        want = list(want) if isinstance(want, (list, tuple)) else [want]
        with torch.no_grad():
            got = torch_model(*[torch.from_numpy(np.asarray(a)) for a in feed])
        got = list(got) if isinstance(got, (list, tuple)) else [got]
        assert len(got) == len(want)
        for w, g in zip(want, got):
            assert tuple(g.shape) == tuple(np.shape(w))
            np.testing.assert_allclose(g.numpy(), np.asarray(w), atol=atol, rtol=0)
    _check_float64(model, torch_model, feeds, float64_atol)
    if train:
        from porter.verifiers.training import verify_training

        trained = verify_training(tmp_path / f"{model.name}.keras", out, lr=0.1)
        assert trained.passed, trained.to_dict()
        assert trained.dtype == "float64"
        assert max(g.max_abs for g in trained.groups if g.kind == "gradient") <= 1e-7  # float64: measured <= 5e-9 (attention)
    return (out / "model.py").read_text()


# Layers whose Keras float64 result is not exact float64 arithmetic, so 1e-12 cannot hold: tf.image.resize (Resizing,
# UpSampling2D bilinear, CenterCrop of a smaller image) computes in float32 whatever its input; TensorFlow has no
# float64 kernel for 3-D pooling.
FLOAT64_SKIPPED = {"Resizing", "CenterCrop", "AdaptiveAveragePooling3D", "AdaptiveMaxPooling3D", "MaxPooling3D",
                   "AveragePooling3D"}


def _check_float64(model, torch_model, feeds, float64_atol):
    import torch

    from porter.verifiers.training_float64 import keras_in_float64

    layers = list(model._flatten_layers(include_self=False))
    classes = {type(layer).__name__ for layer in layers}
    bilinear = any(type(layer).__name__ == "UpSampling2D" and layer.interpolation == "bilinear" for layer in layers)
    if float64_atol is None or classes & FLOAT64_SKIPPED or bilinear:
        return
    wide, why = keras_in_float64(model)
    assert wide is not None, f"the Keras model cannot be rebuilt in float64: {why}"
    torch_model = torch_model.double()
    try:
        for feed in feeds:
            feed = [np.asarray(a, np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in feed]
            want = wide(feed if len(feed) > 1 else feed[0], training=False)
            want = list(want) if isinstance(want, (list, tuple)) else [want]
            with torch.no_grad():
                got = torch_model(*[torch.from_numpy(a) for a in feed])
            got = list(got) if isinstance(got, (list, tuple)) else [got]
            for w, g in zip(want, got):
                w = np.asarray(w, np.float64)
                scale = max(1.0, float(np.abs(w).max()))
                np.testing.assert_allclose(g.numpy(), w, atol=float64_atol * scale, rtol=0,
                                           err_msg="float64: the written model against Keras in float64")
    finally:
        torch_model.float()


def mis_mapped(monkeypatch, cls, mutate):
    """The translator of ``cls`` with ``mutate(emit)`` applied to what it returns (a deliberately wrong mapping)."""
    from porter.keras_to_torch import codegen  # noqa: F401 (registers every translator)
    from porter.keras_to_torch import layers as L

    original = L.TRANSLATORS[cls]

    def wrapped(call, x, cfg):
        emit = original(call, x, cfg)
        mutate(emit)
        return emit

    wrapped.uses_mask = getattr(original, "uses_mask", False)
    monkeypatch.setitem(L.TRANSLATORS, cls, wrapped)


def fails_comparison(model, tmp_path) -> bool:
    """The conversion is written on the keras layers route (the weights fit by shape) and its comparison with Keras
    fails."""
    _, result = convert_keras_strict(model, tmp_path)
    return result.route == "keras layers" and not result.passed and bool(result.verification.failures())

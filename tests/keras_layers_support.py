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


def check(model, feeds, tmp_path, train=True, atol=1e-5):
    """``feeds``: two lists of input arrays (two shapes). Returns the written model.py text."""
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
    if train:
        from porter.verifiers.training import verify_training

        trained = verify_training(tmp_path / f"{model.name}.keras", out, lr=0.1)
        assert trained.passed, trained.to_dict()
        assert trained.dtype == "float64"
        assert max(g.max_abs for g in trained.groups if g.kind == "gradient") <= 1e-7  # float64: measured <= 5e-9 (attention)
    return (out / "model.py").read_text()

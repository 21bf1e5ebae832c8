"""A vision model whose graph torch.export can only trace at one image size (HF MobileNetV2's TF-style padding
guards on it) is written static at the model's own size (config.image_size), never dynamic with the traced
example's size baked into its paddings (that SavedModel ran wrong, not failed, at 224 after a trace at 336)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_specialised_image_size_is_static_at_the_config_size(cli, tmp_path):
    torch.manual_seed(0)
    model = transformers.MobileNetV2Model(transformers.MobileNetV2Config(image_size=64, depth_multiplier=0.35))
    model.train()
    with torch.no_grad():  # BatchNorm statistics from images: the output then depends on the input
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64))
    model.eval().save_pretrained(tmp_path / "mnv2")
    out = tmp_path / "tf"
    code, text = cli("convert", tmp_path / "mnv2", "--from", "torch", "--to", "tf", "--route", "graph", "--out", out)
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert set(report["dynamic_dims"]["pixel_values"]) == {"0"}, report["dynamic_dims"]  # batch only
    shapes = report["graph"]["shapes"][0]
    assert "2: 64 (static)" in shapes and "3: 64 (static)" in shapes, shapes

    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    got = serve(pixel_values=tf.constant(x))["last_hidden_state"].numpy()
    want = model(pixel_values=torch.from_numpy(x)).last_hidden_state.detach().numpy()
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())

"""Models for the verify tests: edited copies of porter's Keras BERT and tiny functional Keras models."""

from __future__ import annotations

import numpy as np

LAYER1_KERNEL = "bert/encoder/layer_._1/intermediate/dense/kernel"


def edited_keras(tf_folder, out, edit):
    """porter's model.keras from ``tf_folder`` with ``edit(variables_by_name)`` applied, saved to ``out``."""
    from porter.readers.artifacts import detect
    from porter.routes.tf_weights import load_keras_artifact
    from porter.zoo.bert.keras_model import variables_by_name

    model, _ = load_keras_artifact(detect(tf_folder / "model.keras"))
    edit(variables_by_name(model))
    model.save(str(out))
    return out


def perturb(variables, key=LAYER1_KERNEL, index=(3, 5), delta=1e-3):
    w = variables[key].numpy()
    w[index] += delta
    variables[key].assign(w)


def set_value(key, value):
    def edit(variables):
        w = variables[key].numpy()
        w[...] = value
        variables[key].assign(w)

    return edit


def functional(path, *, output="scores", seed=0, channels_first=False):
    """A small convolutional Keras model on images: NHWC input 'image' (or NCHW, transposed inside)."""
    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(seed)
    shape = (3, 8, 8) if channels_first else (8, 8, 3)
    x = k.Input(shape, name="image")
    h = k.layers.Permute((2, 3, 1))(x) if channels_first else x
    h = k.layers.Conv2D(4, 3, name="conv")(h)
    h = k.layers.GlobalAveragePooling2D()(h)
    model = k.Model(x, k.layers.Dense(5, name=output)(h))
    return model


def save_pair_same_weights(nhwc_path, nchw_path):
    """The same network twice: one taking NHWC images, one NCHW."""
    a = functional(nhwc_path)
    b = functional(nchw_path, channels_first=True)
    b.get_layer("conv").set_weights(a.get_layer("conv").get_weights())
    b.get_layer("scores").set_weights(a.get_layer("scores").get_weights())
    a.save(str(nhwc_path))
    b.save(str(nchw_path))
    return nhwc_path, nchw_path


def bert_feed(batch=2, seq=8, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, size=(batch, seq))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

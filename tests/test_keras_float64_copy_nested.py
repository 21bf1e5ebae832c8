"""keras_in_float64 on a model with a nested Sequential and an unnamed variable (ConvNeXt's downsampling blocks
and LayerScale): rebuilt from config, those variables' paths change (the Sequential's prefix is dropped, an
unnamed "variable" gets a new numeric suffix), which used to refuse the float64 copy of every ConvNeXt."""

import numpy as np

from porter.verifiers.training_float64 import _paired_variables, keras_in_float64


def _nested():
    from keras.src.applications.convnext import LayerScale

    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(0)
    image = k.Input((8, 8, 3), name="image")
    x = k.Sequential([k.layers.Conv2D(4, 2, strides=2, name="down_conv"),
                      k.layers.LayerNormalization(epsilon=1e-6, name="down_norm")], name="down_block")(image)
    scale = LayerScale(1e-6, 4, name="layer_scale")
    x = scale(x)
    scale.set_weights([np.linspace(0.5, 1.5, 4).astype("float32")])
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(image, k.layers.Dense(3, name="logits")(x), name="nested_net")


def test_nested_sequential_and_unnamed_variable_copied_in_float64():
    model = _nested()
    wide, why = keras_in_float64(model)
    assert wide is not None, why
    assert {str(v.dtype) for v in wide.weights} == {"float64"}
    for a, b in zip(model.weights, wide.weights):
        np.testing.assert_array_equal(np.asarray(a.numpy(), dtype="float64"), b.numpy())
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    assert float(np.abs(np.asarray(wide(x.astype("float64"))) - np.asarray(model(x))).max()) <= 1e-5


def test_pairing_refuses_a_different_layer_or_shape():
    class V:  # a variable's path and shape are all the pairing reads
        def __init__(self, path, shape):
            self.path, self.shape = path, shape

    old = [V("block/conv/kernel", (2, 2)), V("scale/variable", (4,))]
    assert _paired_variables(old, [V("conv/kernel", (2, 2)), V("scale/variable_7", (4,))]) is not None
    assert _paired_variables(old, [V("other/kernel", (2, 2)), V("scale/variable_7", (4,))]) is None  # layer differs
    assert _paired_variables(old, [V("conv/kernel", (2, 3)), V("scale/variable_7", (4,))]) is None  # shape differs
    assert _paired_variables(old, [V("conv/kernel", (2, 2))]) is None  # one missing

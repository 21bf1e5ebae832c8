"""The rule that conditions the keras.applications test models (benchmarks/keras_apps_all.py): every residual
branch's output scaled by 0.2, found from the functional graph alone. A branch is the Add input with more
weighted layers of its own; its last scaling layer (BatchNormalization gamma and beta, or a conv's kernel and
bias) is scaled; shortcuts and sibling branches of equal weight (NASNet) are left alone."""


import numpy as np
from tests_support import load_benchmark


def _bench():
    return load_benchmark("keras_apps_all")


def _keras():
    from porter.process.frameworks import keras

    return keras()


def _blocks():
    """An identity block ending in BN then Dropout, a projection block, a pre-activation block ending in a
    conv (ResNetV2) and an Add of two equal siblings."""
    k = _keras()
    k.utils.set_random_seed(0)
    L = k.layers
    image = k.Input((8, 8, 4), name="image")
    y = L.BatchNormalization(name="b1_bn1")(L.Conv2D(4, 3, padding="same", name="b1_conv1")(image))
    y = L.BatchNormalization(name="b1_bn2")(L.Conv2D(4, 3, padding="same", name="b1_conv2")(L.ReLU()(y)))
    x = L.Activation("relu", name="b1_out")(L.Add(name="b1_add")([image, L.Dropout(0.1)(y)]))
    short = L.BatchNormalization(name="b2_short_bn")(L.Conv2D(6, 1, name="b2_short_conv")(x))
    y = L.Conv2D(6, 3, padding="same", name="b2_conv2")(L.ReLU()(L.Conv2D(6, 3, padding="same", name="b2_conv1")(x)))
    x = L.Add(name="b2_add")([short, L.BatchNormalization(name="b2_bn2")(y)])
    y = L.Conv2D(6, 3, padding="same", name="b3_conv")(L.ReLU()(L.BatchNormalization(name="b3_preact")(x)))
    x = L.Add(name="b3_add")([x, y])
    x = L.Add(name="siblings")([L.Conv2D(6, 1, name="left")(x), L.Conv2D(6, 1, name="right")(x)])
    return k.Model(image, x)


def test_residual_branches_found_and_scaled():
    model = _blocks()
    for layer in model.layers:  # non-trivial gamma/beta/bias, so a scaled weight is told from an untouched one
        layer.set_weights([w + 0.5 for w in layer.get_weights()])
    before = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers}
    scaled = _bench().damp_residual_branches(model, 0.2)
    assert scaled == ["b1_bn2", "b2_bn2", "b3_conv"]
    for layer in model.layers:
        after = layer.get_weights()
        if layer.name == "b3_conv":  # kernel and bias
            assert all(np.allclose(a, 0.2 * b) for a, b in zip(after, before[layer.name]))
        elif layer.name in ("b1_bn2", "b2_bn2"):  # gamma and beta; the moving statistics as they were
            gamma, beta, mean, var = after
            old = before[layer.name]
            assert np.allclose(gamma, 0.2 * old[0]) and np.allclose(beta, 0.2 * old[1])
            assert np.array_equal(mean, old[2]) and np.array_equal(var, old[3])
        else:  # shortcuts, pre-activation norms, siblings
            assert all(np.array_equal(a, b) for a, b in zip(after, before[layer.name])), layer.name


def test_resnet_blocks_damp_the_last_bn_of_each_branch_never_the_projection():
    k = _keras()
    bench = _bench()
    v1 = bench.damp_residual_branches(k.applications.ResNet50(weights=None, input_shape=(32, 32, 3)), 0.2)
    assert len(v1) == 16 and all(name.endswith("_3_bn") for name in v1)  # 16 blocks; conv*_block1_0_bn untouched
    v2 = bench.damp_residual_branches(k.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3)), 0.2)
    assert len(v2) == 16 and all(name.endswith("_3_conv") for name in v2)  # pre-activation: the branch's last conv

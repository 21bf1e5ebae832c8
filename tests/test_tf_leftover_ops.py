"""TF ops tf2onnx 1.17 leaves in the ONNX graph (porter/routes/to_onnx_leftovers.py): the ones ONNX expresses
exactly (Erfc of the exact GELU, Expm1, Log1p, Xlogy, Xlog1py) are rewritten and the model converts end to end
(SavedModel -> tf2onnx -> porter's ONNX -> torch), verified against TF at several input shapes; the others
(Lgamma, Erfinv, Digamma, Ndtri, BesselI0e/I1e) are still refused, named as tf2onnx's leftovers."""

from __future__ import annotations

import numpy as np
import pytest


def _saved_module(path, fn):
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(0).normal(0, 0.5, (8, 8)).astype("float32"))
    module.f = tf.function(lambda x: {"y": fn(tf.matmul(x, module.w))},
                           input_signature=[tf.TensorSpec([None, None, 8], tf.float32, name="x")])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.f})
    return path


def _keras_block(path, activations):
    import keras

    x = keras.Input((None, 8), name="x")
    h = keras.layers.LayerNormalization()(x)
    for activation in activations:
        h = keras.layers.Dense(8, activation=activation)(h)
    keras.Model(x, keras.layers.Add()([x, keras.layers.Dense(8)(h)])).export(str(path), verbose=False)
    return path


def _converted(cli, source, out):
    code, text = cli("convert", source, "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    assert "PASSED" in text and "verified" in text, text
    return text


@pytest.mark.parametrize("name", ["gelu_exact", "erfc", "expm1", "log1p", "xlogy"])
def test_rewritten_tf_ops_convert_and_match(name, cli, tmp_path):
    import tensorflow as tf

    fns = {"gelu_exact": lambda h: tf.nn.gelu(h, approximate=False), "erfc": tf.math.erfc,
           "expm1": tf.math.expm1, "log1p": lambda h: tf.math.log1p(tf.abs(h)),
           "xlogy": lambda h: tf.math.xlogy(tf.nn.relu(h), tf.abs(h) + 1)}  # relu: exact zeros in x
    source = _saved_module(tmp_path / name, fns[name])
    text = _converted(cli, source, tmp_path / "out")
    # porter verifies against TF at several input shapes (batch and sequence both vary)
    assert "1x5x8" in text and "3x41x8" in text, text


def test_keras_transformer_block_with_exact_gelu_converts(cli, tmp_path):
    source = _keras_block(tmp_path / "block", ["gelu", "silu", "mish", "softplus", "elu", "selu"])
    text = _converted(cli, source, tmp_path / "out")
    assert "1x5x8" in text and "3x41x8" in text, text


def test_rewrite_in_onnx_graph_matches_tf_definitions():
    """The rewritten nodes compute what TF does (fp32, onnxruntime), zeros of xlogy included."""
    import onnx
    import onnxruntime
    import tensorflow as tf
    from onnx import TensorProto, helper

    from porter.routes.to_onnx_leftovers import foreign_nodes, rewrite_tf_leftovers

    for dtype, np_dtype in [(TensorProto.FLOAT, np.float32)]:  # onnxruntime has no fp64 Erf kernel
        ops = {"Erfc": tf.math.erfc, "Expm1": tf.math.expm1, "Log1p": tf.math.log1p,
               "Xlogy": tf.math.xlogy, "Xlog1py": tf.math.xlog1py}
        nodes = [helper.make_node(op, ["x"] + (["y"] if op.startswith("Xlog") else []), [op.lower()], name=op)
                 for op in ops]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, dtype, [6]) for n in "xy"],
                                  [helper.make_tensor_value_info(op.lower(), dtype, [6]) for op in ops])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
        assert rewrite_tf_leftovers(model.graph) == {op: 1 for op in ops}
        assert not foreign_nodes(model.graph)
        onnx.checker.check_model(model, full_check=True)
        x = np.array([0.0, 0.0, 1e-4, 0.5, 2.0, 3.0], np_dtype)
        y = np.array([0.0, 2.0, 0.3, 1.5, 0.7, 4.0], np_dtype)
        got = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x, "y": y})
        for (op, fn), value in zip(ops.items(), got):
            want = (fn(x, y) if op.startswith("Xlog") else fn(x)).numpy()
            np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=op)


@pytest.mark.parametrize("name", ["lgamma", "erfinv"])
def test_tf_ops_without_onnx_equivalent_are_still_named(name, cli, tmp_path):
    import tensorflow as tf

    fns = {"lgamma": lambda h: tf.math.lgamma(tf.abs(h) + 0.5), "erfinv": lambda h: tf.math.erfinv(tf.tanh(h) * 0.9)}
    source = _saved_module(tmp_path / name, fns[name])
    out = tmp_path / "out"
    code, text = cli("convert", source, "--from", "tf", "--to", "torch", "--out", out)
    assert code == 2, text
    op = {"lgamma": "Lgamma", "erfinv": "Erfinv"}[name]
    assert f"tf2onnx could not convert the TF ops {op} x1" in text and "no ONNX equivalent" in text, text
    assert not out.exists()

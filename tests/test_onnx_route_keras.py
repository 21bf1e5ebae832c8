"""A user's own Keras model (not a Keras application) TF -> torch on the ONNX route, the negative
checks of the route (a perturbed weight fails verification, in both directions), and --to tflite."""

import json

import numpy as np
import pytest
from tests_support import BATCH, save_pt2

import porter


def _keras_model(seed: int = 0):
    """Normalization (captured constants) + Conv2D + BatchNormalization + Dense, with the batch
    norm's gamma, beta and moving statistics moved away from their init values."""
    from porter.process.frameworks import keras

    k = keras()
    k.utils.set_random_seed(seed)
    image = k.Input((8, 8, 3), name="image")
    x = k.layers.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 2.0, 0.5])(image)
    x = k.layers.Conv2D(6, 3, padding="same", name="conv")(x)
    x = k.layers.BatchNormalization(name="norm")(x)
    x = k.layers.Activation("relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    logits = k.layers.Dense(4, name="logits")(x)
    model = k.Model(image, logits)
    rng = np.random.default_rng(seed)
    norm = model.get_layer("norm")
    gamma, beta, mean, var = norm.get_weights()
    norm.set_weights([gamma * rng.uniform(0.5, 1.5, gamma.shape), beta + rng.normal(0, 0.3, beta.shape),
                      mean + rng.normal(0, 0.3, mean.shape), var * rng.uniform(0.5, 2.0, var.shape)])
    return model


@pytest.fixture(scope="module")
def keras_src(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "small_cnn.keras"
    _keras_model().save(str(path))
    return path


@pytest.fixture(scope="module")
def keras_torch(keras_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "small_cnn-torch"
    result = porter.convert(str(keras_src), source="tf", target="torch", out=out, route="onnx")  # auto takes the keras-layers writer
    return out, result


def test_keras_model_to_torch(keras_torch):
    out, result = keras_torch
    assert result.route == "onnx" and result.passed, result.verification.failures()
    report = json.loads((out / "porter_report.json").read_text())
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    assert report["static_dims"] == [] and len(report["verification"]["shapes"]) == 2  # two batch sizes
    assert report["layout"] == {"inputs": {"image": "nhwc"}, "candidate": "nhwc"}
    code = (out / "model.py").read_text()
    assert "nn.Conv2d(3, 6" in code and "nn.Linear(in_features=6, out_features=4, bias=True)" in code


def test_tf2onnx_export_keeps_only_the_model_inputs(keras_src, tmp_path):
    """The Normalization layer's captured mean and variance become constants, not graph inputs,
    and no initializer is left that no node reads."""
    import onnx

    from porter.process.frameworks import keras
    from porter.routes.to_onnx import keras_to_onnx

    model = keras().models.load_model(str(keras_src))
    keras_to_onnx(model, tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["logits"]
    used = {i for n in graph.node for i in n.input}
    assert [i.name for i in graph.initializer if i.name not in used] == []


def test_perturbed_torch_weight_fails_verification(cli, keras_src, keras_torch, tmp_path):
    """One conv weight moved by 1e-3 in the written model.safetensors: porter verify must fail."""
    import shutil

    from safetensors.numpy import load_file, save_file

    out, _ = keras_torch
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    weights = load_file(str(bad / "model.safetensors"))
    conv = next(k for k, v in weights.items() if v.ndim == 4)
    weights[conv] = weights[conv].copy()
    weights[conv].flat[5] += 1e-3
    save_file(weights, str(bad / "model.safetensors"))
    code, output = cli("verify", keras_src, bad)
    assert code == 1, output
    code, output = cli("verify", keras_src, out)
    assert code == 0, output


def test_perturbed_source_fails_against_old_tf_conversion(cli, tmp_path):
    """torch -> TF: a SavedModel converted from one module must not verify against that module
    with one weight moved by 1e-3."""
    import torch
    from test_onnx_route import _custom_module

    model = _custom_module()
    path = save_pt2(model, torch.randn(2, 3, 8, 8), tmp_path / "m.pt2", BATCH)
    out = tmp_path / "tf"
    code, output = cli("convert", path, "--from", "torch", "--to", "tf", "--out", out)
    assert code == 0, output
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] += 1e-3
    moved = save_pt2(model, torch.randn(2, 3, 8, 8), tmp_path / "moved.pt2", BATCH)
    code, output = cli("verify", moved, out)
    assert code == 1, output


def test_torch_to_tflite(cli, tmp_path):
    import torch
    from test_onnx_route import _custom_module

    path = save_pt2(_custom_module(), torch.randn(2, 3, 8, 8), tmp_path / "m.pt2")
    out = tmp_path / "tflite"
    code, output = cli("convert", path, "--from", "torch", "--to", "tflite", "--out", out)
    assert code == 0, output
    assert (out / "model.tflite").is_file()
    report = json.loads((out / "porter_report.json").read_text())
    assert report["to"] == "tflite" and report["status"] == "passed"
    assert report["verification"]["candidate"].endswith("model.tflite")
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5


@pytest.mark.parametrize("kind", ["h5", "saved_model"])
def test_legacy_formats_to_torch(cli, kind, tmp_path):
    """A Keras .h5 file and a bare SavedModel (Keras' model.export: a serving signature, no .keras)."""
    model = _keras_model(seed=1)
    src = tmp_path / ("model.h5" if kind == "h5" else "exported")
    if kind == "h5":
        model.save(str(src))
    else:
        model.export(str(src), verbose=False)
    out = tmp_path / "torch"
    code, output = cli("convert", src, "--from", "tf", "--to", "torch", "--layout", "nchw", "--route", "onnx", "--out", out)
    assert code == 0, output
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "onnx" and report["status"] == "passed"
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    assert report["layout"]["candidate"] == "nchw"
    import torch
    from tests_support import load_written_model

    module = load_written_model(out)
    x = np.random.default_rng(3).standard_normal((5, 8, 8, 3)).astype("float32")
    got = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    assert np.abs(got.detach().numpy() - model(x).numpy()).max() <= 1e-5


def test_convert_verifies_on_given_inputs(cli, keras_src, tmp_path):
    x = np.random.default_rng(7).standard_normal((3, 8, 8, 3)).astype("float32")
    npz = tmp_path / "inputs.npz"
    np.savez(npz, image=x)
    out = tmp_path / "torch"
    code, output = cli("convert", keras_src, "--from", "tf", "--to", "torch", "--inputs", npz, "--out", out)
    assert code == 0, output
    report = json.loads((out / "porter_report.json").read_text())
    assert [s["label"] for s in report["verification"]["shapes"]] == ["3x8x8x3"]


def test_convert_inputs_that_do_not_fit_are_bad_input(cli, keras_src, tmp_path):
    npz = tmp_path / "inputs.npz"
    np.savez(npz, pixels=np.zeros((1, 8, 8, 3), "float32"))
    out = tmp_path / "torch"
    code, output = cli("convert", keras_src, "--from", "tf", "--to", "torch", "--inputs", npz, "--out", out)
    assert code == 2 and "pixels" in output, output
    assert not out.exists() and not list(tmp_path.glob(".torch.tmp-*"))
    code, output = cli("convert", keras_src, "--from", "tf", "--to", "torch", "--inputs", tmp_path / "missing.npz", "--out", out)
    assert code == 2 and "missing.npz" in output, output


def test_direct_route_verifies_on_given_inputs(cli, tiny_bert, tmp_path):
    rng = np.random.default_rng(8)
    npz = tmp_path / "inputs.npz"
    np.savez(npz, input_ids=rng.integers(1, 99, (3, 5)), attention_mask=np.ones((3, 5), np.int64),
             token_type_ids=np.zeros((3, 5), np.int64))
    out = tmp_path / "tf"
    code, output = cli("convert", tiny_bert, "--from", "torch", "--to", "tf", "--inputs", npz, "--out", out)
    assert code == 0, output
    report = json.loads((out / "porter_report.json").read_text())
    assert report["route"] == "direct" and [s["label"] for s in report["verification"]["shapes"]] == ["3x5"]


def test_tf_to_onnx_and_onnx_to_tf(cli, keras_src, tmp_path):
    """--to onnx is checked against onnxruntime; that ONNX file then goes on to a SavedModel."""
    onnx_out = tmp_path / "onnx"
    code, output = cli("convert", keras_src, "--from", "tf", "--to", "onnx", "--out", onnx_out)
    assert code == 0, output
    report = json.loads((onnx_out / "porter_report.json").read_text())
    assert report["verification"]["candidate"].endswith("model.onnx") and report["static_dims"] == []
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    tf_out = tmp_path / "tf"
    code, output = cli("convert", onnx_out / "model.onnx", "--from", "onnx", "--to", "tf", "--out", tf_out, "--static-shapes")
    assert code == 0, output
    report = json.loads((tf_out / "porter_report.json").read_text())
    # with --static-shapes the batch may be fixed where torch.export specialises it; the report says which
    assert report["from"] == "onnx" and {(d["input"], d["axis"]) for d in report["static_dims"]} <= {("image", 0)}
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-5
    code, output = cli("verify", keras_src, tf_out)  # the round trip, against the original Keras model
    assert code == 0, output


def test_porters_own_saved_model_on_the_onnx_route(tmp_path, cli):
    """porter's BERT converts and exports as a subclassed Keras model (no input layers): its SavedModel folder goes to
    ONNX by its serving signature (this was an internal error). Its model.keras is a Functional model of keras-hub's
    layers (zoo/bert/portable.py), which goes to ONNX by its own dict signature, verified on the zoo's inputs; a
    model.keras of an earlier porter (the subclassed porter>BertModel) is refused by name with exit 2."""
    from conftest import TINY_BERT, make_hf_checkpoint

    # gelu_new: tf2onnx has no Erf, so the erf-based GELU of tiny_bert would stop the route there
    ckpt = make_hf_checkpoint(tmp_path / "hf", dict(TINY_BERT, hidden_act="gelu_new"))
    tf_out = porter.convert(str(ckpt), source="torch", target="tf", out=tmp_path / "tf")
    assert tf_out.passed
    code, text = cli("convert", tmp_path / "tf", "--from", "tf", "--to", "torch", "--route", "onnx", "--out", tmp_path / "torch")
    assert code == 0, text
    report = json.loads((tmp_path / "torch" / "porter_report.json").read_text())
    assert report["status"] == "passed" and report["route"] == "onnx"
    assert all(o["max_abs"] <= 1e-5 for s in report["verification"]["shapes"] for o in s["outputs"])
    code, text = cli("convert", tmp_path / "tf" / "model.keras", "--from", "tf", "--to", "torch", "--route", "onnx",
                     "--out", tmp_path / "keras-torch")
    assert code == 0, text
    report = json.loads((tmp_path / "keras-torch" / "porter_report.json").read_text())
    assert report["status"] == "passed" and report["route"] == "onnx"
    assert [s["label"] for s in report["verification"]["shapes"]] == ["1x5", "3x5", "1x41", "3x41"]  # the zoo's inputs
    assert all(o["max_abs"] <= 1e-5 for s in report["verification"]["shapes"] for o in s["outputs"])

    from porter.process.frameworks import save_keras
    from porter.readers.artifacts import detect
    from porter.routes.tf_weights import load_keras_artifact

    (tmp_path / "old").mkdir()
    save_keras(load_keras_artifact(detect(tmp_path / "tf" / "model.keras"))[0], tmp_path / "old" / "model.keras")
    code, text = cli("convert", tmp_path / "old" / "model.keras", "--from", "tf", "--to", "torch", "--route", "onnx",
                     "--out", tmp_path / "old-torch")
    assert code == 2 and "subclassed Keras model (BertModel)" in text and "--route direct" in text, text
    assert "Traceback" not in text and not (tmp_path / "old-torch").exists()


def test_keras_model_with_dict_inputs_and_outputs_on_the_onnx_route(tmp_path, cli):
    """A Functional model called on a dict, returning a dict (keras-hub's style): exported under its keys, verified
    (this was a tf2onnx failure: the model was called on a list)."""
    import keras

    a, b = keras.Input((6,), name="first"), keras.Input((4,), name="second")
    joined = keras.layers.Concatenate()([keras.layers.Dense(5, activation="tanh")(a), b])
    model = keras.Model({"first": a, "second": b},
                        {"score": keras.layers.Dense(2)(joined), "hidden": keras.layers.Dense(3)(joined)})
    model.save(str(tmp_path / "dict.keras"))
    code, text = cli("convert", tmp_path / "dict.keras", "--from", "tf", "--to", "torch", "--route", "onnx",
                     "--out", tmp_path / "torch")
    assert code == 0, text
    report = json.loads((tmp_path / "torch" / "porter_report.json").read_text())
    names = {o["name"] for s in report["verification"]["shapes"] for o in s["outputs"]}
    assert report["status"] == "passed" and names == {"score", "hidden"}, report["verification"]
    # the keras layers writer (route auto) names model.py's outputs by the same keys (this was an internal error)
    code, text = cli("convert", tmp_path / "dict.keras", "--from", "tf", "--to", "torch", "--out", tmp_path / "layers")
    assert code == 0, text
    report = json.loads((tmp_path / "layers" / "porter_report.json").read_text())
    pairs = {(o["name"], s["label"]) for s in report["verification"]["shapes"] for o in s["outputs"]}
    assert report["status"] == "passed" and {n for n, _ in pairs} == {"score", "hidden"}, report["verification"]
    assert not any("paired by position" in n for n in report["verification"]["notes"])

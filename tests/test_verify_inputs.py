"""`porter verify` inputs and bad input: generated input sets, --inputs .npz matching, declared layouts,
and every bad input (missing file, unknown format, npz name/dtype/rank, output names) exiting 2."""

import json

import numpy as np
import pytest

from verify_support import bert_feed, functional, save_pair_same_weights


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The same small conv net as NHWC and NCHW .keras files, and a different-output-name twin."""
    root = tmp_path_factory.mktemp("images")
    nhwc, nchw = save_pair_same_weights(root / "nhwc.keras", root / "nchw.keras")
    functional(root / "logits.keras", output="logits").save(str(root / "logits.keras"))
    return {"nhwc": nhwc, "nchw": nchw, "logits": root / "logits.keras", "root": root}


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_generated_inputs_follow_the_signature(cli, images, tmp_path):
    code, output = cli("verify", images["nhwc"], images["nhwc"], "--report", tmp_path / "r.json")
    assert code == 0, output
    report = json.loads((tmp_path / "r.json").read_text())
    # only the batch is dynamic: two batch sizes, the static image size kept
    assert [s["input_shapes"]["image"] for s in report["shapes"]] == [[1, 8, 8, 3], [3, 8, 8, 3]]


def test_generated_token_ids_stay_in_the_vocabulary(tiny_bert):
    from porter.verifiers.inputs import generate, zoo_of
    from porter.verifiers.runners import open_runner

    with open_runner(tiny_bert) as runner:
        sets = generate(runner, zoo_of(runner))
    assert {tuple(f["input_ids"].shape) for f in sets.feeds} == {(1, 5), (3, 5), (1, 41), (3, 41)}
    for feed in sets.feeds:
        assert feed["input_ids"].min() >= 0 and feed["input_ids"].max() < 99
        assert (feed["attention_mask"] == 0).any() or len(feed["attention_mask"]) == 1  # padding present (batch > 1)
        assert (feed["input_ids"][feed["attention_mask"] == 0] == 0).all()


def test_generic_signature_inputs():
    from porter.verifiers.inputs import generate

    class Fake:
        name, input_names = "fake", ["input_ids", "attention_mask", "pixels"]
        input_specs = {"input_ids": ("int64", (None, None)), "attention_mask": ("int64", (None, None)), "pixels": ("float32", (None, 3, None, None))}

    sets = generate(Fake())
    assert len(sets.feeds) == 4 and any("no vocabulary size" in n for n in sets.notes)
    shapes = {(f["input_ids"].shape, f["pixels"].shape) for f in sets.feeds}
    assert shapes == {((b, s), (b, 3, h, h)) for b in (1, 3) for s, h in ((5, 32), (41, 48))}
    feed = sets.feeds[-1]
    assert feed["pixels"].dtype == np.float32 and 0.5 < feed["pixels"].std() < 1.5
    assert (feed["attention_mask"] == 0).any() and feed["input_ids"].max() < 100


def test_declared_layout(cli, images, tmp_path):
    code, output = cli("verify", images["nhwc"], images["nchw"])
    assert code == 2 and "could not run the inputs" in output and "--layout" in output
    code, output = cli("verify", images["nhwc"], images["nchw"], "--layout", "nhwc-to-nchw")
    assert code == 0, output
    code, output = cli("verify", images["nhwc"], images["nchw"], "--layout", "image=nhwc-to-nchw")
    assert code == 0, output
    # declared by the converted folder's porter_report.json, applied forwards and backwards
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "model.keras").write_bytes(images["nchw"].read_bytes())
    (folder / "porter_report.json").write_text(json.dumps({"route": "onnx", "layout": {"inputs": {"image": "nhwc"}, "candidate": "nchw"}}))
    code, output = cli("verify", images["nhwc"], folder / "model.keras")
    assert code == 0 and "layout: image: nhwc -> nchw" in output, output
    code, output = cli("verify", folder / "model.keras", images["nhwc"])
    assert code == 0 and "layout: image: nchw -> nhwc" in output, output
    code, output = cli("verify", images["nhwc"], folder / "model.keras", "--layout", "none")
    assert code == 2 and "could not run the inputs" in output


def test_layout_units():
    from porter.errors import PorterError
    from porter.verifiers import layout

    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert layout.apply({"x": x}, layout.parse("nchw-to-nhwc"))["x"].shape == (2, 4, 5, 3)
    assert layout.apply({"x": x}, layout.parse(["x=nhwc-to-nchw"]))["x"].shape == (2, 5, 3, 4)
    back = layout.apply(layout.apply({"x": x}, layout.parse("nchw-to-nhwc")), layout.parse("nhwc-to-nchw"))["x"]
    assert np.array_equal(back, x)
    assert layout.apply({"ids": x[0, 0]}, layout.parse("nchw-to-nhwc"))["ids"].shape == (4, 5)  # rank 2 untouched
    with pytest.raises(PorterError, match="not understood"):
        layout.parse("nchw-nhwc")
    with pytest.raises(PorterError, match="not inputs"):
        layout.apply({"x": x}, layout.parse("y=nchw-to-nhwc"))


def test_missing_file(cli, images, tmp_path):
    code, output = cli("verify", tmp_path / "nope", images["nhwc"])
    assert code == 2 and "nope" in output and "does not exist" in output
    code, output = cli("verify", images["nhwc"], images["nhwc"], "--inputs", tmp_path / "none.npz")
    assert code == 2 and "none.npz" in output and "does not exist" in output


def test_unknown_format(cli, images, tmp_path):
    (tmp_path / "mystery").mkdir()
    (tmp_path / "mystery" / "weights.bin").write_bytes(b"\0" * 16)
    code, output = cli("verify", images["nhwc"], tmp_path / "mystery")
    assert code == 2 and "cannot tell what" in output and "mystery" in output


@pytest.mark.parametrize(
    "arrays, needles",
    [
        ({"pixels": np.zeros((2, 8, 8, 3), np.float32)}, ["'pixels' is not an input", "input 'image' is missing"]),
        ({"image": np.zeros((2, 8, 8, 3), np.int64)}, ["'image' is int64 (integer)", "float32 (float)"]),
        ({"image": np.zeros((2, 8, 8), np.float32)}, ["'image' has rank 3", "rank 4"]),
        ({"image": np.zeros((2, 8, 8, 4), np.float32)}, ["'image' has shape (2, 8, 8, 4)"]),
        ({"0/image": np.zeros((2, 8, 8, 3), np.float32), "image": np.zeros((2, 8, 8, 3), np.float32)}, ["mixes plain names"]),
    ],
)
def test_npz_that_does_not_match(cli, images, tmp_path, arrays, needles):
    code, output = cli("verify", images["nhwc"], images["nhwc"], "--inputs", _npz(tmp_path / "in.npz", **arrays), "--report", tmp_path / "r.json")
    assert code == 2, output
    for needle in needles:
        assert needle in output, output
    assert not (tmp_path / "r.json").exists()


def test_npz_names_checked_for_zoo_models(cli, tiny_bert, tiny_bert_tf, tmp_path):
    feed = bert_feed()
    feed["input_ids"] = feed["input_ids"].astype(np.float32)
    code, output = cli("verify", tiny_bert, tiny_bert_tf, "--inputs", _npz(tmp_path / "in.npz", **feed))
    assert code == 2 and "'input_ids' is float32" in output


def test_mismatched_output_names_paired_by_position(cli, images):
    # one output each, named differently (same seeded weights): compared by position and said so
    # (issue 8); counts that differ, and a perturbed twin that must fail: tests/test_pairing.py
    code, output = cli("verify", images["nhwc"], images["logits"])
    assert code == 0, output
    assert "outputs paired by position: scores -> logits" in output


def test_bad_flags(cli, images):
    code, output = cli("verify", images["nhwc"], images["nhwc"], "--atol", "tight")
    assert code == 2 and "--atol 'tight'" in output
    code, output = cli("verify", images["nhwc"], images["nhwc"], "--layout", "sideways")
    assert code == 2 and "--layout 'sideways'" in output
    code, output = cli("verify", images["nhwc"], images["nhwc"], "--device", "tpu")
    assert code == 2 and "--device 'tpu'" in output
    code, output = cli("check", images["root"] / "porter.toml")
    assert code == 2 and "does not exist" in output

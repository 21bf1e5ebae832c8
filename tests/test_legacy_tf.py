"""transformers 4.x TF checkpoints (tests/fixtures/legacy_tf, made by make_legacy_tf.py with transformers
4.57.6 + TF 2.19) -> HF PyTorch folders by the legacy rule family, checked against TF's recorded outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_tf"
NAMES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
MAX_ABS = 1e-5  # fp32: TF 4.57 vs transformers 5 PyTorch on the same weights


def _files(name):
    return FIXTURES / name, FIXTURES / name / "expected.npz", FIXTURES / name / "inputs.npz"


@pytest.mark.parametrize("name", NAMES)
def test_converts_and_matches_tf_recorded_outputs(name, tmp_path):
    import transformers

    import porter

    folder, expected, inputs = _files(name)
    out = tmp_path / "pt"
    result = porter.convert(str(folder), source="tf", target="torch", out=out, expected=expected, inputs=inputs)
    assert result.passed, result.verification.failures()
    compared = {o.name: o.max_abs for s in result.verification.shapes for o in s.outputs}
    assert set(compared) == set(np.load(expected).files)
    assert all(v <= MAX_ABS for v in compared.values()), compared
    print(f"{name}: {compared}")
    report = json.loads((out / "porter_report.json").read_text())
    assert report["status"] == "passed" and report["reference"] == f"recorded outputs: {expected}"
    cls = getattr(transformers, report["architecture"])
    _, info = cls.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_batchnorm_statistics_are_moved_and_counter_filled(tmp_path):
    from safetensors.numpy import load_file

    import porter

    out = tmp_path / "resnet"
    porter.convert(str(FIXTURES / "resnet"), source="tf", target="torch", out=out)
    state = load_file(str(out / "model.safetensors"))
    var = state["embedder.embedder.normalization.running_var"]
    assert not np.allclose(var, 1.0) and (var > 0).all()  # TF's moving_variance, not torch's init
    assert state["embedder.embedder.normalization.num_batches_tracked"].dtype == np.int64


def test_no_reference_is_mapped_not_compared(cli, tmp_path):
    out = tmp_path / "out"
    code, text = cli("convert", FIXTURES / "resnet", "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    assert "weights mapped and checked, no outputs compared (no reference: pass --expected/--inputs)" in text
    assert "mapped, not compared" in text and "verified" not in text
    assert "--expected expected.npz --inputs inputs.npz" in " ".join(text.split())  # how a user can compare
    report = json.loads((out / "porter_report.json").read_text())
    assert report["status"] == "mapped, not compared" and "verification" not in report
    assert report["reference"] is None and any("transformers 4.x" in n for n in report["notes"])


def test_perturbed_expected_fails(cli, tmp_path):
    folder, expected, inputs = _files("gpt2")
    recorded = dict(np.load(expected))
    recorded["logits"][0, 2, 5] += 1e-3
    np.savez(tmp_path / "bad.npz", **recorded)
    code, text = cli("convert", folder, "--from", "tf", "--to", "torch", "--out", tmp_path / "out",
                     "--expected", tmp_path / "bad.npz", "--inputs", inputs)
    assert code == 1, text
    assert json.loads((tmp_path / "out" / "porter_report.json").read_text())["status"] == "failed"


def test_perturbed_h5_weight_fails(cli, tmp_path):
    import h5py

    folder, expected, inputs = _files("bert")
    copy = shutil.copytree(folder, tmp_path / "bert")
    with h5py.File(copy / "tf_model.h5", "r+") as f:
        ds = f["bert/tf_bert_model/bert/encoder/layer_._1/output/LayerNorm/gamma:0"]
        ds[3] = ds[3] + 0.01
    code, text = cli("convert", copy, "--from", "tf", "--to", "torch", "--out", tmp_path / "out",
                     "--expected", expected, "--inputs", inputs)
    assert code == 1, text


def test_verify_with_recorded_outputs(cli, tmp_path):
    import porter

    folder, expected, inputs = _files("convnext")
    out = tmp_path / "pt"
    porter.convert(str(folder), source="tf", target="torch", out=out)
    code, text = cli("verify", folder, out, "--expected", expected, "--inputs", inputs)
    assert code == 0, text
    assert "recorded outputs" in text
    recorded = dict(np.load(expected))
    recorded["pooler_output"] = recorded["pooler_output"] * 1.001
    np.savez(tmp_path / "bad.npz", **recorded)
    code, text = cli("verify", folder, out, "--expected", tmp_path / "bad.npz", "--inputs", inputs)
    assert code == 1, text


# -- bad input: exit 2, one message naming the file/tensor/key, nothing written ------------------------------
def _refused(cli, tmp_path, source, *extra):
    out = tmp_path / "out"
    code, text = cli("convert", source, "--from", "tf", "--to", "torch", "--out", out, *extra)
    assert code == 2, text
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    return text


def test_h5_without_layer_names_is_refused(cli, tmp_path):
    import h5py

    folder = tmp_path / "notf"
    folder.mkdir()
    shutil.copy(FIXTURES / "albert" / "config.json", folder)
    with h5py.File(folder / "tf_model.h5", "w") as f:
        f["x"] = np.zeros(3)
    text = _refused(cli, tmp_path, folder)
    assert "tf_model.h5" in text and "layer_names" in text


def test_architecture_missing_in_transformers_is_refused(cli, tmp_path):
    copy = shutil.copytree(FIXTURES / "albert", tmp_path / "albert")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(dict(config, architectures=["AlbertForTimeTravel"])))
    text = _refused(cli, tmp_path, copy)
    assert "AlbertForTimeTravel" in text and "config.json" in text


def test_unused_and_unfilled_tensors_are_listed_together(cli, tmp_path):
    import h5py

    copy = shutil.copytree(FIXTURES / "bert", tmp_path / "bert")
    with h5py.File(copy / "tf_model.h5", "r+") as f:
        group = f["bert"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        gone = "tf_bert_model/bert/pooler/dense/bias:0"
        extra = "tf_bert_model/bert/pooler/extra/kernel:0"
        group[extra] = np.zeros((4, 4), np.float32)
        group.attrs["weight_names"] = [n.encode() for n in names if n != gone] + [extra.encode()]
    text = _refused(cli, tmp_path, copy, "--expected", FIXTURES / "bert" / "expected.npz",
                    "--inputs", FIXTURES / "bert" / "inputs.npz")
    assert "pooler.dense.bias" in text and "pooler/extra/kernel" in text and "2 problem(s)" in text


@pytest.mark.parametrize("change", ["name", "shape"])
def test_expected_that_does_not_match_is_refused(cli, tmp_path, change):
    folder, expected, inputs = _files("vit")
    recorded = dict(np.load(expected))
    if change == "name":
        recorded["hidden"] = recorded.pop("last_hidden_state")
    else:
        recorded["pooler_output"] = recorded["pooler_output"][:, :5]
    np.savez(tmp_path / "odd.npz", **recorded)
    text = _refused(cli, tmp_path, folder, "--expected", tmp_path / "odd.npz", "--inputs", inputs)
    assert ("'hidden'" if change == "name" else "'pooler_output'") in text and "--expected" in text


def test_expected_needs_inputs(cli, tmp_path):
    text = _refused(cli, tmp_path, FIXTURES / "vit", "--expected", FIXTURES / "vit" / "expected.npz")
    assert "--inputs" in text


def test_sharded_checkpoint_is_read_shard_by_shard():
    from porter.readers.legacy_h5 import LegacyH5Checkpoint

    ckpt = LegacyH5Checkpoint(FIXTURES / "bert_seqcls_sharded")
    assert len({ckpt.file_of(k) for k in ckpt.shapes}) == 5
    assert "_/classifier/kernel:0" in ckpt.shapes  # the model's own name, dropped by the shard format, stands as '_'


def test_deberta_v2_tensors_land_on_the_parameter_of_their_role(tmp_path):
    """TFDebertaV2 names the relative-position projections pos_proj / pos_q_proj (torch: pos_key_proj /
    pos_query_proj, same shapes: a swap would load silently) and keeps the encoder conv as (k, in, out)
    (torch Conv1d: (out, in, k)). deberta_v3 has the conv layer, rel-embedding LayerNorm and share_att_key."""
    import h5py
    from safetensors.numpy import load_file

    import porter

    for name, pairs in {
        "deberta_v2": {"encoder/layer_._0/attention/self/pos_proj/kernel:0": ("encoder.layer.0.attention.self.pos_key_proj.weight", (1, 0)),
                       "encoder/layer_._1/attention/self/pos_q_proj/kernel:0": ("encoder.layer.1.attention.self.pos_query_proj.weight", (1, 0)),
                       "encoder/rel_embeddings.weight:0": ("encoder.rel_embeddings.weight", (0, 1))},
        "deberta_v3": {"encoder/conv/conv/kernel:0": ("encoder.conv.conv.weight", (2, 1, 0)),
                       "encoder/conv/LayerNorm/gamma:0": ("encoder.conv.LayerNorm.weight", (0,)),
                       "encoder/LayerNorm/gamma:0": ("encoder.LayerNorm.weight", (0,)),
                       "encoder/rel_embeddings.weight:0": ("encoder.rel_embeddings.weight", (0, 1))},
    }.items():
        folder, expected, inputs = _files(name)
        out = tmp_path / name
        result = porter.convert(str(folder), source="tf", target="torch", out=out, expected=expected, inputs=inputs)
        assert result.passed
        torch_side = load_file(out / "model.safetensors")
        with h5py.File(folder / "tf_model.h5") as f:
            tf_side = {}
            f.visititems(lambda n, o: tf_side.__setitem__(n, o[()]) if hasattr(o, "shape") else None)
        for tf_name, (pt_name, perm) in pairs.items():
            (value,) = [v for k, v in tf_side.items() if k.endswith("/deberta/" + tf_name)]
            assert np.array_equal(torch_side[pt_name], np.transpose(value, perm)), (name, tf_name, pt_name)


@pytest.mark.parametrize("name", ["deberta", "deberta_v2", "deberta_v3", "deberta_v2_long"])
def test_deberta_differs_from_tf_only_at_padding_and_says_so(name, cli, tmp_path):
    """Issue 20's DeBERTa-v2 '3.55 off TF': the weights map right (every unpadded position matches TF's recorded
    outputs), the difference sits where attention_mask == 0: TF 4.x's XSoftmax zeroes a padded query row,
    transformers 5's PyTorch DeBERTa attends evenly there. The conversion says so, with or without --expected."""
    import torch
    import transformers

    folder, expected, inputs = _files(name)
    out = tmp_path / "pt"
    code, text = cli("convert", folder, "--from", "tf", "--to", "torch", "--out", out)
    assert code == 0, text
    flat = " ".join(text.split())
    assert "mapped, not compared" in flat and "padded positions differ by design" in flat
    report = json.loads((out / "porter_report.json").read_text())
    assert report["status"] == "mapped, not compared"
    assert any("padded positions differ by design" in n for n in report["notes"])
    model = getattr(transformers, report["architecture"]).from_pretrained(out).eval()
    feed = dict(np.load(inputs))
    with torch.no_grad():
        got = model(**{k: torch.from_numpy(v).long() for k, v in feed.items()})
    valid = feed["attention_mask"].astype(bool)
    assert not valid.all()
    for key, want in np.load(expected).items():
        diff = np.abs(got[key].numpy() - want)
        print(f"{name} {key}: unpadded {diff[valid].max():.3g}, padded {diff[~valid].max():.3g}")
        assert diff[valid].max() <= MAX_ABS


def test_multiple_choice_head_is_compared_on_batch_by_choices_inputs(cli, tmp_path):
    """TFDebertaV2ForMultipleChoice takes input_ids batch x choices x sequence and gives logits batch x choices:
    the converted model is described with those inputs (hf_source.describe assumed batch x sequence and crashed
    running it), so --expected compares its logits, on convert and on verify."""
    folder, expected, inputs = _files("deberta_v2_choice")
    assert np.load(inputs)["input_ids"].ndim == 3 and np.load(expected)["logits"].ndim == 2
    out = tmp_path / "pt"
    code, text = cli("convert", folder, "--from", "tf", "--to", "torch", "--out", out,
                     "--expected", expected, "--inputs", inputs)
    assert code == 0, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["architecture"] == "DebertaV2ForMultipleChoice" and report["status"] == "passed"
    code, text = cli("verify", folder, out, "--expected", expected, "--inputs", inputs)
    assert code == 0, text


def test_multiple_choice_inputs_are_described_batch_by_choices_by_sequence():
    """describe's generated inputs, export example and torch.export dims for a multiple-choice head: one batch,
    one choices and one sequence dim shared by input_ids and attention_mask."""
    import torch
    import transformers

    from porter.routes import hf_source

    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64)
    model = transformers.BertForMultipleChoice(config).eval()
    hf = hf_source.describe(model, model.config, "BertForMultipleChoice")
    assert hf.output_names == ["logits"] and "choices" in hf.input_text
    assert {hf.specs[n][1] for n in hf.input_names} == {(None, None, None)}
    shapes = {tuple(f["input_ids"].shape) for f in hf.feeds}
    assert {s[1] for s in shapes} == set(hf_source.CHOICES) and {s[0] for s in shapes} == set(hf_source.BATCHES)
    for feed in hf.feeds:
        assert {tuple(a.shape) for a in feed.values()} == {tuple(feed["input_ids"].shape)}
        got = hf_source.run(model, feed, hf.output_names)["logits"]
        assert got.shape == feed["input_ids"].shape[:2]
    example = dict(zip(hf.input_names, hf_source.example_args(hf)))
    assert example["input_ids"].shape[0] == hf_source.EXPORT_BATCH and example["input_ids"].ndim == 3
    assert (example["attention_mask"][-1, :, -2:] == 0).all() and (example["attention_mask"][0] == 1).all()
    dims = hf_source.export_dims(hf)
    assert [sorted(d[a].__name__ for a in d) for d in dims] == [["batch", "choices", "sequence"]] * len(dims)
    assert all(d[a] is dims[0][a] for d in dims for a in d)  # shared between the inputs
    with torch.no_grad():
        model(**{k: v for k, v in example.items()})

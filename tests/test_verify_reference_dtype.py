"""`porter verify --reference-dtype checkpoint`: a zoo model's bf16/fp16 HF folder is loaded by transformers in
its own dtype (half a float32 reference's memory), compared at 16-bit tolerances on the fallback shapes, and the
report says so; a wrong weight still fails; references that have no 16-bit dtype of their own are refused (exit 2).
The default, auto, takes that reference only where porter's estimate says a float32 one does not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_hf_direct import cli, make_checkpoint  # noqa: F401  (cli: the module-scoped runner)
from test_reference_plan import bf16_llama  # noqa: F401  (module-scoped bf16 Llama folder)


@pytest.fixture(scope="module")
def written(cli, bf16_llama, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("verify-ref-dtype") / "tf"
    code, output = cli("convert", bf16_llama, "--from", "torch", "--to", "tf", "--out", out, "--no-verify")
    assert code == 0, output
    return out


def _verify(cli, ref, cand, tmp_path, *extra):  # noqa: F811
    report = tmp_path / "report.json"
    code, output = cli("verify", ref, cand, "--report", report, *extra)
    return code, " ".join(output.split()), json.loads(report.read_text()) if report.exists() else None


def test_checkpoint_dtype_reference_passes_and_says_so(cli, bf16_llama, written, tmp_path):  # noqa: F811
    code, output, report = _verify(cli, bf16_llama, written, tmp_path, "--reference-dtype", "checkpoint")
    assert code == 0, output
    assert "reference: transformers in bfloat16, not float32: asked for by --reference-dtype checkpoint" in output
    outputs = [o for s in report["shapes"] for o in s["outputs"]]
    assert outputs and {o["dtype"] for o in outputs} == {"bfloat16"}  # what was compared, read from the outputs
    # the fallback shapes: one full row of 16, and a batch of 2 x 12
    assert [s["input_shapes"]["input_ids"] for s in report["shapes"]] == [[1, 16], [2, 12]]


def test_default_is_the_float32_reference(cli, bf16_llama, written, tmp_path):  # noqa: F811
    code, output, report = _verify(cli, bf16_llama, written, tmp_path)
    assert code == 0, output
    assert {o["dtype"] for s in report["shapes"] for o in s["outputs"]} == {"float32"}
    assert "not float32" not in output


def test_wrong_weight_fails_under_the_checkpoint_dtype_reference(cli, bf16_llama, written, tmp_path):  # noqa: F811
    """Two columns of the untied head swapped in the written SavedModel's variables: two tokens' logits exchanged."""
    import shutil

    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    broken = tmp_path / "broken"
    shutil.copytree(written, broken)
    loaded = tf.saved_model.load(str(broken))
    head = next(v for v in loaded.weights if tuple(v.shape)[-1] > 100 and len(v.shape) == 2 and "reverse" in v.name) \
        if hasattr(loaded, "weights") else None
    if head is None:
        pytest.skip("the SavedModel does not expose the head variable by name")
    kernel = np.asarray(head.numpy())
    kernel[:, [3, 7]] = kernel[:, [7, 3]]
    head.assign(kernel)
    tf.saved_model.save(loaded, str(broken), signatures=loaded.signatures)
    code, output, report = _verify(cli, bf16_llama, broken, tmp_path, "--reference-dtype", "checkpoint", "--no-localise")
    assert code == 1, output
    assert report["status"] == "failed"


@pytest.mark.parametrize("which", ["float32 folder", "keras file"])
def test_refused_where_the_reference_has_no_16bit_dtype(cli, tmp_path, which, bf16_llama, written):  # noqa: F811
    if which == "float32 folder":
        ref = make_checkpoint(tmp_path / "fp32", "llama", True, tied=False)
        expect = "stores float32 weights"
    else:
        ref = written / "model.keras"
        expect = "is not a checkpoint porter's zoo loads in its own dtype"
    code, output = cli("verify", ref, written, "--reference-dtype", "checkpoint")
    text = " ".join(output.split())
    assert code == 2 and expect in text and "leave --reference-dtype out" in text and "Traceback" not in text, text


def test_auto_takes_the_checkpoint_dtype_only_where_float32_does_not_fit(cli, bf16_llama, written, tmp_path, monkeypatch):  # noqa: F811
    from porter.resources import memory_estimate, reference_plan
    from porter.readers.checkpoints import open_torch_checkpoint
    from porter.resources.memory_estimate import GB, estimate_verify
    from porter.resources.memory_estimate_onnx import weights_on_disk

    def available(nbytes):
        monkeypatch.setattr(reference_plan, "available_bytes", lambda: nbytes)

    monkeypatch.setattr(memory_estimate, "_rss_bytes", lambda: int(0.4 * GB))
    ckpt = open_torch_checkpoint(bf16_llama)
    need = estimate_verify(ckpt.shapes, ckpt.dtypes, weights_on_disk(written, "tf"))
    assert need > estimate_verify(ckpt.shapes, ckpt.dtypes, weights_on_disk(written, "tf"), reference_dtype="bfloat16")
    available(need)  # float32 fits exactly: kept
    code, output, report = _verify(cli, bf16_llama, written, tmp_path)
    assert code == 0 and {o["dtype"] for s in report["shapes"] for o in s["outputs"]} == {"float32"}, output
    available(need - 1)  # one byte short: the bf16 reference
    code, output, report = _verify(cli, bf16_llama, written, tmp_path)
    assert code == 0, output
    assert "reference: transformers in bfloat16, not float32: a float32 reference and the candidate need about" in output, output
    assert {o["dtype"] for s in report["shapes"] for o in s["outputs"]} == {"bfloat16"}
    assert [s["input_shapes"]["input_ids"] for s in report["shapes"]] == [[1, 16], [2, 12]]
    code, output, report = _verify(cli, bf16_llama, written, tmp_path, "--reference-dtype", "float32")  # asked for
    assert code == 0 and {o["dtype"] for s in report["shapes"] for o in s["outputs"]} == {"float32"}, output


def test_auto_keeps_float32_where_no_16bit_reference_exists(cli, tmp_path, written, monkeypatch):  # noqa: F811
    from porter.resources import reference_plan

    monkeypatch.setattr(reference_plan, "available_bytes", lambda: 1)
    ref = make_checkpoint(tmp_path / "fp32", "llama", True, tied=False)
    from porter.resources.reference_plan import verify_reference

    assert verify_reference(ref, "auto", written) == (None, None, "")
    assert verify_reference(written / "model.keras", "auto", written) == (None, None, "")

"""A bf16 Llama too big for a float32 reference on this machine is verified against transformers in bf16
(porter/resources/reference_plan.py): the fallback is taken only when the float32 estimate does not fit, the console and
porter_report.json say which reference, which shapes and why, a wrong weight still fails under it, and the
float32 reference is kept whenever it fits. The available memory is monkeypatched, the estimates computed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from porter.resources import memory_estimate, reference_plan
from porter.resources.memory_estimate import GB, estimate_torch_to_tf, size_text
from test_hf_direct import cli, make_checkpoint  # noqa: F401  (cli: the module-scoped runner)

RSS = int(0.4 * GB)  # this process's RSS as the estimate sees it: the imports part is then 1.0 GB


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory):
    import torch
    import transformers

    root = tmp_path_factory.mktemp("ref-plan-llama")
    src = make_checkpoint(root / "fp32", "llama", True, tied=False)
    transformers.AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16).save_pretrained(str(root / "hf"))
    return root / "hf"


@pytest.fixture(scope="module")
def estimates(bf16_llama):
    """(float32 reference, bf16 reference) estimates of converting bf16_llama at RSS."""
    from porter.readers.checkpoints import open_torch_checkpoint

    ckpt = open_torch_checkpoint(bf16_llama)
    return tuple(estimate_torch_to_tf(ckpt.shapes, ckpt.dtypes, "bfloat16", True, current_rss=RSS, reference_dtype=d)
                 for d in ("float32", "bfloat16"))


@pytest.fixture
def available(monkeypatch):
    monkeypatch.setattr(memory_estimate, "_rss_bytes", lambda: RSS)

    def set_available(nbytes):
        for module in (memory_estimate, reference_plan):  # check_fits and plan_reference read it
            monkeypatch.setattr(module, "available_bytes", lambda: nbytes)

    return set_available


def _convert(cli, src, out, *extra):
    code, output = cli("convert", src, "--from", "torch", "--to", "tf", "--out", out, *extra)
    report = json.loads((out / "porter_report.json").read_text()) if (out / "porter_report.json").exists() else None
    return code, " ".join(output.split()), report


def _outputs(report):
    return [o for s in report["verification"]["shapes"] for o in s["outputs"]]


def test_estimates_differ_by_the_float32_copy(estimates):
    f32, bf16 = estimates
    assert f32.reference == 2 * bf16.reference and f32.reference_transient == bf16.reference > 0
    assert bf16.reference_transient == 0 and f32.total > bf16.total


def test_fallback_taken_and_reported_when_float32_does_not_fit(cli, bf16_llama, estimates, available, tmp_path):
    f32, bf16 = estimates
    free = (f32.total + bf16.total) // 2  # the bf16 reference fits, the float32 one does not
    available(free)
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf")
    assert code == 0, output
    assert (f"reference: transformers in bfloat16, not float32: a float32 reference needs about {size_text(f32.total)} "
            f"by porter's estimate, {size_text(free)} is available (bfloat16: {size_text(bf16.total)})") in output
    assert "compared at bfloat16 tolerances on 1x16, 2x12" in output
    assert report["reference"] == {"dtype": "bfloat16", "loader": "transformers from_pretrained",
                                   "reason": report["reference"]["reason"], "shapes": [[1, 16], [2, 12]],
                                   "float32_estimate_mb": round(f32.total / 2**20, 2)}
    assert report["memory_estimate_mb"]["reference_dtype"] == "bfloat16"
    assert report["memory_estimate_mb"]["total"] == pytest.approx(bf16.total / 2**20, abs=0.01)
    assert report["status"] == "passed"
    # never claims more than was compared: exactly these two shapes, bf16 on both sides, bf16-vs-bf16 tolerances
    assert [s["label"] for s in report["verification"]["shapes"]] == ["1x16", "2x12"]
    outputs = _outputs(report)
    assert {(o["dtype"], o["candidate_dtype"]) for o in outputs} == {("bfloat16", "bfloat16")}
    assert all(o["tolerance_from"].startswith("bfloat16 defaults") and "x4" not in o["tolerance_from"] for o in outputs)
    assert all(o["atol"] >= 2e-2 and o["rtol"] == 1.6e-2 for o in outputs)
    assert report["verification"]["notes"][0].startswith("reference: transformers in bfloat16, not float32")


def test_float32_reference_kept_when_it_fits(cli, bf16_llama, estimates, available, tmp_path):
    f32, _ = estimates
    available(f32.total)  # exactly enough
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf")
    assert code == 0, output
    assert "not float32" not in output
    assert report["reference"] == {"dtype": "float32", "loader": "transformers from_pretrained"}
    assert report["memory_estimate_mb"]["reference_dtype"] == "float32"
    outputs = _outputs(report)
    assert {(o["dtype"], o["candidate_dtype"]) for o in outputs} == {("float32", "bfloat16")}
    assert len(report["verification"]["shapes"]) == 4  # the family's default shapes
    assert all("x4" in o["tolerance_from"] for o in outputs)  # a 16-bit candidate against float32


def test_wrong_weight_still_fails_under_the_bf16_reference(cli, bf16_llama, estimates, available, tmp_path, monkeypatch):
    """Two tokens' logits exchanged in the written model (two columns of the untied head swapped after mapping):
    a mapping slip the bf16-vs-bf16 comparison must catch."""
    from porter.routes import direct

    mapped = direct.torch_to_keras

    def slipped(entry, source, config):
        model, plan = mapped(entry, source, config)
        head = entry.impl.keras_variables(model)["token_embedding/reverse_embeddings"]
        kernel = np.asarray(head.numpy())
        kernel[:, [3, 7]] = kernel[:, [7, 3]]
        head.assign(kernel)
        return model, plan

    monkeypatch.setattr(direct, "torch_to_keras", slipped)
    f32, bf16 = estimates
    available((f32.total + bf16.total) // 2)
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf")
    assert code == 1, output
    assert "reference: transformers in bfloat16, not float32" in output and "FAILED" in output
    assert report["status"] == "failed" and report["reference"]["dtype"] == "bfloat16"
    logits = [o for o in _outputs(report) if o["name"] == "logits"]
    assert logits and all(not o["passed"] and o["dtype"] == "bfloat16" for o in logits)
    assert max(o["max_abs"] for o in logits) > 3 * max(o["atol"] for o in logits)  # 8.6 vs atol 1.5 (24 ulps at |ref| >= 8)


def test_refused_when_neither_reference_fits(cli, bf16_llama, estimates, available, tmp_path):
    """Below the bf16 estimate, transformers' layers are streamed one at a time (tests/test_blockwise.py); below that
    estimate too, refused."""
    from porter.readers.checkpoints import open_torch_checkpoint

    _, bf16 = estimates
    ckpt = open_torch_checkpoint(bf16_llama)
    blocks = reference_plan.estimate_blockwise(ckpt.shapes, ckpt.dtypes, "bfloat16", RSS)
    available(min(blocks.total, bf16.total) - 1)
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf")
    assert code == 2 and report is None and not (tmp_path / "tf").exists(), output
    assert f"needs about {size_text(blocks.total)} of memory" in output
    assert "one decoder block of each side in float32" in output and "--ignore-memory-estimate" in output


def test_plan_keeps_float32_where_no_16bit_reference_can_stand_in(bf16_llama, estimates, available):
    """Written as float32 (--dtype), or --ignore-memory-estimate, or a loader without a dtype: float32, and
    check_fits then decides (refuse, or go ahead)."""
    from porter import zoo
    from porter.readers.checkpoints import open_torch_checkpoint

    ckpt = open_torch_checkpoint(bf16_llama)
    entry = zoo.for_config(json.loads((bf16_llama / "config.json").read_text()), "config.json")
    available(1)
    args = (ckpt.shapes, ckpt.dtypes, "bfloat16")
    assert reference_plan.plan_reference(entry, *args, "bfloat16", True, False).dtype == "bfloat16"
    assert reference_plan.plan_reference(entry, ckpt.shapes, ckpt.dtypes, "bfloat16", "float32", True, False).dtype == "float32"
    assert reference_plan.plan_reference(entry, *args, "bfloat16", True, True).dtype == "float32"
    assert reference_plan.plan_reference(entry, *args, "bfloat16", False, False).estimate.reference == 0

    class NoDtype:
        impl = type("Impl", (), {"load_torch": staticmethod(lambda folder: None)})

    assert reference_plan.plan_reference(NoDtype, *args, "bfloat16", True, False).dtype == "float32"


def test_reference_dtype_checkpoint_asked_for(cli, bf16_llama, estimates, available, tmp_path):
    """--reference-dtype checkpoint: the bf16 reference even where float32 fits, and the report says it was asked for."""
    f32, bf16 = estimates
    available(10 * f32.total)
    code, output, report = _convert(cli, bf16_llama, tmp_path / "tf", "--reference-dtype", "checkpoint")
    assert code == 0, output
    assert (f"reference: transformers in bfloat16, not float32: asked for by --reference-dtype checkpoint "
            f"(a float32 reference: about {size_text(f32.total)} by porter's estimate, bfloat16: {size_text(bf16.total)})") in output
    assert report["reference"]["dtype"] == "bfloat16" and report["status"] == "passed"
    assert {o["dtype"] for o in _outputs(report)} == {"bfloat16"}


def test_reference_dtype_float32_refuses_rather_than_falls_back(cli, bf16_llama, estimates, available, tmp_path):
    f32, bf16 = estimates
    available((f32.total + bf16.total) // 2)
    code, output, _ = _convert(cli, bf16_llama, tmp_path / "tf", "--reference-dtype", "float32")
    assert code == 2 and f"needs about {size_text(f32.total)}" in output and not (tmp_path / "tf").exists(), output


@pytest.mark.parametrize("extra", [("--no-verify",), ("--route", "onnx")])
def test_reference_dtype_refused_where_it_chooses_nothing(cli, bf16_llama, tmp_path, extra):
    code, output, _ = _convert(cli, bf16_llama, tmp_path / "tf", "--reference-dtype", "checkpoint", *extra)
    assert code == 2 and "--reference-dtype checkpoint chooses the transformers reference" in output, output
    assert "Traceback" not in output and not (tmp_path / "tf").exists()

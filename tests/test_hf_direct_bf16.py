"""A bf16 HF checkpoint on the keras-hub direct route is written in bf16 (not widened to float32:
that doubled the output and the converted model's memory), verifies at bf16's tolerances, and a
wrong weight still fails there; the report splits save into export and .keras and records peak RSS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_hf_direct import cli, make_checkpoint  # noqa: F401  (cli: the module-scoped runner)


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory):
    import torch
    import transformers

    root = tmp_path_factory.mktemp("bf16-llama")
    src = make_checkpoint(root / "fp32", "llama", True, tied=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16)
    model.save_pretrained(str(root / "hf"))
    return root / "hf"


@pytest.fixture(scope="module")
def converted(bf16_llama, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("bf16-llama-out") / "tf"
    code, output = cli("convert", bf16_llama, "--from", "torch", "--to", "tf", "--out", out)
    return code, " ".join(output.split()), out


def test_bf16_llama_written_in_bf16_and_verified(converted):
    code, output, out = converted
    assert code == 0, output
    assert "candidate bfloat16" in output
    report = json.loads((out / "porter_report.json").read_text())
    assert report["dtype"] == {"source": "bfloat16", "written": "bfloat16"}
    from porter.process.frameworks import tensorflow

    dtypes = tensorflow().train.load_checkpoint(str(out / "variables" / "variables")).get_variable_to_dtype_map()
    floats = {k: d.name for k, d in dtypes.items() if d.is_floating}
    assert len(floats) >= 19 and set(floats.values()) == {"bfloat16"}, floats


def test_report_splits_save_and_records_peak_rss(converted):
    _, _, out = converted
    report = json.loads((out / "porter_report.json").read_text())
    timings = report["timings"]
    assert timings["export_s"] > 0 and timings["keras_save_s"] > 0
    assert timings["export_s"] + timings["keras_save_s"] == pytest.approx(timings["save_s"])
    peaks = report["peak_rss_mb"]
    assert list(peaks) == ["load_and_map", "export", "keras_save", "verify"]
    # peak so far: never falls
    assert 100 < peaks["load_and_map"] <= peaks["export"] <= peaks["keras_save"] <= peaks["verify"]


def test_bf16_model_keras_reloads_in_bf16(converted):
    _, _, out = converted
    from porter.process.frameworks import keras
    from porter.zoo.keras_hub.saved import register_if_keras_hub

    register_if_keras_hub(out / "model.keras")
    model = keras().saving.load_model(str(out / "model.keras"), safe_mode=True)
    assert {v.dtype for v in model.weights} == {"bfloat16"}


def test_bf16_tolerances_still_fail_a_wrong_head(bf16_llama, converted, tmp_path, cli):
    """Swapping two rows of lm_head (two tokens' logits exchanged) is a mapping slip bf16's wider
    tolerance must still catch."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    _, _, out = converted
    bad = tmp_path / "bad-hf"
    shutil.copytree(bf16_llama, bad)
    state = load_file(str(bad / "model.safetensors"))
    head = state["lm_head.weight"].clone()
    head[[3, 7]] = head[[7, 3]]
    state["lm_head.weight"] = head
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    assert state["lm_head.weight"].dtype == torch.bfloat16
    code, output = cli("verify", bad, out)
    assert code == 1, output
    assert "FAILED" in output and np.any(["logits" in line for line in output.splitlines()])

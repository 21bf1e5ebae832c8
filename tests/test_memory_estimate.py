"""Not enough memory for a conversion: porter estimates from the checkpoint's headers before a weight is read,
and refuses with exit 2 naming the estimate, the available memory and --ignore-memory-estimate; nothing is written.
The available figure and this process's RSS are monkeypatched, so every number in the message is known exactly."""

from __future__ import annotations

import json

import pytest

from porter.resources import memory_estimate
from porter.resources.memory_estimate import GB, estimate_torch_to_tf, size_text


def _tiny_bf16_folder(tmp_path):
    """A safetensors folder whose sizes are easy to count: 1000x64 + 64x64 + 64 elements, bf16."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"emb.weight": torch.zeros(1000, 64, dtype=torch.bfloat16), "dense.weight": torch.zeros(64, 64, dtype=torch.bfloat16),
               "dense.bias": torch.zeros(64, dtype=torch.bfloat16), "ids": torch.zeros(10, dtype=torch.int64)}, str(path))
    return path


def test_estimate_counts_every_part_from_the_headers(tmp_path):
    from porter.readers.checkpoints import open_torch_checkpoint

    source = open_torch_checkpoint(_tiny_bf16_folder(tmp_path))
    floats = 1000 * 64 + 64 * 64 + 64
    est = estimate_torch_to_tf(source.shapes, source.dtypes, "bfloat16", verify=True, current_rss=int(0.4 * GB))
    assert est.variables == floats * 2 + 10 * 8  # the int64 tensor keeps its own size
    assert est.streaming == 2 * 1000 * 64 * 2  # the embedding, twice
    assert est.imports == int(1.4 * GB) - int(0.4 * GB)
    assert est.reference == floats * 4 + 10 * 8  # float32 copies; the int64 tensor as stored
    assert est.reference_transient == floats * 2  # the bf16 pages mapped while it loads, unmapped after
    assert est.candidate == est.variables + est.variables // 10  # SavedModel restore overhead, as measured on a 3B Llama
    # the SavedModel loads after the reference's mapped pages are gone: the larger of the two, not both; the Keras
    # model's variables stay (TensorFlow keeps their memory after the model is dropped)
    assert est.candidate > est.reference_transient
    assert est.total == est.imports + est.variables + est.reference + est.candidate + est.streaming
    # in the checkpoint's own dtype the reference's parameters are the mapped pages: no copy, nothing transient
    half = estimate_torch_to_tf(source.shapes, source.dtypes, "bfloat16", verify=True, current_rss=int(0.4 * GB),
                                reference_dtype="bfloat16")
    assert (half.reference, half.reference_transient, half.reference_dtype) == (floats * 2 + 10 * 8, 0, "bfloat16")
    assert half.total == est.total - floats * 2
    # written as float32 (--dtype): variables and the widest in-flight copy double; no verification: no models after
    wide = estimate_torch_to_tf(source.shapes, source.dtypes, "float32", verify=False, current_rss=int(2 * GB))
    assert (wide.variables, wide.streaming, wide.imports) == (floats * 4 + 10 * 8, 2 * 1000 * 64 * 4, 0)
    assert wide.reference == wide.candidate == 0 and wide.total == wide.variables + wide.streaming


def test_estimate_of_a_7b_shape_matches_its_parameter_count():
    """Llama-2-7B's shapes in bf16: 6.74 B parameters -> 13.5 GB of variables, 27 GB float32 reference (+ 13.5 GB
    mapped while it loads), then the 14.8 GB SavedModel, beside the 13.5 GB TensorFlow still holds of the Keras model;
    a bf16 reference: 13.5 GB (the mapped pages) in place of the 27 GB."""
    hidden, inter, layers, vocab = 4096, 11008, 32, 32000
    shapes = {"embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden), "norm.weight": (hidden,)}
    for i in range(layers):
        shapes.update({f"l{i}.{n}": (hidden, hidden) for n in ("q", "k", "v", "o")})
        shapes.update({f"l{i}.{n}": (inter, hidden) for n in ("gate", "up", "down")})
        shapes.update({f"l{i}.norm{j}": (hidden,) for j in (1, 2)})
    est = estimate_torch_to_tf(shapes, dict.fromkeys(shapes, "bfloat16"), "bfloat16", verify=True, current_rss=int(1.4 * GB))
    assert est.variables == pytest.approx(13.48e9, rel=1e-3)
    assert est.reference == pytest.approx(26.95e9, rel=1e-3) and est.reference_transient == pytest.approx(13.48e9, rel=1e-3)
    assert 55.7e9 < est.total < 55.9e9  # 13.48 held + 26.95 + 14.83 SavedModel + 0.52 streaming: does not fit 24 GB
    half = estimate_torch_to_tf(shapes, dict.fromkeys(shapes, "bfloat16"), "bfloat16", verify=True,
                                current_rss=int(1.4 * GB), reference_dtype="bfloat16")
    assert 42.2e9 < half.total < 42.4e9  # 13.48 + 13.48 + 14.83 + 0.52: nor with a bf16 reference; --no-verify (13.5 GB + 0.5 GB) does
    assert 13.4e9 < est.convert_bytes < 14.6e9


def test_available_bytes_reads_this_machine():
    free = memory_estimate.available_bytes()
    assert free is None or 0 < free < 2**50


@pytest.fixture
def squeezed(monkeypatch):
    """Set the available memory (bytes) seen by the check; RSS fixed so the imports part is 1.0 GB."""
    monkeypatch.setattr(memory_estimate, "_rss_bytes", lambda: int(0.4 * GB))

    def squeeze(available):
        monkeypatch.setattr(memory_estimate, "available_bytes", lambda: available)

    return squeeze


def _estimate_for(folder, verify: bool):
    from porter.readers.checkpoints import open_torch_checkpoint

    source = open_torch_checkpoint(folder)
    return estimate_torch_to_tf(source.shapes, source.dtypes, "float32", verify, current_rss=int(0.4 * GB))


def test_refused_with_estimate_available_and_flag_nothing_written(cli, tiny_bert, tmp_path, squeezed):
    est = _estimate_for(tiny_bert, verify=True)
    squeezed(est.total - 1)  # one byte short
    out = tmp_path / "out"
    code, text = cli("convert", str(tiny_bert), "--from", "torch", "--to", "tf", "--out", str(out))
    assert code == 2, text
    assert f"needs about {size_text(est.total)} of memory" in text and f"{size_text(est.total - 1)} is available" in text
    assert "--ignore-memory-estimate" in text and str(tiny_bert) in text
    # a float32 checkpoint: the float32 reference's parameters are its mapped pages, nothing copied
    assert est.reference_transient == 0
    assert f"float32 reference {size_text(est.reference)} (the mapped checkpoint pages themselves)" in text
    assert "Traceback" not in text
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no staging folder left either


def test_verification_alone_too_big_suggests_no_verify(cli, tiny_bert, tmp_path, squeezed):
    est = _estimate_for(tiny_bert, verify=True)
    assert est.convert_bytes < est.total  # the two verification models outweigh the model being converted
    squeezed(est.convert_bytes)
    code, text = cli("convert", str(tiny_bert), "--from", "torch", "--to", "tf", "--out", str(tmp_path / "out"))
    assert code == 2 and f"--no-verify (converting alone needs about {size_text(est.convert_bytes)})" in text, text
    # and --no-verify then fits exactly at that figure
    code, text = cli("convert", str(tiny_bert), "--from", "torch", "--to", "tf", "--out", str(tmp_path / "out"), "--no-verify")
    assert code == 0, text
    report = json.loads((tmp_path / "out" / "porter_report.json").read_text())
    assert report["status"] == "not verified"
    assert report["memory_estimate_mb"]["total"] == pytest.approx(_estimate_for(tiny_bert, verify=False).total / 2**20, abs=0.01)


def test_no_verify_short_of_memory_still_refused(cli, tiny_bert, tmp_path, squeezed):
    est = _estimate_for(tiny_bert, verify=False)
    squeezed(est.total - 1)
    code, text = cli("convert", str(tiny_bert), "--from", "torch", "--to", "tf", "--out", str(tmp_path / "out"), "--no-verify")
    assert code == 2 and f"needs about {size_text(est.total)}" in text and "--ignore-memory-estimate" in text, text
    assert "or --no-verify" not in text  # it is already given
    assert not (tmp_path / "out").exists()


def test_flag_goes_ahead_and_verifies(cli, tiny_bert, tmp_path, squeezed):
    squeezed(1)  # nothing available: only the flag lets it through
    out = tmp_path / "out"
    code, text = cli("convert", str(tiny_bert), "--from", "torch", "--to", "tf", "--out", str(out), "--ignore-memory-estimate")
    assert code == 0 and "verified" in text, text
    report = json.loads((out / "porter_report.json").read_text())
    assert report["status"] == "passed"
    est = _estimate_for(tiny_bert, verify=True)
    assert report["memory_estimate_mb"]["reference"] == pytest.approx(est.reference / 2**20, abs=0.01) and set(report["peak_rss_mb"]) >= {"load_and_map", "keras_save", "verify"}

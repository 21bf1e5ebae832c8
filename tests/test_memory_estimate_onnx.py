"""The ONNX route from torch cannot stream, so its memory is estimated from the weights on disk before anything
is loaded (porter/resources/memory_estimate_onnx.py, measured on bert-base); short of memory it refuses with exit 2, naming
the estimate, the available memory and the flags, and writes nothing."""

from __future__ import annotations

import pytest
from test_memory_estimate import squeezed  # noqa: F401  (the available memory, and RSS fixed)

from porter.errors import PorterError
from porter.resources.memory_estimate import GB, IMPORT_FLOOR_BYTES, size_text
from porter.resources.memory_estimate_onnx import (
    CONVERT_COPIES,
    TF_CONVERT_COPIES,
    VERIFY_COPIES,
    check_onnx_route_fits,
    weights_on_disk,
)

RSS = int(0.4 * GB)  # what test_memory_estimate's squeezed fixture fixes this process's RSS at


def _needed(folder, verify: bool, framework: str = "torch") -> int:
    weights = weights_on_disk(folder, framework)
    copies = CONVERT_COPIES if framework == "torch" else TF_CONVERT_COPIES
    return IMPORT_FLOOR_BYTES - RSS + int(copies * weights) + (int(VERIFY_COPIES * weights) if verify else 0)


def test_weights_on_disk_counts_weight_files_only(tiny_bert):
    size = sum(f.stat().st_size for f in tiny_bert.glob("*.safetensors"))
    assert size > 0 and weights_on_disk(tiny_bert) == size  # config.json and tokenizer files are not weights


def test_refused_before_loading_with_estimate_and_flags(cli, tiny_bert, tmp_path, squeezed):  # noqa: F811
    needed = _needed(tiny_bert, verify=True)
    squeezed(needed - 1)
    out = tmp_path / "out"
    code, text = cli("convert", str(tiny_bert), "--from", "torch", "--to", "onnx", "--route", "onnx", "--out", str(out))
    assert code == 2, text
    assert f"on the ONNX route needs about {size_text(needed)} of memory" in text
    assert f"{size_text(needed - 1)} is available" in text and str(tiny_bert) in text
    assert "--ignore-memory-estimate" in text and "--no-verify" in text and "--route direct" in text
    assert "Traceback" not in text and not out.exists() and list(tmp_path.iterdir()) == []


def test_exactly_enough_is_not_refused(tiny_bert, squeezed):  # noqa: F811
    squeezed(_needed(tiny_bert, verify=False))
    check_onnx_route_fits(tiny_bert, verify=False, ignore=False)  # converting alone fits at that figure
    with pytest.raises(PorterError, match="--no-verify"):  # with verification it does not, and says what would
        check_onnx_route_fits(tiny_bert, verify=True, ignore=False)


def test_the_flag_goes_ahead(tiny_bert, squeezed):  # noqa: F811
    squeezed(1)
    check_onnx_route_fits(tiny_bert, verify=True, ignore=True)


def test_weights_of_a_saved_model_are_its_variables(tiny_bert_tf):
    variables = sum(f.stat().st_size for f in (tiny_bert_tf / "variables").iterdir())
    assert variables > 0 and weights_on_disk(tiny_bert_tf, "tf") == variables  # not model.keras a second time
    keras_file = tiny_bert_tf / "model.keras"
    assert weights_on_disk(keras_file, "tf") == keras_file.stat().st_size


@pytest.mark.parametrize("source", ["saved_model", "keras"])
def test_from_tensorflow_refused_before_loading(cli, tiny_bert_tf, tmp_path, squeezed, source):  # noqa: F811
    path = tiny_bert_tf if source == "saved_model" else tiny_bert_tf / "model.keras"
    needed = _needed(path, verify=True, framework="tf")
    squeezed(needed - 1)
    out = tmp_path / "out"
    code, text = cli("convert", str(path), "--from", "tf", "--to", "torch", "--route", "onnx", "--out", str(out))
    assert code == 2, text
    assert f"on the ONNX route needs about {size_text(needed)} of memory" in text and str(path) in text
    assert "--ignore-memory-estimate" in text and "--no-verify" in text and "--route direct" not in text
    assert "Traceback" not in text and not out.exists()

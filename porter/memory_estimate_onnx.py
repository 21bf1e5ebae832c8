"""Will an ONNX-route conversion from torch fit in memory? Estimated from the size of the weights on disk,
before anything is loaded, and refused (exit 2) as the direct route's estimate is (porter/memory_estimate.py).

Unlike the direct route, the ONNX route cannot stream: the exporter, the ONNX graph and onnx2tf each hold the whole
model. Measured on bert-base (440 MB of float32 weights, benchmarks/README.md): the dynamo export peaked at 2.7 GB
with torch and transformers imported (0.3 GB), onnx2tf at 2.78 GB with TensorFlow imported too, and a run that
also verified at 3.11 GB: about 5.5 copies of the weights above the imports while converting, one more when verifying.
"""

from __future__ import annotations

from pathlib import Path

from porter import memory_estimate
from porter.errors import PorterError
from porter.memory_estimate import FLAG, IMPORT_FLOOR_BYTES, size_text

CONVERT_COPIES = 5.5  # the export's graph and the torch model, then onnx2tf's graph copies and TF constants
VERIFY_COPIES = 1.0  # the torch reference and the SavedModel, beside what TensorFlow kept of the conversion
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def weights_on_disk(path: Path) -> int:
    """Bytes of weights in a checkpoint folder (its weight files) or in one archive (.pt2: the whole file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for pattern in WEIGHT_FILES for f in path.glob(pattern) if f.is_file())


def check_onnx_route_fits(path: Path, verify: bool, ignore: bool, current_rss: int | None = None) -> None:
    """Refuse (exit 2) when the estimate for converting ``path`` on the ONNX route exceeds the available memory."""
    weights = weights_on_disk(path)
    free = memory_estimate.available_bytes()
    if ignore or free is None or not weights:
        return
    rss = memory_estimate._rss_bytes() if current_rss is None else current_rss
    imports = max(0, IMPORT_FLOOR_BYTES - rss)
    convert = imports + int(CONVERT_COPIES * weights)
    total = convert + (int(VERIFY_COPIES * weights) if verify else 0)
    if total <= free:
        return
    hint = f"pass {FLAG} to go ahead anyway"
    if verify and convert <= free:
        hint += f", or --no-verify (converting alone needs about {size_text(convert)}) and verify elsewhere"
    if path.is_dir():
        hint += ", or --route direct where the model's family has one (it streams the weights)"
    raise PorterError(
        f"converting {path} on the ONNX route needs about {size_text(total)} of memory by porter's estimate, "
        f"and {size_text(free)} is available",
        problems=[f"weights on disk: {size_text(weights)}",
                  f"export and onnx2tf: about {CONVERT_COPIES:g} copies of them ({size_text(int(CONVERT_COPIES * weights))})",
                  f"imports of torch/tensorflow still to load: {size_text(imports)}",
                  *([f"verification: about {VERIFY_COPIES:g} more ({size_text(int(VERIFY_COPIES * weights))})"] if verify else [])],
        hint=hint)

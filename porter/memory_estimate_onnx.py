"""Will an ONNX-route conversion from torch fit in memory? Estimated from the size of the weights on disk,
before anything is loaded, and refused (exit 2) as the direct route's estimate is (porter/memory_estimate.py).

Unlike the direct route, the ONNX route cannot stream: the exporter, the ONNX graph and onnx2tf each hold the whole
model. Measured on bert-base (440 MB of float32 weights, benchmarks/README.md): the dynamo export peaked at 2.7 GB
with torch and transformers imported (0.3 GB), onnx2tf at 2.78 GB with TensorFlow imported too, and a run that
also verified at 3.11 GB: about 5.5 copies of the weights above the imports while converting, one more when verifying.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from porter import memory_estimate
from porter.memory_estimate import IMPORT_FLOOR_BYTES, check_fits, size_text

CONVERT_COPIES = 5.5  # the export's graph and the torch model, then onnx2tf's graph copies and TF constants
VERIFY_COPIES = 1.0  # the torch reference and the SavedModel, beside what TensorFlow kept of the conversion
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def weights_on_disk(path: Path) -> int:
    """Bytes of weights in a checkpoint folder (its weight files) or in one archive (.pt2: the whole file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for pattern in WEIGHT_FILES for f in path.glob(pattern) if f.is_file())


@dataclass
class OnnxRouteEstimate:
    """Bytes an ONNX-route conversion from torch is expected to add to this process (what check_fits reads)."""

    weights: int  # on disk
    imports: int  # the frameworks still to be imported
    verify: bool

    @property
    def convert_bytes(self) -> int:
        return self.imports + int(CONVERT_COPIES * self.weights)

    @property
    def total(self) -> int:
        return self.convert_bytes + (int(VERIFY_COPIES * self.weights) if self.verify else 0)

    def parts(self) -> list[str]:
        lines = [f"weights on disk: {size_text(self.weights)}",
                 f"export and onnx2tf: about {CONVERT_COPIES:g} copies of them ({size_text(int(CONVERT_COPIES * self.weights))})",
                 f"imports of torch/tensorflow still to load: {size_text(self.imports)}"]
        if self.verify:
            lines.append(f"verification: about {VERIFY_COPIES:g} more ({size_text(int(VERIFY_COPIES * self.weights))})")
        return lines


def check_onnx_route_fits(path: Path, verify: bool, ignore: bool) -> None:
    """Refuse (exit 2) when the estimate for converting ``path`` on the ONNX route exceeds the available memory."""
    weights = weights_on_disk(path)
    if not weights:
        return
    estimate = OnnxRouteEstimate(weights, max(0, IMPORT_FLOOR_BYTES - memory_estimate._rss_bytes()), verify)
    other_way = "--route direct where the model's family has one (it streams the weights)" if path.is_dir() else ""
    check_fits(estimate, f"converting {path} on the ONNX route", verify, ignore, other_way)

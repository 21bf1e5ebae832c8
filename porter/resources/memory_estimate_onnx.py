"""Will an ONNX-route conversion from torch or TensorFlow fit in memory? Estimated from the size of the weights on disk,
before anything is loaded, and refused (exit 2) as the direct route's estimate is (porter/resources/memory_estimate.py).

Unlike the direct route, the ONNX route cannot stream: the exporter and the ONNX graph each hold the whole model.
Measured on bert-base (440 MB of float32 weights) when this route still went on to TensorFlow through onnx2tf, the
conversion peaked at 1.95 GB: about 2.2 copies of the weights above the imports, one more when verifying. --to onnx
and --to torch hold no more than that; the estimate keeps 3 as margin for graphs other than BERT's.

From TensorFlow (tf2onnx, then porter's ONNX -> torch converter) it is more: Keras' load builds every variable with
its initializer before reading the weights, the .keras archive's weights file is read whole, and tf2onnx holds the
frozen graph, its own tensors and the ONNX proto at once. Measured on keras.applications VGG16 (553 MB .keras):
6.36 GB peak converting, the same verifying, with 1.4 GB of imports: about 9 copies above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from porter.resources import memory_estimate
from porter.resources.memory_estimate import IMPORT_FLOOR_BYTES, check_fits, size_text

CONVERT_COPIES = 3.0  # the torch model, the export's tensors and the written graph's weights
VERIFY_COPIES = 1.0  # the torch reference and the SavedModel, beside what TensorFlow kept of the conversion
# from TensorFlow: measured 9.0 converting (VGG16), and no higher verifying; the verify copy is kept as margin
TF_CONVERT_COPIES = 9.5
WEIGHT_FILES = {"torch": ("*.safetensors", "*.bin", "*.pt", "*.pth"), "tf": ("*.keras", "*.h5")}


def weights_on_disk(path: Path, framework: str = "torch") -> int:
    """Bytes of weights in a checkpoint folder (its weight files; a SavedModel's variables) or in one file
    (.pt2, .keras, .h5: the whole file)."""
    if path.is_file():
        return path.stat().st_size
    variables = path / "variables"
    if framework == "tf" and variables.is_dir():  # a SavedModel (porter's carries the same weights in model.keras)
        return sum(f.stat().st_size for f in variables.iterdir() if f.is_file())
    return sum(f.stat().st_size for pattern in WEIGHT_FILES[framework] for f in path.glob(pattern) if f.is_file())


@dataclass
class OnnxRouteEstimate:
    """Bytes an ONNX-route conversion is expected to add to this process (what check_fits reads); ``convert_copies``:
    the source framework's (CONVERT_COPIES from torch, TF_CONVERT_COPIES from TensorFlow)."""

    weights: int  # on disk
    imports: int  # the frameworks still to be imported
    verify: bool
    convert_copies: float = CONVERT_COPIES

    @property
    def convert_bytes(self) -> int:
        return self.imports + int(self.convert_copies * self.weights)

    @property
    def total(self) -> int:
        return self.convert_bytes + (int(VERIFY_COPIES * self.weights) if self.verify else 0)

    def parts(self) -> list[str]:
        lines = [f"weights on disk: {size_text(self.weights)}",
                 f"converting: about {self.convert_copies:g} copies of them ({size_text(int(self.convert_copies * self.weights))})",
                 f"imports of torch/tensorflow still to load: {size_text(self.imports)}"]
        if self.verify:
            lines.append(f"verification: about {VERIFY_COPIES:g} more ({size_text(int(VERIFY_COPIES * self.weights))})")
        return lines


def check_onnx_route_fits(path: Path, verify: bool, ignore: bool, framework: str = "torch") -> None:
    """Refuse (exit 2) when the estimate for converting ``path`` (a ``framework`` model) on the ONNX route exceeds
    the available memory."""
    weights = weights_on_disk(path, framework)
    if not weights:
        return
    estimate = OnnxRouteEstimate(weights, max(0, IMPORT_FLOOR_BYTES - memory_estimate._rss_bytes()), verify,
                                 CONVERT_COPIES if framework == "torch" else TF_CONVERT_COPIES)
    other_way = ("--route direct where the model's family has one (it streams the weights)"
                 if path.is_dir() and framework == "torch" else "")
    check_fits(estimate, f"converting {path} on the ONNX route", verify, ignore, other_way)

"""Will a direct-route conversion fit in memory? Estimated from the checkpoint's headers before a weight is read.

The direct route streams (one source tensor in flight, each variable filled then its source dropped,
.keras weights written a slice at a time), so converting needs the model's variables in the written
dtype plus about two copies of the largest tensor. Verification loads two more models: transformers'
reference, always in float32 (zoo ``load_torch``), with the checkpoint's files memory-mapped while it loads
(resident pages: a 3B bf16 Llama's reference process peaked at 17.7 GB = 12.1 GB float32 + 5.75 GB of
safetensors + the imports), and the written SavedModel in the written dtype.
Where the estimate exceeds the memory available, ``check_fits`` refuses before loading anything,
giving both figures and the flag that goes ahead anyway (``--ignore-memory-estimate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError

GB = 1e9
FLAG = "--ignore-memory-estimate"
# RSS of a process that has imported torch, tensorflow, keras_hub and transformers (measured ~1.2-1.4 GB here)
IMPORT_FLOOR_BYTES = int(1.4 * GB)
STREAMING_TENSORS = 2  # the largest tensor in flight twice: as read, and cast/transposed into its variable
_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
             "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}


@dataclass
class Estimate:
    """Bytes a conversion is expected to add to this process, by part."""

    variables: int  # the Keras model's variables, in the written dtype
    streaming: int  # tensors in flight while mapping and saving
    imports: int  # the frameworks still to be imported
    reference: int = 0  # verification: transformers' float32 torch model + the mmapped checkpoint it loads from
    candidate: int = 0  # verification: the written SavedModel, loaded again
    rss: int = 0  # this process's RSS when estimated: the predicted peak RSS is rss + total

    @property
    def convert_bytes(self) -> int:
        return self.variables + self.streaming + self.imports

    @property
    def total(self) -> int:
        # verification runs after the Keras model is dropped (routes/direct.py), so its two models replace it
        return self.imports + max(self.variables + self.streaming, self.reference + self.candidate + self.streaming)

    def to_dict(self) -> dict:
        """In MB, as porter_report.json's peak_rss_mb marks (MB = 2**20 bytes, as ru_maxrss)."""
        parts = {k: round(getattr(self, k) / 2**20, 2) for k in ("variables", "streaming", "imports", "reference", "candidate")}
        return dict(parts, convert=round(self.convert_bytes / 2**20, 2), total=round(self.total / 2**20, 2),
                    rss_at_estimate=round(self.rss / 2**20, 2))

    def parts(self) -> list[str]:
        lines = [f"the model's variables: {size_text(self.variables)}",
                 f"streaming (the largest tensor in flight {STREAMING_TENSORS}x): {size_text(self.streaming)}",
                 f"imports of torch/tensorflow still to load: {size_text(self.imports)}"]
        if self.reference:
            lines.append(f"verification, after the model is dropped: transformers' float32 reference (with the mapped "
                         f"checkpoint) {size_text(self.reference)} "
                         f"+ the written SavedModel {size_text(self.candidate)}")
        return lines


def size_text(nbytes: int) -> str:
    """1.4 GB, 231 MB, 0.12 MB: enough digits to read a tiny model's estimate too."""
    if nbytes >= GB:
        return f"{nbytes / GB:.1f} GB"
    return f"{nbytes / 1e6:.0f} MB" if nbytes >= 10e6 else f"{nbytes / 1e6:.2f} MB"


def _numel(shape) -> int:
    count = 1
    for d in shape:
        count *= int(d)
    return count


def estimate_torch_to_tf(shapes: dict, dtypes: dict, written: str, verify: bool, current_rss: int | None = None) -> Estimate:
    """``shapes``/``dtypes``: the checkpoint's tensors as stored; ``written``: the Keras model's float dtype."""
    out_size = _ITEMSIZE.get(written, 4)
    variables, largest, elements, stored_bytes = 0, 0, 0, 0
    for key, shape in shapes.items():
        n = _numel(shape)
        stored = _ITEMSIZE.get(dtypes.get(key, "float32"), 4)
        stored_bytes += n * stored
        float_key = dtypes.get(key, "float32").startswith(("float", "bfloat"))
        variables += n * (out_size if float_key else stored)
        elements += n if float_key else 0
        largest = max(largest, n * max(stored, out_size))
    rss = _rss_bytes() if current_rss is None else current_rss
    imports = max(0, IMPORT_FLOOR_BYTES - rss)
    estimate = Estimate(variables, STREAMING_TENSORS * largest, imports, rss=rss)
    if verify:
        estimate.reference = elements * 4 + (variables - elements * out_size) + stored_bytes
        estimate.candidate = variables + variables // 10  # TF's SavedModel restore: 3B bf16 measured 1.10x its variables
    return estimate


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, or less where a cgroup limit is nearer; None off Linux."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (KeyError, ValueError, IndexError):
        return None
    try:  # cgroup v2: a container's own limit
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096
    except (OSError, ValueError, IndexError):
        return 0


def check_fits(estimate: Estimate, what: str, verify: bool, ignore: bool) -> None:
    """Refuse (exit 2) when ``estimate`` exceeds the available memory, unless ``ignore``."""
    free = available_bytes()
    if ignore or free is None or estimate.total <= free:
        return
    hint = f"pass {FLAG} to go ahead anyway"
    if verify and estimate.convert_bytes <= free:
        hint += f", or --no-verify (converting alone needs about {size_text(estimate.convert_bytes)}) and verify elsewhere"
    raise PorterError(f"{what} needs about {size_text(estimate.total)} of memory by porter's estimate, "
                      f"and {size_text(free)} is available", problems=estimate.parts(), hint=hint)

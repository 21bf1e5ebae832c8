"""Will a direct-route conversion fit in memory? Estimated from the checkpoint's headers before a weight is read.

The direct route streams (one source tensor in flight, each variable filled then its source dropped,
.keras weights written a slice at a time), so converting needs the model's variables in the written
dtype plus about two copies of the largest tensor. Verification loads two more models, one after the other:
transformers' reference, then the written SavedModel in the written dtype (1.10x its variables).

The reference is float32 (zoo ``load_torch``) where that fits, else the checkpoint's own 16-bit dtype
(porter/resources/reference_plan.py). transformers 5 memory-maps safetensors while loading, and what stays resident
depends on the dtype (measured, a 0.49 GB bf16 Llama: porter's tests and benchmarks/README):
  - float32 from a 16-bit checkpoint: every tensor is copied (float32, resident) and the mapped pages are
    resident too while loading, then unmapped: peak = float32 + checkpoint, after = float32 (the 3B bf16
    reference process peaked at 17.7 GB = 12.1 GB float32 + 5.75 GB mapped + imports);
  - the checkpoint's own dtype: no copy at all, the parameters *are* the mapped pages (RssFile, clean file
    pages the kernel can drop and read again): resident = the checkpoint, nothing transient.
So the reference's transient (mapped pages while loading) is gone before the SavedModel loads. The Keras model's
memory is *not* given back when it is dropped: TensorFlow keeps freed tensor memory in its own pool (1 GB of
tf.Variables deleted: RSS unchanged, malloc_trim or MALLOC_MMAP_THRESHOLD_ change nothing), and the SavedModel's
restore did not reuse it (measured). The verification peak is therefore the variables + the reference + the larger
of its transient and the SavedModel: a 3B bf16 Llama with a bf16 reference peaked at 19.0 GB, estimated 19.1 GB.
Where the estimate exceeds the memory available, ``check_fits`` refuses before loading anything,
giving both figures and the flag that goes ahead anyway (``--ignore-memory-estimate``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError

GB = 1e9
FLAG = "--ignore-memory-estimate"
# RSS of a process that has imported torch, tensorflow, keras_hub and transformers (measured ~1.2-1.4 GB here)
IMPORT_FLOOR_BYTES = int(1.4 * GB)
# of which torch and transformers (measured 0.3 GB): a direct torch -> tf conversion that does not verify never
# imports them (porter/readers/config_completion.py)
TORCH_IMPORTS_BYTES = int(0.3 * GB)
STREAMING_TENSORS = 2  # the largest tensor in flight twice: as read, and cast/transposed into its variable
_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
             "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}


@dataclass
class Estimate:
    """Bytes a conversion is expected to add to this process, by part."""

    variables: int  # the Keras model's variables, in the written dtype
    streaming: int  # tensors in flight while mapping and saving
    imports: int  # the frameworks still to be imported
    reference: int = 0  # verification: transformers' torch model, resident after loading
    candidate: int = 0  # verification: the written SavedModel, loaded again
    reference_transient: int = 0  # while the reference loads only: the checkpoint pages mapped beside its copies
    reference_dtype: str = "float32"
    rss: int = 0  # this process's RSS when estimated: the predicted peak RSS is rss + total

    @property
    def convert_bytes(self) -> int:
        return self.variables + self.streaming + self.imports

    @property
    def total(self) -> int:
        # verification runs after the Keras model is dropped (routes/direct.py), but TensorFlow keeps its memory
        # (module doc); the reference's mapped pages are unmapped before the SavedModel loads
        verification = self.variables + self.reference + self.streaming + max(self.reference_transient, self.candidate)
        return self.imports + max(self.variables + self.streaming, verification if self.reference else 0)

    def to_dict(self) -> dict:
        """In MB, as porter_report.json's peak_rss_mb marks (MB = 2**20 bytes, as ru_maxrss)."""
        parts = {k: round(getattr(self, k) / 2**20, 2) for k in ("variables", "streaming", "imports", "reference", "candidate",
                                                                  "reference_transient")}
        return dict(parts, reference_dtype=self.reference_dtype, convert=round(self.convert_bytes / 2**20, 2), total=round(self.total / 2**20, 2),
                    rss_at_estimate=round(self.rss / 2**20, 2))

    def parts(self) -> list[str]:
        lines = [f"the model's variables: {size_text(self.variables)}",
                 f"streaming (the largest tensor in flight {STREAMING_TENSORS}x): {size_text(self.streaming)}",
                 f"imports of torch/tensorflow still to load: {size_text(self.imports)}"]
        if self.reference:
            mapped = (f" (+ {size_text(self.reference_transient)} of mapped checkpoint while it loads)"
                      if self.reference_transient else " (the mapped checkpoint pages themselves)")
            lines.append(f"verification, with the model's memory still held by TensorFlow: transformers' {self.reference_dtype} reference "
                         f"{size_text(self.reference)}{mapped}, then the written SavedModel {size_text(self.candidate)}")
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


def estimate_torch_to_tf(shapes: dict, dtypes: dict, written: str, verify: bool, current_rss: int | None = None,
                        reference_dtype: str = "float32") -> Estimate:
    """``shapes``/``dtypes``: the checkpoint's tensors as stored; ``written``: the Keras model's float dtype;
    ``reference_dtype``: the float dtype transformers loads the verification reference in."""
    out_size = _ITEMSIZE.get(written, 4)
    variables, largest = 0, 0
    for key, shape in shapes.items():
        n, stored_dtype = _numel(shape), dtypes.get(key, "float32")
        stored = _ITEMSIZE.get(stored_dtype, 4)
        variables += n * (out_size if stored_dtype.startswith(("float", "bfloat")) else stored)
        largest = max(largest, n * max(stored, out_size))
    rss = _rss_bytes() if current_rss is None else current_rss
    unneeded = TORCH_IMPORTS_BYTES if not verify and "torch" not in sys.modules else 0
    imports = max(0, IMPORT_FLOOR_BYTES - unneeded - rss)
    estimate = Estimate(variables, STREAMING_TENSORS * largest, imports, rss=rss)
    if verify:
        estimate.reference, estimate.reference_transient = _reference_bytes(shapes, dtypes, reference_dtype)
        estimate.reference_dtype, estimate.candidate = reference_dtype, _restored(variables)
    return estimate


def estimate_verify(shapes: dict, dtypes: dict, candidate_bytes: int, reference_dtype: str = "float32") -> int:
    """Bytes `porter verify` adds to this process for a transformers reference loaded in ``reference_dtype`` and a
    written SavedModel of ``candidate_bytes`` variables on disk, after the imports."""
    reference, transient = _reference_bytes(shapes, dtypes, reference_dtype)
    return max(0, IMPORT_FLOOR_BYTES - _rss_bytes()) + reference + max(transient, _restored(candidate_bytes))


def _reference_bytes(shapes: dict, dtypes: dict, reference_dtype: str) -> tuple[int, int]:
    """(resident, transient while loading) of transformers' reference in ``reference_dtype`` (module doc)."""
    reference, transient = 0, 0
    for key, shape in shapes.items():
        n, stored_dtype = _numel(shape), dtypes.get(key, "float32")
        stored = _ITEMSIZE.get(stored_dtype, 4)
        if stored_dtype.startswith(("float", "bfloat")) and stored_dtype != reference_dtype:
            # copied into the reference's dtype, pages mapped meanwhile
            reference, transient = reference + n * _ITEMSIZE.get(reference_dtype, 4), transient + n * stored
        else:  # kept as it is stored: a view of the mapped file, no copy
            reference += n * stored
    return reference, transient


def _restored(variables: int) -> int:
    """TF's SavedModel restore of ``variables`` bytes: 3B bf16 measured 1.10x its variables."""
    return variables + variables // 10


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


def check_fits(estimate, what: str, verify: bool, ignore: bool, other_way: str = "") -> None:
    """Refuse (exit 2) when ``estimate`` exceeds the available memory, unless ``ignore``. ``estimate``: an Estimate,
    or any object with its ``total``, ``convert_bytes`` and ``parts()`` (memory_estimate_onnx.py); ``other_way``: one
    more way out for the hint."""
    free = available_bytes()
    if ignore or free is None or estimate.total <= free:
        return
    hint = f"pass {FLAG} to go ahead anyway"
    if verify and estimate.convert_bytes <= free:
        hint += f", or --no-verify (converting alone needs about {size_text(estimate.convert_bytes)}) and verify elsewhere"
    if other_way:
        hint += f", or {other_way}"
    raise PorterError(f"{what} needs about {size_text(estimate.total)} of memory by porter's estimate, "
                      f"and {size_text(free)} is available", problems=estimate.parts(), hint=hint)

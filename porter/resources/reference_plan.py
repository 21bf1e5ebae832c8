"""Which reference a direct torch -> tf conversion is verified against, chosen to fit the memory available.

transformers' float32 model is the stronger reference (an independent float32 computation), and is kept whenever
porter's estimate says it fits. Where it does not, and the written model is 16-bit from a 16-bit checkpoint,
the reference is transformers' model in the checkpoint's own dtype instead: the same independent loader and
forward pass, half the memory (its parameters are the mapped checkpoint pages, memory_estimate.py), compared at
16-bit tolerances (verifiers/compare.py: max(floor, 24 ulps at max|ref|)), on fewer, shorter sequences.
The console and porter_report.json say which reference ran, on which shapes, and why.

A 16-bit reference cannot see a 1% norm or bias error. So wherever the float32 reference does not fit, a decoder of
the direct route (BLOCKWISE_FAMILIES) is also verified block by block in float32 (verifiers/blockwise.py: each
transformers block streamed from the checkpoint, beside the same block of the written model, on the same hidden
states), about one block of each model beside the written weights; ``--verify-blocks`` asks for it anywhere. Where
not even the 16-bit reference fits beside the written SavedModel (a 7B bf16 Llama on 24 GB), the end-to-end
comparison at the checkpoint's dtype streams transformers' layers too, against the written Keras model in memory
(``streamed``), instead of refusing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from porter.errors import PorterError
from porter.resources.memory_estimate import Estimate, available_bytes, estimate_torch_to_tf, size_text

HALF = ("bfloat16", "float16")
# The 16-bit fallback's input shapes (batch, sequence), instead of the family's defaults (keras-hub's: 1x5, 3x40,
# 4x5, 1x43). Two shapes: one full row, and a batch of 2 whose second row is padded (the mask path). Memory does
# not choose them (a 3B Llama's activations at 2x12 are a few MB); time does: the fallback runs exactly the models
# too big for a float32 reference here, each token a full pass through both (3B on 2 cores: benchmarks/README).
FALLBACK_SHAPES = ((1, 16), (2, 12))


@dataclass
class ReferencePlan:
    dtype: str  # the dtype transformers loads the reference in
    estimate: Estimate  # the conversion's estimate with that reference
    shapes: tuple | None = None  # (batch, sequence) pairs; None: the family's defaults
    reason: str = ""  # why not float32; "" when float32
    float32_estimate: Estimate | None = field(default=None, repr=False)
    blockwise: str = ""  # why every block is also verified in float32 (verifiers/blockwise.py); "": not
    streamed: bool = False  # the end-to-end reference streamed layer by layer against the in-memory written model

    @property
    def fallback(self) -> bool:
        return self.dtype != "float32"

    def to_dict(self, inputs_given: bool = False) -> dict:
        out = {"dtype": self.dtype, "loader": STREAMED_LOADER if self.streamed else "transformers from_pretrained"}
        if self.fallback:
            out.update(reason=self.reason, shapes="given --inputs" if inputs_given else [list(s) for s in self.shapes],
                       float32_estimate_mb=round(self.float32_estimate.total / 2**20, 2))
        return out


CHOICES = ("auto", "float32", "checkpoint")  # --reference-dtype
# zoo/keras_hub/families.py's decoders: verifiers/blockwise.py runs their blocks one at a time on both sides
BLOCKWISE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2")
STREAMED_LOADER = "transformers' model class, each decoder layer streamed from the checkpoint"


def plan_reference(entry, shapes: dict, dtypes: dict, source: str, written: str, verify: bool,
                   ignore_memory_estimate: bool, current_rss: int | None = None, choice: str = "auto",
                   model_type: str | None = None, verify_blocks: bool = False) -> ReferencePlan:
    """``choice`` "auto": float32 unless its estimate exceeds the available memory and a 16-bit reference can
    stand in (``source`` and ``written`` the same 16-bit dtype, and the zoo entry's loader takes a dtype);
    "float32": always (check_fits may then refuse); "checkpoint": the checkpoint's own 16-bit dtype, asked for.
    ``model_type`` one of BLOCKWISE_FAMILIES: the 16-bit fallback comes with block-wise float32 verification, and where
    the 16-bit reference does not fit either, the streamed end-to-end reference; ``verify_blocks``: block-wise always."""
    plan = _plan(entry, shapes, dtypes, source, written, verify, ignore_memory_estimate, current_rss, choice,
                 model_type in BLOCKWISE_FAMILIES)
    if verify_blocks and verify:
        if model_type not in BLOCKWISE_FAMILIES:
            raise PorterError(f"--verify-blocks: porter verifies block by block the direct route's decoders only "
                              f"({', '.join(BLOCKWISE_FAMILIES)}), not {model_type!r}", hint="leave --verify-blocks out")
        plan.blockwise = plan.blockwise or "asked for by --verify-blocks"
    return plan


def _plan(entry, shapes, dtypes, source, written, verify, ignore_memory_estimate, current_rss, choice,
          blocks_ok: bool) -> ReferencePlan:
    if choice not in CHOICES:
        raise PorterError(f"--reference-dtype {choice!r} is not one of {', '.join(CHOICES)}")
    first = estimate_torch_to_tf(shapes, dtypes, written, verify, current_rss=current_rss)
    plan = ReferencePlan("float32", first)
    if not verify or choice == "float32" or source not in HALF:
        return plan
    if choice == "checkpoint":
        if not _loads_in(entry):
            raise PorterError(f"--reference-dtype checkpoint: porter's {getattr(entry, 'name', 'zoo entry')} loads its "
                              f"transformers reference in float32 only", hint="leave --reference-dtype out")
        half = estimate_torch_to_tf(shapes, dtypes, written, verify, current_rss=first.rss, reference_dtype=source)
        reason = (f"asked for by --reference-dtype checkpoint (a float32 reference: about {size_text(first.total)} "
                  f"by porter's estimate, {source}: {size_text(half.total)})")
        return ReferencePlan(source, half, FALLBACK_SHAPES, reason, float32_estimate=first)
    if ignore_memory_estimate or source != written or not _loads_in(entry):
        return plan
    free = available_bytes()
    if free is None or first.total <= free:
        return plan
    half = estimate_torch_to_tf(shapes, dtypes, written, verify, current_rss=first.rss, reference_dtype=written)
    reason = (f"a float32 reference needs about {size_text(first.total)} by porter's estimate, "
              f"{size_text(free)} is available ({written}: {size_text(half.total)})")
    plan = ReferencePlan(written, half, FALLBACK_SHAPES, reason, float32_estimate=first)
    if not blocks_ok:
        return plan
    plan.blockwise = f"a float32 reference does not fit ({size_text(first.total)} by porter's estimate, {size_text(free)} available)"
    if half.total > free:  # not even the 16-bit reference beside the written SavedModel: both streamed
        plan.estimate, plan.streamed = estimate_blockwise(shapes, dtypes, written, first.rss), True
        plan.reason = (f"neither a float32 ({size_text(first.total)}) nor a {written} reference ({size_text(half.total)}) "
                       f"fits beside the written model by porter's estimate, {size_text(free)} is available: "
                       f"transformers' layers streamed one at a time (about {size_text(plan.estimate.total)})")
    return plan


@dataclass
class BlockwiseEstimate(Estimate):
    """The conversion's estimate where transformers' layers are streamed (block-wise verification and the streamed
    end-to-end comparison): ``reference`` is the largest of what is held beside the written model at any time."""

    def parts(self) -> list[str]:
        return super().parts()[:3] + [
            f"verification, with the model's memory still held by TensorFlow: one decoder block of each side in float32 "
            f"(transformers' also in float64), "
            f"or transformers' LM head beside the written token table(s) in float32: {size_text(self.reference)}"]


def estimate_blockwise(shapes: dict, dtypes: dict, written: str, current_rss: int) -> Estimate:
    """The conversion with block-wise verification and the streamed end-to-end comparison: the written model's variables
    (held through verification), then one decoder block of each side (the written one in float32, transformers' in
    float64 for its float32 floor), or at the ends transformers' LM head beside the written model's token table(s)
    copied to float32 (verifiers/blockwise.py)."""
    import re

    base = estimate_torch_to_tf(shapes, dtypes, written, True, current_rss=current_rss)
    layers: dict[str, int] = {}
    table = 0
    for key, shape in shapes.items():
        n = 1
        for d in shape:
            n *= int(d)
        found = re.search(r"\.(\d+)\.", key)
        if found:
            layers[found.group(1)] = layers.get(found.group(1), 0) + 4 * n
        else:
            table = max(table, 4 * n)
    return BlockwiseEstimate(base.variables, base.streaming, base.imports, rss=base.rss,
                             # a block: the written one copied to float32, transformers' in float64 (its floor); at
                             # the ends transformers' head and the written token tables in float32. Summed, not the
                             # larger: freed float32 copies are not all given back (a 1B bf16 Llama: +1.59 GB measured
                             # over the conversion's peak, 1.50 GB by this sum, 0.75 GB by the larger alone)
                             reference=3 * max(layers.values(), default=0) + 3 * table,
                             reference_dtype="float32, one block at a time")


def _loads_in(entry) -> bool:
    """The zoo entry's transformers loader takes a dtype (zoo/keras_hub/entry.py load_torch)."""
    load = getattr(getattr(entry, "impl", None), "load_torch", None)
    try:
        return load is not None and "dtype" in inspect.signature(load).parameters
    except (TypeError, ValueError):
        return False


def reference_note(plan: ReferencePlan, verification, inputs_given: bool) -> str:
    """One line for the console and the report's notes: which reference ran, on which shapes, and why. The dtype is
    read from the reference's compared outputs, so the line says what was compared, not what was asked for."""
    ran = sorted({o.dtype for s in verification.shapes for o in s.outputs if "float" in o.dtype}) or [plan.dtype]
    shapes = "the given --inputs" if inputs_given else ", ".join(f"{b}x{s}" for b, s in plan.shapes)
    against = " against the written Keras model in memory (the SavedModel is not loaded a second time)" if plan.streamed else ""
    return (f"reference: transformers in {'/'.join(ran)}, not float32: {plan.reason}; compared at "
            f"{'/'.join(ran)} tolerances on {shapes}{against}, fewer and shorter sequences than the default "
            f"(a float32 reference is the stronger check: run it where it fits"
            + ("; every block was also verified in float32, block by block)" if plan.blockwise else ")"))


def verify_reference(path, choice: str, candidate=None) -> tuple[str | None, tuple | None, str]:
    """``porter verify --reference-dtype``: (the dtype transformers loads REFERENCE in, or None for float32; the
    fallback shapes, or None; a note for the report). "checkpoint" asks for the checkpoint's own 16-bit dtype, the
    reference that fits where a float32 one does not (a 3B bf16 Llama: 12.1 GB float32 against 5.75 GB of mapped
    pages): it must be a zoo model's HF torch folder whose loader takes a dtype. "auto" (the default) takes that
    16-bit reference only where porter's estimate says a float32 one and the ``candidate`` would not fit."""
    if choice not in CHOICES:
        raise PorterError(f"--reference-dtype {choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "float32":
        return None, None, ""
    if choice == "auto":
        try:
            checkpoint, dtype = _own_16bit_reference(path, choice)
        except PorterError:  # no 16-bit zoo reference here (or a bad path, which verify reports itself, in its order)
            return None, None, ""
        return _auto_verify_reference(checkpoint, dtype, candidate)
    _, dtype = _own_16bit_reference(path, choice)
    return dtype, FALLBACK_SHAPES, (f"reference: transformers in {dtype}, not float32: asked for by --reference-dtype "
                                    f"checkpoint; compared at {dtype} tolerances (a float32 reference is the stronger check)")


def _own_16bit_reference(path, choice: str):
    """(the checkpoint, its one 16-bit dtype) of a zoo model's HF torch folder whose loader takes a dtype; else
    a PorterError naming what ``path`` is."""
    from pathlib import Path

    from porter import zoo
    from porter.readers.artifacts import detect
    from porter.readers.checkpoints import open_torch_checkpoint

    artifact = detect(Path(path))
    config = artifact.config or {}
    entry = zoo.ENTRIES.get(config.get("model_type")) if artifact.format == "hf" else None
    if entry is None or not _loads_in(entry):
        raise PorterError(f"--reference-dtype {choice}: {path} is not a checkpoint porter's zoo loads in its own dtype "
                          f"(a {artifact.description}); only a zoo model's HF torch folder is",
                          hint="leave --reference-dtype out (float32)")
    checkpoint = open_torch_checkpoint(artifact.path)
    floats = {d for d in checkpoint.dtypes.values() if d.startswith(("float", "bfloat"))}
    if len(floats) != 1 or next(iter(floats)) not in HALF:
        raise PorterError(f"--reference-dtype {choice}: {path} stores {', '.join(sorted(floats)) or 'no float'} weights, "
                          f"not one 16-bit dtype ({', '.join(HALF)})", hint="leave --reference-dtype out (float32)")
    return checkpoint, next(iter(floats))


def _auto_verify_reference(checkpoint, dtype: str, candidate) -> tuple[str | None, tuple | None, str]:
    from pathlib import Path

    from porter.resources.memory_estimate import estimate_verify
    from porter.resources.memory_estimate_onnx import weights_on_disk

    written = weights_on_disk(Path(candidate), "tf") if candidate is not None and Path(candidate).exists() else 0
    need = estimate_verify(checkpoint.shapes, checkpoint.dtypes, written)
    free = available_bytes()
    if free is None or need <= free:
        return None, None, ""
    half = estimate_verify(checkpoint.shapes, checkpoint.dtypes, written, reference_dtype=dtype)
    return dtype, FALLBACK_SHAPES, (f"reference: transformers in {dtype}, not float32: a float32 reference and the "
                                    f"candidate need about {size_text(need)} by porter's estimate, {size_text(free)} "
                                    f"is available ({dtype}: {size_text(half)}); compared at {dtype} tolerances on "
                                    f"{', '.join(f'{b}x{s}' for b, s in FALLBACK_SHAPES)} (a float32 reference is the "
                                    f"stronger check: run it where it fits)")

"""`porter convert --from torch --to tf` on the graph route: source -> ExportedProgram -> porter's own
ATen -> TF converter (porter/graph_to_tf) -> SavedModel, written all-or-nothing and verified.

    HF folder  --transformers + torch.export (dynamic batch/sequence)--+
    .pt2       --torch.export.load (porter/readers/safe_pt2.py checks)---------+--> graph_to_tf --> SavedModel (serving_default)

No ONNX and no onnx2tf: the TF graph is built op by op from the decomposed ATen graph, so the dims
torch.export kept dynamic stay None in the signature. Every op without a converter is found before
anything is written (MissingConverters), so `--route auto` can hand the model to the ONNX route.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from porter.process import progress
from porter.errors import PorterError, UnsupportedModelError
from porter.routes import onnx_graph


class MissingConverters(UnsupportedModelError):
    """The ATen graph holds ops porter's converter has none for (check.py's listing in ``problems``)."""


@dataclass
class Prepared:
    reference: Path  # what the verifier's reference runner opens: the HF folder or the .pt2
    program: object  # the ExportedProgram to convert (decomposed where needed), checked: every op has a converter
    input_names: list[str]
    output_names: list[str]
    specs: dict  # the source's inputs: name -> (dtype, shape with None where the source takes any size)
    feeds: list[dict]
    model_name: str
    export: str  # how the dims were exported, for the report
    reference_text: str
    input_notes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    architecture: str | None = None
    decomposition: str = ""  # which decompositions ran before converting (none where every op converts as exported)
    channels_last: tuple = ()  # --layout nhwc: the image inputs the written signatures take channels-last
    kv: object = None  # a causal LM's KV-cache step (KVStep): the SavedModel's prefill/decode (graph_kv_cache.py)


@dataclass
class KVStep:
    program: object  # the step's ExportedProgram, checked like Prepared.program
    shapes: list  # (kv heads, key head dim, value head dim) per layer
    length: int  # max_cache_len
    dtype: str
    config: dict  # the folder's config.json, as read (the generation check's vocabulary)
    prefill_lengths: tuple = ()  # --prefill-lengths: model.tflite's prefill_<n>
    prompt_ids: list | None = None  # --prompts: the generation check's token ids (else porter's random ones)


def convert_via_graph(artifact, *, out, force, verify, atol, rtol, console, inputs=None, static_shapes=False,
                      route_reason=None, latency=False, target="tf", allow_flex=False, layout=None, quantize=None,
                      max_cache_len=None, prefill_lengths=None, prompts=None):
    """``target``: "tf" (the SavedModel) or "tflite" (model.tflite from it, porter/routes/graph_tflite.py:
    built-in ops only unless ``allow_flex``, verified by LiteRT alone in a fresh process). ``layout`` "nhwc": the
    signatures take 4-D float inputs (images) channels-last; else torch's NCHW. ``quantize``
    (routes/tflite_quantize.Quantize): a quantized .tflite beside the float one, its error measured apart
    (verifiers/quantization.py). A causal LM written --to tf also gets prefill/decode signatures with a KV cache of
    ``max_cache_len`` slots (default min(position limit, 4096)) and, with ``prefill_lengths``, a model.tflite of
    them (routes/graph_kv_cache.py), verified by generation against transformers' generate."""
    from porter.output.outdir import staged_output
    from porter.output.result import ConversionResult, finish

    timings = {}
    t0 = time.perf_counter()
    kv_asked = {"target": target, "max_cache_len": max_cache_len, "prefill_lengths": tuple(prefill_lengths or ()),
                "prompts": prompts}
    prep = prepare(artifact, static_shapes, kv_asked)  # MissingConverters here: nothing is staged yet
    prep.channels_last = tuple(onnx_graph.channel_inputs(prep.specs)) if layout == "nhwc" else ()
    if inputs is not None and verify:
        _check_ranges(prep, Path(inputs))  # before anything is written
    if quantize is not None:
        from porter.routes.tflite_quantize import prepare_calibration

        prepare_calibration(quantize, prep.specs, prep.feeds, prep.channels_last)  # --calibration checked: nothing written yet
    timings["export_s"] = time.perf_counter() - t0
    with staged_output(Path(out), force, protected=(artifact.path,)) as tmp:
        t0 = time.perf_counter()
        lite, candidate, options = None, tmp, None
        if target == "tflite":
            from porter.routes import graph_tflite

            converted, lite = graph_tflite.write_tflite(prep, tmp, allow_flex, quantize)
            candidate = tmp / "model.tflite"
            options = {"isolated": True, "flex": lite["flex"]}  # LiteRT alone; TF's Flex delegate only for Flex ops
        else:
            converted = _write(prep, tmp, int32_ids=True)  # serving_default int32 ids, serving_int64 int64
            from porter.verifiers.runners.runtime_isolated import fresh_process_options

            options = fresh_process_options(latency)  # TensorFlow alone, in a fresh process (runners/runtime_isolated.py)
        timings["convert_s"] = time.perf_counter() - t0
        report = _report(artifact, prep, converted, out, timings)
        report.update(route_reason=route_reason, static_shapes=static_shapes)
        if target == "tf":
            from porter.verifiers.runners.runtime_isolated import fresh_report

            report["fresh_process"] = fresh_report(tmp, options, verify)
        if lite is not None:
            _tflite_report(report, lite, _written(converted, as_written=True))
        (tmp / "porter_report.json").write_text(json.dumps(report, indent=2, default=str))
        verification = None
        if verify:
            from porter.routes.onnx_pipeline import hold_to_dynamic_dims

            t0 = time.perf_counter()
            verification = _verify(prep, converted, candidate, atol, rtol, inputs, latency, options)
            hold_to_dynamic_dims(verification, report, static_shapes)
            if not verification and inputs is None:
                _localise(prep, converted, verification, report, atol)
            timings["verify_s"] = time.perf_counter() - t0
        if prep.kv is not None and target == "tf":
            from porter.routes.graph_kv_cache import layout as kv_layout

            report["kv_cache"] = kv_layout(prep.kv.shapes, prep.kv.length, prep.kv.dtype)
            if converted.kv_tflite:
                report["kv_cache"]["tflite"] = converted.kv_tflite
            if verification is not None and inputs is None:
                _verify_generation(prep, tmp, verification, report, atol, rtol)
        if quantize is not None:
            from porter.routes.tflite_quantize import measure_written

            measure_written(quantize, prep, tmp, report, verification, fitting_feeds(prep, converted), inputs, lite["flex"])
        finish(tmp, Path(out), report, verification, console)
        if report.get("quantization"):
            from porter.verifiers.quantization import render

            render(report["quantization"], console, failures=verification is None)
    return ConversionResult(Path(out), "graph", verification, report)


# -- source -> ExportedProgram ------------------------------------------------------------------


def prepare(artifact, static_shapes: bool = False, kv_asked: dict | None = None) -> Prepared:
    """``kv_asked``: {"target", "max_cache_len", "prefill_lengths"}: a causal LM's KV-cache step is exported for
    --to tf; the flags on anything else are refused here, before anything is written."""
    kv_asked = kv_asked or {"target": "tf", "max_cache_len": None, "prefill_lengths": ()}
    flag = _kv_flag(kv_asked)
    if flag and (artifact.format != "hf" or kv_asked["target"] != "tf"):
        raise PorterError(f"{flag} sizes the prefill/decode KV cache of a causal LM (an HF folder) converted --to tf; "
                          f"here: a {artifact.description} --to {kv_asked['target']}", hint=f"leave {flag.split()[0]} out")
    archs = (artifact.config or {}).get("architectures") or [] if artifact.format == "hf" else []
    if flag and not any(str(a).endswith("ForCausalLM") for a in archs):  # before anything is exported
        raise PorterError(f"{flag} sizes the prefill/decode KV cache of a causal LM; {artifact.path.name} is not a causal LM "
                          f"(config.json names {', '.join(map(str, archs)) or 'no architecture'}, not a *ForCausalLM)",
                          hint=f"leave {flag.split()[0]} out")
    if artifact.format == "hf":
        prep = _prepare_hf(artifact, static_shapes, kv_asked)
    elif artifact.format == "pt2":
        prep = _prepare_pt2(artifact)
    elif artifact.framework == "onnx":
        prep = _prepare_onnx(artifact, static_shapes)
    else:
        raise PorterError(f"the graph route starts from an HF folder, a .pt2 or an .onnx file, not a {artifact.description}",
                          hint="pass --route auto")
    return prep


def _checked(program) -> dict:
    """Prepared's program (as exported where every op converts as it is, else decomposed to core ATen) and how,
    or MissingConverters listing every op (with counts) that has no converter."""
    from porter.process.frameworks import tensorflow

    tensorflow()  # quietened before the op converters import it
    from porter.graph_to_tf.check import check_supported
    from porter.graph_to_tf.decompositions import decompose

    exported = program
    with progress.step("preparing the ATen graph (decomposed to core ATen where an op needs it)"):
        program = decompose(program)
    how = ("none: every op of torch.export's graph has a converter" if program is exported
           else "core ATen (torch.export.default_decompositions, gelu and scaled_dot_product_attention kept)")
    try:
        check_supported(program.graph)
    except UnsupportedModelError as exc:
        raise MissingConverters(exc.message, problems=exc.problems, hint=exc.hint) from None
    return {"program": program, "decomposition": how}


def _kv_flag(kv_asked: dict) -> str:
    if kv_asked.get("max_cache_len") is not None:
        return f"--max-cache-len {kv_asked['max_cache_len']}"
    if kv_asked.get("prefill_lengths"):
        return f"--prefill-lengths {','.join(map(str, kv_asked['prefill_lengths']))}"
    if kv_asked.get("prompts") is not None:
        return f"--prompts {kv_asked['prompts']}"
    return ""


def _kv_step(model, config: dict, name: str, kv_asked: dict, notes: list) -> "KVStep | None":
    """A causal LM's KV-cache step, exported and checked; None for other models. Where the step cannot be
    exported or converted, the flags that asked for it exit 2; without them the SavedModel keeps serving_default
    and the report says why prefill/decode are missing."""
    from porter.routes import graph_kv_cache
    from porter.zoo.keras_hub.kv_cache import check_prefill_lengths, check_tflite_dtype, max_cache_len

    flag = _kv_flag(kv_asked)
    if kv_asked["target"] != "tf" or not graph_kv_cache.is_causal_lm(model):
        if flag:
            raise PorterError(f"{flag} sizes the prefill/decode KV cache of a causal LM; {name} is not a causal LM "
                              f"(a transformers *ForCausalLM)", hint=f"leave {flag.split()[0]} out")
        return None
    length = max_cache_len(config, kv_asked["max_cache_len"])  # beyond the positions: exit 2
    lengths = kv_asked["prefill_lengths"]
    check_prefill_lengths(lengths, length, name)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    check_tflite_dtype(lengths, dtype)
    prompt_ids = None
    if kv_asked.get("prompts") is not None:
        from porter.verifiers.generation import read_prompts

        prompt_ids = read_prompts(kv_asked["prompts"], int(config["vocab_size"]), length, max(lengths) if lengths else None)
    try:
        shapes = graph_kv_cache.geometry(model)
        checked = None
        for slot_mask in (False, True):  # with the slots' mask where the model sizes its own from the cache (OPT)
            try:
                with progress.step(f"exporting {name}'s KV-cache step (prefill/decode, {length} slots)"):
                    program = graph_kv_cache.export_step(model, shapes, length, name, slot_mask)
                checked = _checked(program)["program"]
                break
            except PorterError:
                if slot_mask:
                    raise
    except PorterError as exc:
        if flag:
            raise
        notes.append(f"prefill/decode not written: {exc.message[:300]}")
        return None
    return KVStep(checked, shapes, length, dtype, config, tuple(lengths), prompt_ids)


def _verify_generation(prep: Prepared, folder: Path, verification, report: dict, atol, rtol) -> None:
    """prefill/decode (and the .tflite's) generate transformers' greedy tokens (verifiers/generation.py)."""
    from porter.verifiers.generation import verify_generation

    def loader(path, dtype):
        from porter.routes import hf_source

        return hf_source.load(path)[0]

    lengths = prep.kv.prefill_lengths
    with progress.step("generating with prefill + decode against transformers' generate"):
        result = verify_generation(prep.reference, folder, prep.kv.config, prep.kv.length, atol=atol, rtol=rtol,
                                   tflite=folder / "model.tflite" if lengths else None,
                                   max_prompt=max(lengths) if lengths else None, loader=loader,
                                   prompt_ids=prep.kv.prompt_ids)
    verification.notes.extend(result.summaries())
    verification.problems.extend(result.problems())
    report["generation"] = result.to_dict()


def _prepare_hf(artifact, static_shapes: bool, kv_asked: dict) -> Prepared:
    from porter.routes import hf_source

    # transformers' default attention (sdpa where the class has it): the verifier's reference loads the same way
    model, config, name = hf_source.load(artifact.path)
    hf = hf_source.describe(model, config, name)
    mode, program, notes = _export_hf(model, hf, static_shapes)
    if mode != "named" and "pixel_values" in hf.specs and hf.specs["pixel_values"][1][2] is None:
        shape = _input_shape(program, 0)
        if shape[2] is not None:  # torch kept image size static: verified at config.image_size only
            hf_source.fix_image_size(hf, notes[0] if notes else "torch.export specialised it")
            if tuple(shape[2:]) != hf.specs["pixel_values"][1][2:]:
                # specialised at the traced example's size: traced again at the model's own (config.image_size), the
                # size its users feed; the graph computes paddings and reshapes for that one size
                mode, program, again = _export_hf(model, hf, static_shapes)
                notes = [*notes, *again]
    input_notes = [f"inputs: generated for {name}: {hf.input_text}"]
    checked = _checked(program)
    kv = _kv_step(model, artifact.config, name, kv_asked, notes)
    return Prepared(reference=artifact.path, **checked, input_names=hf.input_names,
                    output_names=hf.output_names, specs=hf.specs, feeds=hf.feeds, model_name=artifact.path.name,
                    export=mode, reference_text=f"transformers {name} read from {artifact.path} (torch)",
                    input_notes=input_notes, notes=[*hf.notes, *notes], architecture=name, kv=kv)


def _export_hf(model, hf, static_shapes: bool):
    """torch.export with named Dims (one per meaning); where torch refuses them (the model specialises a dim)
    with Dim.AUTO, torch deciding which dims stay dynamic; with --static-shapes last at the example's shape."""
    from porter.routes import hf_source

    args = hf_source.example_args(hf)
    module = hf_source.named_module(model, hf.input_names, hf.output_names)
    attempts = [("named", hf_source.export_dims(hf)), ("auto", hf_source.export_dims(hf, auto=True))]
    if static_shapes:
        attempts.append(("static", None))
    failures: list[tuple[str, PorterError]] = []
    for mode, dims in attempts:
        try:
            with hf_source.plain_padding_masks(model):
                program = hf_source.trace(module, args, (tuple(dims),) if dims is not None else None, hf.architecture)
        except PorterError as exc:
            failures.append((mode, exc))
            continue
        notes = []
        if failures:
            how = ("Dim.AUTO: torch chose which dims stay dynamic" if mode == "auto"
                   else f"static shapes ({' x '.join(map(str, args[0].shape))}, --static-shapes)")
            notes.append(f"torch.export refused the named dynamic dims ({failures[0][1].message[:300]}); exported with {how}")
        return mode, program, notes
    last = failures[-1][1]
    shape = " x ".join(map(str, args[0].shape))
    raise PorterError(
        last.message,
        problems=[*last.problems, *(f"with {mode} dims: {exc.message[:300]}" for mode, exc in failures[:-1])],
        hint=(f"pass --static-shapes to export it at one shape ({shape}), or " if not static_shapes else "")
        + "export it yourself with torch.export.save(torch.export.export(model, args), 'model.pt2') and convert the .pt2")


def _prepare_pt2(artifact) -> Prepared:
    from porter.routes.to_onnx import (
        exported_program_io,
        exported_program_ranges,
        load_exported_program,
    )
    from porter.verifiers.inputs import from_specs

    with progress.step(f"loading {artifact.path}"):
        program = load_exported_program(artifact.path)  # safe_pt2's checks first: nothing in it may run code
    names, outputs, specs = exported_program_io(program)
    ranges = exported_program_ranges(program)
    sets = from_specs(specs, index_bounds=_index_bounds(program), ranges=ranges)
    input_notes = ["inputs: generated from the ExportedProgram's input signature", *sets.notes]
    return Prepared(reference=artifact.path, **_checked(program), input_names=names, output_names=outputs, specs=specs,
                    feeds=sets.feeds, model_name=artifact.path.stem, export="pt2",
                    reference_text=f"the ExportedProgram {artifact.path} run by torch", input_notes=input_notes)


def _prepare_onnx(artifact, static_shapes: bool) -> Prepared:
    """An ONNX file: porter's own ONNX -> torch converter (porter/onnx_to_torch), then torch.export with Dim.AUTO on
    every dim the ONNX graph leaves symbolic (torch keeps dynamic what the graph allows). No onnx2tf: the reference is
    the ONNX file itself, run by onnxruntime."""
    from porter.process.frameworks import torch
    from porter.onnx_to_torch import onnx_to_torch
    from porter.onnx_to_torch.converter import _opsets, check_model
    from porter.routes import hf_source
    from porter.verifiers.inputs import from_specs

    torch = torch()
    model = onnx_graph.load_onnx(artifact.path)
    names, outputs, specs = onnx_graph.onnx_io(model)
    check_model(model, _opsets(model))  # every op porter cannot read, listed before anything is built
    sets = from_specs(specs, index_bounds=onnx_graph.index_bounds(model))
    with progress.step(f"converting {artifact.path.name} to torch (porter's ONNX -> torch converter)"):
        module = onnx_to_torch(model)
    del model
    # torch.export specialises a dim traced at size 1: the example is a feed with every dynamic dim above 1 where one is
    example = next((f for f in sets.feeds if all(np.shape(f[n])[axis] > 1 for n in names
                                                 for axis, d in enumerate(specs[n][1]) if d is None)), sets.feeds[-1])
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in names)
    auto = tuple({axis: torch.export.Dim.AUTO for axis, d in enumerate(specs[n][1]) if d is None} or None for n in names)
    attempts = [("auto", auto)] + ([("static", None)] if static_shapes else [])
    failures = []
    for mode, dims in attempts:
        try:
            program = hf_source.trace(module, args, dims if any(dims or ()) else None, artifact.path.name)
        except PorterError as exc:
            failures.append(exc)
            continue
        notes = [f"torch.export refused the ONNX graph's dynamic dims ({failures[0].message[:300]}); exported at "
                 f"{', '.join(f'{n} {list(a.shape)}' for n, a in zip(names, args))} (--static-shapes)"] if failures else []
        input_notes = ["inputs: generated from the ONNX graph's input signature", *sets.notes]
        return Prepared(reference=artifact.path, **_checked(program), input_names=names, output_names=outputs,
                        specs=specs, feeds=sets.feeds, model_name=artifact.path.stem, export=f"onnx ({mode} dims)",
                        reference_text=f"the ONNX file {artifact.path} run by onnxruntime", input_notes=input_notes,
                        notes=notes)
    raise PorterError(failures[-1].message, problems=failures[-1].problems,
                      hint=("pass --static-shapes to export it at one shape, or " if not static_shapes else "")
                      + "convert it --to torch and export model.py yourself to a .pt2")


def _index_bounds(program) -> dict:
    """name -> rows of the embedding table an integer user input indexes (its generated ids stay inside)."""
    users = set(program.graph_signature.user_inputs)
    bounds = {}
    for node in program.graph.nodes:
        if node.op == "call_function" and "embedding" in str(node.target) and len(node.args) > 1:
            weight, ids = node.args[0], node.args[1]
            if getattr(ids, "name", None) in users and hasattr(weight, "meta") and "val" in weight.meta:
                bounds[ids.name] = min(bounds.get(ids.name, 1 << 62), int(weight.meta["val"].shape[0]))
    return bounds


def _input_shape(program, index: int) -> tuple:
    from porter.graph_to_tf.signature import user_inputs

    return [s for s in user_inputs(program) if s.is_tensor][index].shape


# -- ExportedProgram -> SavedModel ----------------------------------------------------------------


def _write(prep: Prepared, folder: Path, int32_ids: bool = False):
    """``int32_ids``: the direct route's signatures (serving_default int32 ids, serving_int64 int64; convert.py);
    else serving_default alone, in the program's dtypes."""
    from porter.process.frameworks import tensorflow
    from porter.graph_to_tf import convert_exported
    from porter.output.saved_model_shards import save_options

    tf = tensorflow()
    with progress.step("converting the ATen graph to TensorFlow"):
        converted = convert_exported(prep.program, decomposed=True, input_names=prep.input_names,
                                     output_names=prep.output_names)
        converted.channels_last = prep.channels_last
        step = _convert_step(prep, converted) if prep.kv is not None else None
    with progress.step("writing the SavedModel"):
        signatures = converted.signatures()
        if not int32_ids:
            signatures = {"serving_default": signatures["serving_default"] if prep.channels_last
                          else converted.module.serve.get_concrete_function()}
        root = converted.saveable()
        if step is not None:  # prefill/decode over the step (its weights are serving_default's, shared)
            from porter.routes import graph_kv_cache

            signatures = {**signatures, **graph_kv_cache.signatures(step, prep.kv.shapes, prep.kv.length)}
            root.kv_cache_step = step.module.weights
        tf.saved_model.save(root, str(folder), options=save_options(), signatures=signatures)
    if step is not None and prep.kv.prefill_lengths:
        from porter.routes import graph_kv_cache

        with progress.step(f"writing model.tflite (prefill_{'/'.join(map(str, prep.kv.prefill_lengths))} + decode)"):
            converted.kv_tflite = graph_kv_cache.write_tflite(step, folder / "model.tflite", prep.kv.shapes,
                                                              prep.kv.length, prep.kv.prefill_lengths)
    return converted


def _convert_step(prep: Prepared, converted):
    from porter.graph_to_tf import convert_exported
    from porter.zoo.keras_hub.kv_cache import cache_names

    names = cache_names(len(prep.kv.shapes))
    return convert_exported(prep.kv.program, decomposed=True, input_names=["tokens", "input_pos", *names],
                            output_names=["logits", *names], shared=converted.module.weights)


# -- verification and report ---------------------------------------------------------------------


def _verify(prep: Prepared, converted, candidate: Path, atol, rtol, inputs, latency, options=None):
    """porter.verify on the source and the written SavedModel (the runners `porter verify` uses), on the
    generated feeds that fit the written signature."""
    from porter.routes.onnx_graph import fitting_inputs
    from porter.verifiers.api import verify

    if inputs is not None:
        return verify(prep.reference, candidate, inputs=Path(inputs), atol=atol, rtol=rtol, route="graph", latency=latency,
                      candidate_options=options)
    fitting = fitting_inputs(prep.feeds, prep.input_notes, _written(converted), "torch.export")
    return verify(prep.reference, candidate, inputs=fitting, atol=atol, rtol=rtol, route="graph", latency=latency,
                  candidate_options=options)


def fitting_feeds(prep: Prepared, converted) -> list[dict]:
    """The generated feeds that fit the written signature (as _verify runs them)."""
    from porter.routes.onnx_graph import fitting_inputs

    return fitting_inputs(prep.feeds, prep.input_notes, _written(converted), "torch.export").feeds


def _check_ranges(prep: Prepared, path: Path) -> None:
    """--inputs against the dims the ExportedProgram takes (its Dim ranges and static sizes), before either side runs:
    a size outside them is bad input, named with the dim and its range (not torch's guard text)."""
    from porter.checks.model_files import npz_arrays
    from porter.graph_to_tf.signature import user_inputs
    from porter.routes.to_onnx import exported_program_ranges

    ranges = exported_program_ranges(prep.program)
    placeholders = {s.name: s.placeholder for s in user_inputs(prep.program) if s.is_tensor}
    problems = []

    def check(headers):
        for key, header in headers.items():
            name = key.rsplit("/", 1)[-1]  # NAME or SET/NAME
            spec = prep.specs.get(name)
            if spec is None or len(header.shape) != len(spec[1]):
                continue  # names and ranks: the verifier's own input check says more
            bounds = ranges.get(placeholders.get(name, name), {})
            for axis, size in enumerate(header.shape):
                fixed = spec[1][axis]
                if fixed is not None and size != fixed:
                    problems.append(f"{key}: axis {axis} is {size}; the model takes only {fixed} there")
                elif axis in bounds:
                    lo, hi = bounds[axis]
                    if size < lo or (hi is not None and size > hi):
                        problems.append(f"{key}: axis {axis} is {size}, outside the dim's range [{lo}, {hi if hi is not None else 'inf'}]")

    npz_arrays(path, "--inputs", check=check)
    if problems:
        raise PorterError(f"--inputs {path} does not fit the dims of {prep.reference}", problems=problems,
                          hint="give arrays inside those ranges, or export the model with wider Dim ranges")


def _tflite_report(report: dict, lite: dict, written: dict) -> None:
    """report for --to tflite: the .tflite's ops, Flex ops and inputs; its dims checked against the SavedModel's."""
    from porter.routes.graph_tflite import check_against_saved_model

    fixed = check_against_saved_model(lite, written)
    runtime = ("TensorFlow's tf.lite.Interpreter (its Flex delegate runs the Flex ops)" if lite["flex"]
               else "LiteRT (ai_edge_litert) alone")
    report.update(to="tflite", tflite=dict(lite, runtime=f"{runtime}, in a fresh process that never imported TensorFlow"
                                                         if not lite["flex"] else f"{runtime}, in a fresh process"))
    report["comparison"]["candidate"] = f"model.tflite's {lite['signature']} signature run by {runtime} in a fresh process"
    report["inputs"] = {n: {"dtype": d["dtype"], "shape": [None if x < 0 else x for x in d["shape_signature"]]}
                        for n, d in lite["inputs"].items()}
    if fixed:
        report["static_dims"] = [*report["static_dims"], *fixed]
        report["dynamic_dims_kept"] = False
    if lite["flex"]:
        report["notes"].append(f"--allow-flex: the .tflite holds Flex ops ({', '.join(lite['flex_ops'])}); it runs only "
                               "where the Flex delegate is linked, not in LiteRT alone")


def _written(converted, as_written: bool = False) -> dict:
    """name -> (dtype, shape) of the converted inputs: in torch's layout, or ``as_written`` (NHWC where the
    signatures take an input channels-last)."""
    return {s.name: (str(s.dtype).removeprefix("torch."),
                     tuple(s.shape[i] for i in (0, 2, 3, 1)) if as_written and s.name in converted.channels_last
                     else tuple(s.shape)) for s in converted.inputs if s.is_tensor}


def _localise(prep: Prepared, converted, verification, report: dict, atol) -> None:
    """The first ATen node whose TF value differs from torch's, on the first feed that fits (eager, node by node)."""
    from porter.graph_to_tf import first_divergence
    from porter.routes.onnx_graph import fits

    feed = next((f for f in prep.feeds if fits(f, _written(converted))), None)
    if feed is None:
        return
    # torch's side is keyed by the program's placeholders, TF's by the names the signature took
    feeds = {}
    for spec in (s for s in converted.inputs if s.is_tensor):
        feeds[spec.name] = feeds[spec.placeholder] = np.asarray(feed[spec.name])
    try:
        with progress.step("localising: the ATen graph node by node in torch and TF"):
            found = first_divergence(converted.program, converted, feeds, atol=atol or 1e-5)
    except Exception as exc:  # noqa: BLE001 - localisation explains a failure; it must not replace it
        verification.notes.append(f"localisation could not run: {type(exc).__name__}: {str(exc)[:200]}")
        return
    shapes = {n: list(np.shape(v)) for n, v in feed.items()}
    if found is None:
        text = f"no single ATen node differs by more than {atol or 1e-5:g} at {shapes}"
        report["localisation"] = {"inputs": shapes, "node": None, "note": text}
    else:
        text = str(found)
        report["localisation"] = {"inputs": shapes, "node": found.node, "op": found.op, "module_path": found.module_path,
                                  "max_abs_error": found.max_abs, "shape": list(found.shape)}
    verification.notes.append(f"localisation: {text}")
    report["notes"].append(f"localisation: {text}")


def _static_dims(prep: Prepared, converted) -> list[dict]:
    """Dims the source takes at any size that the written signature fixed."""
    dims = []
    for spec in (s for s in converted.inputs if s.is_tensor):
        source = prep.specs.get(spec.name, (None, spec.shape))[1]
        for axis, (before, after) in enumerate(zip(source, spec.shape)):
            if before is None and after is not None:
                dims.append({"input": spec.name, "axis": axis, "size": int(after)})
    return dims


def _report(artifact, prep: Prepared, converted, out, timings: dict) -> dict:
    from porter import __version__

    static = _static_dims(prep, converted)
    channel = onnx_graph.channel_inputs(prep.specs)
    shapes = sorted({tuple(tuple(np.shape(v)) for v in f.values()) for f in prep.feeds})
    return {
        "porter": __version__,
        "model": prep.model_name,
        "source": str(artifact.path),
        "from": artifact.framework,
        "to": "tf",
        "route": "graph",
        **({"architecture": prep.architecture} if prep.architecture else {}),
        "graph": {"export": prep.export, "decomposition": prep.decomposition, "inputs": prep.input_names,
                  "outputs": converted.output_names,
                  "shapes": converted.shape_report()},
        "inputs": {n: {"dtype": d, "shape": [None if x is None else int(x)
                                             for x in ([s[i] for i in (0, 2, 3, 1)] if n in prep.channels_last else s)]}
                   for n, (d, s) in _written(converted).items()},
        **converted.report_signatures(),  # serving_default's dtypes (int32 ids) where the SavedModel has the pair
        "outputs": converted.output_names,
        "static_dims": static,
        "dynamic_dims": {n: {int(a): str(t) for a, t in axes.items()} for n, axes in converted.dynamic_dims.items()},
        "dynamic_dims_kept": not static,
        "layout": {"inputs": {n: "nchw" for n in channel}, "candidate": "nhwc" if prep.channels_last else "nchw"},
        "comparison": {"reference": prep.reference_text, "candidate": "the written SavedModel's serving_default (TensorFlow)",
                       "outputs": converted.output_names,
                       "shapes": [dict(zip(prep.feeds[0], map(list, s))) for s in shapes]},
        "notes": list(prep.notes),
        "out": str(out),
        "timings": timings,
    }

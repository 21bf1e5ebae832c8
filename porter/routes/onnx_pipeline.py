"""`porter convert` on the ONNX route: source -> ONNX -> target (onnx or torch), written all-or-nothing, verified.

    torch (.pt2, HF folder, zoo model)  --torch.onnx.export(dynamo)--> ONNX  (--to onnx)
    tf (.keras, .h5, SavedModel)        --tf2onnx------------------> ONNX --porter--> model.py + model.safetensors + model.pt2
    onnx                                --------------------------------> model.py + model.safetensors + model.pt2
    --to onnx writes the ONNX file itself (checked against onnxruntime). TensorFlow targets are not written here:
    porter's graph route (graph_tf.py) converts torch and ONNX models to TF with its own ATen -> TF converter.

One module per leg, named by its role:
    source -> ONNX      to_onnx.py (torch.onnx.export, tf2onnx), to_onnx_leftovers.py (ops tf2onnx left as TF ops),
                        hf_source.py (an HF folder read by transformers, with its inputs and dynamic dims),
                        zoo_onnx_export.py (a zoo folder)
    ONNX -> torch       onnx_to_torch_folder.py (porter's converter: model.py + model.safetensors + model.pt2)
    shared              onnx_graph.py (reading the graph: inputs, outputs, id ranges, layouts)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from porter.process import progress
from porter.errors import PorterError
from porter.readers.model_code import model_code_record
from porter.routes import onnx_graph, onnx_to_torch_folder, to_onnx

LAYOUTS = ("nhwc", "nchw")


@dataclass
class Prepared:
    """The source, exported to ONNX: what to compare against and with which inputs."""

    reference: Path  # the artifact the reference runner opens
    export: to_onnx.OnnxExport
    feeds: list[dict]
    model_name: str
    zoo_entry: object = None
    source_layout: str = "native"
    notes: list[str] = field(default_factory=list)
    input_notes: list[str] = field(default_factory=list)
    architecture: str | None = None  # the transformers class an HF folder was built as


def convert_via_onnx(artifact, *, target, out, force, verify, atol, rtol, layout, console, zoo_source=None, inputs=None,
                     static_shapes=False, route_reason=None, latency=False):
    from porter.output.result import ConversionResult, finish as _finish

    if layout is not None and layout not in LAYOUTS:
        raise PorterError(f"--layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    timings = {}
    from porter.output.outdir import staged_output, temp_dir

    work = temp_dir("porter-onnx-")  # marked: a killed run's work folder is swept by the next run
    try:
        t0 = time.perf_counter()
        prep = _prepare(artifact, work, target, layout, zoo_source)
        timings["export_onnx_s"] = time.perf_counter() - t0
        with staged_output(Path(out), force, protected=(artifact.path,)) as tmp:
            t0 = time.perf_counter()
            candidate, info = _write_target(prep, target, tmp, work, layout)
            timings["convert_s"] = time.perf_counter() - t0
            report = _report(artifact, prep, target, out, info, timings)
            report.update(route_reason=route_reason, static_shapes=static_shapes)
            if code := model_code_record(tmp):  # the torch_py runner imports model.py only while this hash matches
                report["files"] = code
            # written first so the torch_py runner can read the specs and layout it records
            (tmp / "porter_report.json").write_text(json.dumps(report, indent=2, default=str))
            verification = None
            if verify:
                t0 = time.perf_counter()
                from porter.verifiers.runners.runtime_isolated import fresh_process_options, torch_fresh_report

                # a torch folder (model.py) is run by torch alone, in a fresh process
                isolated = fresh_process_options(latency) if target == "torch" else None
                verification = _verify(prep, candidate, info, atol, rtol, inputs, latency, isolated)
                if target == "torch":
                    report["fresh_process"] = torch_fresh_report(isolated)
                hold_to_dynamic_dims(verification, info, static_shapes)
                timings["verify_s"] = time.perf_counter() - t0
            _finish(tmp, Path(out), report, verification, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ConversionResult(Path(out), "onnx", verification, report)


# -- source -> ONNX ---------------------------------------------------------------------------


def _prepare(artifact, work: Path, target: str, layout, zoo_source) -> Prepared:
    onnx_path = work / "model.onnx"
    fmt = artifact.format
    if artifact.framework == "onnx":
        model = onnx_graph.load_onnx(artifact.path)
        inputs, outputs, specs = onnx_graph.onnx_io(model)
        if target == "torch":
            from porter.onnx_to_torch.converter import _opsets, check_model

            check_model(model, _opsets(model))  # every unsupported op and attribute, before anything is written
        onnx_graph.copy_onnx(artifact.path, onnx_path)
        export = to_onnx.OnnxExport(onnx_path, inputs, outputs, specs)
        return Prepared(artifact.path, export, model_name=artifact.path.stem, **_generated(specs, onnx_graph.index_bounds(model)))
    if zoo_source is not None:  # a zoo model on the ONNX route
        return _prepare_zoo_torch(zoo_source, onnx_path, target)
    if fmt == "hf":  # an HF folder outside the zoo: transformers builds it
        return _prepare_hf(artifact, onnx_path, target)
    if fmt == "pt2":
        done = _export_torch("pt2", onnx_path, target, artifact.path, path=str(artifact.path))
        specs = done["specs"]
        ranges = {n: {int(axis): tuple(r) for axis, r in axes.items()} for n, axes in done["ranges"].items()}
        export = to_onnx.OnnxExport(onnx_path, done["names"], done["outputs"], specs)
        return Prepared(artifact.path, export, model_name=artifact.path.stem, **_generated(specs, _bounds_of(onnx_path), ranges))
    if artifact.framework == "tf":
        nchw = layout == "nchw" and target == "torch"
        model = None
        if fmt != "saved_model" or (artifact.path / "model.keras").is_file():
            from porter.routes.tf_weights import load_keras_artifact

            with progress.step(f"loading {artifact.path}"):
                model, _ = load_keras_artifact(artifact, as_zoo_model=False)
            if getattr(model, "inputs", None) is None:  # a subclassed model (porter's own BERT) has no input layers
                if fmt != "saved_model":
                    raise PorterError(f"{artifact.path} holds a subclassed Keras model ({type(model).__name__}): it has no "
                                      "input signature to export to ONNX",
                                      hint="convert the SavedModel folder it came with, or pass --route direct")
                model = None  # porter's SavedModel folder: its serving signature is exported instead
        if model is None:
            export = to_onnx.saved_model_to_onnx(artifact.path, onnx_path)
            if nchw:
                export = to_onnx.saved_model_to_onnx(artifact.path, onnx_path, nchw_inputs=onnx_graph.channel_inputs(export.input_specs))
            zoo_feeds = _zoo_feeds(artifact.config, artifact.path, export.input_specs)
            if zoo_feeds is not None:  # porter's own folder: ids its tables take (Keras' take hides them from index_bounds)
                return Prepared(artifact.path, export, model_name=artifact.path.stem, source_layout="nhwc", **zoo_feeds)
            reference = artifact.path
        else:
            _, _, specs = to_onnx.keras_io(model)
            export = to_onnx.keras_to_onnx(model, onnx_path, nchw_inputs=onnx_graph.channel_inputs(specs) if nchw else ())
            reference = artifact.path if fmt != "saved_model" else artifact.path / "model.keras"
            from porter.zoo.keras_file import read_config

            kept = read_config(reference) if reference.suffix == ".keras" else None  # porter's plain zoo model.keras
            zoo_feeds = _zoo_feeds(kept, reference, export.input_specs) if kept else None
            if zoo_feeds is not None:  # ids inside its tables, masks padded, as for its SavedModel folder
                return Prepared(reference, export, model_name=artifact.path.stem, source_layout="nhwc", **zoo_feeds)
        return Prepared(reference, export, model_name=artifact.path.stem, source_layout="nhwc",
                        **_generated(export.input_specs, _bounds_of(onnx_path)))
    raise PorterError(f"the ONNX route cannot start from a {artifact.description}",
                      hint="torch models outside the zoo go through ONNX as an ExportedProgram: "
                           "torch.export.save(torch.export.export(model, args), 'model.pt2')")


def _generated(specs: dict, index_bounds: dict | None = None, ranges: dict | None = None) -> dict:
    """Prepared's feeds and input notes: the verifier's generated inputs (as ``porter verify`` makes
    them), every dynamic dim at two sizes, integer ids inside the tables they index."""
    from porter.verifiers.inputs import from_specs

    sets = from_specs(specs, index_bounds=index_bounds, ranges=ranges)
    return {"feeds": sets.feeds, "input_notes": ["inputs: generated from the source's input signature", *sets.notes]}


def _zoo_feeds(config, path, specs: dict) -> dict | None:
    """Prepared's feeds and input notes from the zoo entry of a zoo config (a folder's config.json, or the one inside
    porter's model.keras), as `porter verify` makes them for a zoo model, or None."""
    from porter.verifiers.inputs import zoo_info, zoo_input_sets

    info = zoo_info(config, path)
    if info is None or not hasattr(info.entry.impl, "input_sets"):
        return None
    sets = zoo_input_sets(info, list(specs))
    return {"feeds": sets.feeds, "input_notes": sets.notes}


def _bounds_of(onnx_path: Path) -> dict:
    import onnx

    return onnx_graph.index_bounds(onnx.load(str(onnx_path), load_external_data=False))


def _prepare_zoo_torch(src, onnx_path: Path, target: str) -> Prepared:
    """A zoo model's torch side (transformers' own loader) exported with dynamic batch and sequence
    (routes/zoo_onnx_export.py)."""
    done = _export_torch("zoo", onnx_path, target, src.path, entry=src.entry.name, folder=str(src.path), config=src.config,
                         completed=src.completed)
    names, outputs = done["names"], done["outputs"]
    specs = {n: ("int64", (None, None)) for n in names}
    return Prepared(src.path, to_onnx.OnnxExport(onnx_path, names, outputs, specs), done["feeds"], src.entry.name,
                    zoo_entry=src.entry, input_notes=[done["note"]])


EXPORTS = {  # kind -> (module, function): each writes the ONNX file and returns plain values
    "zoo": ("porter.routes.zoo_onnx_export", "export"),  # a zoo entry's folder (porter's BERT/RoBERTa)
    "hf": ("porter.routes.hf_source", "exported"),  # an HF folder transformers builds
    "pt2": ("porter.routes.to_onnx", "exported_pt2"),  # a torch.export ExportedProgram
}


def _export_torch(kind: str, onnx_path: Path, target: str, source: Path, **kwargs) -> dict:
    """The export ``kind`` (EXPORTS) of ``source``; "specs" come back as (dtype, shape tuple)."""
    import importlib

    module, function = EXPORTS[kind]
    done = getattr(importlib.import_module(module), function)(onnx_path=Path(onnx_path), **kwargs)
    if "specs" in done:  # JSON's lists
        done["specs"] = {n: (dtype, tuple(shape)) for n, (dtype, shape) in done["specs"].items()}
    return done


# -- ONNX -> target -----------------------------------------------------------------------------


def _write_target(prep: Prepared, target: str, tmp: Path, work: Path, layout) -> tuple[Path, dict]:
    onnx_path = prep.export.path
    if target == "onnx":
        onnx_graph.write_onnx_output(onnx_path, tmp / "model.onnx")
        _, _, specs = onnx_graph.onnx_io(onnx_graph.load_onnx(onnx_path, weights=False))  # its inputs only
        return tmp / "model.onnx", {"static_dims": _static_vs(prep.export.input_specs, specs), "inputs": specs,
                                    "layout": _layout_info(prep, None)}
    if target == "torch":
        # torch.export specialises a dim traced at size 1: the example is a feed with a batch above 1
        example = next((f for f in prep.feeds if all(np.ndim(v) == 0 or np.shape(v)[0] != 1 for v in f.values())), prep.feeds[0])
        info = onnx_to_torch_folder.onnx_to_torch_folder(onnx_path, tmp, _candidate_feed(example, prep, layout))
        info["inputs"] = {n: (d, list(s)) for n, (d, s) in info["inputs"].items()}
        info["layout"] = _layout_info(prep, layout)
        return tmp, info
    raise PorterError(f"--to {target!r} is not a target of the ONNX route")


def _static_vs(before: dict, after: dict) -> list[dict]:
    dims = []
    for name, (_, shape) in before.items():
        for axis, (a, b) in enumerate(zip(shape, after.get(name, (None, shape))[1])):
            if a is None and b is not None:
                dims.append({"input": name, "axis": axis, "size": int(b)})
    return dims


def _layout_info(prep: Prepared, layout) -> dict:
    """{"inputs": {name: the source's layout}, "candidate": what the written model takes}."""
    channel = onnx_graph.channel_inputs(prep.export.input_specs)
    source = "nhwc" if prep.source_layout == "nhwc" else "nchw"
    return {"inputs": {n: source for n in channel}, "candidate": layout or source}


def _candidate_feed(feed: dict, prep: Prepared, layout) -> dict:
    if layout == "nchw" and prep.source_layout == "nhwc":
        channel = set(onnx_graph.channel_inputs(prep.export.input_specs))
        return {k: np.transpose(v, onnx_graph.NHWC_TO_NCHW[v.ndim]) if k in channel else v for k, v in feed.items()}
    return feed


# -- verification and report ------------------------------------------------------------------


def _prepare_hf(artifact, onnx_path: Path, target: str) -> Prepared:
    done = _export_torch("hf", onnx_path, target, artifact.path, path=str(artifact.path))
    export = to_onnx.OnnxExport(onnx_path, done["names"], done["outputs"], done["specs"], notes=list(done["notes"]))
    notes = [f"inputs: generated for {done['architecture']}: {done['input_text']}", *done["notes"]]
    return Prepared(artifact.path, export, done["feeds"], artifact.path.name, input_notes=notes,
                    architecture=done["architecture"])


def static_dims_text(dims: list[dict]) -> str:
    return ", ".join(f"{d['input']} axis {d['axis']} = {d['size']}" for d in dims)


def hold_to_dynamic_dims(verification, info: dict, static_shapes: bool) -> None:
    """A written model that fixed a dim the source takes at any size fails verification, unless the
    user accepted that with --static-shapes (then the fixed dims are stated)."""
    fixed = [d for d in info.get("static_dims", []) if "artifact" not in d]
    if verification is None or not fixed:
        return
    if static_shapes:
        verification.notes.append(f"--static-shapes: the written model takes only {static_dims_text(fixed)}")
    else:
        verification.problems.append(
            f"the written model fixed dims that the source takes at any size ({static_dims_text(fixed)}): it cannot "
            "serve other shapes; pass --static-shapes to accept a model with these dims fixed")


def _verify(prep: Prepared, candidate_path: Path, info: dict, atol, rtol, inputs=None, latency=False, isolated=None):
    """porter.verify on the source and the written candidate: the same runners, comparison, zoo
    knowledge (undefined outputs, localisation) and layout handling (from the report) as
    ``porter verify``; the inputs are the ones that fit the candidate's static dims."""
    from porter.verifiers.api import verify

    if inputs is not None:  # the user's arrays, matched to the source's inputs by name (as porter verify does)
        return verify(prep.reference, candidate_path, inputs=Path(inputs), atol=atol, rtol=rtol, route="onnx", latency=latency,
                      candidate_options=isolated)
    written = {n: (d, tuple(s)) for n, (d, s) in info.get("inputs", {}).items()}
    channel = onnx_graph.channel_inputs(prep.export.input_specs)
    source = "nhwc" if prep.source_layout == "nhwc" else "nchw"
    if info["layout"]["candidate"] != source and channel:  # the candidate's static dims, in the source's layout
        perm = onnx_graph.NCHW_TO_NHWC if source == "nhwc" else onnx_graph.NHWC_TO_NCHW
        written = {n: (d, tuple(s[i] for i in perm[len(s)]) if n in channel and len(s) in perm else tuple(s))
                   for n, (d, s) in written.items()}
    inputs = onnx_graph.fitting_inputs(prep.feeds, prep.input_notes, written, "the conversion")
    return verify(prep.reference, candidate_path, inputs=inputs, atol=atol, rtol=rtol, route="onnx", latency=latency,
                  candidate_options=isolated)


def _report(artifact, prep: Prepared, target: str, out, info: dict, timings: dict) -> dict:
    from porter import __version__

    static = info.get("static_dims", [])
    return {
        "porter": __version__,
        "model": prep.zoo_entry.name if prep.zoo_entry is not None else prep.model_name,
        "source": str(artifact.path),
        "from": artifact.framework,
        "to": target,
        "route": "onnx",
        **({"architecture": prep.architecture} if prep.architecture else {}),
        "onnx": {"opset": to_onnx.OPSET if artifact.framework != "onnx" else None,
                 "inputs": prep.export.input_names, "outputs": prep.export.output_names},
        "inputs": {n: {"dtype": d, "shape": list(s)} for n, (d, s) in info.get("inputs", {}).items()},
        "outputs": info.get("outputs", prep.export.output_names),
        "static_dims": static,
        "dynamic_dims_kept": not static,
        "layout": info.get("layout", {}),
        "notes": prep.notes + info.get("notes", []),
        "out": str(out),
        "timings": timings,
    }

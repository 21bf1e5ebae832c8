"""`porter convert`: resolve the model, choose the route, write all-or-nothing, verify, report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from porter import progress, zoo
from porter.artifacts import detect
from porter.errors import PorterError
from porter.outdir import check_out, staged_output
from porter.path_errors import require_file, require_path
from porter.result import REPORT, ConversionResult, finish as _finish, verify_written as _verify  # noqa: F401

FRAMEWORKS = ("torch", "tf", "onnx", "tflite")


@dataclass
class Source:
    """What the user asked to convert: a zoo entry and where its weights and config live."""

    entry: object
    path: Path
    artifact: object
    config: dict


def resolve(model: str, source: str, checkpoint) -> Source:
    path = Path(checkpoint) if checkpoint else None
    if path is None and str(model) in zoo.ENTRIES:
        entry = zoo.get(str(model))
        if source != "torch":
            raise PorterError(f"`porter convert {model} --from {source}` needs a model file", hint="pass --checkpoint PATH")
        path = entry.impl.default_checkpoint(entry.name)
    elif path is None:
        path = Path(model)
    require_path(path, hint="pass a zoo name (see `porter zoo list`) or an existing path")
    artifact = detect(path)
    if artifact.framework != source:
        raise PorterError(f"{path} is a {artifact.description} ({artifact.framework}), not a {source} model", hint=f"use --from {artifact.framework}")
    config = artifact.config
    if config is None:
        if artifact.format in ("keras", "keras_hub_preset"):
            return Source(None, path, artifact, {})  # the .keras file (or preset) carries its own config
        raise PorterError(f"{path} has no config.json beside it", hint="porter's direct route reads the model's config.json")
    entry = zoo.for_config(config, f"{path if path.is_dir() else path.parent}/config.json")
    if str(model) in zoo.ENTRIES and zoo.get(str(model)).name != entry.name:
        raise PorterError(f"{path} holds a {entry.name!r} model, not {model!r}")
    entry.impl.check_config(config, f"{path}/config.json")
    return Source(entry, path, artifact, entry.impl.full_config(config))


def default_out(model, target: str) -> Path:
    stem = Path(str(model)).name.removesuffix(".keras") or "model"
    return Path(f"{stem}-{target}")


def convert(
    model,
    *,
    source: str,
    target: str,
    checkpoint=None,
    out=None,
    route: str = "auto",
    verify: bool = True,
    force: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    console=None,
    layout: str | None = None,
    inputs=None,
    dtype: str | None = None,
    allow_nonfinite: bool = False,
    static_shapes: bool = False,
    expected=None,
    latency: bool = False,
) -> ConversionResult:
    """``dtype``: the float dtype of the written weights (default: the source's own);
    ``allow_nonfinite``: convert and verify weights holding NaN/Inf instead of refusing them;
    ``expected``: recorded outputs (.npz, with ``inputs``) to verify against (transformers 4.x TF checkpoints);
    ``latency``: after verification, time source and written model as ``porter verify --latency`` does (report["latency"])."""
    from porter.numerics import check_dtype_flag, check_numeric_options

    check_numeric_options(atol=atol, rtol=rtol)
    check_dtype_flag(dtype)
    for flag, value in (("--from", source), ("--to", target)):
        if value not in FRAMEWORKS:
            raise PorterError(f"{flag} {value!r} is not one of {', '.join(FRAMEWORKS)}")
    if source == target:
        raise PorterError(f"--from and --to are both {source!r}")
    if route not in ("auto", "direct", "onnx"):
        raise PorterError(f"--route {route!r} is not one of auto, direct, onnx")
    out = Path(out) if out else default_out(model, target)
    # before any heavy work: --out is writable and is not the source, the working directory or a foreign folder
    check_out(out, force, protected=(checkpoint, model if checkpoint is None else None, inputs))
    if layout is not None and layout not in ("nhwc", "nchw"):
        raise PorterError(f"--layout {layout!r} is not one of nhwc, nchw")
    if inputs is not None:
        require_file(inputs, "--inputs", ".npz", hint="an .npz of input arrays (keys: NAME or SET/NAME), as for porter verify")
    legacy = _legacy_tf_folder(model, source, target, checkpoint, route, expected)
    _check_latency_flag(latency, verify, legacy is not None or expected is not None)
    if legacy is not None:
        from porter.legacy_conversion import convert_legacy

        return convert_legacy(legacy, out, force=force, verify=verify, atol=atol, rtol=rtol, console=console,
                              inputs=inputs, expected=expected, allow_nonfinite=allow_nonfinite)
    if expected is not None:
        raise PorterError("--expected (recorded outputs) is supported for transformers 4.x TF checkpoints (tf_model.h5) only",
                          hint="verify other conversions against the source model: leave --expected out")
    if _choose_route(model, source, target, checkpoint, route) == "onnx":
        if dtype is not None:
            raise PorterError(f"--dtype {dtype} is supported on the direct route only (the zoo's BERT/RoBERTa)",
                              hint="leave --dtype out: the ONNX route keeps the model's own dtype")
        if allow_nonfinite:  # not carried through export/onnx2tf; refused rather than ignored
            raise PorterError("--allow-nonfinite is supported on the direct route only",
                              hint="repair the weights, or convert a zoo model with --route direct")
        return _onnx_route(model, source, target, checkpoint, out, force, verify, atol, rtol, layout, console, inputs,
                           static_shapes=static_shapes, asked=route, latency=latency)
    src = resolve(model, source, checkpoint)
    if (source, target) == ("torch", "tf"):
        return _direct_torch_to_tf(src, out, force, verify, atol, rtol, console, inputs, dtype, allow_nonfinite, latency)
    if (source, target) == ("tf", "torch"):
        return _direct_tf_to_torch(src, out, force, verify, atol, rtol, console, inputs, dtype, allow_nonfinite, latency)
    raise PorterError(f"porter cannot convert {source} -> {target} on the direct route", hint="pass --route onnx")


def _legacy_tf_folder(model, source, target, checkpoint, route, expected):
    """A transformers 4.x TF checkpoint folder that the legacy scheme converts (any architecture), or None.
    porter's Keras BERT/RoBERTa keep their own path, which runs the TF side, unless recorded outputs are given."""
    from porter.legacy_conversion import is_legacy_folder, takes_zoo_path

    path = Path(checkpoint) if checkpoint else Path(str(model))
    if (source, target) != ("tf", "torch") or route == "onnx" or not is_legacy_folder(path):
        return None
    from porter.artifacts import read_config_json

    if expected is None and takes_zoo_path(path, read_config_json(path / "config.json")):
        return None
    if expected is not None:
        require_file(expected, "--expected", ".npz", hint="an .npz of the outputs recorded on --inputs, keyed by output name")
    return path


def _choose_route(model, source: str, target: str, checkpoint, route: str) -> str:
    """direct when asked, or (auto) when the zoo recognises the model; onnx otherwise.
    Where the direct route would raise a zoo error with a hint, auto keeps it (HF folders)."""
    if target in ("onnx", "tflite") or source == "onnx":
        if route == "direct":
            raise PorterError(f"the direct route converts between torch and tf only, not {source} -> {target}",
                              hint="pass --route onnx (or auto)")
        return "onnx"
    if route != "auto":
        return route
    path = Path(checkpoint) if checkpoint else (None if str(model) in zoo.ENTRIES else Path(model))
    if path is None or not path.exists():
        return "direct"  # a zoo name, or a missing path that resolve() reports
    artifact = detect(path)
    if artifact.format == "hf" and _outside_zoo(artifact.config):
        return "onnx"  # transformers builds it, torch.export -> onnx2tf converts it
    if artifact.format in ("hf", "hf_tf_h5", "safetensors"):
        return "direct"  # zoo-only formats: a model_type outside the zoo gets its own error
    if artifact.format == "pt2":
        return "onnx"
    if artifact.config is not None and artifact.config.get("model_type") in zoo.ENTRIES:
        return "direct"
    if artifact.format == "keras_hub_preset":
        return "direct"  # a keras-hub family's rules, or a refusal naming the class
    keras_file = path / "model.keras" if artifact.format == "saved_model" else path
    return "direct" if artifact.format in ("keras", "saved_model") and _porter_keras(keras_file) else "onnx"


def _porter_keras(path: Path) -> bool:
    """Whether a .keras file holds one of porter's zoo models (its classes are registered as porter>...)."""
    import zipfile

    from porter.zoo.keras_hub.to_hf import keras_hub_class_of_file

    if keras_hub_class_of_file(path):
        return True  # a keras-hub model: its family's rules (or a refusal naming the class)
    try:
        with zipfile.ZipFile(path) as z:
            return '"porter>' in z.read("config.json").decode(errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def _outside_zoo(config) -> bool:
    """An HF folder whose model_type has no direct-route family (the ONNX route reads it with transformers)."""
    return isinstance(config, dict) and config.get("model_type") not in zoo.ENTRIES


def _onnx_reads_with_transformers(config) -> bool:
    """On the ONNX route, every HF folder is read by transformers (routes/hf_source.py) except porter's own
    BERT/RoBERTa, whose zoo entry exports with eager attention and its own 4D mask."""
    return _outside_zoo(config) or zoo.ENTRIES[config["model_type"]].module != "porter.zoo.bert"


def _onnx_route(model, source, target, checkpoint, out, force, verify, atol, rtol, layout, console, inputs=None,
                static_shapes=False, asked="onnx", latency=False):
    from porter.routes.onnx_pipeline import convert_via_onnx

    path = Path(checkpoint) if checkpoint else Path(model)
    zoo_source = None
    hf_outside = path.exists() and detect(path).format == "hf" and _onnx_reads_with_transformers(detect(path).config)
    if str(model) in zoo.ENTRIES and not checkpoint or (not hf_outside and path.exists() and detect(path).format in ("hf", "safetensors")):
        zoo_source = resolve(model, source, checkpoint)
        artifact = zoo_source.artifact
        if source != "torch":
            raise PorterError("the ONNX route starts a zoo model from its torch checkpoint", hint="pass --from torch")
    else:
        require_path(path, hint="pass a zoo name (see `porter zoo list`) or an existing path")
        artifact = detect(path)
        if artifact.framework != source:
            raise PorterError(f"{path} is a {artifact.description} ({artifact.framework}), not a {source} model",
                              hint=f"use --from {artifact.framework}")
    reason = _onnx_reason(asked, artifact)
    if asked == "auto" and zoo_source is None and (source, target) == ("tf", "torch"):
        # a Keras model outside the zoo: model.py keeps its layers where every one has a torch module
        from porter.routes.keras_layers import convert_keras_layers, keras_layers_plan

        planned = keras_layers_plan(artifact, layout)
        if planned.plan is not None:
            return convert_keras_layers(artifact, planned, out=out, force=force, verify=verify, atol=atol, rtol=rtol,
                                        layout=layout, console=console, inputs=inputs, latency=latency)
        reason = planned.reason or reason
    return convert_via_onnx(artifact, target=target, out=out, force=force, verify=verify, atol=atol, rtol=rtol,
                            layout=layout, console=console, zoo_source=zoo_source, inputs=inputs, static_shapes=static_shapes,
                            route_reason=reason, latency=latency)


def _onnx_reason(asked: str, artifact) -> str:
    if asked == "onnx":
        return "--route onnx"
    if artifact.format == "hf" and _outside_zoo(artifact.config):
        from porter.routes.hf_source import route_reason

        return route_reason(artifact.config)
    return f"the direct route does not convert a {artifact.description} to this target"



def _check_latency_flag(latency: bool, verify: bool, recorded: bool) -> None:
    """--latency times the verified pair, so it needs verification and a source porter can run."""
    if latency and not verify:
        raise PorterError("--latency times the source and the written model after verifying them; --no-verify skips that",
                          hint="leave --no-verify out, or time later with: porter verify SOURCE OUT --latency")
    if latency and recorded:
        raise PorterError("--latency needs a source porter can run; a transformers 4.x TF checkpoint has only recorded outputs",
                          hint="leave --latency out")


def _direct_torch_to_tf(src, out, force, verify, atol, rtol, console, inputs=None, dtype=None, allow_nonfinite=False,
                        latency=False) -> ConversionResult:
    from porter.checkpoints import open_torch_checkpoint
    from porter.frameworks import save_keras
    from porter.memory import peak_rss_mb
    from porter.numerics import NonFiniteScan, check_integer_weights, checkpoint_float_dtype
    from porter.routes.direct import torch_to_keras

    entry = src.entry
    t0 = time.perf_counter()
    checkpoint = open_torch_checkpoint(src.path)
    check_integer_weights(checkpoint.dtypes, checkpoint.origin, checkpoint.file_of)
    dtypes = {"source": checkpoint_float_dtype(checkpoint.dtypes, checkpoint.shapes)}
    dtypes["written"] = dtype or dtypes["source"]
    # the Keras model's dtype policy is the written dtype; config.json says it as transformers does
    src = Source(entry, src.path, src.artifact, dict(src.config, dtype=dtypes["written"]))
    scan = NonFiniteScan(checkpoint.origin, checkpoint.file_of)
    model, plan = torch_to_keras(entry, checkpoint.watched(scan.check), dict(src.config, _porter_dtype=dtypes["written"]))
    nonfinite = scan.finish(allow_nonfinite)
    t_map = time.perf_counter() - t0
    peaks = {"load_and_map": peak_rss_mb()}  # peak so far after each step: where memory grows
    with staged_output(out, force) as tmp:
        t0 = time.perf_counter()
        with progress.step(f"writing the SavedModel and model.keras of {out}"):
            entry.impl.export_saved_model(model, tmp)
            t_export, peaks["export"] = time.perf_counter() - t0, peak_rss_mb()
            save_keras(model, tmp / "model.keras")
            peaks["keras_save"] = peak_rss_mb()
        (tmp / "config.json").write_text(json.dumps(src.config, indent=2))
        t_save = time.perf_counter() - t0
        verification = _verify(src.path, tmp, atol, rtol, "direct", inputs, allow_nonfinite, latency) if verify else None
        report = _report(src, out, "tf", plan, {"load_and_map_s": t_map, "save_s": t_save, "export_s": t_export,
                                                "keras_save_s": t_save - t_export})
        report.update(dtype=dtypes, **({"nonfinite_weights": nonfinite} if nonfinite else {}))
        if peaks["load_and_map"] is not None:
            report["peak_rss_mb"] = peaks
        _finish(tmp, out, report, verification, console)
    return ConversionResult(out, "direct", verification, report)


def _direct_tf_to_torch(src, out, force, verify, atol, rtol, console, inputs=None, dtype=None, allow_nonfinite=False,
                        latency=False) -> ConversionResult:
    from safetensors.numpy import save_file

    from porter.numerics import cast_floats
    from porter.routes.direct import keras_to_torch
    from porter.routes.tf_weights import keras_weights_dtype, load_keras_artifact, scan_keras_weights

    t0 = time.perf_counter()
    with progress.step(f"loading {src.path}"):
        model, config = load_keras_artifact(src.artifact)
    if config is None:
        raise PorterError(f"{src.path} is not one of porter's zoo models", hint="models outside the zoo go through ONNX: pass --route onnx")
    entry = src.entry or zoo.for_config(config, str(src.path))
    nonfinite = scan_keras_weights(model, src.path, allow_nonfinite)
    dtypes = {"source": keras_weights_dtype(model)}
    dtypes["written"] = dtype or dtypes["source"]
    # config.json's dtype is what transformers loads the weights as (dtype="auto")
    src = Source(entry, src.path, src.artifact, dict(entry.impl.full_config(config), dtype=dtypes["written"]))
    state, plan = keras_to_torch(entry, model, src.config)
    state = cast_floats(state, dtypes["written"])
    t_map = time.perf_counter() - t0
    with staged_output(out, force) as tmp:
        t0 = time.perf_counter()
        with progress.step(f"writing model.safetensors of {out}"):
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(src.config, indent=2))
        t_save = time.perf_counter() - t0
        verification = _verify(src.path, tmp, atol, rtol, "direct", inputs, allow_nonfinite, latency) if verify else None
        report = _report(src, out, "torch", plan, {"load_and_map_s": t_map, "save_s": t_save})
        report.update(dtype=dtypes, **({"nonfinite_weights": nonfinite} if nonfinite else {}))
        _finish(tmp, out, report, verification, console)
    return ConversionResult(out, "direct", verification, report)


def _report(src, out, target, plan, timings) -> dict:
    from porter import __version__

    return {
        "porter": __version__,
        "model": src.entry.name,
        "source": str(src.path),
        "from": src.artifact.framework,
        "to": target,
        "route": "direct",
        "mapping": {"family": src.entry.family, "tensors": len(plan.steps), "ignored": plan.ignored},
        "out": str(out),
        "timings": timings,
    }

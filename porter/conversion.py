"""`porter convert`: resolve the model, choose the route, write all-or-nothing, verify, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from porter import zoo
from porter.readers.artifacts import detect
from porter.errors import PorterError, UnsupportedModelError
from porter.output.outdir import check_out
from porter.checks.path_errors import require_file, require_path
from porter.output.result import ConversionResult

FRAMEWORKS = ("torch", "tf", "onnx", "tflite", "tfjs")
ROUTES = ("auto", "direct", "graph", "onnx")


@dataclass
class Source:
    """What the user asked to convert: a zoo entry and where its weights and config live."""

    entry: object
    path: Path
    artifact: object
    config: dict
    completed: bool = True  # config has transformers' defaults (resolve(complete=False): the folder's own)


def resolve(model: str, source: str, checkpoint, beside=None, complete: bool = True) -> Source:
    """``beside``: work (an import) to do while the config is completed with transformers' defaults.
    ``complete=False``: the config is left as the folder has it, for a step that completes it elsewhere."""
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
    where = f"{path if path.is_dir() else path.parent}/config.json"
    entry = zoo.for_config(config, where, complete=False)
    if str(model) in zoo.ENTRIES and zoo.get(str(model)).name != entry.name:
        raise PorterError(f"{path} holds a {entry.name!r} model, not {model!r}")
    if not complete:
        return Source(entry, path, artifact, config, completed=False)
    if beside is None:
        full = entry.impl.full_config(config)
    else:
        from porter.readers.config_completion import complete_beside

        full = complete_beside(entry, config, beside)
    zoo.check_completed(entry, config, full, where)
    return Source(entry, path, artifact, full)


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
    xla: bool = False,
    ignore_memory_estimate: bool = False,
    reference_dtype: str = "auto",
    allow_flex: bool = False,
    quantize: str | None = None,
    calibration=None,
    quantized_atol: float | None = None,
    min_cosine: float | None = None,
    max_cache_len: int | None = None,
    verify_blocks: bool = False,
    prefill_lengths: list[int] | None = None,
    prompts=None,
) -> ConversionResult:
    """``dtype``: the float dtype of the written weights (default: the source's own);
    ``allow_nonfinite``: convert and verify weights holding NaN/Inf instead of refusing them;
    ``expected``: recorded outputs (.npz, with ``inputs``) to verify against (transformers 4.x TF checkpoints);
    ``latency``: after verification, time source and written model as ``porter verify --latency`` does (report["latency"]);
    ``xla``: the SavedModel's signatures compiled with XLA (jit_compile=True), and verified as compiled;
    ``ignore_memory_estimate``: go ahead where porter's estimate says the conversion will not fit in memory (direct route,
    and the ONNX route from torch);
    ``reference_dtype``: the dtype transformers' reference is verified in (direct torch -> tf, porter/resources/reference_plan.py):
    "auto" float32 where it fits, else a 16-bit checkpoint's own dtype; "float32"; "checkpoint";
    ``allow_flex``: --to tflite on the graph route may keep TF ops TFLite has no builtin for as Select-TF (Flex) ops
    (by default the .tflite holds built-in ops only and runs in LiteRT alone);
    ``quantize``: --to tflite: also a quantized .tflite ("fp16", "dynamic-int8", "int8", "int16x8"; int8/int16x8 calibrated on
    ``calibration``, an .npz by input name, else porter's generated inputs), its error measured apart from the
    conversion's and held to ``min_cosine`` (default per mode) and ``quantized_atol`` (routes/tflite_quantize.py);
    ``max_cache_len``: a causal LM's SavedModel (torch -> tf) gets prefill/decode with a KV cache this long (default
    min(position limit, 4096); direct route zoo/keras_hub/kv_cache.py, graph route routes/graph_kv_cache.py), verified
    by generation (verifiers/generation.py);
    ``prompts``: a JSON file of token-id lists, the prompts of a causal LM's generation check (else random ids);
    ``verify_blocks``: a decoder on the direct route (torch -> tf) is also verified block by block in float32
    (verifiers/blockwise.py), as it is by itself where a float32 reference does not fit (reference_plan.py)."""
    from porter.checks.numerics import check_dtype_flag, check_numeric_options

    check_numeric_options(atol=atol, rtol=rtol)
    check_dtype_flag(dtype)
    for flag, value in (("--from", source), ("--to", target)):
        if value not in FRAMEWORKS:
            raise PorterError(f"{flag} {value!r} is not one of {', '.join(FRAMEWORKS)}")
    if source == target:
        raise PorterError(f"--from and --to are both {source!r}")
    if route not in ROUTES:
        raise PorterError(f"--route {route!r} is not one of {', '.join(ROUTES)}")
    if xla and target != "tf":
        raise PorterError(f"--xla compiles a TensorFlow SavedModel's signatures; --to {target} writes none",
                          hint="leave --xla out, or convert --to tf")
    if reference_dtype != "auto" and ((source, target) != ("torch", "tf") or route in ("onnx", "graph") or not verify):
        raise PorterError(f"--reference-dtype {reference_dtype} chooses the transformers reference of a verified "
                          f"torch -> tf conversion on the direct route", hint="leave --reference-dtype out")
    if verify_blocks and ((source, target) != ("torch", "tf") or route in ("onnx", "graph") or not verify):
        raise PorterError("--verify-blocks verifies a torch -> tf conversion on the direct route block by block",
                          hint="leave --verify-blocks out")
    if prefill_lengths and ((source, target) != ("torch", "tf") or route == "onnx"):
        raise PorterError(f"--prefill-lengths {','.join(map(str, prefill_lengths))} writes the model.tflite of a causal LM "
                          f"converted torch -> tf (direct or graph route), beside its SavedModel", hint="leave --prefill-lengths out")
    if max_cache_len is not None and ((source, target) != ("torch", "tf") or route == "onnx"):
        raise PorterError(f"--max-cache-len {max_cache_len} sizes the KV cache of a causal LM's SavedModel (torch -> tf, "
                          f"direct or graph route)", hint="leave --max-cache-len out")
    if prompts is not None and ((source, target) != ("torch", "tf") or route == "onnx" or not verify):
        raise PorterError(f"--prompts {prompts} gives the prompts of a causal LM's generation check (a verified torch -> tf "
                          f"conversion, direct or graph route)", hint="leave --prompts out")
    if prompts is not None:
        require_file(prompts, "--prompts", ".json", hint="a JSON list of token-id lists, e.g. [[1, 2, 3], [4, 5]]")
    if allow_flex and target != "tflite":
        raise PorterError(f"--allow-flex lets a .tflite keep Select-TF ops; --to {target} writes none",
                          hint="leave --allow-flex out, or convert --to tflite")
    from porter.routes.tflite_quantize import check_options

    quantized = check_options(target, quantize, calibration, quantized_atol, min_cosine, verify)
    out = Path(out) if out else default_out(model, target)
    # before any heavy work: --out is writable and is not the source, the working directory or a foreign folder
    check_out(out, force, protected=(checkpoint, model if checkpoint is None else None, inputs, calibration, prompts))
    if layout is not None and layout not in ("nhwc", "nchw"):
        raise PorterError(f"--layout {layout!r} is not one of nhwc, nchw")
    if inputs is not None:
        require_file(inputs, "--inputs", ".npz", hint="an .npz of input arrays (keys: NAME or SET/NAME), as for porter verify")
    _check_declared_sizes(model, checkpoint)
    if "tfjs" in (source, target):  # the --to tf SavedModel, then tensorflowjs' converter (porter/routes/tfjs.py)
        return _tfjs(model, source, checkpoint, out, force, verify, atol, rtol, console, inputs, route, latency, expected,
                     layout=layout, dtype=dtype, allow_nonfinite=allow_nonfinite)
    legacy = _legacy_tf_folder(model, source, target, checkpoint, route, expected)
    _check_latency_flag(latency, verify, legacy is not None or expected is not None)
    if legacy is not None:
        from porter.legacy_conversion import convert_legacy

        return convert_legacy(legacy, out, force=force, verify=verify, atol=atol, rtol=rtol, console=console,
                              inputs=inputs, expected=expected, allow_nonfinite=allow_nonfinite)
    if expected is not None:
        raise PorterError("--expected (recorded outputs) is supported for transformers 4.x TF checkpoints (tf_model.h5) only",
                          hint="verify other conversions against the source model: leave --expected out")
    chosen = _choose_route(model, source, target, checkpoint, route)
    if (max_cache_len is not None or prefill_lengths or prompts is not None) and chosen not in ("direct", "graph"):
        flag = (f"--max-cache-len {max_cache_len}" if max_cache_len is not None else f"--prompts {prompts}" if not prefill_lengths
                else f"--prefill-lengths {','.join(map(str, prefill_lengths))}")
        raise PorterError(f"{flag} sizes the prefill/decode KV cache of a causal LM converted torch -> tf by the direct or "
                          f"graph route; this model goes by the {chosen} route", hint=f"leave {flag.split()[0]} out")
    graph = {"force": force, "verify": verify, "atol": atol, "rtol": rtol, "console": console, "inputs": inputs,
             "static_shapes": static_shapes, "latency": latency, "target": target, "allow_flex": allow_flex,
             "layout": layout, "quantize": quantized, "max_cache_len": max_cache_len, "prefill_lengths": prefill_lengths,
             "prompts": prompts}
    if chosen == "graph":
        if target == "tflite" and latency:  # the .tflite runs in a child process: its timing would be the pipe's
            raise PorterError("--latency is not supported for --to tflite on the graph route",
                              hint="leave --latency out")
        _graph_flags(xla, dtype, allow_nonfinite, reference_dtype, layout)
        return _graph_route(model, source, checkpoint, out, asked=route, **graph)
    if chosen == "onnx":
        if xla:  # the ONNX route writes no SavedModel
            raise PorterError("--xla is supported on the direct route only (a zoo model written by porter's own Keras code)",
                              hint="leave --xla out on the ONNX route")
        if dtype is not None:
            raise PorterError(f"--dtype {dtype} is supported on the direct route only (the zoo's BERT/RoBERTa)",
                              hint="leave --dtype out: the ONNX route keeps the model's own dtype")
        if allow_nonfinite:  # not carried through the export; refused rather than ignored
            raise PorterError("--allow-nonfinite is supported on the direct route only",
                              hint="repair the weights, or convert a zoo model with --route direct")
        if reference_dtype != "auto":  # auto chose the ONNX route: its reference is the source as exported
            raise PorterError(f"--reference-dtype {reference_dtype} is supported on the direct route only",
                              hint="leave --reference-dtype out")
        return _onnx_route(model, source, target, checkpoint, out, force, verify, atol, rtol, layout, console, inputs,
                           static_shapes=static_shapes, asked=route, latency=latency,
                           ignore_memory_estimate=ignore_memory_estimate)
    from porter.routes import direct

    if (source, target) == ("torch", "tf"):
        from porter.process.frameworks import tensorflow

        try:
            src = resolve(model, source, checkpoint, beside=tensorflow)  # the Keras model is built next
        except UnsupportedModelError as exc:
            # a variant of a zoo family that the direct route cannot reproduce: auto takes transformers + the graph route
            if route != "auto" or not _hf_folder(model, checkpoint) or layout == "nhwc" or not _one_family(model, checkpoint):
                raise
            try:
                _graph_flags(xla, dtype, allow_nonfinite, reference_dtype, layout)
            except PorterError:
                raise exc from None  # a direct-route flag was given: the direct route's refusal says more
            return _graph_route(model, source, checkpoint, out, asked=route, **graph,
                                reason=f"porter's direct route cannot reproduce this folder ({exc.message}); "
                                       "transformers + torch.export convert it")
        return direct.torch_to_tf(src, out, force, verify, atol, rtol, console, inputs, dtype, allow_nonfinite, latency, xla,
                                  ignore_memory_estimate=ignore_memory_estimate, reference_dtype=reference_dtype,
                                  max_cache_len=max_cache_len, verify_blocks=verify_blocks, prefill_lengths=prefill_lengths,
                                  prompts=prompts)
    src = resolve(model, source, checkpoint)
    if (source, target) == ("tf", "torch"):
        return direct.tf_to_torch(src, out, force, verify, atol, rtol, console, inputs, dtype, allow_nonfinite, latency)
    raise PorterError(f"porter cannot convert {source} -> {target} on the direct route", hint="pass --route onnx")


def _tfjs(model, source, checkpoint, out, force, verify, atol, rtol, console, inputs, route, latency, expected, **tf_options):
    from porter.routes.tfjs import convert_to_tfjs

    if source == "tfjs":
        raise PorterError("porter converts --to tfjs, not from a TF.js model", hint="convert the model it came from")
    for given, flag in ((latency, "--latency"), (expected is not None, "--expected")):
        if given:  # TF.js runs in a Node child process: its timing would be the pipe's; recorded outputs are for tf_model.h5
            raise PorterError(f"{flag} is not supported for --to tfjs", hint=f"leave {flag} out")
    return convert_to_tfjs(model, source=source, checkpoint=checkpoint, out=out, force=force, verify=verify, atol=atol,
                           rtol=rtol, console=console, inputs=inputs, route=route, **tf_options)


def _legacy_tf_folder(model, source, target, checkpoint, route, expected):
    """A transformers 4.x TF checkpoint folder that the legacy scheme converts (any architecture), or None.
    porter's Keras BERT/RoBERTa keep their own path, which runs the TF side, unless recorded outputs are given."""
    from porter.legacy_conversion import is_legacy_folder, takes_zoo_path

    path = Path(checkpoint) if checkpoint else Path(str(model))
    if (source, target) != ("tf", "torch") or route == "onnx" or not is_legacy_folder(path):
        return None
    from porter.readers.artifacts import read_config_json

    if expected is None and takes_zoo_path(path, read_config_json(path / "config.json")):
        return None
    if expected is not None:
        require_file(expected, "--expected", ".npz", hint="an .npz of the outputs recorded on --inputs, keyed by output name")
    return path


def _check_declared_sizes(model, checkpoint) -> None:
    """An HF folder's config.json against its weights' headers (porter/checks/declared_sizes.py), here where every route
    passes before one builds a model from the config (Keras zoo models, transformers here or in a child)."""
    path = Path(checkpoint) if checkpoint else (None if str(model) in zoo.ENTRIES else Path(str(model)))
    if path is not None and path.exists():
        from porter.checks.declared_sizes import check_artifact

        check_artifact(detect(path))


def _choose_route(model, source: str, target: str, checkpoint, route: str) -> str:
    """direct when asked, or (auto) when the zoo recognises the model; graph (porter's ATen -> TF converter) for every
    other torch or ONNX model going to TensorFlow (tf, tflite); onnx for --to onnx and for tf/onnx -> torch. Where the
    direct route would raise a zoo error with a hint, auto keeps it (HF folders) until resolve() reports it: convert()
    then takes the graph route (torch -> tf)."""
    to_tf = target in ("tf", "tflite")
    if to_tf and source == "tf":
        raise PorterError(f"porter converts tf -> {target} only from a torch or ONNX model",
                          hint="convert the Keras model with tf.lite.TFLiteConverter" if target == "tflite" else "")
    if route == "onnx" and to_tf:
        raise PorterError(f"the ONNX route writes ONNX or torch; porter writes --to {target} with its own graph converter "
                          "(torch.export -> TensorFlow), not onnx2tf", hint="pass --route graph (or auto)")
    if route == "graph" and not to_tf:
        raise PorterError(f"the graph route converts torch or ONNX -> tf or tflite only, not {source} -> {target}",
                          hint="pass --route onnx (or auto)")
    if route == "direct" and (source, target) not in (("torch", "tf"), ("tf", "torch")):
        raise PorterError(f"the direct route converts between torch and tf only, not {source} -> {target}",
                          hint=f"pass --route {'graph' if to_tf else 'onnx'} (or auto)")
    if route != "auto":
        return route
    if not to_tf and (target == "onnx" or source == "onnx"):
        return "onnx"
    if source == "onnx":
        return "graph"
    path = Path(checkpoint) if checkpoint else (None if str(model) in zoo.ENTRIES else Path(model))
    if path is None or not path.exists():
        return "graph" if target == "tflite" else "direct"  # a zoo name, or a missing path that resolve() reports
    artifact = detect(path)
    config = artifact.config
    transformers_builds = artifact.format == "hf" and (_outside_zoo(config) or zoo.drops_head(config))
    if target == "tflite":  # torch -> tflite: zoo folders too, built by transformers
        return "graph"
    if transformers_builds:  # transformers builds it: torch.export -> porter's graph converter (to tf), else ONNX
        return "graph" if (source, target) == ("torch", "tf") else "onnx"
    if artifact.format in ("hf", "hf_tf_h5", "safetensors"):
        return "direct"  # zoo-only formats: a model_type outside the zoo gets its own error
    if artifact.format == "pt2":
        return "graph" if target == "tf" else "onnx"
    if config is not None and config.get("model_type") in zoo.ENTRIES:
        return "direct"
    if artifact.format == "keras_hub_preset":
        return "direct"  # a keras-hub family's rules, or a refusal naming the class
    keras_file = path / "model.keras" if artifact.format == "saved_model" else path
    return "direct" if artifact.format in ("keras", "saved_model") and _porter_keras(keras_file) else "onnx"


def _porter_keras(path: Path) -> bool:
    """Whether a .keras file holds one of porter's zoo models (its classes are registered as porter>...)."""
    import zipfile

    from porter.zoo.keras_file import CONFIG_MEMBER as PORTABLE_CONFIG
    from porter.zoo.keras_hub.to_hf import keras_hub_class_of_file

    if keras_hub_class_of_file(path):
        return True  # a keras-hub model: its family's rules (or a refusal naming the class)
    try:
        with zipfile.ZipFile(path) as z:
            # porter's classes, or a zoo model as keras' and keras-hub's layers, its config inside (zoo/keras_file.py)
            return '"porter>' in z.read("config.json").decode(errors="replace") or PORTABLE_CONFIG in z.NameToInfo
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def _outside_zoo(config) -> bool:
    """An HF folder whose model_type has no direct-route family (the ONNX route reads it with transformers)."""
    return isinstance(config, dict) and config.get("model_type") not in zoo.ENTRIES


def _onnx_reads_with_transformers(config) -> bool:
    """On the ONNX route, every HF folder is read by transformers (routes/hf_source.py) except porter's own
    BERT/RoBERTa, whose zoo entry exports with eager attention and its own 4D mask."""
    return _outside_zoo(config) or not zoo.ENTRIES[config["model_type"]].module.startswith("porter.zoo.bert") \
        or zoo.drops_head(config)


def _onnx_route(model, source, target, checkpoint, out, force, verify, atol, rtol, layout, console, inputs=None,
                static_shapes=False, asked="onnx", latency=False, ignore_memory_estimate=False, reason=None):
    from porter.routes.onnx_pipeline import convert_via_onnx

    path = Path(checkpoint) if checkpoint else Path(model)
    zoo_source = None
    hf_outside = path.exists() and detect(path).format == "hf" and _onnx_reads_with_transformers(detect(path).config)
    if str(model) in zoo.ENTRIES and not checkpoint or (not hf_outside and path.exists() and detect(path).format in ("hf", "safetensors")):
        # completed where it is exported (routes/zoo_onnx_export.py)
        zoo_source = resolve(model, source, checkpoint, complete=False)
        artifact = zoo_source.artifact
        if source != "torch":
            raise PorterError("the ONNX route starts a zoo model from its torch checkpoint", hint="pass --from torch")
    else:
        require_path(path, hint="pass a zoo name (see `porter zoo list`) or an existing path")
        artifact = detect(path)
        if artifact.framework != source:
            raise PorterError(f"{path} is a {artifact.description} ({artifact.framework}), not a {source} model",
                              hint=f"use --from {artifact.framework}")
    reason = reason or _onnx_reason(asked, artifact)
    if asked == "auto" and zoo_source is None and (source, target) == ("tf", "torch"):
        # a Keras model outside the zoo: model.py keeps its layers where every one has a torch module
        from porter.routes.keras_layers import convert_keras_layers, keras_layers_plan

        planned = keras_layers_plan(artifact, layout)
        if planned.plan is not None:
            return convert_keras_layers(artifact, planned, out=out, force=force, verify=verify, atol=atol, rtol=rtol,
                                        layout=layout, console=console, inputs=inputs, latency=latency)
        reason = planned.reason or reason
    if artifact.framework in ("torch", "tf"):  # an ONNX or TFLite source is loaded as it is, once
        from porter.resources.memory_estimate_onnx import check_onnx_route_fits

        check_onnx_route_fits(artifact.path, verify, ignore_memory_estimate, artifact.framework)
    return convert_via_onnx(artifact, target=target, out=out, force=force, verify=verify, atol=atol, rtol=rtol,
                            layout=layout, console=console, zoo_source=zoo_source, inputs=inputs, static_shapes=static_shapes,
                            route_reason=reason, latency=latency)


def _hf_folder(model, checkpoint) -> bool:
    path = Path(checkpoint) if checkpoint else Path(str(model))
    return path.is_dir() and detect(path).format == "hf"


def _one_family(model, checkpoint) -> bool:
    """Whether config.json's architectures class is of its model_type (else the folder contradicts itself, and
    the direct route's refusal stands rather than transformers building whichever class it names)."""
    from porter.routes.hf_source import architecture_model_type

    config = detect(Path(checkpoint) if checkpoint else Path(str(model))).config or {}
    built = architecture_model_type(config)
    return built is None or built == config.get("model_type")


def _graph_flags(xla, dtype, allow_nonfinite, reference_dtype, layout) -> None:
    """What the graph route does not carry: refused rather than ignored."""
    for given, flag, why in ((xla, "--xla", "porter has not verified XLA on its converted graphs"),
                             (dtype, f"--dtype {dtype}", "the graph route keeps the model's own dtype"),
                             (allow_nonfinite, "--allow-nonfinite", "repair the weights"),
                             (reference_dtype != "auto", f"--reference-dtype {reference_dtype}", "its reference is the source as exported")):
        if given:
            raise PorterError(f"{flag} is not supported on the graph route ({why})", hint=f"leave {flag.split()[0]} out")


def _graph_route(model, source, checkpoint, out, *, asked, reason=None, **kwargs):
    from porter.routes.graph_tf import convert_via_graph

    if str(model) in zoo.ENTRIES and not checkpoint:  # a zoo name: its folder, built by transformers
        artifact = resolve(model, source, None, complete=False).artifact
    else:
        path = Path(checkpoint) if checkpoint else Path(str(model))
        require_path(path, hint="pass an HF folder, a .pt2 or an .onnx file")
        artifact = detect(path)
    if artifact.framework != source:
        raise PorterError(f"{artifact.path} is a {artifact.description} ({artifact.framework}), not a {source} model",
                          hint=f"use --from {artifact.framework}")
    if reason is None:
        reason = "--route graph" if asked == "graph" else _graph_reason(artifact)
    return convert_via_graph(artifact, out=out, route_reason=reason, **kwargs)


def _graph_reason(artifact) -> str:
    if artifact.framework == "onnx":
        return "an ONNX file: porter's ONNX -> torch converter, then torch.export -> porter's ATen -> TF converter"
    if artifact.format == "pt2":
        return "a torch.export ExportedProgram: porter's ATen -> TF converter keeps its dynamic dims"
    return _onnx_reason("auto", artifact).replace("transformers + ONNX", "transformers + torch.export")


def _onnx_reason(asked: str, artifact) -> str:
    if asked == "onnx":
        return "--route onnx"
    if artifact.format == "hf" and _outside_zoo(artifact.config):
        from porter.routes.hf_source import route_reason

        return route_reason(artifact.config)
    if artifact.format == "hf" and zoo.drops_head(artifact.config):
        heads = ", ".join(artifact.config["architectures"])
        return f"config.json names {heads}: porter's direct {artifact.config['model_type']} is the bare encoder, so transformers + ONNX keeps the head"
    return f"the direct route does not convert a {artifact.description} to this target"


def _check_latency_flag(latency: bool, verify: bool, recorded: bool) -> None:
    """--latency times the verified pair, so it needs verification and a source porter can run."""
    if latency and not verify:
        raise PorterError("--latency times the source and the written model after verifying them; --no-verify skips that",
                          hint="leave --no-verify out, or time later with: porter verify SOURCE OUT --latency")
    if latency and recorded:
        raise PorterError("--latency needs a source porter can run; a transformers 4.x TF checkpoint has only recorded outputs",
                          hint="leave --latency out")

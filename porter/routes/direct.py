"""The direct route: a zoo entry on both sides, weights moved by the rules in mappings/<family>.toml.

    torch checkpoint --read shapes, plan, stream tensors--> Keras model --> SavedModel + model.keras + config.json
    porter's / keras-hub Keras model --same rules backwards--> state dict --> model.safetensors + config.json

``porter.conversion`` resolves the source and picks this route; what is written is staged, verified and
reported here (``torch_to_tf`` / ``tf_to_torch``)."""

from __future__ import annotations

import dataclasses
import gc
import json
import time

import numpy as np

from porter.process import progress
from porter import zoo
from porter.errors import PorterError
from porter.mapping import Plan, RuleSet
from porter.output.outdir import staged_output
from porter.output.result import ConversionResult, finish, verify_written


def rules_for(entry, config: dict, source: str) -> RuleSet:
    """The entry's rules for one direction; a family whose placeholders depend on the config
    (the base model's prefix inside a task head, tied embeddings) gives them through mapping_params."""
    params = entry.impl.mapping_params(config) if hasattr(entry.impl, "mapping_params") else entry.mapping_params
    return RuleSet.load(entry.family, source=source, **params)


def torch_to_keras(entry, source, config: dict):
    """Build porter's Keras model from ``config`` and fill it from a torch TensorSource.
    Returns (model, plan)."""
    from porter.checks.numerics import numpy_dtype

    impl = entry.impl
    with progress.step(f"building porter's Keras {entry.name}"):
        model = impl.build_keras(config, deferred=True)  # variables get memory only when their weight arrives
    variables = impl.keras_variables(model)
    rules = rules_for(entry, config, "torch")
    plan = rules.plan(source.shapes, {k: tuple(v.shape) for k, v in variables.items()})
    with progress.step(f"mapping {len(plan.steps)} tensors"):
        for target, array in plan.run(source.get):
            variable = variables[target]
            if array.dtype != numpy_dtype(variable.dtype):  # e.g. a bf16 checkpoint written as float32 (--dtype)
                array = array.astype(numpy_dtype(variable.dtype))
            impl.initialize_variable(variable, array)
            del array  # not held while the next tensor is read
    return model, plan


def keras_to_torch(entry, model, config: dict) -> tuple[dict[str, np.ndarray], Plan]:
    """The torch state dict (numpy) for a Keras zoo model, by the same rules read backwards."""
    impl = entry.impl
    variables = impl.keras_variables(model)
    rules = rules_for(entry, config, "tf")
    plan = rules.plan({k: tuple(v.shape) for k, v in variables.items()}, impl.torch_target_shapes(config))
    with progress.step(f"mapping {len(plan.steps)} tensors"):
        return dict(plan.run(lambda k: np.asarray(variables[k].numpy()))), plan


def torch_to_tf(src, out, force, verify, atol, rtol, console, inputs=None, dtype=None, allow_nonfinite=False,
                        latency=False, xla=False, ignore_memory_estimate=False, reference_dtype="auto",
                        max_cache_len=None, verify_blocks=False, prefill_lengths=None, prompts=None) -> ConversionResult:
    from porter.readers.checkpoints import open_torch_checkpoint
    from porter.zoo.keras_hub import kv_cache
    from porter.process.frameworks import save_keras
    from porter.resources.memory import peak_rss_mb
    from porter.resources.memory_estimate import check_fits
    from porter.checks.numerics import NonFiniteScan, check_integer_weights, checkpoint_float_dtype
    from porter.resources.reference_plan import plan_reference, reference_note
    from porter.verifiers.runners.runtime_isolated import RuntimeProcess, fresh_report, fresh_process_options, start_children_ahead

    entry = src.entry
    cache_len = kv_cache.for_entry(entry, src.config, max_cache_len)  # a causal LM's prefill/decode (None: not one)
    kv_cache.check_prefill_lengths(prefill_lengths, cache_len, entry.name)
    prompt_ids = _read_prompts(prompts, src.config, cache_len, prefill_lengths, entry.name)
    t0 = time.perf_counter()
    checkpoint = open_torch_checkpoint(src.path)
    check_integer_weights(checkpoint.dtypes, checkpoint.origin, checkpoint.file_of)
    dtypes = {"source": checkpoint_float_dtype(checkpoint.dtypes, checkpoint.shapes)}
    dtypes["written"] = dtype or dtypes["source"]
    kv_cache.check_tflite_dtype(prefill_lengths, dtypes["written"])
    # from the headers alone, before a weight is read: the verification reference that fits (float32 where it does,
    # else the checkpoint's own 16-bit dtype), then refuse a conversion that will not fit even so (exit 2)
    reference = plan_reference(entry, checkpoint.shapes, checkpoint.dtypes, dtypes["source"], dtypes["written"], verify,
                               ignore_memory_estimate, choice=reference_dtype, model_type=src.config.get("model_type"),
                               verify_blocks=verify_blocks)
    if reference.streamed and inputs is not None:
        raise PorterError("--inputs: where only the streamed reference fits, porter compares on its own inputs",
                          hint="leave --inputs out, or verify elsewhere with porter verify --inputs")
    estimate = reference.estimate
    check_fits(estimate, f"converting {src.path}", verify, ignore_memory_estimate)
    # the Keras model's dtype policy is the written dtype; config.json says it as transformers does
    src = dataclasses.replace(src, config=dict(src.config, dtype=dtypes["written"]))
    scan = NonFiniteScan(checkpoint.origin, checkpoint.file_of)
    model, plan = torch_to_keras(entry, checkpoint.watched(scan.check), dict(src.config, _porter_dtype=dtypes["written"]))
    nonfinite = scan.finish(allow_nonfinite)
    t_map = time.perf_counter() - t0
    peaks = {"load_and_map": peak_rss_mb()}  # peak so far after each step: where memory grows
    with staged_output(out, force) as tmp:
        t0 = time.perf_counter()
        with progress.step(f"writing the SavedModel and model.keras of {out}"):
            entry.impl.export_saved_model(model, tmp, jit_compile=xla, **({"max_cache_len": cache_len} if cache_len else {}))
            cache_layout = kv_cache.layout(model, cache_len) if cache_len else None
            if prefill_lengths:  # model.tflite: prefill_<len> + decode, litert-torch's convention
                cache_layout["tflite"] = kv_cache.write_tflite(model, tmp / "model.tflite", cache_len, prefill_lengths)
            t_export, peaks["export"] = time.perf_counter() - t0, peak_rss_mb()
            # a zoo entry may write its own portable form (BERT/RoBERTa: keras + keras-hub layers only)
            if hasattr(entry.impl, "save_keras_file"):
                entry.impl.save_keras_file(model, tmp / "model.keras", src.config)
            else:
                save_keras(model, tmp / "model.keras")
            peaks["keras_save"] = peak_rss_mb()
        (tmp / "config.json").write_text(json.dumps(src.config, indent=2))
        t_save = time.perf_counter() - t0
        isolated = fresh_process_options(latency)  # the SavedModel run by TensorFlow alone, in a fresh process
        if verify and isolated and not (reference.streamed or reference.blockwise):
            start_children_ahead(tmp)  # their runtimes import while the reference loads
        try:
            # block by block in float32 against the Keras model just written (verifiers/blockwise.py), and where
            # nothing else fits, the streamed end-to-end comparison against it too: both before the model is dropped
            blocks, streamed = _verify_blocks(src, model, reference, atol, rtol) if verify else (None, None)
            peaks["blockwise"] = peak_rss_mb() if blocks is not None else None
            # the verifier loads what was written; dropped here, though TensorFlow keeps most of the freed memory
            # (measured: memory_estimate counts the Keras model through verification)
            del model
            if verify:
                gc.collect()
            fallback = {"reference_dtype": reference.dtype, "shapes": reference.shapes} if reference.fallback else {}
            if isolated:
                fallback["candidate_options"] = isolated
            verification = streamed or (verify_written(src.path, tmp, atol, rtol, "direct", inputs, allow_nonfinite, latency,
                                                       **fallback) if verify else None)
            if verification is not None and reference.fallback:
                verification.notes.insert(0, reference_note(reference, verification, inputs is not None))
            if blocks is not None:
                verification.notes.append(blocks.summary())
                verification.problems.extend(blocks.problems())
            generation = (_verify_generation(src, tmp, cache_len, atol, rtol, reference, verification, prefill_lengths, prompt_ids)
                          if not reference.streamed else None)
            if reference.streamed and cache_len and verification is not None:
                verification.notes.append("prefill/decode generation not verified: transformers' generate and the written "
                                          "SavedModel do not fit in memory together here")
            # model.keras too, by keras + keras_hub alone in a fresh process, where it loads without porter
            keras_file = (_verify_keras_file(src, tmp, atol, rtol, inputs, allow_nonfinite, fallback, verification)
                          if isolated and verification is not None and not reference.streamed else None)
            report = _report(src, out, "tf", plan, {"load_and_map_s": t_map, "save_s": t_save, "export_s": t_export,
                                                    "keras_save_s": t_save - t_export})
            report.update(dtype=dtypes, **({"nonfinite_weights": nonfinite} if nonfinite else {}))
            if verify:
                report["reference"] = reference.to_dict(inputs is not None)
            if blocks is not None:  # per block: max abs error, tolerances, seconds; the worst block
                report["blockwise"] = dict(blocks.to_dict(), reason=reference.blockwise)
            report["memory_estimate_mb"] = estimate.to_dict()  # compared with peak_rss_mb by benchmarks/llama_sizes_convert.py
            report["xla"] = xla  # the signatures carry jit_compile=True; verification and --latency ran them compiled
            report["fresh_process"] = fresh_report(tmp, isolated, verify)
            if keras_file is not None:
                report["fresh_process"]["model.keras"]["verification"] = keras_file
            if cache_layout:  # prefill/decode: the cache a client passes back by name (zoo/keras_hub/kv_cache.py)
                report["kv_cache"] = cache_layout
            if generation is not None:
                report["generation"] = generation.to_dict()
            if peaks["load_and_map"] is not None:
                peaks["verify"] = peak_rss_mb() if verify else None
                report["peak_rss_mb"] = {k: v for k, v in peaks.items() if v is not None}
        finally:
            RuntimeProcess.drop_ahead()
        finish(tmp, out, report, verification, console)
    return ConversionResult(out, "direct", verification, report)


def tf_to_torch(src, out, force, verify, atol, rtol, console, inputs=None, dtype=None, allow_nonfinite=False,
                        latency=False) -> ConversionResult:
    from safetensors.numpy import save_file

    from porter.checks.numerics import cast_floats
    from porter.routes.tf_weights import keras_weights_dtype, load_keras_artifact, scan_keras_weights
    from porter.verifiers.runners.runtime_isolated import RuntimeProcess, fresh_process_options, torch_fresh_report

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
    src = dataclasses.replace(src, entry=entry, config=dict(entry.impl.full_config(config), dtype=dtypes["written"]))
    state, plan = keras_to_torch(entry, model, src.config)
    state = cast_floats(state, dtypes["written"])
    t_map = time.perf_counter() - t0
    with staged_output(out, force) as tmp:
        t0 = time.perf_counter()
        with progress.step(f"writing model.safetensors of {out}"):
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(src.config, indent=2))
        t_save = time.perf_counter() - t0
        isolated = fresh_process_options(latency)  # the folder run by torch + transformers alone, in a fresh process
        if verify and isolated:
            RuntimeProcess.start_ahead(tmp, "torch")  # torch imports there while the reference loads here
        try:
            verification = (verify_written(src.path, tmp, atol, rtol, "direct", inputs, allow_nonfinite, latency,
                                           candidate_options=isolated) if verify else None)
        finally:
            RuntimeProcess.drop_ahead()
        report = _report(src, out, "torch", plan, {"load_and_map_s": t_map, "save_s": t_save})
        report["fresh_process"] = torch_fresh_report(isolated, verify)
        report.update(dtype=dtypes, **({"nonfinite_weights": nonfinite} if nonfinite else {}))
        finish(tmp, out, report, verification, console)
    return ConversionResult(out, "direct", verification, report)


def _verify_keras_file(src, folder, atol, rtol, inputs, allow_nonfinite, fallback, verification) -> dict | None:
    """model.keras run by keras + keras_hub alone in a fresh process (runtime_isolated.IsolatedKerasRunner) against
    the same reference and inputs as the SavedModel: its result (to_dict), a note, and its failures as problems (exit
    1). None where the file names porter's own classes (the report says so; nothing is claimed for it)."""
    from porter.verifiers.runners.runtime_isolated import keras_needs_porter

    keras_file = folder / "model.keras"
    if not keras_file.is_file() or keras_needs_porter(keras_file):
        return None
    options = dict(fallback, candidate_options={"isolated": True})
    try:
        result = verify_written(src.path, keras_file, atol, rtol, "direct", inputs, allow_nonfinite, **options)
    except PorterError as exc:  # keras alone could not load or run the file: a finding about it, not bad input
        verification.problems.append(f"model.keras (keras + keras_hub alone): {exc.message}")
        return {"status": "failed", "error": exc.message}
    shapes = ", ".join(s.label for s in result.shapes)
    worst = ", ".join(f"{k} {v:.2g}" for k, v in result.worst().items())
    verification.notes.append(f"model.keras {result.status} in keras + keras_hub alone (a fresh process) at {shapes}: "
                              f"max abs error {worst}")
    verification.problems.extend(f"model.keras (keras + keras_hub alone): {f}" for f in result.failures())
    return result.to_dict()


def _verify_blocks(src, model, reference, atol, rtol):
    """(the block-wise float32 result or None, the streamed end-to-end VerificationResult or None), as the reference
    plan says (porter/resources/reference_plan.py). The candidate is the Keras model just written, in memory: the
    SavedModel and model.keras hold its weights."""
    if not reference.blockwise and not reference.streamed:
        return None, None
    from porter.verifiers import blockwise

    blocks = None
    if reference.blockwise:
        with progress.step("verifying block by block in float32 (transformers' blocks streamed from the checkpoint)"):
            blocks = blockwise.verify_blocks(src.path, model, src.config, atol=atol, rtol=rtol,
                                             weights_from="the Keras model just written, in memory")
    streamed = None
    if reference.streamed:
        with progress.step(f"comparing end to end with transformers in {reference.dtype}, one layer at a time"):
            streamed = blockwise.end_to_end(src.path, model, src.config, reference.dtype, reference.shapes,
                                            atol=atol, rtol=rtol)
    return blocks, streamed


def _read_prompts(prompts, config: dict, cache_len, prefill_lengths, name: str):
    """--prompts: a causal LM's token ids for the generation check, read and checked before anything is written."""
    if prompts is None:
        return None
    if not cache_len:
        raise PorterError(f"--prompts {prompts} gives the prompts of a causal LM's generation check; {name} here is not "
                          "a causal LM", hint="leave --prompts out")
    from porter.verifiers.generation import read_prompts

    return read_prompts(prompts, int(config["vocab_size"]), cache_len, max(prefill_lengths) if prefill_lengths else None)


def _verify_generation(src, folder, cache_len, atol, rtol, reference, verification, prefill_lengths=None, prompt_ids=None):
    """A causal LM's prefill/decode generate transformers' greedy tokens (verifiers/generation.py): the result, its
    summary in the verification's notes, and its failures in its problems (exit 1). None: nothing to generate."""
    if verification is None or not cache_len:
        return None
    from porter.verifiers.generation import verify_generation

    with progress.step("generating with prefill + decode against transformers' generate"):
        result = verify_generation(src.path, folder, src.config, cache_len, atol=atol, rtol=rtol,
                                   reference_dtype=reference.dtype if reference.fallback else None,
                                   tflite=folder / "model.tflite" if prefill_lengths else None,
                                   max_prompt=max(prefill_lengths) if prefill_lengths else None, prompt_ids=prompt_ids)
    verification.notes.extend(result.summaries())
    verification.problems.extend(result.problems())
    return result


def _report(src, out, target, plan, timings) -> dict:
    from porter import __version__

    return {
        "porter": __version__,
        "model": src.entry.name,
        "source": str(src.path),
        "from": src.artifact.framework,
        "to": target,
        "route": "direct",
        "route_reason": f"porter's zoo has {src.entry.name!r} on both sides ({src.entry.torch_class} <-> {src.entry.keras_class}), "
                        f"weights moved by mappings/{src.entry.family}.toml",
        "mapping": {"family": src.entry.family, "tensors": len(plan.steps), "ignored": plan.ignored},
        "out": str(out),
        "timings": timings,
    }

"""`porter convert model.keras --from tf --to torch` with the keras layers writer: model.py keeps the Keras
structure (one module per layer, BatchNorm and Dropout kept, Keras names), verified against the Keras model.

Taken by --route auto when every layer has a torch counterpart (porter/keras_to_torch/layers.py); otherwise
the whole model goes through the ONNX route, and the route reason names each layer that has none.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from porter.process import progress
from porter.readers.model_code import model_code_record

ROUTE = "keras layers"
BATCH_NORM_NOTE = ("BatchNormalization -> KerasBatchNorm1d/2d (torch BatchNorm modules): in train() they normalise "
                   "with the batch's biased variance and update running_var with it, as Keras does (torch's own "
                   "BatchNorm stores the unbiased variance); momentum is torch's, 1 - Keras' (Keras 0.99 -> 0.01)")


@dataclass
class Planned:
    model: object = None
    plan: object = None  # codegen.Plan when every layer can be written
    reason: str | None = None  # why not (the ONNX route's route_reason)


def keras_layers_plan(artifact, layout) -> Planned:
    """The Keras model and its translation, or the reason the whole model takes the ONNX route instead."""
    from porter.readers.keras2_saved_model import Unreadable, is_keras2_saved_model

    keras2 = artifact.format == "saved_model" and is_keras2_saved_model(artifact.path)
    if artifact.format not in ("keras", "h5") and not keras2:
        return Planned(reason=None)
    from porter.keras_to_torch.codegen import plan_model
    from porter.routes.tf_weights import load_keras_artifact

    try:
        with progress.step(f"loading {artifact.path}"):
            model, config = load_keras_artifact(artifact)
    except Unreadable as exc:  # a Keras 2 SavedModel whose layers cannot be read: its saved graph still converts
        return Planned(reason=f"the keras layers writer could not read this Keras 2 SavedModel's layers ({exc.message}): "
                              "the whole model was converted from its saved graph through ONNX (tf2onnx)")
    if config is not None:
        return Planned(reason=None)
    channel = _channel_inputs(model) if layout == "nchw" else []
    plan = plan_model(model)
    if channel:  # the inputs the written model takes channels-first
        by_name = {n: var for n, var, _, _ in plan.graph.inputs}
        plan = plan_model(model, {by_name[n]: "cf" for n in channel})
    if plan.unsupported:
        listed = "; ".join(plan.unsupported)
        return Planned(reason=f"the keras layers writer cannot keep this model's structure ({listed}): "
                              "the whole model was converted through ONNX (tf2onnx; BatchNorm folded, Dropout dropped)")
    return Planned(model, plan)


def _channel_inputs(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs if len(t.shape) >= 3 and "float" in str(t.dtype)]


def convert_keras_layers(artifact, planned: Planned, *, out, force, verify, atol, rtol, layout, console, inputs=None,
                         latency=False):
    from porter.output.result import ConversionResult, finish as _finish
    from porter.keras_to_torch.codegen import write_folder
    from porter.output.outdir import staged_output

    model, plan = planned.model, planned.plan
    channel = _channel_inputs(model)
    written_layout = "nchw" if layout == "nchw" and channel else "nhwc"
    timings = {}
    with staged_output(Path(out), force, protected=(artifact.path,)) as tmp:
        t0 = time.perf_counter()
        with progress.step(f"writing model.py ({len(plan.graph.calls)} Keras layers) and model.safetensors"):
            weight_map = write_folder(plan, model, tmp, artifact.path.stem, written_layout)
        timings["convert_s"] = time.perf_counter() - t0
        report = _report(artifact, plan, out, channel, written_layout, weight_map, timings)
        report["files"] = model_code_record(tmp)  # the torch_py runner imports model.py only while this hash matches
        (tmp / "porter_report.json").write_text(json.dumps(report, indent=2, default=str))
        verification = None
        if verify:
            from porter.verifiers.api import verify as run_verify

            t0 = time.perf_counter()
            from porter.verifiers.runners.runtime_isolated import fresh_process_options, torch_fresh_report

            isolated = fresh_process_options(latency)  # model.py run by torch alone, in a fresh process
            verification = run_verify(artifact.path, tmp, inputs=Path(inputs) if inputs else None, atol=atol, rtol=rtol,
                                      route=ROUTE, latency=latency, candidate_options=isolated)
            report["fresh_process"] = torch_fresh_report(isolated)
            timings["verify_s"] = time.perf_counter() - t0
        _finish(tmp, Path(out), report, verification, console)
    return ConversionResult(Path(out), ROUTE, verification, report)


def _report(artifact, plan, out, channel, written_layout, weight_map, timings) -> dict:
    from porter import __version__

    perm = (0, 3, 1, 2)
    specs = {}
    for name, _, shape, dtype in plan.graph.inputs:
        shape = list(shape)
        if written_layout == "nchw" and name in channel and len(shape) == 4:
            shape = [shape[i] for i in perm]
        specs[name] = {"dtype": dtype, "shape": shape}
    classes = sorted({c.cls for c in plan.graph.calls})
    return {
        "porter": __version__,
        "model": artifact.path.stem,
        "source": str(artifact.path),
        "from": "tf",
        "to": "torch",
        "route": ROUTE,
        "writer": ROUTE,
        "route_reason": "every Keras layer has a torch module: model.py keeps the Keras structure",
        "inputs": specs,
        "outputs": list(plan.graph.output_names),
        "static_dims": [],
        "layout": {"inputs": {n: "nhwc" for n in channel}, "candidate": written_layout},
        "keras_layers": {"layers": len(plan.graph.calls), "classes": classes, "weights": weight_map},
        "notes": [BATCH_NORM_NOTE, "Dropout -> nn.Dropout (active in train()); weights Keras does not train -> buffers",
                  "model.pt2 is not written on this route: model.py + model.safetensors are the conversion"],
        "out": str(out),
        "timings": timings,
    }

"""`porter verify --train`: does the written torch model *train* like the Keras model it came from?

One SGD step (learning rate ``lr``, MSE loss against a fixed random target) on the same batch in both
frameworks, dropout rates set to 0 (its random masks cannot agree) and BatchNorm in training mode; then
the loss and every gradient of that step are compared per parameter group (Keras layer), the running
statistics it updated, and the outputs on a second batch in inference mode. The first layer in graph
order whose gradient (or statistic) differs is named.

The step is taken in float64 on both sides (the Keras model rebuilt with float64 dtype policies, the torch
model ``.double()``): float32 noise flips ReLU masks in deep BatchNorm networks and the float32 gradients
are then not determined to 1e-4 even within one framework (training_float64 has the numbers). A model
that cannot be rebuilt in float64 is stepped in float32, and the notes say so.

Pairs: a Keras model (.keras/.h5) and the torch folder porter's keras layers writer made from it.
Direct-route pairs (an HF folder and porter's Keras model) are not supported by --train yet.
"""

from __future__ import annotations

import contextlib

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from porter.checks import escape
from porter.errors import PorterError
from porter.checks.model_files import read_json_if_present

ATOL = 1e-4  # fp32, after one step: an element fails only outside both atol and rtol x |reference|
RTOL = 1e-4
BATCH = 4  # batch statistics need more than one example


@dataclass
class Group:
    layer: str
    kind: str  # "gradient" or "running statistic"
    tensors: dict  # torch key -> {"keras": path, "max_abs": x, "passed": bool}

    @property
    def max_abs(self) -> float:
        return max(t["max_abs"] for t in self.tensors.values())

    @property
    def passed(self) -> bool:
        return all(t["passed"] for t in self.tensors.values())


@dataclass
class TrainingResult:
    reference: str
    candidate: str
    lr: float
    dtype: str = "float64"  # the dtype the step was taken in
    loss: dict = field(default_factory=dict)  # reference, candidate, abs_diff, passed
    outputs: dict = field(default_factory=dict)  # output -> {"max_abs", "passed"} (second batch, inference, after the step)
    groups: list = field(default_factory=list)
    first_diverging_layer: str | None = None
    forward: dict = field(default_factory=dict)  # training-mode outputs per layer on the first batch (training_localise)
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.loss.get("passed", False) and all(o["passed"] for o in self.outputs.values()) and all(
            g.passed for g in self.groups)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        return {"check": "training step", "reference": self.reference, "candidate": self.candidate,
                "status": "passed" if self.passed else "failed", "optimizer": {"name": "SGD", "lr": self.lr},
                "loss_function": "MSE against a fixed random target (seed 0)", "batch": BATCH,
                "tolerance": {"atol": ATOL, "rtol": RTOL, "dtype": self.dtype,
                              "rule": "an element fails only outside both atol and rtol x |reference|"},
                "loss": self.loss, "outputs_after_step": self.outputs,
                "parameter_groups": [{"layer": g.layer, "kind": g.kind, "max_abs": g.max_abs, "passed": g.passed,
                                      "tensors": g.tensors} for g in self.groups],
                "training_mode_forward": self.forward, "first_diverging_layer": self.first_diverging_layer,
                "notes": self.notes}


def _close(ref: np.ndarray, got: np.ndarray) -> tuple[float, bool]:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return float("inf"), False
    diff = np.abs(ref - got)
    ok = bool(np.all(np.isfinite(got)) and np.all((diff <= ATOL) | (diff <= RTOL * np.abs(ref))))
    return float(diff.max()) if diff.size else 0.0, ok


def _pair(reference, candidate):
    from porter.readers.artifacts import detect

    ref, cand = detect(reference), detect(candidate)
    hint = ("--train compares a Keras model (.keras, .h5 or a Keras 2 SavedModel folder) with the torch folder porter wrote from it "
            "(porter convert MODEL.keras --from tf --to torch); direct-route pairs are not supported by --train yet")
    from porter.readers.keras2_saved_model import is_keras2_saved_model

    keras2 = ref.format == "saved_model" and is_keras2_saved_model(ref.path)  # tf_keras' model.save(dir): its layers
    if (ref.format not in ("keras", "h5") and not keras2) or cand.format != "torch_py":
        raise PorterError(f"--train cannot compare {ref.path} ({ref.description}) with {cand.path} ({cand.description})",
                          hint=hint)
    written = read_json_if_present(Path(cand.path) / "porter_report.json", cand.path) or {}
    if written.get("writer") != "keras layers":
        raise PorterError(f"{cand.path} was not written by the keras layers writer (its model.py comes from tf2onnx's graph, "
                          "with BatchNorm folded into convolutions and Dropout dropped): its parameters are not the "
                          "Keras layers', so a training step cannot be compared",
                          hint="convert the Keras model with --route auto (the keras layers writer) and verify that folder")
    return ref, cand, written


def verify_training(reference, candidate, *, lr: float = 0.1, trust_model_code: bool = False,
                    dtype: str = "float64") -> TrainingResult:
    """One SGD step in both frameworks, compared (see the module docstring); ``dtype`` "float32" takes it
    in float32 instead, and so does a float64 step TensorFlow has no kernel for (MaxPool3D, an antialiased
    resize's gradient), with a note. Raises PorterError on a pair --train cannot check (formats, a folder not
    written by the keras layers writer, no trainable weights)."""
    if dtype == "float64":
        from porter.process.frameworks import tensorflow

        tf = tensorflow()
        try:
            return _verify_training(reference, candidate, lr=lr, trust_model_code=trust_model_code, dtype=dtype)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as exc:
            if "float64" not in str(exc) and "double" not in str(exc) and "DT_DOUBLE" not in str(exc):
                raise
            result = _verify_training(reference, candidate, lr=lr, trust_model_code=trust_model_code, dtype="float32")
            first = next((line for line in str(exc).splitlines() if line.strip()), "")[:200]
            result.notes.append(f"the step is taken in float32: TensorFlow has no float64 kernel for an op of this "
                                f"model ({first})")
            return result
    return _verify_training(reference, candidate, lr=lr, trust_model_code=trust_model_code, dtype=dtype)


def _verify_training(reference, candidate, *, lr: float, trust_model_code: bool, dtype: str) -> TrainingResult:
    if dtype not in ("float32", "float64"):
        raise PorterError(f"the training step's dtype {dtype!r} is neither float32 nor float64", hint="dtype='float64'")
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise PorterError(f"--lr {lr!r} is not a positive learning rate", hint="e.g. --lr 0.1")
    ref, cand, written = _pair(reference, candidate)
    from porter.keras_to_torch.codegen import plan_model
    from porter.routes.tf_weights import load_keras_artifact, scan_keras_weights
    from porter.verifiers import layout as layouts
    from porter.verifiers.runners.torch_py import TorchPyRunner

    keras_model, _ = load_keras_artifact(ref)
    scan_keras_weights(keras_model, ref.path, False)
    runner = TorchPyRunner(cand, trust_model_code=trust_model_code)
    runner.activate()
    torch_model = runner.model
    if not keras_model.trainable_variables:
        raise PorterError(f"{ref.path} has no trainable weights (every layer has trainable=False): there is no step to compare",
                          hint="leave --train out: porter verify compares the outputs")
    trainable = {n for n, p in torch_model.named_parameters() if p.requires_grad}
    if not trainable:
        raise PorterError(f"{cand.path}/model.py has no trainable parameters (none requires grad): there is no step to compare",
                          hint="leave --train out: porter verify compares the outputs")
    channel_first = {n for n, v in (written.get("layout") or {}).get("inputs", {}).items()
                     if (written.get("layout") or {}).get("candidate") == "nchw"}
    def planned(model):
        plan = plan_model(model)
        by_name = {n: var for n, var, _, _ in plan.graph.inputs}
        return plan_model(model, {by_name[n]: "cf" for n in channel_first if n in by_name}) if channel_first else plan

    plan = planned(keras_model)
    mapped = {w.torch_key for w in plan.weights if w.trainable}
    if mapped != trainable:
        raise PorterError(f"{cand.path} does not hold the trainable parameters the Keras model's layers map to",
                          problems=[f"not in model.py: {k}" for k in sorted(mapped - trainable)]
                          + [f"not in the Keras model: {k}" for k in sorted(trainable - mapped)])
    feeds = [_feed(keras_model, plan, seed) for seed in (1, 2)]
    declared = layouts.resolve(None, ref.path, cand.path)
    result = TrainingResult(str(ref.path), str(cand.path), float(lr), dtype)
    if dtype == "float64":
        from porter.verifiers.training_float64 import feed_as, keras_in_float64

        wide, why = keras_in_float64(keras_model)
        if wide is None:
            result.dtype = "float32"
            result.notes.append(f"the step is taken in float32: {ref.path} {why}; float32 gradients of ReLU "
                                "networks can differ beyond 1e-4 by noise alone")
        else:
            keras_model, torch_model = wide, torch_model.double()
            feeds = [feed_as(f, "float64") for f in feeds]
            plan = planned(wide)  # its variable paths: a Sequential loaded from .h5 loses its name prefix in the copy
    _no_dropout(keras_model, torch_model)
    from porter.verifiers import training_localise as localise

    result.forward = localise.first_forward_divergence(
        localise.training_outputs_keras(keras_model, plan, feeds[0]),
        localise.training_outputs_torch(torch_model, plan, runner.input_names, feeds[0], declared), plan, _close)
    k_before = {v.path: v.numpy() for v in keras_model.weights}
    t_before = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
    k_out, k_loss, k_grads, k_after, k_vars = _keras_step(keras_model, plan, feeds, lr)
    t_out, t_loss, t_grads, t_after, t_state = _torch_step(torch_model, runner.input_names, feeds, declared, lr, k_out)
    diff, ok = _close(np.float64(k_loss), np.float64(t_loss))
    result.loss = {"reference": float(k_loss), "candidate": float(t_loss), "abs_diff": diff, "passed": ok}
    for name, a, b in zip(plan.graph.output_names, k_after, t_after):
        d, ok = _close(a, b)
        result.outputs[name] = {"max_abs": d, "passed": ok}
    from porter.keras_to_torch.layers import TRANSFORMS

    for call in plan.graph.calls:
        emit = plan.emits[call.var]
        weights, grads, stats = {}, {}, {}
        for w in emit.weights:
            if w.value is None:  # the weights the step starts from: a weight that differs is named first
                d, ok = _close(TRANSFORMS[w.transform](k_before[w.keras_path]), t_before[w.torch_key])
                weights[w.torch_key] = {"keras": w.keras_path, "max_abs": d, "passed": ok}
            if w.trainable:
                ref_g = TRANSFORMS[w.transform](k_grads[w.keras_path])
                d, ok = _close(ref_g, t_grads[w.torch_key])
                grads[w.torch_key] = {"keras": w.keras_path, "max_abs": d, "passed": ok}
            elif w.value is None:  # a statistic the step updated (BatchNorm's moving mean and variance)
                d, ok = _close(TRANSFORMS[w.transform](k_vars[w.keras_path]), t_state[w.torch_key])
                stats[w.torch_key] = {"keras": w.keras_path, "max_abs": d, "passed": ok}
        for kind, tensors in (("weight before the step", weights), ("gradient", grads), ("running statistic", stats)):
            if tensors:
                result.groups.append(Group(call.name, kind, tensors))
    # a wrong weight changes every gradient (upstream ones through the backward pass): name it first; a forward
    # mismatch does too, so next the first layer whose training-mode output differs; else (a backward-only
    # difference) the first layer in graph order whose gradient or statistic differs
    # (the forward comparison localises; the verdict stays with the loss, gradients, statistics and outputs)
    first_forward = (result.forward.get("first_diverging") or {}).get("layer")
    if not result.passed:
        result.first_diverging_layer = next(
            (g.layer for g in result.groups if not g.passed and g.kind.startswith("weight")),
            first_forward or next((g.layer for g in result.groups if not g.passed), None))
    result.notes.append(f"one SGD step (lr {lr}) in {result.dtype} on a batch of {BATCH}, MSE against a fixed random "
                        "target; dropout rates set to 0 on both sides; BatchNorm in training mode; outputs compared on a "
                        f"second batch in inference mode; tolerance atol {ATOL}, rtol {RTOL}")
    return result


def _all_layers(model) -> list:
    """Every layer, those of nested models included (their Dropout acts in the step too)."""
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=False)) if flatten is not None else list(model.layers)


def _keras_no_dropout(layer) -> None:
    """A Keras layer's random parts off: Dropout-like rates, GaussianNoise's stddev, and the attention layers'
    own dropout (a float ``dropout`` attribute, and the Dropout sublayer some keep)."""
    if "Dropout" in type(layer).__name__ and hasattr(layer, "rate"):
        layer.rate = 0.0
    if type(layer).__name__ == "GaussianNoise":
        layer.stddev = 0.0
    if isinstance(getattr(layer, "dropout", None), float):
        with contextlib.suppress(AttributeError):  # a read-only property (ConvLSTM's, whose dropout is refused anyway)
            layer.dropout = 0.0
    inner = getattr(layer, "_dropout_layer", None)
    if inner is not None and hasattr(inner, "rate"):
        inner.rate = 0.0


def _no_dropout(keras_model, torch_model) -> None:
    """Dropout rates and GaussianNoise's stddev 0 on both sides: their random draws cannot agree."""
    import torch

    for layer in _all_layers(keras_model):
        _keras_no_dropout(layer)
    for m in torch_model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
        if type(m).__name__ == "GaussianNoise" and hasattr(m, "stddev"):
            m.stddev = 0.0


def _feed(keras_model, plan, seed: int) -> dict:
    """A batch for every input, in the Keras layout: N(0, 1) floats; ids inside the smallest Embedding table the
    input feeds (integers, or whole numbers in a float input, which Keras casts to int)."""
    rng = np.random.default_rng(seed)
    bounds = {}
    for call in plan.graph.calls:
        if call.cls == "Embedding":
            for var in call.inputs:
                bounds[var] = min(bounds.get(var, 1 << 30), int(call.layer.input_dim))
    feed = {}
    for name, var, shape, dtype in plan.graph.inputs:
        dims = (BATCH, *(8 if d is None else int(d) for d in shape[1:]))
        if "int" in dtype or var in bounds:
            feed[name] = rng.integers(0, bounds.get(var, 2), size=dims).astype(dtype)
        else:
            feed[name] = rng.normal(size=dims).astype(dtype)
    return feed


def _targets(outputs) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=np.shape(o)).astype(np.asarray(o).dtype) for o in outputs]  # in the outputs' dtype


def _keras_step(model, plan, feeds, lr):
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    names = [n for n, _, _, _ in plan.graph.inputs]

    def call(feed, training):
        args = [feed[n] for n in names]
        out = model(args if len(args) > 1 else args[0], training=training)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    with tf.GradientTape() as tape:
        outs = call(feeds[0], True)
        targets = _targets([o.numpy() for o in outs])
        loss = tf.add_n([tf.reduce_mean(tf.square(o - t)) for o, t in zip(outs, targets)])
    variables = model.trainable_variables
    # an Embedding's gradient is IndexedSlices (the rows looked up): dense, as torch's nn.Embedding gives it
    grads = [g if g is None else tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
    grad_of = {v.path: (np.zeros(v.shape, np.float32) if g is None else np.asarray(g)) for v, g in zip(variables, grads)}
    for v, g in zip(variables, grads):
        if g is not None:
            v.assign_sub(lr * g)
    after = [np.asarray(o) for o in call(feeds[1], False)]
    return [o.numpy() for o in outs], float(loss), grad_of, after, {v.path: v.numpy() for v in model.weights}


def _torch_step(model, input_names, feeds, declared, lr, keras_outputs):
    import torch

    from porter.verifiers import layout as layouts

    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0

    def call(feed):
        feed = layouts.apply(feed, declared)
        out = model(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names])
        return list(out) if isinstance(out, (list, tuple)) else [out]

    model.train()
    outs = call(feeds[0])
    targets = _targets(keras_outputs)
    loss = sum(torch.nn.functional.mse_loss(o, torch.from_numpy(t)) for o, t in zip(outs, targets))
    loss.backward()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = {n: (np.zeros(tuple(p.shape), np.float32) if p.grad is None else p.grad.numpy().copy()) for n, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            if p.grad is not None:
                p -= lr * p.grad
    model.eval()
    with torch.no_grad():
        after = [o.numpy() for o in call(feeds[1])]
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return [o.detach().numpy() for o in outs], float(loss.detach()), grads, after, state


def render(result: TrainingResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from porter.verifiers.console import line, text  # layer names and notes come from the models

    console = console or Console(stderr=False)
    table = Table(title=f"porter verify --train: {'PASSED' if result.passed else 'FAILED'}")
    for col in ("what", "layer / output", "max abs", "result"):
        table.add_column(col)
    ok = lambda p: "pass" if p else "FAIL"  # noqa: E731
    table.add_row("loss", "", f"{result.loss['abs_diff']:.2e}", ok(result.loss["passed"]))
    for g in result.groups:
        if g.passed and g.kind.startswith("weight"):
            continue  # the starting weights are listed when they differ
        table.add_row(g.kind, text(g.layer), f"{g.max_abs:.2e}", ok(g.passed))
    for name, o in result.outputs.items():
        table.add_row("output after the step", text(name), f"{o['max_abs']:.2e}", ok(o["passed"]))
    if result.forward.get("compared"):
        first = result.forward.get("first_diverging")
        table.add_row("training-mode forward", f"{result.forward['compared']} layers" if not first else
                      text(f"first differs: {first['layer']}"), f"{result.forward['max_abs']:.2e}", "differs" if first else "equal")
    console.print(table)
    if all(g.passed for g in result.groups if g.kind.startswith("weight")):
        console.print("weights before the step: equal in both (every layer)")
    for note in result.notes:
        console.print(line(f"note: {note}"))
    if result.first_diverging_layer:
        console.print(line(f"first diverging layer: {result.first_diverging_layer}"))


def cli_train(reference, candidate, *, lr: float, report, trust_model_code: bool, refused: list) -> int:
    """`porter verify --train`: the exit code (0 passed, 1 failed); PorterError on bad input."""
    if refused:
        raise PorterError(f"--train does not take {', '.join(refused)}",
                          hint="--train generates its own batches and uses fp32 1e-4; it writes --report (JSON) only")
    result = verify_training(reference, candidate, lr=lr, trust_model_code=trust_model_code)
    render(result)
    if report is not None:
        Path(report).write_text(json.dumps(result.to_dict(), indent=2))
        print(escape.console(f"wrote {report}"))
    return 0 if result else 1

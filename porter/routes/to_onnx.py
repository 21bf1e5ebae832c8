"""The first leg of the ONNX route: torch (torch.onnx.export, dynamo) or TF/Keras (tf2onnx) -> ONNX.

Both exporters are noisy; their output is held back and shown only when they fail.
Names are kept: the ONNX graph's inputs and outputs carry the source model's names.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from porter.errors import CannotConvertYet, PorterError
from porter.routes.to_onnx_leftovers import check_tf2onnx_output, rewrite_tf_leftovers

OPSET = 18  # torch.onnx's dynamo exporter handles it; onnxruntime and porter's ONNX -> torch read it
# metadata on the graphs porter exports from torch: the exporter's optimizer already folded constants and
# dropped dead nodes, so onnx-simplifier is not run again on them
OPTIMIZED_MARK = "porter.optimized_by"


@contextlib.contextmanager
def captured_output(what: str):
    """``what`` runs as a progress step, its output held back (see _held_output)."""
    from porter.process import progress

    with progress.step(what), _held_output(what):
        yield


@contextlib.contextmanager
def _held_output(what: str):
    """Hold back everything written to fd 1 and fd 2 (C++ logs included). On failure the held
    text is attached to a PorterError naming ``what``; on success it is dropped."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException as exc:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            if isinstance(exc, CannotConvertYet) and not exc.tool_output:
                held.seek(0)
                exc.tool_output = held.read().decode(errors="replace")
            if isinstance(exc, (KeyboardInterrupt, PorterError)):
                raise
            held.seek(0)
            raise tool_failure(what, exc, held.read().decode(errors="replace")) from exc
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


_TOOL_HINTS = {
    "torch.onnx.export": "torch.onnx could not export the model's code at the place named above; rewrite that line "
                         "(or export the model to .onnx yourself) and convert the .onnx: porter convert model.onnx --from onnx",
    "tf2onnx": "tf2onnx could not convert the TF graph; export the model to .onnx another way and pass it with --from onnx",
}


def tool_failure(what: str, exc: BaseException, log: str) -> CannotConvertYet:
    """A tool's failure as one line naming its real cause (porter.root_cause) and the place it happened.
    The tool's own output (its tail used to be the message, and was noise) rides along for the CLI."""
    from porter.root_cause import root_cause

    cause = root_cause(exc)
    hint = next((h for tool, h in _TOOL_HINTS.items() if what.startswith(tool)), None)
    return CannotConvertYet(f"{what} failed: {cause.line()}", problems=cause.context, hint=hint, tool_output=log)


@dataclass
class OnnxExport:
    """What an exporter wrote: the file, the graph's names and which dims it kept dynamic."""

    path: Path
    input_names: list[str]
    output_names: list[str]
    # name -> (dtype, shape with None for dynamic dims), as the source model declares them
    input_specs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- torch -> ONNX ---------------------------------------------------------------------------


def exported_program_io(program) -> tuple[list[str], list[str], dict]:
    """(input names, output names, input specs) of a torch.export ExportedProgram.
    Outputs are named by the keys of a returned dict, else by the graph's output nodes."""
    sig = program.graph_signature
    inputs = list(sig.user_inputs)
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    specs = {}
    for name in inputs:
        val = nodes[name].meta.get("val")
        shape = tuple(int(d) if isinstance(d, int) or str(d).isdigit() else None for d in val.shape)
        specs[name] = (str(val.dtype).removeprefix("torch."), shape)
    out_spec = program.call_spec.out_spec
    outputs = list(sig.user_outputs)
    # a dict, or a dict subclass such as transformers' ModelOutput: its keys name the outputs
    if out_spec is not None and isinstance(out_spec.type, type) and issubclass(out_spec.type, dict) \
            and len(out_spec.context) == len(outputs):
        outputs = [str(k) for k in out_spec.context]
    return inputs, outputs, specs


def exported_program_ranges(program) -> dict:
    """name -> {axis: (min, max)} for the dynamic dims of an ExportedProgram's inputs, from its range
    constraints (torch.export Dim min/max): the sizes the program accepts. max is None when unbounded."""
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    constraints = {str(sym): r for sym, r in program.range_constraints.items()}
    ranges: dict = {}
    for name in program.graph_signature.user_inputs:
        val = nodes[name].meta.get("val")
        for axis, dim in enumerate(getattr(val, "shape", ())):
            r = constraints.get(str(dim))
            if r is None or str(dim).isdigit():
                continue
            upper = r.upper
            hi = int(upper) if getattr(upper, "is_finite", True) and str(upper) not in ("oo", "int_oo") else None
            ranges.setdefault(name, {})[axis] = (int(r.lower), hi)
    return ranges


def load_exported_program(path: Path):
    from porter.process.frameworks import torch
    from porter.readers.safe_pt2 import check_pt2_archive, register_output_types

    check_pt2_archive(path)  # nothing in the archive may run code: refused before torch sees it
    register_output_types(path)
    try:
        return torch().export.load(str(path))
    except Exception as exc:
        raise PorterError(f"{path} could not be loaded by torch.export.load: {type(exc).__name__}: {(str(exc).strip() or '?').splitlines()[0]}",
                          hint="save the model with torch.export.save(torch.export.export(model, args), 'model.pt2')") from None


def exported_pt2(path, onnx_path: Path, release: bool = True) -> dict:
    """A .pt2 ExportedProgram (loaded without its pickles) exported to ``onnx_path``, as plain values
    (routes/onnx_pipeline.py EXPORTS, kind "pt2"): {"names", "outputs", "specs", "ranges"}, JSON's lists for tuples."""
    from porter.process import progress
    from porter.process.frameworks import torch
    from porter.verifiers.inputs import from_specs

    with progress.step(f"loading {path}"):
        program = load_exported_program(Path(path))
    inputs, outputs, specs = exported_program_io(program)
    ranges = exported_program_ranges(program)
    feed = from_specs(specs, ranges=ranges).feeds[0]
    example = tuple(torch().from_numpy(feed[n]) for n in inputs)  # shapes and dtypes only
    torch_to_onnx(program, example, inputs, outputs, onnx_path, release=release)
    return {"names": inputs, "outputs": outputs, "specs": {n: [d, list(s)] for n, (d, s) in specs.items()},
            "ranges": {n: {str(axis): list(r) for axis, r in axes.items()} for n, axes in ranges.items()}}


def torch_to_onnx(model, example_inputs: tuple, input_names, output_names, path: Path, dynamic_shapes=None,
                  release: bool = True) -> None:
    """torch.onnx.export(dynamo=True) of an nn.Module or ExportedProgram into ``path``; ``release``: hand the
    exporter's memory back afterwards (a process about to exit skips that).

    The legacy TorchScript exporter is never used: on this machine it exported a BERT
    with a wrong attention mask and no error (see DESIGN.md)."""
    from porter.process.frameworks import torch

    torch = torch()
    with captured_output("torch.onnx.export (dynamo=True)"):
        program = torch.onnx.export(
            model, tuple(example_inputs), dynamo=True, input_names=list(input_names), output_names=list(output_names),
            dynamic_shapes=dynamic_shapes, opset_version=OPSET, verbose=False, report=False, optimize=True,
        )
        program.model.metadata_props[OPTIMIZED_MARK] = "torch.onnx.export(dynamo=True, optimize=True)"
        program.save(str(path), external_data=True)
    del program
    if release:
        _drop_rewriter_matches()
        return_freed_memory()


def return_freed_memory() -> None:
    """The exporter's graphs and weight copies are garbage now; hand the freed heap back to the OS, so
    the steps after the export (checks, writing, verification) do not stack on top of it."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by this process all the same
        pass


def _drop_rewriter_matches() -> None:
    """onnxscript's rewrite rules are module-level objects whose pattern matchers keep the last graph they
    matched (``_graph``, ``_current_node``, the bindings in ``_match``): after torch.onnx.export(optimize=True)
    that is the exported graph, whose initializers still reference the torch model's parameters, so the model
    (bert-base: 440 MB) outlived the export. Forgetting the match lets both go."""
    import gc
    import sys

    matcher = getattr(sys.modules.get("onnxscript.rewriter._matcher"), "SimplePatternMatcher", None)
    if matcher is None:
        return
    if gc.get_freeze_count():  # gc.get_objects() does not list frozen objects (porter.process.frameworks froze the imports)
        gc.unfreeze()
    for obj in gc.get_objects():
        if isinstance(obj, matcher):
            for attr in ("_graph", "_current_node"):
                if hasattr(obj, attr):
                    setattr(obj, attr, None)
            if hasattr(obj, "_match"):  # its bindings hold the matched graph's values
                obj._match = type(obj._match)()  # what the matcher starts each match with


# -- TF / Keras -> ONNX -----------------------------------------------------------------------


@contextlib.contextmanager
def _fresh_node_protos():
    """tf2onnx rewrites every node's NodeProto after each optimizer pass by deleting its attributes
    and adding them again. With protobuf's upb backend a deleted sub-message stays in its parent's
    arena until the parent is freed, so every pass kept one more copy of every weight: VGG16's
    0.55 GB of weights grew to 19 GB. A new NodeProto per rewrite lets the old arena go."""
    from onnx import NodeProto
    from tf2onnx.graph import Node

    original = Node.update_proto

    def update_proto(self, external_tensor_storage=None):
        old = self._op
        fresh = NodeProto(name=old.name, op_type=old.op_type, domain=old.domain, doc_string=old.doc_string)
        self._op = fresh
        return original(self, external_tensor_storage)

    Node.update_proto = update_proto
    try:
        yield
    finally:
        Node.update_proto = original


@contextlib.contextmanager
def _numpy_product():
    """tf2onnx 1.17 (the newest release) still calls np.product, which numpy 2 removed (np.prod is the same
    function): present while tf2onnx runs, gone afterwards."""
    import numpy as np

    added = not hasattr(np, "product")
    if added:
        np.product = np.prod
    try:
        yield
    finally:
        if added:
            del np.product


def _tf2onnx(fn, specs, path: Path, inputs_as_nchw=None) -> None:
    with captured_output("tf2onnx"), _numpy_product(), _fresh_node_protos():
        import tf2onnx

        # large_model: tf2onnx keeps the weights out of the graph protos it copies (TF's frozen graph,
        # grappler, one ONNX graph per optimizer pass); without it VGG16's 0.55 GB of weights peaked
        # at 20 GB. Its default also deep-copies the graph before each optimizer, to roll back a failure.
        model, storage = tf2onnx.convert.from_function(fn, input_signature=specs, opset=OPSET, inputs_as_nchw=inputs_as_nchw,
                                                       large_model=True)
        _inline_external_tensors(model, storage)
        del storage
        rewrite_tf_leftovers(model.graph)  # TF ops ONNX expresses exactly (Erfc of exact gelu, Log1p, ...)
        check_tf2onnx_output(model)  # TF ops it could not convert are named here, not by the next tool
        _freeze_captured_constants(model, fn.get_concrete_function(*specs), {s.name for s in specs})
        import onnx

        onnx.save(model, str(path))


def _inline_external_tensors(model, storage) -> None:
    """Move the tensors tf2onnx's large_model mode kept aside back into the model, one at a time."""
    from onnx import TensorProto

    data = storage.name_to_tensor_data if storage is not None else {}

    def inline(tensor):
        if tensor.data_location != TensorProto.EXTERNAL:
            return
        location = next(e.value for e in tensor.external_data if e.key == "location")
        tensor.raw_data = data.pop(location)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT

    for tensor in model.graph.initializer:
        inline(tensor)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                inline(attr.t)


def _freeze_captured_constants(model, concrete, wanted: set[str]) -> None:
    """tf2onnx freezes captured variables but turns captured eager tensors (e.g. the mean and
    variance of Keras 3's Normalization layer) into graph inputs: make them initializers, or
    drop them where tf2onnx already folded them into a constant and no node reads them."""
    from onnx import numpy_helper

    captured = {inner.name: outer for outer, inner in concrete.graph.captures}
    used = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}
    keep = []
    for value in model.graph.input:
        outer = captured.get(value.name)
        if value.name in wanted or outer is None or not hasattr(outer, "numpy"):
            keep.append(value)
        elif value.name in used:
            model.graph.initializer.append(numpy_helper.from_array(outer.numpy(), value.name))
    unknown = [v.name for v in keep if v.name not in wanted]
    if unknown:
        raise PorterError("tf2onnx left inputs that are not the model's", problems=unknown)
    del model.graph.input[:]
    model.graph.input.extend(keep)


def keras_io(model) -> tuple[list[str], list[str], dict]:
    """Stable names: the input layers' and the output layers' (``model.output_names``), and the input specs.
    (A loaded model's output tensors are named keras_tensor_<counter>, which changes from load to load.)"""
    from porter.keras_to_torch.graph import dict_of, keras_inputs

    inputs, tensors = keras_inputs(model)  # a model called on a dict (keras-hub's, porter's BERT): its keys
    by_key_out = dict_of(model, "output")
    outputs = [t.name.split(":")[0] for t in model.outputs]
    if by_key_out is not None:
        outputs = list(by_key_out)
    elif len(getattr(model, "output_names", None) or ()) == len(outputs):
        outputs = [str(n) for n in model.output_names]
    specs = {n: (getattr(t.dtype, "name", str(t.dtype)), tuple(t.shape)) for n, t in zip(inputs, tensors)}
    return inputs, outputs, specs


def keras_to_onnx(model, path: Path, nchw_inputs=()) -> OnnxExport:
    """A Keras 3 model through a tf.function whose named inputs and dict output keep the model's names."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    from porter.keras_to_torch.graph import dict_of

    inputs, outputs, specs = keras_io(model)
    by_key = dict_of(model, "input") is not None  # called on a dict: handed one, keyed as keras_io names them
    if len(set(outputs)) != len(outputs):
        raise PorterError("the Keras model has two outputs of the same name", problems=outputs)
    sig = [tf.TensorSpec(list(specs[n][1]), specs[n][0], name=n) for n in inputs]

    @tf.function(input_signature=sig)
    def serve(*args):
        given = dict(zip(inputs, args)) if by_key else list(args) if len(args) > 1 else args[0]
        out = model(given, training=False)
        if isinstance(out, dict):
            return {name: tf.identity(out[name], name=name) for name in outputs}
        out = out if isinstance(out, (list, tuple)) else [out]
        return {name: tf.identity(t, name=name) for name, t in zip(outputs, out)}

    _tf2onnx(serve, sig, path, inputs_as_nchw=list(nchw_inputs) or None)
    return OnnxExport(path, inputs, outputs, specs)


def saved_model_signature(path: Path, signature: str = "serving_default"):
    """(loaded object, the signature's concrete function); a missing signature is bad input."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise PorterError(f"{path} could not be loaded as a SavedModel: {type(exc).__name__}: {exc}") from None
    if signature not in loaded.signatures:
        raise PorterError(
            f"{path} has no {signature!r} signature (it has: {', '.join(loaded.signatures) or 'none'}): "
            "porter converts a SavedModel through its serving signature",
            hint="re-export it with tf.saved_model.save(obj, path, signatures={'serving_default': fn}) or Keras model.export(path)",
        )
    return loaded, loaded.signatures[signature]


def saved_model_to_onnx(path: Path, onnx_path: Path, nchw_inputs=(), signature: str = "serving_default") -> OnnxExport:
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    loaded, fn = saved_model_signature(path, signature)
    _, kwargs = fn.structured_input_signature
    inputs = list(kwargs)
    outputs = list(fn.structured_outputs)
    specs = {n: (s.dtype.name, tuple(s.shape.as_list())) for n, s in kwargs.items()}
    sig = [tf.TensorSpec(kwargs[n].shape, kwargs[n].dtype, name=n) for n in inputs]

    @tf.function(input_signature=sig)
    def serve(*args):
        out = fn(**dict(zip(inputs, args)))
        return {k: tf.identity(out[k], name=k) for k in outputs}

    serve._porter_keep = loaded  # the variables must outlive the trace
    _tf2onnx(serve, sig, onnx_path, inputs_as_nchw=list(nchw_inputs) or None)
    return OnnxExport(onnx_path, inputs, outputs, specs)

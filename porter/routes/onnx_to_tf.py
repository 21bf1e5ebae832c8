"""ONNX -> TF: onnx2tf writes the SavedModel (dims kept dynamic where it can, names restored, checked
against onnxruntime at other sizes, else retried with dims fixed and listed); --to tflite goes on from it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from porter.process import progress
from porter.errors import PorterError, UnsupportedModelError
from porter.routes.onnx_graph import (
    NCHW_TO_NHWC,
    NHWC_TO_NCHW,
    big_initializers,
    onnx_io,
    opset,
    save_with_weights,
    with_inferred_shapes,
    without_weights,
)
from porter.routes.onnx_mapped import graphsurgeon_reads, load_mapped
from porter.routes.to_onnx import captured_output


def check_onnx2tf_ops(model) -> None:
    """Every op onnx2tf has no converter for, with counts, at once (before the slow conversion)."""
    import onnx2tf.ops

    ops_dir = Path(onnx2tf.ops.__file__).parent
    known = {p.stem for p in ops_dir.glob("*.py")}
    missing = Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
        for n in model.graph.node
        if n.domain not in ("", "ai.onnx") or n.op_type not in known
    )
    if missing:
        listed = ", ".join(f"{op} x{count}" for op, count in sorted(missing.items()))
        raise UnsupportedModelError(f"ops not supported by onnx2tf (opset {opset(model)}): {listed}",
                                    hint="export the model with these ops decomposed")


# -- ONNX -> TF ---------------------------------------------------------------------------------


def import_onnx2tf() -> None:
    """TensorFlow (quietened by porter.process.frameworks first), then onnx2tf on top of it."""
    from porter.process.frameworks import tensorflow

    tensorflow()
    import onnx2tf  # noqa: F401


def onnx_to_saved_model(onnx_path: Path, folder: Path, *, layout: str = "keep", example: dict | None = None) -> dict:
    """onnx2tf into a temporary folder, then a SavedModel in ``folder`` whose serving_default takes
    and returns the ONNX graph's names. Dynamic dims are kept where onnx2tf can; else they are
    fixed at ``example``'s sizes and listed. ``layout``: "keep" (inputs as in ONNX) or "nhwc"
    (onnx2tf moves channels last). Returns {"static_dims": [...], "inputs": specs, "layout": ...}."""
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    model, arrays = load_mapped(onnx_path)  # the weights stay in their file, mapped (onnx_mapped)
    check_onnx2tf_ops(model)
    inputs, outputs, specs = onnx_io(model)
    # plain values, not the output protos: those would keep the whole loaded model (weights too) alive
    onnx_out_shapes = {o.name: [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
                       for o in model.graph.output}
    channel_inputs = [n for n in inputs if len(specs[n][1]) in (3, 4, 5)]
    keep = channel_inputs if layout == "keep" else []
    notes, static_dims = [], []
    from porter.routes.onnx_fix_shapes import dynamic_symbols

    symbols = dynamic_symbols(model, specs)
    dynamic = any(d is None for _, s in specs.values() for d in s)
    try:
        if not dynamic:
            del model, arrays
            keras_model = _onnx2tf(onnx_path, keep, None)
        else:
            handed = [(model, arrays)]  # handed over: the caller keeps no reference to the graph
            del model, arrays
            prepared, prep_notes = _prepared_for_dynamic_dims(onnx_path, specs, handed)
            notes += prep_notes
            keras_model = _checked_onnx2tf(prepared, onnx_path, specs, symbols, keep)
    except PorterError as first:
        if not dynamic:
            raise
        if example is None:
            from porter.verifiers.inputs import from_specs

            example = from_specs(specs).feeds[0]
        why = first.message.splitlines()[0]
        keras_model, notes = _batch_kept(onnx_path, specs, example, keep, why)
        if keras_model is None:
            overwrite = [f"{n}:{','.join(str(d) for d in np.shape(example[n]))}" for n in inputs]
            keras_model = _onnx2tf(onnx_path, keep, overwrite)
            # the rewrites' notes described the attempt that was given up
            notes = [f"onnx2tf could not keep dynamic dims ({why}); retried with them fixed"]
    if len(keras_model.inputs) != len(inputs) or len(keras_model.outputs) != len(outputs):
        raise PorterError(f"onnx2tf changed the number of inputs/outputs of {onnx_path}",
                          problems=[f"ONNX: {inputs} -> {outputs}", f"TF: {len(keras_model.inputs)} -> {len(keras_model.outputs)}"])
    sig, written = [], {}
    for name, tensor in zip(inputs, keras_model.inputs):
        onnx_shape, tf_shape = specs[name][1], list(tensor.shape)
        onnx_order = tf_shape if name in keep or len(tf_shape) not in NCHW_TO_NHWC else [tf_shape[i] for i in NHWC_TO_NCHW[len(tf_shape)]]
        for axis, (before, after) in enumerate(zip(onnx_shape, onnx_order)):
            if before is None and after is not None:
                static_dims.append({"input": name, "axis": axis, "size": int(after)})
        written[name] = (tensor.dtype.name, tuple(tf_shape))
        sig.append(tf.TensorSpec(tf_shape, tensor.dtype, name=name))
    transpose_out = {}
    for name, tensor in zip(outputs, keras_model.outputs):
        want, got = onnx_out_shapes[name], list(tensor.shape)
        rank = len(got)
        if layout == "keep" and rank in NHWC_TO_NCHW and _channels_last(want, got, NHWC_TO_NCHW[rank]):
            transpose_out[name] = NHWC_TO_NCHW[rank]

    module = tf.Module()
    # only the variables are tracked, not the Keras model: tracking it makes the SavedModel writer serialise
    # its config, where onnx2tf's op layers hold every weight as JSON lists (bert-base: > 9.5 GB, > 170 s)
    module.variables_of_model = list(keras_model.variables) + _weights_as_variables(keras_model)

    # no autograph (nothing here branches): it writes each converted function to a file in the temp dir,
    # removed only at a clean exit, so a killed run would leave it behind
    @tf.function(input_signature=sig, autograph=False)
    def serve(*args):
        out = keras_model(list(args) if len(args) > 1 else args[0])
        out = out if isinstance(out, (list, tuple)) else [out]
        return {n: tf.identity(tf.transpose(t, transpose_out[n]) if n in transpose_out else t, name=n) for n, t in zip(outputs, out)}

    module.serve = serve
    from porter.output.outdir import temp_files_marked
    from porter.output.saved_model_shards import save_options

    with captured_output("writing the SavedModel"), temp_files_marked("porter-onnx2tf-"):
        tf.saved_model.save(module, str(folder), signatures={"serving_default": serve}, options=save_options())
    return {"static_dims": static_dims, "inputs": written, "outputs": outputs, "notes": notes,
            "layout": {"inputs": {n: ("nhwc" if n in channel_inputs and n not in keep else "as_onnx") for n in inputs}}}


def _batch_kept(onnx_path: Path, specs: dict, example: dict, keep: list[str], why: str):
    """The middle way when onnx2tf cannot keep every dynamic dim: fix the others (sequence, image
    size) at ``example``'s sizes in the graph itself and try again with the batch dynamic, checked
    as the all-dynamic attempt is. (keras model, notes), or (None, []) when that fails too."""

    from porter.routes.onnx_fix_shapes import dynamic_symbols

    fixed = {n: {a: int(np.shape(example[n])[a]) for a, d in enumerate(shape) if d is None and a > 0}
             for n, (_, shape) in specs.items()}
    if not any(fixed.values()) or not any(shape and shape[0] is None for _, shape in specs.values()):
        return None, []
    model, arrays = load_mapped(onnx_path)
    for value in model.graph.input:
        for axis, size in fixed.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            dim.ClearField("dim_param")
            dim.dim_value = size
    path = onnx_path.with_name(onnx_path.stem + ".batch-only.onnx")
    # beside the same external data, which it names rather than copies (a weight held inline is written once)
    save_with_weights(without_weights(model), big_initializers(model), path)
    batch_specs = {n: (d, tuple(fixed[n].get(a, s) for a, s in enumerate(shape))) for n, (d, shape) in specs.items()}
    symbols = dynamic_symbols(model, batch_specs)
    handed = [(model, arrays)]  # prepared from this copy, not loaded again
    del model, arrays
    try:
        prepared, notes = _prepared_for_dynamic_dims(path, batch_specs, handed)
        keras_model = _checked_onnx2tf(prepared, path, batch_specs, symbols, keep)
    except PorterError:
        return None, []
    return keras_model, [f"onnx2tf could not keep every dynamic dim ({why}); kept the batch dynamic and fixed the others", *notes]


def _checked_onnx2tf(prepared: Path, onnx_path: Path, specs: dict, symbols, keep: list[str]):
    """onnx2tf with dims dynamic, held to onnxruntime at other sizes. First without onnx2tf's per-op
    layout search: for each MatMul/Add/Concat it rebuilds and runs the whole graph up to that op once per
    candidate transpose, which is quadratic in depth (bert-base: 70 s, 5.3 GB). That search only picks
    transposes; what proves the model is the check against onnxruntime below (and the verification after
    it), so a model the fast attempt gets wrong is converted again with the search, and checked the same."""
    try:
        keras_model = _onnx2tf(prepared, keep, None, simplify=False, op_search=False)
        with progress.step("checking onnx2tf's dynamic-dims model against onnxruntime at other sizes"):
            _agrees_at_other_sizes(keras_model, onnx_path, specs, symbols, keep)
        return keras_model
    except PorterError:
        keras_model = None  # released before the second attempt
    keras_model = _onnx2tf(prepared, keep, None, simplify=False, op_search=True)
    with progress.step("checking onnx2tf's dynamic-dims model against onnxruntime at other sizes"):
        _agrees_at_other_sizes(keras_model, onnx_path, specs, symbols, keep)
    return keras_model


def _channels_last(want, got, to_nchw) -> bool:
    """Whether onnx2tf's output is the ONNX output moved channels-last. With dynamic spatial dims
    both orders can fit ([?, 16, ?, ?] vs [?, ?, ?, 16]): then the order whose static dims sit where
    the ONNX graph has them wins."""
    moved = [got[i] for i in to_nchw]
    if not _same(want, moved):
        return False
    if not _same(want, got):
        return True
    return _pinned(want, moved) > _pinned(want, got)


def _pinned(a, b) -> int:
    return sum(1 for x, y in zip(a, b) if x is not None and x == y)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _agrees_at_other_sizes(keras_model, onnx_path: Path, specs: dict, symbols, keep: list[str]) -> None:
    """onnx2tf can build a model with dynamic dims that TF rejects when it runs (a reshape with two
    -1s) or that computes something else at sizes it did not trace (a transpose it mis-inferred):
    run it at two sizes per dynamic dim against onnxruntime, so that such a model is retried with
    the dims fixed. A coarse check for wrong structure; the verification that follows is the strict one."""
    from porter.routes.onnx_fix_shapes import probe_feeds
    from porter.routes.onnx_mapped import ort_session

    session = ort_session(*load_mapped(onnx_path))  # the weights mapped, not a copy beside the Keras model's
    for which in (0, 1):
        feeds = probe_feeds(specs, symbols, which)
        args = [np.transpose(feeds[n], NCHW_TO_NHWC[feeds[n].ndim]) if n not in keep and feeds[n].ndim in NCHW_TO_NHWC else feeds[n]
                for n in specs]
        try:
            want = session.run(None, feeds)
        except Exception:  # sizes the model itself cannot take (an image too small): nothing to judge by
            continue
        with captured_output("the onnx2tf model at other input sizes"):
            got = keras_model(args if len(args) > 1 else args[0])
        got = [np.asarray(t) for t in (got if isinstance(got, (list, tuple)) else [got])]
        for name, g, w in zip([o.name for o in session.get_outputs()], got, want):
            if g.shape != w.shape and g.ndim in NHWC_TO_NCHW and np.transpose(g, NHWC_TO_NCHW[g.ndim]).shape == w.shape:
                g = np.transpose(g, NHWC_TO_NCHW[g.ndim])
            size = ", ".join(f"{n} {feeds[n].shape}" for n in specs)
            if g.shape != w.shape:
                raise PorterError(f"the onnx2tf model gives {name} of shape {g.shape} where onnxruntime gives {w.shape} (inputs {size})")
            if w.size and np.abs(g.astype(np.float64) - w).max() > 1e-3 * max(1.0, float(np.abs(w).max())):
                raise PorterError(f"the onnx2tf model disagrees with onnxruntime on {name} at inputs {size}")


def _weights_as_variables(keras_model, min_elements: int = 1024) -> list:
    """onnx2tf passes most weights (every MatMul's) to its op layers as constant tensors, so the SavedModel
    writer put them into saved_model.pb as graph constants: bert-base wrote a 418 MB graph, serialising it
    took about 1.7 GB above the model, and past 2 GB a graph cannot be written at all (protobuf's limit).
    Each large floating-point constant an op layer is called with becomes a non-trainable variable here,
    which the writer stores under variables/ instead; small ones (shapes, axes, scalars) stay constants,
    since ops such as Reshape need them known when the graph is traced."""
    import tensorflow as tf

    made, seen = [], {}
    for nodes in keras_model._nodes_by_depth.values():  # tf_keras' functional graph: each node's call arguments
        for node in nodes:
            flat = getattr(node, "_flat_arguments", None)
            for i, value in enumerate(flat or ()):
                if isinstance(value, tf.Tensor) and not tf.is_symbolic_tensor(value) and value.dtype.is_floating \
                        and value.shape.num_elements() >= min_elements:
                    if id(value) not in seen:
                        seen[id(value)] = tf.Variable(value, trainable=False, name=f"weight_{len(made)}")
                        made.append(seen[id(value)])
                    flat[i] = seen[id(value)]
    return made


def _prepared_for_dynamic_dims(onnx_path: Path, specs: dict, handed: list | None = None) -> tuple[Path, list[str]]:
    """onnx-simplifier first (what onnx2tf would run itself; not on porter's own optimized torch exports),
    then porter's rewrites that keep dims dynamic (which the simplifier would partly undo, e.g. by fusing
    Unsqueezes again), then what onnx2tf's op-name pass would do (see _onnx2tf). Written to the file that
    onnx2tf reads. ``handed``: [``onnx_path`` already loaded by onnx_mapped.load_mapped: (graph, mappings)],
    emptied here. The file written beside ``onnx_path`` names the same external data: no copy of the weights."""
    import subprocess
    import sys

    from porter.routes.onnx_fix_shapes import prepared_without_weights

    notes = []
    model, arrays = handed.pop() if handed else load_mapped(onnx_path)
    if not _optimized_by_exporter(model):  # porter's own torch exports skip it: on bert-base onnx-simplifier took
        model = arrays = None               # 12-26 s and 3.5 GB in its own process and only removed Adds of zero
        simplified = onnx_path.with_name(onnx_path.stem + ".simplified.onnx")
        # in a subprocess, as onnx2tf runs it: the simplifier's C++ side can abort the process
        with progress.step(f"onnx-simplifier on {onnx_path.name}"):
            run = subprocess.run([sys.executable, "-m", "onnxsim", str(onnx_path), str(simplified)], capture_output=True, text=True)
        if run.returncode != 0 or not simplified.is_file():
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
            notes.append(f"onnx-simplifier failed on {onnx_path.name} ({tail[0]}); converted the graph unsimplified")
            simplified = onnx_path
        model, arrays = load_mapped(simplified)
    light, weights, more = prepared_without_weights(model, specs, arrays)
    notes += more
    path = onnx_path.with_name(onnx_path.stem + ".for-onnx2tf.onnx")
    save_with_weights(_named_and_typed(light), weights, path)
    del model, light, weights, arrays
    from porter.routes.to_onnx import return_freed_memory

    return_freed_memory()  # the heap the rewrites' graph copies held goes back before onnx2tf builds its graph
    return path, notes


def _named_and_typed(model):
    """What onnx2tf's op-name pass (sng4onnx) does, done here: every node named, shapes inferred. That pass
    loads the file twice more, round-trips the graph through graphsurgeon and shape inference and writes
    it back: on bert-base 10 of onnx2tf's 16 s and 3 GB of its 4.5 GB peak."""
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"sng_{node.op_type}_{index}"  # the names sng4onnx gives
    return with_inferred_shapes(model)


def _optimized_by_exporter(model) -> bool:
    """Whether porter exported this graph from torch with the exporter's optimizer on (to_onnx.OPTIMIZED_MARK)."""
    from porter.routes.to_onnx import OPTIMIZED_MARK

    return any(p.key == OPTIMIZED_MARK for p in model.metadata_props)


def _no_download_images():
    """onnx2tf fetches sample images from GitHub to check models whose inputs look like static NHWC
    images; porter never touches the network at run time, so it gets seeded random images of the
    same shape (its check only compares onnx2tf's own ops against onnxruntime on them)."""
    return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)


class _NoOpSearch(Exception):
    """Raised in place of onnx2tf's run of every intermediate tensor under onnxruntime: onnx2tf then skips
    its per-op layout search (it logs "optimization process for shape estimation is skipped")."""


def _no_op_search(**_):
    raise _NoOpSearch("porter: onnx2tf's per-op layout search is off for this attempt")


def _onnx2tf(onnx_path: Path, keep: list[str], overwrite: list[str] | None, simplify: bool = True, op_search: bool = True):
    import onnx2tf  # imports tensorflow: only after porter.process.frameworks has quietened it
    import onnx2tf.onnx2tf as onnx2tf_main
    from onnx2tf.utils.common_functions import dummy_onnx_inference

    from porter.output.outdir import temp_files_marked
    from porter.routes.to_onnx import return_freed_memory

    onnx2tf_main.download_test_image_data = _no_download_images
    onnx2tf_main.dummy_onnx_inference = dummy_onnx_inference if op_search else _no_op_search
    # a file porter prepared is handed over as a graph whose weights stay mapped from their file (onnx_mapped):
    # onnx2tf's own load held the weights three times. Its simplifier and its layout search (which runs the
    # graph under onnxruntime) need the file itself.
    graph, arrays = (None, {}) if simplify or op_search else load_mapped(onnx_path)
    source = {"onnx_graph": graph} if graph is not None else {"input_onnx_file_path": str(onnx_path)}
    del graph
    # its output folder and any temp file made meanwhile: marked, so a killed run's are swept by the next run
    try:
        with temp_files_marked("porter-onnx2tf-") as work, graphsurgeon_reads(arrays), \
                captured_output(f"onnx2tf on {onnx_path.name}" + ("" if op_search else " (per-op layout search off)")):
            return onnx2tf.convert(
                **source, output_folder_path=str(work), non_verbose=True,
                keep_ncw_or_nchw_or_ncdhw_input_names=keep or None, overwrite_input_shape=overwrite,
                disable_model_save=True, not_use_onnxsim=not simplify,
                # its grouped Conv2D layers hold variables that the SavedModel writer cannot track
                # ("Internal Tensor ... dtype=resource"): split + convolve + concat instead
                disable_group_convolution=True,
                # a file porter prepared is named and shape-inferred already (_named_and_typed)
                not_use_opname_auto_generate=not simplify,
            )
    finally:
        onnx2tf_main.dummy_onnx_inference = dummy_onnx_inference
        source.clear()
        arrays.clear()  # the mappings onnx2tf did not keep go; its graph (cycles) goes at the collection
        return_freed_memory()


def saved_model_to_tflite(saved_model: Path, path: Path) -> None:
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    with captured_output("the TFLite converter"):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        path.write_bytes(converter.convert())

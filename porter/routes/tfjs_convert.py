"""A SavedModel -> TF.js graph model, by tensorflowjs' own converter, in a child process of its own (run by path:
``python -P tfjs_convert.py SAVED_MODEL OUT_DIR``, with tensorflowjs' folder on PYTHONPATH; porter/routes/tfjs.py).

tensorflowjs 4.22 declares jax, flax, tf-keras and tensorflow-decision-forests as dependencies, which porter's pinned
set cannot hold; its SavedModel converter (``tensorflowjs.converters.tf_saved_model_conversion_v2``) needs none of
them at run time. Its package ``__init__`` files import them all, so this child registers the two packages by path
(their ``__init__`` not run) and stands in empty modules for ``tensorflow_decision_forests`` (imported only to
register TF-DF's ops) and ``tensorflow_hub`` (used only to convert TF-Hub modules). Nothing of porter is imported.

Exact GELU lowers to ``Erfc`` in TensorFlow (``tf.nn.gelu``), which TF.js has no kernel for; TF.js has ``Erf``.
Before tensorflowjs checks the frozen graph, each ``Erfc(x)`` becomes ``1 - Erf(x)`` (the form torch computes GELU
in), and the count is reported. Any other op TF.js lacks stops the conversion: the child reports the ops with counts.

Protocol: one JSON line on stdout (library output goes to stderr):
  {"ok": true, "tensorflowjs": version, "rewritten": {"Erfc": n}} | {"unsupported": {op: count}, "stage": ...}
  | {"error": "..."}
"""

import json
import os
import sys
import types


def _register_packages() -> str:
    """tensorflowjs and tensorflowjs.converters as bare packages (their __init__ imports jax and TF-DF)."""
    import importlib.util

    spec = importlib.util.find_spec("tensorflowjs")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflowjs is not on the path")
    root = list(spec.submodule_search_locations)[0]
    for name, path in (("tensorflowjs", root), ("tensorflowjs.converters", os.path.join(root, "converters"))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    for name in ("tensorflow_decision_forests", "tensorflow_hub"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    from tensorflowjs import version

    return version.version


def _erfc_to_erf(graph_def) -> int:
    """Each top-level Erfc(x) node becomes Sub(1, Erf(x)) in place; returns how many."""
    from tensorflow.core.framework import node_def_pb2
    import tensorflow as tf

    count = 0
    for node in list(graph_def.node):
        if node.op != "Erfc":
            continue
        dtype = node.attr["T"].type
        erf = node_def_pb2.NodeDef(name=node.name + "/porter_erf", op="Erf", input=list(node.input))
        erf.attr["T"].type = dtype
        one = node_def_pb2.NodeDef(name=node.name + "/porter_one", op="Const")
        one.attr["dtype"].type = dtype
        one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(1.0, tf.dtypes.as_dtype(dtype)))
        device = node.device
        node.op = "Sub"
        del node.input[:]
        node.input.extend([one.name, erf.name])
        for extra in (erf, one):
            extra.device = device
            graph_def.node.append(extra)
        count += 1
    return count


def _op_counts(graph_def, ops) -> dict:
    counts: dict = {}
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for node in nodes:
        if node.op in ops:
            counts[node.op] = counts.get(node.op, 0) + 1
    return dict(sorted(counts.items()))


class _Unsupported(Exception):
    def __init__(self, counts, stage):
        super().__init__(stage)
        self.counts, self.stage = counts, stage


def main(argv) -> int:
    reply = os.fdopen(os.dup(1), "w", buffering=1)  # line-buffered: every answer is out before os._exit
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    saved_model, out = argv[0], argv[1]
    try:
        version = _register_packages()
        from tensorflowjs.converters import tf_saved_model_conversion_v2 as conv
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names what to install
        reply.write(json.dumps({"import_error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 0
    rewritten = {}
    validate = conv.validate
    stages = iter(("before optimization", "after optimization"))

    def checked(graph_def, skip_op_check, strip_debug_ops):
        stage = next(stages, "after optimization")
        if stage == "before optimization":
            # the graph_def tensorflowjs checks here is the one its grappler pass optimizes next: rewritten in place
            n = _erfc_to_erf(graph_def)
            if n:
                rewritten["Erfc"] = n
        unsupported = validate(graph_def, skip_op_check, strip_debug_ops)
        if unsupported:
            raise _Unsupported(_op_counts(graph_def, set(unsupported)), stage)
        return unsupported

    conv.validate = checked
    try:
        conv.convert_tf_saved_model(saved_model, out, signature_def="serving_default", saved_model_tags="serve")
    except _Unsupported as exc:
        reply.write(json.dumps({"unsupported": exc.counts, "stage": exc.stage}) + "\n")
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        reply.write(json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}) + "\n")
        return 0
    reply.write(json.dumps({"ok": True, "tensorflowjs": version, "rewritten": rewritten}) + "\n")
    reply.flush()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)  # TensorFlow's teardown at exit takes seconds and has nothing left to do

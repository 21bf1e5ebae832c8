"""A .tflite run in a fresh process by LiteRT alone: this file imports the standard library, numpy and
ai_edge_litert, nothing of porter (run by path: ``python -P litert_child.py MODEL [--flex]``).

A process that imported TensorFlow links its Flex delegate, and a model with Select-TF ops would run there
though a LiteRT deployment cannot run it; so here TensorFlow must never be imported (checked at the end),
except with --flex, where the model holds Flex ops and TensorFlow's interpreter (its Flex delegate) runs it.

Protocol (one JSON object per line; the real stdout carries only these, library logs go to stderr):
  child -> parent at start: {"inputs": {name: {"dtype", "shape_signature"}}, "outputs": [...], "runtime": "..."}
  parent -> child: {"in": feeds.npz, "out": outputs.npz}; child -> parent: {"ok": true} or {"error": "..."}
  parent closes stdin; child -> parent: {"done": true, "tensorflow_imported": bool}; exit 3 if TF was imported
  (without --flex). Arrays travel as .npz files, read with allow_pickle=False on both sides.
"""

import json
import os
import sys


def _interpreter(flex: bool):
    if flex:  # TensorFlow's interpreter: its Flex delegate runs the Select-TF ops
        import tensorflow as tf

        return tf.lite.Interpreter, f"tf.lite.Interpreter (TensorFlow {tf.__version__}, Flex delegate)"
    import ai_edge_litert
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter, f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '?')} (LiteRT built-in ops only)"


def _run(interp, inputs, outputs, feed):
    missing, unknown = sorted(set(inputs) - set(feed)), sorted(set(feed) - set(inputs))
    if missing or unknown:
        raise ValueError(f"the feed does not match the signature's inputs {sorted(inputs)}: "
                         f"missing {missing}, unknown {unknown}")
    for name, value in feed.items():
        # strict: only dims the model's shape_signature holds as -1 may change size
        interp.resize_tensor_input(inputs[name]["index"], list(value.shape), strict=True)
    interp.allocate_tensors()
    for name, value in feed.items():
        interp.set_tensor(inputs[name]["index"], value.astype(inputs[name]["dtype"], copy=False))
    interp.invoke()
    return {name: interp.get_tensor(d["index"]).copy() for name, d in outputs.items()}


def main(argv) -> int:
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    flex = "--flex" in argv[1:]
    import numpy as np

    Interpreter, runtime = _interpreter(flex)
    interp = Interpreter(model_path=argv[0])
    signatures = interp.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    runner = interp.get_signature_runner(key)
    details, outputs = runner.get_input_details(), runner.get_output_details()
    del runner  # the interpreter's own calls from here: resize_tensor_input, allocate_tensors, invoke
    described = {"inputs": {n: {"dtype": np.dtype(d["dtype"]).name, "shape_signature": [int(s) for s in d["shape_signature"]]}
                            for n, d in details.items()},
                 "outputs": list(outputs), "runtime": runtime, "signature": key}
    reply.write(json.dumps(described) + "\n")
    reply.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            with np.load(request["in"], allow_pickle=False) as z:
                feed = {k: z[k] for k in z.files}
            np.savez(request["out"], **_run(interp, details, outputs, feed))
            answer = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()
    imported = "tensorflow" in sys.modules
    reply.write(json.dumps({"done": True, "tensorflow_imported": imported, "runtime": runtime}) + "\n")
    reply.flush()
    if not flex:
        assert not imported, "TensorFlow was imported in the LiteRT-only process"
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except AssertionError as exc:
        print(f"litert_child: {exc}", file=sys.stderr)
        sys.exit(3)

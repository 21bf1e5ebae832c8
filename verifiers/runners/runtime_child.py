"""An artifact loaded in a fresh process by the runtime that serves it, and nothing of porter: run by path
(``python -P runtime_child.py MODEL --runtime saved_model|keras``), importing the standard library, numpy and
that runtime only. What a deployment without porter sees:

  saved_model  TensorFlow alone (TF Serving's view): tf.saved_model.load, the serving_default signature.
  keras        keras + keras_hub alone: keras.saving.load_model(safe_mode=True). A file that names porter's own
               registered classes (``porter>BertModel``...) fails here; the child reports the names and the error.
  torch        torch (+ transformers for a Hugging Face folder) alone: ``from_pretrained`` of the class config.json
               names, or a porter-written model.py imported from its folder and its ``load()`` called, once its
               sha256 is the one the parent checked (``--sha256``).

Protocol: litert_child.py's (one JSON line each way, arrays in .npz files read with allow_pickle=False); at the end
{"done": true, "imported": [forbidden modules that were imported]}, exit 3 if any was (torch, porter, transformers,
keras_hub for saved_model; torch, porter, transformers for keras).
"""

import json
import os
import re
import sys
import zipfile

FORBIDDEN = {"saved_model": ("torch", "porter", "transformers", "keras_hub"),
             "keras": ("torch", "porter", "transformers"),
             "torch": ("tensorflow", "keras", "keras_hub", "porter", "onnxruntime", "tf2onnx")}


def _saved_model(path):
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    if "serving_default" not in loaded.signatures:
        raise KeyError(f"no serving_default signature (it has: {', '.join(loaded.signatures) or 'none'})")
    fn = loaded.signatures["serving_default"]
    _, specs = fn.structured_input_signature
    nonfinite = [v.name for v in getattr(fn, "variables", ()) if v.dtype.is_floating and not np.isfinite(v.numpy()).all()]
    described = {"inputs": {n: {"dtype": s.dtype.name, "shape_signature": [-1 if d is None else int(d) for d in s.shape.as_list()]}
                            for n, s in specs.items()},
                 "outputs": list(fn.structured_outputs), "runtime": f"TensorFlow {tf.__version__} alone",
                 "signature": "serving_default", "nonfinite_variables": nonfinite[:20]}

    def run(feed):
        args = {k: tf.constant(np.asarray(v).astype(specs[k].dtype.as_numpy_dtype)) for k, v in feed.items()}
        missing, unknown = sorted(set(specs) - set(args)), sorted(set(args) - set(specs))
        if missing or unknown:
            raise ValueError(f"the feed does not match serving_default's inputs {sorted(specs)}: missing {missing}, unknown {unknown}")
        return {k: v.numpy() for k, v in fn(**args).items()}

    return described, run, loaded


def _torch(path, sha256=None):
    """A Hugging Face folder through transformers, or porter's model.py + model.safetensors through torch alone."""
    import hashlib
    import importlib.util
    from pathlib import Path

    import numpy as np
    import torch

    folder = Path(path)
    code = folder / "model.py"
    if code.is_file():
        source = code.read_bytes()
        if sha256 is None or hashlib.sha256(source).hexdigest() != sha256:
            raise ValueError(f"{code} is not the model.py the parent checked (sha256 differs)")
        spec = importlib.util.spec_from_file_location("model", code)
        module = importlib.util.module_from_spec(spec)
        sys.modules["model"] = module  # dataclasses look their module up while it runs
        spec.loader.exec_module(module)
        model = module.load(str(folder))
        names = list(getattr(model, "onnx_input_names", [])), list(getattr(model, "onnx_output_names", []))
        runtime = f"torch {torch.__version__} alone (model.py)"

        def call(feed):
            args = [torch.as_tensor(np.ascontiguousarray(feed[n])) for n in names[0]]
            out = model(*args)
            return dict(zip(names[1], out if isinstance(out, (list, tuple)) else [out]))
    else:
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        arch = (getattr(config, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch) if arch and hasattr(transformers, arch) else transformers.AutoModel
        model = cls.from_pretrained(str(folder), local_files_only=True).eval()
        import inspect

        no_cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
        names = [], []
        runtime = f"torch {torch.__version__} + transformers {transformers.__version__} alone ({cls.__name__})"

        def call(feed):
            args = {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in feed.items()}
            out = model(**args, return_dict=True, **no_cache)
            return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
    model.eval()
    described = {"inputs": {n: {"dtype": "?", "shape_signature": []} for n in names[0]}, "outputs": names[1],
                 "runtime": runtime, "class": f"{type(model).__module__}.{type(model).__name__}"}

    def run(feed):
        with torch.no_grad():
            out = call(feed)
        return {k: _torch_array(v) for k, v in out.items()}

    return described, run, model


def _torch_array(t):
    """A torch tensor as numpy; bfloat16 as ml_dtypes' (the parent reads it back as such)."""
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        import ml_dtypes

        return t.float().numpy().astype(ml_dtypes.bfloat16)
    return t.numpy()


def porter_classes(path) -> list:
    """The porter> classes a .keras file names (its config.json; nothing loaded). runtime_isolated imports this
    too: this module imports only the standard library at its top."""
    try:
        with zipfile.ZipFile(path) as z:
            text = z.read("config.json").decode(errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return []
    return sorted(set(re.findall(r'"(porter>[A-Za-z0-9_]+)"', text)))


def _keras(path):
    import numpy as np
    import keras

    try:
        import keras_hub  # noqa: F401 - registers keras-hub's classes (keras_hub>...)
        hub = f", keras_hub {keras_hub.__version__}"
    except ImportError:
        hub = " (keras_hub not installed)"
    runtime = f"keras {keras.__version__}{hub} alone"
    needs = porter_classes(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - the finding itself: reported, not raised
        return {"loaded": False, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400]}",
                "porter_classes": needs, "runtime": runtime, "inputs": {}, "outputs": []}, None, None
    inputs = model.input if isinstance(model.input, dict) else {t.name: t for t in model.inputs}
    described = {"loaded": True, "class": f"{type(model).__module__}.{type(model).__name__}", "porter_classes": needs,
                 "runtime": runtime, "outputs": [],
                 "inputs": {n: {"dtype": str(getattr(t.dtype, "name", t.dtype)),
                                "shape_signature": [-1 if d is None else int(d) for d in t.shape]} for n, t in inputs.items()}}

    def run(feed):
        args = {k: np.asarray(v) for k, v in feed.items()}
        out = model(args if len(args) > 1 or isinstance(model.input, dict) else next(iter(args.values())), training=False)
        out = out if isinstance(out, dict) else {"output": out}
        return {k: np.asarray(v) for k, v in out.items()}

    return described, run, model


def _portable(arrays: dict) -> dict:
    """bfloat16 (ml_dtypes) has no .npy type: np.save writes it as raw 2-byte voids. Sent as its uint16 bits under
    a "bfloat16::" key; the parent (litert_isolated.read_npz) views them back."""
    return {(f"bfloat16::{k}" if v.dtype.name == "bfloat16" else k): (v.view("uint16") if v.dtype.name == "bfloat16" else v)
            for k, v in arrays.items()}


def _import_runtime(runtime: str) -> None:
    if runtime == "torch":
        import torch  # noqa: F401
    else:
        import tensorflow  # noqa: F401
        if runtime == "keras":
            import keras  # noqa: F401

            try:
                import keras_hub  # noqa: F401
            except ImportError:
                pass


def main(argv) -> int:
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    runtime = argv[argv.index("--runtime") + 1]
    import numpy as np

    if "--ahead" in argv:  # started ahead (runtime_isolated.start_ahead): the runtime's import now, the model on "go"
        _import_runtime(runtime)
        if sys.stdin.readline().strip() != "go":
            os._exit(0)

    try:
        if runtime == "torch":
            sha = argv[argv.index("--sha256") + 1] if "--sha256" in argv else None
            described, run, _keep = _torch(argv[0], sha)
        else:
            described, run, _keep = (_saved_model if runtime == "saved_model" else _keras)(argv[0])
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        described, run = {"load_error": f"{type(exc).__name__}: {str(exc).strip()[:600]}", "inputs": {}, "outputs": [],
                          "runtime": runtime}, None
    reply.write(json.dumps(described) + "\n")
    reply.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            if run is None:
                raise RuntimeError("the model did not load")
            with np.load(request["in"], allow_pickle=False) as z:
                feed = {k: z[k] for k in z.files}
            np.savez(request["out"], **_portable(run(feed)))
            answer = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()
    imported = [m for m in FORBIDDEN[runtime] if m in sys.modules]
    reply.write(json.dumps({"done": True, "imported": imported, "runtime": described.get("runtime")}) + "\n")
    reply.flush()
    sys.stderr.flush()
    os._exit(3 if imported else 0)  # TensorFlow's own teardown at exit takes seconds and has nothing left to do


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

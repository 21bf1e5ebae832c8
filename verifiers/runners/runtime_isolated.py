"""Artifacts loaded by the runtime that serves them, in a fresh child process (runtime_child.py) that never imports
porter, torch or transformers: a SavedModel by TensorFlow alone, a model.keras by keras + keras_hub alone. Same
process and protocol as the LiteRT-only child (litert_isolated.LiteRTProcess); this process may have imported
anything, the child's own check says what it imported (exit 3 if a forbidden module was)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.verifiers.runners.litert_isolated import IsolatedTFLiteRunner, LiteRTProcess

CHILD = Path(__file__).with_name("runtime_child.py")
LABELS = {"saved_model": "TensorFlow-only", "keras": "keras-only", "torch": "torch-only"}


class RuntimeProcess(LiteRTProcess):
    """One child for one artifact: ``runtime`` "saved_model" or "keras"."""

    child = CHILD

    _ahead: dict = {}  # children started ahead of their runner (start_ahead), by (path, runtime): not yet read

    def __init__(self, model_path, runtime: str, sha256: str | None = None):
        self._named(model_path, runtime, sha256)
        ahead = RuntimeProcess._ahead.pop(self._key(), None)
        if ahead is not None and ahead._proc.poll() is None:  # its runtime imported while porter did other work
            self._dir, self._stderr, self._proc, self._count = ahead._dir, ahead._stderr, ahead._proc, 0
            self._proc.stdin.write("go\n")  # now it loads the model
            self._proc.stdin.flush()
        else:
            self._spawn()
        self._ready()

    def _named(self, model_path, runtime: str, sha256: str | None = None, ahead: bool = False) -> None:
        self.kind, self.label, self.sha256, self.ahead = runtime, LABELS[runtime], sha256, ahead
        self.path, self.flex = Path(model_path), False

    def _key(self) -> tuple:
        return str(self.path.resolve()), self.kind, self.sha256

    @classmethod
    def start_ahead(cls, model_path, runtime: str) -> None:
        """Start the child for ``model_path`` now, importing its runtime only; the next RuntimeProcess for it takes
        it over and tells it to load the model (so the import, seconds, overlaps porter's own work, and the model's
        memory is held no earlier than before)."""
        child = cls.__new__(cls)
        child._named(model_path, runtime, ahead=True)
        child._spawn()
        cls._ahead[child._key()] = child

    @classmethod
    def drop_ahead(cls) -> None:
        """Stop every child started ahead that no runner took (verification failed or stopped early)."""
        while cls._ahead:
            _, child = cls._ahead.popitem()
            child._proc.kill()
            child._proc.wait()
            child._stderr.close()
            child._dir.cleanup()

    def _argv(self) -> list[str]:
        return [str(self.path.resolve()), "--runtime", self.kind, *(["--sha256", self.sha256] if self.sha256 else []),
                *(["--ahead"] if self.ahead else [])]

    def close(self) -> dict:
        final = super().close()
        if final.get("imported"):  # exit 3 raised above already; kept for a child that exited 0 regardless
            raise PorterError(f"the {self.label} process imported {', '.join(final['imported'])}")
        return final


class IsolatedSavedModelRunner(IsolatedTFLiteRunner):
    """A SavedModel's serving_default run by TensorFlow alone in a fresh process (options: isolated=True); feeds and
    teardown as the LiteRT-only runner's."""

    framework = "tf"

    def activate(self):
        if self.device.startswith("cuda"):
            raise PorterError("the TensorFlow-only process runs on the CPU", hint="use --device cpu")
        self.child = RuntimeProcess(self.artifact.path, "saved_model")
        described = self.child.described
        if "load_error" in described:
            error = described["load_error"]
            self.deactivate()
            import re

            ops = sorted(set(re.findall(r"Op type not registered '(\w+)'", error)))
            raise PorterError(f"TensorFlow alone could not load {self.artifact.path}: {error[:400]}",
                              hint=(f"its signature needs op(s) {', '.join(ops)} from a library plain TensorFlow does not "
                                    "load (tensorflow_text, a custom op .so): a server without that library cannot run it; "
                                    "PORTER_FRESH_PROCESS=0 verifies it in porter's process instead") if ops else None)
        bad = described.get("nonfinite_variables") or []
        if bad and not self.options.get("allow_nonfinite"):
            self.deactivate()
            raise PorterError(f"{self.artifact.path} holds NaN/Inf in its weights: {', '.join(bad)}",
                              hint="repair the weights, or pass --allow-nonfinite")
        inputs = described["inputs"]
        self.input_names = list(inputs)
        self.output_names = list(described["outputs"])
        self.input_specs = {n: (d["dtype"], tuple(s if s >= 0 else None for s in d["shape_signature"]))
                            for n, d in inputs.items()}
        self.runtime = self.child.runtime


class IsolatedKerasRunner(IsolatedTFLiteRunner):
    """A zoo model's model.keras run by keras + keras_hub alone in a fresh process (options: isolated=True). The
    transformers config porter wrote (beside it, or inside the archive) gives the zoo entry's calling convention
    (``keras_file_feed`` / ``keras_file_outputs``: names, layouts, dtypes), applied here, so the child runs the file
    as any keras user would: load_model, then call."""

    framework = "tf"

    def activate(self):
        from porter import zoo

        if self.device.startswith("cuda"):
            raise PorterError("the keras-only process runs on the CPU", hint="use --device cpu")
        config = _config_of_keras_file(self.artifact.path)
        self.entry = zoo.for_config(config, str(self.artifact.path))
        self.config = self.entry.impl.full_config(config)
        self.child = RuntimeProcess(self.artifact.path, "keras")
        described = self.child.described
        if not described.get("loaded"):
            self.deactivate()
            needs = described.get("porter_classes") or []
            raise PorterError(f"keras + keras_hub alone could not load {self.artifact.path}: "
                              f"{described.get('error') or described.get('load_error')}",
                              hint=f"it names porter's own classes ({', '.join(needs)})" if needs else None)
        self.input_names = list(self.entry.inputs)
        impl = self.entry.impl
        self.output_names = impl.output_names(self.config) if hasattr(impl, "output_names") else list(self.entry.outputs)
        self.input_specs = {n: ("int32", (None, None)) for n in self.entry.inputs}
        self.runtime = described.get("runtime")

    def infer(self, feeds):
        impl = self.entry.impl
        out = self.child.run(impl.keras_file_feed(self.config, feeds))
        return impl.keras_file_outputs(self.config, self.child.described, out)


class IsolatedTorchRunner(IsolatedTFLiteRunner):
    """A torch folder porter wrote, run by torch alone in a fresh process (options: isolated=True): a Hugging Face
    folder by transformers' ``from_pretrained`` of the class its config.json names, a model.py folder by importing
    model.py (the bytes porter checked against its recorded sha256, checked again in the child) and calling its
    ``load()``. Neither TensorFlow, keras nor porter is imported there (checked)."""

    framework = "torch"

    def activate(self):
        import hashlib

        if self.device.startswith("cuda"):
            raise PorterError("the torch-only process runs on the CPU", hint="use --device cpu")
        folder, fmt = self.artifact.path, self.artifact.format
        sha = None
        if fmt == "torch_py":
            from porter.readers.model_code import verified_model_code

            sha = hashlib.sha256(verified_model_code(folder, trust=bool(self.options.get("trust_model_code")))).hexdigest()
        else:
            from porter import zoo

            entry = zoo.for_config(self.artifact.config or {}, f"{folder}/config.json")
        self.child = RuntimeProcess(folder, "torch", sha256=sha)
        described = self.child.described
        if "load_error" in described:
            self.deactivate()
            raise PorterError(f"torch alone could not load {folder}: {described['load_error'][:500]}")
        if fmt == "torch_py":
            from porter.checks.model_files import read_json_if_present

            self.input_names, self.output_names = list(described["inputs"]), list(described["outputs"])
            written = read_json_if_present(folder / "porter_report.json", folder) or {}
            self.input_specs = {k: (v["dtype"], tuple(v["shape"])) for k, v in written.get("inputs", {}).items()}
            self.layout = written.get("layout", {}).get("candidate", self.layout)
        else:
            outputs = getattr(entry.impl, "output_names", None)
            self.input_names = list(entry.inputs)
            self.output_names = list(outputs(self.artifact.config) if outputs else entry.outputs)
            self.input_specs = {n: ("int64", (None, None)) for n in entry.inputs}
        self.hf = fmt != "torch_py"
        self.runtime = described.get("runtime")

    def infer(self, feeds):
        if self.hf:  # token ids as int64 (transformers' own), an image family's pixel_values as float32
            args = {k: np.asarray(v, dtype=np.float32 if k == "pixel_values" else np.int64) for k, v in feeds.items()}
        else:
            args = {k: np.asarray(feeds[k]) for k in self.input_names}
        out = self.child.run(args)
        return {k: out[k] for k in self.output_names if k in out}


def fresh_candidate_options(artifact, latency: bool = False, device: str = "cpu") -> dict | None:
    """{"isolated": True} where porter runs ``artifact``'s format by its own runtime alone in a fresh process (a
    .tflite by LiteRT, a SavedModel by TensorFlow, a zoo model's model.keras by keras + keras_hub, a zoo Hugging Face
    folder or a porter-written model.py by torch), else None: in porter's own process, where TensorFlow's Flex
    delegate, porter's registered classes or its imports could hide what the serving runtime lacks."""
    if fresh_process_options(latency) is None or device != "cpu":
        return None
    fmt = artifact.format
    if fmt in ("tflite", "saved_model", "torch_py"):
        return {"isolated": True}
    if fmt == "hf":  # a folder the zoo's entry names the inputs and outputs of (not a variant it refuses: a head)
        from porter import zoo

        if (artifact.config or {}).get("model_type") not in zoo.ENTRIES:
            return None
        try:
            zoo.for_config(artifact.config, f"{artifact.path}/config.json")
        except PorterError:
            return None  # run by transformers in this process, as HFTorchRunner runs a variant outside the zoo
        return {"isolated": True}
    if fmt == "keras" and not keras_needs_porter(artifact.path):
        from porter import zoo

        from porter.zoo import keras_file

        written = (Path(artifact.path).parent / "porter_report.json").is_file()  # porter's output folder
        config = keras_file.read_config(artifact.path) or (keras_file.config_beside(artifact.path) if written else None)
        # a user's own Keras model stays in this process (the keras layers writer reads it there)
        return {"isolated": True} if config and config.get("model_type") in zoo.ENTRIES else None
    return None


def start_children_ahead(folder) -> None:
    """The TensorFlow-only child for the SavedModel in ``folder`` and, where model.keras loads without porter, the
    keras-only one, started now (RuntimeProcess.start_ahead); RuntimeProcess.drop_ahead stops any left untaken."""
    RuntimeProcess.start_ahead(folder, "saved_model")
    keras_file = Path(folder) / "model.keras"
    if keras_file.is_file() and not keras_needs_porter(keras_file):
        RuntimeProcess.start_ahead(keras_file, "keras")


def torch_fresh_report(isolated, verified: bool = True) -> dict:
    return {"torch": "not verified (--no-verify)" if not verified else
            "verified by torch alone in a fresh process (TensorFlow, keras, keras_hub and porter never imported there; "
            "transformers' from_pretrained for a Hugging Face folder, model.py's load() otherwise)" if isolated else
            "verified in porter's own process (--latency, or PORTER_FRESH_PROCESS=0)"}


def _config_of_keras_file(path) -> dict:
    """The transformers config porter wrote for a model.keras: config.json beside it, else the one inside it."""
    from porter.zoo import keras_file

    config = keras_file.config_beside(path) or keras_file.read_config(path)
    if config is None:
        raise PorterError(f"{path}: no transformers config.json beside it to say which zoo model it holds",
                          hint="verify the folder porter wrote, with its config.json")
    return config


def keras_alone(path) -> dict:
    """Whether ``path`` (a .keras file) loads with keras + keras_hub alone, in a fresh process:
    {"loads_without_porter", "porter_classes", "class" or "error", "runtime"}."""
    child = RuntimeProcess(path, "keras")
    try:
        described = dict(child.described)
    finally:
        child.close()
    found = {"loads_without_porter": bool(described.get("loaded")), "porter_classes": described.get("porter_classes", []),
             "runtime": described.get("runtime")}
    found.update({k: described[k] for k in ("class", "error", "load_error") if k in described})
    return found


def fresh_process() -> bool:
    """Whether `porter convert --to tf` verifies the SavedModel in the TensorFlow-only child (default) rather than
    in porter's own process: PORTER_FRESH_PROCESS=0 turns it off (it costs the child's TensorFlow import)."""
    import os

    return os.environ.get("PORTER_FRESH_PROCESS", "1") != "0"


def fresh_process_options(latency: bool = False) -> dict | None:
    """The candidate options that run a written artifact (a SavedModel, a model.keras, a torch folder) by its own
    runtime alone in a fresh child, or None (in porter's own process): --latency times the model in this process,
    and PORTER_FRESH_PROCESS=0 asks for it."""
    return {"isolated": True} if fresh_process() and not latency else None


def keras_needs_porter(path) -> list[str]:
    """The porter> classes a .keras file names (read from its config.json, nothing loaded): where any is named,
    keras.saving.load_model needs porter's Keras code imported (the child in keras_alone() shows the failure)."""
    from porter.verifiers.runners.runtime_child import porter_classes

    return porter_classes(path)


def fresh_report(folder, isolated, verified: bool = True) -> dict:
    """report["fresh_process"]: where the SavedModel was verified, and whether model.keras loads without porter."""
    found = {"saved_model": "not verified (--no-verify)" if not verified else
                            "serving_default verified by TensorFlow alone in a fresh process (torch, porter, transformers "
                            "and keras_hub never imported there)" if isolated else
                            "serving_default verified in porter's own process (--latency, or PORTER_FRESH_PROCESS=0)"}
    keras_file = Path(folder) / "model.keras"
    if keras_file.is_file():
        needs = keras_needs_porter(keras_file)
        found["model.keras"] = ({"loads_without_porter": False, "porter_classes": needs,
                                 "note": f"names porter's own Keras classes ({', '.join(needs)}): keras.saving.load_model "
                                         "needs porter installed and its zoo imported (porter.zoo...), or porter "
                                         "convert --to torch"} if needs else
                                {"loads_without_porter": True, "porter_classes": [],
                                 "note": "keras' and keras-hub's own classes only: loads with keras + keras_hub"})
    return found

"""A .tflite flatbuffer, run by ai-edge-litert's interpreter (tf.lite's where it is missing)."""

from __future__ import annotations

import numpy as np

from porter.errors import PorterError
from porter.verifiers.runners.base import Runner


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from porter.process.frameworks import tensorflow

        Interpreter = tensorflow().lite.Interpreter
    return Interpreter


class TFLiteRunner(Runner):
    framework = "tflite"

    def activate(self):
        if self.device.startswith("cuda"):
            raise PorterError("TFLite runs on the CPU here", hint="use --device cpu for .tflite files")
        try:
            self.interpreter = _interpreter_class()(model_path=str(self.artifact.path))
        except Exception as exc:
            raise PorterError(f"{self.artifact.path} is not a loadable TFLite model: {exc}") from None
        signatures = self.interpreter.get_signature_list()
        self.signature = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
        if self.signature is not None:
            self.runner = self.interpreter.get_signature_runner(self.signature)
            details = self.runner.get_input_details()
            self.input_names = list(details)
            self.output_names = list(self.runner.get_output_details())
            self.input_specs = {n: (np.dtype(d["dtype"]).name, tuple(int(s) if s >= 0 else None for s in d["shape_signature"]))
                                for n, d in details.items()}
        else:
            self.interpreter.allocate_tensors()
            self.runner = None
            self.input_names = [d["name"] for d in self.interpreter.get_input_details()]
            self.output_names = [d["name"] for d in self.interpreter.get_output_details()]

    def infer(self, feeds):
        if self.runner is not None:
            specs = self.input_specs
            out = self.runner(**{k: np.asarray(v).astype(specs[k][0]) for k, v in feeds.items() if k in specs})
            return {k: np.asarray(v) for k, v in out.items()}
        interp = self.interpreter
        for d in interp.get_input_details():
            value = np.asarray(feeds[d["name"]]).astype(d["dtype"])
            if tuple(d["shape"]) != value.shape:
                interp.resize_tensor_input(d["index"], value.shape)
                interp.allocate_tensors()
            interp.set_tensor(d["index"], value)
        interp.invoke()
        return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}

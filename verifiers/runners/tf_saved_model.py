"""A SavedModel, run through one of its signatures (serving_default unless told)."""

from __future__ import annotations

import numpy as np

from porter.errors import PorterError
from porter.verifiers.runners.base import Runner


class SavedModelRunner(Runner):
    framework = "tf"

    def activate(self):
        from porter.frameworks import tensorflow

        self.tf = tf = tensorflow()
        signature = self.options.get("signature", "serving_default")
        with tf.device(_tf_device(self.device)):
            self.loaded = tf.saved_model.load(str(self.artifact.path))
        if signature not in self.loaded.signatures:
            raise PorterError(
                f"{self.artifact.path} has no {signature!r} signature (it has: {', '.join(self.loaded.signatures) or 'none'})",
                hint="re-export the SavedModel with a serving signature",
            )
        self.fn = self.loaded.signatures[signature]
        _, kwargs = self.fn.structured_input_signature
        self.specs = kwargs
        self.input_names = list(kwargs)
        self.input_specs = {n: (s.dtype.name, tuple(s.shape.as_list())) for n, s in kwargs.items()}
        self.output_names = list(self.fn.structured_outputs)

    def infer(self, feeds):
        tf = self.tf
        args = {k: tf.constant(np.asarray(v).astype(self.specs[k].dtype.as_numpy_dtype)) for k, v in feeds.items() if k in self.specs}
        with tf.device(_tf_device(self.device)):
            out = self.fn(**args)
        return {k: v.numpy() for k, v in out.items()}


def _tf_device(device: str) -> str:
    return "/GPU:0" if device.startswith("cuda") else "/CPU:0"

"""A SavedModel, run through one of its signatures (serving_default unless told)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.verifiers.runners.base import Runner


class SavedModelRunner(Runner):
    framework = "tf"

    def activate(self):
        from porter.process.frameworks import tensorflow

        self.tf = tf = tensorflow()
        signature = self.options.get("signature", "serving_default")
        from porter.verifiers.runners.tf_device import tf_device

        self.tf_device = tf_device(tf, self.device)  # a GPU TensorFlow does not see is refused, not run on the CPU
        self.loaded = load_saved_model(tf, self.artifact.path, self.tf_device)
        if signature not in self.loaded.signatures:
            raise PorterError(
                f"{self.artifact.path} has no {signature!r} signature (it has: {', '.join(self.loaded.signatures) or 'none'})",
                hint="re-export the SavedModel with a serving signature",
            )
        self.fn = self.loaded.signatures[signature]
        from porter.checks.numerics import scan_arrays

        # its variables are in memory now: a scan for NaN/Inf costs one pass over them
        scan_arrays(((v.name, v.numpy()) for v in getattr(self.fn, "variables", ())), str(self.artifact.path),
                    self.options.get("allow_nonfinite", False))
        _, kwargs = self.fn.structured_input_signature
        self.specs = kwargs
        self.input_names = list(kwargs)
        self.input_specs = {n: (s.dtype.name, tuple(s.shape.as_list())) for n, s in kwargs.items()}
        self.output_names = list(self.fn.structured_outputs)
        from porter.readers.keras2_saved_model import embedding_bounds, is_keras2_saved_model

        if is_keras2_saved_model(self.artifact.path):  # tf_keras' model.save(dir): ids inside its Embedding tables
            bounds = embedding_bounds(self.artifact.path)
            self.index_bounds = {n: b for n, b in bounds.items() if n in self.input_names}

    def infer(self, feeds):
        tf = self.tf
        args = {k: tf.constant(np.asarray(v).astype(self.specs[k].dtype.as_numpy_dtype)) for k, v in feeds.items() if k in self.specs}
        with tf.device(self.tf_device):
            out = self.fn(**args)
        from porter.verifiers.runners.tf_device import placed

        self.placed = placed(out.values())
        return {k: v.numpy() for k, v in out.items()}


def load_saved_model(tf, path, device: str):
    """tf.saved_model.load, its failures on a broken folder (no variables/, a damaged saved_model.pb) as bad input."""
    path = Path(path)
    try:
        with tf.device(device):
            return tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TF raises OSError, FileNotFoundError, ValueError or its own errors here
        if not (path / "variables").is_dir():
            raise PorterError(f"{path} is a SavedModel without its variables/ folder (its weights live there)",
                              hint="copy the whole SavedModel folder, variables/ included") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PorterError(f"{path} could not be loaded as a SavedModel: {type(exc).__name__}: {first[:300]}") from None


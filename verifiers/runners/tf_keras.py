"""A Keras model: a .keras file (safe_mode), an .h5 file, a legacy tf_model.h5 folder, or a model in memory."""

from __future__ import annotations

import numpy as np

from porter.verifiers.runners.base import Runner


class KerasRunner(Runner):
    framework = "tf"

    def activate(self):
        from porter.routes.tf_weights import load_keras_artifact

        self.model, config = load_keras_artifact(self.artifact)
        if config is not None:  # a zoo model: named dict inputs and outputs
            from porter import zoo

            entry = zoo.for_config(config)
            self.input_names, self.output_names = list(entry.inputs), list(entry.outputs)
        else:
            self.input_names = [t.name.split(":")[0] for t in self.model.inputs]
            self.output_names = [t.name.split(":")[0] for t in self.model.outputs]
        self.zoo_model = config is not None

    def infer(self, feeds):
        if self.zoo_model:
            out = self.model({k: np.asarray(v, dtype=np.int32) for k, v in feeds.items()})
        else:
            args = [feeds[n] for n in self.input_names]
            out = self.model(args if len(args) > 1 else args[0])
            out = dict(zip(self.output_names, out if isinstance(out, (list, tuple)) else [out]))
        return {k: np.asarray(v) for k, v in out.items()}

"""A Keras model: a .keras file (safe_mode), an .h5 file, a legacy tf_model.h5 folder, or a model in memory."""

from __future__ import annotations

import numpy as np

from porter.verifiers.runners.base import Runner


class KerasRunner(Runner):
    framework = "tf"

    def activate(self):
        from porter.checks.declared_sizes import check_artifact
        from porter.routes.tf_weights import load_keras_artifact

        check_artifact(self.artifact)  # a tf_model.h5 folder's config.json against the h5's shapes, before a build
        from porter.process.frameworks import tensorflow
        from porter.verifiers.runners.tf_device import tf_device

        self.tf = tensorflow()
        self.tf_device = tf_device(self.tf, self.device)  # a GPU TensorFlow does not see is refused

        from porter.routes.tf_weights import scan_keras_weights

        self.model, config = load_keras_artifact(self.artifact)
        scan_keras_weights(self.model, self.artifact.path, self.options.get("allow_nonfinite", False))
        if config is not None:  # a zoo model: named dict inputs and outputs
            from porter import zoo

            entry = zoo.for_config(config)
            self.input_names, self.output_names = list(entry.inputs), list(entry.outputs)
            # a keras-hub family: its own input names (token_ids...) and the outputs of its head
            self.keras_call = getattr(entry.impl, "keras_call", None)
            if hasattr(entry.impl, "output_names"):
                self.output_names = entry.impl.output_names(config)
            self.input_specs = {n: ("int32", (None, None)) for n in entry.inputs}
        else:
            # a model called on a dict and returning one (keras-hub's style): its keys, as the ONNX export names them
            from porter.keras_to_torch.graph import dict_of, keras_inputs, keras_output_names

            self.by_key = dict_of(self.model, "input") is not None
            self.input_names, tensors = keras_inputs(self.model)
            # a dict's keys; else one layer's two outputs (Bidirectional) are 'bi', 'bi_1'
            self.output_names = keras_output_names(self.model)
            self.input_specs = {n: (_dtype_name(t.dtype), tuple(t.shape)) for n, t in zip(self.input_names, tensors)}
            # model.inputs is a dict flattened (its keys sorted): each tensor under its own name
            name_of = {id(t): n for n, t in zip(self.input_names, tensors)}
            self.index_bounds = _embedding_bounds(self.model, [name_of[id(t)] for t in self.model.inputs])
        self.zoo_model = config is not None
        self.keras_call = getattr(self, "keras_call", None)

    def infer(self, feeds):
        from porter.verifiers.runners.tf_device import placed

        with self.tf.device(self.tf_device):
            out = self._call(feeds)
        self.placed = placed(out.values())
        return {k: np.asarray(v) for k, v in out.items()}

    def _call(self, feeds) -> dict:
        if self.zoo_model and self.keras_call is not None:
            out = self.keras_call(self.model, feeds)
        elif self.zoo_model:
            out = self.model({k: np.asarray(v, dtype=np.int32) for k, v in feeds.items()})
        else:
            args = [np.asarray(feeds[n], dtype=self.input_specs[n][0]) for n in self.input_names]
            given = dict(zip(self.input_names, args)) if self.by_key else args if len(args) > 1 else args[0]
            # training=False said explicitly: Keras 3 takes an unset flag from the call context, and a layer whose
            # call defaults to training=True (CenterCrop, Resizing...) put the BatchNorms after it in training mode
            out = self.model(given, training=False)
            if not isinstance(out, dict):
                out = dict(zip(self.output_names, out if isinstance(out, (list, tuple)) else [out]))
        return out


def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", None) or str(dtype)


def _embedding_bounds(model, names: list[str]) -> dict:
    """name -> rows of the Embedding table a model input feeds directly: generated ids stay inside it (ids past the
    table make the reference itself fail), 0, the padding id of mask_zero, among them; a float input (keras.Input
    without a dtype) gets whole numbers, which Keras casts to int."""
    bounds: dict = {}
    _bound_embeddings(model, {id(t): n for t, n in zip(model.inputs, names)}, bounds)
    return bounds


def _bound_embeddings(model, inputs: dict, bounds: dict, depth: int = 0) -> None:
    """_embedding_bounds over ``model``'s layers, ``inputs``: id(tensor) -> the model input it is; a nested model
    (an encoder whose first layer is the Embedding) is followed from the inputs it is called with."""
    layers = list(getattr(model, "layers", []))
    for layer in layers:
        inner = getattr(layer, "inputs", None) if hasattr(layer, "layers") and depth < 8 else None
        if inner:  # a nested model: its input tensors stand for what each of its calls is handed
            from keras import tree

            for node in getattr(layer, "_inbound_nodes", []):
                args = getattr(getattr(node, "arguments", None), "args", ())
                fed = tree.flatten(args[0]) if args else []
                named = {id(t): inputs[id(o)] for t, o in zip(inner, fed) if id(o) in inputs}
                if named:
                    _bound_embeddings(layer, named, bounds, depth + 1)
            continue
        if type(layer).__name__ != "Embedding":
            continue
        fed = [t for node in getattr(layer, "_inbound_nodes", []) for t in getattr(node, "input_tensors", [])]
        if not fed and layers and layer is layers[0] and len(inputs) == 1:  # a Sequential's first layer
            fed = list(model.inputs)
        for t in fed:
            name = inputs.get(id(t))
            if name is not None:
                bounds[name] = min(bounds.get(name, 1 << 62), int(layer.input_dim))

"""Keras 2 (tf_keras) model configs in the form Keras 3 rebuilds: what a tf_keras .h5 keeps in its model_config
attribute and a Keras 2 SavedModel in keras_metadata.pb (porter/readers/keras2_saved_model.py).

Keras 3 reads a legacy config (use_legacy_config) but refuses keys Keras 2 wrote and Keras 3 dropped (an RNN's
time_major, MultiHeadAttention's build shapes and softmax_robust_masking), calls a layer whose keyword arguments
held tensors with [name, node, index] lists, and numbers a nested model's calls one off. as_keras3 rewrites those,
and only those: a dropped key that holds a behaviour Keras 3 lacks (time_major=True) is left, so Keras 3's refusal
names it. Nothing here builds a layer.
"""

from __future__ import annotations

import json

MODELS = ("Functional", "Sequential", "Model")


def written_by_keras2(keras_version) -> bool:
    """Whether a legacy .h5's keras_version attribute (bytes or str; absent in the oldest files) is not Keras 3's:
    Keras 3 writes .h5 configs it reads back as they are."""
    if isinstance(keras_version, bytes):
        keras_version = keras_version.decode("utf-8", "replace")
    return not str(keras_version or "").startswith("3")


def keras2_h5_hint(keras_version) -> str:
    """The way forward for a Keras 2 .h5 whose config Keras 3 cannot rebuild even translated."""
    if isinstance(keras_version, bytes):
        keras_version = keras_version.decode("utf-8", "replace")
    return (f"the file was written by Keras 2 (keras_version {str(keras_version or '?')!r}) and Keras 3 cannot rebuild "
            "this config (an option Keras 3 lacks, or a damaged file); with tf_keras, save the model as a SavedModel "
            "folder (model.save('DIR', save_format='tf')) and convert that: porter converts its saved graph through "
            "ONNX where Keras 3 cannot rebuild its layers")


def as_keras3(config):
    """``config`` (a parsed Keras 2 model config) rewritten in place for Keras 3 (module doc); returned."""
    _as_keras3(config)
    _call_nodes_as_keras3(config)
    return config


def h5_config_text(text: str, keras_version) -> str:
    """A legacy .h5's model_config JSON text as Keras 3 is to rebuild it: translated when Keras 2 wrote it; a Keras 3
    one with its op layers located (op_layers_located), else as it is."""
    if not written_by_keras2(keras_version):
        config = json.loads(text)
        return json.dumps(config) if op_layers_located(config) else text
    return json.dumps(as_keras3(json.loads(text)))


_OP_MODULES = ("keras.src.ops.numpy", "keras.src.ops.math", "keras.src.ops.nn", "keras.src.ops.core")


def keras_op_module(name: str, config: dict) -> str | None:
    """The module of Keras' own op class ``name`` (NotEqual: keras.src.ops.numpy) that takes ``config`` (an op's
    config is its name and constructor arguments), None where there is none: a layer's config (it holds
    'trainable') or one with arguments the op does not take is another class of that name."""
    import importlib
    import inspect

    from porter.process.frameworks import keras

    keras()
    from keras.src.ops.operation import Operation

    for module in _OP_MODULES:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if not (isinstance(found, type) and issubclass(found, Operation)) or issubclass(found, keras().layers.Layer):
            continue
        params = inspect.signature(found.__init__).parameters
        if "trainable" not in config and all(key in params for key in config):
            return module
    return None


def op_layers_located(tree) -> bool:
    """Keras 3 writes an op a functional model applies to symbolic tensors (``ids != 0``, the mask of
    Embedding(mask_zero=True)) as a layer of its config named after the op class (NotEqual); in an .h5 it writes no
    module, and its own .h5 loader looks the class up among layers only ("Unknown layer: 'NotEqual'"). Each such
    entry is given the module of Keras' own op class, where Keras' deserializer (safe_mode on) finds it as in a
    .keras file; an entry naming no Keras op class is left, for Keras' refusal. Whether any was located."""
    found = False
    if isinstance(tree, dict):
        name = tree.get("class_name")
        if isinstance(name, str) and "module" not in tree and isinstance(tree.get("inbound_nodes"), list) \
                and isinstance(tree.get("config"), dict) and not _keras_layer(name):
            module = keras_op_module(name, tree["config"])
            if module is not None:
                tree.update(module=module, registered_name=None)
                found = True
        values = tree.values()
    elif isinstance(tree, list):
        values = tree
    else:
        return False
    for value in values:
        found = op_layers_located(value) or found
    return found


# tf_keras config keys that Keras 3 no longer takes, with the value that means what Keras 3 does (ANY: the key
# only recorded what the layer was built for, which Keras 3 learns again when the model is called)
ANY = object()
_DROPPED = {"time_major": False, "softmax_robust_masking": False}
_DROPPED_BY_CLASS = {"MultiHeadAttention": {"query_shape": ANY, "key_shape": ANY, "value_shape": ANY}}


_WRAPPED = ("layer", "backward_layer", "cell")  # Bidirectional, TimeDistributed, RNN


def _keras_layer(name: str) -> bool:
    from porter.process.frameworks import keras

    return isinstance(getattr(keras().layers, name, None), type)


def _call_nodes_as_keras3(tree) -> None:
    """A Keras 2 functional config's call nodes in the form Keras 3 connects. A nested model's calls
    are numbered from 1 in Keras 2 (node 0 is the one its own construction made); Keras 3 subtracts that node for
    the model's outputs but not where another layer's inbound_nodes name it. And a node whose keyword arguments
    hold tensors is rewritten in Keras 3's own node form (_tensor_kwargs_node)."""
    if isinstance(tree, list):
        for value in tree:
            _call_nodes_as_keras3(value)
        return
    if not isinstance(tree, dict):
        return
    config = tree.get("config")
    if tree.get("class_name") in ("Functional", "Model") and isinstance(config, dict) and isinstance(config.get("layers"), list):
        nested = {(layer.get("config") or {}).get("name") for layer in config["layers"] if isinstance(layer, dict)
                  and layer.get("class_name") in MODELS}  # a nested Sequential too: Keras 2 built its graph first
        names = {(layer.get("config") or {}).get("name") for layer in config["layers"] if isinstance(layer, dict)}

        def is_ref(ref):
            return isinstance(ref, list) and len(ref) >= 3 and ref[0] in names and isinstance(ref[1], int) \
                and isinstance(ref[2], int)

        for layer in config["layers"]:
            nodes = (layer.get("inbound_nodes") or []) if isinstance(layer, dict) else []
            for node in nodes:
                refs = [r for r in node if is_ref(r)] if isinstance(node, list) else []
                refs += [v for r in refs if len(r) > 3 and isinstance(r[3], dict) for v in r[3].values() if is_ref(v)]
                for ref in refs:
                    if ref[0] in nested and ref[1] > 0:
                        ref[1] -= 1
            for n, node in enumerate(nodes):
                if isinstance(node, list) and any(len(r) > 3 and isinstance(r[3], dict) and any(is_ref(v) for v in r[3].values())
                                                  for r in node if is_ref(r)):
                    nodes[n] = _tensor_kwargs_node(node, is_ref)
    for value in tree.values():
        _call_nodes_as_keras3(value)


def _tensor_kwargs_node(node: list, is_ref) -> dict:
    """A Keras 2 call node whose keyword arguments hold tensors (MultiHeadAttention's value=, Attention's ...) in
    Keras 3's form ({"args", "kwargs"} with __keras_tensor__ references): Keras 3 leaves a legacy node's kwargs
    as they are, so the layer would be called with [name, node, index] lists."""
    def tensor(ref):
        return {"class_name": "__keras_tensor__", "config": {"shape": [], "dtype": "float32", "keras_history": list(ref[:3])}}

    refs = [r for r in node if is_ref(r)]
    kwargs = {}
    for ref in refs:
        if len(ref) > 3 and isinstance(ref[3], dict):
            kwargs.update({k: tensor(v) if is_ref(v) else v for k, v in ref[3].items()})
    args = tensor(refs[0]) if len(refs) == 1 else [tensor(r) for r in refs]
    return {"args": [args], "kwargs": kwargs}


def _as_keras3(tree) -> None:
    """Keras 2 layer configs in the form Keras 3 reads: keys it dropped removed where they hold its behaviour
    (a value that does not is left, and Keras 3's refusal names it)."""
    if isinstance(tree, dict):
        config = tree.get("config")
        if isinstance(tree.get("class_name"), str) and isinstance(config, dict):
            for key, value in {**_DROPPED, **_DROPPED_BY_CLASS.get(tree["class_name"], {})}.items():
                if key in config and (value is ANY or config[key] == value):
                    del config[key]
            for key in _WRAPPED:  # Keras 3 deserializes a wrapped layer by module, which Keras 2 did not write
                inner = config.get(key)
                if isinstance(inner, dict) and isinstance(inner.get("class_name"), str) and "module" not in inner \
                        and _keras_layer(inner["class_name"]):
                    inner.update(module="keras.layers", registered_name=None)
        for value in tree.values():
            _as_keras3(value)
    elif isinstance(tree, list):
        for value in tree:
            _as_keras3(value)

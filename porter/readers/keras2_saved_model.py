"""A Keras 2 (tf_keras) SavedModel folder read as Keras layers: the model Keras 3 rebuilds from the layer configs
in keras_metadata.pb, with the weights read from the SavedModel's checkpoint.

tf_keras' `model.save(dir)` (TF <= 2.15) writes keras_metadata.pb beside saved_model.pb: a protobuf
(SavedMetadata: repeated SavedObject {node_id = 2, node_path = 3, identifier = 4, metadata = 5}) whose root
node's metadata is the model's JSON config, as a tf_keras .h5 keeps it in `model_config`. Keras 3 rebuilds it
the way it reads a tf_keras .h5 (legacy config, safe_mode). The variables are read with
tf.train.load_checkpoint: the checkpoint's object graph leads from each layer's node_path
(root.layer_with_weights-0.cell ...) to its variables, which are matched to the Keras 3 layer's weights by
their names (kernel, recurrent_kernel, gamma ...) and roles (forward/backward, query/key/value/output).
Nothing is unpickled and no saved function is loaded or run. A folder that cannot be read this way raises
Unreadable with the reason, and the caller takes the TF-only route as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from porter.errors import PorterError
from porter.readers.keras2_config import MODELS as _MODELS, as_keras3

METADATA = "keras_metadata.pb"
_LAYERS = ("_tf_keras_layer", "_tf_keras_rnn_layer", "_tf_keras_input_layer", "_tf_keras_network",
           "_tf_keras_model", "_tf_keras_sequential")
# checkpoint edges that are not a layer's own attributes: lists of variables (which would name a weight '0'),
# the Keras API object, saved functions, the optimizer
_NOT_WEIGHTS = ("variables", "trainable_variables", "non_trainable_variables", "regularization_losses", "keras_api",
                "layers", "metrics", "layer_regularization_losses", "layer_metrics", "optimizer", "save_counter",
                "signatures")


class Unreadable(PorterError):
    """The folder is a Keras 2 SavedModel whose layers porter cannot read (the reason is the message)."""


def is_keras2_saved_model(path) -> bool:
    path = Path(path)
    return (path / METADATA).is_file() and (path / "saved_model.pb").is_file() and not (path / "model.keras").exists()


# ------------------------------------------------------------------------------ keras_metadata.pb
def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("a varint runs past the end")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: bytes):
    """(field number, value) of one protobuf message: ints for varints, bytes for length-delimited fields."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ValueError("a field runs past the end")
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            value, i = data[i:i + (8 if wire == 1 else 4)], i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def read_metadata(path) -> dict:
    """node_path -> (identifier, metadata JSON text) for every node keras_metadata.pb lists."""
    from porter.checks.keras_archive import JSON_LIMIT

    file = Path(path) / METADATA
    size = file.stat().st_size
    if size > 8 * JSON_LIMIT:
        raise Unreadable(f"{file} holds {size:,} bytes, past porter's limit of {8 * JSON_LIMIT:,} for layer metadata")
    nodes = {}
    try:
        for number, node in _fields(file.read_bytes()):
            if number != 1 or not isinstance(node, bytes):
                continue
            fields = dict(_fields(node))
            node_path = fields.get(3, b"").decode("utf-8", "replace")
            nodes.setdefault(node_path, (fields.get(4, b"").decode("utf-8", "replace"),
                                         fields.get(5, b"").decode("utf-8", "replace")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{file} is not a Keras SavedMetadata protobuf ({exc})") from None
    return nodes


def model_config(path) -> str:
    """The model's JSON config (as a tf_keras .h5's model_config), or Unreadable saying why there is none."""
    from porter.checks.keras_archive import JSON_LIMIT
    from porter.checks.model_files import parse_json

    nodes = read_metadata(path)
    if "root" not in nodes:
        raise Unreadable(f"{Path(path) / METADATA} has no root node")
    identifier, text = nodes["root"]
    if len(text) > JSON_LIMIT:
        raise Unreadable(f"its root metadata is {len(text):,} bytes, past porter's limit of {JSON_LIMIT:,} for a JSON text")
    meta = parse_json(text, f"{Path(path) / METADATA}: root metadata")
    cls = meta.get("class_name") if isinstance(meta, dict) else None
    if cls not in _MODELS or not isinstance(meta.get("config"), dict) or not meta["config"].get("layers"):
        what = f"a subclassed model of class {cls!r}" if cls and cls not in _MODELS else f"a {identifier or 'model'} without a layer config"
        raise Unreadable(f"the Keras 2 SavedModel holds {what}: Keras cannot rebuild its layers without its Python code")
    ops = [layer for layer in meta["config"]["layers"] if isinstance(layer, dict)
           and layer.get("class_name") in ("TFOpLambda", "SlicingOpLambda", "TensorFlowOpLayer")]
    if ops:
        named = ", ".join(f"{(o.get('config') or {}).get('name', '?')!r}" for o in ops[:4])
        raise Unreadable(f"{len(ops)} layer(s) ({named}) are TensorFlow ops called on Keras tensors (tf_keras' "
                         f"{ops[0]['class_name']}), which Keras 3 has no layer for")
    return json.dumps(as_keras3({"class_name": cls, "config": meta["config"]}))


# ------------------------------------------------------------------------------ the model
def load_model(path):
    """The Keras 3 model of a Keras 2 SavedModel folder, its weights from the checkpoint."""
    from porter.checks.keras_archive import _check_fits, code_refusal, declared_weights
    from porter.process.frameworks import keras

    path = Path(path)
    text = model_config(path)
    try:
        declared = declared_weights(text, path, legacy=True)
    except PorterError as exc:  # Keras 3 cannot build these layers (a class or an option it lacks)
        raise Unreadable(exc.message, hint=exc.hint) from None
    _check_fits(path, METADATA, declared)  # a config that declares more than porter's limits: refused
    keras()
    from keras.src.legacy.saving import json_utils, saving_options, saving_utils
    from keras.src.saving import serialization_lib

    try:
        with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
            model = saving_utils.model_from_config(json_utils.decode(text))
    except Exception as exc:
        refusal = code_refusal(path, text, exc)
        if refusal is not None:
            raise Unreadable(refusal.message, hint=refusal.hint) from None
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise Unreadable(f"Keras 3 could not rebuild its layers from {METADATA} ({type(exc).__name__}: {first})") from None
    _assign(model, path)
    return model


def _layers(model, names=()):
    """(name path, layer) for every layer that holds weights, nested models entered."""
    for layer in model.layers:
        if _is_model(layer):
            yield from _layers(layer, names + (layer.name,))
        elif layer.weights:
            yield names + (layer.name,), layer


def _is_model(layer) -> bool:
    from porter.process.frameworks import keras

    return isinstance(layer, keras().Model)


def _checkpoint(path: Path):
    from porter.process.frameworks import tensorflow

    tf = tensorflow()
    prefix = path / "variables" / "variables"
    if not Path(str(prefix) + ".index").is_file():
        raise Unreadable(f"{path}/variables/variables.index is missing: the SavedModel holds no checkpoint")
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        from tensorflow.core.protobuf import trackable_object_graph_pb2

        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise Unreadable(f"its checkpoint ({prefix}) could not be read ({type(exc).__name__}: {first})") from None
    return reader, graph


def _variables_under(graph, start: int) -> dict:
    """relative path (child names) -> checkpoint key for every variable reachable from node ``start``."""
    found, seen, queue = {}, {start}, [(start, ())]
    while queue:
        node_id, rel = queue.pop(0)
        node = graph.nodes[node_id]
        for attr in node.attributes:
            if attr.name == "VARIABLE_VALUE" and rel:
                found.setdefault(rel, attr.checkpoint_key)
        for child in node.children:
            name = child.local_name
            if (child.node_id in seen or name in _NOT_WEIGHTS or name.startswith(("__", "call_and_return", "_default_save",
                                                                                    "_random_generator"))):
                continue
            seen.add(child.node_id)
            queue.append((child.node_id, rel + (child.local_name,)))
    return found


def _role(parts) -> tuple:
    """What tells a layer's variables apart: the variable's name and the roles of the sublayers it sits in."""
    roles = []
    for part in parts[:-1]:
        p = part.lstrip("_").removesuffix("_dense")
        if p.startswith("forward"):
            roles.append("forward")
        elif p.startswith("backward"):
            roles.append("backward")
        elif p in ("query", "key", "value"):
            roles.append(p)
        elif p in ("output", "attention_output"):
            roles.append("attention_output")
    return tuple(roles) + (parts[-1].split(":")[0],)


def _assign(model, path: Path) -> None:
    import numpy as np

    reader, graph = _checkpoint(path)
    nodes = read_metadata(path)
    shapes = reader.get_variable_to_shape_map()
    by_names = {}
    for node_path, (identifier, text) in nodes.items():
        if identifier not in _LAYERS or node_path == "root":
            continue
        parts = node_path.split(".")[1:]
        names = []
        for i in range(1, len(parts) + 1):
            try:
                names.append(json.loads(nodes.get(".".join(["root"] + parts[:i]), ("", "{}"))[1] or "{}").get("name"))
            except ValueError:
                names.append(None)
        by_names.setdefault(tuple(names), parts)
    problems = []
    for names, layer in _layers(model):
        parts = by_names.get(names)
        if parts is None:
            problems.append(f"layer {'/'.join(names)!r}: not among the layers keras_metadata.pb lists")
            continue
        node = 0
        for name in parts:
            node = next((c.node_id for c in graph.nodes[node].children if c.local_name == name), None)
            if node is None:
                break
        if node is None:
            problems.append(f"layer {'/'.join(names)!r}: no node {'.'.join(parts)!r} in the checkpoint's object graph")
            continue
        stored = {}
        for rel, key in _variables_under(graph, node).items():
            stored.setdefault(_role(rel), []).append(key)
        wanted = {}
        for w in layer.weights:
            rel = w.path.split("/")
            rel = rel[rel.index(layer.name) + 1:] if layer.name in rel[:-1] else rel[-1:]
            wanted.setdefault(_role(rel), []).append(w)
        clash = [r for r, v in {**stored, **wanted}.items() if len(v) > 1]
        if clash or set(stored) != set(wanted):
            problems.append(f"layer {'/'.join(names)!r} ({layer.__class__.__name__}): its Keras 3 weights "
                            f"{sorted('/'.join(r) for r in wanted)} do not match the checkpoint's "
                            f"{sorted('/'.join(r) for r in stored)}")
            continue
        for role, (w,) in wanted.items():
            key = stored[role][0]
            if tuple(shapes.get(key, ())) != tuple(w.shape):
                problems.append(f"layer {'/'.join(names)!r}: {'/'.join(role)} is {tuple(shapes.get(key, ()))} in the "
                                f"checkpoint, {tuple(w.shape)} in the layer its config builds")
                continue
            w.assign(np.asarray(reader.get_tensor(key)).astype(w.dtype))
    if problems:
        raise Unreadable("its weights could not all be matched to the layers: " + "; ".join(problems[:6]))


def embedding_bounds(path) -> dict:
    """input name -> rows of the Embedding table it feeds directly, from the layer configs alone (nothing built), so
    that ids generated for the SavedModel's signature stay inside the table; {} where the folder cannot tell."""
    try:
        config = json.loads(model_config(path))
    except (PorterError, ValueError):
        return {}
    layers = config["config"].get("layers") or []
    inputs = {(layer.get("config") or {}).get("name") for layer in layers if layer.get("class_name") == "InputLayer"}
    bounds: dict = {}
    for n, layer in enumerate(layers):
        if layer.get("class_name") != "Embedding" or not isinstance((layer.get("config") or {}).get("input_dim"), int):
            continue
        if config["class_name"] == "Sequential":  # the first layer after the input, fed by the one input
            fed = list(inputs) if all(x.get("class_name") == "InputLayer" for x in layers[:n]) else []
        else:
            fed = [node[0] for nodes in layer.get("inbound_nodes") or [] for node in nodes
                   if isinstance(node, list) and node and isinstance(node[0], str)]
        for name in fed:
            if name in inputs:
                bounds[name] = min(bounds.get(name, 1 << 62), layer["config"]["input_dim"])
    return bounds

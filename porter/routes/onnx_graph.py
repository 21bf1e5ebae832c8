"""Reading an ONNX graph, for every leg of the ONNX route: the file as bad input (corrupt, empty),
its inputs and outputs, the id ranges its embeddings take, and the NHWC/NCHW permutations."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from porter.errors import PorterError

NHWC_TO_NCHW = {3: (0, 2, 1), 4: (0, 3, 1, 2), 5: (0, 4, 1, 2, 3)}
NCHW_TO_NHWC = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


def channel_inputs(specs: dict) -> list[str]:
    """The inputs that are images: 4-D floats (name -> (dtype, shape) specs)."""
    return [n for n, (dtype, shape) in specs.items() if len(shape) == 4 and np.dtype(dtype).kind == "f"]
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
                11: "float64", 16: "bfloat16"}
# weights past this many bytes go to an external data file: protobuf cannot read a file over 2 GB
INLINE_LIMIT = int(1.8e9)


def load_onnx(path: Path, weights: bool = True):
    """The model at ``path``; with ``weights=False`` its external-data tensors stay references."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a damaged file
        raise PorterError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})",
                          hint="the file is corrupt or truncated: export it again") from None
    if weights:
        load_external_data(model, Path(path))
    if not model.graph.node or not model.graph.output:
        raise PorterError(f"{path} is not a readable ONNX model: its graph has no nodes or no outputs",
                          hint="the file is corrupt or truncated: export it again")
    return model


def onnx_io(model) -> tuple[list[str], list[str], dict]:
    """(input names, output names, input specs name -> (dtype, shape with None for dynamic dims))."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    specs = {}
    for value in inputs:
        t = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        specs[value.name] = (_ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"), shape)
    return [i.name for i in inputs], [o.name for o in model.graph.output], specs


def index_bounds(model) -> dict:
    """Integer graph inputs used (through Casts) as Gather indices into a constant table, with the
    table's size on that axis: the ids a generated input may take (an embedding's vocabulary)."""
    inputs = {i.name for i in model.graph.input}
    tables = {i.name: list(i.dims) for i in model.graph.initializer}
    source = {n: n for n in inputs}  # tensor -> the graph input it is a cast of
    bounds: dict = {}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in source:
            source[node.output[0]] = source[node.input[0]]
        elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in source and node.input[0] in tables:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = tables[node.input[0]]
            name = source[node.input[1]]
            bounds[name] = min(bounds.get(name, dims[axis]), dims[axis])
    return bounds


def opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fits(feed: dict, specs: dict) -> bool:
    """Whether every array matches the static dims of ``specs`` (name -> (dtype, shape))."""
    for name, (_, shape) in specs.items():
        if name in feed:
            got = np.shape(feed[name])
            if len(got) != len(shape) or any(d is not None and d != g for d, g in zip(shape, got)):
                return False
    return True


def fitting_inputs(feeds: list, notes: list, written: dict, made_static_by: str):
    """porter's generated input sets that fit the written model's static dims (``written``: name -> (dtype,
    shape)), as verifiers.inputs.InputSets; a note says how many were skipped, and none fitting is bad input."""
    from porter.verifiers.inputs import InputSets

    fitting = [f for f in feeds if fits(f, written)]
    if not fitting:
        raise PorterError("none of the verification inputs fits the converted model's static input shapes",
                          problems=[f"{n}: {s}" for n, (_, s) in written.items()])
    notes = list(notes)
    if len(fitting) < len(feeds):
        notes.append(f"inputs: {len(feeds) - len(fitting)} of {len(feeds)} input sets skipped: "
                     f"they do not fit the dims {made_static_by} made static (see static_dims)")
    return InputSets(fitting, notes)


def big_initializers(model, min_elements: int = 1024) -> list:
    """The initializers at least ``min_elements`` large: the weights, as against shape and axis constants."""
    import math

    return [t for t in model.graph.initializer if math.prod(t.dims) >= min_elements]


def without_weights(model, min_elements: int = 1024):
    """A copy of ``model`` whose large initializers are graph inputs of the same type and shape instead:
    what shape inference and the shape probes need, without copying the weights (bert-base: 440 MB per copy).
    Every other field comes along (metadata, functions, sparse initializers, doc strings)."""
    import onnx
    from onnx import helper

    big = {t.name for t in big_initializers(model, min_elements)}
    light = onnx.ModelProto()
    _copy_fields(model, light, skip={"graph"})
    _copy_fields(model.graph, light.graph, skip={"initializer"})
    light.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer if t.name in big)
    light.graph.initializer.extend(t for t in model.graph.initializer if t.name not in big)
    return light


def _copy_fields(src, dst, skip: set) -> None:
    """Every set field of protobuf message ``src`` into ``dst``, but those named in ``skip``."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if _repeated(field):
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def with_weights(light, weights: list):
    """``light`` (from without_weights, then rewritten) with ``weights`` as initializers again, those that its
    nodes still use; the weights' graph inputs are gone. One copy of the weights, made once."""
    used = drop_weight_inputs(light, weights)
    light.graph.initializer.extend(t for t in weights if t.name in used)
    return light


def drop_weight_inputs(light, weights: list) -> set[str]:
    """Drops the graph inputs without_weights made of ``weights``; returns the names the graph still reads."""
    names = {t.name for t in weights}
    kept = [i for i in light.graph.input if i.name not in names]
    del light.graph.input[:]
    light.graph.input.extend(kept)
    return {i for n in light.graph.node for i in n.input} | {o.name for o in light.graph.output}


def save_with_weights(light, weights: list, path, inline_limit: int = INLINE_LIMIT) -> None:
    """with_weights(light, weights) written to ``path`` without building it: a serialised protobuf message
    followed by another is their merge, and repeated fields append, so the graph is written first and then
    each weight as a graph of one initializer. Never more than one tensor is copied (with_weights and
    onnx.save would hold the weights twice more: the merged model and its bytes). Weights over
    ``inline_limit`` bytes in all go to ``path``.data as ONNX external data: protobuf cannot read a file
    over 2 GB. A weight that is an external-data reference already is written as that
    reference, its bytes not copied: ``path`` must be in the folder of the file it names."""
    import onnx
    from onnx import numpy_helper

    used = drop_weight_inputs(light, weights)
    kept = [t for t in weights if t.name in used]
    external = sum(_nbytes(t) for t in kept if t.data_location != onnx.TensorProto.EXTERNAL) > inline_limit
    data_path = Path(str(path) + ".data")
    with open(path, "wb") as f, (open(data_path, "wb") if external else contextlib.nullcontext()) as data:
        f.write(light.SerializeToString())
        for tensor in kept:
            piece = onnx.ModelProto()
            if external and tensor.data_location != onnx.TensorProto.EXTERNAL:  # the bytes to the side file, a reference to them in the graph
                raw = numpy_helper.to_array(tensor).tobytes()
                stub = piece.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                                   data_location=onnx.TensorProto.EXTERNAL)
                for key, value in (("location", data_path.name), ("offset", str(data.tell())), ("length", str(len(raw)))):
                    stub.external_data.add(key=key, value=value)
                data.write(raw)
            else:
                piece.graph.initializer.append(tensor)
            f.write(piece.SerializeToString())


def _nbytes(tensor) -> int:
    import math

    from onnx import helper

    return math.prod(tensor.dims) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def write_onnx_output(src: Path, dst: Path, inline_limit: int = INLINE_LIMIT) -> None:
    """``src`` written to ``dst`` as one file where its weights fit protobuf's limit (porter's own exports keep
    their weights as external data while converting: serialising them whole took 5 copies of the weights),
    else with its external data beside it, as copy_onnx does."""
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    del graph
    if not external or sum(_nbytes(t) for t in external) > inline_limit:
        copy_onnx(src, dst)
        return
    model = load_onnx(src)
    weights = big_initializers(model)
    save_with_weights(without_weights(model), weights, dst, inline_limit)


def copy_onnx(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst`` with the external data files its initializers name, under the same relative
    names beside ``dst`` (a model over 2 GB keeps its weights there: the .onnx file alone is a graph without them)."""
    import shutil

    import onnx

    shutil.copyfile(src, dst)
    if not any(p != src for p in src.parent.iterdir()):  # nothing beside it to name: skip reading the graph
        return
    try:
        graph = onnx.load(str(src), load_external_data=False).graph
    except Exception:  # unreadable: load_onnx names the file when it is read
        return
    locations = sorted({entry.value for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                        for entry in t.external_data if entry.key == "location"})
    for location in locations:
        relative = external_data_file(src.parent, location, src).relative_to(src.parent)
        (dst.parent / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.parent / relative, dst.parent / relative)


def external_data_file(folder: Path, location: str, owner) -> Path:
    """The file an external-data ``location`` names, which must be inside ``folder`` (the .onnx file's): never an
    absolute path, one that climbs out of it, or a link that points out of it (model_files' rule).
    ``owner``: the file or tensor it belongs to, for the error."""
    from porter.checks.model_files import model_file

    relative = Path(location)
    if not location or relative.is_absolute() or ".." in relative.parts or not os.path.lexists(folder / relative):
        raise PorterError(f"{owner} keeps its weights in external data {location!r}, which is not a file in {folder}",
                          hint="keep the external data files in the .onnx file's folder, under the names it gives")
    return model_file(folder / relative, folder, f"external data of {owner}:")


def _external_tensors(model, path: Path):
    """(tensor, its external-data entries) for every tensor (subgraphs' and attributes' included) kept outside
    the file, each location checked by external_data_file and its declared bytes against the file first:
    onnx.load and onnxruntime follow any path or link a file names."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            where = external_data_file(Path(path).parent, info.get("location", ""), f"{path} tensor {tensor.name!r}")
            _check_declared_bytes(tensor, info, where, path)
            yield tensor, info


def check_external_data(path: Path) -> None:
    """Every external-data file ``path`` names is checked before a runtime (onnxruntime) opens it."""
    for _ in _external_tensors(load_onnx(path, weights=False), path):
        pass


def load_external_data(model, path: Path) -> None:
    """Read ``model``'s external-data tensors into it, each checked by _external_tensors first."""
    from onnx.external_data_helper import load_external_data_for_tensor

    folder = Path(path).parent
    for tensor, info in list(_external_tensors(model, path)):
        try:
            load_external_data_for_tensor(tensor, str(folder))
        except (OSError, ValueError) as exc:
            raise PorterError(f"{path}: tensor {tensor.name!r} cannot be read from external data {info.get('location')!r} ({exc})",
                              hint="the external data file is truncated or does not match the model: export it again") from None
        del tensor.external_data[:]
        tensor.data_location = 0  # onnx.TensorProto.DEFAULT


def _check_declared_bytes(tensor, info: dict, where: Path, path: Path) -> None:
    """The bytes a tensor's dims declare must be what its external-data entry gives and the file holds,
    checked before a byte is read (a forged length or a truncated file is named, not read past)."""
    import onnx

    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return  # a type numpy cannot hold (string, 4-bit): onnx's own reader decides
    if tensor.data_type in (onnx.TensorProto.STRING,) or any(d < 0 for d in tensor.dims):
        return
    need = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize if tensor.dims else itemsize
    try:
        offset, length = int(info.get("offset") or 0), info.get("length")
    except ValueError:
        raise PorterError(f"{path}: tensor {tensor.name!r} has a non-numeric external-data offset {info.get('offset')!r}") from None
    size = os.path.getsize(where)
    if (length is not None and int(length) != need) or offset < 0 or offset + need > size:
        raise PorterError(f"{path}: tensor {tensor.name!r} declares {need:,} bytes (dims {list(tensor.dims)}) at offset {offset:,}"
                          f"{f' with length {length}' if length is not None else ''}, but {where} holds {size:,} bytes",
                          hint="the external data file is truncated or does not match the model: export it again")


def _repeated(field) -> bool:
    """protobuf 7 dropped FieldDescriptor.label; is_repeated is there since protobuf 5."""
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED

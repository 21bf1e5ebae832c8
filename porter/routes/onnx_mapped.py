"""An ONNX graph whose weights stay in their external data file, read through memory maps.

The ONNX route's exports keep their weights as external data (to_onnx.torch_to_onnx). Loaded with them,
each step held its own copy: the ModelProto's bytes, the arrays the shape probes fed onnxruntime, the
prepared file written out again, and onnx2tf's load of it, whose graphsurgeon copied each tensor twice
more (numpy_helper.to_array, then np.array). On bert-base onnx2tf alone peaked 1.8 GB above the
imports. Mapped, the graph carries a stub per weight (its external-data reference, no bytes), every step
reads the one mapping, a rewritten graph written beside the data file references it instead of copying
it, and onnx2tf copies each weight once, into TensorFlow (peak 0.94 GB above the imports, 40% faster).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from porter.errors import PorterError

MIN_ELEMENTS = 1024  # as onnx_graph.big_initializers: smaller tensors (shapes, axes) are read into the graph


def load_mapped(path: Path, min_elements: int = MIN_ELEMENTS):
    """(the graph at ``path``, name -> copy-on-write np.memmap of each of its large external-data weights).
    Those weights stay stubs in the graph; every other tensor (small ones, those in node attributes and
    subgraphs) is loaded into it as onnx.load would."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor, uses_external_data

    from porter.routes.onnx_graph import load_onnx

    model = load_onnx(path, weights=False)
    folder = Path(path).parent
    arrays, where = {}, {}
    for tensor in model.graph.initializer:
        if uses_external_data(tensor) and math.prod(tensor.dims) >= min_elements:
            mapped = _mapped(tensor, folder)
            if mapped is not None:
                arrays[tensor.name], where[tensor.name] = mapped, _reference(tensor)
    for tensor in _get_all_tensors(model):  # the rest, subgraphs' tensors of the same name included
        if uses_external_data(tensor) and where.get(tensor.name) != _reference(tensor):
            load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    return model, arrays


def _reference(tensor) -> tuple:
    return tuple(sorted((e.key, e.value) for e in tensor.external_data))


def _mapped(tensor, folder: Path):
    """A copy-on-write np.memmap of ``tensor``'s external bytes, or None for what numpy cannot map as is
    (bfloat16, float8, 4-bit types, strings: onnx reads those)."""
    import numpy as np
    import onnx
    from onnx import helper

    from porter.routes.onnx_graph import external_data_file

    info = {entry.key: entry.value for entry in tensor.external_data}
    if tensor.data_type in (onnx.TensorProto.BFLOAT16, onnx.TensorProto.STRING) or tensor.data_type >= 17:
        return None
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    location = info.get("location", "")
    where = external_data_file(folder, location, repr(tensor.name))
    offset, nbytes = int(info.get("offset", 0)), math.prod(tensor.dims) * dtype.itemsize
    if int(info.get("length", nbytes)) != nbytes or offset + nbytes > os.path.getsize(where):
        raise PorterError(f"{tensor.name!r} in external data {location}: {nbytes} bytes of {dtype} at offset {offset} "
                          f"do not fit the file ({os.path.getsize(where)} bytes, length {info.get('length')})",
                          hint="the external data file is truncated or belongs to another export: export the model again")
    # copy-on-write: a converter that edits a weight in place gets its own page, the file stays as it was
    return np.memmap(where, dtype=dtype, mode="c", offset=offset, shape=tuple(tensor.dims))


def values(tensor, arrays: dict):
    """The array of initializer ``tensor``: its mapping when it is a stub, else read from the proto."""
    from onnx import numpy_helper

    mapped = arrays.get(tensor.name)
    return mapped if mapped is not None else numpy_helper.to_array(tensor)


def ort_session(model, arrays: dict, arena: bool = True):
    """An onnxruntime session of ``model`` whose stub weights are ``arrays``, shared with it: add_initializer
    takes an array as it is, where the session's own load of external data (or add_external_initializers)
    copied every weight. The arrays live as long as the session. ``arena=False``: the activations go back
    when the session ends (onnxruntime's arena keeps them)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_prepacking", "1")  # a packed copy of every MatMul weight
    # no graph rewrites: every tensor asked for is kept, and a rewrite (Conv+BatchNormalization fusion) would read
    # a weight from the graph's stub, not the array given
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_cpu_mem_arena = arena
    shared = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in arrays.items()}
    for name, value in shared.items():
        options.add_initializer(name, value)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.porter_shared = shared  # onnxruntime keeps only pointers into them
    return session


@contextlib.contextmanager
def graphsurgeon_reads(arrays: dict):
    """While open, onnx-graphsurgeon (onnx2tf's graph) reads a stub's values from its mapping: its own
    LazyValues.load would copy them twice (and cannot read a stub's external data at all)."""
    from onnx_graphsurgeon.ir import tensor as gs_tensor

    own = gs_tensor.LazyValues.load

    def load(lazy):
        mapped = arrays.get(lazy.tensor.name)
        return own(lazy) if mapped is None else mapped

    gs_tensor.LazyValues.load = load
    try:
        yield
    finally:
        gs_tensor.LazyValues.load = own

"""Checks of a Keras model file made before Keras builds or unpacks anything from it.

Keras allocates every variable while it builds a model from its config, before a weight is read, and reads a
.keras archive's model.weights.h5 whole into memory: a 1 KB config declaring Dense(500_000_000) or a 2 GB
zip bomb of zeros would exhaust memory (Keras' own zip-bomb guard starts at 4 GB). So, for a .keras archive,
a legacy Keras .h5 and a keras-hub preset folder:
  - the JSON (config.json, metadata.json, a legacy h5's model_config) is size- and depth-checked before parsing;
  - the weight bytes the config declares are counted by Keras itself: the model is deserialized inside a
    StatelessScope, where a variable keeps its shape and dtype but is never allocated, and then dropped;
  - those bytes must fit in memory and match, within a small factor, both the weights file's unpacked size
    (its central-directory entry: what zipfile would unpack) and the datasets its HDF5 metadata declares
    (read without reading the data).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
import re
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError
from porter.resources.memory_estimate import size_text
from porter.checks.model_files import JSON_LIMIT, MiB, check_tree, duplicate_entry, parse_json, read_json, zip_member

# An h5 file holds its datasets plus metadata: ~1.5 KB per dataset measured (ResNet50: 476 KB for 320).
FACTOR, SLACK, PER_VARIABLE = 1.25, 4 * MiB, 8 << 10
# A model saved compiled after training holds its optimizer's state too (never read: porter loads with
# compile=False): Adam with amsgrad keeps 3 slots per variable, EMA one more.
OPTIMIZER_SLOTS = 4
# assets/ and anything else besides the config and weights (a keras-hub tokenizer's vocabulary: a few MB)
OTHER_LIMIT = 1 << 30
WEIGHTS = ("model.weights.h5", "model.weights.npz")
_checked: set = set()


@dataclass
class Declared:
    """The weights a config declares, counted by Keras without allocating them."""

    total: int
    count: int
    largest: tuple  # (path, shape, dtype, bytes)

    def text(self) -> str:
        path, shape, dtype, nbytes = self.largest
        dims = " x ".join(f"{d:,}" for d in shape) or "a scalar"
        return f"{self.total:,} bytes of weights (largest: {path!r}, {dims} {dtype}, {size_text(nbytes)})"


def _bad(source, message: str, hint: str = "the file is damaged or hostile; save the model again with model.save") -> PorterError:
    return PorterError(f"{source}: {message}", hint=hint)


# ------------------------------------------------------------------ JSON
def _open(path) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PorterError(f"{path} is not a readable .keras (zip) file ({exc})") from None
    twice = duplicate_entry(zf)
    if twice is not None:
        zf.close()
        raise _bad(path, f"holds two entries named {twice!r}")
    return zf


def _member_json(zf, path, name: str):
    if name not in zf.NameToInfo:
        raise _bad(path, f"has no {name!r} entry", hint="save the model with model.save('model.keras') (Keras 3)")
    return parse_json(zip_member(zf, name, path, size_limit=JSON_LIMIT), f"{path}: entry {name!r}")


def archive_config(path) -> dict:
    """A .keras archive's config.json, its declared size and nesting depth checked before and after parsing."""
    with _open(path) as zf:
        return _member_json(zf, path, "config.json")


# ------------------------------------------------------------------ what the config declares
def declared_weights(config, source, legacy: bool = False, hint: str | None = None) -> Declared:
    """Deserialize ``config`` (safe_mode; for a legacy h5, its checked JSON text) inside a StatelessScope and count
    its variables' bytes. Nothing is allocated: Keras defers a variable created there until its scope exits with
    initialize_variables=True, or until something initializes Keras' global list of deferred variables, which is
    restored here so that the dropped model's variables never are. So is the counter that names new objects
    ('adam_1'...), so the real load names them as it would have. ``config`` is copied: deserializers replace parts
    of the dict they are given by the objects built (keras-hub's Task puts its backbone there), which the real
    load would then reuse, uninitialized. ``hint``: the way forward where Keras cannot build the config (by default:
    the file is damaged or hostile)."""
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope
    from keras.src.saving import serialization_lib
    from keras.src.utils.dtype_utils import dtype_size

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    names = collections.defaultdict(int, global_state.get_global_attribute("object_name_uids") or {})
    try:
        with StatelessScope(initialize_variables=False), _concrete_variables_allowed():
            if legacy:  # as keras.src.legacy.saving.legacy_h5_format.load_model_from_hdf5
                from keras.src.legacy.saving import json_utils, saving_options, saving_utils
                from keras.src.saving import object_registration

                custom = {**object_registration.GLOBAL_CUSTOM_OBJECTS,
                          **global_state.get_global_attribute("custom_objects_scope_dict", {})}
                with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
                    model = saving_utils.model_from_config(json_utils.decode(config), custom_objects=custom)
            else:  # as keras.src.saving.saving_lib._model_from_config with compile=False
                built = json.loads(json.dumps(config))  # ``config`` stays as read, for code_refusal
                if isinstance(built, dict):
                    built["compile_config"] = None
                with serialization_lib.ObjectSharingScope():
                    model = serialization_lib.deserialize_keras_object(built, safe_mode=True)
            variables = {id(v): v for v in getattr(model, "weights", [])}.values()
            sizes = [(v.path, tuple(int(d) for d in v.shape), str(v.dtype),
                      math.prod(int(d) for d in v.shape) * dtype_size(v.dtype) // 8) for v in variables]
    except RecursionError:
        raise _bad(source, "its config nests too deeply for Keras to build it") from None
    except PorterError:
        raise
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError for configs it cannot build
        refusal = code_refusal(source, config, exc)
        if refusal is not None:
            raise refusal from None
        unknown = re.search(r"Unknown layer: '(\w+)'", str(exc))
        if unknown and _keras_op_layer(unknown.group(1)):  # Keras' own op layer, which its legacy .h5 loader lacks
            raise _bad(source, f"Keras cannot read back its own layer {unknown.group(1)!r} from this .h5 (it writes the "
                               "ops a model applies to its inputs, e.g. a mask_zero mask, as layers its .h5 loader "
                               "does not know)",
                       hint="save the model as .keras (model.save('model.keras')) and convert that") from None
        raise _bad(source, f"Keras cannot build the model its config describes without allocating its weights "
                           f"(safe_mode=True): {type(exc).__name__}: {str(exc)[:500]}",
                   **({"hint": hint} if hint else {})) from None
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)
        global_state.set_global_attribute("object_name_uids", names)
    largest = max(sizes, key=lambda s: s[3], default=("(none)", (), "", 0))
    return Declared(sum(s[3] for s in sizes), len(sizes), largest)


EXPORT_HINT = ("where the model's Python code is, export it as a SavedModel with model.export('DIR') and convert "
               "that folder (porter convert DIR --from tf --to torch): porter converts a SavedModel through ONNX "
               "(tf2onnx, then porter's ONNX -> torch) without the class's code")
_SPECIAL = ("function", "__lambda__", "__tensor__", "__numpy__", "__bytes__", "__typespec__", "__ellipsis__",
            "__slice__", "__keras_tensor__")


def _objects(config, top=True):
    """(serialized Keras object dict, is the top-level model) for every object a config holds, outermost first."""
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str) and "config" in config:
            yield config, top
            top = False
        for value in config.values():
            yield from _objects(value, top)
    elif isinstance(config, list):
        for value in config:
            yield from _objects(value, top)


def _resolves(obj, legacy: bool) -> bool:
    from keras.src.saving import object_registration, serialization_lib

    name = obj["class_name"]
    if legacy or "module" not in obj:
        import keras

        # a legacy .h5 names Keras' own classes without their module: layers, models, initializers, regularizers,
        # constraints, dtype policies and Keras' own ops layers (NotEqual...) are all Keras', not custom code
        namespaces = (keras.layers, keras.models, keras.initializers, keras.regularizers, keras.constraints,
                      keras.dtype_policies, keras.activations, keras.optimizers)
        return bool(object_registration.get_registered_object(name) or any(getattr(n, name, None) for n in namespaces)
                    or name in ("Functional", "Model", "DTypePolicy") or _keras_op_layer(name))
    try:
        return serialization_lib._retrieve_class_or_fn(name, obj.get("registered_name"), obj.get("module"), "class",
                                                        obj, custom_objects={}) is not None
    except Exception:  # what Keras' own load raises for a class it cannot locate
        return False


def _keras_op_layer(name: str) -> bool:
    """Keras 3 writes ops called on symbolic tensors (``x != 0`` for a mask: NotEqual) as layers named after the op
    class in keras.src.ops; they are Keras' own, not custom code."""
    import importlib

    for module in ("keras.src.ops.numpy", "keras.src.ops.math", "keras.src.ops.nn", "keras.src.ops.core"):
        try:
            if hasattr(importlib.import_module(module), name):
                return True
        except ImportError:
            continue
    return False


def code_refusal(source, config, exc) -> PorterError | None:
    """The refusal naming what in ``config`` needs Python code Keras' safe_mode will not run or cannot find (a Lambda
    layer, a subclassed model, a custom layer class that is not registered where porter runs), with the way
    forward; None when the failure is something else."""
    legacy = isinstance(config, str)
    try:
        tree = json.loads(config) if legacy else config
        objects = list(_objects(tree))
    except (ValueError, RecursionError):
        return None
    for obj, _ in objects:
        if obj["class_name"] != "Lambda":
            continue
        function = (obj.get("config") or {}).get("function")
        if ("Lambda" in str(exc) or (isinstance(function, dict) and function.get("class_name") == "__lambda__")
                or (obj.get("config") or {}).get("function_type") == "lambda"):
            layer = (obj.get("config") or {}).get("name", "?")
            return PorterError(
                f"{source}: layer {layer!r} is a Lambda layer: its function is Python code stored in the file, which "
                "Keras' safe_mode refuses to deserialize (porter loads .keras files with safe_mode=True and runs no "
                "code from model files)",
                hint=EXPORT_HINT)
    try:
        unresolved = [(obj, top) for obj, top in objects
                      if not obj["class_name"].startswith("__") and obj["class_name"] not in _SPECIAL
                      and not _resolves(obj, legacy)]
    except Exception:
        return None
    if not unresolved:
        return None
    obj, top = unresolved[0]
    registered = obj.get("registered_name")
    named = f"class {obj['class_name']!r}" + (f" (registered as {registered!r})" if registered and registered != obj["class_name"] else "")
    where = f" from module {obj['module']!r}" if obj.get("module") else ""
    why = ("Keras cannot rebuild it without that class's Python code: it is not a Keras class, and registering it "
           "with keras.saving.register_keras_serializable in your own code does not reach porter, which imports no "
           "code of yours")
    if top:
        message = f"{source}: the model is a subclassed Keras model of {named}{where}; {why}"
    elif "compile_config" in obj:  # Keras saves a compile config for models only: a keras.Model subclass as a layer
        message = (f"{source}: layer {_name(obj)!r} is a subclassed Keras model of {named}{where}, used as a layer of "
                   f"the model: its call() is Python code the file does not hold; {why}")
    else:
        maybe = " (or a subclassed keras.Model)" if legacy else ""  # a legacy config does not tell them apart
        message = f"{source}: layer {_name(obj)!r} is of {named}{where}, a custom layer class{maybe}; {why}"
    others = [f"also needs its code: {_name(o)!r} ({o['class_name']})" for o, _ in unresolved[1:6]]
    return PorterError(message, problems=others, hint=EXPORT_HINT)


def _name(obj) -> str:
    """A serialized layer's name: in its config, or (a subclassed model, whose config may lack it) beside it."""
    return (obj.get("config") or {}).get("name") or obj.get("name") or "?"


@contextlib.contextmanager
def _concrete_variables_allowed():
    """Inside a StatelessScope Keras refuses a variable made from a value rather than an initializer; keras-hub's
    Task compiles in its constructor, and the optimizer's ``iterations`` is one. Its value is already in memory,
    so such a variable is made as outside the scope (nothing more allocated); initializers stay deferred."""
    from keras.src.backend.common import global_state
    from keras.src.backend.common.variables import Variable

    original = Variable.__init__

    def init(self, initializer, *args, **kwargs):
        if callable(initializer) or isinstance(initializer, str):
            return original(self, initializer, *args, **kwargs)
        scope = global_state.get_global_attribute("stateless_scope")
        global_state.set_global_attribute("stateless_scope", None)
        try:
            return original(self, initializer, *args, **kwargs)
        finally:
            global_state.set_global_attribute("stateless_scope", scope)

    Variable.__init__ = init
    try:
        yield
    finally:
        Variable.__init__ = original


# ------------------------------------------------------------------ what the weights file holds
class _Window(io.RawIOBase):
    """A stored (uncompressed) zip member as a seekable file: h5py reads only the metadata pages it needs
    (zipfile's own reader rewinds to the member's start on every backward seek: 1.5 s for ResNet50)."""

    def __init__(self, f, start: int, size: int):
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        self.pos = max(0, min(self.size, (offset, self.pos + offset, self.size + offset)[whence]))
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, buffer):
        self.f.seek(self.start + self.pos)
        data = self.f.read(min(len(buffer), self.size - self.pos))
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


@contextlib.contextmanager
def _member_file(path, zf, info):
    """``info``'s bytes as a seekable file: a window onto the archive when stored, else unpacked to a temporary
    file (its size is already bounded by the config's weights); never whole in memory."""
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            header = raw.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise _bad(path, f"entry {info.filename!r} has no valid local header")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            yield _Window(raw, info.header_offset + 30 + name_len + extra_len, info.file_size)
    else:
        with tempfile.TemporaryFile() as tmp, zf.open(info) as member:
            shutil.copyfileobj(member, tmp, 16 * MiB)
            tmp.seek(0)
            yield tmp


def h5_datasets(f, skip: str = "optimizer") -> tuple[int, int, tuple]:
    """(bytes of the datasets outside top-level ``skip``, of all datasets, the largest outside (path, shape,
    bytes)), from the HDF5 metadata only."""
    import h5py

    model = every = 0
    largest = ("(none)", (), 0)

    def visit(name, obj):
        nonlocal model, every, largest
        if isinstance(obj, h5py.Dataset):
            n = math.prod(obj.shape or ()) * obj.dtype.itemsize
            every += n
            if name.split("/", 1)[0] != skip:
                model += n
                largest = max(largest, (name, tuple(obj.shape), n), key=lambda x: x[2])

    f.visititems(visit)
    return model, every, largest


def _open_h5(source, file):
    import h5py

    try:
        return h5py.File(file, "r")
    except (OSError, ValueError) as exc:
        raise _bad(source, f"is not a readable HDF5 file ({exc})") from None


# ------------------------------------------------------------------ the comparisons
def _slack(declared: Declared) -> int:
    return SLACK + PER_VARIABLE * declared.count


def _check_fits(source, config_name: str, declared: Declared) -> None:
    from porter.resources.memory_estimate import available_bytes

    free = available_bytes()
    if free is not None and declared.total > free:
        raise _bad(source, f"{config_name} declares {declared.text()}, more than the {free:,} bytes of memory "
                           "available to build it", hint="load it on a machine with more memory")


def _check_file_size(source, config_name, declared: Declared, entry: str, size: int, optimizer: bool) -> None:
    """The weights file's unpacked size against the config's weights, both ways, before a byte is unpacked."""
    most = int(FACTOR * declared.total * (1 + (OPTIMIZER_SLOTS if optimizer else 0))) + _slack(declared)
    if size > most:
        raise _bad(source, f"entry {entry!r} declares {size:,} bytes unpacked, past porter's limit of {most:,} for the "
                           f"{declared.total:,} bytes of weights {config_name} declares",
                   hint="the weights file is far larger than its model (a zip bomb?); re-save the model")
    if declared.total > FACTOR * size + SLACK:
        raise _bad(source, f"{config_name} declares {declared.text()}, but {entry!r} holds {size:,} bytes "
                           f"(porter's limit: {FACTOR}x that + {SLACK:,})")


def _check_datasets(source, config_name, declared: Declared, entry: str, size: int, held) -> None:
    """The datasets the weights file declares against the config's weights (Keras reads a dataset whole before it
    checks its shape) and against the file's size (a file padded past its datasets)."""
    model, every, (name, shape, nbytes) = held
    if model > FACTOR * declared.total + SLACK:
        raise _bad(source, f"the datasets of {entry!r} declare {model:,} bytes (largest: {name!r} {shape}, {size_text(nbytes)}), "
                           f"past porter's limit of {int(FACTOR * declared.total + SLACK):,} for the {declared.total:,} "
                           f"bytes of weights {config_name} declares")
    if declared.total > FACTOR * model + SLACK:
        raise _bad(source, f"{config_name} declares {declared.text()}, but the datasets of {entry!r} hold {model:,} bytes "
                           f"(porter's limit: {FACTOR}x that + {SLACK:,})")
    if size > FACTOR * every + _slack(declared):
        raise _bad(source, f"entry {entry!r} declares {size:,} bytes, past porter's limit of "
                           f"{int(FACTOR * every + _slack(declared)):,} for the {every:,} bytes of datasets it holds")


# ------------------------------------------------------------------ the three formats
def _key(path) -> tuple:
    """``path`` as it is now: a file checked once is not checked again by the next loader in this process."""
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def _register_classes(config) -> None:
    """The classes a porter or keras-hub model's config names, registered as the real load registers them."""
    import porter.zoo.bert.keras_model  # noqa: F401

    text = json.dumps(config)
    if '"keras_hub' in text or '"porter.zoo.keras_hub' in text:
        import porter.zoo.keras_hub.fixes  # noqa: F401  imports keras_hub and registers porter's subclasses


def check_keras_archive(path) -> None:
    """Refuse a .keras archive whose entries, config or weights would make Keras allocate or unpack more than
    the model it describes (module doc): PorterError naming the file, the entry and the sizes."""
    path, key = Path(path), _key(path)
    if key in _checked:
        return
    with _open(path) as zf:
        config = _member_json(zf, path, "config.json")
        if "metadata.json" in zf.NameToInfo:
            _member_json(zf, path, "metadata.json")
        weights = [zf.getinfo(n) for n in WEIGHTS if n in zf.NameToInfo]
        if not weights:
            raise _bad(path, "has no model.weights.h5 entry", hint="save the model with model.save('model.keras')")
        other = [i for i in zf.infolist() if i.filename not in ("config.json", "metadata.json", *WEIGHTS)]
        if sum(i.file_size for i in other) > OTHER_LIMIT:
            raise _bad(path, f"its entries besides the config and weights ({', '.join(repr(i.filename) for i in other[:5])}) "
                             f"declare {sum(i.file_size for i in other):,} bytes unpacked, past porter's limit of {OTHER_LIMIT:,}")
        _register_classes(config)
        declared = declared_weights(config, path)
        info = weights[0]
        optimizer = isinstance(config, dict) and bool((config.get("compile_config") or {}).get("optimizer"))
        _check_file_size(path, "config.json", declared, info.filename, info.file_size, optimizer)
        _check_fits(path, "config.json", declared)
        if info.filename.endswith(".h5"):
            with _member_file(path, zf, info) as file, _open_h5(f"{path}: entry {info.filename!r}", file) as f:
                held = h5_datasets(f)
            _check_datasets(path, "config.json", declared, info.filename, info.file_size, held)
    _checked.add(key)


def check_keras_h5(path) -> None:
    """A legacy Keras HDF5 model (model.save('m.h5')): its model_config attribute's size and depth, then the
    weights it declares against the datasets under model_weights (Keras reads each whole before checking it)."""
    import h5py

    from porter.readers.keras2_config import h5_config_text, keras2_h5_hint, written_by_keras2

    path, key = Path(path), _key(path)
    if key in _checked:
        return
    with _open_h5(path, path) as f:
        if "model_config" not in f.attrs:
            return  # Keras refuses it itself ("No model config found"), having built nothing
        attr = f.attrs.get_id("model_config")
        kind = attr.get_type()
        # A fixed-length string (Keras 3 writes one) declares its size. A variable-length one (tf_keras) does not,
        # and HDF5 cannot tell it without reading it: it lies in the file's bytes outside its datasets' data.
        variable = isinstance(kind, h5py.h5t.TypeStringID) and kind.is_variable_str()
        if variable:
            stored = []
            f.visititems(lambda _, obj: stored.append(obj.id.get_storage_size()) if isinstance(obj, h5py.Dataset) else None)
            size = os.path.getsize(path) - sum(stored)
        else:
            size = kind.get_size() * math.prod(attr.shape or ())
        if size > JSON_LIMIT:
            what = f"is a variable-length string in the {size:,} bytes of the file besides its datasets" if variable \
                else f"declares {size:,} bytes"
            raise _bad(path, f"attribute 'model_config' {what}, past porter's limit of {JSON_LIMIT:,} for a JSON text")
        text = f.attrs["model_config"]
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        _register_classes(parse_json(text, f"{path}: attribute 'model_config'"))  # size and depth checked
        # a tf_keras (Keras 2) config in the form Keras 3 rebuilds it, as load_keras_artifact will (keras2_config)
        version = f.attrs.get("keras_version")
        text = h5_config_text(text, version)
        hint = keras2_h5_hint(version) if written_by_keras2(version) else None
        declared = declared_weights(text, path, legacy=True, hint=hint)  # parsed again as Keras does (json_utils.decode)
        _check_fits(path, "its model_config", declared)
        if "model_weights" in f:  # else Keras refuses it before building anything more
            held = h5_datasets(f["model_weights"])
            _check_datasets(path, "its model_config", declared, "model_weights", held[1], held)
    _checked.add(key)


def check_preset(path) -> dict:
    """A keras-hub preset folder: every file inside it and regular, its JSON checked, the weights its spec
    (task.json, else config.json) declares against model.weights.h5 (+ task.weights.h5) on disk. The spec."""
    path = Path(path)
    check_tree(path, "keras-hub preset file")
    for name in ("config.json", "metadata.json"):
        if (path / name).is_file():
            read_json(path / name, path)
    spec_name = "task.json" if (path / "task.json").is_file() else "config.json"
    spec = read_json(path / spec_name, path)
    files = [path / n for n in ("model.weights.h5", "task.weights.h5") if (path / n).is_file()]
    key = tuple(_key(f) for f in (path / spec_name, *files))
    if key in _checked:
        return spec
    _register_classes(spec)
    declared = declared_weights(spec, path / spec_name)
    entry, size = " + ".join(f.name for f in files), sum(os.path.getsize(f) for f in files)
    _check_file_size(path, spec_name, declared, entry, size, optimizer=False)
    _check_fits(path, spec_name, declared)
    held = (0, 0, ("(none)", (), 0))
    for file in files:
        with _open_h5(file, file) as f:
            model, every, largest = h5_datasets(f)
        held = (held[0] + model, held[1] + every, max(held[2], largest, key=lambda x: x[2]))
    _check_datasets(path, spec_name, declared, entry, size, held)
    _checked.add(key)
    return spec

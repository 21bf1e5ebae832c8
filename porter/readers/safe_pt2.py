"""Check a .pt2 archive before torch.export.load sees it: a model file is data, never code.

torch.export.load runs code an archive can ask for (read in torch 2.13's
torch/export/pt2_archive/_package.py and torch/_export/serde/serialize.py):
  - a weight or constant marked ``use_pickle`` is read with torch.load(weights_only=False);
  - a constant named ``custom_obj_*`` / ``opaque_obj_*`` is unpickled (torchbind / pickle.loads);
  - the legacy layouts (``data/weights/<model>.pt``, a top-level ``version`` zip) and sample inputs
    that weights_only cannot read fall back to torch.load(weights_only=False);
  - ``data/aotinductor/`` holds compiled shared libraries that get dlopen'ed;
  - every symbolic-shape ``expr_str`` goes through sympy.sympify, which is eval().
porter refuses all of these before loading, naming the entry. Graph node targets need no check
here: torch's verifier refuses any target that is not an ATen/higher-order op when it loads.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path

from porter.errors import PorterError
from porter.checks.model_files import DEPTH_LIMIT, depth_of, duplicate_entry

_HINT = ("porter loads only plain torch.export.save archives of tensors; re-save the model with "
         "torch.export.save(torch.export.export(model, args), 'model.pt2') from code you trust")
# A model's graph JSON: a few MB for a small model, tens of MB for a large one.
PT2_JSON_LIMIT = 256 << 20
_TENSOR_CONSTANT = "tensor_"  # torch's TENSOR_CONSTANT_FILENAME_PREFIX; custom_obj_/opaque_obj_ are pickles
# Names a symbolic-shape expression may use: sympy's constructors as torch's serializer prints them
# (srepr) and torch.utils._sympy.functions; symbols are s0, u3, ... Anything else is refused.
_SYMPY_NAMES = {
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan",
    "Equality", "Unequality", "And", "Or", "Not", "true", "false", "True", "False", "oo", "zoo", "nan",
    "floor", "ceiling", "sqrt", "Piecewise", "ExprCondPair", "Half", "One", "Zero", "NegativeOne",
    "Infinity", "NegativeInfinity", "IntInfinity", "NegativeIntInfinity", "int_oo", "S", "BooleanTrue", "BooleanFalse",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
    # keyword arguments of Symbol(...)
    "integer", "positive", "nonnegative", "real", "finite", "negative", "nonpositive", "evaluate",
}
_SYMBOL = re.compile(r"[a-z]{1,6}\d+")
_SAFE_NODES = (ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.UnaryOp, ast.USub,
               ast.UAdd, ast.Not, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
               ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.BoolOp, ast.And, ast.Or,
               ast.BitAnd, ast.BitOr, ast.Tuple)
# pytree types porter may register for an archive that names them: the modules are porter's choice, never the archive's
_KNOWN_OUTPUT_MODULES = {"transformers.modeling_outputs."}


def refuse(path: Path, entry: str, why: str):
    raise PorterError(f"{path}: refusing to load entry {entry!r}: {why}; loading it would run code "
                      "from the model file", hint=_HINT)


def check_pt2_archive(path: Path) -> None:
    """Raise PorterError naming the first entry of ``path`` that torch.export.load would execute."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            twice = duplicate_entry(zf)
            if twice is not None:  # zipfile and torch's reader may pick different copies
                refuse(path, twice, "the archive holds two entries of this name")
            if "version" in names:  # torch.export.load's pre-2.8 fallback unpickles serialized_state_dict.pt
                refuse(path, "version", "the legacy torch.export zip layout stores its weights as pickles")
            root = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
            entries = {n[len(root):]: n for n in names if n.startswith(root)}
            for entry, full in sorted(entries.items()):
                _check_entry(path, zf, entry, full, entries)
    except zipfile.BadZipFile as exc:
        raise PorterError(f"{path} is not a torch.export archive (a .pt2 is a zip file): {exc}", hint=_HINT) from None


def _check_entry(path, zf, entry: str, full: str, entries: dict) -> None:
    if entry.startswith("data/aotinductor/"):
        refuse(path, full, "an AOTInductor package holds compiled shared libraries")
    weights_or_constants = entry.startswith(("data/weights/", "data/constants/"))
    if weights_or_constants and entry.endswith(".pt"):
        refuse(path, full, "legacy weights and constants are pickles")
    _check_size(path, zf.getinfo(full))
    if weights_or_constants and entry.endswith("_config.json"):
        _check_payload_config(path, full, _json_entry(path, zf, full))
    if entry.startswith("models/"):  # torch loads every entry here as a program
        _check_model_json(path, full, _json_entry(path, zf, full))
    if entry.startswith("data/sample_inputs/"):
        _check_sample_inputs(path, full, zf.read(full))


def _check_size(path, info) -> None:
    """torch.export.save stores entries uncompressed; a compressed entry that unpacks to far more than it
    takes is a zip bomb, refused by the sizes the central directory declares (zipfile stops at them)."""
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 64 * info.compress_size + (1 << 20):
        raise PorterError(f"{path}: entry {info.filename!r} declares {info.file_size:,} bytes unpacked from "
                          f"{info.compress_size:,} compressed, past porter's limit of 64x for an archive "
                          "torch.export.save writes uncompressed", hint=_HINT)


def _json_entry(path, zf, full: str):
    """A JSON entry, its declared size checked before it is read and its depth after (model_files)."""
    from porter.checks.model_files import parse_json, zip_member

    try:
        return parse_json(zip_member(zf, full, path, size_limit=PT2_JSON_LIMIT, what="JSON"), f"{path}: entry {full!r}")
    except PorterError as exc:
        raise PorterError(exc.message, hint=exc.hint or _HINT) from None


def _check_payload_config(path, full: str, config: dict) -> None:
    items = config.get("config") if isinstance(config, dict) else None
    if not isinstance(items, dict) or not all(isinstance(m, dict) for m in items.values()):
        raise PorterError(f"{path}: entry {full!r} is not a torch.export payload config", hint=_HINT)
    for fqn, meta in items.items():
        name = str(meta.get("path_name", ""))
        if meta.get("use_pickle"):
            refuse(path, f"{full}: {fqn}", f"it is stored as a pickle ({name})")
        if "/constants/" in full and not name.startswith(_TENSOR_CONSTANT):
            refuse(path, f"{full}: {fqn}", f"{name} is a pickled Python or TorchScript object, not a tensor")


def _check_sample_inputs(path, full: str, data: bytes) -> None:
    # torch reads these with weights_only=True and, when that fails, again with weights_only=False
    from porter.process.frameworks import torch

    try:
        torch().load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        refuse(path, full, f"it holds more than tensors ({type(exc).__name__})")


def _check_model_json(path, full: str, model: dict) -> None:
    for expr in _values_of(model, "expr_str"):
        if not safe_sym_expr(expr):
            refuse(path, full, f"the shape expression {expr[:120]!r} is not a plain sympy expression")


def _values_of(tree, key: str):
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and isinstance(v, str):
                yield v
            else:
                yield from _values_of(v, key)
    elif isinstance(tree, list):
        for v in tree:
            yield from _values_of(v, key)


def safe_sym_expr(text: str) -> bool:
    """True when ``text`` is a call tree of sympy constructors, symbols and literals (no attributes,
    subscripts or other names), so sympy.sympify's eval() can only build an expression."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE_NODES):
            return False
        if isinstance(node, ast.Name) and node.id not in _SYMPY_NAMES and not _SYMBOL.fullmatch(node.id):
            return False
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            return False
        if isinstance(node, ast.keyword) and node.arg not in _SYMPY_NAMES:
            return False
    return True


def pytree_type_names(path: Path) -> set[str]:
    """The pytree type names the archive's input and output specs use (builtins excluded)."""
    found: set[str] = set()
    with zipfile.ZipFile(path) as zf:
        for full in zf.namelist():
            if re.search(r"(^|/)models/.+\.json$", full):
                for key in ("in_spec", "out_spec"):
                    for spec in _values_of(_json_entry(path, zf, full), key):
                        if depth_of(spec) > DEPTH_LIMIT:
                            raise PorterError(f"{path}: entry {full!r} has a {key} nested past porter's limit of {DEPTH_LIMIT} levels", hint=_HINT)
                        try:
                            found |= set(_values_of(json.loads(spec), "type"))
                        except ValueError:
                            continue
    return {t for t in found if not t.startswith(("builtins.", "collections."))}


def register_output_types(path: Path) -> None:
    """Make the transformers ModelOutput types an HF model's archive names known to torch's pytree.

    Importing transformers.modeling_outputs (a fixed module porter chooses) registers every
    ModelOutput subclass in it under the name torch.export.save wrote; a type from anywhere else
    is refused by name, before torch.export.load, and nothing the archive names is imported."""
    from torch.utils import _pytree

    missing = {t for t in pytree_type_names(path) if t not in _pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE}
    if any(t.startswith(tuple(_KNOWN_OUTPUT_MODULES)) for t in missing):
        import transformers.modeling_outputs  # noqa: F401  (registers its ModelOutput classes)

        missing = {t for t in missing if t not in _pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE}
    if missing:
        raise PorterError(
            f"{path} returns or takes {', '.join(sorted(missing))}, a type porter does not know",
            hint="porter registers only torch's own types and transformers.modeling_outputs; export a forward "
                 "that returns a tensor, a tuple or a dict of tensors",
        )

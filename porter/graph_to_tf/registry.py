"""The converter table: one function per ATen op overload (or Python operator on SymInts).

A converter mirrors the op's schema: ``aten.add.Tensor(self, other, *, alpha=1)`` becomes
``def add(x, other, alpha=1)``. It receives TF tensors for run-time values, Python numbers,
lists and dtypes for the rest, and returns TF tensors (a tuple for multi-output ops). The same
function runs inside ``tf.function`` (building the SavedModel) and eagerly (localisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from porter.errors import PorterError


@dataclass(frozen=True)
class Converter:
    fn: Callable
    target: object  # torch OpOverload or a Python callable such as operator.mul
    # node -> None, or why this particular call cannot be converted (checked before converting)
    check: Callable | None = None


_REGISTRY: dict[object, Converter] = {}


def op_name(target) -> str:
    """'aten.add.Tensor' for an OpOverload, 'operator.mul' for a Python function."""
    if isinstance(target, str):
        return target
    if hasattr(target, "_schema") or hasattr(target, "_overloadname"):
        return str(target)
    module = getattr(target, "__module__", None) or ""
    module = "operator" if module in ("_operator", "operator") else module
    return f"{module}.{getattr(target, '__name__', repr(target))}".lstrip(".")


def register(*targets, check: Callable | None = None):
    """Register ``fn`` for each target; registering one target twice raises.

    A target may be an op's name (``"transformers.grouped_mm_fallback.default"``) for a custom op
    that exists only once its library is imported: lookup matches it by ``op_name``.
    """

    def decorate(fn):
        for target in targets:
            if target in _REGISTRY:
                raise PorterError(f"converter for {op_name(target)} registered twice "
                                  f"({_REGISTRY[target].fn.__module__}.{_REGISTRY[target].fn.__name__} "
                                  f"and {fn.__module__}.{fn.__name__})")
            _REGISTRY[target] = Converter(fn, target, check)
        return fn

    return decorate


def lookup(target) -> Converter | None:
    _load_ops()
    found = _REGISTRY.get(target)
    return found if found is not None or isinstance(target, str) else _REGISTRY.get(op_name(target))


def registered() -> dict[object, Converter]:
    _load_ops()
    return dict(_REGISTRY)


_LOADED = False


def _load_ops() -> None:
    # The op modules import tensorflow only inside converters; importing them fills the table.
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import porter.graph_to_tf.ops  # noqa: F401

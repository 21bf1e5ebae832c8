"""The converter table: one function per ONNX op, keyed by (domain, op type, since-version).

A converter reads like the ONNX spec: inputs positional (``None`` for a missing
optional input), attributes as keywords with the spec's defaults. It receives
constants as ``torch.Tensor`` and run-time values as ``torch.fx.Proxy`` and
calls torch on them, so the same function both folds constants and records
graph nodes.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable

import onnx

from porter.errors import PorterError

ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Converter:
    fn: Callable
    op_type: str
    domain: str
    since_version: int
    # Input positions that are read as sizes/indices (``ints(...)``), so a
    # symbolic shape may flow into them without becoming a tensor first.
    shape_inputs: tuple[int, ...] = ()
    # attribute name -> allowed values (a collection) or predicate(value) -> bool
    allowed: dict = field(default_factory=dict)

    @functools.cached_property
    def attribute_names(self) -> frozenset[str]:
        params = inspect.signature(self.fn).parameters.values()
        return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def attribute_problem(self, name: str, value) -> str | None:
        """Why this attribute value cannot be converted, or None when it can."""
        if name not in self.attribute_names:
            return f"attribute '{name}' is not supported"
        rule = self.allowed.get(name)
        if rule is None:
            return None
        ok = rule(value) if callable(rule) else value in rule
        return None if ok else f"attribute {name}={value!r} is not supported"


_REGISTRY: dict[tuple[str, str, int], Converter] = {}


@functools.lru_cache(maxsize=None)
def _since_versions() -> dict[tuple[str, str], tuple[int, ...]]:
    versions: dict[tuple[str, str], set[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        versions.setdefault((schema.domain, schema.name), set()).add(schema.since_version)
    return {key: tuple(sorted(v)) for key, v in versions.items()}


def register(op_type: str, *, domain: str = "", since: int = 1, until: int | None = None,
             shape_inputs: tuple[int, ...] = (), allowed: dict | None = None):
    """Register ``fn`` for every since-version of ``op_type`` in [since, until]."""

    def decorate(fn):
        known = _since_versions().get((domain, op_type))
        if not known:
            raise PorterError(f"cannot register {op_type!r}: onnx has no such op in domain {domain!r}")
        chosen = [v for v in known if since <= v <= (until or 10**6)]
        if not chosen:
            raise PorterError(f"cannot register {op_type!r}: no since-version in [{since}, {until}]")
        for version in chosen:
            key = (domain, op_type, version)
            if key in _REGISTRY:
                raise PorterError(f"converter for {key} registered twice "
                                  f"({_REGISTRY[key].fn.__module__} and {fn.__module__})")
            _REGISTRY[key] = Converter(fn, op_type, domain, version, tuple(shape_inputs), dict(allowed or {}))
        return fn

    return decorate


def lookup(domain: str, op_type: str, opset: int) -> Converter | None:
    """The converter for ``op_type`` as defined at ``opset``, or None."""
    domain = "" if domain in ONNX_DOMAINS else domain
    try:
        since = onnx.defs.get_schema(op_type, opset, domain).since_version
    except onnx.defs.SchemaError:
        return None
    return _REGISTRY.get((domain, op_type, since))


def registered_ops() -> list[tuple[str, str, int]]:
    return sorted(_REGISTRY)

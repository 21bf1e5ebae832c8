"""The weight-mapping rule engine: rules are data (mappings/*.toml), not code.

A rule names a torch-side pattern, a tf-side pattern (placeholders such as
``{i}`` match one dotted/slashed name component) and the operations that turn
the torch tensor into the tf tensor. Every operation has an inverse, so one
file serves both directions. ``plan`` checks the whole mapping (every source
used once, every target filled once, every shape agreed) and reports all
problems together before a single tensor moves.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from porter.errors import MappingError, PorterError

SIDES = ("torch", "tf")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


# ----------------------------------------------------------------- operations
@dataclass(frozen=True)
class Transpose:
    perm: tuple[int, ...] | None = None  # None: reverse all axes (a dense kernel)

    def shape(self, shape):
        perm = self.perm or tuple(reversed(range(len(shape))))
        if len(perm) != len(shape):
            return None
        return tuple(shape[p] for p in perm)

    def apply(self, array, target_shape):
        return np.transpose(array, self.perm)

    def inverse(self):
        return Transpose(None if self.perm is None else tuple(int(i) for i in np.argsort(self.perm)))


@dataclass(frozen=True)
class Reshape:
    """Reshape to the other side's shape; the planner supplies both shapes."""

    def shape(self, shape, target_shape=None):
        return target_shape

    def apply(self, array, target_shape):
        return np.reshape(array, target_shape)

    def inverse(self):
        return Reshape()


_OPS = {"transpose": Transpose, "reshape": Reshape}


def _parse_op(spec, where: str):
    spec = {"op": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("op", None)
    if name not in _OPS:
        raise PorterError(f"{where}: unknown mapping operation {name!r}; known: {', '.join(sorted(_OPS))}")
    if "perm" in spec:
        spec["perm"] = tuple(spec["perm"])
    try:
        return _OPS[name](**spec)
    except TypeError as exc:
        raise PorterError(f"{where}: bad arguments for operation {name!r}: {exc}") from None


# ---------------------------------------------------------------------- rules
def _compile(pattern: str) -> re.Pattern:
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^./]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


@dataclass
class Rule:
    source: str
    target: str
    ops: tuple = ()

    def __post_init__(self):
        self._src = _compile(self.source)
        self._dst = _compile(self.target)
        if set(self._src.groupindex) != set(self._dst.groupindex):
            raise PorterError(f"mapping rule {self.source!r} -> {self.target!r} uses different placeholders on each side")

    def match_source(self, key):
        m = self._src.match(key)
        return None if m is None else self.target.format(**m.groupdict())

    def match_target(self, key):
        m = self._dst.match(key)
        return None if m is None else self.source.format(**m.groupdict())

    def reversed(self) -> "Rule":
        return Rule(self.target, self.source, tuple(op.inverse() for op in reversed(self.ops)))


@dataclass
class RuleSet:
    """Rules in one direction, with keys to ignore and an optional source prefix."""

    name: str
    rules: list[Rule]
    source_side: str
    ignore_source: list[re.Pattern] = field(default_factory=list)
    ignore_target: list[re.Pattern] = field(default_factory=list)
    source_prefix: str = ""

    @classmethod
    def load(cls, family: str, *, source: str, **params) -> "RuleSet":
        """Load ``mappings/<family>.toml`` for the direction that reads ``source`` ('torch' or 'tf')."""
        if source not in SIDES:
            raise PorterError(f"mapping direction must start at one of {SIDES}, not {source!r}")
        try:
            text = resources.files("porter.mappings").joinpath(f"{family}.toml").read_text()
        except FileNotFoundError:
            raise PorterError(f"no mapping rules for {family!r} (looked for mappings/{family}.toml)") from None
        return cls.from_toml(tomllib.loads(text), family, source=source, **params)

    @classmethod
    def from_toml(cls, data: dict, family: str, *, source: str, **params) -> "RuleSet":
        def fill(text: str) -> str:
            # only the file's parameters are substituted here; layer placeholders stay
            return _PLACEHOLDER.sub(lambda m: str(params.get(m.group(1), m.group(0))), text)

        rules = []
        for n, raw in enumerate(data.get("rules", [])):
            where = f"mappings/{family}.toml rule {n + 1}"
            if set(raw) - {"torch", "tf", "ops"} or not {"torch", "tf"} <= set(raw):
                raise PorterError(f"{where}: a rule has keys 'torch', 'tf' and optionally 'ops'; got {sorted(raw)}")
            rule = Rule(fill(raw["torch"]), fill(raw["tf"]), tuple(_parse_op(op, where) for op in raw.get("ops", [])))
            rules.append(rule if source == "torch" else rule.reversed())
        ignore = {side: [_compile(fill(p)) for p in data.get(side, {}).get("ignore", [])] for side in SIDES}
        target = "tf" if source == "torch" else "torch"
        return cls(
            family, rules, source, ignore[source], ignore[target], fill(data.get(source, {}).get("optional_prefix", ""))
        )

    def plan(self, source_shapes: dict, target_shapes: dict) -> "Plan":
        return plan(self, source_shapes, target_shapes)


# ----------------------------------------------------------------------- plan
@dataclass
class Step:
    source: str
    stored_as: str  # the key in the checkpoint (with its prefix, if any)
    target: str
    ops: tuple
    source_shape: tuple
    target_shape: tuple


@dataclass
class Plan:
    steps: list[Step]
    ignored: list[str]

    def run(self, get):
        """Yield (target key, array) for every step; ``get`` reads one source tensor by stored key."""
        for step in self.steps:
            array = get(step.stored_as)
            for op in step.ops:
                array = op.apply(array, step.target_shape)
            yield step.target, np.ascontiguousarray(array)


def _shape_through(ops, shape, target_shape):
    for op in ops:
        shape = op.shape(shape, target_shape) if isinstance(op, Reshape) else op.shape(shape)
        if shape is None:
            return None
    return tuple(shape)


def plan(rules: RuleSet, source_shapes: dict, target_shapes: dict) -> Plan:
    problems, steps, ignored, filled = [], [], [], {}
    prefix = rules.source_prefix
    use_prefix = bool(prefix) and any(k.startswith(prefix) for k in source_shapes)
    for stored in sorted(source_shapes):
        key = stored[len(prefix) :] if use_prefix and stored.startswith(prefix) else stored
        if any(p.match(key) for p in rules.ignore_source):
            ignored.append(stored)
            continue
        hits = [(r, t) for r in rules.rules if (t := r.match_source(key)) is not None]
        if not hits:
            problems.append(f"unexpected tensor {stored!r} {tuple(source_shapes[stored])}: no mapping rule matches it")
            continue
        if len(hits) > 1:
            problems.append(f"tensor {stored!r} matches {len(hits)} rules ({', '.join(r.source for r, _ in hits)})")
            continue
        rule, target = hits[0]
        if target not in target_shapes:
            problems.append(f"unexpected tensor {stored!r}: it maps to {target!r}, which the target model does not have")
            continue
        if target in filled:
            problems.append(f"{target!r} is filled twice: from {filled[target]!r} and {stored!r}")
            continue
        filled[target] = stored
        src_shape, dst_shape = tuple(source_shapes[stored]), tuple(target_shapes[target])
        got = _shape_through(rule.ops, src_shape, dst_shape)
        if got is None or got != dst_shape or int(np.prod(src_shape)) != int(np.prod(dst_shape)):
            via = "".join(f" -> {type(op).__name__.lower()}" for op in rule.ops)
            problems.append(f"shape mismatch: {stored!r} {src_shape}{via} gives {got}, but {target!r} is {dst_shape}")
            continue
        steps.append(Step(key, stored, target, rule.ops, src_shape, dst_shape))
    for target in sorted(set(target_shapes) - set(filled)):
        if any(p.match(target) for p in rules.ignore_target):
            continue
        expected = next((s for r in rules.rules if (s := r.match_target(target)) is not None), None)
        where = f" (expected from {(prefix if use_prefix else '') + expected!r})" if expected else " (no rule produces it)"
        problems.append(f"missing tensor: nothing fills {target!r} {tuple(target_shapes[target])}{where}")
    if problems:
        raise MappingError(
            f"the {rules.name} weight mapping ({rules.source_side} -> {'tf' if rules.source_side == 'torch' else 'torch'}) "
            f"does not fit: {len(problems)} problem(s)",
            problems=problems,
            hint="check that the checkpoint and config.json belong to the same model",
        )
    return Plan(steps, ignored)

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


@dataclass(frozen=True)
class Split:
    """One tensor -> ``parts`` tensors along ``axis`` (equal parts, or ``sizes``); a rule whose
    other side lists several names (GPT-2's fused c_attn -> query, key, value). Inverse: Concat."""

    axis: int = -1
    sizes: tuple[int, ...] | None = None
    parts: int = 0  # filled from the rule: how many names its other side lists

    def shapes(self, shapes):
        (shape,) = shapes
        axis = self.axis % len(shape)
        sizes = self.sizes or ((shape[axis] // self.parts,) * self.parts if self.parts and shape[axis] % self.parts == 0 else None)
        if sizes is None or sum(sizes) != shape[axis]:
            return None
        return [shape[:axis] + (n,) + shape[axis + 1 :] for n in sizes]

    def backward(self, shapes):  # the one shape before, from the part shapes after
        if any(s is None for s in shapes):
            return [None]
        axis = self.axis % len(shapes[0])
        return [shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1 :]]

    def apply_all(self, arrays, targets):
        (array,) = arrays
        cuts = np.cumsum([s[self.axis % array.ndim] for s in self.shapes([array.shape])])[:-1]
        return np.split(array, cuts, axis=self.axis)

    def inverse(self):
        return Concat(self.axis, self.sizes, self.parts)


@dataclass(frozen=True)
class Concat:
    """Several tensors -> one along ``axis``. Inverse: Split."""

    axis: int = -1
    sizes: tuple[int, ...] | None = None
    parts: int = 0

    def shapes(self, shapes):
        first = shapes[0]
        axis = self.axis % len(first)
        if any(len(s) != len(first) or s[:axis] + s[axis + 1 :] != first[:axis] + first[axis + 1 :] for s in shapes):
            return None
        if self.sizes and tuple(s[axis] for s in shapes) != tuple(self.sizes):
            return None
        return [first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1 :]]

    def backward(self, shapes):
        return [None] * self.parts if shapes[0] is None else Split(self.axis, self.sizes, self.parts).shapes(shapes)

    def apply_all(self, arrays, targets):
        return [np.concatenate(arrays, axis=self.axis)]

    def inverse(self):
        return Split(self.axis, self.sizes, self.parts)


_OPS = {"transpose": Transpose, "reshape": Reshape, "split": Split, "concat": Concat}
_FAN = (Split, Concat)  # the ops that change how many tensors flow


def _backward(op, shapes):
    """The shapes before ``op`` given the shapes after it (None where they cannot be known)."""
    if isinstance(op, _FAN):
        return op.backward(shapes)
    if isinstance(op, Transpose):
        return [None if s is None else Transpose(op.perm).inverse().shape(s) for s in shapes]
    return [None] * len(shapes)  # a reshape: what it started from is not determined by where it ends


def _expected(ops, target_shapes):
    """For each op, the shapes its output must have, propagated back from the final targets
    (a reshape reshapes to exactly these)."""
    after = [list(target_shapes)]
    for op in reversed(ops[1:]):
        after.insert(0, _backward(op, after[0]))
    return after


def run_ops(ops, items, target_shapes, *, shapes_only=False):
    """Run ``ops`` on a list of arrays (or, ``shapes_only``, of shapes); None when a shape does not fit."""
    for op, expected in zip(ops, _expected(ops, target_shapes)):
        if isinstance(op, _FAN):
            if shapes_only:
                items = op.shapes([tuple(s) for s in items])
            elif op.shapes([a.shape for a in items]) is None:
                return None
            else:
                items = op.apply_all(items, expected)
        elif len(items) != len(expected):
            return None
        elif isinstance(op, Reshape):
            if any(e is None or int(np.prod(e)) != int(np.prod(s if shapes_only else s.shape)) for e, s in zip(expected, items)):
                return None
            items = [tuple(e) if shapes_only else np.reshape(a, e) for e, a in zip(expected, items)]
        else:
            items = [op.shape(tuple(s)) if shapes_only else op.apply(a, None) for s, a in zip(items, items)]
        if items is None or any(s is None for s in items):
            return None
    return [tuple(s) for s in items] if shapes_only else items


def _parse_op(spec, where: str):
    spec = {"op": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("op", None)
    if name not in _OPS:
        raise PorterError(f"{where}: unknown mapping operation {name!r}; known: {', '.join(sorted(_OPS))}")
    for key in ("perm", "sizes"):
        if key in spec:
            spec[key] = tuple(spec[key])
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


def _names(side) -> tuple[str, ...]:
    return (side,) if isinstance(side, str) else tuple(side)


@dataclass
class Rule:
    """``source`` -> ``target`` through ``ops``. Either side may list several names: one tensor
    split into several (a ``split`` op), or several concatenated into one (``concat``).
    ``tied_to`` (torch-side name): when the model ties this tensor to another (an LM head tied
    to the embedding), the tensor is not stored on the torch side, and the tf side, where it
    has a variable of its own, is filled from ``tied_to`` through the same ops."""

    source: str | tuple
    target: str | tuple
    ops: tuple = ()
    tied_to: str | None = None

    def __post_init__(self):
        self.sources, self.targets = _names(self.source), _names(self.target)
        where = f"mapping rule {self.source!r} -> {self.target!r}"
        fans = [op for op in self.ops if isinstance(op, _FAN)]
        if len(self.sources) > 1 and len(self.targets) > 1 or len(fans) > 1:
            raise PorterError(f"{where}: a rule splits one tensor or concatenates several, not both")
        many = max(len(self.sources), len(self.targets))
        want = Split if len(self.targets) > 1 else Concat if len(self.sources) > 1 else None
        if many > 1 and (not fans or not isinstance(fans[0], want)):
            raise PorterError(f"{where}: {many} names on one side need a {want.__name__.lower()!r} op")
        if many == 1 and fans:
            raise PorterError(f"{where}: a {type(fans[0]).__name__.lower()!r} op needs several names on one side")
        # the fan op learns how many parts it makes
        self.ops = tuple(type(op)(op.axis, op.sizes, many) if isinstance(op, _FAN) else op for op in self.ops)
        self._src = [_compile(n) for n in self.sources]
        self._dst = [_compile(n) for n in self.targets]
        groups = {frozenset(c.groupindex) for c in self._src + self._dst}
        if len(groups) > 1:
            raise PorterError(f"{where} uses different placeholders on each side")
        if self.tied_to is not None and (many > 1 or groups != {frozenset()}):
            raise PorterError(f"{where}: a tied tensor is one tensor named without placeholders")

    def bind_source(self, key):
        """(position among the sources, placeholder values) when ``key`` is one of this rule's sources."""
        for n, pattern in enumerate(self._src):
            if (m := pattern.match(key)) is not None:
                return n, m.groupdict()
        return None

    def match_source(self, key):
        """The (first) target that ``key`` becomes, or None."""
        hit = self.bind_source(key)
        return None if hit is None else self.targets[0].format(**hit[1])

    def match_target(self, key):
        """The (first) source that fills ``key``, or None."""
        for pattern in self._dst:
            if (m := pattern.match(key)) is not None:
                return self.sources[0].format(**m.groupdict())
        return None

    def reversed(self) -> "Rule":
        return Rule(self.target, self.source, tuple(op.inverse() for op in reversed(self.ops)))


@dataclass
class RuleSet:
    """Rules in one direction, with keys to ignore, an optional source prefix and tied tensors."""

    name: str
    rules: list[Rule]
    source_side: str
    ignore_source: list[re.Pattern] = field(default_factory=list)
    ignore_target: list[re.Pattern] = field(default_factory=list)
    source_prefix: str = ""
    tied: list[Rule] = field(default_factory=list)  # source-side name -> target, filled twice over

    @classmethod
    def load(cls, family: str, *, source: str, **params) -> "RuleSet":
        """Load ``mappings/<family>.toml`` for the direction that reads ``source`` ('torch' or 'tf').
        ``params`` fill the file's placeholders; ``tied=True`` means the model ties its tied tensors."""
        if source not in SIDES:
            raise PorterError(f"mapping direction must start at one of {SIDES}, not {source!r}")
        try:
            text = resources.files("porter.mappings").joinpath(f"{family}.toml").read_text()
        except FileNotFoundError:
            raise PorterError(f"no mapping rules for {family!r} (looked for mappings/{family}.toml)") from None
        return cls.from_toml(tomllib.loads(text), family, source=source, **params)

    @classmethod
    def from_toml(cls, data: dict, family: str, *, source: str, tied: bool = False, **params) -> "RuleSet":
        def fill(text):
            # only the file's parameters are substituted here; layer placeholders stay
            if not isinstance(text, str):
                return [fill(t) for t in text]
            return _PLACEHOLDER.sub(lambda m: str(params.get(m.group(1), m.group(0))), text)

        target = "tf" if source == "torch" else "torch"
        ignore = {side: [_compile(fill(p)) for p in data.get(side, {}).get("ignore", [])] for side in SIDES}
        rules, tied_rules = [], []
        for n, raw in enumerate(data.get("rules", [])):
            where = f"mappings/{family}.toml rule {n + 1}"
            if set(raw) - {"torch", "tf", "ops", "tied_to"} or not {"torch", "tf"} <= set(raw):
                raise PorterError(f"{where}: a rule has keys 'torch', 'tf' and optionally 'ops', 'tied_to'; got {sorted(raw)}")
            try:
                rule = Rule(fill(raw["torch"]), fill(raw["tf"]), tuple(_parse_op(op, where) for op in raw.get("ops", [])),
                            fill(raw["tied_to"]) if "tied_to" in raw else None)
            except PorterError as exc:
                raise PorterError(f"{where}: {exc.message}") from None
            if rule.tied_to is not None and tied:
                # stored once, under tied_to: the torch-side name is never read nor written, and
                # the tf side, read back, is a copy of the tied tensor
                ignore[source if source == "torch" else target].append(_compile(rule.sources[0]))
                if source == "torch":
                    tied_rules.append(Rule(rule.tied_to, rule.target, rule.ops))
                else:
                    ignore["tf"].append(_compile(rule.targets[0]))
                continue
            rules.append(rule if source == "torch" else rule.reversed())
        return cls(family, rules, source, ignore[source], ignore[target],
                   fill(data.get(source, {}).get("optional_prefix", "")), tied_rules)

    def plan(self, source_shapes: dict, target_shapes: dict) -> "Plan":
        return plan(self, source_shapes, target_shapes)


def describe_rules(family: str) -> list[str]:
    """One line per rule of mappings/<family>.toml, for `porter zoo show` (placeholders left as written)."""
    data = tomllib.loads(resources.files("porter.mappings").joinpath(f"{family}.toml").read_text())
    lines = []
    for raw in data.get("rules", []):
        ops = [op if isinstance(op, str) else " ".join(f"{k}={v}" for k, v in op.items()).removeprefix("op=") for op in raw.get("ops", [])]
        tf = raw["tf"] if isinstance(raw["tf"], str) else " + ".join(raw["tf"])
        line = f"{raw['torch']} -> {tf}" + (f"  [{', '.join(ops)}]" if ops else "")
        lines.append(line + (f"  (tied to {raw['tied_to']} when tie_word_embeddings)" if "tied_to" in raw else ""))
    for side in SIDES:
        lines += [f"ignored on the {side} side: {p}" for p in data.get(side, {}).get("ignore", [])]
    return lines


# ----------------------------------------------------------------------- plan
@dataclass
class Step:
    source: str | tuple  # one key, or (for a concat) the keys in rule order
    stored_as: str | tuple  # the key(s) in the checkpoint (with its prefix, if any)
    target: str | tuple  # one key, or (for a split) the keys in rule order
    ops: tuple
    source_shape: tuple
    target_shape: tuple


@dataclass
class Plan:
    steps: list[Step]
    ignored: list[str]

    def run(self, get):
        """Yield (target key, array) for every target; ``get`` reads one source tensor by stored key."""
        for step in self.steps:
            stored, targets = _names(step.stored_as), _names(step.target)
            shapes = [step.target_shape] if isinstance(step.target, str) else list(step.target_shape)
            arrays = run_ops(step.ops, [get(k) for k in stored], shapes)
            for target in targets:  # hand each array over and drop it here: at most one copy (a transpose's) beside
                yield target, np.ascontiguousarray(arrays.pop(0))  # the source, none left when the next one is read


def _shape_through(ops, shape, target_shape):
    """Single tensor in, single tensor out (kept for callers of the 1:1 engine)."""
    out = run_ops(ops, [tuple(shape)], [tuple(target_shape)], shapes_only=True)
    return None if out is None else out[0]


def plan(rules: RuleSet, source_shapes: dict, target_shapes: dict) -> Plan:
    problems, steps, ignored, filled = [], [], [], {}
    prefix = rules.source_prefix
    use_prefix = bool(prefix) and any(k.startswith(prefix) for k in source_shapes)
    bare = {}  # key without the prefix -> stored key
    groups: dict = {}  # (rule index, placeholder values) -> {position: stored key}
    for stored in sorted(source_shapes):
        key = stored[len(prefix) :] if use_prefix and stored.startswith(prefix) else stored
        bare[key] = stored
        if any(p.match(key) for p in rules.ignore_source):
            ignored.append(stored)
            continue
        hits = [(n, hit) for n, r in enumerate(rules.rules) if (hit := r.bind_source(key)) is not None]
        if not hits:
            problems.append(f"unexpected tensor {stored!r} {tuple(source_shapes[stored])}: no mapping rule matches it")
            continue
        if len(hits) > 1:
            problems.append(f"tensor {stored!r} matches {len(hits)} rules ({', '.join(str(rules.rules[n].source) for n, _ in hits)})")
            continue
        n, (position, values) = hits[0]
        groups.setdefault((n, tuple(sorted(values.items()))), {})[position] = stored
    for (n, values), parts in groups.items():
        rule, values = rules.rules[n], dict(values)
        missing = [name.format(**values) for i, name in enumerate(rule.sources) if i not in parts]
        if missing:
            problems.append(f"{' + '.join(parts[i] for i in sorted(parts))!r} is only part of what rule "
                            f"{rule.source!r} needs: missing {', '.join(map(repr, missing))}")
            continue
        stored = tuple(parts[i] for i in range(len(rule.sources)))
        _add_step(rule, stored, values, source_shapes, target_shapes, filled, steps, problems, bare, prefix)
    for rule in rules.tied:  # a tied tensor: filled again from the tensor it is tied to, where the target has it
        target = rule.targets[0]
        if target in target_shapes and target not in filled:
            if rule.sources[0] not in bare:
                problems.append(f"{target!r} is tied to {rule.sources[0]!r}, which the checkpoint does not have")
                continue
            _add_step(rule, (bare[rule.sources[0]],), {}, source_shapes, target_shapes, filled, steps, problems, bare, prefix)
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


def _add_step(rule, stored, values, source_shapes, target_shapes, filled, steps, problems, bare, prefix):
    label = " + ".join(map(repr, stored))
    targets = [t.format(**values) for t in rule.targets]
    absent = [t for t in targets if t not in target_shapes]
    if absent:
        filled.update({t: label for t in targets if t not in absent})  # one problem, not more 'missing'
        problems.append(f"unexpected tensor {label}: it maps to {', '.join(map(repr, absent))}, which the target model does not have")
        return
    twice = [t for t in targets if t in filled]
    if twice:
        problems.append(f"{twice[0]!r} is filled twice: from {filled[twice[0]]} and {label}")
        return
    for t in targets:  # claimed even when the shapes disagree: one problem, not a second 'missing'
        filled[t] = label
    src_shapes = [tuple(source_shapes[k]) for k in stored]
    dst_shapes = [tuple(target_shapes[t]) for t in targets]
    got = run_ops(rule.ops, src_shapes, dst_shapes, shapes_only=True)
    if got != dst_shapes or sum(int(np.prod(s)) for s in src_shapes) != sum(int(np.prod(s)) for s in dst_shapes):
        via = "".join(f" -> {type(op).__name__.lower()}" for op in rule.ops)
        problems.append(f"shape mismatch: {label} {', '.join(map(str, src_shapes))}{via} gives {got}, "
                        f"but {', '.join(map(repr, targets))} {'is' if len(targets) == 1 else 'are'} {', '.join(map(str, dst_shapes))}")
        return
    one = lambda xs: xs[0] if len(xs) == 1 else tuple(xs)  # noqa: E731
    keys = tuple(k[len(prefix):] if prefix and k.startswith(prefix) else k for k in stored)
    steps.append(Step(one(keys), one(stored), one(targets), rule.ops, one(src_shapes), one(dst_shapes)))

"""Which candidate input and output each reference one is compared with.

By name where the names agree (the usual case: porter keeps them through every route).
Where they differ but both models take as many inputs (and give as many outputs), they
are paired by position and the report says so ("inputs paired by position: input -> x"):
a .pt2 calls its input ``input``, the ONNX export of the same module ``x``. ``--map REF=CAND``
(``map = {ref = "cand"}`` in a check TOML) pairs names by hand. Counts that differ, or a
name that both models have but at different positions, are refused: never a guess that
could compare the wrong tensors. A wrong pairing can only fail the comparison, since
every pair is still compared element by element.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from porter.errors import PorterError


@dataclass
class Pairing:
    inputs: dict[str, str]  # reference name -> candidate name
    outputs: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def renames(self) -> bool:
        return any(k != v for k, v in (*self.inputs.items(), *self.outputs.items()))


def parse_map(values) -> dict[str, str]:
    """['input=x', 'out=y'] (the CLI's --map) or {'input': 'x'} (TOML) -> {'input': 'x', ...}."""
    if values is None:
        return {}
    if isinstance(values, dict):
        items = list(values.items())
    else:
        items = []
        for value in values:
            ref, sep, cand = str(value).partition("=")
            if not sep or not ref or not cand:
                raise PorterError(f"--map {value!r} is not REF=CAND", hint="e.g. --map input=x (a reference name = a candidate name)")
            items.append((ref, cand))
    bad = [f"{k!r} = {v!r}" for k, v in items if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise PorterError(f"map entries must pair two names: {', '.join(bad)}", hint='e.g. map = { input = "x" }')
    return dict(items)


def pair(reference, candidate, name_map: dict[str, str] | None = None) -> Pairing:
    """Pair the two runners' inputs and outputs (see the module docstring); PorterError when they cannot be."""
    name_map = dict(name_map or {})
    _check_map(reference, candidate, name_map)
    pairing = Pairing({}, {})
    for kind in ("inputs", "outputs"):
        ref_names = list(getattr(reference, f"{kind[:-1]}_names"))
        cand_names = list(getattr(candidate, f"{kind[:-1]}_names"))
        pairs = _pair_kind(kind, ref_names, cand_names, name_map, reference, candidate, pairing.notes)
        setattr(pairing, kind, pairs)
    return pairing


def _check_map(reference, candidate, name_map) -> None:
    ref_all = [*reference.input_names, *reference.output_names]
    cand_all = [*candidate.input_names, *candidate.output_names]
    for ref, cand in name_map.items():
        if ref not in ref_all:
            raise PorterError(f"--map {ref}={cand}: the reference ({reference.name}) has no input or output {ref!r}",
                              hint=f"its names: inputs {list(reference.input_names)}, outputs {list(reference.output_names)}")
        if cand not in cand_all:
            raise PorterError(f"--map {ref}={cand}: the candidate ({candidate.name}) has no input or output {cand!r}",
                              hint=f"its names: inputs {list(candidate.input_names)}, outputs {list(candidate.output_names)}")
        if (ref in reference.input_names) != (cand in candidate.input_names):
            raise PorterError(f"--map {ref}={cand} pairs an input with an output",
                              hint="map inputs to inputs and outputs to outputs")


def _pair_kind(kind, ref_names, cand_names, name_map, reference, candidate, notes) -> dict[str, str]:
    if not ref_names or not cand_names:  # a runner that declares no names takes the other's as they are
        return {n: n for n in ref_names}
    pairs = {n: name_map.get(n, n) for n in ref_names}
    unmatched = [n for n, c in pairs.items() if c not in cand_names]
    # by name: every reference name found (a candidate may take more inputs, e.g. optional ones);
    # outputs must match one to one, as every candidate output is part of the comparison
    if not unmatched and (kind == "inputs" or len(set(pairs.values())) == len(cand_names)):
        if any(n in name_map for n in ref_names):
            notes.append(f"{kind} paired by --map: {_arrows({n: pairs[n] for n in ref_names if n in name_map})}")
        return pairs
    lists = [f"reference ({reference.name}) {kind}: {ref_names}", f"candidate ({candidate.name}) {kind}: {cand_names}"]
    if len(ref_names) != len(cand_names):
        raise PorterError(f"the two models have different {kind} ({len(ref_names)} and {len(cand_names)})", problems=lists,
                          hint="pair them by hand with --map REF=CAND, or compare models with the same signature")
    by_position = dict(zip(ref_names, cand_names))
    crossed = [n for n in ref_names if (n in cand_names and by_position[n] != n) or (n in name_map and by_position[n] != name_map[n])]
    if crossed:
        raise PorterError(f"the {kind} of the two models have different names and cannot be paired by position: "
                          f"{', '.join(repr(n) for n in crossed)} would be compared with another {kind[:-1]}",
                          problems=lists, hint="pair them by hand with --map REF=CAND (repeatable)")
    _check_specs(kind, by_position, reference, candidate, lists)
    notes.append(f"{kind} paired by position: {_arrows(by_position)}")
    return by_position


def _check_specs(kind, pairs, reference, candidate, lists) -> None:
    """Inputs paired by position must agree in rank and dtype kind where both models declare them."""
    if kind != "inputs":
        return
    ref_specs, cand_specs = getattr(reference, "input_specs", {}) or {}, getattr(candidate, "input_specs", {}) or {}
    problems = []
    for ref, cand in pairs.items():
        if ref in ref_specs and cand in cand_specs:
            (rd, rs), (cd, cs) = ref_specs[ref], cand_specs[cand]
            if len(rs) != len(cs) or _kind(rd) != _kind(cd):
                problems.append(f"{ref} ({rd}, rank {len(rs)}) -> {cand} ({cd}, rank {len(cs)})")
    if problems:
        raise PorterError("the inputs have different names, and pairing them by position joins inputs of another dtype or rank",
                          problems=problems + lists, hint="pair them by hand with --map REF=CAND (repeatable)")


def _kind(dtype) -> str:
    import numpy as np

    try:
        return {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(np.dtype(dtype).kind, str(dtype))
    except TypeError:
        return str(dtype)


def _arrows(pairs: dict) -> str:
    return ", ".join(f"{a} -> {b}" for a, b in pairs.items())


class Renamed:
    """The candidate runner seen under the reference's names: feeds renamed in, outputs renamed out."""

    def __init__(self, runner, pairing: Pairing):
        self.inner, self.pairing = runner, pairing
        self.input_names = [r for r, c in pairing.inputs.items()]
        self.output_names = list(pairing.outputs)
        specs = getattr(runner, "input_specs", {}) or {}
        self.input_specs = {r: specs[c] for r, c in pairing.inputs.items() if c in specs}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, feed):
        out = self.inner.infer({self.pairing.inputs.get(k, k): v for k, v in feed.items()})
        return {r: out[c] for r, c in self.pairing.outputs.items() if c in out}

"""Input sets: generated from the reference's signature (one cached set both sides get), or read from .npz.

Generated values are realistic: token ids inside the vocabulary, attention masks with
padding, segment ids, images N(0, 1); a fixed seed. Zoo models use their own sample
inputs (real sentences through the checkpoint's tokenizer where it ships one). Every
dynamic dimension takes two values: batch 1 and 3, sequence 5 and 41 (images 32 and 48),
so a model with dynamic batch and sequence is checked at 2 x 2 shapes. Where the model declares
a range for a dim (a .pt2's torch.export Dim min/max), the sizes are drawn inside it.

``--inputs FILE.npz`` holds either one input set (keys are input names: ``input_ids``)
or several (keys ``<set>/<input name>``: ``0/input_ids``, ``0/attention_mask``,
``1/input_ids`` ...). Arrays are matched to the reference's inputs by name; an unknown or
missing name, or a dtype kind (integer / float / bool) or rank that does not fit the
signature, is an error, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from porter.errors import PorterError, UnsupportedModelError
from porter.checks.path_errors import require_file

BATCHES = (1, 3)
SEQUENCES = (5, 41)
IMAGE_SIDES = (32, 48)
SAFE_VOCAB = 100  # token ids when no config says the vocabulary size
SEED = 0


@dataclass
class ZooInfo:
    """The zoo entry of a model, its full config, and the checkpoint folder (for its tokenizer)."""

    entry: object
    config: dict
    checkpoint: Path | None = None


@dataclass
class InputSets:
    feeds: list[dict]
    notes: list[str] = field(default_factory=list)


def zoo_of(runner) -> ZooInfo | None:
    """The zoo entry a running model belongs to, from its config.json or its Keras model."""
    artifact = getattr(runner, "artifact", None)
    config = getattr(artifact, "config", None)
    if not config:
        config = getattr(getattr(runner, "model", None), "hf_config", None)
    if getattr(runner, "outside_zoo", False):
        return None
    return zoo_info(config, Path(getattr(artifact, "path", ".")))


def zoo_info(config, path: Path) -> ZooInfo | None:
    """The zoo entry of a model with this config.json (``path``: its file or folder), or None."""
    from porter import zoo

    if not isinstance(config, dict) or config.get("model_type") not in zoo.ENTRIES:
        return None
    try:
        entry = zoo.for_config(config)
        config = entry.impl.full_config({k: v for k, v in config.items() if not k.startswith("_porter")})
    except UnsupportedModelError:
        return None  # a variant the zoo refuses (ViTModel): run as transformers runs it, inputs from its signature
    return ZooInfo(entry, config, path if path.is_dir() else None)


def specs_of(runner, info: ZooInfo | None) -> dict[str, tuple]:
    """name -> (dtype, shape with None for dynamic dims); zoo text models take (batch, seq) integers."""
    specs = dict(getattr(runner, "input_specs", {}) or {})
    for name in runner.input_names:
        if name not in specs and info is not None:
            specs[name] = ("int64", (None, None))
    return specs


def zoo_input_sets(info: ZooInfo, names, shapes=None, seed: int = SEED) -> InputSets:
    """The zoo entry's own feeds (``info.entry.impl.input_sets``), keeping the inputs in ``names`` (all when empty)."""
    # given shapes are exactly the shapes run (no extra tokenized sentences)
    kwargs = {"shapes": tuple(tuple(s) for s in shapes), "checkpoint": None} if shapes else {"checkpoint": info.checkpoint}
    feeds = info.entry.impl.input_sets(info.config, seed=seed, **kwargs)
    names = set(names) or set(feeds[0])
    feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
    what = ("pixel_values NCHW at the configured image size, standard-normal pixels" if "pixel_values" in feeds[0]
            else f"token ids inside the vocabulary of {info.config.get('vocab_size')}, padded masks")
    return InputSets(feeds, [f"inputs: {info.entry.name} sample inputs ({what})"])


def generate(runner, info: ZooInfo | None = None, shapes=None, seed: int = SEED) -> InputSets:
    """Feeds for the reference ``runner``: the zoo's when it is a zoo model, else from its signature."""
    if info is not None and hasattr(info.entry.impl, "input_sets"):
        return zoo_input_sets(info, runner.input_names, shapes, seed)
    specs = specs_of(runner, info)
    if not specs:
        raise PorterError(
            f"{runner.name} declares no input signature, so porter cannot generate inputs for it",
            hint="pass --inputs FILE.npz with one array per input name",
        )
    if getattr(runner, "sample_feeds", None) and not shapes:  # a model that knows its realistic inputs (hf_source)
        return InputSets(list(runner.sample_feeds), [f"inputs: {runner.name} sample inputs (ids inside its vocabulary, padded masks)"])
    return from_specs(specs, shapes, seed, index_bounds=getattr(runner, "index_bounds", None),
                      ranges=getattr(runner, "input_ranges", None))


def from_specs(specs: dict, shapes=None, seed: int = SEED, index_bounds: dict | None = None,
               ranges: dict | None = None) -> InputSets:
    """Feeds for input specs (name -> (dtype, shape with None for dynamic dims)): every dynamic
    dim at two sizes, realistic values (see the module docstring). ``index_bounds``: name -> the
    size of the table an integer input indexes (an embedding's rows), so its ids stay inside it.
    ``ranges``: name -> {axis: (min, max)} the model accepts; generated sizes stay inside them."""
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    feeds = [_feed(specs, combo, rng, notes, index_bounds or {}) for combo in _combos(specs, shapes)]
    if ranges and not shapes:
        feeds = [_inside_ranges(f, combo, specs, ranges, rng, notes, index_bounds or {})
                 for f, combo in zip(feeds, _combos(specs, shapes))]
    return InputSets(feeds, sorted(set(notes)))


def _inside_ranges(feed, combo, specs, ranges, rng, notes, index_bounds) -> dict:
    """The feed again, each ranged dim moved inside its (min, max): the short size to the min, the long one
    kept apart from it (so that a dim with length >= 64 still gets two lengths)."""
    long = combo[1] == SEQUENCES[-1]
    changed = False
    sizes = {}
    for name, arr in feed.items():
        shape = list(np.shape(arr))
        for axis, (lo, hi) in (ranges.get(name) or {}).items():
            lo, hi = int(lo), int(hi) if hi is not None else None
            want = shape[axis]
            if want < lo:
                want = lo + (SEQUENCES[-1] - SEQUENCES[0] if long and axis > 0 else 0)
            if hi is not None and want > hi:
                want = hi
            if want != shape[axis]:
                shape[axis], changed = want, True
        sizes[name] = tuple(shape)
    if not changed:
        return feed
    notes.append("inputs: sizes drawn inside the dim ranges the model declares")
    return {n: _values(n, np.dtype(specs[n][0]), sizes[n], rng, notes, index_bounds.get(n)) if sizes[n] != np.shape(a) else a
            for n, a in feed.items()}


def _combos(specs, shapes):
    """(batch, other dynamic size) pairs: 2 x 2 when both are dynamic; given ``shapes`` win."""
    if shapes:
        return [tuple(s) + (None,) * (2 - len(s)) for s in shapes]
    dims = [shape for _, shape in specs.values()]
    batch_dynamic = any(len(s) and s[0] is None for s in dims)
    other_dynamic = any(d is None for s in dims for d in s[1:])
    return [(b, q) for b in (BATCHES if batch_dynamic else (None,)) for q in (SEQUENCES if other_dynamic else (None,))]


def _feed(specs, combo, rng, notes, index_bounds=None) -> dict:
    batch, seq = combo
    feed = {}
    for name, (dtype, shape) in specs.items():
        image = np.dtype(dtype).kind == "f" and len(shape) == 4
        sizes = []
        for axis, dim in enumerate(shape):
            if dim is not None:
                sizes.append(int(dim))
            elif axis == 0:
                sizes.append(batch or BATCHES[0])
            elif image and _is_channel_axis(shape, axis):
                sizes.append(3)
            elif image:
                sizes.append(IMAGE_SIDES[SEQUENCES.index(seq)] if seq in SEQUENCES else IMAGE_SIDES[0])
            else:
                sizes.append(seq or SEQUENCES[0])
        feed[name] = _values(name, np.dtype(dtype), tuple(sizes), rng, notes, (index_bounds or {}).get(name))
    mask = feed.get("attention_mask")
    if mask is not None:  # padded positions carry the pad id (0), as a tokenizer writes them
        for name, arr in feed.items():
            if _is_token_ids(name) and arr.shape == mask.shape:
                feed[name] = np.where(mask == 1, arr, 0).astype(arr.dtype)
    return feed


def _is_channel_axis(shape, axis) -> bool:
    """A dynamic axis 1 or 3 of an image holds channels when the other one is a static spatial size
    (NCHW when both are dynamic)."""
    if axis not in (1, 3):
        return False
    other = shape[4 - axis]
    return other > 4 if other is not None else axis == 1


def _is_token_ids(name: str) -> bool:
    low = name.lower()
    return "ids" in low and "type" not in low and "position" not in low or low in ("tokens", "input", "x")


def _values(name, dtype, shape, rng, notes, bound=None) -> np.ndarray:
    low = name.lower()
    if bound is not None and dtype.kind in "iuf":  # a float input feeding a table (Keras casts it) gets whole numbers
        notes.append(f"{name}: integer ids drawn from [0, {bound}) (the rows of the table it indexes)")
        return rng.integers(0, bound, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.8
    if dtype.kind in "iu":
        if "mask" in low and len(shape) == 2:
            lengths = [shape[1]] + list(rng.integers(max(1, shape[1] // 3), shape[1] + 1, size=shape[0] - 1))
            return (np.arange(shape[1])[None, :] < np.asarray(lengths)[:, None]).astype(dtype)
        if "mask" in low:
            return np.ones(shape, dtype)
        if "position" in low and len(shape) >= 1:
            return np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
        if "type" in low or "segment" in low:
            return np.zeros(shape, dtype)
        notes.append(f"{name}: integer ids drawn from [1, {SAFE_VOCAB}) (no vocabulary size known; pass --inputs for real ids)")
        return rng.integers(1, SAFE_VOCAB, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------ npz files
def load_npz(path, runner, info: ZooInfo | None = None) -> InputSets:
    from porter.checks.model_files import INPUTS_LIMIT, npz_arrays

    path = require_file(path, "--inputs", ".npz")
    specs = specs_of(runner, info)

    def check(headers):  # names, dtypes and shapes from the npy headers: nothing is unpacked before they fit
        if not headers:
            raise PorterError(f"--inputs {path} holds no arrays")
        groups = _grouped(headers, path)
        problems = []
        for group, feed in groups.items():
            where = f"set {group!r}: " if group else ""
            problems += [where + p for p in _match(feed, runner.input_names, specs)]
        if problems:
            raise PorterError(
                f"--inputs {path} does not match the inputs of {runner.name}",
                problems=problems,
                hint=f"the model takes: {', '.join(f'{n} {_spec_text(specs.get(n))}' for n in runner.input_names)}",
            )

    groups = _grouped(npz_arrays(path, "--inputs", check, INPUTS_LIMIT), path)
    return InputSets(list(groups.values()), [f"inputs: {len(groups)} set(s) from {path}"])


def _grouped(arrays: dict, path) -> dict[str, dict]:
    """'<set>/<name>' keys as sets of feeds, in order of their set names (one unnamed set for plain keys)."""
    nested = ["/" in k for k in arrays]
    if any(nested) and not all(nested):
        raise PorterError(f"--inputs {path} mixes plain names and '<set>/<name>' keys", hint="use one style for every key")
    groups: dict[str, dict] = {}
    for key, arr in arrays.items():
        group, _, name = key.rpartition("/")
        groups.setdefault(group, {})[name] = arr
    return {g: groups[g] for g in sorted(groups, key=lambda g: (len(g), g))}


def _spec_text(spec) -> str:
    if spec is None:
        return "(any)"
    dtype, shape = spec
    return f"({dtype}, [{', '.join('?' if d is None else str(d) for d in shape)}])"


def _kind(dtype) -> str:
    return {"b": "bool", "i": "integer", "u": "integer", "f": "float", "c": "complex"}.get(np.dtype(dtype).kind, np.dtype(dtype).name)


def _match(feed: dict, names, specs) -> list[str]:
    problems = []
    if names:
        problems += [f"{k!r} is not an input of the model (its inputs: {', '.join(names)})" for k in feed if k not in names]
        problems += [f"input {n!r} is missing" for n in names if n not in feed]
    for key, arr in feed.items():
        if key not in specs:
            continue
        dtype, shape = specs[key]
        if _kind(arr.dtype) != _kind(dtype):
            problems.append(f"{key!r} is {arr.dtype.name} ({_kind(arr.dtype)}), but the model takes {dtype} ({_kind(dtype)})")
        if arr.ndim != len(shape):
            problems.append(f"{key!r} has rank {arr.ndim} {arr.shape}, but the model takes rank {len(shape)} {_spec_text(specs[key])}")
        elif any(d is not None and d != s for d, s in zip(shape, arr.shape)):
            problems.append(f"{key!r} has shape {arr.shape}, but the model takes {_spec_text(specs[key])}")
    return problems

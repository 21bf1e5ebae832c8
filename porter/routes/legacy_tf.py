"""transformers 4.x TF checkpoints (tf_model.h5) -> an HF PyTorch folder, for any architecture.

transformers 4.x converted every architecture with one generic naming scheme; porter keeps it as a
rule family (mappings/hf_legacy_tf.toml), turns it into one concrete rule per h5 tensor for the torch
class that config.json names, and runs the whole plan through porter's engine (porter/mapping.py):
every h5 tensor used once, every torch parameter and persistent buffer filled once, shapes agreed,
all problems listed at once. Tensors the scheme maps wrongly for one architecture are named in
mappings/legacy/<model_type>.toml (engine rules, which win over the scheme).
The torch side is read from a model built on the meta device: no memory for weights, no TF at all.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from porter.errors import MappingError, PorterError
from porter.mapping import Reshape, Rule, RuleSet, _parse_op, plan

FAMILY = "hf_legacy_tf"


@dataclass
class TorchTarget:
    """What the torch class expects: shapes and dtypes of its state dict, less the tensors it ties."""

    cls: type
    config: object  # transformers PretrainedConfig
    shapes: dict
    dtypes: dict
    tied: dict  # tied key -> the key it is stored under
    base_prefix: str
    renamings: list = field(default_factory=list)  # transformers 5's WeightRenaming for this class
    converters: list = field(default_factory=list)
    unconverted: list = field(default_factory=list)  # names that would need a converter


def torch_class(config: dict, where: Path):
    """The transformers 5 PyTorch class for config.json's architectures (TFXxx -> Xxx)."""
    from porter.routes import hf_source

    hf_source.check_config(config, where)
    archs = config.get("architectures") or []
    if archs and isinstance(archs[0], str) and archs[0].startswith("TF"):
        config = dict(config, architectures=[archs[0][2:]] + list(archs[1:]))
    import transformers

    name = str((config.get("architectures") or [""])[0])
    if name and not isinstance(getattr(transformers, name, None), type):
        raise PorterError(
            f"{where}/config.json: architectures names {name!r}, which transformers {transformers.__version__} "
            "does not have in PyTorch, so there is no class to load these weights into",
            hint="set architectures to a transformers PyTorch class of this model_type (e.g. its base model)")
    return hf_source._model_class(config, where)[0]


def torch_target(config: dict, where: Path) -> TorchTarget:
    from porter.process.frameworks import torch as torch_module

    torch = torch_module()
    cls = torch_class(config, where)
    cfg = cls.config_class.from_dict({k: v for k, v in config.items() if k != "transformers_version"})
    cfg.architectures = [cls.__name__]
    try:
        with torch.device("meta"):  # shapes only: no memory for the weights
            model = cls(cfg)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise PorterError(f"transformers could not build {cls.__name__} from {where}/config.json: {type(exc).__name__}: {first}") from None
    state = model.state_dict()
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    shapes = {k: tuple(v.shape) for k, v in state.items() if k not in tied}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in state.items() if k not in tied}
    renamings, converters = _checkpoint_renames(model)
    return TorchTarget(cls, cfg, shapes, dtypes, tied, getattr(cls, "base_model_prefix", "") or "", renamings, converters)


def _checkpoint_renames(model) -> tuple[list, list]:
    """transformers 5's rules for loading 4.x PyTorch names into this class (renamings, converters)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming
    except ImportError:  # an older transformers: 4.x PyTorch names are its own names
        return [], []
    transforms = get_model_conversion_mapping(model) or []
    return ([t for t in transforms if isinstance(t, WeightRenaming)], [t for t in transforms if isinstance(t, WeightConverter)])


# -------------------------------------------------------------------------------- the scheme
@dataclass
class Leaf:
    """How a tf name's last component (and the tensor's rank) becomes the torch leaf, with the ops."""

    torch: str | None  # None: keep the name
    ops: tuple
    tf: str | None = None
    rank: int | None = None
    suffix: str | None = None
    contains: tuple = ()

    def rename(self, parts: list[str], rank: int) -> list[str] | None:
        last = parts[-1]
        if self.rank is not None and rank != self.rank:
            return None
        if self.tf is not None:
            return parts[:-1] + self.torch.split(".") if last == self.tf else None
        if self.suffix is not None:
            stem = last.removesuffix(self.suffix)
            return parts[:-1] + self.torch.format(stem=stem).split(".") if last.endswith(self.suffix) and stem else None
        if self.contains:
            return list(parts) if any(c in parts for c in self.contains) else None
        return None


@dataclass
class Scheme:
    rewrites: list  # (regex, replacement) on the h5 name; the last one turns '/' into '.'
    leaves: list[Leaf]
    drop_base_prefix: bool
    fills: list  # (key suffix, value)
    transformers_renames: bool = True
    ignore_tf: list = field(default_factory=list)  # regexes (re.search) on the h5 name
    sources: list[str] = field(default_factory=list)  # the rule files read
    notes: list[str] = field(default_factory=list)  # what a user must know to compare this architecture

    @classmethod
    def load(cls, model_type: str | None) -> "Scheme":
        data = tomllib.loads(resources.files("porter.mappings").joinpath(f"{FAMILY}.toml").read_text())
        where = f"mappings/{FAMILY}.toml"
        leaves = []
        for n, raw in enumerate(data.get("leaf", [])):
            ops = tuple(_parse_op(op, f"{where} leaf {n + 1}") for op in raw.get("ops", []))
            leaves.append(Leaf(raw.get("torch"), ops, raw.get("tf"), raw.get("rank"), raw.get("tf_suffix"),
                               tuple(raw.get("tf_contains", ()))))
        names = data["names"]
        scheme = cls(_rewrites(names["rewrite"], where), leaves, bool(names.get("drop_base_prefix", True)),
                     [(f["key"], f["value"]) for f in data.get("torch", {}).get("fill", [])],
                     bool(names.get("transformers_renames", True)), sources=[where])
        special = resources.files("porter.mappings").joinpath("legacy", f"{model_type}.toml")
        if model_type and special.is_file():  # an architecture's own exceptions run before the scheme
            where = f"mappings/legacy/{model_type}.toml"
            extra = tomllib.loads(special.read_text())
            scheme.rewrites[:0] = _rewrites(extra.get("names", {}).get("rewrite", []), where)
            scheme.ignore_tf = [_regex(p, where) for p in extra.get("tf", {}).get("ignore", [])]
            scheme.notes = [str(n) for n in extra.get("notes", [])]
            scheme.sources.append(where)
        return scheme

    def torch_name(self, tf_name: str, shape: tuple, target: TorchTarget) -> str | tuple:
        """(torch name, ops TF -> torch) for one h5 tensor."""
        name = tf_name
        for pattern, repl in self.rewrites:
            name = pattern.sub(repl, name)
        parts = name.split(".")
        first = None
        for leaf in self.leaves:
            renamed = leaf.rename(parts, len(shape))
            if renamed is None:
                continue
            name = self._fit(".".join(renamed), target)
            if first is None:
                first = (name, leaf.ops)
            if name in target.shapes:  # a later leaf may fit where this one names nothing (x_g that is no weight norm)
                return name, leaf.ops
        return first or (self._fit(".".join(parts), target), ())

    def _fit(self, name: str, target: TorchTarget) -> str:
        """transformers 5's own renames of 4.x PyTorch names (what from_pretrained applies to an old
        checkpoint), then the base model's prefix dropped where the torch class has none (a base model:
        TF names always carry the main layer, e.g. 'bert.')."""
        if self.transformers_renames and target.renamings:
            from transformers.core_model_loading import rename_source_key

            name, converter = rename_source_key(name, target.renamings, target.converters)
            if converter is not None:
                target.unconverted.append(f"{name!r}: transformers 5 loads it through a {converter!r} converter, "
                                          "which the legacy scheme does not apply")
        prefix = target.base_prefix + "."
        if self.drop_base_prefix and target.base_prefix and name.startswith(prefix):
            if not any(k.startswith(prefix) for k in target.shapes):
                return name[len(prefix):]
        return name

    def rules(self, source_shapes: dict, target: TorchTarget) -> RuleSet:
        """One concrete engine rule per h5 tensor (TF -> torch), checked together by the engine's plan."""
        rules, ignored = [], []
        for tf_name, shape in source_shapes.items():
            if any(p.search(tf_name) for p in self.ignore_tf):
                ignored.append(re.compile(re.escape(tf_name) + r"\Z"))
                continue
            name, ops = self.torch_name(tf_name, shape, target)
            want = target.shapes.get(name)
            if want is not None and _rank_after(ops, len(shape)) != len(want):  # e.g. kernels stored (hidden, heads, head_dim)
                ops = tuple(ops) + (Reshape(),)
            rules.append(Rule(_literal(tf_name), _literal(name), tuple(ops)))
        fills = [re.compile(r"(.*\.)?" + re.escape(key) + r"\Z") for key, _ in self.fills]
        return RuleSet(" + ".join(self.sources), rules, "tf", ignored, fills)

    def fill_targets(self, target: TorchTarget, filled: set) -> dict:
        """Torch tensors that no TF tensor holds and that start from a known value (BatchNorm's counter)."""
        out = {}
        for key, shape in target.shapes.items():
            for suffix, value in self.fills:
                if (key == suffix or key.endswith("." + suffix)) and key not in filled:
                    out[key] = np.full(shape, value, dtype=np.dtype(target.dtypes[key]))
        return out


def _rewrites(pairs, where: str) -> list:
    return [(_regex(p, where), r) for p, r in pairs]


def _regex(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise PorterError(f"{where}: {pattern!r} is not a valid regular expression ({exc})") from None


def _literal(name: str) -> str:
    """A name as an engine pattern with no placeholders (braces cannot occur in h5 or torch names)."""
    if "{" in name or "}" in name:
        raise PorterError(f"tensor name {name!r} holds a brace, which no transformers checkpoint name does")
    return name


def _rank_after(ops, rank: int) -> int:
    for op in ops:
        if getattr(op, "perm", None) is not None:
            rank = len(op.perm)
    return rank


# ------------------------------------------------------------------------------- convert
@dataclass
class LegacyConversion:
    state: dict  # torch key -> numpy array
    config: object  # transformers config of the torch class
    architecture: str
    plan: object
    filled: list  # keys filled with a start value
    rule_files: list
    notes: list = field(default_factory=list)  # the architecture's notes (mappings/legacy/<model_type>.toml)


def convert_checkpoint(folder: Path, config: dict) -> LegacyConversion:
    """Read the h5 (shard by shard), plan every tensor through the rules, and return the torch state dict."""
    from porter.readers.legacy_h5 import LegacyH5Checkpoint

    folder = Path(folder)
    checkpoint = LegacyH5Checkpoint(folder)  # bad h5 input fails here, before transformers is imported
    target = torch_target(config, folder)
    scheme = Scheme.load(config.get("model_type"))
    rules = scheme.rules(checkpoint.shapes, target)
    if target.unconverted:
        raise MappingError(f"{checkpoint.origin}: {len(target.unconverted)} tensor(s) need a transformers converter",
                           problems=target.unconverted, hint="add the architecture's exceptions in mappings/legacy/")
    the_plan = plan(rules, checkpoint.shapes, target.shapes)
    state = dict(the_plan.run(checkpoint.get))
    fills = scheme.fill_targets(target, set(state))
    state.update(fills)
    return LegacyConversion(state, target.config, target.cls.__name__, the_plan, sorted(fills), scheme.sources,
                            scheme.notes)

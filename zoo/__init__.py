"""The zoo: architectures porter knows on both sides, found by name or by config.json's model_type.

This module stays light (no frameworks): entries import their builders on use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from porter.errors import PorterError
from porter.checks.hf_config import check_sizes, refuse_remote_code


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str  # the mapping file: mappings/<family>.toml
    module: str  # the zoo package implementing it
    description: str
    torch_class: str  # "transformers.BertModel"
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    mapping_params: dict = field(default_factory=dict)
    # output -> input mask: elements where the mask is 0 are undefined and not compared
    # (a padded position's hidden state is noise that every consumer masks out)
    defined_where: dict = field(default_factory=dict)
    keras_class: str = "porter's own Keras 3 model"  # what model.keras holds
    route: str = "direct"
    notes: str = ""  # config translations or porter-own layers the Keras side needed

    @property
    def impl(self):
        return importlib.import_module(self.module)


ENTRIES: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    if entry.name in ENTRIES:
        raise ValueError(f"zoo entry {entry.name!r} registered twice")
    ENTRIES[entry.name] = entry
    return entry


def get(name: str) -> ZooEntry:
    if name not in ENTRIES:
        raise PorterError(f"unknown zoo model {name!r}", hint=f"known: {', '.join(sorted(ENTRIES))} (see `porter zoo list`)")
    return ENTRIES[name]


def for_config(config: dict, where: str = "config.json", complete: bool = True) -> ZooEntry:
    """The entry for a config.json's model_type, after the entry has checked the config's keys and types.
    ``complete=False``: not yet the checks that need the config completed with transformers' defaults
    (the caller runs ``check_completed`` once it has completed it)."""
    if not isinstance(config, dict):
        raise PorterError(f"{where} holds a JSON {type(config).__name__}, not an object of config keys")
    refuse_remote_code(config, where)
    model_type = config.get("model_type")
    if model_type not in ENTRIES:
        raise PorterError(
            f"{where}: model_type {model_type!r} is not in porter's zoo (known: {', '.join(sorted(ENTRIES))})",
            hint="models outside the zoo go through ONNX: pass --route onnx",
        )
    entry = ENTRIES[model_type]
    check_sizes(config, where)  # a zero or negative size, before any entry divides by it
    entry.impl.check_config(config, where)
    if complete and hasattr(entry.impl, "check_completed"):
        entry.impl.check_completed(config, entry.impl.full_config(config), where)
    return entry


def check_completed(entry: ZooEntry, config: dict, full: dict, where: str) -> None:
    """The entry's checks of ``config`` completed with transformers' defaults (``full``), where it has any."""
    if hasattr(entry.impl, "check_completed"):
        entry.impl.check_completed(config, full, where)


def drops_head(config) -> bool:
    """Whether porter's zoo model for ``config`` would lose the head config.json names: porter's BERT/RoBERTa
    is the bare encoder, so BertForMaskedLM or RobertaForSequenceClassification go through transformers."""
    entry = ENTRIES.get(config.get("model_type")) if isinstance(config, dict) else None
    if entry is None or not entry.module.startswith("porter.zoo.bert"):
        return False  # the keras-hub families read the head from architectures themselves
    architectures = config.get("architectures") or []
    return isinstance(architectures, list) and any(
        isinstance(a, str) and not a.endswith(("BertModel", "RobertaModel")) for a in architectures)


importlib.import_module("porter.zoo.bert")
importlib.import_module("porter.zoo.keras_hub")

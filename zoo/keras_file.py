"""The transformers config porter keeps inside a model.keras it writes: an archive member Keras ignores, so a
model.keras moved away from its config.json still says which zoo model it holds. Written where model.keras is a
plain Keras Functional model of keras' and keras-hub's layers (BERT/RoBERTa: zoo/bert/portable.py; XLM-RoBERTa and
ELECTRA: zoo/keras_hub/entry.py), which keras-hub's and porter's classes would otherwise have said.

Light: no framework is imported."""

from __future__ import annotations

import json
import zipfile

CONFIG_MEMBER = "porter_hf_config.json"


def add_config(path, config: dict) -> None:
    clean = {k: v for k, v in config.items() if not k.startswith("_porter")}
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(CONFIG_MEMBER, json.dumps(clean, indent=2))


def read_config(path) -> dict | None:
    """The config kept by ``add_config``, or None (the archive's members are size-checked by check_keras_archive
    before porter loads the file)."""
    try:
        with zipfile.ZipFile(path) as z:
            if CONFIG_MEMBER not in z.NameToInfo:
                return None
            config = json.loads(z.read(CONFIG_MEMBER))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    return config if isinstance(config, dict) and isinstance(config.get("model_type"), str) else None


def config_beside(path) -> dict | None:
    """The config.json in a model.keras's folder (porter's output folder), read by model_files' rules, or None."""
    from pathlib import Path

    from porter.errors import PorterError
    from porter.readers.artifacts import read_config_json

    beside = Path(path).parent / "config.json"
    try:
        config = read_config_json(beside) if beside.is_file() else None
    except PorterError:
        return None
    return config if config and isinstance(config.get("model_type"), str) else None

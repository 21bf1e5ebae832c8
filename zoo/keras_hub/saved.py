"""Reading back porter's keras-hub outputs: keras-hub's classes registered for safe_mode loading, and
the HF config.json porter wrote beside model.keras (keras-hub models do not carry transformers' config)."""

from __future__ import annotations

import zipfile
from pathlib import Path


def register_if_keras_hub(path: Path) -> None:
    """Import keras_hub (it registers its classes) only when the .keras file holds one of them."""
    try:
        with zipfile.ZipFile(path) as z:
            text = z.read("config.json").decode(errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return
    if '"keras_hub' in text or '"porter.zoo.keras_hub' in text:
        import porter.zoo.keras_hub.fixes  # noqa: F401  imports keras_hub and registers porter's subclasses


def hf_config_beside(model, path: Path) -> dict | None:
    """The config.json in the folder of a keras-hub family's model.keras (porter's output folder)."""
    if not any(c.__module__.startswith("keras_hub") for c in type(model).__mro__):  # porter's subclasses too
        return None
    from porter.zoo.keras_file import config_beside
    from porter.zoo.keras_hub.families import FAMILIES

    config = config_beside(path)
    return config if config and config["model_type"] in FAMILIES else None

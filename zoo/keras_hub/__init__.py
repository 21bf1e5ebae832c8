"""HF families on the direct route with keras-hub as the Keras side: one zoo entry per model_type.

The table is families.py; the one shared implementation is entry.py; the rules are
mappings/<family>.toml. Light: no framework is imported here.
"""

from __future__ import annotations

from porter.zoo import ZooEntry, register
from porter.zoo.keras_hub.families import FAMILIES


for _family in FAMILIES.values():
    _heads = ", ".join(f"{t} -> {k}" for t, k in _family.task.items())
    register(
        ZooEntry(
            name=_family.model_type,
            family=_family.mapping_file,
            module="porter.zoo.keras_hub.entry",
            description=f"transformers {_family.base} -> keras_hub {_family.backbone}" + (f"; {_heads}" if _heads else ""),
            torch_class=f"transformers.{_family.base}",
            keras_class=f"keras_hub.models.{_family.backbone}",
            notes=_family.notes,
            inputs=tuple(_family.keras_inputs),
            # the base model's outputs, or a head's logits (entry.output_names picks by architectures)
            outputs=(*_family.keras_outputs.values(), "logits"),
            # padded positions are undefined (every consumer masks them out): not compared
            # (per-token outputs only: a sequence classifier's logits are one row per sequence)
            defined_where={o: "attention_mask" for o in ("last_hidden_state", "logits")
                           if o != "logits" or any(t.endswith("CausalLM") for t in _family.task.values())}
            if "attention_mask" in _family.keras_inputs else {},
        )
    )

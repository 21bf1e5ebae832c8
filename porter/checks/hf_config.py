"""config.json values checked before transformers builds a model from them, for any model_type.

transformers validates types itself (huggingface_hub's strict dataclasses) but raises its own
exception types, and takes a zero or negative size until a tensor cannot be made. Both become
one PorterError naming config.json and the key.
"""

from __future__ import annotations

from contextlib import contextmanager

from porter.errors import PorterError

# sizes that are never zero in any architecture (a negative size is refused for every *_size/num_* key)
NEVER_ZERO = (
    "vocab_size", "hidden_size", "d_model", "d_kv", "d_ff", "intermediate_size", "embed_dim", "num_attention_heads",
    "num_heads", "num_key_value_heads", "num_hidden_layers", "num_layers", "patch_size", "image_size", "num_channels",
    "n_head", "n_embd", "n_layer", "n_positions", "n_ctx", "head_dim",
)


def refuse_remote_code(config: dict, config_path) -> None:
    """A config with auto_map names code that ships with the checkpoint: porter never runs it (no
    trust_remote_code), on any route, and its model_type alone does not say what that code computes."""
    if "auto_map" in config:
        raise PorterError(
            f"{config_path} has auto_map ({', '.join(sorted(config['auto_map']))}): the model's code ships with "
            "the checkpoint, and porter never runs code from a model folder (no trust_remote_code)",
            hint="use a model_type that transformers implements, or export the model yourself to a .pt2 "
                 "(torch.export.save) and convert that")


def size_problems(config: dict) -> list[str]:
    """One line per size key holding a non-positive integer."""
    problems = []
    for key, value in config.items():
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        sizes = key.endswith("_size") or key.startswith("num_") or key in NEVER_ZERO
        if sizes and (value < 0 or (value == 0 and key in NEVER_ZERO)):
            problems.append(f"{key} must be a positive integer, not {value}")
    return problems


@contextmanager
def transformers_config_errors(where: str):
    """transformers' own config checks (strict dataclass fields, ValueError ...) as bad input naming the file."""
    try:
        yield
    except PorterError:
        raise
    except Exception as exc:  # noqa: BLE001 - huggingface_hub's StrictDataclassError is not a ValueError
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        raise PorterError(f"{where} is not a config transformers accepts: {detail}", hint=f"fix {where}") from None


def check_sizes(config: dict, where: str) -> None:
    problems = size_problems(config)
    if problems:
        raise PorterError(f"{where} has invalid values", problems=problems, hint=f"fix {where}")


def check_hf_config(config: dict, where: str) -> None:
    """Sizes first (all at once), then transformers' own validation of every field's type."""
    check_sizes(config, where)
    import transformers

    with transformers_config_errors(where):
        transformers.AutoConfig.for_model(**{k: v for k, v in config.items() if k != "transformers_version"})

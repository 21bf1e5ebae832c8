"""What config.json declares, compared with the weights beside it before any model is built from it.

Every route from an HF folder builds a model from config.json first (porter's Keras zoo models, transformers'
torch models) and compares its shapes with the weights only afterwards. A config can declare far more than its
weights hold: ``num_hidden_layers: 100000`` beside two layers built for minutes and grew past 2.9 GB before
anything was compared. Here the declared sizes meet the checkpoint's tensor names and shapes (headers only: no
torch, no model) and the memory available, and a size that cannot describe the weights, or cannot fit, is a
PorterError naming the file, the key, the value, what the weights hold and the limit broken.

Never refusing a real model bounds what is refused (tried on every transformers architecture built on the meta
device from its default config): layers may be shared (ALBERT stores one layer for up to 24, HRM one stack for 8
slots), a vocab_size or intermediate_size may size no stored tensor (a Whisper encoder saved alone keeps the
decoder's vocab_size), rotary models store no position table (Llama 4 declares 10M positions), and a config may
hold a float (MusicFlamingo's max_position_embeddings 1200.0). Wrong types and signs are left to the checks that
name them already (hf_config.check_sizes, the zoo's check_config, transformers' strict fields), and exact mismatches
to the mapping plan and transformers, which catch them after a build of bounded cost.
"""

from __future__ import annotations

import re
from pathlib import Path

from porter.errors import PorterError
from porter.resources.memory_estimate import size_text

LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
              "num_encoder_layers", "num_decoder_layers")
MODEL_WIDTHS = ("hidden_size", "d_model", "n_embd")  # every block stores a [width] norm or a [.., width] projection
MATRIX_WIDTHS = ("intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "n_inner",
                 "vocab_size")  # each sizes a matrix or two, and may size none that is stored
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_source_positions", "max_target_positions")
KEYS = LAYER_KEYS + MODEL_WIDTHS + MATRIX_WIDTHS + POSITION_KEYS
LAYER_FACTOR = 64  # more layers than this per stored block cannot describe the weights: always refused
SHARED_FACTOR = 24  # real shared layers declare up to this per stored block (ALBERT-large: 24 over one); beyond it
# the declared layers are taken as built one by one (transformers' BERT builds all 64x) and must fit in memory
WIDE = 4096  # a model width above this that no tensor has is no transformer's
MOST_POSITIONS = 2**24  # beyond any released model (Llama 4 Scout's 10,485,760 is the most declared so far)
MANY_POSITIONS = 2**20  # above this, a learned position table of the model's width is checked against memory
INDEX = re.compile(r"(?<![A-Za-z0-9])\d+(?![A-Za-z0-9])")  # a numeric path component ("layers.3", "layer_._3")
# learned position tables: transformers allocates them at the declared rows (rotary models have none)
POSITION_TABLE = re.compile(r"position|wpe|pos_emb", re.IGNORECASE)
_ITEMSIZE = {"float64": 8, "int64": 8, "uint64": 8, "float32": 4, "int32": 4, "uint32": 4, "float16": 2,
             "bfloat16": 2, "int16": 2, "uint16": 2, "int8": 1, "uint8": 1, "bool": 1}


class Held:
    """What the weights hold, from names and shapes alone."""

    def __init__(self, shapes: dict, dtypes: dict):
        indices: dict[str, set] = {}
        self.dims, self.nbytes, self.block_bytes, self.tables = set(), 0, 0, []
        for name, shape in shapes.items():
            # one pattern per repeated block's tensor: "encoder.layer.*.output.dense.weight" (a TF h5's
            # "encoder/layer_._*/output/dense/kernel:*") holds as many blocks as it has distinct index tuples
            # (layers x experts for an MoE: counted generously, never short)
            numbers = tuple(INDEX.findall(str(name)))
            indices.setdefault(INDEX.sub("*", str(name)), set()).add(numbers)
            nbytes = _ITEMSIZE.get(dtypes.get(name, "float32"), 4)
            for d in shape:
                nbytes *= int(d)
            self.nbytes += nbytes
            self.block_bytes += nbytes if numbers else 0
            self.dims.update(int(d) for d in shape)
            if len(shape) == 2 and POSITION_TABLE.search(str(name)):
                self.tables.append(int(shape[1]))  # its width: a vision tower's table is not the text model's
        indexed = {p: len(v) for p, v in indices.items() if "*" in p}
        self.blocks = max(indexed.values(), default=0)
        pattern = max(indexed, key=lambda p: (indexed[p], p.count("*")), default="")  # named in messages
        self.where = pattern[:pattern.find("*") + 1]  # "encoder.layer.*"
        self.largest = max(self.dims, default=0)


def problems(config: dict, shapes: dict, dtypes: dict | None = None, available: int | None = None) -> list[str]:
    """One line per declared size of ``config`` (and of its sub-configs: text_config, encoder ...) that the tensors
    ``shapes`` (name -> shape, as stored in ``dtypes``) cannot hold, or that cannot fit in ``available`` bytes."""
    held = Held(shapes, dtypes or {})
    found = []
    for name, key, value, sub in _declared(config, ""):
        # None: transformers' default (T5's num_decoder_layers); a float, string, bool or negative value is
        # named by the checks that refuse it today (module doc), and builds nothing large before them
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            continue
        if key in LAYER_KEYS:
            found.append(_layers(name, value, held, available))
        elif value not in held.dims:  # a size that a stored tensor has is what the weights hold
            found.append(_width(name, key, value, held, available, sub))
    return [f for f in found if f]


def _declared(config: dict, prefix: str):
    """(dotted name, key, value, the (sub-)config holding it) of every size key, in sub-configs too (any nested
    object: text_config, encoder, ... names vary)."""
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _declared(value, f"{prefix}{key}.")
        elif key in KEYS:
            yield f"{prefix}{key}", key, value, config


def _layers(name: str, value: int, held: Held, available: int | None) -> str | None:
    blocks = max(held.blocks, 1)
    stored = f"{held.blocks} repeated block(s) ({held.where})" if held.blocks else "no repeated (indexed) block"
    if value > LAYER_FACTOR * blocks:
        return (f"{name} is {value}, but the weights hold {stored}: more than {LAYER_FACTOR}x that "
                f"(a model sharing its layers declares a few times what it stores, not {value // blocks}x)")
    if available is not None and value > SHARED_FACTOR * held.blocks > 0:
        need = held.nbytes + held.block_bytes * (value - held.blocks) // held.blocks
        if need > available:
            return (f"{name} is {value}: the weights' {stored} scaled to {value} need about {size_text(need)}, "
                    f"and {size_text(available)} of memory is available")
    return None


def _width(name: str, key: str, value: int, held: Held, available: int | None, sub: dict) -> str | None:
    """``value`` sizes no stored tensor (the caller checked)."""
    if key in MODEL_WIDTHS and value > WIDE and value > held.largest:
        return (f"{name} is {value}, but no tensor in the weights has that size, and the largest they hold is "
                f"{held.largest}: a model width over {WIDE} that no norm or projection has cannot describe them")
    if key in MATRIX_WIDTHS and available is not None and value > held.largest:
        need = 4 * value * max(held.largest, 1)  # one float32 matrix of it beside the widest dim held
        if need > available:
            return (f"{name} is {value}, which no tensor in the weights has: one {value} x {held.largest} float32 "
                    f"matrix of it needs about {size_text(need)}, and {size_text(available)} of memory is available")
    if key in POSITION_KEYS and value > MOST_POSITIONS:
        return (f"{name} is {value}, which no tensor in the weights has: more than {MOST_POSITIONS} positions, "
                f"beyond any released model")
    widths = {v for k in MODEL_WIDTHS if isinstance(v := sub.get(k), int)} & set(held.tables)  # this model's own table
    if key in POSITION_KEYS and available is not None and value > MANY_POSITIONS and widths:
        need = 4 * value * max(widths)
        if need > available:
            return (f"{name} is {value}, which no tensor in the weights has: their learned position table at "
                    f"{value} rows needs about {size_text(need)}, and {size_text(available)} of memory is available")
    return None


def check(config: dict, checkpoint, where) -> None:
    """Refuse (exit 2) ``config`` (read from ``where``) for the TensorSource ``checkpoint``, before a build."""
    from porter.resources.memory_estimate import available_bytes

    found = problems(config, checkpoint.shapes, checkpoint.dtypes, available_bytes())
    if found:
        raise PorterError(f"{where} declares sizes that the weights beside it do not hold; nothing was built from it",
                          problems=found, hint=f"fix {where}: it must describe the weights saved with it")


def check_artifact(artifact) -> None:
    """An HF folder (torch, or a transformers 4.x tf_model.h5) or a .safetensors file with config.json beside it:
    its config.json against the checkpoint's headers. Anything else is left to its own reader."""
    if artifact.format not in ("hf", "safetensors", "hf_tf_h5") or not isinstance(artifact.config, dict):
        return
    if artifact.format == "hf_tf_h5":  # the h5's dataset shapes, no data read
        from porter.readers.legacy_h5 import LegacyH5Checkpoint as opened
    else:
        from porter.readers.checkpoints import open_torch_checkpoint as opened
    folder = artifact.path if artifact.path.is_dir() else artifact.path.parent
    check(artifact.config, opened(artifact.path), Path(folder) / "config.json")

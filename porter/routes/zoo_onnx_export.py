"""A zoo model's torch side exported to ONNX: transformers' own loader, eager attention, dynamic batch and sequence.
For --to onnx and --to torch on the ONNX route (TensorFlow targets take the graph route)."""

from __future__ import annotations

from pathlib import Path

from porter.process import progress


def export(entry: str, folder, config: dict, onnx_path: Path, completed: bool = True, release: bool = True) -> dict:
    """Zoo entry ``entry``'s model in ``folder`` exported to ``onnx_path``: {"names", "outputs", "feeds" (its
    sample input sets), "note"}. ``completed``: whether ``config`` has transformers' defaults already;
    ``release``: hand the exporter's memory back afterwards (to_onnx.torch_to_onnx; not in a child about to exit)."""
    import numpy as np

    from porter import zoo
    from porter.process.frameworks import torch
    from porter.readers.hf_load import load_zoo_torch
    from porter.routes import to_onnx

    entry, folder = zoo.get(entry), Path(folder)
    if not completed:
        full = entry.impl.full_config(config)
        zoo.check_completed(entry, config, full, f"{folder}/config.json")
        config = full
    torch = torch()
    with progress.step(f"loading {folder}"):
        hf = load_zoo_torch(entry, folder)
    # eager attention exports as 4D MatMuls; sdpa's decomposition flattens [batch, heads] with a computed-shape Reshape
    hf.set_attn_implementation("eager")
    names, outputs = list(entry.inputs), list(entry.outputs)

    class Outputs(torch.nn.Module):  # named tensors in, a tuple in entry.outputs order out
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            # the additive [batch, 1, 1, seq] mask, built here: transformers 5 builds it with vmap-style
            # index arithmetic (Range, GatherND over a dynamic Expand); given a 4D mask it uses it as is
            # (bit-identical outputs) and the graph keeps batch and sequence as plain dims
            additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
            out = self.model(input_ids=input_ids, attention_mask=additive, token_type_ids=token_type_ids)
            return tuple(out[k] for k in outputs)

    feeds = entry.impl.input_sets(config, checkpoint=folder if folder.is_dir() else None)
    example = tuple(torch.as_tensor(np.asarray(feeds[-1][n], dtype=np.int64)) for n in names)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=2, max=512)
    dynamic = {n: {0: batch, 1: seq} for n in names}
    to_onnx.torch_to_onnx(Outputs(hf).eval(), example, names, outputs, onnx_path, dynamic_shapes=dynamic, release=release)
    feeds = feeds[-1:] + feeds[:-1]
    return {"names": names, "outputs": outputs,
            "feeds": [{k: np.asarray(v, dtype=np.int64) for k, v in f.items()} for f in feeds],
            "note": f"inputs: {entry.name} sample inputs (real sentences where the checkpoint ships a tokenizer, padded masks)"}

"""Reading a model's files: what a path is, checkpoints, safetensors, .pt2, legacy h5, transformers' side."""

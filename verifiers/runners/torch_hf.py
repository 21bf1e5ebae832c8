"""A Hugging Face PyTorch folder, loaded by transformers (independent of porter's mapping)."""

from __future__ import annotations

import numpy as np

from porter import zoo
from porter.verifiers.runners.base import Runner


class HFTorchRunner(Runner):
    framework = "torch"

    def activate(self):
        from porter.frameworks import torch

        self.torch = torch()
        entry = zoo.for_config(self.artifact.config or {}, f"{self.artifact.path}/config.json")
        self.model = entry.impl.load_torch(self.artifact.path).to(self.device)
        self.input_names = list(entry.inputs)
        self.output_names = list(entry.outputs)
        self.input_specs = {n: ("int64", (None, None)) for n in entry.inputs}

    def infer(self, feeds):
        torch = self.torch
        args = {k: torch.as_tensor(np.asarray(v, dtype=np.int64), device=self.device) for k, v in feeds.items()}
        with torch.inference_mode():
            out = self.model(**args)
        return {k: out[k].detach().cpu().numpy() for k in self.output_names if out.get(k) is not None}

    def synchronize(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

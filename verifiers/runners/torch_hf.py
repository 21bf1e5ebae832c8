"""A Hugging Face PyTorch folder, loaded by transformers (independent of porter's mapping)."""

from __future__ import annotations

import numpy as np

from porter import zoo
from porter.errors import UnsupportedModelError
from porter.readers.hf_load import load_zoo_torch
from porter.checks.numerics import tensor_to_numpy
from porter.verifiers.runners.base import Runner


class HFTorchRunner(Runner):
    framework = "torch"

    def activate(self):
        from porter.checks.declared_sizes import check_artifact
        from porter.process.frameworks import torch

        check_artifact(self.artifact)  # config.json's sizes against the weights' headers, before anything is built
        self.torch = torch()
        config = self.artifact.config or {}
        if config.get("model_type") not in zoo.ENTRIES:
            return self._activate_outside_zoo()
        try:
            entry = zoo.for_config(config, f"{self.artifact.path}/config.json")
            _scan_weights(self.artifact.path, self.options.get("allow_nonfinite", False))
            model = load_zoo_torch(entry, self.artifact.path, dtype=self.options.get("reference_dtype"))
        except UnsupportedModelError:
            # a variant porter's direct route refuses (ViTModel without its head, a BERT with one) is still
            # a model transformers runs: the reference of an ONNX-route conversion
            return self._activate_outside_zoo()
        self.model = model.to(self.device)
        self.input_names = list(entry.inputs)
        # a family with heads names the outputs of the class config.json describes (logits for a causal LM)
        outputs = getattr(entry.impl, "output_names", None)
        self.output_names = list(outputs(self.artifact.config) if outputs else entry.outputs)
        self.input_specs = {n: ("int64", (None, None)) for n in entry.inputs}

    def _activate_outside_zoo(self):
        """Any model_type transformers knows: the class config.json names, read from safetensors (hf_source)."""
        from porter.routes import hf_source

        model, config, name = hf_source.load(self.artifact.path)
        described = hf_source.describe(model, config, name)
        self.model = model.to(self.device)
        self.input_names, self.output_names = described.input_names, described.output_names
        self.input_specs = described.specs
        self.input_ranges, self.sample_feeds = described.ranges, described.feeds
        self.index_bounds = {n: int(getattr(config, "vocab_size", 0) or 100) for n in self.input_names if n.endswith("input_ids")}
        self.outside_zoo = True

    def infer(self, feeds):
        torch = self.torch
        if getattr(self, "outside_zoo", False):  # feeds keep their dtypes (pixel values, features)
            args = {k: torch.as_tensor(np.ascontiguousarray(v), device=self.device) for k, v in feeds.items()}
            with torch.inference_mode():
                out = self.model(**args, return_dict=True)
            return {k: tensor_to_numpy(out[k]) for k in self.output_names if out.get(k) is not None}
        # token ids as int64; an image family's pixel_values keep their float dtype
        args = {k: torch.as_tensor(np.asarray(v, dtype=np.float32 if k == "pixel_values" else np.int64), device=self.device)
                for k, v in feeds.items()}
        with torch.inference_mode():
            out = self.model(**args)
        return {k: tensor_to_numpy(out[k]) for k in self.output_names if out.get(k) is not None}

    def synchronize(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()


def _scan_weights(folder, allow_nonfinite: bool) -> None:
    """NaN/Inf and integer-typed float weights, read shard by shard, one tensor at a time."""
    from porter.readers.checkpoints import open_torch_checkpoint
    from porter.checks.numerics import scan_checkpoint

    scan_checkpoint(open_torch_checkpoint(folder), allow_nonfinite)


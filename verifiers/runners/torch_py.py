"""A porter-generated folder: model.py (plain PyTorch source) + model.safetensors.

model.py is run under a private module name only when porter wrote it (its sha256 matches the one
in porter_report.json) or the user passed --trust-model-code; its ``load()`` builds the module and
fills it from model.safetensors, without porter."""

from __future__ import annotations

import sys
import types

import numpy as np

from porter.errors import PorterError
from porter.checks.model_files import read_json_if_present
from porter.readers.model_code import verified_model_code
from porter.checks.numerics import tensor_to_numpy
from porter.verifiers.runners.base import Runner


class TorchPyRunner(Runner):
    framework = "torch"

    def activate(self):
        from porter.process.frameworks import torch

        self.torch = torch()
        folder = self.artifact.path
        source = verified_model_code(folder, trust=bool(self.options.get("trust_model_code")))
        name = f"_porter_generated_{abs(hash(str(folder.resolve())))}"
        module = types.ModuleType(name)
        module.__file__ = str(folder / "model.py")
        sys.modules[name] = module  # dataclasses and pickling look a module up by name while it runs
        try:
            exec(compile(source, module.__file__, "exec"), module.__dict__)  # the checked bytes, not a second read
            self.model = module.load(str(folder)).to(self.device)
        except Exception as exc:
            raise PorterError(f"{folder}/model.py could not be loaded: {type(exc).__name__}: {exc}") from None
        finally:
            sys.modules.pop(name, None)
        self.input_names = list(getattr(self.model, "onnx_input_names", []))
        self.output_names = list(getattr(self.model, "onnx_output_names", []))
        report = folder / "porter_report.json"
        if report.is_file():  # the written model's input specs and layout, as convert recorded them
            written = read_json_if_present(report, folder) or {}
            self.input_specs = {k: (v["dtype"], tuple(v["shape"])) for k, v in written.get("inputs", {}).items()}
            self.layout = written.get("layout", {}).get("candidate", self.layout)

    def infer(self, feeds):
        torch = self.torch
        args = [torch.as_tensor(np.ascontiguousarray(feeds[n]), device=self.device) for n in self.input_names]
        with torch.no_grad():
            out = self.model(*args)
        values = list(out) if isinstance(out, (list, tuple)) else [out]
        return {n: tensor_to_numpy(v) for n, v in zip(self.output_names, values)}

    def synchronize(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

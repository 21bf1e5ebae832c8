"""A torch.export ExportedProgram (.pt2), loaded by torch.export.load and run as a module."""

from __future__ import annotations

import numpy as np

from porter.checks.numerics import tensor_to_numpy
from porter.verifiers.runners.base import Runner


class ExportedProgramRunner(Runner):
    framework = "torch"

    def activate(self):
        from porter.process.frameworks import torch
        from porter.routes.to_onnx import exported_program_io, exported_program_ranges, load_exported_program

        self.torch = torch()
        program = load_exported_program(self.artifact.path)
        if not self.device.startswith("cpu"):
            program = self.torch.export.passes.move_to_device_pass(program, self.device)
        self.input_names, self.output_names, self.input_specs = exported_program_io(program)
        self.input_ranges = exported_program_ranges(program)  # generated inputs stay inside them
        self.module = program.module()

    def infer(self, feeds):
        torch = self.torch
        args = [torch.as_tensor(np.ascontiguousarray(feeds[n]), device=self.device) for n in self.input_names]
        with torch.no_grad():
            out = self.module(*args)
        if isinstance(out, dict):
            values = [out[n] for n in self.output_names]
        else:
            values = list(out) if isinstance(out, (list, tuple)) else [out]
        return {n: tensor_to_numpy(v) for n, v in zip(self.output_names, values)}

    def synchronize(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

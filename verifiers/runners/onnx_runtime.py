"""An ONNX file, run by onnxruntime (CPU; the CUDA provider first when device=cuda)."""

from __future__ import annotations

import numpy as np

from porter.errors import PorterError
from porter.verifiers.runners.base import Runner

_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
           "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
           "tensor(bool)": "bool"}


class OnnxRuntimeRunner(Runner):
    framework = "onnx"

    def activate(self):
        import onnxruntime as ort

        from porter.routes.onnx_graph import check_external_data

        check_external_data(self.artifact.path)  # onnxruntime itself would follow a link out of the folder

        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise PorterError("device=cuda, but this onnxruntime has no CUDAExecutionProvider",
                                  hint="install onnxruntime-gpu, or use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = self.options.get("threads") or 0  # 0: onnxruntime's default
        try:
            self.session = ort.InferenceSession(str(self.artifact.path), options, providers=providers)
        except Exception as exc:
            raise PorterError(f"onnxruntime cannot load {self.artifact.path}: {exc}",
                              hint="the file is corrupt, or uses ops onnxruntime does not have") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_specs = {
            i.name: (_DTYPES.get(i.type, i.type), tuple(d if isinstance(d, int) else None for d in i.shape))
            for i in self.session.get_inputs()
        }

    def infer(self, feeds):
        args = {k: np.asarray(v).astype(self.input_specs[k][0], copy=False) for k, v in feeds.items() if k in self.input_specs}
        return dict(zip(self.output_names, self.session.run(self.output_names, args)))

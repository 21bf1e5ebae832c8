"""The runner interface every verifier sees."""

from __future__ import annotations

import numpy as np


class Runner:
    """Subclasses set ``name``, ``framework``, ``input_names``/``output_names`` in ``activate``
    and implement ``infer``. Use as a context manager (activate on enter)."""

    framework = "?"
    layout = "native"  # or "nhwc"/"nchw" where a zoo entry or --layout declares it

    def __init__(self, artifact, device: str = "cpu", **options):
        self.artifact = artifact
        self.device = device
        self.options = options
        self.name = str(getattr(artifact, "path", artifact))
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.input_specs: dict[str, tuple] = {}  # name -> (dtype, shape with None for dynamic dims)
        self.placed: str | None = None  # where the last outputs were computed, where the runtime says (tf_device.py)

    def activate(self) -> None:  # load the model
        pass

    def deactivate(self) -> None:
        pass

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for the device; latency timing calls it inside the timed region."""

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc):
        self.deactivate()
        return False

"""A .tflite run by LiteRT in a fresh child process (litert_child.py) that imports numpy and ai_edge_litert
only: what a deployment without TensorFlow runs. This process may have imported TensorFlow (and with it
the Flex delegate, which would hide Select-TF ops LiteRT cannot run); the child never does, and says so."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.verifiers.runners.base import Runner

CHILD = Path(__file__).with_name("litert_child.py")


class LiteRTProcess:
    """One child process for one .tflite; ``run(feed)`` any number of times, then ``close()``.
    Subclasses run another runtime's child with the same protocol (runtime_isolated.py): ``child``, ``label``, ``_argv``."""

    child, label = CHILD, "LiteRT"

    def _argv(self) -> list[str]:
        return [str(self.path.resolve()), *(["--flex"] if self.flex else [])]  # the child runs in a folder of its own

    def __init__(self, model_path, flex: bool = False):
        self.path, self.flex = Path(model_path), flex
        self._spawn()
        self._ready()

    def _spawn(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="porter-litert-")
        self._stderr = open(Path(self._dir.name) / "stderr.txt", "w+b")  # noqa: SIM115 - closed in close()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        env.pop("PYTHONPATH", None)  # nothing of this process's import path: the child sees site-packages only
        # -P: the child's own folder (porter's runners) is not put on sys.path either
        self._proc = subprocess.Popen([sys.executable, "-P", str(self.child), *self._argv()],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
                                      text=True, cwd=self._dir.name)
        self._count = 0

    def _ready(self) -> None:
        """The child's first line: what it loaded (or why it could not)."""
        self.described = self._read("loading")
        self.runtime = self.described["runtime"]
        self.final: dict | None = None

    def _read(self, what: str) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=60)
            raise PorterError(f"the {self.label} process stopped while {what} {self.path} (exit {self._proc.returncode})",
                              problems=self._stderr_tail())
        return json.loads(line)

    def _stderr_tail(self) -> list[str]:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = [s for s in self._stderr.read().decode(errors="replace").splitlines() if s.strip()]
        return lines[-12:]

    def run(self, feed: dict) -> dict:
        self._count += 1
        src, dst = Path(self._dir.name) / f"in{self._count}.npz", Path(self._dir.name) / f"out{self._count}.npz"
        np.savez(src, **{k: np.asarray(v) for k, v in feed.items()})
        self._proc.stdin.write(json.dumps({"in": str(src), "out": str(dst)}) + "\n")
        self._proc.stdin.flush()
        answer = self._read("running")
        if "error" in answer:
            if "Select TensorFlow op" in answer["error"]:
                # TensorFlow 2.21's tf.lite.Interpreter no longer links the Flex delegate, and ai_edge_litert has none
                ops = sorted(set(re.findall(r"Flex\w+", answer["error"]))) or ["Select-TF ops"]
                raise PorterError(f"{self.path} holds Flex (Select-TF) ops ({', '.join(ops)}) and no runtime installed here "
                                  f"runs them ({self.runtime}: {answer['error'][:200]}): it cannot be verified",
                                  hint="convert without --allow-flex (TFLite built-ins only), or pass --no-verify to write "
                                       "it unverified")
            raise PorterError(f"{self.label} ({self.runtime}) could not run {self.path}: {answer['error'][:500]}")
        out = read_npz(dst)
        src.unlink(), dst.unlink()
        return out

    def close(self) -> dict:
        """The child's last word: {"tensorflow_imported": bool, ...}; raises if it failed its own check."""
        if self.final is not None:
            return self.final
        try:
            self._proc.stdin.close()
            self.final = self._read("finishing")
            rc = self._proc.wait(timeout=60)
            if rc != 0:
                raise PorterError(f"the {self.label} process for {self.path} exited {rc}", problems=self._stderr_tail())
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._stderr.close()
            self._dir.cleanup()
        return self.final


def run_isolated(model_path, feeds: list[dict], flex: bool = False) -> tuple[list[dict], dict]:
    """Every feed run by LiteRT in one fresh process: (outputs per feed, {"described", "final"})."""
    child = LiteRTProcess(model_path, flex)
    try:
        outs = [child.run(f) for f in feeds]
    finally:
        final = child.close()
    return outs, {"described": child.described, "final": final}


class IsolatedTFLiteRunner(Runner):
    """The runner interface over LiteRTProcess (options: flex=True for a model with Select-TF ops)."""

    framework = "tflite"

    def activate(self):
        if self.device.startswith("cuda"):
            raise PorterError("TFLite runs on the CPU here", hint="use --device cpu for .tflite files")
        self.child = LiteRTProcess(self.artifact.path, flex=bool(self.options.get("flex")))
        inputs = self.child.described["inputs"]
        self.input_names = list(inputs)
        self.output_names = list(self.child.described["outputs"])
        self.input_specs = {n: (d["dtype"], tuple(s if s >= 0 else None for s in d["shape_signature"]))
                            for n, d in inputs.items()}
        self.runtime = self.child.runtime

    def infer(self, feeds):
        specs = self.input_specs
        return self.child.run({k: np.asarray(v).astype(specs[k][0]) for k, v in feeds.items() if k in specs})

    def deactivate(self):
        child = getattr(self, "child", None)
        if child is not None:
            self.child = None  # closed once, whatever close() raises
            self.final = child.close()


def read_npz(path) -> dict:
    """A child's outputs; "bfloat16::NAME" keys are bfloat16 arrays sent as their uint16 bits (runtime_child)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if any(k.startswith("bfloat16::") for k in out):
        import ml_dtypes

        out = {k.removeprefix("bfloat16::"): (v.view(ml_dtypes.bfloat16) if k.startswith("bfloat16::") else v)
               for k, v in out.items()}
    return out

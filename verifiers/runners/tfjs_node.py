"""A TF.js graph model (model.json + weight shards) run by @tensorflow/tfjs in Node, in a child process
(tfjs_node.js) that loads @tensorflow/tfjs-core, -backend-cpu and -converter from the folder porter was set up with
(porter/routes/tfjs.py: ``locate``), and nothing else: what a Node or browser deployment runs. No network.

TF.js has no int64: integer inputs travel as int32 (the SavedModels porter writes take int32 ids)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from porter.errors import PorterError
from porter.verifiers.runners.base import Runner
from porter.verifiers.runners.litert_isolated import LiteRTProcess

SCRIPT = Path(__file__).with_name("tfjs_node.js")
_AS_SENT = {"float32": np.float32, "int32": np.int32, "bool": np.uint8}


class NodeProcess(LiteRTProcess):
    """One Node process for one TF.js model; ``run(feed)`` any number of times, then ``close()`` (reading the child's
    replies and its stderr as the LiteRT process does)."""

    label = "Node (TF.js)"

    def __init__(self, model_dir, node: str, node_modules):
        self.path = Path(model_dir).resolve()  # the child runs in its own temporary folder
        self._dir = tempfile.TemporaryDirectory(prefix="porter-tfjs-")
        self._stderr = open(Path(self._dir.name) / "stderr.txt", "w+b")  # noqa: SIM115 - closed in close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NODE_")}  # no NODE_PATH/NODE_OPTIONS of the caller's
        self._proc = subprocess.Popen([node, str(SCRIPT), str(self.path), str(node_modules)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, env=env, text=True, cwd=self._dir.name)
        self._count = 0
        self.final: dict | None = None
        self.described = self._read("loading")
        self.runtime = self.described["runtime"]

    def run(self, feed: dict) -> dict:
        self._count += 1
        work = Path(self._dir.name) / f"run{self._count}"
        work.mkdir()
        manifest = {}
        for name, value in feed.items():
            value = np.asarray(value)
            dtype = self.described["inputs"].get(name, {}).get("dtype", "float32")
            sent = np.ascontiguousarray(value.astype(np.dtype(_AS_SENT.get(dtype, np.float32)).newbyteorder("<")))
            (work / f"{name}.in").write_bytes(sent.tobytes())
            manifest[name] = {"dtype": dtype, "shape": list(value.shape), "file": str(work / f"{name}.in")}
        (work / "feed.json").write_text(json.dumps(manifest))
        self._proc.stdin.write(json.dumps({"in": str(work / "feed.json"), "out": str(work)}) + "\n")
        self._proc.stdin.flush()
        answer = self._read("running")
        if "error" in answer:
            raise PorterError(f"TF.js ({self.runtime}) could not run {self.path}: {answer['error'][:500]}")
        out = {}
        for name, spec in answer["outputs"].items():
            dtype = {"float32": "<f4", "int32": "<i4", "bool": "u1"}[spec["dtype"]]
            out[name] = np.frombuffer(Path(spec["file"]).read_bytes(), dtype=dtype).reshape(spec["shape"]).copy()
            if spec["dtype"] == "bool":
                out[name] = out[name].astype(bool)
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
        return out


class TFJSRunner(Runner):
    """The runner interface over NodeProcess."""

    framework = "tfjs"

    def activate(self):
        from porter.routes.tfjs import locate

        if self.device.startswith("cuda"):
            raise PorterError("TF.js runs on Node's CPU backend here", hint="use --device cpu for TF.js models")
        found = locate(need_python=False)
        self.child = NodeProcess(self.artifact.path, found.node, found.node_modules)
        inputs = self.child.described["inputs"]
        self.input_names = list(inputs)
        self.output_names = list(self.child.described["outputs"])
        self.input_specs = {n: (d["dtype"], tuple(None if s < 0 else s for s in d["shape"])) for n, d in inputs.items()}
        self.runtime = self.child.runtime

    def infer(self, feeds):
        return self.child.run({k: v for k, v in feeds.items() if k in self.input_specs})

    def deactivate(self):
        child = getattr(self, "child", None)
        if child is not None:
            self.child = None
            child.close()

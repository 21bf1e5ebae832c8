"""`porter convert MODEL --from torch --to tfjs` (or --from tf with a SavedModel): the SavedModel `--to tf` writes
(direct or graph route, staged, then removed) -> tensorflowjs' own converter -> a TF.js graph model (model.json +
weight shards), verified by running it in Node with @tensorflow/tfjs against the source.

Neither tensorflowjs nor @tensorflow/tfjs is one of porter's dependencies: tensorflowjs 4.22 asks for jax, flax,
tf-keras, tensorflow-decision-forests and packaging~=23.1, which porter's pinned set (and a clean `pip check`) cannot
hold. Its SavedModel converter needs none of them, so porter keeps it in a folder of its own (``pip install --no-deps
--target``) and runs it in a child process with that folder on its path (routes/tfjs_convert.py); @tensorflow/tfjs is
an npm package in a node_modules folder of its own. ``python -m porter.routes.tfjs setup`` installs both (the only
step that uses the network); at run time porter finds them here, in this order:

    tensorflowjs       $PORTER_TFJS_PYTHON, else $PORTER_TFJS_HOME/python, else importable from porter's own env
    @tensorflow/tfjs   $PORTER_TFJS_NODE_MODULES, else $PORTER_TFJS_HOME/node/node_modules
    node               $PORTER_NODE, else `node` on PATH

$PORTER_TFJS_HOME defaults to $XDG_CACHE_HOME/porter/tfjs (~/.cache/porter/tfjs). What is missing is named with the
command that installs it (exit 2), before anything is converted.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from porter.errors import PorterError

TENSORFLOWJS = "4.22.0"  # the tensorflowjs wheel whose converter porter drives (tfjs_convert.py relies on its layout)
TFJS = "4.22.0"  # @tensorflow/tfjs (core, cpu backend, converter) on npm
CHILD = Path(__file__).with_name("tfjs_convert.py")
NODE_PACKAGES = ("tfjs-core", "tfjs-backend-cpu", "tfjs-converter")


def home() -> Path:
    if os.environ.get("PORTER_TFJS_HOME"):
        return Path(os.environ["PORTER_TFJS_HOME"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "porter" / "tfjs"


def setup_command() -> str:
    return "python -m porter.routes.tfjs setup"


@dataclass
class Found:
    python_dir: Path | None  # the folder to put on the converter child's path (None: importable as installed)
    node: str | None
    node_modules: Path | None
    node_version: str | None = None


def _python_dir() -> tuple[Path | None, bool]:
    given = os.environ.get("PORTER_TFJS_PYTHON")
    for folder in ([Path(given)] if given else [home() / "python"]):
        if (folder / "tensorflowjs" / "converters" / "tf_saved_model_conversion_v2.py").is_file():
            return folder, True
    if given:
        return Path(given), False
    import importlib.util

    return None, importlib.util.find_spec("tensorflowjs") is not None


def _node_modules() -> tuple[Path, bool]:
    folder = Path(os.environ.get("PORTER_TFJS_NODE_MODULES") or home() / "node" / "node_modules")
    return folder, all((folder / "@tensorflow" / p / "package.json").is_file() for p in NODE_PACKAGES)


def locate(need_python: bool = True, need_node: bool = True) -> Found:
    """Where tensorflowjs, node and @tensorflow/tfjs are; everything missing at once (exit 2) with its install line."""
    problems = []
    python_dir, have_python = _python_dir()
    if need_python and not have_python:
        where = python_dir or home() / "python"
        problems.append(f"tensorflowjs {TENSORFLOWJS} (its SavedModel converter) is not in {where}: "
                        f"{sys.executable} -m pip install --no-deps --target {where} tensorflowjs=={TENSORFLOWJS}")
    node = os.environ.get("PORTER_NODE") or shutil.which("node")
    modules, have_modules = _node_modules()
    version = None
    if need_node:
        if node is None:
            problems.append("node (Node.js 18 or newer) is not on PATH: install Node.js (e.g. apt-get install nodejs npm), "
                            "or set PORTER_NODE to its binary")
        else:
            try:
                version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
            except (OSError, subprocess.SubprocessError) as exc:
                problems.append(f"{node} --version failed ({exc}): install Node.js 18 or newer")
        if not have_modules:
            problems.append(f"@tensorflow/tfjs {TFJS} is not in {modules}: npm install --prefix {modules.parent} "
                            f"--no-audit --no-fund @tensorflow/tfjs@{TFJS} (or set PORTER_TFJS_NODE_MODULES)")
    if problems:
        raise PorterError("--to tfjs needs tensorflowjs' converter and Node.js with @tensorflow/tfjs, installed apart from "
                          "porter's own environment; missing:", problems=problems,
                          hint=f"`{setup_command()}` installs both into {home()} (PORTER_TFJS_HOME)"
                          + ("" if not need_node else "; or pass --no-verify to convert without Node"))
    return Found(python_dir if have_python else None, node, modules if have_modules else None, version)


def setup(root: Path | None = None, timeout: float = 600) -> Found:
    """Install tensorflowjs (no dependencies, its own folder) and @tensorflow/tfjs (its own node_modules) under
    ``root`` (default: home()). The only step that uses the network; running it again reuses what is there."""
    root = Path(root) if root else home()
    python_dir, modules = root / "python", root / "node" / "node_modules"
    if not (python_dir / "tensorflowjs" / "converters" / "tf_saved_model_conversion_v2.py").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(python_dir),
                        f"tensorflowjs=={TENSORFLOWJS}"], check=True, timeout=timeout)
    if not all((modules / "@tensorflow" / p / "package.json").is_file() for p in NODE_PACKAGES):
        npm = shutil.which("npm")
        if npm is None:
            raise PorterError("npm is not on PATH", hint="install Node.js with npm (e.g. apt-get install nodejs npm)")
        (root / "node").mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(root / "node"), "--no-audit", "--no-fund", "--prefer-offline",
                        "--loglevel", "error", f"@tensorflow/tfjs@{TFJS}"], check=True, timeout=timeout)
    saved = {k: os.environ.get(k) for k in ("PORTER_TFJS_HOME", "PORTER_TFJS_PYTHON", "PORTER_TFJS_NODE_MODULES")}
    os.environ["PORTER_TFJS_HOME"] = str(root)
    os.environ.pop("PORTER_TFJS_PYTHON", None), os.environ.pop("PORTER_TFJS_NODE_MODULES", None)
    try:
        return locate()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- SavedModel -> TF.js -------------------------------------------------------------------------------------------


def saved_model_to_tfjs(saved_model: Path, folder: Path, found: Found) -> dict:
    """tensorflowjs' converter in a child process (tfjs_convert.py); returns the report's "tfjs" section.
    Ops TF.js has no kernel for stop here (exit 2), named with their counts."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    if found.python_dir is not None:
        env["PYTHONPATH"] = str(found.python_dir)
    else:
        env.pop("PYTHONPATH", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-P", str(CHILD), str(saved_model), str(folder)], env=env,
                          capture_output=True, text=True)
    lines = [s for s in proc.stdout.splitlines() if s.strip()]
    answer = json.loads(lines[-1]) if lines else {}
    tail = [s for s in proc.stderr.splitlines() if s.strip()][-12:]
    if "unsupported" in answer:
        ops = answer["unsupported"]
        raise PorterError(f"the model needs TensorFlow ops that TF.js {TFJS} has no kernel for: "
                          + ", ".join(f"{op} (x{n})" for op, n in ops.items()),
                          problems=[f"tf.{op}: {n} node(s) in the frozen serving_default graph "
                                    f"({answer['stage']})" for op, n in ops.items()],
                          hint="no flag makes these run in TF.js: convert --to tf (or --to tflite), "
                               "or replace the op in the model")
    if "import_error" in answer:
        raise PorterError(f"tensorflowjs' SavedModel converter did not import with porter's TensorFlow: {answer['import_error']}",
                          problems=tail, hint=f"reinstall it: {setup_command()} (tensorflowjs {TENSORFLOWJS})")
    if not answer.get("ok"):
        raise PorterError("tensorflowjs could not convert the SavedModel: "
                          + (answer.get("error") or f"the converter exited {proc.returncode}")[:600], problems=tail)
    rewritten = {f"{op} -> 1 - Erf": n for op, n in answer["rewritten"].items()}
    rewritten.update(_unfuse_activations(folder / "model.json"))
    model = json.loads((folder / "model.json").read_text())
    ops = collections.Counter(n["op"] for n in model["modelTopology"]["node"])
    for f in model["modelTopology"].get("library", {}).get("function", []):
        ops.update(n["op"] for n in f.get("nodeDef", []))
    files = sorted(p for g in model["weightsManifest"] for p in g["paths"])
    signature = model.get("signature", {})
    return {
        "tensorflowjs": answer["tensorflowjs"],
        "files": ["model.json", *files],
        "bytes": sum((folder / f).stat().st_size for f in ["model.json", *files]),
        "ops": dict(sorted(ops.items())),
        "rewritten": rewritten,
        "inputs": {k.removesuffix(":0"): {"dtype": v["dtype"].removeprefix("DT_").lower(),
                                           "shape": [None if int(d.get("size", -1)) < 0 else int(d["size"])
                                                     for d in v.get("tensorShape", {}).get("dim", [])]}
                   for k, v in signature.get("inputs", {}).items()},
        "convert_s": round(time.perf_counter() - t0, 2),
    }


# activations TF.js' CPU backend applies inside a fused MatMul/Conv2D (tfjs-backend-cpu's fused_utils); its WebGL and
# WASM backends take more, so an activation outside these is moved out of the fused op into its own node
_CPU_FUSED = {"Relu", "Relu6", "Elu", "LeakyRelu", "Prelu", "Sigmoid"}
_FUSED = ("_FusedMatMul", "_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedBatchMatMul")


def _unfuse_activations(model_json: Path) -> dict:
    """tensorflowjs' grappler pass fuses MatMul + BiasAdd + Tanh (a pooler) into one _FusedMatMul, which the CPU
    backend refuses at run time ("Activation tanh has not been implemented"): the activation becomes a node of its
    own after the fused op (same name, so every consumer reads it), in model.json. Returns {"fused X -> X": count}."""
    import base64

    model = json.loads(model_json.read_text())
    nodes, added, counts = model["modelTopology"]["node"], [], collections.Counter()
    for node in nodes:
        if node["op"] not in _FUSED:
            continue
        fused = [base64.b64decode(x).decode() for x in node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])]
        if not fused or fused[-1] in _CPU_FUSED or fused[-1] in ("BiasAdd", "BiasAddV1", "FusedBatchNorm", "Add"):
            continue
        activation, name = fused[-1], node["name"]
        node["attr"]["fused_ops"]["list"]["s"] = [base64.b64encode(x.encode()).decode() for x in fused[:-1]]
        node["name"] = f"{name}/porter_fused"
        dtype = node["attr"].get("T", {"type": "DT_FLOAT"})
        added.append({"name": name, "op": activation, "input": [node["name"]], "device": node.get("device", ""),
                      "attr": {"T": dtype}})
        counts[f"fused {activation} -> {activation}"] += 1
    if added:
        nodes.extend(added)
        model_json.write_text(json.dumps(model))
    return dict(counts)


def convert_to_tfjs(model, *, source, checkpoint, out, force, verify, atol, rtol, console, inputs=None,
                    route="auto", **tf_options):
    """``tf_options``: the --to tf conversion's own flags (layout, dtype, ...), passed through to it."""
    from porter import conversion
    from porter.output.outdir import staged_output
    from porter.output.result import ConversionResult, finish, verify_written
    from porter.readers.artifacts import detect

    found = locate(need_node=verify)  # before anything is converted
    out = Path(out)
    path = Path(checkpoint) if checkpoint else Path(str(model))
    given_saved_model = source == "tf" and path.exists() and detect(path).format == "saved_model"
    if source == "tf" and not given_saved_model:
        raise PorterError("--from tf --to tfjs converts a SavedModel folder", hint="export the Keras model first "
                          "(model.export(DIR)), or convert its torch checkpoint --from torch")
    # torch and ONNX sources: the SavedModel --to tf writes (direct or graph route), then the same converter
    with staged_output(out, force, protected=(checkpoint, model if checkpoint is None else None, inputs)) as tmp:
        t0 = time.perf_counter()
        if given_saved_model:
            saved, reference = path, path
            report = {"source": str(path), "from": "tf", "route": "tensorflowjs",
                      "route_reason": "a SavedModel: tensorflowjs' converter reads it as it is",
                      "comparison": {"reference": "the source SavedModel's serving_default (TensorFlow)"}, "notes": []}
        else:
            saved = tmp / ".saved_model"
            written = conversion.convert(model, source=source, target="tf", checkpoint=checkpoint, out=saved, route=route,
                                         verify=False, force=True, console=None, inputs=None, **tf_options)
            report = written.report
            reference = Path(report["source"])
            report["route_reason"] = (report.get("route_reason") or "") + "; the SavedModel then through tensorflowjs' converter"
        timings = dict(report.get("timings") or {}, saved_model_s=round(time.perf_counter() - t0, 2))
        try:
            section = saved_model_to_tfjs(saved, tmp, found)
        finally:
            if saved != path:
                shutil.rmtree(saved, ignore_errors=True)
        timings["tfjs_convert_s"] = section.pop("convert_s")
        runtime = f"@tensorflow/tfjs {TFJS} in Node {found.node_version}, CPU backend" if verify else "not run (--no-verify)"
        report.update(to="tfjs", tfjs=dict(section, runtime=runtime), timings=timings, out=str(out))
        report.pop("status", None), report.pop("verification", None), report.pop("fresh_process", None)
        report["inputs"] = section["inputs"]
        if verify:
            report.setdefault("comparison", {})["candidate"] = f"model.json's serving_default run by {runtime}, in a child process"
        report.setdefault("notes", [])
        for change, n in section["rewritten"].items():
            report["notes"].append(
                f"exact GELU: TensorFlow's Erfc (no TF.js kernel) written as 1 - Erf, the form torch computes it in ({n} node(s))"
                if change.startswith("Erfc") else
                f"{change.split()[1]} moved out of {n} fused MatMul/Conv2D node(s) into its own node: TF.js' CPU backend "
                "applies no such fused activation")
        (tmp / "porter_report.json").write_text(json.dumps(report, indent=2, default=str))
        verification = None
        if verify:
            t0 = time.perf_counter()
            verification = verify_written(reference, tmp, atol, rtol, report.get("route"), inputs)
            timings["verify_s"] = round(time.perf_counter() - t0, 2)
        finish(tmp, out, report, verification, console)
    return ConversionResult(out, report.get("route", "tensorflowjs"), verification, report)


def main(argv=None) -> int:
    """``python -m porter.routes.tfjs setup [DIR]``: install tensorflowjs and @tensorflow/tfjs for --to tfjs;
    ``python -m porter.routes.tfjs where``: say where porter finds them."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("setup", "where"):
        print(main.__doc__)
        return 2
    try:
        found = setup(Path(argv[1]) if len(argv) > 1 else None) if argv[0] == "setup" else locate()
    except PorterError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    print(f"tensorflowjs: {found.python_dir or 'importable from ' + sys.executable}\n"
          f"@tensorflow/tfjs: {found.node_modules}\nnode: {found.node} ({found.node_version})")
    if argv[0] == "setup" and len(argv) > 1:
        print(f"export PORTER_TFJS_HOME={argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

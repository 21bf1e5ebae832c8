"""Small helpers shared by the tests."""

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"


def hidden_state_error(a, b, attention_mask) -> float:
    """Max abs difference over the positions that are not padding."""
    valid = np.asarray(attention_mask).astype(bool)
    return float(np.abs(np.asarray(a) - np.asarray(b))[valid].max())


def save_pt2(module, example, path, dynamic: dict | None = None):
    """torch.export ``module`` on the one ``example`` input and save it as ``path`` (an ExportedProgram,
    the ONNX route's torch input). ``dynamic``: axis -> (name, min, max) for the input's dynamic dims."""
    import torch

    dims = {axis: torch.export.Dim(name, min=lo, max=hi) for axis, (name, lo, hi) in (dynamic or {}).items()}
    program = torch.export.export(module, (example,), dynamic_shapes=(dims,) if dims else None)
    torch.export.save(program, str(path))
    return path


def run_onnx(model, feeds: dict) -> list:
    """``model`` (a ModelProto) run by onnxruntime on ``feeds``: every output."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def load_benchmark(name: str):
    """benchmarks/NAME.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"porter_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_written_model(folder):
    """The torch model in a porter-written ``folder`` (its model.py executed as porter's own output, then load())."""
    import types

    module = types.ModuleType(f"_porter_written_{Path(folder).name.replace('-', '_')}")
    exec(compile((Path(folder) / "model.py").read_bytes(), str(Path(folder) / "model.py"), "exec"), module.__dict__)  # noqa: S102
    return module.load(str(folder))


def convert_keras_strict(model, tmp_path):
    """``model`` saved as .keras and converted TF -> torch with atol 1e-5, rtol 0: (out folder, result)."""
    import porter

    src = tmp_path / f"{model.name}.keras"
    model.save(str(src))
    out = tmp_path / f"{model.name}-torch"
    result = porter.convert(str(src), source="tf", target="torch", out=out, atol=1e-5, rtol=0.0)
    return out, result


BATCH = {0: ("batch", 1, 64)}
BATCH_AND_SEQ = {0: ("batch", 1, 64), 1: ("seq", 2, 64)}


def assert_perturbed_keras_hub_copy_fails_localised(cli, src, converted, variable, tmp_path) -> None:
    """A copy of porter's keras-hub conversion ``converted`` with one variable perturbed (random, not a
    constant shift, which a LayerNorm would cancel): `porter verify` must fail (exit 1) and localise
    the Keras layer holding it."""
    import json
    import shutil

    import numpy as np
    from porter.zoo.keras_hub import entry
    from porter.zoo.keras_hub.saved import register_if_keras_hub

    from porter.process.frameworks import keras

    register_if_keras_hub(converted / "model.keras")
    model = keras().saving.load_model(str(converted / "model.keras"), safe_mode=True)
    v = entry.keras_variables(model)[variable]
    v.assign(v.numpy() + np.random.default_rng(0).normal(0, 0.05, v.shape).astype("float32"))
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(converted / "config.json", bad / "config.json")
    model.save(str(bad / "model.keras"))
    entry.export_saved_model(model, bad)
    code, output = cli("verify", src, bad, "--report", tmp_path / "r.json")
    assert code == 1, output
    where = json.loads((tmp_path / "r.json").read_text())["localisation"]
    assert where["found"] and where["keras_layer"] == variable.rpartition("/")[0]



def frameworks_imported_by_cli(args: list[str], timeout: int = 600) -> list[str]:
    """``porter ARGS`` run in a fresh Python process (exit 0 asserted): which of torch, transformers and
    tensorflow it imported."""
    import json
    import subprocess
    import sys

    script = ("import json, sys\n"
              "from porter.cli import main\n"
              "try:\n"
              f"    main({[str(a) for a in args]!r})\n"
              "except SystemExit as e:\n"
              "    assert e.code == 0, e.code\n"
              "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'tensorflow') if m in sys.modules)))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def porter_measured(args: list, timeout: int = 300) -> tuple[int, str, float, float]:
    """``porter ARGS`` in a fresh process with torch, TensorFlow, Keras and onnx imported first: (exit code,
    stderr, peak RSS in GB above what the process held after those imports, seconds), for the memory bombs."""
    import subprocess
    import sys

    script = ("import resource, sys, time\n"
              "import torch, tensorflow, keras, onnx  # noqa: the imports are the baseline\n"
              "from porter.cli import main\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "start = time.perf_counter()\n"
              "try:\n"
              f"    main({[str(a) for a in args]!r})\n"
              "    code = 0\n"
              "except SystemExit as e:\n"
              "    code = e.code\n"
              "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "print(f'MEASURED {code} {(peak - base) / 1e6:.3f} {time.perf_counter() - start:.2f}', file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    line = [ln for ln in run.stderr.splitlines() if ln.startswith("MEASURED")]
    assert line, run.stderr[-3000:]
    _, code, grown, seconds = line[-1].split()
    print(f"{args[0]} {args[1]}: exit {code}, {grown} GB above the imports, {seconds} s")  # shown with pytest -s
    return int(code), run.stderr, float(grown), float(seconds)

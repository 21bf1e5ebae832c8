"""A zoo model's torch export on the ONNX route, run in a child process while porter imports TensorFlow
(porter/routes/zoo_onnx_export.py): the same graph, inputs and errors as the in-process export, the in-process
path when the child fails, and a `convert --route onnx --no-verify` whose process never imports torch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from porter import zoo
from porter.errors import PorterError
from porter.routes import zoo_onnx_export


def _config(folder, **changes):
    return dict(json.loads((folder / "config.json").read_text()), **changes)


def _outputs(path, feed):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_the_child_exports_what_this_process_exports(tiny_bert, tmp_path):
    config = _config(tiny_bert)
    entry = zoo.for_config(config)
    ran = []
    beside = zoo_onnx_export.export_beside(entry, tiny_bert, config, tmp_path / "child.onnx",
                                           work=lambda: ran.append(True), completed=False)
    here = zoo_onnx_export.export(entry, tiny_bert, config, tmp_path / "here.onnx", completed=False)
    assert ran == [True]
    assert beside == here  # names, outputs, the sample inputs (as lists), the note
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in here["feeds"][1].items()}
    for got, want in zip(_outputs(tmp_path / "child.onnx", feed), _outputs(tmp_path / "here.onnx", feed)):
        np.testing.assert_array_equal(got, want)


def test_an_error_in_the_child_is_the_in_process_error(tiny_bert, tmp_path):
    config = _config(tiny_bert, initializer_range="x")  # transformers rejects it while completing the config
    entry = zoo.for_config(config)
    with pytest.raises(PorterError) as here:
        zoo_onnx_export.export(entry, tiny_bert, config, tmp_path / "here.onnx", completed=False)
    with pytest.raises(PorterError) as beside:
        zoo_onnx_export.export_beside(entry, tiny_bert, config, tmp_path / "child.onnx", work=lambda: None, completed=False)
    assert type(beside.value) is type(here.value)
    assert beside.value.render() == here.value.render()
    assert "initializer_range" in beside.value.render()
    assert not (tmp_path / "child.onnx").exists()


def test_a_child_that_fails_leaves_the_export_to_this_process(tiny_bert, tmp_path, monkeypatch):
    config = _config(tiny_bert)
    entry = zoo.for_config(config)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits 1 without an answer
    done = zoo_onnx_export.export_beside(entry, tiny_bert, config, tmp_path / "m.onnx", work=lambda: None, completed=False)
    assert done["names"] == list(entry.inputs) and (tmp_path / "m.onnx").is_file()


def test_the_onnx_route_without_verification_never_imports_torch(tiny_bert, tmp_path):
    out = tmp_path / "out"
    script = ("import sys\n"
              "from porter.cli import main\n"
              "try:\n"
              f"    main(['convert', {str(tiny_bert)!r}, '--from', 'torch', '--to', 'tf', '--route', 'onnx', '--no-verify',"
              f" '--out', {str(out)!r}])\n"
              "except SystemExit as e:\n"
              "    assert e.code == 0, e.code\n"
              "print(sorted(m for m in ('torch', 'transformers', 'tensorflow') if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "['tensorflow']"
    assert (out / "saved_model.pb").is_file()


def test_a_stopped_porter_leaves_no_export_running(tiny_bert, tmp_path):
    """SIGTERM while its child exports: porter kills the child, and nothing of the run is left in the temp folder."""
    import os
    import signal
    import time

    import psutil

    temp = tmp_path / "tmp"
    temp.mkdir()
    porter = subprocess.Popen([sys.executable, "-m", "porter.cli", "convert", str(tiny_bert), "--from", "torch", "--to", "tf",
                               "--route", "onnx", "--no-verify", "--out", str(tmp_path / "out")],
                              env={**os.environ, "TMPDIR": str(temp)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, child = time.monotonic() + 120, None
    while child is None and time.monotonic() < deadline and porter.poll() is None:
        child = next((p for p in psutil.Process(porter.pid).children() if "porter.routes.zoo_onnx_export" in " ".join(p.cmdline())), None)
        time.sleep(0.05)
    assert child is not None, "no export child seen"
    porter.send_signal(signal.SIGTERM)
    porter.wait(timeout=60)
    gone, _ = psutil.wait_procs([child], timeout=5)
    assert gone, "the export child outlived porter"
    assert not (tmp_path / "out").exists()
    assert list(temp.iterdir()) == []


def test_the_export_child_dies_with_a_killed_porter():
    """SIGKILL gives porter no chance to kill its child: the child asked the kernel for SIGKILL when its parent dies."""
    code = ("import ctypes\nfrom porter.routes.zoo_onnx_export import _die_with_parent\n_die_with_parent()\n"
            "sig = ctypes.c_int()\nctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(sig))\nprint(sig.value)\n")  # PR_GET_PDEATHSIG
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "9"


def test_one_core_exports_here_after_the_work(tiny_bert, tmp_path, monkeypatch):
    """With one core the child would only take turns with this process: no child, the work first, then the export."""
    import os

    config = _config(tiny_bert)
    entry = zoo.for_config(config)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a child was started"))
    order = []
    real = zoo_onnx_export.export
    monkeypatch.setattr(zoo_onnx_export, "export", lambda *a, **k: order.append("export") or real(*a, **k))
    done = zoo_onnx_export.export_beside(entry, tiny_bert, config, tmp_path / "m.onnx", work=lambda: order.append("work"),
                                         completed=False)
    assert order == ["work", "export"] and done["names"] == list(entry.inputs)

"""The torch side of the ONNX route, exported in a child process while porter imports TensorFlow
(porter/routes/onnx_export_child.py): the same graph, inputs and errors as the in-process export (a zoo folder
and an HF folder outside the zoo), the in-process path when the child fails or there is one core, no child left
behind a stopped porter, and a `convert --route onnx --no-verify` whose process never imports torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from tests_support import frameworks_imported_by_cli

from porter import zoo
from porter.errors import PorterError
from porter.routes import onnx_export_child


def _config(folder, **changes):
    return dict(json.loads((folder / "config.json").read_text()), **changes)


def _outputs(path, feed):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _same(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k != "feeds"} == {k: v for k, v in b.items() if k != "feeds"}
    assert [sorted(f) for f in a.get("feeds", [])] == [sorted(f) for f in b.get("feeds", [])]
    for fa, fb in zip(a.get("feeds", []), b.get("feeds", [])):
        for name in fa:
            assert fa[name].dtype == fb[name].dtype
            np.testing.assert_array_equal(fa[name], fb[name])


def _zoo_args(folder, config):
    return {"entry": zoo.for_config(config).name, "folder": str(folder), "config": config, "completed": False}


def _pt2(path):
    import torch
    from tests_support import save_pt2

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    with torch.no_grad():
        net[1].weight.add_(0.1 * torch.randn(16))  # LayerNorm moved off its init
        net[1].bias.add_(0.1 * torch.randn(16))
    return save_pt2(net, torch.randn(3, 8), path, dynamic={0: ("batch", 1, 64)})


@pytest.mark.parametrize("kind", ["zoo", "hf", "pt2"])
def test_the_child_exports_what_this_process_exports(kind, tiny_bert, tmp_path):
    if kind == "zoo":
        args = _zoo_args(tiny_bert, _config(tiny_bert))
    elif kind == "hf":
        from hf_tiny import make_tiny

        args = {"path": str(make_tiny(tmp_path / "distilbert", "distilbert"))}
    else:
        args = {"path": str(_pt2(tmp_path / "m.pt2"))}
    ran = []
    beside = onnx_export_child.export_beside(kind, tmp_path / "child.onnx", lambda: ran.append(True), "exporting", **args)
    here = onnx_export_child.run(kind, tmp_path / "here.onnx", **args)
    assert ran == [True]
    _same(beside, here)  # names, outputs, the sample inputs (dtypes too), the notes
    feed = here["feeds"][1] if "feeds" in here else {here["names"][0]: np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)}
    for got, want in zip(_outputs(tmp_path / "child.onnx", feed), _outputs(tmp_path / "here.onnx", feed)):
        np.testing.assert_array_equal(got, want)


def test_an_error_in_the_child_is_the_in_process_error(tiny_bert, tmp_path):
    args = _zoo_args(tiny_bert, _config(tiny_bert, initializer_range="x"))  # transformers rejects it while completing it
    with pytest.raises(PorterError) as here:
        onnx_export_child.run("zoo", tmp_path / "here.onnx", **args)
    with pytest.raises(PorterError) as beside:
        onnx_export_child.export_beside("zoo", tmp_path / "child.onnx", lambda: None, "exporting", **args)
    assert type(beside.value) is type(here.value)
    assert beside.value.render() == here.value.render()
    assert "initializer_range" in beside.value.render()
    assert not (tmp_path / "child.onnx").exists()


def test_a_child_that_fails_leaves_the_export_to_this_process(tiny_bert, tmp_path, monkeypatch):
    args = _zoo_args(tiny_bert, _config(tiny_bert))
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits 1 without an answer
    done = onnx_export_child.export_beside("zoo", tmp_path / "m.onnx", lambda: None, "exporting", **args)
    assert done["names"] == list(zoo.get(args["entry"]).inputs) and (tmp_path / "m.onnx").is_file()


def test_the_onnx_route_without_verification_never_imports_torch(tiny_bert, tmp_path):
    out = tmp_path / "out"
    args = ["convert", tiny_bert, "--from", "torch", "--to", "tf", "--route", "onnx", "--no-verify", "--out", out]
    assert frameworks_imported_by_cli(args) == ["tensorflow"]
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
        child = next((p for p in psutil.Process(porter.pid).children() if "porter.routes.onnx_export_child" in " ".join(p.cmdline())), None)
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
    code = ("import ctypes\nfrom porter.routes.onnx_export_child import _die_with_parent\n_die_with_parent()\n"
            "sig = ctypes.c_int()\nctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(sig))\nprint(sig.value)\n")  # PR_GET_PDEATHSIG
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "9"


def test_one_core_exports_here_after_the_work(tiny_bert, tmp_path, monkeypatch):
    """With one core the child would only take turns with this process: no child, the work first, then the export."""
    import os

    args = _zoo_args(tiny_bert, _config(tiny_bert))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # what in_process() reads
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a child was started"))
    order = []
    real = onnx_export_child.run
    monkeypatch.setattr(onnx_export_child, "run", lambda *a, **k: order.append("export") or real(*a, **k))
    done = onnx_export_child.export_beside("zoo", tmp_path / "m.onnx", lambda: order.append("work"), "exporting", **args)
    assert order == ["work", "export"] and done["names"] == list(zoo.get(args["entry"]).inputs)

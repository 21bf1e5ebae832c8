"""--out and --force never lose a file porter did not write; outputs are staged, moved atomically,
named by their final path, get the user's umask; leftovers of killed runs are swept; SIGTERM/SIGHUP
clean up like Ctrl-C; unwritable output and report paths fail before any heavy work."""

from __future__ import annotations

import errno
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from porter.output import outdir
from porter.errors import PorterError

REPO = Path(__file__).resolve().parents[1]


def snapshot(*roots) -> dict:
    """Every file under roots -> its bytes (folders as None): to prove nothing was touched."""
    seen = {}
    for root in roots:
        root = Path(root)
        if root.is_file() or root.is_symlink():
            seen[str(root)] = root.read_bytes() if root.is_file() else os.readlink(root)
            continue
        for dirpath, dirs, files in os.walk(root):
            seen[dirpath] = None
            for f in files:
                p = os.path.join(dirpath, f)
                seen[p] = Path(p).read_bytes()
    return seen


def leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if ".tmp-" in n or ".old-" in n)


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_bert):
    """A working directory holding a copy of tiny_bert (models/tiny-bert) and a file of the user's."""
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    shutil.copytree(tiny_bert, work / "models" / "tiny-bert")
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Refusals must come before the checkpoint is read."""
    import porter.readers.checkpoints

    def boom(*a, **k):
        raise AssertionError("the checkpoint was opened before --out was checked")

    monkeypatch.setattr(porter.readers.checkpoints, "open_torch_checkpoint", boom)


def convert(cli, *args):
    return cli("convert", *args, "--from", "torch", "--to", "tf")


# -- refusals before any work --------------------------------------------------------------------------


@pytest.mark.parametrize("out, says", [
    (".", "is the current directory"),
    ("..", "is a parent of the current directory"),
    ("models", "holds the source models/tiny-bert"),
    ("models/tiny-bert", "is the source models/tiny-bert"),
])
def test_force_refuses_source_cwd_and_parents(cli, workdir, no_heavy_work, out, says):
    before = snapshot(workdir)
    code, output = convert(cli, "models/tiny-bert", "--out", out, "--force")
    assert code == 2
    assert f"--out {out} {says}" in output
    assert "Traceback" not in output
    assert snapshot(workdir) == before


def test_force_refuses_an_out_reached_through_a_symlinked_parent(cli, workdir, no_heavy_work):
    """Real paths are compared: a link to the models folder is the models folder."""
    os.symlink(workdir / "models", workdir / "alias")
    before = snapshot(workdir)
    code, output = convert(cli, "models/tiny-bert", "--out", "alias", "--force")
    assert code == 2 and "symbolic link" not in output and "holds the source" in output
    assert snapshot(workdir) == before


def test_force_refuses_a_folder_porter_did_not_write(cli, workdir, no_heavy_work):
    (workdir / "results").mkdir()
    (workdir / "results" / "thesis.tex").write_text("years of work")
    before = snapshot(workdir)
    code, output = convert(cli, "models/tiny-bert", "--out", "results", "--force")
    assert code == 2
    assert "--out results is a folder porter did not write (no porter_report.json in it: thesis.tex)" in output
    assert snapshot(workdir) == before


def test_without_force_an_existing_out_is_refused(cli, workdir, no_heavy_work):
    (workdir / "empty").mkdir()
    code, output = convert(cli, "models/tiny-bert", "--out", "empty")
    assert code == 2 and "output empty already exists" in output and "--force" in output


@pytest.mark.parametrize("force", [False, True])
def test_symlink_out_is_refused(cli, workdir, no_heavy_work, force):
    """Decision: a link at --out is never replaced, nor what it points at (even porter's own output)."""
    target = workdir / "real-out"
    target.mkdir()
    (target / "porter_report.json").write_text("{}")
    os.symlink(target, workdir / "link-out")
    before = snapshot(workdir)
    code, output = convert(cli, "models/tiny-bert", "--out", "link-out", *(["--force"] if force else []))
    assert code == 2
    assert f"--out link-out is a symbolic link (to {target})" in output
    assert (workdir / "link-out").is_symlink() and snapshot(workdir) == before


def test_dangling_symlink_out_is_refused(cli, workdir, no_heavy_work):
    os.symlink(workdir / "nowhere", workdir / "link-out")
    code, output = convert(cli, "models/tiny-bert", "--out", "link-out", "--force")
    assert code == 2 and "is a symbolic link" in output
    assert (workdir / "link-out").is_symlink() and not (workdir / "nowhere").exists()


def test_a_file_at_out_is_refused_even_with_force(cli, workdir, no_heavy_work):
    (workdir / "model.bin").write_bytes(b"\x00" * 16)
    before = snapshot(workdir)
    code, output = convert(cli, "models/tiny-bert", "--out", "model.bin", "--force")
    assert code == 2 and "--out model.bin is a file; porter writes a folder there" in output
    assert snapshot(workdir) == before


def test_out_under_a_file_is_refused_before_loading(cli, workdir, no_heavy_work):
    code, output = convert(cli, "models/tiny-bert", "--out", "notes.txt/out")
    assert code == 2
    assert "--out notes.txt/out cannot be created:" in output and "notes.txt is a file, not a folder" in output
    assert (workdir / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 0555 folder anyway (the file-parent case covers it)")
def test_unwritable_parent_is_refused_before_loading(cli, workdir, no_heavy_work):
    locked = workdir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, output = convert(cli, "models/tiny-bert", "--out", "locked/out")
    finally:
        locked.chmod(0o755)
    assert code == 2 and f"{locked} is not writable" in output
    assert os.listdir(locked) == []


def test_protected_inputs_file(workdir):
    """--inputs is read by the run: an --out holding it is refused too."""
    (workdir / "data").mkdir()
    (workdir / "data" / "porter_report.json").write_text("{}")
    (workdir / "data" / "inputs.npz").write_bytes(b"")
    with pytest.raises(PorterError, match="holds the source data/inputs.npz"):
        outdir.check_out(Path("data"), True, protected=("models/tiny-bert", "data/inputs.npz"))


# -- replacing porter's own output, and what appears while porter works ----------------------------------


def test_force_replaces_porters_own_output(cli, workdir):
    code, output = convert(cli, "models/tiny-bert", "--out", "bert-tf")
    assert code == 0, output
    first = json.loads((workdir / "bert-tf" / "porter_report.json").read_text())
    (workdir / "bert-tf" / "stale-extra.txt").write_text("from the old run")
    code, output = convert(cli, "models/tiny-bert", "--out", "bert-tf", "--force")
    assert code == 0, output
    assert re.search(r"^wrote bert-tf \(route: direct - .*, verified\)$", output, re.M), output
    report = json.loads((workdir / "bert-tf" / "porter_report.json").read_text())
    assert report["status"] == "passed" and report["out"] == "bert-tf" == first["out"]
    # the report and the console name the final folder, never the staging one
    assert report["verification"]["candidate"] == "bert-tf"
    assert ".tmp-" not in json.dumps(report) and ".tmp-" not in output
    assert not (workdir / "bert-tf" / "stale-extra.txt").exists()  # replaced, not merged
    assert not (workdir / "bert-tf" / outdir.OWNER).exists()
    assert leftovers(workdir) == []
    assert (workdir / "notes.txt").read_text() == "mine"


def _appear_before_move(monkeypatch, make):
    """Run ``make()`` just before the staged folder is moved into place (the last step of a run)."""
    real = outdir.apply_umask

    def hooked(folder):
        real(folder)
        make()

    monkeypatch.setattr(outdir, "apply_umask", hooked)


@pytest.mark.parametrize("force", [False, True])
def test_a_file_created_at_out_mid_run_is_not_deleted(cli, workdir, monkeypatch, force):
    _appear_before_move(monkeypatch, lambda: (workdir / "bert-tf").write_text("someone else's"))
    code, output = convert(cli, "models/tiny-bert", "--out", "bert-tf", *(["--force"] if force else []))
    assert code == 2, output
    assert "bert-tf" in output and ("appeared while porter was working" in output or "became a file" in output)
    assert (workdir / "bert-tf").read_text() == "someone else's"
    assert leftovers(workdir) == []


def test_a_foreign_folder_swapped_in_for_porters_output_mid_run_is_kept(cli, workdir, monkeypatch):
    """--force checked porter's output at the start; by the move, someone put their own folder there."""
    (workdir / "bert-tf").mkdir()
    (workdir / "bert-tf" / "porter_report.json").write_text("{}")

    def swap():
        shutil.rmtree(workdir / "bert-tf")
        (workdir / "bert-tf").mkdir()
        (workdir / "bert-tf" / "data.csv").write_text("1,2,3")

    _appear_before_move(monkeypatch, swap)
    code, output = convert(cli, "models/tiny-bert", "--out", "bert-tf", "--force")
    assert code == 2 and "porter did not write" in output and "appeared while porter was working" in output
    assert os.listdir(workdir / "bert-tf") == ["data.csv"]
    assert leftovers(workdir) == []


def test_disk_full_while_saving_is_a_clean_error(cli, workdir, monkeypatch):
    import porter.process.frameworks

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "model.keras")

    monkeypatch.setattr(porter.process.frameworks, "save_keras", full)
    code, output = convert(cli, "models/tiny-bert", "--out", "bert-tf", "--no-verify")
    assert code == 2
    assert "--out bert-tf: writing failed (No space left on device); nothing was kept" in output
    assert "free some space" in output
    assert not (workdir / "bert-tf").exists() and leftovers(workdir) == []


# -- permissions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, dirs, files", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_outputs_get_the_users_umask(cli, workdir, umask, dirs, files):
    old = os.umask(umask)
    try:
        code, output = cli("convert", "models/tiny-bert", "--from", "torch", "--to", "tf", "--out", "bert-tf", "--no-verify")
    finally:
        os.umask(old)
    assert code == 0, output
    modes = {}
    for root, ds, fs in os.walk(workdir / "bert-tf"):
        modes[root] = os.stat(root).st_mode & 0o777
        for f in fs:
            modes[os.path.join(root, f)] = os.stat(os.path.join(root, f)).st_mode & 0o777
    assert len(modes) > 5
    wrong = {p: oct(m) for p, m in modes.items() if m != (dirs if os.path.isdir(p) else files)}
    assert wrong == {}


def test_apply_umask_fixes_tempfile_modes(tmp_path):
    """mkdtemp gives 0700, NamedTemporaryFile 0600; executables keep their x bits (masked)."""
    import tempfile

    root = Path(tempfile.mkdtemp(dir=tmp_path))
    with tempfile.NamedTemporaryFile(dir=root, delete=False) as f:
        secret = Path(f.name)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o700)
    old = os.umask(0o022)
    try:
        outdir.apply_umask(root)
    finally:
        os.umask(old)
    assert (os.stat(root).st_mode & 0o777, os.stat(secret).st_mode & 0o777, os.stat(root / "run.sh").st_mode & 0o777) == (0o755, 0o644, 0o755)


# -- the atomic move -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rename", [outdir.rename_noreplace, outdir.rename_guarded])
def test_rename_never_replaces(tmp_path, rename):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("new")
    for existing in ("empty-dir", "file"):
        target = tmp_path / existing
        target.mkdir() if existing == "empty-dir" else target.write_text("old")
        with pytest.raises(FileExistsError):
            rename(tmp_path / "src", target)
    assert (tmp_path / "file").read_text() == "old" and os.listdir(tmp_path / "empty-dir") == []
    rename(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "a").read_text() == "new" and not (tmp_path / "src").exists()


# -- leftovers of killed runs ----------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale(folder: Path, name: str, pid: int, start=None) -> Path:
    path = folder / name
    path.mkdir()
    (path / "model.keras").write_bytes(b"\x00" * 1000)
    (path / outdir.OWNER).write_text(json.dumps({"pid": pid, "start": start, "host": outdir.socket.gethostname()}))
    return path


def test_stale_temp_folders_of_dead_runs_are_swept(tmp_path, capsys):
    dead = _stale(tmp_path, ".bert-tf.tmp-abc123", _dead_pid())
    dead_work = _stale(tmp_path, "porter-onnx-xyz", _dead_pid())
    live = _stale(tmp_path, ".bert-tf.tmp-live", os.getpid(), outdir._start_time(os.getpid()))
    # the pid is alive but it is another process than the one that wrote the marker (pid reused)
    reused = _stale(tmp_path, ".bert-tf.tmp-reused", os.getpid(), -1 if outdir._start_time(os.getpid()) else None)
    unmarked = tmp_path / ".bert-tf.tmp-unmarked"
    unmarked.mkdir()
    foreign = _stale(tmp_path, "my-data", _dead_pid())  # porter's marker but not porter's name
    other_host = _stale(tmp_path, ".x.tmp-remote", _dead_pid())
    (other_host / outdir.OWNER).write_text(json.dumps({"pid": _dead_pid(), "start": None, "host": "elsewhere"}))
    link = tmp_path / ".link.tmp-1"
    os.symlink(dead_work, link)

    removed = outdir.sweep_stale(tmp_path)
    expected = {dead, dead_work} | ({reused} if outdir._start_time(os.getpid()) else set())
    assert set(removed) == expected
    assert all(not p.exists() for p in expected)
    assert live.exists() and unmarked.exists() and foreign.exists() and other_host.exists() and link.is_symlink()
    err = capsys.readouterr().err
    assert err.count("porter: removed ") == len(expected) and f"{dead} (0.0 MB), left by a run that was killed" in err


def test_a_convert_run_sweeps_stale_staging_beside_out(cli, workdir, capsys):
    stale = _stale(workdir, ".bert-tf.tmp-dead", _dead_pid())
    code, output = convert(cli, "models/tiny-bert", "--out", "bert-tf", "--no-verify")
    assert code == 0, output
    assert not stale.exists() and leftovers(workdir) == []


def test_temp_dir_marks_its_folder_and_sweeps_the_temp_root(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = _stale(tmp_path, "porter-onnx-old", _dead_pid())
    work = outdir.temp_dir("porter-onnx-")
    assert work.parent == tmp_path and work.name.startswith("porter-onnx-")
    owner = json.loads((work / outdir.OWNER).read_text())
    assert owner["pid"] == os.getpid() and not stale.exists()
    assert outdir.sweep_stale(tmp_path) == [] and work.exists()  # its own live folder is kept


# -- verify's report paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--report", "--junit", "--markdown", "--html"])
def test_unwritable_report_path_fails_before_loading(cli, workdir, monkeypatch, flag):
    import porter.readers.artifacts

    monkeypatch.setattr(porter.readers.artifacts, "detect", lambda *a: (_ for _ in ()).throw(AssertionError("models loaded")))
    code, output = cli("verify", "models/tiny-bert", "models/tiny-bert", flag, "notes.txt/r.out")
    assert code == 2
    assert f"{flag} notes.txt/r.out cannot be created:" in output and "notes.txt is a file, not a folder" in output
    code, output = cli("verify", "models/tiny-bert", "models/tiny-bert", flag, "models")
    assert code == 2 and f"{flag} models is a folder; it takes a file path" in output


def test_report_write_failure_names_the_flag(tmp_path):
    from porter.verifiers.reports import write

    (tmp_path / "file").write_text("x")
    with pytest.raises(PorterError, match=r"--html .*file/r.html cannot be created: .*file is a file, not a folder"):
        write(None, html=tmp_path / "file" / "r.html")


def test_report_disk_full_names_the_flag(tmp_path, monkeypatch):
    from porter.verifiers import reports

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(reports, "to_json", lambda result: "{}")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(PorterError, match=r"--report .*r.json: writing failed \(No space left on device\)"):
        reports.write(None, report=tmp_path / "r.json")


# -- signals ----------------------------------------------------------------------------------------


def _run_and_signal(workdir: Path, signum: int, when: str):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "porter.cli", "convert", "models/tiny-bert", "--from", "torch", "--to", "tf", "--out", "bert-tf"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        staged = [n for n in os.listdir(workdir) if n.startswith(".bert-tf.tmp-")]
        if when == "staged" and staged:
            break  # the output is being written into the staging folder
        if when == "early" and time.monotonic() > deadline - 118:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before the signal: {proc.communicate()}"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize("signum, when", [(signal.SIGTERM, "staged"), (signal.SIGHUP, "early")])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(workdir, signum, when):
    code, out, err = _run_and_signal(workdir, signum, when)
    name = signal.Signals(signum).name
    assert code == 128 + signum, (out, err)
    assert err.strip().splitlines()[-1] == f"porter: terminated by {name}"
    assert "Traceback" not in err
    assert not (workdir / "bert-tf").exists()
    assert leftovers(workdir) == []
    assert sorted(os.listdir(workdir)) == ["models", "notes.txt"]


def test_a_signal_while_the_staging_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    """SIGTERM right after mkdtemp (while the owner marker is written) once left the folder behind: the test
    above sends it the moment the folder appears. The signal is held until the folder can be removed."""
    from porter.process import signals

    monkeypatch.setattr(signals, "_received", None)
    marked = outdir._mark

    def mark_then_signal(path):
        marked(path)
        signals._handle(signal.SIGTERM, None)  # what the installed handler does when SIGTERM arrives here

    monkeypatch.setattr(outdir, "_mark", mark_then_signal)
    with pytest.raises(signals.Terminated):
        with outdir.staged_output(tmp_path / "out", False):
            pytest.fail("the block ran after the signal")
    assert leftovers(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_a_swallowed_signal_still_stops_the_move(tmp_path, monkeypatch):
    """Library code (a Keras layer being traced) may catch the KeyboardInterrupt or turn it into its
    own error: the move checks again, and the error it became is reported as the signal."""
    from porter.process import signals

    monkeypatch.setattr(signals, "_received", None)
    out = tmp_path / "out"
    with pytest.raises(signals.Terminated):
        with outdir.staged_output(out, False) as tmp:
            (tmp / "model.keras").write_bytes(b"x")
            signals._received = signal.SIGTERM  # as if the handler ran and its exception was swallowed
    assert not out.exists() and leftovers(tmp_path) == []
    with pytest.raises(signals.Terminated):  # and turned into another error
        with outdir.staged_output(out, False):
            raise ValueError("None values not supported.")
    assert not out.exists() and leftovers(tmp_path) == []


def test_cli_reports_the_signal_not_the_error_it_became(monkeypatch, capsys):
    import typer

    from porter.process import signals
    from porter.process.crash import run_cli

    app = typer.Typer()

    @app.command()
    def run():
        signals._received = signal.SIGHUP
        raise ValueError("Exception encountered when calling Embeddings.call()")

    monkeypatch.setattr(signals, "_received", None)
    assert run_cli(app, []) == 128 + signal.SIGHUP
    err = capsys.readouterr().err
    assert err.strip() == "porter: terminated by SIGHUP" and "internal error" not in err


def test_a_signal_inside_a_finalizer_prints_no_traceback():
    """A SIGTERM that lands in a __del__ (TensorFlow flattens structures in some) raises Terminated where it
    cannot propagate; Python would print it as 'Exception ignored in ... Traceback'. porter drops its own
    exception there (signals.check raises it again where it can), and nothing else."""
    script = ("from porter.process import signals\n"
              "signals.install()\n"
              "class Ours:\n"
              "    def __del__(self):\n"
              "        raise signals.Terminated(15)\n"
              "class Other:\n"
              "    def __del__(self):\n"
              "        raise ValueError('not porter')\n"
              "Ours()\n"
              "Other()\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr
    assert "Terminated" not in run.stderr and run.stderr.count("Traceback") == 1 and "not porter" in run.stderr

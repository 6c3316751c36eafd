"""Hostile outputs, options and signals: every case is one ``error:`` line, exit 2 (130/143
after a signal), no traceback, and every file that existed is byte-identical afterwards.

Device nodes, FIFOs, sockets and fake homes are made inside the test's temporary folder;
no test points at a real system path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _hostile import (
    assert_clean_error,
    assert_unchanged,
    make_node,
    run_cli,
    run_subprocess,
    snapshot,
    unprivileged_user,
)

from gateflow import GateflowError

TINY = ("--hidden", "3", "--input-size", "2", "--steps", "4", "--batch", "2", "-q")
REPORT_TINY = ("--hidden", "4", "--input-size", "2", "--steps", "6", "--batch", "2", "-q")


def _decay(*args):
    return run_cli("decay", "--cell", "lstm", *TINY, *args)


# -- the targets a case starts from -----------------------------------------------------------
def _regular(root: Path) -> Path:
    p = root / "old.json"
    p.write_text('{"mine": true}\n')
    return p


def _readonly(root: Path) -> Path:
    p = _regular(root)
    p.chmod(0o444)
    return p


def _char_device(root: Path) -> Path:
    return make_node(root / "null")


def _fifo(root: Path) -> Path:
    return make_node(root / "pipe", "fifo")


def _socket(root: Path) -> Path:
    path = root / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


def _folder(root: Path) -> Path:
    p = root / "folder.json"
    p.mkdir()
    (p / "inside.txt").write_text("mine")
    return p


def _link_to_file(root: Path) -> Path:
    target = _regular(root)
    link = root / "link.json"
    link.symlink_to(target.name)
    return link


def _link_to_device(root: Path) -> Path:
    dev = make_node(root / "dev-null")
    link = root / "stdout"
    link.symlink_to(dev.name)
    return link


def _dangling_link(root: Path) -> Path:
    link = root / "dangling.json"
    link.symlink_to("nowhere/at/all.json")
    return link


TARGETS = {
    "regular": (_regular, "already exists; pass --overwrite"),
    "read-only": (_readonly, "already exists; pass --overwrite"),
    "char-device": (_char_device, r"it is (a character device|a FIFO)"),
    "fifo": (_fifo, r"it is a FIFO"),
    "socket": (_socket, r"it is a socket"),
    "folder": (_folder, r"it is a folder"),
    "link-to-file": (_link_to_file, r"it is a symbolic link"),
    "link-to-device": (_link_to_device, r"it is a symbolic link"),
    "dangling-link": (_dangling_link, r"it is a symbolic link"),
}
# what still refuses the target when --overwrite is given
WITH_OVERWRITE = [k for k in TARGETS if k not in ("regular", "read-only")]


@pytest.mark.parametrize("flag", ["--json", "--csv"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_data_file_targets(sandbox, flag, target):
    make, message = TARGETS[target]
    path = make(sandbox)
    before = snapshot(sandbox)
    assert_clean_error(_decay(flag, path.name), message)
    assert_unchanged(before, snapshot(sandbox))


@pytest.mark.parametrize("flag", ["--json", "--csv"])
@pytest.mark.parametrize("target", WITH_OVERWRITE)
def test_data_file_targets_with_overwrite(sandbox, flag, target):
    make, message = TARGETS[target]
    path = make(sandbox)
    before = snapshot(sandbox)
    assert_clean_error(_decay(flag, path.name, "--overwrite"), message)
    assert_unchanged(before, snapshot(sandbox))


@pytest.mark.parametrize("flag", ["--plot", "--spectra"])
@pytest.mark.parametrize("target", ["regular", "char-device", "fifo", "link-to-file", "folder"])
def test_figure_targets(sandbox, flag, target):
    make, message = TARGETS[target]
    path = make(sandbox)
    fig = path.with_suffix(".png")
    path.rename(fig)
    before = snapshot(sandbox)
    assert_clean_error(_decay(flag, fig.name), message)
    assert_unchanged(before, snapshot(sandbox))


def test_weights_folder(sandbox):
    before = snapshot(sandbox)
    assert_clean_error(run_cli("decay", "--cell", "lstm", "--weights", ".", "-q"),
                       "it is a folder")
    assert_unchanged(before, snapshot(sandbox))


def test_overwrite_replaces_only_a_regular_file(sandbox):
    path = _readonly(sandbox)
    out = _decay("--json", path.name, "--overwrite")
    assert out.exit_code == 0, out.stderr
    assert json.loads(path.read_text())["cell"] == "lstm"
    assert sorted(p.name for p in sandbox.iterdir()) == ["old.json"]  # no temp files left


def test_stdout_dash(sandbox):
    out = _decay("--json", "-")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["cell"] == "lstm"
    assert list(sandbox.iterdir()) == []  # no file named '-'
    out = _decay("--csv", "-")
    assert out.exit_code == 0 and out.stdout.startswith("block,lag,batch")


def _long_name(root: Path) -> str:
    return "x" * 300 + ".json"


PATH_CASES = {
    "missing-folder": (lambda r: "no/such/folder/r.json", "does not exist; create it first"),
    "parent-is-file": (lambda r: (_regular(r), "old.json/r.json")[1], "is not a folder"),
    "name-too-long": (_long_name, "file name too long"),
    "empty": (lambda r: "", "path is empty"),
    "trailing-slash": (lambda r: "nope/", "names a folder"),
    "trailing-slash-existing-file": (lambda r: (_regular(r), "old.json/")[1],
                                     r"names a folder|is not a folder"),
    "blank": (lambda r: "   ", "path is empty"),
}


@pytest.mark.parametrize("case", list(PATH_CASES))
@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_bad_paths(sandbox, case, flag):
    make, message = PATH_CASES[case]
    path = make(sandbox)
    before = snapshot(sandbox)
    assert_clean_error(_decay(flag, path), message)
    assert_unchanged(before, snapshot(sandbox))


OPTION_CASES = {
    "several-cells-to-stdout": (("--cell", "rnn,gru", "--json", "-"), "writes one cell to stdout"),
    "both-to-stdout": (("--json", "-", "--csv", "-"), "both write to stdout"),
    "figure-to-stdout": (("--plot", "-"), r"unknown extension|not written to stdout"),
    "same-file-twice": (("--json", "a.out", "--csv", "a.out"), "name the same file"),
    "figure-and-json-same": (("--json", "a.png", "--plot", "a.png"), "would both write"),
    "bad-figure-ext": (("--plot", "fig.jpg"), "unknown extension"),
    "no-figure-ext": (("--plot", "fig"), "unknown extension"),
    "several-cells-no-pattern": (("--cell", "rnn,gru", "--json", "r.json"), r"must contain"),
    "threshold-nan": (("--threshold", "nan"), "--threshold: 'nan' is not a finite number"),
    "threshold-negative": (("--threshold", "-1"), "finite number > 0"),
    "spectra-lags-alone": (("--spectra-lags", "1,2"), "only with --spectra"),
    "bad-norm": (("--norms", "nuclear"), "nuclear"),
    "bad-block": (("--blocks", "x/y"), "x/y"),
    "bad-dtype": (("--dtype", "float16"), "float16"),
    "bad-backend": (("--backend", "tpu"), "tpu"),
    "bad-init": (("--init", "xavier"), "xavier"),
    "bad-input-dist": (("--input-dist", "cauchy"), "cauchy"),
    "gate-bias-rnn": (("--cell", "rnn", "--gate-bias", "1"), "does not apply"),
    "chrono-too-small": (("--chrono", "1"), "chrono"),
    "chrono-and-bias": (("--chrono", "10", "--gate-bias", "1"), "only one"),
    "unknown-cell": (("--cell", "lstn"), "did you mean 'lstm'"),
    "huge-steps": (("--steps", "100000000000"), "needs about"),
    "huge-hidden": (("--hidden", "10000000"), "needs about"),
    "input-scale-overflow": (("--input-scale", "1e308", "--steps", "50"), "overflow float64"),
    "input-scale-overflow-uniform": (("--input-scale", "1e308", "--input-dist", "uniform"),
                                     "overflow float64"),
    "input-scale-overflow-float32": (("--input-scale", "1e39", "--dtype", "float32"),
                                     "exceed the float32 range"),
    "weights-empty": (("--weights", ""), "--weights path is empty"),
    "inputs-empty": (("--inputs", ""), "--inputs path is empty"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_options(sandbox, case):
    args, message = OPTION_CASES[case]
    (sandbox / "keep.txt").write_text("mine")
    before = snapshot(sandbox)
    assert_clean_error(_decay(*args), message)
    assert_unchanged(before, snapshot(sandbox))


# -- folders (report, sweep) ------------------------------------------------------------------
def _foreign_folder(root: Path) -> Path:
    out = root / "rep"
    (out / "chapter").mkdir(parents=True)
    (out / "thesis.tex").write_text("\\documentclass{article}")
    (out / "chapter" / "one.tex").write_text("text")
    return out


def _git_checkout(root: Path) -> Path:
    out = root / "checkout"
    (out / ".git").mkdir(parents=True)
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "README.md").write_text("mine")
    return out


def _mine_then(change):
    def make(root: Path) -> Path:
        out = root / "mine"
        ok = run_cli("report", "--out", out, *REPORT_TINY)
        assert ok.exit_code == 0, ok.stderr
        change(out)
        return out
    return make


def _add_file(out: Path) -> None:
    (out / "notes.txt").write_text("mine")


def _edit_file(out: Path) -> None:
    (out / "index.md").write_text("my edits")


def _garble_manifest(out: Path) -> None:
    (out / ".gateflow-manifest.json").write_text("{not json")


def _add_folder(out: Path) -> None:
    (out / "sub").mkdir()


def _add_link(out: Path) -> None:
    (out / "link").symlink_to("/")


def _deep_home(root: Path) -> Path:
    """A fake home two levels below a folder that does not hold the working directory."""
    home = root.parent / "homes" / "deep" / "user"
    home.mkdir(parents=True)
    os.environ["HOME"] = str(home)  # the sandbox's monkeypatch restores it
    return home.parent


FOLDER_CASES = {
    "foreign": (_foreign_folder, "has no .gateflow-manifest.json"),
    "git-checkout": (_git_checkout, "holds .git"),
    "working-dir": (lambda r: r, "working directory"),
    "working-dir-dot": (lambda r: Path("."), "working directory"),
    "above-working-dir": (lambda r: r.parent, "working directory"),
    "home": (lambda r: Path(os.environ["HOME"]), "home directory"),
    "above-home": (lambda r: _deep_home(r), "home directory"),
    "regular-file": (_regular, "is not a folder"),
    "device": (_char_device, "is not a folder"),
    "fifo": (_fifo, "is not a folder"),
    "link-to-folder": (lambda r: (_foreign_folder(r), (r / "ln").symlink_to("rep"), r / "ln")[2],
                       "it is a symbolic link"),
    "mine-plus-a-file": (_mine_then(_add_file), "'notes.txt', which gateflow did not write"),
    "mine-edited": (_mine_then(_edit_file), "'index.md' was changed"),
    "mine-bad-manifest": (_mine_then(_garble_manifest), "unreadable"),
    "mine-plus-a-link": (_mine_then(_add_link), "not a regular file"),
    "mine-plus-an-empty-folder": (_mine_then(_add_folder), "the folder 'sub', which gateflow"),
    "dangling-link": (_dangling_link, "it is a symbolic link"),
    "under-a-file": (lambda r: (_regular(r), r / "old.json" / "rep")[1], "is not a folder"),
    "empty": (lambda r: "", "--out path is empty"),
}


@pytest.mark.parametrize("command", ["report", "sweep"])
@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_overwrite_refuses_what_gateflow_did_not_write(sandbox, command, case):
    make, message = FOLDER_CASES[case]
    out = make(sandbox)
    root = sandbox.parent
    before = snapshot(root)
    args = REPORT_TINY if command == "report" else ("--points", "1", "--hidden", "2", "--steps",
                                                     "3", "--batch", "1", "-q")
    assert_clean_error(run_cli(command, "--out", out, "--overwrite", *args), message)
    assert_unchanged(before, snapshot(root))


@pytest.mark.parametrize("case", ["foreign", "git-checkout", "working-dir", "regular-file"])
def test_existing_out_without_overwrite(sandbox, case):
    make, _ = FOLDER_CASES[case]
    out = make(sandbox)
    before = snapshot(sandbox)
    assert_clean_error(run_cli("report", "--out", out, *REPORT_TINY),
                       r"already exists|refusing to write")
    assert_unchanged(before, snapshot(sandbox))


JOB_CASES = {
    "report-huge-hidden": (("report", "--hidden", "100000", "-q"), "this report needs about"),
    "report-huge-steps": (("report", "--steps", "100000000", "-q"), "this report needs about"),
    "report-huge-batch": (("report", "--batch", "100000000", "-q"), "this report needs about"),
    "sweep-huge-hidden": (("sweep", "--hidden", "100000", "-q"), "this sweep needs about"),
    "sweep-huge-steps": (("sweep", "--steps", "1000000000", "-q"), "this sweep needs about"),
    "sweep-bad-url": (("sweep", "--scheduler", "not a url", "-q"), "not a dask scheduler address"),
    "sweep-bad-scheme": (("sweep", "--scheduler", "http://127.0.0.1:8786", "-q"),
                         "not a dask scheduler address"),
    "sweep-unknown-cell": (("sweep", "--cells", "lstm,grux", "-q"), "grux"),
    "sweep-huge-points": (("sweep", "--points", "100000000", "-q"), "too many: at most 100"),
    "report-bad-init": (("report", "--init", "xavier", "-q"), "xavier"),
    "derive-unknown-cell": (("derive", "LSTN"), "unknown cell"),
    "derive-unknown-block": (("derive", "lstm", "--block", "q/q"), "q/q"),
    "usage-not-an-integer": (("decay", "--cell", "lstm", "--steps", "abc"),
                             r"--steps: 'abc' is not an integer \(see gateflow decay "
                             r"--help\)"),
    "usage-below-range": (("report", "--steps", "0"), r"Invalid value for '--steps'"),
    "usage-unknown-option": (("report", "--bogus"), r"No such option: --bogus"),
    "usage-unknown-command": (("bogus",), r"No such command 'bogus'"),
    "usage-missing-argument": (("derive",), r"Missing argument 'CELL'"),
    "usage-missing-option": (("decay",), r"give --cell NAME, or --weights FILE of a model"),
    "usage-bad-choice": (("derive", "lstm", "--format", "pdf"),
                         r"unknown format 'pdf' \(valid: text, latex, markdown\)"),
    "usage-root-option": (("--bogus",), r"No such option: --bogus \(see gateflow --help\)"),
}


@pytest.mark.parametrize("case", list(JOB_CASES))
def test_bad_job_options(sandbox, case):
    args, message = JOB_CASES[case]
    before = snapshot(sandbox.parent)
    t0 = time.perf_counter()
    assert_clean_error(run_cli(*args), message)
    assert time.perf_counter() - t0 < 10
    assert_unchanged(before, snapshot(sandbox.parent))


def test_unreachable_scheduler_fails_within_10_seconds(sandbox):
    t0 = time.perf_counter()
    assert_clean_error(run_cli("sweep", "--scheduler", "tcp://127.0.0.1:9", "-q"),
                       "cannot connect to a dask scheduler")
    assert time.perf_counter() - t0 < 10
    assert list(sandbox.iterdir()) == []


def test_a_listener_that_is_not_a_scheduler(sandbox):
    """A TCP peer that answers in another protocol: one line within 10 s, no traceback."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 100)
                stop.wait(2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        t0 = time.perf_counter()
        out = run_subprocess("sweep", "--points", "1", "--hidden", "2", "--steps", "3",
                             "--cells", "rnn", "-q", "--scheduler", f"tcp://127.0.0.1:{port}",
                             cwd=sandbox, timeout=60)
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        thread.join()
        server.close()
    assert_clean_error(out, "cannot connect to a dask scheduler")
    assert elapsed < 10
    assert list(sandbox.iterdir()) == []


def _closed_stdout():
    os.close(1)


@pytest.mark.parametrize("args", [("derive", "lstm"), ("cells",),
                                  ("decay", "--cell", "lstm", *TINY, "--json", "-")],
                         ids=["derive", "cells", "decay-json-stdout"])
def test_closed_stdout_is_an_error(sandbox, args):
    cmd = [sys.executable, "-c", "from gateflow.cli import app; app(prog_name='gateflow')",
           *args]
    p = subprocess.run(cmd, cwd=sandbox, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, timeout=120, preexec_fn=_closed_stdout)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [p.stderr.strip()]
    assert "standard output is closed" in p.stderr
    assert list(sandbox.iterdir()) == []


# -- permissions, as an unprivileged user -------------------------------------------------------
@pytest.fixture
def open_tmp(tmp_path):
    """How to run a child that file permissions bind (see ``unprivileged_user``)."""
    user = unprivileged_user()
    if user is None:
        pytest.skip("needs a way to run without permission overrides (setpriv as root)")
    return user, tmp_path


def _as(user, *args, cwd):
    env = {**os.environ, "HOME": str(cwd), "GATEFLOW_CACHE_DIR": ""}
    return run_subprocess(*args, cwd=cwd, env=env, user=user)


def test_unwritable_folder_as_user(open_tmp):
    user, tmp = open_tmp
    locked = tmp / "locked"
    locked.mkdir()
    (locked / "old.json").write_text("mine")
    locked.chmod(0o555)
    before = snapshot(tmp)
    out = _as(user, "decay", "--cell", "lstm", *TINY, "--json", locked / "r.json", cwd=tmp)
    assert_clean_error(out, "permission denied")
    out = _as(user, "decay", "--cell", "lstm", *TINY, "--json", locked / "old.json",
              "--overwrite", cwd=tmp)
    assert_clean_error(out, "permission denied")
    out = _as(user, "report", "--out", locked / "rep", *REPORT_TINY, cwd=tmp)
    assert_clean_error(out, "permission denied")
    assert_unchanged(before, snapshot(tmp))


# -- signals ------------------------------------------------------------------------------------
def _start(args, cwd):
    env = {**os.environ, "GATEFLOW_CACHE_DIR": ""}
    cmd = [sys.executable, "-c", "from gateflow.cli import app; app(prog_name='gateflow')",
           *map(str, args)]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc, path: Path, pattern: str, timeout: float = 60, delay: float = 4) -> None:
    """Wait until the run is computing: a staging entry matching ``pattern`` exists, or
    (for jobs that stage only at the end) ``delay`` seconds after start-up."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"finished early: {proc.communicate()}")
        if pattern and any(path.glob(pattern)):
            return
        if not pattern and time.monotonic() - t0 > delay:
            return
        time.sleep(0.05)
    raise AssertionError("never started")


def _interrupt(args, cwd: Path, sig, pattern: str, delay: float = 4,
               timeout: float = 30) -> tuple[int, str, float]:
    """Start ``gateflow ARGS``, send ``sig`` once it computes (see :func:`_wait_for`);
    return (exit status, stderr, seconds from the signal to the exit)."""
    proc = _start(args, cwd)
    try:
        _wait_for(proc, cwd, pattern, delay=delay)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=timeout)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reap it: no "still running" warning in a later test
    return proc.returncode, stderr, elapsed


SIGNAL_CASES = {
    "decay-sigint": (("decay", "--cell", "lstm", "--hidden", "64", "--steps", "30000",
                      "--batch", "4", "--json", "r.json", "-q"), signal.SIGINT, 130, ""),
    "decay-sigterm": (("decay", "--cell", "gru", "--hidden", "64", "--steps", "30000",
                       "--batch", "4", "--json", "r.json", "--plot", "p.png"), signal.SIGTERM,
                      143, ""),
    "report-sigint": (("report", "--out", "rep", "--steps", "20000", "--hidden", "32", "-q"),
                      signal.SIGINT, 130, ".rep.*.tmp"),
    "report-sigterm": (("report", "--out", "rep", "--steps", "20000", "--hidden", "32", "-q"),
                       signal.SIGTERM, 143, ".rep.*.tmp"),
}


@pytest.mark.parametrize("case", list(SIGNAL_CASES))
def test_signals_stop_within_a_second_and_leave_nothing(sandbox, case):
    args, sig, code, pattern = SIGNAL_CASES[case]
    (sandbox / "keep.txt").write_text("mine")
    before = snapshot(sandbox)
    returncode, stderr, elapsed = _interrupt(args, sandbox, sig, pattern)
    assert returncode == code, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: ")
    assert elapsed < 2.5, f"took {elapsed:.2f} s to stop"  # typically 0.1–0.3 s; headroom for load
    assert_unchanged(before, snapshot(sandbox))


@pytest.mark.parametrize("delay", [1.0, 2.0, 4.0], ids=["starting", "cluster-up", "computing"])
def test_sweep_sigint_closes_the_cluster(sandbox, delay):
    """Ctrl-C while the local cluster starts, just after, and while points compute."""
    returncode, stderr, elapsed = _interrupt(
        ("sweep", "--out", "sw", "--points", "8", "--steps", "3000", "--hidden", "32", "-q"),
        sandbox, signal.SIGINT, "", delay=delay, timeout=60)
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == ["error: interrupted (Ctrl-C); nothing was written"], stderr
    assert elapsed < 10, f"took {elapsed:.2f} s to stop"
    assert list(sandbox.iterdir()) == []


def test_an_interrupt_python_swallowed_is_raised_at_the_next_step():
    """A Ctrl-C that lands in a weakref or import-lock callback is dropped by Python
    ("Exception ignored in ..."); the recorded request still stops the run at its next step,
    in worker threads too."""
    import gateflow
    from gateflow import _interrupt

    params = gateflow.init_params("lstm", 8, 4, seed=0)
    x = gateflow.make_inputs(2000, 4, 4, seed=1)
    _interrupt.request(signal.SIGINT)
    try:
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            gateflow.all_lags("lstm", params, x, threads=2)
        assert time.perf_counter() - t0 < 2
        _interrupt.request(signal.SIGTERM)
        with pytest.raises(_interrupt.Terminated):
            gateflow.all_lags("lstm", params, x, threads=1)
    finally:
        _interrupt.reset()
    assert gateflow.all_lags("lstm", params, x[:5]).lags[-1] == 5  # runs again after reset


def test_a_swallowed_interrupt_prints_no_traceback(capsys):
    """Python reports an exception raised in a weakref callback as "Exception ignored in";
    while a command runs, an interrupt reported that way is silent (it is recorded and
    raised again at the next step), and any other one is still reported."""
    import gc
    import weakref

    from gateflow import _interrupt
    from gateflow.cli import _app as cli

    class Thing:
        pass

    seen = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda info: seen.append(type(info.exc_value).__name__)
    try:
        with cli._signals():
            for exc in (KeyboardInterrupt, _interrupt.Terminated, ValueError):
                thing = Thing()

                def callback(ref, exc=exc):
                    raise exc

                ref = weakref.ref(thing, callback)
                del thing
                gc.collect()
                assert ref() is None
    finally:
        sys.unraisablehook = previous
        _interrupt.reset()
    assert seen == ["ValueError"]
    assert capsys.readouterr().err == ""


# -- an output never replaces an input of the same run ------------------------------------------
def _inputs_here(root: Path) -> None:
    """x.npy (T=4, B=2, d=2), w.npz (an LSTM, n=3, d=2), s.npz (its initial state), and
    links to them: a hard link and a folder that is a symbolic link to the sandbox."""
    import numpy as np

    import gateflow as g

    np.save(root / "x.npy", g.make_inputs(4, 2, 2, seed=1))
    g.save_params(root / "w.npz", "lstm", g.init_params("lstm", 3, 2, seed=0))
    np.savez(root / "s.npz", h=np.zeros(3), c=np.zeros(3))
    os.link(root / "w.npz", root / "hard.npz")
    os.symlink(".", root / "here")


_W, _X = ("--weights", "w.npz"), ("-x", "x.npy")
INPUT_CASES = {
    "csv-over-inputs": (("decay", *_X, "--csv", "x.npy", "--overwrite"), "--inputs", "x.npy"),
    "csv-over-inputs-no-overwrite": (("decay", *_X, "--csv", "x.npy"), "--inputs", "x.npy"),
    "json-over-weights": (("decay", *_W, "--json", "w.npz", "--overwrite"), "--weights",
                          "w.npz"),
    "json-over-weights-hard-link": (("decay", *_W, "--json", "hard.npz", "--overwrite"),
                                    "--weights", "hard.npz", "w.npz"),
    "csv-over-inputs-dot-slash": (("decay", *_X, "--csv", "./x.npy", "--overwrite"),
                                  "--inputs", "x.npy"),  # Path drops the ./
    "csv-over-inputs-via-link": (("decay", *_X, "--csv", "here/x.npy", "--overwrite"),
                                 "--inputs", "here/x.npy", "x.npy"),
    "json-over-s0": (("decay", "--s0", "s.npz", "--json", "s.npz", "--overwrite"), "--s0",
                     "s.npz"),
    "multi-cell-json-over-weights": (
        ("decay", "--cell", "lstm,gru", "--weights", "w-{cell}.npz", "--json", "w-{cell}.npz",
         "--overwrite"), r"--weights \(lstm\)", "w-lstm.npz", None),
    "lyapunov-json-over-inputs": (("lyapunov", *_X, "--json", "x.npy", "--overwrite"),
                                  "--inputs", "x.npy"),
    "lyapunov-json-over-weights": (("lyapunov", *_W, "--json", "w.npz", "--overwrite"),
                                   "--weights", "w.npz"),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_outputs_never_replace_an_input(sandbox, case):
    args, flag, name, given = (*INPUT_CASES[case], None)[:4]
    _inputs_here(sandbox)
    if "w-{cell}.npz" in args:
        import gateflow as g

        g.save_params(sandbox / "w-lstm.npz", "lstm", g.init_params("lstm", 3, 2, seed=0))
        g.save_params(sandbox / "w-gru.npz", "gru", g.init_params("gru", 3, 2, seed=0))
    command, *rest = args
    cell = [] if "--cell" in rest else ["--cell", "lstm"]
    sizes = [] if "--weights" in rest or "-x" in rest else ["--hidden", "3"]
    before = snapshot(sandbox)
    out = run_cli(command, *cell, *sizes, *rest, "-q")
    paren = "" if given is None else rf" \('{re.escape(given)}'\)"
    assert_clean_error(out, rf"cannot write \S+ '{re.escape(name)}': it is the {flag} file of "
                            rf"this run{paren}, and gateflow never writes over its inputs; "
                            "choose another path$")
    assert_unchanged(before, snapshot(sandbox))


def test_refuse_inputs_api(sandbox):
    """The one check the jobs share: by inode, links followed; a new path or stdout is never
    an input."""
    from gateflow._io import check_file, refuse_inputs

    _inputs_here(sandbox)
    for out in ("w.npz", "hard.npz", "here/w.npz", str(sandbox / "w.npz")):
        with pytest.raises(GateflowError, match="it is the --weights file of this run"):
            check_file(out, "JSON", overwrite=True, inputs={"--weights": "w.npz"})
    refuse_inputs("new.json", "JSON", {"--weights": "w.npz"})
    refuse_inputs("-", "JSON", {"--inputs": "-"})
    refuse_inputs("x.npy", "CSV", {"--weights": "w.npz", "--inputs": None, "--s0": ""})
    assert check_file("x.npy", "CSV", overwrite=True, inputs={"--weights": "w.npz"}).name \
        == "x.npy"


# -- a read-only file system is named as such ----------------------------------------------------
def test_read_only_file_system_is_named(sandbox, monkeypatch):
    """EROFS is "read-only file system", not "permission denied", where the folder is
    checked (os.access) and where a file is placed (os.link)."""
    import errno

    from gateflow._io import check_file, write_files

    real_access, real_statvfs = os.access, os.statvfs

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == "."
                        else real_access(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly() if str(p) == "."
                        else real_statvfs(p))
    with pytest.raises(GateflowError, match=r"^cannot write JSON 'r.json': read-only file "
                                            r"system on folder '\.'$"):
        check_file("r.json", "JSON")
    assert_clean_error(_decay("--json", "r.json"), r"read-only file system on folder")
    monkeypatch.undo()

    def erofs(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "r.json")

    monkeypatch.setattr(os, "link", erofs)
    monkeypatch.setattr(os, "replace", erofs)
    with pytest.raises(GateflowError, match=r"^cannot write r.json: read-only file system$"):
        write_files({Path("r.json"): b"{}"})
    assert list(sandbox.iterdir()) == []


# -- numbers written by the user: ASCII digits, bounded ------------------------------------------
NUMBER_CASES = {
    "layer-fullwidth": (("--weights", "w2.npz", "--layer", "１"), r"--layer '１' is out of range"),
    "layer-arabic-indic": (("--weights", "w2.npz", "--layer", "١"), r"--layer '١' is out of range"),
    "layer-5000-digits": (("--weights", "w2.npz", "--layer", "1" * 5000),
                          r"--layer '1{40,}\.\.\. is out of range"),
    "layer-underscore": (("--weights", "w2.npz", "--layer", "0_1"), r"--layer '0_1' is out of"),
    "spectra-lags-fullwidth": (("--spectra", "s.svg", "--spectra-lags", "1,２"),
                               r"--spectra-lags: '２' is not an integer \(digits 0-9 only\)"),
    "spectra-lags-5000-digits": (("--spectra", "s.svg", "--spectra-lags", "9" * 5000),
                                 r"--spectra-lags: '9{40,}\.\.\. is not an integer \(more than "
                                 r"18 digits\)"),
    "sizes-fullwidth": (("--cell", "lstm-proj", "--sizes", "p=２"),
                        r"--sizes p must be a positive integer \(digits 0-9\), got '２'"),
    "sizes-5000-digits": (("--cell", "lstm-proj", "--sizes", "p=" + "7" * 5000),
                          r"--sizes p must be a positive integer \(digits 0-9\), got '7{40,}"),
}


@pytest.mark.parametrize("case", list(NUMBER_CASES))
def test_numbers_are_ascii_digits_and_bounded(sandbox, case):
    import gateflow as g
    from gateflow.models.formats._pytorch import to_torch_state_dict

    args, message = NUMBER_CASES[case]
    sd = {**to_torch_state_dict("lstm", g.init_params("lstm", 3, 2, seed=0)),
          **{k.replace("l0", "l1"): v for k, v in to_torch_state_dict(
              "lstm", g.init_params("lstm", 3, 3, seed=1)).items()}}
    import numpy as np

    np.savez(sandbox / "w2.npz", **sd)
    before = snapshot(sandbox)
    cell = [] if "--cell" in args else ["--cell", "lstm"]
    sizes = ["--steps", "4", "--batch", "1"] + ([] if "--weights" in args else ["--hidden", "3"])
    line = assert_clean_error(run_cli("decay", *cell, *sizes, *args, "-q"), message)
    assert len(line) < 300, len(line)
    assert_unchanged(before, snapshot(sandbox))


#: Every kind of number option, in the command that has it (the rest of a valid run).
_INT_OPTIONS = {
    "decay --steps": ("decay", "--cell", "lstm", "--hidden", "3", "--batch", "1", "--steps"),
    "decay --seed": ("decay", "--cell", "lstm", *TINY, "--seed"),
    "lyapunov --k": ("lyapunov", "--cell", "lstm", *TINY, "--k"),
    "derive -k": ("derive", "lstm", "-k"),
    "derive --layers": ("derive", "lstm", "--layers"),
    "sweep --points": ("sweep", "--out", "sw", "--points"),
    "report --seed": ("report", "--out", "rp", *REPORT_TINY, "--seed"),
}
_FLOAT_OPTIONS = {
    "decay --threshold": ("decay", "--cell", "lstm", *TINY, "--threshold"),
    "decay --sigma-w": ("decay", "--cell", "lstm", *TINY, "--sigma-w"),
    "decay --gate-bias": ("decay", "--cell", "lstm", *TINY, "--gate-bias"),
    "lyapunov --sigma-w": ("lyapunov", "--cell", "lstm", *TINY, "--sigma-w"),
}
#: What Python's int() or float() (and so typer) would take, and gateflow refuses.
_HOSTILE_NUMBERS = {"underscore": "1_0", "space": " 10", "plus": "+10", "expression": "2**70",
                    "beyond-int64": str(2 ** 70), "fullwidth": "１", "arabic-indic": "١٠",
                    "nan": "nan", "inf": "inf", "overflow": "1e400", "hex": "0x10",
                    "5000-digits": "9" * 5000}
_FLOAT_ONLY = {"underflow": "1e-400", "minus-inf": "-inf", "exponent-overflow": "1e99999"}


def _number_cases():
    for option in _INT_OPTIONS:
        for what in _HOSTILE_NUMBERS:
            yield pytest.param(option, what, id=f"{option}={what}")
    for option in _FLOAT_OPTIONS:
        for what in {**_HOSTILE_NUMBERS, **_FLOAT_ONLY}:
            if what == "beyond-int64":  # a real number may be that large
                continue
            yield pytest.param(option, what, id=f"{option}={what}")


@pytest.mark.parametrize(("option", "what"), list(_number_cases()))
def test_every_number_option_reads_plain_digits_only(sandbox, option, what):
    """``int``/``float`` (and typer) take ``1_0``, `` 10``, ``+10``, ``nan``, ``inf``, any
    size; the command line refuses each, naming the option, before anything runs."""
    args = {**_INT_OPTIONS, **_FLOAT_OPTIONS}[option]
    text = {**_HOSTILE_NUMBERS, **_FLOAT_ONLY}[what]
    flag = args[-1]
    name = {"-k": "--steps"}.get(flag, flag)
    before = snapshot(sandbox)
    line = assert_clean_error(run_cli(*args, text))
    assert line.startswith(f"error: {name}: "), line
    if option in _INT_OPTIONS:
        why = "more than 18 digits" if what in ("beyond-int64", "5000-digits") else (
            "no '+'" if what == "plus" else "digits 0-9 only" if any(
                c.isdigit() for c in text) else "")
        assert re.search(r" is not an integer\b", line), line
        assert why in line, (why, line)
    else:
        why = {"overflow": "beyond the float range", "exponent-overflow":
               "beyond the float range", "underflow": "rounds to 0", "5000-digits":
               "more than 64 characters"}.get(what, "is not a finite number")
        assert why in line, (why, line)
    assert len(line) < 300, len(line)
    assert_unchanged(before, snapshot(sandbox))


@pytest.mark.parametrize(("option", "text", "value"), [
    ("--seed", "999999999999999999", 999999999999999999), ("--seed", "0", 0),
    ("--steps", "007", 7), ("--threshold", "1e-300", 1e-300), ("--threshold", ".5", 0.5),
    ("--gate-bias", "-2.5", -2.5), ("--sigma-w", "1.5E+0", 1.5), ("--sigma-w", "3.", 3.0),
    ("--chrono", "12", 12.0)])
def test_plain_numbers_still_read(monkeypatch, option, text, value):
    """Digits, a leading '-', '.', an exponent: read as the number they write."""
    import gateflow.jobs._decay as job

    seen = {}
    monkeypatch.setattr(job, "run_decays", lambda cell, **kw: seen.update(kw))
    out = run_cli("decay", "--cell", "lstm", *TINY, option, text)
    assert out.exit_code == 0, out.stderr
    name = option[2:].replace("-", "_")
    records = [r for r in (seen.get("init"), seen.get("inputs")) if hasattr(r, name)]
    got = getattr(records[0], name) if records else seen[name]  # typed records, or as is
    assert got == value and type(got) is type(value), (got, value)


def test_negative_numbers_get_the_options_own_range_check():
    """A '-' is syntax a number may have: the option's own check refuses -3 in its terms."""
    assert_clean_error(run_cli("decay", "--cell", "lstm", "--hidden", "3", "--batch", "1",
                               "--steps", "-3", "-q"),
                       r"^error: --steps \(T\) must be a positive integer, got -3")
    assert_clean_error(run_cli("decay", "--cell", "lstm", *TINY, "--seed", "-1"),
                       r"seed must be an integer >= 0, got -1")

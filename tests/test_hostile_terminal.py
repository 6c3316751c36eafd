"""Hostile names, paths and signals against the terminal: nothing from outside is interpreted,
what is said was done.

* Names read from files (ONNX node names, Keras layer names, PyTorch keys), paths (a file
  name that is not UTF-8) and what a user typed are printed escaped (``\\x1b``, ``\\xff``),
  never as control characters, and never read as rich markup (``[red]x.json``, a module
  named ``[/]``, a cell ``lstm[gate=hard_sigmoid(0.2,0.5)]``). Files are built with the real
  writers (``onnx.helper``, ``h5py`` in a ``.keras`` zip, ``torch.save``).
* Messages are one line of bounded length: a 200,000-character name is elided in the middle.
* Outputs are committed last: a closed standard output (``>&-``, or a pipe whose reader is
  gone, before or during the run) is one error line, exit 2, and no file; an interrupt
  while the table prints leaves no file and says so; one after the commit says what was
  written.
* A signal at any moment after start-up (SIGINT or SIGTERM before the command line is even
  imported, a second SIGINT during cleanup or at exit) gives 130/143 and one line.

Every case runs ``python -m gateflow`` in a child process with its output captured as bytes
and checks: the exit status, stderr exactly one line (or none, for a run that succeeds and
prints nothing there), no traceback, valid UTF-8 with no control character but newlines on
stdout and stderr (captured through pipes, so rich adds no colour: any control character
would come from a file or a path), every file that existed byte-identical, nothing partial
(no staging file left).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _hostile import assert_unchanged, snapshot

from gateflow import GateflowError

N, D = 3, 2
#: A clipboard write (OSC 52), a screen clear, a colour, a bidi override, a C1 CSI, DEL.
EVIL = "\x1b]52;c;SGVsbG8=\x07\x1b[2J\x1b[31mred\u202eevil\x9b6n\x7f"
SHORT = ("--steps", "3", "--batch", "1")
TINY = (*SHORT, "--hidden", "2")
#: Characters no line gateflow prints may hold (it escapes them): controls but newline,
#: format characters (bidi, zero-width), surrogates, line and paragraph separators.
_FOREIGN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


# -- running and checking --------------------------------------------------------------------
def _env(tmp: Path, **extra) -> dict:
    return {**os.environ, "GATEFLOW_CACHE_DIR": str(tmp / "cache"), "COLUMNS": "250",
            **extra}


def gateflow(*args, cwd: Path, prelude: str = "", stdout=subprocess.PIPE,
             timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m gateflow ARGS`` (or, with ``prelude``, that Python code first and then the
    same entry point), output as bytes; arguments may be bytes (a non-UTF-8 file name)."""
    cmd = [sys.executable, "-m", "gateflow"] if not prelude else [
        sys.executable, "-c", prelude + "\nfrom gateflow.__main__ import main\nmain()"]
    return subprocess.run([*cmd, *args], cwd=cwd, env=_env(cwd.parent), stdout=stdout,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout)


def printable(data: bytes, where: str) -> str:
    """``data`` decoded: valid UTF-8 holding no control character but newlines."""
    text = data.decode("utf-8")  # a raw byte of a file name would fail here
    bad = sorted({repr(ch) for ch in text
                  if ch != "\n" and unicodedata.category(ch) in _FOREIGN})
    assert not bad, f"{where} holds {bad}: {text[:300]!r}"
    return text


def check(p, code: int, *, lines: int | None = 1, match: str | None = None,
          limit: int = 1000) -> tuple[str, str]:
    """Exit ``code``, ``lines`` stderr lines (None: any number), each under ``limit``
    characters, no traceback, nothing a terminal would act on; returns (stdout, stderr)."""
    out = printable(p.stdout or b"", "stdout")
    err = printable(p.stderr, "stderr")
    assert "Traceback" not in out + err, err
    assert p.returncode == code, (p.returncode, err[-2000:])
    if lines is not None:
        assert len(err.splitlines()) == lines, err[-2000:]
        if code != 0:
            assert err.splitlines()[-1].startswith("error: "), err
    assert all(len(line) < limit for line in err.splitlines()), [len(x) for x in err.split()]
    if match is not None:
        assert match in err, err
    return out, err


def no_staging(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert not left, left


# -- hostile model files, written by the real writers -----------------------------------------
def onnx_lstm(path: Path, names: list[str], **attrs) -> Path:
    """An ONNX model with one LSTM node per name (weights as initializers)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, tensors, outputs = [], [], []
    for i, name in enumerate(names):
        w = {f"W{i}": rng.normal(0, 0.5, (1, 4 * N, D)), f"R{i}": rng.normal(0, 0.5, (1, 4 * N, N)),
             f"B{i}": rng.normal(0, 0.5, (1, 8 * N))}
        tensors += [numpy_helper.from_array(a, name=k) for k, a in w.items()]
        nodes.append(helper.make_node("LSTM", ["X", f"W{i}", f"R{i}", f"B{i}"], [f"Y{i}"],
                                      name=name, **{"hidden_size": N, **attrs}))
        outputs.append(helper.make_tensor_value_info(f"Y{i}", TensorProto.DOUBLE,
                                                     ["T", 1, "B", N]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "X", TensorProto.DOUBLE, ["T", "B", D])], outputs, tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    onnx.save_model(model, str(path))
    return path


def keras_archive(path: Path, name: str, **config) -> Path:
    """A Keras 3 ``.keras`` archive (config.json, metadata.json, model.weights.h5 written
    with h5py) holding one LSTM layer called ``name``."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    bio = io.BytesIO()
    with h5py.File(bio, "w") as f:
        f.create_group("vars")
        cv = f.create_group("layers/lstm/cell/vars")
        for i, shape in enumerate(((D, 4 * N), (N, 4 * N), (4 * N,))):
            cv.create_dataset(str(i), data=rng.normal(size=shape))
    layer = {"class_name": "LSTM", "config": {
        "name": name, "units": N, "activation": "tanh", "recurrent_activation": "sigmoid",
        "use_bias": True, "go_backwards": False, "return_sequences": True, **config}}
    conf = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"name": "input_layer"}}, layer]}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", b'{"keras_version": "3.15.0"}')
        zf.writestr("config.json", json.dumps(conf))
        zf.writestr("model.weights.h5", bio.getvalue())
    return path


def torch_file(path, prefixes: list[str]) -> Path:
    """``torch.save`` of an nn.LSTM's state dict under each key prefix."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    sd = torch.nn.LSTM(D, N).state_dict()
    path = Path(os.fsdecode(path))  # bytes: a name that is not UTF-8 (surrogates in a str)
    torch.save({f"{p}{k}": v for p in prefixes for k, v in sd.items()}, path)
    return path


# -- 1. names from files never reach the terminal as control characters ------------------------
def test_onnx_node_names_are_escaped(sandbox):
    onnx_lstm(sandbox / "m.onnx", [f"enc{EVIL}", "dec\u2066x\u2069\nnext"])
    before = snapshot(sandbox)
    out, _ = check(gateflow("inspect", "m.onnx", cwd=sandbox), 0, lines=0)
    assert r"enc\x1b]52;c;SGVsbG8=\x07\x1b[2J\x1b[31mred\u202eevil\x9b6n\x7f" in out
    assert r"dec\u2066x\u2069\nnext" in out  # in the table: the newline as \n
    assert "--module $'dec\\xe2\\x81\\xa6x\\xe2\\x81\\xa9\\x0anext'" in out
    _, err = check(gateflow("decay", "--weights", "m.onnx", "--module", "nope", *SHORT,
                            cwd=sandbox), 2, match="no recurrent module 'nope'")
    assert r"\x1b]52" in err
    assert_unchanged(before, snapshot(sandbox))


@pytest.mark.parametrize("attrs", ["clip-tensor", "activations-graph", "hidden-size-200k"])
def test_onnx_attributes_of_unexpected_types_give_one_short_line(sandbox, attrs):
    """Protobuf text (with newlines) or a 200,000-element list never reaches the line."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    given = {"clip-tensor": {"hidden_size": N, "clip": numpy_helper.from_array(np.ones(3))},
             "activations-graph": {"hidden_size": N, "activations": helper.make_graph(
                 [], "sub\ngraph\x1b[2J", [], [])},
             "hidden-size-200k": {"hidden_size": [1] * 200_000}}[attrs]
    onnx_lstm(sandbox / "m.onnx", ["lstm"], **given)
    assert onnx.load(str(sandbox / "m.onnx")).graph.node[0].attribute
    before = snapshot(sandbox)
    for command in (("inspect", "m.onnx"), ("decay", "--weights", "m.onnx", *SHORT)):
        out, _ = check(gateflow(*command, cwd=sandbox), 2, limit=400)
        assert all(len(line) < 400 for line in out.splitlines())
    assert_unchanged(before, snapshot(sandbox))


def test_keras_layer_names_are_escaped(sandbox):
    keras_archive(sandbox / "m.keras", f"clip{EVIL}")
    before = snapshot(sandbox)
    out, _ = check(gateflow("inspect", "m.keras", cwd=sandbox), 0, lines=0)
    assert r"clip\x1b]52;c;SGVsbG8=\x07" in out
    _, err = check(gateflow("decay", "--weights", "m.keras", "--module", "x", *SHORT,
                            cwd=sandbox), 2)
    assert r"\x1b[2J" in err
    assert_unchanged(before, snapshot(sandbox))


def test_pytorch_keys_are_escaped_and_the_command_runs_as_printed(sandbox):
    """The printed command quotes a name with control characters in ANSI-C quotes: the
    terminal sees only escapes, and bash, given the line, reaches that very module."""
    torch_file(sandbox / "w.pt", ["\x1b[2Jclear.", "plain."])
    out, _ = check(gateflow("inspect", "w.pt", cwd=sandbox), 0, lines=0)
    command = next(line for line in out.splitlines() if "--module $'" in line)
    assert command == "gateflow decay --weights w.pt --module $'\\x1b[2Jclear'"
    before = snapshot(sandbox)
    runner = (f"gateflow() {{ {sys.executable} -m gateflow \"$@\"; }}; {command} "
              f"{' '.join(SHORT)} -q")
    p = subprocess.run(["bash", "-c", runner], cwd=sandbox, env=_env(sandbox.parent),
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=180)
    check(p, 0, lines=None)
    assert_unchanged(before, snapshot(sandbox))


def test_a_module_named_like_markup_is_inspectable(sandbox):
    torch_file(sandbox / "w.pt", ["[/].", "[red]x[/red]."])
    out, _ = check(gateflow("inspect", "w.pt", cwd=sandbox), 0, lines=0)
    assert "# [/]: PyTorch nn.LSTM" in out and "# [red]x[/red]: PyTorch" in out
    assert "--module '[/]'" in out and "--module '[red]x[/red]'" in out
    check(gateflow("decay", "--weights", "w.pt", "--module", "[/]", *SHORT, "-q",
                   cwd=sandbox), 0, lines=0)


def test_a_file_name_that_is_not_utf8(sandbox):
    """A name with an undecodable byte and an escape sequence: shown as ``\\xff\\x1b``, the
    command quotes its very bytes, the JSON is written under the name asked for."""
    raw = b"w\xff\x1b[31m.pt"
    torch_file(os.path.join(os.fsencode(sandbox), raw), ["m."])
    before = snapshot(sandbox)
    out, err = check(gateflow("inspect", raw, "--json", raw + b".json", cwd=sandbox), 0)
    assert r"w\xff\x1b[31m.pt: 1 recurrent module(s)" in out
    assert "gateflow decay --weights $'w\\xff\\x1b[31m.pt'" in out
    assert err == "wrote w\\xff\\x1b[31m.pt.json\n"
    doc = json.loads((sandbox / os.fsdecode(raw + b".json")).read_text())
    assert os.fsencode(doc["file"]) == raw
    assert_unchanged(before, snapshot(sandbox), allow_new=[os.fsdecode(raw + b".json")])
    _, err = check(gateflow("decay", "--weights", raw, "--module", "x", *SHORT, cwd=sandbox),
                   2)
    assert r"w\xff\x1b[31m.pt" in err or r"w\udcff\x1b[31m.pt" in err  # str() or repr()


def test_cell_names_with_brackets_show_literally(sandbox):
    keras_archive(sandbox / "m.keras", "lstm", recurrent_activation="hard_sigmoid")
    out, _ = check(gateflow("inspect", "m.keras", cwd=sandbox), 0, lines=0)
    table = out.split("\n# ")[0]
    assert "lstm[gate=hard_sigmoid(1/6,0.5)]" in table  # the table's cell column
    out, _ = check(gateflow("decay", "--cell", "lstm[gate=hard_sigmoid(0.2,0.5)]", *TINY,
                            cwd=sandbox), 0, lines=0)
    assert "lstm[gate=hard_sigmoid(0.2,0.5)]: mean log10 norm" in out
    assert "lstm[gate=hard_sigmoid(0.2,0.5)]: fitted decay" in out


# -- 2. messages are one bounded line --------------------------------------------------------
def test_a_200k_character_name_gives_a_short_line(sandbox):
    torch_file(sandbox / "w.pt", ["A" * 200_000 + "."])
    before = snapshot(sandbox)
    _, err = check(gateflow("decay", "--weights", "w.pt", "--module", "x", *SHORT,
                            cwd=sandbox), 2, limit=300)
    assert "A…A" in err
    out, _ = check(gateflow("inspect", "w.pt", cwd=sandbox), 0, lines=0)
    about = next(line for line in out.splitlines() if line.startswith("# "))
    assert len(about) < 300 and "A…A" in about  # the '#' line is bounded like a message
    assert max(len(line) for line in out.splitlines() if "A" * 1000 not in line) < 300
    assert_unchanged(before, snapshot(sandbox))


def test_gateflow_error_is_one_bounded_printable_line():
    err = GateflowError("bad\nname " + EVIL + " " + "x" * 200_000 + " end")
    text = str(err)
    assert "\n" not in text and len(text) <= 1000 and text.endswith(" end")
    assert r"\x1b]52;c;SGVsbG8=\x07" in text and "\x1b" not in text
    assert str(GateflowError(text)) == text  # applying it again changes nothing
    assert str(GateflowError("plain message, 'quoted' [x]")) == "plain message, 'quoted' [x]"


def test_the_api_message_for_a_200k_name_is_bounded(sandbox):
    import gateflow

    torch_file(sandbox / "w.pt", ["B" * 200_000 + "."])
    with pytest.raises(GateflowError) as info:
        gateflow.load_model("w.pt", module="x")
    assert len(str(info.value)) < 300 and "B…B" in str(info.value)


# -- 3. rich markup in what a user typed ------------------------------------------------------
@pytest.mark.parametrize(("command", "path"), [
    (("decay", "--cell", "lstm", *TINY), "o[/bold].json"),
    (("decay", "--cell", "lstm", *TINY), "[red]x.json"),
    (("lyapunov", "--cell", "gru", *TINY), "o[/b]l[b].json"),
    (("inspect", "w.pt"), "[red]i.json"),
    (("inspect", "w.pt"), "o[/].json"),
], ids=["decay-close-tag", "decay-open-tag", "lyapunov", "inspect-open-tag",
        "inspect-close-tag"])
def test_markup_in_an_output_path_is_printed_as_it_is(sandbox, command, path):
    torch_file(sandbox / "w.pt", [""])
    (sandbox / "o[").mkdir()
    before = snapshot(sandbox)
    out, err = check(gateflow(*command, "--json", path, cwd=sandbox), 0, lines=None)
    assert f"wrote {path}\n" in out + err
    json.loads((sandbox / path).read_text())
    assert_unchanged(before, snapshot(sandbox), allow_new=[path])


def test_markup_in_an_error_is_printed_as_it_is(sandbox):
    torch_file(sandbox / "w.pt", [""])
    check(gateflow("decay", "--weights", "w.pt", "--module", "[/]", *SHORT, cwd=sandbox), 2,
          match="no recurrent module '[/]'")
    check(gateflow("decay", "--cell", "lstm", *TINY, "--json", "[red]no/x.json",
                   cwd=sandbox), 2, match="folder '[red]no' does not exist")


# -- 4. what is said was done: a closed standard output -----------------------------------------
CLOSED_STDOUT = {
    "inspect": ("inspect", "w.pt"),
    "inspect-json": ("inspect", "w.pt", "--json", "i.json"),
    "report": ("report", "--out", "rep", "--steps", "3", "--hidden", "2", "--batch", "1",
               "-q"),
    "decay": ("decay", "--cell", "lstm", *TINY, "--json", "d.json"),
    "lyapunov": ("lyapunov", "--cell", "lstm", *TINY, "--json", "l.json"),
    "derive": ("derive", "lstm"),
}


@pytest.mark.parametrize("case", list(CLOSED_STDOUT))
@pytest.mark.parametrize("how", ["reader-gone", "closed"])
def test_a_closed_stdout_is_an_error_before_any_work(sandbox, case, how):
    torch_file(sandbox / "w.pt", [""])
    before = snapshot(sandbox)
    if how == "closed":
        p = subprocess.run([sys.executable, "-m", "gateflow", *CLOSED_STDOUT[case]],
                           cwd=sandbox, env=_env(sandbox.parent), stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=180,
                           preexec_fn=lambda: os.close(1))
        message = "standard output is closed"
    else:
        read, write = os.pipe()
        os.close(read)
        try:
            p = gateflow(*CLOSED_STDOUT[case], cwd=sandbox, stdout=write)
        finally:
            os.close(write)
        message = "broken pipe"
    check(p, 2, match=message)
    assert_unchanged(before, snapshot(sandbox))


def _open_files(pid: int) -> list[str]:
    try:
        return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return []


@pytest.mark.parametrize("command", [("inspect", "w.pt", "--json", "o.json"),
                                     ("decay", "--weights", "w.pt", *SHORT, "--json",
                                      "o.json")], ids=["inspect", "decay"])
def test_a_pipe_that_breaks_during_the_run_leaves_no_file(sandbox, command):
    """The reader exits once the run has opened the model (after the check at start-up):
    printing the table fails, the JSON staged for it is removed, one line says why."""
    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to see when the run has opened its model")
    torch_file(sandbox / "w.pt", [""])
    before = snapshot(sandbox)
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "gateflow", *command], cwd=sandbox,
                            env=_env(sandbox.parent), stdout=write, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    os.close(write)
    try:
        t0 = time.monotonic()
        while not any(f.endswith("w.pt") for f in _open_files(proc.pid)):
            assert proc.poll() is None and time.monotonic() - t0 < 120, "never opened w.pt"
            time.sleep(0.002)
        os.close(read)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    check(subprocess.CompletedProcess(command, proc.returncode, b"", err), 2,
          match="cannot write to standard output: its reader has exited (broken pipe)")
    assert_unchanged(before, snapshot(sandbox))


def test_a_report_whose_path_cannot_be_printed_says_it_was_written(sandbox):
    """The reader exits while the report computes: the folder is complete and in place, and
    the one error line says so (never an error that reads as if nothing was written)."""
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "gateflow", "report", "--out", "rep",
                             "--steps", "40", "--hidden", "3", "--batch", "2", "-q"],
                            cwd=sandbox, env=_env(sandbox.parent), stdout=write,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(write)
    try:
        t0 = time.monotonic()
        while not list(sandbox.glob(".rep.*.tmp")):
            assert proc.poll() is None and time.monotonic() - t0 < 120, proc.communicate()
            time.sleep(0.002)
        os.close(read)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _, err = check(subprocess.CompletedProcess([], proc.returncode, b"", err), 2,
                   match="cannot write to standard output")
    assert err.rstrip().endswith("; already written: rep"), err
    assert (sandbox / "rep" / "index.html").is_file()
    assert (sandbox / "rep" / ".gateflow-manifest.json").is_file()
    no_staging(sandbox)


def test_version_to_a_closed_stdout(sandbox):
    p = subprocess.run([sys.executable, "-m", "gateflow", "--version"], cwd=sandbox,
                       env=_env(sandbox.parent), stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=60, preexec_fn=lambda: os.close(1))
    check(p, 2, match="standard output is closed")


# -- 5. signals: what is said was done, at any moment ----------------------------------------
def _caught(pid: int) -> int:
    """The signals ``pid`` catches (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _start(args, cwd: Path, prelude: str = "") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gateflow"] if not prelude else [
        sys.executable, "-c", prelude + "\nfrom gateflow.__main__ import main\nmain()"]
    return subprocess.Popen([*cmd, *args], cwd=cwd, env=_env(cwd.parent),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def _wait(proc, ready: Path, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"finished early: {proc.communicate()}")
        assert time.monotonic() - t0 < timeout, "never got there"
        time.sleep(0.005)


def _finish(proc, timeout: float = 60):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15])
def test_a_signal_during_start_up(sandbox, sig, delay):
    """As soon as the handlers are in (before typer or SymPy are imported), and a little
    later: 130/143, one line, no KeyboardInterrupt traceback from an import half-way."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to see when the handlers are installed")
    before = snapshot(sandbox)
    proc = _start(("decay", "--cell", "lstm", *TINY, "--json", "r.json"), sandbox)
    t0 = time.monotonic()
    while not _caught(proc.pid) & (1 << (signal.SIGTERM - 1)):  # Python alone never catches it
        assert proc.poll() is None and time.monotonic() - t0 < 60, proc.communicate()
        time.sleep(0.0005)
    time.sleep(delay)
    proc.send_signal(sig)
    p = _finish(proc)
    check(p, 128 + sig, match="nothing was written")
    assert_unchanged(before, snapshot(sandbox))


def test_the_handlers_are_in_before_anything_heavy_is_imported(tmp_path):
    """``python -m gateflow``: SIGINT and SIGTERM are gateflow's before typer, click, rich,
    NumPy or SymPy start importing (the ~0.3 s in which a Ctrl-C used to print a
    KeyboardInterrupt traceback)."""
    record = tmp_path / "seen.json"
    spy = f"""
import atexit, json, runpy, signal, sys
seen = {{}}
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("typer", "click", "rich", "numpy", "sympy") and name not in seen:
            seen[name] = [getattr(signal.getsignal(s), "__qualname__", repr(signal.getsignal(s)))
                          for s in (signal.SIGINT, signal.SIGTERM)]
sys.meta_path.insert(0, Spy())
atexit.register(lambda: open({str(record)!r}, "w").write(json.dumps(seen)))
sys.argv = ["gateflow", "--version"]
runpy.run_module("gateflow", run_name="__main__", alter_sys=True)
"""
    p = subprocess.run([sys.executable, "-c", spy], cwd=tmp_path, env=_env(tmp_path),
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0, p.stderr
    seen = json.loads(record.read_text())
    assert "typer" in seen, seen
    assert all(handlers == ["_outside", "_outside"] for handlers in seen.values()), seen


#: Child preludes: make a moment of the run slow, and say when it is there (a file outside
#: the sandbox).
def _slow(target: str, attr: str, ready: Path, seconds: float = 60, when: str = "True"
          ) -> str:
    """Python code that makes ``target.attr`` sleep ``seconds`` (when ``when``, an
    expression of its arguments ``a``, holds) after creating ``ready``."""
    return (f"import time, {target} as m\norig = m.{attr}\n"
            f"def slow(*a, **k):\n    if {when}:\n        open({str(ready)!r}, 'w').close()\n"
            f"        time.sleep({seconds})\n    return orig(*a, **k)\nm.{attr} = slow\n")


@pytest.mark.parametrize("case", ["inspect", "decay"])
def test_an_interrupt_while_the_table_prints_leaves_no_file(sandbox, tmp_path, case):
    torch_file(sandbox / "w.pt", [""])
    ready = tmp_path / "ready"
    slow = {"inspect": ("gateflow.presentation._console", "modules_report"),
            "decay": ("gateflow.presentation._console", "fit_table")}[case]
    args = ({"inspect": ("inspect", "w.pt"), "decay": ("decay", "--weights", "w.pt", *SHORT)}
            [case] + ("--json", "o.json"))
    before = snapshot(sandbox)
    proc = _start(args, sandbox, _slow(*slow, ready))
    _wait(proc, ready)
    proc.send_signal(signal.SIGINT)
    p = _finish(proc)
    _, err = check(p, 130, lines=None)
    assert err.splitlines()[-1] == "error: interrupted (Ctrl-C); nothing was written"
    assert_unchanged(before, snapshot(sandbox))
    no_staging(sandbox)


@pytest.mark.parametrize("case", ["inspect", "decay", "lyapunov"])
def test_an_interrupt_after_the_commit_says_what_was_written(sandbox, tmp_path, case):
    torch_file(sandbox / "w.pt", [""])
    ready = tmp_path / "ready"
    args = {"inspect": ("inspect", "w.pt"), "decay": ("decay", "--weights", "w.pt", *SHORT),
            "lyapunov": ("lyapunov", "--weights", "w.pt", *SHORT)}[case] + ("--json", "o.json")
    before = snapshot(sandbox)
    proc = _start(args, sandbox, _slow("gateflow.presentation._console", "wrote", ready,
                                       when="list(a[1])"))
    _wait(proc, ready)
    proc.send_signal(signal.SIGINT)
    p = _finish(proc)
    _, err = check(p, 130, lines=None)
    assert err.splitlines()[-1] == ("error: interrupted (Ctrl-C) after writing o.json; "
                                    "nothing else was written")
    json.loads((sandbox / "o.json").read_text())
    assert_unchanged(before, snapshot(sandbox), allow_new=["o.json"])
    no_staging(sandbox)


def test_a_second_sigint_during_cleanup_lets_it_finish(sandbox, tmp_path):
    """The first Ctrl-C unwinds the run; a second one while the staged file is being
    removed is not raised again: the cleanup finishes, 130, one line, nothing left."""
    torch_file(sandbox / "w.pt", [""])
    printing, cleaning = tmp_path / "printing", tmp_path / "cleaning"
    prelude = (_slow("gateflow.presentation._console", "modules_report", printing)
               + _slow("gateflow._io", "_unlink", cleaning, seconds=1.5))
    before = snapshot(sandbox)
    proc = _start(("inspect", "w.pt", "--json", "o.json"), sandbox, prelude)
    _wait(proc, printing)
    proc.send_signal(signal.SIGINT)
    _wait(proc, cleaning, timeout=30)
    proc.send_signal(signal.SIGINT)
    p = _finish(proc)
    check(p, 130, match="interrupted (Ctrl-C); nothing was written")
    assert_unchanged(before, snapshot(sandbox))
    no_staging(sandbox)


@pytest.mark.parametrize("first", [True, False], ids=["after-an-interrupt", "after-success"])
def test_a_sigint_while_the_process_exits(sandbox, tmp_path, first):
    """A Ctrl-C while the interpreter exits (here: an exit handler that takes a while):
    after an interrupt it changes nothing (130, never -2); after a run that succeeded it
    ends the process with 130 and one line that says what was written."""
    torch_file(sandbox / "w.pt", [""])
    exiting, printing = tmp_path / "exiting", tmp_path / "printing"
    # A library's exit handler: registered after gateflow's handlers are in (as for every
    # library the command imports), so it runs before gateflow's last one ignores signals.
    prelude = ("import atexit, time\nfrom gateflow._interrupt import install\ninstall()\n"
               f"atexit.register(lambda: (open({str(exiting)!r}, 'w').close(), "
               "time.sleep(30)))\n")
    if first:
        prelude += _slow("gateflow.presentation._console", "modules_report", printing)
    before = snapshot(sandbox)
    proc = _start(("inspect", "w.pt", "--json", "o.json"), sandbox, prelude)
    if first:
        _wait(proc, printing)
        proc.send_signal(signal.SIGINT)
    _wait(proc, exiting)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    if first:  # ignored: the exit handler runs to its end
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)  # a third one ends it at once
    p = _finish(proc)
    assert time.monotonic() - t0 < 10
    if first:
        check(p, 130, match="interrupted (Ctrl-C); nothing was written")
        assert_unchanged(before, snapshot(sandbox))
    else:
        _, err = check(p, 130, lines=2)
        assert err.splitlines() == [
            "wrote o.json",
            "error: interrupted (Ctrl-C) after writing o.json; nothing else was written"]
        assert_unchanged(before, snapshot(sandbox), allow_new=["o.json"])


#: Seconds between the first and the second Ctrl-C: during the unwinding, as the last line
#: is printed, and while the interpreter tears its modules down (where CPython resets a
#: Python handler to the default action, which kills with -2).
SECOND_SIGINT_AFTER = (0.0, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.08, 0.12, 0.2)


@pytest.mark.slow  # ten report runs, ~50 s on 2 cores
def test_two_quick_sigints_always_exit_130(sandbox, tmp_path):
    """Ctrl-C twice in quick succession (a user's double tap) while ``report`` runs, the
    second one at several delays: 130 every time, one line, nothing left behind."""
    results = []
    for i, delay in enumerate(SECOND_SIGINT_AFTER):
        work = sandbox / f"run{i}"
        work.mkdir()
        ready = tmp_path / f"ready{i}"
        before = snapshot(work)
        proc = _start(("report", "--steps", "6", "--batch", "2", "--hidden", "4",
                       "--input-size", "2", "--out", "rp", "-q"), work,
                      _slow("gateflow.jobs._report", "write_pages", ready))
        _wait(proc, ready)
        proc.send_signal(signal.SIGINT)
        if delay:
            time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        p = _finish(proc)
        results.append((delay, p.returncode))
        check(p, 130, match="interrupted (Ctrl-C); nothing was written")
        assert_unchanged(before, snapshot(work))
        no_staging(work)
    assert [code for _, code in results] == [130] * len(SECOND_SIGINT_AFTER), results

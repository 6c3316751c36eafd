"""Libraries in place of hand-written parsers (issue 19, item 6), each checked where a
plausible mistake would show:

* safetensors: ``safe_open`` gives keys, dtypes and shapes and reads the tensors; gateflow
  reads only BF16 (NumPy has none), at offsets the checked header implies;
* torch: ``get_unsafe_globals_in_checkpoint`` names every global a refused checkpoint needs
  (torch's message names one), with the message read where torch has no such scan;
* typer/click: an unknown choice is named from the exception's data, not its English;
* one number policy (:mod:`gateflow.presentation._numbers`) for the console's tables and
  the printed lines of the jobs.

psutil (the host's memory next to the cgroup's) is tested in ``test_memory.py``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gateflow import GateflowError
from gateflow.models.formats import read_arrays
from tests._hostile import assert_clean_error, run_cli


def _safetensors(path: Path, tensors: list[tuple[str, str, tuple, bytes]],
                 tail: bytes = b"", gap: int = 0, metadata: dict | None = None) -> Path:
    """A safetensors file written byte by byte: ``(key, dtype, shape, raw bytes)`` in the
    order of their data, header keys in the reverse order; ``gap`` bytes between the first
    two tensors, ``tail`` after the last."""
    header: dict = {} if metadata is None else {"__metadata__": metadata}
    offset, chunks = 0, []
    for i, (key, dtype, shape, raw) in enumerate(tensors):
        if i == 1 and gap:
            chunks.append(bytes(gap))
            offset += gap
        header[key] = {"dtype": dtype, "shape": list(shape),
                       "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header = dict(reversed(list(header.items())))
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(chunks) + tail)
    return path


def _bf16(values: np.ndarray) -> bytes:
    """float64 values exact in bfloat16, as their bfloat16 bit patterns (the top half of
    their float32 bits)."""
    bits = values.astype(np.float32).view(np.uint32)
    assert np.all(bits & 0xFFFF == 0), "not exact in bfloat16"
    return (bits >> 16).astype("<u2").tobytes()


# values exact in bfloat16 (8 significant bits), float16 and float32
A = np.array([[0.5, -1.25, 3.0], [1 / 128, -0.0078125, 96.0]])
B = np.array([-2.0 ** -20, 2.0 ** 30, 1.5, -7.0])
C = np.arange(6.0).reshape(3, 2) / 4
D = np.array([[1.0, -0.5], [0.25, 1024.0]])


def _mixed(tmp_path: Path) -> Path:
    """Four tensors whose order in the data (z, a, m, b) is neither their names' order nor
    the header's: two BF16 ones after an F64 and between an F16, so that a BF16 offset
    taken from the wrong tensor, or the bits read as float16, shows."""
    return _safetensors(tmp_path / "w.safetensors", [
        ("z", "F64", C.shape, C.astype("<f8").tobytes()),
        ("a", "BF16", A.shape, _bf16(A)),
        ("m", "F16", D.shape, D.astype("<f2").tobytes()),
        ("b", "BF16", B.shape, _bf16(B)),
    ])


def test_safetensors_with_bf16_is_read_exactly_in_the_order_of_its_bytes(tmp_path):
    raw = read_arrays(_mixed(tmp_path))
    assert list(raw) == ["z", "a", "m", "b"]
    want = {"z": C, "a": A, "m": D, "b": B}
    for key, a in raw.items():
        np.testing.assert_array_equal(a.astype(np.float64), want[key], err_msg=key)
        assert a.shape == want[key].shape
    assert raw["a"].dtype == raw["b"].dtype == np.float32  # widened exactly
    assert raw["m"].dtype == np.float16 and raw["z"].dtype == np.float64
    assert raw.dtypes == {"a": "bfloat16", "b": "bfloat16"}


def test_bf16_agrees_with_torch(tmp_path):
    """torch's own bfloat16 → float64 conversion of the same file (an independent route)."""
    st_torch = pytest.importorskip("safetensors.torch")
    torch = pytest.importorskip("torch")
    path = _mixed(tmp_path)
    raw = read_arrays(path)
    for key, t in st_torch.load_file(str(path)).items():
        np.testing.assert_array_equal(raw[key].astype(np.float64), t.to(torch.float64).numpy())


def test_the_library_reads_the_header(tmp_path, monkeypatch):
    """Keys, dtypes and shapes come from ``safe_open``, opened on the very file gateflow
    opened and checked (its descriptor, not the path again)."""
    import safetensors

    opened = []
    real = safetensors.safe_open

    def spy(source, *args, **kwargs):
        opened.append((source, kwargs))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    path = _mixed(tmp_path)
    read_arrays(path)
    (source, kwargs), = opened
    assert kwargs == {"framework": "numpy", "backend": "pread"}
    if os.path.isdir("/proc/self/fd"):
        assert str(source).startswith("/proc/self/fd/")
    else:
        assert Path(source) == path


@pytest.mark.parametrize(("build", "match"), [
    # what gateflow's own parser let through, the library refuses (it is the format's rule)
    (lambda p: _safetensors(p, [("x", "F32", (1,), bytes(4)), ("y", "F32", (1,), bytes(4))],
                            gap=4), r"safetensors refuses it \(invalid offset for tensor `y`\)"),
    (lambda p: _safetensors(p, [("x", "F32", (1,), bytes(4))], tail=bytes(4)),
     r"safetensors refuses it \(incomplete metadata, file not fully covered\)"),
    (lambda p: _safetensors(p, [("x", "F32", (1,), bytes(4))], metadata={"epoch": 3}),
     r"safetensors refuses it \(invalid JSON in header: invalid type: integer `3`"),
    # the library reads these; gateflow does not
    (lambda p: _safetensors(p, [("x", "F32", (1,), bytes(4)), ("q", "C64", (1,), bytes(8))]),
     r"tensor 'q' has dtype 'C64', which gateflow does not read"),
    (lambda p: _safetensors(p, [("x", "BF16", (1,), bytes(2)), ("q", "F8_E5M2", (2,), bytes(2))]),
     r"tensor 'q' has dtype 'F8_E5M2', which gateflow does not read"),
])
def test_refusals_are_one_line(tmp_path, build, match):
    path = build(tmp_path / "w.safetensors")
    with pytest.raises(GateflowError, match=r"^cannot read '.*w\.safetensors': " + match):
        read_arrays(path)
    with pytest.raises(GateflowError, match=r"; re-export the file$"):
        read_arrays(path)


def test_a_file_cut_short_while_read_is_an_error_not_a_crash(tmp_path):
    """The file is cut after the header is read, before the tensors are: with the library's
    default mmap backend the read would end the process with SIGBUS; with pread it is one
    line. In a child process, so that a crash cannot take the test run with it."""
    path = tmp_path / "w.safetensors"
    big = np.arange(2.0 ** 16)
    _safetensors(path, [("x", "F64", big.shape, big.tobytes())])
    code = f"""
import os, safetensors
from pathlib import Path
from gateflow import GateflowError
from gateflow.models.formats import read_arrays
real = safetensors.safe_open
def cut(*args, **kwargs):
    f = real(*args, **kwargs)
    os.truncate({str(path)!r}, 100)
    return f
safetensors.safe_open = cut
try:
    read_arrays(Path({str(path)!r}))
except GateflowError as exc:
    print(exc)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert "it changed while being read" in p.stdout, p.stdout


# -- torch: the unsafe globals of a refused checkpoint ------------------------------------
class _Marker:
    """Unpickling this would run ``touch marker``."""

    def __reduce__(self):
        return (os.system, ("touch marker",))


def test_refused_checkpoint_names_every_unsafe_global_from_torchs_scan(sandbox, monkeypatch):
    """A checkpoint of NumPy arrays needs three globals weights_only refuses; torch's
    message names only the first it meets, its scan names all of them."""
    torch = pytest.importorskip("torch")
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:
        pytest.skip("torch < 2.5 has no get_unsafe_globals_in_checkpoint")
    torch.save({"weight_hh_l0": np.zeros((3, 3)), "x": _Marker()}, "w.pt")
    needed = sorted(scan("w.pt"))
    assert len(needed) >= 3 and "posix.system" in needed
    calls = []
    monkeypatch.setattr(torch.serialization, "get_unsafe_globals_in_checkpoint",
                        lambda f: calls.append(f) or scan(f))
    with pytest.raises(GateflowError) as info:
        read_arrays(Path("w.pt"))
    message = str(info.value)
    assert len(calls) == 1
    assert message.startswith(f"'w.pt' pickles {', '.join(needed[:-1])} and {needed[-1]}, "
                              "which gateflow refuses to load (unpickling it could run code)")
    assert not Path("marker").exists()
    assert_clean_error(run_cli("inspect", "w.pt"), r"pickles .*posix\.system")


def test_without_torchs_scan_the_message_names_the_global(sandbox, monkeypatch):
    """torch 2.1 to 2.4 have no scan: the global torch's refusal names is said."""
    torch = pytest.importorskip("torch")
    torch.save({"x": _Marker()}, "w.pt")
    monkeypatch.delattr(torch.serialization, "get_unsafe_globals_in_checkpoint",
                        raising=False)
    with pytest.raises(GateflowError, match=r"^'w\.pt' pickles posix\.system, which gateflow "
                                            r"refuses to load"):
        read_arrays(Path("w.pt"))
    assert not Path("marker").exists()


def test_a_corrupt_checkpoint_is_not_called_unsafe(sandbox):
    """A damaged archive: the scan fails too, and the line says the file is corrupt."""
    torch = pytest.importorskip("torch")
    torch.save({"weight_hh_l0": torch.zeros(3, 3)}, "ok.pt")
    data = bytearray(Path("ok.pt").read_bytes())
    at = data.index(b"\x80\x02", data.index(b"data.pkl"))  # the pickle's first opcode
    data[at + 2:at + 30] = b"\xff" * 28
    Path("w.pt").write_bytes(bytes(data))
    with pytest.raises(GateflowError) as info:
        read_arrays(Path("w.pt"))
    assert "pickles" not in str(info.value)
    assert "corrupt or not a torch.save file" in str(info.value)


# -- typer/click: an unknown choice, from the exception's data ----------------------------
@pytest.mark.parametrize(("args", "match"), [
    (("decay", "--cell", "rnn", "--dtype", "float31"),
     r"^error: unknown dtype 'float31' \(did you mean 'float32' or 'float64'\?\) "
     r"\(see gateflow decay --help\)$"),
    (("derive", "lstm", "--format", "htm"),
     r"^error: unknown format 'htm' \(valid: text, latex, markdown\)"),
    # quotes, a backslash and a newline in the value: said as its repr, on one line
    (("decay", "--cell", "rnn", "--init", "it's \"x\"\\\n"),
     r"^error: unknown init scheme 'it\\'s \"x\"\\\\\\n' \(valid: pytorch, gaussian, "
     r"orthogonal\)"),
    (("decay", "--cell", "rnn", "--backend", "is not one of 'numpy'"),
     r"^error: unknown backend \"is not one of 'numpy'\" \(valid: numpy, cupy\)"),
])
def test_unknown_choice_names_the_value_and_the_choices(args, match):
    assert_clean_error(run_cli(*args), match)


def test_a_choice_in_any_case_is_accepted(sandbox):
    out = run_cli("decay", "--cell", "rnn", "--dtype", "FLOAT32", "--hidden", "2",
                  "--input-size", "1", "--steps", "3", "--batch", "1", "-q")
    assert out.exit_code == 0, out.stderr


# -- one number policy ------------------------------------------------------------------------
def test_numbers_fixed_is_the_policy_for_logarithms():
    from gateflow.presentation import _numbers as num

    assert num.fixed(-0.63449, 3, style="plain") == "-0.634"
    assert num.fixed(-12.3456, 3, style="plain") == "-12.346"  # never 3 significant digits
    assert num.fixed(-12.3456, 3) == "\u221212.346"
    assert num.fixed(-1e-9, 3, style="plain") == f"{-1e-9:.3f}"
    assert num.fixed(-np.inf, 5, style="plain") == "-inf"
    assert num.fixed(float("nan"), 5) == "—"


def _rendered(table) -> str:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    return out.getvalue()


def test_lyapunov_table_follows_the_policy():
    """λ to five decimals; e-folding lags as measured numbers (``100000``, never
    ``1e+05``); the caption's sums to three significant digits."""
    from gateflow.presentation._console import lyapunov_table

    exps = np.array([[-1e-5, -0.123456, -np.inf], [-1e-5, -0.123456, -np.inf]])
    res = SimpleNamespace(cell=SimpleNamespace(name="rnn"), exponents=exps, steps=50,
                          transient=10, k=3, state_dim=3, positive_sum=np.array([0.0, 0.0]),
                          kaplan_yorke=np.array([1.23456, 1.23456]))
    text = _rendered(lyapunov_table(res))
    assert "-0.00001" in text and "100000 (contracting)" in text
    assert "-0.12346" in text and "8.10 (contracting)" in text
    assert "-inf" in text
    flat = " ".join(text.split())
    assert "sum of positive exponents 0; Kaplan–Yorke dimension 1.23" in flat
    assert "1.235" not in text and "1e+05" not in text


def test_analysis_table_follows_the_policy():
    """A per-step factor of 0.99996 is not 1 (``:.4g`` wrote ``1``); R² near 1 likewise;
    the threshold as given."""
    from gateflow.jobs._analyze import Analysis

    row = {"module": "rnn", "kind": "nn.LSTM", "layer": 0, "direction": "forward",
           "cell": "lstm", "T": 100, "B": 4, "memory block": "c/c", "regime": "vanishing",
           "per-step factor": 0.999961, "R²": 0.999951, "e-folding lag (steps)": 25641.3,
           "memory horizon (steps)": None, "note": ""}
    text = str(Analysis(table=[row], results={}, fits={}, threshold=2.5e-7))
    assert "first lag below 2.5e-07)" in text.splitlines()[0]
    cells = text.splitlines()[3].split()
    assert "0.99996" in cells and "0.99995" in cells and "25641" in cells
    assert "> T" in text

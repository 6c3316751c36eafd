"""Cell parameters as plain NumPy arrays: shapes, initialisation, files, and inputs.

A parameter set (:data:`Params`) maps gateflow's own parameter names (``W_i``, ``U_f``,
``b_hn``, ...) to arrays: input matrices are (n, d), recurrent matrices (n, n), every other
parameter (biases, peepholes, IndRNN's ``u``) a vector (n,).

Files come in two vocabularies:

* gateflow names, for every cell;
* PyTorch names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``) for
  cells with a :class:`~gateflow._cell.TorchLayout`, optionally under one module prefix
  such as ``lstm.`` (the keys of a whole model's ``state_dict()``; other modules' keys are
  ignored). Gates are stacked in PyTorch's order; a bias named in both ``bias_ih`` and
  ``bias_hh`` is their sum, a bias named in one is that slice (GRU's ``b_in``, ``b_hn``).

Every failure a user can cause raises :class:`~gateflow._errors.GateflowError` with one
line saying what is wrong and how to fix it. Reading is defensive: only existing regular
files are opened (folders, FIFOs, devices and sockets are refused from ``os.stat``), the
real format is sniffed from the leading bytes and named when it is not the extension's,
and sizes (``.npy`` headers, zip members, the safetensors JSON header, the file size of a
``.pt``) are checked against :func:`~gateflow._memory.check_fits` before anything is
inflated or allocated. bfloat16 and float16 read alike in every format. ``.pt``/``.pth``
files are read with ``torch.load(..., weights_only=True)`` only: pickled code is never
executed, and the refused global is named.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import stat
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._cell import Cell
from ._errors import GateflowError
from ._io import write_files
from ._memory import check_fits

Params = dict[str, np.ndarray]

__all__ = [
    "Params",
    "from_torch_state_dict",
    "init_params",
    "load_inputs",
    "load_params",
    "make_inputs",
    "param_shapes",
    "save_params",
    "to_torch_state_dict",
    "validate_params",
]

_SCHEMES = ("pytorch", "gaussian", "orthogonal")
_DISTS = ("normal", "uniform", "zeros")
_PARAM_EXTS = (".safetensors", ".npz", ".pt", ".pth")
_SAVE_EXTS = (".safetensors", ".npz")
_TORCH_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
_TORCH_KEY = re.compile(
    r"^(?P<prefix>(?:.*\.)?)(?P<name>(?:weight|bias)_(?:ih|hh|hr)_l\d+(?:_reverse)?)$")
_MODULE_BY_GATES = {1: "RNN", 3: "GRU", 4: "LSTM"}


# -- helpers ------------------------------------------------------------------------------
def _cell(cell) -> Cell:
    from .cells import get_cell

    if isinstance(cell, Cell):
        return cell
    if isinstance(cell, str):
        return get_cell(cell)
    raise GateflowError(f"expected a gateflow Cell or a cell name, got {type(cell).__name__}; "
                        "pass e.g. gateflow.get_cell('lstm')")


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, marked with "…"."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, colours removed, clipped at a word boundary."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch colours its messages
    return _clip(" ".join(text.split()) or type(exc).__name__, limit)


def _names(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(_clip(repr(k), 60) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _positive_int(value, what: str, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GateflowError(f"{what} must be an integer >= 1, got {value!r}{fix}")
    if value < 1:
        raise GateflowError(f"{what} must be >= 1, got {int(value)}{fix}")
    return int(value)


def _float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise GateflowError(f"dtype {dtype!r} is not a NumPy dtype; "
                            "use np.float64 or np.float32") from None
    if dt.kind != "f":
        raise GateflowError(f"dtype must be a floating-point type, got {dt}; "
                            "use np.float64 or np.float32")
    return dt


def _finite_float(value, what: str, *, nonneg: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise GateflowError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (nonneg and v < 0):
        need = "a finite number >= 0" if nonneg else "a finite number"
        raise GateflowError(f"{what} must be {need}, got {value!r}")
    return v


def _ext(path: Path) -> str:
    return path.suffix.lower()


# -- shapes and initialisation ------------------------------------------------------------
def param_shapes(cell, n: int, d: int) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter of ``cell`` for hidden size ``n`` and input size ``d``,
    in the cell's declaration order."""
    cell = _cell(cell)
    n = _positive_int(n, "hidden size n")
    d = _positive_int(d, "input size d")
    mats = cell.matrices
    shapes: dict[str, tuple[int, ...]] = {}
    for p in cell.params:
        kind = mats.get(p)
        shapes[p] = (n, d) if kind == "input" else (n, n) if kind == "recurrent" else (n,)
    return shapes


def init_params(cell, n: int, d: int, *, scheme: str = "pytorch",
                sigma_w: float = 1.0, sigma_v: float = 1.0, sigma_b: float = 0.0,
                gate_bias: float | None = None, chrono: float | None = None,
                seed: int = 0, dtype=np.float64) -> Params:
    """Random parameters for ``cell``; the same arguments give bit-identical arrays.

    Schemes:

    * ``"pytorch"``: every parameter ~ U(−1/√n, 1/√n), PyTorch's default for RNN/LSTM/GRU
      (``sigma_*`` are ignored). PyTorch's summed LSTM biases are the sum of two such draws;
      here each gateflow bias is one draw.
    * ``"gaussian"``: recurrent matrices ~ N(0, σ_w²/n), input matrices ~ N(0, σ_v²/d),
      vectors ~ N(0, σ_b²) (the mean-field convention).
    * ``"orthogonal"``: recurrent matrices = σ_w·Q with Q Haar-random orthogonal (QR of a
      Gaussian matrix with the signs of diag(R) folded in), the rest as ``"gaussian"``.

    ``gate_bias`` sets the cell's memory bias (:attr:`Cell.memory_bias`, e.g. the LSTM's
    ``b_f``) to ``sign·gate_bias`` on every unit. ``chrono`` = T_max applies the chrono
    initialisation of Tallec & Ollivier (2018): memory bias = sign·log u, u ~ U[1, T_max−1]
    per unit, and the :attr:`Cell.chrono_partner` (the LSTM's ``b_i``) = −(that).
    """
    cell = _cell(cell)
    shapes = param_shapes(cell, n, d)
    if scheme not in _SCHEMES:
        raise GateflowError(f"unknown init scheme {scheme!r}; use one of {', '.join(_SCHEMES)}")
    sigma_w = _finite_float(sigma_w, "sigma_w", nonneg=True)
    sigma_v = _finite_float(sigma_v, "sigma_v", nonneg=True)
    sigma_b = _finite_float(sigma_b, "sigma_b", nonneg=True)
    dt = _float_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GateflowError(f"seed must be an integer >= 0, got {seed!r}")
    if gate_bias is not None and chrono is not None:
        raise GateflowError("gate_bias and chrono both set the memory bias; pass only one of them")
    if gate_bias is not None:
        gate_bias = _finite_float(gate_bias, "gate_bias")
    if (gate_bias is not None or chrono is not None) and cell.memory_bias is None:
        which = "gate_bias" if gate_bias is not None else "chrono"
        raise GateflowError(f"{which} does not apply to cell {cell.name!r}: it has no gate on its "
                            "memory path; drop the option or pick a gated cell (lstm, gru, ...)")
    if chrono is not None:
        chrono = _finite_float(chrono, "chrono (T_max)")
        if chrono < 2:
            raise GateflowError(f"chrono T_max must be >= 2 (timescales range over [2, T_max]), "
                                f"got {chrono:g}; use the longest dependency length you expect")

    sizes = [math.prod(s) for s in shapes.values()]
    # the float64 draws, their copies in dtype, and a QR's temporaries for the largest matrix
    need = sum(sizes) * (8 + (dt.itemsize if dt != np.float64 else 0)) + 4 * 8 * max(sizes)
    check_fits(need, f"init_params for cell {cell.name!r} with n={n}, d={d}",
               "use a smaller hidden size n or input size d")
    rng = np.random.default_rng(int(seed))
    mats = cell.matrices
    params: Params = {}
    for p, shape in shapes.items():
        kind = mats.get(p)
        if scheme == "pytorch":
            k = 1.0 / np.sqrt(n)
            a = rng.uniform(-k, k, size=shape)
        elif kind == "recurrent" and scheme == "orthogonal":
            q, r = np.linalg.qr(rng.standard_normal(shape))
            a = sigma_w * q * np.where(np.diag(r) < 0, -1.0, 1.0)
        elif kind == "recurrent":
            a = rng.normal(0.0, sigma_w / np.sqrt(n), size=shape)
        elif kind == "input":
            a = rng.normal(0.0, sigma_v / np.sqrt(d), size=shape)
        else:
            a = rng.normal(0.0, sigma_b, size=shape)
        params[p] = a
    if cell.memory_bias is not None:
        name, sign = cell.memory_bias
        if gate_bias is not None:
            params[name] = np.full(shapes[name], sign * gate_bias)
        elif chrono is not None:
            value = np.log(rng.uniform(1.0, chrono - 1.0, size=shapes[name]))
            params[name] = sign * value
            if cell.chrono_partner is not None:
                params[cell.chrono_partner] = -params[name]
    return {p: np.ascontiguousarray(a, dtype=dt) for p, a in params.items()}


# -- validation ---------------------------------------------------------------------------
def _torch_gate_check(cell: Cell, sd: dict[str, np.ndarray]) -> int | None:
    """Gate count G of a PyTorch-named dict; raise if it is not ``cell``'s, or if the dict is
    a projected LSTM's (``weight_hr_l0``: its ``weight_hh_l0`` has proj_size columns, not n,
    so the gate count would be wrong)."""
    hr = sd.get("weight_hr_l0")
    if hr is not None:
        shape = "x".join(map(str, np.shape(hr)))
        raise GateflowError(f"weights are from an nn.LSTM with proj_size > 0 (weight_hr_l0 is "
                            f"{shape}, proj_size x n); gateflow does not read projected LSTMs "
                            "yet; save an nn.LSTM built with proj_size=0")
    w = sd.get("weight_hh_l0")
    if w is None or np.ndim(w) != 2 or w.shape[1] == 0 or w.shape[0] % w.shape[1]:
        return None
    g = w.shape[0] // w.shape[1]
    want = len(cell.torch.hh) if cell.torch is not None else None
    if g != want:
        module = _MODULE_BY_GATES.get(g, "recurrent module")
        if cell.torch is None:
            from .cells import CELLS

            with_layout = ", ".join(c.name for c in CELLS.values() if c.torch is not None)
            expected = (f"cell {cell.name!r} has no PyTorch layout; use a cell that has one "
                        f"({with_layout}) or save the params under gateflow names")
        else:
            expected = (f"expected an nn.{cell.torch.module} with {want} gates for cell "
                        f"{cell.name!r}; pick the cell that matches the model")
        raise GateflowError(f"weights look like a {module} with {g} gates; {expected} "
                            f"(weight_hh_l0 is {w.shape[0]}x{w.shape[1]}, n={w.shape[1]})")
    return g


def _other_cell(cell: Cell, keys: set[str]) -> str | None:
    from .cells import CELLS

    if keys == set(cell.params):
        return None
    for other in CELLS.values():
        if set(other.params) == keys:
            return other.name
    return None


def validate_params(cell, params: Params) -> tuple[int, int]:
    """Check ``params`` against ``cell`` and return ``(n, d)``.

    Raises :class:`GateflowError` for missing or extra names, parameters of another cell,
    PyTorch names (convert them with :func:`from_torch_state_dict`), wrong shapes, non-real
    dtypes and non-finite values.
    """
    cell = _cell(cell)
    if not isinstance(params, dict):
        raise GateflowError(f"params must be a dict of arrays keyed by parameter name, "
                            f"got {type(params).__name__}")
    keys = set(params)
    torch_keys = {k for k in keys if isinstance(k, str) and _TORCH_KEY.match(k)}
    if torch_keys:
        arrays = {k: np.asarray(v) for k, v in params.items() if k in torch_keys}
        _torch_gate_check(cell, arrays)
        raise GateflowError(f"params use PyTorch names ({_names(torch_keys, 4)}); convert them "
                            "with gateflow._params.from_torch_state_dict(cell, sd) or load the "
                            "file with load_params")
    other = _other_cell(cell, keys)
    if other is not None:
        raise GateflowError(f"params look like cell {other!r} (keys {_names(keys, 6)}), "
                            f"not {cell.name!r}; pick cell {other!r} or pass {cell.name!r} params "
                            f"({', '.join(cell.params)})")
    missing = [p for p in cell.params if p not in keys]
    if missing:
        raise GateflowError(f"params for cell {cell.name!r} miss {_names(missing)}; "
                            f"it needs {', '.join(cell.params)}")
    extra = keys - set(cell.params)
    if extra:
        raise GateflowError(f"params for cell {cell.name!r} have unexpected keys "
                            f"{_names(map(str, extra))}; it takes only {', '.join(cell.params)}")

    arrays: dict[str, np.ndarray] = {}
    for p in cell.params:
        a = params[p]
        if not isinstance(a, np.ndarray):
            try:
                a = np.asarray(a)
            except Exception as exc:  # arbitrary objects
                raise GateflowError(f"param {p!r} is not array-like ({_one_line(exc)}); "
                                    "pass a NumPy array") from None
        if a.dtype.kind not in "fiu":
            raise GateflowError(f"param {p!r} has dtype {a.dtype}; parameters must be real numbers "
                                "(convert with .astype(np.float64))")
        arrays[p] = a

    mats = cell.matrices
    rows = Counter(a.shape[0] for a in arrays.values() if a.ndim >= 1)
    n = rows.most_common(1)[0][0] if rows else 0
    cols = Counter(arrays[p].shape[1] for p, k in mats.items()
                   if k == "input" and arrays[p].ndim == 2)
    d = cols.most_common(1)[0][0] if cols else 0
    if n < 1:
        raise GateflowError(f"params for cell {cell.name!r} have hidden size n = 0; "
                            "every parameter needs n >= 1 rows")
    if cols and d < 1:
        raise GateflowError(f"params for cell {cell.name!r} have input size d = 0; "
                            "input matrices need d >= 1 columns")
    expected = param_shapes(cell, n, max(d, 1))
    for p in cell.params:
        got = arrays[p].shape
        if got != expected[p]:
            kind = mats.get(p, "vector")
            raise GateflowError(f"param {p!r} ({kind}) has shape {got}; expected {expected[p]} "
                                f"for n={n}, d={d} (inferred from the other params)")
    for p in cell.params:
        a = arrays[p]
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise GateflowError(f"param {p!r} has {bad} non-finite value(s) (NaN or inf); "
                                "fix or re-export the weights")
    return n, d


# -- PyTorch mapping ----------------------------------------------------------------------
def _need_torch_layout(cell: Cell):
    if cell.torch is None:
        raise GateflowError(f"cell {cell.name!r} has no PyTorch layout; use gateflow parameter "
                            f"names ({', '.join(cell.params)}) instead of weight_ih_l0 etc.")
    return cell.torch


def to_torch_state_dict(cell, params: Params) -> dict[str, np.ndarray]:
    """``params`` in PyTorch's single-layer names, the inverse of :func:`from_torch_state_dict`.

    A bias PyTorch splits over ``bias_ih`` and ``bias_hh`` is written whole into
    ``bias_ih_l0`` with zeros in ``bias_hh_l0`` (the sum is what the model computes).
    """
    cell = _cell(cell)
    layout = _need_torch_layout(cell)
    validate_params(cell, params)
    p = {k: np.asarray(v) for k, v in params.items()}
    dt = np.result_type(*p.values())
    in_ih = set(layout.bias_ih)
    return {
        "weight_ih_l0": np.concatenate([p[k] for k in layout.ih], axis=0).astype(dt),
        "weight_hh_l0": np.concatenate([p[k] for k in layout.hh], axis=0).astype(dt),
        "bias_ih_l0": np.concatenate([p[k] for k in layout.bias_ih]).astype(dt),
        "bias_hh_l0": np.concatenate(
            [np.zeros_like(p[k]) if k in in_ih else p[k] for k in layout.bias_hh]).astype(dt),
    }


def from_torch_state_dict(cell, sd: dict[str, np.ndarray], *, dtype=np.float64) -> Params:
    """gateflow params from a single-layer PyTorch state_dict given as NumPy arrays.

    Keys are ``weight_ih_l0``, ``weight_hh_l0`` and, unless the module was built with
    ``bias=False`` (then both are absent and the biases are zero), ``bias_ih_l0`` and
    ``bias_hh_l0``. The result is checked by :func:`validate_params`.
    """
    cell = _cell(cell)
    dt = _float_dtype(dtype)
    sd = {k: np.asarray(v) for k, v in sd.items()}
    _torch_gate_check(cell, sd)
    layout = _need_torch_layout(cell)
    names = set(sd)
    unsupported = sorted(k for k in names if k not in _TORCH_NAMES and _TORCH_KEY.match(k))
    if unsupported:
        why = "bidirectional" if any(k.endswith("_reverse") for k in unsupported) else "multi-layer"
        raise GateflowError(f"the state_dict is from a {why} module ({_names(unsupported, 4)}); "
                            "gateflow analyses one layer in one direction: save a single-layer, "
                            "unidirectional module or keep only the *_l0 keys")
    extra = names - set(_TORCH_NAMES)
    if extra:
        raise GateflowError(f"unexpected keys {_names(extra)} next to the PyTorch RNN weights; "
                            f"keep only {', '.join(_TORCH_NAMES)}")
    missing = [k for k in _TORCH_NAMES[:2] if k not in names]
    has_b = [k in names for k in _TORCH_NAMES[2:]]
    if any(has_b) and not all(has_b):
        missing += [k for k, h in zip(_TORCH_NAMES[2:], has_b) if not h]
    if missing:
        raise GateflowError(f"PyTorch state_dict misses {_names(missing)}; save the whole "
                            f"state_dict() of a single-layer nn.{layout.module}")
    g = len(layout.hh)
    for k, a in sd.items():
        if a.dtype.kind not in "fiu":
            raise GateflowError(f"{k!r} has dtype {a.dtype}; PyTorch weights must be real numbers")
        want_nd = 2 if k.startswith("weight") else 1
        if a.ndim != want_nd or a.shape[0] == 0 or a.shape[0] % g:
            raise GateflowError(f"{k!r} has shape {a.shape}; expected a {want_nd}-D array with "
                                f"{g}*n rows for an nn.{layout.module}")
    w_hh = sd["weight_hh_l0"]
    n = w_hh.shape[1]
    d = sd["weight_ih_l0"].shape[1]
    want = {"weight_ih_l0": (g * n, d), "weight_hh_l0": (g * n, n),
            "bias_ih_l0": (g * n,), "bias_hh_l0": (g * n,)}
    for k, a in sd.items():
        if a.shape != want[k]:
            raise GateflowError(f"{k!r} has shape {a.shape}; expected {want[k]} for an "
                                f"nn.{layout.module} with n={n}, d={d}")

    def block(a, j):
        return a[j * n:(j + 1) * n].astype(dt)

    out: Params = {}
    for j, name in enumerate(layout.ih):
        out[name] = block(sd["weight_ih_l0"], j)
    for j, name in enumerate(layout.hh):
        out[name] = block(sd["weight_hh_l0"], j)
    for key, slots in (("bias_ih_l0", layout.bias_ih), ("bias_hh_l0", layout.bias_hh)):
        for j, name in enumerate(slots):
            part = block(sd[key], j) if key in sd else np.zeros(n, dtype=dt)
            out[name] = out[name] + part if name in out else part
    out = {p: np.ascontiguousarray(out[p]) for p in cell.params if p in out}
    validate_params(cell, out)
    return out


def _split_torch_keys(cell: Cell, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The single-layer PyTorch part of ``raw`` (prefix stripped), or None for gateflow names."""
    prefixes: dict[str, list[str]] = {}
    for k in raw:
        m = _TORCH_KEY.match(k)
        if m:
            prefixes.setdefault(m["prefix"], []).append(k)
    if not prefixes:
        return None
    if len(prefixes) > 1:
        shown = ", ".join(repr(p) if p else "'' (no prefix)" for p in sorted(prefixes))
        raise GateflowError(f"found PyTorch RNN weights under {len(prefixes)} module prefixes "
                            f"({shown}); save the state_dict of one recurrent module only")
    (prefix,) = prefixes
    return {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}


# -- opening files safely -----------------------------------------------------------------
_OS_REASONS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.ENAMETOOLONG: "file name too long",
               errno.ENOTDIR: "a part of the path is not a folder",
               errno.ELOOP: "too many levels of symbolic links", errno.EISDIR: "it is a folder"}
_NODE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _show(path) -> str:
    """A path quoted for a one-line message (newlines and control characters escaped)."""
    return repr(str(path))


def _label(path: Path) -> str:
    """A file's name as a message prefix: bare when printable, else quoted."""
    return path.name if path.name.isprintable() else repr(path.name)


def _as_path(path, what: str) -> Path:
    """``path`` as a :class:`Path`, or a GateflowError for None, empty or non-path values."""
    if not isinstance(path, (str, os.PathLike)):
        raise GateflowError(f"the {what} path must be a str or os.PathLike, got "
                            f"{type(path).__name__}")
    if not os.fspath(path):
        raise GateflowError(f"the {what} path is empty; give a file name")
    try:
        return Path(path)
    except TypeError:  # a PathLike that returns bytes
        raise GateflowError(f"the {what} path must be text, not bytes; decode it first") from None


def _os_reason(exc: OSError) -> str:
    return _OS_REASONS.get(exc.errno) or _clip(" ".join(str(exc.strerror or exc).split()), 80)


@contextmanager
def _open_regular(path: Path, what: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open an existing regular file for reading; yield ``(file, size)``.

    Checked with ``os.stat`` first, so a folder, FIFO, device or socket is refused without
    being opened (opening a FIFO would block, opening some devices has side effects). The
    open itself is non-blocking and re-checked with ``fstat`` in case the path changed.
    """
    def cannot(reason: str) -> GateflowError:
        return GateflowError(f"cannot read {what} file {_show(path)} ({reason})")

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GateflowError(f"{what} file {_show(path)} not found; check the path") from None
    except OSError as exc:
        raise cannot(_os_reason(exc)) from None
    except ValueError:  # an embedded NUL byte
        raise cannot("the path contains a NUL byte") from None
    kind = next((name for test, name in _NODE_KINDS if test(st.st_mode)), None)
    if kind is not None or not stat.S_ISREG(st.st_mode):
        raise cannot(f"it is {kind or 'not a regular file'}; give a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise cannot(_os_reason(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise cannot("it changed while being opened; try again")
        yield fh, now.st_size


# -- recognising formats ------------------------------------------------------------------
_MAGIC = (  # leading bytes -> format; safetensors, text and empty files are told apart below
    (b"\x93NUMPY", "npy"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip archive (np.savez with no arrays)
    (b"\x80", "pickle"),  # pickle protocol >= 2 (legacy torch.save)
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_FORMATS = {  # format -> (what it is, the extension gateflow reads it under)
    "safetensors": ("a safetensors file", ".safetensors"),
    "npz": ("an .npz archive", ".npz"),
    "torch": ("a torch.save file", ".pt"),
    "pickle": ("a pickle (as legacy torch.save writes)", ".pt"),
    "npy": ("a .npy array", ".npy"),
    "zip": ("a zip archive whose members are not .npy arrays", None),
    "badzip": ("a damaged zip archive (its directory is unreadable)", None),
    "hdf5": ("an HDF5 file (h5py, Keras)", None),
    "gzip": ("gzip-compressed", None),
    "bzip2": ("bzip2-compressed", None),
    "xz": ("xz-compressed", None),
    "empty": ("empty", None),
    "text": ("a text file", None),
    "unknown": ("in a format gateflow does not recognise", None),
}
_ST_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit
_EXPECTED = {".safetensors": ("safetensors",), ".npz": ("npz",), ".pt": ("torch", "pickle"),
             ".pth": ("torch", "pickle"), ".npy": ("npy",)}


def _sniff(fh: BinaryIO, size: int) -> str:
    """The real format of an open file (a key of :data:`_FORMATS`), from its leading bytes.

    A zip archive is an ``npz`` when every member is a ``.npy`` array and a ``torch`` file
    when it holds a ``data.pkl``; safetensors starts with an 8-byte little-endian header
    length followed by ``{``.
    """
    head = fh.read(512)
    fh.seek(0)
    if not head:
        return "empty"
    fmt = next((f for magic, f in _MAGIC if head.startswith(magic)), None)
    if fmt == "zip":
        try:
            with zipfile.ZipFile(fh) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return "badzip"
        finally:
            fh.seek(0)
        if all(n.endswith(".npy") for n in names):
            return "npz"
        return "torch" if any(n.endswith("data.pkl") for n in names) else "zip"
    if fmt is not None:
        return fmt
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _ST_MAX_HEADER:
        return "safetensors"
    text = head.decode("utf-8", "replace")
    if text.count("\ufffd") <= 1 and all(c.isprintable() or c.isspace() or c == "\ufffd"
                                         for c in text):
        return "text"
    return "unknown"


def _check_format(path: Path, fmt: str, readable: tuple[str, ...], fix: str) -> None:
    """Refuse a file whose real format ``fmt`` is not what its extension promises; say to
    rename it when gateflow reads that format under another extension in ``readable``."""
    wanted = _EXPECTED[_ext(path)]
    if fmt in wanted:
        return
    what, ext = _FORMATS[fmt]
    want = _FORMATS[wanted[0]][0]
    if ext in readable:
        raise GateflowError(f"{_show(path)} is {what}, not {want}; rename it to "
                            f"{path.stem}{ext}")
    raise GateflowError(f"cannot read {_show(path)}: expected {want}, but the file is {what}; "
                        f"{fix}")


@contextmanager
def _parsing(path: Path, ext: str, fix: str) -> Iterator[None]:
    """Turn a parser's own exceptions (BadZipFile, zlib.error, EOFError, ValueError, OSError,
    ...) into one GateflowError line; gateflow's own errors pass through."""
    try:
        yield
    except GateflowError:
        raise
    except Exception as exc:
        raise GateflowError(f"cannot read {_show(path)} as {ext}: {_one_line(exc, 160)}; "
                            f"{fix}") from None


def _fits(path: Path, nbytes: int, count: int, per_element: int = 16) -> None:
    """Refuse reading arrays of ``nbytes`` raw bytes and ``count`` elements (plus
    ``per_element`` bytes each for the converted copies) that would not fit in memory."""
    check_fits(nbytes + per_element * count, f"reading {_show(path)}",
               "free some memory or use a smaller file")


# -- .npy headers, .npz and .safetensors --------------------------------------------------
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _npy_header(fh: BinaryIO, size: int, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of a .npy stream of ``size`` bytes, without reading
    the data; refuses pickled objects, records and a header that promises more bytes of data
    than the stream holds (``what`` names the stream in messages)."""
    version = np.lib.format.read_magic(fh)
    if version not in _NPY_HEADERS:
        raise GateflowError(f"cannot read {what}: .npy version {version[0]}.{version[1]} is not "
                            "read by gateflow; save a float array with np.save")
    shape, _, dtype = _NPY_HEADERS[version](fh)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        holds = ("Python objects, which gateflow never unpickles" if dtype.hasobject
                 else "records or subarrays, not plain numbers")
        raise GateflowError(f"cannot read {what}: it holds {holds} (dtype "
                            f"{_clip(str(dtype), 40)}); save a float array")
    if any(s < 0 for s in shape):
        raise GateflowError(f"cannot read {what}: its header has a negative shape {shape}")
    promised, left = math.prod(shape) * dtype.itemsize, size - fh.tell()
    if promised > left:
        raise GateflowError(f"cannot read {what}: it is truncated (its header promises "
                            f"{promised} bytes of data for shape {shape}, but only {left} "
                            "follow); re-save it")
    return shape, dtype


def _read_npz(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, sized from the .npy headers (each checked against its zip
    member's size) before any member is inflated: a zip bomb is refused, not expanded."""
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        nbytes = count = 0
        for info in infos:
            with zf.open(info) as member:
                shape, dtype = _npy_header(member, info.file_size, f"{_show(path)} member "
                                           f"{_clip(repr(info.filename), 60)}")
            count += math.prod(shape)
            nbytes += math.prod(shape) * dtype.itemsize
        _fits(path, nbytes, count)
        out = {}
        for info in infos:
            with zf.open(info) as member:
                out[info.filename[:-len(".npy")]] = np.lib.format.read_array(member)
        return out


_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
              "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
              "U8": "u1", "BOOL": "?"}


def _bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values, given as their uint16 bit patterns, as float32: exact, since a
    bfloat16 is the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _counts(values) -> bool:
    """Whether ``values`` is a JSON list of integers >= 0."""
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def _safetensors_entries(header, size: int, what: str) -> list[tuple]:
    """``(key, dtype name, shape, begin, end)`` of every tensor of a parsed safetensors
    header, checked: known dtype, sizes that match, ranges inside the data and disjoint."""
    def bad(why: str) -> GateflowError:
        return GateflowError(f"cannot read {what}: {why}; re-export the file")

    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    entries = []
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        name = _clip(repr(key), 60)
        if not isinstance(spec, dict):
            raise bad(f"the header entry of {name} is not an object")
        dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if dtype not in _ST_DTYPES:
            raise bad(f"tensor {name} has dtype {_clip(repr(dtype), 30)}, which gateflow does "
                      "not read (use F64, F32, F16 or BF16)")
        if not (_counts(shape) and _counts(offsets) and len(offsets) == 2
                and offsets[0] <= offsets[1]):
            raise bad(f"tensor {name} has a malformed shape or data_offsets")
        begin, end = offsets
        if end - begin != math.prod(shape) * np.dtype(_ST_DTYPES[dtype]).itemsize:
            raise bad(f"tensor {name} of shape {tuple(shape)} and dtype {dtype} does not match "
                      f"its {end - begin} bytes of data")
        entries.append((key, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: e[3])
    for before, after in zip(entries, entries[1:]):
        if after[3] < before[4]:
            raise bad(f"tensors {_clip(repr(before[0]), 40)} and {_clip(repr(after[0]), 40)} "
                      "overlap")
    if entries and entries[-1][4] > size:
        raise bad(f"it is truncated: the header promises {entries[-1][4]} bytes of data, but "
                  f"only {size} follow")
    return entries


def _read_safetensors(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file, read straight from the byte ranges its JSON header
    gives (sizes checked first); BF16 becomes float32 exactly, like torch's own conversion."""
    n = int.from_bytes(fh.read(8), "little")
    if n > min(_ST_MAX_HEADER, size - 8):
        raise GateflowError(f"cannot read {_show(path)}: it is truncated (its header length is "
                            f"{n} bytes, but only {size - 8} follow); re-export the file")
    try:
        header = json.loads(fh.read(n))
    except (ValueError, RecursionError):  # also UnicodeDecodeError
        raise GateflowError(f"cannot read {_show(path)}: its header is not valid JSON; "
                            "re-export the file") from None
    base = 8 + n
    entries = _safetensors_entries(header, size - base, _show(path))
    _fits(path, sum(e[4] - e[3] for e in entries), sum(math.prod(e[2]) for e in entries))
    out = {}
    for key, dtype, shape, begin, end in entries:
        fh.seek(base + begin)
        buf = bytearray(end - begin)
        if fh.readinto(buf) != len(buf):
            raise GateflowError(f"cannot read {_show(path)}: it changed while being read")
        a = np.frombuffer(buf, dtype=_ST_DTYPES[dtype]).reshape(shape)
        out[key] = _bf16_to_float32(a) if dtype == "BF16" else a
    return out


# -- .pt / .pth ---------------------------------------------------------------------------
def _torch_refusal(path: Path, exc: BaseException) -> str:
    """One line for an exception of ``torch.load(weights_only=True)``: the global it refused
    to load when it was one (torch prints builtins without their module), else the reason."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
    if found:
        name = found[1] if "." in found[1] else f"builtins.{found[1]}"
        return (f"{_show(path)} pickles {_clip(name, 80)}, which gateflow refuses to load "
                "(unpickling it could run code); save model.state_dict() (a dict of tensors) "
                "with torch.save")
    detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    detail = detail[1] if detail else re.sub(r"^Weights only load failed\..*?trusted source\. ",
                                             "", text)
    return (f"cannot read {_show(path)}: corrupt or not a torch.save file "
            f"({_clip(detail or type(exc).__name__, 120)}); re-save it with "
            "torch.save(model.state_dict(), path)")


def _read_torch(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """A state_dict from ``torch.load(weights_only=True)``: pickled code is never run. The
    file size bounds the tensors (torch.save stores zip members, never compresses them, so a
    compressed member is refused: torch would inflate it); torch's warnings are silenced."""
    if zipfile.is_zipfile(fh):
        with zipfile.ZipFile(fh) as zf:
            packed = [i.filename for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise GateflowError(f"cannot read {_show(path)}: member {_clip(repr(packed[0]), 60)} "
                                "is compressed, which torch.save never writes; re-save it with "
                                "torch.save(model.state_dict(), path)")
    fh.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torch
        except ImportError:
            raise GateflowError(f"reading {_show(path)} needs PyTorch; install it with "
                                "pip install 'gateflow[torch]' or re-save the weights as "
                                ".safetensors") from None
        _fits(path, size, size // 2)
        try:
            obj = torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for code, RuntimeError for corrupt files
            raise GateflowError(_torch_refusal(path, exc)) from None
        if not isinstance(obj, dict):
            raise GateflowError(f"{_show(path)} holds a {type(obj).__name__}, not a state_dict; "
                                "save model.state_dict() (a dict of tensors) with torch.save")
        out: dict[str, np.ndarray] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise GateflowError(f"{_show(path)} is a dict but its key {_clip(repr(k), 60)} is "
                                    f"a {type(k).__name__}, not a parameter name; save "
                                    "model.state_dict() (string keys)")
            if not isinstance(v, torch.Tensor):
                raise GateflowError(f"{_show(path)} is a dict but entry {_clip(repr(k), 60)} is "
                                    f"a {type(v).__name__}, not a tensor; save model.state_dict() "
                                    "alone, not a checkpoint with extras")
            t = v.detach().cpu()
            if t.is_complex() or (t.is_floating_point() and t.element_size() < 2):
                raise GateflowError(f"{_show(path)}: tensor {_clip(repr(k), 60)} has dtype "
                                    f"{t.dtype}; weights must be float64/32/16 or bfloat16")
            out[k] = (t.to(torch.float64) if t.is_floating_point() else t).numpy()
        return out


_READERS = {".safetensors": _read_safetensors, ".npz": _read_npz, ".pt": _read_torch,
            ".pth": _read_torch}


def _read_file(path: Path) -> dict[str, np.ndarray]:
    """The raw arrays of a weights file: extension, file type and real format checked
    before anything is parsed, sizes checked before anything is allocated."""
    ext = _ext(path)
    if ext not in _PARAM_EXTS and os.path.isdir(path):
        raise GateflowError(f"cannot read params from {_clip(repr(str(path)), 80)}: it is a "
                            "folder; give the weights file")
    if ext not in _PARAM_EXTS:
        raise GateflowError(f"cannot read params from {_clip(repr(str(path)), 80)}: unknown "
                            f"extension {_clip(repr(ext or '(none)'), 40)}; use one of "
                            f"{', '.join(_PARAM_EXTS)}")
    with _open_regular(path, "params") as (fh, size), _parsing(path, ext, "re-export the file"):
        _check_format(path, _sniff(fh, size), _PARAM_EXTS,
                      "save the weights with safetensors, np.savez or torch.save")
        return _READERS[ext](fh, size, path)


def load_params(path, cell, *, dtype=np.float64) -> Params:
    """Read a parameter file (``.safetensors``, ``.npz``, ``.pt``/``.pth``) for ``cell``.

    Keys are PyTorch names (optionally under one module prefix like ``lstm.``), mapped
    through ``cell.torch``, or gateflow names. Arrays are converted to ``dtype`` and checked
    by :func:`validate_params`.
    """
    cell = _cell(cell)
    dt = _float_dtype(dtype)
    path = _as_path(path, "params")
    raw = _read_file(path)
    if not raw:
        raise GateflowError(f"{_show(path)} holds no arrays; save the model's parameters into it")
    bad = [k for k, v in raw.items() if np.asarray(v).dtype.kind not in "fiu"]
    if bad:
        raise GateflowError(f"{_show(path)}: arrays {_names(bad)} are not real numbers; "
                            "save float weights")
    torch_sd = _split_torch_keys(cell, raw)
    try:
        if torch_sd is not None:
            return from_torch_state_dict(cell, torch_sd, dtype=dt)
        params = {k: np.ascontiguousarray(v, dtype=dt) for k, v in raw.items()}
        validate_params(cell, params)
        return params
    except GateflowError as exc:
        raise GateflowError(f"{_label(path)}: {exc}") from None


def save_params(path, cell, params: Params, *, overwrite: bool = False) -> None:
    """Write ``params`` to ``.safetensors`` or ``.npz``, atomically; an existing file is
    replaced only with ``overwrite``.

    Cells with a PyTorch layout are written in PyTorch names (see
    :func:`to_torch_state_dict`), so ``torch.nn.LSTM().load_state_dict`` accepts the file
    after ``safetensors.torch.load_file``; other cells in gateflow names.
    """
    cell = _cell(cell)
    path = _as_path(path, "params")
    ext = _ext(path)
    if ext not in _SAVE_EXTS:
        raise GateflowError(f"cannot save params to {path.name!r}: unknown extension "
                            f"{ext or '(none)'!r}; use .safetensors or .npz")
    validate_params(cell, params)
    arrays = (to_torch_state_dict(cell, params) if cell.torch is not None
              else {p: np.asarray(params[p]) for p in cell.params})
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GateflowError(f"cannot save params to {str(path)!r}: folder {str(folder)!r} does not "
                            "exist; create it first")
    if ext == ".safetensors":
        from safetensors.numpy import save

        data = save(arrays, metadata={"gateflow_cell": cell.name})
    else:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
    write_files({path: data}, overwrite=overwrite)


# -- inputs -------------------------------------------------------------------------------
def make_inputs(T: int, B: int, d: int, *, dist: str = "normal", scale: float = 1.0,
                seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Inputs x of shape (T, B, d), time-major like PyTorch: ``scale``·N(0, 1),
    U(−scale, scale), or zeros. Same arguments, bit-identical arrays."""
    T = _positive_int(T, "sequence length T", "; inputs need at least one time step")
    B = _positive_int(B, "batch size B", "; inputs need at least one sequence")
    d = _positive_int(d, "input size d", "; inputs need at least one feature")
    if dist not in _DISTS:
        raise GateflowError(f"unknown input distribution {dist!r}; use one of {', '.join(_DISTS)}")
    scale = _finite_float(scale, "scale")
    dt = _float_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GateflowError(f"seed must be an integer >= 0, got {seed!r}")
    count = T * B * d  # float64 draws and a scaled copy, then the result in dtype
    check_fits(count * (16 + (dt.itemsize if dt != np.float64 else 0)),
               f"make_inputs of shape ({T}, {B}, {d})", "use fewer steps T, a smaller batch B or a "
               "smaller input size d")
    rng = np.random.default_rng(int(seed))
    try:
        with np.errstate(over="raise", invalid="raise"):
            if dist == "normal":
                x = scale * rng.standard_normal((T, B, d))
            elif dist == "uniform":
                x = rng.uniform(-scale, scale, size=(T, B, d)) if scale else np.zeros((T, B, d))
            else:
                x = np.zeros((T, B, d))
    except (FloatingPointError, OverflowError):
        x = None
    if x is None or float(np.max(np.abs(x))) > float(np.finfo(dt).max):
        raise GateflowError(f"input scale {scale:g} is too large: the generated inputs overflow "
                            f"{dt}; use a smaller --input-scale")
    return np.ascontiguousarray(x, dtype=dt)


def _check_input_header(path: Path, shape: tuple[int, ...], dtype: np.dtype,
                        d: int | None) -> None:
    """Refuse inputs whose header says they are not a float (T, B, d) array with d columns."""
    name = _label(path)
    if len(shape) != 3:
        raise GateflowError(f"inputs in {name} have shape {shape} ({len(shape)}-D); expected "
                            "3-D (T, B, d), time-major; add axes with x[:, None, :] for one "
                            "sequence")
    if dtype.kind != "f":
        raise GateflowError(f"inputs in {name} have dtype {dtype}; expected floats "
                            "(convert with x.astype(np.float32))")
    for size, what in zip(shape, ("T (time steps)", "B (batch)", "d (features)")):
        if size < 1:
            raise GateflowError(f"inputs in {name} have shape {shape}: {what} is 0; "
                                "need at least 1")
    if d is not None and shape[2] != d:
        raise GateflowError(f"inputs in {name} have d={shape[2]} features (shape {shape}); the "
                            f"params expect d={d}")


def load_inputs(path, d: int | None = None, *, dtype=np.float64) -> np.ndarray:
    """Read inputs (T, B, d) from a ``.npy`` file (no pickles); float, finite, T, B, d >= 1,
    and ``d`` columns when ``d`` is given. Returned as ``dtype``.

    The header is read first: shape, dtype and size are checked (and the memory they need)
    before the data is loaded."""
    dt = _float_dtype(dtype)
    path = _as_path(path, "inputs")
    if d is not None:
        d = _positive_int(d, "input size d")
    if _ext(path) != ".npy":
        raise GateflowError(f"cannot read inputs from {_clip(repr(path.name), 80)}: expected a "
                            ".npy file (save with np.save(path, x) where x has shape (T, B, d))")
    fix = "save one (T, B, d) float array with np.save"
    with _open_regular(path, "inputs") as (fh, size), _parsing(path, ".npy", fix):
        _check_format(path, _sniff(fh, size), (".npy",), fix)
        shape, xdtype = _npy_header(fh, size, _show(path))
        _check_input_header(path, shape, xdtype, d)
        count = math.prod(shape)
        _fits(path, count * xdtype.itemsize, count, per_element=dt.itemsize + 1)
        fh.seek(0)
        x = np.lib.format.read_array(fh)
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise GateflowError(f"inputs in {_label(path)} have {bad} non-finite value(s) (NaN or "
                            "inf); clean them before analysis")
    return np.ascontiguousarray(x, dtype=dt)

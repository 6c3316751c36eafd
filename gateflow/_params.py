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
line saying what is wrong and how to fix it. ``.pt``/``.pth`` files are read with
``torch.load(..., weights_only=True)`` only: pickled code is never executed.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ._cell import Cell
from ._errors import GateflowError
from ._io import write_files

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


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch colours its messages
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _names(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
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
    """Gate count G of a PyTorch-named dict; raise if it is not ``cell``'s."""
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
        why = ("bidirectional" if any(k.endswith("_reverse") for k in unsupported)
               else "projected (proj_size > 0)" if any("_hr_" in k for k in unsupported)
               else "multi-layer")
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


# -- files --------------------------------------------------------------------------------
def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise GateflowError(f"reading {path.name} needs PyTorch; install it with "
                            "pip install 'gateflow[torch]' or re-save the weights as "
                            ".safetensors") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for code, RuntimeError for corrupt files
        text = _one_line(exc, limit=100_000)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise GateflowError(f"{path} pickles a {found[1]} object, which weights_only=True "
                                "refuses to run; save model.state_dict() (a dict of tensors) "
                                "instead of the object") from None
        detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        detail = detail[1] if detail else text
        raise GateflowError(f"cannot read {path}: corrupt or not a torch.save file "
                            f"({detail[:100]}); re-save it with torch.save(model.state_dict(), "
                            "path)") from None
    if not isinstance(obj, dict):
        raise GateflowError(f"{path} holds a {type(obj).__name__}, not a state_dict; "
                            "save model.state_dict() (a dict of tensors) with torch.save")
    out: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise GateflowError(f"{path} is a dict but entry {k!r} is a {type(v).__name__}, "
                                "not a tensor; save model.state_dict() alone, not a checkpoint "
                                "with extras")
        t = v.detach().cpu()
        if t.is_complex():
            raise GateflowError(f"{path}: tensor {k!r} is complex; weights must be real")
        out[k] = (t.to(torch.float64) if t.is_floating_point() else t).numpy()
    return out


def _read_file(path: Path) -> dict[str, np.ndarray]:
    ext = _ext(path)
    if ext not in _PARAM_EXTS:
        raise GateflowError(f"cannot read params from {path.name!r}: unknown extension "
                            f"{ext or '(none)'!r}; use one of {', '.join(_PARAM_EXTS)}")
    if not path.is_file():
        raise GateflowError(f"params file {str(path)!r} not found; check the path")
    if ext in (".pt", ".pth"):
        return _read_torch(path)
    try:
        if ext == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except GateflowError:
        raise
    except Exception as exc:  # SafetensorError, BadZipFile, ValueError (pickled arrays), OSError
        raise GateflowError(f"cannot read {path} as {ext}: {_one_line(exc)[:160]}; "
                            "re-export the file") from None


def load_params(path, cell, *, dtype=np.float64) -> Params:
    """Read a parameter file (``.safetensors``, ``.npz``, ``.pt``/``.pth``) for ``cell``.

    Keys are PyTorch names (optionally under one module prefix like ``lstm.``), mapped
    through ``cell.torch``, or gateflow names. Arrays are converted to ``dtype`` and checked
    by :func:`validate_params`.
    """
    cell = _cell(cell)
    dt = _float_dtype(dtype)
    path = Path(path)
    raw = _read_file(path)
    if not raw:
        raise GateflowError(f"{path} holds no arrays; save the model's parameters into it")
    bad = [k for k, v in raw.items() if np.asarray(v).dtype.kind not in "fiu"]
    if bad:
        raise GateflowError(f"{path}: arrays {_names(bad)} are not real numbers; "
                            "save float weights")
    torch_sd = _split_torch_keys(cell, raw)
    try:
        if torch_sd is not None:
            return from_torch_state_dict(cell, torch_sd, dtype=dt)
        params = {k: np.ascontiguousarray(v, dtype=dt) for k, v in raw.items()}
        validate_params(cell, params)
        return params
    except GateflowError as exc:
        raise GateflowError(f"{path.name}: {exc}") from None


def save_params(path, cell, params: Params) -> None:
    """Write ``params`` to ``.safetensors`` or ``.npz``, atomically.

    Cells with a PyTorch layout are written in PyTorch names (see
    :func:`to_torch_state_dict`), so ``torch.nn.LSTM().load_state_dict`` accepts the file
    after ``safetensors.torch.load_file``; other cells in gateflow names.
    """
    cell = _cell(cell)
    path = Path(path)
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
    write_files({path: data})


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
    rng = np.random.default_rng(int(seed))
    if dist == "normal":
        x = scale * rng.standard_normal((T, B, d))
    elif dist == "uniform":
        x = rng.uniform(-scale, scale, size=(T, B, d)) if scale else np.zeros((T, B, d))
    else:
        x = np.zeros((T, B, d))
    return np.ascontiguousarray(x, dtype=dt)


def load_inputs(path, d: int | None = None, *, dtype=np.float64) -> np.ndarray:
    """Read inputs (T, B, d) from a ``.npy`` file (no pickles); float, finite, T, B, d >= 1,
    and ``d`` columns when ``d`` is given. Returned as ``dtype``."""
    path = Path(path)
    dt = _float_dtype(dtype)
    if _ext(path) != ".npy":
        raise GateflowError(f"cannot read inputs from {path.name!r}: expected a .npy file "
                            "(save with np.save(path, x) where x has shape (T, B, d))")
    if not path.is_file():
        raise GateflowError(f"inputs file {str(path)!r} not found; check the path")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError for pickles and bad headers, OSError, EOFError
        raise GateflowError(f"cannot read {path} as .npy: {_one_line(exc)[:160]}; "
                            "save a float array with np.save") from None
    if not isinstance(x, np.ndarray):
        raise GateflowError(f"{path} is not a single .npy array; "
                            "save one (T, B, d) array with np.save")
    if x.ndim != 3:
        raise GateflowError(f"inputs in {path.name} have shape {x.shape} ({x.ndim}-D); expected "
                            "3-D (T, B, d), time-major; add axes with x[:, None, :] for one "
                            "sequence")
    if x.dtype.kind != "f":
        raise GateflowError(f"inputs in {path.name} have dtype {x.dtype}; expected floats "
                            "(convert with x.astype(np.float32))")
    T, B, dd = x.shape
    for size, what in ((T, "T (time steps)"), (B, "B (batch)"), (dd, "d (features)")):
        if size < 1:
            raise GateflowError(f"inputs in {path.name} have shape {x.shape}: {what} is 0; "
                                "need at least 1")
    if d is not None and dd != d:
        raise GateflowError(f"inputs in {path.name} have d={dd} features (shape {x.shape}); the "
                            f"params expect d={d}")
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise GateflowError(f"inputs in {path.name} have {bad} non-finite value(s) (NaN or inf); "
                            "clean them before analysis")
    return np.ascontiguousarray(x, dtype=dt)

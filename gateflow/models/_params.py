"""Cell parameters as plain NumPy arrays: initialisation, validation and files.

A parameter set (:data:`Params`) maps gateflow's own parameter names (``W_i``, ``U_f``,
``b_hn``, ...) to arrays: input matrices are (n, d), recurrent matrices (n, n), every other
parameter (biases, peepholes, IndRNN's ``u``) a vector (n,).

Files are read by the readers of :mod:`gateflow.models.formats` (``.safetensors``, ``.npz``,
``.pt``/``.pth``) and hold gateflow names or a framework's (its vocabularies: PyTorch's
``weight_ih_l0``, ...); :func:`load_params` dispatches over both registries. Every failure
a user can cause raises :class:`~gateflow._errors.GateflowError` with one line saying what
is wrong and how to fix it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from gateflow._errors import GateflowError, arg
from gateflow._io import write_files
from gateflow._memory import check_fits
from gateflow.cells._params import check_params, param_shapes
from gateflow.models._checks import as_cell, check_seed, finite_float, float_dtype, names
from gateflow.models._checks import positive_int as _positive_int  # noqa: F401 - jobs import it
from gateflow.models._inputs import load_inputs, make_inputs
from gateflow.models.formats import VOCABULARIES, read_arrays
from gateflow.models.formats._files import as_path, label, show
from gateflow.models.formats._pytorch import (
    from_torch_state_dict,
    layout_for,
    to_torch_state_dict,
)

Params = dict[str, np.ndarray]

__all__ = [
    "Params", "SCHEMES", "init_params", "load_params", "save_params", "validate_params",
    # re-exported from their homes: jobs, tests and benchmarks import them from here
    "from_torch_state_dict", "load_inputs", "make_inputs", "param_shapes", "to_torch_state_dict",
]

#: Initialisation schemes (:func:`init_params`), the default first.
SCHEMES = ("pytorch", "gaussian", "orthogonal")
_SCHEMES = SCHEMES  # the name jobs._report imports
_SAVE_EXTS = (".safetensors", ".npz")


def init_params(cell, n: int, d: int, *, scheme: str = "pytorch",
                sigma_w: float = 1.0, sigma_v: float = 1.0, sigma_b: float = 0.0,
                gate_bias: float | None = None, chrono: float | None = None,
                seed: int = 0, dtype=np.float64, sizes=None) -> Params:
    """Random parameters for ``cell``; the same arguments give bit-identical arrays.

    Schemes:

    * ``"pytorch"``: every parameter ~ U(−1/√n, 1/√n), PyTorch's default for RNN/LSTM/GRU
      (``sigma_*`` are ignored). PyTorch's summed LSTM biases are the sum of two such draws;
      here each gateflow bias is one draw.
    * ``"gaussian"``: recurrent matrices ~ N(0, σ_w²/fan-in) (their columns: n for U_*,
      p for the projected LSTM's U_*),
      input matrices ~ N(0, σ_v²/d), vectors ~ N(0, σ_b²) (the mean-field convention).
    * ``"orthogonal"``: recurrent matrices = σ_w·Q with Q Haar-random orthogonal (QR of a
      Gaussian matrix with the signs of diag(R) folded in; a non-square one, like the
      projected LSTM's P, has orthonormal rows or columns), the rest as ``"gaussian"``.

    ``sizes`` gives a cell's other sizes by name, e.g. ``{"p": 16}`` for ``lstm-proj``
    (default n // 2).

    ``gate_bias`` sets the cell's memory bias (:attr:`Cell.memory_bias`, e.g. the LSTM's
    ``b_f``) to ``sign·gate_bias`` on every unit. ``chrono`` = T_max applies the chrono
    initialisation of Tallec & Ollivier (2018): memory bias = sign·log u, u ~ U[1, T_max−1]
    per unit, and the :attr:`Cell.chrono_partner` (the LSTM's ``b_i``) = −(that).
    """
    cell = as_cell(cell)
    shapes = param_shapes(cell, n, d, sizes)
    if scheme not in SCHEMES:
        raise GateflowError(f"unknown init scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    sigma_w = finite_float(sigma_w, "sigma_w", nonneg=True)
    sigma_v = finite_float(sigma_v, "sigma_v", nonneg=True)
    sigma_b = finite_float(sigma_b, "sigma_b", nonneg=True)
    dt = float_dtype(dtype)
    seed = check_seed(seed)
    if gate_bias is not None and chrono is not None:
        raise GateflowError(f"{arg('gate_bias')} and {arg('chrono')} both set the memory bias; "
                            "pass only one of them")
    if gate_bias is not None:
        gate_bias = finite_float(gate_bias, arg("gate_bias"))
    if (gate_bias is not None or chrono is not None) and cell.memory_bias is None:
        which = arg("gate_bias" if gate_bias is not None else "chrono")
        raise GateflowError(f"{which} does not apply to cell {cell.name!r}: it has no gate on its "
                            "memory path; drop the option or pick a gated cell (lstm, gru, ...)")
    if chrono is not None:
        chrono = finite_float(chrono, f"{arg('chrono')} (T_max)")
        if chrono < 2:
            raise GateflowError(f"{arg('chrono')} T_max must be >= 2 (timescales range over "
                                f"[2, T_max]), got {chrono:g}; use the longest dependency "
                                "length you expect")

    sizes = [math.prod(s) for s in shapes.values()]
    # the float64 draws, their copies in dtype, and a QR's temporaries for the largest matrix
    need = sum(sizes) * (8 + (dt.itemsize if dt != np.float64 else 0)) + 4 * 8 * max(sizes)
    check_fits(need, f"init_params for cell {cell.name!r} with n={n}, d={d}",
               "use a smaller hidden size n or input size d")
    rng = np.random.default_rng(seed)
    mats = cell.matrices
    params: Params = {}
    for p, shape in shapes.items():
        kind = mats.get(p)
        if scheme == "pytorch":
            k = 1.0 / np.sqrt(n)
            a = rng.uniform(-k, k, size=shape)
        elif kind == "recurrent" and scheme == "orthogonal":
            tall = shape[0] >= shape[1]
            q, r = np.linalg.qr(rng.standard_normal(shape if tall else shape[::-1]))
            q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
            a = sigma_w * (q if tall else q.T)
        elif kind == "recurrent":
            a = rng.normal(0.0, sigma_w / np.sqrt(shape[1]), size=shape)
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


def validate_params(cell, params: Params) -> tuple[int, int]:
    """Check ``params`` against ``cell`` and return ``(n, d)``: a framework's names are
    diagnosed by its vocabulary (PyTorch's: convert them with
    :func:`gateflow.from_torch_state_dict`), everything else by
    :func:`gateflow.cells.check_params` (names, shapes, dtypes, finite values)."""
    cell = as_cell(cell)
    if not isinstance(params, dict):
        raise GateflowError(f"params must be a dict of arrays keyed by parameter name, "
                            f"got {type(params).__name__}")
    for vocabulary in VOCABULARIES:
        vocabulary.diagnose(cell, params)
    return check_params(cell, params)


def load_params(path, cell, *, dtype=np.float64) -> Params:
    """Read a parameter file (``.safetensors``, ``.npz``, ``.pt``/``.pth``) for ``cell``.

    Keys are a framework's names (PyTorch's, optionally under one module prefix like
    ``lstm.``), mapped by its vocabulary, or gateflow names. Arrays are converted to
    ``dtype`` and checked like ``validate_params`` checks them.
    """
    cell = as_cell(cell)
    dt = float_dtype(dtype)
    path = as_path(path, "params")
    raw = read_arrays(path)
    if not raw:
        raise GateflowError(f"{show(path)} holds no arrays; save the model's parameters into it")
    bad = [k for k, v in raw.items() if np.asarray(v).dtype.kind not in "fiu"]
    if bad:
        raise GateflowError(f"{show(path)}: arrays {names(bad)} are not real numbers; "
                            "save float weights")
    found = next(((v, sd) for v in VOCABULARIES if (sd := v.select(raw)) is not None), None)
    try:
        if found is not None:
            vocabulary, sd = found
            return vocabulary.to_params(cell, sd, dtype=dt)
        params = {k: np.ascontiguousarray(v, dtype=dt) for k, v in raw.items()}
        validate_params(cell, params)
        return params
    except GateflowError as exc:
        raise GateflowError(f"{label(path)}: {exc.marked()}") from None


def save_params(path, cell, params: Params, *, overwrite: bool = False) -> None:
    """Write ``params`` to ``.safetensors`` or ``.npz``, atomically; an existing file is
    replaced only with ``overwrite``.

    Cells with a PyTorch layout are written in PyTorch names (see
    :func:`to_torch_state_dict`), so ``torch.nn.LSTM().load_state_dict`` accepts the file
    after ``safetensors.torch.load_file``; other cells in gateflow names.
    """
    cell = as_cell(cell)
    path = as_path(path, "params")
    ext = path.suffix.lower()
    if ext not in _SAVE_EXTS:
        raise GateflowError(f"cannot save params to {path.name!r}: unknown extension "
                            f"{ext or '(none)'!r}; use .safetensors or .npz")
    validate_params(cell, params)
    # sizes from shapes, before anything is copied (a broadcast view is a few bytes): the
    # arrays in the file's names, contiguous, and the file's bytes twice while written
    itemsize = max(np.asarray(a).dtype.itemsize for a in params.values())
    check_fits(4 * itemsize * sum(np.asarray(a).size for a in params.values()),
               f"saving params to {show(path)}", "save smaller weights")
    arrays = (to_torch_state_dict(cell, params) if layout_for(cell) is not None
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

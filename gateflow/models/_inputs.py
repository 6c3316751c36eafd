"""Inputs x of shape (T, B, d), time-major like PyTorch: drawn (:func:`make_inputs`) or read
from a ``.npy`` file (:func:`load_inputs`), whose header is checked (shape, dtype, size and
the memory they need) before the data is loaded. Pickles are never read."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gateflow._errors import GateflowError, arg
from gateflow._memory import check_fits
from gateflow.models._checks import check_seed, clip, finite_float, float_dtype, positive_int
from gateflow.models.formats import READERS
from gateflow.models.formats._files import (
    NPY,
    as_path,
    check_format,
    fits,
    label,
    open_regular,
    parsing,
    recognise,
    show,
)
from gateflow.models.formats._npz import npy_header

__all__ = ["load_state", "load_inputs", "make_inputs"]

DISTS = ("normal", "uniform", "zeros")


def make_inputs(T: int, B: int, d: int, *, dist: str = "normal", scale: float = 1.0,
                seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Inputs x of shape (T, B, d), time-major like PyTorch: ``scale``·N(0, 1),
    U(−scale, scale), or zeros. Same arguments, bit-identical arrays."""
    T = positive_int(T, "sequence length T", "; inputs need at least one time step")
    B = positive_int(B, "batch size B", "; inputs need at least one sequence")
    d = positive_int(d, "input size d", "; inputs need at least one feature")
    if dist not in DISTS:
        raise GateflowError(f"unknown input distribution {dist!r}; use one of {', '.join(DISTS)}")
    scale = finite_float(scale, "scale")
    dt = float_dtype(dtype)
    rng = np.random.default_rng(check_seed(seed))
    count = T * B * d  # float64 draws and a scaled copy, then the result in dtype
    check_fits(count * (16 + (dt.itemsize if dt != np.float64 else 0)),
               f"make_inputs of shape ({T}, {B}, {d})", "use fewer steps T, a smaller batch B or a "
               "smaller input size d")
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
                            f"{dt}; use a smaller {arg('scale')}")
    return np.ascontiguousarray(x, dtype=dt)


def _check_header(path: Path, shape: tuple[int, ...], dtype: np.dtype, d: int | None,
                  batch_first: bool = False) -> None:
    """Refuse inputs whose header says they are not a float (T, B, d) array with d columns
    ((B, T, d) when ``batch_first``)."""
    name = label(path)
    layout = "(B, T, d), batch-first" if batch_first else "(T, B, d), time-major"
    if len(shape) != 3:
        raise GateflowError(f"inputs in {name} have shape {shape} ({len(shape)}-D); expected "
                            f"3-D {layout}; add an axis for one sequence")
    if dtype.kind != "f":
        raise GateflowError(f"inputs in {name} have dtype {dtype}; expected floats "
                            "(convert with x.astype(np.float32))")
    axes = ("B (batch)", "T (time steps)") if batch_first else ("T (time steps)", "B (batch)")
    for size, what in zip(shape, (*axes, "d (features)")):
        if size < 1:
            raise GateflowError(f"inputs in {name} have shape {shape}: {what} is 0; "
                                "need at least 1")
    if d is not None and shape[2] != d:
        raise GateflowError(f"inputs in {name} have d={shape[2]} features (shape {shape}); the "
                            f"params expect d={d}")


def load_inputs(path, d: int | None = None, *, dtype=np.float64,
                batch_first: bool = False) -> np.ndarray:
    """Read inputs (T, B, d) from a ``.npy`` file (no pickles); float, finite, T, B, d >= 1,
    and ``d`` columns when ``d`` is given. Returned as ``dtype``, time-major; a file saved
    batch-first, (B, T, d) as ``batch_first=True`` modules take it, is read with
    ``batch_first=True`` (nothing in the file tells the two apart).

    The header is read first: shape, dtype and size are checked (and the memory they need)
    before the data is loaded."""
    if not isinstance(batch_first, (bool, np.bool_)):
        raise GateflowError(f"batch_first must be True or False, got {batch_first!r}")
    dt = float_dtype(dtype)
    path = as_path(path, "inputs")
    if d is not None:
        d = positive_int(d, "input size d")
    if path.suffix.lower() != ".npy":
        raise GateflowError(f"cannot read inputs from {clip(repr(path.name), 80)}: expected a "
                            ".npy file (save with np.save(path, x) where x has shape (T, B, d))")
    fix = "save one (T, B, d) float array with np.save"
    with open_regular(path, "inputs") as (fh, size), parsing(path, ".npy", fix):
        check_format(path, recognise(fh, READERS), NPY, (".npy",), fix)
        shape, xdtype = npy_header(fh, size, show(path))
        _check_header(path, shape, xdtype, d, batch_first)
        count = math.prod(shape)
        fits(path, count * xdtype.itemsize, count, per_element=dt.itemsize + 1)
        fh.seek(0)
        x = np.lib.format.read_array(fh)
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise GateflowError(f"inputs in {label(path)} have {bad} non-finite value(s) (NaN or "
                            "inf); clean them before analysis")
    return np.ascontiguousarray(np.swapaxes(x, 0, 1) if batch_first else x, dtype=dt)


def load_state(path, blocks: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Initial states by state block (``h``, ``c``; ``h_l0``, … for a stack) from a
    ``.npz`` or ``.safetensors`` file; each array is (n,) or (B, n) (checked against the
    run by :func:`gateflow.all_lags`). A block the file leaves out starts at zeros, as
    :func:`gateflow.all_lags` starts it; ``decay`` and ``lyapunov`` say so in a ``note:``
    line and record it (``input_data.s0``: ``"blocks"``, ``"zeros"``)."""
    from gateflow.models.formats import read_arrays

    path = as_path(path, "initial state")
    if path.suffix.lower() not in (".npz", ".safetensors"):
        raise GateflowError(f"cannot read the initial state from {clip(repr(path.name), 80)}: "
                            "expected .npz or .safetensors, one array per state block "
                            f"({', '.join(blocks)})")
    raw = read_arrays(path)
    unknown = [k for k in raw if k not in blocks]
    if unknown or not raw:
        raise GateflowError(f"{label(path)}: initial states are keyed by state block "
                            f"({', '.join(blocks)}); found {', '.join(map(repr, raw)) or 'none'}")
    out = {}
    for k, v in raw.items():
        if v.dtype.kind not in "fiu" or v.ndim not in (1, 2):
            raise GateflowError(f"{label(path)}: initial state {k!r} must be a real (n,) or "
                                f"(B, n) array, got {v.dtype} of shape {v.shape}")
        out[k] = np.asarray(v, dtype=np.float64)
    return out

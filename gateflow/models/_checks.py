"""Argument checks and message text shared by the models layer: a cell given by name or
record, a float dtype, finite floats, positive integers and seeds; a clipped one-line
message and a list of key names."""

from __future__ import annotations

import re

import numpy as np

from gateflow._errors import GateflowError
from gateflow._validate import shown
from gateflow.cells._library import get_cell
from gateflow.cells._record import Cell

__all__ = ["as_cell", "check_seed", "clip", "finite_float", "float_dtype", "names", "one_line",
           "positive_int"]


def as_cell(cell) -> Cell:
    """``cell`` itself, or the declared cell of that name."""
    if isinstance(cell, Cell):
        return cell
    if isinstance(cell, str):
        return get_cell(cell)
    raise GateflowError(f"expected a gateflow Cell or a cell name, got {type(cell).__name__}; "
                        "pass e.g. gateflow.get_cell('lstm')")


def positive_int(value, what: str, fix: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GateflowError(f"{what} must be an integer >= 1, got {value!r}{fix}")
    if value < 1:
        raise GateflowError(f"{what} must be >= 1, got {int(value)}{fix}")
    return int(value)


def check_seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise GateflowError(f"seed must be an integer >= 0, got {value!r}")
    return int(value)


def float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise GateflowError(f"dtype {dtype!r} is not a NumPy dtype; "
                            "use np.float64 or np.float32") from None
    if dt.kind != "f":
        raise GateflowError(f"dtype must be a floating-point type, got {dt}; "
                            "use np.float64 or np.float32")
    return dt


def finite_float(value, what: str, *, nonneg: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise GateflowError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (nonneg and v < 0):
        need = "a finite number >= 0" if nonneg else "a finite number"
        raise GateflowError(f"{what} must be {need}, got {value!r}")
    return v


# -- message text -------------------------------------------------------------------------
def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, marked with "…"."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"


def one_line(exc: BaseException, limit: int | None = 200) -> str:
    """An exception's message on one line, colours removed, clipped at a word boundary
    (``limit`` None: whole)."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())  # torch colours its text
    text = text or type(exc).__name__
    return text if limit is None else clip(text, limit)


def names(keys, limit: int = 12) -> str:
    """Sorted key names for a message, at most ``limit`` of them, each shortened."""
    keys = sorted(keys)
    listed = ", ".join(shown(k, 60) for k in keys[:limit])
    return listed + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")

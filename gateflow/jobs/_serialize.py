"""Finite-or-null: the one way every job writes numbers to JSON and CSV.

JSON (:func:`json_value`, :func:`json_text`): NumPy scalars and arrays become plain Python;
a non-finite float (−inf: an exactly zero Jacobian in log10; NaN or +inf, which the jobs
refuse before writing) becomes ``null``, so every file is strict JSON (``allow_nan=False``:
a NaN that slipped through is an error, never written).

CSV (:func:`csv_cell`, :func:`csv_text`): a number is its ``repr`` (or ``format(v, spec)``),
−inf is ``-inf`` (the decay contract's exact zero), ``None`` (not measured, never reached)
is empty; NaN is never written (empty). Rows end with ``\\n``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gateflow._errors import GateflowError

__all__ = ["csv_cell", "csv_text", "json_text", "json_value"]


def json_value(v: Any) -> Any:
    """``v`` with NumPy types made plain and every non-finite float made ``None``,
    recursively through dicts (keys made strings), lists, tuples and arrays."""
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "f":
            a = v.astype(np.float64, copy=False)
            finite = np.isfinite(a)
            if finite.all():
                return a.tolist()
            out = a.astype(object)
            out[~finite] = None
            return out.tolist()
        return json_value(v.tolist())
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def json_text(doc: Any, *, indent: int | None = None, plain: bool = False) -> str:
    """Strict JSON of :func:`json_value` (``doc``): compact without ``indent``
    (``plain``: ``doc`` is already made of plain, finite-or-None values)."""
    try:
        return json.dumps(doc if plain else json_value(doc), allow_nan=False, indent=indent,
                          separators=(",", ":") if indent is None else None)
    except ValueError as exc:  # never write an invalid file
        raise GateflowError(f"cannot write JSON: {exc}") from None


def csv_cell(v: Any, spec: str | None = None) -> str:
    """One CSV field: ``""`` for None or NaN, ``"-inf"``/``"inf"``, else the number
    (``repr``, or ``format(v, spec)``) or the value as text."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_, str)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if math.isnan(f):
        return ""
    if math.isinf(f):
        return "-inf" if f < 0 else "inf"
    return repr(f) if spec is None else format(f, spec)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV document: ``header``, then ``rows`` (fields already made text by
    :func:`csv_cell` or plain strings), ``\\n`` line ends."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()

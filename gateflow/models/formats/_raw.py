"""A file's raw arrays, and what its reader knew about them that the arrays no longer say.

Readers widen what they read (float16 and bfloat16 to float32 or float64, quantized
tensors to floats) and unwrap checkpoints (the state dict under ``model_state``); a
:class:`Raw` keeps both facts next to the arrays, so that the vocabularies that list the
modules can say them in :attr:`~gateflow.models.formats._recurrent.Recurrent.where` and
``assumed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["Raw", "precision", "where_of"]

#: What each narrow dtype keeps, for the one line that says it.
_BITS = {"float16": "float16 (11 significant bits)", "bfloat16": "bfloat16 (8 significant bits)"}


class Raw(dict):
    """A file's arrays keyed as in the file (a plain dict to every caller), with ``where``
    (key prefix → where in the file those arrays sat, ``"state dict under key
    'model_state'"``; the prefix ``""`` covers every key) and ``dtypes`` (key → the file's
    own dtype where the reader widened it: ``"float16"``, ``"bfloat16"``, ``"int8"``,
    ``"qint8 (dequantized)"``)."""

    def __init__(self, arrays: Mapping[str, np.ndarray] | Iterable = (), *,
                 where: Mapping[str, str] | None = None,
                 dtypes: Mapping[str, str] | None = None) -> None:
        super().__init__(arrays)
        self.where: dict[str, str] = dict(where or {})
        self.dtypes: dict[str, str] = dict(dtypes or {})


def where_of(raw: Mapping, key: str) -> str:
    """Where the array ``key`` of ``raw`` sat (the longest prefix of ``key`` that
    ``raw.where`` names), ``""`` when nothing is known."""
    where = getattr(raw, "where", None) or {}
    best = max((p for p in where if key.startswith(p)), key=len, default=None)
    return "" if best is None else where[best]


def precision(raw: Mapping, keys: Iterable[str], what: str) -> tuple[str, ...]:
    """One line saying the narrowest precision of ``keys`` in the file (``what`` names them:
    "module 'rnn'"), or nothing when every array was float32 or float64."""
    dtypes = getattr(raw, "dtypes", None) or {}
    seen = sorted({dtypes[k] for k in keys if k in dtypes})
    if not seen:
        for k in keys:  # a reader that keeps narrow arrays as they are (np.savez)
            a = raw.get(k)
            if isinstance(a, np.ndarray) and a.dtype.kind in "fiu" and (
                    a.dtype.kind != "f" or a.dtype.itemsize < 4):
                seen.append(str(a.dtype))
        seen = sorted(set(seen))
    if not seen:
        return ()
    quantized = [s for s in seen if "quantized" in s]
    if quantized:
        return (f"{what}: {', '.join(quantized)} weights dequantized ((q − zero_point)·scale): "
                "the analysis is of the dequantized float model",)
    said = ", ".join(_BITS.get(s, s) for s in seen)
    return (f"{what}: {said} weights in the file, analysed exactly as stored, in float64 "
            "arithmetic (the model itself computes in lower precision)",)

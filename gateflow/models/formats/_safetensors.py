"""The ``.safetensors`` reader: an 8-byte little-endian header length, a JSON header of
dtypes, shapes and byte ranges, then the raw data. Everything in the header is checked
before a byte of data is read; BF16 becomes float32 exactly."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._raw import Raw

__all__ = ["WHAT", "read", "sniff"]

WHAT = "a safetensors file"
_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
           "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
           "U8": "u1", "BOOL": "?"}
_Entry = tuple[str, str, tuple[int, ...], int, int]  # key, dtype name, shape, begin, end


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A plausible header length followed by ``{``."""
    if members is None and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _MAX_HEADER:
        return WHAT
    return None


def _bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values, given as their uint16 bit patterns, as float32: exact, since a
    bfloat16 is the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _counts(values) -> bool:
    """Whether ``values`` is a JSON list of integers >= 0."""
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def _entries(header, size: int, what: str) -> list[_Entry]:
    """``(key, dtype name, shape, begin, end)`` of every tensor of a parsed safetensors
    header, checked: known dtype, sizes that match, ranges inside the data and disjoint."""
    def bad(why: str) -> GateflowError:
        return GateflowError(f"cannot read {what}: {why}; re-export the file")

    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    entries: list[_Entry] = []
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        name = clip(repr(key), 60)
        if not isinstance(spec, dict):
            raise bad(f"the header entry of {name} is not an object")
        fields: list[Any] = [spec.get(f) for f in ("dtype", "shape", "data_offsets")]
        dtype, shape, offsets = fields
        if dtype not in _DTYPES:
            raise bad(f"tensor {name} has dtype {clip(repr(dtype), 30)}, which gateflow does "
                      "not read (use F64, F32, F16 or BF16)")
        if not (_counts(shape) and _counts(offsets) and len(offsets) == 2
                and offsets[0] <= offsets[1]):
            raise bad(f"tensor {name} has a malformed shape or data_offsets")
        begin, end = offsets
        if end - begin != math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize:
            raise bad(f"tensor {name} of shape {tuple(shape)} and dtype {dtype} does not match "
                      f"its {end - begin} bytes of data")
        entries.append((key, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: e[3])
    for before, after in zip(entries, entries[1:]):
        if after[3] < before[4]:
            raise bad(f"tensors {clip(repr(before[0]), 40)} and {clip(repr(after[0]), 40)} "
                      "overlap")
    if entries and entries[-1][4] > size:
        raise bad(f"it is truncated: the header promises {entries[-1][4]} bytes of data, but "
                  f"only {size} follow")
    return entries


def read(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file, read straight from the byte ranges its JSON header
    gives (sizes checked first); BF16 becomes float32 exactly, like torch's own conversion,
    and is said in the result's ``dtypes`` (:class:`._raw.Raw`)."""
    n = int.from_bytes(fh.read(8), "little")
    if n > min(_MAX_HEADER, size - 8):
        raise GateflowError(f"cannot read {show(path)}: it is truncated (its header length is "
                            f"{n} bytes, but only {size - 8} follow); re-export the file")
    try:
        header = json.loads(fh.read(n))
    except (ValueError, RecursionError):  # also UnicodeDecodeError
        raise GateflowError(f"cannot read {show(path)}: its header is not valid JSON; "
                            "re-export the file") from None
    base = 8 + n
    entries = _entries(header, size - base, show(path))
    fits(path, sum(e[4] - e[3] for e in entries), sum(math.prod(e[2]) for e in entries))
    out = Raw()
    for key, dtype, shape, begin, end in entries:
        fh.seek(base + begin)
        buf = bytearray(end - begin)
        if fh.readinto(buf) != len(buf):  # type: ignore[attr-defined]
            raise GateflowError(f"cannot read {show(path)}: it changed while being read")
        a = np.frombuffer(buf, dtype=_DTYPES[dtype]).reshape(shape)
        out[key] = _bf16_to_float32(a) if dtype == "BF16" else a
        if dtype == "BF16":
            out.dtypes[key] = "bfloat16"
    return out

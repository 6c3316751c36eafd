"""PyTorch's ``torch.save`` files (``.pt``/``.pth``/``.ckpt``), read without running them.

The reader runs ``torch.load(..., weights_only=True)`` only: pickled code is never
executed, and the refused global is named. A training checkpoint is searched (depth first,
bounded) for the dicts that hold recurrent weights, under any key (``model_state`` next to
``step`` and ``optimizer_state``, Lightning's ``state_dict``, ``['checkpoint']['model']``);
optimizer and scheduler states are never searched. Where the state dict was found is said
in each module's ``where``; when none is found the message lists the keys looked at.
Weights stored below float32 (float16, bfloat16, quantized) are said in ``assumed``. The
arrays it returns are read by the vocabularies (PyTorch's names: :mod:`._torch_modules`).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._pytorch import _KEY
from gateflow.models.formats._raw import Raw

__all__ = ["NESTED", "WHAT", "read", "sniff"]


# -- the .pt / .pth reader ----------------------------------------------------------------
WHAT = "a torch.save file"


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A zip archive with a ``data.pkl`` (torch.save), or a bare pickle (legacy torch.save)."""
    if members is not None:
        if any(m.endswith("constants.pkl") or "/code/" in m for m in members):
            return None  # a TorchScript archive (torch.jit.save): see _torchscript
        return WHAT if any(m.endswith("data.pkl") for m in members) else None
    return "a pickle (as legacy torch.save writes)" if head.startswith(b"\x80") else None


def _unsafe_globals(torch, fh: BinaryIO) -> list[str]:
    """The globals of a torch.save file that ``weights_only=True`` refuses, found by torch's
    own static scan of its pickle (``torch.serialization.get_unsafe_globals_in_checkpoint``,
    torch >= 2.5: the pickle's opcodes are read, nothing is unpickled), sorted. Empty where
    torch has no such scan (torch 2.1 to 2.4), for a legacy (non-zip) file, which it does
    not scan, and where the scan fails (an opcode it does not know, a damaged archive):
    :func:`_refusal` then reads torch's message."""
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:
        return []
    fh.seek(0)
    try:
        return sorted(str(g) for g in scan(fh))
    except Exception:  # not a file torch can scan: the message says what there is to say
        return []
    finally:
        fh.seek(0)


def _refusal(path: Path, exc: BaseException, unsafe: Sequence[str] = ()) -> str:
    """One line for an exception of ``torch.load(weights_only=True)``: the globals it
    refused (``unsafe``, from :func:`_unsafe_globals`), else the global torch's message
    names (the fallback for legacy files and torch < 2.5; torch prints builtins without
    their module), else the reason."""
    text = one_line(exc, None)
    if not unsafe:
        found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
        if found:
            unsafe = [found[1] if "." in found[1] else f"builtins.{found[1]}"]
    if unsafe:
        listed = ", ".join(unsafe[:-1]) + " and " + unsafe[-1] if len(unsafe) > 1 else unsafe[0]
        return (f"{show(path)} pickles {clip(listed, 160)}, which gateflow refuses to load "
                "(unpickling it could run code); save model.state_dict() (a dict of tensors) "
                "with torch.save")
    said = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    detail = said[1] if said else re.sub(r"^Weights only load failed\..*?trusted source\. ",
                                         "", text)
    return (f"cannot read {show(path)}: corrupt or not a torch.save file "
            f"({clip(detail or type(exc).__name__, 120)}); re-save it with "
            "torch.save(model.state_dict(), path)")


#: Where checkpoints commonly keep the model's state_dict (Lightning's ``.ckpt``:
#: ``state_dict``): a dict of tensors under one of these keys is the parameters file's
#: state dict when no dict in the checkpoint holds recurrent weights (gateflow names).
NESTED = ("state_dict", "model_state_dict", "model", "net")
#: Keys whose values are never searched for the model's state dict: optimizer and scheduler
#: states (their tensors are keyed by parameter index, or mirror the parameters' names).
_NOT_MODEL = re.compile(r"optim|^opt(?:_|$)|sched|scaler", re.IGNORECASE)
_DEPTH = 6  # how deep a checkpoint is searched for state dicts
_VISITS = 512  # how many containers at most
_BREADTH = 256  # how many entries of one container are descended into
_LISTED = 12  # keys named in a message


def _recurrent_key(k) -> bool:
    """A PyTorch recurrent matrix name (``…weight_ih_l0``, ``…weight_hh``)."""
    m = _KEY.match(k) if isinstance(k, str) else None
    return m is not None and m["name"] in ("weight_ih", "weight_hh")


def _key_path(path: tuple) -> str:
    """``'model_state'``, ``'checkpoint' → 'model'``, ``'models' → [0]``."""
    return " → ".join(f"[{k}]" if isinstance(k, int) else repr(k) for k in path)


def _kind_of(torch, v) -> str:
    if isinstance(v, torch.Tensor):
        return "a tensor"
    if isinstance(v, dict):
        return "an empty dict" if not v else f"a dict of {len(v)}"
    if isinstance(v, (list, tuple)):
        return f"a {type(v).__name__} of {len(v)}"
    name = type(v).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _search(torch, obj) -> tuple[list[tuple[tuple, dict]], list[str]]:
    """Every dict in the checkpoint ``obj`` that holds PyTorch recurrent weights (a state
    dict), in the file's order (depth first), with its key path, and the keys looked at
    (each with what it held), bounded in depth, breadth and count. A state dict is not
    searched further; optimizer and scheduler states are never searched
    (:data:`_NOT_MODEL`)."""
    found: list[tuple[tuple, dict]] = []
    looked: list[str] = []
    queue: list[tuple[tuple, object]] = [((), obj)]
    visits = 0
    while queue and visits < _VISITS:
        path, node = queue.pop()
        visits += 1
        if isinstance(node, dict):
            if any(_recurrent_key(k) and isinstance(v, torch.Tensor) for k, v in node.items()):
                found.append((path, node))
                continue
            items = list(node.items())
        elif isinstance(node, (list, tuple)):
            items = list(enumerate(node))
        else:
            continue
        below = []
        for k, v in items[:_BREADTH]:
            here = (*path, k)
            if isinstance(k, str) and _NOT_MODEL.search(k):
                looked.append(f"{_key_path(here)} (not searched: optimizer/scheduler state)")
                continue
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                continue
            looked.append(f"{_key_path(here)} ({_kind_of(torch, v)})")
            if isinstance(v, (dict, list, tuple)) and len(here) < _DEPTH:
                below.append((here, v))
        queue += reversed(below)  # a stack: the first entry is searched next
    return found, looked


def _fallback(torch, obj: dict) -> tuple[tuple, dict] | None:
    """A state dict without recurrent weights (gateflow names): ``obj`` itself when every
    value is a tensor, else its first entry of :data:`NESTED` that is a dict of tensors."""
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return (), obj
    for key in NESTED:
        sub = obj.get(key)
        if isinstance(sub, dict) and all(isinstance(v, torch.Tensor) for v in sub.values()):
            return (key,), sub
    return None


# -- sizes from shapes, before torch or NumPy allocates --------------------------------------
#: Bytes per element of the storage types a legacy (pre-1.6, non-zip) torch.save names.
_ELEMENT_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8,
    "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1, "UntypedStorage": 1,
}
_WIDEST = 16  # an element of a storage type not listed above, counted generously
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER


class _Inert:
    """Any global of a legacy pickle during the size pre-scan: built, filled and called
    as data, never as the class it names (nothing of the file runs)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs) -> _Inert:
        return _Inert()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


class _StorageKind(_Inert):
    """A storage type (``torch.FloatStorage``) named in a legacy pickle."""

    def __init__(self, name: str) -> None:
        self.name = name


class _SizeScan(pickle.Unpickler):
    """Reads a legacy torch.save pickle as inert data (:class:`_Inert` for every global) to
    learn the bytes of every storage it declares (``('storage', type, key, location,
    numel, ...)``), which ``torch.load`` allocates before it reads them."""

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__(fh)
        self.storages: dict[object, int] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name.endswith("Storage"):
            return _StorageKind(name)
        return _Inert

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind, key, numel = pid[1], pid[2], pid[4]
            if isinstance(numel, int) and not isinstance(numel, bool) and numel >= 0:
                each = _ELEMENT_BYTES.get(getattr(kind, "name", ""), _WIDEST)
                self.storages[key if isinstance(key, (str, int)) else repr(key)] = numel * each
        return _Inert()


def _legacy_storages(fh: BinaryIO, size: int, path: Path) -> None:
    """Refuse a legacy (non-zip) torch.save whose storages declare more bytes than follow
    its pickle: ``torch.load`` would allocate them all before noticing (a 2 KB file that
    asks for 16 GB). A file that is not a legacy torch.save is left to ``torch.load``."""
    try:
        if _SizeScan(fh).load() != _LEGACY_MAGIC:
            return
        _SizeScan(fh).load()  # the protocol version
        _SizeScan(fh).load()  # sys_info
        scan = _SizeScan(fh)
        scan.load()
    except Exception:  # not a legacy torch.save: torch.load says why
        return
    finally:
        left = size - fh.tell()
        fh.seek(0)
    declared = sum(scan.storages.values())
    if declared > max(left, 0):
        raise GateflowError(f"cannot read {show(path)}: corrupt torch.save file (its tensors "
                            f"declare {declared} bytes of storage, but only {max(left, 0)} "
                            "bytes follow); re-save it with torch.save(model.state_dict(), "
                            "path)")


def _array(torch, path: Path, k: str, v) -> tuple[np.ndarray, str | None]:
    """One tensor as a float64 (or integer) array, and its dtype in the file when it was
    narrower than float32 (None else); an expanded (stride-0) view becomes a real array
    (its size was checked by :func:`read` from its shape)."""
    t = v.detach().cpu()
    narrow = None
    if t.is_quantized:
        narrow = f"{str(t.dtype).removeprefix('torch.')} (quantized)"
        t = t.dequantize()
    if t.is_complex() or (t.is_floating_point() and t.element_size() < 2):
        raise GateflowError(f"{show(path)}: tensor {clip(repr(k), 60)} has dtype "
                            f"{t.dtype}; weights must be float64/32/16 or bfloat16")
    if t.is_floating_point() and t.element_size() < 4:
        narrow = narrow or str(t.dtype).removeprefix("torch.")
    elif not t.is_floating_point() and t.dtype != torch.bool:
        narrow = narrow or str(t.dtype).removeprefix("torch.")
    t = t.to(torch.float64) if t.is_floating_point() else t
    return np.ascontiguousarray(t.contiguous().numpy()), narrow


def _none_found(path: Path, looked: list[str]) -> GateflowError:
    listed = ", ".join(looked[:_LISTED]) + (f", … ({len(looked) - _LISTED} more)"
                                             if len(looked) > _LISTED else "")
    return GateflowError(f"{show(path)} holds no state dict with recurrent weights (no dict of "
                         f"tensors named weight_ih_l0, weight_hh, …); keys looked at: "
                         f"{listed or 'none'}; save model.state_dict() with torch.save")


def read(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """A state_dict from ``torch.load(weights_only=True)``: pickled code is never run. The
    file size bounds the tensors (torch.save stores zip members, never compresses them, so a
    compressed member is refused: torch would inflate it); a legacy (non-zip) file's
    storages are sized from its pickle before ``torch.load`` allocates them, and every
    tensor is sized from its shape (an expanded, stride-0 tensor is a few bytes on disk)
    before it is converted; torch's warnings are silenced.

    A checkpoint is searched (bounded) for the dicts that hold recurrent weights, under any
    key (``model_state``, Lightning's ``state_dict``, ``['checkpoint']['model']``, …;
    never an optimizer's state): one is read as it is and said in ``where``; several are
    all read, each key prefixed by its key path (``ema.rnn.weight_ih_l0``)."""
    if zipfile.is_zipfile(fh):
        with zipfile.ZipFile(fh) as zf:
            packed = [i.filename for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise GateflowError(f"cannot read {show(path)}: member {clip(repr(packed[0]), 60)} "
                                "is compressed, which torch.save never writes; re-save it with "
                                "torch.save(model.state_dict(), path)")
    fh.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torch
        except ImportError:
            raise GateflowError(f"reading {show(path)} needs PyTorch; install it with "
                                "pip install 'gateflow[torch]' or re-save the weights as "
                                ".safetensors") from None
        fits(path, size, size // 2)
        if not zipfile.is_zipfile(fh):
            fh.seek(0)
            _legacy_storages(fh, size, path)
        fh.seek(0)
        try:
            obj = torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for code, RuntimeError for corrupt files
            raise GateflowError(_refusal(path, exc, _unsafe_globals(torch, fh))) from None
        if not isinstance(obj, dict):
            raise GateflowError(f"{show(path)} holds a {type(obj).__name__}, not a state_dict; "
                                "save model.state_dict() (a dict of tensors) with torch.save")
        found, looked = _search(torch, obj)
        if not found:
            one = _fallback(torch, obj)
            if one is None:
                raise _none_found(path, looked)
            found = [one]
        # sizes from shapes, not from the file: an expanded (stride-0) tensor is a few
        # bytes on disk and numel × 8 bytes once converted to float64
        fits(path, size, sum(v.numel() for _, sd in found for v in sd.values()
                             if isinstance(v, torch.Tensor)))
        several = len(found) > 1
        out = Raw()
        for key_path, sd in found:
            prefix = ".".join(map(str, key_path)) + "." if several else ""
            if key_path:
                out.where[prefix] = f"state dict under key {_key_path(key_path)}"
            for k, v in sd.items():
                if not isinstance(v, torch.Tensor):
                    continue  # a step count, a config: not a parameter
                if not isinstance(k, str):
                    raise GateflowError(f"{show(path)} is a dict but its key "
                                        f"{clip(repr(k), 60)} is a {type(k).__name__}, not a "
                                        "parameter name; save model.state_dict() (string "
                                        "keys)")
                out[prefix + k], narrow = _array(torch, path, k, v)
                if narrow:
                    out.dtypes[prefix + k] = narrow
        return out

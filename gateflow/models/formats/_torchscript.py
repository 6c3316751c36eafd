"""TorchScript archives (``torch.jit.save``, any extension), read without running them.

A TorchScript archive is a zip: ``<name>/data.pkl`` pickles the module tree (each module an
object of a class ``__torch__.<qualified name>``, its attributes a dict state, its tensors
persistent records ``('storage', torch.FloatStorage, key, location, numel)`` whose bytes
are the member ``<name>/data/<key>``), ``<name>/code/`` holds the classes' TorchScript
source, ``<name>/constants.pkl`` its constants. ``torch.jit.load`` would compile and be
ready to run that code; gateflow never calls it, never imports torch for it, and never
executes or compiles the code:

* ``data.pkl`` is read by a restricted unpickler (:class:`_Unpickler`) whose only globals
  are the tensor rebuilders (their arguments checked against the storage bytes), the
  storage types, ``collections.OrderedDict`` and the list builders of
  ``torch.jit._pickle`` (plain lists and dicts), and inert records for the ``__torch__``
  classes (:class:`_Object`: their state is stored, never passed to code). Any other
  global is refused, named, in one line;
* the code is only *read*, as text: each class's ``name : Final[type] = literal`` lines
  (``batch_first``, ``bidirectional``, ``num_layers``, ``proj_size``, ``mode`` of a
  scripted ``nn.LSTM``/``GRU``/``RNN``) with :func:`ast.literal_eval`, and, for a traced
  module that has no such lines, the literal flags of its ``torch.lstm(...)`` /
  ``torch.rnn_relu(...)`` call (the op says the nonlinearity, the last flag batch_first).

The tensors of every module, flattened to state-dict keys (``enc.weight_ih_l0``), are read
by the PyTorch vocabulary; modules whose class is torch's own (``__torch__.torch.nn.
modules.rnn.LSTM``, mangled names ``___torch_mangle_3`` removed) are checked against
their class's constants and take their input layout (``batch_first``) and, for nn.RNN,
their nonlinearity from them.
"""

from __future__ import annotations

import ast
import io
import math
import pickle
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip
from gateflow.models.formats import _torch_modules
from gateflow.models.formats._files import fits, show
from gateflow.models.formats._raw import Raw
from gateflow.models.formats._recurrent import Found, Recurrent

__all__ = ["WHAT", "read", "scan", "sniff"]

WHAT = "a TorchScript archive (torch.jit.save)"
_FIX = "export it again with torch.jit.save, or save model.state_dict() with torch.save"
_PICKLE_LIMIT = 256 * 2**20  # data.pkl holds the module tree, not the tensors
_CODE_LIMIT = 8 * 2**20  # one code member
_CODE_TOTAL = 64 * 2**20
_DEPTH = 64  # module nesting
_OBJECTS = 100_000  # modules and attributes walked
_STORAGES = {  # torch's storage types -> NumPy dtype (bfloat16: its bits, widened below)
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
    "QInt8Storage": "i1", "QUInt8Storage": "u1", "QInt32Storage": "i4",  # quantized: skipped
}
_NARROW = {"HalfStorage": "float16", "BFloat16Storage": "bfloat16", "CharStorage": "int8",
           "ByteStorage": "uint8", "ShortStorage": "int16", "IntStorage": "int32",
           "LongStorage": "int64"}
_RNN = "torch.nn.modules.rnn."
_CLASSES = {f"{_RNN}{k}": k for k in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")}
_MANGLE = re.compile(r"\.___torch_mangle_\d+")
_CONSTANT = re.compile(r"^  (\w+) : Final\[[\w\[\], ]+\] = (.{1,200})$")
_CALL = re.compile(r"torch\.(lstm|gru|rnn_tanh|rnn_relu)(_cell)?\(")


def sniff(head: bytes, members: Sequence[str] | None) -> str | None:
    """A zip with ``<name>/data.pkl``, ``<name>/constants.pkl`` and ``<name>/code/``."""
    if members is None:
        return None
    roots = {m[:-len("data.pkl")] for m in members if m.endswith("data.pkl")}
    for root in roots:
        if f"{root}constants.pkl" in members and any(m.startswith(f"{root}code/")
                                                     for m in members):
            return WHAT
    return None


def original(qualname: str) -> str:
    """``torch.nn.modules.rnn.LSTM`` of ``__torch__.torch.nn.modules.rnn.___torch_mangle_3.
    LSTM``: the class the module was scripted or traced from."""
    return _MANGLE.sub("", qualname).removeprefix("__torch__.")


# -- the restricted unpickler -------------------------------------------------------------
@dataclass(frozen=True)
class _StorageType:
    name: str  # "FloatStorage"


@dataclass(frozen=True)
class _Storage:
    type: _StorageType
    key: str
    numel: int


@dataclass(frozen=True)
class _Tensor:
    """A tensor record: a view (offset, size, stride, in elements) of one storage."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.size)


class _Object:
    """A TorchScript object as inert data: its class's qualified name and its pickled state
    (a dict of attributes for modules), never given to any code."""

    qualname = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rebuild_tensor(storage, offset, size, stride, *rest) -> _Tensor:
    """``torch._utils._rebuild_tensor_v2``'s arguments, checked, as a :class:`_Tensor`."""
    if not isinstance(storage, _Storage) or not _is_int(offset) or offset < 0 \
            or not isinstance(size, tuple) or not isinstance(stride, tuple) \
            or len(size) != len(stride) or not all(_is_int(v) and v >= 0 for v in size + stride):
        raise pickle.UnpicklingError("a tensor record with malformed arguments")
    t = _Tensor(storage, offset, size, stride)
    if t.numel and offset + sum((s - 1) * st for s, st in zip(size, stride)) >= storage.numel:
        raise pickle.UnpicklingError(f"a tensor of size {size} reaches past its storage of "
                                     f"{storage.numel} elements")
    if t.numel > storage.numel:
        raise pickle.UnpicklingError(f"a tensor of size {size} has more elements than its "
                                     f"storage ({storage.numel}); gateflow reads saved "
                                     "parameters, not expanded views")
    return t


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *rest):
    if not isinstance(data, _Tensor):
        raise pickle.UnpicklingError("a parameter record without a tensor")
    return data


@dataclass(frozen=True)
class _QTensor:
    """A quantized tensor record (``_rebuild_qtensor``): kept as data, never read as
    weights (a module holding it is listed as skipped)."""

    storage: object


def _rebuild_qtensor(storage, *rest) -> _QTensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a quantized tensor record without a storage")
    return _QTensor(storage)


@dataclass(frozen=True)
class _Name:
    """A torch global that is only a name in the data (``torch.per_tensor_affine``)."""

    name: str


def _restore_type_tag(value, tag=None):
    return value


def _as_list(value=()):
    if not isinstance(value, (list, tuple)):
        raise pickle.UnpicklingError("a list record that is not a list")
    return list(value)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_qtensor"): _rebuild_qtensor,
    **{("torch", name): _Name(name) for name in ("per_tensor_affine", "per_channel_affine",
                                                   "per_channel_affine_float_qparams")},
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    ("torch.jit._pickle", "build_tensorlist"): _as_list,
    ("torch.jit._pickle", "build_intlist"): _as_list,
    ("torch.jit._pickle", "build_doublelist"): _as_list,
    ("torch.jit._pickle", "build_boollist"): _as_list,
    ("collections", "OrderedDict"): dict,
    **{("torch", name): _StorageType(name) for name in _STORAGES},
}


class _Unpickler(pickle.Unpickler):
    """``data.pkl``'s unpickler: the globals of :data:`_ALLOWED`, inert :class:`_Object`
    classes for ``__torch__`` classes, tensor storages from persistent ids; nothing else."""

    def __init__(self, data: bytes, storage_bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._classes: dict[str, type] = {}
        self._storage_bytes = storage_bytes  # key -> member size in bytes, or None

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if not name.isidentifier() or len(qualname) > 400:
                raise pickle.UnpicklingError(f"a class name {qualname[:80]!r} that TorchScript "
                                             "does not write")
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (_Object,), {"qualname": qualname})
            return self._classes[qualname]
        python2 = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # protocol 2's names
        raise _Refused(f"{python2.get(module, module)}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _is_int(pid[4]) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"an unknown persistent record {clip(repr(pid), 80)}")
        _, kind, key, _, numel = pid
        have = self._storage_bytes(key)
        need = numel * np.dtype(_STORAGES[kind.name]).itemsize
        if have is None:
            raise pickle.UnpicklingError(f"storage {key!r} has no data member")
        if have < need:
            raise pickle.UnpicklingError(f"storage {key!r} has {have} bytes, not the {need} of "
                                         f"{numel} elements")
        return _Storage(kind, key, numel)


class _Refused(Exception):
    """A global outside the allowlist (its dotted name)."""


# -- the archive --------------------------------------------------------------------------
@dataclass
class _Archive:
    path: Path
    zf: zipfile.ZipFile
    root: str  # "<name>/"
    order: Literal["<", ">"]
    tree: Any
    classes: dict[str, dict[str, Any]]  # qualified class name -> Final constants
    calls: dict[str, tuple[str, list[str]]]  # qualified class name -> (op, flags) of its call

    def member(self, name: str, limit: int, stored: bool = False) -> bytes:
        """A member's bytes, at most ``limit`` (a lying size is caught while inflating);
        ``stored``: refused when compressed (torch.jit.save stores tensor data as is, so
        the archive's size bounds it)."""
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise GateflowError(f"cannot read {show(self.path)}: member {clip(repr(name), 80)} "
                                f"is missing; {_FIX}") from None
        if stored and info.compress_type != zipfile.ZIP_STORED:
            raise GateflowError(f"cannot read {show(self.path)}: member {clip(repr(name), 80)} "
                                f"is compressed, which torch.jit.save never writes; {_FIX}")
        if info.file_size > limit:
            raise GateflowError(f"cannot read {show(self.path)}: member {clip(repr(name), 80)} "
                                f"is {info.file_size} bytes, more than gateflow reads ({limit})"
                                f"; {_FIX}")
        with self.zf.open(info) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit or len(data) != info.file_size:
            raise GateflowError(f"cannot read {show(self.path)}: member {clip(repr(name), 80)} "
                                f"does not hold the {info.file_size} bytes it says; {_FIX}")
        return data

    def array(self, t: _Tensor, cache: dict[str, np.ndarray]) -> np.ndarray:
        """The tensor's values (a copy), its storage read once."""
        kind = t.storage.type.name
        buf = cache.get(t.storage.key)
        if buf is None:
            itemsize = np.dtype(_STORAGES[kind]).itemsize
            data = self.member(f"{self.root}data/{t.storage.key}", t.storage.numel * itemsize,
                               stored=True)
            buf = np.frombuffer(data, dtype=np.dtype(_STORAGES[kind]).newbyteorder(self.order),
                                count=t.storage.numel)
            cache[t.storage.key] = buf
        itemsize = buf.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            buf[t.offset:], shape=t.size, strides=tuple(s * itemsize for s in t.stride),
            writeable=False) if t.numel else np.zeros(t.size, dtype=buf.dtype)
        a = np.array(view, dtype=buf.dtype.newbyteorder("="))
        if kind == "BFloat16Storage":  # exact: a bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a


def _storage_sizes(zf: zipfile.ZipFile, root: str):
    sizes = {i.filename[len(root) + len("data/"):]: i.file_size for i in zf.infolist()
             if i.filename.startswith(f"{root}data/")}
    return sizes.get


def _code_path_to_module(name: str, root: str) -> str:
    """``__torch__.torch.nn.modules.rnn`` of ``<root>code/__torch__/torch/nn/modules/rnn.py``."""
    return name[len(f"{root}code/"):-len(".py")].replace("/", ".")


def _read_code(arc: _Archive) -> None:
    """Every class's ``Final`` constants and its recurrent op's literal flags, from the code
    as text (never compiled or run)."""
    total = 0
    for info in arc.zf.infolist():
        name = info.filename
        if not (name.startswith(f"{arc.root}code/") and name.endswith(".py")):
            continue
        total += info.file_size
        if total > _CODE_TOTAL:
            raise GateflowError(f"cannot read {show(arc.path)}: its code members hold more than "
                                f"{_CODE_TOTAL} bytes; {_FIX}")
        text = arc.member(name, _CODE_LIMIT).decode("utf-8", "replace")
        module = _code_path_to_module(name, arc.root)
        current = None
        for line in text.splitlines():
            if line.startswith("class "):
                m = re.match(r"class (\w+)\b", line)
                current = f"{module}.{m[1]}" if m else None
                if current:
                    arc.classes.setdefault(current, {})
                continue
            if current is None:
                continue
            m = _CONSTANT.match(line)
            if m:
                try:
                    arc.classes[current][m[1]] = ast.literal_eval(m[2].strip())
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    pass  # not a literal: not a constant gateflow reads
                continue
            call = _CALL.search(line)
            if call and current not in arc.calls:
                args = _call_args(line[call.end():])
                arc.calls[current] = (call[1] + (call[2] or ""), args)


def _call_args(text: str) -> list[str]:
    """The top-level arguments of a call whose ``(`` was just read, as text."""
    args: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                args.append("".join(cur).strip())
                return args
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    return []


def _open(fh: BinaryIO, size: int, path: Path) -> _Archive:
    zf = zipfile.ZipFile(fh)
    members = zf.namelist()
    roots = sorted({m[:-len("data.pkl")] for m in members if m.endswith("data.pkl")
                    and f"{m[:-len('data.pkl')]}constants.pkl" in members})
    if len(roots) != 1:
        raise GateflowError(f"cannot read {show(path)}: it is not one TorchScript archive "
                            f"({len(roots)} data.pkl with a constants.pkl); {_FIX}")
    root = roots[0]
    order: Literal["<", ">"] = "<"
    if f"{root}byteorder" in members:
        said = zf.read(f"{root}byteorder")[:16].strip()
        if said not in (b"little", b"big"):
            raise GateflowError(f"cannot read {show(path)}: its byteorder member says "
                                f"{clip(repr(said), 40)}; {_FIX}")
        order = "<" if said == b"little" else ">"
    arc = _Archive(path, zf, root, order, None, {}, {})
    data = arc.member(f"{root}data.pkl", min(_PICKLE_LIMIT, max(size, 1)))
    try:
        arc.tree = _Unpickler(data, _storage_sizes(zf, root)).load()
    except _Refused as exc:
        raise GateflowError(f"{show(path)} pickles {clip(str(exc), 80)}, which gateflow refuses "
                            "to load (a TorchScript archive is read as data, never run); "
                            f"{_FIX}") from None
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, KeyError, IndexError,
            AttributeError, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise GateflowError(f"cannot read {show(path)}: its data.pkl is not a TorchScript "
                            f"module tree ({clip(str(exc) or type(exc).__name__, 120)}); "
                            f"{_FIX}") from None
    if not isinstance(arc.tree, _Object) or not isinstance(arc.tree.state, dict):
        raise GateflowError(f"cannot read {show(path)}: its data.pkl does not hold a module; "
                            f"{_FIX}")
    _read_code(arc)
    return arc


# -- the module tree ----------------------------------------------------------------------
def _walk(arc: _Archive) -> tuple[dict[str, _Tensor], dict[str, _Object],
                                  list[tuple[str, str]]]:
    """Every tensor attribute (state-dict keys), every module object by its name, and one
    line per object whose state gateflow does not read."""
    tensors: dict[str, _Tensor] = {}
    objects: dict[str, _Object] = {}
    opaque: list[tuple[str, str]] = []  # (name, class) of objects with a custom state
    stack: list[tuple[str, _Object, int]] = [("", arc.tree, 0)]
    seen = 0
    while stack:
        name, obj, depth = stack.pop()
        objects[name] = obj
        if not isinstance(obj.state, dict):
            opaque.append((name, original(obj.qualname)))
            continue
        below = []
        for key, value in obj.state.items():
            seen += 1
            if seen > _OBJECTS:
                raise GateflowError(f"cannot read {show(arc.path)}: its module tree has more "
                                    f"than {_OBJECTS} attributes; {_FIX}")
            if not isinstance(key, str):
                continue
            full = f"{name}.{key}" if name else key
            if isinstance(value, _Tensor):
                tensors[full] = value
            elif isinstance(value, _Object):
                if depth + 1 > _DEPTH:
                    raise GateflowError(f"cannot read {show(arc.path)}: its modules nest deeper "
                                        f"than {_DEPTH}; {_FIX}")
                below.append((full, value, depth + 1))
        stack += reversed(below)
    return tensors, objects, opaque


def _raw(arc: _Archive, tensors: dict[str, _Tensor]) -> Raw:
    """The tensors as arrays (float64, or integers), their narrow dtypes said."""
    count = sum(t.numel for t in tensors.values())
    storages = {t.storage.key: t.storage for t in tensors.values()}
    nbytes = sum(s.numel * np.dtype(_STORAGES[s.type.name]).itemsize
                 for s in storages.values())
    fits(arc.path, nbytes, count)
    cache: dict[str, np.ndarray] = {}
    out = Raw(where={"": "TorchScript module tree"})
    for key, t in tensors.items():
        a = arc.array(t, cache)
        out[key] = a.astype(np.float64) if a.dtype.kind == "f" else a
        narrow = _NARROW.get(t.storage.type.name)
        if narrow:
            out.dtypes[key] = narrow
    return out


def _traced_flags(arc: _Archive, qualname: str) -> dict[str, Any]:
    """What a traced module's recurrent call says: ``nonlinearity`` (rnn_tanh/rnn_relu),
    ``batch_first`` (the last literal flag of torch.lstm(input, hx, params, has_biases,
    num_layers, dropout, train, bidirectional, batch_first))."""
    call = arc.calls.get(qualname)
    if call is None:
        return {}
    op, args = call
    out: dict[str, Any] = {}
    if op.startswith("rnn_"):
        out["nonlinearity"] = "relu" if "relu" in op else "tanh"
    if not op.endswith("_cell") and len(args) == 9 and args[3] in ("True", "False") \
            and args[8] in ("True", "False"):
        out["batch_first"] = args[8] == "True"
    return out


def _checked(arc: _Archive, rec: Recurrent, obj: _Object) -> Recurrent:
    """``rec`` (read from the weights) with what the module's class says: checked against
    the weights, its layout, and nn.RNN's nonlinearity."""
    cls = original(obj.qualname)
    base = _CLASSES.get(cls)
    where = f"TorchScript module of class {clip(cls, 120)}"
    if base is None:
        return replace(rec, where=where, assumed=(
            *rec.assumed, f"class {clip(cls, 120)} is not one of torch.nn's recurrent modules: "
            f"read as {rec.kind} from its parameter names"))
    said = dict(arc.classes.get(obj.qualname, {}))
    traced = not said
    if traced:
        said = _traced_flags(arc, obj.qualname)
    is_cell = base.endswith("Cell")
    kind = f"nn.{base}"
    name = f"module {rec.module!r}" if rec.module else "the module"
    if kind != rec.kind:
        raise GateflowError(f"{show(arc.path)}: {name} is a {kind} but its weights are an "
                            f"{rec.kind}'s; {_FIX}")
    mode = said.get("mode")
    want = {"hidden_size": rec.hidden, "input_size": rec.input}
    if not is_cell:
        want |= {"num_layers": rec.layers, "bidirectional": rec.bidirectional,
                 "proj_size": rec.proj}
    for key, value in want.items():
        if key in said and said[key] != value:
            raise GateflowError(f"{show(arc.path)}: {name} says {key}={said[key]!r} but its "
                                f"weights have {value!r}; {_FIX}")
    extra: dict[str, Any] = {"where": where + (", traced" if traced else "")}
    nonlinearity = said.get("nonlinearity")
    if isinstance(mode, str) and mode.startswith("RNN_"):
        nonlinearity = mode[4:].lower()
    if base.startswith("RNN") and nonlinearity in ("tanh", "relu"):
        cell = "rnn" if nonlinearity == "tanh" else "rnn-relu"
        extra |= {"cell": cell, "cells": (cell,), "note": ""}
    batch_first = said.get("batch_first")
    if isinstance(batch_first, bool) and not is_cell:
        extra["layout"] = "batch-major" if batch_first else "time-major"
    return replace(rec, **extra)


def read(fh: BinaryIO, size: int, path: Path) -> dict[str, np.ndarray]:
    """The archive's tensors, keyed as its state dict would be (``enc.weight_ih_l0``)."""
    arc = _open(fh, size, path)
    tensors, _, _ = _walk(arc)
    return _raw(arc, tensors)


def scan(fh: BinaryIO, size: int, path: Path) -> Found:
    """The recurrent modules of the archive, by their names in the module tree, with their
    classes' hyperparameters; modules of a recurrent class whose weights gateflow cannot
    read (quantized, packed) are listed as skipped."""
    arc = _open(fh, size, path)
    tensors, objects, opaque = _walk(arc)
    skipped: list[str] = []
    raw = _raw(arc, tensors)
    modules = []
    for rec in _torch_modules.scan(raw):
        obj = objects.get(rec.module)
        modules.append(rec if obj is None else _checked(arc, rec, obj))
    named = {m.module for m in modules}
    for name, obj in objects.items():
        cls = original(obj.qualname)
        last = cls.rsplit(".", 1)[-1]
        if name not in named and re.fullmatch(r"(LSTM|GRU|RNN)(Cell)?", last):
            skipped.append(f"module {name or '(root)'!r} of class {clip(cls, 120)}: no "
                           "weight_ih/weight_hh tensors gateflow can read (quantized or packed "
                           "weights)")
    covered = [m.module for m in modules] + [
        name for name, obj in objects.items() if any(
            line.startswith(f"module {name or '(root)'!r} ") for line in skipped)]
    opaque = [(name, cls) for name, cls in opaque
              if not any(name.startswith(f"{c}.") for c in covered if c)]
    if opaque:
        listed = ", ".join(f"{name or '(root)'!r} ({clip(cls, 80)})" for name, cls in opaque[:4])
        more = f", … ({len(opaque)} in all)" if len(opaque) > 4 else ""
        skipped.append(f"{len(opaque)} object(s) keep their state in a form gateflow does not "
                       f"read (a custom __getstate__), not opened: {listed}{more}")
    return Found(tuple(modules), tuple(skipped))

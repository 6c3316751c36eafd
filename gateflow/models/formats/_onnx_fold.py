"""ONNX: where a value comes from, and the values computed from constants only, folded with
NumPy without running the model (the ONNX reader's helper, see :mod:`._onnx`).

:meth:`Folder.value` follows a name to its definition through the graphs' scopes
(:class:`._onnx_scope.Scope`). A stored tensor (an initializer or a ``Constant``'s
``value``) is returned as it is, converted only when asked for; a node's output is computed
when every input it reads is itself a constant and its operator is one of
:data:`._onnx_ops.OPS` (what exporters put between an LSTM's weights and the node:
``torch.onnx.export`` of a scripted module slices, concatenates and unsqueezes PyTorch's
weights inside ``If`` branches; ``DequantizeLinear`` for QDQ-quantized weights). Anything
else — a graph input, a ``Loop`` body input, an operator outside :data:`._onnx_ops.OPS`, a
sparse or external tensor, a chain deeper than :data:`MAX_DEPTH` — raises
:class:`._onnx_scope.Unfoldable` with the reason in one line (:class:`Damaged` for a stored
tensor whose data does not fit its dims). Every array made is checked against the memory
budget before it is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits
from gateflow.models.formats._onnx_ops import OPS, checked, evaluate
from gateflow.models.formats._onnx_scope import Scope, Unfoldable

if TYPE_CHECKING:
    from onnx import NodeProto, TensorProto

__all__ = ["MAX_DEPTH", "Damaged", "Folded", "Folder", "stored_mismatch"]

#: How many nodes deep a weight's computation may go.
MAX_DEPTH = 64
_DOMAINS = ("", "ai.onnx")
_EXTERNAL = 1  # TensorProto.EXTERNAL
# element types whose values are a narrower precision than float32, by TensorProto code
_NARROW = {10: "float16", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz",
           19: "float8e5m2", 20: "float8e5m2fnuz", 2: "uint8", 3: "int8", 4: "uint16",
           5: "int16", 21: "uint4", 22: "int4", 23: "float4e2m1"}
_NARROW_NP = {"float16": "float16", "bfloat16": "bfloat16"}


class Damaged(Unfoldable):
    """A stored tensor whose data does not hold as many values as its dims say."""


# The typed field that holds a tensor's values when it has no raw_data, by TensorProto code,
# and how many entries one value takes there (complex: 2); 4-bit types (packed) and strings
# are not checked.
_FIELDS = {1: ("float_data", 1), 14: ("float_data", 2), 11: ("double_data", 1),
           15: ("double_data", 2), 7: ("int64_data", 1), 12: ("uint64_data", 1),
           13: ("uint64_data", 1),
           **{code: ("int32_data", 1) for code in (2, 3, 4, 5, 6, 9, 10, 16, 17, 18, 19, 20)}}
_PACKED = (21, 22, 23)  # uint4, int4, float4e2m1: two values a byte


def stored_mismatch(t: TensorProto) -> str | None:
    """Why a stored tensor's data does not fit its dims (how many values it holds against
    how many its dims need), without decoding it; None when it fits or cannot be told."""
    dims = [int(x) for x in t.dims]
    if any(x < 0 for x in dims):
        return f"negative dims {dims}"
    count = math.prod(dims)
    code = int(t.data_type)
    if t.HasField("raw_data"):
        if code in _PACKED:
            need, unit = (count + 1) // 2, "bytes"
        else:
            from onnx import helper

            try:
                size = np.dtype(helper.tensor_dtype_to_np_dtype(code)).itemsize
            except Exception:  # an unknown or undefined type code: said when it is read
                return None
            need, unit = count * size, "bytes"
        have = len(t.raw_data)
    elif code in _FIELDS:
        field_name, per = _FIELDS[code]
        have, need, unit = len(getattr(t, field_name)), count * per, "values"
    else:
        return None
    if have == need:
        return None
    return f"its data holds {have} {unit} where its dims {clip(str(dims), 80)} need {need}"


@dataclass(frozen=True)
class Folded:
    """A constant: a stored ``tensor`` not yet converted, or a computed ``array``; ``marks``
    names the narrow types its values went through (``float16``, ``int8``, ...), ``ops``
    the operators that computed it."""

    shape: tuple[int, ...]
    dtype: str  # NumPy's name of the element type ("float32", "int8", "bfloat16", ...)
    tensor: TensorProto | None = None
    array: np.ndarray | None = None
    marks: frozenset[str] = frozenset()
    ops: frozenset[str] = frozenset()

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _np_type(code: int) -> str:
    from onnx import helper

    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(code)))
    except Exception:  # an unknown or undefined type code
        return f"ONNX type {code}"


# -- folding --------------------------------------------------------------------------------
class Folder:
    """Folds constants of one model file; remembers what it computed (and how much)."""

    def __init__(self, path: Path):
        self.path = path
        self._memo: dict[tuple[int, str], Folded] = {}
        self._busy: set[tuple[int, str]] = set()
        self._held = 0  # elements of the arrays computed (or kept) so far
        self._loaded: dict[int, np.ndarray] = {}  # stored tensors converted while folding

    # names -> definitions
    def value(self, scope: Scope, name: str, depth: int = 0) -> Folded:
        """The constant ``name`` of ``scope`` (looked up through the enclosing scopes)."""
        shown = clip(repr(name), 60)
        if depth > MAX_DEPTH:
            raise Unfoldable(f"it is computed through more than {MAX_DEPTH} nodes")
        s: Scope | None = scope
        while s is not None:
            if name in s.stored:
                return self._stored(s.stored[name], shown)
            if name in s.constants:
                node, label = s.constants[name]
                return self._memoised(s, name, lambda: self._constant(node, label))
            if name in s.producers:
                node, label, k = s.producers[name]
                here = s
                return self._memoised(s, name, lambda: self._node(here, node, label, k, depth))
            if name in s.sparse:
                raise Unfoldable(f"{shown} is a sparse initializer, which gateflow does not "
                                 "read; store it dense")
            if name in s.inputs:
                raise Unfoldable(f"{shown} is {s.inputs[name]}")
            if name in s.bindings:
                caller, actual = s.bindings[name]
                if not actual:
                    raise Unfoldable(f"{shown} is a function input the caller leaves out")
                return self.value(caller, actual, depth + 1)
            s = s.parent
        raise Unfoldable(f"{shown} is not defined in the graph")

    def _memoised(self, scope: Scope, name: str, make: Callable[[], Folded]) -> Folded:
        key = (id(scope), name)
        if key in self._memo:
            return self._memo[key]
        if key in self._busy:
            raise Unfoldable(f"{clip(repr(name), 60)} depends on itself (the graph has a cycle)")
        self._busy.add(key)
        try:
            out = make()
        finally:
            self._busy.discard(key)
        self._memo[key] = out
        return out

    def _stored(self, t: TensorProto, shown: str) -> Folded:
        if t.data_location == _EXTERNAL:
            where = next((e.value for e in t.external_data if e.key == "location"), "?")
            raise Unfoldable(f"{shown} is kept in an external file ({clip(repr(where), 60)}); "
                             "re-export with the weights inside, e.g. onnx.save_model(model, "
                             "path, save_as_external_data=False)")
        wrong = stored_mismatch(t)
        if wrong is not None:
            raise Damaged(f"{shown} is a damaged tensor ({wrong})")
        mark = _NARROW.get(t.data_type)
        return Folded(tuple(int(x) for x in t.dims), _np_type(t.data_type), tensor=t,
                      marks=frozenset([mark] if mark else ()))

    def load(self, f: Folded, what: str, keep: bool = False) -> np.ndarray:
        """The array of a constant (a stored tensor converted here, after a memory check;
        kept for the next use if ``keep``); ``what`` names it in the message for a damaged
        tensor."""
        if f.array is not None:
            return f.array
        from onnx import numpy_helper

        assert f.tensor is not None
        if id(f.tensor) in self._loaded:
            return self._loaded[id(f.tensor)]
        fits(self.path, 8 * (f.size + (self._held if keep else 0)), f.size)
        try:
            out = np.asarray(numpy_helper.to_array(f.tensor))
        except Exception as exc:  # data that does not fit its dims, an unknown type
            raise Unfoldable(f"{what} is a damaged tensor ({one_line(exc, 100)})") from None
        if out.shape != f.shape:
            raise Unfoldable(f"{what} is a damaged tensor (data of shape {out.shape} for dims "
                             f"{list(f.shape)})")
        if keep:
            self._loaded[id(f.tensor)] = out
            self._held += out.size
        return out

    def _made(self, array: np.ndarray, marks: frozenset[str], ops: frozenset[str]) -> Folded:
        self._held += array.size
        name = str(array.dtype)
        if name in _NARROW_NP:
            marks = marks | {name}
        return Folded(tuple(int(x) for x in array.shape), name, array=array, marks=marks,
                      ops=ops)

    def room(self, count: int) -> None:
        """Refuse computing ``count`` more elements that would not fit in memory."""
        fits(self.path, 8 * (self._held + count), 0)

    def _constant(self, node: NodeProto, label: str) -> Folded:
        from onnx import helper

        attrs = {a.name: a for a in node.attribute}
        try:
            for a in attrs.values():
                checked(a)
        except Unfoldable as exc:
            raise Unfoldable(f"{clip(repr(node.output[0]), 60)} is the output of Constant "
                             f"node {clip(repr(label), 60)}: {exc}") from None
        if "value" in attrs and attrs["value"].HasField("t"):
            return self._stored(attrs["value"].t, clip(repr(node.output[0]), 60))
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in attrs:
                values = helper.get_attribute_value(attrs[key])
                return self._made(np.asarray(values, dtype=dtype), frozenset(),
                                  frozenset({"Constant"}))
        kinds = ", ".join(attrs) or "none"
        raise Unfoldable(f"{clip(repr(node.output[0]), 60)} is the output of Constant node "
                         f"{clip(repr(label), 60)} without a numeric value (attributes: "
                         f"{clip(kinds, 60)})")

    def _node(self, scope: Scope, node: NodeProto, label: str, slot: int,
              depth: int) -> Folded:
        op = node.op_type
        about = f"node {clip(repr(label), 60)} ({clip(op, 40)})"
        impl = OPS.get(op) if node.domain in _DOMAINS else None
        if impl is None:
            domain = f", domain {clip(repr(node.domain), 40)}" if node.domain not in _DOMAINS \
                else ""
            raise Unfoldable(f"{clip(repr(node.output[slot]), 60)} is the output of {about}"
                             f"{domain}, which gateflow does not fold (it folds "
                             f"{', '.join(sorted(OPS))})")
        data_slots, _ = impl
        ins: list[Folded | None] = []
        for name in node.input:
            ins.append(self.value(scope, name, depth + 1) if name else None)
        arrays: list[np.ndarray | None] = [
            None if f is None else self.load(f, f"input {clip(repr(name), 60)} of {about}",
                                             keep=True)
            for f, name in zip(ins, node.input)]
        marks: frozenset[str] = frozenset()
        ops = frozenset({op})
        for k, f in enumerate(ins):
            if f is not None:
                ops |= f.ops
                if data_slots is None or k in data_slots:
                    marks |= f.marks
        self.room(sum(a.size for a in arrays if a is not None))
        try:
            outs = evaluate(self, scope, node, arrays)
        except Unfoldable as exc:
            raise Unfoldable(f"{about} cannot be folded: {exc}") from None
        except GateflowError as exc:  # the memory budget
            raise Unfoldable(f"{about} cannot be folded: {one_line(exc, 200)}") from None
        except (ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError,
                KeyError, AttributeError) as exc:
            raise Unfoldable(f"{about} cannot be folded: {one_line(exc, 100)}") from None
        if slot >= len(outs):
            raise Unfoldable(f"{about} has no output {slot}")
        return self._made(np.asarray(outs[slot]), marks, ops)

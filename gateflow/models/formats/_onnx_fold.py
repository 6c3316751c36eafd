"""ONNX: where a value comes from, and the values computed from constants only, folded with
NumPy without running the model (the ONNX reader's helper, see :mod:`._onnx`).

A :class:`Scope` holds what one graph defines: its initializers, its ``Constant`` nodes,
the outputs of its other nodes, its inputs; a subgraph's scope (an ``If`` branch, a ``Loop``
or ``Scan`` body) sees the names of the graphs around it, as ONNX's lexical scoping says; a
model-local function's scope sees only its formal inputs, bound to the caller's values.

:meth:`Folder.value` follows a name to its definition. A stored tensor (an initializer or a
``Constant``'s ``value``) is returned as it is, converted only when asked for; a node's output
is computed when every input it reads is itself a constant and its operator is one of
:data:`OPS` (what exporters put between an LSTM's weights and the node: ``torch.onnx.export``
of a scripted module slices, concatenates and unsqueezes PyTorch's weights inside ``If``
branches; ``DequantizeLinear`` for QDQ-quantized weights). Arithmetic keeps the tensors' own
types (float32 stays float32, as a runtime computes it). Anything else — a graph input, a
``Loop`` body input, an operator outside :data:`OPS`, a sparse or external tensor, a chain
deeper than :data:`MAX_DEPTH` — raises :class:`Unfoldable` with the reason in one line.
Every array made is checked against the memory budget before it is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._files import fits

if TYPE_CHECKING:
    from onnx import AttributeProto, NodeProto, TensorProto

__all__ = ["MAX_DEPTH", "OPS", "Damaged", "Folded", "Folder", "Scope", "Unfoldable",
           "indexed_labels", "node_labels"]

#: How many nodes deep a weight's computation may go.
MAX_DEPTH = 64
_DOMAINS = ("", "ai.onnx")
_EXTERNAL = 1  # TensorProto.EXTERNAL
# element types whose values are a narrower precision than float32, by TensorProto code
_NARROW = {10: "float16", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz",
           19: "float8e5m2", 20: "float8e5m2fnuz", 2: "uint8", 3: "int8", 4: "uint16",
           5: "int16", 21: "uint4", 22: "int4", 23: "float4e2m1"}
_NARROW_NP = {"float16": "float16", "bfloat16": "bfloat16"}


class Unfoldable(Exception):
    """A value that is not a constant of the file; ``str(exc)`` says why, in one line."""


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


def node_labels(nodes: Sequence[NodeProto]) -> list[str]:
    """Each node's name; ``op_type_index`` when it has none; ``name_index`` when it is shared
    (``index``: the node's position in its graph, counting every node from 0)."""
    return indexed_labels(list(enumerate(nodes)))


def indexed_labels(nodes: Sequence[tuple[int, NodeProto]]) -> list[str]:
    """:func:`node_labels` of some of a graph's nodes, each given with its index in the
    graph: unique among these nodes."""
    base = [node.name or f"{node.op_type}_{i}" for i, node in nodes]
    counts: dict[str, int] = {}
    for name in base:
        counts[name] = counts.get(name, 0) + 1
    taken: set[str] = set()
    out = []
    for (i, _), name in zip(nodes, base):
        label = name if counts[name] == 1 else f"{name}_{i}"
        while label in taken or (label != name and label in counts):
            label = f"{label}_{i}"
        taken.add(label)
        out.append(label)
    return out


# -- scopes ---------------------------------------------------------------------------------
@dataclass(eq=False)
class Scope:
    """The names one graph (or function body) defines. ``inputs`` maps a run-time input to
    why it is not a constant; ``bindings`` (functions only) maps a formal input to the
    caller's scope and value name; ``attributes`` are the calling node's (functions only,
    for attributes given by reference)."""

    stored: dict[str, TensorProto]
    constants: dict[str, tuple[NodeProto, str]]
    producers: dict[str, tuple[NodeProto, str, int]]  # output -> node, its label, output slot
    inputs: dict[str, str]
    sparse: frozenset[str]
    opset: int
    parent: Scope | None = None
    bindings: dict[str, tuple[Scope, str]] = field(default_factory=dict)
    attributes: dict[str, AttributeProto] = field(default_factory=dict)

    def attributes_of(self, node: NodeProto) -> Iterator[tuple[str, AttributeProto]]:
        """Each attribute of ``node`` (in this graph or function body) as (its name, what
        gives its value): a reference to the calling node's attribute resolved, one the
        caller does not set left out (the operator's default)."""
        for attr in node.attribute:
            if not attr.ref_attr_name:
                yield attr.name, attr
            elif (ref := self.attributes.get(attr.ref_attr_name)) is not None:
                yield attr.name, ref

    @classmethod
    def of(cls, nodes: Sequence[NodeProto], *, initializers=(), sparse=(),
           inputs: dict[str, str], opset: int, parent: Scope | None = None,
           bindings: dict[str, tuple[Scope, str]] | None = None,
           attributes: dict[str, AttributeProto] | None = None) -> Scope:
        stored = {t.name: t for t in initializers}
        constants: dict[str, tuple[NodeProto, str]] = {}
        producers: dict[str, tuple[NodeProto, str, int]] = {}
        for node, label in zip(nodes, node_labels(nodes)):
            if node.op_type == "Constant" and node.domain in _DOMAINS and len(node.output) == 1:
                constants[node.output[0]] = (node, label)
                continue
            for k, out in enumerate(node.output):
                if out:
                    producers[out] = (node, label, k)
        return cls(stored, constants, producers,
                   {k: v for k, v in inputs.items() if k not in stored},
                   frozenset(s.values.name for s in sparse), opset, parent,
                   dict(bindings or {}), dict(attributes or {}))


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

    def _room(self, count: int) -> None:
        """Refuse computing ``count`` more elements that would not fit in memory."""
        fits(self.path, 8 * (self._held + count), 0)

    def _constant(self, node: NodeProto, label: str) -> Folded:
        from onnx import helper

        attrs = {a.name: a for a in node.attribute}
        try:
            for a in attrs.values():
                _checked(a)
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
        self._room(sum(a.size for a in arrays if a is not None))
        try:
            outs = _evaluate(self, scope, node, arrays)
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


# -- the operators --------------------------------------------------------------------------
#: The type (``AttributeProto.AttributeType``'s name) of each attribute the folded operators
#: read, as the operators define it: checked before the value is used.
_ATTR_TYPES = {"axis": "INT", "axes": "INTS", "perm": "INTS", "to": "INT", "starts": "INTS",
               "ends": "INTS", "shape": "INTS", "allowzero": "INT", "split": "INTS",
               "num_outputs": "INT", "start": "INT", "end": "INT", "block_size": "INT",
               "saturate": "INT", "output_dtype": "INT", "value": "TENSOR",
               "value_float": "FLOAT", "value_floats": "FLOATS", "value_int": "INT",
               "value_ints": "INTS"}


def _checked(attr: AttributeProto, name: str | None = None) -> AttributeProto:
    """``attr`` (the value of the node's attribute ``name``, its own name by default) when
    it has the type the operator gives it; Unfoldable otherwise (its value is never
    printed: a TENSOR or GRAPH would be pages of protobuf text)."""
    from onnx import AttributeProto

    name = attr.name if name is None else name
    want = _ATTR_TYPES.get(name)
    if want is not None and attr.type != getattr(AttributeProto, want):
        try:
            got = AttributeProto.AttributeType.Name(attr.type)
        except ValueError:  # a type code the protocol does not define
            got = f"code {int(attr.type)}"
        raise Unfoldable(f"its attribute {clip(repr(name), 40)} is of type {got}; the "
                         f"operator defines it as {want}")
    return attr


def _attrs(scope: Scope, node: NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (references to a calling node's attributes, in a
    function body, resolved), each of its operator's type (Unfoldable otherwise)."""
    from onnx import helper

    return {name: helper.get_attribute_value(_checked(a, name))
            for name, a in scope.attributes_of(node)}


def _ints(a: np.ndarray | None, what: str) -> list[int]:
    if a is None:
        raise Unfoldable(f"its input {what} is missing")
    if a.dtype.kind not in "iu":
        raise Unfoldable(f"its input {what} is of type {a.dtype}, not integers")
    return [int(v) for v in np.ravel(a)]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise Unfoldable(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _slice(scope, node, ins):
    a = ins[0]
    if scope.opset < 10:
        at = _attrs(scope, node)
        starts, ends = list(at.get("starts", [])), list(at.get("ends", []))
        axes = list(at.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(ins[1], "starts"), _ints(ins[2], "ends")
        axes = _ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None \
            else list(range(len(starts)))
        steps = _ints(ins[4], "steps") if len(ins) > 4 and ins[4] is not None \
            else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise Unfoldable("starts, ends, axes and steps differ in length")
    index: list[slice] = [slice(None)] * a.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, a.ndim)
        dim = a.shape[axis]
        if step == 0:
            raise Unfoldable("a step is 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        else:  # ONNX clamps to [-1, dim - 1]; -1 as an end means "through index 0"
            start, end = min(max(start, -1), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = slice(0, 0) if start < 0 else \
                slice(start, None if end < 0 else end, step)
    return [a[tuple(index)]]


def _concat(scope, node, ins):
    arrays = [a for a in ins if a is not None]
    axis = _attrs(scope, node).get("axis", 1 if scope.opset < 4 else None)
    if axis is None:
        raise Unfoldable("it has no axis")
    return [np.concatenate(arrays, axis=_axis(axis, arrays[0].ndim))]


def _axes(scope, node, ins, since: int) -> list[int] | None:
    if scope.opset < since:
        axes = _attrs(scope, node).get("axes")
        return None if axes is None else list(axes)
    return _ints(ins[1], "axes") if len(ins) > 1 and ins[1] is not None else None


def _unsqueeze(scope, node, ins):
    a = ins[0]
    axes = _axes(scope, node, ins, 13)
    if not axes:
        raise Unfoldable("it has no axes")
    rank = a.ndim + len(axes)
    norm = sorted(_axis(x, rank) for x in axes)
    if len(set(norm)) != len(norm):
        raise Unfoldable("an axis is repeated")
    return [np.expand_dims(a, tuple(norm))]


def _squeeze(scope, node, ins):
    a = ins[0]
    axes = _axes(scope, node, ins, 13)
    if axes is None:
        return [np.squeeze(a)]
    return [np.squeeze(a, axis=tuple(_axis(x, a.ndim) for x in axes))]


def _reshape(scope, node, ins):
    a = ins[0]
    at = _attrs(scope, node)
    shape = list(at.get("shape", [])) if scope.opset < 5 else _ints(ins[1], "shape")
    if not at.get("allowzero", 0):
        shape = [a.shape[i] if s == 0 and i < a.ndim else s for i, s in enumerate(shape)]
    return [np.reshape(a, shape)]


def _transpose(scope, node, ins):
    perm = _attrs(scope, node).get("perm")
    return [np.transpose(ins[0], None if perm is None else list(perm))]


def _gather(folder, scope, node, ins):
    a, idx = ins[0], ins[1]
    axis = _axis(_attrs(scope, node).get("axis", 0), a.ndim)
    if idx is None or idx.dtype.kind not in "iu":
        raise Unfoldable("its indices are not integers")
    dim = a.shape[axis]
    folder._room(idx.size * (a.size // dim if dim else 0))
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise Unfoldable(f"an index is out of range for a dimension of {dim}")
    return [np.take(a, np.where(idx < 0, idx + dim, idx), axis=axis)]


def _cast(scope, node, ins):
    from onnx import helper

    to = _attrs(scope, node).get("to")
    if to is None:
        raise Unfoldable("it has no target type")
    return [ins[0].astype(helper.tensor_dtype_to_np_dtype(int(to)))]


def _cast_like(scope, node, ins):
    return [ins[0].astype(ins[1].dtype)]


def _split(scope, node, ins):
    a = ins[0]
    at = _attrs(scope, node)
    axis = _axis(at.get("axis", 0), a.ndim)
    dim, parts = a.shape[axis], len(node.output)
    if scope.opset >= 13:
        sizes = _ints(ins[1], "split") if len(ins) > 1 and ins[1] is not None else None
    else:
        sizes = list(at["split"]) if "split" in at else None
    if sizes is None and "num_outputs" in at:
        k = int(at["num_outputs"])
        step = -(-dim // k)
        sizes = [min(step, dim - j * step) for j in range(k)]
    if sizes is None:
        if parts < 1 or dim % parts:
            raise Unfoldable(f"a dimension of {dim} does not split into {parts} equal parts")
        sizes = [dim // parts] * parts
    if sum(sizes) != dim or any(s < 0 for s in sizes):
        raise Unfoldable(f"split sizes {sizes} do not add up to the dimension {dim}")
    return np.split(a, np.cumsum(sizes)[:-1], axis=axis)


def _flatten(scope, node, ins):
    a = ins[0]
    axis = _attrs(scope, node).get("axis", 1)
    axis = axis + a.ndim if axis < 0 else axis
    if not 0 <= axis <= a.ndim:
        raise Unfoldable(f"axis {axis} is out of range for rank {a.ndim}")
    return [a.reshape(math.prod(a.shape[:axis]), math.prod(a.shape[axis:]))]


def _expand(folder, scope, node, ins):
    shape = np.broadcast_shapes(ins[0].shape, tuple(_ints(ins[1], "shape")))
    folder._room(math.prod(shape))
    return [np.broadcast_to(ins[0], shape).copy()]


def _constant_of_shape(folder, scope, node, ins):
    from onnx import numpy_helper

    shape = tuple(_ints(ins[0], "shape"))
    if any(s < 0 for s in shape):
        raise Unfoldable(f"shape {list(shape)} has a negative size")
    value = next((_checked(a).t for a in node.attribute if a.name == "value"), None)
    fill = numpy_helper.to_array(value).ravel() if value is not None \
        else np.zeros(1, np.float32)
    folder._room(math.prod(shape))
    return [np.full(shape, fill[0], dtype=fill.dtype)]


def _shape(scope, node, ins):
    at = _attrs(scope, node)
    dims = ins[0].shape
    return [np.asarray(dims[slice(at.get("start", 0), at.get("end"))], dtype=np.int64)]


def _binary(fn):
    def run(folder, scope, node, ins):
        a, b = ins[0], ins[1]
        if a is None or b is None:
            raise Unfoldable("an input is missing")
        if a.dtype != b.dtype:
            raise Unfoldable(f"its inputs are of types {a.dtype} and {b.dtype}")
        folder._room(math.prod(np.broadcast_shapes(a.shape, b.shape)))
        return [fn(a, b)]
    return run


def _divide(a, b):
    if a.dtype.kind in "iu":
        if np.any(b == 0):
            raise Unfoldable("it divides an integer by 0")
        return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(a.dtype)
    return a / b


def _dequantize(scope, node, ins):
    x, scale = ins[0], ins[1]
    zero = ins[2] if len(ins) > 2 and ins[2] is not None else None
    at = _attrs(scope, node)
    if at.get("block_size", 0):
        raise Unfoldable("blocked quantization (block_size) is not read")
    if x.dtype.kind not in "iu":
        raise Unfoldable(f"it dequantizes {x.dtype} values; gateflow reads integer ones")
    shifted = x.astype(np.int64) - (0 if zero is None else zero.astype(np.int64))
    if scale.ndim == 1 and scale.size > 1 or (zero is not None and zero.ndim == 1
                                              and zero.size > 1):
        axis = _axis(at.get("axis", 1), x.ndim)
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        scale = scale.reshape(shape)
        if zero is not None:
            shifted = x.astype(np.int64) - zero.astype(np.int64).reshape(shape)
    # (x - zero_point) fits in the scale's float type exactly; one rounding, as a runtime
    return [shifted.astype(scale.dtype) * scale]


def _plain(fn):
    def run(folder, scope, node, ins):
        if not ins or ins[0] is None:
            raise Unfoldable("its first input is missing")
        return fn(scope, node, ins)
    return run


_Impl = tuple[frozenset[int] | None, Callable[..., list]]

#: The operators folded: name -> (the inputs whose values flow into the output, None: all;
#: the implementation).
OPS: dict[str, _Impl] = {
    "Identity": (frozenset({0}), _plain(lambda s, n, ins: [ins[0]])),
    "Slice": (frozenset({0}), _plain(_slice)),
    "Concat": (None, _plain(_concat)),
    "Unsqueeze": (frozenset({0}), _plain(_unsqueeze)),
    "Squeeze": (frozenset({0}), _plain(_squeeze)),
    "Reshape": (frozenset({0}), _plain(_reshape)),
    "Transpose": (frozenset({0}), _plain(_transpose)),
    "Gather": (frozenset({0}), _gather),
    "Cast": (frozenset({0}), _plain(_cast)),
    "CastLike": (frozenset({0}), _plain(_cast_like)),
    "Split": (frozenset({0}), _plain(_split)),
    "Flatten": (frozenset({0}), _plain(_flatten)),
    "Expand": (frozenset({0}), _expand),
    "ConstantOfShape": (frozenset(), _constant_of_shape),
    "Shape": (frozenset(), _plain(_shape)),
    "Add": (None, _binary(np.add)),
    "Sub": (None, _binary(np.subtract)),
    "Mul": (None, _binary(np.multiply)),
    "Div": (None, _binary(_divide)),
    "Neg": (frozenset({0}), _plain(lambda s, n, ins: [np.negative(ins[0])])),
    "DequantizeLinear": (None, _plain(_dequantize)),
}


def _evaluate(folder: Folder, scope: Scope, node: NodeProto,
              ins: list[np.ndarray | None]) -> list[np.ndarray]:
    return OPS[node.op_type][1](folder, scope, node, ins)

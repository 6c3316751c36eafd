"""ONNX: the operators that are folded, each as a NumPy implementation (:data:`OPS`), for
:class:`._onnx_fold.Folder` (the ONNX reader's helper, see :mod:`._onnx`).

Each entry names the inputs whose values flow into the output (so that the narrow types
they went through are said) and the function, which takes the arrays of the node's inputs
(None for one left out) and returns its outputs. Arithmetic keeps the tensors' own types
(float32 stays float32, as a runtime computes it). A node's attributes are checked against
the types its operator gives them before they are read (:func:`checked`); an input it
cannot compute from (integers divided by 0, an index out of range, a missing axis) raises
:class:`._onnx_scope.Unfoldable` with the reason in one line, and an operator that makes a
larger array than its inputs (``Expand``, ``ConstantOfShape``, ``Gather``, broadcasting
arithmetic) asks the folder for room (:meth:`._onnx_fold.Folder.room`) before allocating it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from gateflow.models._checks import clip
from gateflow.models.formats._onnx_scope import Unfoldable

if TYPE_CHECKING:
    from onnx import AttributeProto, NodeProto

    from gateflow.models.formats._onnx_fold import Folder
    from gateflow.models.formats._onnx_scope import Scope

__all__ = ["OPS", "checked", "evaluate"]


# -- the operators --------------------------------------------------------------------------
#: The type (``AttributeProto.AttributeType``'s name) of each attribute the folded operators
#: read, as the operators define it: checked before the value is used.
_ATTR_TYPES = {"axis": "INT", "axes": "INTS", "perm": "INTS", "to": "INT", "starts": "INTS",
               "ends": "INTS", "shape": "INTS", "allowzero": "INT", "split": "INTS",
               "num_outputs": "INT", "start": "INT", "end": "INT", "block_size": "INT",
               "saturate": "INT", "output_dtype": "INT", "value": "TENSOR",
               "value_float": "FLOAT", "value_floats": "FLOATS", "value_int": "INT",
               "value_ints": "INTS"}


def checked(attr: AttributeProto, name: str | None = None) -> AttributeProto:
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

    return {name: helper.get_attribute_value(checked(a, name))
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
    folder.room(idx.size * (a.size // dim if dim else 0))
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
    folder.room(math.prod(shape))
    return [np.broadcast_to(ins[0], shape).copy()]


def _constant_of_shape(folder, scope, node, ins):
    from onnx import numpy_helper

    shape = tuple(_ints(ins[0], "shape"))
    if any(s < 0 for s in shape):
        raise Unfoldable(f"shape {list(shape)} has a negative size")
    value = next((checked(a).t for a in node.attribute if a.name == "value"), None)
    fill = numpy_helper.to_array(value).ravel() if value is not None \
        else np.zeros(1, np.float32)
    folder.room(math.prod(shape))
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
        folder.room(math.prod(np.broadcast_shapes(a.shape, b.shape)))
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


def evaluate(folder: Folder, scope: Scope, node: NodeProto,
             ins: list[np.ndarray | None]) -> list[np.ndarray]:
    return OPS[node.op_type][1](folder, scope, node, ins)

"""ONNX: a recurrent node's initial states, where the file fixes them to constants (the ONNX
reader's helper; :mod:`._onnx`'s docstring gives the rules).

:func:`initial_states` reads ``initial_h`` and ``initial_c``: a constant of the file
(folded by :class:`._onnx_fold.Folder`), or one broadcast to the batch's size at run time by
``Expand`` or ``ConstantOfShape`` through ``Identity``/``Cast``, as exporters write it.
Zeros say nothing; a state computed at run time is a line of ``assumed``; one of the wrong
type, shape or values skips the node. :func:`initial_of` makes ``Recurrent.initial``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gateflow._errors import as_given
from gateflow.models._checks import clip, one_line
from gateflow.models.formats._onnx_fold import MAX_DEPTH, Damaged, Folder
from gateflow.models.formats._onnx_node import (
    FLOATS,
    Skip,
    check_place,
    node_phrase,
    text,
    type_name,
    type_of,
)
from gateflow.models.formats._onnx_scope import Unfoldable
from gateflow.models.formats._onnx_walk import MAX_NESTING

if TYPE_CHECKING:
    from onnx import NodeProto

    from gateflow.models.formats._onnx_scope import Scope

__all__ = ["initial_of", "initial_states"]

_STATES = (("initial_h", 5, "h"), ("initial_c", 6, "c"))  # ONNX input, its slot, gateflow's block


def _producer(scope: Scope, name: str) -> tuple[NodeProto, Scope, str] | None:
    """The node (of ``scope`` or a scope around it) whose output ``name`` is, its scope and
    its label; None for a stored tensor, a Constant, an input or an unknown name."""
    s: Scope | None = scope
    for _ in range(MAX_DEPTH + MAX_NESTING):
        if s is None:
            return None
        if name in s.producers:
            return s.producers[name][0], s, s.producers[name][1]
        if name in s.stored or name in s.constants or name in s.inputs or name in s.sparse:
            return None
        if name in s.bindings:
            s, name = s.bindings[name]
            if not name:
                return None
            continue
        s = s.parent
    return None


def _broadcast(folder: Folder, scope: Scope, name: str, why: Unfoldable, depth: int = 0
               ) -> np.ndarray:
    """An array that ``name`` is at run time broadcast to a shape known at run time only:
    exporters make an initial state of the batch's size with ``ConstantOfShape`` (zeros, or a
    fill value) or ``Expand`` of a constant (a learned state), through ``Identity`` and
    ``Cast``. Anything else raises ``why``, the reason it is not a constant."""
    from onnx import AttributeProto, helper, numpy_helper

    found = _producer(scope, name) if depth <= MAX_DEPTH else None
    if found is None or found[0].domain not in ("", "ai.onnx"):
        raise why
    node, where, _ = found
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "ConstantOfShape":
        value = attrs.get("value")
        if value is None:
            return np.zeros((), np.float32)  # the operator's default: float32 zeros
        if value.type != AttributeProto.TENSOR:
            raise Unfoldable(f"{clip(repr(name), 60)} is made by ConstantOfShape with a value "
                             f"of type {type_of(value)}, not a TENSOR")
        try:
            fill = np.asarray(numpy_helper.to_array(value.t))
        except Exception as exc:  # a damaged tensor
            raise Unfoldable(f"{clip(repr(name), 60)} is made by ConstantOfShape with a damaged "
                             f"value ({one_line(exc, 80)})") from None
        if fill.size != 1:
            raise Unfoldable(f"{clip(repr(name), 60)} is made by ConstantOfShape with a value of "
                             f"{fill.size} elements, not one")
        return fill.reshape(())
    if node.op_type not in ("Identity", "Expand", "Cast") or not node.input or not node.input[0]:
        raise why
    inner = node.input[0]
    try:
        f = folder.value(where, inner)
    except Unfoldable as exc:
        a = _broadcast(folder, where, inner, exc, depth + 1)
    else:
        a = folder.load(f, clip(repr(inner), 60))
    if node.op_type == "Cast":
        to = attrs.get("to")
        if to is None or to.type != AttributeProto.INT:
            raise Unfoldable(f"{clip(repr(name), 60)} is made by a Cast without an INT 'to'")
        try:
            a = a.astype(helper.tensor_dtype_to_np_dtype(int(to.i)))
        except Exception as exc:  # an unknown type code
            raise Unfoldable(f"{clip(repr(name), 60)} is made by a Cast to an unknown type "
                             f"({one_line(exc, 60)})") from None
    return a


def initial_states(folder: Folder, node: NodeProto, scope: Scope, directions: tuple[str, ...],
                   n: int, batch_major: bool, defaults: frozenset[str] = frozenset()
                   ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """The node's initial states that the file fixes to constants, nonzero somewhere:
    gateflow's block -> (num_directions, batch, n) float64 (batch 1 when the constant is
    broadcast over the batch); where each comes from, in words; and a line for each initial
    state that is not a constant of the file (a graph input, a value computed at run time),
    which a run takes as zeros. Skip for one of the wrong type, shape or values.
    ``defaults``: the top-level graph's inputs that are also initializers (a value a feed
    may replace at run time), said as such."""
    nd = len(directions)
    shape = f"[batch, num_directions={nd}, hidden={n}]" if batch_major else \
        f"[num_directions={nd}, batch, hidden={n}]"
    states: dict[str, np.ndarray] = {}
    sources: list[str] = []
    unread: list[str] = []
    lstm = node.op_type in ("LSTM", "DynamicQuantizeLSTM")
    for state, slot, block in _STATES:
        name = node.input[slot] if slot < len(node.input) else ""
        if not name or (block == "c" and not lstm):
            continue
        shown = clip(repr(name), 60)
        exact = True
        try:
            f = folder.value(scope, name)
        except Damaged as exc:
            raise Skip(f"has a damaged {state}: {exc}; re-export the model") from None
        except Unfoldable as exc:
            try:
                array = _broadcast(folder, scope, name, exc)
            except Damaged as why:  # a stored tensor it is broadcast from
                raise Skip(f"has a damaged {state}: {shown} is made from {why}; re-export "
                           "the model") from None
            except Unfoldable as why:
                made = _producer(scope, name)
                reason = one_line(why, 160) if made is None else \
                    f"the output of {text(made[0].op_type, 40)} node {text(repr(made[2]), 80)}"
                unread.append(f"{state} is not a constant of the file ({reason}): the "
                              f"analysis starts from zeros unless {as_given('s0')} gives the "
                              "initial state")
                continue
            exact = False
        else:
            if f.dtype not in FLOATS:
                raise Skip(f"has {state} {shown} of {type_name(f.dtype)}; it must be of X's "
                           "float type")
            try:
                array = folder.load(f, f"{state} {shown}")
            except Unfoldable as exc:
                raise Skip(f"has {exc}; re-export the model") from None
        if str(array.dtype) not in FLOATS:
            raise Skip(f"has {state} {shown} of type {array.dtype}; it must be of X's float "
                       "type")
        wrong = Skip(f"has {state} {shown} of shape {list(array.shape)}; the operator expects "
                     f"{shape}" + ("" if exact else " (after broadcasting)"))
        if array.ndim > 3 or (exact and array.ndim != 3):
            raise wrong
        dims = (1,) * (3 - array.ndim) + tuple(int(x) for x in array.shape)
        a3 = array.reshape(dims)
        batch = dims[0] if batch_major else dims[1]
        target = (batch, nd, n) if batch_major else (nd, batch, n)
        if batch < 1 or (exact and dims != target):
            raise wrong
        try:
            if np.broadcast_shapes(dims, target) != target:
                raise wrong
        except ValueError:
            raise wrong from None
        full = np.broadcast_to(a3, target).astype(np.float64)
        if batch_major:
            full = np.swapaxes(full, 0, 1)
        if not np.all(np.isfinite(full)):
            raise Skip(f"has {state} {shown} with values that are not finite")
        if np.any(full != 0):
            states[block] = np.ascontiguousarray(full)
            # a state of several sequences, all equal, is one state: any batch starts from it
            same = f" (the same for its {batch} sequences: used for any batch)" \
                if batch > 1 and np.all(full == full[:, :1]) else ""
            sources.append(f"{state} {shown}" + ("" if exact else " broadcast over the batch")
                           + same + (" (a graph input's default)" if name in defaults else ""))
    if states:  # a block the file leaves zero is its zeros, said with the other
        for state, _, block in _STATES:
            if block not in states and (block == "h" or lstm):
                states[block] = np.zeros((nd, 1, n))
    return states, sources, unread


def initial_of(op: str, module: str, directions: tuple[str, ...],
               states: dict[str, np.ndarray]) -> Callable[[str, int, str], dict[str, np.ndarray]]:
    """``Recurrent.initial``: each direction's initial state by block, (n,) when it is the
    same for every sequence of the batch, (batch, n) otherwise."""
    label = node_phrase(op, module)
    per: dict[str, dict[str, np.ndarray]] = {}
    for k, direction in enumerate(directions):
        out = {}
        for block, full in states.items():
            v = full[k]
            out[block] = v[0].copy() if np.all(v == v[0]) else v.copy()
        per[direction] = out if any(np.any(v != 0) for v in out.values()) else {}

    def initial_for(want: str, layer: int, direction: str) -> dict[str, np.ndarray]:
        check_place(label, directions, layer, direction)
        return {b: v.copy() for b, v in per[direction].items()}

    return initial_for

"""ONNX: the names each graph defines (:class:`Scope`), the labels of its nodes, and
:class:`Unfoldable`, the one-line reason a name is not a constant of the file (shared by
:mod:`._onnx_walk`, :mod:`._onnx_fold` and :mod:`._onnx_ops`).

A :class:`Scope` holds what one graph defines: its initializers, its ``Constant`` nodes,
the outputs of its other nodes, its inputs; a subgraph's scope (an ``If`` branch, a ``Loop``
or ``Scan`` body) sees the names of the graphs around it, as ONNX's lexical scoping says; a
model-local function's scope sees only its formal inputs, bound to the caller's values.
:func:`node_labels` names a graph's nodes as ``--module`` and the messages show them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnx import AttributeProto, NodeProto, TensorProto

__all__ = ["Scope", "Unfoldable", "indexed_labels", "node_labels"]

_DOMAINS = ("", "ai.onnx")


class Unfoldable(Exception):
    """A value that is not a constant of the file; ``str(exc)`` says why, in one line."""


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

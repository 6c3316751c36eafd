"""ONNX: walking a model's graphs for recurrent nodes (the ONNX reader's helper, see
:mod:`._onnx`, whose docstring gives the rules for names and places).

:class:`Walk` goes through the top-level graph in node order and, right after a node, into
its subgraphs (``If`` branches, ``Loop``/``Scan`` bodies, any graph attribute) and into the
body of the model-local function it calls, each with its own :class:`._onnx_scope.Scope`, to
:data:`MAX_NESTING` levels. It collects every ``LSTM``, ``GRU``, ``RNN`` and
``DynamicQuantizeLSTM`` node (a :class:`Candidate`: the node, its scope, its name in its
graph, the path to it) and one line for each thing that could hold a recurrence and is not
read: a subgraph too deep, a ``Loop``/``Scan`` body that carries values through plain
operators, onnxruntime's other recurrent operators, PyTorch ``ATen`` fallbacks, operators of
unknown domains. :func:`module_names` gives each candidate the name ``--module`` takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateflow.models._checks import clip
from gateflow.models.formats._onnx_scope import Scope, indexed_labels, node_labels

if TYPE_CHECKING:
    from onnx import FunctionProto, ModelProto, NodeProto

__all__ = ["MAX_NESTING", "MAX_NODES", "RECURRENT", "Candidate", "Walk", "is_recurrent",
           "module_names", "opset"]

#: How many levels of subgraphs and function bodies are searched below the top-level graph.
MAX_NESTING = 16
#: How many nodes are walked in all (a function's body counts once per call).
MAX_NODES = 1_000_000
#: The ONNX operators read as recurrent modules (and com.microsoft's DynamicQuantizeLSTM).
RECURRENT = ("LSTM", "GRU", "RNN")
_DOMAINS = ("", "ai.onnx")
_MS = "com.microsoft"
_KNOWN_DOMAINS = (*_DOMAINS, "ai.onnx.ml", "ai.onnx.preview.training", _MS)
#: onnxruntime contrib operators that hold a recurrence gateflow does not read.
_MS_RECURRENT = ("AttnLSTM", "GatedDeltaNet", "LinearAttention")
#: PyTorch ATen fallbacks (``operator`` attribute) of recurrent layers.
_ATEN_RECURRENT = ("lstm", "gru", "rnn_tanh", "rnn_relu", "quantized_lstm", "quantized_gru",
                   "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")
#: Operators a recurrence written by hand is made of (named in the line that says so).
_CELL_OPS = ("Gemm", "MatMul", "Sigmoid", "Tanh", "HardSigmoid", "Relu", "Softsign")
_BRANCHES = {"then_branch": "then-branch", "else_branch": "else-branch", "body": "body"}
_ORDER = {name: k for k, name in enumerate(_BRANCHES)}


@dataclass(frozen=True)
class Candidate:
    """A recurrent node found somewhere in the model."""

    node: NodeProto
    scope: Scope
    label: str  # its name in its own graph
    path: tuple[str, ...]  # the qualified prefix: container label, attribute, ...
    where: str


def opset(imports, default: int = 1) -> int:
    return next((int(o.version) for o in imports if o.domain in _DOMAINS), default)


def is_recurrent(node: NodeProto) -> bool:
    return (node.op_type in RECURRENT and node.domain in _DOMAINS) or \
        (node.op_type == "DynamicQuantizeLSTM" and node.domain == _MS)


class Walk:
    """One pass over a model: the recurrent nodes found, and what was skipped."""

    def __init__(self, model: ModelProto):
        self.functions: dict[tuple[str, str, str], FunctionProto] = {
            (f.domain, f.name, getattr(f, "overload", "")): f for f in model.functions}
        self.found: list[Candidate] = []
        self.skipped: list[str] = []
        self._unknown: dict[tuple[str, str], int] = {}
        self._ops: set[str] = set()  # every operator met, in every graph searched
        self._visited = 0  # nodes walked, a function's body once per call
        self._stopped = False

    def graph(self, nodes: Sequence[NodeProto], scope: Scope, path: tuple[str, ...],
              where: tuple[str, ...], depth: int) -> None:
        self._visited += len(nodes)
        if self._visited > MAX_NODES:  # function bodies called over and over, nested
            if not self._stopped:
                self._stopped = True
                self.skipped.append(f"the model's graphs and function calls hold more than "
                                    f"{MAX_NODES} nodes in all; the rest was not searched")
            return
        self._ops.update(n.op_type for n in nodes)
        recurrent = [(i, n) for i, n in enumerate(nodes) if is_recurrent(n)]
        labels = dict(zip((i for i, _ in recurrent), indexed_labels(recurrent)))
        others = node_labels(nodes)  # containers: unique among all the graph's nodes
        for i, node in enumerate(nodes):
            label = labels.get(i) or others[i]
            if i in labels:
                self.found.append(Candidate(node, scope, label, path, " > ".join(where)))
            self._inside(node, i, label, scope, path, where, depth)

    def _inside(self, node: NodeProto, i: int, label: str, scope: Scope,
                path: tuple[str, ...], where: tuple[str, ...], depth: int) -> None:
        from onnx import AttributeProto

        here = f"{clip(node.op_type, 40)} node {clip(repr(label), 80)}"
        graphs = sorted(((a.name, g) for a in node.attribute
                         for g in ([a.g] if a.type == AttributeProto.GRAPH else
                                   list(a.graphs) if a.type == AttributeProto.GRAPHS else [])),
                        key=lambda ag: _ORDER.get(ag[0], len(_ORDER)))  # then before else
        before = len(self.found)
        for attr, g in graphs:
            branch = _BRANCHES.get(attr, f"attribute {attr!r}")
            if depth >= MAX_NESTING:
                if len(g.node):
                    self.skipped.append(f"{here}: its {branch} lies deeper than "
                                        f"{MAX_NESTING} levels of subgraphs and was not "
                                        "searched")
                continue
            reason = (f"an input of the body of {here}, which changes with each iteration"
                      if node.op_type in ("Loop", "Scan") else
                      f"an input of the {branch} of {here}, set at run time")
            sub = Scope.of(list(g.node), initializers=g.initializer,
                           sparse=g.sparse_initializer,
                           inputs={v.name: reason for v in g.input}, opset=scope.opset,
                           parent=scope, attributes=scope.attributes)
            self.graph(list(g.node), sub, (*path, label, attr), (*where, f"{here}, {branch}"),
                       depth + 1)
        if node.op_type in ("Loop", "Scan") and node.domain in _DOMAINS and graphs \
                and len(self.found) == before:
            carried = self._carried(node, scope.opset)
            if carried:
                self.skipped.append(f"{here}{_in(where)}: its body carries {carried} value(s) "
                                    "from one step to the next through operators that are "
                                    "not an LSTM, GRU or RNN node (a recurrence gateflow "
                                    "does not read)")
        key = (node.domain, node.op_type, getattr(node, "overload", ""))
        if key in self.functions:
            if depth >= MAX_NESTING:
                self.skipped.append(f"{here}{_in(where)}: the body of function "
                                    f"{clip(repr(node.op_type), 60)} lies deeper than "
                                    f"{MAX_NESTING} levels and was not searched")
                return
            fn = self.functions[key]
            bindings = {formal: (scope, node.input[k] if k < len(node.input) else "")
                        for k, formal in enumerate(fn.input)}
            sub = Scope.of(list(fn.node), inputs={},
                           opset=opset(fn.opset_import, scope.opset), bindings=bindings,
                           attributes={a.name: a for a in node.attribute})
            self.graph(list(fn.node), sub, (*path, label, fn.name),
                       (*where, f"{here}, function {clip(repr(fn.name), 60)}"), depth + 1)
        elif node.domain == _MS and node.op_type in _MS_RECURRENT:
            self.skipped.append(f"{here}{_in(where)}: onnxruntime's {node.op_type} operator "
                                "holds a recurrence gateflow does not read")
        elif node.op_type == "ATen":
            op = next((a.s.decode("utf-8", "replace") for a in node.attribute
                       if a.name == "operator"), "")
            if op in _ATEN_RECURRENT:
                self.skipped.append(f"{here}{_in(where)}: a PyTorch ATen fallback of "
                                    f"aten::{op}, which gateflow does not read; export with "
                                    "operator_export_type=ONNX")
        elif node.domain not in _KNOWN_DOMAINS and not is_recurrent(node):
            k = (node.domain, node.op_type)
            self._unknown[k] = self._unknown.get(k, 0) + 1

    @staticmethod
    def _carried(node: NodeProto, opset: int) -> int:
        """How many values a Loop or Scan passes from one step to the next."""
        if node.op_type == "Loop":
            return max(0, len(node.input) - 2)
        scans = next((int(a.i) for a in node.attribute if a.name == "num_scan_inputs"), 0)
        first = 1 if opset < 9 else 0  # Scan-8 takes sequence_lens first
        return max(0, len(node.input) - first - scans)

    def state_lines(self, graph) -> list[str]:
        """For a model with no recurrent node: a line for each graph input whose shape an
        output repeats exactly (rank 2 or more): a state the model may carry from one call
        to the next, through operators gateflow does not read as a cell."""
        def dims(v) -> tuple | None:
            t = v.type.tensor_type
            if not v.type.HasField("tensor_type") or not t.HasField("shape"):
                return None
            out = tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                        for d in t.shape.dim)
            return out if len(out) >= 2 and None not in out else None

        outputs = [(v.name, dims(v)) for v in graph.output]
        ops = sorted(self._ops.intersection(_CELL_OPS))
        lines = []
        for v in graph.input:
            shape = dims(v)
            twin = next((name for name, d in outputs if shape is not None and d == shape), None)
            if twin is not None:
                made = f", with {', '.join(ops)}" if ops else ""
                lines.append(f"graph input {clip(repr(v.name), 60)} and output "
                             f"{clip(repr(twin), 60)} have the same shape "
                             f"[{', '.join(map(str, shape or ()))}]: the model may carry a "
                             f"state from one call to the next (a recurrence written as plain "
                             f"operators{made}), which gateflow does not read as a cell")
        return lines

    def unknown_lines(self) -> list[str]:
        return [f"{count} node(s) of operator {clip(repr(op), 60)} (domain "
                f"{clip(repr(domain), 60)}), which gateflow does not know: it could hold a "
                "recurrence" for (domain, op), count in self._unknown.items()]


def _in(where: tuple[str, ...]) -> str:
    return f" ({' > '.join(where)})" if where else ""


def module_names(found: list[Candidate]) -> list[str]:
    """Each candidate's module name: its plain label when no other candidate has it, else
    its qualified path (see the module docstring)."""
    counts: dict[str, int] = {}
    for c in found:
        counts[c.label] = counts.get(c.label, 0) + 1
    names = [c.label if counts[c.label] == 1 else ":".join((*c.path, c.label)) for c in found]
    taken: set[str] = set()
    out = []
    for k, name in enumerate(names):
        while name in taken:
            name = f"{name}_{k}"
        taken.add(name)
        out.append(name)
    return out

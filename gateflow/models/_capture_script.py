"""A TorchScript model captured from its graph: every recurrent op tapped, then run once.

Forward hooks do not run inside a ``ScriptModule``'s graph (``torch.jit.script`` or
``torch.jit.trace``), so a copy of its inlined graph appends each recurrent op's input and
states to lists it returns (ops inside loops and branches included), the op's module is
the one whose weights it reads, and the module is read as the nn.<kind> its
``original_name`` says (:class:`_ScriptView`: its hyperparameters from its constants, or,
traced, from the op's flags). The records are the eager model's, bit for bit
(:mod:`._captured`). A traced ``*Cell`` is recorded by the tracer as elementary ops, which
capture refuses by name. The model's weights are compared before and after its run, and
refused when they changed: the calls would not be one recurrence with one set of
parameters.
"""

from __future__ import annotations

import re
from typing import Any

from gateflow._errors import GateflowError
from gateflow.models._captured import (
    _KINDS,
    Captured,
    _build,
    _Call,
    _changed,
    _changed_while_running,
    _snapshot,
)
from gateflow.models._checks import clip, one_line

__all__ = ["capture_script"]

_WEIGHT = re.compile(r"^(?:weight|bias)_(?:ih|hh|hr)(?:_l\d+(?:_reverse)?)?$")

#: The recurrent ops of a TorchScript graph: (the module's original class, is a *Cell, the
#: outputs that are the final states).
_OPS = {"aten::lstm": ("LSTM", (1, 2)), "aten::gru": ("GRU", (1,)),
        "aten::rnn_tanh": ("RNN", (1,)), "aten::rnn_relu": ("RNN", (1,)),
        "aten::lstm_cell": ("LSTMCell", (0, 1)), "aten::gru_cell": ("GRUCell", (0,)),
        "aten::rnn_tanh_cell": ("RNNCell", (0,)), "aten::rnn_relu_cell": ("RNNCell", (0,))}


class _ScriptView:
    """A TorchScript recurrent module (scripted or traced) seen as the nn.<kind> it was made
    from (``original_name``): its weights are its own attributes; its hyperparameters are
    its constants when it was scripted, else the literal flags of its op in the graph
    (``has_biases, num_layers, dropout, train, bidirectional, batch_first``) and its
    weights' shapes."""

    def __init__(self, module, original_name: str, node) -> None:
        self._module = module
        self.original_name = original_name
        self.training = bool(module.training)
        self.notes: list[str] = []
        is_cell = original_name.endswith("Cell")
        flags = {}
        if not is_cell:
            names = ("has_biases", "num_layers", "dropout", "train", "bidirectional",
                     "batch_first")
            flags = {k: node.inputsAt(3 + j).toIValue() for j, k in enumerate(names)}
        suffix = "" if is_cell else "_l0"
        ih, hh = getattr(module, f"weight_ih{suffix}"), getattr(module, f"weight_hh{suffix}")
        hr = getattr(module, f"weight_hr{suffix}", None) if not is_cell else None

        def said(name: str, default):
            value = getattr(module, name, None)  # a scripted module's constant
            return default if value is None else value

        self.proj_size = int(said("proj_size", 0 if hr is None else hr.shape[0]))
        self.hidden_size = int(said("hidden_size", hh.shape[1] if hr is None else hr.shape[1]))
        self.input_size = int(said("input_size", ih.shape[1]))
        self.bias = bool(said("bias", flags.get("has_biases", True)))
        self.num_layers = int(said("num_layers", flags.get("num_layers") or 1))
        self.bidirectional = bool(said("bidirectional", bool(flags.get("bidirectional"))))
        self.batch_first = said("batch_first", flags.get("batch_first"))
        self.dropout = float(said("dropout", flags.get("dropout") or 0.0))
        kind = node.kind()
        self.nonlinearity = said("nonlinearity", "relu" if "relu" in kind else "tanh")
        if not is_cell and not isinstance(self.batch_first, bool):
            raise GateflowError(f"the {original_name} op of the TorchScript graph does not "
                                "say batch_first as a constant; capture the eager model")

    def __getattr__(self, name: str):  # the weights: weight_ih_l0, ...
        return getattr(self._module, name)


def _all_nodes(block):
    """Every node of a graph block and of the blocks nested in it (If, Loop)."""
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _all_nodes(inner)


def _owner(node, self_value) -> str | None:
    """The name (``enc``, ``encoder.rnn``) of the module whose weights the op ``node``
    reads, from the ``prim::GetAttr`` chain of its weights; None when they are not a
    module's attributes."""
    v = node.inputsAt(2)  # the params list of a sequence op, w_ih of a cell op
    if v.node().kind() == "prim::ListConstruct" and v.node().inputsSize():
        v = v.node().inputsAt(0)
    path = []
    while v.node().kind() == "prim::GetAttr":
        path.append(v.node().s("name"))
        v = v.node().input()
    if v.unique() != self_value.unique() or not path:
        return None
    return ".".join(reversed(path[1:]))  # without the weight's own name


def _script_calls(torch, model, example_inputs,
                  kwargs) -> dict[str, tuple[_ScriptView, list[_Call]]]:
    """Run the TorchScript ``model`` with every recurrent op of its inlined graph tapped:
    each call's input, incoming state and outgoing states appended to lists the graph
    returns, and the order of the calls. Returns {module name: (view, [_Call, ...])}."""
    graph = model.inlined_graph  # a copy: the model itself is not changed
    self_value = next(iter(graph.inputs()))
    modules = {name: m for name, m in model.named_modules()
               if getattr(m, "original_name", None) in _KINDS}
    nodes = [(n, _OPS[k]) for k in _OPS for n in graph.findAllNodes(k, True)]
    first = next(iter(graph.nodes()))
    tensor = torch._C.TensorType.get()

    def new_list(elem):
        n = graph.create("prim::ListConstruct")
        n.output().setType(torch._C.ListType(elem))
        n.insertBefore(first)
        return n.output()

    def append(lst, value, after):
        n = graph.create("aten::append", [lst, value])
        n.output().setType(lst.type())
        n.insertAfter(after)
        return n

    order = new_list(torch._C.IntType.get())
    taps, views = [], []
    for j, (node, (original_name, outs)) in enumerate(nodes):
        name = _owner(node, self_value)
        where = f"the TorchScript op {node.kind()}"
        if name is None or name not in modules:
            raise GateflowError(f"{where} in the model's graph does not read a recurrent "
                                "module's weights (a functional call?); capture the eager model")
        if str(node.schema()).startswith(f"{node.kind()}.data("):
            raise GateflowError(f"module {name!r} ({original_name}) is called with a "
                                "PackedSequence; capture needs padded tensors")
        lists = [new_list(tensor), new_list(node.inputsAt(1).type())]
        lists += [new_list(tensor) for _ in outs]
        after = node
        index = graph.insertConstant(j)
        index.node().moveAfter(after)
        after = index.node()
        after = append(order, index, after)
        after = append(lists[0], node.inputsAt(0), after)
        after = append(lists[1], node.inputsAt(1), after)
        for lst, k in zip(lists[2:], outs):
            after = append(lst, node.outputsAt(k), after)
        taps.append(lists)
        views.append((name, _ScriptView(modules[name], original_name, node)))
    ran = {name for name, _ in views}
    scopes = {n.scopeName() for n in _all_nodes(graph.block())}
    for name, m in modules.items():
        if name not in ran and f"__module.{name}" in scopes:
            raise GateflowError(f"module {name!r} ({m.original_name}) of the traced model was "
                                "recorded as elementary ops, where capture cannot find its "
                                "calls; capture the eager model or torch.jit.script it")
    if not taps:
        return {}
    for lst in (order, *(v for lists in taps for v in lists)):
        graph.registerOutput(lst)
    graph.makeMultiOutputIntoTuple()
    run = torch._C._create_function_from_graph("gateflow_capture", graph)
    with torch.no_grad():
        try:
            out = run(model._c, *example_inputs, **kwargs)
        except GateflowError:
            raise
        except Exception as exc:
            raise GateflowError(f"the model raised {type(exc).__name__} when called with the "
                                f"example inputs: {clip(one_line(exc, None), 200)}") from exc
    values = list(out[1:])
    seen_order = values.pop(0)
    per_node, start = [], 0
    for lists in taps:  # each op's lists, in the order they were registered
        per_node.append(values[start:start + len(lists)])
        start += len(lists)
    cursor = [0] * len(taps)
    calls: dict[str, tuple[_ScriptView, list[_Call]]] = {}
    for j in seen_order:
        name, view = views[j]
        got = [v[cursor[j]] for v in per_node[j]]
        cursor[j] += 1
        calls.setdefault(name, (view, []))[1].append(_script_call(view, got))
    return calls


def _script_call(view: _ScriptView, got: list) -> _Call:
    """One tapped call as :class:`_Call`: the input time-major (T, B, d), the states
    (L·D, B, n)."""
    x, hx, *outs = got
    is_cell = view.original_name.endswith("Cell")
    lstm = view.original_name.startswith("LSTM")
    given = list(hx) if lstm else [hx]

    def as_state(t):
        t = t.detach()
        return (t.unsqueeze(0) if is_cell else t).clone()

    x = x.detach()
    if is_cell:
        x = x.unsqueeze(0)
    elif view.batch_first:
        x = x.transpose(0, 1)
    names = ("h", "c") if lstm else ("h",)
    return _Call(x=x.clone(), hx={s: as_state(v) for s, v in zip(names, given)},
                 out={s: as_state(v) for s, v in zip(names, outs)})


def _script_weights(module) -> dict[str, Any]:
    """A TorchScript recurrent module's weight tensors by attribute name."""
    return {k: t for k, t in module.named_parameters(recurse=False) if _WEIGHT.match(k)}


def capture_script(torch, model, example_inputs, kwargs) -> tuple[Captured, ...]:
    """:func:`gateflow.capture` of a TorchScript ``model`` (scripted or traced): its tapped
    graph run once on the example inputs, one record per recurrent module that ran."""
    before = {name: _snapshot(_script_weights(m), f"module {name!r}")
              for name, m in model.named_modules()
              if getattr(m, "original_name", None) in _KINDS}
    taps = _script_calls(torch, model, example_inputs, kwargs)
    if not taps:
        raise GateflowError(f"the TorchScript model ({model.original_name}) has no "
                            "nn.RNN/LSTM/GRU or *Cell op in its graph")
    for name, m in model.named_modules():
        changed = _changed(torch, before[name], _script_weights(m)) if name in before \
            else None
        if changed is not None:
            raise GateflowError(_changed_while_running(
                f"module {name!r} ({m.original_name})", changed, "the TorchScript model"))
    with torch.no_grad():
        return tuple(_build(torch, name, view, c, before[name], view.original_name,
                            _KINDS[view.original_name], view.notes)
                     for name, (view, c) in taps.items())

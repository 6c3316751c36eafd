"""A live PyTorch model: run it once, and record what each recurrent module computed with.

:func:`capture` runs ``model(*example_inputs, **kwargs)`` under ``torch.no_grad()`` with a
forward hook on every ``nn.RNN``/``LSTM``/``GRU`` and ``nn.RNNCell``/``LSTMCell``/``GRUCell``
inside it (found with ``model.named_modules()``, so nesting works: the name is the one
``gateflow inspect`` gives the module in the model's state_dict). Each module that ran gives
one :class:`Captured` record, in first-call order, with everything
:func:`gateflow.all_lags` needs to measure that module on the data it actually saw:

* ``params[(layer, direction)]``: the module's own weights in gateflow's names (float64),
  mapped by :func:`gateflow.from_torch_state_dict`, exactly as the file route maps them;
* ``inputs[(layer, direction)]``: the input sequence of that layer and direction,
  time-major (T, B, d), float64. Layer 0 reads the module's input (``batch_first``
  transposed, an unbatched (T, d) input as B = 1). Layer l > 0 reads the output of layer
  l − 1 (both directions, concatenated, for a bidirectional module): that is internal to
  PyTorch's kernel, so it is recomputed here in float64 by a one-layer ``nn.<kind>`` with
  layer l − 1's weights, from the same initial state (a float32 model's own layer l − 1
  output differs from it by float32 rounding). Dropout between layers (training mode) is
  not applied. The reverse direction's input is already time-reversed: gateflow runs the
  reverse direction forward over ``x[::-1]``, so its lag k is k steps *later* in the
  original time;
* ``s0[(layer, direction)]``: the initial states (``h``, and ``c`` for an LSTM), from the
  ``hx`` the module was given (``(L·D, B, n)``, layer-major, then direction), else zeros.

A TorchScript model (``torch.jit.script`` or ``torch.jit.trace``; forward hooks do not
run inside its graph) is captured from its graph instead: a copy of its inlined graph
appends each recurrent op's input and states to lists it returns (ops inside loops and
branches included), the op's module is the one whose weights it reads, and the module is
read as the nn.<kind> its ``original_name`` says (its hyperparameters from its constants,
or, traced, from the op's flags). The records are the eager model's, bit for bit. A traced
``*Cell`` is recorded by the tracer as elementary ops, which capture refuses by name.
``Captured.layout`` is the module's ``batch_first`` as an axis order.

``params`` are the weights as each module computed with them: read by a forward pre-hook
inside the call (so a ``torch.func.functional_call`` is recorded with the parameters it
swapped in, and a forward that changes the weights after a module ran does not change the
record). Weights that change while a module runs (a forward that modifies its own
weights), or between two calls of one module, are refused: the calls would not be one
recurrence with one set of parameters. A TorchScript model's weights are compared before
and after its run, and refused the same way when they changed.

A module called several times (an ``nn.GRUCell`` in a decoder's Python loop, an ``nn.LSTM``
fed one step at a time) gives one sequence of all its calls in call order, starting from the
state of the first call. ``carried`` says whether every call started from exactly the state
the previous call returned (``torch.equal``); when it did not, the calls are not one
recurrence, and ``note`` says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow._memory import check_fits
from gateflow.cells._record import Cell
from gateflow.cells._stack import stack
from gateflow.models._checks import as_cell, clip, one_line
from gateflow.models._model import direction_of, layer_of
from gateflow.models.formats._pytorch import from_torch_state_dict
from gateflow.models.formats._recurrent import DIRECTIONS, Recurrent

__all__ = ["Captured", "capture"]

Params = dict[str, np.ndarray]
Key = tuple[int, str]  # (layer, direction)

#: The PyTorch recurrent modules, by class name: (the module it is a step of, is a *Cell).
_KINDS = {"LSTM": ("LSTM", False), "GRU": ("GRU", False), "RNN": ("RNN", False),
          "LSTMCell": ("LSTM", True), "GRUCell": ("GRU", True), "RNNCell": ("RNN", True)}
_MATRICES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_WEIGHT = re.compile(r"^(?:weight|bias)_(?:ih|hh|hr)(?:_l\d+(?:_reverse)?)?$")


@dataclass(frozen=True, eq=False)
class Captured:
    """One recurrent module of a live model, as it ran (see the module docstring).

    ``params``, ``inputs`` and ``s0`` are keyed by ``(layer, direction)``; ``inputs`` are
    time-major (T, B, d) float64, the reverse direction's already time-reversed. ``calls``:
    how many times the module ran (their inputs are concatenated in call order);
    ``carried``: whether each call started from the state the previous one returned.
    """

    module: str  # its name in model.named_modules() (and the model's state_dict)
    kind: str  # "nn.LSTM", "nn.GRUCell", ...
    cell: str  # the gateflow cell: lstm, gru, rnn or rnn-relu
    layers: int
    directions: tuple[str, ...]
    hidden: int  # n
    input: int  # d of layer 0
    params: dict[Key, Params] = field(repr=False)
    inputs: dict[Key, np.ndarray] = field(repr=False)
    s0: dict[Key, dict[str, np.ndarray]] = field(repr=False)
    calls: int = 1
    carried: bool = True
    note: str = ""
    proj: int = 0  # nn.LSTM's proj_size (h has proj units, c has hidden); 0: none
    #: how the module read its input: "batch-major" (batch_first=True), "time-major", or
    #: "unknown" for a *Cell (one step per call; the sequence is the caller's)
    layout: str = "unknown"

    @property
    def bidirectional(self) -> bool:
        return len(self.directions) == 2

    @property
    def T(self) -> int:
        return int(self.inputs[(0, "forward")].shape[0])

    @property
    def B(self) -> int:
        return int(self.inputs[(0, "forward")].shape[1])

    @property
    def record(self) -> Recurrent:
        """The module as :func:`gateflow.find_models` would list it from the state_dict."""
        return Recurrent(module=self.module, framework="PyTorch", kind=self.kind,
                         cell=self.cell, cells=(self.cell,), layers=self.layers,
                         directions=self.directions, hidden=self.hidden, input=self.input,
                         proj=self.proj,
                         weights=lambda cell, layer, direction: self.params[(layer, direction)],
                         note=self.note, layout=self.layout)

    def describe(self, layer: int | str = 0, direction: str = "forward") -> str:
        """``nn.LSTM 'encoder.rnn', layer 1, forward`` for titles and tables."""
        name = f" {self.module!r}" if self.module else ""
        where = "all layers" if layer == "all" else f"layer {layer}"
        return f"{self.kind}{name}, {where}, {direction}"

    def keys(self) -> list[tuple[int | str, str]]:
        """Every (layer, direction) this module can be analysed at: each layer and direction,
        then ``("all", "forward")`` for a unidirectional stack."""
        out: list[tuple[int | str, str]] = [
            (k, d) for k in range(self.layers) for d in self.directions]
        if self.layers > 1 and not self.bidirectional:
            out.append(("all", "forward"))
        return out

    def selection(self, layer: int | str | None = None, direction: str | None = None
                  ) -> tuple[Cell, Params, np.ndarray, dict[str, np.ndarray]]:
        """``(cell, params, x, s0)`` of one layer (or ``"all"``, the unidirectional stack as
        one recurrence, with blocks ``h_l1/h_l0`` …) and direction, ready for
        ``gateflow.all_lags(cell, params, x, s0=s0)`` and :func:`gateflow.decay`."""
        record = self.record
        layer = layer_of(record, layer)
        direction = direction_of(record, direction)
        base = as_cell(self.cell)
        if layer == "all" and self.layers > 1:
            cell = stack(base, self.layers)
            params = {f"{p}_l{k}": v for k in range(self.layers)
                      for p, v in self.params[(k, direction)].items()}
            s0 = {f"{s}_l{k}": v for k in range(self.layers)
                  for s, v in self.s0[(k, direction)].items()}
            return cell, params, self.inputs[(0, direction)], s0
        key = (0 if layer == "all" else int(layer), direction)
        return base, dict(self.params[key]), self.inputs[key], dict(self.s0[key])


# -- one call of a module -----------------------------------------------------------------
@dataclass
class _Call:
    x: Any  # torch tensor (T, B, d), time-major, the module's dtype
    hx: dict[str, Any]  # "h" (and "c"): (L·D, B, n), the state it started from
    out: dict[str, Any]  # "h" (and "c"): (L·D, B, n), the state it returned


def _check_call(torch, name: str, module, kind: str, args, kwargs) -> None:
    """Refuse, before the module runs, what capture cannot read: a PackedSequence, an
    input that is not a tensor."""
    where = f"module {name!r} ({kind})" if name else kind
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, torch.nn.utils.rnn.PackedSequence):
        raise GateflowError(f"{where} was called with a PackedSequence; capture needs padded "
                            "tensors: pass the padded batch (T, B, d) to the model instead of "
                            "pack_padded_sequence(...)")
    if not isinstance(x, torch.Tensor):
        raise GateflowError(f"{where} was called with a {type(x).__name__}, not a tensor; "
                            "capture reads tensor inputs")


def _record(module, kind: str, is_cell: bool, args, kwargs, output) -> _Call:
    """The call's input (time-major, batched), incoming and outgoing states, as detached
    copies (checked by :func:`_check_call` before the module ran)."""
    x = args[0] if args else kwargs.get("input")
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    lstm = kind.startswith("nn.LSTM")
    x = x.detach()
    if is_cell:
        batched = x.dim() == 2
        x = (x if batched else x.unsqueeze(0)).unsqueeze(0)  # (1, B, d)
        h_out, c_out = output if lstm else (output, None)
    else:
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)
        elif bool(module.batch_first):
            x = x.transpose(0, 1)
        h_out, c_out = output[1] if lstm else (output[1], None)

    def as_state(t):  # (L·D, B, n)
        t = t.detach()
        if is_cell:
            t = t if batched else t.unsqueeze(0)
            return t.unsqueeze(0).clone()
        return (t if batched else t.unsqueeze(1)).clone()

    out = {"h": as_state(h_out)}
    if lstm:
        out["c"] = as_state(c_out)
    if hx is None:
        start = {s: v.new_zeros(v.shape) for s, v in out.items()}
    else:
        given = hx if lstm else (hx,)
        start = {s: as_state(v) for s, v in zip(("h", "c"), given)}
    return _Call(x=x.clone(), hx=start, out=out)


# -- building the records -------------------------------------------------------------------
def _numpy(t) -> np.ndarray:
    import torch

    return np.array(t.detach().to(device="cpu", dtype=torch.float64).numpy(), copy=True)


def _weights(held: dict[str, Any], layer: int, direction: str, is_cell: bool
             ) -> dict[str, Any]:
    """One layer and direction's PyTorch tensors (of ``held``, the module's weights as they
    were when it ran, by attribute name), named as a single-layer module's."""
    suffix = "" if is_cell else f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
    out = {}
    for m in _MATRICES:
        t = held.get(f"{m}{suffix}")
        if t is not None:
            out[f"{m}_l0"] = t
    return out


def _live(module, is_cell: bool) -> dict[str, Any]:
    """The module's weight tensors by attribute name (``weight_hh_l1_reverse``), as the
    module sees them now: inside a call, the ones the call computes with (those
    ``torch.func.functional_call`` swapped in, or a forward changed)."""
    if is_cell:
        suffixes = [""]
    else:
        directions = ("", "_reverse") if module.bidirectional else ("",)
        suffixes = [f"_l{k}{r}" for k in range(int(module.num_layers)) for r in directions]
    out = {}
    for s in suffixes:
        for m in _MATRICES:
            t = getattr(module, f"{m}{s}", None)
            if t is not None:
                out[f"{m}{s}"] = t
    return out


def _snapshot(live: dict[str, Any], where: str) -> dict[str, Any]:
    """A copy of the weights ``live``, sized from their shapes first (an expanded view is
    a few bytes until copied): the copy, and the float64 arrays made from it later."""
    check_fits(sum(t.numel() * (t.element_size() + 16) for t in live.values()),
               f"capturing the weights of {where}", "capture a smaller model")
    return {k: t.detach().clone() for k, t in live.items()}


def _changed(torch, held: dict[str, Any], live: dict[str, Any]) -> str | None:
    """The first weight of ``live`` whose bits differ from ``held`` (NaN included), or
    that is new or gone; None when every weight is as it was."""
    if set(held) != set(live):
        return next(iter(sorted(set(held) ^ set(live))))
    for k, t in live.items():
        a, b = held[k], t.detach()
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return k
        if not torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)):
            return k
    return None


def _kind_of(torch, module) -> tuple[str, bool]:
    """(``"LSTM"``, is a *Cell) of an nn.LSTM/GRU/RNN or *Cell (or a subclass), or of a
    TorchScript module's view (:class:`_ScriptView`)."""
    if isinstance(module, _ScriptView):
        return _KINDS[module.original_name]
    return next(v for k, v in _KINDS.items() if isinstance(module, getattr(torch.nn, k)))


def _cell_name(module, base: str) -> str:
    if getattr(module, "proj_size", 0):
        return "lstm-proj"  # h = P (o ⊙ tanh c) has proj_size units
    if base != "RNN":
        return base.lower()
    return "rnn" if module.nonlinearity == "tanh" else "rnn-relu"


def _one_layer(torch, module, held: dict[str, Any], base: str, layer: int, d: int):
    """A float64 single-layer nn.<base> with layer ``layer``'s weights (both directions),
    as they were when the module ran (``held``)."""
    extra = {"nonlinearity": module.nonlinearity} if base == "RNN" else {}
    if getattr(module, "proj_size", 0):
        extra["proj_size"] = module.proj_size
    one = getattr(torch.nn, base)(d, module.hidden_size, num_layers=1, bias=module.bias,
                                  bidirectional=module.bidirectional, dtype=torch.float64,
                                  **extra)
    sd = {}
    for direction in (DIRECTIONS if module.bidirectional else DIRECTIONS[:1]):
        tail = "_reverse" if direction == "reverse" else ""
        for k, t in _weights(held, layer, direction, False).items():
            sd[k + tail] = t.detach().to(device="cpu", dtype=torch.float64)
    one.load_state_dict(sd)
    return one


def _layer_inputs(torch, module, held: dict[str, Any], base: str,
                  calls: list[_Call]) -> list[list[Any]]:
    """Per layer, per call: the (T, B, d_l) float64 sequence that layer read (forward time)."""
    D = 2 if module.bidirectional else 1
    xs = [c.x.to(device="cpu", dtype=torch.float64) for c in calls]
    per_layer = [xs]
    for layer in range(1, module.num_layers):
        one = _one_layer(torch, module, held, base, layer - 1, per_layer[-1][0].shape[-1])
        below = []
        for c, x in zip(calls, per_layer[-1]):
            rows = slice((layer - 1) * D, layer * D)
            hx = tuple(c.hx[s][rows].to(device="cpu", dtype=torch.float64)
                       for s in (("h", "c") if base == "LSTM" else ("h",)))
            out, _ = one(x, hx if base == "LSTM" else hx[0])
            below.append(out)
        per_layer.append(below)
    return per_layer


def _build(torch, name: str, module, calls: list[_Call], held: dict[str, Any]) -> Captured:
    """The record of one module from its calls and ``held``, its weights as the calls used
    them (the same in every call: :func:`capture` refuses weights that change)."""
    cls = module.original_name if isinstance(module, _ScriptView) else type(module).__name__
    base, is_cell = _kind_of(torch, module)
    kind = f"nn.{base}Cell" if is_cell else f"nn.{base}"
    where = f"module {name!r} ({kind})" if name else kind
    cell = _cell_name(module, base)
    layers = 1 if is_cell else int(module.num_layers)
    directions = DIRECTIONS if (not is_cell and module.bidirectional) else DIRECTIONS[:1]
    notes = []
    if cls not in _KINDS:
        notes.append(f"a subclass ({cls}) of {kind}: read as {kind}")
    shape = calls[0].x.shape[1:]
    if any(c.x.shape[1:] != shape for c in calls):
        notes.append(f"called {len(calls)} times with different batch or input sizes; only "
                     "the first call is kept")
        calls = calls[:1]
    states = tuple(calls[0].out)
    carried = all(torch.equal(now.hx[s], before.out[s])
                  for before, now in zip(calls, calls[1:]) for s in states)
    if not carried:
        notes.append(f"the state is not carried from call to call (a call did not start from "
                     f"the state the previous one returned): the {len(calls)} calls, "
                     "concatenated here, are not one recurrence")
    if isinstance(module, _ScriptView):
        notes += module.notes
    if layers > 1 and module.training and module.dropout > 0:
        notes.append(f"dropout={module.dropout:g} between layers is active (training mode) "
                     "and is left out of the inputs of layers 1+; call model.eval() first")
    D = len(directions)
    if is_cell:
        per_layer = [[c.x.to(dtype=torch.float64) for c in calls]]
    else:
        per_layer = _layer_inputs(torch, module, held, base, calls)
    params: dict[Key, Params] = {}
    inputs: dict[Key, np.ndarray] = {}
    s0: dict[Key, dict[str, np.ndarray]] = {}
    for layer in range(layers):
        for j, direction in enumerate(directions):
            key = (layer, direction)
            sd = {k: _numpy(v) for k, v in _weights(held, layer, direction, is_cell).items()}
            try:
                params[key] = from_torch_state_dict(cell, sd)
            except GateflowError as exc:
                raise GateflowError(f"{where}, layer {layer}, {direction}: {exc}") from None
            seqs = [_numpy(x) for x in per_layer[layer]]
            if direction == "reverse":
                seqs = [s[::-1] for s in seqs]
            inputs[key] = np.ascontiguousarray(np.concatenate(seqs, axis=0))
            s0[key] = {s: _numpy(calls[0].hx[s][layer * D + j]) for s in states}
    return Captured(module=name, kind=kind, cell=cell, layers=layers, directions=directions,
                    hidden=int(module.hidden_size), input=int(module.input_size),
                    params=params, inputs=inputs, s0=s0, calls=len(calls), carried=carried,
                    note="; ".join(notes), proj=int(getattr(module, "proj_size", 0)),
                    layout="unknown" if is_cell else (
                        "batch-major" if module.batch_first else "time-major"))


# -- a TorchScript model: its recurrent ops tapped in its graph ------------------------------
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


def _changed_while_running(where: str, changed: str, during: str = "the module") -> str:
    return (f"{where}: its weight {clip(repr(changed), 60)} changed while {during} ran (a "
            "forward that modifies the weights?), so capture cannot tell which values it "
            "computed with; keep the weights fixed during the forward")


def capture(model, *example_inputs, **kwargs) -> tuple[Captured, ...]:
    """Run ``model(*example_inputs, **kwargs)`` once (no gradients) and record every
    ``nn.RNN``/``LSTM``/``GRU``/``RNNCell``/``LSTMCell``/``GRUCell`` that ran: its weights
    in gateflow's names, the exact inputs and initial states of each layer and direction.

    Returns one :class:`Captured` per module that ran, in the order they first ran; use
    ``captured.selection(layer, direction)`` for ``(cell, params, x, s0)``. The model is
    not changed (its hooks are removed, its mode is kept: call ``model.eval()`` first if
    it uses dropout). A TorchScript ``ScriptModule`` (scripted or traced) is captured from
    a tapped copy of its graph (see the module docstring).
    """
    try:
        import torch
    except ImportError:
        raise GateflowError("capture needs PyTorch; install it with "
                            "pip install 'gateflow[torch]'") from None
    if not isinstance(model, torch.nn.Module):
        raise GateflowError(f"capture needs a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
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
            return tuple(_build(torch, name, view, c, before[name])
                         for name, (view, c) in taps.items())
    kinds = tuple(getattr(torch.nn, k) for k in _KINDS)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]
    scripted = [name for name, m in model.named_modules()
                if isinstance(m, torch.jit.ScriptModule) and m.original_name in _KINDS]
    if scripted:
        raise GateflowError(f"module {scripted[0]!r} is a TorchScript module inside an eager "
                            "model, which capture cannot hook; capture the eager module, or "
                            "torch.jit.script the whole model")
    calls: dict[str, list[_Call]] = {}  # first-call order
    held: dict[str, dict[str, Any]] = {}  # each module's weights as its first call saw them
    modules = dict(found)

    def hooks_for(name: str, module):
        base, is_cell = _kind_of(torch, module)
        kind = f"nn.{base}Cell" if is_cell else f"nn.{base}"
        where = f"module {name!r} ({kind})" if name else kind

        def before(mod, args, kw):
            _check_call(torch, name, mod, kind, args, kw)
            # the weights this call computes with: read now, inside the call (a
            # functional_call's parameters are swapped in for the call's duration)
            live = _live(mod, is_cell)
            if name not in held:
                held[name] = _snapshot(live, where)
                return None
            changed = _changed(torch, held[name], live)
            if changed is not None:
                k = len(calls.get(name, ())) + 1
                raise GateflowError(
                    f"{where} ran with other weights in call {k} than in call 1 "
                    f"({clip(repr(changed), 60)} differs): its calls are not one recurrence "
                    "with one set of parameters; keep the weights fixed during the forward, "
                    "or capture one call at a time")
            return None

        def after(mod, args, kw, output):
            changed = _changed(torch, held[name], _live(mod, is_cell))
            if changed is not None:
                raise GateflowError(_changed_while_running(where, changed))
            calls.setdefault(name, []).append(_record(mod, kind, is_cell, args, kw, output))
            return None

        return before, after

    handles = []
    try:
        for name, m in found:
            before, after = hooks_for(name, m)
            handles.append(m.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(m.register_forward_hook(after, with_kwargs=True))
        with torch.no_grad():
            try:
                model(*example_inputs, **kwargs)
            except GateflowError:
                raise
            except Exception as exc:
                raise GateflowError(f"the model raised {type(exc).__name__} when called with "
                                    f"the example inputs: {clip(one_line(exc, None), 200)}"
                                    ) from exc
    finally:
        for h in handles:
            h.remove()
    if not calls:
        what = (f"{len(found)} such module(s), but none ran" if found else "none")
        raise GateflowError(f"{type(model).__name__} has no nn.RNN/LSTM/GRU or *Cell module that "
                            f"ran when called with the example inputs ({what}); gateflow "
                            "analyses PyTorch's own recurrent modules")
    with torch.no_grad():
        return tuple(_build(torch, name, modules[name], c, held[name])
                     for name, c in calls.items())

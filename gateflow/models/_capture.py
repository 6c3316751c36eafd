"""A live PyTorch model: run it once, and record what each recurrent module computed with.

:func:`capture` runs ``model(*example_inputs, **kwargs)`` under ``torch.no_grad()`` with a
forward hook on every ``nn.RNN``/``LSTM``/``GRU`` and ``nn.RNNCell``/``LSTMCell``/``GRUCell``
inside it (found with ``model.named_modules()``, so nesting works: the name is the one
``gateflow inspect`` gives the module in the model's state_dict). Each module that ran gives
one :class:`~gateflow.models._captured.Captured` record, in first-call order: its weights,
the inputs and initial states of each layer and direction (what a record holds, and how
several calls of one module make one sequence: :mod:`._captured`). ``Captured.layout`` is
the module's ``batch_first`` as an axis order.

``params`` are the weights as each module computed with them: read by a forward pre-hook
inside the call (so a ``torch.func.functional_call`` is recorded with the parameters it
swapped in, and a forward that changes the weights after a module ran does not change the
record). Weights that change while a module runs (a forward that modifies its own
weights), or between two calls of one module, are refused: the calls would not be one
recurrence with one set of parameters.

A TorchScript model (``torch.jit.script`` or ``torch.jit.trace``; forward hooks do not
run inside its graph) is captured from its graph instead (:mod:`._capture_script`).
"""

from __future__ import annotations

from typing import Any

from gateflow._errors import GateflowError
from gateflow.models._capture_script import capture_script
from gateflow.models._captured import (
    _KINDS,
    _MATRICES,
    Captured,
    _build,
    _Call,
    _changed,
    _changed_while_running,
    _snapshot,
)
from gateflow.models._checks import clip, one_line

__all__ = ["capture"]


# -- one call of a module, hooked ----------------------------------------------------------
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


def _kind_of(torch, module) -> tuple[str, bool]:
    """(``"LSTM"``, is a *Cell) of an nn.LSTM/GRU/RNN or *Cell (or a subclass)."""
    return next(v for k, v in _KINDS.items() if isinstance(module, getattr(torch.nn, k)))


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
        return capture_script(torch, model, example_inputs, kwargs)
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
        return tuple(_build(torch, name, modules[name], c, held[name],
                            type(modules[name]).__name__, _kind_of(torch, modules[name]))
                     for name, c in calls.items())

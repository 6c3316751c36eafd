"""The recurrent modules of a state dict in PyTorch's names: found, described, picked.

The PyTorch vocabulary, read from every container format (``.pt``, ``.safetensors``,
``.npz``):

* ``nn.RNN``/``nn.LSTM``/``nn.GRU``: ``weight_ih_l<k>``, ``weight_hh_l<k>``,
  ``bias_ih_l<k>``, ``bias_hh_l<k>`` for layer k, with ``_reverse`` for the second
  direction and ``weight_hr_l<k>`` for ``proj_size > 0``;
* ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell``: ``weight_ih``, ``weight_hh``, ``bias_ih``,
  ``bias_hh``;

each under any module prefix (``encoder.rnn.``): :func:`scan` lists one
:class:`~gateflow.models.formats._recurrent.Recurrent` per prefix, each checked (every
layer and direction complete, every shape an nn.<kind>'s), its weights mapped per layer
and direction by :func:`~gateflow.models.formats._pytorch.from_torch_state_dict`;
:func:`select` picks the single-layer part of a file for one cell. The gate count tells
LSTM (4) from GRU (3) from RNN (1); nothing tells nn.RNN's tanh from its relu, so that
module asks for ``--cell``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gateflow._errors import GateflowError, arg, as_given
from gateflow.models._checks import names
from gateflow.models.formats._pytorch import (
    _KEY,
    _MODULE_BY_GATES,
    _PROJECTED,
    _check_hr,
    from_torch_state_dict,
)
from gateflow.models.formats._raw import precision, where_of
from gateflow.models.formats._recurrent import Recurrent

__all__ = ["scan", "select"]

#: The cells an nn.<kind> can be, by kind (nn.RNN's nonlinearity is not in its weights).
_CELL_BY_MODULE = {"LSTM": ("lstm",), "GRU": ("gru",), "RNN": ("rnn", "rnn-relu")}


def _suffix(key: str) -> str:
    """``"_l1_reverse"`` of ``"weight_ih_l1_reverse"``; ``""`` for nn.*Cell keys."""
    m = _KEY.match(key)
    return m["suffix"] if m else ""


def _module_name(prefix: str) -> str:
    return prefix[:-1] if prefix.endswith(".") else prefix


def _groups(raw: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """PyTorch recurrent keys by module prefix, each with the prefix stripped."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for k, v in raw.items():
        m = _KEY.match(k)
        if m:
            groups.setdefault(m["prefix"], {})[k[len(m["prefix"]):]] = v
    return groups


def _family(cell: str) -> str:
    """``gru`` of ``gru[gate=hard_sigmoid(0.2,0.5)]``: a variant weighs what its family does
    (asked for only of a record whose file declares no activations)."""
    if "[" not in cell:
        return cell
    from gateflow.cells._activations import parse_name

    return parse_name(cell)[1]


def _describe(module: str, sd: dict[str, np.ndarray]) -> Recurrent:
    """One module's record, from its keys and shapes (checked: every layer and direction
    complete, every shape an nn.<kind>'s with the same sizes)."""
    where = f"module {module!r}" if module else "the state_dict"
    is_cell = "weight_hh" in sd or "weight_ih" in sd
    if is_cell and any(_suffix(k) for k in sd):
        raise GateflowError(f"{where} mixes nn.*Cell keys (weight_ih) and nn.RNN/LSTM/GRU keys "
                            f"(weight_ih_l0); save one module per prefix")
    suffixes = [""] if is_cell else sorted(
        {_suffix(k) for k in sd},
        key=lambda s: (int(s[2:].split("_")[0]), s.endswith("_reverse")))
    layers = len({s.split("_reverse")[0] for s in suffixes})
    reverse = any(s.endswith("_reverse") for s in suffixes)
    directions = ("forward", "reverse") if reverse else ("forward",)
    want_suffixes = [""] if is_cell else [
        f"_l{k}{r}" for k in range(layers) for r in ("", "_reverse")[:len(directions)]]
    missing = [f"weight_{m}{s}" for s in want_suffixes for m in ("ih", "hh")
               if f"weight_{m}{s}" not in sd]
    if missing:
        raise GateflowError(f"{where} misses {names(missing, 4)}; save the whole "
                            "state_dict() of the module")
    for k, a in sd.items():
        if a.dtype.kind not in "fiu":
            raise GateflowError(f"{k!r} has dtype {a.dtype}; PyTorch weights must be real numbers")
        if a.ndim != (2 if k.startswith("weight") else 1) or 0 in a.shape:
            raise GateflowError(f"{where}: {k!r} has shape {a.shape}, which no PyTorch "
                                "recurrent module has")
    hh, ih = sd[f"weight_hh{want_suffixes[0]}"], sd[f"weight_ih{want_suffixes[0]}"]
    hr = sd.get(f"weight_hr{want_suffixes[0]}")
    if hr is not None:
        _check_hr(f"weight_hr{want_suffixes[0]}", hr, hh, where)
        lacking = [f"weight_hr{s}" for s in want_suffixes if f"weight_hr{s}" not in sd]
        if lacking:
            raise GateflowError(f"{where} misses {names(lacking, 4)}: a projected LSTM has a "
                                "weight_hr per layer and direction; save the whole "
                                "state_dict() of the module")
    n = hr.shape[1] if hr is not None else hh.shape[1]
    proj = hr.shape[0] if hr is not None else 0
    if hh.shape[0] % n or hh.shape[0] // n not in _MODULE_BY_GATES:
        raise GateflowError(f"{where}: weight_hh{want_suffixes[0]} is {hh.shape[0]}x"
                            f"{hh.shape[1]}, not G*n x n for G = 1, 3 or 4 gates (nn.RNN, GRU, "
                            "LSTM)")
    g = hh.shape[0] // n
    kind = _MODULE_BY_GATES[g]
    out = proj or n
    for s in want_suffixes:
        layer = int(s[2:].split("_")[0]) if s else 0
        d = ih.shape[1] if layer == 0 else out * len(directions)
        want = {f"weight_ih{s}": (g * n, d), f"weight_hh{s}": (g * n, out),
                f"bias_ih{s}": (g * n,), f"bias_hh{s}": (g * n,)}
        if proj:
            want[f"weight_hr{s}"] = (proj, n)
        for k, shape in want.items():
            if k in sd and sd[k].shape != shape:
                raise GateflowError(f"{where}: {k!r} has shape {sd[k].shape}; expected {shape} "
                                    f"for an nn.{kind} with hidden_size={n}"
                                    + (f", proj_size={proj}" if proj else ""))
        has_b = [f"bias_ih{s}" in sd, f"bias_hh{s}" in sd]
        if any(has_b) and not all(has_b):
            raise GateflowError(f"{where} misses bias_{'hh' if has_b[0] else 'ih'}{s}; save "
                                "the whole state_dict() of the module")
    extra = sorted(set(sd) - {f"{m}{s}" for s in want_suffixes for m in (
        "weight_ih", "weight_hh", "bias_ih", "bias_hh", *(("weight_hr",) if proj else ()))})
    if extra:
        raise GateflowError(f"{where}: unexpected keys {names(extra, 4)} for an nn.{kind} with "
                            f"{layers} layer(s)")
    cells = (_PROJECTED,) if proj else _CELL_BY_MODULE[kind]
    torch_kind = f"nn.{kind}Cell" if is_cell else f"nn.{kind}"
    note = ""
    if kind == "RNN":
        note = (f"{torch_kind}'s nonlinearity (tanh or relu) is not in its weights: give "
                f"{as_given('cell')} rnn or {as_given('cell')} rnn-relu")
    if proj:
        note = f"proj_size={proj}: h has {proj} units and c has {n}"

    def weights(cell: str, layer: int, direction: str) -> dict[str, np.ndarray]:
        s = "" if is_cell else f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
        one = {f"{m}_l0": sd[f"{m}{s}"] for m in ("weight_ih", "weight_hh", "bias_ih",
                                                   "bias_hh", "weight_hr") if f"{m}{s}" in sd}
        return from_torch_state_dict(_family(cell), one)

    return Recurrent(module=module, framework="PyTorch", kind=torch_kind,
                     cell=None if len(cells) > 1 else cells[0], cells=cells, layers=layers,
                     directions=directions, hidden=n, input=ih.shape[1], proj=proj,
                     weights=weights, note=note)


def scan(raw: dict[str, np.ndarray]) -> tuple[Recurrent, ...]:
    """Every PyTorch recurrent module in a file's arrays (keys ``weight_ih_l0`` …, or
    ``weight_ih`` … for the ``*Cell`` modules, under any prefix), in the file's order, with
    where the reader found them (a checkpoint's key) and the precision they were stored in
    when it was below float32 (:mod:`._raw`)."""
    out = []
    for prefix, sd in _groups(raw).items():
        found = _describe(_module_name(prefix), sd)
        what = f"module {found.module!r}" if found.module else "the state dict"
        out.append(replace(found, where=where_of(raw, prefix), assumed=(
            *found.assumed, *precision(raw, [prefix + k for k in sd], what))))
    return tuple(out)


def select(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The single-layer PyTorch part of ``raw`` (prefix stripped), or None for gateflow names.
    Several modules, several layers or two directions are refused here, with the options
    that pick one (:func:`gateflow.load_model` reads them all)."""
    groups = _groups(raw)
    if not groups:
        return None
    if len(groups) > 1:
        listed = ", ".join(repr(_module_name(p)) for p in groups)
        raise GateflowError(f"found PyTorch recurrent weights of {len(groups)} modules "
                            f"({listed}); pick one with {arg('module')} NAME")
    ((prefix, sd),) = groups.items()
    unsupported = sorted(k for k in sd if _suffix(k) not in ("", "_l0"))
    if unsupported:
        why = ("bidirectional" if any(k.endswith("_reverse") for k in unsupported)
               else "multi-layer")
        raise GateflowError(f"the weights are from a {why} module ({names(unsupported, 4)}); "
                            f"pick one with {arg('layer')} L and {arg('direction')} "
                            "forward|reverse")
    return {(k + "_l0" if not _suffix(k) else k): v for k, v in sd.items()}

"""Keras: the recurrent layers a model config names, with their weights.

* Keras 3 (``config.json`` with ``model.weights.h5``): the weights of a model's layers are
  filed under ``layers/<class in snake case>`` (``lstm``, ``lstm_1``, ... in the order of
  ``model.layers``; a Sequential's InputLayer is not one of them), and a weights group's
  ``vars`` attribute ``name`` says the layer's name, which wins where the two disagree.
  Nested models are walked; their layers are named ``outer/inner``.
* Legacy Keras 2 / tf.keras ``.h5``: ``model_weights/<layer>`` holds each top-level layer's
  variables, listed in its ``weight_names`` attribute; a nested model's group lists all of
  its layers' variables, told apart by their first name component.

gateflow reads LSTM, GRU, SimpleRNN, CuDNNLSTM, CuDNNGRU, RNN of an LSTMCell, GRUCell or
SimpleRNNCell, and Bidirectional of those; a layer of another class that looks recurrent
(ConvLSTM2D, an RNN of a custom or stacked cell, a custom LSTM) is listed as skipped.
Custom classes that took a built-in's name (``registered_name`` differs) are not trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from gateflow.models._checks import clip
from gateflow.models.formats._keras_vars import (
    DEPTH,
    GATES,
    Layer,
    cell_vars,
    container_of,
    halves,
    invalid,
    keras3_inferred,
    legacy_side,
    vars_name,
    weight_names,
)

__all__ = ["keras3_model", "legacy_model"]

_CUDNN = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}  # tf.keras 1/2: fixed sigmoid and tanh
_CELL_CLASSES = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
_RECURRENT_LOOKING = re.compile(r"LSTM|GRU|RNN|Recurrent", re.IGNORECASE)
_Unit = tuple[str, str, dict, "dict | None", bool]


# -- Keras 3: config.json with model.weights.h5 -------------------------------------------
def _snake(name: str) -> str:
    """Keras 3's ``to_snake_case``: how it files a layer of class ``name``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_items(config: dict) -> list | None:
    """The layer configs of a model config, or None when it lists no layers."""
    inner = config.get("config")
    if isinstance(inner, list):  # Keras 2.0-2.2 Sequential: the list itself
        return inner
    if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
        return inner["layers"]
    return None


def _name(item: dict) -> str:
    conf = item.get("config")
    name = conf.get("name") if isinstance(conf, dict) else None
    name = name if isinstance(name, str) else item.get("name")
    if not isinstance(name, str):
        raise ValueError(f"a {clip(str(item.get('class_name')), 40)} layer has no name")
    return name


def keras3_model(config: dict, f, path: Path, skipped: list[str]) -> list[Layer]:
    """The recurrent layers of a Keras 3 model config, with their weights; a model that
    lists no layers (a subclassed one) is read from its weights' shapes."""
    items = _layer_items(config)
    if items is None or container_of(f) is None:  # a subclassed model: only shapes tell
        return list(keras3_inferred(f, "", path, 0, skipped))
    return list(_keras3_walk(config, f, "", path, 0, skipped))


def _keras3_walk(config: dict, group, prefix: str, path: Path, depth: int,
                 skipped: list[str]) -> Iterator[Layer]:
    if depth > DEPTH:
        raise invalid(path, f"models are nested more than {DEPTH} deep")
    items, container = _layer_items(config) or [], container_of(group)
    if container is None:
        return
    sequential = config.get("class_name") == "Sequential"
    used: dict[str, int] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a layer config is not a JSON object")
        cls = str(item.get("class_name"))
        if sequential and cls == "InputLayer":
            continue  # Sequential.layers leaves it out
        key = _unique(_snake(cls), used)
        name = _name(item)
        sub = _find(container, key, name)
        module = f"{prefix}{name}"
        if _layer_items(item) is not None:
            if sub is not None:
                yield from _keras3_walk(item, sub, f"{module}/", path, depth + 1, skipped)
            continue
        unit = _unit(item)
        if unit is None:
            _skip(item, module, skipped)
            continue
        if sub is None:
            raise invalid(path, f"layer {module!r} has no weights group (expected "
                          f"layers/{key})")
        yield _keras3_layer(item, unit, sub, module, path)


def _unique(name: str, used: dict[str, int]) -> str:
    """Keras 3's ``_get_unique_name``: ``lstm``, ``lstm_1``, ``lstm_2``, ..."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _find(container, key: str, name: str):
    """The weights group of layer ``name``, filed under ``key``; by its recorded name when
    the file records names and the two disagree."""
    group = container.get(key)
    if group is not None and vars_name(group) in (None, name):
        return group
    for child in container.values():
        if vars_name(child) == name:
            return child
    return group


def _builtin(item: dict) -> bool:
    """A Keras layer or cell, not a custom class that took a built-in's name."""
    registered = item.get("registered_name")
    return registered in (None, item.get("class_name"))


# -- the layers gateflow reads, by their config -------------------------------------------
def _unit(item: dict) -> _Unit | None:
    """(family, kind, cell config, backward config or None, cuDNN?) for the layers gateflow
    reads: LSTM, GRU, SimpleRNN, CuDNNLSTM, CuDNNGRU, RNN of one of their cells, and
    Bidirectional of those."""
    cls, conf = item.get("class_name"), item.get("config")
    if not _builtin(item) or not isinstance(conf, dict):
        return None
    if cls in GATES:
        return str(cls), f"{cls} layer", conf, None, False
    if cls in _CUDNN:
        return _CUDNN[str(cls)], f"{cls} layer", conf, None, True
    if cls == "RNN":
        cell = conf.get("cell")
        if isinstance(cell, dict) and cell.get("class_name") in _CELL_CLASSES and _builtin(cell):
            cell_conf = cell.get("config")
            merged = {**(cell_conf if isinstance(cell_conf, dict) else {}),
                      "go_backwards": conf.get("go_backwards", False)}
            if "time_major" in conf:
                merged["time_major"] = conf["time_major"]
            return _CELL_CLASSES[cell["class_name"]], f"RNN({cell['class_name']}) layer", \
                merged, None, False
        return None
    if cls == "Bidirectional":
        inner = conf.get("layer")
        found = _unit(inner) if isinstance(inner, dict) else None
        if found is None or found[3] is not None:
            return None
        family, kind, fwd, _, cudnn = found
        back = conf.get("backward_layer")
        back_found = _unit(back) if isinstance(back, dict) else None
        if back_found is not None and back_found[0] == family:
            bwd = back_found[2]
        else:  # Keras builds it from the forward layer, running the other way
            bwd = {**fwd, "go_backwards": not fwd.get("go_backwards", False)}
        return family, f"Bidirectional({kind.removesuffix(' layer')}) layer", fwd, bwd, cudnn
    return None


def _skip(item: dict, module: str, skipped: list[str]) -> None:
    """Note a layer that looks recurrent (by its class, or a wrapped layer's or cell's) but
    that gateflow does not read: ConvLSTM2D, an RNN of a custom cell, a custom LSTM..."""
    names: list[str] = []
    todo = [item]
    while todo and len(names) < 8:
        cur = todo.pop()
        names.append(str(cur.get("registered_name") or cur.get("class_name")))
        conf = cur.get("config")
        if isinstance(conf, dict):
            todo += [v for k, v in conf.items() if k in ("layer", "cell", "backward_layer")
                     and isinstance(v, dict)]
            cells = conf.get("cells")  # StackedRNNCells
            if isinstance(cells, list):
                todo += [c for c in cells[:8] if isinstance(c, dict)]
    if any(_RECURRENT_LOOKING.search(n) for n in names):
        what = clip("(".join(names) + ")" * (len(names) - 1), 80)
        skipped.append(f"Keras layer {clip(repr(module), 60)} ({what}): not a layer gateflow "
                       "reads (it reads LSTM, GRU, SimpleRNN, their cuDNN forms, RNN of their "
                       "cells, Bidirectional of those)")


def _direction(conf: dict) -> str:
    return "reverse" if conf.get("go_backwards") else "forward"


def _keras3_layer(item: dict, unit: _Unit, group, module: str, path: Path) -> Layer:
    family, kind, fwd, bwd, cudnn = unit
    if bwd is None:
        side = cell_vars(group, path, module)
        if side is None:
            raise invalid(path, f"layer {module!r} has no cell/vars weights")
        return Layer(module, kind, family, fwd, {_direction(fwd): side}, cudnn=cudnn)
    sides = {}
    for key, conf in (("forward_layer", fwd), ("backward_layer", bwd)):
        side = cell_vars(group[key], path, f"{module}/{key}") if key in group else None
        if side is None:
            raise invalid(path, f"layer {module!r} has no {key}/cell/vars weights")
        sides[_direction(conf)] = side
    if len(sides) != 2:
        raise invalid(path, f"both halves of layer {module!r} run the same way")
    return Layer(module, kind, family, fwd, sides, back=bwd, cudnn=cudnn)


# -- legacy Keras 2 / tf.keras .h5: model_config with model_weights ----------------------
def legacy_model(config: dict, weights, path: Path, skipped: list[str], prefix: str = "",
                 top=None, depth: int = 0) -> Iterator[Layer]:
    """The recurrent layers of a legacy model config, weights from ``model_weights``: each
    top-level layer's group lists its variables in ``weight_names``; a nested model's group
    lists all of its layers' variables, told apart by their first name component."""
    if depth > DEPTH:
        raise invalid(path, f"models are nested more than {DEPTH} deep")
    for item in _layer_items(config) or []:
        if not isinstance(item, dict):
            raise ValueError("a layer config is not a JSON object")
        name = _name(item)
        group = top if top is not None else (weights[name] if name in weights else None)
        if group is None:
            continue
        if _layer_items(item) is not None:
            yield from legacy_model(item, weights, path, skipped, f"{prefix}{name}/", group,
                                    depth + 1)
            continue
        unit = _unit(item)
        if unit is None:
            _skip(item, f"{prefix}{name}", skipped)
            continue
        names = weight_names(group)
        if top is not None:
            names = [n for n in names if n.split("/")[0] == name]
        yield _legacy_layer(unit, group, names, f"{prefix}{name}", path)


def _legacy_layer(unit: _Unit, group, names: list[str], module: str, path: Path) -> Layer:
    family, kind, fwd, bwd, cudnn = unit
    if bwd is None:
        return Layer(module, kind, family, fwd, {_direction(fwd): legacy_side(
            group, names, module, path)}, cudnn=cudnn)
    fwd_names, bwd_names = halves(names)
    sides = {_direction(fwd): legacy_side(group, fwd_names, f"{module} (forward)", path),
             _direction(bwd): legacy_side(group, bwd_names, f"{module} (backward)", path)}
    if len(sides) != 2:
        raise invalid(path, f"both halves of layer {module!r} run the same way")
    return Layer(module, kind, family, fwd, sides, back=bwd, cudnn=cudnn)

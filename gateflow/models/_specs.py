"""What a run is given, as typed records checked once where they are made.

* :class:`InitSpec` — generated weights: hidden size n, input size d, the cell's other
  sizes, the initialisation scheme and its scales, the memory gate's bias, the seed.
* :class:`InputSpec` — the inputs: generated (T steps, B sequences, distribution, scale,
  seed) or read from a ``.npy`` file, with the order of its axes.
* :class:`ModelRef` — one module of a model file: path, module, layer, direction, the
  cell when the file cannot say it, and the names to rename first.

Every default is written here, once: the command line reads its option defaults from these
records (``--help`` shows them), the jobs take the records. Each field is checked in
``__post_init__`` and a bad one is a :class:`GateflowError` that names the field, which is
the parameter's name (``hidden``, ``steps``: :func:`gateflow._errors.arg`), so a Python
caller reads ``hidden must be …`` and the command line's user ``--hidden must be …``.

``given`` records which fields the caller set (the command line: the options typed; a
Python caller: the keywords passed, see :func:`take`). A record of generated data next to
a file says which of its options do not apply, naming them, without any field standing
for "not given".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any, TypeVar

from gateflow._errors import GateflowError, arg
from gateflow._validate import is_integer_text, shown
from gateflow.models._inputs import DISTS
from gateflow.models._params import SCHEMES
from gateflow.models.formats._recurrent import DIRECTIONS

__all__ = ["SCHEMES", "DISTS", "InitSpec", "InputSpec", "ModelRef", "layer_index", "take"]

def _count(value, name: str, why: str = "", symbol: str = "") -> int:
    """``value`` as an int >= 1 (Python or NumPy integers; not bool, float or str)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise GateflowError(f"{arg(name)}{symbol} must be a positive integer, got "
                            f"{shown(value)}{why}")
    return int(value)


def _number(value, name: str, *, lo: float | None = None) -> float:
    """``value`` as a finite float, ``>= lo`` when given."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, Real):
        raise GateflowError(f"{arg(name)} must be a real number, got {shown(value)}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise GateflowError(f"{arg(name)} must be a finite number, got {shown(value)}")
    if lo is not None and v < lo:
        need = "a finite number >= 0" if lo == 0 else f">= {lo:g}"
        raise GateflowError(f"{arg(name)} must be {need}, got {shown(value)}")
    return v


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 0:
        raise GateflowError(f"{arg('seed')} must be an integer >= 0, got {shown(value)}")
    return int(value)


def _sizes(value) -> tuple[tuple[str, int], ...] | None:
    """A cell's other sizes as ``(("p", 16),)``: from a mapping, or the text ``"p=16"``
    (comma-separated ``name=value``). Which names a cell has is checked with the cell."""
    if value is None:
        return None
    if isinstance(value, str):
        out: dict[str, int] = {}
        for item in value.split(","):
            name, sep, number = item.partition("=")
            name, number = name.strip(), number.strip()
            if not sep or not name.isidentifier() or name in out:
                raise GateflowError(f"{arg('sizes')} takes name=value pairs, e.g. p=16; got "
                                    f"{shown(item)}")
            if not is_integer_text(number) or number[0] in "+-" or int(number) < 1:
                raise GateflowError(f"{arg('sizes')} {name} must be a positive integer "
                                    f"(digits 0-9), got {shown(number)}")
            out[name] = int(number)
        return tuple(out.items())
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = dict(value)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise GateflowError(f"{arg('sizes')} must be a dict of a cell's other sizes by name, "
                            f"e.g. {{'p': 16}}, or the text 'p=16'; got {shown(value)}")
    return tuple((k, _count(v, "sizes", f" (size {k})")) for k, v in value.items())


#: ``given`` when the caller does not say it: the fields that differ from their defaults.
_UNSAID: frozenset[str] = frozenset({"<not said>"})


def _given(record: Any, given: frozenset[str]) -> frozenset[str]:
    """The fields the caller set: ``given`` when the caller says, else those that differ
    from their defaults."""
    if given is not _UNSAID:
        return frozenset(given)
    return frozenset(f.name for f in fields(record) if f.name != "given"
                     and getattr(record, f.name) != f.default)


@dataclass(frozen=True)
class InitSpec:
    """Generated weights (:func:`gateflow.init_params`): n = ``hidden``, d = ``input_size``
    (None: n, or the inputs file's d), the cell's other ``sizes`` (``{"p": 16}`` or
    ``"p=16"``; default n // 2), the ``scheme`` and its scales, the memory gate's bias
    (``gate_bias``, or ``chrono`` = T_max), and the ``seed``."""

    hidden: int = 64
    input_size: int | None = None
    sizes: tuple[tuple[str, int], ...] | None = None
    scheme: str = SCHEMES[0]
    sigma_w: float = 1.0
    sigma_v: float = 1.0
    sigma_b: float = 0.0
    gate_bias: float | None = None
    chrono: float | None = None
    seed: int = 0
    given: frozenset[str] = field(default=_UNSAID, compare=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "hidden", _count(self.hidden, "hidden", symbol=" (n)"))
        if self.input_size is not None:
            put(self, "input_size", _count(self.input_size, "input_size", symbol=" (d)"))
        put(self, "sizes", _sizes(self.sizes))
        if not isinstance(self.scheme, str) or self.scheme not in SCHEMES:
            raise GateflowError(f"unknown {arg('scheme')} {shown(self.scheme)}; use one of "
                                f"{', '.join(SCHEMES)}")
        for name in ("sigma_w", "sigma_v", "sigma_b"):
            put(self, name, _number(getattr(self, name), name, lo=0))
        if self.gate_bias is not None and self.chrono is not None:
            raise GateflowError(f"{arg('gate_bias')} and {arg('chrono')} both set the memory "
                                "bias; give only one of them")
        if self.gate_bias is not None:
            put(self, "gate_bias", _number(self.gate_bias, "gate_bias"))
        if self.chrono is not None:
            chrono = _number(self.chrono, "chrono")
            if chrono < 2:
                raise GateflowError(f"{arg('chrono')} T_max must be >= 2 (timescales range "
                                    f"over [2, T_max]), got {chrono:g}; use the longest "
                                    "dependency length you expect")
            put(self, "chrono", chrono)
        put(self, "seed", _seed(self.seed))
        put(self, "given", _given(self, self.given))

    @property
    def size_map(self) -> dict[str, int] | None:
        """``sizes`` as the dict :func:`gateflow.init_params` takes."""
        return None if self.sizes is None else dict(self.sizes)

    @property
    def memory_gate(self) -> dict[str, float | None]:
        """The options that set the memory gate's bias: ``gate_bias``, ``chrono``."""
        return {"gate_bias": self.gate_bias, "chrono": self.chrono}

    def without_gate(self) -> InitSpec:
        """The same weights with the memory gate left to the scheme (for a cell without
        one, in a run of several cells)."""
        return InitSpec(**{**_values(self), "gate_bias": None, "chrono": None},
                        given=self.given - {"gate_bias", "chrono"})

    def config(self) -> dict[str, Any]:
        """:func:`gateflow.init_params`' keyword arguments (and the weights' provenance)."""
        return {"scheme": self.scheme, "sigma_w": self.sigma_w, "sigma_v": self.sigma_v,
                "sigma_b": self.sigma_b, "gate_bias": self.gate_bias, "chrono": self.chrono}


@dataclass(frozen=True)
class InputSpec:
    """The inputs x (T, B, d): read from ``path`` (a ``.npy``; ``batch_first`` True reads
    it as (B, T, d), False as (T, B, d), None as the model reads it), or generated:
    ``steps`` T, ``batch`` B, ``dist`` and ``scale`` (:func:`gateflow.make_inputs`), drawn
    with ``seed`` + 1 (the run's seed: its weights are drawn with ``seed``)."""

    steps: int = 100
    batch: int = 4
    dist: str = DISTS[0]
    scale: float = 1.0
    seed: int = 0
    path: str | None = None
    batch_first: bool | None = None
    given: frozenset[str] = field(default=_UNSAID, compare=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "steps", _count(self.steps, "steps", "; inputs need at least one time step",
                                  " (T)"))
        put(self, "batch", _count(self.batch, "batch", "; inputs need at least one sequence",
                                  " (B)"))
        if not isinstance(self.dist, str) or self.dist not in DISTS:
            raise GateflowError(f"unknown {arg('dist')} {shown(self.dist)}; use one of "
                                f"{', '.join(DISTS)}")
        put(self, "scale", _number(self.scale, "scale"))
        put(self, "seed", _seed(self.seed))
        if self.path is not None and not str(self.path).strip():
            raise GateflowError(f"the {arg('inputs')} path is empty; give a file name")
        if self.batch_first is not None:
            import numpy as np

            if not isinstance(self.batch_first, (bool, np.bool_)):
                raise GateflowError(f"{arg('batch_first')} must be True, False or None, got "
                                    f"{shown(self.batch_first)}")
            if self.path is None:
                raise GateflowError(f"{arg('batch_first')} says how an {arg('inputs')} file's "
                                    f"axes are read; drop it or give {arg('inputs')}")
            put(self, "batch_first", bool(self.batch_first))
        put(self, "given", _given(self, self.given))

    @property
    def generated(self) -> bool:
        return self.path is None

    @property
    def input_seed(self) -> int:
        """The seed the inputs are drawn with: not the weights' own (one generator stream
        would correlate x with W)."""
        return self.seed + 1


def layer_index(layer) -> int | str | None:
    """A layer as gateflow reads one: an index >= 0 (an int, or its ASCII digits), or
    ``"all"``, or None (not given); anything else names ``layer``."""
    if layer is None or layer == "all":
        return layer
    if isinstance(layer, str) and is_integer_text(layer.strip()) and layer.strip()[0] != "+":
        layer = int(layer)  # ASCII digits, bounded: not '１', not 5000 digits
    if isinstance(layer, bool) or not isinstance(layer, Integral) or int(layer) < 0:
        raise GateflowError(f"{arg('layer')} {shown(layer)} is out of range: give a layer "
                            "index 0, 1, … or all")
    return int(layer)


@dataclass(frozen=True)
class ModelRef:
    """One module of the model file at ``path``: ``module`` (needed when the file holds
    several), ``layer`` (an index, or ``"all"``: the stack as one recurrence),
    ``direction`` (``"forward"``/``"reverse"``, needed for a bidirectional module),
    ``cell`` (when the file cannot say it; one that contradicts the file is refused when
    the file is read) and ``rename`` (the array names to map first, ``{"enc_*": "*"}``).
    A ``path`` with ``{cell}`` is one parameter file per cell (several cells)."""

    path: str
    module: str | None = None
    layer: int | str | None = None
    direction: str | None = None
    cell: Any = None
    rename: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.module is not None and not isinstance(self.module, str):
            raise GateflowError(f"{arg('module')} must be a module name (a string), got "
                                f"{shown(self.module)}")
        object.__setattr__(self, "layer", layer_index(self.layer))
        if self.direction is not None:
            if not isinstance(self.direction, str) or self.direction not in DIRECTIONS:
                raise GateflowError(f"{arg('direction')} must be forward or reverse, got "
                                    f"{shown(self.direction)}")
        if self.rename is not None and not isinstance(self.rename, Mapping):
            raise GateflowError(f"{arg('rename')} must be a mapping of old to new array names, "
                                f"got {type(self.rename).__name__}; e.g. "
                                "{'enc_w_ih': 'weight_ih_l0'} or {'enc_*': '*'}")

    @classmethod
    def from_options(cls, weights, *, module=None, layer=None, direction=None, rename=None,
                     cell=None) -> ModelRef | None:
        """The model file a caller's options name: None without ``weights`` (the options
        that pick a module, or rename its arrays, need the file)."""
        if weights is not None:
            return cls(weights, module=module, layer=layer, direction=direction, cell=cell,
                       rename=rename)
        picks = [k for k, v in (("module", module), ("layer", layer),
                                ("direction", direction)) if v is not None]
        if picks:
            verb = "picks" if len(picks) == 1 else "pick"
            raise GateflowError(f"{', '.join(arg(k) for k in picks)} {verb} a module of a model "
                                f"file; give the file with {arg('weights')} FILE")
        if rename is not None:
            raise GateflowError(f"{arg('rename')} renames the arrays of a model file; give it "
                                f"with {arg('weights')}")
        return None

    @property
    def picks(self) -> tuple[str, ...]:
        """The options that pick a module of the file (``module``, ``layer``,
        ``direction``) that were given."""
        return tuple(k for k in ("module", "layer", "direction") if getattr(self, k) is not None)


R = TypeVar("R", InitSpec, InputSpec)


def _values(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name != "given"}


def take(kind: type[R], options: dict[str, Any], *, keep: tuple[str, ...] = ()) -> R:
    """A ``kind`` record from the keyword arguments a Python caller passed: its fields are
    popped from ``options`` (those in ``keep`` are only read: another record takes them
    too), and ``given`` is the fields passed; the rest keep their defaults."""
    names = {f.name for f in fields(kind)} - {"given"}
    mine = {k: options[k] if k in keep else options.pop(k) for k in list(options)
            if k in names}
    return kind(**mine, given=frozenset(mine))

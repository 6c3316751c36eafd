"""Arrays in a framework's layout under names of their own, and renaming arrays.

Recognised without help, from the end of each name and the shapes (every array container:
``.npz``, ``.safetensors``, ``.pt``), each group of arrays sharing a prefix:

* PyTorch's suffixes ``w_ih``/``weight_ih``, ``w_hh``/``weight_hh``, ``b_ih``/``bias_ih``,
  ``b_hh``/``bias_hh`` (optionally ``_l<k>`` and ``_reverse``, as nn.RNN/LSTM/GRU name
  layers and directions) after a separator (``enc_w_ih``, ``enc/w_ih``): the arrays are
  read as nn.LSTM (4n rows), nn.GRU (3n) or nn.RNN (n, which needs ``--cell``) weights,
  checked as PyTorch's own names are (:func:`._torch_modules._describe`);
* Keras's ``kernel`` (d × G·n), ``recurrent_kernel`` (n × G·n) and ``bias`` (G·n, or 2 × 3n
  for a GRU with ``reset_after=True``), TensorFlow's ``:0`` allowed: LSTM (G = 4, gates
  i, f, c, o), GRU (3: z, r, h; bias (2, 3n): cell ``gru``, (3n,): Cho's form ``gru-cho``)
  or SimpleRNN (1, which needs ``--cell``).

What was inferred is said in the module's ``assumed`` line. Arrays that end like recurrent
weights but fit no module, and, in a file where nothing was found, every array that is not
a gateflow parameter name, are listed in :class:`Found.skipped` with the way out: a
``rename`` mapping (``--map OLD=NEW``), applied by :func:`rename` before the vocabularies
read the arrays. A mapping entry is exact (``"enc_w_ih": "weight_ih_l0"``) or a pattern
with one ``*`` on each side, which stands for the same non-empty text in both
(``"enc_*": "rnn.*"``, ``"*:0": "*"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from gateflow._errors import GateflowError, arg, as_given
from gateflow._validate import shown
from gateflow.cells._library import CELLS
from gateflow.models._checks import clip, names
from gateflow.models.formats import _pytorch, _torch_modules
from gateflow.models.formats._raw import Raw, precision, where_of
from gateflow.models.formats._recurrent import Found, Recurrent

__all__ = ["diagnose", "parse_map", "rename", "scan", "select", "to_params"]

_SEP = r"[._/:\-]"
_TF = re.compile(r":\d+$")  # TensorFlow's ":0" after a variable's name
_TORCH_LIKE = re.compile(
    rf"^(?P<prefix>(?:.*{_SEP})?)(?P<name>w_ih|w_hh|b_ih|b_hh|weight_ih|weight_hh|bias_ih"
    rf"|bias_hh)(?P<suffix>(?:_l\d+(?:_reverse)?)?)$")
_KERAS_LIKE = re.compile(rf"^(?P<prefix>(?:.*?{_SEP})?)(?P<name>recurrent_kernel|kernel|bias)$")
_TORCH_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
                "weight_ih": "weight_ih", "weight_hh": "weight_hh", "bias_ih": "bias_ih",
                "bias_hh": "bias_hh"}
_ORDER = {"LSTM": "gate order i, f, g, o", "GRU": "gate order r, z, n",
          "RNN": "one block; tanh or relu is not in the arrays"}
_KERAS_ORDER = {4: "LSTM (gate order i, f, c, o)", 3: "GRU (gate order z, r, h)",
                1: "SimpleRNN"}


def _activations(family: str) -> str:
    return ("the activations are not in the file: sigmoid gates and tanh assumed (Keras 3's "
            "defaults; Keras 2's LSTM and GRU gates defaulted to hard_sigmoid: give "
            f"{as_given('cell')} '{family}[gate=hard_sigmoid(0.2,0.5)]' for those)")


def _torch_activations() -> str:
    return ("the activations are not in the file: PyTorch's (sigmoid gates, tanh) assumed; "
            f"give {as_given('cell')} FAMILY[...] for others")

_LISTED = 6


def _own_name(key: str) -> bool:
    """A gateflow parameter name (``W_f``; a stack's ``W_f_l1``)."""
    base = re.sub(r"_l\d+$", "", key)
    return any(base in cell.params for cell in CELLS.values())


def _module(prefix: str) -> str:
    return prefix[:-1] if prefix and re.match(_SEP, prefix[-1]) else prefix


def _listed(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown_ = ", ".join(repr(clip(k, 60)) for k in keys[:_LISTED])
    return shown_ + (f", … ({len(keys)} in all)" if len(keys) > _LISTED else "")


# -- PyTorch's layout under other names ---------------------------------------------------
def _torch_like(raw: Mapping, free: list[str]) -> tuple[list[Recurrent], list[str], set[str]]:
    """Groups of ``free`` keys named like PyTorch's weights after a prefix of their own."""
    groups: dict[str, dict[str, list[str]]] = {}  # prefix -> torch name -> keys in the file
    for key in free:
        m = _TORCH_LIKE.match(_TF.sub("", key))
        if m:  # no layer suffix: layer 0 (an nn.GRU and an nn.GRUCell weigh the same)
            groups.setdefault(m["prefix"], {}).setdefault(
                _TORCH_NAMES[m["name"]] + (m["suffix"] or "_l0"), []).append(key)
    found, skipped, used = [], [], set()
    for prefix, several in groups.items():
        keys = [k for ks in several.values() for k in ks]
        if any(len(ks) > 1 for ks in several.values()):
            skipped.append(f"arrays {_listed(keys)} end like PyTorch recurrent weights but name "
                           "one weight twice (w_ih and weight_ih); name them with "
                           f"{as_given('rename')} OLD=NEW")
            continue
        named = {t: ks[0] for t, ks in several.items()}
        if not any(t.startswith("weight_hh") for t in named):
            skipped.append(f"arrays {_listed(keys)} end like PyTorch recurrent weights but have "
                           f"no w_hh/weight_hh; name them with {as_given('rename')} OLD=NEW")
            continue
        sd = {t: np.asarray(raw[k]) for t, k in named.items()}
        module = _module(prefix)
        try:
            rec = _torch_modules._describe(module, sd)
        except GateflowError as exc:
            skipped.append(f"arrays {_listed(keys)} end like PyTorch recurrent weights but fit "
                           f"no nn.RNN/LSTM/GRU ({clip(str(exc), 160)}); name them with "
                           f"{as_given('rename')} OLD=NEW")
            continue
        base = rec.kind.removeprefix("nn.").removesuffix("Cell")
        said = (f"arrays {_listed(keys)} read as PyTorch {rec.kind} weights ({_ORDER[base]}) "
                "from their suffixes and shapes"
                + (f"; {_torch_activations()}" if base != "RNN" else ""))
        what = f"module {module!r}" if module else "the arrays"
        found.append(replace(rec, where=where_of(raw, keys[0]), activations_declared=False,
                             assumed=(said, *precision(raw, keys, what))))
        used.update(keys)
    return found, skipped, used


# -- Keras's layout under other names -----------------------------------------------------
def _keras_to_torch(gates: int, kernel: np.ndarray, recurrent: np.ndarray,
                    bias: np.ndarray | None) -> tuple[dict[str, np.ndarray], str | None]:
    """The same weights in PyTorch's single-layer names, and the GRU's cell when the bias
    says it (``gru``: bias (2, 3n), ``gru-cho``: (3n,), None: no bias)."""
    n = recurrent.shape[0]
    order = [1, 0, 2] if gates == 3 else list(range(gates))  # Keras z, r, h -> r, z, n

    def torch_rows(a: np.ndarray) -> np.ndarray:  # (…, G n) columns -> (G n, …) rows
        return np.concatenate([a[..., j * n:(j + 1) * n] for j in order], axis=-1).T

    sd = {"weight_ih_l0": torch_rows(kernel), "weight_hh_l0": torch_rows(recurrent)}
    cell = None
    if bias is not None:
        rows = bias.reshape(-1, gates * n)
        sd["bias_ih_l0"] = torch_rows(rows[0])
        sd["bias_hh_l0"] = torch_rows(rows[1]) if len(rows) == 2 else np.zeros(gates * n)
        cell = "gru" if len(rows) == 2 else "gru-cho"
    return sd, cell


def _keras_like(raw: Mapping, free: list[str]) -> tuple[list[Recurrent], list[str], set[str]]:
    """Groups of ``free`` keys named like a Keras recurrent cell's variables."""
    groups: dict[str, dict[str, list[str]]] = {}
    for key in free:
        m = _KERAS_LIKE.match(_TF.sub("", key))
        if m:
            groups.setdefault(m["prefix"], {}).setdefault(m["name"], []).append(key)
    found, skipped, used = [], [], set()
    for prefix, several in groups.items():
        if "recurrent_kernel" not in several:
            continue  # a Dense layer's kernel and bias, or anything's: not a recurrent cell
        keys = [k for ks in several.values() for k in ks]
        if any(len(ks) > 1 for ks in several.values()):
            skipped.append(f"arrays {_listed(keys)} end like a Keras recurrent cell's variables "
                           f"but name one twice; name them with {as_given('rename')} OLD=NEW")
            continue
        named = {t: ks[0] for t, ks in several.items()}
        k = np.asarray(raw[named["recurrent_kernel"]])
        w = np.asarray(raw[named["kernel"]]) if "kernel" in named else None
        b = np.asarray(raw[named["bias"]]) if "bias" in named else None
        n = k.shape[0] if k.ndim == 2 else 0
        gates = k.shape[1] // n if n and k.shape[1] % n == 0 else 0
        ok = (w is not None and w.ndim == 2 and gates in _KERAS_ORDER and w.shape[1] == k.shape[1]
              and 0 not in w.shape and all(a.dtype.kind in "fiu" for a in (w, k))
              and (b is None or (b.dtype.kind in "fiu" and (
                  b.shape == (gates * n,) or (gates == 3 and b.shape == (2, 3 * n))))))
        if not ok:
            shapes = ", ".join(f"{t} {np.shape(raw[key])}" for t, key in named.items())
            skipped.append(f"arrays {_listed(keys)} end like a Keras recurrent cell's variables "
                           f"but their shapes ({shapes}) fit no LSTM, GRU or SimpleRNN; name "
                           f"them with {as_given('rename')} OLD=NEW")
            continue
        assert w is not None
        sd, gru_cell = _keras_to_torch(gates, w, k, b)
        module = _module(prefix)
        try:
            rec = _torch_modules._describe(module, sd)
        except GateflowError as exc:  # checked above; a dtype or size it still refuses
            skipped.append(f"arrays {_listed(keys)} end like a Keras recurrent cell's variables "
                           f"but fit none ({clip(str(exc), 160)}); name them with "
                           f"{as_given('rename')} OLD=NEW")
            continue
        notes = [rec.note] if rec.note else []
        if gates == 3:
            if gru_cell is None:
                rec = replace(rec, cell=None, cells=("gru", "gru-cho"))
                notes.append("a GRU without bias has no sign of reset_after: give "
                             f"{as_given('cell')} gru (reset_after=True) or gru-cho")
            else:
                rec = replace(rec, cell=gru_cell, cells=(gru_cell,))
        kind = {4: "LSTM", 3: "GRU", 1: "SimpleRNN"}[gates]
        said = (f"arrays {_listed(keys)} read as Keras {_KERAS_ORDER[gates]} weights from "
                "their suffixes and shapes" + (
                    f", reset_after={gru_cell == 'gru'} from the bias shape"
                    if gru_cell and gates == 3 else "")
                + (f"; {_activations(rec.cells[0])}" if gates > 1 else ""))
        what = f"module {module!r}" if module else "the arrays"
        found.append(replace(rec, framework="Keras", kind=f"{kind} layer",
                             note="; ".join(notes), where=where_of(raw, keys[0]),
                             activations_declared=False,
                             assumed=(said, *precision(raw, keys, what))))
        used.update(keys)
    return found, skipped, used


# -- the vocabulary -----------------------------------------------------------------------
def scan(raw: dict[str, np.ndarray]) -> Found:
    """The modules in foreign names among ``raw``'s arrays that PyTorch's own names do not
    cover, and what was skipped (see the module docstring)."""
    torch_keys = {k for k in raw if isinstance(k, str) and _pytorch._KEY.match(k)}
    free = [k for k in raw if isinstance(k, str) and k not in torch_keys]
    torch_found, torch_skipped, used = _torch_like(raw, free)
    keras_found, keras_skipped, used_k = _keras_like(raw, [k for k in free if k not in used])
    modules = (*torch_found, *keras_found)
    skipped = [*torch_skipped, *keras_skipped]
    own = [k for k in free if _own_name(k)]
    if not modules and not torch_keys and 2 * len(own) < len(raw) and not skipped and raw:
        left = [k for k in raw if k not in used | used_k]
        skipped.append(f"{len(left)} array(s) ({_listed(left)}) match no recurrent module's "
                       "names (PyTorch's weight_ih_l0, …, Keras's kernel, …, or gateflow's "
                       f"W_f, …); name them with {as_given('rename')} OLD=NEW")
    return Found(tuple(modules), tuple(skipped))


def select(raw: dict[str, np.ndarray]) -> None:
    """Foreign names are read as models only (:func:`gateflow.load_model`), never as one
    cell's parameters: they are a guess that ``assumed`` says."""
    return None


def to_params(cell, sd, *, dtype=np.float64):  # never reached: select is None
    return _pytorch.from_torch_state_dict(cell, sd, dtype=dtype)


def diagnose(cell, params: dict) -> None:
    return None


# -- renaming -----------------------------------------------------------------------------
def parse_map(entries: Iterable[str] | None) -> dict[str, str] | None:
    """``OLD=NEW`` texts (the command line's repeatable option) as a mapping for
    ``rename``; None when none is given."""
    if not entries:
        return None
    out: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, str) or "=" not in entry:
            raise GateflowError(f"{arg('rename')} {shown(entry)} is not OLD=NEW; e.g. "
                                f"{arg('rename')} enc_w_ih=weight_ih_l0 or {arg('rename')} "
                                "'enc_*=*'")
        old, new = entry.split("=", 1)
        if old in out and out[old] != new:
            raise GateflowError(f"{arg('rename')} gives {old!r} twice ({out[old]!r} and "
                                f"{new!r}); give each name once")
        out[old] = new
    return out


def _check(mapping) -> list[tuple[str, str]]:
    """``mapping``'s entries, checked: text on both sides, one ``*`` on each or none."""
    if isinstance(mapping, Mapping):
        items = list(mapping.items())
    else:
        raise GateflowError(f"rename must be a mapping of old to new array names, got "
                            f"{type(mapping).__name__}; e.g. {{'enc_w_ih': 'weight_ih_l0'}} "
                            "or {'enc_*': '*'}")
    for old, new in items:
        if not isinstance(old, str) or not isinstance(new, str):
            raise GateflowError(f"rename entry {shown(old)}: {shown(new)} must map text to "
                                "text")
        if not old or not new:
            raise GateflowError(f"rename entry {old!r}={new!r}: both names must be non-empty "
                                "(to drop a prefix, map 'enc_*' to '*')")
        if old.count("*") > 1 or new.count("*") > 1 or old.count("*") != new.count("*"):
            raise GateflowError(f"rename entry {old!r}={new!r}: a pattern has one * on each "
                                "side (the same text in both), e.g. 'enc_*' = 'rnn.*'")
    return items


def rename(raw: Mapping[str, np.ndarray], mapping, where: str = "the file") -> Raw:
    """``raw`` with its arrays renamed by ``mapping`` (exact entries first, then patterns in
    their order; other arrays keep their names). An entry that renames nothing, or two
    arrays given one name, is refused, naming the arrays there are."""
    items = _check(mapping)
    exact = {old: new for old, new in items if "*" not in old}
    patterns = []
    for old, new in items:
        if "*" in old:
            a, b = old.split("*")
            patterns.append((re.compile(f"^{re.escape(a)}(.+){re.escape(b)}$", re.DOTALL),
                             new, old))
    out = Raw(where=getattr(raw, "where", None))
    used: set[str] = set()
    source: dict[str, str] = {}
    for key, value in raw.items():
        new_key = key
        if key in exact:
            new_key = exact[key]
            used.add(key)
        else:
            for rx, new, old in patterns:
                m = rx.match(key)
                if m:
                    new_key = new.replace("*", m[1])
                    used.add(old)
                    break
        if new_key in source:
            raise GateflowError(f"rename gives arrays {source[new_key]!r} and {key!r} of {where} "
                                f"the same name {new_key!r}; map them to different names")
        source[new_key] = key
        out[new_key] = value
        dtype = getattr(raw, "dtypes", {}).get(key)
        if dtype:
            out.dtypes[new_key] = dtype
    unused = [old for old, _ in items if old not in used]
    if unused:
        raise GateflowError(f"rename {names(unused, 4)} matches no array of {where}; its arrays "
                            f"are {names(raw, 8)}")
    return out

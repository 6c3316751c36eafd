"""Keras: which cell a recurrent layer is, from its config or from the Keras that wrote it.

A layer's config names its activations: ``recurrent_activation`` is the cell's ``gate``
role, ``activation`` its ``candidate`` (and the LSTM's ``output``): see
:mod:`gateflow.cells._activations`. A file without a config (``save_weights``) records no
activation, so the reader takes the defaults of the Keras version that wrote it, says so in
one ``assumed`` line, and asks (``--cell``) where the file does not say which Keras that was.

Where Keras changed, read in keras-team/keras at its release tags:

* ``recurrent_activation`` of LSTM and GRU (and their cells): ``'hard_sigmoid'`` up to
  Keras 2.2.5, ``'sigmoid'`` from 2.3.0 on (commit 5949aee, "Change defaults of GRU and LSTM
  layers"; the 2.3.0 release notes: "Change default recurrent activation to sigmoid (from
  hard_sigmoid) in all RNN layers"). tf.keras's TensorFlow 2 layers and Keras 3 default to
  ``'sigmoid'``. ``activation`` is ``'tanh'`` in every version.
* GRU ``reset_after``: added in Keras 2.1.5, default ``False`` in multi-backend Keras up to
  2.3.1 (2.3.0 did not change it); ``True`` in tf.keras's TensorFlow 2 layers and Keras 3.
  The bias tells the two apart ((2, 3n) or (3n,)): the default matters only without one.
* ``hard_sigmoid``: ``clip(0.2·x + 0.5, 0, 1)`` on every Keras 2 backend (TensorFlow, CNTK,
  and Theano's ``T.nnet.hard_sigmoid``, slope 0.2 and shift 0.5) and in tf.keras up to 2.15
  (``keras/backend.py``); ``relu6(x + 3)/6 = clip(x/6 + 0.5, 0, 1)`` on every backend of
  Keras 3 from 3.0.0 on (``keras/backend/*/nn.py`` at v3.0.0; its docstring still said
  0.2·x + 0.5 until a later release).
* Who wrote a file: a legacy ``.h5`` holds ``keras_version`` (and ``backend``) as root
  attributes, from ``model.save`` and ``save_weights`` alike (``keras/engine/saving.py``);
  a ``.keras`` archive holds it in ``metadata.json``; a ``.weights.h5`` of the new layout
  holds none, but only tf.keras ≥ 2.10 and Keras 3 write that layout, and all default to
  sigmoid. tf.keras marks its version ``-tf`` and wrote ``2.2.4-tf`` under TensorFlow 1
  (v1 layers: hard_sigmoid, reset_after=False) and into TensorFlow 2 (v2 layers: sigmoid,
  reset_after=True): a ``-tf`` version below 2.3.0 cannot tell which defaults it had.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from typing import Any

from gateflow._errors import GateflowError, as_given
from gateflow.cells._activations import variant_name
from gateflow.models._checks import clip

__all__ = ["Choice", "Writer", "choose", "hard_sigmoid", "precision_notes", "spell"]

SIGMOID = "sigmoid"
KERAS2_HS = "hard_sigmoid(0.2,0.5)"  # clip(0.2x + 0.5, 0, 1)
KERAS3_HS = "hard_sigmoid(1/6,0.5)"  # relu6(x + 3)/6
_NEW_LAYOUT = "every Keras that writes this layout (tf.keras >= 2.10, Keras 3)"

#: Keras activation names gateflow reads (``hard_sigmoid`` depends on the version: see
#: :func:`hard_sigmoid`); ``elu``'s alpha is 1 in Keras 2 and 3, Keras 3's ``leaky_relu``
#: has negative_slope 0.2 (Keras 2 has no such activation name).
_SAME_IN_ALL = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "linear": "linear",
                "softsign": "softsign", "softplus": "softplus", "elu": "elu(1)"}
_KERAS3_ONLY = {"leaky_relu": "leaky_relu(0.2)"}
_READS = "sigmoid, hard_sigmoid, tanh, relu, linear, softsign, softplus, elu"

#: Which config key plays which role, by Keras family.
_ROLES = {"LSTM": (("gate", "recurrent_activation"), ("candidate", "activation"),
                   ("output", "activation")),
          "GRU": (("gate", "recurrent_activation"), ("candidate", "activation")),
          "SimpleRNN": (("candidate", "activation"),)}


@dataclass(frozen=True)
class Writer:
    """The Keras that wrote a file, as far as the file says: its ``keras_version`` text
    (None when it has none) and its layout (``"legacy"``: a Keras 1/2 style ``.h5``;
    ``"saving-lib"``: a ``.keras`` archive or a new-style ``.weights.h5``)."""

    version: str | None = None
    layout: str = "legacy"

    @property
    def release(self) -> tuple[int, int, int] | None:
        """(major, minor, patch) of the version, None when the file has none or it is not
        one (``"2.2.4-tf"`` is (2, 2, 4))."""
        m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", self.version or "")
        return None if m is None else (int(m[1]), int(m[2]), int(m[3] or 0))

    @property
    def tf_keras(self) -> bool:
        """tf.keras before it used plain version numbers (``2.2.4-tf``)."""
        return bool(self.version) and bool(re.search(r"-tf\b", self.version or ""))

    @property
    def who(self) -> str:
        return f"Keras {clip(self.version or '', 40)}"


def hard_sigmoid(writer: Writer) -> str | None:
    """What ``'hard_sigmoid'`` computed in the Keras that wrote the file, None when the file
    does not say which Keras that was."""
    release = writer.release
    if release is None:
        return None
    return KERAS3_HS if release[0] >= 3 else KERAS2_HS


def _defaults(writer: Writer) -> tuple[str, bool, str] | str:
    """(recurrent_activation, reset_after, who set them) of the Keras that wrote the file,
    or why the file cannot tell."""
    release = writer.release
    if release is None:
        if writer.layout == "saving-lib":
            return SIGMOID, True, _NEW_LAYOUT
        return "the file does not say which Keras wrote it (no keras_version)"
    who = f"{writer.who} that wrote the file"
    if writer.tf_keras and release < (2, 3, 0):
        return (f"{writer.who} (tf.keras) wrote it, which defaulted to hard_sigmoid under "
                "TensorFlow 1 and to sigmoid under TensorFlow 2")
    if release < (2, 3, 0):
        return KERAS2_HS, False, who
    if release < (2, 4, 0) and not writer.tf_keras:
        return SIGMOID, False, who  # multi-backend Keras 2.3.x
    return SIGMOID, True, who


def _name(value: Any) -> str:
    """An activation as the config names it: a string, or a serialized built-in function
    (``{"module": "keras.activations", "config": "tanh", ...}``); ``custom ...`` else."""
    if value is None:
        return "linear"  # activations.get(None) is linear in Keras 2 and 3
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        conf, name = value.get("config"), value.get("registered_name")
        module = str(value.get("module", ""))
        if isinstance(conf, str) and module.split(".")[0] in ("keras", "tf_keras",
                                                              "tensorflow"):
            return conf.rsplit(".", 1)[-1]
        return f"custom {clip(str(name or conf or value.get('class_name')), 60)}"
    return clip(repr(value), 60)


def spell(value: Any, writer: Writer, where: str, key: str) -> tuple[str, ...]:
    """A Keras activation in gateflow's spelling: one, or the two it may be (a
    ``hard_sigmoid`` whose Keras the file does not say). Anything else is refused in one
    line naming the layer (``where``) and the config ``key``."""
    name = _name(value)
    short = name.removeprefix("keras.activations.")
    if short in _SAME_IN_ALL:
        return (_SAME_IN_ALL[short],)
    release = writer.release
    if short in _KERAS3_ONLY and release is not None and release[0] >= 3:
        return (_KERAS3_ONLY[short],)
    if short == "hard_sigmoid":
        known = hard_sigmoid(writer)
        return (known,) if known else (KERAS2_HS, KERAS3_HS)
    raise GateflowError(f"{where} uses {key} {clip(repr(name), 70)}, which gateflow does "
                        f"not have; it reads Keras's {_READS}")


@dataclass(frozen=True)
class Choice:
    """What a layer is: ``cell`` (None when the file cannot tell), every cell it may be
    (``cells``, the likeliest first), ``note`` (why it cannot tell, and the ``--cell`` to
    give) and ``assumed`` (what was taken from defaults, one line)."""

    cell: str | None
    cells: tuple[str, ...]
    note: str = ""
    assumed: tuple[str, ...] = ()


def _cell(base: str, family: str, roles: dict[str, str]) -> str:
    return variant_name(base, **{r: roles[r] for r in roles if r in dict(_ROLES[family])})


def _give(cells: tuple[str, ...]) -> str:
    return " or ".join(f"{as_given('cell')} {shlex.quote(c)}" for c in cells)


def choose(family: str, config: dict | None, writer: Writer, where: str,
           reset_after: bool | None, fixed: bool = False) -> Choice:
    """The cell of a Keras ``family`` layer (``"LSTM"``, ``"GRU"``, ``"SimpleRNN"``).

    ``config`` is the layer's (None for a weights-only file), ``reset_after`` what its
    config or bias says (None: neither does), ``fixed`` a cuDNN layer whose activations
    cannot be chosen (sigmoid and tanh)."""
    base = {"LSTM": "lstm", "SimpleRNN": "rnn"}.get(family, "gru")
    if fixed:
        return Choice(base, (base,))
    keys = dict.fromkeys(k for _, k in _ROLES[family])
    options: dict[str, tuple[str, ...]] = {}
    for key in keys:
        if config is not None and key in config:
            options[key] = spell(config[key], writer, where, key)
    missing = [k for k in keys if k not in options]
    if family == "SimpleRNN" and missing:
        return Choice(None, ("rnn", "rnn-relu"), "the activation is not in the file: give "
                                                 + _give(("rnn", "rnn-relu")))
    resets = (reset_after,) if reset_after is not None else (True, False)
    unsaid = missing + (["reset_after"] if family == "GRU" and reset_after is None else [])
    assumed: list[str] = []
    asked: list[str] = []
    alternatives: dict[str, tuple[str, ...]] = {}
    if unsaid:
        found = _defaults(writer)
        if isinstance(found, str):
            asked.append(found)
            for key in missing:
                options[key] = ("tanh",) if key == "activation" else (SIGMOID, KERAS2_HS)
        else:
            gate, reset, who = found
            said = {"recurrent_activation": gate, "activation": "tanh"}
            parts = [f"{k} {said[k]}" for k in missing]
            if family == "GRU" and reset_after is None:
                resets = (reset,)
                parts.append(f"reset_after={reset}")
            for key in missing:
                options[key] = (said[key],)
            if "recurrent_activation" in missing:  # the cells a user may mean instead
                hs = hard_sigmoid(writer)
                alternatives["recurrent_activation"] = tuple(dict.fromkeys(
                    (gate, SIGMOID) + ((hs,) if hs else (KERAS2_HS, KERAS3_HS))))
            what = "the file records no activations" if config is None else \
                "its config does not say"
            assumed.append(f"{', '.join(parts)}: the default{'s' if len(parts) > 1 else ''} "
                           f"of {who} ({what})")
    for key, spelled in options.items():
        if len(spelled) > 1 and key not in missing:
            asked.append(f"{key} 'hard_sigmoid' is clip(0.2x + 0.5, 0, 1) in Keras 2 and "
                         "relu6(x + 3)/6 in Keras 3, and the file does not say which Keras "
                         "wrote it")
    if family == "GRU" and len(resets) > 1 and not asked:
        asked.append("a GRU without bias has no sign of reset_after")
    cells = _product(family, options, resets)
    if len(cells) > 1:
        return Choice(None, cells, f"{'; '.join(dict.fromkeys(asked))}: give {_give(cells)}")
    extra = _product(family, {**options, **alternatives}, resets)
    return Choice(cells[0], tuple(dict.fromkeys(cells + extra)), "", tuple(assumed))


def _product(family: str, options: dict[str, tuple[str, ...]],
             resets: tuple[bool, ...]) -> tuple[str, ...]:
    """Every cell the options allow, in order: a GRU's reset_after=True form is ``gru``,
    False is ``gru-cho``."""
    keys = list(options)
    bases = {"LSTM": ("lstm",), "SimpleRNN": ("rnn",)}.get(
        family, tuple("gru" if r else "gru-cho" for r in resets))
    out = []
    for base in bases:
        for combo in itertools.product(*(options[k] for k in keys)):
            chosen = dict(zip(keys, combo))
            roles = {role: chosen[key] for role, key in _ROLES[family]}
            out.append(_cell(base, family, roles))
    return tuple(dict.fromkeys(out))


# -- precision ----------------------------------------------------------------------------
_BITS = {"float16": 11, "bfloat16": 8}


def _policy(config: dict | None) -> str | None:
    """The dtype policy a layer config names (``mixed_float16``, ``bfloat16``, ...)."""
    dtype = None if config is None else config.get("dtype")
    if isinstance(dtype, dict):
        inner = dtype.get("config")
        dtype = inner.get("name") if isinstance(inner, dict) else None
    return dtype if isinstance(dtype, str) else None


def precision_notes(config: dict | None, dtypes: set[str]) -> tuple[str, ...]:
    """One line for weights stored with fewer than float32's bits, and one for a layer that
    Keras computed in 16 bits (its dtype policy); gateflow computes in float64."""
    out = []
    for dtype in sorted(d for d in dtypes if d in _BITS):
        out.append(f"{dtype} weights ({_BITS[dtype]} significant bits): read exactly, "
                   "analysed in float64")
    policy = _policy(config)
    compute = next((d for d in ("bfloat16", "float16") if policy and d in policy), None)
    if compute:
        out.append(f"dtype policy {clip(policy or '', 30)}: Keras computed this layer in "
                   f"{compute}, gateflow computes in float64")
    return tuple(out)

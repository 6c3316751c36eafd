"""Every module of every linear-recurrence package in one state dict: :func:`scan`, over the
table of the packages' readers (:data:`PACKAGES`).

One ``params_from_<package>(arrays, prefix="")`` per package (:mod:`._linear_ssm`:
lru-pytorch, mambapy, recurrentgemma; :mod:`._linear_gated`: mingru-pytorch, xlstm, sru)
reads the module whose keys start with ``prefix`` (``"layers.0.mixer."``; the trailing dot
may be left out) into the parameters of its cell in
:data:`gateflow.cells._linear.LINEAR_CELLS` and returns a
:class:`~gateflow.models.formats._linear_record.LinearModule`: the cell, its parameters in
gateflow's names (float64, checked by :func:`gateflow.cells._params.check_sizes`) and
``assumed``, one line for each thing the state dict does not say (it unpacks as ``cell,
params, assumed``). ``scan_<package>(arrays)`` finds every such module in a flat state dict
(a stack of Mamba blocks: one per layer), and :func:`scan` runs them all, with one
``skipped`` line per module it recognised but refused. Anything that does not match the
package's names and shapes is refused with one line that names the array.

* mingru-pytorch: ``minGRU`` (``to_hidden_and_gate.weight``) → ``mingru-log``, ``minLSTM``
  (``to_hidden_and_f_i_gate.weight``) → ``minlstm-log``;
* lru-pytorch: ``LRU`` (``nu_log``, ``theta_log``, ``gamma_log``, complex ``B``) → ``lru``
  (realified);
* mambapy: ``MambaBlock`` (``A_log``, ``x_proj.weight``, ``dt_proj.weight``,
  ``dt_proj.bias``) → ``mamba``;
* xlstm: ``sLSTMLayer`` (``slstm_cell._recurrent_kernel_``, ``slstm_cell._bias_``,
  ``fgate/igate/zgate/ogate.weight``) or a bare ``sLSTMCell`` (``_recurrent_kernel_``,
  ``_bias_``) → ``slstm``;
* sru: ``SRUCell`` (``weight``, ``weight_c``, ``bias``, ``scale_x``; ``weight_proj``) →
  ``sru``;
* recurrentgemma: ``RGLRU`` (``a_param``, ``input_gate.w/b``, ``a_gate.w/b``) → ``rglru``.

What each cell's input x is (the block's conv output for the selective scan and RG-LRU,
the pair [conv output; layer input] for the xLSTM's sLSTM layer) is said in
:attr:`LinearModule.input` (the record's ``note``): the analysis of such a module runs on
the inputs *that recurrence* sees, which the state dict cannot give.

How the lead wires this module (not done here, on purpose):

* **registry**: once the cells are in ``CELLS``, call :func:`scan` from the array
  vocabularies (``formats/__init__.VOCABULARIES``: a ``Vocabulary("linear", ...)`` whose
  ``scan`` returns ``Found(tuple(m.recurrent() for m in found.modules), found.skipped)``;
  its ``select``/``to_params`` are :func:`scan` restricted to one prefix, and the
  PyTorch vocabulary must leave these keys alone),
  so that ``.pt``/``.safetensors``/``.npz`` files of these packages are listed by
  ``gateflow inspect`` and read by ``load_model``; :meth:`LinearModule.recurrent` already
  builds the :class:`~gateflow.models.formats._recurrent.Recurrent` record.
* **inspect**: print, per module, ``module``, ``kind`` and the command (``gateflow analyze
  --weights FILE --module PREFIX --cell CELL --inputs X.npy``, with ``--time-major`` for
  sru and LRU), with :attr:`LinearModule.input` saying what X must be (the SSM input, not
  the block input, for ``mamba``), and the ``skipped`` lines (a Mamba-2 block).
* **capture**: for a live module, ``{k: v.detach().cpu().numpy() for k, v in
  module.state_dict().items()}`` into :func:`scan`, and a forward hook that records each
  recurrence's x (mambapy: SiLU of ``conv1d``'s output cut to L steps; RecurrentGemma:
  ``rg_lru``'s input; xlstm: ``conv_act_fn``'s output and the layer's input; sru, minGRU,
  LRU: the module's own input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from gateflow._errors import GateflowError
from gateflow.models._checks import clip
from gateflow.models.formats._linear_gated import (
    _find_mingru,
    _find_sru,
    _find_xlstm,
    params_from_mingru_pytorch,
    params_from_sru,
    params_from_xlstm,
    scan_mingru_pytorch,
    scan_sru,
    scan_xlstm,
)
from gateflow.models.formats._linear_record import Arrays, LinearModule, _order, _prefixes
from gateflow.models.formats._linear_ssm import (
    _find_lru,
    _find_mamba,
    _find_rglru,
    params_from_lru_pytorch,
    params_from_mambapy,
    params_from_recurrentgemma,
    scan_lru_pytorch,
    scan_mambapy,
    scan_recurrentgemma,
)

__all__ = ["PACKAGES", "LinearFound", "scan"]


@dataclass(frozen=True)
class LinearFound:
    """What :func:`scan` found: the modules, and one line per module refused."""

    modules: tuple[LinearModule, ...]
    skipped: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[LinearModule]:
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)


# -- every package --------------------------------------------------------------------------

#: package -> (params_from, scan)
PACKAGES: dict[str, tuple[Callable[..., LinearModule], Callable[[Arrays], list[LinearModule]]]]
PACKAGES = {
    "mingru-pytorch": (params_from_mingru_pytorch, scan_mingru_pytorch),
    "lru-pytorch": (params_from_lru_pytorch, scan_lru_pytorch),
    "mambapy": (params_from_mambapy, scan_mambapy),
    "xlstm": (params_from_xlstm, scan_xlstm),
    "sru": (params_from_sru, scan_sru),
    "recurrentgemma": (params_from_recurrentgemma, scan_recurrentgemma),
}
#: package -> the prefixes of its modules in a state dict
_FIND: dict[str, Callable[[Arrays], list[str]]] = {
    "mingru-pytorch": _find_mingru, "lru-pytorch": _find_lru, "mambapy": _find_mamba,
    "xlstm": _find_xlstm, "sru": _find_sru, "recurrentgemma": _find_rglru,
}


def scan(arrays: Arrays) -> LinearFound:
    """Every module of every package in a flat state dict, in file order. A module that a
    package's names recognise but whose arrays it refuses is one ``skipped`` line (its
    refusal), never the end of the scan; so is a Mamba-2 block (``A_log`` per head next to
    ``dt_bias``), which no cell describes."""
    if not isinstance(arrays, Mapping):
        raise GateflowError(f"expected a state dict (a mapping of names to arrays), got "
                            f"{type(arrays).__name__}")
    found: list[tuple[str, LinearModule]] = []
    skipped: list[str] = []
    for package, find in _FIND.items():
        read = PACKAGES[package][0]
        for p in find(arrays):
            try:
                found.append((p, read(arrays, p)))
            except GateflowError as exc:
                skipped.append(str(exc))
    for p in _prefixes(arrays, "A_log"):
        if p + "dt_bias" in arrays and p + "x_proj.weight" not in arrays:
            skipped.append(f"{clip(repr(p + 'A_log'), 80)} next to {p + 'dt_bias'!r}: a "
                           "Mamba-2 block (one scalar decay per head), which no cell describes")
    ordered = _order(arrays, [p for p, _ in found])
    modules = sorted(found, key=lambda pm: ordered.index(pm[0]))
    return LinearFound(tuple(m for _, m in modules), tuple(dict.fromkeys(skipped)))

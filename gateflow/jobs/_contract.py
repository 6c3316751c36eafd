"""The ``gateflow decay`` files: :class:`DecayResult` and its JSON/CSV contract.

JSON contract (``gateflow decay --json``), one object:

* ``"cell"``: the cell name; ``"lags"``: ``[1, ..., T]``; ``"norms"``: the norms measured.
* ``"blocks"``: ``{"X/Y": {"log10_frobenius": [[...B] ...T], "log10_spectral": ...}}``, the
  log10 norms of ∂X_T/∂Y_{T−k} (total derivative through the full state): index ``i`` of
  the outer list is lag ``k = i + 1``, the inner list runs over the batch. s_t is the state
  after t inputs, s_0 the initial state, so lag k = T compares with s_0. The keys are the
  observers' (:data:`gateflow.numeric._observers.OBSERVERS`, ``Observer.key``), in
  registry order.
* ``"inputs"``: ``{"X/x": {...same keys...}}``, the log10 norms of ∂X_T/∂x_{T−k}, the
  input sensitivity (empty unless asked for with ``--blocks h/x``): index ``i`` is input
  lag ``k = i`` (``"input_lags"``: ``[0, ..., T−1]``; x_T, the last input, is lag 0).
  A stack's output-gradient blocks ``"X/y_lj"`` (``--blocks h_l1/y_l0``) sit here too, at
  the same lags: ∂X_T/∂y⁽ʲ⁾_{T−k} for the output y⁽ʲ⁾ layer j emits at step T−k, which
  layer j + 1 reads at that step and layer j carries (what a hook on that output sees;
  ``"blocks"``' ``"X/h_lj"`` is the carried part alone: see
  :mod:`gateflow.cells._stack`).
* ``"direct"``: ``{"s": {...same keys...}}``, the cell-path-only product ∏ diag(direct
  coefficient of ∂s_t/∂s_{t−1}) for each state block that has one (LSTM ``"c"``: ∏ diag(f);
  GRU ``"h"``: ∏ diag(z)).
* ``null`` stands for an exactly zero Jacobian (log10 0 = −inf); the file says so in
  ``"null_means": "exactly zero"``. NaN/Infinity never appear (:mod:`._serialise`).
* Metadata: ``"gateflow_version"``, ``"seed"``, ``"dtype"``, ``"backend"``, ``"shapes"``
  (``T, B, n, d``, and a cell's other sizes: ``p`` for ``lstm-proj``), ``"weights"`` and
  ``"input_data"`` (``{"source": "file", "path", "sha256"}``, ``{"source": "init",
  ...config}``, ``{"source": "array"}`` for in-memory data); ``"input_data"["s0"]`` says
  where the initial state came from when it is not zeros: ``{"source": "--s0", "path",
  "sha256", "blocks", "zeros"}`` (the blocks it gives, those it leaves at zeros; with
  ``"replaces"`` when it replaces the model file's), or ``{"source":
  "model file", "from": "ONNX LSTM node 'rnn': initial_h 'h0'", "blocks": [...]}``.
* ``"format_version"`` 2: the input sensitivity took the key ``"inputs"``, which version 1
  used for the inputs' provenance (now ``"input_data"``).

CSV (``--csv``): header ``block,lag,batch`` then one column per default norm
(``log10_frobenius,log10_spectral``) and per other registered norm measured (its key), one
row per (block, lag, batch element), blocks first, then the input blocks ``"X/x"`` (their
lag column is the input lag 0..T−1), then the direct products as block ``"<s>|direct"``
(e.g. ``c|direct``). An exactly zero Jacobian is ``-inf``; a norm not
measured is empty.

Files are written atomically and all-or-nothing (:func:`gateflow._io.write_files`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateflow._errors import GateflowError
from gateflow._io import STDOUT, check_file, write_files
from gateflow._version import __version__
from gateflow.jobs._serialise import csv_cell, csv_text, json_text, json_value
from gateflow.numeric._observers import NORMS, OBSERVERS

__all__ = ["DEFAULT_NORMS", "DIRECT_SUFFIX", "DecayResult", "csv_bytes", "json_bytes",
           "write_csv", "write_json", "write_outputs"]

#: The norms of the contract's first version (the registry's first two): measured unless
#: ``--norms`` says otherwise, and always a CSV column. Any other registered norm is
#: measured when asked for, under its own JSON key and CSV column.
DEFAULT_NORMS = NORMS[:2]

FORMAT = "gateflow-decay"
FORMAT_VERSION = 2
NULL_MEANS = "exactly zero"
DIRECT_SUFFIX = "|direct"
CSV_HEADER = ("block", "lag", "batch")


@dataclass
class DecayResult:
    """log10 norms of every block at every lag, plus where the numbers came from."""

    chain: Any  # gateflow.numeric._chain.ChainResult
    norms: tuple[str, ...]
    seed: int | None = None
    weights_source: dict = field(default_factory=lambda: {"source": "array"})
    inputs_source: dict = field(default_factory=lambda: {"source": "array"})

    @property
    def cell(self) -> str:
        return self.chain.cell

    @property
    def shapes(self) -> dict[str, int]:
        """T, B, n, d, and a cell's other sizes (the projected LSTM's p)."""
        m = self.chain.meta
        other = {k: int(v) for k, v in m.get("sizes", {}).items() if k not in ("n", "d")}
        return {"T": int(m["T"]), "B": int(m["B"]), "n": int(m["n"]), "d": int(m["d"]), **other}

    @property
    def columns(self) -> tuple[str, ...]:
        """The norms with a CSV column: the default ones, then any other measured."""
        return tuple(nm for nm in NORMS if nm in DEFAULT_NORMS or nm in self.norms)

    @property
    def keys(self) -> list[str]:
        """The JSON keys / CSV columns of the norms measured (the observers' keys)."""
        return [OBSERVERS[nm].key for nm in self.norms]

    def _groups(self) -> list[tuple[str, dict, int]]:
        """(name, norms by key, first lag) of every block, input block and direct product
        (named ``"<s>|direct"``), in file order."""
        return [*((b, dd, 1) for b, dd in self.chain.blocks.items()),
                *((b, dd, 0) for b, dd in self.chain.inputs.items()),
                *((s + DIRECT_SUFFIX, dd, 1) for s, dd in self.chain.direct.items())]

    def series(self) -> Iterator[tuple[str, str, np.ndarray]]:
        """(name, norm, (T, B) array) for every block, input block, then every direct
        product (named ``"<s>|direct"``)."""
        for name, dd, _ in self._groups():
            for nm in self.norms:
                if OBSERVERS[nm].key in dd:  # a direct product has only the diagonal norms
                    yield name, nm, np.asarray(dd[OBSERVERS[nm].key])

    def check_finite(self) -> None:
        """Raise if any log-norm is NaN or +inf (−inf, an exact zero, is allowed)."""
        for name, nm, a in self.series():
            if np.isnan(a).any() or np.isposinf(a).any():
                raise GateflowError(
                    f"block {name} {OBSERVERS[nm].key} has NaN or +inf values (numerical "
                    f"overflow in {self.chain.meta.get('dtype')}); rerun with --dtype float64 "
                    "or fewer steps")

    def to_json_dict(self) -> dict:
        """The JSON object of the contract (plain Python types, −inf as None, no NaN/inf)."""
        self.check_finite()
        m = self.chain.meta
        return json_value({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gateflow_version": __version__,
            "cell": self.cell,
            "lags": [int(k) for k in self.chain.lags],
            "norms": list(self.norms),
            "layout": "blocks[X/Y][norm][k-1][b] = log10 of the norm of dX_T/dY_{T-k} "
                      "for batch element b; inputs[X/x][norm][k][b] = log10 of the norm of "
                      "dX_T/dx_{T-k} (input lag k = 0..T-1); inputs[X/y_lj] likewise for "
                      "the output layer j of a stack emits at step T-k (read by layer j+1 "
                      "at that step and carried: what a hook on it sees)",
            "blocks": {b: {k: dd[k] for k in self.keys} for b, dd in self.chain.blocks.items()},
            "input_lags": [int(k) for k in self.chain.input_lags],
            "inputs": {b: {k: dd[k] for k in self.keys} for b, dd in self.chain.inputs.items()},
            "direct": {s: {k: dd[k] for k in self.keys if k in dd}
                       for s, dd in self.chain.direct.items()},
            "direct_means": "cell-path-only product: prod over steps of diag(direct coefficient "
                            "of ds_t/ds_{t-1}), e.g. LSTM c: prod diag(f)",
            "null_means": NULL_MEANS,
            "seed": self.seed,
            "dtype": str(m["dtype"]),
            "backend": str(m["backend"]),
            "shapes": self.shapes,
            "weights": self.weights_source,
            "input_data": self.inputs_source,
        })

    def csv_rows(self) -> Iterator[tuple[str, ...]]:
        """Rows ``(block, lag, batch, <one column per registered norm>)`` as strings."""
        self.check_finite()
        T, B = self.shapes["T"], self.shapes["B"]
        for name, dd, first in self._groups():
            text = [[[csv_cell(v) for v in row] for row in np.asarray(dd[OBSERVERS[nm].key])
                     .tolist()] if nm in self.norms and OBSERVERS[nm].key in dd else None
                    for nm in self.columns]
            for k in range(T):
                for b in range(B):
                    yield (name, str(k + first), str(b),
                           *("" if t is None else t[k][b] for t in text))


def json_bytes(result: DecayResult) -> bytes:
    """The JSON file of one result (compact, one line)."""
    return (json_text(result.to_json_dict(), plain=True) + "\n").encode()


def csv_bytes(result: DecayResult) -> bytes:
    """The CSV file of one result."""
    header = (*CSV_HEADER, *(OBSERVERS[nm].key for nm in result.columns))
    return csv_text(header, result.csv_rows()).encode()


def write_outputs(result: DecayResult, json_path=None, csv_path=None, *,
                  overwrite: bool = False) -> list[Path]:
    """Write the asked files all-or-nothing (rendered first, then staged and moved); an
    existing file is replaced only with ``overwrite``; ``"-"`` is stdout."""
    jobs = []
    if json_path is not None:
        jobs.append((check_file(json_path, "JSON", overwrite=overwrite), json_bytes))
    if csv_path is not None:
        jobs.append((check_file(csv_path, "CSV", overwrite=overwrite), csv_bytes))
    if len(jobs) == 2 and jobs[0][0] == jobs[1][0] == STDOUT:
        raise GateflowError("--json - and --csv - both write to stdout; send one to a file")
    payloads = {p: fn(result) for p, fn in jobs}  # render everything before touching disk
    write_files(payloads, overwrite=overwrite)
    return list(payloads)


def write_json(result: DecayResult, path, *, overwrite: bool = False) -> Path:
    """Write the JSON contract to ``path`` atomically (``"-"``: stdout)."""
    return write_outputs(result, json_path=path, overwrite=overwrite)[0]


def write_csv(result: DecayResult, path, *, overwrite: bool = False) -> Path:
    """Write the long-format CSV to ``path`` atomically (``"-"``: stdout)."""
    return write_outputs(result, csv_path=path, overwrite=overwrite)[0]

"""The ``gateflow decay`` files: the JSON/CSV contract of a :class:`~gateflow.ChainResult`,
written (:func:`write_outputs`) and read back (:func:`load_result`).

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
  ``"null_means": "exactly zero"``. NaN/Infinity never appear (:mod:`._serialize`).
* Metadata: ``"gateflow_version"``, ``"seed"``, ``"dtype"``, ``"backend"``, ``"shapes"``
  (``T, B, n, d``, and a cell's other sizes: ``p`` for ``lstm-proj``), ``"weights"`` and
  ``"input_data"`` (``{"source": "file", "path", "sha256"}``, ``{"source": "init",
  ...config}``, ``{"source": "array"}`` for in-memory data); ``"input_data"["s0"]`` says
  where the initial state came from when it is not zeros: ``{"source": "s0" (given: the
  ``s0`` argument, ``--s0`` on the command line), "path",
  "sha256", "blocks", "zeros"}`` (the blocks it gives, those it leaves at zeros; with
  ``"replaces"`` when it replaces the model file's), or ``{"source":
  "model file", "from": "ONNX LSTM node 'rnn': initial_h 'h0'", "blocks": [...]}``.
* ``"cell_record"``: the cell's equations and every field that defines it
  (:meth:`gateflow.Cell.to_record`), so that the file reloads in any process
  (:func:`load_result`), a stacked cell (``lstm-stack2``) or a cell declared in a script
  included. A file without it (written before it was added) names a declared cell.
* ``"format_version"`` 2: the input sensitivity took the key ``"inputs"``, which version 1
  used for the inputs' provenance (now ``"input_data"``). ``"cell_record"`` was added
  within version 2 (readers of version 2 ignore keys they do not know).

CSV (``--csv``): header ``block,lag,batch`` then one column per default norm
(``log10_frobenius,log10_spectral``) and per other registered norm measured (its key), one
row per (block, lag, batch element), blocks first, then the input blocks ``"X/x"`` (their
lag column is the input lag 0..T−1), then the direct products as block ``"<s>|direct"``
(e.g. ``c|direct``). An exactly zero Jacobian is ``-inf``; a norm not
measured is empty.

Files are written atomically and all-or-nothing (:func:`gateflow._io.write_files`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from gateflow._errors import GateflowError
from gateflow._io import STDOUT, check_file, write_files
from gateflow._validate import shown
from gateflow._version import __version__
from gateflow.cells._library import read_cell
from gateflow.cells._stack import choose_blocks
from gateflow.jobs._serialize import csv_cell, csv_text, json_text, json_value
from gateflow.numeric._observers import NORMS, OBSERVERS
from gateflow.numeric._result import DIRECT_SUFFIX, ChainResult, Provenance

__all__ = ["DEFAULT_NORMS", "DIRECT_SUFFIX", "check_finite", "columns", "csv_bytes",
           "from_json_dict", "json_bytes", "load_result", "to_json_dict", "with_provenance",
           "write_csv", "save_result", "write_outputs"]

#: The norms of the contract's first version (the registry's first two): measured unless
#: ``--norms`` says otherwise, and always a CSV column. Any other registered norm is
#: measured when asked for, under its own JSON key and CSV column.
DEFAULT_NORMS = NORMS[:2]

FORMAT = "gateflow-decay"
FORMAT_VERSION = 2
NULL_MEANS = "exactly zero"
CSV_HEADER = ("block", "lag", "batch")
_LAYOUT = ("blocks[X/Y][norm][k-1][b] = log10 of the norm of dX_T/dY_{T-k} "
           "for batch element b; inputs[X/x][norm][k][b] = log10 of the norm of "
           "dX_T/dx_{T-k} (input lag k = 0..T-1); inputs[X/y_lj] likewise for "
           "the output layer j of a stack emits at step T-k (read by layer j+1 "
           "at that step and carried: what a hook on it sees)")
_DIRECT_MEANS = ("cell-path-only product: prod over steps of diag(direct coefficient "
                 "of ds_t/ds_{t-1}), e.g. LSTM c: prod diag(f)")


def with_provenance(result: ChainResult, *, seed: int | None = None,
                    weights_source: Mapping | None = None,
                    inputs_source: Mapping | None = None) -> ChainResult:
    """``result`` with its :class:`Provenance` (what ``gateflow decay`` records): the seed
    of generated data, where the weights and the inputs came from (arrays by default)."""
    return replace(result, provenance=Provenance(
        seed=seed, weights=dict(weights_source or {"source": "array"}),
        inputs=dict(inputs_source or {"source": "array"})))


def columns(result: ChainResult) -> tuple[str, ...]:
    """The norms with a CSV column: the default ones, then any other measured."""
    return tuple(nm for nm in NORMS if nm in DEFAULT_NORMS or nm in result.norms)


def _keys(result: ChainResult) -> list[str]:
    """The JSON keys / CSV columns of the norms measured (the observers' keys)."""
    return [OBSERVERS[nm].key for nm in result.norms]


def check_finite(result: ChainResult) -> None:
    """Raise if any log-norm is NaN or +inf (−inf, an exact zero, is allowed)."""
    for name, nm, a in result.series():
        if np.isnan(a).any() or np.isposinf(a).any():
            raise GateflowError(
                f"block {name} {OBSERVERS[nm].key} has NaN or +inf values (numerical "
                f"overflow in {result.meta.get('dtype')}); rerun in float64 or with fewer "
                "steps")


def to_json_dict(result: ChainResult) -> dict:
    """The JSON object of the contract (plain Python types, −inf as None, no NaN/inf)."""
    check_finite(result)
    m, keys, prov = result.meta, _keys(result), result.provenance
    return json_value({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gateflow_version": __version__,
        "cell": result.cell.name,
        "lags": [int(k) for k in result.lags],
        "norms": list(result.norms),
        "layout": _LAYOUT,
        "blocks": {b: {k: dd[k] for k in keys} for b, dd in result.blocks.items()},
        "input_lags": [int(k) for k in result.input_lags],
        "inputs": {b: {k: dd[k] for k in keys} for b, dd in result.inputs.items()},
        "direct": {s: {k: dd[k] for k in keys if k in dd} for s, dd in result.direct.items()},
        "direct_means": _DIRECT_MEANS,
        "null_means": NULL_MEANS,
        "seed": prov.seed,
        "dtype": str(m["dtype"]),
        "backend": str(m["backend"]),
        "shapes": result.shapes,
        "weights": dict(prov.weights),
        "input_data": dict(prov.inputs),
        "cell_record": result.cell.to_record(),
    })


def csv_rows(result: ChainResult) -> Iterator[tuple[str, ...]]:
    """Rows ``(block, lag, batch, <one column per registered norm>)`` as strings."""
    check_finite(result)
    T, B = result.shapes["T"], result.shapes["B"]
    for name, dd, first in result.groups():
        text = [[[csv_cell(v) for v in row] for row in np.asarray(dd[OBSERVERS[nm].key])
                 .tolist()] if nm in result.norms and OBSERVERS[nm].key in dd else None
                for nm in columns(result)]
        for k in range(T):
            for b in range(B):
                yield (name, str(k + first), str(b),
                       *("" if t is None else t[k][b] for t in text))


def json_bytes(result: ChainResult) -> bytes:
    """The JSON file of one result (compact, one line)."""
    return (json_text(to_json_dict(result), plain=True) + "\n").encode()


def csv_bytes(result: ChainResult) -> bytes:
    """The CSV file of one result."""
    header = (*CSV_HEADER, *(OBSERVERS[nm].key for nm in columns(result)))
    return csv_text(header, csv_rows(result)).encode()


def write_outputs(result: ChainResult, json_path=None, csv_path=None, *,
                  overwrite: bool = False) -> list[Path]:
    """Write the asked files all-or-nothing (rendered first, then staged and moved); an
    existing file is replaced only with ``overwrite``; ``"-"`` is stdout."""
    jobs = []
    if json_path is not None:
        jobs.append((check_file(json_path, "JSON", overwrite=overwrite), json_bytes))
    if csv_path is not None:
        jobs.append((check_file(csv_path, "CSV", overwrite=overwrite), csv_bytes))
    if len(jobs) == 2 and jobs[0][0] == jobs[1][0] == STDOUT:
        raise GateflowError("the JSON and the CSV both write to stdout; send one to a file")
    payloads = {p: fn(result) for p, fn in jobs}  # render everything before touching disk
    write_files(payloads, overwrite=overwrite)
    return list(payloads)


def save_result(result: ChainResult, path, *, overwrite: bool = False) -> Path:
    """Write the JSON contract to ``path`` atomically (``"-"``: stdout); :func:`load_result`
    reads it back in any process."""
    if not isinstance(result, ChainResult):
        raise GateflowError(f"save_result saves a ChainResult (from gateflow.decay or "
                            f"all_lags), got {shown(result)}")
    return write_outputs(result, json_path=path, overwrite=overwrite)[0]


def write_csv(result: ChainResult, path, *, overwrite: bool = False) -> Path:
    """Write the long-format CSV to ``path`` atomically (``"-"``: stdout)."""
    return write_outputs(result, csv_path=path, overwrite=overwrite)[0]


# -- reading a result back ------------------------------------------------------------------
def _norm_arrays(group: object, keys: list[str], where: str, shape: tuple[int, int],
                 optional: bool = False) -> dict[str, np.ndarray]:
    """One block's ``{key: [[...B] ...T]}`` as float64 (T, B) arrays, null as −inf."""
    if not isinstance(group, dict):
        raise GateflowError(f"{where} is not an object of norms")
    out = {}
    for k in keys:
        if k not in group:
            if optional:  # a direct product holds only the norms with a diagonal form
                continue
            raise GateflowError(f"{where} has no {k!r}")
        try:
            a = np.array([[-np.inf if v is None else float(v) for v in row]
                          for row in group[k]], dtype=np.float64)
        except (TypeError, ValueError):
            raise GateflowError(f"{where}[{k!r}] is not a table of numbers") from None
        if a.shape != shape:
            raise GateflowError(f"{where}[{k!r}] has shape {a.shape}; expected {shape}")
        out[k] = a
    return out


def from_json_dict(doc: object) -> ChainResult:
    """The :class:`~gateflow.ChainResult` a decay JSON object describes (:func:`to_json_dict`
    of it gives the same object back, but for ``gateflow_version``). The cell comes from
    ``"cell_record"`` (any cell, a stack included, in a fresh process) or, in a file
    written before it was recorded, from its name (a declared cell). Blocks become
    :class:`.Block` s here, once."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GateflowError(f"not a gateflow decay result (no \"format\": {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise GateflowError(f"a gateflow decay result of format version "
                            f"{shown(doc.get('format_version'))}; this gateflow reads version "
                            f"{FORMAT_VERSION}")
    try:
        name, shapes, norms = doc["cell"], doc["shapes"], doc["norms"]
        if not isinstance(name, str) or not isinstance(shapes, dict):
            raise TypeError
        cell = read_cell(name, doc.get("cell_record"))
        T, B = int(shapes["T"]), int(shapes["B"])
        lags = np.asarray(doc["lags"], dtype=np.int64)
        if not (isinstance(norms, list) and all(isinstance(nm, str) and nm in OBSERVERS
                                                for nm in norms)):
            raise GateflowError(f"\"norms\" {shown(norms)} are not registered norms")
        keys = [OBSERVERS[nm].key for nm in norms]
        # the keys become the cell's own Blocks, once (choose_blocks names a wrong one)
        blocks = {b: _norm_arrays(doc["blocks"][b], keys, f"blocks[{b!r}]", (T, B))
                  for b in choose_blocks(cell, list(doc["blocks"]), allow_empty=True)}
        inputs = {b: _norm_arrays(doc["inputs"][b], keys, f"inputs[{b!r}]", (T, B))
                  for b in choose_blocks(cell, list(doc["inputs"]), allow_empty=True)}
        direct = {str(s): _norm_arrays(dd, keys, f"direct[{s!r}]", (T, B), optional=True)
                  for s, dd in doc["direct"].items()}
        sizes = {k: int(v) for k, v in shapes.items() if k not in ("T", "B")}
        meta: dict = {"n": sizes["n"], "d": sizes["d"], "T": T, "B": B}
        if len(cell.size_names) > 1:
            meta["sizes"] = {s: sizes[s] for s in cell.size_names}
        meta.update(dtype=str(doc["dtype"]), backend=str(doc["backend"]))
        seed = doc["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError
        provenance = Provenance(seed=seed, weights=dict(doc["weights"]),
                                inputs=dict(doc["input_data"]))
    except GateflowError:
        raise  # already one line that names the field (a GateflowError is a ValueError)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f" (no {exc})" if isinstance(exc, KeyError) else ""
        raise GateflowError(f"a gateflow decay result whose fields do not match its format"
                            f"{what}") from None
    if lags.shape != (T,) or (T and (lags[0] != 1 or np.any(np.diff(lags) != 1))):
        raise GateflowError(f"\"lags\" must be 1..{T}")
    return ChainResult(cell=cell, lags=lags, blocks=blocks, direct=direct, meta=meta,
                       inputs=inputs, norms=tuple(norms), provenance=provenance)


def load_result(path) -> ChainResult:
    """A result :func:`save_result` wrote (``gateflow decay --json``), as a ChainResult:
    in any process, whatever its cell (see ``from_json_dict``)."""
    from gateflow._memory import check_fits
    from gateflow.models.formats._files import as_path, open_regular

    path = as_path(path, "result")
    # a regular file only (a FIFO or device is refused unopened), read once, sized first:
    # parsed JSON takes about ten times its text
    with open_regular(path, "result") as (fh, size):
        check_fits(10 * size, f"reading {shown(str(path))}", "give a smaller result file")
        data = fh.read(size + 1)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise GateflowError(f"{shown(str(path))} is not a gateflow result (not JSON)") from None
    return from_json_dict(doc)

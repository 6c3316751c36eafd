"""Gradient decay over lag: all-lag Jacobian norms with provenance, as JSON and CSV files.

:func:`decay` wraps :func:`gateflow._chain.all_lags` and records where the weights and the
inputs came from; :meth:`DecayResult.to_json_dict`, :func:`write_json`, :func:`write_csv`
and :func:`write_outputs` serialise it. :func:`generate` makes the weights and inputs of a
run from an init config (what ``gateflow decay`` does without ``--weights``/``--inputs``).

JSON contract (``gateflow decay --json``), one object:

* ``"cell"``: the cell name; ``"lags"``: ``[1, ..., T]``; ``"norms"``: the norms measured.
* ``"blocks"``: ``{"X/Y": {"log10_frobenius": [[...B] ...T], "log10_spectral": ...}}``, the
  log10 norms of ∂X_T/∂Y_{T−k} (total derivative through the full state): index ``i`` of
  the outer list is lag ``k = i + 1``, the inner list runs over the batch. s_t is the state
  after t inputs, s_0 the initial state, so lag k = T compares with s_0.
* ``"direct"``: ``{"s": {...same keys...}}``, the cell-path-only product ∏ diag(direct
  coefficient of ∂s_t/∂s_{t−1}) for each state block that has one (LSTM ``"c"``: ∏ diag(f);
  GRU ``"h"``: ∏ diag(z)).
* ``null`` stands for an exactly zero Jacobian (log10 0 = −inf); the file says so in
  ``"null_means": "exactly zero"``. NaN/Infinity never appear.
* Metadata: ``"gateflow_version"``, ``"seed"``, ``"dtype"``, ``"backend"``, ``"shapes"``
  (``T, B, n, d``), ``"weights"`` and ``"inputs"`` (``{"source": "file", "path", "sha256"}``,
  ``{"source": "init", ...config}``, ``{"source": "array"}`` for in-memory data).

CSV (``--csv``): header ``block,lag,batch,log10_frobenius,log10_spectral``, one row per
(block, lag, batch element), blocks first, then the direct products as block ``"<s>|direct"``
(e.g. ``c|direct``). An exactly zero Jacobian is ``-inf``; a norm not measured is empty.

Files are written atomically (a temporary file in the same folder, then ``os.replace``);
when anything fails nothing is written and existing files are left untouched.

Several cells (``gateflow decay --cell rnn,lstm,gru``, :func:`run_decays`) share one
generated config (n, d, T, B, init, seed) or one ``--inputs`` file; ``--json``/``--csv``
(and ``--weights``) then name one file per cell with ``{cell}``, and each file is exactly
the one cell's file of the contract above. :func:`decay_figure` draws each cell's memory
block (``c/c`` for the LSTM family, ``h/h`` otherwise; :func:`memory_block`) against lag
with theory overlays, :func:`spectra_figure` its singular values at a few lags, and
:func:`fit_result` fits the per-step factor, e-folding lag and memory horizon. Figures are
rendered in memory and written with the data files, all or nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._errors import GateflowError
from ._io import STDOUT, check_file, write_files
from ._memory import check_fits
from ._params import param_shapes
from .cells import get_cell

__all__ = [
    "DecayResult",
    "DecayRun",
    "decay",
    "decay_figure",
    "file_source",
    "fit_result",
    "fit_table",
    "generate",
    "memory_block",
    "parse_cells",
    "parse_list",
    "run_decays",
    "spectra_figure",
    "theory_overlays",
    "write_csv",
    "write_json",
    "write_outputs",
]

FORMAT = "gateflow-decay"
FORMAT_VERSION = 1
NULL_MEANS = "exactly zero"
DIRECT_SUFFIX = "|direct"


@dataclass
class DecayResult:
    """log10 norms of every block at every lag, plus where the numbers came from."""

    chain: object  # gateflow._chain.ChainResult
    norms: tuple[str, ...]
    seed: int | None = None
    weights_source: dict = field(default_factory=lambda: {"source": "array"})
    inputs_source: dict = field(default_factory=lambda: {"source": "array"})

    @property
    def cell(self) -> str:
        return self.chain.cell

    @property
    def shapes(self) -> dict[str, int]:
        m = self.chain.meta
        return {"T": int(m["T"]), "B": int(m["B"]), "n": int(m["n"]), "d": int(m["d"])}

    def _series(self):
        """(name, norm key, (T, B) array) for every block, then every direct product."""
        keys = [f"log10_{nm}" for nm in self.norms]
        for b, dd in self.chain.blocks.items():
            for k in keys:
                yield b, k, dd[k]
        for s, dd in self.chain.direct.items():
            for k in keys:
                yield s + DIRECT_SUFFIX, k, dd[k]

    def check_finite(self) -> None:
        """Raise if any log-norm is NaN or +inf (−inf, an exact zero, is allowed)."""
        for name, key, a in self._series():
            a = np.asarray(a)
            if np.isnan(a).any() or np.isposinf(a).any():
                raise GateflowError(
                    f"block {name} {key} has NaN or +inf values (numerical overflow in "
                    f"{self.chain.meta.get('dtype')}); rerun with --dtype float64 or fewer steps")

    def to_json_dict(self) -> dict:
        """The JSON object of the module docstring (plain Python types, no NaN/inf)."""
        self.check_finite()
        keys = [f"log10_{nm}" for nm in self.norms]
        m = self.chain.meta
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gateflow_version": _version(),
            "cell": self.cell,
            "lags": [int(k) for k in self.chain.lags],
            "norms": list(self.norms),
            "layout": "blocks[X/Y][norm][k-1][b] = log10 of the norm of dX_T/dY_{T-k} "
                      "for batch element b",
            "blocks": {b: {k: _nested(dd[k]) for k in keys} for b, dd in self.chain.blocks.items()},
            "direct": {s: {k: _nested(dd[k]) for k in keys} for s, dd in self.chain.direct.items()},
            "direct_means": "cell-path-only product: prod over steps of diag(direct coefficient "
                            "of ds_t/ds_{t-1}), e.g. LSTM c: prod diag(f)",
            "null_means": NULL_MEANS,
            "seed": self.seed,
            "dtype": str(m["dtype"]),
            "backend": str(m["backend"]),
            "shapes": self.shapes,
            "weights": self.weights_source,
            "inputs": self.inputs_source,
        }

    def csv_rows(self):
        """Rows ``(block, lag, batch, log10_frobenius, log10_spectral)`` as strings."""
        self.check_finite()
        T, B = self.shapes["T"], self.shapes["B"]
        groups = [(b, dd) for b, dd in self.chain.blocks.items()]
        groups += [(s + DIRECT_SUFFIX, dd) for s, dd in self.chain.direct.items()]
        for name, dd in groups:
            cols = [np.asarray(dd[f"log10_{nm}"]) if nm in self.norms else None
                    for nm in ("frobenius", "spectral")]
            text = [None if c is None else [[_fmt(v) for v in row] for row in c.tolist()]
                    for c in cols]
            for k in range(T):
                for b in range(B):
                    yield (name, str(k + 1), str(b),
                           *("" if t is None else t[k][b] for t in text))


def _version() -> str:
    from . import __version__

    return __version__


def _fmt(v: float) -> str:
    return "-inf" if v == -np.inf else repr(float(v))


def _nested(a) -> list:
    """(T, B) float array -> nested lists, −inf -> None."""
    a = np.asarray(a, dtype=np.float64)
    if np.isneginf(a).any():
        return np.where(np.isneginf(a), None, a).tolist()
    return a.tolist()


# -- inputs of a run ----------------------------------------------------------------------
def parse_list(text: str | None, valid, what: str) -> tuple[str, ...] | None:
    """``"h/h,c/c"`` -> ``("h/h", "c/c")``, each checked against ``valid``."""
    from .cells import closest

    if text is None:
        return None
    items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not items:
        raise GateflowError(f"empty {what} list {text!r}; give e.g. {','.join(valid)}")
    for s in items:
        if s not in valid:
            raise GateflowError(f"unknown {what} {s!r}{closest(s, valid)}")
    return items


def file_source(path) -> dict:
    """``{"source": "file", "path": ..., "sha256": ...}`` of an input file."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise GateflowError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return {"source": "file", "path": str(path), "sha256": h.hexdigest()}


def run_bytes(cell, n: int, d: int, T: int, B: int, dtype: str = "float64", blocks=None,
              norms=("frobenius",)) -> int:
    """Peak bytes of one generated run: float64 params and inputs, then :func:`all_lags`."""
    from . import _chain
    from ._compile import get_dtype

    cell_ = get_cell(cell)
    blocks = tuple(cell_.blocks) if blocks is None else tuple(blocks)
    outs = {b.split("/")[0] for b in blocks}
    need = _chain.estimate_bytes(cell_, n, d, T, B, n * len(outs), len(blocks) * len(norms) + 4,
                                 get_dtype(dtype).itemsize, "spectral" in norms)
    return need + 8 * T * B * d + 8 * sum(math.prod(s) for s in param_shapes(cell_, n, d).values())


def _precheck_memory(cell, n: int, d: int, T: int, B: int, dtype: str, backend: str,
                     blocks, norms) -> None:
    """Refuse a run that cannot fit before generating anything (all_lags checks again)."""
    check_fits(run_bytes(cell, n, d, T, B, dtype, blocks, norms), backend=backend)


def generate(cell, *, weights=None, inputs=None, hidden: int | None = None,
             input_size: int | None = None, steps: int | None = None, batch: int | None = None,
             init: str | None = None, sigma_w: float | None = None, sigma_v: float | None = None,
             sigma_b: float | None = None, gate_bias: float | None = None,
             chrono: float | None = None, seed: int | None = None,
             input_dist: str | None = None, input_scale: float | None = None,
             dtype: str = "float64", backend: str = "numpy", blocks=None,
             norms=("frobenius", "spectral")) -> tuple[dict, np.ndarray, dict]:
    """Weights and inputs of a run: read from files, or generated from the options.

    Returns ``(params, x, provenance)`` with provenance keys ``seed``, ``weights_source`` and
    ``inputs_source`` (keyword arguments of :func:`decay`). Options that only apply to
    generated data are refused next to a file (``seed`` when both are files). Defaults:
    n = 64, d = n, T = 100, B = 4, PyTorch init, seed 0; generated inputs use seed + 1.
    """
    from ._params import init_params, load_inputs, load_params, make_inputs

    cell = get_cell(cell)
    init_opts = {"--hidden": hidden, "--input-size": input_size, "--init": init,
                 "--sigma-w": sigma_w, "--sigma-v": sigma_v, "--sigma-b": sigma_b,
                 "--gate-bias": gate_bias, "--chrono": chrono}
    input_opts = {"--steps": steps, "--batch": batch, "--input-dist": input_dist,
                  "--input-scale": input_scale}
    for given, opts, what in ((weights, init_opts, "--weights"), (inputs, input_opts, "--inputs")):
        clash = [k for k, v in opts.items() if v is not None]
        if given is not None and clash:
            verb, it = ("applies", "it") if len(clash) == 1 else ("apply", "them")
            raise GateflowError(f"{', '.join(clash)} {verb} only to generated data; drop {it} "
                                f"or drop {what}")
    if weights is not None and inputs is not None and seed is not None:
        raise GateflowError("--seed applies only to generated data; drop it or drop --weights "
                            "or --inputs")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise GateflowError(f"seed must be an integer >= 0, got {seed!r}")
    used_seed = None
    generated_weights = weights is None
    generated_inputs = inputs is None
    seed0 = 0 if seed is None else int(seed)

    x = None
    if not generated_inputs and generated_weights and input_size is None:
        x = load_inputs(inputs)  # d comes from the file
    if generated_weights:
        n = 64 if hidden is None else hidden
        d = input_size if input_size is not None else x.shape[2] if x is not None else n
    if not generated_weights:
        params = load_params(weights, cell)
        w_src = file_source(weights)
        n = next(iter(params.values())).shape[0]
        mats = cell.matrices
        d = next(params[p].shape[1] for p, k in mats.items() if k == "input")
    if generated_inputs:
        T = 100 if steps is None else steps
        B = 4 if batch is None else batch
        from ._params import _positive_int

        T = _positive_int(T, "--steps (T)", "; inputs need at least one time step")
        B = _positive_int(B, "--batch (B)", "; inputs need at least one sequence")
        if generated_weights:
            param_shapes(cell, n, d)  # validates n and d
        _precheck_memory(cell, n, d, T, B, dtype, backend, blocks, norms)
    if generated_weights:
        scheme = "pytorch" if init is None else init
        cfg = {"scheme": scheme, "sigma_w": 1.0 if sigma_w is None else sigma_w,
               "sigma_v": 1.0 if sigma_v is None else sigma_v,
               "sigma_b": 0.0 if sigma_b is None else sigma_b,
               "gate_bias": gate_bias, "chrono": chrono}
        params = init_params(cell, n, d, seed=seed0, **cfg)
        w_src = {"source": "init", "n": n, "d": d, "seed": seed0, **cfg}
        used_seed = seed0
    if generated_inputs:
        dist = "normal" if input_dist is None else input_dist
        scale = 1.0 if input_scale is None else input_scale
        x = make_inputs(T, B, d, dist=dist, scale=scale, seed=seed0 + 1)
        x_src = {"source": "init", "T": T, "B": B, "d": d, "dist": dist, "scale": scale,
                 "seed": seed0 + 1}
        used_seed = seed0
    else:
        x = load_inputs(inputs, d) if x is None else x
        x_src = file_source(inputs)
    return params, x, {"seed": used_seed, "weights_source": w_src, "inputs_source": x_src}


def decay(cell, params: dict, x, *, blocks=None, norms=("frobenius", "spectral"),
          dtype: str = "float64", backend: str = "numpy", progress=None, seed: int | None = None,
          weights_source: dict | None = None, inputs_source: dict | None = None,
          **chain_opts) -> DecayResult:
    """log10 norms of ∂X_T/∂Y_{T−k} for every block and lag, with provenance.

    ``chain_opts`` go to :func:`gateflow._chain.all_lags` (``probe``, ``singular_lags``,
    ``s0``, ``threads``, ...). Raises :class:`GateflowError` for anything wrong with the
    inputs, before computing.
    """
    from ._chain import NORMS, all_lags
    from .cells import choose_many

    cell = get_cell(cell)
    if isinstance(blocks, str):
        blocks = parse_list(blocks, cell.blocks, "block")
    norms = choose_many(norms, NORMS, "norm")  # a name list or a comma string, at least one
    res = all_lags(cell, params, x, blocks=blocks, norms=norms, dtype=dtype, backend=backend,
                   progress=progress, **chain_opts)
    out = DecayResult(chain=res, norms=norms, seed=seed,
                      weights_source=weights_source or {"source": "array"},
                      inputs_source=inputs_source or {"source": "array"})
    out.check_finite()
    return out


# -- files --------------------------------------------------------------------------------
def _json_bytes(result: DecayResult) -> bytes:
    try:
        text = json.dumps(result.to_json_dict(), allow_nan=False, indent=None,
                          separators=(",", ":"))
    except ValueError as exc:  # a NaN slipped through: never write an invalid file
        raise GateflowError(f"cannot write JSON: {exc}") from None
    return (text + "\n").encode()


def _csv_bytes(result: DecayResult) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("block", "lag", "batch", "log10_frobenius", "log10_spectral"))
    w.writerows(result.csv_rows())
    return buf.getvalue().encode()


def write_outputs(result: DecayResult, json_path=None, csv_path=None, *,
                  overwrite: bool = False) -> list[Path]:
    """Write the asked files all-or-nothing (rendered first, then staged and moved); an
    existing file is replaced only with ``overwrite``; ``"-"`` is stdout."""
    jobs = []
    if json_path is not None:
        jobs.append((check_file(json_path, "JSON", overwrite=overwrite), _json_bytes))
    if csv_path is not None:
        jobs.append((check_file(csv_path, "CSV", overwrite=overwrite), _csv_bytes))
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


# -- the command line's pipeline ----------------------------------------------------------
def summary_table(result: DecayResult, max_lags: int = 6):
    """A rich Table: batch-mean log10 norms of every block at a few lags."""
    from rich.table import Table

    T = result.shapes["T"]
    lags = sorted({k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
                   if k <= T} | {T})
    if len(lags) > max_lags:
        lags = lags[:max_lags - 1] + [T]
    table = Table(title=f"{result.cell}: mean log10 norm over the batch "
                        f"(T={T}, B={result.shapes['B']}, n={result.shapes['n']})")
    table.add_column("block", style="bold cyan", no_wrap=True)
    table.add_column("norm", no_wrap=True)
    for k in lags:
        table.add_column(f"k={k}", justify="right")
    for name, key, a in result._series():
        a = np.asarray(a)
        cells = []
        for k in lags:
            row = a[k - 1]
            cells.append("-inf" if np.isneginf(row).all() else
                         f"{np.mean(row[np.isfinite(row)]):.3f}")
        table.add_row(name, key.removeprefix("log10_"), *cells)
    return table


# -- several cells, fits, figures -----------------------------------------------------------
CELL_FIELD = "{cell}"
FIGURE_FORMATS = ("png", "svg")
SPECTRA_LAGS = (1, 10, 100)


def memory_block(cell) -> str:
    """The block that carries a cell's memory: ``c/c`` when the state has a c (LSTM
    family), ``h/h`` otherwise."""
    return "c/c" if "c" in get_cell(cell).state else "h/h"


def parse_cells(text: str) -> tuple[str, ...]:
    """``"rnn,lstm,gru"`` -> ``("rnn", "lstm", "gru")``; unknown or repeated names refused."""
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise GateflowError(f"empty cell list {text!r}; give e.g. rnn,lstm,gru")
    if not all(items):
        raise GateflowError(f"empty name in the cell list {text!r}; give e.g. rnn,lstm,gru")
    for s in items:
        get_cell(s)
    dup = sorted({s for s in items if items.count(s) > 1})
    if dup:
        raise GateflowError(f"cell {', '.join(map(repr, dup))} given twice in {text!r}; "
                            "name each cell once")
    return tuple(items)


def parse_lags(text: str | None, default=SPECTRA_LAGS) -> tuple[int, ...]:
    """``"1,10,100"`` -> ``(1, 10, 100)`` (integers >= 1, sorted, repeats dropped)."""
    if text is None:
        return tuple(default)
    out = set()
    for s in str(text).split(","):
        s = s.strip()
        if not s:
            continue
        try:
            k = int(s)
        except ValueError:
            raise GateflowError(f"--spectra-lags: {s!r} is not an integer; give e.g. 1,10,100") \
                from None
        if k < 1:
            raise GateflowError(f"--spectra-lags: lag {k} must be >= 1")
        out.add(k)
    if not out:
        raise GateflowError(f"empty --spectra-lags {text!r}; give e.g. 1,10,100")
    return tuple(sorted(out))


def per_cell(path, cell: str) -> str | None:
    """``path`` with ``{cell}`` replaced by the cell name (None stays None); a string, so a
    trailing slash survives for the output checks."""
    return None if path is None else str(path).replace(CELL_FIELD, cell)


def check_figure_path(path, what: str, *, overwrite: bool = False) -> tuple[Path, str]:
    """An output figure path with a known extension (.png or .svg) in an existing folder."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise GateflowError(f"cannot write {what} {str(path)!r}: unknown extension "
                            f"{path.suffix or '(none)'!r}; use .png or .svg")
    return check_file(path, what, overwrite=overwrite), fmt


def plot_norm(result: DecayResult) -> str:
    """The norm figures and fits use: Frobenius when measured, else spectral."""
    return "frobenius" if "frobenius" in result.norms else result.norms[0]


def fit_result(result: DecayResult, threshold: float = 1e-6) -> dict:
    """``{row label: DecayFit}`` for the memory block (if measured) and its cell-path-only
    product (LSTM ``∏ diag(f)``, GRU ``∏ diag(z)``), on the batch median."""
    from ._analysis import fit_decay, summarize
    from ._plot import direct_gate

    key = f"log10_{plot_norm(result)}"
    res = result.chain
    mb = memory_block(result.cell)
    out = {}
    if mb in res.blocks:
        out[mb] = fit_decay(res.lags, summarize(res.blocks[mb][key], res.lags).median,
                            threshold=threshold)
    state = mb.split("/")[1]
    if state in res.direct:
        s = summarize(res.direct[state][key], res.lags)
        out[f"∏ diag({direct_gate(state)})"] = fit_decay(res.lags, s.median, threshold=threshold)
    return out


def fit_table(fits: dict, results: dict, threshold: float):
    """A rich Table: per cell and row, per-step factor, e-folding lag, memory horizon."""
    from rich.table import Table

    from ._report import _fmt, _horizon

    norms = {plot_norm(r) for r in results.values()}
    table = Table(title=f"fitted decay of the batch median ({'/'.join(sorted(norms))} norm; "
                        f"memory horizon: first lag below {threshold:g})")
    table.add_column("cell", style="bold cyan", no_wrap=True)
    table.add_column("block", no_wrap=True)
    for h in ("per-step factor", "e-folding lag (steps)", "memory horizon (steps)"):
        table.add_column(h, justify="right")
    for cell, rows in fits.items():
        T = results[cell].shapes["T"]
        if not rows:
            table.add_row(cell, "(memory block not measured)", "—", "—", "—")
        for name, f in rows.items():
            table.add_row(cell, name, f"{f.factor:.4f}", _fmt(f.efold, ".3g", "∞"),
                          _horizon(f, T))
    return table


def _second_moment(x) -> float:
    """E[x²] in float64; inf (not a warning) when it overflows (|x| beyond ~1e154)."""
    with np.errstate(over="ignore"):
        return float(np.mean(np.square(np.asarray(x, dtype=np.float64))))


def _finite_input_var(params: dict, x_moment: float) -> bool:
    """Whether the mean-field input variance mean_i Σ_j W_ij² · E[x²] is finite; if not
    (huge inputs), the mean-field overlay is skipped rather than failing the run."""
    if not math.isfinite(x_moment):
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        W = np.asarray(params["W"], dtype=np.float64)
        return bool(np.isfinite(float(np.mean(np.sum(np.square(W), axis=1))) * x_moment))


def theory_overlays(results: dict, params: dict, sources: dict, x_moments: dict, *,
                    gate_bias: float | None = None) -> list:
    """The theory lines that apply to these runs (see :func:`gateflow._plot.rnn_overlays`
    and :func:`gateflow._plot.gate_overlay`): σ(b)^k for the memory gate when a gate bias
    was set, the mean-field rate for a tanh RNN with Gaussian init, the Pascanu bound for
    an RNN."""
    from ._plot import gate_overlay, rnn_overlays

    out = []
    norms = {plot_norm(r) for r in results.values()}
    if len(norms) != 1:
        return out
    norm = norms.pop()
    gated = [c for c in results if get_cell(c).memory_bias is not None]
    if gate_bias is not None and gated:
        r = results[gated[0]]
        out.append(gate_overlay(r.chain.lags, gate_bias, r.shapes["n"], norm=norm,
                                prefix="memory gate, zero weights", timescale=True,
                                color="#000000", linestyle=(0, (5, 1.5, 1, 1.5, 1, 1.5))))
    for c in ("rnn", "rnn-relu"):
        if c in results:
            gaussian = (c == "rnn" and sources[c]["weights_source"].get("source") == "init"
                        and sources[c]["weights_source"].get("scheme") == "gaussian"
                        and _finite_input_var(params[c], x_moments[c]))
            out += rnn_overlays(params[c], results[c].chain.lags, norm=norm, mean_field=gaussian,
                                input_second_moment=x_moments[c], name=c)
    return out


def _config_text(results: dict) -> str:
    first = next(iter(results.values()))
    sh = first.shapes
    w = first.weights_source
    init = f"{w['scheme']} init" if w.get("source") == "init" else "weights from file"
    same_n = all(r.shapes["n"] == sh["n"] for r in results.values())
    parts = [init] + ([f"n = {sh['n']}"] if same_n else []) + [f"T = {sh['T']} steps",
                                                               f"B = {sh['B']}"]
    return ", ".join(parts)


def decay_figure(results: dict, overlays=(), *, title: str | None = None):
    """Gradient norm of each cell's memory block against lag (median, IQR band), with the
    cell-path-only products dashed and the theory ``overlays``; returns the Figure."""
    from ._plot import plot_decay

    norms = {plot_norm(r) for r in results.values()}
    norm = "frobenius" if "frobenius" in norms else "spectral"
    for r in results.values():
        if norm not in r.norms:
            raise GateflowError(f"{r.cell} has no {norm} norms to plot next to the other cells; "
                                "measure the same --norms for every cell")
    title = title or (f"Gradient decay over lag: {' vs '.join(results)}\n"
                      f"{_config_text(results)}; median over the batch, band = IQR")
    return plot_decay({c: r.chain for c, r in results.items()},
                      {c: memory_block(c) for c in results}, overlays, norm=norm, title=title,
                      legend="outside")


def spectra_figure(results: dict, lags, *, title: str | None = None):
    """Singular values of each cell's memory block at ``lags`` (first sequence)."""
    from ._plot import plot_spectra

    title = title or (r"Singular values of the memory block $\partial s_T/\partial s_{T-k}$, "
                      f"sequence 0\n{_config_text(results)}")
    return plot_spectra({c: r.chain for c, r in results.items()},
                        {c: memory_block(c) for c in results}, lags=list(lags), title=title,
                        legend="outside")


@dataclass
class DecayRun:
    """What ``gateflow decay`` made: results and fits per cell, the figures, the files."""

    results: dict  # cell -> DecayResult
    fits: dict  # cell -> {row label: DecayFit}
    overlays: list
    figure: object | None = None
    spectra: object | None = None
    written: list = field(default_factory=list)


def _plan_outputs(cells, json_path, csv_path, plot_path, spectra_path, overwrite=False,
                  weights=None, inputs=None):
    """Check every output path before any work; return (per-cell files, figure files)."""
    multi = len(cells) > 1
    for path, flag in ((json_path, "--json"), (csv_path, "--csv"), (plot_path, "--plot"),
                       (spectra_path, "--spectra"), (weights, "--weights"),
                       (inputs, "--inputs")):
        if path is not None and not str(path).strip():
            raise GateflowError(f"the {flag} path is empty; give a file name")
    for path, flag in ((json_path, "--json"), (csv_path, "--csv")):
        if multi and path is not None and Path(str(path)) == STDOUT:
            raise GateflowError(f"{flag} - writes one cell to stdout; with several cells give "
                                f"a path with {CELL_FIELD}, e.g. decay-{CELL_FIELD}.{flag[2:]}")
        if multi and path is not None and CELL_FIELD not in str(path):
            raise GateflowError(f"{flag} {str(path)!r} must contain {CELL_FIELD} with several "
                                f"cells (one file per cell), e.g. decay-{CELL_FIELD}"
                                f"{Path(str(path)).suffix or '.' + flag[2:]}")
    files = {}
    for c in cells:
        files[c] = {}
        for path, what in ((json_path, "JSON"), (csv_path, "CSV")):
            if path is not None:
                files[c][what] = check_file(per_cell(path, c), what, overwrite=overwrite)
    figs = {}
    for path, what in ((plot_path, "--plot figure"), (spectra_path, "--spectra figure")):
        if path is not None:
            figs[what] = check_figure_path(path, what, overwrite=overwrite)
    if any(p == STDOUT for p, _ in figs.values()):
        raise GateflowError("figures are not written to stdout; give --plot/--spectra a .png "
                            "or .svg path")
    if json_path is not None and csv_path is not None \
            and Path(str(json_path)) == Path(str(csv_path)) == STDOUT:
        raise GateflowError("--json - and --csv - both write to stdout; send one to a file")
    seen = {}
    for c, d in files.items():
        for what, p in d.items():
            flag = f"--{what.lower()}"
            seen.setdefault(p.resolve(), []).append(f"{flag} of {c}" if multi else flag)
    for what, (p, _) in figs.items():
        seen.setdefault(p.resolve(), []).append(what.split()[0])
    for p, whats in seen.items():
        if whats == ["--json", "--csv"]:
            raise GateflowError("--json and --csv name the same file; give two different paths")
        if len(whats) > 1:
            both = "both" if len(whats) == 2 else "all"
            raise GateflowError(f"{' and '.join(whats)} would {both} write {str(p)!r}; "
                                "give different paths")
    return files, figs


def run_decays(cells, *, json_path=None, csv_path=None, plot_path=None, spectra_path=None,
               spectra_lags=None, threshold: float = 1e-6, blocks: str | None = None,
               norms: str | None = None, dtype: str = "float64", backend: str = "numpy",
               quiet: bool = False, weights=None, overwrite: bool = False,
               **data_opts) -> DecayRun:
    """``gateflow decay`` for one cell or several (``"rnn,lstm,gru"``), all on the same
    generated config or the same ``--inputs`` file.

    Validates everything first (cells, output paths, blocks, norms, data files), computes
    each cell with a progress bar, fits the memory block, draws the figures, then writes
    every file (per-cell JSON/CSV, ``plot_path``, ``spectra_path``) in one all-or-nothing
    step, and prints the tables unless ``quiet``. With several cells ``json_path``,
    ``csv_path`` and ``weights`` must contain ``{cell}``. ``gate_bias``/``chrono`` (in
    ``data_opts``) apply to the cells with a memory gate and are refused if none has one.
    """
    import math

    from rich.console import Console

    from ._chain import NORMS
    from ._compile import get_dtype, get_xp

    cells = parse_cells(cells) if isinstance(cells, str) else tuple(cells)
    if not cells:
        raise GateflowError("no cell given; give e.g. --cell rnn,lstm,gru")
    multi = len(cells) > 1
    # Cheap checks first, so that a mistake costs no computing and writes nothing.
    if multi and weights is not None and CELL_FIELD not in str(weights):
        raise GateflowError(f"--weights {str(weights)!r} is one cell's file; with several cells "
                            f"give a pattern with {CELL_FIELD}, e.g. w-{CELL_FIELD}.safetensors")
    files, figs = _plan_outputs(cells, json_path, csv_path, plot_path, spectra_path, overwrite,
                                weights, data_opts.get("inputs"))
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise GateflowError(f"--threshold must be a number, got {threshold!r}") from None
    if not (math.isfinite(threshold) and threshold > 0):
        raise GateflowError(f"--threshold must be a finite number > 0, got {threshold!r}")
    if spectra_lags is not None and spectra_path is None:
        raise GateflowError("--spectra-lags applies only with --spectra FILE")
    sv_lags = parse_lags(spectra_lags) if spectra_path is not None else ()
    norm_t = parse_list(norms, NORMS, "norm") or NORMS
    get_dtype(dtype)
    get_xp(backend)
    block_t = {}
    for c in cells:
        cell_ = get_cell(c)
        block_t[c] = parse_list(blocks, cell_.blocks, "block")
        mb = memory_block(c)
        if figs and block_t[c] is not None and mb not in block_t[c]:
            raise GateflowError(f"--plot/--spectra draw each cell's memory block; add {mb} to "
                                f"--blocks (cell {c})")
    gated = {c: get_cell(c).memory_bias is not None for c in cells}
    gate_opts = {k: data_opts.pop(k, None) for k in ("gate_bias", "chrono")}
    if multi and any(v is not None for v in gate_opts.values()) and not any(gated.values()):
        flag = "--gate-bias" if gate_opts["gate_bias"] is not None else "--chrono"
        raise GateflowError(f"{flag} does not apply to any of {', '.join(cells)}: none has a "
                            "gate on its memory path")

    # Every cell's data before any computing: a bad file for the last cell costs nothing.
    data = {}
    for c in cells:
        opts = dict(data_opts)
        if gated[c] or not multi:
            opts.update(gate_opts)
        data[c] = generate(c, weights=per_cell(weights, c), dtype=dtype, backend=backend,
                           blocks=block_t[c], norms=norm_t, **opts)
    results = {}
    err = None if quiet else Console(stderr=True)
    for c in cells:
        params, x, prov = data[c]
        T = x.shape[0]
        chain_opts = {"singular_lags": tuple(sorted({min(k, T) for k in sv_lags}))} \
            if sv_lags else {}
        if quiet:
            results[c] = decay(c, params, x, blocks=block_t[c], norms=norm_t, dtype=dtype,
                               backend=backend, **prov, **chain_opts)
            continue
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn(f"{c}: backward sweep" if multi else "backward sweep"),
                      BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                      transient=True) as bar:
            task = bar.add_task("sweep", total=T)
            step = max(1, T // 200)

            def progress(k: int) -> None:
                if k % step == 0 or k == T:
                    bar.update(task, completed=k)

            results[c] = decay(c, params, x, blocks=block_t[c], norms=norm_t, dtype=dtype,
                               backend=backend, progress=progress, **prov, **chain_opts)

    fits = {c: fit_result(r, threshold) for c, r in results.items()}
    overlays = theory_overlays(
        results, {c: data[c][0] for c in cells}, {c: data[c][2] for c in cells},
        {c: _second_moment(data[c][1]) for c in cells},
        gate_bias=gate_opts["gate_bias"])
    run = DecayRun(results=results, fits=fits, overlays=overlays)

    # Render every output in memory, then write them all or none.
    payloads = {}
    for c, d in files.items():
        if "JSON" in d:
            payloads[d["JSON"]] = _json_bytes(results[c])
        if "CSV" in d:
            payloads[d["CSV"]] = _csv_bytes(results[c])
    if "--plot figure" in figs:
        run.figure = decay_figure(results, overlays)
        path, fmt = figs["--plot figure"]
        payloads[path] = _figure_bytes(run.figure, fmt)
    if "--spectra figure" in figs:
        T_min = min(r.shapes["T"] for r in results.values())
        run.spectra = spectra_figure(results, sorted({min(k, T_min) for k in sv_lags}))
        path, fmt = figs["--spectra figure"]
        payloads[path] = _figure_bytes(run.spectra, fmt)
    write_files(payloads, overwrite=overwrite)
    run.written = [p for p in payloads if p != STDOUT]
    if not quiet:
        out = Console(stderr=STDOUT in payloads)  # stdout carries the data then
        for r in results.values():
            out.print(summary_table(r))
        out.print(fit_table(fits, results, threshold))
        for p in run.written:
            out.print(f"wrote {p}", highlight=False, soft_wrap=True)
    return run


def _figure_bytes(fig, fmt: str) -> bytes:
    from ._plot import figure_bytes

    return figure_bytes(fig, fmt)

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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._errors import GateflowError
from ._io import check_file, write_files

__all__ = [
    "DecayResult",
    "check_output_path",
    "decay",
    "file_source",
    "generate",
    "parse_list",
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


check_output_path = check_file


def _precheck_memory(cell, n: int, d: int, T: int, B: int, dtype: str, backend: str,
                     blocks, norms) -> None:
    """Refuse a run that cannot fit before generating anything (all_lags checks again)."""
    from . import _chain
    from ._compile import get_dtype

    cell_ = _cell(cell)
    blocks = tuple(cell_.blocks) if blocks is None else tuple(blocks)
    outs = {b.split("/")[0] for b in blocks}
    need = _chain.estimate_bytes(cell_, n, d, T, B, n * len(outs), len(blocks) * len(norms) + 4,
                                 get_dtype(dtype).itemsize, "spectral" in norms)
    need += 8 * T * B * d + 8 * sum(int(np.prod(s)) for s in _param_shapes(cell_, n, d))
    have = _chain.available_memory(backend)
    if need > 0.8 * have:
        raise GateflowError(
            f"this run needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB is free; "
            "use fewer steps (T), a smaller batch (B), fewer blocks, or float32")


def _param_shapes(cell, n, d):
    from ._params import param_shapes

    return param_shapes(cell, n, d).values()


def _cell(cell):
    from .cells import get_cell

    return get_cell(cell)


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
    generated data are refused next to a file. Defaults: n = 64, d = n, T = 100, B = 4,
    PyTorch init, seed 0; generated inputs use seed + 1.
    """
    from ._params import init_params, load_inputs, load_params, make_inputs

    cell = _cell(cell)
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
        mats = cell.system.matrices
        d = next(params[p].shape[1] for p, k in mats.items() if k == "input")
    if generated_inputs:
        T = 100 if steps is None else steps
        B = 4 if batch is None else batch
        from ._params import _positive_int

        T = _positive_int(T, "--steps (T)", "; inputs need at least one time step")
        B = _positive_int(B, "--batch (B)", "; inputs need at least one sequence")
        if generated_weights:
            from ._params import param_shapes

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

    cell = _cell(cell)
    if isinstance(blocks, str):
        blocks = parse_list(blocks, cell.blocks, "block")
    if isinstance(norms, str):
        norms = parse_list(norms, NORMS, "norm")
    norms = tuple(norms)
    if not norms:
        raise GateflowError(f"no norm asked for; give one or more of {', '.join(NORMS)}")
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


def write_outputs(result: DecayResult, json_path=None, csv_path=None) -> list[Path]:
    """Write the asked files all-or-nothing (rendered first, then staged and moved)."""
    jobs = []
    if json_path is not None:
        jobs.append((check_output_path(json_path, "JSON"), _json_bytes))
    if csv_path is not None:
        jobs.append((check_output_path(csv_path, "CSV"), _csv_bytes))
    payloads = {p: fn(result) for p, fn in jobs}  # render everything before touching disk
    write_files(payloads)
    return list(payloads)


def write_json(result: DecayResult, path) -> Path:
    """Write the JSON contract to ``path`` atomically."""
    return write_outputs(result, json_path=path)[0]


def write_csv(result: DecayResult, path) -> Path:
    """Write the long-format CSV to ``path`` atomically."""
    return write_outputs(result, csv_path=path)[0]


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


def run_decay(cell: str, *, json_path=None, csv_path=None, blocks: str | None = None,
              norms: str | None = None, dtype: str = "float64", backend: str = "numpy",
              quiet: bool = False, **data_opts) -> DecayResult:
    """``gateflow decay``: validate everything, compute with a progress bar, write the files,
    print a summary. ``data_opts`` are :func:`generate`'s (weights/inputs files or init
    options). Nothing is written unless every step succeeds."""
    from rich.console import Console

    from ._chain import NORMS
    from ._compile import get_dtype, get_xp

    cell_ = _cell(cell)
    # Cheap checks first, so that a mistake costs no computing and writes nothing.
    for path, what in ((json_path, "JSON"), (csv_path, "CSV")):
        if path is not None:
            check_output_path(path, what)
    if json_path is not None and csv_path is not None and \
            Path(json_path).resolve() == Path(csv_path).resolve():
        raise GateflowError("--json and --csv name the same file; give two different paths")
    block_t = parse_list(blocks, cell_.blocks, "block")
    norm_t = parse_list(norms, NORMS, "norm") or NORMS
    get_dtype(dtype)
    get_xp(backend)
    params, x, prov = generate(cell_, dtype=dtype, backend=backend, blocks=block_t, norms=norm_t,
                               **data_opts)

    T = x.shape[0]
    if quiet:
        result = decay(cell_, params, x, blocks=block_t, norms=norm_t, dtype=dtype,
                       backend=backend, **prov)
    else:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        err = Console(stderr=True)
        with Progress(TextColumn("backward sweep"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err, transient=True) as bar:
            task = bar.add_task("sweep", total=T)
            step = max(1, T // 200)

            def progress(k: int) -> None:
                if k % step == 0 or k == T:
                    bar.update(task, completed=k)

            result = decay(cell_, params, x, blocks=block_t, norms=norm_t, dtype=dtype,
                           backend=backend, progress=progress, **prov)
    written = write_outputs(result, json_path, csv_path)
    if not quiet:
        out = Console()
        out.print(summary_table(result))
        for p in written:
            out.print(f"wrote {p}", highlight=False, soft_wrap=True)
    return result

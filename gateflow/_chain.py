"""All-lag Jacobian chains: ∂s_T/∂s_{T−k} for every k = 1..T in one backward sweep.

Forward: run the cell over x (T, B, d), time-major as in PyTorch, from s_0 (zeros by
default), keeping only the states s_0..s_T, O(T·B·n). Backward: hold the rows that are asked
for, G = ∂(rows of s_T)/∂s_t, shape (B, R, n) per state block, and multiply by one step's
Jacobian from the right, G ← G J_t, walking the cell's wiring backwards:

    A[source] += A[sink] ⊙ coef(sink, source)      elementwise, broadcast over rows
    A[v]      += [A[W_1 v] … A[W_G v]] · [W_1; …; W_G]   one GEMM per shared vector v

Each step's Jacobian coefficients (a few (B, n) arrays) are kept from the forward pass
while they fit in 128 MiB; beyond that they are recomputed from s_{t−1} (a B × n × Gn
GEMM, n times cheaper than the backward step). Either way memory stays O(T·B·n), like the
trajectory. No per-step Jacobian is ever formed. Each row carries its own log-scale: when
its norm leaves a dtype-dependent safe range (:func:`_renorm_range`) it is renormalised and
the factor moves to the log, so T = 10 000 neither underflows nor overflows in the
vanishing or the exploding regime.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from ._cell import Cell
from ._compile import Bound, compile_cell, get_dtype, get_xp
from ._errors import GateflowError
from ._interrupt import check as check_interrupt
from ._memory import available_memory, check_fits
from .cells import choose_many, closest, get_cell, real_array, shown, whole

NORMS = ("frobenius", "spectral")
_KEEP_BYTES = 128 * 2**20  # keep forward coefficients for the backward sweep up to this size
_LN10 = math.log(10.0)


def _renorm_range(dtype) -> tuple[float, float]:
    """Renormalise a row when its squared norm leaves this range: [tiny^¼, max^¼], about
    1e±77 in float64 and 1e±9.5 in float32, far from under- and overflow in both."""
    info = np.finfo(dtype)
    return float(info.tiny) ** 0.25, float(info.max) ** 0.25


@dataclass
class ChainResult:
    """log10 norms of ∂X_T/∂Y_{T−k}; arrays are (T, B): index k−1 is lag k, then the batch.

    ``-inf`` marks an exactly zero Jacobian (e.g. an RNN with U = 0)."""

    cell: str
    lags: np.ndarray
    blocks: dict[str, dict[str, np.ndarray]]  # "c/c" -> {"log10_frobenius": (T, B), ...}
    direct: dict[str, dict[str, np.ndarray]]  # "c" -> norms of ∏ diag(direct coef) (LSTM: ∏ f)
    #: lag -> block -> (B, n) log10 singular values, for the lags asked for
    singular_values: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    probe: np.ndarray | None = None  # (T, B) log10 ‖∂⟨v, s_T⟩/∂s_{T−k}‖₂
    states: dict[str, np.ndarray] | None = None  # s_0..s_T per block, (T+1, B, n)
    meta: dict = field(default_factory=dict)


def estimate_bytes(cell: Cell, n: int, d: int, T: int, B: int, rows: int, n_outputs: int,
                   itemsize: int, spectral: bool) -> int:
    """Peak memory of :func:`all_lags`, from the shapes alone (checked before allocating)."""
    S = len(cell.state)
    G = max(1, len(cell.matrices))
    trajectory = (T + 1) * B * S * n + T * B * d
    working = B * rows * S * n * 4 + B * rows * G * n + B * n * (3 * len(cell.equations) + G) * 2
    gram = 3 * B * n * n if spectral else 0
    return itemsize * (trajectory + working + gram) + 8 * T * B * n_outputs


def _float_dtype(dtype) -> np.dtype:
    """``"float64"``/``"float32"`` or the matching NumPy dtype."""
    if isinstance(dtype, str):
        return get_dtype(dtype)
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.float32, np.float64):
        raise GateflowError(f"dtype must be 'float64' or 'float32', got {shown(dtype)}")
    return dt


def _check_s0(cell: Cell, s0, n: int, B: int):
    """Initial states: a dict of known blocks only, each finite of shape (n,) or (B, n)."""
    if s0 is None:
        return None
    if not isinstance(s0, Mapping):
        raise GateflowError(f"s0 must be a dict of initial states by block "
                            f"({', '.join(cell.state)}), got {shown(s0)}")
    out = {}
    for b, v in s0.items():
        if b not in cell.state:
            raise GateflowError(f"s0 has no state block {shown(b)} for cell {cell.name!r}"
                                f"{closest(b, cell.state)}")
        v = real_array(v, f"s0[{b!r}]").astype(np.float64)
        if v.shape not in ((n,), (B, n)) or not np.all(np.isfinite(v)):
            raise GateflowError(f"s0[{b!r}] must be finite, of shape ({n},) or ({B}, {n}); "
                                f"got shape {v.shape}")
        out[b] = v
    return out


def _check_probe(cell: Cell, probe, n: int, B: int):
    """A finite probe vector over the full state, (S,) or (B, S); None stays None."""
    if probe is None:
        return None
    probe = real_array(probe, "probe").astype(np.float64)
    S = len(cell.state) * n
    if probe.shape not in ((S,), (B, S)) or not np.all(np.isfinite(probe)):
        raise GateflowError(f"probe must be finite, of shape ({S},) or ({B}, {S}): one "
                            f"value per state unit ({', '.join(cell.state)} in that "
                            f"order); got shape {probe.shape}")
    return probe


def _check_lags(lags, T: int) -> tuple[int, ...]:
    """Lags at which to keep every singular value: whole numbers in 1..T."""
    if isinstance(lags, (str, bytes, Mapping)) or not hasattr(lags, "__iter__") \
            or getattr(lags, "ndim", 1) != 1:
        raise GateflowError(f"singular_lags must be a tuple of lags in 1..{T}, got {shown(lags)}")
    return tuple(dict.fromkeys(whole(k, "singular-value lag", 1, T) for k in lags))


def _check_input_shape(x: np.ndarray, n_in: int) -> tuple[int, int]:
    """Inputs (T, B, d) with T, B >= 1 and d features; returns (T, B). Finiteness is
    checked later, after the memory estimate (a huge x is refused before it is scanned)."""
    if x.ndim != 3:
        raise GateflowError(f"inputs must have shape (T, B, d); got shape {x.shape}")
    T, B, d = x.shape
    if T < 1 or B < 1:
        raise GateflowError(f"inputs need T >= 1 steps and B >= 1 sequences; got T={T}, B={B}")
    if d != n_in:
        raise GateflowError(f"inputs have d={d} features but the weights expect d={n_in}")
    return T, B


class _Stopped(Exception):
    """Raised in a worker thread once the run was abandoned (see :func:`all_lags`)."""


def _check(stop) -> None:
    """Once per step: a recorded Ctrl-C/SIGTERM is raised here; an abandoned run stops."""
    check_interrupt()
    if stop is not None and stop.is_set():
        raise _Stopped


def run(bound: Bound, x, s0=None, coefs: list | None = None, stop=None) -> dict:
    """Forward pass: the states s_0..s_T, per block, (T+1, B, n), on the backend. With a
    list ``coefs``, also append each step's Jacobian coefficients to it (index t−1). With a
    ``threading.Event`` ``stop``, give up at the next step once it is set."""
    xp, dt, n = bound.xp, bound.c.dtype, bound.n
    T, B, _ = x.shape
    states = {b: xp.empty((T + 1, B, n), dtype=dt) for b in bound.c.cell.state}
    for b in states:
        states[b][0] = 0 if s0 is None or b not in s0 else xp.asarray(s0[b], dtype=dt)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, T + 1):
            _check(stop)
            vals = bound.step(x[t - 1], {b: states[b][t - 1] for b in states})
            for b in states:
                states[b][t] = vals[b]
            if coefs is not None:
                coefs.append(bound.coefficients(vals))
    for b, traj in states.items():
        finite = xp.all(xp.isfinite(traj.reshape(T + 1, -1)), axis=1)
        if not bool(xp.all(finite)):
            first = int(xp.argmin(finite))
            raise GateflowError(
                f"the forward pass diverged: state {b} is not finite from step {first} on, so its "
                "Jacobians are undefined; use smaller weights or inputs, or fewer steps")
    return states


def _logsumexp(xp, v, axis):
    m = xp.max(v, axis=axis, keepdims=True)
    safe = xp.where(xp.isfinite(m), m, 0)
    out = xp.log(xp.sum(xp.exp(v - safe), axis=axis)) + xp.squeeze(safe, axis=axis)
    return xp.where(xp.squeeze(m, axis=axis) == -xp.inf, -xp.inf, out)


@contextmanager
def _blas_threads(threads: int | None):
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


class _Sweep:
    """One backward step G ← G J_t, following the compiled reverse plan.

    A group of products W_1 v, …, W_G v fed by S sinks is applied in one of two ways, which
    give the same numbers and are chosen by their cost for the number of rows R carried:

    * stacked: scale each sink's adjoint by its coefficients into a (B, R, G·n) buffer, then
      one GEMM with the shared stacked weights (G·n × m): 2·B·R·G·n·m flops;
    * dense: per sequence form K_v = Σ_j diag(coef_j) W_j (n × m), then a batched GEMM per
      sink: 2·B·R·S·n·m flops. For the LSTM (S = 2 sinks c, h; G = 4 weights) this halves
      the work; for the GRU (S = 1, G = 3) it divides it by three.
    """

    def __init__(self, comp, bound, B: int, rows: int):
        self.comp, self.bound, self.xp = comp, bound, bound.xp
        self.B, self.rows, n = B, rows, bound.n
        xp, dt = self.xp, comp.dtype
        self.dense: dict = {}  # group atoms -> (A_cat (B, R, S n), K_cat (B, S n, m), tmp)
        self.weights: dict = {}
        for op in comp.reverse:
            if op[0] != "group":
                continue
            g, terms = op[1], op[2]
            w = bound.stacked[g.atoms][0]
            m = w.shape[1]
            self.weights[g.atoms] = [w[j * n:(j + 1) * n] for j in range(len(g.atoms))]
            pairs = sum(len(p) for _, p in terms)
            stacked = 2 * rows * len(g.atoms) * n * m + 20 * rows * n * pairs
            dense = 2 * rows * len(terms) * n * m + 20 * n * m * pairs
            if dense < stacked:
                S = len(terms)
                self.dense[g.atoms] = (xp.empty((B, rows, S * n), dtype=dt),
                                       xp.empty((B, S * n, m), dtype=dt),
                                       xp.empty((B, n, m), dtype=dt))
        self.tmp = xp.empty((B, rows, n), dtype=dt)


    def backward(self, A: dict, coefs: list) -> dict:
        """Adjoints of every source after one step back; ``A`` holds the new states'."""
        xp, B, rows, n = self.xp, self.B, self.rows, self.bound.n
        adj = dict(A)
        tmp = self.tmp

        for op in self.comp.reverse:
            if op[0] == "scatter":
                _, sink, edges = op
                a = adj.get(sink)
                if a is None:
                    continue
                for src, j in edges:
                    if src in adj:
                        adj[src] += xp.multiply(a, _rows(coefs[j]), out=tmp)
                    else:
                        adj[src] = a * _rows(coefs[j])
                continue
            _, g, terms = op
            if not any(v in adj for v, _ in terms):
                continue
            weights = self.weights[g.atoms]
            if g.atoms in self.dense:
                # Σ_v A_v K_v with K_v = Σ_j diag(coef_j) W_j: one batched GEMM, sinks side by side.
                a_cat, k_cat, ktmp = self.dense[g.atoms]
                for i, (v, pairs) in enumerate(terms):
                    cols = slice(i * n, (i + 1) * n)
                    if v in adj:
                        a_cat[..., cols] = adj[v]
                    else:
                        a_cat[..., cols] = 0
                    block = k_cat[:, cols, :]
                    for p, (j, kc) in enumerate(pairs):
                        if p == 0:
                            xp.multiply(_cols(coefs[kc]), weights[j], out=block)
                        else:
                            block += xp.multiply(_cols(coefs[kc]), weights[j], out=ktmp)
                contrib = xp.matmul(a_cat, k_cat)
            else:
                buf = xp.zeros((B, rows, len(g.atoms) * n), dtype=self.comp.dtype)
                for v, pairs in terms:
                    if v in adj:
                        for j, kc in pairs:
                            buf[..., j * n:(j + 1) * n] += adj[v] * _rows(coefs[kc])
                w = self.bound.stacked[g.atoms][0]
                contrib = (buf.reshape(B * rows, -1) @ w).reshape(B, rows, -1)
            if g.arg in adj:
                adj[g.arg] += contrib
            else:
                adj[g.arg] = contrib
        return adj


def _spectral(xp, m, V, tol: float = 1e-14, max_iter: int = 50, p: int = 8):
    """Largest singular value of each m[b] (R × n), with a warm start for the next lag.

    Subspace iteration on mᵀm with p vectors and a Rayleigh–Ritz step, warm-started from
    the previous lag's subspace (the top singular directions of ∂s_T/∂s_{T−k} move slowly
    with k). Converges at the rate λ_{p+1}/λ_1, so a cluster of up to p − 1 nearly equal
    top singular values (common: the LSTM's c/c block is dominated by diag(∏ f)) is no
    obstacle. An element is accepted when its top Ritz value θ changes by < tol relatively
    and the Ritz residual ‖mᵀm y − θ y‖ < 1e−7 θ; θ's error is then the square of that,
    i.e. rounding. Elements that do not converge fall back to a dense eigvalsh."""
    m = m.astype(np.float64)  # in float32 the tolerances below could never be met
    B, _, n = m.shape
    p = min(p, n)
    mt = xp.swapaxes(m, 1, 2)
    if V is None:  # the same start for every sequence: results do not depend on the batch
        rng = np.random.default_rng(0)
        V = xp.broadcast_to(xp.asarray(rng.standard_normal((n, p)), dtype=m.dtype), (B, n, p))
    theta = xp.full(B, -1.0)
    done = xp.zeros(B, dtype=bool)
    V_out = V
    for _ in range(max_iter):
        Q, _r = xp.linalg.qr(V)
        MV = xp.matmul(m, Q)  # (B, R, p)
        H = xp.matmul(xp.swapaxes(MV, 1, 2), MV)  # Qᵀ mᵀm Q, (B, p, p)
        lam, Y = xp.linalg.eigh(H.astype(np.float64))
        top = lam[:, -1]
        W = xp.matmul(mt, MV)  # mᵀm Q
        y = Y[:, :, -1:].astype(m.dtype)
        resid = xp.linalg.norm((xp.matmul(W, y) - top[:, None, None].astype(m.dtype)
                                * xp.matmul(Q, y))[..., 0], axis=1)
        now = ((xp.abs(top - theta) <= tol * xp.abs(top)) & (resid <= 1e-7 * xp.abs(top))) \
            | (top <= 0)
        # A converged sequence is frozen (θ and its subspace), so its numbers never depend
        # on how long the others in the batch take.
        theta = xp.where(done, theta, top)
        V_out = xp.where(done[:, None, None], V_out, Q)
        done = done | now
        if bool(xp.all(done)):
            break
        V = xp.where(done[:, None, None], V, W)
    if not bool(xp.all(done)):
        bad = xp.nonzero(~done)[0]
        sub = m[bad].astype(np.float64)
        theta[bad] = xp.linalg.eigvalsh(xp.swapaxes(sub, 1, 2) @ sub)[:, -1]
    return xp.sqrt(xp.maximum(theta, 0)), V_out


def _rows(c):
    """A coefficient (B, n), (n,) or scalar, broadcast over the rows of a (B, R, n) adjoint."""
    return c[..., None, :] if getattr(c, "ndim", 0) else c


def _cols(c):
    """A coefficient broadcast as diag(c) W: (B, n, 1), (n, 1) or scalar."""
    return c[..., :, None] if getattr(c, "ndim", 0) else c


def all_lags(
    cell: str | Cell,
    params: dict,
    x,
    *,
    blocks: tuple[str, ...] | None = None,
    norms: tuple[str, ...] = NORMS,
    singular_lags: tuple[int, ...] = (),
    probe=None,
    s0: dict | None = None,
    backend: str = "numpy",
    dtype="float64",
    progress=None,
    keep_states: bool = False,
    threads: int | None = None,
) -> ChainResult:
    """Exact ∂s_T/∂s_{T−k} for every lag k = 1..T, for a batch of sequences.

    Args:
        cell: a cell or its name.
        params: the cell's parameters (gateflow names), e.g. from ``init_params``/``load_params``.
        x: inputs (T, B, d), time-major.
        blocks: which ``"X/Y"`` blocks (∂X_T/∂Y_{T−k}) to measure; default all. Only the rows
            of the output blocks asked for are carried.
        norms: any of ``"frobenius"``, ``"spectral"`` (largest singular value).
        singular_lags: lags at which to keep every singular value of each block.
        probe: a vector over the full state (concatenated in ``cell.state`` order), or
            (B, N): also report ‖∂⟨v, s_T⟩/∂s_{T−k}‖₂, the gradient a loss would see.
        s0: initial state per block (zeros by default).
        backend, dtype: ``"numpy"``/``"cupy"``, ``"float64"``/``"float32"``.
        progress: called with the lag k after each backward step.
        threads: CPU threads (default: every core this process may use). The batch is
            split over min(threads, B) worker threads, each with one BLAS thread; cores
            left over (B < threads) go to BLAS. With a single worker the forward pass's tiny
            GEMMs run single-threaded (threading them costs more than it saves, and under
            contention a threaded tiny GEMM can stall for milliseconds; see
            ``benchmarks/``). Repeat runs with the same value are bit-identical; different
            values agree to rounding (≈1e−14 in log10: BLAS rounds a GEMM's rows
            differently for different row counts).
    """
    from ._params import validate_params

    cell = get_cell(cell)
    n, d = validate_params(cell, params)
    xp = get_xp(backend)
    dt = _float_dtype(dtype)
    x_host = real_array(x, "inputs")
    T, B = _check_input_shape(x_host, d)
    blocks = cell.blocks if blocks is None else choose_many(blocks, cell.blocks, "block",
                                                            allow_empty=True)
    if not blocks and probe is None:
        raise GateflowError(f"nothing to compute: choose at least one block of "
                            f"{', '.join(cell.blocks)}, or give a probe")
    norms = choose_many(norms, NORMS, "norm")
    singular_lags = _check_lags(singular_lags, T)
    if threads is not None:
        threads = whole(threads, "threads")
    if progress is not None and not callable(progress):
        raise GateflowError(f"progress must be a function of the lag k, or None; "
                            f"got {shown(progress)}")
    if not isinstance(keep_states, (bool, np.bool_)):
        raise GateflowError(f"keep_states must be True or False, got {shown(keep_states)}")
    s0 = _check_s0(cell, s0, n, B)
    probe = _check_probe(cell, probe, n, B)
    out_blocks = [s for s in cell.state if any(b.split("/")[0] == s for b in blocks)]
    rows = n * len(out_blocks) + (0 if probe is None else 1)

    need = estimate_bytes(cell, n, d, T, B, rows, len(blocks) * len(norms) + 4, dt.itemsize,
                          "spectral" in norms or bool(singular_lags))
    have = available_memory(backend)
    check_fits(need, backend=backend)
    if not np.all(np.isfinite(x_host)):
        raise GateflowError("inputs contain NaN or Inf; clean them before analysis")
    big = float(np.finfo(dt).max)
    for what, a in (("inputs", x_host), *((f"param {k!r}", v) for k, v in params.items())):
        if np.size(a) and float(np.max(np.abs(a))) > big:
            raise GateflowError(f"{what} exceed the {dt} range (|value| > {big:.3g}); use "
                                "float64 or rescale them")

    comp = compile_cell(cell, backend, dt.name)
    bound = Bound(comp, params, n)
    xd = xp.asarray(x, dtype=dt)
    s0 = None if s0 is None else {b: xp.broadcast_to(xp.asarray(v, dtype=dt), (B, n))
                                  for b, v in s0.items()}
    if probe is not None:
        probe = xp.broadcast_to(xp.asarray(probe, dtype=dt), (B, len(cell.state) * n))

    # Sequences are independent: split the batch over worker threads, each with one BLAS
    # thread (NumPy releases the GIL in matmul and ufuncs), so the elementwise work runs in
    # parallel too; cores left over (B < threads) go to BLAS. Every row carries its own
    # scale and every spectral iteration stops per sequence, so a sequence's numbers do not
    # depend on the others' (up to BLAS rounding, which varies with a GEMM's row count).
    cores = threads or _cpu_count()
    workers = 1 if backend != "numpy" else max(1, min(cores, B))
    blas = max(1, cores // workers) if backend == "numpy" else None
    kept = len(comp.layout) * T * B * n * dt.itemsize
    keep = kept <= min(_KEEP_BYTES, 0.1 * have)
    stop = threading.Event()  # set to abandon the run: worker threads check it every step
    cuts = [B * i // workers for i in range(workers + 1)]
    parts = [slice(a, b) for a, b in zip(cuts, cuts[1:])]

    def job(i: int, part: slice) -> dict:
        return _sweep_chunk(
            comp, bound, xd[:, part], None if s0 is None else {b: v[part] for b, v in s0.items()},
            None if probe is None else probe[part], blocks, norms, singular_lags, out_blocks,
            keep, progress if i == 0 else None, workers == 1, stop)

    with _blas_threads(blas):  # process-wide (np.errstate, by contrast, is per thread)
        if workers == 1:
            chunks = [job(0, parts[0])]
        else:
            # On Ctrl-C (or any error) in this thread, the workers stop at their next step
            # instead of finishing the run while the pool waits for them.
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateflow") as pool:
                try:
                    futures = [pool.submit(job, i, p) for i, p in enumerate(parts)]
                    chunks = [f.result() for f in futures]
                except BaseException:
                    stop.set()
                    raise

    def cat(get, axis=1):
        arrays = [get(c) for c in chunks]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=axis)

    first = chunks[0]
    return ChainResult(
        cell=cell.name,
        lags=np.arange(1, T + 1),
        blocks={b: {k: cat(lambda c, b=b, k=k: c["blocks"][b][k]) for k in first["blocks"][b]}
                for b in blocks},
        direct={s: {k: cat(lambda c, s=s, k=k: c["direct"][s][k]) for k in dd}
                for s, dd in first["direct"].items()},
        singular_values={lag: {b: cat(lambda c, lag=lag, b=b: c["svals"][lag][b], axis=0)
                               for b in per} for lag, per in first["svals"].items()},
        probe=None if probe is None else cat(lambda c: c["probe"]),
        states={s: cat(lambda c, s=s: c["states"][s]) for s in cell.state} if keep_states else None,
        meta={"n": n, "d": d, "T": T, "B": B, "dtype": dt.name, "backend": backend,
              "estimated_bytes": need, "workers": workers, "blas_threads": blas},
    )


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _sweep_chunk(comp, bound, xd, s0, probe, blocks, norms, singular_lags, out_blocks,
                 keep: bool, progress, single: bool, stop=None) -> dict:
    """Forward pass and backward sweep for one slice of the batch; host arrays out."""
    with np.errstate(divide="ignore", under="ignore"):  # log 0 = −inf: an exact zero
        return _sweep_chunk_body(comp, bound, xd, s0, probe, blocks, norms, singular_lags,
                                 out_blocks, keep, progress, single, stop)


def _sweep_chunk_body(comp, bound, xd, s0, probe, blocks, norms, singular_lags, out_blocks,
                      keep: bool, progress, single: bool, stop=None) -> dict:
    xp, dt, n = bound.xp, comp.dtype, bound.n
    cell = comp.cell
    T, B, _ = xd.shape
    rows = n * len(out_blocks) + (0 if probe is None else 1)
    stored = [] if keep else None
    # The forward's GEMMs are tiny: with one worker, run them single-threaded. (BLAS limits
    # are process-wide, so with several workers they all share the outer setting, 1 thread
    # each whenever B ≥ threads.)
    with _blas_threads(1) if single else nullcontext():
        states = run(bound, xd, s0, stored, stop)

    # Seed: the identity on the rows of each output block, plus the probe row.
    A = {s: xp.zeros((B, rows, n), dtype=dt) for s in cell.state}
    row_of = {}
    for k, s in enumerate(out_blocks):
        row_of[s] = slice(k * n, (k + 1) * n)
        A[s][:, row_of[s], :] = xp.eye(n, dtype=dt)
    if probe is not None:
        for j, s in enumerate(cell.state):
            A[s][:, -1, :] = probe[:, j * n:(j + 1) * n]
    logscale = xp.zeros((B, rows), dtype=np.float64)

    res = {b: {nm: xp.empty((T, B), dtype=np.float64) for nm in norms} for b in blocks}
    direct_log = {s: xp.zeros((B, n), dtype=np.float64) for s in comp.direct}
    direct = {s: {"log10_frobenius": xp.empty((T, B)), "log10_spectral": xp.empty((T, B))}
              for s in comp.direct}
    probe_out = xp.empty((T, B)) if probe is not None else None
    svals: dict[int, dict[str, np.ndarray]] = {}
    sweep = _Sweep(comp, bound, B, rows)
    lo, hi = _renorm_range(dt)
    top_vec = {b: None for b in blocks}  # warm starts for the spectral norms

    for k in range(1, T + 1):
        _check(stop)
        t = T - k + 1  # multiply by J_t = ∂s_t/∂s_{t−1}
        if stored is not None:
            coefs, stored[t - 1] = stored[t - 1], None  # free as we go
        else:
            coefs = bound.coefficients(bound.step(xd[t - 1], {s: states[s][t - 1]
                                                              for s in cell.state}))
        adj = sweep.backward(A, coefs)
        A = {s: adj[f"{s}_prev"] if f"{s}_prev" in adj else xp.zeros((B, rows, n), dtype=dt)
             for s in cell.state}

        # Norms, from per-row squared norms and per-row log-scales.
        sq = {s: xp.einsum("brj,brj->br", A[s], A[s]).astype(np.float64) for s in cell.state}
        for b in blocks:
            out, inp = b.split("/")
            r = row_of[out]
            if "frobenius" in norms:
                v = 2 * logscale[:, r] + xp.log(sq[inp][:, r])
                res[b]["frobenius"][k - 1] = 0.5 * _logsumexp(xp, v, 1) / _LN10
            if "spectral" in norms or k in singular_lags:
                top = xp.max(logscale[:, r], axis=1)
                safe = xp.where(xp.isfinite(top), top, 0)
                m = A[inp][:, r, :] * xp.exp(logscale[:, r] - safe[:, None])[..., None].astype(dt)
                if "spectral" in norms:
                    sigma, top_vec[b] = _spectral(xp, m, top_vec[b])
                    res[b]["spectral"][k - 1] = (xp.log(sigma) + safe) / _LN10
                if k in singular_lags:
                    sv = xp.linalg.svd(m.astype(np.float64), compute_uv=False)
                    svals.setdefault(k, {})[b] = (xp.log(sv) + safe[:, None]) / _LN10
        for s, j in comp.direct.items():
            c = xp.broadcast_to(xp.asarray(coefs[j], dtype=np.float64), (B, n))
            direct_log[s] += xp.log(xp.abs(c))
            direct[s]["log10_frobenius"][k - 1] = 0.5 * _logsumexp(xp, 2 * direct_log[s], 1) / _LN10
            direct[s]["log10_spectral"][k - 1] = xp.max(direct_log[s], axis=1) / _LN10
        if probe is not None:
            total = sum(sq[s][:, -1] for s in cell.state)
            probe_out[k - 1] = (0.5 * xp.log(total) + logscale[:, -1]) / _LN10

        # Renormalise each row that drifts towards under- or overflow (rows only: a row's
        # numbers never depend on the others').
        total = sum(sq.values())
        drift = (total > hi) | ((total < lo) & (total > 0))
        if bool(xp.any(drift)):
            scale = xp.where(drift, xp.sqrt(total), 1.0)
            logscale += xp.log(scale)
            inv = (1.0 / scale).astype(dt)[..., None]
            for s in cell.state:
                A[s] *= inv
        if progress is not None:
            progress(k)

    to_host = getattr(xp, "asnumpy", np.asarray)
    return {
        "blocks": {b: {f"log10_{nm}": to_host(res[b][nm]) for nm in norms} for b in blocks},
        "direct": {s: {k: to_host(v) for k, v in dd.items()} for s, dd in direct.items()},
        "svals": {k: {b: to_host(v) for b, v in d_.items()} for k, d_ in svals.items()},
        "probe": None if probe_out is None else to_host(probe_out),
        "states": {s: to_host(v) for s, v in states.items()},
    }

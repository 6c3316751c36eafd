"""Readers of the state-space and diagonal linear recurrences' PyTorch packages
(lru-pytorch, mambapy, recurrentgemma): a module's state dict to its cell's parameters.

* lru-pytorch: ``LRU`` (``nu_log``, ``theta_log``, ``gamma_log``, complex ``B``) → ``lru``
  (realified);
* mambapy: ``MambaBlock`` (``A_log``, ``x_proj.weight``, ``dt_proj.weight``,
  ``dt_proj.bias``) → ``mamba``;
* recurrentgemma: ``RGLRU`` (``a_param``, ``input_gate.w/b``, ``a_gate.w/b``) → ``rglru``.

Each ``params_from_<package>(arrays, prefix="")`` returns a
:class:`~gateflow.models.formats._linear_record.LinearModule`; ``scan_<package>(arrays)``
reads every such module of a flat state dict (see :mod:`._linear` for all packages at once).
"""

from __future__ import annotations

import numpy as np

from gateflow.models.formats._linear_record import (
    Arrays,
    LinearModule,
    _block_diagonal,
    _fits,
    _order,
    _prefixes,
    _Reader,
    _record,
)

__all__ = ["params_from_lru_pytorch", "params_from_mambapy", "params_from_recurrentgemma",
           "scan_lru_pytorch", "scan_mambapy", "scan_recurrentgemma"]


# -- lru-pytorch ----------------------------------------------------------------------------


def _complex(r: _Reader, name: str, rows: int | None, cols: int | None,
             assumed: list[str]) -> np.ndarray:
    """A complex parameter, stored complex or as (real, imag) pairs on a last axis of 2
    (``torch.view_as_real``: safetensors keeps no complex128)."""
    key = r.prefix + name
    a = np.asarray(r.arrays[key]) if key in r.arrays else None
    if a is not None and a.dtype.kind != "c" and a.ndim == 3:
        pairs = r.get(name, (rows, cols, 2))
        assumed.append(f"{name} stored as (real, imag) pairs on a last axis of 2 "
                       "(torch.view_as_real)")
        return pairs[..., 0] + 1j * pairs[..., 1]
    return r.get(name, (rows, cols), complex_ok=True).astype(np.complex128)


def params_from_lru_pytorch(arrays: Arrays, prefix: str = "") -> LinearModule:
    """lru-pytorch's ``LRU``: λ = exp(−exp(nu_log) + i·exp(theta_log)), γ =
    exp(gamma_log), complex B (n × d), as the realified ``lru`` cell."""
    r = _Reader(arrays, prefix, "lru-pytorch", "LRU")
    nu = r.get("nu_log", (None,))
    n = nu.shape[0]
    theta = r.get("theta_log", (n,))
    gamma_log = r.get("gamma_log", (n,))
    assumed: list[str] = []
    B = _complex(r, "B", n, None, assumed)
    d = B.shape[1]
    if r.has("C"):
        _complex(r, "C", None, n, assumed)
    if r.has("D"):
        r.get("D", (None, d))
    # LRU.forward: Lambda_mod*cos(exp(theta_log)), Lambda_mod*sin(exp(theta_log))
    mod = np.exp(-np.exp(nu))
    phase = np.exp(theta)
    params = {"lam_re": mod * np.cos(phase), "lam_im": mod * np.sin(phase),
              "gamma": np.exp(gamma_log), "B_re": B.real.copy(), "B_im": B.imag.copy()}
    assumed.insert(0, "λ = exp(−exp(nu_log) + i·exp(theta_log)) and γ = exp(gamma_log) (the "
                      "learned γ, not √(1 − |λ|²)); the complex state is realified as h_re, "
                      "h_im")
    return _record(r, "lru-pytorch", "LRU", "lru", params, assumed,
                   f"the module's input (d = {d}); y = Re(C h) + D x is its output, not part "
                   "of the recurrence", n=n, d=d, layout="time-major")


def _find_lru(arrays: Arrays) -> list[str]:
    return _order(arrays, [p for p in _prefixes(arrays, "nu_log") if p + "theta_log" in arrays])


def scan_lru_pytorch(arrays: Arrays) -> list[LinearModule]:
    """Every lru-pytorch LRU of a state dict."""
    return [params_from_lru_pytorch(arrays, p) for p in _find_lru(arrays)]


# -- mambapy: the selective scan ------------------------------------------------------------


def params_from_mambapy(arrays: Arrays, prefix: str = "") -> LinearModule:
    """mambapy's ``MambaBlock`` (prefix ``layers.<l>.mixer.`` in a ``Mamba``): the selective
    scan with ED channels × N states flattened to n = ED·N units d·N + j. Row d·N + j of
    W_dt is row d of ``dt_proj.weight @ x_proj.weight[:dt_rank]``, b_dt[d·N + j] =
    ``dt_proj.bias[d]``, A[d·N + j] = −exp(``A_log[d, j]``), row d·N + j of W_B is
    ``x_proj.weight[dt_rank + j]``, and E copies channel d to its N units."""
    r = _Reader(arrays, prefix, "mambapy", "MambaBlock")
    for norm in ("dt_layernorm", "B_layernorm", "C_layernorm"):
        r.absent(f"{norm}.weight", "is an inner RMSNorm (inner_layernorms=True, Jamba's): "
                 "the mamba cell has no normalised Δ, B, C")
    A_log = r.get("A_log", (None, None))
    ED, N = A_log.shape
    dt_w = r.get("dt_proj.weight", (ED, None))
    R = dt_w.shape[1]
    dt_b = r.get("dt_proj.bias", (ED,))
    x_proj = r.get("x_proj.weight", (R + 2 * N, ED))
    if r.has("D"):
        r.get("D", (ED,))
    if r.has("conv1d.weight"):
        r.get("conv1d.weight", (ED, 1, None))
    if r.has("in_proj.weight"):
        r.get("in_proj.weight", (2 * ED, None))

    def build() -> dict[str, np.ndarray]:
        _fits(3 * ED * N * ED, f"the mamba cell of {r.what} (n = {ED * N}, d = {ED})")
        W_dt = dt_w @ x_proj[:R]  # (ED, ED): the low-rank Δ projection
        return {"W_dt": np.repeat(W_dt, N, axis=0), "b_dt": np.repeat(dt_b, N),
                "A": (-np.exp(A_log)).reshape(-1),
                "W_B": np.tile(x_proj[R:R + N], (ED, 1)),
                "E": np.repeat(np.eye(ED), N, axis=0)}

    assumed = [
        f"the state h[d, j] ({ED} channels × {N} states) is one block of n = {ED * N} units "
        "d·N + j; y = C h + D x and the SiLU(z) gate are read from it, not part of it",
        "A = −exp(A_log) in float64 (mambapy takes exp of A_log.float(), in float32, even in "
        "a float64 module)",
        "inner_layernorms=False (mambapy's default; with mup=True its RMSNorms have no "
        "weights, so a state dict cannot show them)",
    ]
    return _record(r, "mambapy", "MambaBlock", "mamba", build, assumed,
                   f"the block's SSM input SiLU(conv1d(in_proj(u)[:ED])) (d = ED = {ED}), "
                   "not the block's input u: in_proj and the causal conv are not part of the "
                   "recurrence", n=ED * N, d=ED)


def _find_mamba(arrays: Arrays) -> list[str]:
    return _order(arrays, [p for p in _prefixes(arrays, "A_log") if p + "x_proj.weight" in arrays])


def scan_mambapy(arrays: Arrays) -> list[LinearModule]:
    """Every MambaBlock of a state dict (a ``Mamba``: one per layer, in order)."""
    return [params_from_mambapy(arrays, p) for p in _find_mamba(arrays)]


# -- recurrentgemma: RG-LRU -----------------------------------------------------------------


def params_from_recurrentgemma(arrays: Arrays, prefix: str = "") -> LinearModule:
    """RecurrentGemma's PyTorch ``RGLRU`` (prefix ``rg_lru.`` in a ``RecurrentBlock``,
    ``blocks.<l>.temporal_block.rg_lru.`` in ``Griffin``): the gates are
    ``BlockDiagonalLinear`` (y[h, j] = Σ_i x[h, i]·w[h, i, j] + b[h, j]), Λ = −``a_param``
    (log a = −8·r·softplus(a_param)), E = I."""
    r = _Reader(arrays, prefix, "recurrentgemma", "RGLRU")
    a_param = r.get("a_param", (None,))
    e = a_param.shape[0]
    params: dict[str, np.ndarray] = {}
    for gate, (W, b) in (("a_gate", ("W_a", "b_a")), ("input_gate", ("W_x", "b_x"))):
        w = r.get(f"{gate}.w", (None, None, None))
        if w.shape[1] != w.shape[2] or w.shape[0] * w.shape[1] != e:
            raise r.fail(f"{gate}.w", f"has shape {w.shape}; (heads, {e}/heads, {e}/heads) "
                         "expected")
        params[W] = _block_diagonal(w, transpose=True)
        params[b] = r.get(f"{gate}.b", w.shape[:2]).reshape(-1)
    params["Lambda"] = -a_param
    params["E"] = np.eye(e)
    assumed = [
        "c = 8 (RecurrentGemma's constant; not in the state dict): a = σ(−a_param)^(8 r)",
        "segment_pos > 0 throughout: at a segment's first token RecurrentGemma resets h "
        "(a = 0) and does not normalise x",
        "exact derivatives in float64: RecurrentGemma's rnn_scan accumulates h in float32 and "
        "its backward clips √(1 − a²)'s gradient at 1000 (SqrtBoundDerivative)",
    ]
    return _record(r, "recurrentgemma", "RGLRU", "rglru", params, assumed,
                   f"the RG-LRU's input (width {e}): in a RecurrentBlock, conv_1d's output of "
                   "linear_x(u); linear_x, conv_1d, the GeLU(linear_y) gate and linear_out "
                   "are not part of the recurrence", n=e, d=e)


def _find_rglru(arrays: Arrays) -> list[str]:
    return _order(arrays, [p for p in _prefixes(arrays, "a_param")
                           if p + "input_gate.w" in arrays or p + "a_gate.w" in arrays])


def scan_recurrentgemma(arrays: Arrays) -> list[LinearModule]:
    """Every RG-LRU of a state dict (Griffin: one per recurrent block)."""
    return [params_from_recurrentgemma(arrays, p) for p in _find_rglru(arrays)]

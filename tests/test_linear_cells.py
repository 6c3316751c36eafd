"""The gated linear recurrences (:mod:`gateflow.cells._linear`), proven like the classical
cells, by routes that share no code with the derivation:

* **exact**: every state block ∂X_t/∂Y_{t−1} and input block ∂X_t/∂x_t that
  :func:`derive`/:func:`derive_input` give equals SymPy's Jacobian of the step expanded unit
  by unit (``_expand.py``, which never imports the derivation), at n = 2 and 3, expanded and
  chained: the difference is exactly 0;
* **structure**: the cells the papers call diagonal derive to state blocks that are each
  diag(coef), with no product W v depending on the state; the sLSTM does not;
* **numbers**: each cell's step as its package's code writes it (mingru-pytorch,
  RecurrentGemma, lru-pytorch with complex numbers, mambapy on (D, N) arrays, xlstm's
  vanilla pointwise step, sru's naive recurrence), in NumPy here; the compiled step
  reproduces it, and ``all_lags`` (every lag; every singular value of every state block,
  Frobenius and spectral norms of every input block) equals central differences through it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import sympy as sp
from _expand import Expansion, expand, np_sigmoid
from test_exact import assert_zero

from gateflow import derive, render
from gateflow.cells._library import CELLS
from gateflow.cells._linear import LINEAR_CELLS
from gateflow.numeric._chain import all_lags
from gateflow.numeric._compile import Bound, compile_cell
from gateflow.symbolic._derive import derive_input

NAMES = list(LINEAR_CELLS)
#: Cells whose state Jacobian is diagonal by their papers (all but the sLSTM's dense R).
DIAGONAL = [n for n in NAMES if not n.startswith("slstm")]


def _d(n: int) -> int:
    """Input size for the exact tests: never n, so a transposed block cannot pass."""
    return 3 if n == 2 else 2


@cache
def expansion(name: str, n: int) -> Expansion:
    return expand(LINEAR_CELLS[name], n, _d(n))


@cache
def explicit_blocks(name: str, n: int) -> dict[str, sp.Matrix]:
    e = expansion(name, n)
    cell = LINEAR_CELLS[name]
    return {b: e.jacobian(b) for b in (*cell.blocks, *cell.input_blocks)}


# --------------------------------------------------------------------------------------
# Exact: structured blocks against SymPy's Jacobian of the expanded step
# --------------------------------------------------------------------------------------

STATE_CASES = [(name, b) for name, c in LINEAR_CELLS.items() for b in c.blocks]
INPUT_CASES = [(name, b) for name, c in LINEAR_CELLS.items() for b in c.input_blocks]


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("chained", [False, True], ids=["expanded", "chained"])
@pytest.mark.parametrize("name,block", STATE_CASES, ids=[f"{c}:{b}" for c, b in STATE_CASES])
def test_state_block_is_exact(name, block, n, chained):
    e = expansion(name, n)
    explicit = explicit_blocks(name, n)
    op = derive(LINEAR_CELLS[name]).block(block, chained=chained)
    rows, cols = len(e.values[block.out]), len(e.prev[block.wrt])
    structured = op.to_matrix(rows, e.unit, e.weights, explicit, cols=cols)
    assert structured.shape == (rows, cols) == (n, n)
    assert_zero(structured - explicit[block])


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("chained", [False, True], ids=["expanded", "chained"])
@pytest.mark.parametrize("name,block", INPUT_CASES, ids=[f"{c}:{b}" for c, b in INPUT_CASES])
def test_input_block_is_exact(name, block, n, chained):
    e = expansion(name, n)
    explicit = explicit_blocks(name, n)
    op = derive_input(LINEAR_CELLS[name]).block(block, chained=chained)
    rows, d = len(e.values[block.out]), _d(n)
    structured = op.to_matrix(rows, e.unit, e.weights, explicit, cols=d)
    assert structured.shape == (rows, d) == (n, d)
    assert explicit[block] != sp.zeros(n, d)  # x reaches every state block of every cell
    assert_zero(structured - explicit[block])


def test_the_expansion_is_the_paper_cell():
    """The oracle itself, for two cells: RG-LRU's unit a is σ(Λ)^(8 r) ⊙ h + √(1 − a²) i x
    and the LRU's is the complex product λ h, written here by hand."""
    e = expansion("rglru", 2)
    W, v = e.weights, e.vectors
    x = sp.Matrix(e.x)
    sig = lambda a: 1 / (1 + sp.exp(-a))  # noqa: E731
    for a in range(2):
        r = sig((W["W_a"] * x)[a] + v["b_a"][a])
        i = sig((W["W_x"] * x)[a] + v["b_x"][a])
        at = sig(v["Lambda"][a]) ** (8 * r)
        want = at * e.prev["h"][a] + sp.sqrt(1 - at**2) * i * (W["E"] * x)[a]
        got = e.values["h"][a].rewrite(sp.exp)
        point = {s: sp.Rational(k + 1, 7) * (-1) ** k for k, s in enumerate(e.symbols())}
        assert abs(sp.N((got - want).xreplace(point), 40)) < 1e-35
    e = expansion("lru", 2)
    v = e.vectors
    for a in range(2):
        lam = v["lam_re"][a] + sp.I * v["lam_im"][a]
        h = e.prev["h_re"][a] + sp.I * e.prev["h_im"][a]
        x = sp.Matrix(e.x)
        Bx = (e.weights["B_re"] * x)[a] + sp.I * (e.weights["B_im"] * x)[a]
        new = lam * h + v["gamma"][a] * Bx
        real = {s: sp.Symbol(s.name, real=True) for s in new.free_symbols}
        new = sp.expand(new.xreplace(real))
        assert sp.expand(e.values["h_re"][a].xreplace(real) - sp.re(new)) == 0
        assert sp.expand(e.values["h_im"][a].xreplace(real) - sp.im(new)) == 0


# --------------------------------------------------------------------------------------
# Structure: diagonal by the derivation, not by a list of names
# --------------------------------------------------------------------------------------


def _is_diagonal(cell) -> bool:
    """Every state block is a sum of diag(coef) terms: no product W v depends on the state,
    and no term of any block carries a weight."""
    s = derive(cell)
    terms = [t for b in cell.blocks for t in s.block(b).terms]
    return not s.products and all(t.weight is None and t.block is None and t.inner is None
                                  for t in terms)


@pytest.mark.parametrize("name", NAMES)
def test_diagonal_by_structure(name):
    cell = LINEAR_CELLS[name]
    assert _is_diagonal(cell) == (name in DIAGONAL)
    if name not in DIAGONAL:  # the sLSTM: h_{t−1} reaches every gate through R
        assert {m.weight for m in derive(cell).products} == {"R_i", "R_f", "R_z", "R_o"}
    # the classical cells are not diagonal, but IndRNN is: the rule is the structure's
    assert not _is_diagonal(CELLS["lstm"]) and _is_diagonal(CELLS["indrnn"])


def test_lru_state_jacobian_is_rotation_scaling():
    """[[Re λ, −Im λ], [Im λ, Re λ]], each a diagonal, from the derivation."""
    s = derive(LINEAR_CELLS["lru"])
    lr, li = sp.Symbol("lam_re"), sp.Symbol("lam_im")
    want = {"h_re/h_re": lr, "h_re/h_im": -li, "h_im/h_re": li, "h_im/h_im": lr}
    for b, coef in want.items():
        (term,) = s.block(b).terms
        assert term.coef == coef and term.weight is None


RENDERED = {
    "mingru": ["∂h_t/∂h_{t−1} = diag(1 − z_t)",
               "∂h_t/∂x_t = diag(z_t ⊙ (1 − z_t) ⊙ (g_t − h_{t−1})) W_z + diag(z_t) W_h"],
    "minlstm": ["∂h_t/∂h_{t−1} = diag(f_t/(f_t + i_t))"],
    "rglru": ["∂h_t/∂h_{t−1} = diag(a_t)", "+ diag(i_t ⊙ sqrt(1 − a_t²)) E"],
    "mamba": ["∂h_t/∂h_{t−1} = diag(exp(A ⊙ delta_t))"],
    "lru": ["∂h_re_t/∂h_re_{t−1} = diag(lam_re)", "∂h_re_t/∂h_im_{t−1} = −diag(lam_im)",
            "∂h_im_t/∂h_re_{t−1} = diag(lam_im)", "∂h_im_t/∂h_im_{t−1} = diag(lam_re)",
            "∂h_re_t/∂x_t = diag(gamma) B_re"],
    "sru": ["∂h_t/∂h_{t−1} = 0",
            "∂c_t/∂c_{t−1} = diag(f_t ⊙ v_f ⊙ (1 − f_t) ⊙ (−W x_t + c_{t−1}) + f_t)"],
    "slstm": ["∂c_t/∂c_{t−1} = diag(f_t)", "∂m_t/∂m_{t−1} = diag(𝟙[q_t > 0])",
              "relu′(0) = 0"],
}


@pytest.mark.parametrize("name", list(RENDERED))
def test_rendered_jacobians(name):
    text = render(LINEAR_CELLS[name])
    for line in RENDERED[name]:
        assert line in text, line


def test_cells_are_declared_apart_from_the_classical_ones():
    """Distinct names; each carries a paper; none is registered by this module."""
    assert set(LINEAR_CELLS).isdisjoint(CELLS)
    for name, cell in LINEAR_CELLS.items():
        assert cell.name == name and cell.summary and "(20" in cell.reference


# --------------------------------------------------------------------------------------
# Numbers: the packages' steps in NumPy, central differences through them
# --------------------------------------------------------------------------------------


def _softplus(a):
    return np.logaddexp(0.0, a)


def _lin(x, W, b=0.0):
    return x @ W.T + b


def _g(a):
    """mingru-pytorch's g: where(a >= 0, a + 0.5, sigmoid(a))."""
    return np.where(a >= 0, a + 0.5, np_sigmoid(a))


def lru_params(nu_log, theta_log, gamma_log, B_re, B_im) -> dict:
    """gateflow's LRU parameters from lru-pytorch's (the mapping of the cell's notes)."""
    r = np.exp(-np.exp(nu_log))
    phi = np.exp(theta_log)
    return {"lam_re": r * np.cos(phi), "lam_im": r * np.sin(phi),
            "gamma": np.exp(gamma_log), "B_re": B_re, "B_im": B_im}


def mamba_params(x_proj, dt_proj_w, dt_proj_b, A_log, dt_rank: int) -> dict:
    """gateflow's selective-scan parameters from mambapy's (x_proj.weight, dt_proj.weight,
    dt_proj.bias, A_log), unit (d, j) at d·N + j (the mapping of the cell's notes)."""
    D, N = A_log.shape
    W_dt = dt_proj_w @ x_proj[:dt_rank]  # (D, D): the low-rank Δ projection
    return {"W_dt": np.repeat(W_dt, N, axis=0), "b_dt": np.repeat(dt_proj_b, N),
            "A": (-np.exp(A_log)).reshape(-1),
            "W_B": np.tile(x_proj[dt_rank:dt_rank + N], (D, 1)),
            "E": np.repeat(np.eye(D), N, axis=0)}


def package_step(name: str, pk: dict, p: dict, x, s: dict) -> dict:
    """One step as the package computes it (``pk``: its own parameters where they differ
    from gateflow's ``p``), on gateflow's state blocks."""
    if name in ("mingru", "mingru-log"):
        hidden = _lin(x, p["W_h"], p["b_h"])
        hidden = _g(hidden) if name == "mingru-log" else hidden
        gate = np_sigmoid(_lin(x, p["W_z"], p["b_z"]))
        prev = s["h"]
        return {"h": prev + gate * (hidden - prev)}  # torch.lerp(prev, hidden, gate)
    if name in ("minlstm", "minlstm-log"):
        hidden = _lin(x, p["W_h"], p["b_h"])
        hidden = _g(hidden) if name == "minlstm-log" else hidden
        f = np_sigmoid(_lin(x, p["W_f"], p["b_f"]))
        i = np_sigmoid(_lin(x, p["W_i"], p["b_i"]))
        return {"h": s["h"] * (f / (f + i)) + hidden * (i / (f + i))}
    if name == "rglru":  # RecurrentGemma's RGLRU.forward, off a segment's first token
        gate_x = np_sigmoid(_lin(x, p["W_x"], p["b_x"]))
        gate_a = np_sigmoid(_lin(x, p["W_a"], p["b_a"]))
        log_a = -8.0 * gate_a * _softplus(pk["a_param"])
        a, a_square = np.exp(log_a), np.exp(2 * log_a)
        normalized_x = x * gate_x * np.sqrt(1 - a_square)  # x itself: E = I
        return {"h": a * s["h"] + normalized_x}
    if name == "lru":  # lru-pytorch's LRU.forward, in complex numbers
        lam = np.exp(-np.exp(pk["nu_log"])) * np.exp(1j * np.exp(pk["theta_log"]))
        B = pk["B_re"] + 1j * pk["B_im"]
        state = s["h_re"] + 1j * s["h_im"]
        state = lam * state + np.exp(pk["gamma_log"]) * (x @ B.T)
        return {"h_re": state.real, "h_im": state.imag}
    if name == "mamba":  # mambapy's ssm_step on (B, D, N)
        D, N = pk["A_log"].shape
        h = s["h"].reshape(-1, D, N)
        deltaBC = x @ pk["x_proj"].T
        r = pk["dt_rank"]
        delta, B = deltaBC[:, :r], deltaBC[:, r:r + N]
        delta = _softplus(delta @ pk["dt_proj_w"].T + pk["dt_proj_b"])  # (B, D)
        A = -np.exp(pk["A_log"])
        deltaA = np.exp(delta[:, :, None] * A)
        BX = delta[:, :, None] * B[:, None, :] * x[:, :, None]
        return {"h": (deltaA * h + BX).reshape(x.shape[0], D * N)}
    if name in ("slstm", "slstm-exp"):  # xlstm's slstm_forward_pointwise (and exp forget)
        raw = {k: _lin(x, p[f"W_{k}"], p[f"b_{k}"]) + s["h"] @ p[f"R_{k}"].T for k in "ifzo"}
        c, n, m = s["c"], s["n"], s["m"]
        logf = raw["f"] if name == "slstm-exp" else -_softplus(-raw["f"])  # logsigmoid
        logfplusm = m + logf
        mnew = np.maximum(raw["i"], logfplusm)
        ogate = np_sigmoid(raw["o"])
        igate = np.minimum(np.exp(raw["i"] - mnew), 1.0)
        fgate = np.minimum(np.exp(logfplusm - mnew), 1.0)
        cnew = fgate * c + igate * np.tanh(raw["z"])
        nnew = fgate * n + igate
        return {"h": ogate * cnew / nnew, "c": cnew, "n": nnew, "m": mnew}
    if name == "sru":  # sru's elementwise_recurrence_naive, k = 4 (x' = U[..., 3] = E x)
        u0, xp = _lin(x, p["W"]), _lin(x, p["E"])
        forget = np_sigmoid(_lin(x, p["W_f"]) + p["b_f"] + s["c"] * p["v_f"])
        reset = np_sigmoid(_lin(x, p["W_r"]) + p["b_r"] + s["c"] * p["v_r"])
        c = u0 + (s["c"] - u0) * forget
        return {"h": xp + (c - xp) * reset, "c": c}
    raise AssertionError(name)


def setup(name: str, seed: int = 0):
    """(package params, gateflow params, x (T, B, d), s0) for T = 6, B = 2: n = 3 units
    (the selective scan: D = 2 channels × N = 2 states), d = 2 (RG-LRU: d = n, E = I)."""
    rng = np.random.default_rng(seed)
    T, B, n, d = 6, 2, 3, 2
    cell = LINEAR_CELLS[name]
    pk: dict = {}
    if name == "mamba":
        D, N, r = 2, 2, 1
        n, d = D * N, D
        pk = {"x_proj": rng.normal(0, 0.7, (r + 2 * N, D)), "dt_proj_w": rng.normal(0, 0.8, (D, r)),
              "dt_proj_b": rng.normal(-0.5, 0.5, D), "A_log": np.log(rng.uniform(0.3, 2.0, (D, N))),
              "dt_rank": r}
        p = mamba_params(pk["x_proj"], pk["dt_proj_w"], pk["dt_proj_b"], pk["A_log"], r)
    elif name == "lru":
        radius = np.sqrt(rng.uniform(0.6**2, 0.98**2, n))  # the paper's ring
        pk = {"nu_log": np.log(-np.log(radius)), "theta_log": np.log(rng.uniform(0.1, 6.0, n)),
              "gamma_log": np.log(np.sqrt(1 - radius**2)) + rng.normal(0, 0.1, n),
              "B_re": rng.normal(0, 0.5, (n, d)), "B_im": rng.normal(0, 0.5, (n, d))}
        p = lru_params(pk["nu_log"], pk["theta_log"], pk["gamma_log"], pk["B_re"], pk["B_im"])
    else:
        if name == "rglru":
            d = n
        p = {}
        for q, dims in cell.param_dims.items():
            shape = tuple({"n": n, "d": d}[k] for k in dims)
            p[q] = rng.normal(0, 0.9 if len(shape) == 2 else 0.7, shape)
        if name == "rglru":
            p["E"] = np.eye(n)
            pk = {"a_param": rng.uniform(-5.0, -1.0, n)}  # a = σ(Λ) in [0.73, 0.99]
            p["Lambda"] = -pk["a_param"]
    x = rng.normal(0, 1.0, (T, B, d))
    s0 = {b: rng.normal(0, 0.5, (B, n)) for b in cell.state}
    if name.startswith("slstm"):
        s0["n"] = rng.uniform(0.5, 1.5, (B, n))  # a normaliser: positive
    return pk, p, x, s0


def trajectory(name, pk, p, x, s0) -> list[dict]:
    out = [s0]
    for t in range(x.shape[0]):
        out.append(package_step(name, pk, p, x[t], out[-1]))
    return out


def fd_state(name, pk, p, x, s0, eps=1e-6) -> dict[int, np.ndarray]:
    """Dense ∂s_T/∂s_{T−k} (B, N, N) for every lag k, the state concatenated in
    ``cell.state`` order, by central differences through the package's step."""
    cell = LINEAR_CELLS[name]
    traj = trajectory(name, pk, p, x, s0)
    T, B = x.shape[:2]
    dims = [s0[b].shape[1] for b in cell.state]
    cut = np.cumsum([0, *dims])
    N = cut[-1]

    def flow(vec, t0):
        s = {b: vec[:, cut[j]:cut[j + 1]] for j, b in enumerate(cell.state)}
        for t in range(t0, T):
            s = package_step(name, pk, p, x[t], s)
        return np.concatenate([s[b] for b in cell.state], axis=1)

    out = {}
    for k in range(1, T + 1):
        base = np.concatenate([traj[T - k][b] for b in cell.state], axis=1)
        J = np.empty((B, N, N))
        for j in range(N):
            e = np.zeros(N)
            e[j] = eps
            J[:, :, j] = (flow(base + e, T - k) - flow(base - e, T - k)) / (2 * eps)
        out[k] = J
    return out


def fd_input(name, pk, p, x, s0, eps=1e-6) -> dict[int, dict[str, np.ndarray]]:
    """Dense ∂X_T/∂x_{T−k} (B, n, d) per state block, for input lags k = 0..T−1."""
    cell = LINEAR_CELLS[name]
    traj = trajectory(name, pk, p, x, s0)
    T, B, d = x.shape

    def final(xt, t):
        s = package_step(name, pk, p, xt, traj[t - 1])
        for u in range(t, T):
            s = package_step(name, pk, p, x[u], s)
        return s

    out = {}
    for k in range(T):
        t = T - k
        J = {b: np.empty((B, s0[b].shape[1], d)) for b in cell.state}
        for j in range(d):
            e = np.zeros(d)
            e[j] = eps
            hi, lo = final(x[t - 1] + e, t), final(x[t - 1] - e, t)
            for b in cell.state:
                J[b][:, :, j] = (hi[b] - lo[b]) / (2 * eps)
        out[k] = J
    return out


def _close(log10_got, ref, rtol=1e-7, atol=1e-9, what=""):
    got = 10.0 ** np.asarray(log10_got, dtype=float)
    zero = ref == 0
    assert np.array_equal(got[zero], ref[zero]), what  # exactly zero blocks: −inf
    err = np.abs(got[~zero] - ref[~zero]) / (rtol * ref[~zero] + atol)
    assert err.size == 0 or err.max() < 1, (what, err.max())


def _away_from_kinks(name, p, x, traj):
    """No relu argument within 1e−3 of its kink along the run (central differences straddle
    a kink only that close)."""
    for t in range(x.shape[0]):
        if name.endswith("-log"):
            a = _lin(x[t], p["W_h"], p["b_h"])
        elif name.startswith("slstm"):
            s = traj[t]
            pre = {k: _lin(x[t], p[f"W_{k}"], p[f"b_{k}"]) + s["h"] @ p[f"R_{k}"].T for k in "if"}
            logf = pre["f"] if name == "slstm-exp" else -_softplus(-pre["f"])
            a = s["m"] + logf - pre["i"]
        else:
            return
        assert np.abs(a).min() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_compiled_step_is_the_package_step(name):
    pk, p, x, s0 = setup(name)
    bound = Bound(compile_cell(LINEAR_CELLS[name]), p)
    s = s0
    for t in range(x.shape[0]):
        vals = bound.step(x[t], s)
        ref = package_step(name, pk, p, x[t], s)
        for b in s0:
            np.testing.assert_allclose(vals[b], ref[b], rtol=1e-13, atol=1e-14)
        s = {b: np.asarray(vals[b]) for b in s0}


@pytest.mark.parametrize("name", NAMES)
def test_state_blocks_match_finite_differences(name):
    """Every singular value (so the Frobenius and spectral norms) of every state block at
    every lag k = 1..T, against central differences through the package's step."""
    cell = LINEAR_CELLS[name]
    pk, p, x, s0 = setup(name)
    _away_from_kinks(name, p, x, trajectory(name, pk, p, x, s0))
    T = x.shape[0]
    res = all_lags(cell, p, x, blocks=cell.blocks, s0=s0, singular_lags=tuple(range(1, T + 1)))
    dense = fd_state(name, pk, p, x, s0)
    cut = dict(zip(cell.state, np.cumsum([0, *(s0[b].shape[1] for b in cell.state)])))
    for b in cell.blocks:
        ro, co = cut[b.out], cut[b.wrt]
        for k in range(1, T + 1):
            J = dense[k][:, ro:ro + s0[b.out].shape[1], co:co + s0[b.wrt].shape[1]]
            sv = np.linalg.svd(J, compute_uv=False)
            _close(res.blocks[b]["log10_frobenius"][k - 1], np.linalg.norm(J, axis=(1, 2)),
                   what=(b, k, "fro"))
            _close(res.blocks[b]["log10_spectral"][k - 1], sv[:, 0], what=(b, k, "spec"))
            got = 10.0 ** res.singular_values[k][b]  # log10, descending
            assert got.shape == sv.shape
            assert np.all(np.abs(got - sv) <= 1e-7 * sv[:, :1] + 1e-9), (b, k)


@pytest.mark.parametrize("name", NAMES)
def test_input_blocks_match_finite_differences(name):
    """Frobenius and spectral norms of every input block ∂X_T/∂x_{T−k}, k = 0..T−1."""
    cell = LINEAR_CELLS[name]
    pk, p, x, s0 = setup(name)
    _away_from_kinks(name, p, x, trajectory(name, pk, p, x, s0))
    T = x.shape[0]
    res = all_lags(cell, p, x, blocks=cell.input_blocks, s0=s0)
    assert list(res.inputs) == list(cell.input_blocks)
    dense = fd_input(name, pk, p, x, s0)
    for b in cell.input_blocks:
        for k in range(T):
            J = dense[k][b.out]
            assert np.abs(J).max() > 0
            _close(res.inputs[b]["log10_frobenius"][k], np.linalg.norm(J, axis=(1, 2)),
                   what=(b, k, "fro"))
            _close(res.inputs[b]["log10_spectral"][k],
                   np.linalg.svd(J, compute_uv=False)[:, 0], what=(b, k, "spec"))


def test_lru_jacobian_is_a_power_of_lambda():
    """The LRU's state Jacobian does not depend on the inputs: at lag k its blocks are
    Re/Im of diag(λ^k), so ‖∂h_T/∂h_{T−k}‖_F² = 2 Σ_j |λ_j|^{2k} over the realified
    state (all four blocks), computed here from λ alone."""
    pk, p, x, s0 = setup("lru")
    T = x.shape[0]
    cell = LINEAR_CELLS["lru"]
    res = all_lags(cell, p, x, s0=s0, singular_lags=tuple(range(1, T + 1)))
    lam = p["lam_re"] + 1j * p["lam_im"]
    for k in range(1, T + 1):
        lk = lam**k
        want = {"h_re/h_re": lk.real, "h_re/h_im": -lk.imag, "h_im/h_re": lk.imag,
                "h_im/h_im": lk.real}
        for b, diag in want.items():
            ref = np.sqrt(np.sum(diag**2))
            np.testing.assert_allclose(10.0 ** res.blocks[b]["log10_frobenius"][k - 1],
                                       ref, rtol=1e-12)
            for row in 10.0 ** res.singular_values[k][b]:  # every sequence: the same
                np.testing.assert_allclose(row, np.sort(np.abs(diag))[::-1], rtol=1e-12)


def test_saturated_forget_gate_keeps_its_relative_accuracy():
    """With σ(f̃) ≈ 1 (f̃ ≈ 40) and the forget path the stabiliser's max, ∂m_t/∂h_{t−1} =
    diag(1 − σ(f̃)) R_f ≈ 4e−18 R_f: computed as σ(−f̃), not as 1 − e^{−softplus(−f̃)}, which
    is 0 in floating point."""
    cell = LINEAR_CELLS["slstm"]
    rng = np.random.default_rng(5)
    n, d = 3, 2
    p = {q: rng.normal(0, 0.5, tuple({"n": n, "d": d}[k] for k in dims))
         for q, dims in cell.param_dims.items()}
    p["b_f"] = np.full(n, 40.0)
    p["b_i"] = np.full(n, -5.0)  # log i ≈ −5 < log f + m_{t−1} ≈ 0: q_t > 0, m_t = m_{t−1} + log f
    x = rng.normal(0, 0.3, (1, 1, d))
    s0 = {"h": rng.normal(0, 0.3, (1, n)), "c": rng.normal(0, 0.3, (1, n)),
          "n": np.ones((1, n)), "m": np.zeros((1, n))}
    res = all_lags(cell, p, x, blocks=("m/h",), s0=s0)
    f_pre = _lin(x[0], p["W_f"], p["b_f"]) + s0["h"] @ p["R_f"].T
    want = np.linalg.norm(np_sigmoid(-f_pre)[0][:, None] * p["R_f"])
    assert 1e-19 < want < 1e-16
    np.testing.assert_allclose(10.0 ** res.blocks["m/h"]["log10_frobenius"][0], want,
                               rtol=1e-12)

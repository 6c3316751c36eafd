"""The all-lag Jacobian engine (gateflow.numeric._chain.all_lags) against independent references:
central finite differences on every cell, PyTorch autograd, closed forms at long T."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateflow import CELLS, get_cell
from gateflow.jobs._contract import to_json_dict
from gateflow.jobs._decay import decay
from gateflow.models._params import from_torch_state_dict, init_params, load_params, make_inputs
from gateflow.numeric._chain import all_lags
from gateflow.numeric._compile import Bound, compile_cell

ALL = sorted(CELLS)


# -- references ---------------------------------------------------------------------------
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_step(name: str, p: dict, x, s: dict) -> dict:
    """Each cell's step written out by hand from its paper (REFERENCES.md), independent
    of gateflow's compiled evaluators."""
    h = s["h"]

    def lin(w, u, b, hh=h):
        return x @ p[w].T + hh @ p[u].T + p[b]

    if name in ("rnn", "rnn-relu"):
        a = lin("W", "U", "b")
        return {"h": np.tanh(a) if name == "rnn" else np.maximum(a, 0)}
    if name == "indrnn":
        return {"h": np.maximum(x @ p["W"].T + p["u"] * h + p["b"], 0)}
    if name in ("lstm", "lstm-peephole", "lstm-cifg", "lstm-proj"):
        c = s["c"]
        pi = p["p_i"] * c if name == "lstm-peephole" else 0
        pf = p["p_f"] * c if name == "lstm-peephole" else 0
        i = _sigmoid(lin("W_i", "U_i", "b_i") + pi)
        f = 1 - i if name == "lstm-cifg" else _sigmoid(lin("W_f", "U_f", "b_f") + pf)
        g = np.tanh(lin("W_g", "U_g", "b_g"))
        c2 = f * c + i * g
        po = p["p_o"] * c2 if name == "lstm-peephole" else 0
        o = _sigmoid(lin("W_o", "U_o", "b_o") + po)
        h2 = o * np.tanh(c2)
        return {"h": h2 @ p["P"].T if name == "lstm-proj" else h2, "c": c2}
    if name in ("gru", "gru-cho"):
        r = _sigmoid(lin("W_r", "U_r", "b_r"))
        z = _sigmoid(lin("W_z", "U_z", "b_z"))
        if name == "gru":
            n = np.tanh(x @ p["W_n"].T + p["b_in"] + r * (h @ p["U_n"].T + p["b_hn"]))
        else:
            n = np.tanh(x @ p["W_n"].T + p["b_in"] + (r * h) @ p["U_n"].T + p["b_hn"])
        return {"h": (1 - z) * n + z * h}
    if name == "mgu":
        f = _sigmoid(lin("W_f", "U_f", "b_f"))
        n = np.tanh(x @ p["W_n"].T + (f * h) @ p["U_n"].T + p["b_n"])
        return {"h": (1 - f) * h + f * n}
    if name == "minimalrnn":
        z = np.tanh(x @ p["W_x"].T + p["b_z"])
        u = _sigmoid(h @ p["U_h"].T + z @ p["U_z"].T + p["b_u"])
        return {"h": u * h + (1 - u) * z}
    raise AssertionError(f"no reference step for {name}")


def trajectory(name, params, x):
    """s_0..s_T per block with the compiled step (checked against numpy_step below)."""
    cell = get_cell(name)
    bound = Bound(compile_cell(cell), params)
    T, B, _ = x.shape
    s = {b: np.zeros((B, bound.dim[b])) for b in cell.state}
    out = [s]
    for t in range(T):
        vals = bound.step(x[t], s)
        s = {b: np.array(vals[b], dtype=np.float64) for b in cell.state}
        out.append(s)
    return bound, out


def fd_jacobians(name, params, x, eps=1e-6):
    """Dense ∂s_T/∂s_{T−k}, (B, N, N) for every lag k (dict), by central differences on the
    full state map s_{T−k} → s_T (state concatenated in cell.state order); and the blocks'
    sizes (state block -> units)."""
    cell = get_cell(name)
    bound, traj = trajectory(name, params, x)
    T, B, _ = x.shape
    dims = {b: traj[0][b].shape[1] for b in cell.state}
    N = sum(dims.values())
    first = np.cumsum([0, *dims.values()])

    def flow(svec, t0):
        s = {b: svec[:, first[j]:first[j + 1]] for j, b in enumerate(cell.state)}
        for t in range(t0, T):
            vals = bound.step(x[t], s)
            s = {b: np.array(vals[b], dtype=np.float64) for b in cell.state}
        return np.concatenate([s[b] for b in cell.state], axis=1)

    out = {}
    for k in range(1, T + 1):
        t0 = T - k
        base = np.concatenate([traj[t0][b] for b in cell.state], axis=1)
        J = np.empty((B, N, N))
        for j in range(N):
            e = np.zeros(N)
            e[j] = eps
            J[:, :, j] = (flow(base + e, t0) - flow(base - e, t0)) / (2 * eps)
        out[k] = J
    return out, dims


def block_of(J, cell, block, dims):
    """The block X/Y of a dense (B, N, N) Jacobian, blocks of sizes ``dims``."""
    first = dict(zip(cell.state, np.cumsum([0, *(dims[s] for s in cell.state)])))
    out, inp = block.split("/")
    return J[:, first[out]:first[out] + dims[out], first[inp]:first[inp] + dims[inp]]


def _close(log10_value, ref, atol, rtol):
    got = np.where(np.isneginf(log10_value), 0.0, 10.0 ** np.asarray(log10_value, dtype=float))
    bad = np.abs(got - ref) > atol + rtol * np.abs(ref)
    assert not bad.any(), f"got {got[bad]}, expected {np.broadcast_to(ref, got.shape)[bad]}"


def check_against_dense(name, params, x, dense, dims, *, atol, rtol, sv_rtol=None):
    """every block, norm and singular value of all_lags against dense Jacobians."""
    cell = get_cell(name)
    T = x.shape[0]
    res = all_lags(name, params, x, singular_lags=tuple(range(1, T + 1)))
    for b in cell.blocks:
        for nm in ("log10_frobenius", "log10_spectral"):
            a = res.blocks[b][nm]
            assert not np.isnan(a).any() and not np.isposinf(a).any()
        for k in range(1, T + 1):
            Jb = block_of(dense[k], cell, b, dims)
            sv = np.linalg.svd(Jb, compute_uv=False)  # (B, n), descending
            fro = np.linalg.norm(Jb, axis=(1, 2))
            _close(res.blocks[b]["log10_frobenius"][k - 1], fro, atol, rtol)
            _close(res.blocks[b]["log10_spectral"][k - 1], sv[:, 0], atol, rtol)
            got_sv = res.singular_values[k][b]
            assert got_sv.shape == sv.shape
            scale = sv[:, :1] if sv_rtol is not None else 0
            _close(got_sv, sv, atol + (sv_rtol or 0) * scale, rtol if sv_rtol is None else 0)
    return res


# -- the compiled step is the cell of the paper -------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_compiled_step_matches_hand_written_numpy(name):
    params = init_params(name, 4, 3, scheme="gaussian", sigma_w=1.3, sigma_b=0.7, seed=3)
    x = make_inputs(5, 2, 3, seed=4)
    _, traj = trajectory(name, params, x)
    for t in range(5):
        ref = numpy_step(name, params, x[t], traj[t])
        for b in CELLS[name].state:
            np.testing.assert_allclose(traj[t + 1][b], ref[b], rtol=1e-13, atol=1e-14)


# -- 1. finite differences ----------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_finite_differences_every_cell(name):
    params = init_params(name, 3, 2, scheme="gaussian", sigma_w=1.5, sigma_b=0.5, seed=11)
    x = make_inputs(4, 2, 2, seed=12)
    dense, n = fd_jacobians(name, params, x)
    check_against_dense(name, params, x, dense, n, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_finite_differences_saturated_gates(name):
    """Biases ±50 saturate every gate: values stay finite and match FD (absolutely: the
    true derivatives ~e^{−50} are below FD's resolution and may round to exact zeros)."""
    cell = get_cell(name)
    params = init_params(name, 3, 2, scheme="gaussian", sigma_w=1.0, seed=5)
    rng = np.random.default_rng(6)
    for p in cell.params:
        if p.startswith("b"):
            params[p] = 50.0 * rng.choice([-1.0, 1.0], size=params[p].shape)
    x = make_inputs(4, 2, 2, seed=7)
    dense, n = fd_jacobians(name, params, x)
    res = check_against_dense(name, params, x, dense, n, atol=1e-8, rtol=1e-6)
    for dd in [*res.blocks.values(), *res.direct.values()]:
        for a in dd.values():
            assert not np.isnan(a).any() and not np.isposinf(a).any()


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(ALL), n=st.integers(1, 4), d=st.integers(1, 3), T=st.integers(1, 5),
       B=st.integers(1, 3), seed=st.integers(0, 2**31), sigma_w=st.floats(0.2, 2.5))
def test_finite_differences_random_shapes(name, n, d, T, B, seed, sigma_w):
    params = init_params(name, n, d, scheme="gaussian", sigma_w=sigma_w, sigma_b=0.5, seed=seed)
    x = make_inputs(T, B, d, seed=seed + 1)
    dense, n_ = fd_jacobians(name, params, x)
    check_against_dense(name, params, x, dense, n_, atol=1e-8, rtol=1e-6)


# -- 2. PyTorch autograd ------------------------------------------------------------------
T_TORCH, N_TORCH, D_TORCH, B_TORCH = 6, 5, 3, 2


def _torch_module(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    if kind in ("rnn", "rnn-relu"):
        nl = "tanh" if kind == "rnn" else "relu"
        m = torch.nn.RNN(D_TORCH, N_TORCH, nonlinearity=nl)
    elif kind == "lstm":
        m = torch.nn.LSTM(D_TORCH, N_TORCH)
    else:
        m = torch.nn.GRU(D_TORCH, N_TORCH)
    m = m.double()
    with torch.no_grad():  # wider than the default init, so the Jacobians are not tiny
        for prm in m.parameters():
            prm.uniform_(-0.9, 0.9)
    return m


def _torch_dense(step, x, n_state):
    """Dense ∂s_T/∂s_{T−k} (B, N, N) for every k, by autograd through ``step``."""
    torch = pytest.importorskip("torch")
    T, B, _ = x.shape
    s = torch.zeros(B, n_state, dtype=torch.float64)
    traj = [s]
    with torch.no_grad():
        for t in range(T):
            s = step(x[t], s)
            traj.append(s)
    out = {}
    for k in range(1, T + 1):
        def flow(s0, k=k):
            s = s0
            for t in range(T - k, T):
                s = step(x[t], s)
            return s

        J = torch.autograd.functional.jacobian(flow, traj[T - k])  # (B, N, B, N)
        out[k] = torch.stack([J[b, :, b, :] for b in range(B)]).numpy()
    return out


def _module_step(m, kind):
    n = N_TORCH

    def step(xt, s):
        if kind == "lstm":
            h, c = s[:, :n], s[:, n:]
            _, (h2, c2) = m(xt[None], (h[None].contiguous(), c[None].contiguous()))
            return __import__("torch").cat([h2[0], c2[0]], dim=1)
        _, h2 = m(xt[None], s[None].contiguous())
        return h2[0]

    return step


@pytest.mark.parametrize("kind", ["rnn", "rnn-relu", "lstm", "gru"])
@pytest.mark.parametrize("via", ["state_dict", "pt_file"])
def test_torch_autograd(kind, via, tmp_path):
    torch = pytest.importorskip("torch")
    m = _torch_module(kind)
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    if via == "state_dict":
        params = from_torch_state_dict(kind, sd)
    else:
        path = tmp_path / "model.pt"
        torch.save(m.state_dict(), path)
        params = load_params(path, kind)
    x = make_inputs(T_TORCH, B_TORCH, D_TORCH, seed=2)
    dense = _torch_dense(_module_step(m, kind), torch.from_numpy(x),
                         N_TORCH * len(get_cell(kind).state))
    check_against_dense(kind, params, x, dense, {s: N_TORCH for s in get_cell(kind).state},
                        atol=0, rtol=1e-10, sv_rtol=1e-10)


def test_torch_gru_cho_hand_written():
    torch = pytest.importorskip("torch")
    m = _torch_module("gru")
    sd = {k: v.detach() for k, v in m.state_dict().items()}
    params = from_torch_state_dict("gru-cho", {k: v.numpy() for k, v in sd.items()})
    Wr, Wz, Wn = sd["weight_ih_l0"].chunk(3)
    Ur, Uz, Un = sd["weight_hh_l0"].chunk(3)
    bir, biz, bin_ = sd["bias_ih_l0"].chunk(3)
    bhr, bhz, bhn = sd["bias_hh_l0"].chunk(3)

    def step(xt, h):  # Cho et al. 2014: reset *before* the recurrent matmul
        r = torch.sigmoid(xt @ Wr.T + bir + h @ Ur.T + bhr)
        z = torch.sigmoid(xt @ Wz.T + biz + h @ Uz.T + bhz)
        n = torch.tanh(xt @ Wn.T + bin_ + (r * h) @ Un.T + bhn)
        return (1 - z) * n + z * h

    x = make_inputs(T_TORCH, B_TORCH, D_TORCH, seed=2)
    dense = _torch_dense(step, torch.from_numpy(x), N_TORCH)
    check_against_dense("gru-cho", params, x, dense, {"h": N_TORCH}, atol=0, rtol=1e-10,
                        sv_rtol=1e-10)
    # and it is a different function from PyTorch's GRU with the same weights
    torch_gru = from_torch_state_dict("gru", {k: v.numpy() for k, v in sd.items()})
    a = all_lags("gru", torch_gru, x).blocks["h/h"]["log10_frobenius"]
    b = all_lags("gru-cho", params, x).blocks["h/h"]["log10_frobenius"]
    assert np.abs(a - b).max() > 1e-3


# -- 2b. the direct path against numpy ----------------------------------------------------
#: The direct coefficient of each cell's ∂s_t/∂s_{t−1} (its elementwise self-path), written
#: out from the cell's equations: (state block, gate pre-activation weights, complement?).
_DIRECT_GATE = {"lstm": ("c", "f", False), "lstm-cifg": ("c", "i", True),
                "gru": ("h", "z", False), "gru-cho": ("h", "z", False), "mgu": ("h", "f", True)}


@pytest.mark.parametrize("name", sorted(_DIRECT_GATE))
def test_direct_path_against_numpy(name):
    """log10 ‖∏ diag(c_t)‖ (Frobenius and spectral: the largest |entry|, not the smallest)
    of the direct path, from a numpy forward pass independent of gateflow's evaluators."""
    state, gate, complement = _DIRECT_GATE[name]
    n, d, T, B = 6, 3, 40, 3
    params = init_params(name, n, d, sigma_w=1.5, seed=4)
    x = make_inputs(T, B, d, seed=5)
    cell = get_cell(name)
    s = {b: np.zeros((B, n)) for b in cell.state}
    logs = []  # log|c_t| per step, (B, n)
    for t in range(T):
        a = x[t] @ params[f"W_{gate}"].T + s["h"] @ params[f"U_{gate}"].T + params[f"b_{gate}"]
        v = _sigmoid(a)
        logs.append(np.log(1 - v if complement else v))
        s = numpy_step(name, params, x[t], s)
    res = all_lags(name, params, x)
    assert set(res.direct) == {state}
    acc = np.cumsum(np.array(logs[::-1]), axis=0)  # index k−1: Σ over t = T−k+1..T
    spectral = acc.max(axis=2) / math.log(10)
    frobenius = 0.5 * np.log10(np.exp(2 * acc).sum(axis=2))
    assert (acc.max(axis=2) - acc.min(axis=2))[-1].min() > 1  # max and min differ clearly
    np.testing.assert_allclose(res.direct[state]["log10_spectral"], spectral, rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(res.direct[state]["log10_frobenius"], frobenius, rtol=1e-10,
                               atol=1e-10)


# -- 3. closed forms at long T ------------------------------------------------------------
def _zero_weights(name, n, d, **biases):
    cell = get_cell(name)
    params = {p: np.zeros(s.shape) for p, s in init_params(name, n, d).items()}
    for p, v in biases.items():
        params[p] = np.full(n, v)
    assert set(params) == set(cell.params)
    return params


def test_lstm_zero_weights_closed_form():
    n, T, bf = 4, 2000, 1.5
    params = _zero_weights("lstm", n, 2, b_f=bf, b_i=0.3, b_g=-0.2, b_o=0.1)
    x = make_inputs(T, 2, 2, seed=0)  # inputs do not matter: W = 0
    res = all_lags("lstm", params, x)
    k = np.arange(1, T + 1)[:, None]
    ls = math.log10(1 / (1 + math.exp(-bf)))
    np.testing.assert_allclose(res.blocks["c/c"]["log10_frobenius"],
                               np.broadcast_to(k * ls + 0.5 * math.log10(n), (T, 2)), rtol=1e-9)
    np.testing.assert_allclose(res.blocks["c/c"]["log10_spectral"],
                               np.broadcast_to(k * ls, (T, 2)), rtol=1e-9)
    np.testing.assert_allclose(res.direct["c"]["log10_frobenius"],
                               res.blocks["c/c"]["log10_frobenius"], rtol=1e-12)
    # U = 0: h_{T−k} reaches nothing
    assert np.isneginf(res.blocks["h/h"]["log10_frobenius"]).all()
    assert np.isneginf(res.blocks["c/h"]["log10_spectral"]).all()
    assert np.isfinite(res.blocks["h/c"]["log10_frobenius"]).all()


def test_gru_zero_weights_closed_form():
    n, T, bz = 3, 2000, 2.0
    params = _zero_weights("gru", n, 2, b_z=bz, b_r=0.4, b_in=0.2, b_hn=-0.3)
    res = all_lags("gru", params, make_inputs(T, 2, 2, seed=0))
    k = np.arange(1, T + 1)[:, None]
    ls = math.log10(1 / (1 + math.exp(-bz)))
    np.testing.assert_allclose(res.blocks["h/h"]["log10_frobenius"],
                               np.broadcast_to(k * ls + 0.5 * math.log10(n), (T, 2)), rtol=1e-9)
    np.testing.assert_allclose(res.blocks["h/h"]["log10_spectral"],
                               np.broadcast_to(k * ls, (T, 2)), rtol=1e-9)


def test_rnn_zero_recurrence_is_exactly_zero_and_null_in_json():
    params = init_params("rnn", 4, 2, seed=0)
    params["U"][:] = 0
    x = make_inputs(50, 3, 2, seed=0)
    out = decay("rnn", params, x)
    for a in out.blocks["h/h"].values():
        assert np.isneginf(a).all()
    doc = to_json_dict(out)
    assert doc["null_means"] == "exactly zero"
    assert doc["blocks"]["h/h"]["log10_frobenius"] == [[None] * 3] * 50


def _assert_finite(res):
    for dd in res.blocks.values():
        for a in dd.values():
            assert np.isfinite(a).all()


@pytest.mark.slow
def test_t10000_vanishing_stays_finite():
    params = init_params("rnn", 8, 3, scheme="gaussian", sigma_w=0.5, seed=0)
    res = all_lags("rnn", params, make_inputs(10000, 2, 3, seed=1))
    _assert_finite(res)
    fro = res.blocks["h/h"]["log10_frobenius"]
    assert fro[-1].max() < -3000  # far below float64's 1e-308
    assert np.all(np.diff(fro, axis=0).mean(axis=0) < 0)


@pytest.mark.slow
def test_t10000_exploding_stays_finite():
    """Zero inputs and biases keep h at the fixed point 0, so J_t = U every step:
    ‖∂h_T/∂h_{T−k}‖ = ‖U^k‖, which overflows float64 after a few hundred steps."""
    n, T = 6, 10000
    params = init_params("rnn", n, 2, scheme="gaussian", sigma_w=3.0, seed=0)
    res = all_lags("rnn", params, make_inputs(T, 1, 2, dist="zeros"))
    _assert_finite(res)
    fro = res.blocks["h/h"]["log10_frobenius"][:, 0]
    assert fro[-1] > 1000  # far above float64's 1e308
    # growth rate = log10 of U's spectral radius (power iteration limit)
    rho = np.abs(np.linalg.eigvals(params["U"])).max()
    assert abs((fro[-1] - fro[T // 2]) / (T - T // 2) - math.log10(rho)) < 1e-3
    # against U^k by repeated squaring with renormalisation, at a few lags
    for k in (1, 7, 300, 4096):
        M, logs = np.eye(n), 0.0
        for _ in range(k):
            M = params["U"] @ M
            s = np.linalg.norm(M)
            M, logs = M / s, logs + math.log10(s)
        assert abs(fro[k - 1] - (logs + math.log10(np.linalg.norm(M)))) < 1e-9 * max(1, abs(logs))


def test_indrnn_diagonal_closed_form():
    """IndRNN with positive pre-activations: ∂h_T/∂h_{T−k} = diag(u)^k."""
    n, T = 3, 2000
    params = init_params("indrnn", n, 2, seed=0)
    params["W"][:] = 0
    params["u"][:] = [0.5, 0.9, 0.99]
    params["b"][:] = 1.0
    res = all_lags("indrnn", params, make_inputs(T, 2, 2, seed=0))
    k = np.arange(1, T + 1)[:, None]
    np.testing.assert_allclose(res.blocks["h/h"]["log10_spectral"],
                               np.broadcast_to(k * math.log10(0.99), (T, 2)), rtol=1e-9)
    ref = 0.5 * np.log10(sum(u ** (2.0 * k) for u in params["u"]))
    np.testing.assert_allclose(res.blocks["h/h"]["log10_frobenius"],
                               np.broadcast_to(ref, (T, 2)), rtol=1e-9)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_float32_agrees_with_float64(name):
    """Measured: max |Δ log10| ≈ 2.3e-7 at T = 50 (n = 16, B = 4); asserted at 1e-4."""
    params = init_params(name, 16, 4, seed=0)
    x = make_inputs(50, 4, 4, seed=1)
    r64 = all_lags(name, params, x, dtype="float64")
    r32 = all_lags(name, params, x, dtype="float32")
    for b in r64.blocks:
        for nm in r64.blocks[b]:
            np.testing.assert_allclose(r32.blocks[b][nm], r64.blocks[b][nm], atol=1e-4, rtol=0)


@pytest.mark.parametrize("regime", ["vanishing", "exploding"])
def test_float32_long_runs_stay_finite(regime):
    """float32 holds only 1e±38: the per-row renormalisation must act well before that."""
    if regime == "vanishing":
        params = init_params("rnn", 8, 3, scheme="gaussian", sigma_w=0.5, seed=0)
        x = make_inputs(400, 2, 3, seed=1)
    else:  # J_t = U at the fixed point h = 0: ‖U^k‖ passes 1e38 within ~80 steps
        params = init_params("rnn", 6, 2, scheme="gaussian", sigma_w=3.0, seed=0)
        x = make_inputs(400, 2, 2, dist="zeros")
    r32 = all_lags("rnn", params, x, dtype="float32")
    r64 = all_lags("rnn", params, x, dtype="float64")
    _assert_finite(r32)
    fro = r64.blocks["h/h"]["log10_frobenius"]
    assert np.abs(fro[-1]).min() > 60  # beyond float32's range
    for nm in r64.blocks["h/h"]:
        np.testing.assert_allclose(r32.blocks["h/h"][nm], r64.blocks["h/h"][nm], rtol=1e-4,
                                   atol=1e-3)


# -- 4. probe gradients and determinism ---------------------------------------------------
@pytest.mark.parametrize("name", ["lstm", "gru", "lstm-peephole", "minimalrnn", "rnn"])
def test_probe_gradient_matches_dense(name):
    params = init_params(name, 3, 2, scheme="gaussian", sigma_w=1.2, sigma_b=0.3, seed=8)
    x = make_inputs(5, 2, 2, seed=9)
    dense, dims = fd_jacobians(name, params, x)
    N = sum(dims.values())
    v = np.random.default_rng(10).standard_normal(N)
    res = all_lags(name, params, x, probe=v)
    for k in range(1, 6):
        ref = np.linalg.norm(np.einsum("i,bij->bj", v, dense[k]), axis=1)
        np.testing.assert_allclose(10.0 ** res.probe[k - 1], ref, rtol=1e-6, atol=1e-9)
    # a per-sequence probe (B, N)
    vb = np.random.default_rng(11).standard_normal((2, N))
    res = all_lags(name, params, x, probe=vb)
    ref = np.linalg.norm(np.einsum("bi,bij->bj", vb, dense[3]), axis=1)
    np.testing.assert_allclose(10.0 ** res.probe[2], ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_same_inputs_give_identical_results(name):
    params = init_params(name, 5, 3, seed=1)
    x = make_inputs(20, 3, 3, seed=2)
    a = to_json_dict(decay(name, params, x))
    b = to_json_dict(decay(name, params, x))
    assert a == b


def test_thread_count_changes_nothing_but_rounding():
    """The batch is split over worker threads; each sequence is computed independently."""
    from gateflow import all_lags, init_params, make_inputs

    p = init_params("lstm", 12, 5, scheme="gaussian", sigma_w=1.3, seed=0)
    x = make_inputs(60, 5, 5, seed=1)
    one = all_lags("lstm", p, x, threads=1, singular_lags=(1, 60))
    again = all_lags("lstm", p, x, threads=1, singular_lags=(1, 60))
    for threads in (2, 3, 5):
        many = all_lags("lstm", p, x, threads=threads, singular_lags=(1, 60))
        assert many.meta["workers"] == min(threads, 5)
        for b, norms in one.blocks.items():
            for k, v in norms.items():
                np.testing.assert_array_equal(again.blocks[b][k], v)  # repeat: bit-identical
                np.testing.assert_allclose(many.blocks[b][k], v, rtol=0, atol=1e-12)
        for s, norms in one.direct.items():
            for k, v in norms.items():
                np.testing.assert_allclose(many.direct[s][k], v, rtol=0, atol=1e-12)
        for lag in (1, 60):
            for b, sv in one.singular_values[lag].items():
                top = sv.max(axis=1, keepdims=True)
                np.testing.assert_allclose(10.0 ** (many.singular_values[lag][b] - top),
                                           10.0 ** (sv - top), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(s0={"C": np.zeros(4)}), r"no state block 'C'.*did you mean 'c'"),
    (dict(s0={"c": np.zeros(5)}), r"s0\['c'\] must be finite, of shape \(4,\) or \(3, 4\)"),
    (dict(s0={"h": np.full(4, np.nan)}), r"s0\['h'\] must be finite"),
    (dict(probe=np.zeros(5)), r"probe must be finite, of shape \(8,\) or \(3, 8\)"),
    (dict(probe=np.full(8, np.inf)), r"probe must be finite"),
    (dict(blocks=()), r"nothing to compute"),
    (dict(singular_lags=(2.5,)), r"must be an integer in 1..6"),
    (dict(singular_lags=(7,)), r"must be an integer in 1..6"),
    (dict(threads=0), r"threads must be a positive integer"),
    (dict(threads=-2), r"threads must be a positive integer"),
    (dict(norms="frobenius,nuclear"), r"unknown norm 'nuclear'"),
])
def test_all_lags_refuses_bad_arguments_with_a_gateflow_error(kwargs, message):
    from gateflow import GateflowError, all_lags, init_params, make_inputs

    p = init_params("lstm", 4, 2, seed=0)
    with pytest.raises(GateflowError, match=message):
        all_lags("lstm", p, make_inputs(6, 3, 2, seed=1), **kwargs)


def test_all_lags_accepts_lists_and_comma_strings():
    from gateflow import all_lags, init_params, make_inputs

    p = init_params("lstm", 4, 2, seed=0)
    x = make_inputs(6, 3, 2, seed=1)
    ref = all_lags("lstm", p, x, blocks=("h/h", "c/c"), norms=("frobenius",))
    got = all_lags("lstm", p, x.tolist(), blocks="h/h,c/c", norms="frobenius")
    for b in ("h/h", "c/c"):
        np.testing.assert_array_equal(got.blocks[b]["log10_frobenius"],
                                      ref.blocks[b]["log10_frobenius"])
    from gateflow import GateflowError

    with pytest.raises(GateflowError, match="real numbers"):
        all_lags("lstm", p, x.astype(complex))


def test_float32_spectral_norm_converges_without_dense_fallback(monkeypatch):
    """The subspace iteration runs in float64 whatever the sweep's dtype."""
    from gateflow import all_lags, init_params, make_inputs

    p = init_params("lstm", 32, 8, seed=0)
    x = make_inputs(60, 3, 8, seed=1)
    ref = all_lags("lstm", p, x, blocks=("c/c",), norms=("spectral",))
    calls = []
    real = np.linalg.eigvalsh
    monkeypatch.setattr(np.linalg, "eigvalsh", lambda a: calls.append(a.shape) or real(a))
    f32 = all_lags("lstm", p, x, blocks=("c/c",), norms=("spectral",), dtype="float32")
    assert len(calls) <= 2  # at most a rare near-degenerate sequence falls back
    np.testing.assert_allclose(f32.blocks["c/c"]["log10_spectral"],
                               ref.blocks["c/c"]["log10_spectral"], rtol=0, atol=1e-4)


def test_k_step_expansion_is_capped():
    from gateflow import GateflowError, derive

    lstm, gru = derive("lstm"), derive("gru")
    assert len(lstm.steps("c/c", lstm.max_steps)) == 2 ** (lstm.max_steps - 1)
    with pytest.raises(GateflowError, match=rf"limit {lstm.max_steps} for lstm"):
        lstm.steps("c/c", lstm.max_steps + 1)
    assert len(gru.steps("h/h", 50)) == 1  # one state block: one path
    assert 100 <= gru.max_steps < 10_000


def test_expansion_cost_counts_every_path():
    """The cost model's dynamic programme agrees with enumerating the paths."""
    from gateflow import derive

    for name in ("lstm", "gru", "lstm-peephole"):
        s = derive(name)
        for k in (1, 2, 4):
            nodes = sum(s._block_sizes[b] + 1 for blk in s.cell.blocks
                        for path in s.steps(blk, k) for b in path)
            assert s.expansion_cost(k) == nodes + k * sum(s._block_sizes.values())

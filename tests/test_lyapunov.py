"""Lyapunov spectra: closed forms, a dense torch reference (autograd Jacobian per step, then
QR with the same Q₀), convergence, the Kaplan–Yorke dimension, and bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateflow import GateflowError, init_params, make_inputs, stack
from gateflow.numeric._lyapunov import kaplan_yorke, lyapunov


def _rnn_zero_drive(U):
    n = U.shape[0]
    return {"W": np.zeros((n, 2)), "U": U, "b": np.zeros(n)}, np.zeros((1, 1, 2))


def test_tanh_rnn_at_rest_has_the_log_moduli_of_U():
    """Zero input and bias keep h = 0, so J_t = U (tanh'(0) = 1) at every step: the
    exponents are log |eigenvalues of U|. A symmetric U with well separated eigenvalues:
    after the transient, Q is U's eigenbasis and every R_ii is exactly |ev_i|."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    ev = np.array([1.3, -0.9, 0.6, -0.35, 0.1])
    params, _ = _rnn_zero_drive(q @ np.diag(ev) @ q.T)
    res = lyapunov("rnn", params, np.zeros((600, 2, 2)), transient=300)
    want = np.sort(np.log(np.abs(ev)))[::-1]
    assert res.exponents.shape == (2, 5)
    np.testing.assert_allclose(res.exponents, np.tile(want, (2, 1)), rtol=0, atol=1e-9)
    assert res.positive_sum == pytest.approx([math.log(1.3)] * 2, abs=1e-9)


def test_converges_as_T_grows_for_a_random_U():
    """A random U (complex pairs included): the error against log |eig U| shrinks as T
    grows (about as 1/T, the transient's share)."""
    rng = np.random.default_rng(1)
    U = rng.normal(0, 1.1 / np.sqrt(6), (6, 6))
    params, _ = _rnn_zero_drive(U)
    want = np.sort(np.log(np.abs(np.linalg.eigvals(U))))[::-1]
    errs = [np.max(np.abs(lyapunov("rnn", params, np.zeros((T, 1, 2))).exponents[0] - want))
            for T in (50, 200, 800)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.01, errs


def test_lstm_with_zero_weights_has_log_sigma_bf_n_times():
    """Every weight 0: ∂c_t/∂c_{t−1} = diag(σ(b_f)), and h_{t−1} reaches nothing, so the
    spectrum is log σ(b_f) n times (the c directions) and −inf n times (the h ones)."""
    n, bf = 4, 1.5
    params = {k: np.zeros_like(v) for k, v in init_params("lstm", n, 2).items()}
    params["b_f"][:] = bf
    res = lyapunov("lstm", params, make_inputs(30, 3, 2, seed=1))
    log_sigma = -math.log1p(math.exp(-bf))
    np.testing.assert_allclose(res.exponents[:, :n], log_sigma, rtol=0, atol=1e-13)
    assert np.all(res.exponents[:, n:] == -np.inf)
    assert res.state_dim == 2 * n and res.blocks == ("h", "c")


def _torch_reference(cell, params, x, k, transient):
    """The literature's route: the dense Jacobian of each step by
    torch.autograd.functional.jacobian of gateflow's own equations written in torch, then QR
    with the same Q₀ and the same sign rule."""
    torch = pytest.importorskip("torch")
    from gateflow.cells._library import get_cell

    cell = get_cell(cell)
    P = {k_: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k_, v in params.items()}
    n = next(iter(params.values())).shape[0]
    fns = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}

    def step(s, xt):
        env = {"x": xt, **fns}
        for j, b in enumerate(cell.state):
            env[f"{b}_prev"] = s[j * n:(j + 1) * n]
        for line in cell.equations:
            lhs, _, rhs = line.partition("=")
            env[lhs.strip()] = eval(rhs.strip(), {"__builtins__": {}}, {**env, **P})
        return torch.cat([env[b] for b in cell.state])

    T, B, _ = x.shape
    N = n * len(cell.state)
    out = np.zeros((B, k))
    for b in range(B):
        s = torch.zeros(N, dtype=torch.float64)
        Q = torch.eye(N, dtype=torch.float64)[:, :k]
        acc = torch.zeros(k, dtype=torch.float64)
        for t in range(T):
            xt = torch.from_numpy(x[t, b])
            J = torch.autograd.functional.jacobian(lambda v: step(v, xt), s)
            Q, R = torch.linalg.qr(J @ Q)
            d = torch.diagonal(R)
            Q = Q * torch.where(d < 0, -1.0, 1.0)
            if t + 1 > transient:
                acc += torch.log(d.abs())
            s = step(s, xt).detach()
        out[b] = np.sort(acc.numpy() / (T - transient))[::-1]
    return out


@pytest.mark.parametrize(("name", "k"), [("lstm", None), ("gru", 3), ("gru-cho", None),
                                         ("lstm-peephole", 4), ("rnn", None)])
def test_matches_the_dense_torch_reference(name, k):
    n, d, T = 4, 3, 40
    params = init_params(name, n, d, scheme="gaussian", sigma_w=1.6, sigma_b=0.4, seed=3)
    x = make_inputs(T, 2, d, seed=4)
    res = lyapunov(name, params, x, k=k, transient=5)
    want = _torch_reference(name, params, x, res.k, 5)
    np.testing.assert_allclose(res.exponents, want, rtol=0, atol=1e-9)


def test_stack_matches_the_dense_torch_reference():
    s = stack("lstm", 2)
    params = {}
    for layer in range(2):
        sub = init_params("lstm", 3, 2 if layer == 0 else 3, scheme="gaussian", sigma_w=1.5,
                          seed=layer)
        params.update({f"{k}_l{layer}": v for k, v in sub.items()})
    x = make_inputs(30, 2, 2, seed=5)
    res = lyapunov(s, params, x, transient=3)
    assert res.blocks == ("h_l0", "c_l0", "h_l1", "c_l1") and res.state_dim == 12
    np.testing.assert_allclose(res.exponents, _torch_reference(s, params, x, 12, 3),
                               rtol=0, atol=1e-9)


def test_running_estimates_end_at_the_result():
    params = init_params("lstm", 5, 2, seed=0)
    res = lyapunov("lstm", params, make_inputs(250, 2, 2), k=7, transient=50)
    assert res.running.shape == (len(res.running_steps), 2, 7)
    assert res.running_steps[-1] == 250 and len(res.running_steps) == 100
    np.testing.assert_allclose(res.running[-1], res.exponents)  # same order: descending
    assert np.all(np.diff(res.running, axis=2) <= 0)


@pytest.mark.parametrize(("lam", "want"), [([1.0, -2.0], 1.5), ([-1.0, -2.0], 0.0),
                                           ([0.5, 0.3], 2.0), ([0.2, -0.1, -0.4], 2.25)])
def test_kaplan_yorke(lam, want):
    assert kaplan_yorke(lam) == pytest.approx(want)


@pytest.mark.parametrize(("kw", "match"), [
    ({"k": 0}, r"k \(number of exponents\) must be an integer in 1\.\.8"),
    ({"k": 9}, r"k \(number of exponents\) must be an integer in 1\.\.8"),
    ({"transient": 5}, r"transient must be an integer in 0\.\.4"),
    ({"progress": 3}, r"progress must be a function"),
    ({"s0": {"q": np.zeros(4)}}, r"s0 has no state block 'q'"),
])
def test_bad_arguments_are_one_line(kw, match):
    with pytest.raises(GateflowError, match=match):
        lyapunov("lstm", init_params("lstm", 4, 2), make_inputs(5, 1, 2), **kw)
    with pytest.raises(GateflowError, match="NaN or Inf"):
        lyapunov("rnn", init_params("rnn", 2, 2), np.full((3, 1, 2), np.nan))


# -- the command line ---------------------------------------------------------------------
def test_cli_json_contract_and_figure(sandbox):
    import json
    from pathlib import Path

    from tests._hostile import run_cli

    out = run_cli("lyapunov", "--cell", "lstm", "--hidden", 4, "--steps", 30, "--batch", 2,
                  "--json", "l.json", "--plot", "l.png", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("l.json").read_text())
    assert doc["format"] == "gateflow-lyapunov" and doc["units"] == "natural log per step"
    assert (doc["cell"], doc["k"], doc["steps"], doc["transient"], doc["state_dim"]) == (
        "lstm", 8, 30, 3, 8)
    assert doc["blocks"] == ["h", "c"] and len(doc["exponents"]) == 2
    want = lyapunov("lstm", init_params("lstm", 4, 4, seed=0), make_inputs(30, 2, 4, seed=1),
                    transient=3)
    np.testing.assert_allclose(doc["exponents"], want.exponents, rtol=0, atol=1e-14)
    assert doc["kaplan_yorke"] == pytest.approx(want.kaplan_yorke.tolist())
    assert len(doc["running"]["steps"]) == len(doc["running"]["exponents"])
    assert doc["weights"]["source"] == "init" and Path("l.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_on_a_stacked_model_file(sandbox):
    torch = pytest.importorskip("torch")
    import json
    from pathlib import Path

    from tests._hostile import run_cli

    torch.manual_seed(0)
    torch.save(torch.nn.GRU(3, 4, num_layers=2).state_dict(), "m.pt")
    out = run_cli("lyapunov", "-w", "m.pt", "--layer", "all", "--steps", 20, "--json",
                  "g.json", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("g.json").read_text())
    assert doc["cell"] == "gru-stack2" and doc["blocks"] == ["h_l0", "h_l1"]
    assert doc["state_dim"] == 8 and doc["weights"]["layer"] == "all"


@pytest.mark.parametrize(("args", "match"), [
    (["--cell", "lstm", "--hidden", 3, "--k", 0], r"k \(number of exponents\) must be"),
    (["--cell", "lstm", "--hidden", 3, "--steps", 5, "--transient", 5], r"transient must be"),
    (["--cell", "nope"], r"unknown cell 'nope'"),
    (["--cell", "rnn", "--module", "x"], r"--module picks a module of a model file"),
    (["--cell", "rnn", "--json", "taken.json"], r"already exists; pass --overwrite"),
    (["--cell", "rnn", "--plot", "f.jpg"], r"unknown extension '.jpg'; use .svg, .png or .pdf"),
])
def test_cli_bad_options_one_line_nothing_written(args, match, sandbox):
    from pathlib import Path

    from tests._hostile import assert_clean_error, assert_unchanged, run_cli, snapshot

    Path("taken.json").write_text("mine")
    before = snapshot(".")
    assert_clean_error(run_cli("lyapunov", *args, "-q"), match)
    assert_unchanged(before, snapshot("."))


def test_exploding_decay_is_printed_as_exploding(sandbox):
    """The issue's example: an exploding RNN was reported as factor 1.23, e-folding ∞,
    horizon > 100, which read as long memory."""
    from tests._hostile import run_cli

    out = run_cli("decay", "--cell", "rnn", "--init", "gaussian", "--sigma-w", 3)
    assert out.exit_code == 0, out.stderr
    assert "rnn: fitted decay" in out.stdout  # one cell: named in the title
    row = [line for line in out.stdout.splitlines() if line.startswith("│ h/h")][-1]  # fits
    assert "exploding" in row and "not reached" in row and "> 100" not in row
    assert "∞" not in row and "— (exploding)" in row


def test_json_writes_minus_infinity_as_null():
    """An annihilated direction (the zero-weight LSTM's h) is −inf: null in the JSON, which
    stays strict JSON."""
    import json

    from gateflow.jobs._lyapunov import lyapunov_json
    from gateflow.jobs._serialize import json_text

    params = {k: np.zeros_like(v) for k, v in init_params("lstm", 2, 2).items()}
    doc = json.loads(json_text(lyapunov_json(lyapunov("lstm", params, np.zeros((5, 1, 2))),
                                             {})))
    assert doc["exponents"][0][2:] == [None, None]
    assert doc["exponents"][0][0] == pytest.approx(math.log(0.5))
    assert doc["kaplan_yorke"] == [0.0] and doc["positive_sum"] == [0.0]

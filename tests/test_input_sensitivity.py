"""Input sensitivity ∂X_T/∂x_{T−k} (blocks ``"X/x"``, input lags k = 0..T−1).

Checked against two independent routes: central differences through each cell's step as
its paper writes it (``test_chain.numpy_step``, no gateflow code), for every cell, and
PyTorch autograd through ``nn.LSTM``/``nn.GRU``/``nn.RNN`` themselves, single layers and a
2-layer stack, at every lag. The symbolic one-step blocks are checked exactly against SymPy
in ``test_exact.py::test_input_block_matches_brute_force``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_chain import numpy_step

from gateflow import CELLS, GateflowError, get_cell
from gateflow.jobs._contract import csv_rows, to_json_dict
from gateflow.jobs._decay import decay
from gateflow.models._params import from_torch_state_dict, init_params, make_inputs
from gateflow.numeric._chain import all_lags

ALL = sorted(CELLS)


def _trajectory(name, params, x):
    """s_0..s_T by the hand-written step (zeros at t = 0)."""
    cell = get_cell(name)
    dims = {b: params[p].shape[0] for b, p in (("h", "P"), ("c", "W_i")) if p in params}
    n = params[cell.params[0]].shape[0]  # every block of the other cells
    s = {b: np.zeros((x.shape[1], dims.get(b, n) if name == "lstm-proj" else n))
         for b in cell.state}
    out = [s]
    for t in range(x.shape[0]):
        s = numpy_step(name, params, x[t], s)
        out.append(s)
    return out


def fd_input_jacobians(name, params, x, eps=1e-6):
    """Dense ∂X_T/∂x_{T−k} per state block X, (B, n, d), for every input lag k, by central
    differences through the hand-written step."""
    cell = get_cell(name)
    T, B, d = x.shape
    traj = _trajectory(name, params, x)

    def final(xt, t):  # s_T from s_{t} = step(s_{t-1}, xt), then the true inputs
        s = numpy_step(name, params, xt, traj[t - 1])
        for u in range(t, T):
            s = numpy_step(name, params, x[u], s)
        return s

    out = {}
    for k in range(T):
        t = T - k  # x_t, stored at index t − 1
        J = {b: np.empty((B, traj[0][b].shape[1], d)) for b in cell.state}
        for j in range(d):
            e = np.zeros(d)
            e[j] = eps
            hi, lo = final(x[t - 1] + e, t), final(x[t - 1] - e, t)
            for b in cell.state:
                J[b][:, :, j] = (hi[b] - lo[b]) / (2 * eps)
        out[k] = J
    return out


def _assert_norms(res, dense_by_lag, T, rtol, blocks=None, atol=0.0):
    """Frobenius and spectral norms of every input block at every lag: |got − ref| <
    rtol·ref + atol (atol for finite differences, whose error is absolute)."""
    for b in blocks or res.inputs:
        out = b.split("/")[0]
        for k in range(T):
            J = dense_by_lag[k][out]
            fro = np.linalg.norm(J, axis=(1, 2))
            spec = np.linalg.svd(J, compute_uv=False)[:, 0]
            for key, ref in (("log10_frobenius", fro), ("log10_spectral", spec)):
                got = 10.0 ** res.inputs[b][key][k]
                zero = ref == 0  # a dead ReLU: exactly zero, and reported so (−inf)
                assert np.array_equal(got[zero], ref[zero]), (b, k, key)
                err = np.abs(got[~zero] - ref[~zero]) / (rtol * ref[~zero] + atol)
                assert err.size == 0 or err.max() < 1, (b, k, key, err.max())


@pytest.mark.parametrize("name", ALL)
def test_every_cell_matches_finite_differences(name):
    n, d, T, B = 3, 2, 6, 2
    params = init_params(name, n, d, seed=3, sigma_w=1.3)
    x = make_inputs(T, B, d, seed=4)
    cell = get_cell(name)
    res = all_lags(name, params, x, blocks=cell.input_blocks)
    assert list(res.inputs) == list(cell.input_blocks) and res.blocks == {}
    assert list(res.input_lags) == list(range(T))
    _assert_norms(res, fd_input_jacobians(name, params, x), T, rtol=1e-7, atol=1e-9)


def test_lag_zero_is_the_one_step_block_in_closed_form():
    """∂h_T/∂x_T of the tanh RNN is diag(1 − h_T²) W, computed here by hand."""
    n, d, T, B = 4, 3, 5, 2
    p = init_params("rnn", n, d, seed=1)
    x = make_inputs(T, B, d, seed=2)
    h_T = _trajectory("rnn", p, x)[-1]["h"]
    J = (1 - h_T**2)[:, :, None] * p["W"][None]
    res = all_lags("rnn", p, x, blocks=("h/x",))
    np.testing.assert_allclose(10.0 ** res.inputs["h/x"]["log10_frobenius"][0],
                               np.linalg.norm(J, axis=(1, 2)), rtol=1e-13)


@pytest.mark.parametrize("name", ["lstm", "lstm-proj", "gru-cho", "stack"])
def test_state_blocks_are_unchanged_by_asking_for_inputs(name):
    """The input pull-back accumulates into state adjoints in place (the LSTM's c from h, a
    stack's h_l0 from layer 1): on copies, so the state blocks are bit-identical."""
    from gateflow import stack

    cell = stack("lstm", 2) if name == "stack" else get_cell(name)
    p = init_params(cell, 5, 3, seed=0)
    x = make_inputs(20, 3, 3, seed=1)
    alone = all_lags(cell, p, x, threads=1)
    both = all_lags(cell, p, x, blocks=(*alone.blocks, *cell.input_blocks), threads=1)
    for b, dd in alone.blocks.items():
        for key, v in dd.items():
            np.testing.assert_array_equal(both.blocks[b][key], v)
    assert set(both.inputs) == set(cell.input_blocks)


def test_singular_values_are_for_state_blocks():
    p = init_params("gru", 3, 2, seed=0)
    x = make_inputs(4, 1, 2, seed=0)
    with pytest.raises(GateflowError, match="singular values are measured for state blocks"):
        all_lags("gru", p, x, blocks=("h/x",), singular_lags=(1,))
    res = all_lags("gru", p, x, blocks=("h/h", "h/x"), singular_lags=(1,))
    assert set(res.singular_values[1]) == {"h/h"}


@pytest.mark.parametrize("threads", [1, 3])
def test_workers_and_recomputed_coefficients_agree(threads, monkeypatch):
    """Batch split over worker threads, and coefficients recomputed in the backward sweep
    instead of kept: the same input sensitivity."""
    import gateflow.numeric._chain as chain

    p = init_params("gru", 4, 3, seed=5)
    x = make_inputs(12, 3, 3, seed=6)
    kept = all_lags("gru", p, x, blocks=("h/x",), threads=1)
    monkeypatch.setattr(chain, "_KEEP_BYTES", 0)
    other = all_lags("gru", p, x, blocks=("h/x",), threads=threads)
    for key, v in kept.inputs["h/x"].items():
        np.testing.assert_allclose(other.inputs["h/x"][key], v, rtol=0, atol=1e-13)


def test_long_vanishing_run_stays_finite_and_decreasing():
    """T = 2000 with a contracting RNN: the input sensitivity underflows float64 by far
    (10^-300 is passed around lag 600) yet stays finite, by the rows' log scales."""
    p = init_params("rnn", 8, 2, seed=0, sigma_w=0.3)
    x = make_inputs(2000, 1, 2, seed=1)
    v = all_lags("rnn", p, x, blocks=("h/x",), norms=("frobenius",)).inputs["h/x"][
        "log10_frobenius"][:, 0]
    assert np.isfinite(v).all() and v[-1] < -600
    assert v[100] > v[500] > v[1000] > v[1999]  # decays at about 0.3 decade per step


def test_unknown_input_block_is_one_line_error():
    p = init_params("gru", 3, 2, seed=0)
    x = make_inputs(4, 1, 2, seed=0)
    with pytest.raises(GateflowError, match=r"h/x"):
        all_lags("gru", p, x, blocks=("c/x",))


def test_decay_json_and_csv_carry_the_inputs(tmp_path):
    p = init_params("lstm", 3, 2, seed=0)
    x = make_inputs(5, 2, 2, seed=0)
    r = decay("lstm", p, x, blocks="c/c,h/x")
    doc = to_json_dict(r)
    assert doc["format_version"] == 2 and doc["input_lags"] == [0, 1, 2, 3, 4]
    assert list(doc["blocks"]) == ["c/c"] and list(doc["inputs"]) == ["h/x"]
    assert np.allclose(doc["inputs"]["h/x"]["log10_frobenius"],
                       r.inputs["h/x"]["log10_frobenius"])
    assert doc["input_data"] == {"source": "array"}
    json.dumps(doc, allow_nan=False)
    rows = [ln.split(",") for ln in csv_rows(r) and list(map(",".join, csv_rows(r)))]
    lags = sorted({int(row[1]) for row in rows if row[0] == "h/x"})
    assert lags == [0, 1, 2, 3, 4]
    assert sorted({int(row[1]) for row in rows if row[0] == "c/c"}) == [1, 2, 3, 4, 5]


# -- PyTorch autograd ------------------------------------------------------------------------
N, D, T_TORCH, B_TORCH = 4, 3, 7, 2


def _module(kind, **kw):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = getattr(torch.nn, kind)(D, N, **kw).double()
    with torch.no_grad():
        for prm in m.parameters():
            prm.uniform_(-0.9, 0.9)
    return m


def _autograd_input_jacobians(m, x, outputs):
    """∂(each output)_T/∂x_{T−k} per output name, (B, n, d), for every k, by autograd
    through the whole module over the whole sequence. ``outputs(m, x)`` -> name -> (B, n)."""
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(x)
    T, B, _ = x.shape
    names = list(outputs(m, xt))
    out = {k: {} for k in range(T)}
    for name in names:
        J = torch.autograd.functional.jacobian(lambda v, name=name: outputs(m, v)[name], xt)
        J = J.numpy()  # (B, n, T, B, d)
        for k in range(T):
            out[k][name] = np.stack([J[b, :, T - 1 - k, b, :] for b in range(B)])
    return out


def _final_states(m, xt):
    y = m(xt)
    if isinstance(m, __import__("torch").nn.LSTM):
        _, (h, c) = y
        L = h.shape[0]
        return {**{f"h_l{i}": h[i] for i in range(L)}, **{f"c_l{i}": c[i] for i in range(L)}}
    _, h = y
    return {f"h_l{i}": h[i] for i in range(h.shape[0])}


@pytest.mark.parametrize("kind,cell", [("LSTM", "lstm"), ("GRU", "gru"), ("RNN", "rnn")])
def test_single_layer_matches_torch_autograd(kind, cell):
    m = _module(kind)
    params = from_torch_state_dict(cell, {k: v.detach().numpy()
                                          for k, v in m.state_dict().items()})
    x = make_inputs(T_TORCH, B_TORCH, D, seed=9)
    ref = _autograd_input_jacobians(m, x, _final_states)
    ref = {k: {name.split("_")[0]: J for name, J in v.items()} for k, v in ref.items()}
    res = all_lags(cell, params, x, blocks=get_cell(cell).input_blocks)
    _assert_norms(res, ref, T_TORCH, rtol=1e-10)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_stack_matches_torch_autograd(kind, tmp_path):
    """A 2-layer stack read from its .pt file: every layer's h (and c) against x."""
    torch = pytest.importorskip("torch")
    from gateflow.models._model import load_model

    m = _module(kind, num_layers=2)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    cell, params = load_model(tmp_path / "m.pt", layer="all")
    x = make_inputs(T_TORCH, B_TORCH, D, seed=10)
    ref = _autograd_input_jacobians(m, x, _final_states)
    res = all_lags(cell, params, x, blocks=cell.input_blocks)
    assert list(res.inputs) == [f"{s}/x" for s in cell.state]
    assert res.meta.get("row_groups")  # block-triangular: layer 0's rows carried alone
    _assert_norms(res, ref, T_TORCH, rtol=1e-10)


def test_cli_input_rows_and_projected_sizes(sandbox):
    """decay's table puts an input block's lag k under "k=k" (∂h_T/∂x_{T−k}); --sizes sets
    lstm-proj's p, recorded in the shapes and in the weights' provenance."""
    from tests._hostile import run_cli

    out = run_cli("decay", "--cell", "lstm-proj", "--hidden", "6", "--sizes", "p=2", "--steps",
                  "6", "--batch", "2", "--blocks", "c/c,h/x", "--norms", "frobenius",
                  "--json", "d.json")
    assert out.exit_code == 0, out.stderr
    doc = json.loads((sandbox / "d.json").read_text())
    assert doc["shapes"] == {"T": 6, "B": 2, "n": 6, "d": 6, "p": 2}
    assert doc["weights"]["p"] == 2 and doc["weights"]["n"] == 6
    hx = np.asarray(doc["inputs"]["h/x"]["log10_frobenius"])
    row = next(line for line in out.stdout.splitlines() if line.lstrip("│ ").startswith("h/x"))
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[2] == f"{hx[1].mean():.3f}"  # k=1: ∂h_T/∂x_{T−1}, index 1
    assert cells[-1] == ""  # k=T: x_0 does not exist
    bad = run_cli("decay", "--cell", "lstm", "--sizes", "p=2", "--steps", "3")
    assert bad.exit_code == 2 and "cell 'lstm' has no size 'p'" in bad.stderr

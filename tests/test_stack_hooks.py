"""Both meanings of a stack's cross-layer blocks, against PyTorch autograd in float64.

* Carried blocks ``"h_l1/h_l0"``: ∂h⁽¹⁾_T/∂h⁽⁰⁾_{T−k}, h⁽⁰⁾_{T−k} perturbed as it is carried
  into the next step. Reference: the module itself restarted at T − k from every layer's
  state as separate leaves (``tests.test_models._reference``).
* Output-gradient blocks ``"h_l1/y_l0"``: ∂h⁽¹⁾_T/∂y⁽⁰⁾_{T−k}, the gradient a hook on layer
  0's output at step T − k sees. Reference: the layers run step by step (``nn.LSTMCell`` /
  ``nn.GRUCell`` holding the module's weights), a hook registered on every per-step
  output, and X_T's rows back-propagated one by one: the hooks record the gradient through
  every path, the next layer's same-step read included.

Every block (the exactly zero ones too), every lag, Frobenius and spectral norms, relative
error ≤ 1e−10. Then the claim that makes both necessary: on a 3-layer LSTM the two
meanings differ above the emitting layer, and agree at and below it.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateflow import all_lags, init_params, load_model, stack
from gateflow.cells._stack import emitted, output_blocks
from gateflow.numeric._chain import nonzero_blocks
from tests.test_chain import numpy_step

try:
    import torch
except ImportError:  # the finite-difference test below runs without it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")
if torch is not None:  # the restart reference, and the small float64 modules it runs on
    from tests.test_models import RTOL, B, D, N, T, _module, _reference, _x


def _hook_reference(m, x) -> dict[str, np.ndarray]:
    """``"X/y_lj"`` -> (T, B, rows, N) Jacobians ∂X_T/∂y⁽ʲ⁾_{T−k}, index k = 0..T−1, as
    hooks on the per-step outputs of the layers, run step by step, see them."""
    lstm = isinstance(m, torch.nn.LSTM)
    L = m.num_layers
    cells = []
    for layer in range(L):
        cell = (torch.nn.LSTMCell if lstm else torch.nn.GRUCell)(D if layer == 0 else N, N)
        cell = cell.double()
        cell.load_state_dict({k[:-3]: v for k, v in m.state_dict().items()
                              if k.endswith(f"_l{layer}")})
        cells.append(cell)
    seen: dict[tuple[int, int], torch.Tensor] = {}  # (layer, t) -> the gradient its hook saw

    def record(layer, t):
        def hook(grad):
            seen[(layer, t)] = grad.detach().clone()
        return hook

    state = [(torch.zeros(B, N, dtype=torch.float64),) * (2 if lstm else 1) for _ in range(L)]
    for t in range(1, T + 1):
        inp = x[t - 1]
        for layer, cell in enumerate(cells):
            out = cell(inp, state[layer] if lstm else state[layer][0])
            state[layer] = out if lstm else (out,)
            y = state[layer][0]  # what the layer emits: read by the next layer now, by itself next
            y.register_hook(record(layer, t))
            inp = y
    finals = {f"{b}_l{layer}": state[layer][i] for layer in range(L)
              for i, b in enumerate(("h", "c") if lstm else ("h",))}
    out = {}
    for X, value in finals.items():
        rows: dict[str, list] = {f"{X}/y_l{j}": [[] for _ in range(T)] for j in range(L)}
        for u in range(N):
            seen.clear()
            value[:, u].sum().backward(retain_graph=True)  # batch rows are independent
            for j in range(L):
                for t in range(1, T + 1):
                    g = seen.get((j, t))
                    rows[f"{X}/y_l{j}"][T - t].append(
                        np.zeros((B, N)) if g is None else g.numpy())
        for b, per_lag in rows.items():
            out[b] = np.stack([np.stack(r, axis=1) for r in per_lag])  # (T, B, N rows, N)
    return out


def _check(got, want, block, what):
    """log10 norms ``got`` (T, B) against the reference norms ``want``: exact zeros are −inf,
    the rest within RTOL."""
    zero = want == 0
    assert np.all(got[zero] == -np.inf), (block, what)
    assert np.all(np.isfinite(got[~zero])), (block, what)
    rel = np.abs(10.0 ** got[~zero] - want[~zero]) / want[~zero]
    assert rel.size == 0 or rel.max() < RTOL, (block, what, rel.max())
    return 0.0 if rel.size == 0 else float(rel.max())


def _load(m, tmp_path):
    torch.save(m.state_dict(), tmp_path / "m.pt")
    return load_model(tmp_path / "m.pt", layer="all")


@needs_torch
@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_both_meanings_match_autograd(kind, layers, tmp_path):
    """Every carried block against the restart reference, every output-gradient block
    (cross-layer, same-layer and the exactly zero ones) against hooks, at every lag."""
    m = _module(kind, num_layers=layers)
    cell, params = _load(m, tmp_path)
    assert list(emitted(cell)) == [f"y_l{j}" for j in range(layers)]
    x = _x()
    hooks = output_blocks(cell)
    assert len(hooks) == len(cell.state) * layers
    res = all_lags(cell, params, x.numpy(), blocks=(*nonzero_blocks(cell), *hooks),
                   norms=("frobenius", "spectral"))
    assert set(res.inputs) == set(hooks)  # in the same sweeps as the carried blocks
    worst = 0.0
    for block, want in _reference(m, x).items():  # carried: restart from a perturbed state
        if block in res.blocks:
            worst = max(worst, _check(res.blocks[block]["log10_frobenius"], want, block, "F"))
        else:  # a higher layer to a lower one: not computed, exactly zero
            assert not np.any(want), block
    ref = _hook_reference(m, x)
    assert set(ref) == set(hooks)
    for block, jac in ref.items():
        got = res.inputs[block]
        worst = max(worst, _check(got["log10_frobenius"], np.linalg.norm(jac, axis=(2, 3)),
                                  block, "F"))
        worst = max(worst, _check(got["log10_spectral"], np.linalg.norm(jac, 2, axis=(2, 3)),
                                  block, "2"))
    print(f"{kind} × {layers}: worst relative error {worst:.1e}")


@needs_torch
def test_lag_zero_and_where_the_meanings_agree(tmp_path):
    """At lag 0 only the same step counts: y⁽ʲ⁾_T itself for X = h_lj (the identity,
    ‖I‖_F = √n), the next layers' same-step Jacobian above j, zero below j and for c_lj.
    At lags k ≥ 1 a block at or below the emitting layer is the carried one (nothing there
    reads y⁽ʲ⁾ in the same step); layer j's own blocks at every lag agree exactly."""
    m = _module("LSTM", num_layers=3)
    cell, params = _load(m, tmp_path)
    res = all_lags(cell, params, _x().numpy(), blocks=(*nonzero_blocks(cell),
                                                      *output_blocks(cell)),
                   norms=("frobenius",))
    hook = {b: v["log10_frobenius"] for b, v in res.inputs.items()}
    carried = {b: v["log10_frobenius"] for b, v in res.blocks.items()}
    for j in range(3):
        np.testing.assert_allclose(hook[f"h_l{j}/y_l{j}"][0], 0.5 * np.log10(N), rtol=0,
                                   atol=1e-14)
        assert np.all(hook[f"c_l{j}/y_l{j}"][0] == -np.inf)
        for i in range(3):
            for b in ("h", "c"):
                X = f"{b}_l{i}"
                if i < j:  # layer i never sees layer j
                    assert np.all(hook[f"{X}/y_l{j}"] == -np.inf)
                elif i == j:  # lags 1..T−1 of the hook block are lags 1..T−1 of the carried
                    np.testing.assert_allclose(hook[f"{X}/y_l{j}"][1:],
                                               carried[f"{X}/h_l{j}"][:-1], rtol=0, atol=1e-12)
                else:  # above: the same step counts at lag 0
                    assert np.all(np.isfinite(hook[f"{X}/y_l{j}"][0]))


@needs_torch
def test_the_two_meanings_differ_on_a_3_layer_lstm(tmp_path):
    """The reason both exist: above the emitting layer, what a hook sees is not the carried
    block. Printed: the largest |Δ log10 ‖·‖_F| per cross-layer block over lags 1..T−1."""
    m = _module("LSTM", num_layers=3)
    cell, params = _load(m, tmp_path)
    x = np.random.default_rng(11).standard_normal((20, 4, D))
    res = all_lags(cell, params, x, blocks=(*nonzero_blocks(cell), *output_blocks(cell)),
                   norms=("frobenius",))
    gaps = {}
    for i in range(3):
        for j in range(i):
            for b in ("h", "c"):
                X = f"{b}_l{i}"
                hook = res.inputs[f"{X}/y_l{j}"]["log10_frobenius"][1:]  # lags 1..T−1
                kept = res.blocks[f"{X}/h_l{j}"]["log10_frobenius"][:-1]
                gaps[f"{X}/y_l{j} vs {X}/h_l{j}"] = float(np.max(np.abs(hook - kept)))
    print("\n".join(f"  {k}: {v:.2f} decades" for k, v in gaps.items()))
    assert len(gaps) == 6
    assert min(gaps.values()) > 0.01 and max(gaps.values()) > 0.2, gaps



def _zeros(name: str, p: dict, batch: int) -> dict:
    """s_0 = 0 for one layer of ``name``: h of the layer's output size, c of n."""
    n = len(p["b_o"]) if "b_o" in p else p[next(k for k in p if k.startswith("U"))].shape[0]
    h = p["P"].shape[0] if "P" in p else n
    return {"h": np.zeros((batch, h)), **({"c": np.zeros((batch, n))}
                                          if name.startswith("lstm") else {})}


def _fd_hooks(name: str, layers: int, params: dict, x, eps: float = 1e-6) -> dict:
    """``"X/y_lj"`` -> (T, B, rows, cols) by central differences: y⁽ʲ⁾_t nudged right after
    layer j computes it, so that both the next layer (now) and layer j (next step) read
    the nudged value. Each layer stepped by ``numpy_step``, written by hand per cell."""
    steps, batch, _ = x.shape
    per_layer = [{k[:-3]: v for k, v in params.items() if k.endswith(f"_l{i}")}
                 for i in range(layers)]

    def final(j=-1, t=-1, v=0, delta=0.0):
        state = [_zeros(name, p, batch) for p in per_layer]
        for step in range(1, steps + 1):
            inp = x[step - 1]
            for i in range(layers):
                state[i] = dict(numpy_step(name, per_layer[i], inp, state[i]))
                if (i, step) == (j, t):
                    state[i]["h"] = state[i]["h"].copy()
                    state[i]["h"][:, v] += delta
                inp = state[i]["h"]
        return {f"{b}_l{i}": state[i][b] for i in range(layers) for b in state[i]}

    base = final()
    out = {}
    for j in range(layers):
        cols = base[f"h_l{j}"].shape[1]
        jac = {X: np.zeros((steps, batch, val.shape[1], cols)) for X, val in base.items()}
        for t in range(1, steps + 1):
            for v in range(cols):
                up, down = final(j, t, v, eps), final(j, t, v, -eps)
                for X in base:
                    jac[X][steps - t, :, :, v] = (up[X] - down[X]) / (2 * eps)
        out.update({f"{X}/y_l{j}": J for X, J in jac.items()})
    return out


@pytest.mark.parametrize("name", ["lstm-proj", "lstm-peephole", "gru-cho", "mgu",
                                  "minimalrnn", "rnn-relu"])
def test_output_blocks_of_every_family_against_finite_differences(name):
    """Cells PyTorch has no module for (and the projected LSTM, whose layer 1 reads p
    units): the output-gradient blocks of a 2-layer stack against central differences of
    a hand-written step, every block and lag, to the differences' accuracy."""
    cell, n, d, layers = stack(name, 2), 4, 3, 2
    params = {}
    for i in range(layers):
        sub = init_params(name, n, d if i == 0 else (n // 2 if name == "lstm-proj" else n),
                          scheme="gaussian", sigma_w=1.1, sigma_b=0.3, seed=7 + i)
        params.update({f"{q}_l{i}": v for q, v in sub.items()})
    x = np.random.default_rng(5).standard_normal((5, 2, d))
    res = all_lags(cell, params, x, blocks=output_blocks(cell), norms=("frobenius",))
    for block, jac in _fd_hooks(name, layers, params, x).items():
        got, want = res.inputs[block]["log10_frobenius"], np.linalg.norm(jac, axis=(2, 3))
        zero = want < 1e-9
        assert np.all(got[zero] == -np.inf), block
        rel = np.abs(10.0 ** got[~zero] - want[~zero]) / want[~zero]
        assert rel.size == 0 or rel.max() < 1e-6, (block, rel.max())


@needs_torch
def test_a_hook_on_a_separate_modules_output_sequence_sees_the_difference():
    """What the README says of a third hook: two one-layer nn.LSTM modules, a hook on the
    first one's output *sequence* sees only what reads that tensor (module 1; module 0's
    own recurrence runs inside it): as matrices, the step-by-step hook's ∂h_l1,T/∂y_l0,t
    minus the carried ∂h_l1,T/∂h_l0,t (restart), at every lag."""
    torch.manual_seed(3)
    steps, n, d = 5, 3, 2
    first, second = torch.nn.LSTM(d, n).double(), torch.nn.LSTM(n, n).double()
    x = torch.randn(steps, 1, d, dtype=torch.float64)
    y0, _ = first(x)
    _, (h1, _) = second(y0)
    module = np.stack([torch.autograd.grad(h1[0, 0, u], y0, retain_graph=True)[0][:, 0].numpy()
                       for u in range(n)], axis=1)  # (t, row u, col)
    cells = []
    for mod, size in ((first, d), (second, n)):
        c = torch.nn.LSTMCell(size, n).double()
        c.load_state_dict({k[:-3]: v for k, v in mod.state_dict().items()})
        cells.append(c)

    def run(start: int, leaf=None):
        """h_l1,T, the per-step outputs of layer 0, after restarting layer 0's h at ``start``
        from ``leaf`` (None: no restart)."""
        zero = torch.zeros(1, n, dtype=torch.float64)
        s0, s1, ys = (zero, zero), (zero, zero), []
        for t in range(steps):
            s0 = cells[0](x[t], s0)
            ys.append(s0[0])
            s1 = cells[1](s0[0], s1)
            if t == start and leaf is not None:
                leaf.data.copy_(s0[0].detach())
                s0 = (leaf, s0[1])  # carried from here: layer 1 already read the old value
        return s1[0], ys

    h, ys = run(-1)
    hook = np.stack([np.stack([g[0].numpy() for g in torch.autograd.grad(
        h[0, u], ys, retain_graph=True)]) for u in range(n)], axis=1)
    carried = np.zeros_like(hook)
    for t in range(steps - 1):  # the last output is carried into no later step
        leaf = torch.zeros(1, n, dtype=torch.float64, requires_grad=True)
        h, _ = run(t, leaf)
        carried[t] = np.stack([torch.autograd.grad(h[0, u], leaf, retain_graph=True)[0][0]
                               .numpy() for u in range(n)])
    np.testing.assert_allclose(hook, carried + module, rtol=0, atol=1e-14)
    assert np.abs(module).max() > 1e-3 and np.abs(carried).max() > 1e-3

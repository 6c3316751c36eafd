"""A float64 PyTorch reference for ONNX recurrent nodes, for the ONNX tests.

The cell is written from the node's raw arrays (W, R, B, P in ONNX's layout and gate order,
as the file or an exporter holds them, never as gateflow maps them) and the operator's
equations as the ONNX standard writes them, with the node's activations. Its Jacobian norms
come from autograd, restarting the recurrence from the state at T − k with that state as
the leaf: ∂s_T/∂s_{T−k}, block by block, every lag. :func:`assert_decay_matches` compares
them with gateflow's exact sweep over the weights a reader returned.
"""

from __future__ import annotations

import numpy as np

RTOL = 1e-10  # relative error allowed on every Frobenius norm (float64 on both sides)


def activation(name: str, *p: float):
    """ONNX's activation ``name`` (any case) with parameters ``p``, on torch tensors."""
    import torch

    key = name.lower()
    table = {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
        "hardsigmoid": lambda x: torch.clamp(p[0] * x + p[1], 0.0, 1.0),
        "leakyrelu": lambda x: torch.where(x >= 0, x, p[0] * x),
        "thresholdedrelu": lambda x: torch.where(x > p[0], x, torch.zeros_like(x)),
        "elu": lambda x: torch.where(x >= 0, x, p[0] * (torch.exp(x) - 1)),
        "softsign": lambda x: x / (1 + torch.abs(x)),
        "softplus": lambda x: torch.log1p(torch.exp(x)),
        "affine": lambda x: p[0] * x + p[1],
        "scaledtanh": lambda x: p[0] * torch.tanh(p[1] * x),
    }
    return table[key]


def onnx_step(op: str, arrays: dict[str, np.ndarray], k: int, acts=None,
              linear_before_reset: int = 0):
    """Direction ``k`` of an ONNX ``op`` node as ``step(x_t, state) -> state`` (state: a dict
    of (B, n) tensors), from the raw arrays; ``acts`` are the node's activation functions
    (torch callables) in ONNX's order, None for the defaults."""
    import torch

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64))

    W, R = t(arrays["W"][k]), t(arrays["R"][k])
    g, n = W.shape[0] // R.shape[1], R.shape[1]
    b = t(arrays["B"][k]) if "B" in arrays else torch.zeros(2 * g * n, dtype=torch.float64)
    wb, rb = b[:g * n], b[g * n:]
    if op == "LSTM":
        f, gg, h = acts or (torch.sigmoid, torch.tanh, torch.tanh)
        p = t(arrays["P"][k]) if "P" in arrays else torch.zeros(3 * n, dtype=torch.float64)
        pi, po, pf = p[:n], p[n:2 * n], p[2 * n:]

        def step(x, s):
            gates = x @ W.T + s["h"] @ R.T + wb + rb
            i, o, fo, c = gates.split(n, dim=-1)
            i = f(i + pi * s["c"])
            fo = f(fo + pf * s["c"])
            cell = fo * s["c"] + i * gg(c)
            o = f(o + po * cell)
            return {"h": o * h(cell), "c": cell}
    elif op == "GRU":
        f, gg = acts or (torch.sigmoid, torch.tanh)
        Wz, Wr, Wh = W.split(n)
        Rz, Rr, Rh = R.split(n)
        wbz, wbr, wbh = wb.split(n)
        rbz, rbr, rbh = rb.split(n)

        def step(x, s):
            h = s["h"]
            z = f(x @ Wz.T + h @ Rz.T + wbz + rbz)
            r = f(x @ Wr.T + h @ Rr.T + wbr + rbr)
            if linear_before_reset:
                cand = gg(x @ Wh.T + r * (h @ Rh.T + rbh) + wbh)
            else:
                cand = gg(x @ Wh.T + (r * h) @ Rh.T + rbh + wbh)
            return {"h": (1 - z) * cand + z * h}
    else:
        (f,) = acts or (torch.tanh,)

        def step(x, s):
            return {"h": f(x @ W.T + s["h"] @ R.T + wb + rb)}
    return step


def autograd_norms(step, blocks: tuple[str, ...], x: np.ndarray, n: int,
                   start: dict | None = None) -> dict:
    """block "a/b" -> (T, B) Frobenius norms of ∂a_T/∂b_{T−k}, k = 1..T, from zero states
    or from ``start`` (block -> (B, n) array; a block left out starts from zeros)."""
    import torch

    xs = torch.as_tensor(np.asarray(x, dtype=np.float64))
    T, B = xs.shape[:2]
    start = start or {}
    states = [{b: torch.as_tensor(np.broadcast_to(np.asarray(start[b], dtype=np.float64),
                                                  (B, n)).copy())
               if b in start else torch.zeros(B, n, dtype=torch.float64) for b in blocks}]
    with torch.no_grad():
        for t in range(T):
            states.append(step(xs[t], states[-1]))
    out = {f"{a}/{b}": np.zeros((T, B)) for a in blocks for b in blocks}
    m = len(blocks)
    for k in range(1, T + 1):
        for j in range(B):  # one sequence at a time: the full Jacobian of the k-step map
            def restart(start, j=j, k=k):
                s = {b: start[i * n:(i + 1) * n][None] for i, b in enumerate(blocks)}
                for t in range(T - k, T):
                    s = step(xs[t, j:j + 1], s)
                return torch.cat([s[b][0] for b in blocks])

            start = torch.cat([states[T - k][b][j] for b in blocks])
            jac = torch.autograd.functional.jacobian(restart, start, vectorize=True).numpy()
            for ia in range(m):
                for ib in range(m):
                    block = jac[ia * n:(ia + 1) * n, ib * n:(ib + 1) * n]
                    out[f"{blocks[ia]}/{blocks[ib]}"][k - 1, j] = np.linalg.norm(block)
    return out


def assert_decay_matches(rec, op: str, arrays: dict[str, np.ndarray], x: np.ndarray, *,
                         acts=None, linear_before_reset: int = 0, rtol: float = RTOL) -> int:
    """gateflow's sweep over ``rec``'s weights (every direction) against the autograd
    reference from ``arrays``, every block at every lag; returns how many norms were
    compared (nonzero ones)."""
    import gateflow

    blocks = ("h", "c") if op == "LSTM" else ("h",)
    compared = 0
    for k, direction in enumerate(rec.directions):
        params = rec.weights(rec.cell, 0, direction)
        xs = np.ascontiguousarray(x if direction == "forward" else x[::-1])
        want = autograd_norms(onnx_step(op, arrays, k, acts, linear_before_reset), blocks, xs,
                              rec.hidden)
        res = gateflow.all_lags(rec.cell, params, xs, norms=("frobenius",))
        for block, ref in want.items():
            got = 10.0 ** np.asarray(res.blocks[block]["log10_frobenius"])
            zero = ref == 0
            assert np.all(got[zero] == 0), (direction, block)
            rel = np.abs(got[~zero] - ref[~zero]) / ref[~zero]
            assert rel.size == 0 or rel.max() < rtol, (direction, block, rel.max())
            compared += rel.size
    return compared

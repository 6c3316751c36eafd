"""Lyapunov spectra (issue 11): gateflow against the literature's route and JAX, in one run.

The job: the K largest Lyapunov exponents of an LSTM (PyTorch init, inputs N(0, 1)), by the
QR algorithm with Q₀ = the first K columns of the identity, no transient, float64:

* **gateflow** — ``gf.lyapunov``: exact structured Jacobians applied to the K tangents;
* **torch (literature)** — per sequence, per step, the dense N × N Jacobian by
  ``torch.autograd.functional.jacobian(step, s, vectorize=True)``, then
  ``torch.linalg.qr(J @ Q)`` (Engelken, Wolf & Abbott 2020; Vogt et al. 2022);
* **JAX** — ``jit`` of a ``lax.scan`` whose step pushes the K tangents through
  ``vmap(jvp(step))`` and re-orthonormalises with ``jnp.linalg.qr``; batch by ``vmap``.
  Timed twice: the first call (tracing and XLA compilation included) and the best warm one.

All three run in this process on the same weights and inputs; every contender's exponents
must agree with gateflow's to 1e−8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import gateflow as gf
from gfbench.harness import best_time, log, stopwatch

CELL = "lstm"
TOL = 1e-8
TARGET_TORCH, TARGET_JAX = 10.0, 1.5


@dataclass
class LyapunovRow:
    n: int
    K: int
    B: int
    T: int
    gateflow: float  # warm, best of repeats
    gateflow_first: float  # first call in this process (plans read from the disk cache)
    torch: float | None = None
    jax_first: float | None = None
    jax_warm: float | None = None
    diff: dict = field(default_factory=dict)
    why: dict = field(default_factory=dict)


def _sorted_desc(a) -> np.ndarray:
    return np.sort(np.asarray(a, dtype=float), axis=-1)[..., ::-1]


def _torch_route(params, x, K):
    import torch

    n = params["U_i"].shape[0]
    sd = gf.to_torch_state_dict(CELL, params)
    W_ih, W_hh = torch.from_numpy(sd["weight_ih_l0"]), torch.from_numpy(sd["weight_hh_l0"])
    b = torch.from_numpy(sd["bias_ih_l0"] + sd["bias_hh_l0"])

    def step(s, xt):
        h, c = s[:n], s[n:]
        g = W_ih @ xt + W_hh @ h + b
        i, f, gg, o = g[:n].sigmoid(), g[n:2 * n].sigmoid(), g[2 * n:3 * n].tanh(), \
            g[3 * n:].sigmoid()
        c2 = f * c + i * gg
        return torch.cat([o * c2.tanh(), c2])

    T, B, _ = x.shape
    out = np.zeros((B, K))
    X = torch.from_numpy(x)
    for bi in range(B):
        s = torch.zeros(2 * n, dtype=torch.float64)
        Q = torch.eye(2 * n, dtype=torch.float64)[:, :K]
        acc = torch.zeros(K, dtype=torch.float64)
        for t in range(T):
            J = torch.autograd.functional.jacobian(lambda v, t=t: step(v, X[t, bi]), s,
                                                   vectorize=True)
            Q, R = torch.linalg.qr(J @ Q)
            d = torch.diagonal(R)
            Q = Q * torch.where(d < 0, -1.0, 1.0)
            acc += torch.log(d.abs())
            with torch.no_grad():
                s = step(s, X[t, bi])
        out[bi] = acc.numpy() / T
    return _sorted_desc(out)


def _jax_route(params, K):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    n = params["U_i"].shape[0]
    P = {k: jnp.asarray(v) for k, v in params.items()}
    Wx = jnp.concatenate([P[f"W_{g}"] for g in "ifgo"])
    Uh = jnp.concatenate([P[f"U_{g}"] for g in "ifgo"])
    bb = jnp.concatenate([P[f"b_{g}"] for g in "ifgo"])

    def step(s, xt):
        h, c = s[:n], s[n:]
        g = Wx @ xt + Uh @ h + bb
        i, f = jax.nn.sigmoid(g[:n]), jax.nn.sigmoid(g[n:2 * n])
        gg, o = jnp.tanh(g[2 * n:3 * n]), jax.nn.sigmoid(g[3 * n:])
        c2 = f * c + i * gg
        return jnp.concatenate([o * jnp.tanh(c2), c2])

    def one(xs):
        N = 2 * n

        def body(carry, xt):
            s, Q, acc = carry
            Z = jax.vmap(lambda v: jax.jvp(lambda u: step(u, xt), (s,), (v,))[1],
                         in_axes=1, out_axes=1)(Q)
            Q, R = jnp.linalg.qr(Z)
            d = jnp.diagonal(R)
            Q = Q * jnp.where(d < 0, -1.0, 1.0)
            return (step(s, xt), Q, acc + jnp.log(jnp.abs(d))), None

        init = (jnp.zeros(N), jnp.eye(N)[:, :K], jnp.zeros(K))
        (_, _, acc), _ = jax.lax.scan(body, init, xs)
        return acc / xs.shape[0]

    run = jax.jit(jax.vmap(one, in_axes=1))
    return lambda x: _sorted_desc(np.asarray(run(jnp.asarray(x)).block_until_ready()))


def bench_lyapunov(n: int, K: int, B: int, T: int, seed: int, repeats: int,
                   peers: dict) -> LyapunovRow:
    """One (n, K) point: every contender on the same weights and inputs."""
    log(f"== Lyapunov: LSTM n={n} K={K} B={B} T={T}")
    params = gf.init_params(CELL, n, n, seed=seed)
    x = gf.make_inputs(T, B, n, seed=seed + 1)
    from gateflow.numeric._compile import _compile

    _compile.cache_clear()  # what a new process has: the plans on disk, nothing in memory
    t_first, res = stopwatch(lambda: gf.lyapunov(CELL, params, x, k=K))
    t_gf, res = best_time(lambda: gf.lyapunov(CELL, params, x, k=K), repeats, warm_up=False)
    ref = res.exponents
    row = LyapunovRow(n, K, B, T, t_gf, t_first)
    log(f"   gateflow first call {t_first:.3f} s, warm {t_gf:.3f} s")
    if peers.get("torch"):
        t, lam = stopwatch(lambda: _torch_route(params, x, K))
        row.torch, row.diff["torch"] = t, float(np.max(np.abs(lam - ref)))
        log(f"   torch (autograd.functional.jacobian + QR) {t:.3f} s")
    else:
        row.why["torch"] = "skipped (not installed)"
    if peers.get("jax"):
        make = _jax_route(params, K)
        t1, lam = stopwatch(lambda: make(x))
        t2, lam = best_time(lambda: make(x), repeats, warm_up=False)
        row.jax_first, row.jax_warm = t1, t2
        row.diff["jax"] = float(np.max(np.abs(lam - ref)))
        log(f"   JAX first call {t1:.3f} s, warm {t2:.3f} s")
    else:
        row.why["jax"] = "skipped (not installed)"
    return row


def lines(rows: list[LyapunovRow]) -> list[str]:
    """The report's section: the table and the targets."""
    def x(a, b):
        return "—" if a is None or b is None else f"{a / b:.1f}×"
    head = "| n | K | B | T | gateflow first / warm (s) | torch literature (s) | " \
           "JAX first / warm (s) | vs torch | vs JAX (first calls) | vs JAX (warm) | " \
           "max \\|Δλ\\| |"
    md = ["## Lyapunov spectra (issue 11)", "",
          "LSTM, PyTorch init, inputs N(0, 1), float64, Q₀ = first K columns of I, no "
          "transient; in process, same weights and inputs. torch: the literature's route "
          "(dense `autograd.functional.jacobian(vectorize=True)` per step, then "
          "`torch.linalg.qr`), one sequence at a time; JAX: `jit(vmap(lax.scan(vmap(jvp) "
          "+ qr)))`. First calls: gateflow's with its plans read from the disk cache (as "
          "in a new process), JAX's with tracing and XLA compilation; warm: best of repeats. "
          "Ratios > 1: gateflow is faster.", "", head, "|" + "---|" * 11]
    for r in rows:
        diff = max(r.diff.values()) if r.diff else float("nan")
        jax = "—" if r.jax_first is None else f"{r.jax_first:.3f} / {r.jax_warm:.3f}"
        md.append(f"| {r.n} | {r.K} | {r.B} | {r.T} | {r.gateflow_first:.3f} / "
                  f"{r.gateflow:.3f} | {'—' if r.torch is None else f'{r.torch:.3f}'} | "
                  f"{jax} | {x(r.torch, r.gateflow)} | {x(r.jax_first, r.gateflow_first)} | "
                  f"{x(r.jax_warm, r.gateflow)} | {diff:.1e} |")
    big = [r for r in rows if r.n >= 128]
    if big:
        def verdict(vals, want):
            return "PASS" if vals and min(vals) >= want else "MISS"
        vt = [r.torch / r.gateflow for r in big if r.torch]
        vj = [r.jax_first / r.gateflow_first for r in big if r.jax_first]
        worst = max((max(r.diff.values()) for r in big if r.diff), default=float("nan"))
        md += ["", "| target | measured | verdict |", "|---|---|---|",
               f"| gateflow ≥ {TARGET_TORCH:g}× faster than the torch literature route | "
               f"{', '.join(f'{v:.1f}×' for v in vt) or '—'} | {verdict(vt, TARGET_TORCH)} |",
               f"| gateflow ≥ {TARGET_JAX:g}× faster than JAX end to end (first call) | "
               f"{', '.join(f'{v:.1f}×' for v in vj) or '—'} | {verdict(vj, TARGET_JAX)} |",
               f"| all agree to {TOL:g} | {worst:.1e} | "
               f"{'PASS' if worst <= TOL else 'MISS'} |"]
    return md

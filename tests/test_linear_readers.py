"""The readers of the gated linear recurrences' packages (:mod:`gateflow.models.formats._linear`
and its :mod:`._linear_ssm`, :mod:`._linear_gated`), against the packages' own modules.

Each case builds the package's module on the CPU in float64 (fixed seeds, small sizes),
reads its ``state_dict()`` with the reader, and runs :func:`all_lags` on the cell the reader
returns, on the inputs that recurrence sees (computed by the package's own submodules:
mambapy's in_proj/conv1d/SiLU, RecurrentGemma's conv_1d, xlstm's conv, the SRU layer below).
The reference is float64 autograd through **the package's own step** (its ``forward``,
``ssm_step`` or cell call, run k times from a leaf state, or once from a leaf input):
every lag, every state and input block, Frobenius norms, max |Δlog10| ≤ 1e−10.

Two package steps are not float64 as shipped, and the test says how it runs them:

* mambapy computes A = −exp(A_log.float()) (float32) even in a float64 module: the module's
  A_log is swapped for a Parameter whose ``.float()`` keeps float64 (the values are the
  same); unpatched, the difference is float32 rounding of A, which a test asserts too.
* RecurrentGemma's rnn_scan accumulates h in float32 by default (``acc_dtype``): it is run
  with ``acc_dtype=torch.float64``, its own argument.

RecurrentGemma's top-level ``__init__`` imports JAX; its PyTorch modules are imported without
it (package stubs), and sru's import JIT-compiles C++ kernels that its grad-enabled
(naive, pure PyTorch) path does not use: they are not built here.

A CI without the packages still checks each reader on a state dict the package made
(``tests/data/linear/<package>.safetensors``, written by ``tests/data/linear/make.py``)
against norms recorded from the package's autograd next to it (``<package>.ref.safetensors``):
those numbers come from the package, never from gateflow. Where the package is installed,
the recorded numbers are also recomputed from the package on the committed state dict.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import os
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gateflow._errors import GateflowError
from gateflow.cells._linear import LINEAR_CELLS
from gateflow.models.formats import _linear as lin
from gateflow.models.formats import _linear_gated as gated
from gateflow.models.formats import _linear_ssm as ssm
from gateflow.models.formats._linear_record import LinearModule
from gateflow.numeric._chain import all_lags

T, B = 6, 2
DATA = Path(__file__).parent / "data" / "linear"
TOL = 1e-10


# --------------------------------------------------------------------------------------
# The packages, imported quietly (their import warnings are not this test's business)
# --------------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _quiet_import(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip(name)


def _spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _sru():
    """sru, without JIT-compiling its C++/CUDA kernels at import (ops.py builds them and
    TorchScripts the functions that call them; the grad-enabled naive path used here runs
    neither)."""
    torch = _torch()
    if sys.modules.get("sru") is not None:
        return sys.modules["sru"]
    if _spec("sru") is None:
        pytest.skip("sru is not installed")
    import torch.utils.cpp_extension as ext

    load, script = ext.load, torch.jit.script
    ext.load = lambda *a, **k: None
    torch.jit.script = lambda fn, *a, **k: fn
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sru
    except ImportError as exc:
        pytest.skip(f"sru cannot be imported: {exc}")
    finally:
        ext.load, torch.jit.script = load, script
    return sru


def _recurrentgemma():
    """RecurrentGemma's PyTorch layers and modules; its top-level __init__ (JAX) and
    torch/__init__ (the sampler: sentencepiece) are not run."""
    _torch()
    if sys.modules.get("recurrentgemma.torch.layers") is not None:
        return (sys.modules["recurrentgemma.torch.layers"],
                sys.modules["recurrentgemma.torch.modules"])
    spec = _spec("recurrentgemma")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("recurrentgemma is not installed")
    pytest.importorskip("jaxtyping")
    pytest.importorskip("einops")
    root = list(spec.submodule_search_locations)[0]
    stubs = []
    for name, path in (("recurrentgemma", root),
                       ("recurrentgemma.torch", os.path.join(root, "torch"))):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
            stubs.append(name)
    try:
        from recurrentgemma.torch import layers, modules
    except ImportError as exc:
        for name in stubs:
            sys.modules.pop(name, None)
        pytest.skip(f"RecurrentGemma's PyTorch modules cannot be imported: {exc}")
    return layers, modules


@contextlib.contextmanager
def _float64():
    torch = _torch()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield torch
    finally:
        torch.set_default_dtype(old)


def _randomize(module, seed: int, scale: float = 0.6, skip=()) -> None:
    """Every floating parameter of ``module`` drawn afresh (fixed seed), except ``skip``."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in skip or name.split(".")[-1] in skip:
                continue
            if p.is_complex():
                p.copy_(torch.complex(torch.randn(p.shape, generator=g),
                                      torch.randn(p.shape, generator=g)) * scale)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _double(module):
    """The module in float64 throughout (mambapy makes A_log float32 whatever the default
    dtype; sru's scale_x is a FloatTensor): complex parameters stay complex128."""
    module.double()
    return module


def _numpy_state_dict(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _load(module, arrays: dict[str, np.ndarray]) -> None:
    """A committed state dict into the package's module (complex parameters were stored as
    (real, imag) pairs)."""
    torch = _torch()
    own = module.state_dict()
    sd = {}
    for k, a in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(a))
        if own[k].is_complex() and not t.is_complex():
            t = torch.view_as_complex(t)
        sd[k] = t.to(own[k].dtype)
    module.load_state_dict(sd, strict=True)


# --------------------------------------------------------------------------------------
# Cases: a package module, the inputs its recurrence sees, and its own step
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    package: str
    cell: str
    prefix: str
    x: np.ndarray  # (T, B, d): the cell's inputs
    s0: dict[str, np.ndarray]  # gateflow state blocks, (B, n) each
    step: Callable  # (x_t (B, d) tensor, {block: (B, n) tensor}) -> {block: tensor}
    kwargs: dict = field(default_factory=dict)  # reader arguments the state dict lacks


@dataclass
class Built:
    package: str
    root: object  # the package module whose state dict is read
    cases: list[Case]
    version: str = ""


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _rng(seed):
    return np.random.default_rng(seed)


def build_mingru(arrays=None) -> Built:
    _quiet_import("minGRU_pytorch")
    with _float64() as torch:
        from minGRU_pytorch.minGRU import minGRU
        from minGRU_pytorch.minLSTM import minLSTM

        torch.manual_seed(0)
        root = torch.nn.ModuleDict({"gru": minGRU(4, expansion_factor=1.5),
                                    "lstm": minLSTM(4, expansion_factor=1.5)})
        _double(root)
        _randomize(root, 1, 0.8)
        if arrays is not None:
            _load(root, arrays)
        rng = _rng(2)
        cases = []
        for name, cell in (("gru", "mingru-log"), ("lstm", "minlstm-log")):
            mod = root[name]

            def step(xt, s, mod=mod):
                _, nxt = mod(xt[:, None], s["h"][:, None], return_next_prev_hidden=True)
                return {"h": nxt[:, 0]}

            cases.append(Case(f"mingru-pytorch:{name}", "mingru-pytorch", cell, name + ".",
                              rng.normal(0, 1, (T, B, 4)), {"h": rng.normal(0, 0.5, (B, 6))},
                              step))
    return Built("mingru-pytorch", root, cases)


def build_lru(arrays=None) -> Built:
    _quiet_import("LRU_pytorch")
    with _float64() as torch:
        from LRU_pytorch import LRU

        torch.manual_seed(3)
        root = LRU(in_features=3, out_features=2, state_features=4, rmin=0.5, rmax=0.95)
        _double(root)
        with torch.no_grad():  # γ learned away from √(1 − |λ|²)
            root.gamma_log.add_(torch.randn(4, generator=torch.Generator().manual_seed(4)) * 0.2)
        if arrays is not None:
            _load(root, arrays)
        # y = Re(C h) + D x: copies whose output is Re(h) (C = I) and Im(h) (C = −i·I), D = 0
        reads = []
        for c in (1.0 + 0j, -1j):
            m = copy.deepcopy(root)
            m.C = torch.nn.Parameter(c * torch.eye(4, dtype=torch.complex128))
            m.D = torch.nn.Parameter(torch.zeros(4, 3))
            m.out_features = 4
            reads.append(m)

        def step(xt, s):
            re, im = [], []
            for b in range(xt.shape[0]):  # LRU.forward on a (1, d) sequence from a state
                state = torch.complex(s["h_re"][b], s["h_im"][b])
                re.append(reads[0](xt[b][None], state)[0])
                im.append(reads[1](xt[b][None], state)[0])
            return {"h_re": torch.stack(re), "h_im": torch.stack(im)}

        rng = _rng(5)
        case = Case("lru-pytorch", "lru-pytorch", "lru", "", rng.normal(0, 1, (T, B, 3)),
                    {"h_re": rng.normal(0, 0.5, (B, 4)), "h_im": rng.normal(0, 0.5, (B, 4))},
                    step)
    return Built("lru-pytorch", root, [case])


class _KeepFloat64:
    """A Parameter type whose ``.float()`` keeps float64 (see the module docstring)."""

    @staticmethod
    def make(torch, p):
        class Param(torch.nn.Parameter):
            def float(self, *args, **kwargs):
                return self

        return Param(p.detach().clone(), requires_grad=p.requires_grad)


@contextlib.contextmanager
def _mamba_float64(mixers):
    """mambapy's A = −exp(A_log.float()) kept in float64 for the length of the block."""
    torch = _torch()
    old = [m.A_log for m in mixers]
    try:
        for m in mixers:
            m.A_log = _KeepFloat64.make(torch, m.A_log)
        yield
    finally:
        for m, p in zip(mixers, old):
            m.A_log = p


def build_mamba(arrays=None) -> Built:
    _quiet_import("mambapy")
    with _float64() as torch:
        from mambapy.mamba import Mamba, MambaConfig

        torch.manual_seed(6)
        cfg = MambaConfig(d_model=3, n_layers=2, d_state=3, expand_factor=2, d_conv=3,
                          dt_rank=2)
        root = _double(Mamba(cfg))
        _randomize(root, 7, 0.6, skip=("A_log",))
        g = torch.Generator().manual_seed(8)
        with torch.no_grad():
            for layer in root.layers:
                mx = layer.mixer
                mx.A_log.copy_(torch.log(torch.rand(mx.A_log.shape, generator=g) * 1.7 + 0.3))
                mx.dt_proj.bias.copy_(torch.randn(6, generator=g) * 0.5 - 0.5)
                mx.dt_proj.weight.copy_(torch.randn(6, 2, generator=g) * 0.8)
                mx.x_proj.weight.copy_(torch.randn(8, 6, generator=g) * 0.6)
        if arrays is not None:
            _load(root, arrays)
        mixers = [layer.mixer for layer in root.layers]
        # the SSM input each layer sees: what MambaBlock.forward passes to ssm()
        seen: dict[int, object] = {}
        for i, mx in enumerate(mixers):
            orig = mx.ssm

            def spy(x, z, i=i, orig=orig):
                seen[i] = x.detach().clone()
                return orig(x, z)

            mx.ssm = spy
        u = torch.from_numpy(_rng(9).normal(0, 1, (B, T, 3)))
        with torch.no_grad():
            root(u)
        for mx in mixers:
            del mx.ssm
        rng = _rng(10)
        cases = []
        for i, mx in enumerate(mixers):
            def step(xt, s, mx=mx):
                _, h = mx.ssm_step(xt, s["h"].reshape(xt.shape[0], 6, 3))
                return {"h": h.reshape(xt.shape[0], 18)}

            cases.append(Case(f"mambapy:layers.{i}", "mambapy", "mamba", f"layers.{i}.mixer.",
                              seen[i].numpy().transpose(1, 0, 2).copy(),
                              {"h": rng.normal(0, 0.5, (B, 18))}, step))
    built = Built("mambapy", root, cases)
    built.mixers = mixers  # type: ignore[attr-defined]
    return built


def build_xlstm(arrays=None) -> Built:
    _quiet_import("xlstm")
    with _float64() as torch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig
        from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

        torch.manual_seed(11)
        layer = sLSTMLayer(sLSTMLayerConfig(embedding_dim=4, num_heads=2, backend="vanilla",
                                            conv1d_kernel_size=3))
        cell = sLSTMCell(sLSTMCellConfig(hidden_size=4, num_heads=2, backend="vanilla"))
        root = _double(torch.nn.ModuleDict({"layer": layer, "cell": cell}))
        _randomize(root, 12, 0.6)
        if arrays is not None:
            _load(root, arrays)
        u = torch.from_numpy(_rng(13).normal(0, 1, (B, T, 4)))
        with torch.no_grad():
            xc = layer.conv_act_fn(layer.conv1d(u))  # what the i and f gates read
        x_layer = torch.cat([xc, u], dim=-1).numpy().transpose(1, 0, 2).copy()

        def as_states(s):
            return torch.stack([s["h"], s["c"], s["n"], s["m"]])

        def from_states(st):
            return {"h": st[0], "c": st[1], "n": st[2], "m": st[3]}

        def step_layer(xt, s):
            """sLSTMLayer.forward on one step, its conv's output given (a hook replaces
            conv_act_fn's output by x_t's first half)."""
            hook = layer.conv_act_fn.register_forward_hook(
                lambda mod, inp, out: xt[:, None, :4])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, st = layer(xt[:, None, 4:], slstm_state=as_states(s),
                                  return_last_state=True)
            finally:
                hook.remove()
            return from_states(st["slstm_state"])

        def step_cell(xt, s):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, st = cell(xt[:, None], state=as_states(s))
            return from_states(st)

        rng = _rng(14)

        def s0():
            return {"h": rng.normal(0, 0.5, (B, 4)), "c": rng.normal(0, 0.5, (B, 4)),
                    "n": rng.uniform(0.5, 1.5, (B, 4)), "m": rng.normal(0, 0.5, (B, 4))}

        cases = [Case("xlstm:sLSTMLayer", "xlstm", "slstm", "layer.", x_layer, s0(), step_layer),
                 Case("xlstm:sLSTMCell", "xlstm", "slstm", "cell.",
                      rng.normal(0, 1, (T, B, 16)), s0(), step_cell)]
    return Built("xlstm", root, cases)


def build_sru(arrays=None) -> Built:
    sru = _sru()
    with _float64() as torch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(15)
        stack = sru.SRU(3, 4, num_layers=2, highway_bias=-1.0, rescale=True)  # 4, then 3 matrices
        proj = sru.SRUCell(6, 4, n_proj=2)
        bi = sru.SRUCell(4, 2, bidirectional=True, highway_bias=-0.5)
        root = _double(torch.nn.ModuleDict({"sru": stack, "proj": proj, "bi": bi}))
        _randomize(root, 16, 0.7)
        if arrays is not None:
            _load(root, arrays)
        rng = _rng(17)
        u = rng.normal(0, 1, (T, B, 3))
        h0 = stack.rnn_lst[0](torch.from_numpy(u))[0].detach()  # what layer 1 reads
        # (with grad enabled: sru's no-grad path calls the C++ kernels, not built here)

        def uni(mod):
            def step(xt, s):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h, c = mod(xt[None], c0=s["c"])
                return {"h": h[0], "c": c}
            return step

        def direction(di):
            def step(xt, s):
                other = torch.zeros_like(s["c"])
                c0 = torch.cat([s["c"], other] if di == 0 else [other, s["c"]], dim=1)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h, c = bi(xt[None], c0=c0)
                cut = slice(2 * di, 2 * di + 2)
                return {"h": h[0][:, cut], "c": c[:, cut]}
            return step

        def s0(n):
            return {"h": rng.normal(0, 0.5, (B, n)), "c": rng.normal(0, 0.5, (B, n))}

        cases = [
            Case("sru:rnn_lst.0", "sru", "sru", "sru.rnn_lst.0.", u, s0(4), uni(stack.rnn_lst[0])),
            Case("sru:rnn_lst.1", "sru", "sru", "sru.rnn_lst.1.", h0.numpy().copy(), s0(4),
                 uni(stack.rnn_lst[1])),
            Case("sru:n_proj", "sru", "sru", "proj.", rng.normal(0, 1, (T, B, 6)), s0(4),
                 uni(proj)),
            Case("sru:bidirectional-forward", "sru", "sru", "bi.", rng.normal(0, 1, (T, B, 4)),
                 s0(2), direction(0), {"bidirectional": True, "direction": "forward"}),
            Case("sru:bidirectional-reverse", "sru", "sru", "bi.", rng.normal(0, 1, (T, B, 4)),
                 s0(2), direction(1), {"bidirectional": True, "direction": "reverse"}),
        ]
    return Built("sru", root, cases)


def build_recurrentgemma(arrays=None) -> Built:
    layers, modules = _recurrentgemma()
    with _float64() as torch:
        torch.manual_seed(18)
        root = modules.RecurrentBlock(width=3, num_heads=2, lru_width=4,
                                      conv1d_temporal_width=3)
        _double(root)
        _randomize(root, 19, 0.7, skip=("a_param",))
        with torch.no_grad():
            root.rg_lru.a_param.add_(torch.randn(4, generator=torch.Generator().manual_seed(20))
                                     * 0.3)
        if arrays is not None:
            _load(root, arrays)
        seen = {}

        def spy(mod, args, kwargs):
            seen["x"] = kwargs["x"].detach().clone()

        hook = root.rg_lru.register_forward_pre_hook(spy, with_kwargs=True)
        u = torch.from_numpy(_rng(21).normal(0, 1, (B, T, 3)))
        pos = torch.arange(1, T + 1).repeat(B, 1)  # no segment starts inside the run
        try:
            with torch.no_grad():
                root(u, pos)
        finally:
            hook.remove()
        scan64 = functools.partial(layers.rnn_scan, acc_dtype=torch.float64)

        def step(xt, s):
            orig = layers.rnn_scan
            layers.rnn_scan = scan64
            try:
                _, h = root.rg_lru(x=xt[:, None], segment_pos=torch.full((xt.shape[0], 1), 7),
                                   cache=s["h"], return_cache=True)
            finally:
                layers.rnn_scan = orig
            return {"h": h}

        case = Case("recurrentgemma", "recurrentgemma", "rglru", "rg_lru.",
                    seen["x"].numpy().transpose(1, 0, 2).copy(),
                    {"h": _rng(22).normal(0, 0.5, (B, 4))}, step)
    return Built("recurrentgemma", root, [case])


BUILDERS: dict[str, Callable[..., Built]] = {
    "mingru-pytorch": build_mingru, "lru-pytorch": build_lru, "mambapy": build_mamba,
    "xlstm": build_xlstm, "sru": build_sru, "recurrentgemma": build_recurrentgemma,
}
CASES = {
    "mingru-pytorch": ["mingru-pytorch:gru", "mingru-pytorch:lstm"],
    "lru-pytorch": ["lru-pytorch"],
    "mambapy": ["mambapy:layers.0", "mambapy:layers.1"],
    "xlstm": ["xlstm:sLSTMLayer", "xlstm:sLSTMCell"],
    "sru": ["sru:rnn_lst.0", "sru:rnn_lst.1", "sru:n_proj", "sru:bidirectional-forward",
            "sru:bidirectional-reverse"],
    "recurrentgemma": ["recurrentgemma"],
}
ALL_CASES = [(p, c) for p, cs in CASES.items() for c in cs]


@functools.cache
def built(package: str) -> Built:
    b = BUILDERS[package]()
    b.version = _version(package)
    return b


# --------------------------------------------------------------------------------------
# The package's autograd, and gateflow's numbers
# --------------------------------------------------------------------------------------


def package_norms(case: Case, context=contextlib.nullcontext) -> dict[str, np.ndarray]:
    """log10 Frobenius norms (T, B) of every state block ("state|X/Y", lag k = 1..T) and
    every input block ("input|X/x", lag k = 0..T−1), by float64 autograd through the
    package's step."""
    torch = _torch()
    cell = LINEAR_CELLS[case.cell]
    names = cell.state
    sizes = [case.s0[b].shape[1] for b in names]
    cut = np.cumsum([0, *sizes])
    x = torch.from_numpy(case.x)

    def split(vec):
        return {b: vec[:, cut[j]:cut[j + 1]] for j, b in enumerate(names)}

    def join(s):
        return torch.cat([s[b] for b in names], dim=1)

    out: dict[str, np.ndarray] = {}
    with _float64(), context():
        traj = [{b: torch.from_numpy(case.s0[b]) for b in names}]
        for t in range(T):  # grad enabled: sru's no-grad path is its C++ kernel
            traj.append({b: v.detach() for b, v in case.step(x[t], traj[-1]).items()})

        def per_sequence(J):  # (B, N, B, M) -> (B, N, M)
            return torch.stack([J[b, :, b, :] for b in range(J.shape[0])])

        dense_state = {}
        for k in range(1, T + 1):
            def flow(vec, t0=T - k):
                s = split(vec)
                for t in range(t0, T):
                    s = case.step(x[t], s)
                return join(s)

            dense_state[k] = per_sequence(torch.autograd.functional.jacobian(
                flow, join(traj[T - k]))).numpy()
        dense_input = {}
        for k in range(T):
            t = T - k

            def flow_x(xt, t=t):
                s = case.step(xt, traj[t - 1])
                for u in range(t, T):
                    s = case.step(x[u], s)
                return join(s)

            dense_input[k] = per_sequence(torch.autograd.functional.jacobian(
                flow_x, x[t - 1].clone())).numpy()
    at = dict(zip(names, cut[:-1]))
    with np.errstate(divide="ignore"):
        for b in cell.blocks:
            rows = slice(at[b.out], at[b.out] + case.s0[b.out].shape[1])
            cols = slice(at[b.wrt], at[b.wrt] + case.s0[b.wrt].shape[1])
            out[f"state|{b}"] = np.log10(np.stack([
                np.linalg.norm(dense_state[k][:, rows, cols], axis=(1, 2))
                for k in range(1, T + 1)]))
        for b in cell.input_blocks:
            rows = slice(at[b.out], at[b.out] + case.s0[b.out].shape[1])
            out[f"input|{b}"] = np.log10(np.stack([
                np.linalg.norm(dense_input[k][:, rows, :], axis=(1, 2)) for k in range(T)]))
    return out


def gateflow_norms(module: LinearModule, x, s0) -> dict[str, np.ndarray]:
    cell = module.cell
    res = all_lags(cell, module.params, x, blocks=(*cell.blocks, *cell.input_blocks), s0=s0)
    out = {f"state|{b}": np.asarray(res.blocks[b]["log10_frobenius"]) for b in cell.blocks}
    out.update({f"input|{b}": np.asarray(res.inputs[b]["log10_frobenius"])
                for b in cell.input_blocks})
    return out


def max_log10_gap(got: dict, ref: dict, kind: str) -> float:
    """max |Δlog10| over the blocks of ``kind`` ("state" or "input"); a block exactly zero
    in one must be exactly zero in the other (−inf on both sides)."""
    worst = 0.0
    keys = [k for k in ref if k.startswith(kind + "|")]
    assert keys and set(keys) == {k for k in got if k.startswith(kind + "|")}
    for key in keys:
        g, r = np.asarray(got[key]), np.asarray(ref[key])
        assert g.shape == r.shape == (T, B), key
        zero = np.isneginf(r)
        assert np.array_equal(np.isneginf(g), zero), key
        if (~zero).any():
            worst = max(worst, float(np.max(np.abs(g[~zero] - r[~zero]))))
    return worst


def read(case: Case, arrays) -> LinearModule:
    params_from = lin.PACKAGES[case.package][0]
    return params_from(arrays, case.prefix, **case.kwargs)


def _case(package: str, case_id: str) -> tuple[Built, Case]:
    b = built(package)
    return b, next(c for c in b.cases if c.id == case_id)


# --------------------------------------------------------------------------------------
# Against the packages' own modules
# --------------------------------------------------------------------------------------


def _context(b: Built):
    if b.package == "mambapy":
        return lambda: _mamba_float64(b.mixers)  # type: ignore[attr-defined]
    return contextlib.nullcontext


@pytest.mark.parametrize("package,case_id", ALL_CASES, ids=[c for _, c in ALL_CASES])
def test_reader_matches_the_package_autograd(package, case_id):
    """Every lag, every state and input block: gateflow's exact norms on the read
    parameters against float64 autograd through the package's own step."""
    b, case = _case(package, case_id)
    arrays = _numpy_state_dict(b.root)
    assert {a.dtype for a in arrays.values()} <= {np.dtype("float64"), np.dtype("complex128")}
    module = read(case, arrays)
    assert module.cell is LINEAR_CELLS[case.cell] and module.package == package
    assert module.assumed and all("\n" not in a for a in module.assumed)
    ref = package_norms(case, _context(b))
    got = gateflow_norms(module, case.x, case.s0)
    # the reference is not degenerate: every input block and some state block is nonzero
    assert all(np.isfinite(ref[k]).all() for k in ref if k.startswith("input|"))
    assert any(np.isfinite(ref[k]).all() for k in ref if k.startswith("state|"))
    assert max_log10_gap(got, ref, "state") <= TOL
    assert max_log10_gap(got, ref, "input") <= TOL


def test_mambapy_float32_cast_is_the_only_difference():
    """Unpatched, mambapy's step takes exp of A_log in float32: the Jacobians then differ
    from the float64 model's by float32 rounding of A only (and by more than 1e−12)."""
    b, case = _case("mambapy", "mambapy:layers.0")
    module = read(case, _numpy_state_dict(b.root))
    got = gateflow_norms(module, case.x, case.s0)
    ref = package_norms(case)  # A_log.float() as shipped
    gap = max_log10_gap(got, ref, "state")
    assert 1e-12 < gap < 1e-5


def test_scan_finds_one_module_per_layer():
    """A stack lists one module per layer, by prefix, in order; each reads like its own
    params_from call."""
    b = built("mambapy")
    found = lin.scan(_numpy_state_dict(b.root))
    assert [m.module for m in found] == ["layers.0.mixer", "layers.1.mixer"]
    assert not found.skipped
    # a scan builds no expanded parameters (a real Mamba layer's are ~1 GB): only on use
    assert all("params" not in vars(m) for m in found)
    for m, case in zip(found, b.cases):
        ref = read(case, _numpy_state_dict(b.root))
        assert all(np.array_equal(m.params[k], ref.params[k]) for k in ref.params)
        assert m.sizes == {"n": 18, "d": 6}
        rec = m.recurrent()
        assert (rec.cell, rec.hidden, rec.input, rec.module) == ("mamba", 18, 6, m.module)
        assert rec.assumed == m.assumed and "SSM input" in rec.note
        w = rec.weights("mamba", 0, "forward")
        assert all(np.array_equal(w[k], m.params[k]) for k in w)


def test_scan_xlstm_block_stack():
    """xLSTMBlockStack: one sLSTM layer per block (blocks.<l>.xlstm), none of its cells
    listed again."""
    _quiet_import("xlstm")
    with _float64() as torch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from xlstm import xLSTMBlockStack, xLSTMBlockStackConfig
        from xlstm.blocks.slstm.block import sLSTMBlockConfig
        from xlstm.blocks.slstm.layer import sLSTMLayerConfig

        torch.manual_seed(23)
        cfg = xLSTMBlockStackConfig(
            slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(
                backend="vanilla", num_heads=2, conv1d_kernel_size=2)),
            context_length=8, num_blocks=2, embedding_dim=4, slstm_at=[0, 1])
        stack = xLSTMBlockStack(cfg)
    found = lin.scan(_numpy_state_dict(stack))
    assert [(m.module, m.kind, m.sizes["d"]) for m in found] == [
        ("blocks.0.xlstm", "sLSTMLayer", 8), ("blocks.1.xlstm", "sLSTMLayer", 8)]


def test_scan_lists_every_package_module():
    """Each package's committed state dict, scanned: the modules the cases read."""
    for package, ids in CASES.items():
        arrays, _, _ = _committed(package)
        found = lin.scan(arrays)
        prefixes = [m.module for m in found]
        want = list(dict.fromkeys(
            c["prefix"] for c in _committed(package)[2]["cases"].values()))
        keys = list(arrays)  # file order (safetensors sorts its keys)
        want.sort(key=lambda p: min(i for i, k in enumerate(keys) if k.startswith(p)))
        assert prefixes == [p[:-1] for p in want], (package, prefixes)
        assert {m.package for m in found} == {package}


def test_xlstm_cuda_layout_reads_like_vanilla():
    """The CUDA backend stores R as (heads, DH, 4·DH) and the bias head-major: converted
    with xlstm's own ext/int maps, it reads to the same parameters as the vanilla layout."""
    _quiet_import("xlstm")
    with _float64() as torch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from xlstm.blocks.slstm.cell import sLSTMCell_cuda, sLSTMCellConfig

        b = built("xlstm")
        vanilla = b.root["cell"]
        cuda = sLSTMCell_cuda(sLSTMCellConfig(hidden_size=4, num_heads=2, backend="cuda"),
                              skip_backend_init=True)
        with torch.no_grad():
            ext_r = vanilla._recurrent_kernel_int2ext(vanilla._recurrent_kernel_)
            ext_b = vanilla._bias_int2ext(vanilla._bias_)
            cuda._recurrent_kernel_.copy_(cuda._recurrent_kernel_ext2int(ext_r))
            cuda._bias_.copy_(cuda._bias_ext2int(ext_b))
    sd_cuda = _numpy_state_dict(cuda)
    assert sd_cuda["_recurrent_kernel_"].shape == (2, 2, 8)  # not the vanilla (2, 8, 2)
    a = gated.params_from_xlstm(sd_cuda)
    v = gated.params_from_xlstm(_numpy_state_dict(vanilla))
    assert not np.array_equal(sd_cuda["_bias_"], _numpy_state_dict(vanilla)["_bias_"])
    for k in v.params:
        np.testing.assert_array_equal(a.params[k], v.params[k], err_msg=k)
    assert any("CUDA backend" in s for s in a.assumed)


# --------------------------------------------------------------------------------------
# Committed state dicts made by the packages (need only numpy and safetensors)
# --------------------------------------------------------------------------------------


def _committed(package: str):
    """(state dict, recorded reference, metadata) of ``tests/data/linear/<package>``."""
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = DATA / f"{package}.safetensors"
    ref_path = DATA / f"{package}.ref.safetensors"
    with safe_open(str(ref_path), framework="numpy") as f:
        meta = json.loads(f.metadata()["cases"])
        produced = json.loads(f.metadata()["produced_by"])
    return load_file(str(path)), load_file(str(ref_path)), {"cases": meta, **produced}


def _recorded(ref: dict, case_id: str):
    x = ref[f"{case_id}|x"]
    s0 = {k.split("|")[2]: v for k, v in ref.items() if k.startswith(f"{case_id}|s0|")}
    norms = {k[len(case_id) + 1:]: v for k, v in ref.items()
             if k.startswith(f"{case_id}|state|") or k.startswith(f"{case_id}|input|")}
    return x, s0, norms


@pytest.mark.parametrize("package,case_id", ALL_CASES, ids=[c for _, c in ALL_CASES])
def test_committed_state_dict_matches_recorded_autograd(package, case_id):
    """The reader on a state dict the package wrote, against the norms the package's
    autograd gave on it (recorded by make.py): every lag, ≤ 1e−10 in log10."""
    arrays, ref, meta = _committed(package)
    assert meta["package"] == package and meta["version"]
    spec = meta["cases"][case_id]
    module = lin.PACKAGES[package][0](arrays, spec["prefix"], **spec["kwargs"])
    assert module.cell.name == spec["cell"]
    x, s0, norms = _recorded(ref, case_id)
    assert set(s0) == set(module.cell.state) and x.shape[:2] == (T, B)
    got = gateflow_norms(module, x, s0)
    assert max_log10_gap(got, norms, "state") <= TOL
    assert max_log10_gap(got, norms, "input") <= TOL


@pytest.mark.parametrize("package", list(CASES))
def test_recorded_norms_come_from_the_package(package):
    """Where the package is installed: its module, loaded with the committed state dict,
    gives the recorded norms again (so they are the package's, not gateflow's)."""
    arrays, ref, meta = _committed(package)
    b = BUILDERS[package](arrays)
    for case in b.cases:
        x, s0, norms = _recorded(ref, case.id)
        # the inputs the package's layers give, from the committed weights
        np.testing.assert_allclose(case.x, x, rtol=0, atol=1e-13)
        case.x, case.s0 = x, s0
        again = package_norms(case, _context(b))
        for key, v in norms.items():
            np.testing.assert_allclose(again[key], v, rtol=0, atol=1e-12, err_msg=key)


# --------------------------------------------------------------------------------------
# Refusals: one line, naming the array
# --------------------------------------------------------------------------------------


def _refused(fn, *args, name: str, **kwargs) -> str:
    with pytest.raises(GateflowError) as exc:
        fn(*args, **kwargs)
    msg = str(exc.value)
    assert "\n" not in msg and name in msg, msg
    return msg


def test_refusals_name_the_array():
    arrays, _, _ = _committed("mambapy")
    bad = dict(arrays)
    bad["layers.0.mixer.x_proj.weight"] = bad["layers.0.mixer.x_proj.weight"][:-1]
    _refused(ssm.params_from_mambapy, bad, "layers.0.mixer", name="'layers.0.mixer.x_proj.weight'")
    bad = dict(arrays, **{"layers.1.mixer.dt_layernorm.weight": np.ones(2)})
    _refused(ssm.params_from_mambapy, bad, "layers.1.mixer.", name="dt_layernorm.weight")
    bad = dict(arrays)
    bad["layers.0.mixer.A_log"] = bad["layers.0.mixer.A_log"].copy()
    bad["layers.0.mixer.A_log"][0, 0] = np.nan
    assert "NaN" in _refused(ssm.params_from_mambapy, bad, "layers.0.mixer.", name="A_log")
    _refused(ssm.params_from_mambapy, arrays, "layers.7.mixer.", name="'layers.7.mixer.A_log'")

    arrays, _, _ = _committed("lru-pytorch")
    bad = dict(arrays, theta_log=arrays["theta_log"][:-1])
    _refused(ssm.params_from_lru_pytorch, bad, name="'theta_log'")
    bad = dict(arrays, nu_log=arrays["nu_log"].astype(np.complex128))
    assert "dtype" in _refused(ssm.params_from_lru_pytorch, bad, name="'nu_log'")

    arrays, _, _ = _committed("sru")
    bad = dict(arrays, **{"proj.layer_norm.weight": np.ones(6)})
    _refused(gated.params_from_sru, bad, "proj.", name="'proj.layer_norm.weight'")
    bad = dict(arrays, **{"proj.weight": arrays["proj.weight"][:, :-1]})
    _refused(gated.params_from_sru, bad, "proj.", name="'proj.weight'")
    _refused(gated.params_from_sru, arrays, "bi.", direction="reverse", name="direction")
    # 3 matrices with input size ≠ output size: no highway (has_skip_term=False)
    bad = dict(arrays, **{"sru.rnn_lst.1.weight": arrays["sru.rnn_lst.1.weight"][:3]})
    m = gated.params_from_sru(bad, "sru.rnn_lst.1.")
    assert not m.params["E"].any() and any("no highway" in a for a in m.assumed)
    _refused(gated.params_from_sru, bad, "sru.rnn_lst.1.", has_skip_term=True,
             name="'sru.rnn_lst.1.weight'")

    arrays, _, _ = _committed("xlstm")
    bad = dict(arrays, **{"cell._recurrent_kernel_": arrays["cell._recurrent_kernel_"][:, :5]})
    _refused(gated.params_from_xlstm, bad, "cell.", name="'cell._recurrent_kernel_'")
    bad = dict(arrays, **{"layer.zgate.weight": arrays["layer.zgate.weight"][:1]})
    _refused(gated.params_from_xlstm, bad, "layer.", name="'layer.zgate.weight'")

    arrays, _, _ = _committed("mingru-pytorch")
    bad = dict(arrays, **{"gru.to_hidden_and_gate.weight":
                          arrays["gru.to_hidden_and_gate.weight"][:-1]})
    _refused(gated.params_from_mingru_pytorch, bad, "gru.", name="'gru.to_hidden_and_gate.weight'")

    arrays, _, _ = _committed("recurrentgemma")
    bad = dict(arrays, **{"rg_lru.a_gate.w": arrays["rg_lru.a_gate.w"][:, :, :1]})
    _refused(ssm.params_from_recurrentgemma, bad, "rg_lru", name="'rg_lru.a_gate.w'")
    _refused(ssm.params_from_recurrentgemma, [1, 2], name="state dict")


def test_scan_keeps_the_good_modules_and_says_what_it_refused():
    mamba, _, _ = _committed("mambapy")
    sru, _, _ = _committed("sru")
    arrays = {**{f"m.{k}": v for k, v in mamba.items()}, **sru}
    arrays["m.layers.1.mixer.A_log"] = arrays["m.layers.1.mixer.A_log"][:, :2]  # N ≠ x_proj's
    arrays["m2.A_log"] = np.zeros(3)  # a Mamba-2 block
    arrays["m2.dt_bias"] = np.zeros(3)
    found = lin.scan(arrays)
    assert [m.module for m in found] == [  # in file order (safetensors sorts its keys)
        "m.layers.0.mixer", "bi", "proj", "sru.rnn_lst.0", "sru.rnn_lst.1"]
    assert len(found.skipped) == 2
    assert "'m.layers.1.mixer.x_proj.weight'" in found.skipped[0]
    assert "Mamba-2" in found.skipped[1]
    bi = found.modules[1]
    assert any("unidirectional" in a for a in bi.assumed)  # the state dict cannot tell


def test_assumed_lines_say_what_the_file_does_not():
    """The lines a user must read, per package: the cell's input, and each constant or
    convention the state dict does not record."""
    said = {}
    for package in CASES:
        arrays, _, meta = _committed(package)
        for case_id, spec in meta["cases"].items():
            m = lin.PACKAGES[package][0](arrays, spec["prefix"], **spec["kwargs"])
            cell, params, assumed = m  # it unpacks like the (cell, params, notes) triple
            assert (cell, assumed) == (m.cell, m.assumed) and params is m.params
            said[case_id] = " ".join(m.assumed) + " | " + m.input
    assert "SSM input" in said["mambapy:layers.0"] and "float32" in said["mambapy:layers.0"]
    assert "c = 8" in said["recurrentgemma"] and "segment_pos" in said["recurrentgemma"]
    assert "use_tanh=False" in said["sru:rnn_lst.1"]
    assert "has_skip_term=True" in said["sru:rnn_lst.1"]
    assert "fourth matrix" in said["sru:rnn_lst.0"]
    assert "fgate's output to the input gate" in said["xlstm:sLSTMLayer"]
    assert "conv" in said["xlstm:sLSTMLayer"] and "function 'slstm'" in said["xlstm:sLSTMCell"]
    assert "view_as_real" in said["lru-pytorch"] and "realified" in said["lru-pytorch"]
    assert "g(prev_hidden)" in said["mingru-pytorch:lstm"]

"""Bring your own model: PyTorch files with several modules, stacks, both directions,
``*Cell`` keys and nested checkpoints, read by ``find_models``/``load_model`` and by
``gateflow inspect``/``decay --module --layer --direction``, checked against autograd
through the PyTorch module itself, every block at every lag.

The reference restarts the module from the state at T − k, every layer's (and the chosen
direction's) state a separate leaf, and differentiates its final state: the state-space
Jacobian ∂s_T/∂s_{T−k}, each block with the other blocks held fixed.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from gateflow import GateflowError, all_lags, find_models, load_model
from tests._hostile import assert_clean_error, run_cli

torch = pytest.importorskip("torch")

T, B, N, D = 7, 2, 4, 3
RTOL = 1e-10


def _module(kind: str, **kw):
    torch.manual_seed(zlib.crc32(repr((kind, sorted(kw.items()))).encode()))
    m = getattr(torch.nn, kind)(D, N, **kw).double()
    with torch.no_grad():  # larger weights than the default init: nothing decays too fast
        for p in m.parameters():
            p.mul_(2.5)
    return m


def _reference(m, x, direction="forward", h0=None) -> dict[str, np.ndarray]:
    """block -> (T, B) Frobenius norms of ∂X_T/∂Y_{T−k} through the module ``m`` itself,
    run from h = ``h0`` (L·dirs, B, P) (zeros by default) and c = zeros."""
    lstm = isinstance(m, torch.nn.LSTM)
    L, dirs = m.num_layers, 2 if m.bidirectional else 1
    j = 0 if direction == "forward" else 1
    blocks = ("h", "c") if lstm else ("h",)

    def run(xs, h0, c0):
        _, out = m(xs, (h0, c0) if lstm else h0)
        return out if lstm else (out, None)

    P = getattr(m, "proj_size", 0) or N  # h's units (a projected LSTM's h has proj_size)
    zero_h = torch.zeros(L * dirs, B, P, dtype=torch.float64)
    zero_c = torch.zeros(L * dirs, B, N, dtype=torch.float64)
    if h0 is not None:
        zero_h = h0
    names = {(b, layer): f"{b}_l{layer}" if L > 1 else b for b in blocks for layer in range(L)}
    out_norms = {f"{names[a]}/{names[c]}": np.zeros((T, B)) for a in names for c in names}
    for k in range(1, T + 1):
        prefix, window = (x[:T - k], x[T - k:]) if direction == "forward" else (x[k:], x[:k])
        with torch.no_grad():
            h, c = run(prefix, zero_h, zero_c) if len(prefix) else (zero_h, zero_c)
        leaves = {key: (h if key[0] == "h" else c)[key[1] * dirs + j].clone().requires_grad_()
                  for key in names}

        def initial(b, full):
            rows = [leaves[(b, i // dirs)] if i % dirs == j else full[i] for i in range(L * dirs)]
            return torch.stack(rows)

        hn, cn = run(window, initial("h", h), initial("c", c) if lstm else None)
        for (a, la), out_name in names.items():
            out = (hn if a == "h" else cn)[la * dirs + j]
            for key, leaf in leaves.items():
                rows = [torch.autograd.grad(out[:, u].sum(), leaf, retain_graph=True,
                                            allow_unused=True)[0] for u in range(out.shape[1])]
                jac = np.stack([np.zeros(tuple(leaf.shape)) if r is None else r.numpy()
                                for r in rows], 1)
                out_norms[f"{out_name}/{names[key]}"][k - 1] = np.linalg.norm(jac, axis=(1, 2))
    return out_norms


def _assert_matches(res, ref):
    for block, want in ref.items():
        got = res.blocks[block]["log10_frobenius"] if block in res.blocks else None
        if not np.any(want):
            assert got is None or np.all(got == -np.inf), block  # structurally zero
            continue
        rel = np.abs(10.0 ** got - want) / want
        assert rel.max() < RTOL, (block, rel.max())


def _x():
    return torch.from_numpy(np.random.default_rng(3).standard_normal((T, B, D)))


@pytest.mark.parametrize("layers", [1, 2])
def test_projected_lstm_matches_autograd(layers, tmp_path):
    """nn.LSTM(proj_size=2): h = W_hr (o ⊙ tanh c) has 2 units, c has 4. Cell lstm-proj
    (and its stack), blocks of different sizes, every block at every lag; the input
    sensitivity of the stack too."""
    m = _module("LSTM", num_layers=layers, proj_size=2)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    (found,) = find_models(tmp_path / "m.pt")
    assert found.cell == "lstm-proj" and found.proj == 2 and found.hidden == N
    cell, params = load_model(tmp_path / "m.pt", layer="all" if layers > 1 else None)
    assert cell.name == ("lstm-proj-stack2" if layers > 1 else "lstm-proj")
    assert params["P_l0" if layers > 1 else "P"].shape == (2, N)
    x = _x()
    res = all_lags(cell, params, x.numpy(), norms=("frobenius",))
    assert res.meta["sizes"] == {"n": N, "p": 2}
    _assert_matches(res, _reference(m, x))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_projected_bidirectional_layer_matches_autograd(direction, tmp_path):
    m = _module("LSTM", bidirectional=True, proj_size=3)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    cell, params = load_model(tmp_path / "m.pt", direction=direction)
    x = _x()
    xs = x.numpy()[::-1] if direction == "reverse" else x.numpy()
    _assert_matches(all_lags(cell, params, xs, norms=("frobenius",)),
                    _reference(m, x, direction))


def test_projected_lstm_cli(tmp_path, monkeypatch):
    """inspect gives the decay command; decay runs it and its JSON says the sizes."""
    monkeypatch.chdir(tmp_path)
    torch.save(_module("LSTM", num_layers=2, proj_size=2).state_dict(), "m.pt")
    out = run_cli("inspect", "m.pt", "--json", "i.json")
    assert out.exit_code == 0, out.stderr
    (doc,) = json.loads(Path("i.json").read_text())["modules"]
    assert doc["cell"] == "lstm-proj" and doc["proj"] == 2
    assert doc["command"] == "gateflow decay --weights m.pt --layer all"
    out = run_cli(*doc["command"].split()[1:], "--steps", "6", "--batch", "2", "--json",
                  "d.json", "-q")
    assert out.exit_code == 0, out.stderr
    res = json.loads(Path("d.json").read_text())
    assert res["cell"] == "lstm-proj-stack2"
    assert len(res["blocks"]["h_l1/c_l0"]["log10_frobenius"]) == 6


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_whole_stack_matches_autograd(kind, tmp_path):
    m = _module(kind, num_layers=3)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    cell, params = load_model(tmp_path / "m.pt", layer="all", cell="rnn" if kind == "RNN" else None)
    assert cell.name == f"{'rnn' if kind == 'RNN' else kind.lower()}-stack3"
    x = _x()
    _assert_matches(all_lags(cell, params, x.numpy(), norms=("frobenius",)), _reference(m, x))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_each_direction_matches_autograd(kind, direction, tmp_path):
    m = _module(kind, bidirectional=True)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    cell, params = load_model(tmp_path / "m.pt", direction=direction)
    x = _x()
    xs = x.numpy()[::-1] if direction == "reverse" else x.numpy()  # reverse: time-reversed
    _assert_matches(all_lags(cell, params, xs, norms=("frobenius",)),
                    _reference(m, x, direction))


def test_layer_alone_on_its_real_inputs_matches_the_stack(tmp_path):
    m = _module("LSTM", num_layers=2)
    torch.save({"model_state_dict": m.state_dict(), "epoch": 2}, tmp_path / "m.pt")
    x = _x()
    ref = _reference(m, x)
    below = torch.nn.LSTM(D, N).double()  # the module's layer 0 alone
    below.load_state_dict({k: v for k, v in m.state_dict().items() if k.endswith("_l0")})
    with torch.no_grad():
        h0, _ = below(x)
    cell, params = load_model(tmp_path / "m.pt", layer=1)
    res = all_lags(cell, params, h0.numpy(), norms=("frobenius",))
    for b in ("h/h", "h/c", "c/h", "c/c"):
        out, inp = b.split("/")
        rel = np.abs(10.0 ** res.blocks[b]["log10_frobenius"] - ref[f"{out}_l1/{inp}_l1"])
        assert (rel / ref[f"{out}_l1/{inp}_l1"]).max() < RTOL


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_modules(kind, tmp_path):
    """nn.*Cell state_dicts (weight_ih, no _l0) against the cell stepped by hand."""
    torch.manual_seed(1)
    m = getattr(torch.nn, kind)(D, N).double()
    np.savez(tmp_path / "c.npz", **{f"dec.{k}": v.numpy() for k, v in m.state_dict().items()})
    (model,) = find_models(tmp_path / "c.npz")
    assert (model.module, model.kind, model.layers) == ("dec", f"nn.{kind}", 1)
    cell, params = load_model(tmp_path / "c.npz", cell="rnn" if kind == "RNNCell" else None)
    x = _x()
    lstm = kind == "LSTMCell"
    for k in range(1, T + 1):
        with torch.no_grad():
            s = (torch.zeros(B, N, dtype=torch.float64),) * (2 if lstm else 1)
            for t in range(T - k):
                s = m(x[t], s if lstm else s[0])
                s = s if lstm else (s,)
        leaves = [v.clone().requires_grad_() for v in s]
        out = leaves if lstm else leaves[0]
        for t in range(T - k, T):
            out = m(x[t], out)
        h = out[0] if lstm else out
        rows = [torch.autograd.grad(h[:, u].sum(), leaves[0], retain_graph=True)[0]
                for u in range(N)]
        want = np.linalg.norm(np.stack([r.numpy() for r in rows], 1), axis=(1, 2))
        got = 10.0 ** all_lags(cell, params, x.numpy(), blocks=("h/h",),
                               norms=("frobenius",)).blocks["h/h"]["log10_frobenius"][k - 1]
        assert np.max(np.abs(got - want) / want) < RTOL


def _two_modules(path):
    torch.manual_seed(0)

    class Seq2Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Module()
            self.encoder.rnn = torch.nn.LSTM(D, N, num_layers=2)
            self.decoder = torch.nn.GRUCell(N, N)
            self.head = torch.nn.Linear(N, 2)

    torch.save({"state_dict": Seq2Seq().state_dict(), "epoch": 1}, path)  # Lightning-style


def test_inspect_lists_every_module_and_its_command(tmp_path, sandbox):
    _two_modules("m.ckpt")
    out = run_cli("inspect", "m.ckpt", "--json", "m.json")
    assert out.exit_code == 0, out.stderr
    assert "encoder.rnn" in out.stdout and "nn.GRUCell" in out.stdout
    assert "gateflow decay --weights m.ckpt --module encoder.rnn --layer all" in out.stdout
    doc = json.loads(Path("m.json").read_text())
    assert doc["format"] == "gateflow-inspect"
    rows = {r["module"]: r for r in doc["modules"]}
    assert rows["encoder.rnn"] | {"command": None} == {
        "module": "encoder.rnn", "framework": "PyTorch", "kind": "nn.LSTM", "cell": "lstm",
        "cells": ["lstm"], "layers": 2, "directions": ["forward"], "hidden": N, "input": D,
        "proj": 0, "note": "", "layout": "unknown",
        "where": "state dict under key 'state_dict'", "assumed": [],
        "command": None}
    assert rows["decoder"]["command"] == "gateflow decay --weights m.ckpt --module decoder"


def test_decay_on_a_stack_and_a_cell_of_one_file(tmp_path, sandbox):
    _two_modules("m.ckpt")
    out = run_cli("decay", "-w", "m.ckpt", "--module", "encoder.rnn", "--layer", "all",
                  "--steps", 6, "--batch", 2, "--json", "s.json", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("s.json").read_text())
    assert doc["cell"] == "lstm-stack2" and "c_l1/c_l0" in doc["blocks"]
    assert "c_l0/c_l1" not in doc["blocks"]  # exactly zero, never computed
    assert doc["weights"]["module"] == "encoder.rnn" and doc["weights"]["layer"] == "all"
    out = run_cli("decay", "-w", "m.ckpt", "--module", "decoder", "--steps", 6, "--json",
                  "d.json", "-q")
    assert out.exit_code == 0, out.stderr
    assert list(json.loads(Path("d.json").read_text())["blocks"]) == ["h/h"]


def test_reverse_direction_batch_first_inputs_and_s0(tmp_path, sandbox):
    """decay --direction reverse --batch-first --s0 equals all_lags on the time-reversed,
    transposed inputs from that initial state."""
    m = _module("GRU", bidirectional=True)
    torch.save(m.state_dict(), "m.pt")
    xb = np.random.default_rng(0).standard_normal((B, T, D))  # batch-first
    np.save("x.npy", xb)
    s0 = np.random.default_rng(1).standard_normal((B, N))
    np.savez("s0.npz", h=s0)
    out = run_cli("decay", "-w", "m.pt", "--direction", "reverse", "--inputs", "x.npy",
                  "--batch-first", "--s0", "s0.npz", "--json", "r.json", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("r.json").read_text())
    assert doc["input_data"]["batch_first"] and doc["input_data"]["time_reversed"]
    cell, params = load_model("m.pt", direction="reverse")
    want = all_lags(cell, params, np.swapaxes(xb, 0, 1)[::-1], s0={"h": s0})
    np.testing.assert_allclose(doc["blocks"]["h/h"]["log10_frobenius"],
                               want.blocks["h/h"]["log10_frobenius"], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("args", "match"), [
    (["--module", "nope"], r"has no recurrent module 'nope'; it holds 'encoder.rnn', 'decoder'"),
    (["--module", "encoder.rnn"], r"has 2 layers; pick one with --layer 0..1, or --layer all"),
    (["--module", "encoder.rnn", "--layer", "2"], r"--layer 2 is out of range: .* 2 layer"),
    (["--module", "encoder.rnn", "--layer", "x"], r"--layer 'x' is out of range"),
    (["--module", "decoder", "--direction", "reverse"], r"has only the forward direction"),
    (["--module", "decoder", "--direction", "up"], r"unknown direction 'up' \(valid: forward, "
                                                   r"reverse\)"),
    (["--module", "decoder", "--cell", "lstm"], r"--cell lstm contradicts the file: .*is cell "
                                                r"'gru'"),
    ([], r"holds 2 recurrent modules \('encoder.rnn', 'decoder'\); pick one with --module"),
    (["--module", "decoder", "--s0", "s0.npz"], r"initial states are keyed by state block "
                                                r"\(h\); found 'c'"),
])
def test_bad_module_options_one_line(args, match, tmp_path, sandbox):
    from tests._hostile import assert_unchanged, snapshot

    _two_modules("m.ckpt")
    np.savez("s0.npz", c=np.zeros(N))
    before = snapshot(".")
    assert_clean_error(run_cli("decay", "-w", "m.ckpt", *args, "-q", "--json", "o.json"), match)
    assert_unchanged(before, snapshot("."))


@pytest.mark.parametrize(("options", "match", "param"), [
    ({"module": "encoder.rnn"}, r"module 'encoder\.rnn' has 2 layers; pick one with layer "
                                r"0\.\.1, or layer all for the whole stack$", "layer"),
    ({"module": "encoder.rnn", "layer": 5}, r"^layer 5 is out of range: .* 2 layer", "layer"),
    ({"module": "encoder.rnn", "layer": -1}, r"^layer -1 is out of range", "layer"),
    ({"module": "decoder", "cell": "lstm"}, r"^cell lstm contradicts the file: .*; drop cell or "
                                            r"give cell gru$", "cell"),
    ({}, r"pick one with module NAME$", "module"),
])
def test_api_errors_name_the_parameters_not_flags(options, match, param, tmp_path, sandbox):
    """The same refusals through gf.load_model name its parameters (layer=5 is "layer 5 is
    out of range"): no command-line flag reaches a Python caller, and ``param`` says which
    argument was wrong."""
    _two_modules("m.ckpt")
    with pytest.raises(GateflowError, match=match) as info:
        load_model("m.ckpt", **options)
    assert "--" not in str(info.value)
    assert info.value.param == param


def test_bidirectional_stack_all_is_refused_with_the_reason(tmp_path):
    m = _module("LSTM", num_layers=2, bidirectional=True)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    with pytest.raises(GateflowError, match="not one causal recurrence"):
        load_model(tmp_path / "m.pt", layer="all", direction="forward")
    cell, params = load_model(tmp_path / "m.pt", layer=1, direction="reverse")
    assert params["W_i"].shape == (N, 2 * N)  # layer 1 reads both directions of layer 0


def test_rnn_nonlinearity_must_be_given(tmp_path):
    torch.save(_module("RNN").state_dict(), tmp_path / "m.pt")
    with pytest.raises(GateflowError, match="nonlinearity .* give cell rnn or cell rnn-relu"):
        load_model(tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt", cell="rnn-relu")[0].name == "rnn-relu"
    with pytest.raises(GateflowError, match="contradicts the file: nn.RNN is one of the cells"):
        load_model(tmp_path / "m.pt", cell="lstm")


def test_gateflow_names_still_load_with_a_cell(tmp_path):
    from gateflow import init_params, save_params

    save_params(tmp_path / "w.safetensors", "mgu", init_params("mgu", N, D))
    cell, params = load_model(tmp_path / "w.safetensors", cell="mgu")
    assert cell.name == "mgu" and params["U_f"].shape == (N, N)
    with pytest.raises(GateflowError, match="holds no PyTorch, ONNX or Keras recurrent module"):
        load_model(tmp_path / "w.safetensors")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_cli_runs_the_layers_below_on_the_model_inputs(bidirectional, tmp_path, sandbox):
    """decay --layer 1 --inputs X: X is the model's input; layer 1 sees layer 0's outputs
    (both directions, concatenated), exactly as the module computes them."""
    m = _module("GRU", num_layers=2, bidirectional=bidirectional)
    torch.save(m.state_dict(), "m.pt")
    x = _x()
    np.save("x.npy", x.numpy())
    args = ["--direction", "forward"] if bidirectional else []
    out = run_cli("decay", "-w", "m.pt", "--layer", "1", *args, "--inputs", "x.npy",
                  "--json", "l1.json", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("l1.json").read_text())
    assert doc["input_data"]["layer_inputs"] == "h of layers 0..0, run on these inputs"
    one = torch.nn.GRU(D, N, bidirectional=bidirectional).double()  # the module's layer 0
    one.load_state_dict({k: v for k, v in m.state_dict().items() if "_l0" in k})
    with torch.no_grad():
        h0, _ = one(x)
    cell, params = load_model("m.pt", layer=1, direction="forward" if bidirectional else None)
    want = all_lags(cell, params, h0.numpy(), norms=("frobenius",))
    np.testing.assert_allclose(doc["blocks"]["h/h"]["log10_frobenius"],
                               want.blocks["h/h"]["log10_frobenius"], rtol=0, atol=1e-12)
    assert params["W_r"].shape == (N, h0.shape[2])


@pytest.mark.parametrize(("args", "match"), [
    (["--module", "foo"], r"holds one cell's parameters in gateflow's own names, not a model: "
                          r"--module do not apply"),
    (["--layer", "5", "--direction", "reverse"], r"not a model: --layer, --direction do not "
                                                 r"apply"),
])
def test_model_options_on_a_gateflow_params_file_are_refused(args, match, sandbox):
    from gateflow import init_params, save_params
    from tests._hostile import assert_unchanged, snapshot

    save_params("own.npz", "mgu", init_params("mgu", N, D))
    before = snapshot(".")
    for command in ("decay", "lyapunov"):
        assert_clean_error(run_cli(command, "-w", "own.npz", "--cell", "mgu", *args, "-q",
                                   "--json", "o.json"), match)
    assert_unchanged(before, snapshot("."))


def test_cell_pattern_without_cells_is_one_line(sandbox):
    assert_clean_error(run_cli("decay", "--weights", "w_{cell}.npz", "--steps", 3),
                       r"names one file per cell with \{cell\}; give the cells with --cell")


# -- foreign names: recognised from their suffixes and shapes, or renamed -------------------
def _keras_norms(kind: str, arrays: dict, x, reset_after: bool,
                 gate=torch.sigmoid) -> dict[str, np.ndarray]:
    """block -> (T, B) Frobenius norms of ∂X_T/∂Y_{T−k}, written from Keras's own equations
    (keras/src/layers/rnn/{lstm,gru}.py) over the Keras arrays, in float64 autograd, with
    ``gate`` as the recurrent_activation."""
    k, r = (torch.from_numpy(arrays[n]) for n in ("kernel", "recurrent_kernel"))
    b = torch.from_numpy(arrays["bias"])
    n = r.shape[0]

    def step(xt, h, c):
        if kind == "lstm":
            i, f, g, o = torch.split(xt @ k + h @ r + b, n, dim=-1)
            c = gate(f) * c + gate(i) * torch.tanh(g)
            return gate(o) * torch.tanh(c), c
        if reset_after:
            xz, xr, xh = torch.split(xt @ k + b[0], n, dim=-1)
            rz, rr, rh = torch.split(h @ r + b[1], n, dim=-1)
            z, rg = gate(xz + rz), gate(xr + rr)
            hh = torch.tanh(xh + rg * rh)
        else:
            xz, xr, xh = torch.split(xt @ k + b, n, dim=-1)
            z = gate(xz + h @ r[:, :n])
            rg = gate(xr + h @ r[:, n:2 * n])
            hh = torch.tanh(xh + (rg * h) @ r[:, 2 * n:])
        return z * h + (1 - z) * hh, c

    names = ("h", "c") if kind == "lstm" else ("h",)
    out = {f"{a}/{c}": np.zeros((T, B)) for a in names for c in names}
    for lag in range(1, T + 1):
        h = c = torch.zeros(B, n, dtype=torch.float64)
        with torch.no_grad():
            for t in range(T - lag):
                h, c = step(x[t], h, c)
        leaves = {"h": h.clone().requires_grad_(), "c": c.clone().requires_grad_()}
        s = (leaves["h"], leaves["c"])
        for t in range(T - lag, T):
            s = step(x[t], *s)
        for a, final in zip(names, s):
            for c_name in names:
                rows = [torch.autograd.grad(final[:, u].sum(), leaves[c_name], retain_graph=True,
                                            allow_unused=True)[0] for u in range(n)]
                jac = np.stack([np.zeros((B, n)) if g is None else g.numpy() for g in rows], 1)
                out[f"{a}/{c_name}"][lag - 1] = np.linalg.norm(jac, axis=(1, 2))
    return out


def test_foreign_pytorch_suffixes_read_as_shipped(tmp_path):
    """An .npz GRU under its own names (enc_w_ih, ...): exactly nn.GRU, found without help,
    what was inferred said; every lag equals autograd through the nn.GRU itself."""
    gru = _module("GRU")
    sd = {k: v.detach().numpy() for k, v in gru.state_dict().items()}
    np.savez(tmp_path / "g.npz", enc_w_ih=sd["weight_ih_l0"], enc_w_hh=sd["weight_hh_l0"],
             enc_b_ih=sd["bias_ih_l0"], enc_b_hh=sd["bias_hh_l0"], vocab=np.arange(5),
             emb_weight=np.zeros((5, D)))
    found = find_models(tmp_path / "g.npz")
    assert found.skipped == ()
    (model,) = found
    assert (model.module, model.kind, model.cell, model.layout) == ("enc", "nn.GRU", "gru",
                                                                     "unknown")
    assert model.assumed == ("arrays 'enc_w_ih', 'enc_w_hh', 'enc_b_ih', 'enc_b_hh' read as "
                             "PyTorch nn.GRU weights (gate order r, z, n) from their suffixes "
                             "and shapes; the activations are not in the file: PyTorch's "
                             "(sigmoid gates, tanh) assumed; give cell FAMILY[...] for "
                             "others",)  # the Python caller's word; --cell on the command line
    cell, params = load_model(tmp_path / "g.npz")
    x = _x()
    _assert_matches(all_lags(cell, params, x.numpy(), norms=("frobenius",)), _reference(gru, x))


@pytest.mark.parametrize(("kind", "gates", "bias_shape", "cell"), [
    ("lstm", 4, (4 * N,), "lstm"), ("gru", 3, (2, 3 * N), "gru"), ("gru", 3, (3 * N,), "gru-cho"),
])
def test_foreign_keras_variables_read_as_shipped(kind, gates, bias_shape, cell, tmp_path):
    """TensorFlow-style names (lstm/lstm_cell/kernel:0 ...) in Keras's layout: the kind from
    the shapes, a GRU's reset_after from its bias; every block at every lag equals Keras's
    own equations in float64 autograd."""
    rng = np.random.default_rng(zlib.crc32(repr(bias_shape).encode()))
    arrays = {"kernel": rng.normal(0, 0.8, (D, gates * N)),
              "recurrent_kernel": rng.normal(0, 0.8, (N, gates * N)),
              "bias": rng.normal(0, 0.5, bias_shape)}
    np.savez(tmp_path / "k.npz", **{f"rnn/{kind}_cell/{k}:0": v for k, v in arrays.items()},
             **{"dense/kernel:0": np.zeros((N, 2)), "dense/bias:0": np.zeros(2)})
    (model,) = find_models(tmp_path / "k.npz")
    assert (model.module, model.framework, model.cell) == (f"rnn/{kind}_cell", "Keras", cell)
    (said,) = model.assumed
    assert said.startswith(f"arrays 'rnn/{kind}_cell/kernel:0', 'rnn/{kind}_cell/"
                           "recurrent_kernel:0', 'rnn/")
    assert "sigmoid gates and tanh assumed" in said
    if kind == "gru":
        assert f"reset_after={cell == 'gru'} from the bias shape" in said
    got_cell, params = load_model(tmp_path / "k.npz")
    assert got_cell.name == cell
    x = _x()
    _assert_matches(all_lags(got_cell, params, x.numpy(), norms=("frobenius",)),
                    _keras_norms(kind, arrays, x, reset_after=cell == "gru"))
    # the file records no activations: Keras 2's hard_sigmoid gates, given with cell=
    assert f"give cell '{cell}[gate=hard_sigmoid(0.2,0.5)]' for those" in said
    variant, params = load_model(tmp_path / "k.npz", cell=f"{cell}[gate=hard_sigmoid(0.2,0.5)]")
    _assert_matches(all_lags(variant, params, x.numpy(), norms=("frobenius",)),
                    _keras_norms(kind, arrays, x, reset_after=cell == "gru",
                                 gate=lambda v: torch.clamp(0.2 * v + 0.5, 0.0, 1.0)))


def test_unmatched_arrays_are_skipped_and_rename_reads_them(tmp_path, sandbox):
    """Arrays no vocabulary knows: skipped, named, exit 2 (never "no module"); --map (exact
    or a pattern) and rename= read them; inspect's command carries the --map words and
    runs as printed."""
    lstm = _module("LSTM")
    sd = {k: v.detach().numpy() for k, v in lstm.state_dict().items()}
    own = {"Wx": "weight_ih_l0", "Wh": "weight_hh_l0", "bx": "bias_ih_l0", "bh": "bias_hh_l0"}
    np.savez("m.npz", **{f"p {k}": sd[v] for k, v in own.items()})
    found = find_models("m.npz")
    assert found.modules == () and found.skipped == (
        "4 array(s) ('p Wx', 'p Wh', 'p bx', 'p bh') match no recurrent module's names "
        "(PyTorch's weight_ih_l0, …, Keras's kernel, …, or gateflow's W_f, …); name them "
        "with rename OLD=NEW",)  # the Python caller's word for it; the command line's:
    assert_clean_error(run_cli("decay", "-w", "m.npz", "-q"),
                       r"found no recurrent module gateflow can read; skipped 4 array\(s\) "
                       r".*; name them with --map OLD=NEW$")
    rename = {f"p {k}": v for k, v in own.items()}
    cell, params = load_model("m.npz", rename=rename)
    x = _x()
    _assert_matches(all_lags(cell, params, x.numpy(), norms=("frobenius",)),
                    _reference(lstm, x))
    np.savez("v.npz", **{f"enc.{k}.value": v for k, v in sd.items()})
    (model,) = find_models("v.npz", rename={"*.value": "*"})
    assert (model.module, model.kind) == ("enc", "nn.LSTM")
    maps = [a for k, v in rename.items() for a in ("--map", f"{k}={v}")]
    out = run_cli("inspect", "m.npz", *maps, "--json", "i.json")
    assert out.exit_code == 0, out.stderr
    (row,) = json.loads(Path("i.json").read_text())["modules"]
    command = row["command"]
    assert command.startswith("gateflow decay --weights m.npz --map 'p Wx=weight_ih_l0' ")
    import shlex

    res = run_cli(*shlex.split(command)[1:], "--steps", 5, "--batch", 2, "--json", "d.json",
                  "-q")
    assert res.exit_code == 0, res.stderr
    assert json.loads(Path("d.json").read_text())["cell"] == "lstm"
    res = run_cli("lyapunov", "-w", "m.npz", *maps, "--steps", 5, "--batch", 1, "-q",
                  "--json", "l.json")
    assert res.exit_code == 0, res.stderr


@pytest.mark.parametrize(("rename", "match"), [
    ({"nope": "weight_ih_l0"}, r"rename 'nope' matches no array of 'm.npz'; its arrays are "
                               r"'a', 'b'"),
    ({"a": "x", "b": "x"}, r"gives arrays 'a' and 'b' of 'm.npz' the same name 'x'"),
    ({"a": "b"}, r"gives arrays 'a' and 'b' of 'm.npz' the same name 'b'"),
    ({"a*": "**"}, r"a pattern has one \* on each side"),
    ({"a*": "x"}, r"a pattern has one \* on each side"),
    ({"a": ""}, r"both names must be non-empty \(to drop a prefix, map 'enc_\*' to '\*'\)"),
    (["a=b"], r"rename must be a mapping of old to new array names, got list"),
])
def test_bad_rename_is_one_line(rename, match, sandbox):
    np.savez("m.npz", a=np.zeros((4, 3)), b=np.zeros((4, 4)))
    with pytest.raises(GateflowError, match=match):
        find_models("m.npz", rename=rename)


@pytest.mark.parametrize(("args", "match"), [
    (["--map", "ab"], r"--map 'ab' is not OLD=NEW; e\.g\. --map enc_w_ih=weight_ih_l0"),
    (["--map", "a=x", "--map", "a=y"], r"--map gives 'a' twice \('x' and 'y'\)"),
    (["--map", "zz=x"], r"rename 'zz' matches no array"),
])
def test_bad_map_options_one_line(args, match, sandbox):
    np.savez("m.npz", a=np.zeros((4, 3)), b=np.zeros((4, 4)))
    for command in (("inspect", "m.npz"), ("decay", "-w", "m.npz", "-q")):
        assert_clean_error(run_cli(*command, *args), match)
    assert_clean_error(run_cli("decay", "--cell", "lstm", "--map", "a=b", "-q"),
                       r"--map renames the arrays of a model file; give it with --weights")


def test_foreign_suffixes_that_fit_nothing_are_skipped_with_the_reason(sandbox):
    np.savez("m.npz", enc_w_ih=np.zeros((12, 3)), enc_w_hh=np.zeros((10, 5)),
             dec_w_ih=np.zeros((12, 3)), dec_weight_ih=np.zeros((12, 3)),
             dec_w_hh=np.zeros((12, 4)))
    found = find_models("m.npz")
    assert found.modules == ()
    assert found.skipped == (
        "arrays 'enc_w_ih', 'enc_w_hh' end like PyTorch recurrent weights but fit no "
        "nn.RNN/LSTM/GRU (module 'enc': weight_hh_l0 is 10x5, not G*n x n for G = 1, 3 or 4 "
        "gates (nn.RNN, GRU, LSTM)); name them with rename OLD=NEW",
        "arrays 'dec_w_ih', 'dec_weight_ih', 'dec_w_hh' end like PyTorch recurrent weights but "
        "name one weight twice (w_ih and weight_ih); name them with rename OLD=NEW")


def test_narrow_npz_weights_are_said(tmp_path):
    gru = _module("GRU")
    np.savez(tmp_path / "h.npz", **{k: v.detach().numpy().astype(np.float16)
                                    for k, v in gru.state_dict().items()})
    (model,) = find_models(tmp_path / "h.npz")
    assert model.assumed == ("the state dict: float16 (11 significant bits) weights in the "
                             "file, analysed exactly as stored, in float64 arithmetic (the "
                             "model itself computes in lower precision)",)


@pytest.mark.parametrize("name", ["weights", "m.sdict", "model.bin"])
def test_a_file_whose_extension_gateflow_does_not_know_is_read_by_its_content(name, tmp_path,
                                                                              sandbox):
    """Shipped files are often named ``weights`` or ``*.sdict``: a torch.save archive is
    read by its content, the same numbers as under ``.pt``, and every module says so."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.GRU(3, 4)
    torch.save({"model": m.state_dict(), "step": 7}, name)
    torch.save({"model": m.state_dict(), "step": 7}, "same.pt")
    (found,) = find_models(name)
    assert found.assumed[0].startswith(f"{name!r} read as a torch.save file by its content (")
    cell, params = load_model(name)
    _, same = load_model("same.pt")
    assert cell.name == "gru" and all(np.array_equal(params[k], same[k]) for k in same)
    out = run_cli("decay", "-w", name, "--steps", 4, "--batch", 2, "-q", "--json", "d.json")
    assert out.exit_code == 0, out.stderr
    assert f"note: {name!r} read as a torch.save file by its content" in out.stderr
    # a file that is no format gateflow reads is still refused by its extension
    Path("notes.txt").write_text("hello\n")
    assert_clean_error(run_cli("inspect", "notes.txt"), r"unknown extension '\.txt'")


def test_s0_without_c_starts_c_at_zeros_and_says_so(sandbox):
    """``--s0`` with ``h`` only for an LSTM: c starts at zeros, as all_lags starts a block
    s0 leaves out; one note line says it and the record names the blocks. The numbers are
    autograd's through the module from (h0, zeros), not those from zeros."""
    m = _module("LSTM")
    torch.save(m.state_dict(), "m.pt")
    x = _x()
    np.save("x.npy", x.numpy())
    h0 = np.array([0.9, -0.7, 0.5, 0.8])
    np.savez("s0.npz", h=h0)
    for job, out_file in (("decay", "d.json"), ("lyapunov", "l.json")):
        out = run_cli(job, "-w", "m.pt", "-x", "x.npy", "--s0", "s0.npz", "--json", out_file,
                      "-q", *(("--norms", "frobenius") if job == "decay" else ()))
        assert out.exit_code == 0, out.stderr
        assert [line for line in out.stderr.splitlines() if "s0" in line] == [
            "note: s0.npz gives h only: c starts at zeros"]
        s0 = json.loads(Path(out_file).read_text())["input_data"]["s0"]
        assert (s0["source"], s0["blocks"], s0["zeros"]) == ("s0", ["h"], ["c"])
    doc = json.loads(Path("d.json").read_text())
    start = torch.from_numpy(np.broadcast_to(h0, (1, B, N)).copy())
    want = _reference(m, x, h0=start)
    from_zeros = _reference(m, x)
    apart = 0.0
    for block, ref in want.items():
        got = 10.0 ** np.array(doc["blocks"][block]["log10_frobenius"], dtype=float)
        assert np.max(np.abs(got - ref) / ref) < RTOL, block
        apart = max(apart, float(np.max(np.abs(from_zeros[block] - ref) / ref)))
    assert apart > 1e-3  # h0 matters: a run that ignored it would fail
    np.savez("s0.npz", h=h0, c=np.zeros(N))  # both blocks: nothing to say
    out = run_cli("decay", "-w", "m.pt", "-x", "x.npy", "--s0", "s0.npz", "-q")
    assert out.exit_code == 0 and "s0.npz" not in out.stderr, out.stderr

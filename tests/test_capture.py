"""``gateflow.capture`` and ``gateflow.analyze`` against PyTorch itself.

Small float64 models with random non-zero initial states. What capture records is checked
against what the modules computed (their outputs and final states, a one-layer module run
on the layer below, gateflow's own forward pass), and every Jacobian norm gateflow measures
on the captured data, at every lag and for every block, against torch autograd on the
module's own computation: the state at T − k is detached and made a leaf, the module (or
an ``nn.*Cell`` with that layer's weights) steps it on to T, and
``torch.autograd.functional.jacobian`` gives ∂s_T/∂s_{T−k}; for a stack every layer's state
at T − k is a leaf, so the block ``X_l1/Y_l0`` is the partial with the other blocks fixed.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gateflow as gf  # noqa: E402
from gateflow import GateflowError  # noqa: E402

T, N, D, B = 7, 4, 3, 2
STEPS = 5  # decoder steps
#: Relative error of ‖∂X_T/∂Y_{T−k}‖_F allowed against autograd (worst measured: 1.6e-15,
#: torch 2.13 CPU, every case below).
RTOL = 1e-10


def f64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


# -- reference Jacobians ------------------------------------------------------------------
def jacobian_norms(fn, leaves: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``"X/Y"`` -> (B,) Frobenius norms of ∂out[X]/∂leaves[Y], one per batch element, where
    ``fn(leaves)`` maps (B, n) states to (B, n) states. Cross-batch blocks must be zero."""
    names = list(leaves)

    def f(*xs):
        out = fn(dict(zip(names, xs)))
        return tuple(out[s] for s in names)

    J = torch.autograd.functional.jacobian(f, tuple(v.detach().clone() for v in leaves.values()))
    out = {}
    for i, X in enumerate(names):
        for j, Y in enumerate(names):
            J_xy = J[i][j]  # (B, n, B, n)
            nb = J_xy.shape[0]
            diag = torch.stack([J_xy[b, :, b, :] for b in range(nb)])
            off = J_xy.clone()
            for b in range(nb):
                off[b, :, b, :] = 0
            assert torch.count_nonzero(off) == 0
            out[f"{X}/{Y}"] = torch.linalg.matrix_norm(diag).numpy()
    return out


def compare(log10_blocks: dict, reference: dict[int, dict[str, np.ndarray]]) -> float:
    """Worst relative error of gateflow's norms (``blocks[b]["log10_frobenius"]``, (T, B))
    against ``reference[k][b]`` ((B,) norms at lag k); blocks gateflow leaves out (they
    cannot be nonzero) must be exactly zero in the reference."""
    worst = 0.0
    for k, ref in reference.items():
        for b, r in ref.items():
            if b not in log10_blocks:
                assert np.all(r == 0), (k, b, r)
                continue
            got = 10.0 ** log10_blocks[b]["log10_frobenius"][k - 1]
            zero = r == 0  # a relu RNN's dead units: exactly zero on both sides
            assert np.all(got[zero] == 0), (k, b, got, r)
            err = np.abs(got[~zero] - r[~zero]) / r[~zero]
            assert np.all(err <= RTOL), (k, b, got, r)
            worst = max(worst, float(err.max(initial=0.0)))
    return worst


def cell_for(kind: str, params_torch: dict, d: int, nonlinearity="tanh"):
    """A float64 ``nn.<kind>Cell`` holding one layer/direction's weights."""
    extra = {"nonlinearity": nonlinearity} if kind == "RNN" else {}
    c = getattr(torch.nn, f"{kind}Cell")(d, N, dtype=torch.float64, **extra)
    c.load_state_dict(params_torch)
    return c


def stepper(kind: str, cell):
    def step(s: dict, x_t) -> dict:
        if kind == "LSTM":
            h, c = cell(x_t, (s["h"], s["c"]))
            return {"h": h, "c": c}
        return {"h": cell(x_t, s["h"])}
    return step


def cell_reference(kind: str, cell, x: torch.Tensor, s0: dict) -> dict[int, dict]:
    """Autograd norms for every lag of a one-layer recurrence stepped by ``cell`` over x."""
    step = stepper(kind, cell)
    traj = [s0]
    with torch.no_grad():
        for t in range(x.shape[0]):
            traj.append(step(traj[-1], x[t]))
    Tx = x.shape[0]

    def run_from(k):
        def fn(s):
            for t in range(Tx - k, Tx):
                s = step(s, x[t])
            return s
        return fn

    return {k: jacobian_norms(run_from(k), traj[Tx - k]) for k in range(1, Tx + 1)}, traj


def layer_weights(module, layer: int, direction: str = "forward") -> dict:
    """One layer and direction's weights, named as an nn.*Cell's (``weight_ih`` ...)."""
    tail = f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
    return {k: getattr(module, f"{k}{tail}").detach() for k in
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def one_layer(kind: str, module, layer: int, d: int, bidirectional: bool = False):
    """A float64 one-layer nn.<kind> with ``module``'s layer ``layer``."""
    one = getattr(torch.nn, kind)(d, N, bidirectional=bidirectional, dtype=torch.float64)
    tails = ("", "_reverse") if bidirectional else ("",)
    one.load_state_dict({f"{k}_l0{tail}": v for tail in tails for k, v in layer_weights(
        module, layer, "reverse" if tail else "forward").items()})
    return one


def check_layer(cap, layer, direction, kind, module_weights, nonlinearity="tanh") -> float:
    """gateflow on the captured layer against autograd through an nn.*Cell with that
    layer's weights, on the same captured inputs and initial state."""
    cell, params, x, s0 = cap.selection(layer, direction)
    res = gf.all_lags(cell, params, x, s0=s0, norms=("frobenius",))
    c = cell_for(kind, module_weights, x.shape[-1], nonlinearity)
    ref, _ = cell_reference(kind, c, f64(x), {s: f64(v) for s, v in s0.items()})
    return compare(res.blocks, ref)


# -- (a) an encoder-decoder: a 2-layer LSTM encoder and a GRUCell decoder -----------------
class EncoderDecoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.rnn = torch.nn.LSTM(D, N, num_layers=2, batch_first=True)
        self.decoder = torch.nn.GRUCell(D, N)
        self.head = torch.nn.Linear(N, D)

    def forward(self, x, hx):
        out, (h, c) = self.encoder.rnn(x, hx)
        self.seen = (out, h, c)
        h_dec = h[-1]
        y = x[:, -1]
        steps = []
        for _ in range(STEPS):
            h_dec = self.decoder(y, h_dec)
            y = self.head(h_dec)
            steps.append((y, h_dec))
        self.steps = steps
        return torch.stack([s[0] for s in steps], 1)


@pytest.fixture(scope="module")
def encdec():
    torch.manual_seed(1)
    model = EncoderDecoder().double().eval()
    x = torch.randn(B, T, D, dtype=torch.float64)  # batch_first
    hx = (0.5 * torch.randn(2, B, N, dtype=torch.float64),
          0.5 * torch.randn(2, B, N, dtype=torch.float64))
    caps = gf.capture(model, x, hx=hx)
    return model, x, hx, caps


def test_capture_finds_both_modules_by_name(encdec):
    model, x, hx, caps = encdec
    assert [c.module for c in caps] == ["encoder.rnn", "decoder"]
    enc, dec = caps
    assert (enc.kind, enc.cell, enc.layers, enc.directions, enc.hidden, enc.input) == (
        "nn.LSTM", "lstm", 2, ("forward",), N, D)
    assert (dec.kind, dec.cell, dec.layers, dec.calls, dec.carried, dec.note) == (
        "nn.GRUCell", "gru", 1, STEPS, True, "")
    assert (enc.T, enc.B, dec.T, dec.B) == (T, B, STEPS, B)
    assert set(enc.params) == {(0, "forward"), (1, "forward")}
    assert enc.keys() == [(0, "forward"), (1, "forward"), ("all", "forward")]
    for m in model.modules():  # every hook is gone
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_capture_names_match_the_state_dict_route(encdec, tmp_path):
    model, x, hx, caps = encdec
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    assert {m.module for m in gf.find_models(path)} == {c.module for c in caps}
    for cap in caps:
        for layer in range(cap.layers):
            _, params = gf.load_model(path, module=cap.module, layer=layer)
            for p, v in params.items():
                np.testing.assert_array_equal(cap.params[(layer, "forward")][p], v)
    cell, params = gf.load_model(path, module="encoder.rnn", layer="all")
    cell2, params2, _, _ = caps[0].selection("all")
    assert cell.name == cell2.name == "lstm-stack2"
    for p in params:
        np.testing.assert_array_equal(params[p], params2[p])


def test_captured_inputs_are_what_the_modules_saw(encdec):
    model, x, hx, caps = encdec
    enc, dec = caps
    out, h_n, c_n = model.seen
    # layer 0: the module's input, time-major; s0: the hx given, layer by layer
    np.testing.assert_array_equal(enc.inputs[(0, "forward")], x.transpose(0, 1).numpy())
    for layer in range(2):
        np.testing.assert_array_equal(enc.s0[(layer, "forward")]["h"], hx[0][layer].numpy())
        np.testing.assert_array_equal(enc.s0[(layer, "forward")]["c"], hx[1][layer].numpy())
    # layer 1's input is layer 0's output: a one-layer LSTM with layer 0's weights ...
    one = one_layer("LSTM", model.encoder.rnn, 0, D)
    with torch.no_grad():
        y0, _ = one(x.transpose(0, 1), (hx[0][:1], hx[1][:1]))
    np.testing.assert_allclose(enc.inputs[(1, "forward")], y0.numpy(), rtol=0, atol=1e-14)
    # ... and gateflow's own forward pass of layer 0
    cell, params, x0, s0 = enc.selection(0)
    states = gf.all_lags(cell, params, x0, s0=s0, norms=("frobenius",), blocks=("c/c",),
                         keep_states=True).states
    np.testing.assert_allclose(enc.inputs[(1, "forward")], states["h"][1:], rtol=0, atol=1e-14)
    # every layer, stepped from its captured s0 over its captured inputs, ends where the
    # module ended; the top layer's steps are the module's output
    for layer in range(2):
        c = cell_for("LSTM", layer_weights(model.encoder.rnn, layer), D if layer == 0 else N)
        traj = forward_states(c, enc, layer)
        np.testing.assert_allclose(traj[-1]["h"], h_n[layer].numpy(), rtol=0, atol=1e-14)
        np.testing.assert_allclose(traj[-1]["c"], c_n[layer].numpy(), rtol=0, atol=1e-14)
        if layer == 1:
            np.testing.assert_allclose(np.stack([s["h"] for s in traj[1:]]),
                                       out.transpose(0, 1).numpy(), rtol=0, atol=1e-14)
    # the decoder: its inputs call by call, s0 the encoder's top h, its states its outputs
    ys = [x[:, -1]] + [s[0] for s in model.steps[:-1]]
    np.testing.assert_array_equal(dec.inputs[(0, "forward")], torch.stack(ys).numpy())
    np.testing.assert_array_equal(dec.s0[(0, "forward")]["h"], h_n[-1].numpy())
    cell, params, xd, s0 = dec.selection()
    states = gf.all_lags(cell, params, xd, s0=s0, blocks=("h/h",), norms=("frobenius",),
                         keep_states=True).states
    np.testing.assert_allclose(states["h"][1:], torch.stack([s[1] for s in model.steps]).numpy(),
                               rtol=0, atol=1e-14)


def forward_states(cell, cap, layer) -> list[dict]:
    """s_0 .. s_T of an LSTMCell stepped over a captured layer's inputs from its s0."""
    x = f64(cap.inputs[(layer, "forward")])
    s = {k: f64(v) for k, v in cap.s0[(layer, "forward")].items()}
    traj = [{k: v.numpy() for k, v in s.items()}]
    step = stepper("LSTM", cell)
    with torch.no_grad():
        for t in range(x.shape[0]):
            s = step(s, x[t])
            traj.append({k: v.numpy() for k, v in s.items()})
    return traj


@pytest.mark.parametrize("layer", [0, 1])
def test_encoder_layer_jacobians_match_autograd(encdec, layer):
    model, x, hx, caps = encdec
    worst = check_layer(caps[0], layer, "forward", "LSTM", layer_weights(model.encoder.rnn,
                                                                          layer))
    print(f"encoder layer {layer}: worst relative error {worst:.2e}")


def test_encoder_stack_jacobians_match_autograd_through_the_module(encdec):
    """layer="all": blocks h_l1/h_l0, c_l1/c_l0, ... against autograd through the nn.LSTM
    itself, restarted at T − k from every layer's (h, c) as leaves."""
    model, x, hx, caps = encdec
    lstm = model.encoder.rnn
    cell, params, xs, s0 = caps[0].selection("all")
    res = gf.all_lags(cell, params, xs, s0=s0, norms=("frobenius",))
    assert "h_l1/h_l0" in res.blocks and "h_l0/h_l1" not in res.blocks
    ref = {}
    for k in range(1, T + 1):
        with torch.no_grad():
            if k == T:
                h, c = hx
            else:
                _, (h, c) = lstm(x[:, :T - k], hx)
        leaves = {f"{s}_l{layer}": v[layer] for layer in range(2)
                  for s, v in (("h", h), ("c", c))}

        def fn(s, k=k):
            hk = torch.stack([s["h_l0"], s["h_l1"]])
            ck = torch.stack([s["c_l0"], s["c_l1"]])
            _, (h2, c2) = lstm(x[:, T - k:], (hk, ck))
            return {"h_l0": h2[0], "c_l0": c2[0], "h_l1": h2[1], "c_l1": c2[1]}

        ref[k] = jacobian_norms(fn, leaves)
    worst = compare(res.blocks, ref)
    print(f"encoder layer all: worst relative error {worst:.2e}")


def test_decoder_cell_sequence_jacobians_match_autograd(encdec):
    model, x, hx, caps = encdec
    dec = caps[1]
    cell, params, xd, s0 = dec.selection()
    res = gf.all_lags(cell, params, xd, s0=s0, norms=("frobenius",))
    ref, _ = cell_reference("GRU", model.decoder, f64(xd), {"h": f64(s0["h"])})
    worst = compare(res.blocks, ref)
    print(f"decoder GRUCell: worst relative error {worst:.2e}")


# -- (b) a bidirectional 2-layer GRU --------------------------------------------------------
@pytest.fixture(scope="module")
def bigru():
    torch.manual_seed(2)
    gru = torch.nn.GRU(D, N, num_layers=2, bidirectional=True).double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    h0 = 0.5 * torch.randn(4, B, N, dtype=torch.float64)
    with torch.no_grad():
        out, h_n = gru(x, h0)
    (cap,) = gf.capture(gru, x, h0)
    return gru, x, h0, out, h_n, cap


def test_bidirectional_inputs_are_what_each_layer_saw(bigru):
    gru, x, h0, out, h_n, cap = bigru
    assert (cap.module, cap.kind, cap.directions) == ("", "nn.GRU", ("forward", "reverse"))
    assert cap.keys() == [(0, "forward"), (0, "reverse"), (1, "forward"), (1, "reverse")]
    one = one_layer("GRU", gru, 0, D, bidirectional=True)
    with torch.no_grad():
        y0, _ = one(x, h0[:2])
    np.testing.assert_array_equal(cap.inputs[(0, "forward")], x.numpy())
    np.testing.assert_array_equal(cap.inputs[(0, "reverse")], x.numpy()[::-1])
    np.testing.assert_allclose(cap.inputs[(1, "forward")], y0.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(cap.inputs[(1, "reverse")], y0.numpy()[::-1], rtol=0, atol=1e-14)
    for layer in range(2):
        for j, direction in enumerate(("forward", "reverse")):
            cell, params, xs, s0 = cap.selection(layer, direction)
            np.testing.assert_array_equal(s0["h"], h0[2 * layer + j].numpy())
            h = gf.all_lags(cell, params, xs, s0=s0, blocks=("h/h",), norms=("frobenius",),
                            keep_states=True).states["h"]
            np.testing.assert_allclose(h[-1], h_n[2 * layer + j].numpy(), rtol=0, atol=1e-14)
            if layer == 1:  # the top layer's per-step states are the module's output
                top = out[..., j * N:(j + 1) * N].numpy()
                np.testing.assert_allclose(h[1:], top if j == 0 else top[::-1], rtol=0,
                                           atol=1e-14)
    with pytest.raises(GateflowError, match="bidirectional stack"):
        cap.selection("all", "forward")
    with pytest.raises(GateflowError, match="bidirectional"):
        cap.selection(0)


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_bidirectional_jacobians_match_autograd(bigru, layer, direction):
    gru, x, h0, out, h_n, cap = bigru
    worst = check_layer(cap, layer, direction, "GRU", layer_weights(gru, layer, direction))
    print(f"bi-GRU layer {layer} {direction}: worst relative error {worst:.2e}")


def test_reverse_direction_through_the_module_itself(bigru):
    """Layer 0, reverse: autograd through the nn.GRU itself (run on x[k:], then x[:k]
    from the reverse state as a leaf) agrees with gateflow on the time-reversed inputs."""
    gru, x, h0, out, h_n, cap = bigru
    layer0 = one_layer("GRU", gru, 0, D, bidirectional=True)
    cell, params, xs, s0 = cap.selection(0, "reverse")
    res = gf.all_lags(cell, params, xs, s0=s0, norms=("frobenius",))
    ref = {}
    for k in range(1, T + 1):
        # gateflow's lag k on x[::-1] starts from the reverse state after T − k steps, the
        # ones over x[T-1] .. x[k] (running the module on x[k:]), and steps it over
        # x[k-1] .. x[0] (running the module on x[:k] from that state)
        with torch.no_grad():
            _, h = layer0(x[k:], h0[:2]) if k < T else (None, h0[:2])

        def fn(s, k=k, h=h):
            _, h2 = layer0(x[:k], torch.stack([h[0], s["h"]]))
            return {"h": h2[1]}

        ref[k] = jacobian_norms(fn, {"h": h[1]})
    worst = compare(res.blocks, ref)
    print(f"bi-GRU layer 0 reverse via the module: worst relative error {worst:.2e}")


# -- (c) nn.RNN's nonlinearity comes from the module ------------------------------------------
@pytest.mark.parametrize("nonlinearity, cell", [("relu", "rnn-relu"), ("tanh", "rnn")])
def test_rnn_cell_from_its_nonlinearity(nonlinearity, cell):
    torch.manual_seed(3)
    rnn = torch.nn.RNN(D, N, nonlinearity=nonlinearity, batch_first=True).double()
    with torch.no_grad():
        rnn.bias_ih_l0.add_(0.3)  # keep most relu units alive, so that few norms are zero
    x = torch.randn(B, T, D, dtype=torch.float64)
    h0 = 0.5 * torch.randn(1, B, N, dtype=torch.float64)
    (cap,) = gf.capture(rnn, x, h0)
    assert cap.cell == cell and cap.kind == "nn.RNN"
    worst = check_layer(cap, 0, "forward", "RNN", layer_weights(rnn, 0), nonlinearity)
    print(f"nn.RNN {nonlinearity}: worst relative error {worst:.2e}")


# -- calls, shapes and states --------------------------------------------------------------
def test_unbatched_input_and_repeated_calls():
    torch.manual_seed(4)
    lstm = torch.nn.LSTM(D, N).double()
    x = torch.randn(T, D, dtype=torch.float64)  # unbatched: B = 1

    class Twice(torch.nn.Module):
        def __init__(self, carry):
            super().__init__()
            self.lstm, self.carry = lstm, carry

        def forward(self, x):
            _, state = self.lstm(x[:3])
            return self.lstm(x[3:], state if self.carry else None)

    (once,) = gf.capture(lstm, x)
    assert (once.T, once.B, once.calls) == (T, 1, 1)
    (carried,) = gf.capture(Twice(True), x)
    assert (carried.calls, carried.carried, carried.note) == (2, True, "")
    np.testing.assert_array_equal(carried.inputs[(0, "forward")], once.inputs[(0, "forward")])
    (fresh,) = gf.capture(Twice(False), x)
    assert fresh.calls == 2 and not fresh.carried and "not one recurrence" in fresh.note


def test_cell_loop_that_does_not_carry_its_state():
    torch.manual_seed(5)
    cell = torch.nn.LSTMCell(D, N).double()

    class Loop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x):
            return [self.cell(x_t) for x_t in x]  # every call from zeros

    x = torch.randn(T, B, D, dtype=torch.float64)
    (cap,) = gf.capture(Loop(), x)
    assert cap.kind == "nn.LSTMCell" and cap.cell == "lstm" and cap.T == T
    assert not cap.carried and "not one recurrence" in cap.note
    assert np.all(cap.s0[(0, "forward")]["c"] == 0)


def test_float32_model_gives_float64_data():
    torch.manual_seed(6)
    gru = torch.nn.GRU(D, N, num_layers=2)
    (cap,) = gf.capture(gru, torch.randn(T, B, D))
    assert all(a.dtype == np.float64 for p in cap.params.values() for a in p.values())
    assert all(a.dtype == np.float64 for a in cap.inputs.values())
    np.testing.assert_array_equal(cap.params[(1, "forward")]["U_z"],
                                  gru.weight_hh_l1.detach().double()[N:2 * N].numpy())


# -- (d) analyze ---------------------------------------------------------------------------
def test_analyze_encoder_decoder(encdec):
    model, x, hx, caps = encdec
    a = gf.analyze(model, x, hx=hx)
    keys = [(r["module"], r["layer"], r["direction"]) for r in a.table]
    assert keys == [("encoder.rnn", 0, "forward"), ("encoder.rnn", 1, "forward"),
                    ("encoder.rnn", "all", "forward"), ("decoder", 0, "forward")]
    assert set(a.results) == set(keys)
    blocks = [r["memory block"] for r in a.table]
    assert blocks == ["c/c", "c/c", "c_l1/c_l1", "h/h"]
    for r in a.table:
        assert isinstance(r["e-folding lag (steps)"], float)
        assert np.isfinite(r["e-folding lag (steps)"]) and 0 < r["per-step factor"] < 1
        assert r["T"] == (STEPS if r["module"] == "decoder" else T) and r["B"] == B
    # the analysis runs on the captured data: the same numbers as all_lags on a selection
    cell, params, xs, s0 = caps[0].selection(1)
    direct = gf.all_lags(cell, params, xs, s0=s0, norms=("frobenius",))
    np.testing.assert_array_equal(a.results[("encoder.rnn", 1, "forward")].blocks["c/c"][
        "log10_frobenius"], direct.blocks["c/c"]["log10_frobenius"])
    fit = gf.fit_batch(direct.blocks["c/c"]["log10_frobenius"])
    assert a.table[1]["per-step factor"] == fit.factor
    text = str(a)
    assert "encoder.rnn" in text and "c_l1/c_l1" in text and "decoder" in text
    assert "<table>" in a._repr_html_()


def test_analyze_says_exploding_when_the_gradient_grows():
    """A relu RNN with U = 1.5 I on positive pre-activations: ∂h_T/∂h_{T−k} = 1.5^k I."""
    rnn = torch.nn.RNN(D, N, nonlinearity="relu").double()
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(1.5 * torch.eye(N))
        rnn.weight_ih_l0.fill_(0.1)
        rnn.bias_ih_l0.fill_(1.0)
        rnn.bias_hh_l0.zero_()
    a = gf.analyze(rnn, torch.rand(T, B, D, dtype=torch.float64))
    (row,) = a.table
    assert row["cell"] == "rnn-relu" and row["regime"] == "exploding"
    assert row["e-folding lag (steps)"] == "exploding"  # never an e-folding lag
    assert row["per-step factor"] == pytest.approx(1.5, rel=1e-12)
    assert row["R²"] == pytest.approx(1.0, abs=1e-12)
    assert row["memory horizon (steps)"] is None
    assert "exploding" in str(a) and "> T" not in str(a)


# -- (e) refusals ----------------------------------------------------------------------------
def one_line_error(match, call):
    with pytest.raises(GateflowError, match=match) as info:
        call()
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    return info


def test_refuses_a_model_without_recurrent_modules():
    model = torch.nn.Sequential(torch.nn.Linear(D, N), torch.nn.Tanh())
    one_line_error(r"Sequential has no nn\.RNN/LSTM/GRU or \*Cell module that ran",
                   lambda: gf.capture(model, torch.randn(B, D)))
    one_line_error("has no nn.RNN", lambda: gf.analyze(model, torch.randn(B, D)))
    assert not model[0]._forward_hooks


def test_refuses_a_module_that_did_not_run():
    class Idle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(D, N)

        def forward(self, x):
            return x

    one_line_error("1 such module.*none ran", lambda: gf.capture(Idle(), torch.randn(T, B, D)))


def test_refuses_packed_sequences():
    lstm = torch.nn.LSTM(D, N)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(T, B, D), [T, T - 2])
    one_line_error("PackedSequence.*padded", lambda: gf.capture(lstm, packed))
    assert not lstm._forward_hooks


def test_projected_lstm_captured_like_its_file(tmp_path):
    """A 2-layer nn.LSTM(proj_size=2): capture reads cell lstm-proj, the layers' real
    inputs (layer 1 reads layer 0's 2-unit h), and gives what its saved file gives."""
    torch.manual_seed(4)
    lstm = torch.nn.LSTM(D, N, num_layers=2, proj_size=2).double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    (cap,) = gf.capture(lstm, x)
    assert cap.cell == "lstm-proj" and cap.proj == 2 and cap.record.input_size(1) == 2
    cell, params, xs, s0 = cap.selection(layer="all")
    torch.save(lstm.state_dict(), tmp_path / "m.pt")
    cell_f, params_f = gf.load_model(tmp_path / "m.pt", layer="all")
    assert cell == cell_f and all(np.array_equal(params[k], params_f[k]) for k in params)
    _, params1, x1, _ = cap.selection(layer=1)
    assert x1.shape == (T, B, 2) and params1["W_i"].shape == (N, 2)
    below = torch.nn.LSTM(D, N, proj_size=2).double()  # layer 0 alone
    below.load_state_dict({k: v for k, v in lstm.state_dict().items() if k.endswith("_l0")})
    with torch.no_grad():
        h0, _ = below(x)
    np.testing.assert_allclose(x1, h0.numpy(), rtol=0, atol=1e-15)
    a = gf.all_lags(cell, params, xs, s0=s0)
    b = gf.all_lags(cell_f, params_f, x.numpy())
    for blk, dd in a.blocks.items():
        np.testing.assert_allclose(dd["log10_frobenius"], b.blocks[blk]["log10_frobenius"],
                                   rtol=0, atol=1e-12)


def test_refuses_what_is_not_a_module_and_reports_model_errors():
    one_line_error("capture needs a torch.nn.Module", lambda: gf.capture(lambda x: x, 1))
    one_line_error("the model raised RuntimeError",
                   lambda: gf.capture(torch.nn.GRU(D, N), torch.randn(T, B, D + 1)))


def test_selection_refuses_bad_layers(encdec):
    model, x, hx, caps = encdec
    one_line_error("has 2 layers", lambda: caps[0].selection())
    one_line_error("out of range", lambda: caps[0].selection(2))
    one_line_error("only the forward direction", lambda: caps[0].selection(0, "reverse"))
    cell, params, xs, s0 = caps[1].selection("all")  # one layer: its plain blocks
    assert cell.name == "gru" and set(s0) == {"h"}


def test_keyword_arguments_and_subclasses():
    """A module called with input=/hx= keywords, and a subclass of nn.GRU, are read."""
    torch.manual_seed(7)

    class MyGRU(torch.nn.GRU):
        pass

    gru = MyGRU(D, N, batch_first=True).double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    h0 = torch.randn(1, B, N, dtype=torch.float64)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = gru

        def forward(self, x):
            return self.gru(input=x, hx=h0)

    (cap,) = gf.capture(Wrap(), x)
    assert cap.module == "gru" and cap.kind == "nn.GRU" and "MyGRU" in cap.note
    np.testing.assert_array_equal(cap.inputs[(0, "forward")], x.transpose(0, 1).numpy())
    np.testing.assert_array_equal(cap.s0[(0, "forward")]["h"], h0[0].numpy())


def test_without_torch_capture_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    one_line_error(r"pip install 'gateflow\[torch\]'", lambda: gf.capture(object()))
    one_line_error(r"pip install 'gateflow\[torch\]'", lambda: gf.analyze(object()))


# -- (e) TorchScript models: their recurrent ops tapped in the graph ---------------------------
class Scriptable(torch.nn.Module):
    """Every kind a TorchScript graph calls: a batch-first LSTM stack from a given state, a
    bidirectional GRU, a relu RNN, a GRUCell stepped in a loop."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.rnn = torch.nn.LSTM(D, N, num_layers=2, batch_first=True)
        self.bi = torch.nn.GRU(D, N, bidirectional=True)
        self.act = torch.nn.RNN(D, N, nonlinearity="relu")
        self.decoder = torch.nn.GRUCell(D, N)

    def forward(self, x, h0, c0):
        out, (h, c) = self.encoder.rnn(x, (h0, c0))
        z, _ = self.bi(x.transpose(0, 1))
        a, _ = self.act(x.transpose(0, 1))
        h_dec = h[-1]
        for t in range(5):  # STEPS decoder steps (TorchScript reads no globals)
            h_dec = self.decoder(x[:, t], h_dec)
        return out[:, -1] + z[-1, :, :4] + a[-1] + h_dec


def _quiet_jit(fn, *args):
    import warnings

    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13
        warnings.simplefilter("ignore")
        return fn(*args)


def _same(a, b):
    assert (a.module, a.kind, a.cell, a.layers, a.directions, a.layout, a.calls, a.carried) \
        == (b.module, b.kind, b.cell, b.layers, b.directions, b.layout, b.calls, b.carried)
    assert a.params.keys() == b.params.keys() and a.inputs.keys() == b.inputs.keys()
    for key in a.params:
        for p in a.params[key]:
            np.testing.assert_array_equal(a.params[key][p], b.params[key][p])
        np.testing.assert_array_equal(a.inputs[key], b.inputs[key])
        for s in a.s0[key]:
            np.testing.assert_array_equal(a.s0[key][s], b.s0[key][s])


def test_script_module_captured_like_the_eager_model():
    """capture on torch.jit.script(model): modules found by their original names, each
    call's inputs and states tapped in the graph (the GRUCell inside a loop too): the same
    records as the eager model's hooks give, bit for bit; batch_first gives the layout."""
    torch.manual_seed(4)
    model = Scriptable().double().eval()
    x = torch.randn(B, T, D, dtype=torch.float64)
    h0, c0 = (0.5 * torch.randn(2, B, N, dtype=torch.float64) for _ in range(2))
    eager = gf.capture(model, x, h0, c0)
    scripted = gf.capture(_quiet_jit(torch.jit.script, model), x, h0, c0)
    assert [c.module for c in scripted] == ["encoder.rnn", "bi", "act", "decoder"]
    assert [c.layout for c in scripted] == ["batch-major", "time-major", "time-major",
                                            "unknown"]
    assert scripted[2].cell == "rnn-relu" and scripted[3].calls == STEPS
    for a, b in zip(eager, scripted, strict=True):
        _same(a, b)
    assert scripted[0].record.layout == "batch-major"
    ta = gf.analyze(model, x, h0, c0).table
    tb = gf.analyze(_quiet_jit(torch.jit.script, model), x, h0, c0).table
    assert ta == tb


def test_traced_module_captured_like_the_eager_model():
    """A traced model has no constants: batch_first, bidirectional and the layers come from
    the op's flags, the nonlinearity from the op (rnn_relu)."""
    torch.manual_seed(5)
    model = Scriptable().double().eval()
    model.decoder = None  # a traced cell is recorded as elementary ops: see below

    def forward(x, h0, c0):
        out, _ = model.encoder.rnn(x, (h0, c0))
        z, _ = model.bi(x.transpose(0, 1))
        a, _ = model.act(x.transpose(0, 1))
        return out[:, -1] + z[-1, :, :N] + a[-1]

    model.forward = forward
    x = torch.randn(B, T, D, dtype=torch.float64)
    h0, c0 = (0.5 * torch.randn(2, B, N, dtype=torch.float64) for _ in range(2))
    traced = _quiet_jit(torch.jit.trace, model, (x, h0, c0))
    for a, b in zip(gf.capture(model, x, h0, c0), gf.capture(traced, x, h0, c0), strict=True):
        _same(a, b)


def test_traced_cells_and_script_submodules_are_refused_with_the_reason():
    cell = torch.nn.GRUCell(D, N).double()
    traced = _quiet_jit(torch.jit.trace, cell, torch.randn(B, D, dtype=torch.float64))
    with pytest.raises(GateflowError, match=r"has no nn.RNN/LSTM/GRU or \*Cell op in its "
                                            r"graph"):
        gf.capture(traced, torch.randn(B, D, dtype=torch.float64))

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = _quiet_jit(torch.jit.script, torch.nn.GRU(D, N).double())

        def forward(self, x):
            return self.rnn(x)[0]

    with pytest.raises(GateflowError, match=r"module 'rnn' is a TorchScript module inside an "
                                            r"eager model, which capture cannot hook"):
        gf.capture(Outer(), torch.randn(T, B, D, dtype=torch.float64))


def test_captured_layout_follows_batch_first():
    x = torch.randn(T, B, D, dtype=torch.float64)
    for batch_first, layout in ((False, "time-major"), (True, "batch-major")):
        gru = torch.nn.GRU(D, N, batch_first=batch_first).double()
        (cap,) = gf.capture(gru, x.transpose(0, 1) if batch_first else x)
        assert cap.layout == cap.record.layout == layout
        np.testing.assert_array_equal(cap.inputs[(0, "forward")], x.numpy())


# -- (e) the weights as the modules computed with them ------------------------------------
def _check_used(cap, kind: str, ref, x, hx) -> None:
    """``cap`` (a 2-layer module) holds ``ref``'s weights (the ones the module computed
    with) bit for bit, layer 1's inputs are ``ref``'s layer 0 run on x, and every Jacobian
    norm matches autograd through an nn.*Cell with ``ref``'s weights."""
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    for layer in range(2):
        want = gf.from_torch_state_dict(kind.lower(), {
            f"{m}_l0": sd[f"{m}_l{layer}"] for m in ("weight_ih", "weight_hh", "bias_ih",
                                                     "bias_hh")})
        got = cap.params[(layer, "forward")]
        assert got.keys() == want.keys()
        for p in want:
            np.testing.assert_array_equal(got[p], want[p])
    first = tuple(s[:1] for s in hx) if kind == "LSTM" else hx[0][:1]
    with torch.no_grad():
        below, _ = one_layer(kind, ref, 0, D)(x, first)
    np.testing.assert_allclose(cap.inputs[(1, "forward")], below.numpy(), rtol=1e-13,
                               atol=1e-15)
    for layer in range(2):
        worst = check_layer(cap, layer, "forward", kind, layer_weights(ref, layer))
        print(f"{kind} layer {layer}: worst relative error {worst:.2e}")


def test_weights_changed_after_the_module_ran_are_recorded_as_used():
    """A forward that adds 2.3 to every weight of its LSTM after the LSTM ran: capture
    records the weights the LSTM computed with, not the ones the forward left."""
    torch.manual_seed(7)

    class Changer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(D, N, num_layers=2).double()

        def forward(self, x, hx):
            out, _ = self.rnn(x, hx)
            with torch.no_grad():
                for p in self.rnn.parameters():
                    p.add_(2.3)
            return out

    model = Changer().eval()
    ref = torch.nn.LSTM(D, N, num_layers=2).double()
    ref.load_state_dict(model.rnn.state_dict())  # the weights the capture's forward uses
    x = torch.randn(T, B, D, dtype=torch.float64)
    hx = tuple(0.5 * torch.randn(2, B, N, dtype=torch.float64) for _ in range(2))
    (cap,) = gf.capture(model, x, hx)
    assert torch.allclose(model.rnn.weight_hh_l1 - ref.weight_hh_l1, torch.tensor(2.3).double())
    _check_used(cap, "LSTM", ref, x, hx)


def test_functional_call_is_recorded_with_the_parameters_it_swapped_in():
    """``torch.func.functional_call`` with other parameters (the module's own + 1.15):
    capture records those, the ones the GRU computed with during the call."""
    torch.manual_seed(8)

    class Swapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(D, N, num_layers=2).double()
            self.other = {k: v.detach() + 1.15 for k, v in self.rnn.named_parameters()}

        def forward(self, x, h0):
            return torch.func.functional_call(self.rnn, self.other, (x, h0))[0]

    model = Swapped().eval()
    ref = torch.nn.GRU(D, N, num_layers=2).double()
    ref.load_state_dict(model.other)
    x = torch.randn(T, B, D, dtype=torch.float64)
    h0 = 0.5 * torch.randn(2, B, N, dtype=torch.float64)
    (cap,) = gf.capture(model, x, h0)
    assert torch.allclose(ref.weight_ih_l0 - model.rnn.weight_ih_l0, torch.tensor(1.15).double())
    _check_used(cap, "GRU", ref, x, (h0,))


def test_weights_that_change_during_the_capture_are_refused():
    """Weights changed while a module runs (a forward that modifies its own weights before
    computing), or between two calls of one module, are refused in one line: no single set
    of parameters is the one used. The hooks are removed all the same."""
    x = torch.randn(T, B, D, dtype=torch.float64)

    class SelfChanging(torch.nn.GRU):
        def forward(self, x, hx=None):
            with torch.no_grad():
                self.weight_hh_l0.mul_(1.5)
            return super().forward(x, hx)

    class Drifting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.GRUCell(D, N).double()

        def forward(self, x):
            h = None
            for x_t in x:
                h = self.cell(x_t, h)
                with torch.no_grad():
                    self.cell.bias_hh.add_(1.0)
            return h

    class ScriptChanging(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(D, N).double()

        def forward(self, x):
            out, _ = self.rnn(x)
            self.rnn.weight_hh_l0.add_(1.0)
            return out

    cases = [
        (SelfChanging(D, N).double(),
         r"^nn\.GRU: its weight 'weight_hh_l0' changed while the module ran \(a forward that "
         r"modifies the weights\?\), so capture cannot tell which values it computed with"),
        (Drifting(),
         r"^module 'cell' \(nn\.GRUCell\) ran with other weights in call 2 than in call 1 "
         r"\('bias_hh' differs\): its calls are not one recurrence"),
        (_quiet_jit(torch.jit.script, ScriptChanging()),
         r"^module 'rnn' \(GRU\): its weight 'weight_hh_l0' changed while the TorchScript "
         r"model ran"),
    ]
    for model, match in cases:
        with pytest.raises(GateflowError, match=match) as info:
            gf.capture(model, x)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300
        for m in model.modules():
            assert not getattr(m, "_forward_hooks", None)
            assert not getattr(m, "_forward_pre_hooks", None)


def test_capture_sizes_the_weights_it_copies_from_their_shapes(monkeypatch):
    """The copy of the weights a call used is sized against the budget before it is made:
    gateflow's one line, the hooks removed."""
    import gateflow._memory

    gru = torch.nn.GRU(D, 1000).double()  # 3.0M weights: 72 MiB copied and converted
    monkeypatch.setattr(gateflow._memory, "available_memory", lambda backend="numpy": 16 << 20)
    with pytest.raises(GateflowError, match=r"^capturing the weights of nn\.GRU needs about "
                                            r"\d+ MiB but only 16 MiB is free; capture a "
                                            r"smaller model$"):
        gf.capture(gru, torch.zeros(2, 1, D, dtype=torch.float64))
    assert not gru._forward_hooks and not gru._forward_pre_hooks

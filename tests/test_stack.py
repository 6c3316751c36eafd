"""Stacks as generated cells: the equations ``stack`` writes, their exact Jacobians (against
the brute-force expansion of the stacked equations), the dependency closure, and the
block-triangular sweep (each layer's rows through the layers below it only)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from gateflow import GateflowError, all_lags, derive, get_cell, init_params, make_inputs, stack
from gateflow.cells._stack import depends, needed, restrict
from gateflow.numeric._chain import nonzero_blocks
from tests._expand import expand
from tests.test_exact import assert_zero


def test_stack_writes_pytorch_suffixes_and_feeds_h_up():
    s = stack("lstm", 2)
    assert s.name == "lstm-stack2"
    # a value, registered nowhere: the name of a stack is not looked up (results carry it)
    with pytest.raises(GateflowError, match="unknown cell 'lstm-stack2'"):
        get_cell("lstm-stack2")
    assert stack("lstm", 2) == s and stack(get_cell("lstm"), 2) == s
    assert s.state == ("h_l0", "c_l0", "h_l1", "c_l1")
    assert s.params[:3] == ("W_i_l0", "W_f_l0", "W_g_l0") and s.params[-1] == "b_o_l1"
    assert s.equations[0] == "i_l0 = sigmoid(W_i_l0 @ x + U_i_l0 @ h_l0_prev + b_i_l0)"
    # layer 1 reads the *new* h of layer 0 (the same step), not h_l0_prev
    assert s.equations[6] == "i_l1 = sigmoid(W_i_l1 @ h_l0 + U_i_l1 @ h_l1_prev + b_i_l1)"
    assert s.equations[-1] == "h_l1 = o_l1 * tanh(c_l1)"
    assert s.matrices["W_i_l0"] == "input" and s.matrices["W_i_l1"] == "recurrent"
    assert s.memory_block == "c_l1/c_l1" and s.memory_bias == ("b_f_l1", 1)
    assert stack("gru", 3).equations[-1] == "h_l2 = (1 - z_l2) * n_l2 + z_l2 * h_l2_prev"
    one = stack("rnn", 1)
    assert one.state == ("h_l0",)
    assert one.equations == ("h_l0 = tanh(W_l0 @ x + U_l0 @ h_l0_prev + b_l0)",)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", None, 65])
def test_stack_refuses_bad_depth(bad):
    with pytest.raises(GateflowError, match="layers"):
        stack("lstm", bad)


@pytest.mark.parametrize("name", ["lstm", "gru", "gru-cho", "rnn-relu", "lstm-peephole"])
def test_stacked_jacobians_match_brute_force(name):
    """Every block of a 2-layer stack, cross-layer blocks included, equals SymPy's Jacobian
    of the expanded stacked equations (n = 2): the engine needs nothing stack-specific."""
    cell, n = stack(name, 2), 2
    e = expand(cell, n, 2)
    explicit = {b: e.jacobian(b) for b in cell.blocks}
    st = derive(cell)
    for b in cell.blocks:
        structured = st.block(b).to_matrix(n, e.unit, e.weights, explicit)
        assert_zero(structured - explicit[b])
    # layer 0 never reads layer 1: those blocks are exactly zero, structurally
    for b in cell.blocks:
        out, inp = b.split("/")
        if out.endswith("_l0") and inp.endswith("_l1"):
            assert st.block(b).is_zero and explicit[b] == sp.zeros(n, n)


def test_depends_and_restrict():
    s = stack("lstm", 3)
    dep = depends(s)
    assert dep["h_l0"] == {"h_l0", "c_l0"}
    assert dep["c_l2"] == set(s.state)
    assert needed(s, ["h_l1"]) == ("h_l0", "c_l0", "h_l1", "c_l1")
    assert needed(s, ["h_l0", "c_l2"]) == s.state
    low = restrict(s, ("h_l0", "c_l0"))
    assert low.state == ("h_l0", "c_l0") and set(low.params) == {
        p for p in s.params if p.endswith("_l0")}
    assert low.equations == s.equations[:6]
    assert restrict(s, s.state) is s
    with pytest.raises(GateflowError, match="read other blocks"):
        restrict(s, ("h_l1", "c_l1"))
    with pytest.raises(GateflowError, match="no state block"):
        restrict(s, ("h_l9",))
    assert nonzero_blocks(get_cell("lstm")) == get_cell("lstm").blocks
    assert "h_l0/h_l1" not in nonzero_blocks(s) and len(nonzero_blocks(s)) == 4 * 6


def _stack_params(name, layers, n, d, seed=0):
    p = {}
    for k in range(layers):
        sub = init_params(name, n, d if k == 0 else n, scheme="gaussian", sigma_w=1.2,
                          sigma_b=0.3, seed=seed + k)
        p.update({f"{q}_l{k}": v for q, v in sub.items()})
    return p


def test_block_triangular_sweep_equals_the_full_sweep():
    """The default sweep runs layer 0's rows on layer 0 alone and layer 1's on both; asking
    for a zero block forces one sweep of everything. Both give the same numbers, and the
    zero blocks are exactly zero (-inf in log10) at every lag (a probe needs every row at
    once, so it forces the single sweep)."""
    s, n, d = stack("gru", 2), 5, 3
    params = _stack_params("gru", 2, n, d)
    x = make_inputs(9, 3, d, seed=1)
    split = all_lags(s, params, x, norms=("frobenius", "spectral"))
    assert split.meta["row_groups"] == [["h_l0"], ["h_l0", "h_l1"]]
    assert list(split.blocks) == ["h_l0/h_l0", "h_l1/h_l0", "h_l1/h_l1"]
    whole = all_lags(s, params, x, blocks=s.blocks, norms=("frobenius", "spectral"),
                     probe=np.ones(2 * n))
    assert "row_groups" not in whole.meta
    assert np.all(whole.blocks["h_l0/h_l1"]["log10_frobenius"] == -np.inf)
    for b, norms in split.blocks.items():
        for key, v in norms.items():
            np.testing.assert_allclose(v, whole.blocks[b][key], rtol=0, atol=1e-12)
    for s_ in ("h_l0", "h_l1"):
        for key, v in split.direct[s_].items():
            np.testing.assert_allclose(v, whole.direct[s_][key], rtol=0, atol=1e-12)
    kept = all_lags(s, params, x, keep_states=True, singular_lags=(1, 4))
    assert set(kept.states) == {"h_l0", "h_l1"} and kept.states["h_l1"].shape == (10, 3, n)
    assert set(kept.singular_values[4]) == set(split.blocks)


def test_layer_of_a_stack_is_the_stack_diagonal_block():
    """Layer 1 analysed alone, on the inputs layer 0 really gives it, has exactly the stack's
    h_l1/h_l1 block: layer 0 does not depend on layer 1, so holding h_l0 fixed changes
    nothing."""
    s, n, d = stack("lstm", 2), 4, 3
    params = _stack_params("lstm", 2, n, d, seed=5)
    x = make_inputs(8, 2, d, seed=2)
    full = all_lags(s, params, x, keep_states=True, norms=("frobenius",))
    layer1 = {k[:-3]: v for k, v in params.items() if k.endswith("_l1")}
    x1 = full.states["h_l0"][1:]
    alone = all_lags("lstm", layer1, x1, norms=("frobenius",))
    for b in ("h/h", "c/c", "h/c", "c/h"):
        out, inp = b.split("/")
        np.testing.assert_allclose(alone.blocks[b]["log10_frobenius"],
                                   full.blocks[f"{out}_l1/{inp}_l1"]["log10_frobenius"],
                                   rtol=0, atol=1e-12)


def test_progress_runs_once_over_all_groups():
    s = stack("rnn", 3)
    seen = []
    all_lags(s, _stack_params("rnn", 3, 3, 2), make_inputs(6, 1, 2), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 6 and len(seen) == 3 * 6


# -- the layers' outputs: what a hook on a layer's output sees -------------------------------
def test_emitted_outputs_and_the_cell_above_them():
    """y_lj is the block layer j passes up (h_lj); the cell above layer j is the stack's
    upper equations with x standing for h_lj, and nothing else of layers 0..j."""
    from gateflow.cells._stack import above, emitted, output_blocks

    s = stack("lstm", 3)
    assert emitted(s) == {"y_l0": "h_l0", "y_l1": "h_l1", "y_l2": "h_l2"}
    assert output_blocks(s)[:3] == ("h_l0/y_l0", "h_l0/y_l1", "h_l0/y_l2")
    assert len(output_blocks(s)) == 6 * 3
    up = above(s, "y_l0")
    assert up.state == ("h_l1", "c_l1", "h_l2", "c_l2")
    assert up.params == tuple(p for p in s.params if p[-3:] in ("_l1", "_l2"))
    assert up.equations[0] == "i_l1 = sigmoid(W_i_l1 @ x + U_i_l1 @ h_l1_prev + b_i_l1)"
    assert up.equations[6:] == s.equations[12:]  # layer 2 still reads layer 1's new h
    assert up.matrices["W_i_l1"] == "input" and up.matrices["W_i_l2"] == "recurrent"
    assert above(s, "y_l2") is None  # nothing reads the top layer within the step
    assert emitted(restrict(s, s.state[:4])) == {"y_l0": "h_l0", "y_l1": "h_l1"}
    assert emitted(stack("lstm-proj", 2))["y_l0"] == "h_l0"
    assert emitted(stack("minimalrnn", 2)) == {"y_l0": "h_l0", "y_l1": "h_l1"}
    # not a stack: no layer outputs, so no "X/y_lj" blocks
    assert emitted(get_cell("lstm")) == {} and output_blocks(get_cell("gru")) == ()
    with pytest.raises(GateflowError, match="no layer output 'y_l3'"):
        above(s, "y_l3")
    with pytest.raises(GateflowError, match="not a stack"):
        above(get_cell("lstm"), "y_l0")


def test_a_cell_that_only_looks_like_a_stack_has_no_layer_outputs():
    """Names with _l<k> are not enough: the upper layer must read nothing of the lower ones
    but their output (here layer 1 also reads x and c_l0)."""
    from gateflow.cells._record import Cell
    from gateflow.cells._stack import emitted

    odd = Cell(name="odd", summary="", reference="", state=("h_l0", "h_l1"),
               params=("W_l0", "W_l1", "V_l1"),
               equations=("h_l0 = tanh(W_l0 @ x + h_l0_prev)",
                          "h_l1 = tanh(W_l1 @ h_l0 + V_l1 @ x + h_l1_prev)"))
    assert emitted(odd) == {}
    skip = Cell(name="skip", summary="", reference="", state=("h_l0", "c_l0", "h_l1"),
                params=("W_l0", "W_l1"),
                equations=("c_l0 = tanh(W_l0 @ x + c_l0_prev)", "h_l0 = tanh(c_l0 + h_l0_prev)",
                           "h_l1 = tanh(W_l1 @ h_l0 + c_l0 + h_l1_prev)"))
    assert emitted(skip) == {}


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm-proj"])
def test_same_step_jacobian_matches_brute_force(name):
    """∂(layer 1)_t/∂y⁽⁰⁾_t: (i) the cell above layer 0 fed h⁽⁰⁾_t computes exactly the
    stack's layer-1 state (SymPy expansions of both, symbol for symbol); (ii) its input
    Jacobian from the one engine equals SymPy's Jacobian of that expansion with respect to
    its x."""
    from gateflow.cells._stack import above
    from gateflow.symbolic._derive import derive_input

    s, n = stack(name, 2), 2
    up = above(s, "y_l0")
    e = expand(s, n, 2)
    w = {k: v for k, v in e.weights.items() if k in up.params}
    v = {k: val for k, val in e.vectors.items() if k in up.params}
    fed = expand(up, n, len(e.values["h_l0"]), weights=w, vectors=v, x=e.values["h_l0"],
                 prev={b: e.prev[b] for b in up.state})
    for b in up.state:
        assert all(sp.expand(a - c) == 0 for a, c in zip(fed.values[b], e.values[b])), b
    free = expand(up, n, len(e.values["h_l0"]), weights=w, vectors=v)
    explicit = {b: free.jacobian(b) for b in up.input_blocks}
    st = derive_input(up)
    for b in up.input_blocks:
        rows = len(free.values[b.split("/")[0]])
        got = st.block(b).to_matrix(rows, free.unit, free.weights, explicit,
                                    cols=len(free.x))
        assert explicit[b] != sp.zeros(*explicit[b].shape)
        assert_zero(got - explicit[b])


def test_output_blocks_in_every_sweep_layout():
    """The same numbers whichever way the sweep runs: split into row groups (each block with
    the layers it needs), one sweep of everything (forced by a probe), several worker
    threads; output blocks alone or beside state and input blocks. A zero block (layer 0
    against layer 1's output) is −inf at every lag."""
    s, n, d = stack("gru", 2), 3, 2
    params = _stack_params("gru", 2, n, d, seed=3)
    x = make_inputs(7, 3, d, seed=4)
    want = ("h_l1/y_l0", "h_l0/y_l1", "h_l1/y_l1", "h_l0/y_l0")
    split = all_lags(s, params, x, blocks=want, threads=1)
    # "h_l0/y_l1" needs layer 1 (what it pulls back through); "h_l0/y_l0" layer 0 alone
    assert split.meta["row_groups"] == [["h_l0", "h_l1"], ["h_l0"]]
    assert set(split.inputs) == set(want) and not split.blocks
    assert np.all(split.inputs["h_l0/y_l1"]["log10_frobenius"] == -np.inf)
    together = all_lags(s, params, x, blocks=(*want, "h_l1/h_l0", "h_l1/x"), threads=3,
                        probe=np.ones(2 * n))
    assert "row_groups" not in together.meta and together.meta["workers"] == 3
    for b in want:
        for key, v in split.inputs[b].items():
            np.testing.assert_allclose(v, together.inputs[b][key], rtol=0, atol=1e-12)
    assert "h_l1/x" in together.inputs and "h_l1/h_l0" in together.blocks
    assert split.input_lags[0] == 0 and len(split.inputs["h_l1/y_l0"]["log10_frobenius"]) == 7


def test_output_block_names_are_checked():
    s = stack("lstm", 2)
    params = _stack_params("lstm", 2, 3, 2)
    x = make_inputs(4, 1, 2)
    with pytest.raises(GateflowError, match="h_l1/y_l0"):
        all_lags(s, params, x, blocks=("h_l1/y_l9",))
    with pytest.raises(GateflowError, match="input blocks"):
        all_lags(s, params, x, blocks=("h_l1/y_l0",), singular_lags=(1,))
    with pytest.raises(GateflowError, match="block"):
        all_lags("lstm", init_params("lstm", 3, 2), x, blocks=("h/y_l0",))


def _pytorch_lstm_npz(path, layers: int, n: int, d: int, seed: int = 0) -> None:
    """An nn.LSTM(num_layers=layers) state dict written with NumPy alone (gate order i, f,
    g, o; the bias in bias_ih, zeros in bias_hh)."""
    arrays = {}
    for k in range(layers):
        p = init_params("lstm", n, d if k == 0 else n, scheme="gaussian", sigma_w=1.2,
                        sigma_b=0.3, seed=seed + k)
        arrays[f"rnn.weight_ih_l{k}"] = np.concatenate([p[f"W_{g}"] for g in "ifgo"])
        arrays[f"rnn.weight_hh_l{k}"] = np.concatenate([p[f"U_{g}"] for g in "ifgo"])
        arrays[f"rnn.bias_ih_l{k}"] = np.concatenate([p[f"b_{g}"] for g in "ifgo"])
        arrays[f"rnn.bias_hh_l{k}"] = np.zeros(4 * n)
    np.savez(path, **arrays)


def test_decay_cli_writes_both_meanings(tmp_path, monkeypatch):
    """``decay --layer all --blocks`` takes output-gradient blocks: JSON "inputs" and CSV rows
    at lags 0..T−1 beside the carried blocks, equal to all_lags on the same model and
    inputs; the figure's second panel draws them; a misspelt one is one error line."""
    import json
    from pathlib import Path

    from gateflow import load_model
    from tests._hostile import run_cli

    monkeypatch.chdir(tmp_path)
    _pytorch_lstm_npz("m.npz", 2, 4, 3)
    rng = np.random.default_rng(2)
    np.save("x.npy", rng.standard_normal((6, 2, 3)))
    out = run_cli("decay", "--weights", "m.npz", "--layer", "all", "--inputs", "x.npy",
                  "--blocks", "c_l1/c_l1,h_l1/h_l0,h_l1/y_l0", "--json", "d.json",
                  "--csv", "d.csv", "--plot", "d.svg", "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("d.json").read_text())
    assert set(doc["blocks"]) == {"c_l1/c_l1", "h_l1/h_l0"} and set(doc["inputs"]) == {"h_l1/y_l0"}
    assert doc["input_lags"] == list(range(6)) and "inputs[X/y_lj]" in doc["layout"]
    cell, params = load_model("m.npz", layer="all")
    want = all_lags(cell, params, np.load("x.npy"), blocks=("h_l1/h_l0", "h_l1/y_l0"))
    for b, got in (("h_l1/h_l0", doc["blocks"]), ("h_l1/y_l0", doc["inputs"])):
        ref = want.blocks.get(b) or want.inputs[b]
        np.testing.assert_allclose(got[b]["log10_frobenius"], ref["log10_frobenius"],
                                   rtol=0, atol=1e-12)
    rows = [line.split(",") for line in Path("d.csv").read_text().splitlines()[1:]]
    assert sorted({int(r[1]) for r in rows if r[0] == "h_l1/y_l0"}) == list(range(6))
    assert sorted({int(r[1]) for r in rows if r[0] == "h_l1/h_l0"}) == list(range(1, 7))
    assert "layer-output sensitivity" in Path("d.svg").read_text()
    shown = run_cli("decay", "--weights", "m.npz", "--layer", "all", "--steps", "4",
                    "--blocks", "h_l1/h_l0")
    assert shown.exit_code == 0 and "h_l1/h_l0" in shown.stdout  # the table says which
    assert "X/h_lj is carried" in " ".join(shown.stdout.split())  # meaning it shows
    assert "what a hook on layer j's output" in " ".join(shown.stdout.split())
    bad = run_cli("decay", "--weights", "m.npz", "--layer", "all", "--blocks", "h_l1/y_l5",
                  "--steps", "4", "-q")
    assert bad.exit_code == 2 and bad.stderr.startswith("error:") and "h_l1/y_l0" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_derive_defines_both_meanings_for_a_stack():
    """``derive --layers 2``: the carried blocks, then the layer-output section: the
    definition and each same-step Jacobian ∂Z_t/∂y_lj_t written with y (never x);
    ``--block`` picks one (I for the layer's own h, 0 for what does not read it)."""
    from gateflow.symbolic._printing import render
    from tests._hostile import run_cli

    out = run_cli("derive", "gru", "--layers", "2")
    assert out.exit_code == 0, out.stderr
    text = out.stdout
    assert "∂h_l1_t/∂h_l0_{t−1} = " in text
    section = text[text.index("Layer outputs"):]
    assert "∂X_T/∂y_lj_{T−k} = ∂X_T/∂h_lj_{T−k} + Σ_Z" in section
    assert "∂h_l1_t/∂y_l0_t = " in section and "x_t" not in section
    shown = section[section.index("Same-step Jacobians"):].splitlines()[1:]
    assert [line.split(" = ")[0].strip() for line in shown] == ["∂h_l1_t/∂y_l0_t"]
    assert "Layer outputs" not in run_cli("derive", "gru").stdout
    one = render(stack("lstm", 2), block="h_l0/y_l0")
    assert one.rstrip().endswith("∂h_l0_t/∂y_l0_t = I") and "Jacobians (one step)" not in one
    assert render(stack("lstm", 2), block="h_l0/y_l1").rstrip().endswith(
        "∂h_l0_t/∂y_l1_t = 0")
    for fmt in ("latex", "markdown"):
        shown = render(stack("lstm", 2), fmt, block="c_l1/y_l0")
        assert r"\partial y^{(j)}_{T-k}" in shown and r"\partial y_l0_{t}" in shown
        assert "W_{i_l1} h" not in shown.split("Layer outputs")[-1]

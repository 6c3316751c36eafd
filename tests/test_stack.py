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
    assert s.name == "lstm-stack2" and get_cell("lstm-stack2") is s
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

"""Parameters: shapes, initialisation, PyTorch mapping, files and inputs."""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateflow import CELLS, GateflowError, get_cell
from gateflow.cells._params import check_params
from gateflow.models._inputs import load_inputs, make_inputs
from gateflow.models._params import (
    init_params,
    load_params,
    param_shapes,
    save_params,
    validate_params,
)
from gateflow.models.formats._pytorch import (
    LAYOUTS,
    from_torch_state_dict,
    to_torch_state_dict,
)

ALL = sorted(CELLS)
TORCH_CELLS = [c for c in ALL if c in LAYOUTS]
N, D = 4, 3


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# -- shapes -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_shapes_follow_matrix_kinds(name):
    cell = CELLS[name]
    shapes = param_shapes(cell, 5, 2)
    assert tuple(shapes) == cell.params
    projected = {"P": (2, 5), **{f"U_{g}": (5, 2) for g in "ifgo"}}  # p = n // 2 = 2
    for p, shape in shapes.items():
        kind = cell.system.matrices.get(p)
        want = {"input": (5, 2), "recurrent": (5, 5), None: (5,)}[kind]
        assert shape == (projected.get(p, want) if name == "lstm-proj" else want)
    assert param_shapes(name, 5, 2) == shapes  # a name works as well as a Cell


def test_projected_lstm_sizes():
    """lstm-proj: h has p units, c has n; U_* act on h (n × p), P maps o ⊙ tanh c to h."""
    cell = CELLS["lstm-proj"]
    assert cell.block_size == {"h": "p", "c": "n"} and cell.size_names == ("n", "p")
    shapes = param_shapes(cell, 6, 3, {"p": 4})
    assert shapes["P"] == (4, 6) and shapes["U_f"] == (6, 4) and shapes["W_f"] == (6, 3)
    params = init_params(cell, 6, 3, sizes={"p": 4}, scheme="orthogonal")
    assert params["P"].shape == (4, 6)
    np.testing.assert_allclose(params["P"] @ params["P"].T, np.eye(4), atol=1e-12)
    with pytest.raises(GateflowError, match=r"no size 'q'"):
        param_shapes(cell, 6, 3, {"q": 4})
    bad = dict(params, P=np.zeros((3, 6)))
    with pytest.raises(GateflowError, match=r"param 'P' .* has shape \(3, 6\); expected "
                                            r"\(4, 6\) for n=6, d=3, p=4"):
        check_params(cell, bad)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(ALL), n=st.integers(1, 9), d=st.integers(1, 9),
       scheme=st.sampled_from(["pytorch", "gaussian", "orthogonal"]), seed=st.integers(0, 2**32))
def test_init_matches_shapes_and_validates(name, n, d, scheme, seed):
    params = init_params(name, n, d, scheme=scheme, sigma_b=0.5, seed=seed)
    assert {p: a.shape for p, a in params.items()} == param_shapes(name, n, d)
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in params.values())
    assert validate_params(name, params) == (n, d)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_shapes_reject_bad_sizes(bad):
    with pytest.raises(GateflowError, match="hidden size n"):
        param_shapes("lstm", bad, 3)
    with pytest.raises(GateflowError, match="input size d"):
        param_shapes("lstm", 3, bad)


def test_unknown_cell_name():
    with pytest.raises(GateflowError, match="did you mean 'lstm'"):
        init_params("lstn", 4, 3)


# -- initialisation -----------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["pytorch", "gaussian", "orthogonal"])
def test_seed_determinism(scheme):
    kw = dict(scheme=scheme, sigma_b=0.3)
    a = init_params("lstm", 6, 3, seed=7, **kw)
    b = init_params("lstm", 6, 3, seed=7, **kw)
    c = init_params("lstm", 6, 3, seed=8, **kw)
    for p in a:
        assert a[p].tobytes() == b[p].tobytes()  # bit-identical
        assert not np.array_equal(a[p], c[p])


def test_chrono_is_deterministic_too():
    a = init_params("lstm", 8, 2, chrono=50, seed=3)
    b = init_params("lstm", 8, 2, chrono=50, seed=3)
    _assert_same(a, b)


def test_float32():
    p = init_params("gru", 4, 3, dtype=np.float32)
    assert all(a.dtype == np.float32 for a in p.values())
    with pytest.raises(GateflowError, match="floating-point"):
        init_params("gru", 4, 3, dtype=np.int32)


def test_pytorch_scheme_range():
    n = 64
    k = 1 / np.sqrt(n)
    p = init_params("lstm", n, 10, scheme="pytorch", seed=1)
    everything = np.concatenate([a.ravel() for a in p.values()])
    assert everything.min() >= -k and everything.max() <= k
    assert everything.min() < -0.95 * k and everything.max() > 0.95 * k  # fills the range
    assert abs(everything.mean()) < 0.01 * k


def test_gaussian_variances():
    n, d = 400, 250
    sw, sv, sb = 1.5, 0.7, 0.4
    p = init_params("lstm", n, d, scheme="gaussian", sigma_w=sw, sigma_v=sv, sigma_b=sb, seed=2)
    U = np.concatenate([p[f"U_{g}"].ravel() for g in "ifgo"])
    W = np.concatenate([p[f"W_{g}"].ravel() for g in "ifgo"])
    b = np.concatenate([p[f"b_{g}"] for g in "ifgo"])
    assert U.var() * n == pytest.approx(sw**2, rel=0.02)
    assert W.var() * d == pytest.approx(sv**2, rel=0.02)
    assert b.var() == pytest.approx(sb**2, rel=0.15)  # only 4n = 1600 samples
    assert abs(U.mean()) < 4 * sw / np.sqrt(n) / np.sqrt(U.size)
    z = init_params("lstm", 8, 3, scheme="gaussian", sigma_b=0.0)
    assert all(not z[f"b_{g}"].any() for g in "ifgo")


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "minimalrnn"])
def test_orthogonal(name):
    n, sw = 12, 1.3
    p = init_params(name, n, 5, scheme="orthogonal", sigma_w=sw, seed=4)
    cell = get_cell(name)
    rec = [k for k, v in cell.system.matrices.items() if v == "recurrent"]
    assert rec
    for k in rec:
        Q = p[k]
        np.testing.assert_allclose(Q.T @ Q, sw**2 * np.eye(n), atol=1e-12)
        np.testing.assert_allclose(Q @ Q.T, sw**2 * np.eye(n), atol=1e-12)
    # recurrent matrices differ from each other (fresh draws)
    if len(rec) > 1:
        assert not np.allclose(p[rec[0]], p[rec[1]])


def test_orthogonal_is_haar_not_biased():
    # Sign fixing makes the diagonal of R positive, so the mean of Q over draws is ~0.
    mean = np.mean([init_params("rnn", 3, 1, scheme="orthogonal", seed=s)["U"]
                    for s in range(400)], axis=0)
    assert np.abs(mean).max() < 0.15


@pytest.mark.parametrize("name", [c for c in ALL if CELLS[c].memory_bias is not None])
def test_gate_bias(name):
    cell = CELLS[name]
    param, sign = cell.memory_bias
    p = init_params(name, 5, 2, gate_bias=2.0, seed=0)
    np.testing.assert_array_equal(p[param], np.full(5, sign * 2.0))
    q = init_params(name, 5, 2, seed=0)
    for other in cell.params:  # nothing else moves
        if other != param:
            np.testing.assert_array_equal(p[other], q[other])


def test_lstm_gate_bias_is_forget_gate():
    p = init_params("lstm", 3, 2, gate_bias=1.0)
    np.testing.assert_array_equal(p["b_f"], np.ones(3))


def test_chrono_lstm():
    T_max = 100
    p = init_params("lstm", 2000, 3, chrono=T_max, seed=5)
    b_f, b_i = p["b_f"], p["b_i"]
    np.testing.assert_array_equal(b_i, -b_f)
    timescale = 1 + np.exp(b_f)  # 1 / (1 - sigmoid(b_f))
    assert timescale.min() >= 2 - 1e-9 and timescale.max() <= T_max + 1e-9
    assert timescale.min() < 3 and timescale.max() > T_max - 1  # spans the range
    np.testing.assert_allclose(1 / (1 - 1 / (1 + np.exp(-b_f))), timescale, rtol=1e-9)


def test_chrono_sign_follows_memory_bias():
    # lstm-cifg keeps memory with f = 1 - i, so its memory bias b_i is negative
    p = init_params("lstm-cifg", 50, 2, chrono=20, seed=1)
    assert np.all(p["b_i"] <= 0)
    g = init_params("gru", 50, 2, chrono=20, seed=1)
    assert np.all(g["b_z"] >= 0)


@pytest.mark.parametrize("name", [c for c in ALL if CELLS[c].memory_bias is None])
def test_gate_bias_and_chrono_need_a_gate(name):
    with pytest.raises(GateflowError, match="gate_bias does not apply"):
        init_params(name, 4, 3, gate_bias=1.0)
    with pytest.raises(GateflowError, match="chrono does not apply"):
        init_params(name, 4, 3, chrono=10)


def test_init_and_inputs_check_memory_first():
    """Sizes that cannot fit are refused before NumPy tries (no MemoryError)."""
    with pytest.raises(GateflowError, match=r"^init_params for cell 'lstm' with n=1000000, d=3 "
                                            r"needs about \d+\.\d GiB but only .* is free; use a "
                                            "smaller hidden size n"):
        init_params("lstm", 10**6, 3)
    with pytest.raises(GateflowError, match=r"^make_inputs of shape \(100000, 100000, 1000\) "
                                            "needs about .* use fewer steps T"):
        make_inputs(10**5, 10**5, 1000)


def test_memory_estimates_follow_the_sizes(monkeypatch):
    import gateflow._memory

    monkeypatch.setattr(gateflow._memory, "available_memory", lambda backend="numpy": 2**20)
    init_params("rnn", 8, 8)  # a few KiB: fine
    make_inputs(8, 2, 8)
    with pytest.raises(GateflowError, match="needs about 3 MiB but only 1 MiB is free"):
        init_params("rnn", 256, 8)  # U alone is 512 KiB, its QR/temporaries 2 MiB more
    with pytest.raises(GateflowError, match="needs about 2 MiB but only 1 MiB is free"):
        make_inputs(2**17, 1, 1)  # 1 MiB of float64 draws and their scaled copy


def test_init_argument_errors():
    with pytest.raises(GateflowError, match="unknown init scheme 'xavier'"):
        init_params("lstm", 4, 3, scheme="xavier")
    with pytest.raises(GateflowError, match="only one"):
        init_params("lstm", 4, 3, gate_bias=1.0, chrono=10)
    with pytest.raises(GateflowError, match="T_max must be >= 2"):
        init_params("lstm", 4, 3, chrono=1)
    with pytest.raises(GateflowError, match="sigma_w"):
        init_params("lstm", 4, 3, sigma_w=float("nan"))
    with pytest.raises(GateflowError, match="seed"):
        init_params("lstm", 4, 3, seed=-1)


# -- validation ---------------------------------------------------------------------------
def test_validate_missing_key():
    p = init_params("lstm", N, D)
    del p["U_g"], p["b_o"]
    with pytest.raises(GateflowError, match=r"miss 'U_g', 'b_o'"):
        validate_params("lstm", p)


def test_validate_extra_key():
    p = init_params("lstm", N, D)
    p["bogus"] = np.zeros(N)
    with pytest.raises(GateflowError, match=r"unexpected keys 'bogus'"):
        validate_params("lstm", p)


def test_validate_wrong_shape():
    p = init_params("gru", N, D)
    p["U_z"] = np.zeros((N, N + 1))
    with pytest.raises(GateflowError, match=r"'U_z' .*shape \(4, 5\); expected \(4, 4\)"):
        validate_params("gru", p)
    p = init_params("gru", N, D)
    p["b_hn"] = np.zeros((N, 1))
    with pytest.raises(GateflowError, match=r"'b_hn' .*expected \(4,\)"):
        validate_params("gru", p)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_validate_non_finite(bad):
    p = init_params("lstm", N, D)
    p["W_f"][1, 2] = bad
    with pytest.raises(GateflowError, match="'W_f' has 1 non-finite"):
        validate_params("lstm", p)


def test_validate_params_of_another_cell():
    with pytest.raises(GateflowError, match="params look like cell 'lstm'"):
        validate_params("gru", init_params("lstm", N, D))


def test_validate_lstm_torch_weights_for_gru():
    sd = to_torch_state_dict("lstm", init_params("lstm", N, D))
    with pytest.raises(GateflowError, match="weights look like a LSTM with 4 gates; expected"):
        validate_params("gru", sd)
    with pytest.raises(GateflowError, match="weights look like a LSTM with 4 gates; expected"):
        from_torch_state_dict("gru", sd)
    with pytest.raises(GateflowError, match="PyTorch names"):
        validate_params("lstm", sd)


def test_validate_non_numeric():
    p = init_params("rnn", N, D)
    p["b"] = np.array(["a"] * N)
    with pytest.raises(GateflowError, match="'b' has dtype"):
        validate_params("rnn", p)


# -- files: round trips -------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(ALL), n=st.integers(1, 7), d=st.integers(1, 7),
       ext=st.sampled_from([".safetensors", ".npz"]), seed=st.integers(0, 1000))
def test_save_load_round_trip(name, n, d, ext, seed):
    params = init_params(name, n, d, scheme="gaussian", sigma_b=1.0, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"w{ext}"
        save_params(path, name, params)
        assert [f.name for f in Path(tmp).iterdir()] == [path.name]  # no temp file left
        back = load_params(path, name)
    for k in params:  # summed biases go through bias_ih + 0: exact
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)
    assert back.keys() == params.keys()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_saved_names(tmp_path, name, ext):
    cell = CELLS[name]
    path = tmp_path / f"p{ext}"
    save_params(path, cell, init_params(cell, N, D))
    if ext == ".npz":
        with np.load(path) as z:
            keys = set(z.files)
    else:
        from safetensors.numpy import load_file
        keys = set(load_file(path))
    expected = ({"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                 *(("weight_hr_l0",) if cell.name == "lstm-proj" else ())}
                if cell.name in LAYOUTS else set(cell.params))
    assert keys == expected


def test_formats_registry():
    from gateflow.models.formats import READERS, VOCABULARIES, reader_for

    assert [r.name for r in READERS] == ["safetensors", "npz", "pytorch", "torchscript", "onnx",
                                         "keras"]
    assert reader_for(Path("w.PTH")).name == "pytorch"
    assert reader_for(Path("w.ckpt")).name == "pytorch"
    assert reader_for(Path("m.onnx")).name == "onnx"
    assert reader_for(Path("m.weights.h5")).name == "keras"
    assert reader_for(Path("m.jit")).name == "torchscript"
    with pytest.raises(GateflowError, match=r"use one of .safetensors, .npz, .pt, .pth, .ckpt, "
                                            r".jit, .torchscript, .onnx, .keras, .h5$"):
        reader_for(Path("w.tflite"))
    assert [v.name for v in VOCABULARIES] == ["pytorch", "foreign"]


def test_torch_layouts_live_in_the_pytorch_format():
    import dataclasses

    import gateflow
    from gateflow.cells import Cell
    from gateflow.models.formats._pytorch import TorchLayout, layout_for

    assert gateflow.TorchLayout is TorchLayout
    assert "torch" not in {f.name for f in dataclasses.fields(Cell)}
    assert TORCH_CELLS == sorted(["rnn", "rnn-relu", "lstm", "gru", "gru-cho", "lstm-proj"])
    for name, layout in LAYOUTS.items():
        assert {*layout.ih, *layout.hh, *layout.bias_ih, *layout.bias_hh,
                *layout.hr} == set(CELLS[name].params)
        assert layout_for(CELLS[name]) is layout
    # a cell that only shares a name gets no layout
    mine = Cell(name="lstm", summary="s", reference="r", state=("h",), params=("W", "U", "b"),
                equations=("h = tanh(W @ x + U @ h_prev + b)",))
    assert layout_for(mine) is None


def test_to_torch_layout():
    p = init_params("gru", N, D, sigma_b=1.0, scheme="gaussian")
    sd = to_torch_state_dict("gru", p)
    np.testing.assert_array_equal(sd["weight_ih_l0"][2 * N:], p["W_n"])
    np.testing.assert_array_equal(sd["weight_hh_l0"][N:2 * N], p["U_z"])
    np.testing.assert_array_equal(sd["bias_ih_l0"][:N], p["b_r"])
    np.testing.assert_array_equal(sd["bias_hh_l0"][:2 * N], 0)
    np.testing.assert_array_equal(sd["bias_ih_l0"][2 * N:], p["b_in"])
    np.testing.assert_array_equal(sd["bias_hh_l0"][2 * N:], p["b_hn"])
    _assert_same(from_torch_state_dict("gru", sd), p)
    with pytest.raises(GateflowError, match="no PyTorch layout"):
        to_torch_state_dict("mgu", init_params("mgu", N, D))


def test_save_is_atomic_and_overwrites(tmp_path):
    path = tmp_path / "w.npz"
    save_params(path, "lstm", init_params("lstm", N, D, seed=1))
    p2 = init_params("lstm", N, D, seed=2)
    with pytest.raises(GateflowError, match="already exists; pass overwrite"):
        save_params(path, "lstm", p2)  # nothing is replaced unless asked
    save_params(path, "lstm", p2, overwrite=True)
    _assert_same(load_params(path, "lstm"), p2)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["w.npz"]
    # a failing save leaves the old file intact
    bad = dict(p2, W_i=np.full((N, D), np.nan))
    with pytest.raises(GateflowError, match="non-finite"):
        save_params(path, "lstm", bad, overwrite=True)
    _assert_same(load_params(path, "lstm"), p2)


def test_save_errors(tmp_path):
    p = init_params("lstm", N, D)
    with pytest.raises(GateflowError, match="unknown extension '.pt'.*safetensors or .npz"):
        save_params(tmp_path / "w.pt", "lstm", p)
    with pytest.raises(GateflowError, match="does not exist"):
        save_params(tmp_path / "nope" / "w.npz", "lstm", p)


def test_load_gateflow_names_for_torch_cell(tmp_path):
    p = init_params("lstm", N, D)
    np.savez(tmp_path / "g.npz", **p)
    _assert_same(load_params(tmp_path / "g.npz", "lstm"), p)


def test_load_converts_to_float64(tmp_path):
    p = init_params("indrnn", N, D, dtype=np.float32)
    save_params(tmp_path / "w.safetensors", "indrnn", p)
    back = load_params(tmp_path / "w.safetensors", "indrnn")
    assert all(a.dtype == np.float64 for a in back.values())
    back32 = load_params(tmp_path / "w.safetensors", "indrnn", dtype=np.float32)
    _assert_same(back32, p)


def test_load_prefixed_torch_keys(tmp_path):
    p = init_params("gru", N, D, scheme="gaussian", sigma_b=1.0)
    sd = {f"encoder.rnn.{k}": v for k, v in to_torch_state_dict("gru", p).items()}
    sd["head.weight"] = np.ones((2, N))  # other modules are ignored
    np.savez(tmp_path / "m.npz", **sd)
    _assert_same(load_params(tmp_path / "m.npz", "gru"), p)
    sd.update({f"decoder.rnn.{k}": v for k, v in to_torch_state_dict("gru", p).items()})
    np.savez(tmp_path / "two.npz", **sd)
    with pytest.raises(GateflowError, match=r"of 2 modules \('encoder.rnn', 'decoder.rnn'\); "
                                            "pick one with module NAME"):
        load_params(tmp_path / "two.npz", "gru")


def test_load_torch_names_bias_false(tmp_path):
    sd = to_torch_state_dict("rnn", init_params("rnn", N, D))
    del sd["bias_ih_l0"], sd["bias_hh_l0"]
    np.savez(tmp_path / "nb.npz", **sd)
    assert not load_params(tmp_path / "nb.npz", "rnn")["b"].any()
    del sd["weight_hh_l0"]
    np.savez(tmp_path / "miss.npz", **sd)
    with pytest.raises(GateflowError, match="misses 'weight_hh_l0'"):
        load_params(tmp_path / "miss.npz", "rnn")


def test_load_multilayer_and_bidirectional_refused(tmp_path):
    sd = to_torch_state_dict("lstm", init_params("lstm", N, D))
    np.savez(tmp_path / "ml.npz", **sd, weight_ih_l1=np.zeros((4 * N, N)))
    with pytest.raises(GateflowError, match="multi-layer"):
        load_params(tmp_path / "ml.npz", "lstm")
    np.savez(tmp_path / "bi.npz", **sd, weight_ih_l0_reverse=np.zeros((4 * N, D)))
    with pytest.raises(GateflowError, match="bidirectional"):
        load_params(tmp_path / "bi.npz", "lstm")
    with pytest.raises(GateflowError, match="bidirectional"):
        from_torch_state_dict("lstm", dict(sd, weight_ih_l0_reverse=np.zeros((4 * N, D))))


def test_load_projected_lstm(tmp_path):
    """proj_size > 0 makes weight_hh_l0 (4n, p): not "4n/p gates" but a projected LSTM, read
    as cell lstm-proj and refused, saying so, for any other cell."""
    n, p = 6, 2
    rng = np.random.default_rng(0)
    sd = {"weight_ih_l0": rng.standard_normal((4 * n, D)),
          "weight_hh_l0": rng.standard_normal((4 * n, p)),
          "bias_ih_l0": rng.standard_normal(4 * n), "bias_hh_l0": rng.standard_normal(4 * n),
          "weight_hr_l0": rng.standard_normal((p, n))}
    np.savez(tmp_path / "proj.npz", **sd)
    for cell in ("lstm", "gru", "rnn"):
        with pytest.raises(GateflowError, match=r"nn.LSTM with proj_size > 0 \(weight_hr_l0 is "
                                                r"2x6, proj_size x n\); use cell 'lstm-proj'"
                                                ) as info:
            load_params(tmp_path / "proj.npz", cell)
        assert "gates" not in str(info.value)
    params = load_params(tmp_path / "proj.npz", "lstm-proj")
    assert np.array_equal(params["P"], sd["weight_hr_l0"])
    assert np.array_equal(params["U_g"], sd["weight_hh_l0"][2 * n:3 * n])
    back = to_torch_state_dict("lstm-proj", params)
    assert np.array_equal(back["weight_hr_l0"], sd["weight_hr_l0"])
    no_hr = {k: v for k, v in sd.items() if k != "weight_hr_l0"}
    with pytest.raises(GateflowError, match="needs the projection weight_hr_l0"):
        from_torch_state_dict("lstm-proj", no_hr)


def test_load_torch_names_for_cell_without_layout(tmp_path):
    save_params(tmp_path / "l.npz", "lstm", init_params("lstm", N, D))
    with pytest.raises(GateflowError, match="LSTM with 4 gates.*'lstm-peephole' has no PyTorch"):
        load_params(tmp_path / "l.npz", "lstm-peephole")


@pytest.mark.parametrize(("call", "match"), [
    (lambda: load_params(None, "lstm"), "params path must be a str or os.PathLike, got NoneType"),
    (lambda: load_params(3, "lstm"), "params path must be a str or os.PathLike, got int"),
    (lambda: load_params(b"w.npz", "lstm"), "got bytes"),
    (lambda: load_params("", "lstm"), "params path is empty"),
    (lambda: load_params("w.npz", None), "expected a gateflow Cell or a cell name, got NoneType"),
    (lambda: load_params("w.npz", "lstm", dtype=int), "floating-point"),
    (lambda: load_inputs(None), "inputs path must be a str or os.PathLike, got NoneType"),
    (lambda: load_inputs(["x.npy"]), "got list"),
    (lambda: load_inputs("x.npy", d="3"), "input size d must be an integer"),
    (lambda: load_inputs("x.npy", d=0), "input size d must be >= 1"),
    (lambda: save_params(None, "lstm", {}), "params path must be a str"),
])
def test_wrong_argument_types(call, match):
    with pytest.raises(GateflowError, match=match):
        call()


def test_messages_are_cut_at_word_boundaries():
    from gateflow.models._checks import clip as _clip
    from gateflow.models._checks import one_line as _one_line

    assert _clip("short", 10) == "short"
    text = "the quick brown fox jumps over the lazy dog"
    for limit in range(12, len(text)):
        cut = _clip(text, limit)
        assert len(cut) <= limit and cut.endswith("…")
        assert text.startswith(cut[:-1]) and text[len(cut) - 1] == " "  # whole words only
    assert _one_line(ValueError("a\n b\x1b[1m c\x1b[0m"), 100) == "a b c"


def test_load_file_errors(tmp_path):
    p = init_params("lstm", N, D)
    with pytest.raises(GateflowError, match="not found"):
        load_params(tmp_path / "nope.safetensors", "lstm")
    (tmp_path / "w.tflite").write_bytes(b"x")
    with pytest.raises(GateflowError, match=r"unknown extension '.tflite'; use one of "):
        load_params(tmp_path / "w.tflite", "lstm")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(GateflowError, match=r"'.*m.onnx' is an ONNX model, a whole model: read it "
                                            r"with gateflow.load_model"):
        load_params(tmp_path / "m.onnx", "lstm")
    for ext in (".safetensors", ".npz", ".pt"):
        (tmp_path / f"junk{ext}").write_bytes(b"\x00garbage" * 10)
        with pytest.raises(GateflowError, match="cannot read"):
            load_params(tmp_path / f"junk{ext}", "lstm")
    np.savez(tmp_path / "obj.npz", W=np.array([{"a": 1}], dtype=object))
    with pytest.raises(GateflowError, match="cannot read"):
        load_params(tmp_path / "obj.npz", "lstm")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(GateflowError, match="no arrays"):
        load_params(tmp_path / "empty.npz", "lstm")
    # the messages of validation carry the file name
    del p["b_i"]
    np.savez(tmp_path / "m.npz", **p)
    with pytest.raises(GateflowError, match=r"^m.npz: params for cell 'lstm' miss 'b_i'"):
        load_params(tmp_path / "m.npz", "lstm")


def test_errors_are_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    cases = [
        lambda: load_params(tmp_path / "junk.pt", "lstm"),
        lambda: validate_params("gru", to_torch_state_dict("lstm", init_params("lstm", N, D))),
        lambda: make_inputs(0, 1, 1),
    ]
    for case in cases:
        with pytest.raises(GateflowError) as info:
            case()
        msg = str(info.value)
        assert "\n" not in msg and "\x1b" not in msg and msg


# -- a real PyTorch round trip ------------------------------------------------------------
def _torch_modules(torch):
    torch.manual_seed(0)
    n, d = N, D
    mods = {
        "lstm": torch.nn.LSTM(d, n),
        "gru": torch.nn.GRU(d, n),
        "gru-cho": torch.nn.GRU(d, n),
        "rnn": torch.nn.RNN(d, n, nonlinearity="tanh"),
        "rnn-relu": torch.nn.RNN(d, n, nonlinearity="relu"),
    }
    with torch.no_grad():  # make the two biases clearly different
        for m in mods.values():
            m.bias_hh_l0.add_(torch.linspace(-1, 1, m.bias_hh_l0.numel()))
    return mods


def _check_against_torch(name, params, sd):
    n = N
    cell = CELLS[name]
    sd = {k: v.detach().numpy().astype(np.float64) for k, v in sd.items()}
    wi, wh, bi, bh = (sd[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"))
    sl = [slice(j * n, (j + 1) * n) for j in range(len(LAYOUTS[cell.name].ih))]
    if name == "lstm":
        for j, g in enumerate("ifgo"):
            np.testing.assert_array_equal(params[f"W_{g}"], wi[sl[j]])
            np.testing.assert_array_equal(params[f"U_{g}"], wh[sl[j]])
            np.testing.assert_array_equal(params[f"b_{g}"], bi[sl[j]] + bh[sl[j]])
    elif name.startswith("gru"):
        for j, g in enumerate("rzn"):
            np.testing.assert_array_equal(params[f"W_{g}"], wi[sl[j]])
            np.testing.assert_array_equal(params[f"U_{g}"], wh[sl[j]])
        for j, g in enumerate("rz"):
            np.testing.assert_array_equal(params[f"b_{g}"], bi[sl[j]] + bh[sl[j]])
        np.testing.assert_array_equal(params["b_in"], bi[2 * n:])
        np.testing.assert_array_equal(params["b_hn"], bh[2 * n:])
    else:
        np.testing.assert_array_equal(params["W"], wi)
        np.testing.assert_array_equal(params["U"], wh)
        np.testing.assert_array_equal(params["b"], bi + bh)
    assert validate_params(name, params) == (N, D)


def _gateflow_step(name, p, x, h, c=None):
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    if name == "lstm":
        i, f, g, o = (p[f"W_{k}"] @ x + p[f"U_{k}"] @ h + p[f"b_{k}"] for k in "ifgo")
        c = sig(f) * c + sig(i) * np.tanh(g)
        return sig(o) * np.tanh(c), c
    if name == "gru":
        r = sig(p["W_r"] @ x + p["U_r"] @ h + p["b_r"])
        z = sig(p["W_z"] @ x + p["U_z"] @ h + p["b_z"])
        nn_ = np.tanh(p["W_n"] @ x + p["b_in"] + r * (p["U_n"] @ h + p["b_hn"]))
        return (1 - z) * nn_ + z * h, None
    act = np.tanh if name == "rnn" else (lambda a: np.maximum(a, 0))
    return act(p["W"] @ x + p["U"] @ h + p["b"]), None


@pytest.mark.parametrize("fmt", ["torch.save", "safetensors", "npz"])
def test_real_torch_round_trip(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    for name, mod in _torch_modules(torch).items():
        sd = mod.state_dict()
        if fmt == "torch.save":
            path = tmp_path / f"{name}.pt"
            torch.save(sd, path)
        elif fmt == "safetensors":
            path = tmp_path / f"{name}.safetensors"
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        else:
            path = tmp_path / f"{name}.npz"
            np.savez(path, **{k: v.detach().numpy() for k, v in sd.items()})
        params = load_params(path, name)
        _check_against_torch(name, params, sd)

        # gateflow's save is loadable by the torch module and computes the same function
        out = tmp_path / f"{name}-gf.safetensors"
        save_params(out, name, params)
        from safetensors.torch import load_file
        fresh = type(mod)(D, N, **({"nonlinearity": mod.nonlinearity}
                                   if isinstance(mod, torch.nn.RNN) else {}))
        fresh.load_state_dict({k: v.float() for k, v in load_file(str(out)).items()})
        x = torch.randn(1, 1, D)
        with torch.no_grad():
            want = mod(x)[0].double().numpy().ravel()
            got_t = fresh(x)[0].double().numpy().ravel()
        np.testing.assert_allclose(got_t, want, atol=1e-6)
        if name != "gru-cho":  # gru-cho has the same weights but a different function
            h, _ = _gateflow_step(name, params, x.double().numpy().ravel(), np.zeros(N),
                                  np.zeros(N))
            np.testing.assert_allclose(h, want, atol=1e-6)


def test_real_torch_prefixed_model(tmp_path):
    torch = pytest.importorskip("torch")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(D, N)
            self.head = torch.nn.Linear(N, 2)

    m = Model()
    torch.save(m.state_dict(), tmp_path / "model.pth")
    params = load_params(tmp_path / "model.pth", "lstm")
    _check_against_torch("lstm", params,
                         {k[5:]: v for k, v in m.state_dict().items() if k.startswith("lstm.")})


def test_real_torch_wrong_cell(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.LSTM(D, N).state_dict(), tmp_path / "lstm.pt")
    with pytest.raises(GateflowError, match="weights look like a LSTM with 4 gates; expected "
                                            "an nn.GRU with 3 gates"):
        load_params(tmp_path / "lstm.pt", "gru")
    torch.save(torch.nn.GRU(D, N).state_dict(), tmp_path / "gru.pt")
    with pytest.raises(GateflowError, match="weights look like a GRU with 3 gates"):
        load_params(tmp_path / "gru.pt", "rnn")


def test_real_torch_pickles_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(GateflowError, match="holds a list, not a state_dict"):
        load_params(tmp_path / "list.pt", "lstm")
    torch.save(torch.nn.LSTM(D, N), tmp_path / "module.pt")  # weights_only=True refuses it
    with pytest.raises(GateflowError, match=r"pickles torch\.nn\.modules\.rnn\.LSTM, which "
                                            r"gateflow refuses.*save model\.state_dict\(\)"):
        load_params(tmp_path / "module.pt", "lstm")
    marker = tmp_path / "marker"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for kw in ({}, {"_use_new_zipfile_serialization": False}):  # zip and legacy formats
        torch.save({"w": RunsCode()}, tmp_path / "evil.pt", **kw)
        with pytest.raises(GateflowError, match=r"^'.*evil.pt' pickles posix\.system, which "
                                                r"gateflow refuses to load \(unpickling it could "
                                                r"run code\); save model\.state_dict\(\)"):
            load_params(tmp_path / "evil.pt", "lstm")
        assert not marker.exists()
    lstm = torch.nn.LSTM(D, N)
    want = from_torch_state_dict("lstm", {k: v.detach().numpy() for k, v in
                                          lstm.state_dict().items()})
    for key in ("model", "state_dict", "model_state_dict", "net"):  # checkpoints nest it
        torch.save({key: lstm.state_dict(), "epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pt")
        _assert_same(load_params(tmp_path / "ckpt.pt", "lstm"), want)
    torch.save({"weights": lstm.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    _assert_same(load_params(tmp_path / "ckpt.pt", "lstm"), want)  # found under any key
    torch.save({"weights": {}, "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(GateflowError, match=r"holds no state dict with recurrent weights .*keys "
                                            r"looked at: 'weights' \(an empty dict\), 'epoch'"):
        load_params(tmp_path / "ckpt.pt", "lstm")


def test_torch_missing(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    with zipfile.ZipFile(path, "w") as zf:  # what torch.save writes: a zip with a data.pkl
        zf.writestr("w/data.pkl", b"\x80\x02}q\x00.")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(GateflowError, match=r"pip install 'gateflow\[torch\]'"):
        load_params(path, "lstm")


# -- inputs -------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 6), B=st.integers(1, 4), d=st.integers(1, 5),
       dist=st.sampled_from(["normal", "uniform", "zeros"]), seed=st.integers(0, 99))
def test_make_and_load_inputs(T, B, d, dist, seed):
    x = make_inputs(T, B, d, dist=dist, scale=2.0, seed=seed)
    assert x.shape == (T, B, d) and x.dtype == np.float64
    assert x.tobytes() == make_inputs(T, B, d, dist=dist, scale=2.0, seed=seed).tobytes()
    if dist == "uniform":
        assert np.all(np.abs(x) <= 2.0)
    if dist == "zeros":
        assert not x.any()
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.testing.assert_array_equal(load_inputs(Path(tmp) / "x.npy", d), x)
        np.testing.assert_array_equal(load_inputs(Path(tmp) / "x.npy"), x)


def test_make_inputs_statistics_and_seeds():
    x = make_inputs(50, 20, 30, scale=3.0, seed=1)
    assert x.std() == pytest.approx(3.0, rel=0.03)
    assert not np.array_equal(x, make_inputs(50, 20, 30, scale=3.0, seed=2))
    assert make_inputs(2, 2, 2, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize(("T", "B", "d", "which"), [(0, 1, 1, "sequence length T"),
                                                     (1, 0, 1, "batch size B"),
                                                     (1, 1, 0, "input size d"),
                                                     (-3, 1, 1, "sequence length T")])
def test_make_inputs_bad_sizes(T, B, d, which):
    with pytest.raises(GateflowError, match=which):
        make_inputs(T, B, d)


def test_make_inputs_bad_dist():
    with pytest.raises(GateflowError, match="unknown input distribution 'gauss'"):
        make_inputs(2, 2, 2, dist="gauss")


def test_load_inputs_errors(tmp_path):
    def save(name, arr):
        np.save(tmp_path / name, arr, allow_pickle=True)
        return tmp_path / name

    with pytest.raises(GateflowError, match=r"shape \(5, 3\) \(2-D\); expected 3-D"):
        load_inputs(save("2d.npy", np.zeros((5, 3))))
    with pytest.raises(GateflowError, match="4-D"):
        load_inputs(save("4d.npy", np.zeros((1, 2, 3, 4))))
    x = np.zeros((4, 2, 3))
    x[1, 0, 2] = np.nan
    with pytest.raises(GateflowError, match="1 non-finite"):
        load_inputs(save("nan.npy", x))
    with pytest.raises(GateflowError, match="T \\(time steps\\) is 0"):
        load_inputs(save("t0.npy", np.zeros((0, 2, 3))))
    with pytest.raises(GateflowError, match="B \\(batch\\) is 0"):
        load_inputs(save("b0.npy", np.zeros((3, 0, 3))))
    with pytest.raises(GateflowError, match="d=3 features .* expect d=5"):
        load_inputs(save("ok.npy", np.zeros((4, 2, 3))), d=5)
    with pytest.raises(GateflowError, match="dtype int64; expected floats"):
        load_inputs(save("int.npy", np.zeros((4, 2, 3), dtype=np.int64)))
    with pytest.raises(GateflowError, match="cannot read"):
        load_inputs(save("obj.npy", np.array([None, {}], dtype=object)))
    with pytest.raises(GateflowError, match="not found"):
        load_inputs(tmp_path / "missing.npy")
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 1, 1)))
    with pytest.raises(GateflowError, match="expected a .npy file"):
        load_inputs(tmp_path / "x.npz")
    (tmp_path / "junk.npy").write_bytes(b"garbage")
    with pytest.raises(GateflowError, match="cannot read"):
        load_inputs(tmp_path / "junk.npy")

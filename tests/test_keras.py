"""The Keras reader: .keras archives, Keras 3 .weights.h5 and legacy Keras 2 .h5 files.

Against Keras itself (torch backend, float64): the layer's own output sequence equals
gateflow's states, and every Jacobian block ∂X_T/∂Y_{T−k}, computed with torch.autograd
through Keras's own cell, equals gateflow's, for LSTM, both GRUs and both SimpleRNNs, plain
and Bidirectional. Legacy files are written with h5py following the documented layout, and
hostile files are refused with one line.
"""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import gateflow  # noqa: E402
import gateflow._memory  # noqa: E402
from gateflow import GateflowError  # noqa: E402
from gateflow.models.formats import _keras  # noqa: E402
from tests._keras_ref import (  # noqa: E402
    KERAS_WARNINGS,
    autograd_blocks,
    cell_step,
    gateflow_run,
    keras_cells,
    keras_fixture,  # noqa: F401  (the fixture "keras")
)
from tests._keras_ref import keras_outputs as _keras_outputs  # noqa: E402

T, B, N, D = 6, 2, 3, 2
MIB = 2**20
#: The worst relative errors measured, printed at the end of the session (pytest -s).
WORST = {"forward": 0.0, "jacobian": 0.0}


def scan(path: Path):
    with open(path, "rb") as fh:
        return _keras.scan(fh, path.stat().st_size, path)


def refused(path: Path, match: str) -> str:
    with pytest.raises(GateflowError, match=match) as info:
        scan(path)
    text = str(info.value)
    assert "\n" not in text and len(text) < 400, text
    return text


# -- Keras itself (torch backend) ---------------------------------------------------------
def keras_outputs(layer, x: np.ndarray, direction: str) -> np.ndarray:
    return _keras_outputs(layer, x, direction, N)


def keras_blocks(cell, x: np.ndarray, states: tuple[str, ...]) -> dict[str, np.ndarray]:
    """∂X_T/∂Y_{T−k} by torch.autograd through the Keras cell (see tests._keras_ref)."""
    return autograd_blocks(cell_step(cell), x, N, states)


def make_layer(keras, family: str, bidirectional: bool, backwards: bool = False):
    L = keras.layers
    kw = {"return_sequences": True, "go_backwards": backwards}
    inner = {"lstm": lambda: L.LSTM(N, **kw), "gru": lambda: L.GRU(N, reset_after=True, **kw),
             "gru-cho": lambda: L.GRU(N, reset_after=False, **kw),
             "rnn": lambda: L.SimpleRNN(N, **kw),
             "rnn-relu": lambda: L.SimpleRNN(N, activation="relu", **kw)}[family]()
    return L.Bidirectional(inner) if bidirectional else inner


def build(keras, tmp_path: Path, family: str, bidirectional: bool, backwards: bool = False):
    """A model around one recurrent layer with random weights (biases too), saved both
    ways; returns the model, the layer, the two paths and an input (B, T, d)."""
    keras.utils.set_random_seed(7)
    layer = make_layer(keras, family, bidirectional, backwards)
    model = keras.Sequential([keras.Input((T, D)), layer, keras.layers.Dense(1)])
    rng = np.random.default_rng(11)
    layer.set_weights([rng.uniform(-0.8, 0.8, w.shape) for w in layer.get_weights()])
    full, weights = tmp_path / "m.keras", tmp_path / "m.weights.h5"
    model.save(full)
    model.save_weights(weights)
    return model, layer, full, weights, rng.normal(size=(B, T, D))


CASES = [(family, bi) for family in ("lstm", "gru", "gru-cho", "rnn", "rnn-relu")
         for bi in (False, True)]


@KERAS_WARNINGS
@pytest.mark.parametrize(("family", "bidirectional"), CASES,
                         ids=[f"{'bi-' if b else ''}{f}" for f, b in CASES])
def test_agrees_with_keras(keras, tmp_path, family, bidirectional):
    _, layer, full, weights, x = build(keras, tmp_path, family, bidirectional)
    want_dirs = ("forward", "reverse") if bidirectional else ("forward",)
    for path in (full, weights):
        (rec,) = scan(path)
        assert (rec.framework, rec.layers, rec.hidden, rec.input) == ("Keras", 1, N, D)
        assert rec.directions == want_dirs
        inferred = path is weights
        assert ("inferred from the variable shapes" in rec.note) == inferred
        assert rec.layout == "batch-major"
        if inferred and family.startswith("rnn"):
            assert rec.cell is None and rec.cells == ("rnn", "rnn-relu")
            assert "the activation is not in the file: give cell rnn or cell rnn-relu" \
                in rec.note
        elif inferred:  # the defaults of every Keras that writes this layout, said
            assert rec.cell == family and rec.cells[0] == family
            assert f"{family}[gate=hard_sigmoid(1/6,0.5)]" in rec.cells
            assert ("recurrent_activation sigmoid, activation tanh: the defaults of every "
                    "Keras that writes this layout") in rec.assumed[-1]
        else:
            assert rec.cell == family and rec.cells == (family,) and rec.assumed == ()
        kind = {"lstm": "LSTM", "gru": "GRU", "gru-cho": "GRU"}.get(family, "SimpleRNN")
        assert rec.kind == (f"Bidirectional({kind}) layer" if bidirectional else f"{kind} layer")
        cells = keras_cells(layer)
        for direction in rec.directions:
            params = rec.weights(family, 0, direction)
            assert all(v.dtype == np.float64 and v.flags.c_contiguous for v in params.values())
            xs, res = gateflow_run(family, params, x, direction)
            got = res.states["h"]
            assert np.all(got[0] == 0)
            want = keras_outputs(layer, x, direction)
            err = float(np.max(np.abs(got[1:] - want)) / np.max(np.abs(want)))
            WORST["forward"] = max(WORST["forward"], err)
            assert err < 1e-12, (path.name, direction, err)
            if path is weights:
                continue  # same arrays: the Jacobians are checked once
            states = ("h", "c") if family == "lstm" else ("h",)
            ref = keras_blocks(cells[direction], xs, states)
            assert set(res.blocks) == set(ref)
            for block, norms in ref.items():
                lg = res.blocks[block]["log10_frobenius"]
                zero = norms == 0  # a ReLU unit that stayed off: exactly zero, -inf in log10
                assert np.all(np.isneginf(lg[zero])) and zero.mean() < 0.5, (block, lg)
                rel = np.abs(10.0 ** (lg[~zero] - np.log10(norms[~zero])) - 1.0)
                WORST["jacobian"] = max(WORST["jacobian"], float(rel.max()))
                assert rel.max() < 1e-10, (direction, block, rel.max())


@KERAS_WARNINGS
def test_go_backwards_is_the_reverse_direction(keras, tmp_path):
    _, layer, full, weights, x = build(keras, tmp_path, "lstm", False, backwards=True)
    (rec,) = scan(full)
    assert rec.directions == ("reverse",)
    _, res = gateflow_run("lstm", rec.weights("lstm", 0, "reverse"), x, "reverse")
    assert np.max(np.abs(res.states["h"][1:] - keras_outputs(layer, x, "reverse"))) < 1e-12
    (inferred,) = scan(weights)  # no config: it cannot tell, and says what it assumed
    assert inferred.directions == ("forward",)
    assert "direction forward: the file does not record go_backwards" in inferred.assumed


@KERAS_WARNINGS
def test_nested_models_and_skipped_layers(keras, tmp_path):
    """A Sequential inside a Functional, Dense and Lambda layers skipped, names kept."""
    L = keras.layers
    inp = keras.Input((T, D))
    a = L.LSTM(N, return_sequences=True, name="enc")(inp)
    a = L.Lambda(lambda t: t * 2.0, name="double")(a)
    inner = keras.Sequential([keras.Input((T, N)), L.GRU(2, reset_after=False, name="g"),
                              L.Dense(1)], name="inner")
    out = L.Dense(1)(inner(a))
    model = keras.Model(inp, out)
    model.save(tmp_path / "nested.keras")
    found = {r.module: r for r in scan(tmp_path / "nested.keras")}
    assert set(found) == {"enc", "inner/g"}
    assert (found["inner/g"].cell, found["inner/g"].hidden, found["inner/g"].input) == (
        "gru-cho", 2, N)
    kernel, rk, bias = model.get_layer("inner").get_layer("g").get_weights()
    w = found["inner/g"].weights("gru-cho", 0, "forward")
    np.testing.assert_array_equal(w["W_r"], kernel[:, 2:4].T)
    np.testing.assert_array_equal(w["U_n"], rk[:, 4:6].T)
    np.testing.assert_array_equal(w["b_in"], bias[4:6])
    assert not w["b_hn"].any()


@KERAS_WARNINGS
def test_keras_use_bias_false(keras, tmp_path):
    keras.utils.set_random_seed(3)
    layer = keras.layers.LSTM(N, use_bias=False)
    keras.Sequential([keras.Input((T, D)), layer]).save(tmp_path / "nb.keras")
    (rec,) = scan(tmp_path / "nb.keras")
    w = rec.weights("lstm", 0, "forward")
    assert not any(w[f"b_{g}"].any() for g in "ifgo")
    np.testing.assert_array_equal(w["U_g"], layer.get_weights()[1][:, 2 * N:3 * N].T)


# -- files written with h5py / zipfile, no Keras needed -----------------------------------
def rnn_config(cls: str, name: str, units: int, **extra) -> dict:
    conf = {"name": name, "units": units, "activation": "tanh", "use_bias": True,
            "go_backwards": False, "return_sequences": True}
    if cls != "SimpleRNN":
        conf["recurrent_activation"] = "sigmoid"
    conf.update(extra)
    return {"class_name": cls, "config": conf}


def variables(rng, family: str, n: int, d: int, reset_after: bool = True) -> list[np.ndarray]:
    g = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[family]
    bias = (2, g * n) if family == "GRU" and reset_after else (g * n,)
    return [rng.normal(size=(d, g * n)), rng.normal(size=(n, g * n)), rng.normal(size=bias)]


def write_legacy(path: Path, *, recurrent_activation: str = "sigmoid") -> dict:
    """A tf.keras 2 full-model .h5 written by hand, the documented layout: root attributes
    keras_version, backend and model_config; model_weights/<layer>/<weight name> with
    layer_names and weight_names attributes. Returns the variables by layer."""
    rng = np.random.default_rng(5)
    lstm = variables(rng, "LSTM", 3, 2)
    fwd, bwd = variables(rng, "GRU", 4, 3), variables(rng, "GRU", 4, 3)
    srnn = variables(rng, "SimpleRNN", 2, 8)
    dense = [rng.normal(size=(2, 1)), rng.normal(size=(1,))]
    inner_rnn = rnn_config("SimpleRNN", "simple_rnn", 2, activation="relu")
    config = {"class_name": "Functional", "config": {"name": "model", "layers": [
        {"class_name": "InputLayer", "config": {"name": "input_1",
                                                 "batch_input_shape": [None, 5, 2]},
         "name": "input_1", "inbound_nodes": []},
        {**rnn_config("LSTM", "lstm", 3, recurrent_activation=recurrent_activation),
         "name": "lstm"},
        {"class_name": "Bidirectional", "name": "bidirectional", "config": {
            "name": "bidirectional", "merge_mode": "concat",
            "layer": rnn_config("GRU", "gru", 4, reset_after=True)}},
        {"class_name": "Sequential", "name": "inner", "config": {"name": "inner", "layers": [
            {"class_name": "InputLayer", "config": {"name": "in2"}}, inner_rnn]}},
        {"class_name": "Dense", "name": "dense", "config": {"name": "dense", "units": 1}},
    ]}}
    groups = {
        "input_1": [],
        "lstm": [(f"lstm/lstm_cell/{v}:0", a) for v, a in zip(
            ("kernel", "recurrent_kernel", "bias"), lstm)],
        "bidirectional": [(f"bidirectional/{side}_gru/gru_cell_{i}/{v}:0", a)
                          for i, (side, arrays) in enumerate((("forward", fwd), ("backward", bwd)))
                          for v, a in zip(("kernel", "recurrent_kernel", "bias"), arrays)],
        "inner": [(f"simple_rnn/simple_rnn_cell/{v}:0", a) for v, a in zip(
            ("kernel", "recurrent_kernel", "bias"), srnn)],
        "dense": [("dense/kernel:0", dense[0]), ("dense/bias:0", dense[1])],
    }
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = [k.encode() for k in groups]
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["keras_version"] = "2.15.0"
        for layer, weights in groups.items():
            g = mw.create_group(layer)
            g.attrs["weight_names"] = [name.encode() for name, _ in weights]
            for name, a in weights:
                g.create_dataset(name, data=a)
    return {"lstm": lstm, "forward": fwd, "backward": bwd, "simple_rnn": srnn}


def test_legacy_full_model_h5(tmp_path):
    path = tmp_path / "legacy.h5"
    arrays = write_legacy(path)
    with open(path, "rb") as fh:
        assert _keras.sniff(fh.read(512), None) == "an HDF5 file"
    found = {r.module: r for r in scan(path)}
    assert set(found) == {"lstm", "bidirectional", "inner/simple_rnn"}
    lstm, bi, srnn = found["lstm"], found["bidirectional"], found["inner/simple_rnn"]
    assert (lstm.kind, lstm.cell, lstm.hidden, lstm.input, lstm.directions) == (
        "LSTM layer", "lstm", 3, 2, ("forward",))
    assert (bi.kind, bi.cell, bi.hidden, bi.input, bi.directions) == (
        "Bidirectional(GRU) layer", "gru", 4, 3, ("forward", "reverse"))
    assert (srnn.cell, srnn.hidden, srnn.input) == ("rnn-relu", 2, 8)
    k, r, b = arrays["lstm"]
    w = lstm.weights("lstm", 0, "forward")
    for g, j in zip("ifgo", range(4)):  # Keras's c is gateflow's g
        np.testing.assert_array_equal(w[f"W_{g}"], k[:, 3 * j:3 * j + 3].T)
        np.testing.assert_array_equal(w[f"U_{g}"], r[:, 3 * j:3 * j + 3].T)
        np.testing.assert_array_equal(w[f"b_{g}"], b[3 * j:3 * j + 3])
    for direction, side in (("forward", "forward"), ("reverse", "backward")):
        k, r, b = arrays[side]
        w = bi.weights("gru", 0, direction)
        for g, j in zip("zrn", range(3)):  # Keras's z, r, h
            np.testing.assert_array_equal(w[f"W_{g}"], k[:, 4 * j:4 * j + 4].T)
            np.testing.assert_array_equal(w[f"U_{g}"], r[:, 4 * j:4 * j + 4].T)
        np.testing.assert_array_equal(w["b_z"], b[0, :4] + b[1, :4])
        np.testing.assert_array_equal(w["b_r"], b[0, 4:8] + b[1, 4:8])
        np.testing.assert_array_equal(w["b_in"], b[0, 8:])
        np.testing.assert_array_equal(w["b_hn"], b[1, 8:])
    k, r, b = arrays["simple_rnn"]
    w = srnn.weights("rnn-relu", 0, "forward")
    np.testing.assert_array_equal(w["W"], k.T)
    np.testing.assert_array_equal(w["U"], r.T)
    np.testing.assert_array_equal(w["b"], b)


def test_legacy_weights_only_h5(tmp_path):
    """A legacy save_weights .h5: layer groups at the root, kinds from the shapes. Without
    a keras_version attribute the gate's default (hard_sigmoid before Keras 2.3.0, sigmoid
    since) is unknown: no cell, the two it may be, and the --cell to give."""
    rng = np.random.default_rng(2)
    k, r, b = variables(rng, "GRU", 3, 2, reset_after=False)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.attrs["layer_names"] = [b"gru", b"dense"]
        g = f.create_group("gru")
        names = ["gru/gru_cell/kernel:0", "gru/gru_cell/recurrent_kernel:0",
                 "gru/gru_cell/bias:0"]
        g.attrs["weight_names"] = [name.encode() for name in names]
        for name, a in zip(names, (k, r, b)):
            g.create_dataset(name, data=a)
        f.create_group("dense").attrs["weight_names"] = [b"dense/kernel:0"]
        f["dense"].create_dataset("dense/kernel:0", data=np.ones((3, 1)))
    (rec,) = scan(tmp_path / "w.h5")
    assert (rec.module, rec.cell, rec.hidden, rec.input) == ("gru", None, 3, 2)
    assert rec.cells == ("gru-cho", "gru-cho[gate=hard_sigmoid(0.2,0.5)]")
    assert rec.note == ("kind inferred from the variable shapes (the file has no config); the "
                        "file does not say which Keras wrote it (no keras_version): give "
                        "cell gru-cho or cell 'gru-cho[gate=hard_sigmoid(0.2,0.5)]'")
    w = rec.weights("gru-cho", 0, "forward")
    np.testing.assert_array_equal(w["b_in"], b[6:])
    np.testing.assert_array_equal(w["b_z"], b[:3])
    assert not w["b_hn"].any()


def keras3_weights(layers: dict[str, list[np.ndarray]], names: bool = True) -> bytes:
    """A Keras 3 weights file: layers/<key>/cell/vars/0..2, a vars group naming each."""
    bio = io.BytesIO()
    with h5py.File(bio, "w") as f:
        f.create_group("vars").attrs["name"] = "sequential"
        for key, arrays in layers.items():
            g = f.create_group(f"layers/{key}")
            top = g.create_group("vars")
            if names:
                top.attrs["name"] = key
            if key.startswith("dense"):
                for i, a in enumerate(arrays):
                    top.create_dataset(str(i), data=a)
                continue
            cv = g.create_group("cell/vars")
            for i, a in enumerate(arrays):
                cv.create_dataset(str(i), data=a)
    return bio.getvalue()


def keras3_archive(path: Path, config: dict, weights: bytes, *, compression=zipfile.ZIP_STORED,
                   skip: tuple[str, ...] = ()) -> Path:
    members = {"metadata.json": b'{"keras_version": "3.15.0"}',
               "config.json": json.dumps(config).encode(), "model.weights.h5": weights}
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            if name not in skip:
                zf.writestr(name, data)
    return path


def sequential(*items: dict) -> dict:
    layers = [{"class_name": "InputLayer", "config": {"name": "input_layer"}}, *items]
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def small_archive(path: Path, **conf) -> Path:
    rng = np.random.default_rng(1)
    weights = keras3_weights({"lstm": variables(rng, "LSTM", N, D)})
    return keras3_archive(path, sequential(rnn_config("LSTM", "lstm", N, **conf)), weights)


def test_keras3_archive_without_keras(tmp_path):
    """Layers are found by Keras 3's filing rule (class in snake case, counted) with or
    without the recorded names, and by the recorded names when the rule would miss."""
    rng = np.random.default_rng(4)
    arrays = {"lstm": variables(rng, "LSTM", N, D), "lstm_1": variables(rng, "LSTM", 2, N),
              "dense": [np.ones((2, 1))]}
    config = sequential(rnn_config("LSTM", "first", N), rnn_config("LSTM", "second", 2),
                        {"class_name": "Dense", "config": {"name": "dense"}},
                        {"class_name": "Lambda", "config": {"name": "code", "function": "x"}})
    for names in (False, True):
        path = keras3_archive(tmp_path / f"m{names}.keras", config,
                              keras3_weights(arrays, names=names))
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            assert _keras.sniff(b"PK\x03\x04", zf.namelist()) == "a Keras 3 .keras archive"
        found = {r.module: r for r in scan(path)}
        assert set(found) == {"first", "second"}
        assert (found["second"].hidden, found["second"].input) == (2, N)
        np.testing.assert_array_equal(found["second"].weights("lstm", 0, "forward")["U_o"],
                                      arrays["lstm_1"][1][:, 6:8].T)
    # recorded names win where the filing rule disagrees (here: swapped groups)
    swapped = keras3_weights({"lstm": arrays["lstm_1"], "lstm_1": arrays["lstm"]})
    bio = io.BytesIO(swapped)
    with h5py.File(bio, "r+") as f:
        f["layers/lstm/vars"].attrs["name"] = "second"
        f["layers/lstm_1/vars"].attrs["name"] = "first"
    path = keras3_archive(tmp_path / "swapped.keras", config, bio.getvalue())
    found = {r.module: r for r in scan(path)}
    assert (found["first"].hidden, found["second"].hidden) == (N, 2)


def test_bfloat16_variables(tmp_path):
    """Keras stores bfloat16 as opaque 2-byte words marked dtype=bfloat16: the top halves
    of float32 values, read exactly."""
    rng = np.random.default_rng(6)
    arrays = [a.astype(np.float32) for a in variables(rng, "SimpleRNN", N, D)]
    words = [(a.view(np.uint32) >> 16).astype(np.uint16) for a in arrays]
    exact = [(w.astype(np.uint32) << 16).view(np.float32).astype(np.float64) for w in words]
    bio = io.BytesIO(keras3_weights({"simple_rnn": [w.view("V2") for w in words]}))
    with h5py.File(bio, "r+") as f:
        for i in range(3):
            f[f"layers/simple_rnn/cell/vars/{i}"].attrs["dtype"] = "bfloat16"
    (tmp_path / "bf.weights.h5").write_bytes(bio.getvalue())
    (rec,) = scan(tmp_path / "bf.weights.h5")
    w = rec.weights("rnn", 0, "forward")
    np.testing.assert_array_equal(w["W"], exact[0].T)
    np.testing.assert_array_equal(w["b"], exact[2])
    assert np.max(np.abs(w["U"] - arrays[1].T)) < 1e-2
    assert "bfloat16 weights (8 significant bits): read exactly, analysed in float64" \
        in rec.assumed


@pytest.mark.parametrize(("metadata", "cell"), [
    (b'{"keras_version": "3.15.0"}', "lstm[gate=hard_sigmoid(1/6,0.5)]"),
    (b'{"keras_version": "2.13.1"}', "lstm[gate=hard_sigmoid(0.2,0.5)]"),  # tf.keras
    (None, None)])
def test_archive_hard_sigmoid_is_its_writers(tmp_path, metadata, cell):
    """metadata.json says which Keras wrote a .keras archive, hence which hard_sigmoid its
    config means; without it gateflow asks."""
    path = small_archive(tmp_path / "m.keras", recurrent_activation="hard_sigmoid")
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "metadata.json"}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if metadata is not None:
            zf.writestr("metadata.json", metadata)
    (rec,) = scan(path)
    assert rec.cell == cell and rec.assumed == ()
    if cell is None:
        assert rec.cells == ("lstm[gate=hard_sigmoid(0.2,0.5)]",
                             "lstm[gate=hard_sigmoid(1/6,0.5)]")
        assert rec.note.startswith("recurrent_activation 'hard_sigmoid' is clip(0.2x + 0.5, "
                                   "0, 1) in Keras 2 and relu6(x + 3)/6 in Keras 3")


def test_weights_only_skips_what_fits_no_family(tmp_path):
    """A weights tree with a cell of four variables, or of shapes no LSTM, GRU or SimpleRNN
    has: skipped, each said, and the LSTM beside them still found."""
    rng = np.random.default_rng(7)
    bio = io.BytesIO(keras3_weights({"lstm": variables(rng, "LSTM", N, D),
                                     "odd": [np.ones((2, 5)), np.ones((3, 5)), np.ones(5)]}))
    with h5py.File(bio, "r+") as f:
        for i in range(4):
            f.create_dataset(f"layers/custom/cell/vars/{i}", data=np.ones((2, 2)))
    (tmp_path / "w.weights.h5").write_bytes(bio.getvalue())
    found = scan(tmp_path / "w.weights.h5")
    assert [r.module for r in found.modules] == ["lstm"]
    assert set(found.skipped) == {
        "Keras layer 'custom': a cell with variables ['0', '1', '2', '3'], not kernel, "
        "recurrent kernel and bias",
        "Keras layer 'odd': variables of shapes (2, 5), (3, 5), (5,) fit no LSTM, GRU or "
        "SimpleRNN"}
    rec = found.modules[0]
    other = rec.weights("lstm[candidate=softsign,output=softsign]", 0, "forward")  # any
    assert set(other) == set(rec.weights("lstm", 0, "forward"))  # activations: same arrays
    with pytest.raises(GateflowError, match="fits cell 'lstm' or"):
        rec.weights("gru", 0, "forward")


def test_weights_refusals(tmp_path):
    (rec,) = scan(small_archive(tmp_path / "m.keras"))
    with pytest.raises(GateflowError, match="has one layer"):
        rec.weights("lstm", 1, "forward")
    with pytest.raises(GateflowError, match="runs forward, not 'reverse'"):
        rec.weights("lstm", 0, "reverse")
    with pytest.raises(GateflowError, match="fits cell 'lstm', not 'gru'"):
        rec.weights("gru", 0, "forward")


# -- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["selu", "swish", "gelu", "exponential", "relu6"])
def test_activations_gateflow_lacks_are_refused(tmp_path, name):
    write_legacy(tmp_path / "old.h5", recurrent_activation=name)
    refused(tmp_path / "old.h5", rf"^Keras layer 'lstm' \(LSTM layer\) uses recurrent_activation "
            rf"'{name}', which gateflow does not have; it reads Keras's sigmoid, hard_sigmoid, "
            r"tanh, relu, linear, softsign, softplus, elu$")
    small_archive(tmp_path / "m.keras", activation=name)
    refused(tmp_path / "m.keras", rf"^Keras layer 'lstm' \(LSTM layer\) uses activation "
            rf"'{name}', which")


def test_custom_activation_is_refused(tmp_path):
    custom = {"module": "builtins", "class_name": "function", "config": "swish2",
              "registered_name": "my>swish2"}
    small_archive(tmp_path / "m.keras", activation=custom)
    refused(tmp_path / "m.keras", r"Keras layer 'lstm' .* uses activation 'custom my>swish2', "
            "which gateflow does not have")


def test_truncated_files_are_refused(tmp_path):
    data = small_archive(tmp_path / "m.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.keras", r"^cannot read '.*cut\.keras': not a valid Keras file "
            r"\(BadZipFile: .*\); re-save")
    rng = np.random.default_rng(0)
    h5 = keras3_weights({"gru": variables(rng, "GRU", N, D)})
    (tmp_path / "cut.weights.h5").write_bytes(h5[: len(h5) // 2])
    refused(tmp_path / "cut.weights.h5", r"^cannot read '.*cut\.weights\.h5': not a valid "
            r"Keras file \(")


def test_garbage_is_refused(tmp_path):
    path = tmp_path / "garbage.keras"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with open(path, "rb") as fh:
        assert _keras.sniff(fh.read(512), None) is None
    refused(path, r"not a valid Keras file \(neither a \.keras zip archive nor an HDF5 file\)")


def test_archive_without_weights_is_refused(tmp_path):
    path = keras3_archive(tmp_path / "m.keras", sequential(), b"", skip=("model.weights.h5",))
    with zipfile.ZipFile(path) as zf:
        assert _keras.sniff(b"PK\x03\x04", zf.namelist()) is None
    refused(path, r"not a valid Keras file \(the archive has no model\.weights\.h5 member\)")


def test_zip_bomb_is_never_inflated(tmp_path, monkeypatch):
    """64 MiB of zeros deflate to about 64 KiB: refused from the declared size, unread."""
    path = keras3_archive(tmp_path / "bomb.keras", sequential(), bytes(64 * MIB),
                          compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < MIB // 4
    monkeypatch.setattr(gateflow._memory, "available_memory", lambda backend="numpy": 16 * MIB)

    def no_inflating(*args, **kwargs):
        raise AssertionError("a member of a zip bomb was read")

    monkeypatch.setattr(zipfile.ZipFile, "read", no_inflating)
    monkeypatch.setattr(zipfile.ZipFile, "open", no_inflating)
    refused(path, r"^reading '.*bomb\.keras' needs about \d+ MiB but only 16 MiB is free")


def test_zip_size_lies_are_refused(tmp_path):
    """A stored member whose directory entry claims more bytes than it holds."""
    path = small_archive(tmp_path / "m.keras")
    data = bytearray(path.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the last central entry: model.weights.h5
    assert data[entry + 46:entry + 46 + 16] == b"model.weights.h5"
    data[entry + 24:entry + 28] = (10**9).to_bytes(4, "little")  # uncompressed size
    path.write_bytes(bytes(data))
    refused(path, r"member 'model\.weights\.h5' declares 1000000000 bytes from \d+ "
            r"compressed, which cannot be true")


def test_no_recurrent_layer_gives_nothing(tmp_path):
    with h5py.File(tmp_path / "dense.weights.h5", "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.ones((2, 3)))
    found = scan(tmp_path / "dense.weights.h5")
    assert (found.modules, found.skipped) == ((), ())
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("x", data=np.ones(3))
    found = scan(tmp_path / "plain.h5")
    assert (found.modules, found.skipped) == ((), ())


def test_bad_shapes_and_dtypes_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    k, r, b = variables(rng, "LSTM", N, D)
    config = sequential(rnn_config("LSTM", "lstm", N))
    path = keras3_archive(tmp_path / "shape.keras", config,
                          keras3_weights({"lstm": [k, r[:, :-1], b]}))
    refused(path, r"Keras layer 'lstm' \(forward\) has variables of shapes .* not those of an?"
            r" LSTM")
    path = keras3_archive(tmp_path / "units.keras", sequential(rnn_config("LSTM", "lstm", 5)),
                          keras3_weights({"lstm": [k, r, b]}))
    refused(path, r"not those of a LSTM")
    path = keras3_archive(tmp_path / "int.keras", config,
                          keras3_weights({"lstm": [k.astype(np.int64), r, b]}))
    refused(path, r"has dtype int64; Keras weights must be floating point")
    path = keras3_archive(tmp_path / "nan.keras", config,
                          keras3_weights({"lstm": [k, r * np.nan, b]}))
    (rec,) = scan(path)
    with pytest.raises(GateflowError):
        rec.weights("lstm", 0, "forward")


def test_missing_h5py_is_named(tmp_path, monkeypatch):
    path = small_archive(tmp_path / "m.keras")
    monkeypatch.setitem(sys.modules, "h5py", None)
    refused(path, re.escape("needs h5py; install it with pip install 'gateflow[keras]'"))


def test_worst_errors_reported(capsys):
    """Runs last in this module: prints the worst relative errors measured against Keras."""
    if not WORST["forward"]:
        pytest.skip("nothing was measured against Keras")
    with capsys.disabled():
        print(f"\n[keras] worst relative error: forward {WORST['forward']:.2e}, "
              f"jacobian {WORST['jacobian']:.2e}")


# -- through the command line -------------------------------------------------------------
def test_cli_on_a_keras_archive(tmp_path, sandbox):
    """A .keras archive read without Keras: inspect lists the layer with its command;
    decay takes the cell from the file; a cell that contradicts it is one error line."""
    from gateflow import all_lags, load_model
    from tests._hostile import assert_clean_error, run_cli

    small_archive(Path("m.keras"))
    out = run_cli("inspect", "m.keras")
    assert out.exit_code == 0, out.stderr
    assert "Keras LSTM layer" in out.stdout and "gateflow decay --weights m.keras" in out.stdout
    out = run_cli("decay", "-w", "m.keras", "--steps", 5, "--batch", 2, "--json", "k.json",
                  "-q")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("k.json").read_text())
    assert doc["cell"] == "lstm" and doc["weights"]["framework"] == "Keras"
    cell, params = load_model("m.keras")
    assert cell.name == "lstm" and params["U_f"].shape == (N, N)
    assert_clean_error(run_cli("decay", "-w", "m.keras", "--cell", "gru"),
                       r"--cell gru contradicts the file: .*is cell 'lstm'")
    assert all_lags(cell, params, np.zeros((3, 1, D))).blocks["c/c"]["log10_frobenius"].shape \
        == (3, 1)

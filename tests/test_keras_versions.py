"""Keras files read as the Keras that wrote them computed.

A layer's activations come from its config; a file without one (``save_weights``) is read
with the defaults of the Keras version that wrote it (``keras_version``), and says so in one
``assumed`` line; where the file does not say which Keras that was, gateflow asks. Keras 2's
``hard_sigmoid`` is clip(0.2x + 0.5, 0, 1), Keras 3's relu6(x + 3)/6.

Keras 2 files are written with h5py in Keras 2.2.0's layout (``model.save`` and
``save_weights``); Keras 3 files by Keras 3 itself (torch backend). Every decay number is
checked, every lag and block, against a float64 PyTorch step written from the raw arrays with
the declared activations (``tests/_keras_ref.py``), and Keras 3's against Keras's own outputs
and autograd through its own cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytest.importorskip("torch")

from gateflow import GateflowError, load_model  # noqa: E402
from gateflow.models.formats import _keras  # noqa: E402
from gateflow.models.formats._keras_config import Writer, choose  # noqa: E402
from tests._hostile import assert_clean_error, run_cli  # noqa: E402
from tests._keras_ref import (  # noqa: E402
    KERAS_WARNINGS,
    RTOL,
    autograd_blocks,
    cell_step,
    gateflow_run,
    keras_cells,
    keras_fixture,  # noqa: F401  (the fixture "keras")
    keras_outputs,
    keras_step,
    max_decades,
    states_of,
    worst_error,
)

T, B = 12, 2
K2 = "hard_sigmoid(0.2,0.5)"
K3 = "hard_sigmoid(1/6,0.5)"
SAID_220 = ("recurrent_activation hard_sigmoid(0.2,0.5), activation tanh: the defaults of "
            "Keras 2.2.0 that wrote the file (the file records no activations)")


def scan(path: Path):
    with open(path, "rb") as fh:
        return _keras.scan(fh, path.stat().st_size, path)


def by_module(path: Path) -> dict:
    return {r.module: r for r in scan(path)}


# -- the rules, table by table ------------------------------------------------------------
def lstm_without_config(version, layout="legacy"):
    return choose("LSTM", None, Writer(version, layout), "Keras layer 'l' (LSTM layer)", None)


@pytest.mark.parametrize(("version", "cell", "who"), [
    ("2.0.0", f"lstm[gate={K2}]", "Keras 2.0.0 that wrote the file"),
    ("2.2.0", f"lstm[gate={K2}]", "Keras 2.2.0 that wrote the file"),
    ("2.2.5", f"lstm[gate={K2}]", "Keras 2.2.5 that wrote the file"),  # the last before
    ("2.3.0", "lstm", "Keras 2.3.0 that wrote the file"),
    ("2.3.0-tf", "lstm", "Keras 2.3.0-tf that wrote the file"),  # tf.keras, TensorFlow 2.2
    ("2.15.0", "lstm", "Keras 2.15.0 that wrote the file"),
    ("3.4.1", "lstm", "Keras 3.4.1 that wrote the file"),
])
def test_config_less_defaults_follow_the_writer(version, cell, who):
    choice = lstm_without_config(version)
    gate = K2 if "hard" in cell else "sigmoid"
    assert choice.cell == cell and choice.note == ""
    assert choice.assumed == (f"recurrent_activation {gate}, activation tanh: the defaults "
                              f"of {who} (the file records no activations)",)
    # what a user may mean instead, with --cell: the other gate of that Keras
    other = K3 if version.startswith("3") else K2
    assert set(choice.cells) == {cell, "lstm", f"lstm[gate={other}]"}
    assert choice.cells[0] == cell


def test_the_new_layout_defaults_to_sigmoid_without_a_version():
    choice = lstm_without_config(None, "saving-lib")
    assert choice.cell == "lstm"
    assert choice.assumed == ("recurrent_activation sigmoid, activation tanh: the defaults of "
                              "every Keras that writes this layout (tf.keras >= 2.10, Keras 3)"
                              " (the file records no activations)",)


@pytest.mark.parametrize(("version", "why"), [
    (None, "the file does not say which Keras wrote it (no keras_version)"),
    ("2.2.4-tf", "Keras 2.2.4-tf (tf.keras) wrote it, which defaulted to hard_sigmoid under "
                 "TensorFlow 1 and to sigmoid under TensorFlow 2"),
    ("2.1.6-tf", "Keras 2.1.6-tf (tf.keras) wrote it"),
])
def test_a_file_that_cannot_say_asks(version, why):
    choice = lstm_without_config(version)
    assert choice.cell is None and choice.assumed == ()
    assert choice.cells == ("lstm", f"lstm[gate={K2}]")
    assert choice.note.startswith(why)
    assert choice.note.endswith(f": give cell lstm or cell 'lstm[gate={K2}]'")  # (--cell)


@pytest.mark.parametrize(("version", "cell", "said"), [
    ("2.1.4", f"gru-cho[gate={K2}]", "reset_after=False"),  # before reset_after existed
    ("2.2.0", f"gru-cho[gate={K2}]", "reset_after=False"),
    ("2.3.1", "gru-cho", "reset_after=False"),  # 2.3 changed the gate, not reset_after
    ("2.4.0", "gru", "reset_after=True"),  # tf.keras from here on
    ("3.0.0", "gru", "reset_after=True"),
])
def test_a_gru_without_bias_takes_the_writers_reset_after(version, cell, said):
    choice = choose("GRU", None, Writer(version), "Keras layer 'g' (GRU layer)", None)
    assert choice.cell == cell
    assert f"activation tanh, {said}: the defaults of Keras {version}" in choice.assumed[0]
    undecided = choose("GRU", None, Writer("2.2.4-tf"), "g", None)
    assert undecided.cell is None and len(undecided.cells) == 4  # 2 gates x 2 forms


@pytest.mark.parametrize(("version", "cell"), [
    ("2.15.0", f"lstm[gate={K2}]"), ("2.2.0", f"lstm[gate={K2}]"), ("3.0.0", f"lstm[gate={K3}]"),
    ("3.15.1", f"lstm[gate={K3}]")])
def test_hard_sigmoid_is_the_writers(version, cell):
    conf = {"activation": "tanh", "recurrent_activation": "hard_sigmoid"}
    choice = choose("LSTM", conf, Writer(version), "l", None)
    assert (choice.cell, choice.cells, choice.assumed) == (cell, (cell,), ())


def test_hard_sigmoid_of_an_unknown_keras_asks():
    conf = {"activation": "tanh", "recurrent_activation": "hard_sigmoid"}
    choice = choose("GRU", conf, Writer(None), "g", False)
    assert choice.cell is None and choice.cells == (f"gru-cho[gate={K2}]", f"gru-cho[gate={K3}]")
    assert choice.note == (
        "recurrent_activation 'hard_sigmoid' is clip(0.2x + 0.5, 0, 1) in Keras 2 and "
        "relu6(x + 3)/6 in Keras 3, and the file does not say which Keras wrote it: give "
        f"cell 'gru-cho[gate={K2}]' or cell 'gru-cho[gate={K3}]'")


@pytest.mark.parametrize(("given", "spelled"), [
    ("relu", "relu"), ("linear", "linear"), (None, "linear"), ("softsign", "softsign"),
    ("softplus", "softplus"), ("elu", "elu(1)"), ("sigmoid", "sigmoid"),
    ({"module": "keras.activations", "class_name": "function", "config": "softsign",
      "registered_name": "softsign"}, "softsign"),
])
def test_activation_spellings(given, spelled):
    for family, base, roles in (("LSTM", "lstm", "candidate={0},output={0}"),
                                ("GRU", "gru", "candidate={0}"),
                                ("SimpleRNN", "rnn", "candidate={0}")):
        conf = {"activation": given, "recurrent_activation": "sigmoid"}
        choice = choose(family, conf, Writer("2.15.0"), "x", True)
        want = base if spelled == "tanh" else f"{base}[{roles.format(spelled)}]"
        if family == "SimpleRNN" and spelled == "relu":
            want = "rnn-relu"
        assert choice.cell == want, (family, given)


def test_keras3_leaky_relu_and_refusals():
    conf = {"activation": "leaky_relu", "recurrent_activation": "sigmoid"}
    assert choose("GRU", conf, Writer("3.2.0"), "x", True).cell == \
        "gru[candidate=leaky_relu(0.2)]"
    with pytest.raises(GateflowError, match=r"^Keras layer 'g' \(GRU layer\) uses activation "
                                            r"'leaky_relu', which gateflow does not have"):
        choose("GRU", conf, Writer("2.15.0"), "Keras layer 'g' (GRU layer)", True)
    conf = {"activation": "tanh", "recurrent_activation": "selu"}
    with pytest.raises(GateflowError, match="uses recurrent_activation 'selu', which"):
        choose("LSTM", conf, Writer("3.2.0"), "Keras layer 'l' (LSTM layer)", None)


# -- Keras 2 files, written with h5py in Keras 2.2.0's layout -----------------------------
def arrays(rng, g: int, n: int, d: int, bias) -> list:
    out = [rng.normal(0, 0.7, (d, g * n)), rng.normal(0, 0.7, (n, g * n))]
    return out + ([] if bias is None else [rng.normal(0, 0.7, bias)])


#: name -> (class, units, d, config extras, variables (per direction), reset_after)
def keras2_layers(seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    n = 3
    return {
        "lstm_1": ("LSTM", n, 2, {}, [arrays(rng, 4, n, 2, (4 * n,))], None),
        "bidirectional_1": ("GRU", n, 2 * n, {"reset_after": False},
                            [arrays(rng, 3, n, 2 * n, (3 * n,)) for _ in range(2)], False),
        "bidirectional_2": ("GRU", n, 2 * n, {"reset_after": True},
                            [arrays(rng, 3, n, 2 * n, (2, 3 * n)) for _ in range(2)], True),
        "gru_2": ("GRU", n, 2, {"reset_after": False, "use_bias": False},
                  [arrays(rng, 3, n, 2, None)], False),
    }


def write_keras2(path: Path, layers: dict, *, config: bool, version: str | None = "2.2.0",
                 recurrent_activation: str = "hard_sigmoid", dtype=np.float32) -> Path:
    """A Keras 2.2.0 file: ``model.save`` (model_config and model_weights) when ``config``,
    else ``save_weights`` (layer groups at the root); weight names as 2.2.0 wrote them
    (``lstm_1/kernel:0``, ``bidirectional_1/forward_gru_1/kernel:0``)."""
    confs, groups = [], {}
    for name, (cls, units, _, extra, sides, _) in layers.items():
        inner = {"name": name if len(sides) == 1 else "gru_1", "units": units,
                 "activation": "tanh", "recurrent_activation": recurrent_activation,
                 "use_bias": True, "return_sequences": True, "go_backwards": False, **extra}
        if len(sides) == 1:
            confs.append({"class_name": cls, "config": inner})
            prefixes = [name]
        else:
            confs.append({"class_name": "Bidirectional", "config": {
                "name": name, "merge_mode": "concat",
                "layer": {"class_name": cls, "config": inner}}})
            prefixes = [f"{name}/forward_gru_1", f"{name}/backward_gru_1"]
        groups[name] = [(f"{p}/{role}:0", a) for p, side in zip(prefixes, sides)
                        for role, a in zip(("kernel", "recurrent_kernel", "bias"), side)]
    groups["dense_1"] = [("dense_1/kernel:0", np.ones((6, 1))), ("dense_1/bias:0", np.ones(1))]
    confs.append({"class_name": "Dense", "config": {"name": "dense_1", "units": 1}})
    with h5py.File(path, "w") as f:
        if version is not None:
            f.attrs["keras_version"] = np.bytes_(version)
        f.attrs["backend"] = np.bytes_("tensorflow")
        root = f
        if config:
            f.attrs["model_config"] = json.dumps({"class_name": "Sequential",
                                                  "config": confs}).encode()
            root = f.create_group("model_weights")
            if version is not None:
                root.attrs["keras_version"] = np.bytes_(version)
        root.attrs["layer_names"] = [k.encode() for k in groups]
        for layer, weights in groups.items():
            g = root.create_group(layer)
            g.attrs["weight_names"] = [w.encode() for w, _ in weights]
            for w, a in weights:
                g.create_dataset(w, data=np.asarray(a, dtype=dtype))
    return path


def check_against_reference(rec, cell: str, spec: tuple, gate: str) -> float:
    """Every direction of ``rec`` read as ``cell``, against the float64 PyTorch step of its
    raw (float32-rounded) arrays with ``gate``: the worst relative error."""
    cls, _, d, _, sides, reset = spec
    worst = 0.0
    rng = np.random.default_rng(9)
    x = rng.normal(0, 1.5, (B, T, d))
    for direction, side in zip(("forward", "reverse"), sides):
        raw = [np.asarray(a, dtype=np.float32).astype(np.float64) for a in side]
        bias = raw[2] if len(raw) == 3 else None
        step = keras_step(cls, raw[0], raw[1], bias, gate=gate, reset_after=bool(reset))
        xs, res = gateflow_run(cell, rec.weights(cell, 0, direction), x, direction)
        worst = max(worst, worst_error(res, autograd_blocks(step, xs, raw[1].shape[0],
                                                            states_of(cls))))
    return worst


@pytest.mark.parametrize("config", [True, False], ids=["model.save", "save_weights"])
def test_keras2_files_read_as_keras2_computed(tmp_path, config):
    """hard_sigmoid(0.2,0.5) gates, from the config or from Keras 2.2.0's defaults, and
    both GRU forms (a GRU without bias: 2.2.0's reset_after=False); every lag and block
    against the float64 reference."""
    layers = keras2_layers()
    found = by_module(write_keras2(tmp_path / "k2.h5", layers, config=config))
    want = {"lstm_1": f"lstm[gate={K2}]", "bidirectional_1": f"gru-cho[gate={K2}]",
            "bidirectional_2": f"gru[gate={K2}]", "gru_2": f"gru-cho[gate={K2}]"}
    assert set(found) == set(want)
    for name, cell in want.items():
        rec = found[name]
        assert rec.cell == cell and rec.layout == "batch-major", name
        if config:
            assert rec.assumed == () and rec.cells == (cell,)
        else:
            said = SAID_220.replace(", activation tanh", ", activation tanh, reset_after=False") \
                if name == "gru_2" else SAID_220
            assert said in rec.assumed, (name, rec.assumed)
            assert len([a for a in rec.assumed if "defaults" in a]) == 1
        worst = check_against_reference(rec, cell, layers[name], K2)
        assert worst < RTOL, (name, worst)


def test_the_old_silent_error_is_gone(tmp_path):
    """A weights-only file of Keras 2.2.0, whose LSTM gates were hard_sigmoid: read as a
    sigmoid LSTM (what gateflow did, silently) c/c is off by tenths of a decade; read now,
    it agrees with the reference to 1e-10 and says what it assumed."""
    rng = np.random.default_rng(3)
    n, d, steps = 4, 2, 20
    side = arrays(rng, 4, n, d, (4 * n,))
    side[2][n:2 * n] += 1.0  # Keras's unit_forget_bias
    layers = {"lstm_1": ("LSTM", n, d, {}, [side], None)}
    (rec,) = scan(write_keras2(tmp_path / "w.h5", layers, config=False))
    assert rec.cell == f"lstm[gate={K2}]" and SAID_220 in rec.assumed
    raw = [np.asarray(a, dtype=np.float32).astype(np.float64) for a in side]
    x = rng.normal(0, 1.5, (B, steps, d))
    xs, res = gateflow_run(rec.cell, rec.weights(rec.cell, 0, "forward"), x, "forward")
    ref = autograd_blocks(keras_step("LSTM", *raw, gate=K2), xs, n, ("h", "c"))
    assert worst_error(res, ref) < RTOL
    _, old = gateflow_run("lstm", rec.weights("lstm", 0, "forward"), x, "forward")
    off = {block: max_decades(old, ref, block) for block in ref}
    print(f"\n[keras] a Keras 2.2.0 hard_sigmoid LSTM read with sigmoid gates is off by up to "
          f"{off['c/c']:.2f} decades in c/c, {max(off.values()):.2f} in any block "
          f"(lags 1..{steps})")
    assert off["c/c"] > 0.2


def test_cli_says_the_assumption_once(tmp_path, sandbox):
    write_keras2(Path("w.h5"), keras2_layers(), config=False)
    out = run_cli("decay", "-w", "w.h5", "--module", "lstm_1", "--steps", 6, "--batch", 2,
                  "--json", "d.json", "-q")
    assert out.exit_code == 0, out.stderr
    said = [line for line in out.stderr.splitlines() if SAID_220 in line]
    assert len(said) == 1 and said[0].startswith("note: "), out.stderr
    assert json.loads(Path("d.json").read_text())["cell"] == f"lstm[gate={K2}]"
    out = run_cli("inspect", "w.h5")
    assert out.exit_code == 0, out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert SAID_220 in text


def test_cli_asks_when_the_file_cannot_say(tmp_path, sandbox):
    write_keras2(Path("w.h5"), keras2_layers(), config=False, version=None)
    out = run_cli("decay", "-w", "w.h5", "--module", "lstm_1", "--steps", 6, "--batch", 2)
    assert_clean_error(out, r"module 'lstm_1' \(LSTM layer\): kind inferred from the variable "
                            r"shapes \(the file has no config\); the file does not say which "
                            r"Keras wrote it \(no keras_version\): give --cell lstm or --cell "
                            r"'lstm\[gate=hard_sigmoid\(0\.2,0\.5\)\]'$")
    cell, params = load_model("w.h5", "lstm_1", cell=f"lstm[gate={K2}]")  # the answer
    assert cell.name == f"lstm[gate={K2}]" and params["U_f"].shape == (3, 3)
    with pytest.raises(GateflowError, match="contradicts the file"):
        load_model("w.h5", "lstm_1", cell="gru")


def test_cli_takes_the_cell_it_asked_for(tmp_path, sandbox):
    write_keras2(Path("w.h5"), keras2_layers(), config=False, version=None)
    out = run_cli("decay", "-w", "w.h5", "--module", "lstm_1", "--steps", 6, "--batch", 2,
                  "--cell", f"lstm[gate={K2}]", "--json", "d.json", "-q")
    assert out.exit_code == 0, out.stderr
    assert json.loads(Path("d.json").read_text())["cell"] == f"lstm[gate={K2}]"


def test_a_weights_only_file_takes_any_declared_activations(tmp_path):
    write_keras2(tmp_path / "w.h5", keras2_layers(), config=False)
    want = "lstm[candidate=softsign,output=softsign]"
    cell, _ = load_model(tmp_path / "w.h5", "lstm_1", cell=want)
    assert cell.name == want
    # A file whose config declares the activations fits only those: another is refused.
    write_keras2(tmp_path / "c.h5", keras2_layers(), config=True)
    with pytest.raises(GateflowError, match="contradicts the file"):
        load_model(tmp_path / "c.h5", "lstm_1", cell=want)


def test_precision_is_said(tmp_path):
    layers = {k: v for k, v in keras2_layers().items() if k == "lstm_1"}
    rec = by_module(write_keras2(tmp_path / "h.h5", layers, config=False,
                                 dtype=np.float16))["lstm_1"]
    assert "float16 weights (11 significant bits): read exactly, analysed in float64" \
        in rec.assumed
    rec = by_module(write_keras2(tmp_path / "s.h5", layers, config=True))["lstm_1"]
    assert not any("float" in a for a in rec.assumed)  # float32: nothing to say


def test_cudnn_layers_are_lstm_and_gru(tmp_path):
    """tf.keras's CuDNNLSTM (bias (8n,)) and CuDNNGRU (bias (6n,)): sigmoid and tanh always,
    whatever the version; both rows of the bias count."""
    rng = np.random.default_rng(4)
    n, d = 3, 2
    lstm, gru = arrays(rng, 4, n, d, (8 * n,)), arrays(rng, 3, n, d, (6 * n,))
    config = {"class_name": "Sequential", "config": [
        {"class_name": "CuDNNLSTM", "config": {"name": "cu_dnnlstm_1", "units": n,
                                               "return_sequences": True}},
        {"class_name": "CuDNNGRU", "config": {"name": "cu_dnngru_1", "units": n}}]}
    groups = {"cu_dnnlstm_1": lstm, "cu_dnngru_1": gru}
    for with_config in (True, False):
        path = tmp_path / f"cudnn{with_config}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["keras_version"] = b"2.2.0"  # hard_sigmoid by default, but not for cuDNN
            root = f
            if with_config:
                f.attrs["model_config"] = json.dumps(config).encode()
                root = f.create_group("model_weights")
            root.attrs["layer_names"] = [k.encode() for k in groups]
            for name, side in groups.items():
                g = root.create_group(name)
                names = [f"{name}/{r}:0" for r in ("kernel", "recurrent_kernel", "bias")]
                g.attrs["weight_names"] = [w.encode() for w in names]
                for w, a in zip(names, side):
                    g.create_dataset(w, data=a.astype(np.float32))
        found = by_module(path)
        assert {m: (r.cell, r.kind) for m, r in found.items()} == {
            "cu_dnnlstm_1": ("lstm", "CuDNNLSTM layer"),
            "cu_dnngru_1": ("gru", "CuDNNGRU layer")}
        assert not any("defaults" in a for r in found.values() for a in r.assumed)
        for name, family, side in (("cu_dnnlstm_1", "LSTM", lstm),
                                   ("cu_dnngru_1", "GRU", gru)):
            spec = (family, n, d, {}, [side], True)
            assert check_against_reference(found[name], found[name].cell, spec,
                                           "sigmoid") < RTOL


def test_unreadable_recurrent_layers_are_skipped_and_said(tmp_path, sandbox):
    config = {"class_name": "Sequential", "config": [
        {"class_name": "ConvLSTM2D", "config": {"name": "conv_lst_m2d_1", "filters": 2}},
        {"class_name": "RNN", "config": {"name": "rnn_1", "cell": {
            "class_name": "MinimalRNNCell", "config": {"units": 3}}}},
        {"class_name": "Dense", "config": {"name": "dense_1"}}]}
    with h5py.File("skip.h5", "w") as f:
        f.attrs["keras_version"] = b"2.2.0"
        f.attrs["model_config"] = json.dumps(config).encode()
        mw = f.create_group("model_weights")
        for name in ("conv_lst_m2d_1", "rnn_1", "dense_1"):
            mw.create_group(name).attrs["weight_names"] = []
    found = scan(Path("skip.h5"))
    assert found.modules == ()
    assert found.skipped == (
        "Keras layer 'conv_lst_m2d_1' (ConvLSTM2D): not a layer gateflow reads (it reads LSTM, "
        "GRU, SimpleRNN, their cuDNN forms, RNN of their cells, Bidirectional of those)",
        "Keras layer 'rnn_1' (RNN(MinimalRNNCell)): not a layer gateflow reads (it reads "
        "LSTM, GRU, SimpleRNN, their cuDNN forms, RNN of their cells, Bidirectional of "
        "those)")
    assert_clean_error(run_cli("decay", "-w", "skip.h5", "--steps", 4), r"conv_lst_m2d_1")


def test_time_major_is_said(tmp_path):
    layers = {k: v for k, v in keras2_layers().items() if k == "lstm_1"}
    layers["lstm_1"] = (*layers["lstm_1"][:3], {"time_major": True}, *layers["lstm_1"][4:])
    rec = by_module(write_keras2(tmp_path / "tm.h5", layers, config=True,
                                 version="2.4.0"))["lstm_1"]
    assert rec.layout == "time-major"
    assert rec.cell == f"lstm[gate={K2}]"  # tf.keras 2.4's hard_sigmoid: still Keras 2's


# -- Keras 3 files, written by Keras 3 ----------------------------------------------------
N3, D3, T3 = 3, 2, 6


def keras3_layer(keras, kind: str):
    L = keras.layers
    kw = {"return_sequences": True, "recurrent_activation": "hard_sigmoid"}
    return {"lstm": lambda: L.LSTM(N3, **kw),
            "gru": lambda: L.GRU(N3, reset_after=True, **kw),
            "gru-cho": lambda: L.GRU(N3, reset_after=False, **kw),
            "bi-gru": lambda: L.Bidirectional(L.GRU(N3, reset_after=True, **kw)),
            "lstm-softsign": lambda: L.LSTM(N3, return_sequences=True, activation="softsign"),
            "gru-elu": lambda: L.GRU(N3, return_sequences=True, activation="elu"),
            "rnn-softplus": lambda: L.SimpleRNN(N3, return_sequences=True,
                                                activation="softplus")}[kind]()


KERAS3 = {"lstm": f"lstm[gate={K3}]", "gru": f"gru[gate={K3}]",
          "gru-cho": f"gru-cho[gate={K3}]", "bi-gru": f"gru[gate={K3}]",
          "lstm-softsign": "lstm[candidate=softsign,output=softsign]",
          "gru-elu": "gru[candidate=elu(1)]", "rnn-softplus": "rnn[candidate=softplus]"}


@KERAS_WARNINGS
@pytest.mark.parametrize("kind", list(KERAS3))
def test_keras3_files_read_as_keras3_computed(keras, tmp_path, kind):
    """A .keras archive names its activations (hard_sigmoid: Keras 3's), and so does Keras 3's
    legacy .h5; the weights-only twin is read with the defaults (sigmoid, tanh) and says so,
    and gives the same arrays for the declared cell, which agrees with Keras."""
    keras.utils.set_random_seed(5)
    layer = keras3_layer(keras, kind)
    model = keras.Sequential([keras.Input((T3, D3)), layer, keras.layers.Dense(1)])
    rng = np.random.default_rng(12)
    layer.set_weights([rng.uniform(-1, 1, w.shape) for w in layer.get_weights()])
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    x = rng.normal(0, 1.5, (B, T3, D3))
    (rec,) = scan(tmp_path / "m.keras")
    cell = KERAS3[kind]
    assert (rec.cell, rec.cells, rec.assumed, rec.layout) == (cell, (cell,), (), "batch-major")
    model.save(tmp_path / "m.h5")  # Keras 3's legacy .h5: keras_version 3.x, same cell
    (legacy,) = scan(tmp_path / "m.h5")
    assert (legacy.cell, legacy.assumed) == (cell, ())
    (plain,) = scan(tmp_path / "m.weights.h5")
    family = cell.split("[")[0]
    if family == "rnn":
        assert plain.cell is None  # a SimpleRNN's activation: asked for
    else:
        assert plain.cell == family
        assert (K3 in cell) == (cell in plain.cells)  # the gate alternatives are listed
        assert plain.assumed[-1].startswith("recurrent_activation sigmoid, activation tanh: "
                                            "the defaults of every Keras that writes this")
    cls = {"lstm": "LSTM", "gru": "GRU", "gru-cho": "GRU", "rnn": "SimpleRNN"}[family]
    cells = keras_cells(layer)
    for direction in rec.directions:
        params = rec.weights(cell, 0, direction)
        for twin in (plain.weights(cell, 0, direction), legacy.weights(cell, 0, direction)):
            assert all(np.array_equal(params[p], twin[p]) for p in params)
        xs, res = gateflow_run(cell, params, x, direction)
        want = keras_outputs(layer, x, direction, N3)
        assert np.max(np.abs(res.states["h"][1:] - want)) < 1e-12 * np.max(np.abs(want))
        names = states_of(cls)
        # torch's hardsigmoid backward uses float32's 1/6 (0.1666666716...) even in float64:
        # Keras's own gradient of its hard_sigmoid is off by 3e-8, the raw step below is not
        tol = 1e-7 if K3 in cell else RTOL
        assert worst_error(res, autograd_blocks(cell_step(cells[direction]), xs, N3,
                                                names)) < tol
        if kind in ("lstm", "gru", "gru-cho", "bi-gru"):  # the raw arrays, our own step
            kc = cells[direction]
            bias = np.asarray(kc.bias) if kc.use_bias else None
            step = keras_step(cls, np.asarray(kc.kernel), np.asarray(kc.recurrent_kernel), bias,
                              gate=K3, reset_after=family == "gru")
            assert worst_error(res, autograd_blocks(step, xs, N3, names)) < RTOL

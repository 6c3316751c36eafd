"""PyTorch files as they ship: training checkpoints (the state dict under any key, next to
step counts and optimizer states) and TorchScript archives (``torch.jit.save`` of scripted
and traced models, under any extension), made with the real exporters and read as shipped.

Every number is checked against the module itself in float64 autograd (the restart
reference of ``tests/test_models.py``), every block at every lag. A TorchScript archive is
read without running it: an archive whose code prints when run (``torch.jit.load`` runs
its ``__setstate__``) prints nothing, a code member holding a Python payload is never
executed, and pickled globals outside the allowlist are refused with one line.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gateflow import GateflowError, all_lags, find_models, load_model
from tests._hostile import assert_clean_error, run_cli
from tests.test_models import B, D, N, T, _assert_matches, _module, _reference

torch = pytest.importorskip("torch")


def _jit(fn, *args):
    """A torch.jit call without its deprecation warning (pytest makes warnings errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _x(batch_first: bool = False):
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((T, B, D)))
    return x.transpose(0, 1).contiguous() if batch_first else x


def _trained(model, steps: int = 3):
    """A few Adam steps, so that the optimizer state holds tensors named like nothing and
    shaped like the parameters."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        out = model(_x())
        (out[0] if isinstance(out, tuple) else out).pow(2).mean().backward()
        opt.step()
    return opt


class _Seq(torch.nn.Module):
    """An encoder LSTM stack under a prefix, a head: what a training loop saves."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.rnn = _module("LSTM", num_layers=2)
        self.head = torch.nn.Linear(N, 2).double()

    def forward(self, x):
        return self.head(self.encoder.rnn(x)[0])


# -- checkpoints --------------------------------------------------------------------------
def test_training_checkpoint_found_under_model_state(tmp_path):
    """{"model_state", "step", "optimizer_state"}: found under model_state, said in where,
    the optimizer's state (tensors shaped like the parameters) never read as a module;
    the stack's numbers equal autograd's through the module itself."""
    model = _Seq()
    opt = _trained(model)
    path = tmp_path / "ckpt.pt"
    torch.save({"model_state": model.state_dict(), "step": 3,
                "optimizer_state": opt.state_dict()}, path)
    (found,) = find_models(path)
    assert (found.module, found.kind, found.layers) == ("encoder.rnn", "nn.LSTM", 2)
    assert found.where == "state dict under key 'model_state'"
    assert found.layout == "unknown" and found.assumed == ()
    cell, params = load_model(path, layer="all")
    x = _x()
    _assert_matches(all_lags(cell, params, x.numpy(), norms=("frobenius",)),
                    _reference(model.encoder.rnn, x))


def test_optimizer_state_keyed_by_names_is_not_a_module(tmp_path):
    """An optimizer or scheduler state whose tensors carry the parameters' names (a
    momentum buffer, an EMA kept by the optimizer) is never searched."""
    gru = _module("GRU")
    sd = gru.state_dict()
    twin = {k: v * 0 for k, v in sd.items()}
    torch.save({"net_state": sd, "optimizer": {"momentum_buffer": twin},
                "opt_state": twin, "lr_scheduler": {"last": twin}}, tmp_path / "c.pt")
    found = find_models(tmp_path / "c.pt")
    assert [(m.module, m.where) for m in found] == [("", "state dict under key 'net_state'")]
    _, params = load_model(tmp_path / "c.pt")
    assert np.abs(params["U_r"]).max() > 0  # the model's weights, not the zero twin


def test_lightning_checkpoint_and_nested_keys(tmp_path):
    """Lightning: ``state_dict`` with ``model.`` prefixes next to optimizer_states and
    lr_schedulers; a state dict two keys deep; two state dicts (model and EMA) both read,
    each under its key path."""
    model = _Seq()
    opt = _trained(model)
    lightning = {"epoch": 1, "global_step": 30, "pytorch-lightning_version": "2.4.0",
                 "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                 "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
                 "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}}}
    torch.save(lightning, tmp_path / "l.ckpt")
    (found,) = find_models(tmp_path / "l.ckpt")
    assert (found.module, found.where) == ("model.encoder.rnn",
                                           "state dict under key 'state_dict'")
    torch.save({"checkpoint": {"weights": model.state_dict(), "it": 7}}, tmp_path / "n.pt")
    (found,) = find_models(tmp_path / "n.pt")
    assert found.where == "state dict under key 'checkpoint' → 'weights'"
    ema = _Seq()
    torch.save({"model": model.state_dict(), "ema": ema.state_dict()}, tmp_path / "e.pt")
    both = find_models(tmp_path / "e.pt")
    assert [(m.module, m.where) for m in both] == [
        ("model.encoder.rnn", "state dict under key 'model'"),
        ("ema.encoder.rnn", "state dict under key 'ema'")]
    cell, params = load_model(tmp_path / "e.pt", module="ema.encoder.rnn", layer="all")
    x = _x()
    _assert_matches(all_lags(cell, params, x.numpy(), norms=("frobenius",)),
                    _reference(ema.encoder.rnn, x))


def test_nothing_found_lists_the_keys_looked_at(tmp_path, sandbox):
    opt = _trained(_Seq())
    torch.save({"step": 3, "optimizer_state": opt.state_dict(), "config": {"hidden": 4},
                "history": [torch.zeros(2)]}, "c.pt")
    with pytest.raises(GateflowError, match=(
            r"holds no state dict with recurrent weights .*keys looked at: 'step' \(an int\), "
            r"'optimizer_state' \(not searched: optimizer/scheduler state\), 'config' \(a dict "
            r"of 1\), 'history' \(a list of 1\), 'config' → 'hidden' \(an int\), 'history' → "
            r"\[0\] \(a tensor\); save model.state_dict\(\)")):
        find_models("c.pt")
    assert_clean_error(run_cli("inspect", "c.pt"), r"keys looked at: 'step' \(an int\)")
    deep = {"k": 1}
    for i in range(40):  # deeper than the search goes: bounded, and the message too
        deep = {f"level{i}": deep, **{f"x{i}_{j}": j for j in range(3)}}
    torch.save(deep, "deep.pt")
    message = assert_clean_error(run_cli("decay", "-w", "deep.pt", "-q"),
                                 r"keys looked at: 'level39' \(a dict of 4\)")
    assert "more)" in message and len(message) < 1200


@pytest.mark.parametrize(("dtype", "said"), [("float16", "float16 (11 significant bits)"),
                                             ("bfloat16", "bfloat16 (8 significant bits)")])
def test_precision_is_said_once(dtype, said, tmp_path):
    gru = _module("GRU")
    narrow = {k: v.to(getattr(torch, dtype)) for k, v in gru.state_dict().items()}
    torch.save({"model_state": narrow, "step": 1}, tmp_path / "h.pt")
    (found,) = find_models(tmp_path / "h.pt")
    assert found.assumed == (f"the state dict: {said} weights in the file, analysed exactly "
                             "as stored, in float64 arithmetic (the model itself computes in "
                             "lower precision)",)
    _, params = load_model(tmp_path / "h.pt")
    want = narrow["weight_hh_l0"].to(torch.float64).numpy()
    np.testing.assert_array_equal(params["U_z"], want[N:2 * N])  # exactly as stored


# -- TorchScript archives ------------------------------------------------------------------
class _Model(torch.nn.Module):
    """Every recurrent kind, as a TorchScript model holds them."""

    def __init__(self):
        super().__init__()
        self.enc = _module("LSTM", num_layers=2, batch_first=True)
        self.bi = _module("GRU", bidirectional=True)
        self.act = _module("RNN", nonlinearity="relu")
        self.dec = torch.nn.GRUCell(2 * N, N).double()
        self.head = torch.nn.Linear(N, 2).double()

    def forward(self, x):
        y, _ = self.enc(x)  # (B, T, N)
        z, _ = self.bi(x.transpose(0, 1))  # (T, B, 2N)
        a, _ = self.act(x.transpose(0, 1))
        h = self.dec(z[-1])
        return self.head(h + a[-1] + y[:, -1])


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("jit")
    model = _Model().eval()
    scripted = _jit(torch.jit.script, model)
    traced = _jit(torch.jit.trace, model, _x(batch_first=True))
    paths = {"scripted": folder / "model.jit", "traced": folder / "traced.pt",
             "zip": folder / "model.zip", "bare": folder / "model"}
    for name, module in (("scripted", scripted), ("traced", traced), ("zip", scripted),
                         ("bare", traced)):
        _jit(torch.jit.save, module, paths[name])
    return model, paths


@pytest.mark.parametrize("which", ["scripted", "traced", "zip", "bare"])
def test_torchscript_modules_by_their_names(archives, which):
    model, paths = archives
    found = find_models(paths[which])
    assert found.skipped == ()
    rows = {m.module: m for m in found}
    assert list(rows) == ["enc", "bi", "act", "dec"]
    assert [rows[m].kind for m in rows] == ["nn.LSTM", "nn.GRU", "nn.RNN", "nn.GRUCell"]
    enc, bi, act, dec = rows.values()
    assert (enc.layers, enc.layout, enc.input, enc.hidden) == (2, "batch-major", D, N)
    assert bi.directions == ("forward", "reverse") and bi.layout == "time-major"
    assert dec.layout == "unknown"  # a cell steps once per call: the caller's sequence
    traced = which in ("traced", "bare")
    assert enc.where == "TorchScript module of class torch.nn.modules.rnn.LSTM" + (
        ", traced" if traced else "")
    # the nonlinearity: the scripted class's mode, the traced op's name (torch.rnn_relu)
    assert (act.cell, act.cells) == ("rnn-relu", ("rnn-relu",))
    for name, module in (("enc", model.enc), ("bi", model.bi), ("act", model.act),
                         ("dec", model.dec)):
        rec = rows[name]
        for layer in range(rec.layers):
            for direction in rec.directions:
                suffix = "" if name == "dec" else f"_l{layer}" + (
                    "_reverse" if direction == "reverse" else "")
                got = rec.weights(rec.cell, layer, direction)
                from gateflow import from_torch_state_dict
                want = from_torch_state_dict(rec.cell, {
                    f"{k}_l0": getattr(module, f"{k}{suffix}").detach().numpy()
                    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
                assert got.keys() == want.keys()
                for p in want:
                    np.testing.assert_array_equal(got[p], want[p])


def test_torchscript_numbers_match_autograd(archives):
    model, paths = archives
    x = _x()
    cell, params = load_model(paths["scripted"], module="enc", layer="all")
    assert cell.name == "lstm-stack2"
    _assert_matches(all_lags(cell, params, x.numpy(), norms=("frobenius",)),
                    _reference(_unbatched(model.enc), x))
    for direction in ("forward", "reverse"):
        cell, params = load_model(paths["traced"], module="bi", direction=direction)
        xs = x.numpy()[::-1] if direction == "reverse" else x.numpy()
        _assert_matches(all_lags(cell, params, xs, norms=("frobenius",)),
                        _reference(model.bi, x, direction))


def _unbatched(lstm):
    """The same LSTM taking (T, B, d): the restart reference feeds time-major inputs."""
    twin = torch.nn.LSTM(D, N, num_layers=lstm.num_layers).double()
    twin.load_state_dict(lstm.state_dict())
    return twin


def test_torchscript_cli_inspect_commands_run_as_printed(archives, sandbox):
    _, paths = archives
    out = run_cli("inspect", paths["bare"], "--json", "i.json")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(Path("i.json").read_text())
    rows = {r["module"]: r for r in doc["modules"]}
    assert rows["enc"]["layout"] == "batch-major" and rows["act"]["cell"] == "rnn-relu"
    command = rows["enc"]["command"]
    assert command in out.stdout
    words = shlex.split(command)
    assert words[:4] == ["gateflow", "decay", "--weights", str(paths["bare"])]
    res = run_cli(*words[1:], "--steps", 6, "--batch", 2, "--json", "d.json", "-q")
    assert res.exit_code == 0, res.stderr
    assert json.loads(Path("d.json").read_text())["cell"] == "lstm-stack2"


def test_half_precision_torchscript_is_said(tmp_path):
    gru = torch.nn.GRU(D, N).half()
    _jit(torch.jit.save, _jit(torch.jit.script, gru), tmp_path / "h.jit")
    (found,) = find_models(tmp_path / "h.jit")
    assert found.module == "" and "float16 (11 significant bits)" in found.assumed[0]
    _, params = load_model(tmp_path / "h.jit")
    want = gru.weight_ih_l0.detach().to(torch.float64).numpy()
    np.testing.assert_array_equal(params["W_n"], want[2 * N:])


def test_quantized_torchscript_module_is_skipped_by_name(tmp_path):
    """A dynamically quantized LSTM (packed int8 weights) next to a float GRU: the GRU is
    read, the LSTM is listed as skipped (with the packed objects it holds folded into that
    one line), never silently absent."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(D, N)
            self.gru = torch.nn.GRU(D, N)

        def forward(self, x):
            return self.rnn(x)[0] + self.gru(x)[0]

    quantized = _jit(torch.ao.quantization.quantize_dynamic, Model().eval(),
                     {torch.nn.LSTM}, torch.qint8)
    _jit(torch.jit.save, _jit(torch.jit.script, quantized), tmp_path / "q.jit")
    found = find_models(tmp_path / "q.jit")
    assert [m.module for m in found] == ["gru"]
    assert found.skipped == ("module 'rnn' of class torch.ao.nn.quantized.dynamic.modules.rnn."
                             "LSTM: no weight_ih/weight_hh tensors gateflow can read (quantized "
                             "or packed weights)",)
    with pytest.raises(GateflowError, match=r"has no recurrent module 'rnn'; it holds 'gru'"):
        load_model(tmp_path / "q.jit", module="rnn")


# -- never run ----------------------------------------------------------------------------
def _with_payload():
    """A module holding a TorchScript object that prints when torch.jit.load restores it
    (its __setstate__ is TorchScript code), scripted."""

    class _Payload:
        def __init__(self, x: int):
            self.x = x

        def __getstate__(self) -> int:
            return self.x

        def __setstate__(self, state: int) -> None:
            print("GATEFLOW-TEST: the archive's code ran")
            self.x = state

    payload = _jit(torch.jit.script, _Payload)

    class _WithPayload(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = _module("GRU")
            self.payload = payload(2)

        def forward(self, x):
            return self.rnn(x)[0] * self.payload.x

    return _jit(torch.jit.script, _WithPayload())


def test_archive_code_is_never_run(tmp_path, capfd):
    """torch.jit.load runs the archive's __setstate__ (it prints); gateflow reads the
    archive without a word printed, lists the payload object as skipped, and a Python
    payload planted in a code member (it would write a file if executed) stays text."""
    path = tmp_path / "payload.jit"
    _jit(torch.jit.save, _with_payload(), path)
    _jit(torch.jit.load, path)  # the control: loading runs code
    assert "the archive's code ran" in capfd.readouterr().out
    marker = tmp_path / "marker"
    planted = tmp_path / "planted.jit"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(planted, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("code/__torch__.py"):
                data = (f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')\n"
                        ).encode() + data
            dst.writestr(info, data)
    for p in (path, planted):
        found = find_models(p)
        assert [m.module for m in found] == ["rnn"]
        (line,) = found.skipped
        assert line.startswith("1 object(s) keep their state in a form gateflow does not read "
                               "(a custom __getstate__), not opened: 'payload' (")
        load_model(p)
    assert capfd.readouterr().out == ""
    assert not marker.exists()


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _archive(path: Path, pickled: bytes, extra: dict | None = None) -> Path:
    """A zip laid out as torch.jit.save lays it out, with ``pickled`` as its data.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/code/__torch__.py", "class M(Module):\n  pass\n")
        zf.writestr("archive/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            zf.writestr(f"archive/{name}", data)
    return path


def _text(v: str) -> bytes:
    b = v.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def _int(v: int) -> bytes:
    return b"J" + v.to_bytes(4, "little", signed=True)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor_pickle(size, stride, numel=4, key="0", offset=0) -> bytes:
    """A data.pkl, opcode by opcode as torch.jit.save writes it: a ``__torch__.M`` object
    whose dict state holds one tensor record (``_rebuild_tensor_v2`` over a persistent
    storage record)."""
    storage = _tuple(_text("storage"), b"ctorch\nFloatStorage\n", _text(key), _text("cpu"),
                     _int(numel)) + b"Q"
    tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n"
              + _tuple(storage, _int(offset), _tuple(*map(_int, size)),
                       _tuple(*map(_int, stride)), b"\x89", b"}") + b"R")
    return b"\x80\x02c__torch__\nM\n)\x81}" + _text("weight_ih_l0") + tensor + b"sb."


@pytest.mark.parametrize(("payload", "match"), [
    (lambda m: pickle.dumps(_Marker(m), protocol=2),
     r"pickles posix\.system, which gateflow refuses to load \(a TorchScript archive is read "
     r"as data, never run\)"),
    (lambda m: pickle.dumps({"x": eval}, protocol=2), r"pickles builtins\.eval, which gateflow "
                                                      r"refuses"),
    (lambda m: pickle.dumps(torch.nn.LSTM(2, 2), protocol=2),
     r"pickles [\w.]+, which gateflow refuses to load"),
    (lambda m: b"\x80\x02ctorch\nload\n)R.", r"pickles torch\.load, which gateflow refuses"),
    (lambda m: pickle.dumps([1, 2], protocol=2), r"its data\.pkl does not hold a module"),
    (lambda m: b"\x80\x02garbage", r"its data\.pkl is not a TorchScript module tree"),
])
def test_hostile_archives_are_refused_in_one_line(payload, match, sandbox):
    marker = Path("marker").resolve()
    _archive(Path("evil.jit"), payload(marker))
    for command in (("inspect", "evil.jit"), ("decay", "-w", "evil.jit", "-q")):
        assert_clean_error(run_cli(*command), match)
    with pytest.raises(GateflowError, match=match):
        find_models("evil.jit")
    assert not marker.exists()


@pytest.mark.parametrize(("size", "stride", "numel", "key", "match"), [
    ((4, 4), (4, 1), 16, "0", r"storage '0' has 16 bytes, not the 64 of 16 elements"),
    ((2, 3), (3, 1), 6, "9", r"storage '9' has no data member"),
    ((2, 3), (3, 2), 4, "0", r"reaches past its storage of 4 elements"),
    ((1000, 1000), (0, 0), 4, "0", r"more elements than its storage"),
])
def test_hostile_tensor_records(size, stride, numel, key, match, sandbox):
    """Tensor records are checked against their storage before a byte is viewed: a
    missing or short storage, a view past its end, an expanded view larger than it."""
    pickled = _tensor_pickle(size, stride, numel=numel, key=key)
    _archive(Path("t.jit"), pickled, {"data/0": np.zeros(4, "<f4").tobytes(),
                                     "byteorder": "little"})
    assert_clean_error(run_cli("inspect", "t.jit"), match)


def test_hostile_archive_members(sandbox):
    good = _tensor_pickle((2, 2), (2, 1), numel=4)
    _archive(Path("b.jit"), good, {"data/0": bytes(16), "byteorder": "sideways"})
    assert_clean_error(run_cli("inspect", "b.jit"), r"its byteorder member says b'sideways'")
    with zipfile.ZipFile("two.jit", "w") as zf:  # two archives in one zip
        for root in ("a", "b"):
            zf.writestr(f"{root}/data.pkl", good)
            zf.writestr(f"{root}/constants.pkl", b"")
            zf.writestr(f"{root}/code/__torch__.py", "")
    assert_clean_error(run_cli("inspect", "two.jit"), r"it is not one TorchScript archive "
                                                      r"\(2 data\.pkl")
    _archive(Path("z.jit"), good)
    with zipfile.ZipFile("z.jit", "a") as zf:  # a storage that would inflate: refused
        zf.writestr("archive/data/0", bytes(16), compress_type=zipfile.ZIP_DEFLATED)
    assert_clean_error(run_cli("inspect", "z.jit"), r"member 'archive/data/0' is compressed, "
                                                    r"which torch\.jit\.save never writes")

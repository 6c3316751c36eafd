"""What a person copies works (issue 17): every command ``gateflow inspect`` prints is one
line at any terminal width and when piped, shell-quoted, and runs as printed; tables never
cut a number; inspect lists what a file's reader assumed, where each module sits, and what
it skipped (and exits 2 when it found nothing but skipped something)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gateflow.cli import app
from gateflow.jobs._inspect import decay_command
from gateflow.models.formats._recurrent import Found, Recurrent

runner = CliRunner()

#: A file name a shell would split, glob and expand if it were not quoted.
ODD = "model's (v2) $x [a].npz"
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def torch_names(prefix: str, kind: str, d: int, n: int, layers: int = 1,
                bidirectional: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """A PyTorch nn.RNN/GRU/LSTM state dict under ``prefix``, as plain arrays (an .npz file
    in PyTorch's names needs no torch)."""
    rng = np.random.default_rng(seed)
    g, out = GATES[kind], {}
    for layer in range(layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            din = d if layer == 0 else n * (2 if bidirectional else 1)
            out[f"{prefix}.weight_ih_l{layer}{sfx}"] = rng.normal(0, 0.5, (g * n, din))
            out[f"{prefix}.weight_hh_l{layer}{sfx}"] = rng.normal(0, 0.5, (g * n, n))
            out[f"{prefix}.bias_ih_l{layer}{sfx}"] = rng.normal(0, 0.2, g * n)
            out[f"{prefix}.bias_hh_l{layer}{sfx}"] = rng.normal(0, 0.2, g * n)
    return out


@pytest.fixture
def model_file(sandbox) -> Path:
    """Three modules whose commands need quoting and options: a bidirectional GRU named
    with a space and brackets (--module, --direction), a 2-layer nn.RNN with an apostrophe
    (--layer all, --cell: tanh or relu is not in the weights) and a plain LSTM."""
    np.savez(ODD, **torch_names("enc (a)[0]", "GRU", 2, 3, bidirectional=True, seed=1),
             **torch_names("dec's rnn", "RNN", 6, 2, layers=2, seed=2),
             **torch_names("lstm", "LSTM", 2, 2, seed=3))
    return sandbox / ODD


def printed_commands(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("gateflow ")]


def check_commands(lines: list[str]) -> list[list[str]]:
    """The three commands, each parsed back with shlex.split to what it must say."""
    assert len(lines) == 3, lines
    words = [shlex.split(line) for line in lines]
    for w in words:
        assert w[:4] == ["gateflow", "decay", "--weights", ODD], w
    assert words[0][4:] == ["--module", "enc (a)[0]", "--direction", "forward"]
    assert words[1][4:] == ["--module", "dec's rnn", "--layer", "all", "--cell", "rnn"]
    assert words[2][4:] == ["--module", "lstm"]
    return words


@pytest.mark.parametrize("columns", ["80", "40"])
def test_inspect_commands_are_one_line_at_any_width_and_run(model_file, columns):
    r = runner.invoke(app, ["inspect", ODD], env={"COLUMNS": columns})
    assert r.exit_code == 0, r.output
    words = check_commands(printed_commands(r.stdout))
    assert max(map(len, printed_commands(r.stdout))) > int(columns)  # longer than the screen
    for w in words:  # as printed: generated inputs, T = 100, B = 4
        out = runner.invoke(app, w[1:])
        assert out.exit_code == 0, (w, out.output)
        assert "fitted decay" in out.stdout


@pytest.mark.slow  # ~10 s of child processes; the same commands run above in-process
def test_inspect_commands_piped_run_in_a_shell(model_file):
    """Piped (no terminal, no COLUMNS): each printed line, pasted into a shell as it is,
    runs; the shell (not shlex) does the parsing."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    p = subprocess.run([sys.executable, "-m", "gateflow", "inspect", ODD], capture_output=True,
                       text=True, env=env, cwd=model_file.parent, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    lines = printed_commands(p.stdout)
    check_commands(lines)
    here = shlex.join([sys.executable, "-m", "gateflow"])
    for line in lines:
        run = subprocess.run(["sh", "-c", here + line[len("gateflow"):] + " -q --steps 6"],
                             capture_output=True, text=True, env=env, cwd=model_file.parent,
                             timeout=300, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, (line, run.stderr)


def test_inspect_json_holds_the_printed_commands(model_file):
    r = runner.invoke(app, ["inspect", ODD, "--json", "i.json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(Path("i.json").read_text())
    assert [m["command"] for m in doc["modules"]] == printed_commands(r.stdout)
    assert doc["skipped"] == []
    assert {m["layout"] for m in doc["modules"]} == {"unknown"}


def test_decay_command_quotes_every_word():
    """Cell variant names carry brackets and parentheses, module names and paths anything:
    the command parses back to the same words in a real shell."""
    rec = Recurrent(module="enc (0)[x]", framework="Keras", kind="GRU", cell=None,
                    cells=("gru[gate=hard_sigmoid(0.2,0.5),candidate=relu]", "gru-cho"),
                    layers=2, directions=("forward", "reverse"), hidden=3, input=2,
                    weights=lambda cell, layer, direction: {})
    path = "dir with space/m (1) `x`.h5"
    from typer.main import get_command

    from gateflow.cli._options import flags

    decay_flags = flags(get_command(app).get_command(None, "decay"))  # the CLI's own table
    line = decay_command(path, rec, several=True, flag_of=decay_flags.__getitem__)
    want = ["gateflow", "decay", "--weights", path, "--module", "enc (0)[x]", "--layer", "0",
            "--direction", "forward", "--cell", "gru[gate=hard_sigmoid(0.2,0.5),candidate=relu]"]
    assert "\n" not in line and shlex.split(line) == want
    echoed = subprocess.run(["sh", "-c", "printf '%s\\n' " + line], capture_output=True,
                            text=True, timeout=30)
    assert echoed.stdout.splitlines() == want


# -- inspect says where, what it assumed, what it skipped --------------------------------------
def _fake(monkeypatch, found: Found) -> None:
    from gateflow.jobs import _inspect

    monkeypatch.setattr(_inspect, "find_models", lambda path, **options: found)


def _record(**fields) -> Recurrent:
    return Recurrent(module="enc", framework="ONNX", kind="LSTM node", cell="lstm",
                     cells=("lstm",), layers=1, directions=("forward",), hidden=3, input=2,
                     weights=lambda cell, layer, direction: {}, **fields)


def test_inspect_lists_where_layout_assumptions_and_skips(sandbox, monkeypatch):
    rec = _record(layout="batch-major", where="If node 'cond', then-branch",
                  assumed=("int8 weights dequantized: the analysis is of the dequantized float "
                           "model",))
    _fake(monkeypatch, Found((rec,), ("Loop node 'body': no recurrent op inside",)))
    r = runner.invoke(app, ["inspect", "m.onnx", "--json", "i.json"], env={"COLUMNS": "60"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "# enc: ONNX LSTM node; If node 'cond', then-branch; inputs (B, T, d)" in lines
    assert ("note (enc): int8 weights dequantized: the analysis is of the dequantized float "
            "model") in lines
    assert "skipped: Loop node 'body': no recurrent op inside" in lines
    assert not any("does not say the inputs' axis order" in ln for ln in lines)
    doc = json.loads(Path("i.json").read_text())
    assert doc["skipped"] == ["Loop node 'body': no recurrent op inside"]
    assert doc["modules"][0]["where"] == "If node 'cond', then-branch"
    assert doc["modules"][0]["assumed"] == list(rec.assumed)


def test_inspect_of_a_file_with_nothing_found_but_skips_exits_2(sandbox, monkeypatch):
    skipped = tuple(f"DynamicQuantizeLSTM node 'q{i}': unsupported" for i in range(5))
    _fake(monkeypatch, Found((), skipped))
    r = runner.invoke(app, ["inspect", "m.onnx", "--json", "i.json"])
    assert r.exit_code == 2
    assert r.stdout.splitlines() == [f"skipped: {s}" for s in skipped]  # every one
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: m.onnx: found no recurrent module")
    assert "q0" in err[0] and "and 2 more (gateflow inspect lists them)" in err[0]
    assert not Path("i.json").exists()


def test_nothing_found_and_nothing_skipped_is_an_empty_listing(sandbox, monkeypatch):
    _fake(monkeypatch, Found(()))
    r = runner.invoke(app, ["inspect", "m.onnx"])
    assert r.exit_code == 0 and "0 recurrent module(s)" in r.stdout


def test_a_real_file_of_unknown_arrays_exits_2_naming_them(sandbox):
    np.savez("junk.npz", foo=np.zeros(3), bar=np.ones((2, 2)))
    for command in (["inspect", "junk.npz"], ["decay", "--weights", "junk.npz"]):
        r = runner.invoke(app, command)
        err = r.stderr.splitlines()
        assert r.exit_code == 2 and len(err) == 1, (command, r.output)
        assert "found no recurrent module" in err[0] and "'foo'" in err[0], err[0]


# -- tables never cut a number ----------------------------------------------------------------
NUMBER = re.compile(r"^[×]?-?(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|inf)$")


def _half_unit(token: str) -> float:
    """Half a unit in the last digit shown: how far a number shown whole can be from the
    value it shows."""
    mantissa, _, exp = token.lstrip("×").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exp) if exp else 0)) * (1 + 1e-9)


def _tables(text: str) -> list[list[list[str]]]:
    """Each box table of ``text``: its body lines as lists of cells (header rows left out)."""
    tables, body = [], None
    for line in text.splitlines():
        if line.startswith("┡"):
            body = []
        elif line.startswith("└") and body is not None:
            tables.append(body)
            body = None
        elif body is not None and line.startswith("│"):
            body.append([c.strip() for c in line.strip().strip("│").split("│")])
    return tables


def _headers(text: str) -> list[list[str]]:
    """The header cells of each table (a folded header's lines joined)."""
    out, rows = [], None
    for line in text.splitlines():
        if line.startswith("┏"):
            rows = []
        elif line.startswith("┃") and rows is not None:
            rows.append([c.strip() for c in line.strip().strip("┃").split("┃")])
        elif line.startswith("┡") and rows is not None:
            out.append(["".join(parts) for parts in zip(*rows)])
            rows = None
    return out


@pytest.mark.parametrize("columns", [80, 60])
def test_decay_tables_never_cut_a_number(sandbox, monkeypatch, capsys, columns):
    """A stacked LSTM's tables (the issue's '-9.5…'): every batch mean shown is whole (all
    with the same decimals, each within half a unit of the JSON's mean) and every fitted
    number too (one token per row, each within half a unit of the fit)."""
    from gateflow.jobs._decay import run_decays

    np.savez("stack.npz", **torch_names("rnn", "LSTM", 2, 3, layers=2, seed=7))
    np.save("x.npy", np.random.default_rng(0).normal(size=(40, 3, 2)))
    monkeypatch.setenv("COLUMNS", str(columns))
    run = run_decays(None, weights="stack.npz", layer="all", inputs="x.npy",
                     json_path="d.json", norms="frobenius,spectral")
    text = capsys.readouterr().out
    assert "…" not in text
    doc = json.loads(Path("d.json").read_text())
    summary, fits = _tables(text)
    heads = _headers(text)
    lags = [int(h[2:]) for h in heads[0][2:]]
    assert lags[0] == 1 and lags[-1] == 40 and len(lags) >= (5 if columns == 80 else 3)
    decimals = set()
    for block, norm, *cells in summary:
        assert block and norm, summary  # one line per row: nothing folded
        group = doc["direct"][block[:-7]] if block.endswith("|direct") else doc["blocks"][block]
        series = group[f"log10_{norm}"]
        for k, cell in zip(lags, cells):
            assert NUMBER.match(cell), cell
            decimals.add(len(cell.partition(".")[2]))
            mean = np.mean([v for v in series[k - 1] if v is not None])
            assert abs(float(cell) - mean) <= _half_unit(cell), (block, norm, k, cell, mean)
    assert len(decimals) == 1 and decimals.pop() >= 2
    # the fit table: block, regime, factor, R², e-folding, horizon (one cell: no cell column)
    names = heads[1]
    assert names[0] == "block"  # (a folded header's parts may be joined without spaces)
    assert [h.replace(" ", "") for h in names[2:]] == ["factorperstep", "R²", "e-folding",
                                                       "horizon"]
    chain = next(iter(run.fits.values()))
    expected = [*chain.blocks.values(), *chain.direct.values()]
    rows = [r for r in fits if r[2]]  # a row's first line holds its factor
    assert len(rows) == len(expected)
    for line in fits:  # a folded row's other lines hold no part of a number
        if not line[2]:
            assert not any(re.search(r"\d", c) for c in line[2:]), line
    for row, fit in zip(rows, expected):
        checks = [(row[2], fit.factor), (row[3], fit.r2)]
        if fit.efold is not None:
            checks.append((row[4], fit.efold))
        if fit.horizon is not None:
            checks.append((row[5], fit.horizon))
        for token, value in checks:
            assert NUMBER.match(token), (token, row)
            assert abs(float(token.lstrip("×")) - value) <= _half_unit(token), (token, value)


@pytest.mark.parametrize("columns", ["60", "40"])
def test_inspect_and_lyapunov_tables_keep_numbers_whole(model_file, columns):
    r = runner.invoke(app, ["inspect", ODD], env={"COLUMNS": columns})
    assert r.exit_code == 0 and "…" not in r.stdout
    body = _tables(r.stdout)[0]
    sizes = [(row[5], row[6]) for row in body if row[5]]
    assert sizes == [("3", "2"), ("2", "6"), ("2", "2")]  # n, d of each module, whole
    out = runner.invoke(app, ["lyapunov", "--cell", "lstm-peephole", "--hidden", "5",
                              "--steps", "30", "--batch", "2", "--json", "l.json"],
                        env={"COLUMNS": columns})
    assert out.exit_code == 0, out.output
    assert "…" not in out.stdout
    doc = json.loads(Path("l.json").read_text())
    median = np.median(np.array(doc["exponents"], dtype=float), axis=0)
    shown = [row[1] for row in _tables(out.stdout)[0] if row[1]]
    assert len(shown) == 8
    for token, value in zip(shown, median):
        assert NUMBER.match(token) and abs(float(token) - value) <= _half_unit(token)

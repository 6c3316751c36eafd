"""The command line's conventions: --version, python -m gateflow, shell completion, choices
and defaults in --help, flags without a type, a plain usage line, case-insensitive cell
names, data on stdout and everything else on stderr, NO_COLOR."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from enum import Enum
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import gateflow
from gateflow.cells._library import CELLS
from gateflow.cli import app
from gateflow.jobs._contract import DEFAULT_NORMS
from gateflow.jobs._spec import SPECTRA_LAGS
from gateflow.models._inputs import DISTS
from gateflow.models._params import _SCHEMES as SCHEMES
from gateflow.models.formats._recurrent import DIRECTIONS
from gateflow.numeric._backend import BACKENDS, DTYPES
from gateflow.numeric._observers import OBSERVERS
from tests._hostile import assert_clean_error, run_cli

runner = CliRunner()
#: Wide enough that no help row wraps, so each option's text is on its line.
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}
COMMANDS = ("cells", "inspect", "derive", "sweep", "decay", "lyapunov", "report")
#: An SGR escape (colour or style) and one that sets a colour (3x/4x/9x/10x, 38;…, 48;…).
SGR = re.compile(r"\x1b\[[0-9;]*m")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def help_of(*command: str) -> str:
    r = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert r.exit_code == 0, r.output
    return r.stdout


def rows(text: str) -> dict[str, str]:
    """Each option's help row, by its long name (``--hidden`` -> its text), with the lines
    that a long help wraps onto joined to it."""
    found: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"│\s+(\*\s+)?(--[\w-]+|[A-Z]+)\b", line)
        if m:
            name = m.group(2)
            found[name] = line.rstrip(" │")
        elif name is not None and line.startswith("│"):
            found[name] += " " + line.strip(" │")
        else:
            name = None
    return found


def gateflow_child(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``python -m gateflow ARGS`` in a child process."""
    return subprocess.run([sys.executable, "-m", "gateflow", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


# -- --version and python -m gateflow --------------------------------------------------------
def test_version_prints_the_installed_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"gateflow {version('gateflow')}\n"
    assert version("gateflow") == gateflow.__version__
    assert r.stderr == ""


def test_python_m_gateflow_runs_the_same_app():
    p = gateflow_child("--version")
    assert (p.returncode, p.stdout, p.stderr) == (0, f"gateflow {gateflow.__version__}\n", "")
    p = gateflow_child("--help", env=WIDE)
    assert p.returncode == 0 and "Usage: gateflow [OPTIONS] COMMAND [ARGS]..." in p.stdout
    for command in COMMANDS:
        assert re.search(rf"│ {command}\s", p.stdout), command
    p = gateflow_child("derive", "LSTM", "--block", "c/c")
    assert p.returncode == 0 and "∂c_t/∂c_{t−1} = diag(f_t)" in p.stdout and p.stderr == ""


# -- completion ------------------------------------------------------------------------------
def test_completion_is_offered():
    listed = rows(help_of())
    assert {"--install-completion", "--show-completion", "--version", "--help"} <= set(listed)


def _cells(prefix: str, before: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """What completing a cell name that starts with ``prefix`` offers (from the registry)."""
    return [before + n for n in CELLS if n.startswith(prefix) and n not in skip]


@pytest.mark.parametrize(("line", "expected"), [
    ("derive ls", _cells("ls")),
    # derive's CELL also takes a family with activations (free text): completion is by
    # prefix as typed, like decay --cell
    ("derive lstm-p", _cells("lstm-p")),
    ("decay --init o", ["orthogonal"]),
    ("decay --dtype f", ["float64", "float32"]),
    ("decay --input-dist u", ["uniform"]),
    ("decay --direction r", ["reverse"]),
    ("lyapunov --cell gru", _cells("gru")),
    ("decay --cell rnn,g", _cells("g", "rnn,")),
    # a name already in the list is not offered again
    ("decay --cell rnn,lstm,rnn", _cells("rnn", "rnn,lstm,", skip=("rnn",))),
    ("decay --norms frobenius,s", ["frobenius,spectral", "frobenius,stable_rank"]),
    ("decay --cell lstm --blocks c/", [b for b in (*CELLS["lstm"].blocks,
                                                   *CELLS["lstm"].input_blocks)
                                       if b.startswith("c/")]),
    ("sweep --cells lstm,m", _cells("m", "lstm,")),
])
def test_completion_offers_the_choices(line, expected):
    words = ["gateflow", *line.split()]
    p = gateflow_child(env={"_GATEFLOW_COMPLETE": "complete_bash",
                            "COMP_WORDS": " ".join(words), "COMP_CWORD": str(len(words) - 1)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == expected


# -- help: choices, defaults, flags, usage ---------------------------------------------------
def test_choices_are_listed_in_help():
    def choices(values) -> str:
        return "<" + "|".join(values) + ">"

    def listed(values, row: str) -> bool:
        """Every value, in order, in the option's text (``a, b or c``, ``a, b, c``)."""
        return re.search(r"(?:,\s*|\s+or\s+)".join(map(re.escape, values)), row) is not None

    decay = rows(help_of("decay"))
    for option, values in (("--init", SCHEMES), ("--input-dist", DISTS), ("--dtype", DTYPES),
                           ("--backend", BACKENDS), ("--direction", DIRECTIONS),
                           ("--norms", tuple(OBSERVERS))):
        assert listed(values, decay[option]), decay[option]
    # the cells are many: --cell names the command that lists them (completion offers them)
    assert "gateflow cells" in decay["--cell"]
    assert choices(CELLS) in rows(help_of("derive"))["CELL"]
    lyap = rows(help_of("lyapunov"))
    assert "gateflow cells" in lyap["--cell"] and listed(SCHEMES, lyap["--init"])
    assert listed(SCHEMES, rows(help_of("report"))["--init"])
    assert choices(["text", "latex", "markdown"]) in rows(help_of("derive"))["--format"]


DECAY_DEFAULTS = {
    "--hidden": "64", "--steps": "100", "--batch": "4", "--init": "pytorch", "--seed": "0",
    "--sigma-w": "1.0", "--sigma-v": "1.0", "--sigma-b": "0.0", "--input-dist": "normal",
    "--input-scale": "1.0", "--input-size": "n, or the inputs' d", "--threshold": "1e-06",
    "--spectra-lags": ",".join(map(str, SPECTRA_LAGS)), "--norms": ",".join(DEFAULT_NORMS),
    "--dtype": "float64", "--backend": "numpy", "--blocks": "all",
}


@pytest.mark.parametrize("option", list(DECAY_DEFAULTS))
def test_decay_help_shows_each_default(option):
    row = rows(help_of("decay"))[option]
    assert f"[default: {DECAY_DEFAULTS[option]}]" in row, row
    assert not re.search(r" \.\s*│", row)  # no '[default: …]' eaten by rich markup


@pytest.mark.parametrize(("option", "default"), [
    ("--hidden", "64"), ("--steps", "100"), ("--batch", "4"), ("--init", "pytorch"),
    ("--seed", "0"), ("--sigma-w", "1.0"), ("--k", "all N"),
    ("--transient", "T/10"), ("--input-size", "n, or the inputs' d"),
])
def test_lyapunov_help_shows_each_default(option, default):
    assert f"[default: {default}]" in rows(help_of("lyapunov"))[option]


def _defaults(command: str) -> dict[str, object]:
    import typer

    params = typer.main.get_command(app).commands[command].params
    return {p.name: getattr(p.default, "value", p.default) for p in params}


def test_defaults_in_help_are_the_jobs_defaults():
    """Every default is written once, in the record the job takes (``InitSpec``,
    ``InputSpec``): the options read theirs from it, so ``--help`` shows what a run made
    from default records uses."""
    from dataclasses import fields

    from gateflow.jobs._inputs import generate
    from gateflow.models._specs import InitSpec, InputSpec

    d = _defaults("decay")
    lyap = _defaults("lyapunov")
    for kind in (InitSpec, InputSpec):
        for f in fields(kind):
            for command in (d, lyap):
                if f.name in command and f.name not in ("given", "path", "batch_first"):
                    assert command[f.name] == f.default, (kind.__name__, f.name)
    _, _, made = generate("lstm")
    assert made["weights_source"] == {
        "source": "init", "n": d["hidden"], "d": d["hidden"], "seed": d["seed"],
        "scheme": d["scheme"], "sigma_w": d["sigma_w"], "sigma_v": d["sigma_v"],
        "sigma_b": d["sigma_b"], "gate_bias": None, "chrono": None}
    assert made["inputs_source"] == {
        "source": "init", "T": d["steps"], "B": d["batch"], "d": d["hidden"],
        "dist": d["dist"], "scale": d["scale"], "seed": d["seed"] + 1}
    assert (d["norms"], d["spectra_lags"]) == (",".join(DEFAULT_NORMS), None)
    assert f"[default: {','.join(map(str, SPECTRA_LAGS))}]" in rows(help_of("decay"))[
        "--spectra-lags"]
    for name in ("hidden", "steps", "batch", "scheme", "sigma_w", "seed"):
        assert lyap[name] == d[name], name


def test_an_option_given_at_its_default_value_is_still_given(sandbox):
    """Only an option left out is 'not given': --hidden 64 next to a weights file is
    refused like any other --hidden."""
    from gateflow import init_params, save_params

    save_params("w.npz", "rnn", init_params("rnn", 3, 2))
    args = ("decay", "--cell", "rnn", "--weights", "w.npz", "--steps", "3", "-q")
    assert run_cli(*args).exit_code == 0
    assert_clean_error(run_cli(*args, "--hidden", "64"), r"--hidden applies only to generated")
    assert_clean_error(run_cli(*args, "--init", "pytorch"), r"--init applies only to generated")
    assert_clean_error(run_cli(*args, "--spectra-lags", "1,10,100"),
                       r"--spectra-lags applies only with --spectra")


def test_spectral_norm_cost_is_in_the_help():
    """--norms says the spectral norm's cost in a line; the closing paragraph of decay
    --help gives each norm's description and the measured cost."""
    text = help_of("decay")
    assert "(spectral: ~6× slower)" in rows(text)["--norms"]
    paragraph = " ".join(text.split("Norms: ", 1)[1].split())
    assert ("The default includes the spectral norm, which makes a run about 6× slower than "
            "Frobenius alone (36.6 s against 5.8 s at n = 128, T = 500).") in paragraph
    for observer in OBSERVERS.values():  # each norm with what it costs
        assert f"{observer.name}, {observer.description}" in paragraph


@pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)])
def test_flags_have_no_type(command):
    text = help_of(*command)
    assert "<bool>" not in text
    listed = rows(text)
    for flag in ("--help", "--quiet", "--overwrite", "--batch-first", "--time-major",
                 "--version", "--install-completion"):
        if flag in listed:
            assert "<" not in listed[flag], listed[flag]


@pytest.mark.parametrize(("command", "usage"), [
    ((), "gateflow [OPTIONS] COMMAND [ARGS]..."),
    (("derive",), "gateflow derive [OPTIONS] CELL"),
    (("inspect",), "gateflow inspect [OPTIONS] FILE"),
    (("decay",), "gateflow decay [OPTIONS]"),
])
def test_usage_line_is_plain(command, usage):
    text = help_of(*command)
    assert re.search(rf"Usage: {re.escape(usage)}\s*$", text, re.M), text[:300]
    assert "{" not in text.split("Usage:", 1)[1].splitlines()[0]


# -- cell names ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["LSTM", "Lstm", "GRU-Cho", "lstm-PEEPHOLE"])
def test_cell_names_are_case_insensitive(name):
    lower = runner.invoke(app, ["derive", name.lower(), "--block", "h/h"])
    other = runner.invoke(app, ["derive", name, "--block", "h/h"])
    assert other.exit_code == 0, other.output
    assert other.stdout == lower.stdout


def test_decay_and_lyapunov_take_any_case(sandbox):
    out = run_cli("decay", "--cell", "LSTM,Gru", "--hidden", 3, "--steps", 4, "--batch", 1,
                  "--json", "d-{cell}.json", "-q")
    assert out.exit_code == 0, out.stderr
    assert sorted(p.name for p in Path().glob("d-*.json")) == ["d-gru.json", "d-lstm.json"]
    assert json.loads(Path("d-lstm.json").read_text())["cell"] == "lstm"
    out = run_cli("decay", "--cell", "rnn", "--norms", "FROBENIUS", "--hidden", 3, "--steps", 4,
                  "--batch", 1, "--json", "-", "-q", "--init", "Gaussian", "--dtype", "FLOAT32")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["norms"] == ["frobenius"] and doc["dtype"] == "float32"
    assert doc["weights"]["scheme"] == "gaussian"
    out = run_cli("lyapunov", "--cell", "GRU", "--hidden", 3, "--steps", 6, "--batch", 1,
                  "--json", "-", "-q")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["cell"] == "gru"


@pytest.mark.parametrize(("args", "message"), [
    (("derive", "LSTN"), r"unknown cell 'LSTN' \(did you mean 'lstm'\?\) "
                         r"\(see gateflow derive --help\)$"),
    (("derive", "lstn"), r"unknown cell 'lstn' \(did you mean 'lstm'\?\)"),
    (("derive", "lstm", "--format", "pdf"), r"unknown format 'pdf' \(valid: text, latex, "
                                            r"markdown\)"),
    (("decay", "--cell", "lstm", "--init", "xavier"),
     r"unknown init scheme 'xavier' \(valid: pytorch, gaussian, orthogonal\)"),
    (("decay", "--cell", "lstm", "--input-dist", "cauchy"),
     r"unknown input distribution 'cauchy' \(valid: normal, uniform, zeros\)"),
    (("decay", "--cell", "lstm", "--dtype", "float16"),
     r"unknown dtype 'float16' \(did you mean 'float64' or 'float32'\?\)"),
    (("decay", "--cell", "lstm", "--backend", "jax"), r"unknown backend 'jax' \(valid: numpy, "
                                                      r"cupy\)"),
    (("lyapunov", "--cell", "grux"), r"unknown cell 'grux' \(did you mean 'gru'"),
    (("report", "--init", "Orthogonall"), r"unknown init scheme 'Orthogonall' \(did you mean "
                                          r"'orthogonal'\?\)"),
])
def test_an_unknown_choice_names_the_closest(args, message, sandbox):
    assert_clean_error(run_cli(*args), message)
    assert list(sandbox.iterdir()) == []


# -- streams and colour ----------------------------------------------------------------------
def test_json_to_stdout_progress_and_tables_to_stderr(sandbox):
    """A run that is not quiet: stdout is exactly the JSON document; the progress bar (drawn,
    as on a terminal) and the summary tables are on stderr."""
    p = gateflow_child("decay", "--cell", "rnn", "--hidden", "4", "--steps", "6", "--batch",
                       "2", "--json", "-", env={"FORCE_COLOR": "1"}, cwd=sandbox)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["cell"] == "rnn"
    assert "backward sweep" in p.stderr and "fitted decay" in p.stderr
    assert "{" not in p.stderr
    p = gateflow_child("derive", "gru", cwd=sandbox)
    assert p.returncode == 0 and p.stdout and p.stderr == ""


@pytest.mark.parametrize("args", [("--help",), ("decay", "--help"), ("derive", "--help"),
                                  ("cells",)])
def test_no_color_turns_off_every_style(args):
    styled = gateflow_child(*args, env={"FORCE_COLOR": "1"})
    assert styled.returncode == 0 and SGR.search(styled.stdout)  # the check can see escapes
    plain = gateflow_child(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.returncode == 0
    assert not SGR.search(plain.stdout + plain.stderr), plain.stdout[:400]
    assert re.sub(SGR, "", styled.stdout).split() == plain.stdout.split()


def test_no_color_run_has_no_colour(sandbox):
    p = gateflow_child("decay", "--cell", "lstm", "--hidden", "3", "--steps", "5", "--batch",
                       "1", env={"FORCE_COLOR": "1", "NO_COLOR": "1"}, cwd=sandbox)
    assert p.returncode == 0, p.stderr
    assert "fitted decay" in p.stdout + p.stderr
    assert not COLOUR.search(p.stdout + p.stderr)
    assert not SGR.search(p.stdout + p.stderr)  # no bold or dim either: plain text


def test_report_format_option(sandbox):
    """--format pdf writes PDF figures only; the path of index.html is all stdout gets."""
    p = gateflow_child("report", "--out", "r", "--format", "pdf", "--hidden", "3", "--steps",
                       "8", "--batch", "2", "--input-size", "2", "-q", cwd=sandbox)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("index.html")
    names = {f.name for f in (sandbox / "r").iterdir()}
    assert "decay_cells.pdf" in names and not any(n.endswith((".png", ".svg")) for n in names)
    bad = gateflow_child("report", "--out", "r2", "--format", "jpg", cwd=sandbox)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "jpg" in bad.stderr
    assert not (sandbox / "r2").exists()


def test_upper_case_typo_gets_a_suggestion():
    """The suggestion ignores case too: LSTN is one letter from lstm."""
    p = gateflow_child("decay", "--cell", "LSTN")
    assert p.returncode == 2 and "did you mean 'lstm'" in p.stderr, p.stderr


# -- help: panels, length, one wording per option ---------------------------------------------
#: The panels of the commands that read a model, and which options each holds.
PANELS = {
    "Model": {"--cell", "--weights", "--module", "--layer", "--direction", "--map",
              "--cells"},
    "Inputs": {"--inputs", "--batch-first", "--time-major", "--s0", "--steps", "--batch",
               "--input-dist", "--input-scale"},
    "Generated weights": {"--hidden", "--input-size", "--sizes", "--init", "--sigma-w",
                          "--sigma-v", "--sigma-b", "--gate-bias", "--chrono", "--seed",
                          "--points"},
    "Outputs": {"--json", "--csv", "--plot", "--spectra", "--spectra-lags", "--overwrite",
                "--out", "--format"},
    "Run": {"--blocks", "--norms", "--threshold", "--dtype", "--backend", "--quiet", "--k",
            "--transient", "--scheduler"},
}


def panels(text: str) -> dict[str, set[str]]:
    """The options of each help panel (``╭─ Model ───╮``), by panel title."""
    found: dict[str, set[str]] = {}
    title = None
    for line in text.splitlines():
        m = re.match(r"╭─ (.+?) ─", line)
        if m:
            title = m.group(1)
            found[title] = set()
        elif title is not None:
            opt = re.match(r"│\s+(--[\w-]+)", line)
            if opt:
                found[title].add(opt.group(1))
    return found


@pytest.mark.parametrize("command", ["decay", "lyapunov", "inspect", "report", "sweep"])
def test_help_is_grouped_into_panels(command):
    found = panels(help_of(command))
    titles = [t for t in found if t not in ("Options", "Arguments")]
    assert titles == [t for t in PANELS if found.get(t)], titles  # in this order
    for title in titles:
        assert found[title] <= PANELS[title], (title, found[title] - PANELS[title])
    assert found["Options"] <= {"--help"}
    every = {o for t in titles for o in found[t]}
    if command in ("decay", "lyapunov"):
        assert {"--cell", "--weights", "--inputs", "--time-major", "--batch-first", "--json",
                "--hidden", "--seed", "--quiet"} <= every


def _help_at(width: int, monkeypatch, *command: str) -> str:
    """``gateflow COMMAND --help`` rendered ``width`` columns wide (typer reads the width
    once, when it is first imported: set it where it is kept)."""
    import typer.rich_utils as rich_utils

    monkeypatch.setattr(rich_utils, "MAX_WIDTH", width)
    r = runner.invoke(app, [*command, "--help"])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_decay_help_is_short_at_80_columns(monkeypatch):
    """Was ~205 lines in one panel at 80 columns; most options now take one line."""
    lines = _help_at(80, monkeypatch, "decay").splitlines()
    assert max(map(len, lines)) == 80
    assert len(lines) <= 110, len(lines)
    # at 100 columns (the docs' width) all options but a few fit on one line each
    wide = _help_at(100, monkeypatch, "decay")
    assert max(map(len, wide.splitlines())) == 100
    long = [o for o, row in rows(wide).items() if len(row) > 100]  # a wrapped row, joined
    assert len(long) <= 4, long


def _options(command: str) -> dict[str, Any]:
    import typer

    params = typer.main.get_command(app).commands[command].params
    return {p.opts[0]: p for p in params if p.opts[0].startswith("--")}


def _shape(param) -> tuple:
    """What a user sees of an option in every command: its flags, its type (its annotation;
    an integer with a range is still an integer: report refuses T < 2 with click's range),
    metavar, choices, panel, and its help text without the default (defaults differ:
    report's n is 64, sweep's 32)."""
    kind = param.type_descriptor.annotation
    choices = tuple(m.value for m in kind) if isinstance(kind, type) and issubclass(kind, Enum) \
        else ()
    text = re.sub(r"\s*\\?\[default: [^\]]*\]", "", param.help or "")
    return (tuple(param.opts), tuple(param.secondary_opts), getattr(kind, "__name__", kind),
            param.metavar, choices, param.rich_help_panel, param.is_flag, text)


#: Options that share a name but not a meaning, and why.
DIFFERENT = {
    ("derive", "--steps"): "derive chains K one-step Jacobians; elsewhere T is a length",
    ("derive", "--format"): "derive's page format (text, latex, markdown)",
    ("report", "--format"): "report's figure files (svg, png, pdf)",
    ("decay", "--cell"): "decay takes several cells, comma-separated",
}


def test_shared_options_have_one_type_and_wording():
    """An option that several commands take (--weights, --inputs, --json, --hidden, --seed,
    --quiet, --overwrite, ...) has the same flags, type, metavar, panel and help text in
    every one of them."""
    seen: dict[str, dict[tuple, list[str]]] = {}
    for command in COMMANDS:
        for name, param in _options(command).items():
            if name in ("--help",) or (command, name) in DIFFERENT:
                continue
            seen.setdefault(name, {}).setdefault(_shape(param), []).append(command)
    shared = {name: shapes for name, shapes in seen.items()
              if sum(map(len, shapes.values())) > 1}
    assert {"--weights", "--inputs", "--batch-first", "--time-major", "--json", "--plot",
            "--hidden", "--steps", "--batch", "--seed", "--init", "--quiet",
            "--overwrite", "--out", "--module", "--layer", "--direction",
            "--map"} <= set(shared)
    differ = {name: {cmds[0]: shape for shape, cmds in shapes.items()}
              for name, shapes in shared.items() if len(shapes) > 1}
    assert not differ, differ
    # and --cell, where decay takes several, still has lyapunov's flags, type and metavar
    decay, lyap = _shape(_options("decay")["--cell"]), _shape(_options("lyapunov")["--cell"])
    assert decay[:6] == lyap[:6]


def test_batch_first_and_time_major_together_are_refused(sandbox):
    np = pytest.importorskip("numpy")
    np.save("x.npy", np.zeros((3, 2, 4)))
    for command in ("decay", "lyapunov"):
        assert_clean_error(run_cli(command, "--cell", "rnn", "--inputs", "x.npy",
                                   "--batch-first", "--time-major"),
                           "--batch-first and --time-major contradict each other")
        assert_clean_error(run_cli(command, "--cell", "rnn", "--time-major"),
                           "--time-major applies to an --inputs file")
    assert list(sandbox.iterdir()) == [sandbox / "x.npy"]

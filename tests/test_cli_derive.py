"""The CLI shell: ``gateflow cells`` and ``gateflow derive``, and the shared error handling."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gateflow import CELLS, get_cell
from gateflow.cli import app
from gateflow.symbolic._printing import equation_lines

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_no_args_shows_help():
    result = invoke()
    assert "derive" in result.output and "cells" in result.output


def test_cells_lists_every_cell():
    result = invoke("cells")
    assert result.exit_code == 0, result.output
    assert len(CELLS) == 11
    for name in CELLS:
        assert name in result.output


def test_derive_lstm_text():
    result = invoke("derive", "lstm")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "diag(f_t)" in out
    assert "∂c_t/∂c_{t−1} = diag(f_t)" in out
    for line in equation_lines(get_cell("lstm"), "text"):
        assert line in out
    for block in get_cell("lstm").blocks:
        out_, in_ = block.split("/")
        assert f"∂{out_}_t/∂{in_}_{{t−1}} = " in out


@pytest.mark.parametrize("fmt, marker", [
    ("latex", r"\begin{aligned}"),
    ("markdown", "### Jacobians"),
])
def test_derive_formats(fmt, marker):
    result = invoke("derive", "lstm", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert marker in result.output
    assert r"\operatorname{diag}\left(f_t\right)" in result.output


def test_derive_one_block():
    result = invoke("derive", "lstm", "--block", "c/c")
    assert result.exit_code == 0, result.output
    assert "∂c_t/∂c_{t−1} = diag(f_t)" in result.output
    assert "∂h_t/∂h_{t−1}" not in result.output


def test_derive_steps_has_closed_form():
    result = invoke("derive", "lstm", "--block", "c/c", "--steps", "3")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "∂c_t/∂c_{t−3} = " in out
    assert "J[c/c]_t J[c/c]_t−1 J[c/c]_t−2" in out  # the constant-error-carousel path
    assert "(n = 1)" in out
    assert "f_t · f_{t−1} · f_{t−2}" in out


def test_unknown_cell_exits_2_with_suggestion():
    result = invoke("derive", "lstn")
    assert result.exit_code == 2
    assert "did you mean" in result.output
    assert "'lstm'" in result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: ")


def test_unknown_block_exits_2():
    result = invoke("derive", "lstm", "--block", "c/y")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "c/y" in result.stderr
    assert "Traceback" not in result.output


def test_bad_format_exits_2():
    result = invoke("derive", "lstm", "--format", "foo")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_steps_zero_exits_2():
    result = invoke("derive", "lstm", "--steps", "0")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_console_script_error_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "gateflow.cli", "derive", "lstn"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: unknown cell 'lstn'")
    assert "did you mean" in lines[0]
    assert proc.stdout == ""

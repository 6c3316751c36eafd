"""The on-disk cache of compiled evaluators: used across processes, keyed by the equations.

Hostile caches (tampered entries, odd files, loose permissions) are in
``test_hostile_cache.py``, planted code in ``test_plan_data.py``; this file checks the
ordinary life of the cache."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest

import gateflow.numeric._codegen as codegen
from gateflow import CELLS, all_lags, init_params, make_inputs
from gateflow.cells._record import Cell
from gateflow.numeric import _cache
from gateflow.numeric._cache import _read_entry, entry_path
from gateflow.numeric._codegen import generate
from gateflow.numeric._compile import _compile
from gateflow.numeric._plan import FORMAT, PlanError, check_plan, namespace


def use_cache(folder, monkeypatch):
    """Point the cache at ``folder``, as a new process would see it (nothing compiled or
    warned about yet); returns ``folder``."""
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(folder))
    monkeypatch.setattr(_cache, "_warned", set())
    _compile.cache_clear()
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty cache folder for one test."""
    yield use_cache(tmp_path, monkeypatch)
    _compile.cache_clear()


def _run(cell="gru"):
    p = init_params(cell, 5, 3, scheme="gaussian", sigma_w=1.2, seed=0)
    return all_lags(cell, p, make_inputs(9, 2, 3, seed=1)).blocks


def assert_same_numbers(got: dict, expected: dict) -> None:
    """Every block's every norm equal bit for bit."""
    assert got.keys() == expected.keys()
    for block, norms in expected.items():
        assert got[block].keys() == norms.keys()
        for key, value in norms.items():
            np.testing.assert_array_equal(got[block][key], value)


def test_second_process_uses_the_cache_and_gets_the_same_numbers(cache, capsys):
    fresh = _run()
    (entry,) = list(cache.glob("gru-numpy-*.json"))
    assert json.loads(entry.read_text())["format"] == FORMAT == 6
    _compile.cache_clear()  # as a new process would
    mtime = entry.stat().st_mtime_ns
    cached = _run()
    assert entry.stat().st_mtime_ns == mtime  # read, not rewritten
    assert_same_numbers(cached, fresh)
    assert capsys.readouterr().err == ""  # a healthy cache is silent


def test_entries_are_private_signed_data(cache):
    _run("rnn")
    (entry,) = list(cache.glob("rnn-numpy-*.json"))
    assert entry.stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700
    assert json.loads(entry.read_text())["sha256"]
    plan = _read_entry(entry)
    assert plan["format"] == FORMAT
    # data, not code: the function of h is the expression DAG of tanh(U h + W x + b)
    (node,) = [i for i in plan["forward"] if i.get("node") == "h"]
    assert node["fn"] == {"let": [], "ret": ["call", "tanh", "h__pre"]}
    assert "def " not in entry.read_text() and "lambdify" not in entry.read_text()


@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_generated_plan_is_valid_data(name):
    """The plan checker admits what the generator writes for every built-in cell, state and
    input plans (or they could not be built at all)."""
    for inputs in (False, True):
        check_plan(generate(CELLS[name], "numpy", inputs), CELLS[name], inputs)


def test_custom_cell_with_powers_and_quotients_is_cached(cache):
    cell = Cell(name="../odd/name", summary="t", reference="t", state=("h",),
                params=("W", "U", "b"),
                equations=("h = (1 + h_prev**2)**(1/3) * tanh(W @ x + U @ h_prev + b)/2",))
    path = entry_path(cell, "numpy")
    assert path.parent == cache  # a cell's name never leaves the folder
    check_plan(generate(cell, "numpy"), cell, False)


def test_key_changes_with_the_equations(cache):
    lstm = CELLS["lstm"]
    altered = replace(lstm, equations=(*lstm.equations[:4], "c = f*c_prev + 2*i*g",
                                       "h = o*tanh(c)"))
    assert entry_path(lstm, "numpy") != entry_path(altered, "numpy")
    assert entry_path(lstm, "numpy") != entry_path(lstm, "cupy")
    assert entry_path(lstm, "numpy") != entry_path(lstm, "numpy", inputs=True)


def test_corrupt_entry_is_rebuilt(cache):
    _run()
    (entry,) = list(cache.glob("gru-*.json"))
    entry.write_text("{ not json")
    _compile.cache_clear()
    _run()
    assert json.loads(entry.read_text())["format"] == FORMAT


def test_unwritable_folder_only_costs_the_cache(cache, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    cache.chmod(0o500)
    try:
        _run("rnn")
    finally:
        cache.chmod(0o700)
    assert not any(cache.iterdir())
    assert capsys.readouterr().err == ""


def test_empty_setting_disables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", "")
    monkeypatch.chdir(tmp_path)
    _compile.cache_clear()
    try:
        _run("rnn")
        assert entry_path(CELLS["rnn"], "numpy") is None
        assert not any(tmp_path.iterdir())
    finally:
        _compile.cache_clear()


@pytest.mark.parametrize("name", sorted(CELLS))
def test_generated_source_is_lambdifys(name, monkeypatch):
    """gateflow writes its functions with SymPy's public printers (no lambdify internals);
    the text, which the plan keeps as data, is exactly what lambdify would generate (so
    the numbers are the same)."""
    import inspect

    import sympy as sp

    def reference(args, expr, backend, cse=False):
        fn = sp.lambdify([sp.Symbol(a) for a in args], expr, cse=cse, docstring_limit=0,
                         modules=[namespace(np), "numpy"])
        try:
            want = inspect.getsource(fn)
        except OSError:  # pragma: no cover - a SymPy without linecache registration
            pytest.skip("lambdify's source is not retrievable here")
        assert ours(args, expr, backend, cse) == want
        return want

    ours = codegen._source
    monkeypatch.setattr(codegen, "_source", reference)
    check_plan(generate(CELLS[name], "numpy"), CELLS[name], False)
    assert "lambdify" not in inspect.getsource(codegen._generate)


@pytest.mark.parametrize("labels", [
    {"c": {"text": "f_t"}},  # a format missing
    {"c": {"text": "f_t", "latex": "f_t"}, "h": {"text": "x", "latex": "x"}},  # extra block
    {"c": {"text": "f_t\nrm -rf", "latex": "f_t"}},  # not one printable line
    {"c": {"text": "", "latex": "f_t"}},
    {"c": {"text": "f" * 2001, "latex": "f_t"}},
    {"c": {"text": "f_t", "latex": "open('x').read()"}},  # never executed, still refused
    {"c": {"text": 1, "latex": "f_t"}},
    [],
])
def test_direct_labels_are_checked_like_the_rest_of_the_plan(labels):
    """The printed direct-path labels kept with a plan are plain, short, one-line strings
    for exactly the blocks with a direct path; anything else is refused (and rebuilt)."""
    plan = generate(CELLS["lstm"], "numpy")
    assert plan["direct_labels"] == {"c": {"text": "f_t", "latex": "f_t"}}
    check_plan(plan, CELLS["lstm"], False)
    with pytest.raises(PlanError, match="label|not a gateflow plan"):
        check_plan({**plan, "direct_labels": labels}, CELLS["lstm"], False)


def test_labels_need_no_sympy_on_a_cache_hit(tmp_path):
    """A second process prints ∏ diag(1 − f_t) for the MGU from the cached plan, without
    importing SymPy."""
    import os
    import subprocess
    import sys

    code = ("import sys; from gateflow.presentation._labels import direct_label; "
            "print(direct_label('mgu')); print('sympy' in sys.modules)")
    env = {**os.environ, "GATEFLOW_CACHE_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=120)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert first.stdout.splitlines() == ["∏ diag(1 − f_t)", "True"], first.stderr
    assert second.stdout.splitlines() == ["∏ diag(1 − f_t)", "False"], second.stderr

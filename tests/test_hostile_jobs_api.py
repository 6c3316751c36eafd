"""Hostile calls to the jobs' and figures' public API (``gateflow.write_report``,
``sweep``, ``plot_decay``, ``direct_label``, ``fit_batch``, ``decay``): every user error is
one line of GateflowError, raised before any work, never a raw exception."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import gateflow as g

P = g.init_params("lstm", 3, 2, seed=0)
X = g.make_inputs(4, 2, 2, seed=1)

CASES = {
    "write_report cfg str": (lambda: g.write_report("big"), r"must be a ReportConfig"),
    "write_report hidden 0": (lambda: g.write_report(g.ReportConfig(hidden=0)),
                              r"hidden must be an integer >= 1"),
    "write_report scheme": (lambda: g.write_report(g.ReportConfig(scheme="xavier")),
                            r"unknown init scheme 'xavier'"),
    "sweep cell typo": (lambda: g.sweep(cells="rnn,lstn"), r"unknown cell 'lstn'.*did you mean"),
    "sweep no cell": (lambda: g.sweep(cells=","), r"no cell chosen"),
    "sweep grid str": (lambda: g.sweep(cells="lstm", grid="big"), r"must be a SweepGrid"),
    "plot_decay empty": (lambda: g.plot_decay({}), r"needs at least one result"),
    "plot_decay norm": (lambda: g.plot_decay({"a": g.all_lags("lstm", P, X)}, norm="nuclear"),
                        r"unknown norm 'nuclear'"),
    "plot_decay block": (lambda: g.plot_decay({"a": g.all_lags("lstm", P, X)}, "x/y"),
                         r"has no block 'x/y'"),
    "plot_input_sensitivity empty": (lambda: g.plot_input_sensitivity({}),
                                     r"needs a result with input blocks"),
    "plot_input_sensitivity no inputs": (
        lambda: g.plot_input_sensitivity({"a": g.all_lags("lstm", P, X)}),
        r"needs a result with input blocks; run all_lags with blocks"),
    "plot_input_sensitivity norm": (
        lambda: g.plot_input_sensitivity({"a": g.all_lags("lstm", P, X, blocks=("h/x",))},
                                         norm="nuclear"), r"unknown norm 'nuclear'"),
    "direct_label cell": (lambda: g.direct_label("lstn"), r"unknown cell 'lstn'"),
    "direct_label state": (lambda: g.direct_label("lstm", "q"), r"unknown state block 'q'"),
    "direct_label format": (lambda: g.direct_label("lstm", fmt="html"), r"unknown format"),
    "fit_batch 1-D": (lambda: g.fit_batch(np.zeros(5)), r"shape \(T, B\)"),
    "fit_batch NaN": (lambda: g.fit_batch(np.full((5, 2), np.nan)), r"NaN"),
    "fit_batch threshold": (lambda: g.fit_batch(np.zeros((5, 2)), threshold=-1),
                            r"threshold must be > 0"),
    "decay norm": (lambda: g.decay("lstm", P, X, norms="nuclear"), r"unknown norm 'nuclear'"),
    "load_result missing": (lambda: g.load_result("no-such.json"), r"not found"),
    "load_result folder": (lambda: g.load_result("."), r"it is a folder"),
    "load_result None": (lambda: g.load_result(None), r"result"),
    "save_result not a result": (lambda: g.save_result({"a": 1}, "r.json"), r"ChainResult"),
    "save_result over a folder": (lambda: g.save_result(g.decay("lstm", P, X), "."),
                                  r"folder|directory"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_jobs_api_user_error_is_one_line_gateflow_error(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    call, pattern = CASES[name]
    with pytest.raises(g.GateflowError, match=pattern) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


def test_every_new_export_is_covered():
    """Each function exported for the jobs and figures has a hostile case above."""
    new = {"write_report", "sweep", "plot_decay", "direct_label", "fit_batch", "decay",
           "load_result", "save_result"}
    assert new <= {n for n in g.__all__ if inspect.isfunction(getattr(g, n))}
    covered = {n for n in new if any(re.search(rf"g\.{n}\(", inspect.getsource(call))
                                     for call, _ in CASES.values())}
    assert covered == new, new - covered


def test_load_result_refuses_hostile_files_in_one_line(tmp_path):
    """A FIFO is refused unopened (it would block), as are binary junk, JSON that is not a
    result, and a record whose equations do not parse: one GateflowError line each."""
    import json
    import os

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"\xff\xfe\x00garbage")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    res = g.decay(g.stack("lstm", 2), g.init_params(g.stack("lstm", 2), 3, 2), X)
    doc = json.loads(g.save_result(res, tmp_path / "ok.json").read_text())
    doc["cell_record"]["equations"][0] = "h_l0 = __import__('os').system('touch PWNED')"
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(doc))
    for path, pattern in ((fifo, r"FIFO"), (junk, r"not a gateflow result"),
                          (other, r"."), (evil, r".")):
        with pytest.raises(g.GateflowError, match=pattern) as info:
            g.load_result(path)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists() and not os.path.exists("PWNED")
    back = g.load_result(tmp_path / "ok.json")
    assert back.cell == g.stack("lstm", 2)

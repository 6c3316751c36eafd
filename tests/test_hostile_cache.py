"""Hostile compile caches: the cache runs only code it verified, and never breaks a run.

Every case plants something in the cache folder, then runs a cell as a new process would.
It must complete with numbers equal bit for bit to a cache-off run, raise nothing, run no
planted code (the payloads would create ``marker.npy``), and print exactly one warning line
on stderr when it ignores something (none when the cache is healthy).

* content cases: the entry is rejected (hash, JSON shape or source whitelist), rebuilt, and
  rewritten as a valid private entry;
* trust cases: a folder that is not only the user's is neither read nor written (its bait,
  a valid, re-signed entry with a hand-edited formula, would give wrong numbers if read);
  an entry that is not only the user's is rebuilt and replaced.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from _hostile import assert_unchanged, run_cli, run_subprocess, snapshot
from test_compile_cache import _run, assert_same_numbers, use_cache

from gateflow.numeric._compile import _compile, _digest, _read_entry

CELL = "gru"  # its coefficient source has assignments (cse) before the return
NOT_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
WARNING = "gateflow: warning: ignoring compile cache"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty cache folder for one test (as in ``test_compile_cache.py``)."""
    yield use_cache(tmp_path, monkeypatch)
    _compile.cache_clear()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """(file name, valid plan of CELL, cache-off reference numbers)."""
    folder = tmp_path_factory.mktemp("pristine") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GATEFLOW_CACHE_DIR", "")
        _compile.cache_clear()
        reference = _run(CELL)
        mp.setenv("GATEFLOW_CACHE_DIR", str(folder))
        _compile.cache_clear()
        _run(CELL)
        _compile.cache_clear()
    (entry,) = folder.glob("*.json")
    spec = json.loads(entry.read_text())
    del spec["sha256"]
    return entry.name, spec, reference


# -- entries -------------------------------------------------------------------------------

def _signed(name: str, spec) -> bytes:
    """An entry whose hash matches: only the shape and source checks can stop it."""
    return json.dumps({**spec, "sha256": _digest(name, spec)}).encode()


def _stale(name: str, spec: dict, edited: dict) -> bytes:
    """``edited`` carrying the hash of ``spec``: an edit by someone who did not re-sign."""
    return json.dumps({**edited, "sha256": _digest(name, spec)}).encode()


def _coef(spec: dict, src: str) -> dict:
    return {**spec, "coef_src": src}


def _inject(spec: dict, line: str) -> dict:
    """``line`` as the first statement of the coefficient function."""
    head, body = spec["coef_src"].split("\n", 1)
    return _coef(spec, f"{head}\n    {line}\n{body}")


def _edited_formula(spec: dict) -> dict:
    """The first coefficient scaled by 1.5: valid code, wrong numbers."""
    return _coef(spec, spec["coef_src"].replace("return [", "return [1.5*", 1))


def _first_scatter_index(spec: dict, value) -> dict:
    reverse = json.loads(json.dumps(spec["reverse"]))
    op = next(op for op in reverse if op[0] == "scatter" and op[2])
    op[2][0][1] = value
    return {**spec, "reverse": reverse}


#: Plans re-signed after the edit: the JSON schema and the source whitelist must stop them.
#: Each takes (plan, repr of the marker path) and returns the edited plan.
SIGNED = {
    "appended-statement": lambda s, m: _coef(s, s["coef_src"] + f"open({m}, 'w').close()\n"),
    "appended-class-body": lambda s, m: _coef(
        s, s["coef_src"] + f"class A:\n    open({m}, 'w').close()\n"),
    "second-def": lambda s, m: _coef(
        s, s["coef_src"] + f"def _lambdifygenerated(*a):\n    return open({m}, 'w')\n"),
    "import-os": lambda s, m: _inject(s, f"import os; os.system('touch ' + {m})"),
    "from-import": lambda s, m: _inject(s, f"from os import system; system('touch ' + {m})"),
    "dunder-import": lambda s, m: _inject(s, f"x9 = __import__('os').system('touch ' + {m})"),
    "dunder-attribute": lambda s, m: _inject(s, "x9 = ().__class__.__base__.__subclasses__()"),
    "dunder-name": lambda s, m: _inject(s, f"x9 = __builtins__['open']({m}, 'w')"),
    "lambda": lambda s, m: _inject(s, f"x9 = (lambda: open({m}, 'w'))()"),
    "comprehension": lambda s, m: _inject(s, f"x9 = [open({m}, 'w') for q in [0]]"),
    "exec": lambda s, m: _inject(s, f"x9 = exec(\"open({m}, 'w')\")"),
    "eval": lambda s, m: _inject(s, f"x9 = eval(\"open({m}, 'w')\")"),
    "getattr": lambda s, m: _inject(s, f"x9 = getattr(numpy, 'save')({m}, 0)"),
    "numpy-attribute": lambda s, m: _inject(s, f"x9 = numpy.save({m}, 0)"),
    "numpy-bare-name": lambda s, m: _inject(s, f"x9 = savetxt({m}, [0])"),
    "keyword-argument": lambda s, m: _inject(s, f"x9 = tanh(0, out=open({m}, 'w'))"),
    "decorator": lambda s, m: _coef(s, f"@(lambda f: open({m}, 'w'))\n{s['coef_src']}"),
    "default-argument": lambda s, m: _coef(
        s, s["coef_src"].replace("):\n", f"=open({m}, 'w')):\n", 1)),
    "power-bomb": lambda s, m: _inject(s, "x9 = 9**9**9**9"),
    "string-constant": lambda s, m: _inject(s, "x9 = 'rm -rf ~'"),
    "deep-parentheses": lambda s, m: _coef(
        s, "def _lambdifygenerated(z):\n    return " + "(" * 100_000 + "z" + ")" * 100_000),
    "deep-expression": lambda s, m: _coef(s, s["coef_src"].replace(
        "return [", "return [" + "0*x0 + " * 100_000, 1)),  # valid, but too deep to parse
    "wrong-arguments": lambda s, m: {**s, "coef_args": s["coef_args"][1:]},
    "short-coefficient-list": lambda s, m: _coef(s, s["coef_src"].rsplit(",", 1)[0] + "]\n"),
    "index-out-of-range": lambda s, m: {**s, "direct": {k: 999 for k in s["direct"]}},
    "bool-as-index": lambda s, m: _first_scatter_index(s, True),
    "unknown-group": lambda s, m: {**s, "reverse": [["group", ["nope"], []]]},
    "extra-key": lambda s, m: {**s, "exec": f"open({m}, 'w')"},
    "old-format": lambda s, m: {**s, "format": 1},
    "missing-keys": lambda s, m: {"format": 2},
    "wrong-types": lambda s, m: {"format": 2, "forward": "x", "coef_args": 1, "coef_src": None,
                                 "layout": {}, "reverse": 0, "direct": []},
    "nested-garbage": lambda s, m: {**s, "forward": [[[{"a": [1, {"b": None}]}]]]},
}

#: Raw file contents, from (file name, plan, repr of the marker path).
RAW = {
    "appended-code-unsigned": lambda n, s, m: _stale(
        n, s, _coef(s, s["coef_src"] + f"open({m}, 'w').close()\n")),
    "hand-edited-formula": lambda n, s, m: _stale(n, s, _edited_formula(s)),
    "hash-mismatch": lambda n, s, m: json.dumps({**s, "sha256": "0" * 64}).encode(),
    "hash-missing": lambda n, s, m: json.dumps(s).encode(),
    "hash-wrong-type": lambda n, s, m: json.dumps({**s, "sha256": 42}).encode(),
    "foreign-entry": lambda n, s, m: _signed("rnn-numpy-0123456789abcdef01234567.json", s),
    "truncated": lambda n, s, m: _signed(n, s)[:-40],
    "list": lambda n, s, m: b"[]",
    "number": lambda n, s, m: b"42",
    "null": lambda n, s, m: b"null",
    "string": lambda n, s, m: b'"x"',
    "true": lambda n, s, m: b"true",
    "empty-object": lambda n, s, m: b"{}",
    "nan": lambda n, s, m: b'{"format": NaN, "sha256": "x"}',
    "deep-json-list": lambda n, s, m: b"[" * 100_000 + b"]" * 100_000,
    "deep-json-object": lambda n, s, m: b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "invalid-utf8": lambda n, s, m: b'{"format": "\xff\xfe"}',
    "empty-file": lambda n, s, m: b"",
    "huge-file": lambda n, s, m: _signed(n, s) + b" " * (9 << 20),
}

CONTENT = {**{k: (lambda f: lambda n, s, m: _signed(n, f(s, m)))(f) for k, f in SIGNED.items()},
           **RAW}


def _assert_run(reference: dict, capsys, warnings: int) -> None:
    """A run as in a new process: the reference numbers, and ``warnings`` warning lines."""
    _compile.cache_clear()
    assert_same_numbers(_run(CELL), reference)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == warnings, lines
    assert all(line.startswith(WARNING) for line in lines), lines


def _assert_rewritten(entry: Path) -> None:
    """A fresh, private, verifiable entry replaced what was there."""
    st = os.lstat(entry)
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600
    assert st.st_uid == os.geteuid()
    _read_entry(entry)


@pytest.mark.parametrize("case", sorted(CONTENT))
def test_hostile_entry_is_rebuilt_and_never_run(case, cache, pristine, capsys, tmp_path):
    name, spec, reference = pristine
    marker = tmp_path / "marker.npy"
    entry = cache / name
    entry.write_bytes(CONTENT[case](name, spec, repr(str(marker))))
    entry.chmod(0o600)
    _assert_run(reference, capsys, warnings=1)
    assert not marker.exists()
    _assert_rewritten(entry)


# -- folders and files that are not only the user's -----------------------------------------

def _bait(folder: Path, pristine) -> Path:
    """A valid, re-signed entry with a hand-edited formula: wrong numbers if it is ever read."""
    name, spec, _ = pristine
    entry = folder / name
    entry.write_bytes(_signed(name, _edited_formula(spec)))
    entry.chmod(0o600)
    return entry


def _chmod(mode):
    return lambda folder: folder.chmod(mode)


def _chown_other(path: Path) -> None:
    os.chown(path, 65534, 65534)


#: Ways to make the cache folder untrustworthy, applied to the (private, baited) folder.
FOLDERS = {
    "folder-0777": _chmod(0o777),
    "folder-0770": _chmod(0o770),
    "folder-0702": _chmod(0o702),
    "parent-0777": lambda folder: folder.parent.chmod(0o777),
    "folder-other-uid": pytest.param(_chown_other, marks=NOT_ROOT),
    "parent-other-uid": pytest.param(lambda folder: _chown_other(folder.parent),
                                     marks=NOT_ROOT),
}


@pytest.mark.parametrize("spoil", list(FOLDERS.values()), ids=list(FOLDERS))
def test_untrusted_folder_is_neither_read_nor_written(spoil, cache, pristine, capsys,
                                                       monkeypatch):
    folder = cache / "cache"
    folder.mkdir(mode=0o700)
    _bait(folder, pristine)
    spoil(folder)
    use_cache(folder, monkeypatch)
    before = snapshot(cache)
    _assert_run(pristine[2], capsys, warnings=1)
    assert_unchanged(before, snapshot(cache))


def test_symlinked_folder_is_not_used(cache, pristine, capsys, monkeypatch):
    real = cache / "real"
    real.mkdir(mode=0o700)
    _bait(real, pristine)
    (cache / "link").symlink_to(real)
    use_cache(cache / "link", monkeypatch)
    before = snapshot(cache)
    _assert_run(pristine[2], capsys, warnings=1)
    assert_unchanged(before, snapshot(cache))


def test_file_in_place_of_the_folder(cache, pristine, capsys, monkeypatch):
    (cache / "cache").write_text("not a folder")
    use_cache(cache / "cache", monkeypatch)
    before = snapshot(cache)
    _assert_run(pristine[2], capsys, warnings=1)
    assert_unchanged(before, snapshot(cache))


def test_sticky_world_writable_parent_is_fine(cache, pristine, capsys, monkeypatch):
    """Like /tmp: others may create files beside the folder but not replace it."""
    cache.chmod(0o1777)
    folder = cache / "cache"
    use_cache(folder, monkeypatch)
    _assert_run(pristine[2], capsys, warnings=0)
    (entry,) = folder.glob("*.json")
    _assert_rewritten(entry)
    _assert_run(pristine[2], capsys, warnings=0)  # and read back


def _link_to_bait(entry: Path, pristine) -> None:
    elsewhere = entry.parent.parent / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    entry.symlink_to(_bait(elsewhere, pristine))


#: Ways to make the entry untrustworthy in a trusted folder: it is rebuilt and replaced.
ENTRIES = {
    "entry-0660": lambda e, p: _bait(e.parent, p).chmod(0o660),
    "entry-0666": lambda e, p: _bait(e.parent, p).chmod(0o666),
    "entry-0602": lambda e, p: _bait(e.parent, p).chmod(0o602),
    "entry-other-uid": pytest.param(lambda e, p: _chown_other(_bait(e.parent, p)),
                                    marks=NOT_ROOT),
    "entry-symlink": _link_to_bait,
    "entry-fifo": lambda e, p: os.mkfifo(e, 0o600),
}


@pytest.mark.parametrize("spoil", list(ENTRIES.values()), ids=list(ENTRIES))
def test_untrusted_entry_is_rebuilt_and_replaced(spoil, cache, pristine, capsys,
                                                  monkeypatch):
    folder = cache / "cache"
    folder.mkdir(mode=0o700)
    entry = folder / pristine[0]
    spoil(entry, pristine)
    use_cache(folder, monkeypatch)
    outside = snapshot(cache / "elsewhere") if (cache / "elsewhere").exists() else {}
    _assert_run(pristine[2], capsys, warnings=1)
    _assert_rewritten(entry)
    if outside:
        assert_unchanged(outside, snapshot(cache / "elsewhere"))  # the link's target


def test_folder_in_place_of_the_entry(cache, pristine, capsys):
    (cache / pristine[0]).mkdir(mode=0o700)
    _assert_run(pristine[2], capsys, warnings=1)
    assert (cache / pristine[0]).is_dir()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_created_private_whatever_the_umask(umask, cache, pristine, capsys, monkeypatch):
    folder = cache / "a" / "b" / "cache"
    use_cache(folder, monkeypatch)
    old = os.umask(umask)
    try:
        _assert_run(pristine[2], capsys, warnings=0)
    finally:
        os.umask(old)
    for path in (cache / "a", cache / "a" / "b", folder):
        assert path.stat().st_mode & 0o7777 == 0o700
    (entry,) = folder.glob("*.json")
    _assert_rewritten(entry)


# -- whole commands --------------------------------------------------------------------------

DECAY = ("decay", "--cell", CELL, "--hidden", 4, "--input-size", 3, "--steps", 5,
         "--batch", 2, "--quiet")


def _poison(folder: Path, pristine, marker: Path) -> None:
    """Plant CELL's entry with code appended, re-signed (only the whitelist can stop it)."""
    name, spec, _ = pristine
    (folder / name).write_bytes(CONTENT["appended-statement"](name, spec, repr(str(marker))))
    _compile.cache_clear()  # as a new process would


def test_cli_runs_with_a_poisoned_cache(cache, pristine, sandbox, monkeypatch):
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", "")
    clean = run_cli(*DECAY, "--json", sandbox / "clean.json")
    assert clean.exit_code == 0, clean.stderr
    use_cache(cache, monkeypatch)
    _poison(cache, pristine, sandbox / "marker.npy")
    for args in (("derive", CELL), (*DECAY, "--json", sandbox / "poisoned.json")):
        out = run_cli(*args)
        assert out.exception is None and out.exit_code == 0, out.stderr
        assert len(out.stderr.splitlines()) <= 1
        assert all(line.startswith(WARNING) for line in out.stderr.splitlines())
    blocks = [json.loads((sandbox / f).read_text())["blocks"] for f in ("clean.json",
                                                                         "poisoned.json")]
    assert blocks[0] == blocks[1]
    assert not (sandbox / "marker.npy").exists()
    _read_entry(next(cache.glob(f"{CELL}-*.json")))  # rebuilt and rewritten


def test_new_process_with_world_writable_cache_warns_once(cache, pristine, sandbox):
    _poison(cache, pristine, sandbox / "marker.npy")
    cache.chmod(0o777)
    env = {**os.environ, "GATEFLOW_CACHE_DIR": str(cache)}
    out = run_subprocess(*DECAY, "--json", sandbox / "out.json", cwd=sandbox, env=env)
    assert out.exit_code == 0, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(WARNING) and "writable by group or others" in line, line
    assert not (sandbox / "marker.npy").exists()

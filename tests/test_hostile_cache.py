"""Hostile compile caches: the cache holds data, never code, and never breaks a run.

Every case plants something in the cache folder, then runs a cell as a new process would.
It must complete with numbers equal bit for bit to a cache-off run, raise nothing, run no
planted code (the payloads would create ``marker.npy``), and print exactly one warning line
on stderr when it ignores something (none when the cache is used).

* content cases: the entry is rejected (digest, JSON, or the plan checked as data), rebuilt,
  and rewritten as a valid private entry;
* files that are not what an entry is (a link, a FIFO, a folder): rebuilt and replaced, the
  link's target untouched, a FIFO never read from;
* permissions and owners: reading does not depend on them. A valid entry is used whoever
  owns it and whatever its mode (it is data); a planted one is rebuilt like any other.
  (A re-signed entry with an edited formula inside the vocabulary is data too: it would
  give other numbers but run nothing. The digest is not a signature; gateflow keeps its
  folder 0700 and its entries 0600 so that only you can write them.)
"""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import pytest
from _hostile import assert_unchanged, run_cli, run_subprocess, snapshot
from test_compile_cache import _run, assert_same_numbers, use_cache

from gateflow.numeric._cache import _digest, _read_entry
from gateflow.numeric._compile import _compile
from gateflow.numeric._plan import MAX_DEPTH

CELL = "gru"  # its coefficient function has temporaries (cse) before its value
ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
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
    (entry,) = folder.glob(f"{CELL}-numpy-*.json")
    spec = json.loads(entry.read_text())
    del spec["sha256"]
    return entry.name, spec, reference


# -- entries -------------------------------------------------------------------------------

def _signed(name: str, spec) -> bytes:
    """An entry whose digest matches: only the checks of the plan as data can stop it."""
    return json.dumps({**spec, "sha256": _digest(name, spec)}).encode()


def _stale(name: str, spec: dict, edited: dict) -> bytes:
    """``edited`` carrying the digest of ``spec``: an edit by someone who did not re-sign."""
    return json.dumps({**edited, "sha256": _digest(name, spec)}).encode()


def _value(spec: dict, value) -> dict:
    """The first coefficient's expression replaced by ``value``."""
    coef = copy.deepcopy(spec["coef"])
    coef["ret"][1] = value
    return {**spec, "coef": coef}


def _let(spec: dict, let) -> dict:
    coef = copy.deepcopy(spec["coef"])
    coef["let"] = [*let, *coef["let"]]
    return {**spec, "coef": coef}


def _edited_formula(spec: dict) -> dict:
    """The first coefficient scaled by 1.5: valid data, other numbers."""
    return _value(spec, ["mul", 1.5, spec["coef"]["ret"][1]])


def _first_scatter_index(spec: dict, value) -> dict:
    """The coefficient index of the first elementwise edge set to ``value`` (a function of
    the index there)."""
    reverse = copy.deepcopy(spec["reverse"])
    op = next(op for op in reverse if op[0] == "scatter" and op[2])
    op[2][0][1] = value(op[2][0][1]) if callable(value) else value
    return {**spec, "reverse": reverse}


def _node(spec: dict, name: str, **changes) -> dict:
    forward = copy.deepcopy(spec["forward"])
    next(i for i in forward if i.get("node") == name).update(changes)
    return {**spec, "forward": forward}


def _deep(depth: int):
    e = "r"
    for _ in range(depth):
        e = ["neg", e]
    return e


#: Plans re-signed after the edit: the checks of the plan as data must stop them. Each
#: takes (plan, repr of the marker path) and returns the edited plan.
SIGNED = {
    "source-in-place-of-data": lambda s, m: {
        **s, "coef": f"def _lambdifygenerated(r):\n    open({m}, 'w')\n    return [r]\n"},
    "source-as-a-name": lambda s, m: _value(s, f"open({m}, 'w')"),
    "source-as-a-temporary": lambda s, m: _let(s, [[f"__import__('os').system('touch ' + {m})",
                                                    "r"]]),
    "dunder-import-call": lambda s, m: _value(s, ["call", "__import__", "r"]),
    "open-call": lambda s, m: _value(s, ["call", "open", "r"]),
    "exec-call": lambda s, m: _value(s, ["call", "exec", "r"]),
    "eval-call": lambda s, m: _value(s, ["call", "eval", "r"]),
    "getattr-call": lambda s, m: _value(s, ["call", "getattr", "r", "r"]),
    "numpy-function-outside": lambda s, m: _value(s, ["call", "save", "r", "r"]),
    "attribute": lambda s, m: _value(s, ["attr", "numpy", "save"]),
    "subscript": lambda s, m: _value(s, ["subscript", "r", 0]),
    "lambda": lambda s, m: _value(s, ["lambda", ["call", "open", "r"]]),
    "keyword-argument": lambda s, m: _value(s, ["call", "tanh", "r", {"out": "r"}]),
    "string-constant": lambda s, m: _value(s, ["add", "r", ["str", "rm -rf ~"]]),
    "builtins-name": lambda s, m: _value(s, "__builtins__"),
    "unknown-name": lambda s, m: _value(s, "PWNED"),
    "dunder-temporary": lambda s, m: _let(s, [["__class__", "r"]]),
    "wrong-arity": lambda s, m: _value(s, ["call", "tanh"]),
    "array-as-parameter": lambda s, m: _value(s, ["call", "Heaviside", "r", "r"]),
    "power-bomb": lambda s, m: _value(s, ["mul", "r", ["pow", 9, ["pow", 9, ["pow", 9, 9]]]]),
    "nan-constant": lambda s, m: _value(s, ["mul", "r", float("nan")]),
    "inf-constant": lambda s, m: _value(s, ["mul", "r", float("inf")]),
    "huge-int": lambda s, m: _value(s, ["mul", "r", 10**400]),
    "deep-expression": lambda s, m: _value(s, _deep(MAX_DEPTH + 100)),
    "node-reads-what-is-not-defined": lambda s, m: _node(s, "h", args=["PWNED"]),
    "node-named-like-a-builtin": lambda s, m: _node(s, "h", node="open"),
    "state-not-computed": lambda s, m: {**s, "forward": [
        i for i in s["forward"] if i.get("node") != "h"]},
    "product-renamed": lambda s, m: {**s, "forward": [
        {**i, "atoms": ["os__system", *i["atoms"][1:]]} if "atoms" in i else i
        for i in s["forward"]]},
    "vector-as-weight": lambda s, m: {**s, "forward": [
        {**i, "weights": ["b_r", *i["weights"][1:]]} if "weights" in i else i
        for i in s["forward"]]},
    "wrong-arguments": lambda s, m: {**s, "coef_args": s["coef_args"][1:]},
    "short-coefficient-list": lambda s, m: {**s, "coef": {**s["coef"],
                                                          "ret": s["coef"]["ret"][:-1]}},
    "index-out-of-range": lambda s, m: {**s, "direct": {k: 999 for k in s["direct"]}},
    "bool-as-index": lambda s, m: _first_scatter_index(s, True),
    "edge-of-another-coefficient": lambda s, m: _first_scatter_index(
        s, lambda k: (k + 1) % len(s["layout"])),
    "unknown-group": lambda s, m: {**s, "reverse": [["group", ["nope"], []]]},
    "extra-key": lambda s, m: {**s, "exec": f"open({m}, 'w')"},
    "old-format": lambda s, m: {**s, "format": 4},
    "inputs-plan-for-the-state": lambda s, m: {**s, "wrt": ["x"]},
    "missing-keys": lambda s, m: {"format": 6},
    "wrong-types": lambda s, m: {"format": 6, "forward": "x", "coef_args": 1, "coef": None,
                                 "layout": {}, "reverse": 0, "direct": [],
                                 "direct_labels": 3, "wrt": 7},
    "nested-garbage": lambda s, m: {**s, "forward": [[[{"a": [1, {"b": None}]}]]]},
}

#: Raw file contents, from (file name, plan, repr of the marker path).
RAW = {
    "planted-code-unsigned": lambda n, s, m: _stale(n, s, _value(s, f"open({m}, 'w')")),
    "hand-edited-formula-unsigned": lambda n, s, m: _stale(n, s, _edited_formula(s)),
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
    "huge-number": lambda n, s, m: b'{"format": 1' + b"0" * 100_000 + b"}",
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


def _assert_rewritten(entry: Path, spec: dict) -> None:
    """A fresh, private entry of the pristine plan replaced what was there."""
    st = os.lstat(entry)
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o600
    assert st.st_uid == os.geteuid()
    assert _read_entry(entry) == spec


@pytest.mark.parametrize("case", sorted(CONTENT))
def test_hostile_entry_is_rebuilt_and_never_run(case, cache, pristine, capsys, tmp_path):
    name, spec, reference = pristine
    marker = tmp_path / "marker.npy"
    entry = cache / name
    entry.write_bytes(CONTENT[case](name, spec, repr(str(marker))))
    entry.chmod(0o600)
    _assert_run(reference, capsys, warnings=1)
    assert not marker.exists()
    _assert_rewritten(entry, spec)


def test_every_string_of_an_entry_on_disk(cache, pristine, capsys, tmp_path, monkeypatch):
    """Code in each string of the entry in turn (re-signed): rebuilt, never run (the
    exhaustive version, for every field of every cell, is in ``test_plan_data.py``)."""
    name, spec, reference = pristine
    marker = tmp_path / "marker.npy"
    payload = f"__import__('os').system('touch {marker}')"
    paths = []

    def walk(tree, path):
        if isinstance(tree, str):
            paths.append(path)
        elif isinstance(tree, (list, dict)):
            for k, v in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
                walk(v, (*path, k))

    walk(spec, ())
    assert len(paths) > 100
    for path in paths[::7]:  # a spread of fields; every one in test_plan_data.py
        planted = copy.deepcopy(spec)
        box = planted
        for p in path[:-1]:
            box = box[p]
        box[path[-1]] = payload
        (cache / name).write_bytes(_signed(name, planted))
        use_cache(cache, monkeypatch)  # nothing warned about yet, as in a new process
        _assert_run(reference, capsys, warnings=1)
        _assert_rewritten(cache / name, spec)
    assert not marker.exists()


# -- permissions and owners: reading does not depend on them --------------------------------

def _chown_other(path: Path) -> None:
    os.chown(path, 65534, 65534)


#: Ways to loosen the folder or the entry (applied to a folder holding a valid entry).
LOOSE = {
    "folder-0777": lambda folder, entry: folder.chmod(0o777),
    "folder-0770": lambda folder, entry: folder.chmod(0o770),
    "folder-0702": lambda folder, entry: folder.chmod(0o702),
    "parent-0777": lambda folder, entry: folder.parent.chmod(0o777),
    "entry-0666": lambda folder, entry: entry.chmod(0o666),
    "entry-0660": lambda folder, entry: entry.chmod(0o660),
    "entry-0602": lambda folder, entry: entry.chmod(0o602),
    "folder-other-uid": pytest.param(lambda folder, entry: _chown_other(folder), marks=ROOT),
    "parent-other-uid": pytest.param(lambda folder, entry: _chown_other(folder.parent),
                                     marks=ROOT),
    "entry-other-uid": pytest.param(lambda folder, entry: _chown_other(entry), marks=ROOT),
}


@pytest.mark.parametrize("loosen", list(LOOSE.values()), ids=list(LOOSE))
def test_a_valid_entry_is_used_whatever_its_owner_or_mode(loosen, cache, pristine, capsys,
                                                          monkeypatch):
    name, spec, reference = pristine
    folder = cache / "cache"
    folder.mkdir(mode=0o700)
    entry = folder / name
    entry.write_bytes(_signed(name, spec))
    loosen(folder, entry)
    use_cache(folder, monkeypatch)
    before = snapshot(cache)
    _assert_run(reference, capsys, warnings=0)
    assert_unchanged(before, snapshot(cache))  # read, not rewritten


@pytest.mark.parametrize("loosen", list(LOOSE.values()), ids=list(LOOSE))
def test_a_planted_entry_is_rebuilt_whatever_its_owner_or_mode(loosen, cache, pristine,
                                                              capsys, monkeypatch, tmp_path):
    name, spec, reference = pristine
    marker = tmp_path / "marker.npy"
    folder = cache / "cache"
    folder.mkdir(mode=0o700)
    entry = folder / name
    entry.write_bytes(CONTENT["source-as-a-name"](name, spec, repr(str(marker))))
    loosen(folder, entry)
    use_cache(folder, monkeypatch)
    _assert_run(reference, capsys, warnings=1)
    assert not marker.exists()
    _assert_rewritten(entry, spec)


def test_symlinked_folder_is_used_like_any_folder(cache, pristine, capsys, monkeypatch):
    """A cache folder that is a link (to another disk, say) holds data like any other."""
    real = cache / "real"
    real.mkdir(mode=0o700)
    (cache / "link").symlink_to(real)
    use_cache(cache / "link", monkeypatch)
    _assert_run(pristine[2], capsys, warnings=0)
    (entry,) = real.glob(f"{CELL}-numpy-*.json")
    _assert_rewritten(entry, pristine[1])
    _assert_run(pristine[2], capsys, warnings=0)  # and read back


def test_file_in_place_of_the_folder(cache, pristine, capsys, monkeypatch):
    (cache / "cache").write_text("not a folder")
    use_cache(cache / "cache", monkeypatch)
    before = snapshot(cache)
    _assert_run(pristine[2], capsys, warnings=1)
    assert_unchanged(before, snapshot(cache))


def test_sticky_world_writable_parent_is_fine(cache, pristine, capsys, monkeypatch):
    cache.chmod(0o1777)
    folder = cache / "cache"
    use_cache(folder, monkeypatch)
    _assert_run(pristine[2], capsys, warnings=0)
    (entry,) = folder.glob("*.json")
    _assert_rewritten(entry, pristine[1])
    _assert_run(pristine[2], capsys, warnings=0)  # and read back


# -- files that are not what an entry is -----------------------------------------------------

def _link_elsewhere(entry: Path, pristine) -> None:
    """A link to a valid entry elsewhere: not followed (rebuilt), its target untouched."""
    elsewhere = entry.parent.parent / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    target = elsewhere / pristine[0]
    target.write_bytes(_signed(pristine[0], pristine[1]))
    entry.symlink_to(target)


ODD = {
    "entry-symlink": _link_elsewhere,
    "entry-dangling-symlink": lambda e, p: e.symlink_to(e.parent / "nowhere"),
    "entry-fifo": lambda e, p: os.mkfifo(e, 0o600),
}


@pytest.mark.parametrize("spoil", list(ODD.values()), ids=list(ODD))
def test_odd_entry_is_rebuilt_and_replaced(spoil, cache, pristine, capsys, monkeypatch):
    folder = cache / "cache"
    folder.mkdir(mode=0o700)
    entry = folder / pristine[0]
    spoil(entry, pristine)
    use_cache(folder, monkeypatch)
    outside = snapshot(cache / "elsewhere") if (cache / "elsewhere").exists() else {}
    _assert_run(pristine[2], capsys, warnings=1)
    _assert_rewritten(entry, pristine[1])
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
    _assert_rewritten(entry, pristine[1])


# -- whole commands --------------------------------------------------------------------------

DECAY = ("decay", "--cell", CELL, "--hidden", 4, "--input-size", 3, "--steps", 5,
         "--batch", 2, "--quiet")


def _poison(folder: Path, pristine, marker: Path) -> None:
    """Plant code in CELL's entry, re-signed (only the checks of the data can stop it)."""
    name, spec, _ = pristine
    (folder / name).write_bytes(CONTENT["source-as-a-temporary"](name, spec, repr(str(marker))))
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
    assert _read_entry(next(cache.glob(f"{CELL}-numpy-*.json"))) == pristine[1]  # rewritten


def test_new_process_with_a_poisoned_world_writable_cache_warns_once(cache, pristine, sandbox):
    _poison(cache, pristine, sandbox / "marker.npy")
    cache.chmod(0o777)
    env = {**os.environ, "GATEFLOW_CACHE_DIR": str(cache)}
    out = run_subprocess(*DECAY, "--json", sandbox / "out.json", cwd=sandbox, env=env)
    assert out.exit_code == 0, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(WARNING) and "not a valid gateflow plan" in line, line
    assert not (sandbox / "marker.npy").exists()


# -- every cut and every byte, read directly -------------------------------------------------

def test_truncated_or_edited_anywhere_is_never_used_wrong(cache, pristine, capsys, monkeypatch):
    """Cut at every 13th byte, or one byte changed at every 13th position: the read gives
    None (rebuild, one warning) or, for an edit JSON ignores, the very plan; it never
    raises and never returns anything else."""
    from gateflow.numeric import _cache

    name, spec, _ = pristine
    data = _signed(name, spec)
    entry = cache / name
    variants = [data[:k] for k in range(0, len(data), 13)]
    variants += [data[:k] + bytes([b]) + data[k + 1:] for k in range(0, len(data), 13)
                 for b in (data[k] ^ 1, 0x20, 0x22, 0x7B)]
    for v in variants:
        entry.write_bytes(v)
        monkeypatch.setattr(_cache, "_warned", set())
        got = _cache.read(entry)
        lines = capsys.readouterr().err.splitlines()
        if got is None:
            assert len(lines) == 1 and lines[0].startswith(WARNING)
        else:
            assert got == spec and not lines

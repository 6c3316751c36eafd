"""Compiled plans are data: nothing read from disk is ever run as code.

* An AST check over the whole package: ``exec``, ``eval``, ``compile``, ``__import__``,
  ``import_module`` of a computed name, ``pickle.load(s)``, ``marshal`` and their kin appear
  only in the plan builder (:mod:`gateflow.numeric._plan`), and there only on an AST built
  from data that was checked first.
* The data form is exact: the AST built from a plan is the AST of the source SymPy's printer
  writes, node for node, for every cell (so the numbers are the same bit for bit).
* The vocabulary: every kind of expression outside it is refused, whatever its shape.
* A tamper test: code planted in every string field of every entry of every built-in cell
  (state and input plans, a variant, a stack), re-signed, is never run and the entry is
  rebuilt; the numbers are those of a fresh compile.
"""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import numpy as np
import pytest

import gateflow
import gateflow.numeric._compile as compile_module
from gateflow import init_params, make_inputs, stack
from gateflow.cells._library import CELLS, get_cell
from gateflow.numeric import _cache
from gateflow.numeric import _codegen as codegen_module
from gateflow.numeric._codegen import _source, generate
from gateflow.numeric._compile import Bound, _compile, _load
from gateflow.numeric._plan import (
    CALLS,
    LABEL_FORMATS,
    MAX_DEPTH,
    MAX_INT,
    PlanError,
    _function_def,
    _label,
    build,
    check_function,
    check_plan,
    function_data,
)

PACKAGE = Path(gateflow.__file__).parent
F64 = np.dtype("float64")

# -- (a) the package, read as an AST ------------------------------------------------------------

#: Calls that run code or load objects that can: (module or None, name).
_RUNS_CODE = {(None, "exec"), (None, "eval"), (None, "compile"), (None, "__import__"),
              (None, "breakpoint"), ("builtins", "exec"), ("builtins", "eval"),
              ("builtins", "compile"), ("builtins", "__import__"), ("pickle", "load"),
              ("pickle", "loads"), ("marshal", "load"), ("marshal", "loads"),
              ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
              ("cloudpickle", "loads"), ("shelve", "open"), ("jsonpickle", "decode"),
              ("code", "interact"), ("runpy", "run_path"), ("runpy", "run_module")}
_CODE_MODULES = {"marshal", "dill", "cloudpickle", "shelve", "jsonpickle", "runpy", "code"}

#: Where such a call is expected, and why.
ALLOWED = {
    ("numeric/_plan.py", "compile"): "the builder: an AST it built from checked data",
    ("numeric/_plan.py", "exec"): "the builder: the code it compiled from that AST",
    ("__init__.py", "import_module"): "the lazy facade: its own submodules, from its table",
    ("numeric/_observers.py", "import_module"): "the observer plugins: a fixed tuple of "
                                                 "gateflow's own modules",
}


def _calls_that_run_code(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(f"import {a.name}", node.lineno) for a in node.names
                      if a.name.split(".")[0] in _CODE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            found += [(f"from {module} import {a.name}", node.lineno) for a in node.names
                      if module in _CODE_MODULES or (module, a.name) in _RUNS_CODE]
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name):
            key: tuple[str | None, str] = (None, f.id)
        elif isinstance(f, ast.Attribute):
            base = f.value
            key = (base.id if isinstance(base, ast.Name) else
                   f"{getattr(base.value, 'id', '?')}.{base.attr}"
                   if isinstance(base, ast.Attribute) else "?", f.attr)
        else:
            continue
        if key in _RUNS_CODE or (key[0] in _CODE_MODULES):
            found.append((key[1], node.lineno))
        elif key[1] == "import_module" and not (
                node.args and isinstance(node.args[0], ast.Constant)):
            found.append(("import_module", node.lineno))  # a computed module name
        elif key == ("torch", "load") and not any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                and k.value.value is True for k in node.keywords):
            found.append(("torch.load without weights_only=True", node.lineno))
        elif key == ("torch.jit", "load"):
            found.append(("torch.jit.load", node.lineno))
        elif key in (("np", "load"), ("numpy", "load")) and any(
                k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant)
                                                 and k.value.value is False)
                for k in node.keywords):
            found.append(("numpy.load with allow_pickle", node.lineno))
    return found


def test_only_the_plan_builder_runs_code():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for what, line in _calls_that_run_code(path):
            found.setdefault((rel, what), []).append(line)
    unexpected = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not unexpected, unexpected
    # the builder is where the test expects it, with one compile and one exec
    assert found[("numeric/_plan.py", "compile")] and len(
        found[("numeric/_plan.py", "compile")]) == 1
    assert len(found[("numeric/_plan.py", "exec")]) == 1


def test_unpicklers_are_restricted():
    """Every pickle.Unpickler in the package is a subclass that chooses its globals."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b) == "pickle.Unpickler" for b in node.bases):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                assert "find_class" in methods, (path, node.name)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "pickle.Unpickler":
                pytest.fail(f"a bare pickle.Unpickler in {path}")


def test_the_builder_compiles_only_an_ast_it_built_from_checked_data():
    """In ``_plan.build``: the plan is checked first; ``compile`` gets a Module made from
    ``ast`` constructors there; ``exec`` gets that code object."""
    tree = ast.parse((PACKAGE / "numeric" / "_plan.py").read_text(encoding="utf-8"))
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build"]
    first = fn.body[1] if isinstance(fn.body[0], ast.Expr) and isinstance(
        fn.body[0].value, ast.Constant) else fn.body[0]
    assert ast.unparse(first) == "check_plan(plan, cell, inputs)"
    assigned = {t.id: st.value for st in fn.body if isinstance(st, ast.Assign)
                for t in st.targets if isinstance(t, ast.Name)}
    calls = {ast.unparse(c.func): c for c in ast.walk(fn) if isinstance(c, ast.Call)}
    module = calls["compile"].args[0]
    assert isinstance(module, ast.Name)
    assert ast.unparse(assigned[module.id]).startswith("ast.fix_missing_locations(ast.Module(")
    code = calls["exec"].args[0]
    assert isinstance(code, ast.Name) and ast.unparse(assigned[code.id]).startswith("compile(")
    # the definitions come from _function_def, which builds nodes from the data only
    builder = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                   and n.name == "_function_def")
    assert not any(isinstance(n, ast.Call) and ast.unparse(n.func) in ("ast.parse", "compile")
                   for n in ast.walk(builder))


# -- the data form is exact ---------------------------------------------------------------------

NAMES = [*sorted(CELLS), "lstm[gate=hard_sigmoid(0.2,0.5)]",
         "lstm[gate=hard_sigmoid(1/6,0.5),candidate=elu(0.5),output=softsign]",
         "gru[gate=leaky_relu(0.01),candidate=scaled_tanh(1.5,0.75)]",
         "minimalrnn[gate=thresholded_relu(1),candidate=softplus]",
         "rnn[candidate=affine(2,1)]", "indrnn[candidate=linear]"]


def _printed(cell, inputs):
    """(args, printed source) of every function of a fresh plan, as the generator prints
    them, recorded while it runs."""
    import gateflow.numeric._codegen as codegen

    seen = []

    def spy(args, expr, backend, cse=False):
        src = _source(args, expr, backend, cse)
        seen.append((list(args), src))
        return src

    original = codegen._source
    codegen._source = spy
    try:
        plan = generate(cell, "numpy", inputs)
    finally:
        codegen._source = original
    return plan, seen


@pytest.mark.parametrize("name", NAMES)
def test_built_functions_are_the_printed_source_node_for_node(name):
    """The AST built from the data is the AST of the printed source (same operations, same
    order, same constants), for every function of the state and input plans."""
    cell = get_cell(name)
    for inputs in (False, True):
        plan, printed = _printed(cell, inputs)
        check_plan(plan, cell, inputs)
        fns = [(i["args"], i["fn"]) for i in plan["forward"] if "node" in i]
        fns.append((plan["coef_args"], plan["coef"]))
        assert len(fns) == len(printed)
        for (args, fn), (printed_args, src) in zip(fns, printed):
            assert args == printed_args
            want = ast.parse(src).body[0]
            got = _function_def(want.name, args, fn)
            assert ast.dump(got) == ast.dump(want), src
            assert function_data(src, args) == fn


def test_built_functions_compute_what_the_source_computes():
    """Bit for bit, on hostile values (±inf, nan, huge, tiny, negative zero)."""
    cell = get_cell("lstm[gate=hard_sigmoid(1/6,0.5),candidate=elu(0.5),output=softsign]")
    plan, printed = _printed(cell, False)
    nodes, coef = build(plan, cell, False, "numpy")
    rng = np.random.default_rng(0)
    special = np.array([np.inf, -np.inf, np.nan, 1e308, -1e308, 1e-320, -0.0, 0.0, 50, -50])
    from gateflow.numeric._plan import namespace

    for fn, (args, src) in zip([*nodes, coef], printed):
        scope = {**{k: v for k, v in vars(np).items() if not k.startswith("_")},
                 **namespace(np)}
        exec(compile(src, "<reference>", "exec"), scope)  # the test's own fresh source
        for dtype in (np.float32, np.float64):
            with np.errstate(all="ignore"):
                vals = [rng.permutation(np.concatenate([special, rng.normal(size=6) * 4]))
                        .astype(dtype) for _ in args]
                got, want = fn(*vals), scope["_lambdifygenerated"](*vals)
            for g, w in zip(np.atleast_1d(got) if not isinstance(got, list) else got,
                            np.atleast_1d(want) if not isinstance(want, list) else want):
                g, w = np.asarray(g), np.asarray(w)
                assert g.dtype == w.dtype and g.tobytes() == w.tobytes()


# -- the vocabulary ------------------------------------------------------------------------------

DEEP = "x"
for _ in range(MAX_DEPTH + 5):
    DEEP = ["neg", DEEP]

#: Function bodies (the value of a node over the argument x) outside the vocabulary.
REFUSED = {
    "unknown name": "y",
    "dunder name": "__builtins__",
    "call outside the vocabulary": ["call", "open", "x"],
    "call of __import__": ["call", "__import__", "x"],
    "call of eval": ["call", "eval", "x"],
    "call of a variable": ["call", "x", "x"],
    "wrong arity, too few": ["call", "hard_sigmoid", "x", 1],
    "wrong arity, too many": ["call", "tanh", "x", "x"],
    "no arguments": ["call", "tanh"],
    "a parameter that is an array": ["call", "elu", "x", "x"],
    "unknown operation": ["attr", "x", "system"],
    "lambda": ["lambda", "x"],
    "subscript": ["subscript", "x", 0],
    "list inside": ["add", "x", ["list", "x"]],
    "tuple": ["tuple", "x"],
    "operation without operands": ["add"],
    "operation with one operand": ["add", "x"],
    "operation with three operands": ["mul", "x", "x", "x"],
    "nan constant": ["add", "x", float("nan")],
    "inf constant": ["add", "x", float("inf")],
    "huge int": ["add", "x", MAX_INT + 1],
    "bool constant": ["add", "x", True],
    "string constant as a list": ["add", "x", ["os"]],
    "none": ["add", "x", None],
    "dict": ["add", "x", {"a": 1}],
    "power bomb": ["add", "x", ["pow", 9, ["pow", 9, ["pow", 9, 9]]]],
    "power overflow": ["add", "x", ["pow", 10.0, 400]],
    "complex power": ["add", "x", ["pow", -8.0, ["div", 1, 3]]],
    "division by zero": ["add", "x", ["div", 1, 0]],
    "too deep": DEEP,
    "constant node": ["add", 1, 2],
    "empty list": [],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_outside_the_vocabulary_is_refused(case):
    with pytest.raises(PlanError):
        check_function({"let": [], "ret": REFUSED[case]}, ["x"])


def test_a_function_of_a_constant_is_vocabulary():
    """SymPy prints a constant's root or exponential as a call on a number (``sqrt(2)``);
    the call is in the vocabulary, so a cell with such a constant compiles and computes
    it; a parameter that is not a number is still refused."""
    import gateflow as gf
    from gateflow.numeric._compile import compile_cell

    check_function({"let": [], "ret": ["mul", "x", ["call", "sqrt", 2]]}, ["x"])
    with pytest.raises(PlanError):
        check_function({"let": [], "ret": ["call", "elu", 2, "x"]}, ["x"])
    cell = gf.Cell(name="rt2", summary="s", reference="r", state=("h",),
                   params=("W", "U", "b"),
                   equations=("h = 2**(1/2)*sigmoid(W @ x + U @ h_prev + b)",))
    comp = compile_cell(cell)
    p = gf.init_params(cell, 3, 2, seed=0)
    from gateflow.numeric._compile import Bound

    vals = Bound(comp, p).step(np.ones((1, 2)), {"h": np.zeros((1, 3))})
    a = p["W"] @ np.ones(2) + p["b"]
    np.testing.assert_allclose(vals["h"][0], np.sqrt(2) / (1 + np.exp(-a)), rtol=1e-15)


@pytest.mark.parametrize("let", [
    [["x", "x"]],  # rebinds an argument
    [["t", "x"], ["t", "x"]],  # a temporary assigned twice
    [["tanh", "x"]],  # shadows a function of the vocabulary
    [["__class__", "x"]],
    [["None", "x"]],
    [["t", "u"], ["u", "x"]],  # read before it is assigned
    [["ｔ", "x"]],  # not NFKC-normal (the parser would read it as "t")
    [["t"]],
    "x",
])
def test_bad_temporaries_are_refused(let):
    with pytest.raises(PlanError):
        check_function({"let": let, "ret": ["neg", "x"]}, ["x"])


@pytest.mark.parametrize("args", [["x", "x"], ["def"], ["__x"], ["sigmoid"], [1], "x"])
def test_bad_arguments_are_refused(args):
    with pytest.raises(PlanError):
        check_function({"let": [], "ret": ["neg", "x"]}, args)


def test_the_vocabulary_accepts_what_the_printer_writes():
    ok = {"let": [["x0", ["call", "sigmoid", "x"]], ["x1", ["div", 1, 5]]],
          "ret": ["list", ["mul", ["mul", "x0", "x1"], ["pow", "x", ["div", 1, 3]]],
                  ["call", "hard_sigmoid", "x", ["div", 1, 6], ["div", 1, 2]],
                  ["call", "Heaviside", ["neg", "x"], 0], ["gt", "x", 0.5], 1, -2.5]}
    check_function(ok, ["x"], outputs=6)
    with pytest.raises(PlanError):
        check_function(ok, ["x"], outputs=5)
    assert set(CALLS) >= {"tanh", "sqrt", "log", "exp", "abs", "sigmoid", "sech2"}


# -- labels ------------------------------------------------------------------------------------

def test_every_printed_label_is_accepted():
    """The direct-path labels of every family with every activation in every role."""
    from gateflow.cells._activations import ACTIVATIONS, FAMILIES
    from gateflow.cells._notation import printer
    from gateflow.symbolic._derive import derive

    spelled = {"elu": "elu(0.5)", "leaky_relu": "leaky_relu(0.01)",
               "thresholded_relu": "thresholded_relu(1)",
               "hard_sigmoid": "hard_sigmoid(0.2,0.5)", "affine": "affine(2,1)",
               "scaled_tanh": "scaled_tanh(1.7,0.6)"}
    seen = set()
    for family, roles in FAMILIES.items():
        for role in roles:
            for a in ACTIVATIONS:
                cell = get_cell(f"{family}[{role}={spelled.get(a, a)}]")
                s = derive(cell)
                for b in cell.state:
                    for fmt in ("text", "latex"):
                        seen.add(printer(cell, fmt).doprint(s.direct(b)))
    assert len(seen) > 30
    assert all(_label(t) for t in seen), [t for t in seen if not _label(t)]


@pytest.mark.parametrize("text", ["__import__('os').system('x')", "open('f', 'w')",
                                  "os.system", "().__class__", "lambda: 0", "a;b", "", "x\ny",
                                  "f" * 2001, "\x1b[2J", "a # b", '"x"'])
def test_labels_are_one_line_of_math(text):
    assert not _label(text)


# -- (b) planted code in every string field of every entry ---------------------------------------

#: What is planted, in every string (value or key) of an entry.
PAYLOADS = ["__import__('os').system('touch PWNED')", "open('PWNED', 'w')",
            "().__class__.__base__.__subclasses__()", "lambda: open('PWNED', 'w')",
            "PWNED", "nan", "(" * 3000 + "x" + ")" * 3000]
#: Planted in every expression position: the shapes of data a hostile entry could hold.
EXPR_PAYLOADS = [["call", "__import__", "x"], ["call", "tanh"], ["call", "tanh", "x", "x"],
                 DEEP, float("nan"), MAX_INT * 4, ["pow", 9, ["pow", 9, 9]], None]

ENTRIES = [(n, i) for n in [*sorted(CELLS), "lstm[gate=hard_sigmoid(0.2,0.5)]", "gru-stack2"]
           for i in (False, True)]


def _cell(name):
    return stack("gru", 2) if name == "gru-stack2" else get_cell(name)


def _strings(tree, path=()):
    """Every string in a JSON tree: (path, is a dict key)."""
    if isinstance(tree, str):
        yield path, False
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _strings(v, (*path, i))
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield (*path, k), True
            yield from _strings(v, (*path, k))


def _expressions(plan):
    """Every expression position in the functions of a plan (paths)."""

    def walk(e, path):
        yield path
        if isinstance(e, list) and e and isinstance(e[0], str):
            for i in range(2 if e[0] == "call" else 1, len(e)):
                yield from walk(e[i], (*path, i))

    for i, item in enumerate(plan["forward"]):
        if "fn" in item:
            yield from _function_expressions(item["fn"], ("forward", i, "fn"), walk)
    yield from _function_expressions(plan["coef"], ("coef",), walk)


def _function_expressions(fn, path, walk):
    for i, (_, e) in enumerate(fn["let"]):
        yield from walk(e, (*path, "let", i, 1))
    yield from walk(fn["ret"], (*path, "ret"))


class _Planted:
    """``plan`` with ``value`` planted at ``path`` (as a dict key with ``key``), restored on
    exit (in place: copying the plan for each of thousands of cases would be slow)."""

    def __init__(self, plan, path, value, key=False):
        self.plan, self.path, self.value, self.key = plan, path, value, key

    def __enter__(self):
        *head, self.last = self.path
        self.box = self.plan
        for p in head:
            self.box = self.box[p]
        if self.key:
            self.saved = list(self.box.items())
            self.box.clear()
            self.box.update((self.value if k == self.last else k, v) for k, v in self.saved)
        else:
            self.saved = self.box[self.last]
            self.box[self.last] = self.value
        return self.plan

    def __exit__(self, *exc):
        if self.key:
            self.box.clear()
            self.box.update(self.saved)
        else:
            self.box[self.last] = self.saved


def _planted(plan, path, value, key=False):
    with _Planted(plan, path, value, key) as planted:
        return copy.deepcopy(planted)


def _numbers(compiled, cell):
    params = init_params(cell, 4, 3, seed=0)
    x = make_inputs(1, 2, 3, seed=1)[0]
    bound = Bound(compiled, params)
    vals = bound.step(x, {b: np.full((2, bound.dim[b]), 0.3) for b in cell.state})
    return [np.asarray(v) for v in (*(vals[b] for b in cell.state), *bound.coefficients(vals))]


def _label_path(path) -> bool:
    return path[0] == "direct_labels" and len(path) == 3


@pytest.mark.parametrize("name,inputs", ENTRIES, ids=[f"{n}{'-x' if i else ''}"
                                                     for n, i in ENTRIES])
def test_code_planted_in_any_field_is_never_run(name, inputs, tmp_path, monkeypatch):
    """What the cache does with a planted entry whose digest passes (re-signed): ``_load``
    refuses it as data before anything is built (so the cache rebuilds it), except a bare
    word in a label, which is text and is shown as such; no payload ever runs, and every
    plan that is used gives the fresh numbers. (The same through the files on disk, for a
    spread of fields: the next test.)"""
    monkeypatch.chdir(tmp_path)  # where the payloads would leave PWNED
    cell = _cell(name)
    fresh = generate(cell, "numpy", inputs)
    reference = _numbers(_load(cell, "numpy", F64, inputs, fresh), cell)
    used = 0
    pristine = json.dumps(fresh)
    cases = [(p, payload, key) for p, key in _strings(fresh) for payload in PAYLOADS]
    cases += [(p, payload, False) for p in _expressions(fresh) for payload in EXPR_PAYLOADS]
    assert len(cases) > 200
    for path, payload, key in cases:
        try:
            with _Planted(fresh, path, payload, key) as tampered:
                compiled = _load(cell, "numpy", F64, inputs, tampered)
        except Exception:
            continue  # refused: the cache rebuilds it
        used += 1
        # only a bare word planted as a label's text is used: as text
        assert _label_path(path) and not key and payload.replace("_", "a").isalpha(), path
        assert payload in [t for v in compiled.direct_labels.values() for t in v.values()]
        for got, want in zip(_numbers(compiled, cell), reference, strict=True):
            assert got.tobytes() == want.tobytes()
    words = [p for p in PAYLOADS if p.replace("_", "a").isalpha()]
    assert used == len(words) * len(fresh["direct"]) * len(LABEL_FORMATS)
    assert json.dumps(fresh) == pristine
    assert not any(tmp_path.iterdir())  # no payload ran


@pytest.mark.parametrize("name,inputs", [("lstm", False), ("gru", True), ("lstm-proj", False),
                                         ("gru-stack2", False)])
def test_planted_entries_on_disk_are_rebuilt_with_the_fresh_numbers(name, inputs, tmp_path,
                                                                    monkeypatch, capsys):
    """Through the cache itself: each planted entry, re-signed so that its digest passes,
    warns once, is rebuilt and rewritten, and the run gets the fresh numbers."""
    sandbox = tmp_path / "run"
    sandbox.mkdir()
    monkeypatch.chdir(sandbox)
    folder = tmp_path / "cache"
    monkeypatch.setenv("GATEFLOW_CACHE_DIR", str(folder))
    cell = _cell(name)
    fresh = generate(cell, "numpy", inputs)
    reference = _numbers(_load(cell, "numpy", F64, inputs, fresh), cell)
    # code generation is imported on a cache miss (from _codegen), so it is patched there
    monkeypatch.setattr(codegen_module, "generate", lambda *a: copy.deepcopy(fresh))
    entry = _cache.entry_path(cell, "numpy", inputs)
    kinds: dict[str, tuple] = {}  # one planted string per kind of field
    for path, key in _strings(fresh):
        kind = "/".join(str(p) for p in path if isinstance(p, str)) + ("key" if key else "")
        kinds.setdefault(kind, (path, key))
    assert len(kinds) >= 12
    for path, key in kinds.values():
        if _label_path(path):
            continue
        plan = _planted(fresh, path, PAYLOADS[0], key)
        entry.write_bytes(json.dumps({**plan, "sha256": _cache._digest(entry.name, plan)})
                          .encode())
        monkeypatch.setattr(_cache, "_warned", set())
        _compile.cache_clear()
        compiled = compile_module.compile_cell(cell, inputs=inputs)
        for got, want in zip(_numbers(compiled, cell), reference, strict=True):
            assert got.tobytes() == want.tobytes()
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("gateflow: warning: ignoring compile cache entry")
        assert "not a valid gateflow plan" in line
        assert _cache._read_entry(entry) == fresh  # rewritten
    assert not any(sandbox.iterdir())
    _compile.cache_clear()


# -- (c) every value of an entry replaced by every JSON type -------------------------------------

JSON_TYPES = [None, True, False, 0, 1.5, -1, "s", [], {}, [[]], {"s": "s"}]


def _values(tree, path=()):
    """Every value in a JSON tree (paths), containers included."""
    yield path
    if isinstance(tree, (list, dict)):
        for k, v in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
            yield from _values(v, (*path, k))


@pytest.mark.parametrize("name,inputs", [("lstm", False), ("gru", True)])
def test_every_value_of_every_json_type(name, inputs):
    """Each value of a plan (the whole plan, each container, each leaf) replaced by each
    JSON type: refused, except where data of that type is what the plan may hold there (a
    number in an expression, a group's flag, a label's text): such an entry is an edited
    formula, data that runs nothing."""
    cell = get_cell(name)
    fresh = generate(cell, "numpy", inputs)
    pristine = json.dumps(fresh)
    expressions = set(_expressions(fresh))
    accepted = 0
    for path in _values(fresh):
        here = fresh
        for p in path:
            here = here[p]
        for value in JSON_TYPES:
            if json.dumps(value) == json.dumps(here):
                continue  # the same value
            if not path:
                planted = value
            else:
                with _Planted(fresh, path, value) as planted:
                    planted = copy.deepcopy(planted)
            try:
                check_plan(planted, cell, inputs)
            except PlanError:
                continue
            except Exception as exc:  # noqa: BLE001 - what the cache would also rebuild
                pytest.fail(f"{path} = {value!r}: {type(exc).__name__} instead of PlanError")
            accepted += 1
            assert (path in expressions and type(value) in (int, float)) \
                or (path[-1] == "reverse" and type(value) is bool) \
                or (_label_path(path) and value == "s"), (path, value)
    assert accepted > 0
    assert json.dumps(fresh) == pristine

"""No module patches another library or reaches into another object's private state (issue 12, section 5).

Flagged, by reading every module's syntax tree (product code in the four rooms, the tests and the benchmarks, which
count and observe through public hooks: Bench.message_counts, observing_bench_starts, observing_arms):
  * ``<imported module>.<name> = ...`` at any depth (``pyvisa.util._f = ...``, ``pyvisa.resources.X.m = ...``),
    and ``setattr``/``delattr`` on an imported module;
  * ``x._private = ...`` where ``x`` is not ``self``/``cls`` (nor an object a classmethod is building with
    ``cls.__new__``): another object's private attribute. Dunders (``f.__name__``) are not private state.
Tests may still use pytest's ``monkeypatch`` fixture: it is undone after each test and is a method call.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

import pytest
from source_trees import parsed

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["analysis", "instruments", "calibration", "sequences", "tests", "benchmarks"]


@functools.cache  # the same names recur in many files, and each look-up searches the import path
def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def _imported_modules(tree: ast.AST) -> set[str]:
    """Names bound to modules by any import in the file."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(alias.asname or alias.name for alias in node.names
                         if _is_module(f"{node.module}.{alias.name}"))
    return names


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _built_by_own_class(function: ast.AST) -> set[str]:
    """Locals a classmethod creates as ``x = cls.__new__(cls)`` (it is building its own instance)."""
    names = set()
    for node in ast.walk(function):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "__new__"):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def violations(source: str, filename: str = "<source>", tree: ast.Module | None = None) -> list[str]:
    tree = ast.parse(source, filename) if tree is None else tree
    modules = _imported_modules(tree)
    found = []
    owners = {"self", "cls"}
    functions = ([n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                 if "__new__" in source else [])  # (_built_by_own_class: only a file that calls __new__ builds one)
    own_by_line = {}
    for function in functions:
        for name in _built_by_own_class(function):
            for line in range(function.lineno, (function.end_lineno or function.lineno) + 1):
                own_by_line.setdefault(line, set()).add(name)
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            for attribute in (n for n in ast.walk(target) if isinstance(n, ast.Attribute)):
                if not isinstance(attribute.ctx, (ast.Store, ast.Del)):
                    continue
                root = _root(attribute)
                where = f"{filename}:{node.lineno}: {ast.unparse(attribute)}"
                if isinstance(root, ast.Name) and root.id in modules:
                    found.append(f"{where} assigns to an attribute of the module {root.id}")
                elif (attribute.attr.startswith("_") and not attribute.attr.endswith("__")
                      and not (isinstance(attribute.value, ast.Name)
                               and attribute.value.id in owners | own_by_line.get(node.lineno, set()))):
                    found.append(f"{where} assigns to a private attribute of another object")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr")
                and node.args and isinstance(_root(node.args[0]), ast.Name) and _root(node.args[0]).id in modules):
            found.append(f"{filename}:{node.lineno}: {node.func.id} on the module {_root(node.args[0]).id}")
    return found


def _files() -> list[Path]:
    return sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py"))


def test_no_module_patches_another_library_or_private_state():
    found = [v for path in _files() for v in violations(path.read_text(), str(path.relative_to(ROOT)), parsed(path))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source", [
    "import pyvisa.util\npyvisa.util._use_numpy_routines = len\n",
    "import pyvisa.resources\npyvisa.resources.MessageBasedResource.write_raw = print\n",
    "from qslab.sequences.protocol import setup\nsetup.iq_skew = None\n",
    "import qcodes\nsetattr(qcodes, 'x', 1)\n",
    "def f(driver, h):\n    driver._visa_handle = h\n",
    "class A:\n    def f(self):\n        self.port._socket = None\n",
    "from qslab.instruments.drivers.thorlabs_mbx import ThorlabsMBX\nThorlabsMBX._exchange = print\n",
])
def test_the_check_flags_each_kind_of_patch(source):
    assert violations(source)


@pytest.mark.parametrize("source", [
    "class A:\n    def f(self):\n        self._x = 1\n",
    "class A:\n    @classmethod\n    def make(cls):\n        a = cls.__new__(cls)\n        a._x = 1\n"
    "        return a\n",
    "def f(parse):\n    parse.__name__ = 'number'\n",
    "from qcodes.station import Station\nStation.default = None\n",  # a class's public attribute, not a module
    "import pyvisa\ndef f(handle):\n    handle.timeout = 5\n",
    "def f(monkeypatch, module):\n    monkeypatch.setattr(module, 'x', 1)\n",
])
def test_the_check_lets_own_state_and_public_attributes_be(source):
    assert not violations(source)

"""The house rules: one `qslab` namespace; imports flow sequences -> calibration -> instruments, all may use analysis."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from source_trees import parsed

import qslab

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("analysis", "instruments", "calibration", "sequences")
FORBIDDEN = {
    "analysis": {"instruments", "calibration", "sequences"},
    "instruments": {"calibration", "sequences"},
    "calibration": {"sequences"},
}
SOURCES = sorted(path for folder in (*ROOMS, "qslab", "tests", "benchmarks") for path in (ROOT / folder).rglob("*.py"))


def imported_modules(path: Path):
    """Every absolute module name ``path`` imports (``from a.b import c`` gives a.b and a.b.c)."""
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "qslab" and len(parts) > 1 and parts[1] in ROOMS else None


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_flow_one_way(room):
    offenders = [f"{path.relative_to(ROOT)} imports {module}" for path in (ROOT / room).rglob("*.py")
                 for module in imported_modules(path) if room_of(module) in FORBIDDEN[room]]
    assert not offenders, offenders


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_room_by_its_bare_name(path):
    bare = [module for module in imported_modules(path) if module.split(".")[0] in ROOMS]
    assert not bare, f"{path.relative_to(ROOT)} imports {bare}: use qslab.<room>"


MODULE_NAME_CALLS = {"files", "import_module", "find_spec", "getLogger", "import_string"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_path_in_a_string_names_a_bare_room(path):
    """Module paths held in strings (importlib.resources anchors, loggers, driver registries) move with the code."""
    bare = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            text = node.args[0].value
            if name in MODULE_NAME_CALLS and isinstance(text, str) and text.split(".")[0] in ROOMS:
                bare.append(text)
    assert not bare, f"{path.relative_to(ROOT)} names modules {bare}: use qslab.<room>"


def test_no_bare_room_is_installed(tmp_path):
    """Outside the source tree (as a user's script runs), only the qslab.<room> names resolve."""
    probe = ("import importlib.util as u; "
             f"print([r for r in {ROOMS!r} if u.find_spec(r) is not None or u.find_spec('qslab.' + r) is None])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_every_package_folder_is_installed():
    """pyproject lists each package explicitly (package-dir maps the rooms): a new folder must be listed too."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"qslab." + ".".join(init.parent.relative_to(ROOT).parts)
               for room in ROOMS for init in (ROOT / room).rglob("__init__.py")}
    assert on_disk <= listed, sorted(on_disk - listed)


def test_no_command_module_imports_the_entry_point():
    """The CLI assembles the commands; a command importing it back closes an import circle."""
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "sequences" / "commands").rglob("*.py")
                 if any(module.startswith("qslab.sequences.cli") for module in imported_modules(path))]
    assert not offenders, offenders


def test_version_is_exposed_and_printed():
    assert qslab.__version__[0].isdigit()
    result = subprocess.run([sys.executable, "-m", "qslab", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"qslab {qslab.__version__}"


# --- roles are the contract (issue 12, section 4) ----------------------------------------------------------

def _reaches_past_the_roles(module: str) -> bool:
    """A driver module, or a private module of instruments (qslab.instruments.x._y)."""
    parts = module.split(".")
    if parts[:3] == ["qslab", "instruments", "drivers"]:
        return True
    return parts[:2] == ["qslab", "instruments"] and any(part.startswith("_") for part in parts[2:-1])


@pytest.mark.parametrize("room", ["sequences", "calibration"])
def test_sequences_and_calibration_talk_to_roles_not_drivers(room):
    offenders = [f"{path.relative_to(ROOT)} imports {module}" for path in (ROOT / room).rglob("*.py")
                 for module in imported_modules(path) if _reaches_past_the_roles(module)]
    assert not offenders, offenders


def test_the_driver_rule_sees_private_and_driver_modules():
    assert _reaches_past_the_roles("qslab.instruments.drivers.keysight_m8195a")
    assert _reaches_past_the_roles("qslab.instruments.sim._private.thing")
    assert not _reaches_past_the_roles("qslab.instruments.optical.faults.InstrumentFault")


def test_the_station_has_no_branch_per_driver():
    """Adding an instrument family is one driver, one adapter and one registry line (DriverSpec.adapter)."""
    tree = ast.parse((ROOT / "sequences" / "station.py").read_text())
    from qslab.sequences.config import DRIVERS

    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert not literals & set(DRIVERS), literals & set(DRIVERS)

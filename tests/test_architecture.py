"""The house rule: imports flow sequences -> calibration -> instruments, and all may use analysis."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "analysis": {"instruments", "calibration", "sequences"},
    "instruments": {"calibration", "sequences"},
    "calibration": {"sequences"},
}


def imported_packages(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_flow_one_way(room):
    offenders = [f"{path.relative_to(ROOT)} imports {pkg}" for path in (ROOT / room).rglob("*.py")
                 for pkg in imported_packages(path) if pkg in FORBIDDEN[room]]
    assert not offenders, offenders

"""Syntax trees of the repository's Python files, parsed once per test worker: the house rules (test_architecture,
test_no_monkey_patches) read every file, ~2 s of parsing a pass."""

from __future__ import annotations

import ast
import functools
from pathlib import Path


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))

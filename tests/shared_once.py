"""Made once per test run, shared by every xdist worker: the helpers behind tests/conftest.py's shared fixtures.

pytest-xdist runs the tests in separate worker processes, so a session-scoped fixture alone would still be made
once per worker. ``made_once`` builds into the base temporary directory of the whole run (the parent of the
workers' own) under an exclusive file lock; every later caller, in any worker, finds it ready. What is shared
is read-only: a test that writes works on ``copy_of`` it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

READY = ".ready"


@contextlib.contextmanager
def exclusive(path: Path):
    """An exclusive lock on ``path`` (created if missing), across processes."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base temporary directory of this test run, the same for every xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory ``name`` of this test run, filled by ``build(directory)`` by its first caller only."""
    base = run_base(tmp_path_factory)
    directory = base / name
    with exclusive(base / f"{name}.lock"):
        if not (directory / READY).exists():
            shutil.rmtree(directory, ignore_errors=True)  # a build that failed half-way starts again
            directory.mkdir()
            build(directory)
            (directory / READY).touch()
    return directory


def copy_of(shared: Path, destination: Path) -> Path:
    """A private, writable copy of a shared directory at ``destination`` (made if missing)."""
    shutil.copytree(shared, destination, ignore=shutil.ignore_patterns(READY), dirs_exist_ok=True)
    return destination

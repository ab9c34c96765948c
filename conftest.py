"""Repository-wide pytest options: the opt-in, read-only hardware smoke suite (tests/hardware/, docs/HARDWARE.md).

``pytest --hw-config FILE`` runs the tests marked ``hardware`` against the station of FILE (identify, read limits,
read the error queues; nothing that emits light). Without the option they are DESELECTED, not skipped: the
report counts them as "deselected", so a green run never pretends to have checked hardware.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hw-config", metavar="FILE", default=None,
                     help="station config (TOML) whose instruments the read-only hardware smoke suite checks "
                          "(tests marked 'hardware'; without it they are deselected)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardware: read-only checks of real instruments; run with --hw-config FILE")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hw-config") is not None:
        return
    deselected = [item for item in items if item.get_closest_marker("hardware") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("hardware") is None]

"""Helpers shared by the station tests: the example configs as dicts and with dotted-path changes."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from qslab.sequences.config import LabConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
BENCH_CONFIG = ROOT / "lab_config.toml"
HARDWARE_CONFIG = ROOT / "lab_config.hardware.toml"
_BENCH_DATA = tomllib.loads(BENCH_CONFIG.read_text())


def bench_data() -> dict:
    """A fresh copy of lab_config.toml as parsed TOML (tests mutate it)."""
    return copy.deepcopy(_BENCH_DATA)


def bench_config(**changes) -> LabConfig:
    """lab_config.toml with dotted-path changes, e.g. ``bench_config(**{"instruments.laser.limits.power_max_dbm": 5.0})``."""
    data = bench_data()
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, "lab_config.toml (test)")

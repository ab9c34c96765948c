"""Shared by the calibration tests: a bench station with changed true parameters, the digitizer adapter,
and a laser whose output never lights (the 'laser off' bad-data case)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from qslab.sequences.config import LabConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
_DATA = tomllib.loads((ROOT / "lab_config.toml").read_text())


def bench_config(**changes) -> LabConfig:
    """lab_config.toml with dotted-path changes, e.g. ``bench_config(**{"bench.client_receiver.efficiency": 0.7})``."""
    data = copy.deepcopy(_DATA)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(data, "lab_config.toml (calibration test)")


class DeadLaser:
    """A laser role whose output stays dark (interlock, broken diode): every call but on() passes through."""

    def __init__(self, laser):
        self._laser = laser

    def on(self) -> None:
        self._laser.check_power_dbm(self._laser.power_dbm())

    def __getattr__(self, name):
        return getattr(self._laser, name)

"""Helpers shared by the station tests: the example configs as dicts and with dotted-path changes."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from patient import patient_config, patient_config_file  # noqa: F401 - the station tests import them from here

from qslab.sequences.config import LabConfig, parse_config
from qslab.sequences.session import SessionSettings

ROOT = Path(__file__).resolve().parents[2]
BENCH_CONFIG = ROOT / "lab_config.toml"
HARDWARE_CONFIG = ROOT / "lab_config.hardware.toml"
_BENCH_DATA = tomllib.loads(BENCH_CONFIG.read_text())
# The 20-image session of two batches that test_session.py and test_curious_session.py compare against (conftest.py:
# patient_clean_session runs it once per test run on the patient config).
CLEAN_SETTINGS = SessionSettings(images=20, mu=6.0, gain=1.3, seed=3, batch_images=10, verify_fraction=0.05,
                                 failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=20)


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

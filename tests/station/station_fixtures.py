"""Helpers shared by the station tests: the example configs as dicts and with dotted-path changes."""

from __future__ import annotations

import atexit
import copy
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

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


def patient_config(directory: Path, source: Path = BENCH_CONFIG) -> Path:
    """``source`` (lab_config.toml) written into ``directory`` with a 60 s station I/O timeout instead of 5 s: on a
    loaded host a meter reading can take longer than 5 s, and its retry reads fresh noise, which moves the set-up and
    the results a test compares between two runs (docs/DECISIONS.md T), or fails a session after three. A hang
    guard, not a timing."""
    path = directory / f"{source.stem}.patient.toml"
    text, replaced = re.subn(r"(?m)^timeout_s = 5\.0(\s|$)", r"timeout_s = 60.0\1", source.read_text(), count=1)
    assert replaced == 1, f"{source.name}: no [station] timeout_s = 5.0 line to lengthen"
    path.write_text(text)
    return path


def patient_config_file() -> Path:
    """patient_config in a temporary directory of its own, removed when the process exits (for a module constant)."""
    directory = Path(tempfile.mkdtemp(prefix="qslab-patient-config-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return patient_config(directory)

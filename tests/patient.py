"""lab_config.toml with patient I/O timeouts, for tests that run sessions on a loaded host."""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from pathlib import Path

BENCH_CONFIG = Path(__file__).resolve().parents[1] / "lab_config.toml"
PATIENT_TIMEOUT_S = 60.0


def patient_config(directory: Path, source: Path = BENCH_CONFIG) -> Path:
    """``source`` (lab_config.toml) written into ``directory`` with every I/O timeout at PATIENT_TIMEOUT_S: the
    station's 5 s and the instruments' own (the bias controllers' 1 s a reply, the AWGs' and the scope's 20 s). Why:
    on a loaded host a meter reading can take longer than 5 s, and its retry reads fresh noise, which moves the
    set-up and the results a test compares between two runs (docs/DECISIONS.md T), or fails a session after three;
    and with two busy processes beside three test workers an embedded bench's MBX missed its 1 s for *IDN?. A hang
    guard, not a timing."""
    path = directory / f"{source.stem}.patient.toml"
    text = source.read_text()
    assert re.search(r"(?m)^timeout_s = 5\.0(\s|$)", text), \
        f"{source.name}: no [station] timeout_s = 5.0 line to lengthen"
    path.write_text(re.sub(r"(?m)^timeout_s = [0-9.]+(?=\s|$)", f"timeout_s = {PATIENT_TIMEOUT_S}", text))
    return path


def patient_config_file() -> Path:
    """patient_config in a temporary directory of its own, removed when the process exits (for a module constant)."""
    directory = Path(tempfile.mkdtemp(prefix="qslab-patient-config-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return patient_config(directory)

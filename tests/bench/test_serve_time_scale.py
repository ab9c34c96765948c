"""`qslab bench serve` runs the bench clock in real time unless told otherwise: a rehearsal for hardware must
meet the waits hardware has, whatever time_scale the config gives its embedded bench (0.01 in lab_config.toml)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyvisa

ROOT = Path(__file__).resolve().parents[2]


def test_serve_defaults_to_real_time_whatever_the_configs_time_scale():
    process = subprocess.Popen([sys.executable, "-m", "qslab", "bench", "serve", "--config", str(ROOT / "lab_config.toml"),
                                "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = json.loads(process.stdout.readline())["instruments"]["power_meter"]["address"]
        meter = pyvisa.ResourceManager("@py").open_resource(address, read_termination="\n", write_termination="\n",
                                                           timeout=20_000)
        meter.write("SENS1:POW:ATIM 1")
        start = time.monotonic()
        meter.query("READ1:POW?")  # one reading averaged for 1 s: 1 s of real time at time scale 1 (10 ms at 0.01)
        assert time.monotonic() - start >= 1.0
        meter.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_a_bad_time_scale_is_one_line():
    result = subprocess.run([sys.executable, "-m", "qslab", "bench", "serve", "--time-scale", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "--time-scale" in result.stderr and "> 0" in result.stderr

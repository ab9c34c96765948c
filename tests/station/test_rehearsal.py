"""The rehearsal docs/HARDWARE.md describes, run as written: `qslab bench serve` in its own process, the hardware
config pointed at the addresses it prints, then `qslab instruments`, the read-only smoke suite
(`pytest tests/hardware --hw-config FILE`) and a short `qslab session` on it. Only the addresses of
lab_config.hardware.toml change: its [station], [calibration], limits and roles are the hardware ones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARDWARE_CONFIG = ROOT / "lab_config.hardware.toml"
BENCH_TIME_SCALE = "0.01"  # the rehearsal in the guide runs at 1 (real time); a test need not wait for it


def hardware_config_at(addresses: dict[str, str]) -> str:
    """lab_config.hardware.toml with each [instruments.<name>] address replaced by ``addresses[name]``."""
    lines, table = [], None
    for line in HARDWARE_CONFIG.read_text().splitlines():
        if line.startswith("["):
            match = re.match(r"^\[instruments\.(\w+)\]\s*$", line)
            table = match.group(1) if match else None
        if table in addresses and line.startswith("address = "):
            line = f'address = "{addresses[table]}"'
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """(config path, directory): a served bench and the hardware config pointing at it."""
    directory = tmp_path_factory.mktemp("rehearsal")
    serve = subprocess.Popen([sys.executable, "-m", "qslab", "bench", "serve", "--config", str(ROOT / "lab_config.toml"),
                              "--time-scale", BENCH_TIME_SCALE, "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=directory)
    try:
        served = json.loads(serve.stdout.readline())["instruments"]
        config = directory / "lab_config.rehearsal.toml"
        config.write_text(hardware_config_at({name: entry["address"] for name, entry in served.items()}))
        yield config, directory
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=60)


def _run(args: list[str], cwd: Path, timeout_s: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout_s, env=env)


def test_every_address_of_the_hardware_config_is_replaced(rehearsal):
    config, _ = rehearsal
    addresses = re.findall(r'^address = "([^"]+)"', config.read_text(), flags=re.M)
    assert len(addresses) == 9 and all(a.startswith(("TCPIP::127.0.0.1::", "socket://127.0.0.1:")) for a in addresses)


def test_qslab_instruments_identifies_the_served_station(rehearsal):
    config, directory = rehearsal
    result = _run([sys.executable, "-m", "qslab", "instruments", "--config", str(config), "--json"], directory)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert (payload["identified"], payload["total"]) == (9, 9) and payload["station"] == "qslab hardware bench"


def test_the_hardware_smoke_suite_passes_on_the_served_bench(rehearsal):
    config, _ = rehearsal
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/hardware",
                   "--hw-config", str(config)], ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b3 passed\b", result.stdout) and "skipped" not in result.stdout


def test_without_hw_config_the_smoke_suite_is_deselected_not_skipped():
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/hardware"], ROOT)
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout[-2000:]
    assert re.search(r"\b3 deselected\b", result.stdout) and "skipped" not in result.stdout


def test_a_session_runs_on_the_hardware_config_pointed_at_the_served_bench(rehearsal):
    config, directory = rehearsal
    result = _run([sys.executable, "-m", "qslab", "session", "--config", str(config), "--images", "4",
                   "--batch-images", "4", "--calibration-dir", str(directory / "calibration"),
                   "--out", str(directory / "sessions"), "--json"], directory)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["images"] == 4 and payload["safe_state"]["safe"] is True
    assert Path(payload["file"]).exists()

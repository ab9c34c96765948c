"""`qslab bench serve`: JSON on the first stdout line, serving until SIGTERM/SIGINT, clean shutdown."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyvisa
import pytest

# Runs the command module directly, so the test does not depend on its registration in COMMANDS.
RUN = ("import sys; from qslab.sequences.commands.cli_io import OneLineParser; from qslab.sequences.commands import bench; "
       "p = OneLineParser(prog='qslab bench'); bench.register(p); "
       "from qslab.sequences.commands.cli_io import UsageError\n"
       "try:\n    sys.exit(bench.run(p.parse_args(sys.argv[1:])))\n"
       "except UsageError as e:\n    print(f'qslab bench: error: {e}', file=sys.stderr); sys.exit(2)")


def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _free_port() -> int:
    """A port free now and below the kernel's ephemeral range: between this probe and the served bench's bind, no
    socket bound to port 0 (the bench's other instruments, other tests' connections) can be given it."""
    try:
        lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    for port in random.Random().sample(range(10000, lowest_ephemeral), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port found in 10000-{lowest_ephemeral - 1}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_the_instruments_then_serves_until_signalled(tmp_path, stop):
    port = _free_port()
    config = tmp_path / "lab_config.toml"
    config.write_text(f"[protocol]\nmu_photons = 6.0\n\n[bench]\nseed = 3\n[bench.ports]\nlaser = {port}\n"
                      "[bench.server_iq]\nvpi_v = 4.0\n")
    process = _serve("--config", str(config), "--json")
    try:
        first = process.stdout.readline()
        payload = json.loads(first)
        instruments = payload["instruments"]
        assert set(payload) == {"instruments"}
        assert instruments["laser"] == {"address": f"TCPIP::127.0.0.1::{port}::SOCKET",
                                        "driver": "qslab.instruments.drivers.keysight_n77xx.KeysightN7714A"}
        assert instruments["bias_iq"]["address"].startswith("socket://127.0.0.1:")
        assert instruments["digitizer"]["driver"] == "qslab.instruments.drivers.keysight_infiniium.KeysightInfiniium"
        manager = pyvisa.ResourceManager("@py")
        laser = manager.open_resource(instruments["laser"]["address"], read_termination="\n", write_termination="\n")
        assert laser.query("*IDN?").startswith("Keysight Technologies,N7714A,")
        laser.close()
        process.send_signal(stop)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out == "" and "stopped" in err
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", port))


def test_bad_config_is_one_line_with_exit_status_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[bench.server_iq]\nvpi = 4.0\n")
    process = _serve("--config", str(config))
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and out == ""
    assert err.strip().count("\n") == 0 and "unknown key 'server_iq.vpi'" in err


def test_the_bench_loads_no_driver_library():
    """The bench serves sockets; the drivers (qcodes, pyvisa) are the station's side. `qslab bench serve` and every
    bench process importing qcodes cost half a second of start each; the Alazar card's driver-side API
    (emulators/alazar_api.py) is apart from its board for that."""
    code = ("import sys, qslab.instruments.sim.server; "
            "print(sorted(m for m in ('qcodes', 'pyvisa', 'qcodes_contrib_drivers') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout.strip() == "[]"

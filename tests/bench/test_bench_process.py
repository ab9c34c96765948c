"""A station's bench served by a process forked for it (bench_process.ForkedBench): it answers at its addresses, counts
what it receives, and ends with its owner however the owner ends: ``stop``, a SIGKILL, and not on the owner's Ctrl-C
(the owner's safe state still needs it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import pyvisa

from qslab.instruments.sim.bench_parameters import defaults_table
from qslab.instruments.sim.bench_process import ForkedBench

GENEROUS_S = 60.0  # how long a loaded machine may take to end a process and close its ports


def _identify(address: str) -> str:
    manager = pyvisa.ResourceManager("@py")
    try:
        instrument = manager.open_resource(address, read_termination="\n", write_termination="\n", timeout=20_000)
        try:
            return instrument.query("*IDN?").strip()
        finally:
            instrument.close()
    finally:
        manager.close()


def _refused(address: str) -> bool:
    _, host, port, _ = address.split("::")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _closes(address: str) -> bool:
    deadline = time.monotonic() + GENEROUS_S
    while time.monotonic() < deadline:
        if _refused(address):
            return True
        time.sleep(0.05)
    return False


def test_the_forked_bench_answers_counts_keeps_its_last_counts_and_is_gone_after_stop():
    with ForkedBench(defaults_table(), {"spare_meter": "thorlabs_pm100d"}) as bench:
        laser, spare = bench.address("laser"), bench.address("spare_meter")
        assert os.getsid(bench.pid) != os.getsid(0)  # a session of its own: the terminal's signals are not its
        before = bench.message_counts()
        assert "N7714A" in _identify(laser) and "PM100D" in _identify(spare)
        counts = bench.message_counts()
        assert counts["laser"] == before["laser"] + 1 and counts["spare_meter"] == before["spare_meter"] + 1
        assert bench.charged_s() >= 0.0
        with pytest.raises(KeyError, match="no instrument 'nothing'"):
            bench.address("nothing")
    assert _refused(laser) and _refused(spare)
    assert bench.message_counts() == counts  # read as it stopped: a benchmark reads them after the session
    bench.stop()  # idempotent


OWNER = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever its parent ignores (an xdist worker: SIGINT)
from qslab.instruments.sim.bench_parameters import defaults_table
from qslab.instruments.sim.bench_process import ForkedBench
bench = ForkedBench(defaults_table()).start()
try:
    print(bench.address("laser"), flush=True)  # inside: the test's SIGINT comes only after this line
    sys.stdin.readline()
except KeyboardInterrupt:
    import pyvisa
    laser = pyvisa.ResourceManager("@py").open_resource(bench.address("laser"), read_termination="\\n",
                                                        write_termination="\\n", timeout=20_000)
    print("after Ctrl-C the bench answers:", laser.query("*IDN?").strip(), flush=True)
    laser.close()
    bench.stop()
"""


def _owner() -> tuple[subprocess.Popen, str]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    return owner, owner.stdout.readline().strip()


def test_a_killed_owner_takes_its_bench_process_with_it():
    owner, laser = _owner()
    assert "N7714A" in _identify(laser)
    owner.kill()  # SIGKILL: no handler, no finally
    owner.wait()
    assert _closes(laser)


def test_a_ctrl_c_at_the_owners_terminal_does_not_reach_the_bench():
    owner, laser = _owner()
    try:
        os.killpg(owner.pid, signal.SIGINT)  # the owner leads its process group, as a shell's foreground job does
        # its stdin closed too: an owner the SIGINT missed ends without the line, it does not hang the test
        out, _ = owner.communicate(timeout=GENEROUS_S)
        assert out.startswith("after Ctrl-C the bench answers:") and "N7714A" in out, out
        assert owner.returncode == 0
    finally:
        owner.kill()
    assert _closes(laser)


def test_a_bench_that_cannot_start_says_why_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="the bench process did not start: ") as raised:
            ForkedBench({**defaults_table(), "ports": {"laser": port}}).start()
    assert "\n" not in str(raised.value)
    assert "address already in use" in str(raised.value).lower() or str(port) in str(raised.value)

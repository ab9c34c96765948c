"""A second client drives a running session's bench (issue 17): the instruments speak SCPI without credentials, as
real ones do, so any local user can; the session reports every change it did not make as a foreign write naming
the instrument and the setting, sets it back and takes the batch again (never records light it did not set)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from qslab.calibration.records import RecordStore
from qslab.sequences.config import load_config
from qslab.sequences.session import SessionSettings, run_session
from qslab.sequences.session_guard import observing_arms

CONFIG = Path(__file__).resolve().parents[2] / "lab_config.toml"
SETTINGS = SessionSettings(images=20, mu=6.0, gain=1.3, seed=3, batch_images=10, verify_fraction=0.05,
                           failure_probability=1e-10, laser_power_dbm=10.0, exact_leakage_images=20)


@pytest.fixture(scope="module")
def store(calibrated_store_at, tmp_path_factory):
    """The bench's calibration records (tests/conftest.py: made once per run, here a writable copy)."""
    return RecordStore(calibrated_store_at(tmp_path_factory.mktemp("calibration")))


def _second_client(address: str, *messages: str) -> list[str]:
    """Another process's view of the bench: a fresh socket to the instrument's SCPI port, no session involved."""
    host, port = re.match(r"TCPIP::([^:]+)::(\d+)::SOCKET", address).groups()
    replies = []
    with socket.create_connection((host, int(port)), timeout=10) as client:
        stream = client.makefile("rwb")
        for message in messages:
            stream.write(message.encode() + b"\n")
            stream.flush()
            if message.endswith("?"):
                replies.append(stream.readline().decode().strip())
    return replies


def test_a_second_client_changing_the_live_laser_power_is_reported_as_a_foreign_write(store, tmp_path):
    config = load_config(CONFIG)
    port = config.roles.server_laser.port
    seen = {}

    def meddle(station, batch):  # just before batch 2, while the laser is on at the session's power
        address = station.bench.instruments[config.roles.server_laser.instrument].address
        seen["before"] = _second_client(address, f":SOUR{port}:POW:UNIT DBM", f":SOUR{port}:POW?")[0]
        # *OPC? on the same connection: the set is done (settled) before that client leaves, so the read below,
        # on a connection of its own, cannot overtake it however the machine schedules the bench's threads
        assert _second_client(address, f":SOUR{port}:POW 7", "*OPC?") == ["1"]
        seen["after"] = _second_client(address, f":SOUR{port}:POW?")[0]

    with observing_arms(meddle):
        results = run_session(config, SETTINGS, out_dir=tmp_path, store=store, progress=False, embedded_bench=True)
    assert float(seen["before"]) == pytest.approx(10.0, abs=0.05) and float(seen["after"]) == pytest.approx(7.0)
    foreign = [a for a in results["faults"]["actions"] if a["action"] == "foreign-write"]
    assert len(foreign) == 1 and foreign[0]["instrument"] == config.roles.server_laser.instrument, foreign
    assert "power" in foreign[0]["detail"] and "7" in foreign[0]["detail"] and foreign[0]["batch"] == 2
    assert [a for a in results["faults"]["actions"] if a["action"] == "re-applied"]  # set back, batch taken again
    assert [a for a in results["faults"]["actions"] if a["action"] == "repeated"]
    assert results["safe_state"]["safe"] is True and results["images"] == 20

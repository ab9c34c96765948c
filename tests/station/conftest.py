"""Fixtures for the station tests: a connected bench station, write recorders (VISA and serial) to prove
what was (not) sent, and raw-socket fakes of broken instruments."""

from __future__ import annotations

import pickle
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from qcodes.instrument import Instrument
from shared_once import copy_of, made_once
from station_fixtures import CLEAN_SETTINGS, bench_config, patient_config

from qslab.sequences.station import LabStation


@pytest.fixture(autouse=True)
def _close_all_instruments() -> Iterator[None]:
    Instrument.close_all()  # what a test elsewhere left open (which ran before depends on xdist's scheduling)
    yield
    Instrument.close_all()


@pytest.fixture
def station() -> Iterator[LabStation]:
    with LabStation(bench_config()) as connected:
        yield connected


@pytest.fixture
def record_writes(monkeypatch: pytest.MonkeyPatch) -> Callable[[object], list[bytes]]:
    """Record every message a driver sends (still forwarded): VISA handles and the MBX's serial port."""

    def install(driver) -> list[bytes]:
        sent: list[bytes] = []
        if hasattr(driver, "visa_handle"):
            target, method = driver.visa_handle, "write_raw"
        else:
            target, method = driver._port, "write"
        original = getattr(target, method)

        def spy(message: bytes):
            sent.append(bytes(message))
            return original(message)

        monkeypatch.setattr(target, method, spy)
        return sent

    return install


class FakeInstrument:
    """A raw TCP server on 127.0.0.1 that answers every message with ``reply`` (None: never answers)."""

    def __init__(self, reply: str | None):
        self.reply = reply
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def visa_address(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    @property
    def serial_address(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            while connection.recv(4096):
                if self.reply is not None:
                    connection.sendall(self.reply.encode() + b"\n")
        except OSError:
            return

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def fake_instrument() -> Iterator[Callable[[str | None], FakeInstrument]]:
    fakes: list[FakeInstrument] = []

    def make(reply: str | None) -> FakeInstrument:
        fakes.append(FakeInstrument(reply))
        return fakes[-1]

    yield make
    for fake in fakes:
        fake.close()


# --- one clean session for the whole test run ------------------------------------------------------------------------

@dataclass(frozen=True)
class CleanSession:
    """READ-ONLY: a finished session (station_fixtures.CLEAN_SETTINGS on the patient config) and what it left.

    ``results``: run_session's results (``results["file"]`` is the session file, in the shared directory);
    ``dc_levels``: per batch, ({receiver: its vacuum tail's mean, SNU}, {receiver: the raw DC level the DSP took
    out, SNU}), read by a spy on session.run_batch while it ran; ``instrument_s_at_batches``: the instrument seconds
    the bench's clock had charged when each batch (each attempt) started (BenchClock.charged_s); ``store_after``: the record store as the session
    left it (the bench's records plus the channel record of this station identity). A test that writes (another
    session) takes ``store_copy``."""

    results: dict
    dc_levels: list
    instrument_s_at_batches: list
    store_after: Path

    def store_copy(self, directory: Path):
        from qslab.calibration.records import RecordStore

        return RecordStore(copy_of(self.store_after, directory))


def _run_the_clean_session(bench_calibration: Path, directory: Path) -> None:
    import numpy as np

    from qslab.calibration.records import RecordStore
    from qslab.instruments.sim.link.receivers import dc_level_v
    from qslab.sequences import session as session_module
    from qslab.sequences.config import load_config

    dc_levels, instrument_s = [], []
    original = session_module.run_batch

    def run_batch(link, *args, **kwargs):
        instrument_s.append(link.station.bench.state.clock.charged_s())
        out = original(link, *args, **kwargs)
        state = link.station.bench.state
        raw_dc_snu = {rx.name: dc_level_v(state.params.get(rx.name), state.lo_power_w(rx.name))
                      * float(np.sum(rx.calibration.template)) / np.sqrt(rx.calibration.shot_noise_variance_v2)
                      for rx in (link.client_rx, link.server_rx)}
        dc_levels.append(({name: float(reading.mean_snu) for name, reading in link.tails.items()},
                          {name: float(value) for name, value in raw_dc_snu.items()}))
        return out

    store = copy_of(bench_calibration, directory / "calibration")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session_module, "run_batch", run_batch)
        results = session_module.run_session(load_config(patient_config(directory)), CLEAN_SETTINGS,
                                             out_dir=directory / "clean", store=RecordStore(store), progress=False,
                                             embedded_bench=True)
    (directory / "clean.pickle").write_bytes(pickle.dumps((results, dc_levels, instrument_s)))


@pytest.fixture(scope="session")
def patient_clean_session(bench_calibration, tmp_path_factory) -> CleanSession:
    """The clean session test_session.py and test_curious_session.py compare against, run once per test run and
    shared by the xdist workers (tests/shared_once.py): both files ran this very session on a copy of the same
    records before, each for itself."""
    directory = made_once(tmp_path_factory, "patient-clean-session",
                          lambda built: _run_the_clean_session(bench_calibration, built))
    results, dc_levels, instrument_s = pickle.loads((directory / "clean.pickle").read_bytes())
    return CleanSession(results, dc_levels, instrument_s, directory / "calibration")

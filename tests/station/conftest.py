"""Fixtures for the station tests: a connected bench station, write recorders (VISA and serial) to prove
what was (not) sent, and raw-socket fakes of broken instruments."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from qcodes.instrument import Instrument
from station_fixtures import bench_config

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

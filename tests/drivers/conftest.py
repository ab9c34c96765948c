"""Shared fixtures for the driver tests: sim file names, a write recorder and a raw-SCPI socket fake."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from qcodes.instrument import Instrument

SIMS = "qslab.instruments.drivers.sims"


@pytest.fixture(autouse=True)
def _close_all_instruments() -> Iterator[None]:
    """Safety net for qcodes' "Instrument with this name already exists" after a failed test, or one elsewhere
    that left an instrument open (which ran before depends on xdist's scheduling)."""
    Instrument.close_all()
    yield
    Instrument.close_all()


@pytest.fixture
def record_writes(monkeypatch: pytest.MonkeyPatch) -> Callable[[Instrument], list[bytes]]:
    """Record every message a VISA driver sends (still forwarded), to prove what was (not) sent."""

    def install(instrument: Instrument) -> list[bytes]:
        sent: list[bytes] = []
        handle = instrument.visa_handle
        original = handle.write_raw

        def spy(message: bytes) -> int:
            sent.append(message)
            return original(message)

        monkeypatch.setattr(handle, "write_raw", spy)
        return sent

    return install


def take_message(buffer: bytearray) -> bytes | None:
    """Pop one LF-terminated SCPI message; a ``#<n><len>`` block inside is skipped by its length,
    so sample bytes that happen to be LF, ';' or '#' do not split it."""
    i = 0
    while i < len(buffer):
        if buffer[i] == ord("#"):
            if i + 2 > len(buffer):
                return None
            digits = int(chr(buffer[i + 1]))
            if i + 2 + digits > len(buffer):
                return None
            i += 2 + digits + int(buffer[i + 2:i + 2 + digits])
            continue
        if buffer[i] == ord("\n"):
            message = bytes(buffer[:i])
            del buffer[:i + 1]
            return message
        i += 1
    return None


class ScpiSocketFake:
    """One-connection raw-SCPI server on 127.0.0.1, like an instrument's port 5025.

    ``answer(message) -> str | None`` gives the reply (sent with ``terminator``) or None for no
    reply; every received message is kept, in order, in ``messages``.
    """

    def __init__(self, answer: Callable[[bytes], str | None], terminator: str = "\n"):
        self.answer, self.terminator = answer, terminator.encode()
        self.messages: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.address = f"TCPIP::127.0.0.1::{self.port}::SOCKET"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._server.accept()
        buffer = bytearray()
        with connection:
            while data := connection.recv(1 << 16):
                buffer += data
                while (message := take_message(buffer)) is not None:
                    self.messages.append(message)
                    reply = self.answer(message)
                    if reply is not None:
                        connection.sendall(reply.encode() + self.terminator)

    def close(self) -> None:
        self._server.close()
        self._thread.join(timeout=2)


@pytest.fixture
def scpi_socket() -> Iterator[Callable[..., ScpiSocketFake]]:
    """Factory for ScpiSocketFake servers, closed after the test."""
    fakes: list[ScpiSocketFake] = []

    def make(answer: Callable[[bytes], str | None], terminator: str = "\n") -> ScpiSocketFake:
        fakes.append(ScpiSocketFake(answer, terminator))
        return fakes[-1]

    yield make
    Instrument.close_all()  # the driver's socket must close before the server thread can end
    for fake in fakes:
        fake.close()

"""Byte-exact protocol tests for drivers, in the style of PyMeasure's ``expected_protocol``.

A driver talks to a loopback TCP server that plays a transcript: a list of ``(sent, reply)`` pairs of
``bytes``. ``sent`` is exactly what the driver must write next, terminations included (``b"*IDN?\\n"``,
``b"V?\\r\\n"``); ``reply`` is exactly what goes back (termination included), or ``None`` when the
instrument answers nothing (a write). Any difference fails the test: a wrong byte (reported at once with
its offset; the server then closes every connection so the driver fails fast), bytes sent after the
transcript ended, or pairs left unplayed when the block ends.

Why a socket and not a fake pyvisa resource: the driver runs its real transport (pyvisa-py's TCPIP
SOCKET session, or pyserial's ``socket://`` URL), so terminations, block reads, termination-character
switching and read widening are tested as they run on a bench; no library is patched.

Usage, any driver whose constructor takes an address::

    from tests.drivers.expected_protocol import expected_protocol  # or: from expected_protocol import ...

    PAIRS = [(b"*IDN?\\n", b"Keysight,M8195A,MY1,4.0\\n"),   # what the constructor sends, in order
             (b":VOLT1 0.500000\\n", None),                    # a write: no reply
             (b"SYST:ERR?\\n", b'0,"No error"\\n')]
    with expected_protocol(lambda address: KeysightM8195A("awg", address, visalib="@py", timeout=2),
                           PAIRS) as awg:
        awg.ch1.amplitude_vpp(0.5)

A reply may also be ``Later(reply, after_s)``: sent ``after_s`` seconds after its ``sent`` arrived (an instrument
that answers when an acquisition completes; for a driver that must wait through its own timeouts).

For a pyserial driver pass ``transport="serial"`` (the factory then gets ``socket://127.0.0.1:<port>``).
The instrument is closed when the block ends (``close()`` is called if it has one). Give the driver a short
timeout: a driver that sends too few bytes waits for a reply that never comes, and fails after it.

``ProtocolServer`` is the server alone (``address_visa``, ``address_serial``, ``check()``, ``close()``), for a
test that builds its client itself or wants to look at ``received`` (the bytes matched so far, per pair).
A reconnect is allowed: the transcript continues on the next connection; a connection closed in the middle
of a ``sent`` is a failure.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Later", "Pair", "ProtocolServer", "expected_protocol", "parameter"]


@dataclass(frozen=True)
class Later:
    """A reply sent ``after_s`` seconds after its command arrived."""

    reply: bytes
    after_s: float


Pair = tuple[bytes, "bytes | Later | None"]
T = TypeVar("T")
_SHOWN_BYTES = 60
_POLL_S = 0.05


def _window(data: bytes, at: int) -> str:
    """A few bytes of ``data`` around offset ``at``, as a Python literal."""
    start = max(0, at - _SHOWN_BYTES // 2)
    text = repr(bytes(data[start:start + _SHOWN_BYTES]))
    return ("..." if start else "") + text + ("..." if start + _SHOWN_BYTES < len(data) else "")


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


class ProtocolServer:
    """A loopback server on 127.0.0.1 that plays ``pairs`` byte for byte (module docstring)."""

    def __init__(self, pairs: Sequence[Pair]):
        for number, pair in enumerate(pairs):
            sent, reply = pair
            if not isinstance(sent, bytes) or not sent or not (reply is None or isinstance(reply, (bytes, Later))):
                raise TypeError(f"pair {number}: expected (non-empty bytes, bytes, Later or None), got {pair!r}")
        self.pairs = list(pairs)
        self.played = 0                       # pairs matched so far
        self.received: list[bytes] = []       # the bytes matched, one entry per played pair
        self.failure: str | None = None       # the first difference, as a message
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._connection: socket.socket | None = None
        self._stopping = False
        self._wake, self._waker = socket.socketpair()  # close() wakes the server at once, not at its next poll
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address_visa(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    @property
    def address_serial(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    # -- the server thread ---------------------------------------------------------------------------
    def _serve(self) -> None:
        # poll rather than block in accept(): a connection already queued when close() is called is still played
        while self.failure is None:
            try:
                ready, _, _ = select.select([self._server, self._wake], [], [], _POLL_S)
                connection = self._server.accept()[0] if self._server in ready else None
            except (OSError, ValueError):
                return
            if connection is None:
                if self._stopping:
                    break
                continue
            self._connection = connection
            with connection:
                self._play(connection)
            self._connection = None
        with contextlib.suppress(OSError):
            self._server.close()

    def _play(self, connection: socket.socket) -> None:
        buffer = bytearray()
        while self.failure is None:
            try:
                data = connection.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                if buffer:
                    self._fail(f"the connection closed after {bytes(buffer)[:_SHOWN_BYTES]!r}, in the middle of "
                               f"{self._expected_text()}")
                return
            buffer += data
            while buffer and self.failure is None:
                if self.played >= len(self.pairs):
                    self._fail(f"unexpected bytes after the transcript ended: {_window(bytes(buffer), 0)}")
                    return
                expected, reply = self.pairs[self.played]
                head = bytes(buffer[:len(expected)])
                if head != expected[:len(head)]:
                    at = _first_difference(head, expected)
                    self._fail(f"pair {self.played}: byte {at} differs: expected {_window(expected, at)}, "
                               f"received {_window(head, at)}")
                    return
                if len(head) < len(expected):
                    break  # a prefix so far: wait for the rest
                del buffer[:len(expected)]
                self.received.append(head)
                self.played += 1
                if isinstance(reply, Later):
                    time.sleep(reply.after_s)
                    reply = reply.reply
                if reply:
                    connection.sendall(reply)

    def _expected_text(self) -> str:
        if self.played >= len(self.pairs):
            return "nothing (the transcript had ended)"
        return f"pair {self.played} ({_window(self.pairs[self.played][0], 0)})"

    def _fail(self, message: str) -> None:
        self.failure = message  # the server stops listening: the driver fails at once instead of retrying

    # -- the test's side -------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise AssertionError on the first difference, or when pairs were left unplayed."""
        if self.failure is not None:
            raise AssertionError(f"protocol: {self.failure}")
        if self.played < len(self.pairs):
            raise AssertionError(f"protocol: {len(self.pairs) - self.played} pair(s) never sent, the first "
                                 f"{self._expected_text()}")

    def close(self) -> None:
        """Stop serving once the client's connection has ended (its last bytes are still checked); a client that
        keeps its connection open is cut off after a few seconds."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._waker.send(b"x")
        self._thread.join(timeout=5)
        connection = self._connection
        if self._thread.is_alive() and connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._server.close()
        self._wake.close()
        self._waker.close()


@contextlib.contextmanager
def expected_protocol(make_instrument: Callable[[str], T], pairs: Sequence[Pair], *,
                      transport: str = "visa") -> Iterator[T]:
    """``make_instrument(address)`` talking to a ``ProtocolServer`` playing ``pairs``; checked when the block
    ends (module docstring). ``transport``: ``"visa"`` (``TCPIP::127.0.0.1::<port>::SOCKET``) or ``"serial"``
    (``socket://127.0.0.1:<port>``). A difference is raised as AssertionError even when the driver raised first
    (the driver's exception is chained)."""
    if transport not in ("visa", "serial"):
        raise ValueError(f"transport must be 'visa' or 'serial', got {transport!r}")
    server = ProtocolServer(pairs)
    instrument = None
    try:
        instrument = make_instrument(server.address_visa if transport == "visa" else server.address_serial)
        yield instrument
    except BaseException as error:
        if server.failure is not None:
            raise AssertionError(f"protocol: {server.failure}") from error
        raise
    finally:
        close = getattr(instrument, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        server.close()
    server.check()


def parameter(driver, path: str):
    """The driver's parameter at a dotted path (``"ch2.range"``), for tables of (path, bytes) cases."""
    node = driver
    for part in path.split("."):
        node = getattr(node, part)
    return node

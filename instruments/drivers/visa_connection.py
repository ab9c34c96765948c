"""Reopening a qcodes VISA instrument's connection, and what pyvisa-py's raw sockets need, through public APIs.

Why here: our SCPI drivers and the Infiniium subclass both reconnect after a lost or garbled exchange,
and both must keep the terminations and timeout of the connection they replace.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

PYVISA_PY_RECV_BYTES = 1 << 20


def reopen(instrument: Any) -> None:
    """Close and reopen ``instrument``'s VISA resource (a qcodes VisaInstrument) at the same address, on the
    same VISA library, with the same terminations and timeout; whatever was still on the line is dropped.

    Uses qcodes' ``set_address``; the old resource is closed first without raising (a broken line may not
    close cleanly; it is replaced either way).
    """
    old = instrument.visa_handle
    settings = {"read_termination": old.read_termination, "write_termination": old.write_termination,
                "timeout": old.timeout}
    name, visalib = old.resource_name, f"{old.visalib.library_path}@{instrument.visabackend}"
    with contextlib.suppress(Exception):
        old.close()
    instrument.set_address(name, visalib)
    handle = instrument.visa_handle
    handle.read_termination, handle.write_termination = settings["read_termination"], settings["write_termination"]
    handle.timeout = settings["timeout"]


def _pyvisa_py_session(handle: Any) -> Any:
    """pyvisa-py's session object under ``handle`` (None for other backends, or when closed)."""
    sessions = getattr(getattr(handle, "visalib", None), "sessions", None)
    try:
        return sessions.get(handle.session) if isinstance(sessions, dict) else None
    except Exception:  # noqa: BLE001 - a closed resource has no session
        return None


def visa_socket(handle: Any) -> socket.socket | None:
    """The TCP socket under a pyvisa-py resource (None for other backends and interfaces)."""
    sock = getattr(_pyvisa_py_session(handle), "interface", None)
    return sock if isinstance(sock, socket.socket) else None


def socket_closed(sock: socket.socket) -> bool:
    """True when the peer has closed the connection (a zero-byte peek); never blocks."""
    import select

    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def widen_socket_reads(handle: Any, recv_bytes: int = PYVISA_PY_RECV_BYTES) -> bool:
    """Let pyvisa-py's raw-socket session receive up to ``recv_bytes`` per recv() (it fixes 4096 at connect).

    Why: a trace of megabytes otherwise costs a select() + recv() per 4 kB (~10 MB/s on loopback). Only
    pyvisa-py TCPIP SOCKET sessions have ``max_recv_size``; any other backend is left as is (False).
    """
    session = _pyvisa_py_session(handle)
    if session is None or not hasattr(session, "max_recv_size"):
        return False
    session.max_recv_size = max(int(recv_bytes), session.max_recv_size)
    return True


LARGE_WRITE_BYTES = 1 << 16


def send_message(handle: Any, data: bytes | bytearray | memoryview) -> None:
    """Send ``data`` (a whole message, terminator included) on ``handle``: ``write_raw``, except that a large
    message on a pyvisa-py raw-socket session goes out in one ``sendall`` within the resource's timeout.

    Why: pyvisa-py writes in 4096-byte pieces with a select() and a copy each (a fixed size, no attribute sets
    it): an AWG segment of megabytes is thousands of system calls. The socket is the session's own, blocking (as
    pyvisa-py leaves it), and is left with the timeout it had; nothing is buffered on pyvisa-py's write side."""
    sock = visa_socket(handle) if len(data) >= LARGE_WRITE_BYTES else None
    if sock is None:
        handle.write_raw(bytes(data) if not isinstance(data, bytes) else data)
        return
    previous = sock.gettimeout()
    timeout_ms = getattr(handle, "timeout", None)
    sock.settimeout(None if timeout_ms is None or timeout_ms == float("inf") else max(float(timeout_ms), 1.0) / 1e3)
    try:
        sock.sendall(data)
    finally:
        sock.settimeout(previous)


def is_raw_socket(handle: Any) -> bool:
    """True for a ``TCPIP::<host>::<port>::SOCKET`` resource: a new connection starts with an empty output queue.

    Why it matters: on a raw socket, reopening the connection drops a late reply with the old connection. On
    GPIB, USBTMC, HiSLIP, VXI-11 and serial the reply waits in the INSTRUMENT's output queue, which outlives
    the session: only a device clear (IEEE 488.2 DCL/SDC, USBTMC INITIATE_CLEAR, HiSLIP/VXI-11 device clear)
    empties it.
    """
    name = str(getattr(handle, "resource_name", "") or "")
    return name.upper().endswith("::SOCKET")

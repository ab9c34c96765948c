"""Workarounds for bugs in the maintained drivers we reuse unchanged, applied only where they bite.

qcodes 0.58's `KeysightInfiniium` reads traces with `container=npt.NDArray`; on Python >= 3.11 that
alias is no class, so pyvisa fails to build the array. `infiniium_trace_fix` maps the alias to its
origin (`np.ndarray`) while a trace is read, and restores pyvisa afterwards.
"""

from __future__ import annotations

import contextlib
import threading
import typing

_lock = threading.RLock()


@contextlib.contextmanager
def infiniium_trace_fix():
    """Let pyvisa accept a generic alias such as npt.NDArray as the container of binary values."""
    import pyvisa.util

    with _lock:
        original = pyvisa.util._use_numpy_routines
        pyvisa.util._use_numpy_routines = lambda container: original(typing.get_origin(container) or container)
        try:
            yield
        finally:
            pyvisa.util._use_numpy_routines = original


PYVISA_PY_RECV_BYTES = 1 << 20


def widen_socket_reads(driver, recv_bytes: int = PYVISA_PY_RECV_BYTES) -> bool:
    """Let pyvisa-py's raw-socket session receive up to ``recv_bytes`` per recv() (it fixes 4096 at connect).

    Why: a trace of megabytes otherwise costs a select() + recv() per 4 kB (~10 MB/s on loopback, the
    digitizer's traces dominated a whole session). Only pyvisa-py TCPIP SOCKET sessions have the
    attribute; any other backend is left as is (returns False).
    """
    handle = getattr(driver, "visa_handle", None)
    sessions = getattr(getattr(handle, "visalib", None), "sessions", None)
    session = sessions.get(handle.session) if isinstance(sessions, dict) else None
    if session is None or not hasattr(session, "max_recv_size"):
        return False
    session.max_recv_size = max(int(recv_bytes), session.max_recv_size)
    return True


def read_trace_block(channel):
    """One Infiniium channel's trace as qcodes' ``trace`` reads it (preamble, ``:WAV:DATA?``, int16 words),
    but with the block read by its known length; None when ``channel`` is not an Infiniium channel.

    Why: pyvisa-py's socket read returns whenever its buffer holds the termination character, so a
    block of int16 samples (one 0x0A byte in ~256) arrives in ~256-byte pieces, ~10^4 pyvisa loops
    per megabyte; a session's traces took most of its time. The block's length is known from the
    preamble, so it is read as that many bytes with the termination character off, then the LF.
    """
    trace = getattr(channel, "trace", None)
    scope = getattr(channel, "root_instrument", None)
    handle = getattr(scope, "visa_handle", None)
    if trace is None or handle is None or not hasattr(trace, "update_setpoints"):
        return None
    trace.update_setpoints()
    scope.write(f":WAV:SOUR {trace._channel}")
    scope.write(":WAV:DATA?")
    return _read_word_block(scope, int(trace._points), float(trace._yincrement), float(trace._yoffset))


def _read_word_block(scope, points: int, scale_v: float, origin_v: float):
    """The ``#0`` block of int16 words a ``:WAV:DATA?`` just asked for, read by its known length, in volts."""
    import numpy as np
    from pyvisa import constants

    handle = scope.visa_handle
    attribute = constants.ResourceAttribute.termchar_enabled
    before = handle.get_visa_attribute(attribute)
    handle.set_visa_attribute(attribute, False)
    try:
        header = handle.read_bytes(2)
        block = handle.read_bytes(2 * points + 1)
    finally:
        handle.set_visa_attribute(attribute, before)
    if header != b"#0" or block[-1:] != b"\n":
        raise ValueError(f"{scope.name}: trace block of {points} points arrived malformed "
                         f"(header {header!r}, last byte {block[-1:]!r})")
    return np.frombuffer(block[:-1], dtype="<i2").astype(np.float64) * scale_v + origin_v


def digitize_and_read(channel, points: int, sample_rate_hz: float, range_v: float, offset_v: float = 0.0):
    """Set the record length, sample rate and this channel's range, acquire, and read the channel's trace in
    TWO messages; None when ``channel`` is not an Infiniium channel (the caller takes the per-setting path).

    Why: through the driver's parameters and ``trace`` the same capture costs eight messages. Message 1 is
    ``:ACQ:POIN;:ACQ:SRAT;:CHAN<n>:RANG;:CHAN<n>:OFFS;:DIGitize;*OPC?;:WAV:SOUR;:WAV:PRE?``: the ``*OPC?`` before the
    preamble makes the instrument finish the acquisition first (its ``1`` is checked, and the preamble
    describes the new record). Message 2 is ``:WAV:DATA?``, read by its known length (``read_trace_block``).
    The driver's caches and trace set-up are updated as its own sets and ``update_setpoints`` would.
    """
    trace = getattr(channel, "trace", None)
    scope = getattr(channel, "root_instrument", None)
    if trace is None or getattr(scope, "visa_handle", None) is None or not hasattr(trace, "update_setpoints"):
        return None
    source = trace._channel
    number = int(source.upper().removeprefix("CHAN"))
    reply = scope.ask(f":ACQ:POIN {int(points)};:ACQ:SRAT {float(sample_rate_hz)};:CHAN{number}:RANG {float(range_v)};"
                      f":CHAN{number}:OFFS {float(offset_v)};:DIGitize;*OPC?;:WAV:SOUR {source};:WAV:PRE?").strip()
    done, _, preamble = reply.partition(";")
    if done != "1" or not preamble:
        raise ValueError(f"{scope.name}: the acquisition answered {reply[:80]!r} (expected 1;<preamble>)")
    scope.acquire_points.cache.set(int(points))
    scope.sample_rate.cache.set(float(sample_rate_hz))
    channel.range.cache.set(float(range_v))
    channel.offset.cache.set(float(offset_v))
    trace.update_setpoints(preamble.split(","))
    scope.write(":WAV:DATA?")
    return _read_word_block(scope, int(trace._points), float(trace._yincrement), float(trace._yoffset))

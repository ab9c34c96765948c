"""qcodes' Keysight Infiniium driver, subclassed: traces read by their known length, capture in two
messages, reconnect, and the upstream trace regression worked around only while the installed qcodes has it.

Why a subclass: the upstream driver is reused unchanged (every parameter, the constructor's set-up),
and what we add goes through its public surface (``ask``/``write``, ``visa_handle``, parameter caches,
``DSOTraceParam.update_setpoints(preamble)``, ``set_address``), never through its private attributes.

The regression: qcodes 0.53.0 to 0.58.x read a channel's ``trace`` with ``container=npt.NDArray``, which
is no class, so pyvisa calls ``npt.NDArray(<samples>)`` and fails. Fixed on qcodes' main branch by
microsoft/Qcodes#8206 (commit 0c9a08c6a, "Fix type checking with numpy 2.5", merged 2026-06-08, after
0.58.0), hence first released in ``QCODES_TRACE_FIXED_IN``. Below that version each channel's ``trace``
is a ``BlockTrace`` (qcodes' own trace parameter class, reading the block by its length); from it on,
qcodes' trace is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import qcodes
from packaging.version import Version
from pyvisa import constants
from qcodes.instrument_drivers.Keysight import KeysightInfiniium as _UpstreamInfiniium
from qcodes.instrument_drivers.Keysight import KeysightInfiniiumChannel
from qcodes.instrument_drivers.Keysight.Infiniium import DSOTraceParam
from qcodes.validators import Arrays

from qslab.instruments.drivers import visa_connection

__all__ = ["QCODES_TRACE_FIXED_IN", "BlockTrace", "KeysightInfiniium", "TraceBlock", "digitize_and_read",
           "qcodes_trace_needs_fix", "read_trace_block"]

QCODES_TRACE_FIXED_IN = Version("0.59.0")
# :WAV:PRE? fields (Infiniium programmer's guide, as qcodes reads them): points, y increment, y origin
_POINTS, _Y_INCREMENT, _Y_ORIGIN = 2, 7, 8


def qcodes_trace_needs_fix(qcodes_version: str = qcodes.__version__) -> bool:
    """Whether this qcodes reads Infiniium traces with the broken ``container=npt.NDArray`` (module docstring)."""
    return Version(qcodes_version) < QCODES_TRACE_FIXED_IN


@dataclass(frozen=True)
class TraceBlock:
    """What a ``:WAV:PRE?`` preamble says about the next ``:WAV:DATA?`` block: int16 words -> volts."""

    points: int
    volts_per_count: float
    origin_v: float

    @classmethod
    def from_preamble(cls, preamble: list[str]) -> TraceBlock:
        return cls(int(preamble[_POINTS]), float(preamble[_Y_INCREMENT]), float(preamble[_Y_ORIGIN]))


class KeysightInfiniium(_UpstreamInfiniium):
    """qcodes' ``KeysightInfiniium`` plus ``read_trace_v``, ``digitize_and_read_v`` and ``reconnect``.

    pyvisa-py raw-socket sessions receive up to ``visa_connection.PYVISA_PY_RECV_BYTES`` per recv() (traces
    are megabytes), from the constructor on and after every reconnect.
    """

    def __init__(self, name: str, address: str, channels: int = 4, **kwargs: Any):
        super().__init__(name, address, channels=channels, **kwargs)
        visa_connection.widen_socket_reads(self.visa_handle)
        if qcodes_trace_needs_fix():
            for channel in self.channels:
                channel.remove_parameter("trace")
                channel.trace = BlockTrace(name="trace", instrument=channel, label=f"Channel {channel.channel} trace",
                                           unit="V", channel=channel.channel_name,
                                           vals=Arrays(shape=(self.acquire_points,)), snapshot_value=False)

    # -- the connection ----------------------------------------------------------------------------
    def reconnect(self) -> None:
        """Close and reopen the VISA resource (same address, terminations, timeout): drops any late or partial
        reply a failed exchange left on the line. The scope's settings are untouched."""
        visa_connection.reopen(self)
        visa_connection.widen_socket_reads(self.visa_handle)

    # -- traces --------------------------------------------------------------------------------------
    def read_trace_v(self, channel: KeysightInfiniiumChannel) -> np.ndarray:
        """``channel``'s last acquisition in volts, as qcodes' ``trace`` reads it (preamble, ``:WAV:DATA?``,
        int16 words) but with the block read by its known length.

        Why: pyvisa-py's socket read returns whenever its buffer holds the termination character, so a
        block of int16 samples (one 0x0A byte in ~256) arrives in ~256-byte pieces, ~10^4 pyvisa loops
        per megabyte. The preamble gives the length: that many bytes are read with the termination
        character off, then the LF.
        """
        source = channel.channel_name
        self.write(f":WAV:SOUR {source}")
        preamble = self.ask(":WAV:PRE?").strip().split(",")
        channel.trace.update_setpoints(preamble)
        self.write(f":WAV:SOUR {source}")
        self.write(":WAV:DATA?")
        return self.read_word_block(TraceBlock.from_preamble(preamble))

    def digitize_and_read_v(self, channel: KeysightInfiniiumChannel, points: int, sample_rate_hz: float,
                            range_v: float, offset_v: float = 0.0) -> np.ndarray:
        """Set the record length, sample rate and ``channel``'s range and offset, acquire, and read the trace
        in volts, in TWO messages.

        Why: through the driver's parameters and ``trace`` the same capture costs eight messages. Message 1 is
        ``:ACQ:POIN;:ACQ:SRAT;:CHAN<n>:RANG;:CHAN<n>:OFFS;:DIGitize;*OPC?;:WAV:SOUR;:WAV:PRE?``: the ``*OPC?``
        before the preamble makes the instrument finish the acquisition first (its ``1`` is checked, and the
        preamble describes the new record). Message 2 is ``:WAV:DATA?``, read by its known length. The
        parameter caches and the trace's set-up are updated as the driver's own sets and ``update_setpoints``
        would.
        """
        number, source = channel.channel, channel.channel_name
        reply = self.ask(f":ACQ:POIN {int(points)};:ACQ:SRAT {float(sample_rate_hz)};:CHAN{number}:RANG "
                         f"{float(range_v)};:CHAN{number}:OFFS {float(offset_v)};:DIGitize;*OPC?;:WAV:SOUR {source};"
                         f":WAV:PRE?").strip()
        done, _, preamble_text = reply.partition(";")
        if done != "1" or not preamble_text:
            raise ValueError(f"{self.name}: the acquisition answered {reply[:80]!r} (expected 1;<preamble>)")
        self.acquire_points.cache.set(int(points))
        self.sample_rate.cache.set(float(sample_rate_hz))
        channel.range.cache.set(float(range_v))
        channel.offset.cache.set(float(offset_v))
        preamble = preamble_text.split(",")
        channel.trace.update_setpoints(preamble)
        self.write(":WAV:DATA?")
        return self.read_word_block(TraceBlock.from_preamble(preamble))

    def read_word_block(self, block: TraceBlock) -> np.ndarray:
        """The ``#0`` block of int16 words a ``:WAV:DATA?`` just asked for, read by its known length, in volts."""
        handle = self.visa_handle
        attribute = constants.ResourceAttribute.termchar_enabled
        before = handle.get_visa_attribute(attribute)
        handle.set_visa_attribute(attribute, False)
        try:
            header = handle.read_bytes(2)
            data = handle.read_bytes(2 * block.points + 1)
        finally:
            handle.set_visa_attribute(attribute, before)
        if header != b"#0" or data[-1:] != b"\n":
            raise ValueError(f"{self.name}: trace block of {block.points} points arrived malformed "
                             f"(header {header!r}, last byte {data[-1:]!r})")
        return np.frombuffer(data[:-1], dtype="<i2").astype(np.float64) * block.volts_per_count + block.origin_v


class BlockTrace(DSOTraceParam):
    """qcodes' Infiniium trace parameter, reading its block by length instead of through pyvisa's binary
    values with the broken container (used only while ``qcodes_trace_needs_fix()``, module docstring).

    It does what qcodes' ``get_raw`` does (preamble unless cached, digitize when ``auto_digitize``,
    ``:WAV:SOUR``, ``:WAV:DATA?``), keeping the block's shape from the preamble it asked for itself.
    """

    _block: TraceBlock | None = None

    def update_setpoints(self, preamble: Any = None) -> None:
        if preamble is None:
            self.instrument.write(f":WAV:SOUR {self.instrument.channel_name}")
            preamble = self.instrument.ask(":WAV:PRE?").strip().split(",")
        super().update_setpoints(preamble)
        self._block = TraceBlock.from_preamble(list(preamble))

    def get_raw(self) -> np.ndarray:
        scope = self.root_instrument
        if not scope.cache_setpoints():
            self.update_setpoints()
        if self._block is None:
            raise RuntimeError("Trace parameters are unknown. If cache_setpoints is True, call "
                               "instr.chX.update_setpoints at least once before a measurement.")
        if scope.auto_digitize():
            scope.digitize()
        scope.write(f":WAV:SOUR {self.instrument.channel_name}")
        scope.write(":WAV:DATA?")
        return scope.read_word_block(self._block)


def read_trace_block(channel: Any) -> np.ndarray | None:
    """``KeysightInfiniium.read_trace_v`` for ``channel``; None when it is not a channel of that driver."""
    scope = getattr(channel, "root_instrument", None)
    return scope.read_trace_v(channel) if isinstance(scope, KeysightInfiniium) else None


def digitize_and_read(channel: Any, points: int, sample_rate_hz: float, range_v: float,
                      offset_v: float = 0.0) -> np.ndarray | None:
    """``KeysightInfiniium.digitize_and_read_v`` for ``channel``; None when it is not a channel of that driver
    (the caller takes the per-setting path)."""
    scope = getattr(channel, "root_instrument", None)
    if not isinstance(scope, KeysightInfiniium):
        return None
    return scope.digitize_and_read_v(channel, points, sample_rate_hz, range_v, offset_v)

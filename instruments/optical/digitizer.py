"""The Digitizer role over the Keysight Infiniium driver (qcodes' driver, subclassed in instruments/drivers).

Why an adapter and not the driver: the sequences need five verbs (configure, arm, trigger, wait, read);
the Infiniium does trigger and wait in ONE message (``:DIGitize;*OPC?``: the scope answers when the
record is complete) and reads a channel by its known block length (drivers/keysight_infiniium.py). Another
digitizer family (issue 15: QCoDeS's AlazarTech driver) is another adapter with the same verbs.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from qslab.instruments.drivers._scpi import InstrumentError, InstrumentFault
from qslab.analysis.dsp import AdcRecord
from qslab.instruments.drivers.keysight_infiniium import (ACQUIRE, ACQUISITION_TIMEOUT_S, digitize_and_read,
                                                        read_trace_block, read_trace_words)
log = logging.getLogger(__name__)
DATA_OUT_OF_RANGE = -222  # SCPI: the value is outside what the instrument has; it keeps its setting
# what qcodes' Infiniium sends only in its constructor; the trace reads rely on it (sent again after a reset)
TRACE_FORMAT = (":SYSTem:HEADer OFF", ":WAVEFORM:FORMAT WORD", ":WAVEFORM:BYTEORDER LSBFirst",
                ":WAVEFORM:STREAMING ON")


class InfiniiumDigitizer:
    """``driver``: a qcodes KeysightInfiniium (channels ``ch1``..``ch4``)."""

    def __init__(self, driver: Any, *, name: str | None = None):
        self.driver, self.name = driver, name or driver.name
        self._armed = False
        self._trigger: tuple[str, float, str] | None = None  # what configure_trigger set (restore sends it again)
        self._channels_read: list[int] = []  # channels whose record was read since the last trigger

    # -- the registry's hooks (sequences/config.py DriverSpec.adapter) ----------------------------------
    @classmethod
    def from_driver(cls, driver: Any, unit: int | None = None, **_: Any) -> InfiniiumDigitizer:
        return cls(driver)

    @staticmethod
    def driver_options(limits: Any, visa_library: str) -> dict[str, Any]:
        """Constructor options: pyvisa-py works for this driver, whose warning about it would only be noise."""
        return {"silence_pyvisapy_warning": True} if visa_library == "@py" else {}

    # -- Digitizer ----------------------------------------------------------------------------------------
    def _channel(self, channel: int) -> Any:
        return getattr(self.driver, f"ch{int(channel)}")

    def configure(self, *, points: int | None = None, sample_rate_hz: float | None = None) -> None:
        """Set, read back and error-check in one message (the scope rounds the rate: ``sample_rate_hz`` tells)."""
        if points is not None or sample_rate_hz is not None:
            self.driver.configure_acquisition(points, sample_rate_hz)

    def sample_rate_hz(self) -> float:
        return float(self.driver.sample_rate())

    def configure_channel(self, channel: int, *, range_v: float | None = None, offset_v: float | None = None) -> None:
        """Set, read back and error-check in one message. A value the scope does not have (-222 "Data out of
        range") leaves the channel as the scope kept it, which ``range_v``/``offset_v`` tell (the role's contract:
        the instrument may round or clamp) and is logged; any other error is an InstrumentError. Either way the
        error queue is empty afterwards: no refusal is blamed on a later acquisition."""
        if range_v is None and offset_v is None:
            return
        try:
            self.driver.configure_channel_v(self._channel(channel), range_v, offset_v)
        except InstrumentError as refused:
            if any(code != DATA_OUT_OF_RANGE for code, _ in refused.errors):
                raise
            kept = self._channel(channel)
            log.warning("%s: channel %d kept range %s V, offset %s V (%s)", self.name, channel,
                        kept.range.cache.get(get_if_invalid=False), kept.offset.cache.get(get_if_invalid=False), refused)

    def range_v(self, channel: int) -> float:
        """The channel's full scale as the scope last stated it: the read-back of the last setting or the preamble
        of the last record read (asked for only when neither came yet). Why not ask again: every value the driver
        keeps is one the scope sent back, the preamble the very record's, and a session asks this per record."""
        return float(self._channel(channel).range.get_latest())

    def offset_v(self, channel: int) -> float:
        """The channel's centre, as ``range_v`` knows it."""
        return float(self._channel(channel).offset.get_latest())

    def configure_trigger(self, source: str, level_v: float, slope: str = "POS") -> None:
        """Edge trigger on ``source`` at ``level_v``, triggered sweep, set and read back in ONE message (the
        driver's set_edge_trigger); a read-back other than what was asked is an InstrumentFault."""
        trigger = self.driver.set_edge_trigger(source, level_v, slope)
        wanted = (source.strip().upper(), float(level_v), slope.strip().upper())
        if (trigger.source, trigger.slope, trigger.sweep) != (wanted[0], wanted[2], "TRIG") or not math.isclose(
                trigger.level_v, wanted[1], rel_tol=1e-6, abs_tol=1e-9):
            raise InstrumentFault(self.name, self.address, "edge trigger", f"reads back {trigger} (expected source "
                                  f"{wanted[0]}, level {wanted[1]:g} V, slope {wanted[2]}, sweep TRIG)", 1)
        self._trigger = wanted

    def arm(self) -> None:
        """Reading a trace must not start an acquisition of its own (qcodes' auto_digitize off)."""
        self.driver.auto_digitize(False)

    def trigger(self) -> None:
        """``:DIGitize;*OPC?;:SYST:ERR? STR``: the reply comes when the record is complete (``wait`` reads it).

        Why not qcodes' digitize(): it also sends a device clear afterwards, which costs pyvisa-py 0.1 s on a
        socket (a tenth of a second per batch and layer), and it reads no error. The channels read after the last
        acquisition have their preambles asked in the same message (a session reads the same ones every time): each
        read then takes one round trip instead of two."""
        self.driver.start_acquisition([self._channel(channel) for channel in self._channels_read])
        self._channels_read = []
        self._armed = True

    def wait(self, timeout_s: float | None = None) -> None:
        """The acquisition's reply, read through VISA timeouts (a triggered acquisition waits for its trigger) up
        to ``timeout_s`` (default ACQUISITION_TIMEOUT_S); a refusal in the error entry is an InstrumentError, an
        unreadable reply an InstrumentFault, as the retrying drivers report one (the session may take the batch
        again)."""
        if not self._armed:
            raise RuntimeError(f"{self.name}: wait() without a trigger()")
        self._armed = False
        try:
            self.driver.finish_acquisition(ACQUISITION_TIMEOUT_S if timeout_s is None else timeout_s)
        except ValueError as error:
            raise InstrumentFault(self.name, self.address, ACQUIRE, f"unreadable reply ({error})", 1) from error

    def read(self, channel: int) -> np.ndarray:
        """The channel's last record in volts; a reply that cannot be read is an InstrumentFault."""
        self._note_read(channel)
        try:
            samples = read_trace_block(self._channel(channel))
            if samples is None:  # not the Infiniium driver's channel: read as it reads
                samples = self._channel(channel).trace()
        except ValueError as error:
            raise InstrumentFault(self.name, self.address, f"ch{channel} trace", f"unreadable reply ({error})",
                                  1) from error
        return np.asarray(samples, dtype=float)

    def read_record(self, channel: int) -> AdcRecord:
        """``read`` as the scope sent it: the int16 words and the preamble's map to volts (roles.RecordingDigitizer)."""
        self._note_read(channel)
        try:
            read = read_trace_words(self._channel(channel))
            if read is None:  # not the Infiniium driver's channel: its volts as they are
                return AdcRecord(np.asarray(self._channel(channel).trace(), dtype=float), 1.0)
        except ValueError as error:
            raise InstrumentFault(self.name, self.address, f"ch{channel} trace", f"unreadable reply ({error})",
                                  1) from error
        words, block = read
        return AdcRecord(words, block.volts_per_count, block.origin_v)

    def _note_read(self, channel: int) -> None:
        if channel not in self._channels_read:
            self._channels_read.append(channel)

    def capture(self, channel: int, *, points: int, sample_rate_hz: float, range_v: float,
                offset_v: float = 0.0) -> np.ndarray:
        """Configure, acquire and read one channel in TWO messages (the driver's digitize_and_read_v)."""
        samples = digitize_and_read(self._channel(channel), points, sample_rate_hz, range_v, offset_v)
        if samples is None:
            self.configure(points=points, sample_rate_hz=sample_rate_hz)
            self._channel(channel).range(range_v)
            self._channel(channel).offset(offset_v)
            self.arm()
            self.driver.digitize()
            samples = self.read(channel)
        return np.asarray(samples, dtype=float)

    def restore(self) -> None:
        for command in TRACE_FORMAT:
            self.driver.write(command)
        if self._trigger is not None:
            self.configure_trigger(*self._trigger)

    @property
    def address(self) -> str:
        return str(getattr(self.driver, "address", "?"))

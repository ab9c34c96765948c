"""Recovery on GPIB/USBTMC-like sessions (issue 15, item 6): a late reply must not be read as the next answer.

On a raw socket a late reply goes away with the connection the driver reopens. On GPIB, USBTMC, HiSLIP or VXI-11
it waits in the INSTRUMENT's output queue, which outlives any reopened session: only a device clear empties it.
``LateReplyInstrument`` is a message-based VISA session of that kind, given to the driver through qcodes'
``resource=`` argument: one output queue, a device clear that empties it, and a reply that comes after the
driver's timeout.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest
from pyvisa import VisaIOError
from pyvisa.constants import StatusCode

from qslab.analysis.units import dbm_to_w
from qslab.instruments.drivers.scpi_optical_amplifier import ScpiOpticalAmplifier

IDN = "qslab,SCPI optical amplifier (simulated),0001,1.0"


class LateReplyInstrument:
    """A GPIB-style session: every query's reply lands in the instrument's output queue; a query listed in
    ``late`` is answered only after the controller's read has timed out (the reply arrives, late, before
    the next message); ``clear()`` (viClear) empties the queue, as IEEE 488.2 device clear does."""

    resource_name = "GPIB0::9::INSTR"
    visalib = SimpleNamespace(library_path="late-reply test session")
    session = None  # (qcodes closes a handle whose session is set)

    def __init__(self, answers: dict[str, str], late: set[str]):
        self.answers, self.late = dict(answers), set(late)
        self.timeout: float | None = 300.0
        self.read_termination = self.write_termination = "\n"
        self.queue: deque[str] = deque()
        self.pending: list[str] = []
        self.sent: list[str] = []
        self.clears = 0

    def write(self, message: str) -> int:
        self.queue.extend(self.pending)  # a late reply arrives while the next message goes out
        self.pending = []
        self.sent.append(message)
        for unit in message.split(";"):
            unit = unit.strip().lstrip(":")
            if unit.endswith("?") or "? " in unit:
                reply = self.answers[unit]
                if unit in self.late:
                    self.late.discard(unit)
                    self.pending.append(reply)
                else:
                    self.queue.append(reply)
        return len(message)

    def read(self) -> str:
        if not self.queue:
            self.queue.extend(self.pending)  # too late for this read
            self.pending = []
            raise VisaIOError(StatusCode.error_timeout)
        return self.queue.popleft()

    def query(self, message: str) -> str:
        self.write(message)
        return self.read()

    def clear(self) -> None:
        self.queue.clear()
        self.pending = []
        self.clears += 1
        self.sent.append("<device clear>")

    def close(self) -> None:
        pass


ANSWERS = {"*IDN?": IDN, "SYST:ERR?": '0,"No error"', "MEAS:POW:INP?": "-2.00000000E+01",
           "MEAS:POW:OUTP?": "-1.00000000E+01", "SOUR:GAIN?": "1.1394", "OUTP:STAT?": "0"}


def test_a_late_reply_on_a_gpib_session_is_cleared_not_read_as_the_next_answer():
    session = LateReplyInstrument(ANSWERS, late={"MEAS:POW:INP?"})
    amplifier = ScpiOpticalAmplifier("amp_gpib", resource=session)
    try:
        clears_at_connect = session.clears
        assert amplifier.input_power_w() == pytest.approx(float(dbm_to_w(-20.0)))
        # the late -20 dBm was dropped by a device clear, before the error queue was asked and before the retry
        assert session.clears > clears_at_connect
        assert amplifier.output_power_w() == pytest.approx(float(dbm_to_w(-10.0)))  # not the stale input reading
        assert amplifier.gain_db() == pytest.approx(1.1394)
        assert not session.queue
    finally:
        amplifier.close()


def test_the_error_queue_is_not_probed_while_the_late_reply_can_still_come():
    session = LateReplyInstrument(ANSWERS, late={"MEAS:POW:INP?"})
    amplifier = ScpiOpticalAmplifier("amp_gpib", resource=session)
    try:
        start = len(session.sent)
        amplifier.input_power_w()
        # the probe's SYST:ERR? goes out only after a device clear, and the retry after the probe was answered
        assert session.sent[start:] == ["MEAS:POW:INP?", "<device clear>", "SYST:ERR?", "MEAS:POW:INP?"]
    finally:
        amplifier.close()

"""Pieces every SCPI driver here shares: the instrument error, error-queue checking, parsers.

Why the check lives in ``write_raw`` rather than in each set_cmd: qcodes routes every Parameter
set and every ``instrument.write`` through ``write_raw``, so checking ``SYST:ERR?`` there covers
all commands, including the ones a user sends by hand.
"""

from __future__ import annotations

import re
from typing import Any

import pyvisa
from qcodes.instrument import VisaInstrument

# SCPI error-queue reply: <int>,"<text>" (instruments.md 1.2); some firmware omits the quotes.
_ERROR_REPLY = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')
# The N77xx queue is 30 deep (instruments.md 1.2); never loop forever on a broken reply.
_MAX_ERRORS_READ = 32


class InstrumentError(RuntimeError):
    """An instrument refused a command: names the instrument, the command, the code and text."""

    def __init__(self, instrument: str, command: str, errors: list[tuple[int | None, str]]):
        self.instrument = instrument
        self.command = command
        self.errors = errors
        self.code, self.text = errors[0]
        shown = "; ".join(f"{c},\"{t}\"" if c is not None else t for c, t in errors)
        super().__init__(f"{instrument}: {command!r} was refused: {shown}")

    def __str__(self) -> str:
        # qcodes appends its context ("writing ... to ...", "setting ... to ...") to args
        message, *context = self.args
        return f"{message} ({'; '.join(map(str, context))})" if context else str(message)


def parse_error_reply(reply: str) -> tuple[int, str]:
    """Split a ``SYST:ERR?`` reply into (code, text); a malformed reply is an error itself."""
    match = _ERROR_REPLY.match(reply)
    if match is None:
        raise ValueError(f"expected an error-queue reply like '-113,\"Undefined header\"', got {reply!r}")
    return int(match.group(1)), match.group(2)


def parse_bool(reply: str) -> bool:
    """SCPI booleans come back as 0/1 (sometimes +0/+1 or ON/OFF)."""
    text = reply.strip().upper()
    if text in ("ON", "OFF"):
        return text == "ON"
    return bool(int(float(text)))


def parse_int(reply: str) -> int:
    """Integers may come back in NR3 form (``+1.00000000E+000``)."""
    return int(round(float(reply)))


class ScpiErrorCheckingInstrument(VisaInstrument):
    """A VisaInstrument that reads the error queue after every write and raises on an error.

    ``error_query`` is ``SYST:ERR?``. Queries are not followed by an error check (that would
    double the traffic of every get), but a query that times out (how SCPI instruments answer an
    unknown query) is followed by one, so the user sees the instrument's reason, not a bare timeout.
    """

    error_query = "SYST:ERR?"
    default_terminator = "\n"

    def read_error_queue(self) -> list[tuple[int, str]]:
        """Pop every entry of the error queue (without raising); empty list when there is none."""
        errors = []
        for _ in range(_MAX_ERRORS_READ):
            code, text = parse_error_reply(super().ask_raw(self.error_query))
            if code == 0:
                break
            errors.append((code, text))
        return errors

    def check_errors(self, command: str = "(previous commands)") -> None:
        """Raise InstrumentError if the error queue holds anything, blaming ``command``."""
        errors = self.read_error_queue()
        if errors:
            raise InstrumentError(self.name, command, list(errors))

    def clear_errors(self) -> None:
        """``*CLS``: empty the error queue so stale errors are not blamed on our commands."""
        super().write_raw("*CLS")

    def write_raw(self, cmd: str) -> None:
        super().write_raw(cmd)
        self.check_errors(cmd)

    def ask_raw(self, cmd: str) -> str:
        try:
            return super().ask_raw(cmd)
        except pyvisa.VisaIOError as timeout:
            if timeout.error_code != pyvisa.constants.StatusCode.error_timeout:
                raise
            errors = self.read_error_queue()
            if errors:
                raise InstrumentError(self.name, cmd, list(errors)) from timeout
            raise

    def write_binary_block(self, header: str, values: Any, datatype: str) -> None:
        """``header`` followed by an IEEE 488.2 definite-length block, then an error check."""
        self.visa_log.debug(f"Writing binary block: {header}<{len(values)} x {datatype}>")
        self.visa_handle.write_binary_values(header, values, datatype=datatype)
        self.check_errors(f"{header}<block of {len(values)} values>")

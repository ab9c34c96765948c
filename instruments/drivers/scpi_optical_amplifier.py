"""A GENERIC PROFILE of a SCPI optical amplifier (EDFA/SOA class) for the client's phase-insensitive amplifier.

Generic profile, not a vendor's command set: no public remote-control protocol was found for a specific
benchtop amplifier that fits the experiment (the paper names no apparatus). The only vendor-neutral amplifier
command set, IEC 61291-6-1 (the "optical amplifier command set", OACS), is not SCPI and its text is not public;
the benchtop EDFAs whose manuals are public (e.g. the JDSU MAP-200 mOAB) address a chassis, slot and device per
command and do not fit one SCPI tree. This driver therefore speaks a small SCPI-99 tree laid out like the
Keysight lightwave trees the rest of the bench uses (SOURce for what the box emits, OUTPut for the on/off
switch, MEASure for readings; docs/INSTRUMENTS.md 1.1, 1.2, 2.2), which only the virtual bench's emulator
answers. A real amplifier needs a subclass that sets ``idn_pattern``, ``switch_on_s`` and the command strings
from its manual. The tree:

======================================  =================================================
``*IDN?``, ``*CLS``, ``SYST:ERR?``      IEEE 488.2 / SCPI-99 common and error queue
``OUTP:STAT 0|1`` / ``OUTP:STAT?``      output (pump) on/off
``SOUR:MODE GAIN|POW|CURR`` / ``?``     control loop: constant gain (AGC), constant output
                                        power (APC) or constant pump current (ACC)
``SOUR:GAIN <dB>`` / ``SOUR:GAIN?``     gain set-point, dB
``SOUR:POW <dBm>`` / ``SOUR:POW?``      output-power set-point, dBm
``SOUR:CURR <A>`` / ``SOUR:CURR?``      pump-current set-point, A
``MEAS:POW:INP?``, ``MEAS:POW:OUTP?``   measured input / output power, dBm
======================================  =================================================

Identification (issue 15, item 8): the constructor reads ``*IDN?`` FIRST and refuses, before sending anything
else, an instrument whose identity does not match ``idn_pattern``: a wrong address must not receive
``OUTP:STAT 0`` or a gain. Time (item 5): switching the output on takes ``switch_on_s`` (the pump ramps and the
loop settles); the error check after ``OUTP:STAT 1`` waits for it, with the VISA timeout lengthened by it.

Limits are not a datasheet's (there is no model): they are constructor arguments, to be filled
from the station configuration for the amplifier actually used. The defaults cover a C-band
EDFA/SOA and the paper's low gains (G = 1.3 is 1.1 dB). Every set is followed by ``SYST:ERR?``.
"""

from __future__ import annotations

import re
from typing import Any

from qcodes.validators import Bool, Numbers

from qslab.analysis.units import dbm_to_w
from qslab.instruments.drivers._scpi import InstrumentError, ScpiErrorCheckingInstrument, parse_bool, parse_float

__all__ = ["InstrumentError", "ScpiOpticalAmplifier"]

_MODES = {"gain": "GAIN", "power": "POW", "current": "CURR"}
# replies may use the long form of the character data
_SHORT_FORM = {"GAIN": "GAIN", "POW": "POW", "POWER": "POW", "CURR": "CURR", "CURRENT": "CURR"}


_READING_LIMIT_DBM = 1000.0  # beyond +/- this a power reading is junk on the line, not light (and 10**x overflows)


def _reading_w(reply: str) -> float:
    """A measured power, replied in dBm, in W. A reply no power can be (not a number, or beyond _READING_LIMIT_DBM) is
    a ValueError, which the driver takes as an unreadable reply (retried, then an InstrumentFault), not inf or NaN W."""
    dbm = float(reply)
    if not -_READING_LIMIT_DBM < dbm < _READING_LIMIT_DBM:
        raise ValueError(f"expected a power reading in dBm within +/-{_READING_LIMIT_DBM:g}, got {reply.strip()!r}")
    return float(dbm_to_w(dbm))


def _mode_reply(reply: str) -> str:
    word = reply.strip().upper()
    if word not in _SHORT_FORM:
        raise ValueError(f"expected GAIN, POW or CURR for SOUR:MODE?, got {reply!r}")
    return _SHORT_FORM[word]


class ScpiOpticalAmplifier(ScpiErrorCheckingInstrument):
    """Gain or output-power controlled optical amplifier: the generic SCPI-99 profile (module docstring)."""

    #: ``*IDN?`` (manufacturer,model,...) this profile speaks for: only the bench's emulator answers it
    idn_pattern = r"qslab,SCPI optical amplifier\b[^,]*,.*"
    #: output off -> on until the gain has settled, s (the profile's figure; a subclass gives its manual's)
    switch_on_s = 1.0

    def __init__(self, name: str, address: str | None = None, *,
                 gain_limits_db: tuple[float, float] = (0.0, 30.0),
                 output_power_limits_dbm: tuple[float, float] = (-10.0, 20.0),
                 pump_current_limits_a: tuple[float, float] = (0.0, 1.0),
                 **kwargs: Any):
        super().__init__(name, address, **kwargs)
        self._refuse_other_instruments()
        self.clear_errors()
        self.output_enabled = self.add_parameter(
            "output_enabled", label="output (pump) on", get_cmd="OUTP:STAT?", set_cmd=self._set_output,
            get_parser=parse_bool, vals=Bool())
        self.mode = self.add_parameter(
            "mode", label="control mode", get_cmd="SOUR:MODE?", set_cmd="SOUR:MODE {}",
            get_parser=_mode_reply, val_mapping=_MODES,
            docstring="gain: hold gain_db; power: hold output_power_setpoint_dbm; current: hold pump_current_a.")
        self.gain_db = self.add_parameter(
            "gain_db", label="gain set-point", unit="dB", get_cmd="SOUR:GAIN?", set_cmd="SOUR:GAIN {:.4f}",
            get_parser=parse_float, vals=Numbers(*gain_limits_db))
        self.output_power_setpoint_dbm = self.add_parameter(
            "output_power_setpoint_dbm", label="output power set-point", unit="dBm",
            get_cmd="SOUR:POW?", set_cmd="SOUR:POW {:.4f}", get_parser=parse_float,
            vals=Numbers(*output_power_limits_dbm))
        self.pump_current_a = self.add_parameter(
            "pump_current_a", label="pump current set-point", unit="A", get_cmd="SOUR:CURR?",
            set_cmd="SOUR:CURR {:.6f}", get_parser=parse_float, vals=Numbers(*pump_current_limits_a))
        self.input_power_w = self.add_parameter(
            "input_power_w", label="measured input power", unit="W", get_cmd="MEAS:POW:INP?",
            get_parser=_reading_w, set_cmd=False)
        self.output_power_w = self.add_parameter(
            "output_power_w", label="measured output power", unit="W", get_cmd="MEAS:POW:OUTP?",
            get_parser=_reading_w, set_cmd=False)
        self.connect_message()

    def _refuse_other_instruments(self) -> None:
        """``*IDN?`` before any other command: another instrument at this address is closed and refused."""
        reply = self.ask("*IDN?").strip()
        if re.fullmatch(self.idn_pattern, reply) is None:
            name, address = self.name, self.fault_address
            self.close()
            raise InstrumentError(name, "*IDN?", [(None, (
                f"{address} identifies as {reply!r}, not as the generic SCPI optical amplifier profile "
                f"(expected *IDN? matching {self.idn_pattern!r}); a wrong address, or an amplifier that needs "
                "its own subclass. Nothing else was sent"))])

    def _set_output(self, on: bool) -> None:
        """``OUTP:STAT 0|1``; switching on, the error check waits ``switch_on_s`` for the pump and gain loop."""
        with self.timeout_for_work(self.switch_on_s if on else 0.0):
            self.write(f"OUTP:STAT {int(on)}")

    def safe_state(self) -> None:
        """Output off (house rule: a failure leaves light sources off)."""
        self.output_enabled(False)

"""Thorlabs MBX modulator bias controller (MZM bias loop + VOA) over a serial port, not VISA.

Protocol: Thorlabs *Remote Control User Guide for the MX / MBX / TLX1 / TLX2 Series* (firmware
>= V1.9.4) as summarised in docs/INSTRUMENTS.md 5.1, with the MZM command names of PyMeasure's driver:

* ASCII lines. The device accepts LF, CR LF, CR or LF CR after a command; we send LF. Replies end
  in LF per the manual (PyMeasure reads up to CR), so a reply line ends at CR *or* LF and empty
  lines are skipped: CR, LF, CR LF and LF CR replies all read the same.
* No echo and no prompt are documented; the driver expects neither.
* Setters are ``NODE:LEAF: <value>`` (a colon and a space before the value) and answer ``1``;
  every refusal is answered ``Err: <text>`` (e.g. ``Err: Data out of range``). Both are checked:
  a refusal or any reply other than ``1`` raises :class:`InstrumentError`.
* Only the exact short or exact long form of a node is accepted; the driver sends long forms.

Transport: ``serial.serial_for_url(address, baudrate=115200, timeout=...)``, so ``COM3``,
``/dev/ttyUSB0`` and the virtual bench's ``socket://127.0.0.1:<port>`` all work. A test or a
bench may instead hand over an already-open port object (``port=``).

Faults (``_scpi`` module docstring): queries that get no complete reply, lose the connection
(pyserial's "socket disconnected": the port is closed and reopened) or come back unreadable are
retried up to ``QUERY_ATTEMPTS`` times, then raise :class:`InstrumentFault`; a set is never
repeated. Stale bytes need no reconnect: every exchange starts by emptying the input buffer.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import serial
from serial.urlhandler import protocol_socket
from qcodes.instrument import Instrument, InstrumentChannel
from qcodes.validators import Bool, Numbers

from qslab.instruments.drivers._scpi import (InstrumentError, InstrumentFault, QueryRetries, RetriedGets, _Retryable,
                                             parse_bool, parse_float, parse_int, socket_closed)

__all__ = ["InstrumentError", "InstrumentFault", "ThorlabsMBX"]

# MZM:MODE codes (docs/INSTRUMENTS.md 5.1).
BIAS_MODES = {
    "off": 0,
    "peak": 1,
    "null": 2,
    "quadrature+": 3,
    "quadrature-": 4,
    "hold_quadrature+": 5,
    "hold_quadrature-": 6,
    "manual": 7,
    "power+": 8,
    "power-": 9,
}
VOA_MODES = {"attenuation": 0, "power": 1}
# Limits (docs/INSTRUMENTS.md 5.1): manual bias -10..+10 V in integer mV; ratio set-point 2.5..100
# sent as ratio x 100; VOA attenuation 1.0..20.0 dB (manual; PyMeasure allows 0.5); VOA output
# power 0.01..100 mW.
MANUAL_BIAS_LIMITS_V = (-10.0, 10.0)
RATIO_SETPOINT_LIMITS = (2.5, 100.0)
VOA_ATTENUATION_LIMITS_DB = (1.0, 20.0)
VOA_OUTPUT_POWER_LIMITS_W = (0.01e-3, 100e-3)


def _mw_to_w(reply: str) -> float:
    return parse_float(reply) * 1e-3


class MBXModulatorBias(RetriedGets, InstrumentChannel):
    """The MZM bias loop: mode, set-points, lock state and the measured bias."""

    def __init__(self, parent: ThorlabsMBX, name: str):
        super().__init__(parent, name)
        self.bias_mode = self.add_parameter(
            "bias_mode", label="bias mode", get_cmd="MZM:MODE?", set_cmd="MZM:MODE: {}",
            get_parser=parse_int, val_mapping=BIAS_MODES,
            docstring="quadrature+/- and null/peak lock automatically; hold_* keep the last "
                      "quadrature bias; manual applies manual_bias_v; power+/- hold the ratio set-point.")
        self.manual_bias_v = self.add_parameter(
            "manual_bias_v", label="manual bias voltage", unit="V", get_cmd="MZM:HOLD:VOLTAGE?",
            set_cmd="MZM:HOLD:VOLTAGE: {:d}", get_parser=lambda mv: parse_float(mv) / 1000,
            set_parser=lambda volts: round(volts * 1000), vals=Numbers(*MANUAL_BIAS_LIMITS_V),
            docstring="Sent in integer millivolts, so it is quantised to 1 mV.")
        self.ratio_setpoint = self.add_parameter(
            "ratio_setpoint", label="power-ratio set-point", get_cmd="MZM:HOLD:RATIO?",
            set_cmd="MZM:HOLD:RATIO: {:d}", get_parser=lambda raw: parse_float(raw) / 100,
            set_parser=lambda ratio: round(ratio * 100), vals=Numbers(*RATIO_SETPOINT_LIMITS),
            docstring="Input-to-output power ratio held in the power+/- modes (sent as ratio x 100).")
        self.bias_v = self.add_parameter(
            "bias_v", label="measured bias voltage", unit="V", get_cmd="MZM:VOLTAGE?",
            get_parser=parse_float, set_cmd=False)
        self.tap_power_w = self.add_parameter(
            "tap_power_w", label="MZM output tap power", unit="W", get_cmd="MZM:TAP:MW?",
            get_parser=_mw_to_w, set_cmd=False)
        self.is_locked = self.add_parameter(
            "is_locked", label="locked at the set-point", get_cmd="MZM:SETPOINT?",
            get_parser=parse_bool, set_cmd=False)
        self.is_calibrating = self.add_parameter(
            "is_calibrating", label="calibration sweep running", get_cmd="MZM:CALIBRATING?",
            get_parser=parse_bool, set_cmd=False)

    def recalibrate(self) -> None:
        """``MZM:RESET``: sweep the bias again to find the transfer curve (answers 1)."""
        self.write("MZM:RESET")


class MBXAttenuator(RetriedGets, InstrumentChannel):
    """The built-in VOA: on/off, constant-attenuation or constant-power mode, set-points, readings."""

    def __init__(self, parent: ThorlabsMBX, name: str):
        super().__init__(parent, name)
        self.enabled = self.add_parameter(
            "enabled", label="VOA on", get_cmd="VOA:POWER?", set_cmd="VOA:POWER: {}",
            get_parser=parse_bool, set_parser=int, vals=Bool())
        self.mode = self.add_parameter(
            "mode", label="VOA mode", get_cmd="VOA:MODE?", set_cmd="VOA:MODE: {}",
            get_parser=parse_int, val_mapping=VOA_MODES)
        self.attenuation_db = self.add_parameter(
            "attenuation_db", label="attenuation set-point", unit="dB", get_cmd="VOA:ATTEN?",
            set_cmd="VOA:ATTEN: {:g}", get_parser=parse_float, vals=Numbers(*VOA_ATTENUATION_LIMITS_DB))
        self.output_power_w = self.add_parameter(
            "output_power_w", label="output power set-point", unit="W", get_cmd="VOA:OUTPUT:MW?",
            set_cmd="VOA:OUTPUT:MW: {:g}", get_parser=_mw_to_w, set_parser=lambda watts: watts * 1e3,
            vals=Numbers(*VOA_OUTPUT_POWER_LIMITS_W), docstring="Sent in mW.")
        self.measured_attenuation_db = self.add_parameter(
            "measured_attenuation_db", label="measured attenuation", unit="dB",
            get_cmd="VOA:MEASURED?", get_parser=parse_float, set_cmd=False)
        self.attenuation_error_db = self.add_parameter(
            "attenuation_error_db", label="set-point minus measured", unit="dB",
            get_cmd="VOA:ERROR?", get_parser=parse_float, set_cmd=False)
        self.is_settled = self.add_parameter(
            "is_settled", label="within 0.1 dB of the set-point", get_cmd="VOA:SETPOINT?",
            get_parser=parse_bool, set_cmd=False)
        self.tap_power_w = self.add_parameter(
            "tap_power_w", label="VOA output tap power", unit="W", get_cmd="VOA:TAP:MW?",
            get_parser=_mw_to_w, set_cmd=False)


class ThorlabsMBX(RetriedGets, QueryRetries, Instrument):
    """Thorlabs MBX: ``mbx.mzm`` (bias loop) and ``mbx.voa`` (attenuator)."""

    default_baudrate = 115200
    default_timeout_s = 1.0
    write_termination = "\n"

    def __init__(self, name: str, address: str | None = None, *, port: Any = None,
                 baudrate: int = default_baudrate, timeout_s: float = default_timeout_s, **kwargs: Any):
        if (address is None) == (port is None):
            raise TypeError("give exactly one of address (a pyserial URL or port name) and port")
        super().__init__(name, **kwargs)
        self.address = address if address is not None else str(getattr(port, "port", None) or type(port).__name__)
        self._port = port if port is not None else serial.serial_for_url(
            address, baudrate=baudrate, timeout=timeout_s)
        self.mzm = self.add_submodule("mzm", MBXModulatorBias(self, "mzm"))
        self.voa = self.add_submodule("voa", MBXAttenuator(self, "voa"))
        self.connect_message()

    @property
    def fault_address(self) -> str:
        return self.address

    @property
    def timeout_s(self) -> float:
        """How long a reply may take, s: the port's read timeout. Settable, as a VISA driver's ``timeout`` (the port
        keeps it when it is reopened)."""
        return self._port.timeout

    @timeout_s.setter
    def timeout_s(self, seconds: float) -> None:
        self._port.timeout = seconds

    def write_raw(self, cmd: str) -> None:
        """A set command: the device answers ``1`` when it accepted it. Never repeated."""
        try:
            reply = self._exchange(cmd)
        except (TimeoutError, serial.SerialException, OSError) as error:
            raise InstrumentFault(self.name, self.address, cmd, f"{_describe(error)}; it may or may not have "
                                  "taken effect", 1, repeatable=False) from error
        if reply != "1":
            raise InstrumentError(self.name, cmd, [(None, f"unexpected reply {reply!r}, expected '1'")])

    def _ask_once(self, cmd: str) -> str:
        try:
            reply = self._exchange(cmd)
        except TimeoutError as error:
            raise _Retryable(cmd, str(error)) from error
        except (serial.SerialException, OSError) as error:  # pyserial: "socket disconnected", "write failed"
            raise _Retryable(cmd, _describe(error), reconnect=True) from error
        self._last_reply = (cmd, reply)
        return reply

    def _recover(self, failure: _Retryable) -> None:
        if failure.reconnect:
            self._reconnect()

    def reconnect(self) -> None:
        """Close and reopen the port (pyserial keeps its URL and settings)."""
        self.log.warning(f"reopening {self.address}")
        self._port.close()
        self._port.open()

    def _reconnect(self) -> None:
        try:
            self.reconnect()
        except (serial.SerialException, OSError, AttributeError) as error:
            raise _Retryable("", f"cannot reopen the port ({_describe(error)})", reconnect=True) from error

    def _reconnect_if_dropped(self) -> None:
        """A socket:// port whose peer closed it is reopened before anything is sent."""
        if _socket_port_closed(self._port):
            self._reconnect()

    def close(self) -> None:
        port = getattr(self, "_port", None)
        if port is not None:
            _close_port(port)
        super().close()

    def _exchange(self, cmd: str) -> str:
        try:
            self._reconnect_if_dropped()
        except _Retryable as failure:
            raise serial.SerialException(failure.what) from failure
        # why reset first: a half-consumed terminator pair (the LF of CR LF) or a late reply from
        # a timed-out command must not be read as the answer to this one
        self._port.reset_input_buffer()
        self.log.debug(f"Writing: {cmd!r}")
        self._port.write((cmd + self.write_termination).encode("ascii"))
        reply = self._read_line(cmd)
        self.log.debug(f"Reply: {reply!r}")
        if reply.startswith("Err:"):
            raise InstrumentError(self.name, cmd, [(None, reply)])
        return reply

    def _read_line(self, cmd: str) -> str:
        line = bytearray()
        while True:
            byte = self._port.read(1)
            if not byte:
                raise TimeoutError(f"no complete reply within {self.timeout_s:g} s (received {bytes(line)!r})")
            if byte in (b"\r", b"\n"):
                if line:
                    return line.decode("ascii", errors="replace").strip()
                continue
            line += byte


def _socket_port_closed(port: Any) -> bool:
    """True when ``port`` is pyserial's ``socket://`` port and its peer closed the connection. Read on a
    duplicate of the port's descriptor (``fileno()``): pyserial keeps its socket private."""
    if not isinstance(port, protocol_socket.Serial) or not port.is_open:
        return False
    try:
        sock = socket.fromfd(port.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, serial.SerialException):
        return True
    with sock:
        return socket_closed(sock)


def _close_port(port: Any) -> None:
    """Close the port for good. pyserial's ``socket://`` close shuts the connection down and closes it, marks the
    port closed, then sleeps 0.3 s "in case of quick reconnects" to a remote serial server. Nothing reconnects to this
    port (a reconnect goes through ``reconnect``, which keeps that pause), and the pause made every station's exit
    0.3 s longer: the close runs on a thread of its own and we wait until the port reads closed (public
    ``is_open``), not through the pause. (Should a pyserial version mark it closed only after its pause, this waits
    the pause, as before.) Any other port (a real serial port has no such pause) is closed here."""
    if not isinstance(port, protocol_socket.Serial) or not port.is_open:
        port.close()
        return
    closing = threading.Thread(target=port.close, name=f"closing {port.port}", daemon=True)
    closing.start()
    while port.is_open and closing.is_alive():
        closing.join(0.001)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return str(error)
    return f"connection closed ({error})" if "disconnect" in str(error) else f"connection failed ({error})"

"""Thorlabs MBX driver: byte-exact protocol tests in the PyMeasure ``expected_protocol`` style.

Every exchange runs over the driver's real transport, pyserial's ``socket://`` URL, against the shared
transcript server (tests/drivers/expected_protocol.py): each pair is the exact bytes the driver must write
and the exact bytes the instrument answers. Command strings, value formats and ranges are those of the
Thorlabs *Remote Control User Guide for the MX / MBX / TLX1 / TLX2 Series* (TTN116413-D04, Rev. E):
terminators and replies p. 4 (section 2), the VOA commands pp. 15-16 (section 2.6); the MZM commands
(section 2.4) as PyMeasure's ``ThorlabsMBXSeries`` and its tests send them. A last test checks that every
parameter of the driver appears in a transcript here.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from expected_protocol import expected_protocol as _transcript
from serial.urlhandler import protocol_socket

from qslab.instruments.drivers.thorlabs_mbx import InstrumentError, InstrumentFault, ThorlabsMBX

IDN = (b"*IDN?\n", b"THORLABS,MBX,M00000001,1.9.4\n")


@contextlib.contextmanager
def expected_protocol(script: list[tuple[bytes, bytes]], timeout_s: float = 1.0) -> Iterator[ThorlabsMBX]:
    """The driver on a pyserial socket:// port to a server playing ``script`` after the connect's ``*IDN?``."""
    with _transcript(lambda address: ThorlabsMBX("mbx", address, timeout_s=timeout_s), [IDN, *script],
                     transport="serial") as mbx:
        yield mbx


def test_idn():
    with expected_protocol([IDN]) as mbx:
        assert mbx.get_idn() == {"vendor": "THORLABS", "model": "MBX", "serial": "M00000001",
                                 "firmware": "1.9.4"}


@pytest.mark.parametrize(("mode", "code"), [("quadrature+", 3), ("quadrature-", 4), ("null", 2),
                                             ("peak", 1), ("manual", 7)])
def test_bias_mode_setter(mode, code):
    with expected_protocol([(f"MZM:MODE: {code}\n".encode(), b"1\n")]) as mbx:
        mbx.mzm.bias_mode(mode)


def test_bias_mode_getter():
    with expected_protocol([(b"MZM:MODE?\n", b"5\n")]) as mbx:
        assert mbx.mzm.bias_mode() == "hold_quadrature+"


def test_manual_bias_voltage_is_sent_in_millivolts():
    with expected_protocol([(b"MZM:HOLD:VOLTAGE: -2501\n", b"1\n"),
                            (b"MZM:HOLD:VOLTAGE?\n", b"-2501\n")]) as mbx:
        mbx.mzm.manual_bias_v(-2.5008)
        assert mbx.mzm.manual_bias_v() == pytest.approx(-2.501)


def test_ratio_setpoint_is_sent_times_100():
    with expected_protocol([(b"MZM:HOLD:RATIO: 500\n", b"1\n"), (b"MZM:HOLD:RATIO?\n", b"500\n")]) as mbx:
        mbx.mzm.ratio_setpoint(5.004)
        assert mbx.mzm.ratio_setpoint() == 5.0


def test_mzm_readings():
    with expected_protocol([(b"MZM:VOLTAGE?\n", b"5.42\n"), (b"MZM:TAP:MW?\n", b"1.23\n"),
                            (b"MZM:SETPOINT?\n", b"1\n"), (b"MZM:CALIBRATING?\n", b"0\n")]) as mbx:
        assert mbx.mzm.bias_v() == pytest.approx(5.42)
        assert mbx.mzm.tap_power_w() == pytest.approx(1.23e-3)
        assert mbx.mzm.is_locked() is True
        assert mbx.mzm.is_calibrating() is False


def test_recalibrate():
    with expected_protocol([(b"MZM:RESET\n", b"1\n")]) as mbx:
        mbx.mzm.recalibrate()


def test_voa_settings():
    with expected_protocol([
        (b"VOA:POWER: 1\n", b"1\n"),
        (b"VOA:MODE: 0\n", b"1\n"),
        (b"VOA:ATTEN: 5.5\n", b"1\n"),
        (b"VOA:OUTPUT:MW: 0.01\n", b"1\n"),
        (b"VOA:MODE?\n", b"1\n"),
        (b"VOA:ATTEN?\n", b"5.5\n"),
        (b"VOA:OUTPUT:MW?\n", b"2.5\n"),
        (b"VOA:POWER?\n", b"0\n"),
    ]) as mbx:
        mbx.voa.enabled(True)
        mbx.voa.mode("attenuation")
        mbx.voa.attenuation_db(5.5)
        mbx.voa.output_power_w(1e-5)
        assert mbx.voa.mode() == "power"
        assert mbx.voa.attenuation_db() == 5.5
        assert mbx.voa.output_power_w() == pytest.approx(2.5e-3)
        assert mbx.voa.enabled() is False


def test_voa_readings():
    with expected_protocol([(b"VOA:MEASURED?\n", b"5.1\n"), (b"VOA:ERROR?\n", b"0.1\n"),
                            (b"VOA:SETPOINT?\n", b"0\n"), (b"VOA:TAP:MW?\n", b"0.5\n")]) as mbx:
        assert mbx.voa.measured_attenuation_db() == pytest.approx(5.1)
        assert mbx.voa.attenuation_error_db() == pytest.approx(0.1)
        assert mbx.voa.is_settled() is False
        assert mbx.voa.tap_power_w() == pytest.approx(0.5e-3)


def test_rejected_values_are_not_sent():
    with expected_protocol([]) as mbx:  # any write would fail the script
        for parameter, value in [(mbx.voa.attenuation_db, 0.5), (mbx.voa.attenuation_db, 20.5),
                                 (mbx.voa.output_power_w, 0.2), (mbx.mzm.manual_bias_v, 10.5),
                                 (mbx.mzm.ratio_setpoint, 2.0), (mbx.mzm.bias_mode, "quad"),
                                 (mbx.voa.mode, "current")]:
            with pytest.raises(ValueError):
                parameter(value)


def test_device_refusal_raises_with_its_text():
    with expected_protocol([(b"VOA:ATTEN: 12\n", b"Err: Data out of range\n")]) as mbx:
        with pytest.raises(InstrumentError) as refused:
            mbx.voa.attenuation_db(12)
    assert refused.value.text == "Err: Data out of range"
    assert refused.value.command == "VOA:ATTEN: 12"
    assert "mbx: 'VOA:ATTEN: 12' was refused: Err: Data out of range" in str(refused.value)


def test_query_refusal_raises():
    with expected_protocol([(b"MZM:TAP:MW?\n", b"Err: Feature not present\n")]) as mbx:
        with pytest.raises(InstrumentError, match="Feature not present"):
            mbx.mzm.tap_power_w()


def test_unexpected_set_reply_raises():
    with expected_protocol([(b"MZM:MODE: 2\n", b"0\n")]) as mbx:
        with pytest.raises(InstrumentError, match="expected '1'"):
            mbx.mzm.bias_mode("null")


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n", b"\n\r"])
def test_any_reply_terminator_reads_the_same(ending):
    """Manual: replies end in LF; PyMeasure reads to CR. Both (and pairs) must work."""
    with expected_protocol([(b"MZM:VOLTAGE?\n", b"1.5" + ending), (b"MZM:SETPOINT?\n", b"1" + ending)]) as mbx:
        assert mbx.mzm.bias_v() == 1.5
        assert mbx.mzm.is_locked() is True


def test_missing_reply_times_out_clearly():
    """A query is asked three times in all (retry policy), then one InstrumentFault says what came."""
    with expected_protocol([(b"MZM:VOLTAGE?\n", b"1.5")] * 3, timeout_s=0.2) as mbx:  # no terminator ever arrives
        with pytest.raises(InstrumentFault, match=r"MZM:VOLTAGE\?.*after 3 attempts.*b'1.5'") as fault:
            mbx.mzm.bias_v()
    assert fault.value.attempts == 3 and "left as is" in str(fault.value)


def test_the_timeout_can_be_changed_after_connecting():
    """timeout_s sets the port's read timeout, as a VISA driver's ``timeout`` does (the port keeps it when reopened)."""
    ports = []

    def on_own_port(address: str) -> ThorlabsMBX:
        ports.append(serial.serial_for_url(address, baudrate=ThorlabsMBX.default_baudrate, timeout=1.0))
        return ThorlabsMBX("mbx", port=ports[0])

    with _transcript(on_own_port, [IDN, *[(b"MZM:VOLTAGE?\n", b"1.5")] * 3], transport="serial") as mbx:
        assert mbx.timeout_s == 1.0
        mbx.timeout_s = 0.2
        assert ports[0].timeout == 0.2  # what the reads wait
        with pytest.raises(InstrumentFault, match=r"no complete reply within 0.2 s"):  # no terminator ever arrives
            mbx.mzm.bias_v()
        assert ports[0].timeout == 0.2


def test_address_or_port_but_not_both():
    with pytest.raises(TypeError):
        ThorlabsMBX("mbx")
    with pytest.raises(TypeError):
        ThorlabsMBX("mbx", "loop://", port=object())


# Each parameter's get and set commands as the transcripts above send them (a new parameter without a
# transcript fails the test below). None: the parameter has no such side (read-only).
COMMANDS = {
    "mzm.bias_mode": (b"MZM:MODE?\n", b"MZM:MODE: 2\n"),
    "mzm.manual_bias_v": (b"MZM:HOLD:VOLTAGE?\n", b"MZM:HOLD:VOLTAGE: -2501\n"),
    "mzm.ratio_setpoint": (b"MZM:HOLD:RATIO?\n", b"MZM:HOLD:RATIO: 500\n"),
    "mzm.bias_v": (b"MZM:VOLTAGE?\n", None),
    "mzm.tap_power_w": (b"MZM:TAP:MW?\n", None),
    "mzm.is_locked": (b"MZM:SETPOINT?\n", None),
    "mzm.is_calibrating": (b"MZM:CALIBRATING?\n", None),
    "voa.enabled": (b"VOA:POWER?\n", b"VOA:POWER: 1\n"),
    "voa.mode": (b"VOA:MODE?\n", b"VOA:MODE: 0\n"),
    "voa.attenuation_db": (b"VOA:ATTEN?\n", b"VOA:ATTEN: 5.5\n"),
    "voa.output_power_w": (b"VOA:OUTPUT:MW?\n", b"VOA:OUTPUT:MW: 0.01\n"),
    "voa.measured_attenuation_db": (b"VOA:MEASURED?\n", None),
    "voa.attenuation_error_db": (b"VOA:ERROR?\n", None),
    "voa.is_settled": (b"VOA:SETPOINT?\n", None),
    "voa.tap_power_w": (b"VOA:TAP:MW?\n", None),
}


def test_every_parameter_has_a_byte_exact_transcript():
    """Every parameter of the driver is in COMMANDS, and each of its commands appears, as the exact bytes, in a
    transcript of this module above COMMANDS."""
    with expected_protocol([]) as mbx:
        names = {f"{channel}.{name}" for channel in ("mzm", "voa")
                 for name in getattr(mbx, channel).parameters}
    assert names == set(COMMANDS), names ^ set(COMMANDS)
    transcripts = Path(__file__).read_text().split("COMMANDS = {")[0]

    def literal(command: bytes) -> str:   # how the transcripts spell it: b"MZM:MODE?\n"
        return 'b"' + command.decode().replace("\n", "\\n") + '"'

    missing = [(name, command) for name, pair in COMMANDS.items() for command in pair
               if command is not None and literal(command) not in transcripts]
    assert not missing, missing
    assert literal(b"MZM:RESET\n") in transcripts   # the one method that is not a parameter


class _PausingSocketPort(protocol_socket.Serial):
    """pyserial's socket:// port whose close, after pyserial's own (which shuts the connection, marks the port closed,
    then pauses 0.3 s), waits until the test lets it go: a stand-in for a pause as long as the test needs."""

    def __init__(self, *args, **kwargs):
        self.release = threading.Event()
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        super().close()
        self.release.wait(60)


def test_closing_does_not_wait_for_pyserials_pause_after_the_socket_is_closed():
    """The driver returns from close once the port reads closed and its connection is shut down, without sitting
    through pyserial's pause "for quick reconnects" (0.3 s at every station's exit), which nothing reconnects after."""
    ports = []

    def driver(address: str) -> ThorlabsMBX:
        ports.append(_PausingSocketPort(address, baudrate=115200, timeout=1.0))
        return ThorlabsMBX("mbx", port=ports[0])

    with _transcript(driver, [IDN], transport="serial"):
        pass  # leaving the block closes the driver (and the transcript server checks the exchange)
    port = ports[0]
    closing = [thread for thread in threading.enumerate() if thread.name == f"closing {port.port}"]
    assert not port.is_open and len(closing) == 1 and closing[0].is_alive()  # returned while the close still waits
    port.release.set()
    closing[0].join(60)
    assert not closing[0].is_alive()

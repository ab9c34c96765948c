"""Thorlabs MBX driver: byte-exact protocol tests in the PyMeasure ``expected_protocol`` style.

A scripted in-memory port asserts every byte the driver writes and feeds back exact reply bytes;
one test goes through pyserial's ``socket://`` URL, the virtual bench's transport.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from qslab.instruments.drivers.thorlabs_mbx import InstrumentError, InstrumentFault, ThorlabsMBX

IDN = (b"*IDN?\n", b"THORLABS,MBX,M00000001,1.9.4\n")


class ScriptedPort:
    """Stands in for a pyserial port: each write must equal the next scripted command, and queues
    that command's scripted reply for reading; nothing arrives unasked."""

    def __init__(self, script: list[tuple[bytes, bytes]]):
        self.script = list(script)
        self.incoming = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        assert self.script, f"unexpected write {data!r}: the script is finished"
        expected, reply = self.script.pop(0)
        assert data == expected
        self.incoming += reply
        return len(data)

    def read(self, size: int = 1) -> bytes:
        data = bytes(self.incoming[:size])
        del self.incoming[:size]
        return data  # empty = pyserial's timeout

    def reset_input_buffer(self) -> None:
        self.incoming.clear()

    def close(self) -> None:
        self.closed = True


@contextlib.contextmanager
def expected_protocol(script: list[tuple[bytes, bytes]]) -> Iterator[ThorlabsMBX]:
    """The driver on a scripted port; fails if any scripted exchange is left unused."""
    port = ScriptedPort([IDN, *script])
    mbx = ThorlabsMBX("mbx", port=port)
    try:
        yield mbx
        assert port.script == [], f"exchanges never made: {port.script}"
    finally:
        mbx.close()
    assert port.closed


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
    with expected_protocol([(b"MZM:VOLTAGE?\n", b"1.5")] * 3) as mbx:  # no terminator ever arrives
        with pytest.raises(InstrumentFault, match=r"MZM:VOLTAGE\?.*after 3 attempts.*b'1.5'") as fault:
            mbx.mzm.bias_v()
    assert fault.value.attempts == 3 and "left as is" in str(fault.value)


def test_address_or_port_but_not_both():
    with pytest.raises(TypeError):
        ThorlabsMBX("mbx")
    with pytest.raises(TypeError):
        ThorlabsMBX("mbx", "loop://", port=ScriptedPort([]))


def test_over_pyserial_socket_url():
    """``socket://127.0.0.1:<port>``: the serial-over-TCP form the virtual bench will use."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    replies = {b"*IDN?": b"THORLABS,MBX,M00000002,1.9.4\n", b"VOA:ATTEN: 3": b"1\n", b"VOA:ATTEN?": b"3\n"}

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            buffer = b""
            while data := connection.recv(1024):
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    received.append(line)
                    connection.sendall(replies[line])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    mbx = ThorlabsMBX("mbx_socket", f"socket://127.0.0.1:{server.getsockname()[1]}", timeout_s=2.0)
    try:
        assert mbx.get_idn()["model"] == "MBX"
        mbx.voa.attenuation_db(3)
        assert mbx.voa.attenuation_db() == 3.0
    finally:
        mbx.close()
        server.close()
        thread.join(timeout=2)
    assert received == [b"*IDN?", b"*IDN?", b"VOA:ATTEN: 3", b"VOA:ATTEN?"]

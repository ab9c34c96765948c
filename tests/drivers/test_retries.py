"""The retry policy of the drivers (instruments/drivers/README.md, "Retries"), byte by byte.

A small loopback server that accepts reconnects plays a misbehaving instrument: silent, garbled,
or hanging up mid-reply, once or for good. The real pyvisa-py (ScpiOpticalAmplifier) and pyserial
(ThorlabsMBX) transports meet it; the server counts what was sent, so "exactly three attempts" and
"the write was sent once" are checked where they happen.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qslab.instruments.drivers import _scpi
from qslab.instruments.drivers._scpi import InstrumentError, InstrumentFault
from qslab.instruments.drivers.scpi_optical_amplifier import ScpiOpticalAmplifier
from qslab.instruments.drivers.thorlabs_mbx import ThorlabsMBX

# The drivers' timeout here: every silence waits it out, and a reply that does come must never be taken for silence on
# a loaded host (at 0.3 s, with two busy processes beside three test workers, a retry's reply came later, was taken
# for silence, and the retry after it opened a third connection).
TIMEOUT_S = 1.0
SILENT = None  # no reply at all


@dataclass(frozen=True)
class Drop:
    """Send ``partial`` (no terminator), then close the connection."""

    partial: str = ""


class FlakyInstrument:
    """Loopback server, one thread per connection, reconnects welcome.

    ``script[message]``: behaviours used once each, in order (a reply string, SILENT, or Drop);
    then ``defaults[message]`` (a reply, or SILENT when missing). ``sent`` lists (connection, message).
    ``answer(message, behaviour)``, when given, may replace each behaviour before it is played.
    """

    def __init__(self, defaults: dict[str, str], script: dict[str, list] | None = None,
                 answer: Callable[[str, object], object] | None = None):
        self.defaults = defaults
        self.answer = answer
        self.script = {key: list(value) for key, value in (script or {}).items()}
        self.sent: list[tuple[int, str]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.visa_address = f"TCPIP::127.0.0.1::{self.port}::SOCKET"
        self.serial_address = f"socket://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, message: str) -> int:
        return sum(1 for _, sent in self.sent if sent == message)

    def _behaviour(self, message: str):
        with self._lock:
            queued = self.script.get(message)
            behaviour = queued.pop(0) if queued else self.defaults.get(message, SILENT)
        return behaviour if self.answer is None else self.answer(message, behaviour)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.append(connection)
            threading.Thread(target=self._serve, args=(connection, number), daemon=True).start()

    def _serve(self, connection: socket.socket, number: int) -> None:
        buffer = b""
        with connection:
            try:
                while data := connection.recv(4096):
                    buffer += data
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        message = line.strip(b"\r").decode("ascii", errors="replace")
                        with self._lock:
                            self.sent.append((number, message))
                        behaviour = self._behaviour(message)
                        if isinstance(behaviour, Drop):
                            connection.sendall(behaviour.partial.encode())
                            connection.shutdown(socket.SHUT_WR)
                            return
                        if isinstance(behaviour, str):
                            behaviour = behaviour.encode() + b"\n"
                        if behaviour is not SILENT:
                            connection.sendall(behaviour)
            except OSError:
                return

    def close(self) -> None:
        self._server.close()
        for connection in self._open:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


AMPLIFIER = {"*IDN?": "qslab,SCPI optical amplifier,1,1", "SYST:ERR?": '0,"No error"', "SOUR:GAIN?": "1.5",
             "SOUR:MODE?": "GAIN", "OUTP:STAT?": "0", "MEAS:POW:INP?": "-10.0"}
MBX = {"*IDN?": "THORLABS,MBX,M00000001,1.9.4", "MZM:VOLTAGE?": "1.25", "MZM:MODE?": "3", "MZM:MODE: 3": "1",
       "VOA:ATTEN?": "5", "VOA:ATTEN: 6": "1"}


@pytest.fixture
def flaky() -> Iterator[Callable[..., FlakyInstrument]]:
    servers: list[FlakyInstrument] = []

    def make(defaults: dict[str, str], **script: list) -> FlakyInstrument:
        servers.append(FlakyInstrument(defaults, script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def amplifier_on(server: FlakyInstrument) -> ScpiOpticalAmplifier:
    return ScpiOpticalAmplifier("amp", server.visa_address, visalib="@py", timeout=TIMEOUT_S, device_clear=False)


def mbx_on(server: FlakyInstrument) -> ThorlabsMBX:
    return ThorlabsMBX("mbx", server.serial_address, timeout_s=TIMEOUT_S)


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == _scpi.__name__ and r.levelno == logging.WARNING
            and "retrying" in r.getMessage()]


# --- VISA (pyvisa-py TCPIP SOCKET) ----------------------------------------------------------------

def test_a_silent_query_is_retried_once_and_logged(flaky, caplog):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": [SILENT]})
    amplifier = amplifier_on(server)
    assert amplifier.gain_db() == 1.5
    assert server.count("SOUR:GAIN?") == 2
    assert server.connections == 2  # reopened before the retry: a late reply cannot be misread
    assert retry_warnings(caplog) == [f"amp: 'SOUR:GAIN?': no reply within {TIMEOUT_S:g} s (attempt 1 of 3); "
                                      "retrying in 0.05 s"]


def test_a_silent_instrument_fails_after_exactly_three_attempts(flaky, caplog):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": [SILENT] * 10})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentFault) as fault:
        amplifier.gain_db()
    assert server.count("SOUR:GAIN?") == 3
    assert (fault.value.instrument, fault.value.command, fault.value.attempts) == ("amp", "SOUR:GAIN?", 3)
    assert str(fault.value) == (f"amp at {amplifier.address}: 'SOUR:GAIN?' failed after 3 attempts: no reply "
                                f"within {TIMEOUT_S:g} s. The instrument was left as is.")
    # what it took: three waits of TIMEOUT_S (the handle's timeout, named above) and pauses of 0.05 s and 0.1 s,
    # read from what the driver reports rather than from a clock, so a loaded machine cannot change the outcome
    assert [w.rsplit("; ", 1)[1] for w in retry_warnings(caplog)] == ["retrying in 0.05 s", "retrying in 0.1 s"]


def test_the_back_off_is_bounded_and_growing(flaky, monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr(_scpi, "time", SimpleNamespace(sleep=pauses.append))
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": ["x", "y", "z"]})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentFault):
        amplifier.gain_db()
    assert pauses == list(_scpi.RETRY_BACKOFF_S[:_scpi.QUERY_ATTEMPTS - 1]) == [0.05, 0.1]


def test_a_plain_ask_is_retried_too(flaky):
    server = flaky(AMPLIFIER, **{"*IDN?": [AMPLIFIER["*IDN?"], SILENT]})  # the first one is the connect message
    amplifier = amplifier_on(server)
    assert amplifier.ask("*IDN?") == AMPLIFIER["*IDN?"]
    assert server.count("*IDN?") == 3


def test_a_garbled_reply_is_retried(flaky, caplog):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": ["xx#@"]})
    amplifier = amplifier_on(server)
    assert amplifier.gain_db() == 1.5
    assert server.count("SOUR:GAIN?") == 2
    assert "reply 'xx#@' is not a number" in retry_warnings(caplog)[0]


def test_a_reply_garbled_every_time_is_named_in_the_fault(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": ["xx#@"] * 3})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentFault, match=r"^amp at .*'SOUR:GAIN\?' failed after 3 attempts: reply 'xx#@' "
                                              r"is not a number\. The instrument was left as is\.$"):
        amplifier.gain_db()


def test_a_reply_outside_the_value_mapping_is_garbled(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:MODE?": ["BANANA"] * 3})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentFault, match=r"reply 'BANANA' cannot be read \(ValueError: expected GAIN"):
        amplifier.mode()


def test_non_ascii_bytes_are_garbled_not_a_crash(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN?": [b"\xff\xfe1.5\n"]})
    amplifier = amplifier_on(server)
    assert amplifier.gain_db() == 1.5


def test_a_connection_dropped_mid_reply_is_reopened_and_the_query_retried(flaky, caplog):
    server = flaky(AMPLIFIER, **{"MEAS:POW:INP?": [Drop("-1")]})
    amplifier = amplifier_on(server)
    assert amplifier.input_power_w() == pytest.approx(1e-4)
    assert server.connections == 2
    assert "connection closed" in retry_warnings(caplog)[0]


def test_a_write_is_never_repeated(flaky):
    server = flaky(AMPLIFIER, **{"SOUR:GAIN 2.0000": [Drop()]})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentFault) as fault:
        amplifier.gain_db(2.0)
    assert server.count("SOUR:GAIN 2.0000") == 1
    assert fault.value.command == "SOUR:GAIN 2.0000" and not fault.value.repeatable
    assert "may or may not have taken effect" in str(fault.value) and "not repeated" in str(fault.value)
    assert amplifier.gain_db() == 1.5  # the next query reconnects


def test_a_silent_error_check_names_the_write(flaky):
    """Switching the output off: its check waits TIMEOUT_S (switching on lengthens it by the gain's settling)."""
    server = flaky(AMPLIFIER, **{"SYST:ERR?": [SILENT] * 3})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentFault, match=r"'SYST:ERR\? \(the check after OUTP:STAT 0\)' failed after 3 "
                                              r"attempts: no reply"):
        amplifier.output_enabled(False)
    assert server.count("OUTP:STAT 0") == 1 and server.count("SYST:ERR?") == 3


def test_an_error_queue_entry_is_an_instrument_error_not_a_retry(flaky):
    server = flaky(AMPLIFIER, **{"SYST:ERR?": ['-222,"Data out of range"']})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentError, match=r"amp: 'SOUR:GAIN 2.0000' was refused: -222,\"Data out of range\""):
        amplifier.gain_db(2.0)
    assert server.count("SOUR:GAIN 2.0000") == 1


def test_a_query_the_queue_explains_is_not_retried(flaky):
    server = flaky(AMPLIFIER, **{"SYST:ERR?": ['-113,"Undefined header"']})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentError, match=r"'SOUR:BOGUS\?' was refused: -113"):
        amplifier.ask("SOUR:BOGUS?")
    assert server.count("SOUR:BOGUS?") == 1


# --- write_batch: sets and short queries in one message, one error check ----------------------------

BATCH = "OUTP:STAT 1;SOUR:GAIN?;SOUR:MODE?;:SYST:ERR?"


def test_a_batch_is_one_message_and_returns_its_query_replies(flaky):
    server = flaky({**AMPLIFIER, BATCH: '1.5;GAIN;0,"No error"'})
    amplifier = amplifier_on(server)
    assert amplifier.write_batch(["OUTP:STAT 1", "SOUR:GAIN?", "SOUR:MODE?"]) == ["1.5", "GAIN"]
    assert server.count(BATCH) == 1 and server.count("SYST:ERR?") == 0


def test_a_batch_error_entry_names_the_batch_and_empties_the_queue(flaky):
    server = flaky({**AMPLIFIER, BATCH: '1.5;GAIN;-222,"Data out of range"'},
                   **{"SYST:ERR?": ['-221,"Settings conflict"']})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentError, match=r"'OUTP:STAT 1;SOUR:GAIN\?;SOUR:MODE\?' was refused: "
                                              r"-222,\"Data out of range\"; -221"):
        amplifier.write_batch(["OUTP:STAT 1", "SOUR:GAIN?", "SOUR:MODE?"])
    assert server.count(BATCH) == 1 and server.count("SYST:ERR?") == 2


def test_a_batch_the_instrument_cut_short_is_explained_by_the_queue_not_repeated(flaky):
    # a command error makes an instrument drop the rest of the message, its error query too: no reply
    server = flaky({**AMPLIFIER, BATCH: SILENT}, **{"SYST:ERR?": ['-113,"Undefined header"']})
    amplifier = amplifier_on(server)
    with pytest.raises(InstrumentError, match=r"'OUTP:STAT 1;SOUR:GAIN\?;SOUR:MODE\?' was refused: -113"):
        amplifier.write_batch(["OUTP:STAT 1", "SOUR:GAIN?", "SOUR:MODE?"])
    assert server.count(BATCH) == 1


def test_a_batch_reply_lost_with_a_clean_queue_asks_the_queries_alone(flaky):
    server = flaky({**AMPLIFIER, BATCH: SILENT})
    amplifier = amplifier_on(server)
    assert amplifier.write_batch(["OUTP:STAT 1", "SOUR:GAIN?", "SOUR:MODE?"]) == ["1.5", "GAIN"]
    assert server.count(BATCH) == 1 and server.count("SOUR:GAIN?") == 1 and server.count("SOUR:MODE?") == 1


def test_a_block_unit_is_framed_by_its_length():
    assert _scpi.block_unit(":TRAC1:DATA 1,0,", b"\n;#") == b":TRAC1:DATA 1,0,#13\n;#"
    assert _scpi._shown_unit(_scpi.block_unit(":TRAC1:DATA 1,0,", bytes(300))) == ":TRAC1:DATA 1,0,<block of 305 bytes>"


# --- serial (pyserial socket://) -----------------------------------------------------------------

def test_mbx_query_is_retried_after_a_dropped_connection(flaky):
    server = flaky(MBX, **{"MZM:VOLTAGE?": [Drop("1.")]})
    mbx = mbx_on(server)
    assert mbx.mzm.bias_v() == 1.25
    assert server.connections == 2


def test_mbx_garbled_and_silent_queries_are_retried(flaky):
    server = flaky(MBX, **{"VOA:ATTEN?": ["5!x", SILENT]})
    mbx = mbx_on(server)
    assert mbx.voa.attenuation_db() == 5.0
    assert server.count("VOA:ATTEN?") == 3


def test_mbx_silent_instrument_fails_after_three_attempts(flaky):
    server = flaky(MBX, **{"MZM:MODE?": [SILENT] * 3})
    mbx = mbx_on(server)
    with pytest.raises(InstrumentFault, match=rf"^mbx at {server.serial_address}: 'MZM:MODE\?' failed after 3 "
                                              rf"attempts: no complete reply within {TIMEOUT_S:g} s"):
        mbx.mzm.bias_mode()
    assert server.count("MZM:MODE?") == 3


def test_mbx_set_without_a_reply_is_not_repeated(flaky):
    server = flaky(MBX, **{"MZM:MODE: 3": [SILENT]})
    mbx = mbx_on(server)
    with pytest.raises(InstrumentFault, match="not repeated") as fault:
        mbx.mzm.bias_mode("quadrature+")
    assert server.count("MZM:MODE: 3") == 1 and fault.value.command == "MZM:MODE: 3"


# --- junk replies: only InstrumentFault or InstrumentError ever comes out --------------------------

def _junk_server(defaults: dict[str, str]) -> tuple[FlakyInstrument, Callable[[bytes], None]]:
    """A server whose every reply is the current junk, once the driver has connected."""
    junk = {"reply": None}

    def answer(message: str, normal):
        return normal if junk["reply"] is None or normal is SILENT else junk["reply"]

    server = FlakyInstrument(defaults, answer=answer)

    def set_junk(reply: bytes) -> None:
        junk["reply"] = reply + b"\n"

    return server, set_junk


OPERATIONS = {
    "amp": [lambda d: d.gain_db(), lambda d: d.output_enabled(), lambda d: d.mode(), lambda d: d.gain_db(2.0),
            lambda d: d.input_power_w(), lambda d: d.ask("*IDN?")],
    "mbx": [lambda d: d.mzm.bias_v(), lambda d: d.mzm.bias_mode(), lambda d: d.mzm.is_locked(),
            lambda d: d.voa.attenuation_db(6), lambda d: d.voa.attenuation_db()],
}


@pytest.mark.parametrize("junk", [b"9e99", b"1e400", b"nan", b"-inf"])
def test_a_power_reading_no_light_can_be_is_an_unreadable_reply(junk, monkeypatch):
    """A junk number in place of the amplifier's dBm reading is an InstrumentFault, never inf or NaN watts (it was
    read as inf W, with numpy's overflow warning)."""
    monkeypatch.setattr(_scpi, "RETRY_BACKOFF_S", (0.0,))
    server, set_junk = _junk_server(AMPLIFIER)
    driver = amplifier_on(server)
    try:
        set_junk(junk)
        with pytest.raises(InstrumentFault, match="power reading in dBm"):
            driver.input_power_w()
    finally:
        driver.close()
        server.close()


@pytest.mark.parametrize("junk", [b"nan", b"+INF", b"-inf", b"1e999"])
@pytest.mark.parametrize("kind", ["amp", "mbx"])
def test_a_setting_read_back_as_nan_or_infinity_is_an_unreadable_reply(kind, junk, monkeypatch):
    """A float setting's read-back that parses as NaN or infinity is asked again and ends in an InstrumentFault naming
    it, never a value (a NaN would pass every comparison of the settings check)."""
    monkeypatch.setattr(_scpi, "RETRY_BACKOFF_S", (0.0,))
    server, set_junk = _junk_server(AMPLIFIER if kind == "amp" else MBX)
    driver = amplifier_on(server) if kind == "amp" else ThorlabsMBX("mbx", server.serial_address, timeout_s=0.05)
    try:
        set_junk(junk)
        with pytest.raises(InstrumentFault, match="not a finite number"):
            driver.gain_db() if kind == "amp" else driver.mzm.bias_v()
    finally:
        driver.close()
        server.close()


@pytest.mark.parametrize("kind", ["amp", "mbx"])
def test_junk_replies_raise_nothing_but_instrument_errors(kind, monkeypatch):
    monkeypatch.setattr(_scpi, "RETRY_BACKOFF_S", (0.0,))
    server, set_junk = _junk_server(AMPLIFIER if kind == "amp" else MBX)
    # short MBX timeout: blank junk lines are skipped by the driver, so they end in a timeout
    driver = amplifier_on(server) if kind == "amp" else ThorlabsMBX("mbx", server.serial_address, timeout_s=0.05)
    try:
        @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(junk=st.binary(max_size=24), operation=st.sampled_from(OPERATIONS[kind]))
        def check(junk: bytes, operation) -> None:
            set_junk(junk)
            try:
                value = operation(driver)
            except (InstrumentFault, InstrumentError):
                return
            assert not isinstance(value, float) or math.isfinite(value), (junk, value)  # never a NaN or inf value

        check()
    finally:
        driver.close()
        server.close()

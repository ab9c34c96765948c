"""Byte-exact protocol of our Keysight Infiniium driver (qcodes' KeysightInfiniium, subclassed): the exact bytes
sent, terminations included, and the replies parsed, for the constructor, every scope and channel setting the
stack uses, the trigger, and the fast paths (read_trace_block, digitize_and_read, acquisitions waited for through
timeouts, the error queue read in the same message, socket read widening).

Commands checked against the Infiniium programmer's guide (``:ACQuire``, ``:CHANnel<n>``, ``:TIMebase``,
``:TRIGger``, ``:WAVeform``, ``:SYSTem:ERRor? STRing``, ``:DIGitize``) and qcodes' upstream driver, whose
constructor and parameters these are.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from qslab.instruments.drivers import visa_connection
from qslab.instruments.drivers._scpi import InstrumentError, InstrumentFault
from qslab.instruments.drivers.keysight_infiniium import EdgeTrigger, KeysightInfiniium, digitize_and_read, read_trace_block
from qslab.instruments.optical.digitizer import InfiniiumDigitizer
from tests.drivers.expected_protocol import Later, expected_protocol, parameter

IDN = b"KEYSIGHT TECHNOLOGIES,DSOS804A,MY00000001,11.50.00000\n"
CONNECT = [
    (b"*IDN?\n", IDN),
    (b":SYSTem:HEADer OFF\n", None),
    (b":WAVEFORM:FORMAT WORD\n", None),
    (b":WAVEFORM:BYTEORDER LSBFirst\n", None),
    (b":WAVEFORM:STREAMING ON\n", None),
    (b":ACQ:BAND:TESTLIMITS?\n", b"1,<numeric>1.00000E+08:8.00000E+09\n"),
    (b":ACQ:POIN:TESTLIMITS?\n", b"1,<numeric>16:50000000\n"),
    (b":ACQ:BAND?\n", b"8.0000000000E+09\n"),
    (b":ACQ:BAND AUTO\n", None),
    (b":ACQ:SRAT:TESTLIMITS?\n", b"1,<numeric>1.00000E+09:2.00000E+10\n"),
    (b":ACQ:BAND AUTO\n", None),
]
NO_ERROR = b'0,"No error"'
POINTS = 16
WORDS = np.resize(np.array([0, 1, -1, 10, 0x0A0A, -32768, 32767, 59], dtype="<i2"), POINTS)  # LF bytes inside
Y_INCREMENT, Y_ORIGIN = 1.0e-5, 0.01


def preamble(points: int = POINTS, y_origin: float = Y_ORIGIN) -> bytes:
    """A :WAV:PRE? reply (24 fields; [2] points, [4] x increment, [5] x origin, [7] y increment, [8] y origin,
    [21] y unit)."""
    fields = [2, 1, points, 1, "5.0000000000E-10", "0.0000000000E+00", 0, f"{Y_INCREMENT:.10E}",
              f"{y_origin:.10E}", 0, 2, "4.0E-09", "0.0E+00", "1.6E-01", "1.0E-02", '"05 DEC 2026"',
              '"03:00:00:00"', '"DSOS804A:MY00000001"', 0, 100, 2, 1, "8.0E+09", "1.0E+08"]
    return ",".join(str(f) for f in fields).encode()


def scope(address: str, device_clear: bool = False) -> KeysightInfiniium:
    """The driver on a transcript. qcodes' device clear sends no bytes over a socket (pyvisa-py drains the socket,
    waiting 0.1 s for replies nobody asked for): left out except where the constructor itself is under test."""
    return KeysightInfiniium("scope", address, visalib="@py", timeout=2, silence_pyvisapy_warning=True,
                             device_clear=device_clear)


def test_the_constructor_sends_the_upstream_set_up_and_widens_socket_reads():
    with expected_protocol(lambda address: scope(address, device_clear=True), CONNECT) as driver:
        session = driver.visa_handle.visalib.sessions[driver.visa_handle.session]
        assert session.max_recv_size >= visa_connection.PYVISA_PY_RECV_BYTES   # traces arrive in MB, not 4 kB


GETS = [  # (parameter path, sent, reply, parsed)
    ("run_mode", b":RST?\n", b"STOP\n", "STOP"),
    ("timebase_range", b":TIM:RANG?\n", b"1.0E-06\n", 1e-6),
    ("timebase_position", b":TIM:POS?\n", b"-2.5E-09\n", -2.5e-9),
    ("timebase_roll_enabled", b":TIM:ROLL:ENABLE?\n", b"0\n", False),
    ("trigger_mode", b":TRIG:MODE?\n", b"EDGE\n", "EDGE"),
    ("trigger_sweep", b":TRIG:SWE?\n", b"TRIG\n", "TRIG"),
    ("trigger_state", b":AST?\n", b"ADONE\n", "ADONE"),
    ("trigger_edge_source", b":TRIGger:EDGE:SOURce?\n", b"AUX\n", "AUX"),
    ("trigger_edge_slope", b":TRIGger:EDGE:SLOPe?\n", b"POS\n", "POS"),
    ("trigger_level_aux", b":TRIGger:LEVel? AUX\n", b"2.5E-01\n", 0.25),
    ("acquire_points", b":ACQ:POIN?\n", b"8192\n", 8192),
    ("sample_rate", b":ACQ:SRAT?\n", b"3.0000000000E+09\n", 3.0e9),
    ("bandwidth", b":ACQ:BAND?\n", b"8.0000000000E+09\n", 8.0e9),
    ("acquire_interpolate", b":ACQ:INTerpolate?\n", b"INT1\n", "INT1"),
    ("acquire_mode", b"ACQuire:MODE?\n", b"RTIM\n", "RTIM"),
    ("ch2.input", b"CHAN2:INP?\n", b"DC50\n", "DC50"),
    ("ch2.display", b"CHAN2:DISP?\n", b"1\n", True),
    ("ch2.offset", b"CHAN2:OFFS?\n", b"-1.000000E-02\n", -0.01),
    ("ch2.range", b"CHAN2:RANG?\n", b"1.600000E-01\n", 0.16),
    ("ch2.trigger_level", b":TRIG:LEV? CHAN2\n", b"1.0E-01\n", 0.1),
]


@pytest.mark.parametrize(("path", "sent", "reply", "parsed"), GETS, ids=[g[0] for g in GETS])
def test_every_get_sends_its_query_and_parses_the_reply(path, sent, reply, parsed):
    with expected_protocol(scope, CONNECT + [(sent, reply)]) as driver:
        assert parameter(driver, path)() == parsed


SETS = [  # (parameter path, value, sent)
    ("timebase_range", 1e-6, b":TIM:RANG 1e-06\n"),
    ("timebase_position", -2.5e-9, b":TIM:POS -2.5e-09\n"),
    ("timebase_roll_enabled", True, b":TIM:ROLL:ENABLE 1\n"),
    ("trigger_sweep", "TRIG", b":TRIG:SWE TRIG\n"),
    ("trigger_edge_source", "AUX", b":TRIGger:EDGE:SOURce AUX\n"),
    ("trigger_edge_slope", "POS", b":TRIGger:EDGE:SLOPe POS\n"),
    ("trigger_level_aux", 0.25, b":TRIGger:LEVel AUX,0.25\n"),
    ("acquire_points", 4096, b":ACQ:POIN 4096\n"),
    ("sample_rate", 3e9, b":ACQ:SRAT 3000000000.0\n"),
    ("bandwidth", 4e9, b":ACQ:BAND 4000000000.0\n"),
    ("acquire_interpolate", "INT1", b":ACQuire:INTerpolate INT1\n"),
    ("acquire_mode", "RTIMe", b"ACQuire:MODE RTIMe\n"),
    ("ch3.input", "DC50", b"CHAN3:INP DC50\n"),
    ("ch3.display", False, b"CHAN3:DISP 0\n"),
    ("ch3.offset", 0.02, b"CHAN3:OFFS 0.02\n"),
    ("ch3.range", 0.4, b"CHAN3:RANG 0.4\n"),
    ("ch3.trigger_level", 0.1, b":TRIG:LEV CHAN3,0.1\n"),
]


@pytest.mark.parametrize(("path", "value", "sent"), SETS, ids=[s[0] for s in SETS])
def test_every_set_sends_exactly_its_command(path, value, sent):
    with expected_protocol(scope, CONNECT + [(sent, None)]) as driver:
        parameter(driver, path)(value)


def test_averaging_is_two_commands_and_reads_back_in_two_queries():
    pairs = [(b":ACQ:AVER:COUN 16\n", None), (b":ACQ:AVER 1\n", None),
             (b":ACQ:AVER?\n", b"1\n"), (b":ACQ:AVER:COUN?\n", b"16\n"), (b":ACQ:AVER 0\n", None)]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        driver.average(16)
        assert driver.average() == 16
        driver.average(1)


def _block(words: np.ndarray = WORDS) -> bytes:
    return b"#0" + words.tobytes() + b"\n"


def test_read_trace_block_is_the_preamble_then_the_block_by_its_length_in_two_messages():
    pairs = [(b":WAV:SOUR CHAN1;:WAV:PRE?\n", preamble() + b"\n"), (b":WAV:DATA?\n", _block())]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        samples_v = read_trace_block(driver.ch1)
        # the record's range and offset, as its preamble states them ([13], [14]): the role asks nothing more
        assert driver.ch1.range.cache.get(get_if_invalid=False) == 0.16
        assert driver.ch1.offset.cache.get(get_if_invalid=False) == 0.01
        digitizer = InfiniiumDigitizer(driver)
        assert (digitizer.range_v(1), digitizer.offset_v(1)) == (0.16, 0.01)
    np.testing.assert_allclose(samples_v, WORDS * Y_INCREMENT + Y_ORIGIN)


def test_a_trace_with_zero_y_origin_is_the_words_times_the_increment_bit_for_bit():
    pairs = [(b":WAV:SOUR CHAN1;:WAV:PRE?\n", preamble(y_origin=0.0) + b"\n"), (b":WAV:DATA?\n", _block())]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        samples_v = read_trace_block(driver.ch1)
    np.testing.assert_array_equal(samples_v, WORDS.astype(np.float64) * Y_INCREMENT)
    assert samples_v.dtype == np.float64


def test_a_trace_of_megabytes_is_received_straight_into_its_array_not_through_pyvisas_pieces(caplog):
    """pyvisa's pieces cost a select() and four copies each: on a pyvisa-py socket the block (header, words, LF)
    is received into one array instead, and pyvisa is asked for none of it (it logs each piece it reads)."""
    points = 3 * (1 << 19) + 5   # 3 MB + 10 bytes of words: more than one socket receive
    words = (np.arange(points) % 65536 - 32768).astype("<i2")
    pairs = [(b":WAV:SOUR CHAN1;:WAV:PRE?\n", preamble(points) + b"\n"), (b":WAV:DATA?\n", _block(words))]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        with caplog.at_level(logging.DEBUG, logger="pyvisa"):
            samples_v = read_trace_block(driver.ch1)
    pieces = [r.getMessage() for r in caplog.records if r.funcName == "read_bytes"]
    assert pieces == []
    np.testing.assert_allclose(samples_v, words * Y_INCREMENT + Y_ORIGIN)


def _capture_command(number: int = 2) -> bytes:
    return (f":ACQ:POIN {POINTS};:ACQ:SRAT 2000000000.0;:CHAN{number}:RANG 0.4;:CHAN{number}:OFFS 0.01;:DIGitize;"
            f"*OPC?;:ACQ:POIN?;:ACQ:SRAT?;:CHAN{number}:RANG?;:CHAN{number}:OFFS?;:SYST:ERR? STR;"
            f":WAV:SOUR CHAN{number};:WAV:PRE?\n").encode()


def test_digitize_and_read_is_two_messages_with_read_back_and_error_entry():
    reply = b"1;16;2.0000000000E+09;4.000000E-01;1.000000E-02;" + NO_ERROR + b";" + preamble() + b"\n"
    pairs = [(_capture_command(), reply), (b":WAV:DATA?\n", _block())]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        samples_v = digitize_and_read(driver.ch2, POINTS, 2e9, 0.4, 0.01)
        assert driver.acquire_points.cache.get(get_if_invalid=False) == POINTS
        assert driver.ch2.range.cache.get(get_if_invalid=False) == 0.4
    np.testing.assert_allclose(samples_v, WORDS * Y_INCREMENT + Y_ORIGIN)


def test_a_refused_setting_raises_with_the_whole_queue_and_the_caches_hold_the_read_back():
    reply = (b"1;16;3.0000000000E+09;1.600000E-01;1.000000E-02;-222,\"Data out of range\";" + preamble() + b"\n")
    command = _capture_command().replace(b"2000000000.0", b"3300000000.0").replace(b"RANG 0.4", b"RANG 100.0")
    pairs = [(command, reply), (b":SYST:ERR? STR\n", b'-221,"Settings conflict;averaging is on"\n'),
             (b":SYST:ERR? STR\n", NO_ERROR + b"\n")]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        with pytest.raises(InstrumentError) as refused:
            driver.digitize_and_read_v(driver.ch2, POINTS, 3.3e9, 100.0, 0.01)
        assert refused.value.errors == [(-222, "Data out of range"), (-221, "Settings conflict;averaging is on")]
        assert driver.sample_rate.cache.get(get_if_invalid=False) == 3.0e9
        assert driver.ch2.range.cache.get(get_if_invalid=False) == 0.16


ACQUIRED_TWO = b":DIGitize;*OPC?;:SYST:ERR? STR;:WAV:SOUR CHAN1;:WAV:PRE?;:WAV:SOUR CHAN2;:WAV:PRE?\n"


def test_an_acquisition_asks_the_preambles_of_the_channels_read_after_the_last_and_each_read_is_one_message():
    """The role asks, with each acquisition, the preambles of the channels read since the one before (a session reads
    the same two every time): a read is then ``:WAV:SOUR <ch>;:WAV:DATA?`` alone, one round trip instead of two."""
    first = [(b":DIGitize;*OPC?;:SYST:ERR? STR\n", b"1;" + NO_ERROR + b"\n"),
             (b":WAV:SOUR CHAN1;:WAV:PRE?\n", preamble() + b"\n"), (b":WAV:DATA?\n", _block()),
             (b":WAV:SOUR CHAN2;:WAV:PRE?\n", preamble(y_origin=0.0) + b"\n"), (b":WAV:DATA?\n", _block())]
    second = [(ACQUIRED_TWO, b"1;" + NO_ERROR + b";" + preamble() + b";" + preamble(y_origin=0.0) + b"\n"),
              (b":WAV:SOUR CHAN1;:WAV:DATA?\n", _block()), (b":WAV:SOUR CHAN2;:WAV:DATA?\n", _block())]
    with expected_protocol(scope, CONNECT + first + second) as driver:
        digitizer = InfiniiumDigitizer(driver)
        for _ in range(2):
            digitizer.trigger()
            digitizer.wait()
            one, two = digitizer.read_record(1), digitizer.read_record(2)
            np.testing.assert_allclose(one.volts(), WORDS * Y_INCREMENT + Y_ORIGIN)
            np.testing.assert_array_equal(two.volts(), WORDS.astype(np.float64) * Y_INCREMENT)


def test_a_refusal_in_an_acquisitions_reply_with_preambles_is_raised_and_a_setting_drops_the_preambles():
    """The error entry may hold ';' in its quoted text: the preambles are counted from the end. A refused acquisition
    keeps no preamble; nor does a setting made after the acquisition (the reads then ask for theirs)."""
    read_both = [(b":WAV:SOUR CHAN1;:WAV:PRE?\n", preamble() + b"\n"), (b":WAV:DATA?\n", _block()),
                 (b":WAV:SOUR CHAN2;:WAV:PRE?\n", preamble() + b"\n"), (b":WAV:DATA?\n", _block())]
    refused = [(ACQUIRED_TWO, b'1;-221,"Settings conflict;averaging is on";' + preamble() + b";" + preamble() + b"\n"),
               (b":SYST:ERR? STR\n", NO_ERROR + b"\n")]
    then_set = [(ACQUIRED_TWO, b"1;" + NO_ERROR + b";" + preamble() + b";" + preamble() + b"\n"),
                (b":CHAN1:RANG 0.4;:CHAN1:RANG?;:CHAN1:OFFS?;:SYST:ERR? STR\n",
                 b"4.000000E-01;1.000000E-02;" + NO_ERROR + b"\n")]
    with expected_protocol(scope, CONNECT + [(b":DIGitize;*OPC?;:SYST:ERR? STR\n", b"1;" + NO_ERROR + b"\n")]
                           + read_both + refused + read_both + then_set + read_both) as driver:
        digitizer = InfiniiumDigitizer(driver)
        digitizer.trigger()
        digitizer.wait()
        digitizer.read_record(1), digitizer.read_record(2)
        digitizer.trigger()
        with pytest.raises(InstrumentError) as error:
            digitizer.wait()
        assert error.value.errors == [(-221, "Settings conflict;averaging is on")]
        digitizer.read_record(1), digitizer.read_record(2)
        digitizer.trigger()
        digitizer.wait()
        digitizer.configure_channel(1, range_v=0.4)
        digitizer.read_record(1), digitizer.read_record(2)


def test_an_acquisition_is_waited_for_through_visa_timeouts():
    """The reply comes after two of the driver's 0.2 s timeouts: read again, as qcodes' digitize() does."""
    pairs = [(b":DIGitize;*OPC?;:SYST:ERR? STR\n", Later(b"1;" + NO_ERROR + b"\n", 0.5))]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        driver.visa_handle.timeout = 200
        driver.acquire(acquisition_timeout_s=30)


def test_an_acquisition_that_never_completes_is_a_fault_after_its_bound():
    pairs = [(b":DIGitize;*OPC?;:SYST:ERR? STR\n", None)]   # no trigger: the scope never answers
    with expected_protocol(scope, CONNECT + pairs) as driver:
        driver.visa_handle.timeout = 100
        with pytest.raises(InstrumentFault, match="did not complete within 0.3 s"):
            driver.acquire(acquisition_timeout_s=0.3)


def test_the_edge_trigger_is_one_message_with_its_read_back():
    command = (b":TRIG:MODE EDGE;:TRIG:EDGE:SOUR AUX;:TRIG:LEV AUX,0.25;:TRIG:EDGE:SLOP POS;:TRIG:SWE TRIG;"
               b":TRIG:MODE?;:TRIG:EDGE:SOUR?;:TRIG:LEV? AUX;:TRIG:EDGE:SLOP?;:TRIG:SWE?;:SYST:ERR? STR\n")
    pairs = [(command, b"EDGE;AUX;2.50000E-01;POS;TRIG;" + NO_ERROR + b"\n")]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        assert driver.set_edge_trigger("aux", 0.25) == EdgeTrigger("AUX", 0.25, "POS", "TRIG")
        assert driver.trigger_level_aux.cache.get(get_if_invalid=False) == 0.25
        with pytest.raises(ValueError, match="trigger source"):
            driver.set_edge_trigger("EXT", 0.25)   # refused before sending


def test_the_roles_settings_are_set_read_back_and_error_checked_in_one_message_each():
    pairs = [(b":ACQ:POIN 4096;:ACQ:SRAT 3300000000.0;:ACQ:POIN?;:ACQ:SRAT?;:SYST:ERR? STR\n",
              b"4096;3.0000000000E+09;" + NO_ERROR + b"\n"),
             (b":CHAN1:OFFS 0.01;:CHAN1:RANG 100.0;:CHAN1:RANG?;:CHAN1:OFFS?;:SYST:ERR? STR\n",
              b'1.600000E-01;1.000000E-02;-222,"Data out of range"\n'),
             (b":SYST:ERR? STR\n", NO_ERROR + b"\n")]
    with expected_protocol(scope, CONNECT + pairs) as driver:
        digitizer = InfiniiumDigitizer(driver)
        digitizer.configure(points=4096, sample_rate_hz=3.3e9)
        assert driver.sample_rate.cache.get(get_if_invalid=False) == 3.0e9   # what the scope took
        digitizer.configure_channel(1, range_v=100.0, offset_v=0.01)   # -222: the scope kept its range ...
        assert digitizer.range_v(1) == 0.16                               # ... which the read-back tells

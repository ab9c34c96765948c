"""Byte-exact protocol of the Keysight N77xx drivers (laser, attenuator, meter) over a raw socket.

Each transcript is written from the N77xx programming guides' command descriptions (docs/INSTRUMENTS.md 1.2,
2.2, 3.2, 4.1), not from what the driver happens to send: commands end in LF (the LAN socket, port 5025),
replies in CR LF as GPIB/USB replies do (docs/INSTRUMENTS.md 1.2; the driver reads to LF and its parsers
drop the CR), each set with its SYST:ERR? in the same message (the guide's parser runs a whole message at its LF,
p. 10), numbers in Keysight's NR3 with three exponent digits. Powers are sent with the DBM suffix and
read with the unit set in the same message (N774xC Programming Guide p. 13 Table 2 for the mnemonics, p. 69
for READ's reply "in dBm, W or dB" per the current unit). The meter's example reading +1.33555600E-006 is the
guide's own (p. 69).
"""

from __future__ import annotations

import pytest

from qslab.instruments.drivers import _scpi
from qslab.instruments.drivers._scpi import InstrumentFault
from qslab.instruments.drivers.keysight_n77xx import InstrumentError, KeysightN7711A, KeysightN7744A, KeysightN7762A
from tests.drivers.expected_protocol import expected_protocol

NO_ERROR = b'+0,"No error"\r\n'
LASER_IDN = b"Keysight Technologies,N7711A,DE00000009,V1.0\r\n"
METER_IDN = b"Keysight Technologies,N7744C,MY00000012,V1.0\r\n"   # the current C revision: same commands
VOA_IDN = b"Keysight Technologies,N7762A,DE00000011,V1.0\r\n"


def _driver(cls, name):
    return lambda address: cls(name, address, visalib="@py", timeout=2, device_clear=False)


def laser_connect(unit_reply_min: bytes = b"+6.00000000E+000\r\n") -> list:
    """What the N7711A driver sends at connect: clear stale errors, read its limits (power in dBm, whatever
    the display unit), greet."""
    return [
        (b"*CLS\n", None),
        (b"SOUR1:WAV? MIN\n", b"+1.52760000E-006\r\n"),
        (b"SOUR1:WAV? MAX\n", b"+1.56550000E-006\r\n"),
        (b"SOUR1:POW:UNIT 0;:SOUR1:POW? MIN\n", unit_reply_min),
        (b"SOUR1:POW:UNIT 0;:SOUR1:POW? MAX\n", b"+1.50000000E+001\r\n"),
        (b"*IDN?\n", LASER_IDN),
    ]


def test_laser_connect_set_and_read_power_in_explicit_units():
    pairs = laser_connect() + [
        (b"SOUR1:POW 1.00000000E+01DBM;:SYST:ERR?\n", NO_ERROR),       # power_w(0.01): 10 dBm
        (b"SOUR1:POW 7.00000000E+00DBM;:SYST:ERR?\n", NO_ERROR),       # power_dbm(7)
        (b"SOUR1:POW:UNIT 0;:SOUR1:POW?\n", b"+7.00000000E+000\r\n"),                # power_w(): read in dBm
        (b"SOUR1:POW:STAT 1;:SYST:ERR?\n", NO_ERROR),
        (b"SOUR1:POW:STAT?\n", b"1\r\n"),
        (b"SOUR1:WAV 1.55012000E-06;:SYST:ERR?\n", NO_ERROR),
        (b"SOUR1:WAV?\n", b"+1.55012000E-006\r\n"),
        (b"SOUR1:POW:STAT 0;:SYST:ERR?\n", NO_ERROR),
    ]
    with expected_protocol(_driver(KeysightN7711A, "n7711a_protocol"), pairs) as laser:
        assert (laser.port1.power_dbm.vals.min_value, laser.port1.power_dbm.vals.max_value) == (6.0, 15.0)
        laser.port1.power_w(0.01)
        laser.port1.power_dbm(7.0)
        assert laser.port1.power_w() == pytest.approx(10 ** 0.7 * 1e-3)
        laser.port1.output_enabled(True)
        assert laser.port1.output_enabled() is True
        laser.port1.wavelength_m(1550.12e-9)
        assert laser.port1.wavelength_m() == pytest.approx(1550.12e-9)
        laser.all_outputs_off()


def test_laser_refusal_is_read_from_the_queue_and_named():
    pairs = laser_connect() + [
        (b"SOUR1:POW 1.40000000E+01DBM;:SYST:ERR?\n", b'-222,"Data out of range"\r\n'),
        (b":SYST:ERR?\n", NO_ERROR),
    ]
    with expected_protocol(_driver(KeysightN7711A, "n7711a_refusal"), pairs) as laser:
        with pytest.raises(InstrumentError) as refused:
            laser.port1.power_dbm(14.0)
        assert (refused.value.code, refused.value.text) == (-222, "Data out of range")
        assert refused.value.command == "SOUR1:POW 1.40000000E+01DBM"


def meter_connect() -> list:
    pairs: list = [(b"*CLS\n", None)]
    for n in range(1, 5):
        pairs.append((f"SENS{n}:POW:ATIM?\n".encode(), b"+1.00000000E-001\r\n"))
    return pairs + [(b"*IDN?\n", METER_IDN)]


def test_meter_reads_in_watt_set_in_the_same_message():
    pairs = meter_connect() + [
        (b"SENS1:POW:UNIT 1;:READ1:POW?\n", b"+1.33555600E-006\r\n"),
        (b"SENS2:POW:ATIM 1.000000E+01;:SYST:ERR?\n", NO_ERROR),
        (b"SENS2:POW:UNIT 1;:READ2:POW?\n", b"+2.50000000E-009\r\n"),
        (b"SENS3:POW:UNIT 1;:READ3:POW?;:READ3:POW?;:READ3:POW?\n",
         b"+1.00000000E-006;+1.10000000E-006;+1.20000000E-006\r\n"),
        (b"SENS4:POW:UNIT 1;:FETC4:POW?\n", b"+3.00000000E-006\r\n"),
        (b"SENS1:POW:WAV 1.55000000E-06;:SYST:ERR?\n", NO_ERROR),
        (b"SENS1:POW:RANG -20DBM;:SYST:ERR?\n", NO_ERROR),
        (b"SENS1:POW:UNIT 0;:SYST:ERR?\n", NO_ERROR),
    ]
    with expected_protocol(_driver(KeysightN7744A, "n7744c_protocol"), pairs) as meter:
        assert meter.ch1.read_power_w() == pytest.approx(1.335556e-6)
        meter.ch2.averaging_time_s(10.0)
        assert meter.ch2.read_power_w() == pytest.approx(2.5e-9)
        assert meter.ch3.read_powers_w(3) == pytest.approx([1.0e-6, 1.1e-6, 1.2e-6])
        assert meter.ch4.fetch_power_w() == pytest.approx(3e-6)
        meter.ch1.wavelength_m(1550e-9)
        meter.ch1.range_dbm(-20)
        meter.ch1.power_unit("dBm")


def test_meter_reading_of_no_valid_power_is_one_clear_error():
    """+9.91E37 is SCPI's 'no valid reading' (over range): refused naming it, never returned as a power of 1e37 W."""
    nan = b"+9.91000000E+037"
    pairs = meter_connect() + [
        (b"SENS1:POW:UNIT 1;:READ1:POW?\n", nan + b"\r\n"),
        (b"SENS1:POW:UNIT 1;:READ1:POW?;:READ1:POW?\n", b"+1.00000000E-006;" + nan + b"\r\n"),
    ]
    with expected_protocol(_driver(KeysightN7744A, "n7744c_invalid"), pairs) as meter:
        with pytest.raises(InstrumentError, match=r"READ1:POW\?.*no valid reading \(\+9.91000000E\+037 is SCPI's "
                                                  r"not-a-number: over range\?"):
            meter.ch1.read_power_w()
        with pytest.raises(InstrumentError, match="no valid reading"):
            meter.ch1.read_powers_w(2)


def test_meter_reading_of_nan_or_infinity_is_junk_asked_again(monkeypatch):
    """A reply that parses as NaN or infinity is no SCPI number: junk on the line (seen once in the fuzz of replies:
    '-inf' read again by the read after the junk stopped). It is asked again on a cleared line, and ends in one
    InstrumentFault naming it when it stays junk; once the line answers a number again, that is the reading."""
    monkeypatch.setattr(_scpi, "RETRY_BACKOFF_S", (0.0,))
    query = b"SENS1:POW:UNIT 1;:READ1:POW?\n"
    pairs = meter_connect() + [(query, b"nan\r\n"), (query, b"-inf\r\n"), (query, b"+1.00000000E-006\r\n"),
                               (query, b"nan\r\n"), (query, b"+INF\r\n"), (query, b"inf\r\n")]
    with expected_protocol(_driver(KeysightN7744A, "n7744c_junk"), pairs) as meter:
        assert meter.ch1.read_power_w() == pytest.approx(1e-6)
        with pytest.raises(InstrumentFault, match=r"n7744c_junk.*not a finite number"):
            meter.ch1.read_power_w()


def attenuator_connect() -> list:
    pairs: list = [(b"*CLS\n", None)]
    for slot in (1, 3):
        pairs += [
            (f"INP{slot}:ATT:SPE? MIN\n".encode(), b"+1.00000000E-001\r\n"),
            (f"INP{slot}:ATT:SPE? MAX\n".encode(), b"+1.00000000E+003\r\n"),
            (f"INP{slot}:ATT? MIN\n".encode(), b"+0.00000000E+000\r\n"),
            (f"INP{slot}:ATT? MAX\n".encode(), b"+4.50000000E+001\r\n"),
            (f"INP{slot}:WAV? MIN\n".encode(), b"+1.26000000E-006\r\n"),
            (f"INP{slot}:WAV? MAX\n".encode(), b"+1.64000000E-006\r\n"),
            (f"INP{slot}:ATT:SPE?\n".encode(), b"+1.00000000E+001\r\n"),
            (f"INP{slot}:ATT?\n".encode(), b"+0.00000000E+000\r\n"),
        ]
    return pairs + [(b"*IDN?\n", VOA_IDN)]


def test_attenuator_attenuation_shutter_and_power_setpoint():
    pairs = attenuator_connect() + [
        (b"INP1:ATT 20.0000;:SYST:ERR?\n", NO_ERROR),
        (b"INP1:ATT?\n", b"+2.00000000E+001\r\n"),
        (b"OUTP1:STAT 1;:SYST:ERR?\n", NO_ERROR),
        (b"OUTP1:POW:CONTR 1;:SYST:ERR?\n", NO_ERROR),
        (b"OUTP1:POW -2.00000000E+01DBM;:SYST:ERR?\n", NO_ERROR),
        (b"OUTP1:POW:UN 0;:OUTP1:POW?\n", b"-2.00000000E+001\r\n"),
        (b"INP3:ATT:SPE 5.0000;:SYST:ERR?\n", NO_ERROR),
        (b"OUTP3:STAT 0;:SYST:ERR?\n", NO_ERROR),
    ]
    with expected_protocol(_driver(KeysightN7762A, "n7762a_protocol"), pairs) as voa:
        voa.att1.attenuation_db(20.0)
        assert voa.att1.attenuation_db() == pytest.approx(20.0)
        voa.att1.shutter_open(True)
        voa.att1.power_control(True)
        voa.att1.power_setpoint_w(1e-5)
        assert voa.att1.power_setpoint_dbm() == pytest.approx(-20.0)
        voa.att2.attenuation_speed_db_s(5.0)
        voa.att2.shutter_open(False)

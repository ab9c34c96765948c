"""Keysight N77xx drivers against instruments/drivers/sims/keysight_n77xx.yaml (and a socket fake).

Remove ``pyvisa_sim_file`` and give a real address to run the round trips against hardware.
"""

from __future__ import annotations

import pytest

from qslab.instruments.drivers.keysight_n77xx import (
    InstrumentError,
    KeysightN7711A,
    KeysightN7714A,
    KeysightN7744A,
    KeysightN7745A,
    KeysightN7762A,
    KeysightN7764A,
)

SIM = "qslab.instruments.drivers.sims:keysight_n77xx.yaml"


def _open(cls, address):
    return cls(cls.__name__.lower(), address, pyvisa_sim_file=SIM)


@pytest.fixture
def laser():
    instrument = _open(KeysightN7714A, "GPIB::1::INSTR")
    yield instrument
    instrument.close()


@pytest.fixture
def voa():
    instrument = _open(KeysightN7762A, "GPIB::3::INSTR")
    yield instrument
    instrument.close()


@pytest.fixture
def meter():
    instrument = _open(KeysightN7744A, "GPIB::5::INSTR")
    yield instrument
    instrument.close()


@pytest.mark.parametrize(
    ("cls", "address", "model", "group", "count"),
    [
        (KeysightN7714A, "GPIB::1::INSTR", "N7714A", "ports", 4),
        (KeysightN7711A, "GPIB::2::INSTR", "N7711A", "ports", 1),
        (KeysightN7762A, "GPIB::3::INSTR", "N7762A", "attenuators", 2),
        (KeysightN7764A, "GPIB::4::INSTR", "N7764A", "attenuators", 4),
        (KeysightN7744A, "GPIB::5::INSTR", "N7744A", "channels", 4),
        (KeysightN7745A, "GPIB::6::INSTR", "N7745A", "channels", 8),
    ],
)
def test_idn_and_channel_count(cls, address, model, group, count):
    instrument = _open(cls, address)
    try:
        idn = instrument.get_idn()
        assert idn["vendor"] == "Keysight Technologies"
        assert idn["model"] == model
        assert len(getattr(instrument, group)) == count
    finally:
        instrument.close()


# --- laser -----------------------------------------------------------------------------------


def test_laser_wavelength_round_trip_is_per_port(laser):
    laser.port3.wavelength_m(1550.12e-9)
    assert laser.port3.wavelength_m() == pytest.approx(1550.12e-9, rel=1e-9)
    assert laser.port1.wavelength_m() == pytest.approx(1550e-9)


def test_laser_validators_come_from_min_max_queries(laser):
    wavelength = laser.port1.wavelength_m.vals
    assert (wavelength.min_value, wavelength.max_value) == (pytest.approx(1527.6e-9), pytest.approx(1565.5e-9))
    power_dbm = laser.port1.power_dbm.vals
    assert (power_dbm.min_value, power_dbm.max_value) == (6.0, 15.0)
    power_w = laser.port1.power_w.vals
    assert (power_w.min_value, power_w.max_value) == (pytest.approx(10 ** 0.6 * 1e-3), pytest.approx(10 ** 1.5 * 1e-3))


def test_laser_output_round_trip(laser):
    laser.port2.output_enabled(True)
    assert laser.port2.output_enabled() is True
    assert laser.port4.output_enabled() is False
    laser.all_outputs_off()
    assert laser.port2.output_enabled() is False


def test_laser_power_in_dbm_and_watt(laser):
    laser.port1.power_dbm(12.0)
    assert laser.port1.power_dbm() == pytest.approx(12.0)
    assert laser.port1.power_w() == pytest.approx(10 ** 1.2 * 1e-3)


def test_laser_power_is_sent_with_its_unit_whatever_the_display_unit(laser, record_writes):
    sent = record_writes(laser)
    laser.port1.power_unit("W")
    assert laser.port1.power_unit() == "W"
    laser.port1.power_w(0.01)
    assert sent[0] == b"SOUR1:POW:UNIT 1;:SYST:ERR?\n"  # a set and its error check: one message
    assert b"SOUR1:POW 1.00000000E+01DBM;:SYST:ERR?\n" in sent  # an explicit unit, never the display's
    assert laser.port1.power_dbm() == pytest.approx(10.0)
    assert sent[-1] == b"SOUR1:POW:UNIT 0;:SOUR1:POW?\n"  # read with the unit set in the same message
    assert laser.port1.power_unit.cache.get() == "dBm"


def test_laser_rejected_values_are_not_sent(laser, record_writes):
    sent = record_writes(laser)
    with pytest.raises(ValueError):
        laser.port1.wavelength_m(1600e-9)  # outside this (C-band) laser's MIN/MAX
    with pytest.raises(ValueError):
        laser.port1.power_dbm(16.0)
    with pytest.raises(ValueError):
        laser.port1.power_unit("mW")
    assert sent == []


def test_laser_refusal_raises_with_code_and_text(laser):
    # +14 dBm is inside "POW? MIN|MAX" but above what this laser reaches at this wavelength
    with pytest.raises(InstrumentError) as refused:
        laser.port2.power_dbm(14.0)
    error = refused.value
    assert (error.code, error.text) == (-113, "Undefined header")
    assert error.command == "SOUR2:POW 1.40000000E+01DBM"
    assert error.instrument == "keysightn7714a"
    assert "-113" in str(error) and "SOUR2:POW" in str(error)
    assert laser.port2.power_dbm() == pytest.approx(10.0)  # old value kept
    laser.check_errors()  # the queue was drained: nothing left to blame on the next command


def test_unknown_command_and_query_raise(laser):
    with pytest.raises(InstrumentError, match="SOUR1:BOGUS"):
        laser.write("SOUR1:BOGUS 1")
    laser.timeout(0.2)
    with pytest.raises(InstrumentError, match=r"SOUR1:BOGUS\?.*-113"):
        laser.ask("SOUR1:BOGUS?")


# --- attenuator ------------------------------------------------------------------------------


def test_attenuators_use_the_first_slot_of_each_pair(voa):
    assert [att.slot for att in voa.attenuators] == [1, 3]


def test_attenuation_round_trip_and_limits(voa, record_writes):
    sent = record_writes(voa)
    voa.att2.attenuation_db(12.5)
    assert sent[0] == b"INP3:ATT 12.5000;:SYST:ERR?\n"
    assert voa.att2.attenuation_db() == pytest.approx(12.5)
    assert voa.att1.attenuation_db() == pytest.approx(0.0)
    with pytest.raises(ValueError):
        voa.att1.attenuation_db(45.5)  # INP1:ATT? MAX is 45 dB
    voa.att1.refresh_limits()
    assert voa.att1.attenuation_db.vals.max_value == 45.0


def test_attenuator_wavelength_and_shutter(voa):
    voa.att1.wavelength_m(1310e-9)
    assert voa.att1.wavelength_m() == pytest.approx(1310e-9)
    voa.att1.shutter_open(True)
    assert voa.att1.shutter_open() is True
    assert voa.att2.shutter_open() is False


def test_attenuator_power_control(voa):
    voa.att1.power_control(True)
    assert voa.att1.power_control() is True
    voa.att1.power_setpoint_dbm(-3.0)
    assert voa.att1.power_setpoint_dbm() == pytest.approx(-3.0)
    assert voa.att1.power_setpoint_w() == pytest.approx(10 ** -0.3 * 1e-3)
    with pytest.raises(ValueError):
        voa.att1.power_setpoint_dbm(15.0)


def test_n7764a_has_four_attenuators_in_odd_slots():
    voa4 = _open(KeysightN7764A, "GPIB::4::INSTR")
    try:
        assert [att.slot for att in voa4.attenuators] == [1, 3, 5, 7]
        voa4.att4.attenuation_db(30.0)
        assert voa4.att4.attenuation_db() == pytest.approx(30.0)
    finally:
        voa4.close()


# --- power meter -----------------------------------------------------------------------------


def test_meter_settings_round_trip(meter, record_writes):
    sent = record_writes(meter)
    meter.ch2.wavelength_m(1550e-9)
    meter.ch2.auto_range(False)
    meter.ch2.range_dbm(-20)
    meter.ch2.averaging_time_s(0.5)
    assert sent == [command + b";:SYST:ERR?\n" for command in (b"SENS2:POW:WAV 1.55000000E-06", b"SENS2:POW:RANG:AUTO 0",
                                                                 b"SENS2:POW:RANG -20DBM", b"SENS2:POW:ATIM 5.000000E-01")]
    assert meter.ch2.wavelength_m() == pytest.approx(1550e-9)
    assert meter.ch2.auto_range() is False
    assert meter.ch2.range_dbm() == -20
    assert meter.ch2.averaging_time_s() == pytest.approx(0.5)
    assert meter.ch1.range_dbm() == 0


def test_meter_rejected_values_are_not_sent(meter, record_writes):
    sent = record_writes(meter)
    for parameter, value in [(meter.ch1.range_dbm, -25), (meter.ch1.range_dbm, 40),
                             (meter.ch1.averaging_time_s, 20.0), (meter.ch1.wavelength_m, 2e-6)]:
        with pytest.raises(ValueError):
            parameter(value)
    assert sent == []


def test_meter_readings_are_in_watt_whatever_the_unit(meter):
    assert meter.ch1.power_unit() == "W"
    assert meter.ch1.read_power_w() == pytest.approx(1e-6, rel=0.02)
    assert meter.ch3.fetch_power_w() == pytest.approx(1e-6)
    meter.ch3.power_unit("dBm")
    # the reading sets the unit to W in its own message ("SENS3:POW:UNIT 1;:FETC3:POW?"), so it is W again
    assert meter.ch3.fetch_power_w() == pytest.approx(1e-6)
    assert meter.ch3.power_unit() == "W"


def test_meter_continuous_trigger(meter):
    meter.ch4.continuous(True)
    assert meter.ch4.continuous() is True


# The same drivers over a raw socket, byte for byte: tests/drivers/test_n77xx_protocol.py.

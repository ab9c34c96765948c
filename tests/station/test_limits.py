"""Declared limits are enforced by the roles before any command is sent: a value beyond a limit never
reaches the instrument (a recorder on the driver's VISA handle or serial port sees nothing, and the
bench's state is unchanged)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from station_fixtures import bench_config

from qslab.instruments.optical import LimitError, ModulatorCalibration, ProcessorCalibration
from qslab.sequences.station import LabStation


def test_laser_power_above_its_limit_is_never_sent(station, record_writes):
    laser = station.laser()
    sent = record_writes(station.driver("laser"))
    before = station.bench.state.laser_ports[1].power_w
    for refused in (13.5, math.nan, math.inf):
        with pytest.raises(LimitError, match="server_laser: power .* nothing was sent"):
            laser.set_power_dbm(refused)
    assert sent == [] and station.bench.state.laser_ports[1].power_w == before
    with pytest.raises(LimitError, match=r"instruments.laser.limits.power_max_dbm = 13 dBm"):
        laser.set_power_dbm(13.01)
    laser.set_power_dbm(13.0)  # at the limit is allowed, and is sent
    assert sent and sent[0].startswith(b"SOUR1:POW 1.3")


def test_the_lo_limit_bounds_the_laser(record_writes):
    config = bench_config(**{"roles.server_receiver.limits.lo_power_max_w": 1e-3})
    with LabStation(config) as station:
        laser = station.laser()
        assert laser.power_max_dbm == pytest.approx(10.0)  # 1 mW / 0.1 = 10 mW
        sent = record_writes(station.driver("laser"))
        with pytest.raises(LimitError, match=r"would put 0.00126 W of LO on server_receiver .* "
                                             r"roles.server_receiver.limits.lo_power_max_w = 0.001 W"):
            laser.set_power_dbm(11.0)
        assert sent == []
        with pytest.raises(LimitError):
            station.receiver("server_receiver").check_lo_power_w(1.5e-3)


def test_laser_on_refuses_a_leftover_setting_above_the_limit(record_writes):
    with LabStation(bench_config(**{"instruments.laser.limits.power_max_dbm": 5.0})) as station:
        port = station.driver("laser").port1
        port.power_dbm(8.0)  # e.g. left by an earlier session (straight through the driver)
        sent = record_writes(station.driver("laser"))
        with pytest.raises(LimitError, match="power 8 dBm is above the declared limit"):
            station.laser().on()
        assert not any(b"POW:STAT" in message for message in sent)
        assert not station.bench.state.laser_ports[1].enabled and station.bench.state.laser_power_w() == 0.0


def test_attenuation_below_its_minimum_is_never_sent(station, record_writes):
    attenuator = station.attenuator()
    sent = record_writes(station.driver("attenuator"))
    with pytest.raises(LimitError, match=r"attenuation 5 dB is below the declared limit "
                                         r"instruments.attenuator.limits.attenuation_min_db = 10 dB"):
        attenuator.set_attenuation_db(5.0)
    assert sent == []
    with pytest.raises(LimitError, match="attenuation 0 dB is below"):  # the bench starts at 0 dB
        attenuator.open_shutter()
    assert sent == [b":OUTP1:POW:CONTR?;:INP1:ATT?\n"]  # it only read the state back (one message)
    state = station.bench.state.server_attenuator
    assert state.attenuation_db == 0.0 and not state.shutter_open


def test_amplifier_gain_above_its_limit_is_never_sent(station, record_writes):
    amplifier = station.amplifier()
    driver = station.driver("amplifier")
    sent = record_writes(driver)
    with pytest.raises(LimitError, match=r"gain 3.5 dB is above .* instruments.amplifier.limits.gain_max_db = 3 dB"):
        amplifier.set_gain_db(3.5)
    with pytest.raises(LimitError, match="output power set-point 1 dBm is above"):
        amplifier.set_output_power_dbm(1.0)
    with pytest.raises(ValueError):  # the driver's validator holds the same limit (second line of defence)
        driver.gain_db(3.5)
    assert sent == []
    assert station.bench.state.amplifier.gain_db == pytest.approx(1.1394)


def test_awg_drive_beyond_its_limit_is_never_sent(station, record_writes):
    sent = record_writes(station.driver("awg"))
    # Vpi 7 V at the modulator with a 1 V/V driver: a full field needs 14 Vpp, the limit is 1 Vpp
    iq = station.iq_modulator(ModulatorCalibration(vpi_v=7.0, driver_gain=1.0))
    fields = 0.9 * np.exp(2j * np.pi * np.arange(64) / 16)
    with pytest.raises(LimitError, match=r"server_iq_modulator: drive amplitude .* Vpp is above the declared limit "
                                         r"instruments.awg.limits.amplitude_max_vpp = 1 Vpp"):
        iq.load(fields, samples_per_symbol=64)
    carver = station.pulse_carver(ModulatorCalibration(vpi_v=7.0))
    with pytest.raises(LimitError, match="pulse_carver: drive amplitude"):
        carver.load(np.ones(64), samples_per_symbol=64)
    assert sent == []
    assert all(not ch.segments and ch.amplitude_vpp == 0.5 for ch in station.bench.state.awg.channels.values())


def test_processor_drive_beyond_its_limit_is_never_sent(station, record_writes):
    sent = record_writes(station.driver("client_awg"))
    processor = station.time_bin_processor(ProcessorCalibration(beam_splitter_vpi_v=5.0, phase_vpi_v=5.0))
    with pytest.raises(LimitError, match=r"client_processor: .*at least 95 % is needed"):
        processor.reach()  # far beyond the limit: refused, naming it
    assert sent == []
    half_v = 0.5 * processor.awg.amplitude_max.value  # what would be played is clipped to the limit, never over
    for drive_v in processor.drive_v(np.arange(1.0, 129.0)):
        assert np.abs(drive_v).max() <= half_v


def test_manual_bias_beyond_its_limit_is_never_sent_on_the_serial_port(record_writes):
    with LabStation(bench_config(**{"instruments.bias_iq.limits.bias_max_v": 2.0})) as station:
        iq = station.iq_modulator(ModulatorCalibration(vpi_v=3.5, driver_gain=7.0))
        sent = record_writes(station.driver("bias_iq"))
        with pytest.raises(LimitError, match=r"\|manual bias\| 3 V is above .* instruments.bias_iq.limits.bias_max_v"):
            iq.set_manual_bias_v(-3.0)
        assert sent == []
        emulator = station.bench.instruments["bias_iq"].emulator
        assert emulator.manual_mv == 0 and emulator.mode == 0
        iq.set_manual_bias_v(1.5)
        assert sent == [b"MZM:HOLD:VOLTAGE: 1500\n", b"MZM:MODE: 7\n"]
        assert station.bench.state.bias["bias_iq"].applied_v == pytest.approx(1.5)

"""Issue 15, items 5 (time) and 7 (units), on the virtual bench: the N77xx drivers against their emulators.

Time is the bench clock's (instruments/sim/clock.py): ``time_scale`` real seconds per instrument second, so a
10 s averaging is 1 s here. The driver's own timeout is set BELOW that real second: a driver that did not
lengthen its timeout by the work it asked for would time out whatever the host's speed; one that does has
more than ten times the work in hand.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qslab.analysis.units import dbm_to_w
from qslab.instruments.drivers.keysight_n77xx import KeysightN7714A, KeysightN7744A, KeysightN7762A
from qslab.instruments.sim.bench_parameters import defaults_table
from qslab.instruments.sim.server import Bench

TIME_SCALE = 0.1            # real s per instrument s
DRIVER_TIMEOUT_S = 0.5      # < 10 s averaging x TIME_SCALE


@pytest.fixture
def bench() -> Iterator[Bench]:
    with Bench.from_table({**defaults_table(), "time_scale": TIME_SCALE}) as served:
        yield served


def _meter(bench: Bench, timeout_s: float = DRIVER_TIMEOUT_S) -> KeysightN7744A:
    return KeysightN7744A("meter", bench.address("power_meter"), visalib="@py", timeout=timeout_s, device_clear=False)


def test_a_reading_averaged_for_10_s_takes_10_instrument_seconds_and_does_not_time_out(bench):
    meter = _meter(bench)
    meter.ch2.averaging_time_s(10.0)
    clock = bench.state.clock
    start_s = clock.now_s()
    reading_w = meter.ch2.read_power_w()
    assert clock.now_s() - start_s >= 10.0
    assert abs(reading_w) < 1e-3  # a number in W (no light on channel 2 with the laser off)
    assert meter.timeout() == pytest.approx(DRIVER_TIMEOUT_S)  # the longer timeout was for that reading only


def test_100_readings_of_0_1_s_in_one_message_take_10_instrument_seconds(bench):
    meter = _meter(bench)
    meter.ch1.averaging_time_s(0.1)
    clock = bench.state.clock
    start_s = clock.now_s()
    readings = meter.ch1.read_powers_w(100)
    assert len(readings) == 100
    assert clock.now_s() - start_s >= 10.0


def test_an_attenuation_move_takes_change_over_speed_and_does_not_time_out(bench):
    voa = KeysightN7762A("voa", bench.address("attenuator"), visalib="@py", timeout=DRIVER_TIMEOUT_S,
                         device_clear=False)
    voa.att1.attenuation_speed_db_s(5.0)
    voa.att1.attenuation_db(0.0)
    clock = bench.state.clock
    start_s = clock.now_s()
    voa.att1.attenuation_db(40.0)  # 8 instrument seconds at 5 dB/s
    assert clock.now_s() - start_s >= 8.0
    assert voa.att1.attenuation_db() == pytest.approx(40.0)


# --- units: someone changes the unit at the front panel between our commands ---------------------------


def test_laser_powers_survive_a_front_panel_unit_change(bench):
    laser = KeysightN7714A("laser", bench.address("laser"), visalib="@py", device_clear=False)
    emulator, port = bench.instruments["laser"].emulator, bench.state.laser_ports[1]
    emulator.front_panel_power_unit(1, "W")
    laser.port1.power_dbm(10.0)
    assert port.power_w == pytest.approx(10e-3)  # not 10 W, nor refused
    emulator.front_panel_power_unit(1, "dBm")
    laser.port1.power_w(0.008)
    assert port.power_w == pytest.approx(8e-3)  # not 0.008 dBm
    emulator.front_panel_power_unit(1, "W")
    assert laser.port1.power_dbm() == pytest.approx(9.0309, abs=1e-4)  # read in dBm, not 0.008 taken as dBm
    emulator.front_panel_power_unit(1, "dBm")
    assert laser.port1.power_w() == pytest.approx(8e-3)


def test_attenuator_setpoint_survives_a_front_panel_unit_change(bench):
    voa = KeysightN7762A("voa", bench.address("attenuator"), visalib="@py", device_clear=False)
    emulator, state = bench.instruments["attenuator"].emulator, bench.state.attenuators[1]
    emulator.front_panel_power_unit(1, "W")
    voa.att1.power_setpoint_dbm(-20.0)
    assert state.power_setpoint_w == pytest.approx(float(dbm_to_w(-20.0)))
    emulator.front_panel_power_unit(2, "dBm")  # either slot of the pair
    assert voa.att1.power_setpoint_w() == pytest.approx(1e-5)


def test_meter_readings_are_watts_after_a_front_panel_unit_change(bench):
    meter = _meter(bench, timeout_s=5.0)
    meter.ch1.averaging_time_s(0.01)
    emulator = bench.instruments["power_meter"].emulator
    emulator.front_panel_power_unit(1, "dBm")
    reading_w = meter.ch1.read_power_w()
    assert abs(reading_w) < 1e-3  # a dark reading in W; in dBm it would read about -60 or below
    emulator.front_panel_power_unit(1, "dBm")
    assert all(abs(value) < 1e-3 for value in meter.ch1.read_powers_w(3))


def test_the_attenuator_role_moves_at_the_fastest_speed_the_instrument_reports_and_charges_change_over_it(bench):
    from qslab.instruments.optical.attenuator import AttenuatorChannel
    from qslab.instruments.optical.limits import Limit

    voa = KeysightN7762A("voa", bench.address("attenuator"), visalib="@py", timeout=DRIVER_TIMEOUT_S,
                         device_clear=False)
    role = AttenuatorChannel.from_driver(voa, 1, attenuation_min=Limit(0.0, "dB", "test.attenuation_min_db"))
    role.set_attenuation_db(10.0)
    clock = bench.state.clock
    charged_s = clock.charged_s()
    role.set_attenuation_db(22.0)  # the default 10 dB/s: 1.2 instrument seconds
    assert clock.charged_s() - charged_s == pytest.approx(1.2)
    assert role.use_fastest_transitions() == pytest.approx(1000.0)  # the top of INP1:ATT:SPE? MIN/MAX
    assert voa.att1.attenuation_speed_db_s() == pytest.approx(1000.0)  # read back from the instrument
    charged_s = clock.charged_s()
    role.set_attenuation_db(10.0)  # the same 12 dB at 1000 dB/s: 12 ms
    assert clock.charged_s() - charged_s == pytest.approx(0.012)
    assert role.attenuation_db() == pytest.approx(10.0)

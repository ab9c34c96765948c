"""The modulator roles lock their bias loops and wait for them, naming modulator and controller on failure."""

from __future__ import annotations

import pytest
from station_fixtures import bench_config

from qslab.instruments.optical.bias_controller import BiasLockError
from qslab.instruments.optical.modulators import ModulatorCalibration
from qslab.sequences.station import LabStation

ACQUISITION_S = 2.0   # instrument seconds
TIME_SCALE = 0.05     # real seconds per instrument second


def test_the_modulator_role_waits_and_names_itself_and_its_controller():
    """Through the station: lock_bias waits for the loop; with the laser off it fails naming both."""
    config = bench_config(**{"bench.time_scale": TIME_SCALE, "bench.bias_lock.acquisition_time_s": ACQUISITION_S})
    with LabStation(config) as station:
        clock = station.benches[0].state.clock
        iq = station.iq_modulator(ModulatorCalibration(1.0, 7.0))
        with pytest.raises(BiasLockError, match=r"^server_iq_modulator: bias_iq: the bias loop did not lock at null"):
            iq.lock_bias(timeout_s=0.5)
        station.laser().set_power_dbm(10.0)
        station.laser().on()
        carver = station.pulse_carver(ModulatorCalibration(1.0, 6.0))
        started_s = clock.now_s()
        carver.lock_bias("peak")
        iq.lock_bias()
        assert clock.now_s() - started_s >= 2 * ACQUISITION_S   # each waited for its own sweep
        assert station.driver("bias_iq").mzm.is_locked()

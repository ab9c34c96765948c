"""Shortened measurement plans (issue 18) state what the long ones stated and still find the bench's truth.

Photons: twenty readings of 1 ms per point (one round trip) against the former twenty of 100 ms, on the same bench with
non-default true parameters. Both must land within 3 of their stated uncertainties of the truth, the short
plan's stated uncertainty within 1 % of the long plan's (the declared systematics dominate it,
calibration/photons.py), and it must ask the instruments for under 15 % of the time (the bench's ledger,
BenchClock.charged_s: 30 s of averaging become 0.3 s; the attenuator's travel, ~4 s at 10 dB/s, and the
laser's switch-on stay).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cal_bench_helpers import bench_config
from qcodes.instrument import Instrument

from qslab.analysis.estimate import Estimate
from qslab.calibration.photons import PhotonSettings, calibrate_photons
from qslab.instruments.optical import N774xPowerMeter
from qslab.sequences.station import LabStation

Z = 3.0
TRUTH = {"bench.server.tap_ratio": 0.02, "bench.server_attenuator.insertion_loss_db": 1.7,
         "bench.server_power_meter.dark_power_w": 8e-12, "protocol.mu_photons": 2.5, "bench.time_scale": 0.002}
LONG_PLAN = {"readings": 20, "averaging_time_s": 0.1}  # the plan before issue 18


@pytest.fixture(autouse=True)
def _close_all_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


def _photons(station, **plan):
    """(mu estimate, its truth at the chosen operating point, instrument seconds asked)."""
    p, fixed = station.config.protocol, station.config.calibration
    settings = PhotonSettings(p.symbol_rate_hz, p.wavelength_m,
                              Estimate(fixed.fixed_attenuation_db, fixed.fixed_attenuation_uncertainty_db, "dB"),
                              target_photons=p.mu_photons, **plan)
    laser, attenuator, clock = station.laser(), station.attenuator(), station.bench.state.clock
    output_meter = N774xPowerMeter(station.driver("power_meter").ch2, name="voa_output_meter")
    asked = clock.charged_s()
    result = calibrate_photons(laser, attenuator, station.power_meter(), output_meter, settings)
    asked = clock.charged_s() - asked
    laser.set_power_dbm(result.conditions["laser_power_dbm"])
    laser.on()
    attenuator.set_attenuation_db(result.conditions["attenuation_db"])
    attenuator.open_shutter()
    truth = station.bench.state.truth("server.photons_per_symbol")
    laser.off()
    attenuator.close_shutter()
    return result.parameters["server.photons_per_symbol"], truth, asked


@pytest.mark.parametrize("seed", [11, 12])
def test_short_photon_plan_states_the_long_plans_uncertainty_and_finds_the_truth(seed):
    with LabStation(bench_config(**TRUTH, **{"bench.seed": seed})) as station:
        short, short_truth, short_s = _photons(station)
        long, long_truth, long_s = _photons(station, **LONG_PLAN)
    assert PhotonSettings(1e9, 1550e-9, Estimate(0.0, 0.0)).averaging_time_s == 0.001  # the defaults: the short plan
    assert abs(short.value - short_truth) < Z * short.uncertainty, (short, short_truth)
    assert abs(long.value - long_truth) < Z * long.uncertainty, (long, long_truth)
    assert short.uncertainty / short.value == pytest.approx(long.uncertainty / long.value, rel=0.01)
    assert short_s < 0.15 * long_s, (short_s, long_s)

"""Photon number and homodyne calibrations on a virtual bench whose true parameters differ from the defaults:
every estimate within 3 of its stated uncertainties of the truth, and the uncertainties useful.

The truth is read from the bench (``BenchState.truth`` / its parameters) in these tests only; the
procedures see roles. Bad data (a dark laser, a clipped capture) gives one CalibrationError naming the
calibration, and the instruments are left safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from cal_bench_helpers import DeadLaser, bench_config
from qcodes.instrument import Instrument

from qslab.calibration.homodyne import HomodyneSettings, calibrate_homodyne
from qslab.calibration.photons import PhotonSettings, calibrate_photons
from qslab.calibration.result import CalibrationError, Estimate
from qslab.instruments.optical import N774xPowerMeter
from qslab.instruments.optical.homodyne_receiver import ReceiverDigitizer
from qslab.sequences.station import RECEIVERS, LabStation

Z = 3.0
TRUTH = {  # non-default true parameters of the bench
    "bench.client_receiver.efficiency": 0.72, "bench.client_receiver.electronic_noise_snu": 0.035,
    "bench.server_receiver.efficiency": 0.91, "bench.server_receiver.electronic_noise_snu": 0.062,
    "bench.server.tap_ratio": 0.02, "bench.server_attenuator.insertion_loss_db": 1.7,
    "bench.server_power_meter.dark_power_w": 8e-12, "protocol.mu_photons": 2.5,
}
POINTS = 2**20


@pytest.fixture(autouse=True)
def _close_all_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


def _station(**extra) -> LabStation:
    return LabStation(bench_config(**TRUTH, **extra))


def _assert_safe(station: LabStation) -> None:
    state = station.bench.state
    assert not state.server_laser.enabled
    assert not state.server_attenuator.shutter_open
    assert not state.amplifier.enabled


def _photon_settings(station, **changes) -> PhotonSettings:
    p = station.config.protocol
    fixed = station.config.calibration
    return PhotonSettings(p.symbol_rate_hz, p.wavelength_m, Estimate(fixed.fixed_attenuation_db, 0.02, "dB"),
                          target_photons=p.mu_photons,
                          **changes)


def _output_meter(station):
    return N774xPowerMeter(station.driver("power_meter").ch2, name="voa_output_meter")


def test_photons_per_symbol_within_3_sigma_at_about_1_percent(tmp_path, figures_drawn):
    with _station() as station:
        laser, attenuator = station.laser(), station.attenuator()
        result = calibrate_photons(laser, attenuator, station.power_meter(), _output_meter(station),
                                   _photon_settings(station), str(tmp_path / "photons.png"))
        _assert_safe(station)
        mu = result.parameters["server.photons_per_symbol"]
        # the truth at the operating point the procedure chose (the bench's live value there)
        laser.set_power_dbm(result.conditions["laser_power_dbm"])
        laser.on()
        attenuator.set_attenuation_db(result.conditions["attenuation_db"])
        attenuator.open_shutter()
        truth = station.bench.state.truth("server.photons_per_symbol")
    assert truth == pytest.approx(2.5, rel=0.05)  # it reached the configured target
    assert abs(mu.value - truth) < Z * mu.uncertainty, (mu, truth)
    assert mu.uncertainty / mu.value < 0.012
    assert (tmp_path / "photons.png").stat().st_size > 10_000
    assert result.raw["monitor_w"].size == 6 and result.conditions["uncertainty_budget_relative"]


def _homodyne(station, tmp_path, **changes):
    receivers = [station.receiver(name) for name in RECEIVERS]
    digitizer = ReceiverDigitizer(station.digitizer("digitizer"), receivers)
    settings = HomodyneSettings(station.config.protocol.symbol_rate_hz, points=POINTS, **changes)
    return settings, calibrate_homodyne(station.laser(), station.attenuator(), station.amplifier(), digitizer,
                                        receivers, settings, str(tmp_path))


def _true_lo_power_w(station, receiver: str, laser_power_dbm: float) -> float:
    laser = station.laser()
    laser.set_power_dbm(laser_power_dbm)
    laser.on()
    try:
        return station.bench.state.lo_power_w(receiver)
    finally:
        laser.off()


def test_homodyne_efficiency_and_electronic_noise_within_3_sigma(tmp_path, figures_drawn):
    with _station() as station:
        amplifier = station.amplifier()  # left on at G = 1.3: the procedure must switch it off (ASE is not vacuum)
        amplifier.set_gain(1.3)
        amplifier.on()
        settings, results = _homodyne(station, tmp_path)
        _assert_safe(station)
        params = station.bench.params
        lo_true = {name: _true_lo_power_w(station, name, settings.operating_laser_power_dbm) for name in RECEIVERS}
    for result in results:
        name = result.instrument
        truth = params.get(name)
        eta = result.parameters[f"{name}.efficiency"]
        v_el = result.parameters[f"{name}.electronic_noise_snu"]
        v_el_op = result.parameters[f"{name}.electronic_noise_snu_at_operating_lo"]
        assert abs(eta.value - truth.efficiency) < Z * eta.uncertainty, (name, eta, truth.efficiency)
        assert abs(v_el.value - truth.electronic_noise_snu) < Z * v_el.uncertainty, (name, v_el)
        expected_op = truth.electronic_noise_snu * truth.reference_lo_power_w / lo_true[name]
        assert abs(v_el_op.value - expected_op) < Z * v_el_op.uncertainty, (name, v_el_op, expected_op)
        assert eta.uncertainty / eta.value < 0.03 and v_el.uncertainty / v_el.value < 0.03
        assert v_el_op.uncertainty / v_el_op.value < 0.01  # a pure variance ratio: no LO-power systematic
        k2 = result.parameters[f"{name}.shot_noise_quadratic_v2_per_w2"]
        assert abs(k2.value) < 4 * k2.uncertainty  # the bench's LO carries no excess noise
        clearance = result.parameters[f"{name}.clearance_db"].value
        assert clearance == pytest.approx(10 * math.log10(1 + 1 / expected_op), abs=0.1)
        assert (tmp_path / f"homodyne-{name}.png").is_file()
    # the stored record gives the receiver role its SNU calibration
    from qslab.calibration.homodyne import receiver_calibration
    from qslab.calibration.records import RecordStore

    record = RecordStore(tmp_path / "records").write(results[0])
    loaded = receiver_calibration(record)
    assert loaded.record_id == record.id and loaded.samples_per_symbol == 8
    assert loaded.shot_noise_variance_v2 == results[0].parameters["client_receiver.shot_noise_variance_v2"].value


def test_homodyne_statistics_alone_are_unbiased_at_about_1_percent(tmp_path):
    """With an exact laser power scale the declared LO systematic can be dropped: the rest is ~1 %."""
    with _station(**{"bench.server_laser.power_offset_db": 0.0}) as station:
        _, results = _homodyne(station, tmp_path, lo_power_uncertainty_db=0.0)
        params = station.bench.params
    for result in results:
        name = result.instrument
        eta = result.parameters[f"{name}.efficiency"]
        v_el = result.parameters[f"{name}.electronic_noise_snu"]
        assert abs(eta.value - params.get(f"{name}.efficiency")) < Z * eta.uncertainty, (name, eta)
        assert abs(v_el.value - params.get(f"{name}.electronic_noise_snu")) < Z * v_el.uncertainty, (name, v_el)
        assert eta.uncertainty / eta.value < 0.02 and v_el.uncertainty / v_el.value < 0.015


def test_a_dark_laser_fails_both_calibrations_with_one_clear_error_and_leaves_the_bench_safe(tmp_path):
    with _station() as station:
        dead = DeadLaser(station.laser())
        with pytest.raises(CalibrationError) as photons:
            calibrate_photons(dead, station.attenuator(), station.power_meter(), _output_meter(station),
                              _photon_settings(station), str(tmp_path / "photons.png"))
        assert photons.value.calibration == "photons" and "no light on the monitor tap" in str(photons.value)
        _assert_safe(station)
        receivers = [station.receiver(name) for name in RECEIVERS]
        settings = HomodyneSettings(station.config.protocol.symbol_rate_hz, points=2**16)
        with pytest.raises(CalibrationError) as homodyne:
            calibrate_homodyne(dead, station.attenuator(), station.amplifier(),
                               ReceiverDigitizer(station.digitizer("digitizer"), receivers), receivers, settings)
        assert homodyne.value.calibration == "homodyne" and "the LO is missing" in str(homodyne.value)
        assert str(homodyne.value).count("\n") == 0
        _assert_safe(station)


def test_a_clipped_capture_is_refused(tmp_path):
    with _station() as station:
        receivers = [station.receiver(name) for name in RECEIVERS]
        # a range sized for an impossible efficiency: the shot noise overflows the ADC
        settings = HomodyneSettings(station.config.protocol.symbol_rate_hz, points=2**16, lowest_efficiency=200.0)
        with pytest.raises(CalibrationError, match=r"'homodyne' failed: client_receiver: .*clipped"):
            calibrate_homodyne(station.laser(), station.attenuator(), station.amplifier(),
                               ReceiverDigitizer(station.digitizer("digitizer"), receivers), receivers, settings)
        _assert_safe(station)


def test_amplifier_gain_and_noise_figure_within_3_sigma(tmp_path, figures_drawn):
    from qslab.calibration.amplifier import AmplifierSettings, calibrate_amplifier

    changes = {"bench.client_amplifier.gain_offset_db": 0.25, "bench.client_amplifier.noise_figure_db": 5.0}
    with _station(**changes) as station:
        receiver = station.receiver("client_receiver")
        eta = station.bench.params.client_receiver.efficiency  # as a homodyne record would give it (2 %)
        settings = AmplifierSettings(station.config.protocol.symbol_rate_hz, 1.3, Estimate(eta, 0.02 * eta))
        result = calibrate_amplifier(station.laser(), station.attenuator(), station.amplifier(),
                                     ReceiverDigitizer(station.digitizer("digitizer"), [receiver]), receiver,
                                     settings, str(tmp_path / "amplifier.png"))
        _assert_safe(station)
        amplifier = station.amplifier()
        amplifier.set_gain(1.3)
        amplifier.on()
        true_gain = station.bench.state.truth("client_amplifier.gain")
        amplifier.off()
    gain = result.parameters["client_amplifier.gain"]
    offset = result.parameters["client_amplifier.gain_offset_db"]
    nf = result.parameters["client_amplifier.noise_figure_db"]
    assert abs(gain.value - true_gain) < Z * gain.uncertainty, (gain, true_gain)
    assert gain.uncertainty / gain.value < 0.02
    assert abs(offset.value - 0.25) < Z * offset.uncertainty, offset
    assert abs(nf.value - 5.0) < Z * nf.uncertainty and nf.uncertainty < 0.2, nf
    assert (tmp_path / "amplifier.png").is_file()


def test_amplifier_without_a_carrier_fails_clearly(tmp_path):
    from qslab.calibration.amplifier import AmplifierSettings, calibrate_amplifier

    with _station() as station:
        receiver = station.receiver("client_receiver")
        settings = AmplifierSettings(station.config.protocol.symbol_rate_hz, 1.3, Estimate(0.72, 0.01), points=2**16)
        with pytest.raises(CalibrationError, match=r"'amplifier' failed: no shot noise"):
            calibrate_amplifier(DeadLaser(station.laser()), station.attenuator(), station.amplifier(),
                                ReceiverDigitizer(station.digitizer("digitizer"), [receiver]), receiver, settings)
        _assert_safe(station)

"""The roles' conversions: arcsine predistortion through the MZ field transfer (the bench's own model),
Givens angles whose unitary has the data as its first row, SNU scaling of synthetic receiver samples;
and the roles on the bench (the IQ modulator's symbols, the processor on its own AWG)."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import dsp
from qslab.analysis.givens import complex_unit_vector, givens_angles, givens_unitary
from qslab.instruments.optical import (AmplitudeModulator, AwgAmplitudeModulator, AwgChannels, AwgIQModulator,
                                 AwgTimeBinProcessor, DetectorSpec, DigitizerHomodyneReceiver, HomodyneReceiver,
                                 IQModulator, Laser, Limit, ModulatorCalibration, OpticalAmplifier, PowerMeter,
                                 ProcessorCalibration, ReceiverCalibration, TimeBinProcessor)
from qslab.instruments.optical import Attenuator as AttenuatorRole
from qslab.instruments.optical.awg_channels import codes_to_volts, volts_to_codes
from qslab.instruments.optical.time_bin_processor import wrap_phase_rad
from qslab.instruments.optical.modulators import arcsine_drive_v, null_biased_field
from qslab.instruments.optical.roles import AveragingPowerMeter
from qslab.analysis import modulator_transfer as mt
from qslab.instruments.sim.link.modulators import arm_phase_rad
from qslab.instruments.sim.link import model as physics
from qslab.instruments.sim.link.receivers import electronic_noise_rms_v, shot_noise_rms_v

RNG = np.random.default_rng(20240805)
LIMIT = Limit(1.0, "Vpp", "instruments.awg.limits.amplitude_max_vpp")


def _awg(*channels: int) -> AwgChannels:
    return AwgChannels(None, channels, amplitude_max=LIMIT, name="test")


def _null_biased_mzm_field(drive_at_modulator_v, vpi_v, extinction_ratio_db):
    """The bench's MZM biased exactly at null (theta = pi + pi u / Vpi)."""
    return mt.mzm_field(arm_phase_rad(drive_at_modulator_v, 0.0, vpi_v, 1.0, np.pi), extinction_ratio_db)


def test_arcsine_predistortion_round_trips_through_the_mz_transfer():
    calibration = ModulatorCalibration(vpi_v=3.0, driver_gain=6.0)
    carver = AwgAmplitudeModulator(_awg(3), calibration)
    amplitudes = np.concatenate([[0.0, 1.0], RNG.uniform(0, 1, 500)])
    volts = carver.drive_v(amplitudes)
    assert np.max(np.abs(volts)) == pytest.approx(calibration.vpi_at_awg_v)  # a = 1 is Vpi
    field = _null_biased_mzm_field(volts * calibration.driver_gain, calibration.vpi_v, extinction_ratio_db=30.0)
    np.testing.assert_allclose(field.real, amplitudes, atol=1e-12)  # finite ER leaks only into the other quadrature
    np.testing.assert_allclose(null_biased_field(volts, calibration.vpi_at_awg_v), amplitudes, atol=1e-12)
    for refused in ([1.2], [-0.1], [np.nan]):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            carver.drive_v(refused)


def test_iq_predistortion_undoes_imbalance_and_phase_error():
    calibration = ModulatorCalibration(vpi_v=3.5, driver_gain=7.0, iq_gain_imbalance=0.03, iq_phase_error_rad=0.02)
    iq = AwgIQModulator(_awg(1, 2), calibration)
    fields = RNG.uniform(-0.9, 0.9, 400) + 1j * RNG.uniform(-0.9, 0.9, 400)
    v_i, v_q = iq.drive_v(fields)
    theta_i, theta_q = (arm_phase_rad(v * calibration.driver_gain, 0.0, calibration.vpi_v, 1.0, np.pi)
                        for v in (v_i, v_q))
    output = mt.iq_field(theta_i, theta_q, 300.0, calibration.iq_gain_imbalance, calibration.iq_phase_error_rad)
    np.testing.assert_allclose(2 * output, fields, atol=1e-9)

    codes_i, codes_q, amplitude = iq.drive_codes(fields)  # int8 at one common amplitude
    assert codes_i.dtype == np.int8 and amplitude <= 1.0 and max(np.abs(codes_i).max(), np.abs(codes_q).max()) == 127
    quantised = [arm_phase_rad(codes_to_volts(c, amplitude) * calibration.driver_gain, 0.0, calibration.vpi_v, 1.0,
                                   np.pi) for c in (codes_i, codes_q)]
    output = mt.iq_field(*quantised, 300.0, calibration.iq_gain_imbalance, calibration.iq_phase_error_rad)
    assert np.max(np.abs(2 * output - fields)) < np.pi / 2 * 1 / 127  # half a code of drive, through the slope
    with pytest.raises(ValueError, match="child field"):
        iq.drive_v([0.99 + 0.99j])  # beyond reach once the imbalance is undone


def test_codes_quantise_and_refuse_clipping():
    volts = np.array([-0.5, -0.25, 0.0, 0.25, 0.5])
    np.testing.assert_array_equal(volts_to_codes(volts, 1.0), [-127, -64, 0, 64, 127])
    with pytest.raises(ValueError, match="do not fit"):
        volts_to_codes([0.6], 1.0)
    np.testing.assert_allclose(arcsine_drive_v([1.0, -1.0], 2.0), [2.0, -2.0])


@pytest.mark.parametrize("length", [1, 2, 7, 30, 784])
def test_givens_angles_reproduce_the_data_as_the_first_row(length):
    data = RNG.normal(size=length)
    x_hat = complex_unit_vector(data)
    theta, phi = givens_angles(x_hat)
    unitary = givens_unitary(theta, phi)
    np.testing.assert_allclose(unitary[0], np.conj(x_hat), atol=1e-12)
    np.testing.assert_allclose(unitary @ unitary.conj().T, np.eye(x_hat.size), atol=1e-12)
    np.testing.assert_allclose(unitary @ x_hat, np.eye(x_hat.size)[0], atol=1e-12)  # the data mode into bin 0
    # the same convention as the bench's link model
    np.testing.assert_allclose(theta, physics.givens_angles(x_hat)[0], atol=1e-12)
    np.testing.assert_allclose(unitary, physics.givens_matrix(theta, phi), atol=1e-12)


def test_processor_drives_reproduce_the_angles():
    calibration = ProcessorCalibration(beam_splitter_vpi_v=4.0, phase_vpi_v=3.0, beam_splitter_driver_gain=8.0,
                                       phase_driver_gain=6.0, beam_splitter_theta_offset_rad=0.1)
    processor = AwgTimeBinProcessor(_awg(1, 2), calibration)
    data = RNG.normal(size=40)
    beam_splitter_v, phase_v = processor.drive_v(data)
    theta, phi = processor.angles_from_drive_v(beam_splitter_v, phase_v)
    x_hat = complex_unit_vector(data)
    np.testing.assert_allclose(givens_unitary(theta, phi)[0], np.conj(x_hat), atol=1e-12)
    assert np.max(np.abs(phase_v)) <= calibration.phase_vpi_v / calibration.phase_driver_gain
    codes_bs, codes_pm, amplitudes = processor.drive_codes(data)
    assert codes_bs.shape == codes_pm.shape == (20,) and all(a <= 1.0 for a in amplitudes)
    with pytest.raises(ValueError, match="zero norm"):
        processor.angles(np.zeros(4))


def test_phases_wrap_into_one_turn_and_those_inside_stay_exact():
    inside = np.array([-np.pi, -1.0, 0.0, 0.1, np.nextafter(np.pi, 0.0)])
    np.testing.assert_array_equal(wrap_phase_rad(inside), inside)  # no (phi + pi) mod 2 pi - pi rounding
    turns = np.array([np.pi, 3.5, -4.0, 7.0 * np.pi + 0.25, -100.0])
    wrapped = wrap_phase_rad(turns)
    assert np.all((wrapped >= -np.pi) & (wrapped < np.pi))
    np.testing.assert_allclose(np.exp(1j * wrapped), np.exp(1j * turns), atol=1e-12)  # the same phase
    assert np.isnan(wrap_phase_rad([np.nan]))[0]


def _synthetic_record(quadratures_snu, shot_v, electronic_v, sps, rng):
    """Samples of a rect pulse per symbol whose matched-filter output is q sqrt(shot variance), plus noise."""
    template = np.ones(sps) / np.sqrt(sps)
    signal = np.repeat(quadratures_snu * shot_v, sps) * np.tile(template, quadratures_snu.size)
    return signal + rng.normal(0, shot_v, signal.size) + rng.normal(0, electronic_v, signal.size)


def test_homodyne_receiver_scales_samples_to_snu():
    rng, sps, n = np.random.default_rng(5), 8, 40_000
    shot_v, electronic_v = 2e-3, 0.5e-3
    dark = rng.normal(0, electronic_v, n * sps)
    vacuum = _synthetic_record(np.zeros(n), shot_v, electronic_v, sps, rng)
    calibration = ReceiverCalibration.from_records(vacuum, dark, np.ones(sps), sps, record_id="snu-test")
    assert calibration.shot_noise_variance_v2 == pytest.approx(shot_v**2, rel=5 * np.sqrt(2 / n) * 1.2)
    assert calibration.electronic_noise_snu == pytest.approx((electronic_v / shot_v) ** 2, rel=0.1)
    receiver = DigitizerHomodyneReceiver(DetectorSpec("synthetic", 4e3, 1.6e9, 4e-12), lo_fraction=0.1,
                                         lo_power_max=Limit(2e-3, "W", "test"), calibration=calibration, adc_bits=10)
    sent = rng.normal(0, 3.0, n)
    measured = receiver.quadratures_snu(_synthetic_record(sent, shot_v, electronic_v, sps, rng))
    slope = np.dot(measured, sent) / np.dot(sent, sent)
    assert slope == pytest.approx(1.0, abs=5 * np.sqrt(1.1 / np.dot(sent, sent)))
    assert np.var(measured - sent) == pytest.approx(1 + calibration.electronic_noise_snu, rel=5 * np.sqrt(2 / n))
    with pytest.raises(dsp.ClippingError):  # a range the record overflows is refused, not scaled
        receiver.quadratures_snu(vacuum, full_scale_v=2 * shot_v)
    with pytest.raises(RuntimeError, match="no shot-noise calibration"):
        DigitizerHomodyneReceiver(receiver.detector, lo_fraction=0.1, lo_power_max=receiver.lo_power_max).quadratures_snu(vacuum)


def test_detector_specs_in_the_config_match_the_bench(station):
    """The datasheet specs in lab_config.toml give the bench's shot and electronic noise (same physics)."""
    for name in ("client_receiver", "server_receiver"):
        receiver, truth = station.receiver(name), station.bench.params.get(name)
        rate, lo_w = 2e9, truth.reference_lo_power_w  # the bench's noise is white up to f_s / 2, here 1 GHz
        assert receiver.detector.shot_noise_rms_v(lo_w, rate / 2, truth.efficiency) == pytest.approx(
            shot_noise_rms_v(lo_w, truth.gain_v_per_w, truth.efficiency, rate, 1550e-9), rel=1e-12)
        assert receiver.detector.electronic_noise_rms_v(rate / 2) == pytest.approx(
            electronic_noise_rms_v(truth, rate, 1550e-9), rel=1e-2)
        assert receiver.detector.expected_electronic_noise_snu(lo_w, truth.efficiency) == pytest.approx(
            truth.electronic_noise_snu, rel=2e-2)


def test_the_station_hands_out_every_role(station):
    assert isinstance(station.laser(), Laser)
    assert isinstance(station.attenuator(), AttenuatorRole)
    assert isinstance(station.power_meter(), PowerMeter)
    assert isinstance(station.amplifier(), OpticalAmplifier)
    assert isinstance(station.pulse_carver(ModulatorCalibration(3.0, 6.0)), AmplitudeModulator)
    assert isinstance(station.iq_modulator(ModulatorCalibration(3.5, 7.0)), IQModulator)
    assert isinstance(station.time_bin_processor(ProcessorCalibration(4.0, 3.0, 8.0, 6.0)), TimeBinProcessor)
    assert isinstance(station.receiver("client_receiver"), HomodyneReceiver)


def test_the_meter_sets_an_averaging_time_only_when_it_holds_another_and_then_takes_that_long(station,
                                                                                              record_writes):
    """N774xPowerMeter.use_averaging_time_s: a check after every batch asks for the same averaging each time, so
    only a change is sent; the bench's meter then spends that averaging per reading on its clock."""
    meter = station.power_meter()
    assert isinstance(meter, AveragingPowerMeter)
    sent = record_writes(meter.channel.root_instrument)
    held_s = meter.channel.averaging_time_s.get()  # what the meter holds now, read back
    meter.use_averaging_time_s(held_s)
    assert not any(b"ATIM " in message for message in sent)
    meter.use_averaging_time_s(1e-3)
    meter.use_averaging_time_s(1e-3)
    assert sum(b"ATIM " in message for message in sent) == 1
    assert meter.channel.averaging_time_s.get() == pytest.approx(1e-3)  # read back from the meter
    clock = station.bench.state.clock
    before_s = clock.charged_s()
    meter.read_powers_w(5)
    assert clock.charged_s() - before_s == pytest.approx(5e-3)


def test_iq_modulator_on_the_bench_sends_the_asked_symbols(station):
    """With the bench's true Vpi and imbalance as the calibration, the bench's symbols are the target fields."""
    truth, state = station.bench.params, station.bench.state
    calibration = ModulatorCalibration(truth.server_iq.vpi_v, truth.server_iq.driver_gain,
                                       truth.server_iq.iq_gain_imbalance, truth.server_iq.iq_phase_error_rad)
    iq = station.iq_modulator(calibration)
    laser = station.laser()
    laser.set_power_dbm(10.0)
    laser.on()
    station.pulse_carver(calibration).lock_bias("peak")
    iq.lock_bias()
    sps = iq.awg.samples_per_symbol(station.config.protocol.symbol_rate_hz)
    assert sps == 64
    fields = 0.8 * (RNG.uniform(-1, 1, 256) + 1j * RNG.uniform(-1, 1, 256)) / np.sqrt(2)
    iq.load(fields, sps)
    station.driver("awg").run()
    symbols = state.modulation().symbol_fields
    # symbols = scale x fields + offset: carver, losses and global phase in the scale; the carrier leakage of the
    # children's finite extinction ratio is the constant offset (nulling it is a calibration's job)
    design = np.column_stack([fields, np.ones_like(fields)])
    (scale, offset), *_ = np.linalg.lstsq(design, symbols, rcond=None)
    residual = (symbols - offset) / scale - fields
    assert np.sqrt(np.mean(np.abs(residual) ** 2)) < 0.01  # bias-lock residual and int8 steps
    assert abs(offset / scale) == pytest.approx(np.sqrt(2) * 10 ** (-25 / 20), rel=0.2)  # ER 25 dB, both children
    assert state.awg.channels[1].amplitude_vpp <= 1.0


def test_processor_loads_its_own_awg_not_the_servers(station):
    processor = station.time_bin_processor(ProcessorCalibration(4.0, 3.0, 8.0, 6.0))
    client_awg = station.driver("client_awg")
    sps = processor.awg.samples_per_symbol(station.config.protocol.symbol_rate_hz)
    processor.load(RNG.normal(size=128), sps)  # 64 time bins
    assert client_awg.ask(":TRAC1:CAT?") == f"1,{64 * sps}" and client_awg.ch2.output_enabled()
    assert all(not ch.segments for ch in station.bench.state.awg.channels.values())  # the server AWG is untouched

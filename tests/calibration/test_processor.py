"""The client processor's calibration on a bench whose processor differs from its datasheet: V_pi, offset and
loss per pass within 3 sigma of the truth, the record improving the client's projection, and the photon
cross-check catching a wrongly declared attenuation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cal_bench_helpers import bench_config
from qcodes.instrument import Instrument

from qslab.analysis.dsp import matched_filter, temporal_mode_efficiency
from qslab.analysis.encoding import unit_vectors
from qslab.calibration.processor import design_vectors, fit_processor
from qslab.calibration.records import RecordError, RecordStore
from qslab.calibration.result import CalibrationError
from qslab.instruments.sim.link import waveform as wf
from qslab.sequences.calibrations import KIND_NAMES, CalibrationOptions, missing_records, run_kind
from qslab.sequences.protocol import SecureLink
from qslab.sequences.station_calibration import load_station_calibration
from qslab.sequences.session import ensure_calibrations
from qslab.sequences.station import LabStation

Z = 3.0
TRUTH = {  # the processor's true modulators and loss, away from the config's datasheet values (3.2 V, 3.6 V, 0, 0.3 dB)
    "bench.client_processor.beam_splitter_vpi_v": 3.45, "bench.client_processor.phase_vpi_v": 3.3,
    "bench.client_processor.beam_splitter_theta_offset_rad": 0.04, "bench.client_processor.loss_per_pass_db": 0.6,
}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """Every record of a session on the changed bench, the processor's among them (the session's own path)."""
    directory = tmp_path_factory.mktemp("records")
    store = RecordStore(directory)
    station = LabStation(bench_config(**TRUTH))
    with station:
        ensure_calibrations(station, store, directory)
        truth = {k: station.bench.state.truth(k.removeprefix("bench.")) for k in TRUTH}
        calibration = load_station_calibration(store, 7.0, channel=False)
        errors = {}
        for label, used in (("record", calibration), ("datasheet", load_station_calibration(store, 7.0, channel=False,
                                                                                            processor=False))):
            link = SecureLink(station, used, gain=1.3, laser_power_dbm=10.0, verify_fraction=0.01)
            x_hat = unit_vectors(np.random.default_rng(1).standard_normal((4, 2 * 392)))
            link.client_awg.stop()
            link.processor.load_batch(x_hat, 16)
            link.client_awg.run()
            played = station.bench.state.processor_load().x_hat
            errors[label] = float(np.linalg.norm(played - x_hat) / np.linalg.norm(x_hat))
            link.client_awg.stop()
    Instrument.close_all()
    return store.require("processor", "client_processor"), truth, errors


@pytest.mark.parametrize("key", sorted(TRUTH))
def test_each_processor_estimate_lies_within_3_sigma_of_the_truth(calibrated, key):
    record, truth, _ = calibrated
    estimate = record.estimate(key.removeprefix("bench."))
    assert abs(estimate.value - truth[key]) <= Z * estimate.uncertainty, (key, estimate, truth[key])


def test_the_half_wave_voltages_are_measured_to_about_one_percent(calibrated):
    """What is measured is V_pi at the AWG; at the modulator it adds the datasheet gain's tolerance (DECISIONS U)."""
    record, _, _ = calibrated
    for key in ("client_processor.beam_splitter_vpi_at_awg_v", "client_processor.phase_vpi_at_awg_v"):
        estimate = record.estimate(key)
        assert estimate.uncertainty / estimate.value < 0.012, (key, estimate)
    for key in ("client_processor.beam_splitter_vpi_v", "client_processor.phase_vpi_v"):
        estimate = record.estimate(key)
        assert 0.05 < estimate.uncertainty / estimate.value < 0.07, (key, estimate)


def test_the_record_makes_the_processor_project_onto_the_intended_vector(calibrated):
    _, _, errors = calibrated
    assert errors["datasheet"] > 0.05           # 8 % and 8 % wrong V_pi, a 0.04 rad offset: a visibly wrong x_hat
    assert errors["record"] < errors["datasheet"] / 5, errors


def test_the_photon_cross_check_agrees_with_the_meters(calibrated):
    record, _, _ = calibrated
    assert abs(record.conditions["photons_cross_check_z"]) < Z
    mu = record.estimate("server.photons_per_symbol_homodyne")
    assert 0.03 < mu.uncertainty / mu.value < 0.15     # as good as eta_c T is known: a few %, not a blank cheque


def test_a_wrongly_declared_fixed_attenuation_fails_the_photon_cross_check(tmp_path, calibrated_store_at):
    """3 dB more declared than the bench has (a 50/50 coupler counted that is not there): the meters under-count
    by half, the homodynes see the truth (the check resolves ~7 %, so errors of ~25 % and more are caught).

    The store starts with the bench's records (tests/conftest.py) less the photons and processor ones: the declared
    attenuation enters only the photons calibration (calibration/photons.py), so the homodyne, amplifier and
    modulator records of the same bench serve, and the session's pre-flight runs photons, then the processor."""
    calibrated_store_at(tmp_path)
    for path in [*tmp_path.glob("photons-*.h5"), *tmp_path.glob("processor-*.h5")]:
        path.unlink()
    store = RecordStore(tmp_path)
    assert set(missing_records(store, KIND_NAMES)) == {"photons", "processor"}
    station = LabStation(bench_config(**{"calibration.fixed_attenuation_db": 23.0}))
    with station:
        with pytest.raises(CalibrationError, match="photon cross-check.*fixed attenuation"):
            ensure_calibrations(station, store, tmp_path)
    Instrument.close_all()
    assert station.safe_state.as_dict()["safe"]
    with pytest.raises(RecordError):
        store.require("processor", "client_processor")
    store.require("photons", "server_output")  # the earlier records stand; only the failing one is not written


def test_the_processor_calibration_refuses_to_run_without_its_prerequisites(tmp_path):
    from qslab.sequences.calibrations import CalibrationRefused

    with LabStation(bench_config()) as station:
        with pytest.raises(CalibrationRefused, match="calibration 'processor' cannot run: no 'homodyne' calibration"):
            run_kind("processor", station, RecordStore(tmp_path), CalibrationOptions.from_config(station.config),
                     tmp_path)
    Instrument.close_all()


def test_design_vectors_sweep_the_drive_range_and_leave_the_rest_at_zero():
    x_hat = design_vectors(200, 392, np.random.default_rng(0), active_bins=6)
    assert np.allclose(np.linalg.norm(x_hat, axis=1), 1.0)
    assert np.all(x_hat[:, 6:] == 0)
    assert np.all(np.abs(x_hat[:, :6]) > 0)


def test_temporal_mode_efficiency_matches_a_monte_carlo_through_the_bench_renderer():
    """Independent route: render known quadratures with the bench's detector model and regress the matched filter."""
    sps, rate = 8, 1e9
    config = wf.WaveformConfig(samples_per_symbol=sps, symbol_rate_hz=rate, detector_bandwidth_hz=1.6e9,
                               adc_bits=16, adc_full_scale_v=1.0, shot_noise_rms_v=0.01)
    rng = np.random.default_rng(5)
    x = 3.0 * rng.standard_normal(200_000)
    volts = wf.analog_waveform(x, config, rng)
    vacuum = wf.analog_waveform(rng.standard_normal(200_000), config, rng)  # quadratures carry their own vacuum
    out, noise = (matched_filter(v, np.ones(sps), sps, 0, x.size) for v in (volts, vacuum))
    slope = float(np.polyfit(x, out, 1)[0])
    m_monte_carlo = slope**2 / float(np.var(noise))
    m = temporal_mode_efficiency(1.6e9, 1, sps * rate, np.ones(sps), sps, 0)
    assert math.isclose(m_monte_carlo, m, rel_tol=0.01), (m_monte_carlo, m)
    assert m < 0.95  # a real loss: the shot-noise-level efficiency does not contain it


def _synthetic(rng, s_bs=3.3, theta_0=0.02, s_ph=6.5, gain=0.43 * np.exp(0.7j), images=64, rows=64, modes=40):
    """Outcomes from known slopes through the chain's unitary (qslab.analysis.givens.givens_unitary: its first row is
    conj(x)), an independent route to the fit's unit_vector_from_angles."""
    from qslab.analysis.givens import givens_unitary

    volts_bs = rng.uniform(0.0, 0.45, (images, modes))
    volts_bs[:, 0] = (0.5 * np.pi - theta_0) / s_bs          # bin 0 loads the empty loop: theta_0 = pi/2 exactly
    volts_ph = rng.uniform(-0.45, 0.45, (images, modes))
    first_row = givens_unitary(s_bs * volts_bs + theta_0, s_ph * volts_ph)[:, 0, :]   # conj(x) per image
    pilots = np.sqrt(3.0) * (rng.standard_normal((rows, modes)) + 1j * rng.standard_normal((rows, modes)))
    clean = 2.0 * (gain * (first_row @ pilots.T)).real
    return clean + rng.standard_normal(clean.shape), volts_bs, volts_ph, pilots


def test_the_fit_recovers_known_slopes_from_an_independent_chain_model():
    outcomes, volts_bs, volts_ph, pilots = _synthetic(np.random.default_rng(7))
    fit = fit_processor(outcomes, volts_bs, volts_ph, pilots, beam_splitter_rad_per_v=3.0, phase_rad_per_v=7.0)
    sigma = fit.sigmas
    for value, truth, index in ((fit.beam_splitter_rad_per_v, 3.3, 0), (fit.theta_offset_rad, 0.02, 1),
                                (fit.phase_rad_per_v, 6.5, 2)):
        assert abs(value - truth) <= 3 * sigma[index], (value, truth, sigma[index])
    assert abs(fit.gain_abs.value - 0.43) <= 3 * fit.gain_abs.uncertainty


def test_noise_where_the_products_should_be_fails_with_one_clear_error():
    rng = np.random.default_rng(8)
    _, volts_bs, volts_ph, pilots = _synthetic(rng)
    noise = rng.standard_normal((volts_bs.shape[0], pilots.shape[0]))
    with pytest.raises(CalibrationError, match="do not follow the test symbols"):
        fit_processor(noise, volts_bs, volts_ph, pilots, beam_splitter_rad_per_v=3.0, phase_rad_per_v=7.0)

"""Waveform level and receiver DSP: quadratures -> volts -> quadratures (docs/PHYSICS.md 7-8)."""

import threading

import numpy as np
import pytest

from qslab.analysis import dsp
from qslab.analysis.encoding import unit_vectors
from qslab.instruments.sim.link import model as ph
from qslab.instruments.sim.link import render_kernels
from qslab.instruments.sim.link import waveform as wf

Z = 5.0

FILTERED = {
    "first-order, gaussian pulse": wf.WaveformConfig(pulse_shape="gaussian", detector_bandwidth_hz=250e6,
                                                     filter_order=1, electronic_noise_snu=0.05),
    "4th-order Butterworth, rect pulse": wf.WaveformConfig(pulse_shape="rect", detector_bandwidth_hz=150e6,
                                                           filter_order=4, electronic_noise_snu=0.05),
}


def _close(measured, expected, standard_error, what):
    assert abs(measured - expected) <= Z * standard_error, (
        f"{what}: measured {measured}, expected {expected}, |diff|/SE = {abs(measured - expected) / standard_error}")


def _symbol_level_outcomes(n, seed):
    """The client's homodyne outcomes from the physics model: one row, one image repeated n times."""
    params = ph.LinkParameters(mu_photons=4.0, gain=2.0)
    x = unit_vectors(np.arange(1.0, 9.0))
    symbols = np.array([[1.0 + 0.5j, -0.3 + 1j, 0.8, 0.2j]])
    x_meas, _ = ph.secure_products(symbols, np.broadcast_to(x, (n, 4)), params, np.random.default_rng(seed), 0.0)
    return x_meas[:, 0]


@pytest.mark.parametrize("shape", ["rect", "gaussian"])
def test_matched_filter_recovers_each_symbol_exactly_without_bandwidth_limit(shape):
    """The sample-level vacuum lives outside the symbol's mode: the matched filter returns X_k itself."""
    config = wf.WaveformConfig(pulse_shape=shape)
    rng = np.random.default_rng(0)
    x = 3.0 * rng.standard_normal(1000)
    volts = wf.analog_waveform(x, config, rng)
    response = wf.matched_filter_response(config)
    recovered = dsp.quadratures_snu(volts, response.template, 8, response.offset_samples,
                                    response.shot_noise_variance_v2, n_symbols=1000)
    np.testing.assert_allclose(recovered, x, atol=1e-12)
    np.testing.assert_allclose(response.template, wf.pulse_template(config), atol=1e-15)
    assert response.main_tap == pytest.approx(1.0) and np.sum(response.taps**2) == pytest.approx(1.0)


def test_vacuum_samples_carry_one_snu_each_and_adc_error_is_bounded():
    config = wf.WaveformConfig(pulse_shape="gaussian", electronic_noise_snu=0.1, adc_bits=12)
    rng = np.random.default_rng(1)
    n = 50_000
    volts = wf.analog_waveform(rng.standard_normal(n), config, rng)
    per_sample = np.var(volts) / config.shot_noise_rms_v**2
    _close(per_sample, 1.1, 1.1 * np.sqrt(2 / volts.size), "vacuum variance per sample")
    digitized = wf.digitize(volts, config)
    assert digitized.clipped_samples == 0
    assert np.max(np.abs(digitized.samples_v - volts)) <= 0.5 * config.volts_per_code + 1e-15


@pytest.mark.parametrize("name", sorted(FILTERED))
def test_round_trip_statistics_through_a_band_limited_detector(name):
    """Symbol-level outcomes -> volts -> DSP: means and variance as predicted by the filter response."""
    config = FILTERED[name]
    n = 200_000
    x = _symbol_level_outcomes(n, seed=2)
    rng = np.random.default_rng(3)
    record = wf.quadratures_to_waveform(x, config, rng)
    response = wf.matched_filter_response(config)
    assert record.clipped_samples == 0
    # calibrate 1 SNU and v_el from LO-only and dark records, as in the lab
    vacuum = wf.quadratures_to_waveform(rng.standard_normal(n), config, rng)
    dark = wf.dark_waveform(n, config, rng)
    calibration = dsp.calibrate_shot_noise(vacuum.samples_v, dark.samples_v, response.template,
                                           config.samples_per_symbol, response.offset_samples)
    _close(calibration.shot_noise_variance_v2, response.shot_noise_variance_v2,
           response.shot_noise_variance_v2 * np.sqrt(2 / n) * 1.2, "shot-noise variance")
    _close(calibration.electronic_noise_snu, config.electronic_noise_snu,
           config.electronic_noise_snu * np.sqrt(2 / n) * 1.5, "electronic noise")

    y = dsp.quadratures_snu(record.samples_v, response.template, config.samples_per_symbol, response.offset_samples,
                            calibration.shot_noise_variance_v2, n_symbols=n,
                            full_scale_v=config.adc_full_scale_v, adc_bits=config.adc_bits)
    mean_x, var_x = x.mean(), x.var()
    expected_mean = np.sum(response.taps) * mean_x
    expected_var = 1.0 + config.electronic_noise_snu + np.sum(response.taps**2) * (var_x - 1.0)
    # scale uncertainty from the calibration adds sqrt(2/n)/2 relative to the mean and sqrt(2/n) to the variance
    _close(y.mean(), expected_mean, np.hypot(np.sqrt(expected_var / n), abs(expected_mean) * np.sqrt(0.5 / n)), "mean")
    _close(y.var(), expected_var, expected_var * np.sqrt(2 / n) * np.sqrt(2), "variance")
    assert 0.9 < response.mode_matching_efficiency < 1.0  # the band limit costs a few percent here
    # symbol by symbol: recovered = main tap x X_k + (ISI + vacuum + electronics) of ~ unit variance
    residual = y - response.main_tap * x
    assert residual.var() < 1.0 + config.electronic_noise_snu + 0.2 * var_x


def test_dsp_finds_the_symbol_timing():
    config = FILTERED["4th-order Butterworth, rect pulse"]
    response = wf.matched_filter_response(config)
    assert response.offset_samples > 0  # the filter delays the pulse by a few samples
    rng = np.random.default_rng(4)
    pilots = 6.0 * rng.choice([-1.0, 1.0], 2000)
    record = wf.quadratures_to_waveform(pilots, config, rng)
    assert dsp.find_symbol_offset(record.samples_v, response.template, config.samples_per_symbol) == \
        response.offset_samples


def test_clipping_is_reported_and_refused():
    config = wf.WaveformConfig(adc_bits=10, adc_full_scale_v=0.2)
    rng = np.random.default_rng(5)
    strong = np.full(100, 60.0)  # 60 SNU x 10 mV x f_n ~ 0.21 V per sample: over the 0.2 V range
    record = wf.quadratures_to_waveform(strong, config, rng)
    assert record.clipped_samples > 0 and record.clipped_fraction > 0.1
    response = wf.matched_filter_response(config)
    with pytest.raises(dsp.ClippingError, match="clipped"):
        dsp.quadratures_snu(record.samples_v, response.template, 8, 0, response.shot_noise_variance_v2,
                            full_scale_v=config.adc_full_scale_v, adc_bits=config.adc_bits)
    quiet = wf.quadratures_to_waveform(rng.standard_normal(100), config, rng)
    assert quiet.clipped_samples == 0
    assert dsp.check_clipping(quiet.samples_v, config.adc_full_scale_v, config.adc_bits) == 0


def test_seed_reproduces_the_record():
    config = FILTERED["first-order, gaussian pulse"]
    x = np.linspace(-2, 2, 50)
    a = wf.quadratures_to_waveform(x, config, np.random.default_rng(6))
    b = wf.quadratures_to_waveform(x, config, np.random.default_rng(6))
    assert np.array_equal(a.codes, b.codes) and a.codes.dtype == np.int16
    assert a.codes.shape == ((50 + 1) * config.samples_per_symbol,)


@pytest.mark.parametrize("kwargs, name", [
    (dict(samples_per_symbol=0), "samples_per_symbol"),
    (dict(pulse_shape="sinc"), "pulse_shape"),
    (dict(detector_bandwidth_hz=900e6), "detector_bandwidth_hz"),
    (dict(filter_order=0), "filter_order"),
    (dict(electronic_noise_snu=-0.01), "electronic_noise_snu"),
    (dict(adc_bits=1), "adc_bits"),
    (dict(adc_full_scale_v=0.0), "adc_full_scale_v"),
])
def test_bad_configuration_names_itself(kwargs, name):
    with pytest.raises(ValueError, match=name):
        wf.WaveformConfig(**kwargs)


def test_dsp_refuses_bad_input():
    with pytest.raises(ValueError, match="template length"):
        dsp.matched_filter(np.zeros(80), np.ones(4), 8)
    with pytest.raises(ValueError, match="offset_samples"):
        dsp.matched_filter(np.zeros(80), np.ones(8), 8, offset_samples=8)
    with pytest.raises(ValueError, match="n_symbols"):
        dsp.matched_filter(np.zeros(80), np.ones(8), 8, n_symbols=11)
    with pytest.raises(ValueError, match="shot noise"):
        dsp.calibrate_shot_noise(np.zeros(80), np.ones(80) * np.arange(80), np.ones(8), 8)


# --- the fast renderer of the bench's session acquisitions -------------------------------------------

@pytest.mark.parametrize("name", sorted(FILTERED))
def test_fast_renderer_has_the_statistics_of_the_reference_model(name):
    """digitized_words (float32, one normal per sample, in chunks) against analog_waveform + digitize."""
    config = FILTERED[name]
    n = 100_000
    x = _symbol_level_outcomes(n, seed=7)
    words, clipped = wf.digitized_words(x, (n + 1) * config.samples_per_symbol, config,
                                        np.random.Generator(np.random.SFC64(8)), code_scale=16)
    reference = wf.quadratures_to_waveform(x, config, np.random.default_rng(9))
    assert clipped == 0 and words.dtype == np.int16 and words.size == reference.codes.size
    assert np.all(words % 16 == 0)  # left-aligned codes
    response = wf.matched_filter_response(config)
    for samples in (words * config.volts_per_code / 16, reference.samples_v):
        y = dsp.quadratures_snu(samples, response.template, config.samples_per_symbol, response.offset_samples,
                                response.shot_noise_variance_v2, n_symbols=n)
        expected_var = 1.0 + config.electronic_noise_snu + np.sum(response.taps**2) * (x.var() - 1.0)
        _close(y.mean(), np.sum(response.taps) * x.mean(), np.sqrt(expected_var / n), "mean")
        _close(y.var(), expected_var, expected_var * np.sqrt(2 / n), "variance")
        residual = y - _predicted(x, response.taps)
        residual_var = 1.0 + config.electronic_noise_snu - np.sum(response.taps**2)
        _close(residual.var(), residual_var, residual_var * np.sqrt(2 / n) * 1.5, "variance beyond the known symbols")
    # the vacuum after the symbols: the same per-sample variance and spectrum (lag correlations) as the reference
    fast_vacuum = wf.digitized_words([], 400_000, config, np.random.Generator(np.random.SFC64(10)))[0].astype(float)
    slow_vacuum = wf.quadratures_to_waveform(np.random.default_rng(11).standard_normal(50_000), config,
                                             np.random.default_rng(12)).codes.astype(float)
    for lag in (0, 1, 3):
        fast = np.mean(fast_vacuum[lag:] * fast_vacuum[:fast_vacuum.size - lag])
        slow = np.mean(slow_vacuum[lag:] * slow_vacuum[:slow_vacuum.size - lag])
        _close(fast, slow, np.var(slow_vacuum) * np.sqrt(2 / slow_vacuum.size) * 3, f"autocorrelation at lag {lag}")


def _predicted(x, taps):
    """sum_j taps[j] x[k - j + 1] (x[-1] = 0 before the record; the slot after the last is unknown vacuum)."""
    out = taps[0] * np.concatenate([x[1:], [0.0]]) + taps[1] * x
    for j, tap in enumerate(taps[2:], start=1):
        out[j:] += tap * x[:-j]
    return out


def test_fast_renderer_dark_record_offset_and_clipping():
    config = FILTERED["first-order, gaussian pulse"]
    dark, _ = wf.digitized_words(np.full(10, 50.0), 80_000, config, np.random.Generator(np.random.SFC64(13)),
                                 lo_on=False)
    reference = wf.dark_waveform(10_000, config, np.random.default_rng(14)).codes
    _close(np.var(dark), np.var(reference), np.var(reference) * np.sqrt(2 / reference.size) * 3, "dark variance")
    offset_v = 0.05
    shifted, _ = wf.digitized_words([], 8000, config, np.random.Generator(np.random.SFC64(15)), offset_v=offset_v)
    _close(np.mean(shifted) * config.volts_per_code, -offset_v, config.shot_noise_rms_v * 0.05, "offset")
    strong, clipped = wf.digitized_words(np.full(100, 60.0), 800, wf.WaveformConfig(adc_bits=10, adc_full_scale_v=0.2),
                                         np.random.Generator(np.random.SFC64(16)))
    assert clipped > 100 and strong.max() == 511 and strong.min() >= -512


@pytest.mark.parametrize("order, bandwidth_hz", [(1, 250e6), (1, 160e6), (1, 20e6), (4, 150e6)])
def test_chunked_filter_continues_exactly_across_chunks(order, bandwidth_hz):
    """The renderer's low-pass, chunk by chunk, equals scipy's over the whole record (float32 rounding); 160 MHz at
    800 MSa/s is the bench's receivers' 1.6 GHz at 8 GSa/s (8 taps: its tail cut at IIR_TRUNCATION)."""
    config = wf.WaveformConfig(detector_bandwidth_hz=bandwidth_hz, filter_order=order)
    x = np.random.default_rng(17).standard_normal(5000)
    expected = wf.detector_filter(x, config)
    filt = wf._ChunkFilter(config)
    assert (filt.sos is None) == (order == 1 and bandwidth_hz > 100e6)  # a long first-order response uses sosfilt
    pieces = []
    for chunk in np.split(x, [700, 1400, 3000]):
        filt.input(chunk.size)[:] = chunk * filt.input_gain
        pieces.append(filt.run().copy())
    np.testing.assert_allclose(np.concatenate(pieces), expected, rtol=0, atol=2e-6 * np.max(np.abs(expected)))


def test_a_chunk_longer_than_the_threads_work_arrays_keeps_the_previous_chunks_tail():
    """The work arrays grow for a longer chunk mid-record; the history must move with them (it was lost, so the
    test above failed whenever its thread's arrays were still small, i.e. depending on test order). Run in a
    fresh thread, whose work arrays start empty."""
    config = wf.WaveformConfig(detector_bandwidth_hz=250e6, filter_order=1)
    x = np.random.default_rng(17).standard_normal(5000)
    expected = wf.detector_filter(x, config)
    pieces = []

    def render():
        filt = wf._ChunkFilter(config)
        for chunk in np.split(x, [700, 1400, 3000]):  # 700, 700, then 1600 and 2000: longer than the arrays so far
            filt.input(chunk.size)[:] = chunk * filt.input_gain
            pieces.append(filt.run().copy())

    thread = threading.Thread(target=render)
    thread.start()
    thread.join()
    np.testing.assert_allclose(np.concatenate(pieces), expected, rtol=0, atol=2e-6 * np.max(np.abs(expected)))


@pytest.mark.parametrize("pulse", ["rect", "gaussian"])
def test_the_along_mode_step_is_the_column_by_column_float32_arithmetic_bit_for_bit(pulse):
    """The compiled along-mode step gives the very floats of NumPy's float32 operations in the order written (the
    dot product summed column by column, then (X_k + w f.slot_k) g_j added to each column): nothing reordered or
    fused into multiply-adds, which would change a record's bits from one host's processor to another's."""
    config = wf.WaveformConfig(samples_per_symbol=8, pulse_shape=pulse)
    rng = np.random.default_rng(21)
    slots = rng.standard_normal((1000, 8)).astype(np.float32)
    quadratures = rng.standard_normal(900).astype(np.float32)  # the last 100 slots are vacuum: left as they are
    template = wf._template_f32(config)
    gains = (np.float32(2.5) * template).astype(np.float32) if pulse == "gaussian" else np.full(8, 2.5, np.float32)
    white = np.float32(-0.3)
    dot = np.zeros(900, dtype=np.float32)
    for j in range(8):
        dot += slots[:900, j] * template[j]
    along = quadratures + white * dot
    expected = slots.copy()
    for j in range(8):
        expected[:900, j] += along * gains[j]
    got = slots.copy()
    render_kernels.add_along_mode(got.reshape(-1), quadratures, template, white, gains)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_the_adc_step_rounds_half_to_even_clips_counts_and_left_aligns():
    """render_kernels.quantize against NumPy's rint, clip and count, at the halves and both ends of the range."""
    values = np.array([-600.0, -512.5, -511.5, -0.5, 0.5, 1.5, 2.5, 510.5, 511.4, 511.6, 1e6], dtype=np.float32)
    out = np.empty(values.size, dtype=np.int16)
    clipped = render_kernels.quantize(values, np.float32(0.25), np.float32(-512), np.float32(511), np.float32(64),
                                      out)
    codes = np.rint(values - np.float32(0.25))
    assert clipped == np.count_nonzero((codes < -512) | (codes > 511))
    np.testing.assert_array_equal(out, (np.clip(codes, -512, 511) * 64).astype(np.int16))

"""The calibrations' records rendered by their fast routes are the reference routes' bits, draw for draw.

Two shortcuts of the bench's single-symbol acquisitions (instruments/sim/link/receivers.py) must not move a
single bit or leave the random stream elsewhere, since every later draw of the digitizer follows them:
- at gain 1 (the client's amplifier off) the verified rows skip the joint algebra that gain 1 cancels
  (model._unamplified_rows against model._verified_rows, the general route);
- the float64 records are rendered chunk by chunk in cache (waveform.digitized_record against
  digitize(analog_waveform(...)), the reference renderer, and its dark twin).
Each comparison also checks the generator's state afterwards (the next draw would differ otherwise).
"""

from __future__ import annotations

import numpy as np
import pytest

from qslab.instruments.sim.link import model as ph
from qslab.instruments.sim.link import receivers as rc
from qslab.instruments.sim.link import waveform as wf


def _rows_inputs(batch: int, n_rows: int, n_modes: int, seed: int):
    """x_hat, its float32 basis, symbols, beta and the signals, as _secure_products prepares them."""
    rng = np.random.default_rng(seed)
    x_hat = rng.standard_normal((batch, n_modes)) + 1j * rng.standard_normal((batch, n_modes))
    x_hat /= np.linalg.norm(x_hat, axis=1, keepdims=True)
    symbols = 1.5 * (rng.standard_normal((n_rows, n_modes)) + 1j * rng.standard_normal((n_rows, n_modes)))
    basis = np.empty((batch, 2, n_modes), dtype=np.float32)
    basis[:, 0], basis[:, 1] = x_hat.real, x_hat.imag
    beta = np.conj(x_hat) @ symbols.T
    signals = np.concatenate([0.7 * symbols.real, 0.7 * symbols.imag]).astype(np.float32)
    return x_hat, basis, symbols, beta, signals


def _run_rows(route, params, inputs, seed: int, given_p):
    x_hat, basis, symbols, beta, signals = inputs
    returned = np.random.default_rng(seed + 100).standard_normal(
        (x_hat.shape[0], symbols.shape[0], x_hat.shape[1])).astype(np.float32)
    scratch = np.empty_like(returned)
    rng = np.random.default_rng(seed)
    x_meas, measure_p = route(x_hat, basis, symbols, beta, params, rng, returned, scratch, signals, given_p)
    return x_meas, measure_p, returned, rng.bit_generator.state


@pytest.mark.parametrize("electronic", [0.0, 0.07])
@pytest.mark.parametrize("given", [False, True])
@pytest.mark.parametrize("shape", [(1, 4097, 1), (3, 17, 5)])
def test_unamplified_rows_are_the_joint_routes_bits(electronic, given, shape):
    batch, n_rows, n_modes = shape
    params = ph.LinkParameters(mu_photons=2.0, gain=1.0, forward_transmittance=0.6, return_transmittance=0.7,
                               processor_loss_per_pass_db=0.8, client_efficiency=0.8, server_efficiency=0.85,
                               client_electronic_noise_snu=electronic, server_electronic_noise_snu=electronic)
    inputs = _rows_inputs(batch, n_rows, n_modes, seed=3)
    given_p = np.random.default_rng(9).random((batch, n_rows)) < 0.5 if given else None
    fast = _run_rows(ph._unamplified_rows, params, inputs, 11, given_p)
    joint = _run_rows(ph._verified_rows, params, inputs, 11, given_p)
    for a, b in zip(fast[:3], joint[:3]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b, strict=True)
    assert fast[3] == joint[3]  # the stream continues from the same place


def test_the_joint_route_differs_above_gain_one():
    """The comparison above can fail: with any gain the client reads amplified light the shortcut never draws."""
    params = ph.LinkParameters(mu_photons=2.0, gain=1.0 + 1e-6, client_efficiency=0.8, server_efficiency=0.85)
    inputs = _rows_inputs(1, 257, 1, seed=4)
    fast = _run_rows(ph._unamplified_rows, params, inputs, 5, None)
    joint = _run_rows(ph._verified_rows, params, inputs, 5, None)
    assert not np.array_equal(fast[0], joint[0]) and not np.array_equal(fast[2], joint[2])


def test_secure_products_at_gain_one_is_unchanged_end_to_end():
    """Through secure_products (the calibrations' call): the general route's outputs, recomputed here by the
    reference model's own algebra at gain 1: the client reads the coupler's vacuum, the server w plus the signal."""
    params = ph.LinkParameters(mu_photons=1.0, gain=1.0, client_efficiency=0.8, server_efficiency=0.85)
    sent = np.random.default_rng(2).standard_normal(3000) * (1 + 0.5j)
    x_meas, record = ph.secure_products(sent[:, None], np.ones((1, 1), complex), params, np.random.default_rng(8),
                                        verify_fraction=1.0)
    # the client's outcomes have the vacuum's statistics (unit variance in SNU, mean 0: no light reaches it)
    assert abs(float(np.mean(x_meas))) < 5 / np.sqrt(sent.size)
    assert abs(float(np.var(x_meas)) - 1.0) < 5 * np.sqrt(2 / sent.size)
    # the server's returned quadratures carry the signal sqrt(eta T t) Q(alpha) (all transmittances 1 here)
    quadrature = np.where(record.measure_p[0], 2 * sent.imag, 2 * sent.real)
    residual = record.returned_quadratures_snu[0, :, 0] - np.sqrt(0.85) * quadrature
    assert abs(float(np.var(residual)) - 1.0) < 5 * np.sqrt(2 / sent.size)


CONFIGS = {
    "bench receiver (first order, rect)": wf.WaveformConfig(
        samples_per_symbol=8, symbol_rate_hz=1e9, detector_bandwidth_hz=1.6e9, electronic_noise_snu=0.05,
        shot_noise_rms_v=0.01, adc_bits=10, adc_full_scale_v=0.06),
    "clipping, 4th order, gaussian": wf.WaveformConfig(
        samples_per_symbol=5, symbol_rate_hz=1e9, pulse_shape="gaussian", detector_bandwidth_hz=1.2e9,
        filter_order=4, electronic_noise_snu=0.3, shot_noise_rms_v=0.01, adc_bits=8, adc_full_scale_v=0.02),
    "no filter, no electronic noise": wf.WaveformConfig(
        samples_per_symbol=4, symbol_rate_hz=1e9, electronic_noise_snu=0.0, shot_noise_rms_v=0.01, adc_bits=12,
        adc_full_scale_v=0.08),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("lo_on", [True, False])
@pytest.mark.parametrize("points", [wf.RECORD_CHUNK_SLOTS * 8 * 2 + 5, 999, 16])
def test_digitized_record_is_the_reference_renderers_bits(name, lo_on, points):
    config = CONFIGS[name]
    sps = config.samples_per_symbol
    n_symbols = -(-points // sps)
    quadratures = (3.0 * np.random.default_rng(1).standard_normal(n_symbols)).astype(np.float32) if lo_on else None
    shift_v = 0.0037
    reference_rng, fast_rng = np.random.default_rng(21), np.random.default_rng(21)
    if lo_on:
        volts = wf.analog_waveform(quadratures, config, reference_rng)[:points]
    else:
        volts = wf.dark_analog_waveform(n_symbols, config, reference_rng)[:points]
    reference = wf.digitize(volts + shift_v, config)
    fast = wf.digitized_record(quadratures, points, config, fast_rng, shift_v=shift_v)
    np.testing.assert_array_equal(fast.codes, reference.codes, strict=True)
    assert fast.clipped_samples == reference.clipped_samples
    assert fast_rng.bit_generator.state == reference_rng.bit_generator.state
    if name.startswith("clipping") and points > 999:
        assert reference.clipped_samples > 0  # the clipping count is exercised


@pytest.mark.parametrize("bits", [10, 16])
def test_one_records_words_are_the_rounded_mean(bits):
    shift = 2 ** (rc.WORD_BITS - bits)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    codes = np.random.default_rng(3).integers(low, high + 1, size=10_000).astype(np.int16)
    codes[:2] = low, high
    expected = np.clip(np.rint(codes.astype(float) * shift), -(2 ** 15), 2 ** 15 - 1).astype(np.int16)
    np.testing.assert_array_equal(rc._averaged_words(codes, 1, shift), expected, strict=True)
    total = codes.astype(float) + np.roll(codes, 1)
    np.testing.assert_array_equal(rc._averaged_words(total, 2, shift),
                                  np.clip(np.rint(total / 2 * shift), -(2 ** 15), 2 ** 15 - 1).astype(np.int16))

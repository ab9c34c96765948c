"""The pilots' fits (analysis/pilots.py) on synthetic acquisitions made from the optical fields they model.

The samples are built as the receivers see the light (a quadrature of the returned field, plus
vacuum noise), not from the fits' design matrices, so a sign or frame error in a fit shows here.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qslab.analysis.encoding import unit_vectors
from qslab.analysis.pilots import client_pilot_fit, iq_skew, least_squares, server_offsets, server_pilot_fit
from qslab.instruments.optical.modulators import skewed

ROWS, MODES, IMAGES = 64, 32, 8
OFFSET_SIGMA_SNU = 1.0 / np.sqrt(IMAGES * ROWS * MODES / 2)  # a mean over the X (or P) samples of vacuum


def _quadrature(field: np.ndarray, measure_p: np.ndarray) -> np.ndarray:
    """What a homodyne reads in SNU: 2 Re(field) on X rows, 2 Im(field) on P rows (measure_p [B, v])."""
    return np.where(measure_p[..., None], 2.0 * field.imag, 2.0 * field.real)


def _capture(returned_field: np.ndarray, seed: int, noise_snu: float = 1.0) -> SimpleNamespace:
    """Every row gated, a random quadrature per (image, row), vacuum noise on each sample."""
    rng = np.random.default_rng(seed)
    measure_p = rng.random((IMAGES, ROWS)) < 0.5
    field = np.broadcast_to(returned_field, (IMAGES, ROWS, MODES))
    returned = _quadrature(field, measure_p) + noise_snu * rng.standard_normal((IMAGES, ROWS, MODES))
    return SimpleNamespace(verified_rows=np.arange(ROWS), measure_p=measure_p, returned_snu=returned.astype(np.float32))


def _symbols(seed: int, mu_photons: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sqrt(mu_photons / 2) * (rng.standard_normal((ROWS, MODES)) + 1j * rng.standard_normal((ROWS, MODES)))


@pytest.mark.parametrize("phase_rad", [0.3, 2.5, -1.9])
def test_the_server_fit_finds_the_channel_phase_and_the_carrier_leakage(phase_rad):
    """Returned field t (alpha + l) e^{i phi}: the fit gives phi, t, l, and the channel's samples t x sent."""
    alpha, t, leakage = _symbols(1), 0.7, 0.15 - 0.08j
    capture = _capture(t * (alpha + leakage) * np.exp(1j * phase_rad), seed=2)
    offset, (ts, tc), amplitude = server_offsets(capture, alpha)
    assert amplitude == pytest.approx(t, rel=0.01)
    expected = 2 * t * leakage * np.exp(1j * phase_rad)  # X and P of the leakage field, in SNU
    assert abs(offset.real - expected.real) < 4 * OFFSET_SIGMA_SNU and abs(offset.imag - expected.imag) < 4 * OFFSET_SIGMA_SNU

    phase, fitted_leakage, sent, returned = server_pilot_fit(capture, alpha)
    assert np.angle(np.exp(1j * (phase - phase_rad))) == pytest.approx(0.0, abs=0.01)
    assert abs(fitted_leakage - leakage) < 4 * np.sqrt(2) * OFFSET_SIGMA_SNU / (2 * t)
    assert sent.dtype == returned.dtype == np.float32
    assert np.allclose(sent, _quadrature(np.broadcast_to(alpha * np.exp(1j * phase), sent.shape), capture.measure_p),
                       atol=1e-4)
    residual = returned - t * sent
    assert np.std(residual) == pytest.approx(1.0, rel=0.03)  # only the vacuum is left
    assert abs(np.mean(residual)) < 4 * OFFSET_SIGMA_SNU / np.sqrt(2)


def test_the_client_fit_finds_its_phase_gain_and_the_leakage_it_sees():
    """X = k 2 Re((beta + sigma l) e^{i phi_c}), beta the projection of the client's unit vectors on the pilots."""
    rng = np.random.default_rng(4)
    reference = _symbols(3)
    x_hat = unit_vectors(rng.standard_normal((IMAGES, 2 * MODES)))
    phase_rad, gain, leakage = -2.2, 0.9, 0.05 + 0.12j
    field = (np.conj(x_hat) @ reference.T + np.conj(x_hat).sum(axis=1, keepdims=True) * leakage) * np.exp(1j * phase_rad)
    measured = gain * 2.0 * field.real + rng.standard_normal(field.shape)
    fitted_phase, fitted_gain, fitted_leakage = client_pilot_fit(x_hat, reference, measured.astype(np.float32))
    assert np.angle(np.exp(1j * (fitted_phase - phase_rad))) == pytest.approx(0.0, abs=0.03)
    assert fitted_gain == pytest.approx(gain, rel=0.03)
    assert fitted_leakage == pytest.approx(leakage, abs=0.03)


@pytest.mark.parametrize("skew_symbols", [0.2, -0.15])
def test_iq_skew_finds_a_late_or_early_q_drive(skew_symbols):
    """The played Q averaged over each slot with its neighbour (instruments/optical/modulators.py, skewed),
    rows played one after the other: the fit gives the delay within 3 sigma, and sigma is small."""
    alpha, t, phase_rad = _symbols(5), 0.8, 0.4
    played = alpha.real + 1j * skewed(alpha.imag.ravel(), skew_symbols).reshape(alpha.shape)
    estimate = iq_skew(_capture(t * played * np.exp(1j * phase_rad), seed=6), alpha, phase_rad)
    assert abs(estimate.value - skew_symbols) <= 3 * estimate.uncertainty, estimate
    assert estimate.uncertainty < abs(skew_symbols) / 10


def test_iq_skew_does_not_take_the_receivers_memory_for_a_skew():
    """A receiver that keeps 10 % of the previous symbol (its bandwidth) acts on I and Q alike: no skew."""
    alpha, t, phase_rad = _symbols(7), 0.8, -0.6
    flat = alpha.ravel()
    remembered = (flat + 0.1 * np.roll(flat, 1)).reshape(alpha.shape)
    estimate = iq_skew(_capture(t * remembered * np.exp(1j * phase_rad), seed=8), alpha, phase_rad)
    assert abs(estimate.value) <= 3 * estimate.uncertainty, estimate
    assert estimate.uncertainty < 0.015


@pytest.mark.parametrize("column_scale", [1.0, 1e-2, 1e4])
def test_least_squares_is_lstsqs_solution_for_a_tall_design(column_scale):
    """The normal equations against numpy's SVD-based lstsq, on designs like the pilots' (indicator columns beside
    signal columns) and with one column rescaled (a worse conditioned Gram matrix)."""
    rng = np.random.default_rng(5)
    flags = rng.random(50_000) < 0.5
    design = np.stack([rng.standard_normal(50_000), column_scale * rng.standard_normal(50_000), ~flags, flags], axis=1)
    y = design @ np.array([0.7, -0.2, 0.05, -0.03]) + rng.standard_normal(50_000)
    coefficients, gram = least_squares(design.astype(np.float64), y)
    reference = np.linalg.lstsq(design.astype(np.float64), y, rcond=None)[0]
    assert np.allclose(coefficients, reference, rtol=1e-9, atol=1e-12)
    assert np.allclose(gram, design.T.astype(np.float64) @ design, rtol=1e-12)


def test_least_squares_of_a_nearly_singular_design_falls_back_to_lstsq():
    rng = np.random.default_rng(6)
    first = rng.standard_normal(1000)
    design = np.stack([first, first + 1e-9 * rng.standard_normal(1000)], axis=1)
    y = first + 0.1 * rng.standard_normal(1000)
    coefficients, _ = least_squares(design, y)
    assert np.allclose(coefficients, np.linalg.lstsq(design, y, rcond=None)[0], rtol=1e-6)

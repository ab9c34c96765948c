"""The calibrations' acquisitions by their fast route are the reference route's bits, draw for draw.

At gain 1 (the client's amplifier off) the bench's single-symbol acquisitions (instruments/sim/link/receivers.py)
skip the joint algebra that gain 1 cancels (model._unamplified_rows against model._verified_rows, the general
route). That shortcut must not move a single bit or leave the random stream elsewhere, since every later draw of
the digitizer follows it: each comparison also checks the generator's state afterwards. And a record's words
are its codes, left-aligned.
"""

from __future__ import annotations

import numpy as np
import pytest

from qslab.instruments.sim.link import model as ph
from qslab.instruments.sim.link import receivers as rc


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

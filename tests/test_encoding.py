"""One encoding of weights and data (analysis/encoding.py) for the lab's protocol and the bench's link model."""

import numpy as np
import pytest

from qslab.analysis.encoding import mean_power, pack_weights, pilot_symbol_table, unit_vectors, weight_symbols
from qslab.analysis.givens import complex_unit_vector


def test_unit_vectors_encode_each_row_bit_for_bit_as_the_single_vector_rule():
    rng = np.random.default_rng(5)
    data = np.where(rng.random((12, 783)) < 0.7, 0.0, rng.standard_normal((12, 783)))  # zeros, an odd length
    data[0, :4] = -0.0
    x_hat = unit_vectors(data)
    expected = np.stack([complex_unit_vector(row) for row in data])
    assert x_hat.shape == (12, 392)
    assert np.array_equal(x_hat.view(np.float64), expected.view(np.float64))
    assert np.array_equal(np.signbit(x_hat.view(np.float64)), np.signbit(expected.view(np.float64)))
    assert np.array_equal(unit_vectors(data[3]), x_hat[3])


def test_weight_symbols_carry_mu_per_layer_and_two_weights_per_mode():
    w = np.random.default_rng(6).standard_normal((7, 9))
    symbols, scale = pack_weights(w, 2.5)
    assert np.mean(np.abs(symbols) ** 2) == pytest.approx(2.5, rel=1e-12)
    np.testing.assert_allclose(symbols[:, :4], scale * (w[:, 0:8:2] + 1j * w[:, 1:8:2]), rtol=1e-13)
    assert np.array_equal(weight_symbols(w, 2.5), symbols)
    assert np.mean(np.abs(pilot_symbol_table(64, 16, 2.5)) ** 2) == pytest.approx(2.5, rel=1e-12)


@pytest.mark.parametrize("data, match", [(np.zeros((2, 4)), "zero norm"), (np.array([[1.0, np.nan]]), "finite"),
                                         (np.zeros((0, 4)), "non-empty")])
def test_vectors_the_client_cannot_normalise_are_refused(data, match):
    with pytest.raises(ValueError, match=match):
        unit_vectors(data)


def test_weights_without_a_scale_are_refused():
    with pytest.raises(ValueError, match="all zero"):
        pack_weights(np.zeros((2, 4)), 1.0)
    with pytest.raises(ValueError, match="mu_photons"):
        pack_weights(np.ones((2, 4)), -1.0)


def test_mean_power_is_the_mean_squared_magnitude():
    rng = np.random.default_rng(4)
    fields = rng.standard_normal((300, 17)) + 1j * rng.standard_normal((300, 17))
    np.testing.assert_allclose(mean_power(fields), np.mean(np.abs(fields) ** 2), rtol=1e-14)
    np.testing.assert_allclose(mean_power(fields.real), np.mean(fields.real ** 2), rtol=1e-14)
    assert mean_power(np.array([3.0 + 4.0j])) == 25.0

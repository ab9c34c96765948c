"""qslab.analysis.givens: the Givens chain's angles and their inverse (the vector the chain projects onto)."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis.givens import complex_unit_vector, givens_angles, givens_unitary, unit_vector_from_angles

RNG = np.random.default_rng(1729)


def _unit_vectors(batch: int, n: int) -> np.ndarray:
    x = RNG.normal(size=(batch, n)) + 1j * RNG.normal(size=(batch, n))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("n", [1, 2, 8, 392])
def test_angles_then_inverse_give_the_vector_back(n):
    x = _unit_vectors(16, n)
    theta, phi = givens_angles(x)
    np.testing.assert_allclose(unit_vector_from_angles(theta, phi), x, rtol=0, atol=1e-12)


def test_inverse_handles_leading_inner_and_trailing_zeros_and_real_data():
    data = np.array([0.0, 0.0, 0.3, -0.1, 0.0, 0.0, 0.7, 0.2, 0.0, 0.0])  # modes 0 and 2 and 4 are zero
    x = complex_unit_vector(data)
    np.testing.assert_allclose(unit_vector_from_angles(*givens_angles(x)), x, rtol=0, atol=1e-12)


def test_inverse_is_the_conjugate_first_row_of_the_chain_for_any_angles():
    """Any angles (bin 0 loading the empty loop): givens_unitary's first row is conj(x_hat), a unit vector."""
    theta = RNG.uniform(-np.pi, np.pi, (5, 9))
    theta[:, 0] = np.pi / 2
    phi = RNG.uniform(-np.pi, np.pi, (5, 9))
    x = unit_vector_from_angles(theta, phi)
    np.testing.assert_allclose(givens_unitary(theta, phi)[:, 0, :], np.conj(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=0, atol=1e-12)


def test_a_bin_zero_short_of_loading_the_loop_keeps_the_direction():
    """A quantised theta_0 != pi/2 leaves cos(theta_0) of the (empty) loop: only the renormalised direction counts."""
    x = _unit_vectors(1, 6)[0]
    theta, phi = givens_angles(x)
    short = theta.copy()
    short[0] -= 0.01
    moved = unit_vector_from_angles(short, phi)
    assert np.linalg.norm(moved) == pytest.approx(1.0, abs=1e-12)
    expected = x.copy()
    expected[0] *= np.sin(short[0])
    np.testing.assert_allclose(moved, expected / np.linalg.norm(expected), rtol=0, atol=1e-12)


def test_inverse_refuses_bad_shapes_and_angles_that_project_onto_nothing():
    with pytest.raises(ValueError, match="one shape"):
        unit_vector_from_angles(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="project onto nothing"):
        unit_vector_from_angles(np.zeros(3), np.zeros(3))

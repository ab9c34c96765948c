"""Entropy functions and symplectic spectra, checked against mpmath and constructed states."""

import mpmath
import numpy as np
import pytest
from hypothesis import given, strategies as st

from qslab.analysis.gaussian import (binary_entropy_bits, entropy_photons_bits, entropy_snu_bits, is_physical,
                               symplectic_eigenvalues, symplectic_form, von_neumann_entropy_bits)


def g_mpmath(n):
    n = mpmath.mpf(n)
    return float((n + 1) * mpmath.log(n + 1, 2) - n * mpmath.log(n, 2)) if n > 0 else 0.0


def test_anchor_values():
    assert entropy_snu_bits(3.0) == pytest.approx(2.0, abs=1e-14)
    assert entropy_photons_bits(1.0) == pytest.approx(2.0, abs=1e-14)
    assert entropy_photons_bits(0.0) == 0.0
    assert entropy_snu_bits(1.0) == 0.0


def test_round_off_below_vacuum_is_clamped_not_nan():
    values = entropy_snu_bits(np.array([1.0 - 1e-15, 1.0 - 1e-9, 0.5]))
    assert np.all(values == 0.0)
    assert entropy_photons_bits(-1e-17) == 0.0


@pytest.mark.parametrize("n", [1e-9, 1e-4, 0.001, 0.0125, 0.1, 0.5, 2.0, 10.0, 1e3])
def test_g_matches_40_digit_reference(n):
    with mpmath.workdps(40):
        expected = g_mpmath(n)
    assert entropy_photons_bits(n) == pytest.approx(expected, rel=1e-12)


def test_g_is_continuous_at_vacuum():
    tiny = np.geomspace(1e-300, 1e-6, 50)
    values = entropy_photons_bits(tiny)
    assert np.all(np.isfinite(values)) and np.all(np.diff(values) > 0) and values[0] < 1e-290


def test_binary_entropy():
    assert binary_entropy_bits(0.5) == pytest.approx(1.0)
    assert binary_entropy_bits(0.0) == 0.0 and binary_entropy_bits(1.0) == 0.0


def random_symplectic(n_modes, rng):
    """A random symplectic matrix: passive unitary x single-mode squeezers x passive unitary."""
    def passive():
        z = rng.normal(size=(n_modes, n_modes)) + 1j * rng.normal(size=(n_modes, n_modes))
        u, _ = np.linalg.qr(z)
        s = np.zeros((2 * n_modes, 2 * n_modes))
        s[0::2, 0::2] = u.real
        s[0::2, 1::2] = -u.imag
        s[1::2, 0::2] = u.imag
        s[1::2, 1::2] = u.real
        return s

    r = rng.uniform(-1, 1, n_modes)
    squeeze = np.diag(np.ravel(np.column_stack([np.exp(-r), np.exp(r)])))
    return passive() @ squeeze @ passive()


@pytest.mark.parametrize("n_modes", [1, 2, 4])
def test_symplectic_eigenvalues_recovered_from_williamson_form(n_modes):
    rng = np.random.default_rng(n_modes)
    nus = np.sort(rng.uniform(1.0, 5.0, n_modes))
    s = random_symplectic(n_modes, rng)
    omega = symplectic_form(n_modes)
    assert np.allclose(s @ omega @ s.T, omega, atol=1e-12)
    cov = s @ np.diag(np.repeat(nus, 2)) @ s.T
    assert np.allclose(symplectic_eigenvalues(cov), nus, rtol=1e-9)
    assert von_neumann_entropy_bits(cov) == pytest.approx(np.sum(entropy_snu_bits(nus)), rel=1e-9)
    assert is_physical(cov)


def test_unphysical_matrix_is_detected():
    assert not is_physical(np.diag([0.5, 0.5]))
    with pytest.raises(ValueError, match="square"):
        symplectic_eigenvalues(np.eye(3))


@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_g_finite_and_non_negative(n):
    value = entropy_photons_bits(n)
    assert np.isfinite(value) and value >= 0.0

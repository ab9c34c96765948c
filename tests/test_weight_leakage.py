"""Weight-leakage bounds against independent routes: brute-force covariance matrices, pure-loss
identities, a Monte-Carlo of the client's amplifier and coupler, and truncated Fock spaces."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import unitary_group

from qslab.analysis.client_measurement import returned_excess_noise_total_snu
from qslab.analysis.gaussian import binary_entropy_bits, entropy_photons_bits, von_neumann_entropy_bits
from qslab.analysis import weight_leakage as wl

Z = np.diag([1.0, -1.0])
I2 = np.eye(2)


def two_mode_cm(a, b, c):
    return np.block([[a * I2, c * Z], [c * Z, b * I2]])


def chi_brute_force(v, t, eps):
    """S(AB) - S(B | server heterodyne on A), both from numerically computed symplectic spectra."""
    b = t * (v - 1.0) + 1.0 + eps
    c = np.sqrt(t * (v * v - 1.0))
    cov = two_mode_cm(v, b, c)
    s_ab = von_neumann_entropy_bits(cov)
    gamma_a, gamma_b, cross = cov[:2, :2], cov[2:, 2:], cov[:2, 2:]
    conditional = gamma_b - cross.T @ np.linalg.inv(gamma_a + I2) @ cross
    return s_ab - von_neumann_entropy_bits(conditional)


@pytest.mark.parametrize("v, t, eps", [(13, 1, 1.177394e-3), (3, 0.7, 0.02), (21, 0.5, 0.3), (1.5, 0.99, 1e-4), (101, 0.2, 0.05)])
def test_chi_equals_brute_force_covariance_matrix(v, t, eps):
    assert wl.holevo_verified_bits(v, t, eps) == pytest.approx(chi_brute_force(v, t, eps), abs=1e-10)


@settings(max_examples=60, deadline=None)
@given(st.floats(1.01, 200.0), st.floats(0.05, 1.0), st.floats(0.0, 0.5))
def test_chi_brute_force_property(v, t, eps):
    assert wl.holevo_verified_bits(v, t, eps) == pytest.approx(chi_brute_force(v, t, eps), abs=1e-8)


EPS_G13 = 0.6 / 1.3 / 392  # the paper's (2G - 2)/(G n) at G = 1.3, n = 392
EPS_G2 = 1.0 / 392


@pytest.mark.parametrize("v, t, eps, expected", [(13, 1, 1.177394e-3, 0.065082967682), (13, 1, EPS_G13, 2 * 0.0325414846), (3, 1, EPS_G13, 0.0131417250),
                                                 (21, 1, EPS_G2, 0.1892442866), (3, 0.7, 0.02, 1.058061385906)])
def test_published_reference_values(v, t, eps, expected):
    assert wl.holevo_verified_bits(v, t, eps) == pytest.approx(expected, rel=2e-9)


def test_zero_leakage_for_noiseless_lossless_channel():
    v = np.array([1.0, 1.5, 13.0, 1e4])
    assert np.all(np.abs(wl.holevo_verified_bits(v, 1.0, 0.0)) < 1e-12)


@pytest.mark.parametrize("mu, t", [(1.0, 0.5), (6.0, 0.8), (0.3, 0.1)])
def test_pure_loss_gives_the_complementary_coherent_state(mu, t):
    """With eps = 0 the client holds the lost part of a coherent state: chi = g((1 - T) mu)."""
    assert wl.holevo_verified_bits(2 * mu + 1, t, 0.0) == pytest.approx(entropy_photons_bits((1 - t) * mu), rel=1e-10)


def test_monotone_in_excess_noise_and_loss():
    eps = np.linspace(0, 0.2, 50)
    assert np.all(np.diff(wl.holevo_verified_bits(13.0, 1.0, eps)) > 0)
    t = np.linspace(1.0, 0.3, 50)
    assert np.all(np.diff(wl.holevo_verified_bits(13.0, t, 1e-3)) > 0)


def test_per_real_weight_is_half_per_mode_and_technical_noise_adds_to_eps():
    per_mode = wl.weight_leakage_bits_per_mode(6.0, 1.3, 392, 1.0, 0.02)
    eps = (2 * 1.3 - 2) / (1.3 * 392) + 0.02
    assert per_mode == pytest.approx(wl.holevo_verified_bits(13.0, 1.0, eps))


def simulate_returned_modes(x_hat, gain, shots, rng):
    """Wigner-sampled complex amplitudes through U, amplifier, coupler, re-injection and U^dagger."""
    n = x_hat.size
    unitary = unitary_group.rvs(n, random_state=rng)
    # Make the first row conj(x_hat): complete conj(x_hat) to a unitary by QR.
    basis = np.column_stack([x_hat, unitary[:, 1:]])
    q, r = np.linalg.qr(basis)
    q[:, 0] *= np.conj(r[0, 0] / abs(r[0, 0]))  # fix the phase so that column 0 equals x_hat
    u = q.conj().T
    assert np.allclose(u[0], np.conj(x_hat))

    def vacuum(*shape):
        return 0.5 * (rng.normal(size=shape) + 1j * rng.normal(size=shape))

    a_in = vacuum(shots, n)  # zero-mean input: only the noise matters for the excess
    b = a_in @ u.T
    c = np.sqrt(gain) * b[:, 0] + np.sqrt(gain - 1) * np.conj(vacuum(shots))
    u_coupler = vacuum(shots)
    b[:, 0] = np.sqrt(1 / gain) * c - np.sqrt(1 - 1 / gain) * u_coupler
    returned = b @ u.conj()
    return 4 * np.var(returned.real, axis=0) - 1.0  # X = 2 Re a; vacuum variance 1


def test_returned_excess_noise_matches_monte_carlo():
    rng = np.random.default_rng(7)
    n, gain, shots = 6, 1.8, 400_000
    x = rng.normal(size=n) + 1j * rng.normal(size=n)
    x_hat = x / np.linalg.norm(x)
    measured = simulate_returned_modes(x_hat, gain, shots, rng)
    predicted = wl.per_mode_excess_noise_snu(gain, x_hat)
    # Standard error of a variance estimate of ~1.9 with 4e5 samples: ~4e-3 SNU.
    assert np.allclose(measured, predicted, atol=0.02)
    assert predicted.sum() == pytest.approx(float(returned_excess_noise_total_snu(gain)))
    assert predicted.mean() == pytest.approx(float(wl.honest_excess_noise_snu(gain, n)))


def fock_bpsk(n):
    return binary_entropy_bits((1 - np.exp(-2 * n)) / 2)


@pytest.mark.parametrize("n", [0.01, 0.1, 1.0])
def test_gram_matrix_bpsk_closed_form_and_fock(n):
    a = np.sqrt(n)
    assert wl.holevo_alphabet_bits([a, -a]) == pytest.approx(fock_bpsk(n), abs=1e-12)
    assert wl.holevo_fock_bits([a, -a]) == pytest.approx(fock_bpsk(n), abs=1e-12)


def mpsk_positive_series(n, m, terms=60):
    from scipy.special import gammaln
    lam = []
    for k in range(m):
        j = np.arange(terms)
        lam.append(np.sum(np.exp(-n + (k + j * m) * np.log(n) - gammaln(k + j * m + 1))))
    lam = np.array(lam)
    return float(-np.sum(lam * np.log2(lam)))


@pytest.mark.parametrize("n", [0.1, 1.0, 3.0])
@pytest.mark.parametrize("m", [3, 4, 8])
def test_gram_matrix_psk_against_positive_series(n, m):
    amps = np.sqrt(n) * np.exp(2j * np.pi * np.arange(m) / m)
    assert wl.holevo_alphabet_bits(amps) == pytest.approx(mpsk_positive_series(n, m), abs=1e-11)


def test_gram_matrix_equals_truncated_fock_for_random_alphabets():
    rng = np.random.default_rng(3)
    for size in (2, 5, 16):
        amps = rng.normal(size=size) + 1j * rng.normal(size=size)
        probs = rng.dirichlet(np.ones(size))
        assert wl.holevo_alphabet_bits(amps, probs) == pytest.approx(wl.holevo_fock_bits(amps, probs), abs=1e-10)


def test_discrete_alphabets_obey_the_gaussian_bounds():
    for n in (0.01, 0.1, 1.0):
        s = np.sqrt(n / 5.0)
        pam4 = s * np.array([-3, -1, 1, 3])
        qam16 = (s * np.array([-3, -1, 1, 3])[:, None] + 1j * s * np.array([-3, -1, 1, 3])[None, :]).ravel() / np.sqrt(2)
        bpsk = np.sqrt(n) * np.array([1.0, -1.0])
        one_quadrature = wl.one_quadrature_bound_bits(n)
        assert wl.holevo_alphabet_bits(bpsk) <= one_quadrature + 1e-12
        assert wl.holevo_alphabet_bits(pam4) <= one_quadrature + 1e-12
        assert wl.holevo_alphabet_bits(qam16) <= wl.unverified_bound_bits(n) + 1e-12
        assert one_quadrature <= wl.unverified_bound_bits(n)


def test_fock_cutoff_too_small_fails_loudly():
    with pytest.raises(ValueError, match="cutoff"):
        wl.holevo_fock_bits([3.0, -3.0], cutoff=5)


# --- trusted-detector forms against the generic covariance-matrix algorithm ----------------------

def generic_trusted_chi(va, t, xi, eta, v_el, heterodyne):
    """docs/PHYSICS.md 11.4 generic route: (A, B, F0, G), detector beam splitter, conditioning."""
    v = va + 1.0
    b = t * (v - 1.0 + xi) + 1.0
    c = np.sqrt(t * (v * v - 1.0))
    gamma_ab = two_mode_cm(v, b, c)
    s_e = von_neumann_entropy_bits(gamma_ab)
    noise = 1.0 + (2.0 if heterodyne else 1.0) * v_el / (1.0 - eta)
    epr = two_mode_cm(noise, noise, np.sqrt(noise * noise - 1.0))
    full = np.zeros((8, 8))
    full[:4, :4] = gamma_ab  # A, B
    full[4:, 4:] = epr  # F0, G
    # Beam splitter of transmittance eta between B (modes index 1) and F0 (index 2).
    bs = np.eye(8)
    s, r = np.sqrt(eta), np.sqrt(1 - eta)
    bs[2:4, 2:4] = s * I2
    bs[2:4, 4:6] = r * I2
    bs[4:6, 2:4] = -r * I2
    bs[4:6, 4:6] = s * I2
    full = bs @ full @ bs.T
    keep = [0, 1, 4, 5, 6, 7]  # A, F0', G
    gamma_r = full[np.ix_(keep, keep)]
    gamma_b = full[2:4, 2:4]
    cross = full[np.ix_(keep, [2, 3])]
    if heterodyne:
        conditional = gamma_r - cross @ np.linalg.inv(gamma_b + I2) @ cross.T
    else:
        x_only = np.diag([1.0, 0.0])
        conditional = gamma_r - cross @ np.linalg.pinv(x_only @ gamma_b @ x_only) @ cross.T
    return s_e - von_neumann_entropy_bits(conditional)


TRUSTED_CASES = [(5, 0.5, 0.01, 0.6, 0.1), (2, 0.1, 0.02, 0.7, 0.05), (10, 0.8, 0.005, 0.5, 0.02), (4, 0.631, 0.01, 0.6, 0.1)]


@pytest.mark.parametrize("case", TRUSTED_CASES)
def test_trusted_homodyne_against_generic_algorithm(case):
    assert wl.holevo_trusted_homodyne_bits(*case) == pytest.approx(generic_trusted_chi(*case, heterodyne=False), abs=1e-9)


@pytest.mark.parametrize("case", TRUSTED_CASES)
def test_trusted_heterodyne_against_generic_algorithm(case):
    assert wl.holevo_trusted_heterodyne_bits(*case) == pytest.approx(generic_trusted_chi(*case, heterodyne=True), abs=1e-9)


@pytest.mark.parametrize("va, t, xi, expected", [(5, 0.5, 0.01, 0.569470564659), (2, 0.1, 0.02, 0.097388074469), (10, 0.8, 0.005, 0.737418520073)])
def test_untrusted_homodyne_with_square_roots(va, t, xi, expected):
    assert wl.holevo_untrusted_homodyne_bits(va, t, xi) == pytest.approx(expected, rel=1e-9)
    # An ideal trusted detector is the same thing as an untrusted ideal one.
    assert wl.holevo_trusted_homodyne_bits(va, t, xi, 1.0, 0.0) == pytest.approx(expected, rel=1e-9)


def test_lossy_channel_reduces_to_g_of_eta_n():
    assert wl.holevo_lossy_channel_bits(0.02, 0.5, 0.0) == pytest.approx(entropy_photons_bits(0.005), rel=1e-12)
    assert wl.holevo_lossy_channel_bits(0.02, 0.5, 0.01) == pytest.approx(0.038581507465, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(mu=st.floats(0.0, 1e3), gain=st.floats(1.0, 100.0), modes=st.integers(1, 100_000),
       t=st.floats(1e-3, 1.0), xi=st.floats(0.0, 10.0))
def test_weight_leakage_finite_and_non_negative(mu, gain, modes, t, xi):
    value = wl.weight_leakage_bits_per_mode(mu, gain, modes, t, xi)
    assert np.isfinite(value) and value >= 0.0

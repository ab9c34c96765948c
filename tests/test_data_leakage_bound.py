"""The joint-state data-leakage bound and the exact finite-set value, each against a second route.

Routes: the returned photons from the amplifier's quadrature variance (analysis/client_measurement.py)
and a Monte-Carlo of the calibrated inputs; the Gaussian bound from covariance matrices and their
symplectic spectra (analysis/gaussian.py); the exact Holevo information from density matrices in a
truncated Fock space, where the thermal state in mode x_hat is made by a number-conserving passive
unitary exp(-i sum h_ij a_i^dag a_j) acting on a thermal state in mode 1; closed forms for two
candidates with Gamma-Poisson quadrature for the photon-number law; the Gram matrix of images against
their second-moment matrix. Reference values from docs/PHYSICS.md 17.5.
"""

import itertools
import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import integrate, linalg, optimize, stats
from scipy.special import xlogy

from qslab.analysis import data_leakage as per_bin
from qslab.analysis import data_leakage_bound as dlb
from qslab.analysis.client_measurement import amplifier_output_variance_snu
from qslab.analysis.gaussian import binary_entropy_bits, entropy_photons_bits, von_neumann_entropy_bits

N13 = 3.0 / 13.0           # G = 1.3, ideal amplifier, lossless
N105 = 1.0 - 1.0 / 1.05    # G = 1.05
ORTHOGONAL_PAIR = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2.0)
R3_PAIR = np.array([[1.0, 0.0], [0.99, np.sqrt(1.0 - 0.99**2)]])
R4_SET = np.array([[1.0, 0.0], [0.8, 0.6j]])
R4_PRIORS = np.array([0.3, 0.7])


# --- second routes --------------------------------------------------------------------------------

def entropy_of_density_bits(rho):
    lam = np.clip(np.linalg.eigvalsh(0.5 * (rho + rho.conj().T)), 0.0, None)
    return float(-np.sum(xlogy(lam, lam)) / np.log(2.0))


class FockSpace:
    """n modes, total photon number <= max_photons: exact for number-conserving (passive) operations."""

    def __init__(self, n_modes, max_photons):
        self.n_modes = n_modes
        self.states = [s for s in itertools.product(range(max_photons + 1), repeat=n_modes) if sum(s) <= max_photons]
        index = {s: i for i, s in enumerate(self.states)}
        self.dim = len(self.states)
        self.creation = []
        for mode in range(n_modes):
            op = np.zeros((self.dim, self.dim))
            for col, s in enumerate(self.states):
                raised = list(s)
                raised[mode] += 1
                row = index.get(tuple(raised))
                if row is not None:
                    op[row, col] = math.sqrt(s[mode] + 1)
            self.creation.append(op)

    def passive_unitary(self, u):
        """The Fock-space unitary of a single-particle unitary u: U a_j^dag U^dag = sum_i u_ij a_i^dag."""
        h = 1j * linalg.logm(u)                      # u = exp(-i h)
        h = 0.5 * (h + h.conj().T)
        generator = sum(h[i, j] * self.creation[i] @ self.creation[j].T
                        for i in range(self.n_modes) for j in range(self.n_modes))
        return linalg.expm(-1j * generator)

    def thermal_in_mode(self, x_hat, photons):
        """tau(x_hat): thermal with `photons` in mode x_hat, vacuum in the rest (truncated at max_photons)."""
        x_hat = np.asarray(x_hat, dtype=complex)
        rng = np.random.default_rng(0)
        basis = np.column_stack([x_hat, rng.normal(size=(x_hat.size, x_hat.size - 1))])
        u, r = np.linalg.qr(basis)
        u[:, 0] *= r[0, 0] / abs(r[0, 0])           # first column exactly x_hat
        assert np.allclose(u[:, 0], x_hat)
        rho1 = np.zeros((self.dim, self.dim), dtype=complex)
        for i, s in enumerate(self.states):
            if all(v == 0 for v in s[1:]):
                k = s[0]
                rho1[i, i] = photons**k / (1.0 + photons) ** (k + 1)
        unitary = self.passive_unitary(u)
        return unitary @ rho1 @ unitary.conj().T

    def moments(self, rho):
        """<a_i^dag a_j>."""
        return np.array([[np.trace(rho @ self.creation[i] @ self.creation[j].T) for j in range(self.n_modes)]
                         for i in range(self.n_modes)])


def block_entropy_bits(rho, labels):
    """Entropy of a state that conserves the labelled photon numbers: after checking that rho has no
    element between different labels, the sum of its blocks' entropies."""
    labels = np.asarray(labels)
    assert np.max(np.abs(rho[labels[:, None] != labels[None, :]]), initial=0.0) < 1e-13
    return sum(entropy_of_density_bits(rho[np.ix_(labels == v, labels == v)]) for v in np.unique(labels))


def fock_holevo(space, x_hats, priors, photons, copies):
    """chi = S(sum_j p_j tau_j^(x copies)) - sum_j p_j S(tau_j^(x copies)) by eigendecomposition."""
    taus = [space.thermal_in_mode(x, photons) for x in x_hats]
    totals = np.array([sum(s) for s in space.states])
    if copies == 1:
        states, labels = taus, totals
    else:
        states = [np.kron(t, t) for t in taus]
        labels = (totals[:, None] * (totals.max() + 1) + totals[None, :]).ravel()
    average = sum(p * s for p, s in zip(priors, states))
    conditional = sum(p * block_entropy_bits(s, labels) for p, s in zip(priors, states))
    return block_entropy_bits(average, labels) - conditional, taus, average


def gaussian_entropy_by_covariance(photons, c_matrix, added=0.0):
    """Entropy of the Gaussian state with <a_i^dag a_j> = N C*_ij + N_add delta_ij, from its xpxp
    covariance matrix sigma = I + 2 (real form of the photon matrix) and its symplectic spectrum."""
    n = c_matrix.shape[0]
    photon_matrix = photons * c_matrix.conj() + added * np.eye(n)   # <a_i^dag a_j>
    # <a_j^dag a_i> = (photon_matrix)^T = A; Var/Cov of x = a + a^dag, p = -i(a - a^dag) in SNU
    a = photon_matrix.T
    cov = np.eye(2 * n)
    cov[0::2, 0::2] += 2.0 * a.real
    cov[1::2, 1::2] += 2.0 * a.real
    cov[0::2, 1::2] += -2.0 * a.imag
    cov[1::2, 0::2] += 2.0 * a.imag
    return von_neumann_entropy_bits(cov)


def gaussian_bound_by_covariance(photons, c_matrix, added=0.0):
    n = c_matrix.shape[0]
    e1 = np.zeros((n, n))
    e1[0, 0] = 1.0                                   # the conditional state: any x_hat, here e_1
    return (gaussian_entropy_by_covariance(photons, c_matrix, added)
            - gaussian_entropy_by_covariance(photons, e1, added))


def photon_weights_by_quadrature(photons, rows, k_values):
    """NB_M(K) as Poisson(Lambda) mixed over Lambda ~ Gamma(M, N), integrated numerically."""
    gamma = stats.gamma(a=rows, scale=photons)
    lo, hi = gamma.ppf(1e-15), gamma.isf(1e-15)
    k_values = np.asarray(k_values)
    return integrate.quad_vec(lambda lam: stats.poisson.pmf(k_values, lam) * gamma.pdf(lam), lo, hi,
                              epsabs=1e-16, epsrel=1e-12, limit=400, points=[rows * photons])[0]


def pair_holevo_closed_form(overlap_modulus, photons, rows):
    """Two equiprobable candidates: K-copy Gram spectrum (1 +- s^K)/2, so S_K = h2((1 - s^K)/2)."""
    k = np.arange(0, int(rows * photons + 40 * math.sqrt(rows * photons * (1 + photons)) + 60))
    weights = photon_weights_by_quadrature(photons, rows, k)
    assert weights.sum() == pytest.approx(1.0, abs=1e-10)
    return float(np.sum(weights * binary_entropy_bits((1.0 - overlap_modulus ** k) / 2.0)))


# --- 1. the returned state ------------------------------------------------------------------------

def photons_by_variance(gain, n_sp, t=1.0, t_r=1.0):
    """2N = t T_r (V_amp - 1)/G: the returned port of the coupler carries V_amp/G + (1 - 1/G)."""
    v_amp = amplifier_output_variance_snu(gain, 1.0, n_sp)
    returned_excess = v_amp / gain + (1.0 - 1.0 / gain) - 1.0
    return 0.5 * t * t_r * returned_excess


def inversion_factor_by_snr(gain, noise_figure_db):
    """n_sp solving NF = SNR_in/SNR_out for a coherent input: SNR_out = 4 G |a|^2 / V_amp(n_sp)."""
    nf = 10.0 ** (noise_figure_db / 10.0)
    return optimize.brentq(lambda n_sp: amplifier_output_variance_snu(gain, 1.0, n_sp) / gain - nf,
                           1.0, 100.0, xtol=1e-15, rtol=1e-15)


def test_r1_ideal_amplifier_returns_three_thirteenths_photons():
    returned = dlb.returned_photons(1.3)
    assert returned.value == pytest.approx(float(Fraction(3, 13)), abs=1e-15)
    assert returned.value == pytest.approx(photons_by_variance(1.3, 1.0), abs=1e-15)
    assert returned.value == pytest.approx(0.230769, abs=1e-6)
    assert returned.inversion_factor == 1.0 and returned.upper == returned.value


def test_r1b_real_amplifier_and_losses():
    t = 10.0 ** -0.05
    returned = dlb.returned_photons(1.3, noise_figure_db=3.8, loss_per_pass_db=0.5, return_transmittance=0.8)
    n_sp = inversion_factor_by_snr(1.3, 3.8)
    assert returned.inversion_factor == pytest.approx(n_sp, rel=1e-12)
    assert returned.value == pytest.approx(photons_by_variance(1.3, n_sp, t, 0.8), rel=1e-12)
    assert returned.transmittance_per_pass == pytest.approx(t, rel=1e-15)
    assert (returned.inversion_factor, returned.value) == pytest.approx((3.530805, 0.580954), abs=1e-6)


def test_noise_figure_below_the_quantum_limit_is_floored_at_n_sp_one():
    limit_db = 10.0 * math.log10(2.0 - 1.0 / 1.3)
    below = dlb.returned_photons(1.3, noise_figure_db=limit_db - 0.2)
    assert below.inversion_factor == 1.0
    assert below.value == pytest.approx(N13, abs=1e-15)


def test_uncertainty_propagates_to_a_conservative_upper_photon_number():
    gain = SimpleNamespace(value=1.3, uncertainty=0.01)
    nf = SimpleNamespace(value=4.5, uncertainty=0.15)
    loss = SimpleNamespace(value=0.6, uncertainty=0.05)
    t_r = SimpleNamespace(value=0.8, uncertainty=0.02)
    returned = dlb.returned_photons(gain, nf, loss, t_r, coverage=2.0)
    rng = np.random.default_rng(7)
    draws = 400_000
    g = rng.normal(1.3, 0.01, draws)
    nf_lin = 10.0 ** (rng.normal(4.5, 0.15, draws) / 10.0)
    n_sp = (g * nf_lin - 1.0) / (2.0 * (g - 1.0))
    t = 10.0 ** (-rng.normal(0.6, 0.05, draws) / 10.0)
    sample = n_sp * (1.0 - 1.0 / g) * t * rng.normal(0.8, 0.02, draws)
    assert returned.uncertainty == pytest.approx(sample.std(), rel=0.02)
    assert returned.value == pytest.approx(photons_by_variance(1.3, inversion_factor_by_snr(1.3, 4.5),
                                                               10.0 ** -0.06, 0.8), rel=1e-12)
    assert returned.upper == pytest.approx(returned.value + 2.0 * returned.uncertainty, rel=1e-15)
    assert returned.upper > np.quantile(sample, 0.95)


def test_invalid_calibrated_values_are_refused():
    with pytest.raises(ValueError):
        dlb.returned_photons(0.9)
    with pytest.raises(ValueError):
        dlb.returned_photons(1.3, return_transmittance=1.2)
    with pytest.raises(ValueError):
        dlb.returned_photons(SimpleNamespace(value=1.3, uncertainty=-0.1))


def test_returned_states_per_layer_of_the_shipped_network():
    from qslab.analysis.network import load_weights
    weights, _ = load_weights()
    states = dlb.returned_states([w.shape for w in weights], 1.3)
    assert [(s.layer, s.rows, s.modes) for s in states] == [(0, 784, 392), (1, 10, 392)]
    assert all(s.photons.value == pytest.approx(N13) for s in states)


# --- 2. the Gaussian bound ------------------------------------------------------------------------

def test_r5_per_row_bound_against_symplectic_spectra():
    lam = np.array([0.7, 0.2, 0.1])
    c = np.diag(lam)
    assert dlb.gaussian_bound_per_row_bits(N13, lam) == pytest.approx(0.250968, abs=1e-6)
    assert dlb.gaussian_bound_per_row_bits(N13, lam, 0.01) == pytest.approx(0.188932, abs=1e-6)
    assert N13 * dlb.spectrum_entropy_bits(lam) == pytest.approx(0.266949, abs=1e-6)
    assert dlb.gaussian_bound_per_row_bits(N13, lam) == pytest.approx(gaussian_bound_by_covariance(N13, c), abs=1e-12)
    assert dlb.gaussian_bound_per_row_bits(N13, lam, 0.01) == pytest.approx(
        gaussian_bound_by_covariance(N13, c, 0.01), abs=1e-12)


def test_bound_against_symplectic_spectra_for_a_complex_second_moment_matrix():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)) + 1j * rng.normal(size=(50, 4)) + np.array([2.0, 0.5j, 0, 0])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    moments = dlb.second_moments(x, groups=1)
    assert np.trace(moments.matrix).real == pytest.approx(1.0)
    for photons in (0.01, N13, 2.0):
        assert dlb.gaussian_bound_per_row_bits(photons, moments.eigenvalues) == pytest.approx(
            gaussian_bound_by_covariance(photons, moments.matrix), abs=1e-11)


def test_bound_properties():
    rng = np.random.default_rng(5)
    for _ in range(20):
        lam = rng.dirichlet(np.full(6, 0.5))
        h = dlb.spectrum_entropy_bits(lam)
        values = [dlb.gaussian_bound_per_row_bits(n, lam) for n in (0.0, 1e-4, 0.01, 0.1, N13, 1.0, 5.0)]
        assert values[0] == 0.0
        assert np.all(np.diff(values) > 0)                            # monotonic in N
        assert all(v <= n * h + 1e-15 for v, n in zip(values, (0.0, 1e-4, 0.01, 0.1, N13, 1.0, 5.0)))
        assert values[1] == pytest.approx(1e-4 * h, rel=2e-3)          # b = N H(lambda) + O(N^2)
    assert dlb.gaussian_bound_per_row_bits(N13, [1.0, 0.0, 0.0]) == 0.0    # rank-1 C: x_hat fixed
    with pytest.raises(ValueError):
        dlb.gaussian_bound_per_row_bits(N13, [0.5, 0.2])


def test_bound_per_query_symbol_session_and_the_candidate_cap():
    lam = np.array([0.7, 0.2, 0.1])
    b = dlb.gaussian_bound_per_row_bits(N13, lam)
    one = dlb.gaussian_bound(N13, lam, rows=784, modes=392)
    assert (one.per_row_bits, one.per_query_bits, one.per_symbol_bits) == pytest.approx((b, 784 * b, 2 * b))
    assert one.cumulative_bits == pytest.approx(784 * b) and not one.capped
    several = dlb.gaussian_bound(N13, lam, rows=10, queries=3)
    assert several.cumulative_bits == pytest.approx(30 * b)
    assert several.per_query_bits == pytest.approx(10 * b)
    capped = dlb.gaussian_bound(N13, lam, rows=784, queries=5, candidate_entropy_bits=math.log2(2000))
    assert capped.cumulative_bits == capped.per_query_bits == pytest.approx(math.log2(2000)) and capped.capped
    rows = [dlb.gaussian_bound(N13, lam, rows=m).per_query_bits for m in (1, 2, 10, 100)]
    assert np.all(np.diff(rows) > 0)                                # monotonic in M


# --- 3. exact finite-set values -------------------------------------------------------------------

@pytest.mark.parametrize("rows,expected", [(1, 0.1875), (10, 0.874618), (784, 1.0)])
def test_r2_orthogonal_pair_per_bin_model_sees_nothing(rows, expected):
    chi = dlb.finite_set_holevo_bits(ORTHOGONAL_PAIR, N13, rows)
    assert chi == pytest.approx(expected, abs=1e-6)
    assert chi == pytest.approx(1.0 - (1.0 + N13) ** -rows, abs=1e-10)
    # the per-bin model keeps only |x_i|^2, identical for the two: identical states, 0 bits
    photons_a, photons_b = (per_bin.thermal_photons(1.3, x) for x in ORTHOGONAL_PAIR)
    assert np.array_equal(photons_a, photons_b)


def test_r2_closed_form_over_many_rows_and_the_gaussian_bound():
    for rows in (1, 2, 3, 7, 30, 100):
        assert dlb.finite_set_holevo_bits(ORTHOGONAL_PAIR, N13, rows) == pytest.approx(1.0 - (1.0 + N13) ** -rows, abs=1e-10)
    moments = dlb.second_moments(ORTHOGONAL_PAIR, groups=1)
    bound = dlb.gaussian_bound_per_row_bits(N13, moments.eigenvalues)
    assert bound == pytest.approx(0.213518, abs=1e-6)
    assert bound == pytest.approx(2 * entropy_photons_bits(N13 / 2) - entropy_photons_bits(N13), abs=1e-14)
    assert N13 / (1.0 + N13) == pytest.approx(0.1875)


def test_r2_fock_space_route():
    space = FockSpace(2, 24)
    chi, taus, average = fock_holevo(space, ORTHOGONAL_PAIR, [0.5, 0.5], N13, 1)
    assert chi == pytest.approx(0.1875, abs=1e-10)
    assert entropy_of_density_bits(taus[0]) == pytest.approx(entropy_photons_bits(N13), abs=1e-10)


def test_r2b_alternating_signs_over_392_modes():
    n = 392
    pair = np.array([np.ones(n), (-1.0) ** np.arange(n)]) / np.sqrt(n)
    assert abs(np.vdot(pair[0], pair[1])) < 1e-15
    assert dlb.finite_set_holevo_bits(pair, N13, 784) == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(per_bin.thermal_photons(1.3, pair[0]), per_bin.thermal_photons(1.3, pair[1]))
    assert per_bin.mutual_information_counts_bits(np.ravel(per_bin.thermal_photons(1.3, pair[0]))[:1], 784) == 0.0


def test_r3_nearly_parallel_pair():
    chi_1 = dlb.finite_set_holevo_bits(R3_PAIR, N13, 1)
    chi_784 = dlb.finite_set_holevo_bits(R3_PAIR, N13, 784)
    overlap = abs(np.vdot(R3_PAIR[0], R3_PAIR[1]))
    assert overlap == pytest.approx(0.99, abs=1e-15)
    assert chi_1 == pytest.approx(pair_holevo_closed_form(overlap, N13, 1), abs=1e-9)
    assert chi_784 == pytest.approx(pair_holevo_closed_form(overlap, N13, 784), abs=1e-9)
    assert (chi_1, chi_784) == pytest.approx((0.009994, 0.980033), abs=1e-6)
    space = FockSpace(2, 24)
    assert fock_holevo(space, R3_PAIR, [0.5, 0.5], N13, 1)[0] == pytest.approx(chi_1, abs=1e-10)


def test_r4_complex_pair_with_priors_against_the_fock_space():
    space = FockSpace(2, 8)
    moments = dlb.second_moments(R4_SET, R4_PRIORS, groups=1)
    chi_1 = dlb.finite_set_holevo_bits(R4_SET, N105, 1, R4_PRIORS)
    chi_2 = dlb.finite_set_holevo_bits(R4_SET, N105, 2, R4_PRIORS)
    bound_row = dlb.gaussian_bound_per_row_bits(N105, moments.eigenvalues)
    assert (chi_1, chi_2, bound_row, 2 * bound_row) == pytest.approx((0.019057, 0.037636, 0.019308, 0.038616), abs=1e-6)

    fock_1, taus, average = fock_holevo(space, R4_SET, R4_PRIORS, N105, 1)
    fock_2, _, average_2 = fock_holevo(space, R4_SET, R4_PRIORS, N105, 2)
    assert fock_1 == pytest.approx(chi_1, abs=1e-10)
    assert fock_2 == pytest.approx(chi_2, abs=1e-10)
    # the Gaussian bound's ingredients: S(tau) = g(N), <a_i^dag a_j> = N C*_ij, cross-copy moments 0
    assert entropy_of_density_bits(taus[1]) == pytest.approx(entropy_photons_bits(N105), abs=1e-10)
    one_body = space.moments(average)
    assert np.allclose(one_body, N105 * moments.matrix.conj(), atol=1e-10)
    lam_fock = np.sort(np.linalg.eigvalsh(one_body / np.trace(one_body).real))[::-1]
    assert np.allclose(lam_fock, moments.eigenvalues, atol=1e-10)
    d = space.dim
    rho_4 = average_2.reshape(d, d, d, d)            # [copy1 row, copy2 row, copy1 col, copy2 col]
    cross = [[np.einsum("ikjl,ji,lk->", rho_4, space.creation[i], space.creation[j].T)   # Tr rho (a_i^dag x a_j)
              for j in range(2)] for i in range(2)]
    assert np.allclose(cross, 0.0, atol=1e-12)
    gaussian_entropy = float(np.sum(entropy_photons_bits(N105 * moments.eigenvalues)))
    assert entropy_of_density_bits(average) <= gaussian_entropy
    assert fock_1 <= bound_row and fock_2 <= 2 * bound_row


def test_three_modes_three_candidates_fock_gram_and_bound():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    priors = np.array([0.2, 0.5, 0.3])
    space = FockSpace(3, 12)
    chi = dlb.finite_set_holevo_bits(x, N13, 1, priors)
    assert fock_holevo(space, x, priors, N13, 1)[0] == pytest.approx(chi, abs=1e-7)
    moments = dlb.second_moments(x, priors, groups=1)
    assert chi <= dlb.gaussian_bound_per_row_bits(N13, moments.eigenvalues)
    # S_1 is the entropy of C itself: the Gram matrix and C share their non-zero spectrum
    assert dlb.k_copy_entropies_bits(x, [1], priors)[0] == pytest.approx(moments.eigenvalue_entropy_bits(), abs=1e-12)


def test_exact_value_below_bound_monotone_and_below_the_prior_entropy():
    rng = np.random.default_rng(2)
    for trial in range(4):
        x = rng.normal(size=(6, 4)) + 1j * rng.normal(size=(6, 4)) + 1.5
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        priors = rng.dirichlet(np.ones(6))
        lam = dlb.second_moments(x, priors, groups=1).eigenvalues
        h = dlb.spectrum_entropy_bits(priors)
        previous = 0.0
        for rows in (1, 2, 5, 20, 100):
            chi = dlb.finite_set_holevo_bits(x, N13, rows, priors)
            assert previous < chi <= min(rows * dlb.gaussian_bound_per_row_bits(N13, lam), h) + 1e-12
            previous = chi
        chis = [dlb.finite_set_holevo_bits(x, n, 3, priors) for n in (0.01, 0.1, N13, 1.0)]
        assert np.all(np.diff(chis) > 0)
        s_k = dlb.k_copy_entropies_bits(x, np.arange(0, 40), priors)
        assert s_k[0] == pytest.approx(0.0, abs=1e-12) and np.all(np.diff(s_k) > -1e-12)


# --- 4. MNIST ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_moments(mnist_train_moments):
    """dlb.mnist_second_moments("train") with the shipped weights (tests/conftest.py: computed once per run)."""
    return mnist_train_moments[0]


def test_r6_mnist_training_set_layer_one(train_moments):
    layer1 = train_moments[0]
    assert layer1.samples == 60_000
    assert layer1.eigenvalues[:3] == pytest.approx([0.711555, 0.029175, 0.021968], abs=1e-6)
    assert layer1.eigenvalue_entropy_bits() == pytest.approx(2.536583, abs=1e-6)
    table = {1.04: (0.097046, 76.08), 1.1: (0.227783, 178.58), 1.18: (0.379202, 297.29), 1.3: (0.568186, 445.46),
             1.5: (0.810989, 635.82), 2.0: (1.194807, 936.73)}
    for gain, (per_row, per_query) in table.items():
        bound = dlb.gaussian_bound(dlb.returned_photons(gain).upper, layer1.eigenvalues, rows=784)
        assert bound.per_row_bits == pytest.approx(per_row, abs=1e-6)
        assert bound.per_query_bits == pytest.approx(per_query, abs=0.005)
    lossy = dlb.gaussian_bound(dlb.returned_photons(1.3, return_transmittance=0.5).upper, layer1.eigenvalues, rows=784)
    assert lossy.per_row_bits == pytest.approx(0.288192, abs=1e-6)
    assert dlb.gaussian_bound_per_row_bits(3.53 * N13 * 0.8, layer1.eigenvalues) == pytest.approx(1.533958, abs=1e-6)
    at_13 = dlb.gaussian_bound(N13, layer1.eigenvalues, rows=784)
    assert at_13.per_symbol_bits == pytest.approx(1.136, abs=5e-4)
    # the sampling error of C is far below the digits quoted
    assert layer1.per_row_bound_uncertainty_bits(N13) < 0.005


def test_r6_leading_eigenvalue_by_power_iteration_without_forming_c():
    from qslab.analysis.mnist import load_mnist, preprocess
    images, _ = load_mnist("train")
    x = np.asarray(preprocess(images), dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    z = x[:, 0::2] + 1j * x[:, 1::2]
    v = np.ones(z.shape[1], dtype=complex) / np.sqrt(z.shape[1])
    for _ in range(8):  # lambda_2/lambda_1 = 0.04: the Rayleigh quotient's error falls ~0.04^2 a step (1e-15 by 6)
        w = ((z @ v).conj() @ z).conj() / z.shape[0]  # z^H (z v), without a conjugated copy of z per step
        lam, v = np.vdot(v, w).real, w / np.linalg.norm(w)
    assert lam == pytest.approx(0.711555, abs=1e-6)


def test_mnist_layer_two_from_the_shipped_network(train_moments):
    layer2 = train_moments[1]
    assert layer2.eigenvalue_entropy_bits() == pytest.approx(6.195, abs=5e-4)
    assert dlb.gaussian_bound(N13, layer2.eigenvalues, rows=10).per_query_bits == pytest.approx(13.95, abs=5e-3)
    states = dlb.returned_states([(784, 784), (10, 784)], 1.3)
    bounds = dlb.layer_bounds(states, train_moments, queries=2)
    assert [b.per_query_bits for b in bounds] == pytest.approx([445.46, 13.95], abs=5e-3)
    assert [b.cumulative_bits for b in bounds] == pytest.approx([890.92, 27.90], abs=1e-2)
    assert all(b.per_row_uncertainty_bits > 0 for b in bounds)


def test_first_two_thousand_test_images_gram_and_second_moment_routes():
    moments = dlb.mnist_second_moments("test", limit=2000, layers=1, groups=1)[0]
    assert moments.eigenvalue_entropy_bits() == pytest.approx(2.3997, abs=5e-5)
    assert dlb.gaussian_bound_per_row_bits(N13, moments.eigenvalues) == pytest.approx(0.5375, abs=5e-5)
    from qslab.analysis.mnist import load_mnist, preprocess
    images, _ = load_mnist("test")
    x_hat = dlb.pack_unit_vectors(preprocess(images[:2000]))
    gram = x_hat.conj() @ x_hat.T / 2000                             # the K = 1 Gram matrix, uniform prior
    assert entropy_of_density_bits(gram) == pytest.approx(moments.eigenvalue_entropy_bits(), abs=1e-9)


def test_data_moments_in_real_arithmetic_equal_the_complex_outer_products_of_the_packed_vectors():
    """data_second_moments (one real product P^T P a group) against second_moments of the packed complex vectors
    (sum x x^H): the same C, eigenvalues and leave-one-group-out replicates; a row the client cannot normalise is
    refused as the packing refuses it."""
    rng = np.random.default_rng(8)
    data = rng.normal(size=(300, 785)) * rng.uniform(0.1, 3.0, size=(300, 1)) + 0.4  # odd length: one zero pad
    real, packed = dlb.data_second_moments(data, groups=6), dlb.second_moments(dlb.pack_unit_vectors(data), groups=6)
    assert np.abs(real.matrix - packed.matrix).max() < 1e-15 and np.abs(real.matrix).max() > 1e-3
    np.testing.assert_allclose(real.eigenvalues, packed.eigenvalues, rtol=0, atol=1e-14)
    np.testing.assert_allclose(real.replicate_eigenvalues, packed.replicate_eigenvalues, rtol=0, atol=1e-14)
    data[17] = 0.0
    with pytest.raises(ValueError, match="zero norm"):
        dlb.data_second_moments(data)


def test_packing_matches_the_protocols_unit_vectors():
    from qslab.analysis.encoding import unit_vectors
    rng = np.random.default_rng(4)
    data = rng.normal(size=(7, 785))
    assert np.array_equal(dlb.pack_unit_vectors(data), unit_vectors(data))


def test_jackknife_uncertainty_matches_the_spread_of_independent_samples():
    rng = np.random.default_rng(12)
    scale = np.array([2.0, 1.0, 0.6, 0.3]) + 0.5j * np.array([0.1, 1.0, 0.2, 0.6])
    offset = np.array([1.0, 0.0, 0.3j, 0.0])

    def draw(n):
        z = (rng.normal(size=(n, 4)) + 1j * rng.normal(size=(n, 4))) * np.abs(scale) + offset
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    bounds, sigmas = [], []
    for _ in range(60):
        moments = dlb.second_moments(draw(800), groups=20)
        bounds.append(dlb.gaussian_bound_per_row_bits(N13, moments.eigenvalues))
        sigmas.append(moments.per_row_bound_uncertainty_bits(N13))
    assert np.mean(sigmas) == pytest.approx(np.std(bounds, ddof=1), rel=0.25)

"""Data-leakage forms against independent routes: numerical integration of the Poisson-Gamma
mixture, von Neumann entropies of thermal states, and the Gaussian Fisher information."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import integrate, stats

from qslab.analysis import data_leakage as dl
from qslab.analysis.gaussian import entropy_photons_bits

N_MODES = 392
K_13 = 2 - 2 / 1.3


def count_pmf_by_integration(photons, reuses, k_max):
    """P(K = k) as Poisson(lambda) mixed over lambda ~ Gamma(M, N), integrated numerically."""
    if photons == 0:
        return np.eye(1, k_max + 1)[0]
    gamma = stats.gamma(a=reuses, scale=photons)
    lo, hi = gamma.ppf(1e-14), gamma.ppf(1 - 1e-14)
    log_gamma_norm = math.lgamma(reuses) + reuses * math.log(photons)

    def poisson_times_gamma(lam, k):
        """Poisson(k; lam) Gamma(lam; M, N), written out in logs: a scipy.stats call per evaluation made this test
        ~100x slower (quad evaluates it thousands of times per k)."""
        return math.exp((k + reuses - 1) * math.log(lam) - lam - lam / photons - math.lgamma(k + 1) - log_gamma_norm)

    return np.array([integrate.quad(poisson_times_gamma, lo, hi, args=(k,), epsabs=1e-15, epsrel=1e-11, limit=200)[0]
                     for k in range(k_max + 1)])


def mutual_information_by_integration(photons, reuses, k_max):
    pmfs = np.array([count_pmf_by_integration(n, reuses, k_max) for n in photons])
    assert np.allclose(pmfs.sum(axis=1), 1.0, atol=1e-9)
    mixture = pmfs.mean(axis=0)

    def entropy(p):
        p = p[p > 0]
        return -np.sum(p * np.log2(p))

    return entropy(mixture) - np.mean([entropy(p) for p in pmfs])


@pytest.mark.parametrize("reuses, k_max", [(1, 40), (5, 60), (30, 120)])
def test_exact_information_matches_numerical_integration(reuses, k_max):
    photons = np.array([0.0, 0.01, 0.05, 0.2])
    expected = mutual_information_by_integration(photons, reuses, k_max)
    assert dl.mutual_information_counts_bits(photons, reuses) == pytest.approx(expected, abs=1e-8)


def test_single_use_equals_holevo_of_thermal_states():
    """M = 1: chi = S(mixture of thermal states) - mean S(thermal), in a truncated Fock space."""
    photons = np.array([0.0, 0.03, 0.1, 0.4])
    levels = np.arange(400)
    diag = np.array([(n / (1 + n)) ** levels / (1 + n) if n > 0 else (levels == 0).astype(float) for n in photons])
    mixture = diag.mean(axis=0)
    s_mix = -np.sum(mixture[mixture > 0] * np.log2(mixture[mixture > 0]))
    chi = s_mix - np.mean(entropy_photons_bits(photons))
    assert dl.mutual_information_counts_bits(photons, 1) == pytest.approx(chi, abs=1e-12)


@pytest.mark.parametrize("x2, reuses, expected", [((0, 2 / N_MODES), 1, 5.882543e-4), ((0, 2 / N_MODES), 794, 0.4023005831),
                                                  ((0.5 / N_MODES, 1.5 / N_MODES), 794, 0.0837350584)])
def test_published_exact_values(x2, reuses, expected):
    photons = 0.5 * K_13 * np.array(x2)
    assert dl.mutual_information_counts_bits(photons, reuses) == pytest.approx(expected, rel=1e-7)


def test_exact_information_for_a_data_vector():
    """Half the modes dark (ReLU zeros) and half equal: the two-point prior above."""
    x = np.zeros(N_MODES)
    x[::2] = 1.0
    assert dl.exact_mutual_information_bits(1.3, x, 794) == pytest.approx(0.4023005831, rel=1e-7)
    assert dl.exact_mutual_information_bits(1.3, np.ones(N_MODES), 794) == pytest.approx(0.0, abs=1e-12)


def test_exact_zeros_leak_more_than_cramer_rao_forms():
    x = np.zeros(N_MODES)
    x[::2] = 1.0
    assert dl.exact_mutual_information_bits(1.3, x, 794) > dl.prx_bits(1.3, N_MODES, 794) > dl.cramer_rao_arxiv_bits(1.3)


def gaussian_variance_fisher(x, k, h=1e-6):
    """Textbook Fisher information of y ~ N(0, 1 + k x^2) about x, by quadrature of the squared score."""
    def score_sq(y):
        var = lambda xx: 1 + k * xx * xx
        logp = lambda xx: -0.5 * np.log(2 * np.pi * var(xx)) - y * y / (2 * var(xx))
        score = (logp(x + h) - logp(x - h)) / (2 * h)
        return score**2 * stats.norm.pdf(y, scale=np.sqrt(var(x)))
    return integrate.quad(score_sq, -40, 40, epsabs=1e-14, limit=200)[0]


@pytest.mark.parametrize("gain", [1.1, 1.3, 2.0])
def test_arxiv_cramer_rao_against_textbook_fisher(gain):
    k = 2 - 2 / gain
    x = 1 / np.sqrt(N_MODES)
    fisher = gaussian_variance_fisher(x, k)
    textbook = 0.5 * np.log2(1 + 2 * x**2 * N_MODES * fisher)
    # The code divides by (1 + k x^2)^4 instead of ^2: Fisher information lower by ~2 k x^2 (1 % at G = 2).
    tolerance = 3 * k * x**2
    assert dl.cramer_rao_arxiv_bits(gain) == pytest.approx(textbook, rel=tolerance)
    assert dl.cramer_rao_arxiv_bits(gain) < textbook
    approx = 0.5 * np.log2(1 + 16 * (gain - 1) ** 2 / (gain**2 * N_MODES))
    assert dl.cramer_rao_arxiv_bits(gain) == pytest.approx(approx, rel=2 * tolerance)


def test_prx_form_is_the_returned_mode_snr():
    """PRX form = 1/2 log2(1 + (M/n) k^2 / sigma_r^2) with sigma_r^2 = (3G - 2)/G (docs/PHYSICS.md 12)."""
    for gain in (1.1, 1.3, 3.0):
        k = 2 - 2 / gain
        expected = 0.5 * np.log2(1 + (794 / N_MODES) * k**2 / ((3 * gain - 2) / gain))
        assert dl.prx_bits(gain, N_MODES, 794) == pytest.approx(expected, rel=1e-12)
    assert dl.prx_bits(1.3, 392, 794) == pytest.approx(0.1865963910, rel=1e-9)


def test_no_amplification_no_leakage_and_monotone():
    assert dl.cramer_rao_arxiv_bits(1.0) == 0.0 and dl.prx_bits(1.0) == 0.0
    gains = np.linspace(1.01, 3, 30)
    assert np.all(np.diff(dl.cramer_rao_arxiv_bits(gains)) > 0)
    assert np.all(np.diff(dl.prx_bits(1.3, 392, np.arange(1, 2000, 50))) > 0)


def test_cumulative_counts_grow_with_queries():
    one = dl.per_symbol_and_cumulative(1.3, queries=1)
    many = dl.per_symbol_and_cumulative(1.3, queries=100)
    assert many["cramer_rao"] == one["cramer_rao"]
    assert many["cramer_rao_cumulative"] > one["cramer_rao_cumulative"] > 0
    assert many["prx_cumulative"] > one["prx_cumulative"] == one["prx"]


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="reuses"):
        dl.mutual_information_counts_bits([0.1], 0)
    with pytest.raises(ValueError, match="non-negative"):
        dl.mutual_information_counts_bits([-0.1], 3)


@settings(max_examples=150, deadline=None)
@given(gain=st.floats(1.0, 50.0), modes=st.integers(1, 100_000), rows=st.integers(1, 100_000))
def test_published_forms_finite_and_non_negative(gain, modes, rows):
    for value in (dl.cramer_rao_arxiv_bits(gain, modes), dl.prx_bits(gain, modes, rows)):
        assert np.isfinite(value) and value >= 0.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), gain=st.floats(1.0, 10.0), reuses=st.integers(1, 2000), zeros=st.floats(0.0, 0.9))
def test_exact_information_finite_and_bounded_by_prior_entropy(seed, gain, reuses, zeros):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=64) * (rng.uniform(size=64) > zeros)
    x[0] = 1.0
    value = dl.exact_mutual_information_bits(gain, x, reuses)
    assert np.isfinite(value) and 0.0 <= value <= np.log2(64) + 1e-9

"""analysis/distribution_tails.py against scipy.stats (the independent route: its distribution objects, with
their own argument handling): the same values to the last bit over the ranges the analysis uses, and the tails
that define them checked by integration where scipy.stats is not needed at all."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from qslab.analysis import distribution_tails as tails


def _grid(seed: int, size: int = 400):
    rng = np.random.default_rng(seed)
    return rng, 10.0 ** rng.uniform(-14, -0.31, size)


def test_normal_and_student_t_match_scipy_stats():
    rng, q = _grid(1)
    z = rng.normal(0.0, 6.0, q.size)
    dof = rng.integers(1, 10**6, q.size).astype(float)
    assert np.array_equal(tails.normal_isf(q), stats.norm.isf(q))
    assert np.array_equal(tails.normal_sf(z), stats.norm.sf(z))
    assert np.array_equal(tails.student_t_isf(q, dof), stats.t.isf(q, dof))


def test_chi2_matches_scipy_stats():
    rng, q = _grid(2)
    dof = rng.integers(1, 10**7, q.size).astype(float)
    x = rng.uniform(0.0, 3.0, q.size) * dof
    assert np.array_equal(tails.chi2_ppf(q, dof), stats.chi2.ppf(q, dof))
    assert np.array_equal(tails.chi2_isf(q, dof), stats.chi2.isf(q, dof))
    assert np.array_equal(tails.chi2_cdf(x, dof), stats.chi2.cdf(x, dof))


def test_beta_matches_scipy_stats():
    rng, q = _grid(3)
    total = rng.integers(1, 20_000, q.size)
    correct = rng.integers(1, total + 1)
    a, b = correct.astype(float), (total - correct + 1).astype(float)
    assert np.array_equal(tails.beta_ppf(q, a, b), stats.beta.ppf(q, a, b))
    assert np.array_equal(tails.beta_isf(q, a, b), stats.beta.isf(q, a, b))


@pytest.mark.parametrize("tail", [1e-3, 0.025, 0.2])
def test_tails_are_what_they_say_by_integration(tail):
    z = tails.normal_isf(tail)
    assert integrate.quad(lambda u: np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi), z, np.inf)[0] == pytest.approx(tail)
    dof = 7.0
    x = tails.chi2_isf(tail, dof)
    density = lambda u: u ** (dof / 2 - 1) * np.exp(-u / 2) / (2 ** (dof / 2) * math.gamma(dof / 2))  # noqa: E731
    assert integrate.quad(density, x, np.inf)[0] == pytest.approx(tail, rel=1e-8)
    assert integrate.quad(density, 0.0, tails.chi2_ppf(tail, dof))[0] == pytest.approx(tail, rel=1e-8)
    assert tails.chi2_cdf(tails.chi2_ppf(tail, dof), dof) == pytest.approx(tail, rel=1e-12)
    a, b = 5.0, 3.0
    beta_density = lambda u: u ** (a - 1) * (1 - u) ** (b - 1) * 105.0  # noqa: E731  (1 / B(5, 3) = 105)
    assert integrate.quad(beta_density, 0.0, tails.beta_ppf(tail, a, b))[0] == pytest.approx(tail, rel=1e-8)
    assert integrate.quad(beta_density, tails.beta_isf(tail, a, b), 1.0)[0] == pytest.approx(tail, rel=1e-8)

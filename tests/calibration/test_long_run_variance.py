"""calibration.homodyne.long_run_variance (one pass over the running sum) against its definition, the sum of the
sample autocovariances over |d| <= L computed lag by lag, and against a process whose long-run variance is known."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.calibration.homodyne import long_run_variance


def _by_definition(samples, lags: int) -> float:
    x = np.asarray(samples, dtype=float) - np.mean(samples)
    n = x.size
    return sum((1 if d == 0 else 2) * float(np.dot(x[:n - d], x[d:])) / n for d in range(min(lags, n - 1) + 1))


@pytest.mark.parametrize(("n", "lags"), [(1, 4), (3, 32), (33, 32), (40, 32), (5000, 1), (131_072, 32)])
def test_it_is_the_autocovariance_sum_by_definition(n, lags):
    rng = np.random.default_rng(n)
    samples = np.cumsum(rng.standard_normal(n)) * 0.01 + 3.0 * rng.standard_normal(n) + 100.0  # drift, noise, DC
    assert long_run_variance(samples, lags) == pytest.approx(_by_definition(samples, lags), rel=1e-10, abs=1e-12)


def test_a_moving_average_has_its_closed_form_long_run_variance():
    """x[k] = e[k] + e[k-1] (unit white e): autocovariances 2, 1, 0, ..., so the sum over |d| <= L >= 1 is 4."""
    white = np.random.default_rng(4).standard_normal(2_000_001)
    samples = white[1:] + white[:-1]
    assert long_run_variance(samples, 8) == pytest.approx(4.0, abs=5 * np.sqrt(2 * 16 * 8 / samples.size))

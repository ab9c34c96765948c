"""Float32Samples (float32 block sums, the simulation's verification) against two independent routes.

The pooled array code (verification.remove_previous_symbol then estimate_channel, float64) and the closed form of
the estimates written out here with exact sums (math.fsum). Float32 products and block sums round at ~1e-7 relative;
the estimates must agree to 1e-6, far below their statistical spread (sqrt(2/n) = 1e-2 at these sizes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from channel_samples import assert_estimates_close, chunked, layer_samples

from qslab.analysis import verification
from qslab.analysis.verified_samples import FLOAT32_BLOCK_SAMPLES, Float32Samples, PooledSamples

DETECTOR = verification.ServerDetector(efficiency=0.7, electronic_noise_snu=0.02)
CLOSE = 1e-6


@pytest.mark.parametrize("sizes", [[1, 7, 300], [997], [FLOAT32_BLOCK_SAMPLES + 3], [10**6]])
def test_float32_sums_give_the_pooled_estimates_whatever_the_chunks(sizes):
    rng = np.random.default_rng(5)
    samples = [layer_samples(rng, 90_011, 0.74, 0.05, 1.02), layer_samples(rng, 4_003, 0.71, -0.03, 1.1)]
    pooled = PooledSamples(samples)
    summed = Float32Samples(chunked(samples, sizes), 2, raw=True)
    assert summed.sizes == pooled.sizes == [90_011, 4_003]
    for layer in range(2):
        assert_estimates_close(summed.layer_estimate(layer, DETECTOR), pooled.layer_estimate(layer, DETECTOR), CLOSE)
    assert_estimates_close(summed.pooled_estimate(DETECTOR), pooled.pooled_estimate(DETECTOR), CLOSE)
    sent = np.concatenate([s for s, _ in samples])
    returned = np.concatenate([r for _, r in samples])
    assert_estimates_close(summed.raw_estimate(DETECTOR), verification.estimate_channel(sent, returned, DETECTOR), CLOSE)


def test_float32_sums_match_the_closed_form_with_exact_sums():
    """t = sum q y / sum q^2 (no previous-symbol fit), r = y - t q, s^2 = sum r^2/(n - 1), <r^4>, se(<r^4>): fsum."""
    rng = np.random.default_rng(8)
    q, y = layer_samples(rng, 70_001, 0.9, 0.0, 1.3)
    qd, yd = q.astype(np.float64), y.astype(np.float64)
    n = q.size
    t = math.fsum(qd * yd) / math.fsum(qd * qd)
    r = yd - t * qd
    r4 = r**4
    mean4 = math.fsum(r4) / n
    se4 = math.sqrt(math.fsum((r4 - mean4) ** 2) / (n - 1) / n)
    estimate = Float32Samples(chunked([(q, y)], [5_000]), 1, raw=True, pooled=False).raw_estimate(DETECTOR)
    assert float(estimate.amplitude_transmittance) == pytest.approx(t, rel=CLOSE)
    assert float(estimate.residual_variance_snu) == pytest.approx(math.fsum(r * r) / (n - 1), rel=CLOSE)
    assert float(estimate.mean_fourth_residual_snu4) == pytest.approx(mean4, rel=CLOSE)
    assert float(estimate.se_fourth_residual_snu4) == pytest.approx(se4, rel=CLOSE)
    assert float(estimate.sum_sq_sent_snu2) == pytest.approx(math.fsum(qd * qd), rel=CLOSE)
    # and the physics it estimates: t = 0.9, noise variance 1.3^2 * 6/4 (Student t, 6 dof), within 5 sigma
    assert float(estimate.amplitude_transmittance) == pytest.approx(0.9, abs=5 * 1.3 * math.sqrt(1.5 / n) / 3.4)
    assert float(estimate.residual_variance_snu) == pytest.approx(1.3**2 * 1.5, rel=5 * math.sqrt(8.0 / n))


def test_a_residual_too_large_for_float32_powers_is_summed_in_float64():
    """r^8 overflows float32 beyond ~6e4 SNU (an attack, not the honest link): that block is summed in float64."""
    rng = np.random.default_rng(9)
    q, y = layer_samples(rng, 3_000, 0.8, 0.0, 1.0)
    y[100] = 2e5
    summed = Float32Samples(chunked([(q, y)], [1_000]), 1, raw=True, pooled=False).raw_estimate(DETECTOR)
    reference = verification.estimate_channel(q, y, DETECTOR)
    assert np.isfinite(float(summed.se_fourth_residual_snu4))
    assert_estimates_close(summed, reference, CLOSE)


def test_nan_samples_and_mismatched_chunks_are_refused_in_one_line():
    rng = np.random.default_rng(10)
    q, y = layer_samples(rng, 1_000, 0.8, 0.0, 1.0)
    y[5] = np.nan
    with pytest.raises(ValueError, match="contains NaN or inf"):
        Float32Samples(chunked([(q, y)], [100]), 1)
    with pytest.raises(ValueError, match="must match"):
        Float32Samples(lambda _: iter([(q[:10], y[:9])]), 1)


def test_only_the_requested_estimates_are_summed():
    rng = np.random.default_rng(11)
    samples = [layer_samples(rng, 5_000, 0.8, 0.0, 1.0)]
    summed = Float32Samples(chunked(samples, [700]), 1, raw=False, pooled=False)
    with pytest.raises(ValueError, match="raw=True"):
        summed.raw_estimate(DETECTOR)
    with pytest.raises(ValueError, match="pooled=True"):
        summed.pooled_estimate(DETECTOR)
    assert_estimates_close(summed.layer_estimate(0, DETECTOR), PooledSamples(samples).layer_estimate(0, DETECTOR), CLOSE)

"""Per-layer weight-leakage bounds (DECISIONS F, J, P): checked through a covariance matrix built by hand and
through simulated verification samples of a layer whose data are sparse (ReLU outputs)."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import verification
from qslab.analysis.failure_budget import FailureBudget
from qslab.analysis.gaussian import entropy_photons_bits, symplectic_eigenvalues
from qslab.analysis.security_report import (MIN_VERIFIED_ROWS, MIN_VERIFIED_SAMPLES, WeightLeakage,
                                            largest_mode_share, layer_bound)

MU, GAIN, MODES = 6.0, 1.3, 392


def chi_from_covariance(mu, transmittance, excess_noise_snu):
    """S(AB) - S(B | heterodyne on A) from an explicitly built 4x4 covariance matrix (xpxp, SNU)."""
    v = 2 * mu + 1
    b = transmittance * (v - 1) + 1 + excess_noise_snu
    c = np.sqrt(transmittance * (v * v - 1))
    z = np.diag([1.0, -1.0])
    cov = np.block([[v * np.eye(2), c * z], [c * z, b * np.eye(2)]])
    conditioned = cov[2:, 2:] - cov[2:, :2] @ np.linalg.inv(cov[:2, :2] + np.eye(2)) @ cov[:2, 2:]
    entropy = lambda nus: float(sum(entropy_photons_bits((nu - 1) / 2) for nu in nus))  # noqa: E731
    return entropy(symplectic_eigenvalues(cov)) - entropy(symplectic_eigenvalues(conditioned))


def sparse_data(rng, images, dims, density=0.1):
    """ReLU-like vectors: most entries exactly zero, so one mode can carry a large share of |x|^2."""
    x = np.maximum(rng.normal(size=(images, dims)), 0.0) * (rng.random((images, dims)) < density)
    x[:, 0] += 1e-3
    return x


def simulated_layer(rng, data, rows, transmittance=0.9, efficiency=0.9):
    """The server's verified samples of `rows` rows for each image: per-mode excess noise 2(1 - 1/G)w_i."""
    packed_power = data[:, 0::2] ** 2 + data[:, 1::2] ** 2
    share = packed_power / packed_power.sum(axis=1, keepdims=True)            # [images, modes]
    eps = 2 * (1 - 1 / GAIN) * np.repeat(share, rows, axis=0)                 # [images*rows, modes]
    q = rng.normal(0, np.sqrt(2 * MU), eps.shape)
    y = np.sqrt(efficiency * transmittance) * q + rng.normal(0, 1, eps.shape) * np.sqrt(1 + efficiency * eps)
    return q.ravel(), y.ravel(), share


def _bound(sent, returned, rows, share, budget, efficiency=0.9):
    detector = verification.ServerDetector(efficiency)
    honest = verification.ChannelHypothesis.honest(GAIN, MODES, 0.8)
    return layer_bound("layer2", sent, returned, rows, mu_upper_photons=MU, mu_photons=MU, modes=MODES,
                       mode_share=share, honest_noise_per_share_snu=2 * (1 - 1 / GAIN), budget=budget,
                       detector=detector, honest=honest, tester=detector, false_alarm=1e-3)


BUDGET = FailureBudget.split(1e-3, [("layer2.transmittance", 1, ""), ("layer2.excess_noise", 1, "")])


def test_the_layer_bound_is_the_covariance_matrix_value_at_its_worst_mode_and_covers_the_truth():
    rng = np.random.default_rng(5)
    data = sparse_data(rng, 50, 2 * MODES)
    sent, returned, share = simulated_layer(rng, data, rows=4)
    layer = _bound(sent, returned, 4, largest_mode_share(data), BUDGET)
    assert layer.verified and layer.method == "verified, worst mode"
    assert largest_mode_share(data) == pytest.approx(share.max())
    # the same number through a hand-built covariance matrix at the reported limits
    assert layer.bits_per_mode == pytest.approx(
        chi_from_covariance(MU, layer.transmittance_min, layer.excess_noise_worst_mode_snu), abs=1e-9)
    # the truth: the worst mode's own noise at the true T, through the covariance matrix
    truth = chi_from_covariance(MU, 0.9, 2 * (1 - 1 / GAIN) * share.max())
    assert truth <= layer.bits_per_mode
    # the average-mode figure alone would not cover the worst mode of sparse data
    assert layer.average_mode_bits_per_mode < truth


def test_a_layer_with_too_few_verified_rows_or_samples_reports_g_of_mu():
    rng = np.random.default_rng(6)
    data = sparse_data(rng, 2, 2 * MODES)
    sent, returned, _ = simulated_layer(rng, data, rows=1)
    assert sent.size < MIN_VERIFIED_SAMPLES
    for rows in (1, MIN_VERIFIED_ROWS - 1):
        layer = _bound(sent, returned, rows, largest_mode_share(data), BUDGET)
        assert not layer.verified and layer.bits_per_mode == pytest.approx(float(entropy_photons_bits(MU)))
    empty = _bound(np.empty(0), np.empty(0), 0, 0.0, BUDGET)
    assert empty.method == "no verification: g(mu)"


def test_the_ten_row_layer_goes_unverified_in_most_default_sessions():
    """1 % of 10 rows over 4 batches: P(no verified row) = 0.99^40 = 0.67 (the issue's figure), and at least
    MIN_VERIFIED_ROWS is rarer still; simulated row draws agree."""
    rng = np.random.default_rng(0)
    verified = (rng.random((100_000, 4, 10)) < 0.01).sum(axis=(1, 2))
    assert np.mean(verified == 0) == pytest.approx(0.99**40, abs=0.01)
    assert np.mean(verified >= MIN_VERIFIED_ROWS) < 0.01


def test_cumulative_figures_are_queries_times_the_per_query_bound():
    rng = np.random.default_rng(7)
    data = sparse_data(rng, 50, 2 * MODES)
    sent, returned, _ = simulated_layer(rng, data, rows=4)
    verified = _bound(sent, returned, 4, largest_mode_share(data), BUDGET)
    unverified = _bound(np.empty(0), np.empty(0), 0, 0.0, BUDGET)
    report = WeightLeakage((verified, unverified), queries=200, weights_per_layer=(784 * 784, 7840))
    assert report.per_query_bits_per_mode == unverified.bits_per_mode  # the worst layer
    assert report.cumulative_bits_per_mode == pytest.approx(200 * unverified.bits_per_mode)
    assert report.per_client_bits == pytest.approx(200 * (784 * 784 / 2 * verified.bits_per_mode
                                                          + 7840 / 2 * unverified.bits_per_mode))


def test_every_pass_of_the_weights_counts_and_passes_beyond_the_queries_count_at_g_mu():
    """DECISIONS AI, summed pass by pass: each recorded query adds its layer's bound, each other pass (the set-up's
    nulling, a batch taken again) adds g(mu), whatever the layer's verification. With many set-up passes the verified
    layer can become the worst in total although its per-query bound is the smaller."""
    rng = np.random.default_rng(7)
    data = sparse_data(rng, 50, 2 * MODES)
    sent, returned, _ = simulated_layer(rng, data, rows=4)
    verified = _bound(sent, returned, 4, largest_mode_share(data), BUDGET)
    unverified = _bound(np.empty(0), np.empty(0), 0, 0.0, BUDGET)
    assert verified.bits_per_mode < verified.unverified_bits_per_mode == unverified.bits_per_mode
    weights = (784 * 784, 7840)
    for sent_to in [(200, 200), (203, 304), (900, 210)]:
        report = WeightLeakage((verified, unverified), queries=200, weights_per_layer=weights, images_sent=sent_to)
        totals = []
        for layer, images in zip((verified, unverified), sent_to):
            total = 0.0
            for image in range(images):
                total += layer.bits_per_mode if image < 200 else layer.unverified_bits_per_mode
            totals.append(total)
        assert report.cumulative_bits_per_mode_per_layer == pytest.approx(totals, rel=1e-12)
        assert report.cumulative_bits_per_mode == pytest.approx(max(totals), rel=1e-12)
        assert report.per_client_bits == pytest.approx(sum(n / 2 * t for n, t in zip(weights, totals)), rel=1e-12)
    assert report.cumulative_bits_per_mode == report.cumulative_bits_per_mode_per_layer[0]  # 700 passes at g(mu)
    uncounted = WeightLeakage((verified, unverified), queries=200, weights_per_layer=weights)
    assert uncounted.to_json()["images_sent_per_layer"] is None
    assert uncounted.cumulative_bits_per_mode == WeightLeakage(
        (verified, unverified), queries=200, weights_per_layer=weights, images_sent=(200, 200)).cumulative_bits_per_mode
    for wrong in [(199, 300), (300,), (300, 300, 300)]:
        with pytest.raises(ValueError, match="images_sent"):
            WeightLeakage((verified, unverified), queries=200, weights_per_layer=weights, images_sent=wrong)


def test_the_session_report_prints_each_layers_passes_or_says_they_were_not_counted():
    """`qslab session`'s weight-leakage lines from the report's JSON: the total over every pass, each layer's passes
    beyond the queries at g(mu); a file without the count says the total holds for its queries only."""
    from qslab.sequences.commands.session import cap_stop_text, weight_leakage_rows

    rng = np.random.default_rng(7)
    data = sparse_data(rng, 50, 2 * MODES)
    sent, returned, _ = simulated_layer(rng, data, rows=4)
    from dataclasses import replace

    layers = (replace(_bound(sent, returned, 4, largest_mode_share(data), BUDGET), layer="layer1"),
              _bound(np.empty(0), np.empty(0), 0, 0.0, BUDGET))
    counted = WeightLeakage(layers, queries=200, weights_per_layer=(784 * 784, 7840), images_sent=(203, 304))
    rows = dict(weight_leakage_rows({"security_report": {"weight_leakage": counted.to_json()}}))
    assert f"{counted.cumulative_bits_per_mode:.4g} bit/mode over every image the weights were sent to" in rows[
        "weight leakage"]
    assert "sent to 304 images: 200 queries and 104 more" in rows["  layer2"]
    assert f"{counted.cumulative_bits_per_mode_per_layer[1]:.4g} bit/mode in all" in rows["  layer2"]
    assert "sent to 203 images: 200 queries and 3 more" in rows["  layer1"]
    uncounted = WeightLeakage(layers, queries=200, weights_per_layer=(784 * 784, 7840))
    rows = dict(weight_leakage_rows({"security_report": {"weight_leakage": uncounted.to_json()}}))
    assert "over the session's 200 queries (passes beyond them not counted" in rows["weight leakage"]
    assert "sent to" not in rows["  layer1"] + rows["  layer2"]
    stop = {"images": 10, "projected_bits_per_mode": 600.0, "cap_bits_per_mode": 550.0}
    assert cap_stop_text(stop).startswith("after 10 images: the next batch would take the total to 600 bit/mode")
    assert "taking the next batch again would" in cap_stop_text({**stop, "taken_again": True})


def test_lab_guidance_solves_for_the_target_and_splits_loss_from_noise():
    """The T, eps and mu it returns put the planned bound exactly at the target; loss alone is the pure-loss
    identity chi_E(2 mu + 1, T, 0) = g((1 - T) mu), an independent closed form."""
    from qslab.analysis.security_budget import layer_guidance
    from qslab.analysis.verified_planning import BoundConditions, expected_verified_bound_bits

    conditions = BoundConditions(transmittance=0.58, mode_share=0.01, inversion_factor=2.0)
    guide = layer_guidance("layer1", 0.5, 1.3, 0.1, conditions)
    assert guide.loss_only_bits_per_mode == pytest.approx(float(entropy_photons_bits(0.42 * 0.5)), rel=1e-9)
    assert guide.dominant == "loss"
    assert float(expected_verified_bound_bits(guide.largest_mu, 1.3, conditions)) == pytest.approx(0.1, rel=1e-6)
    small = layer_guidance("layer1", 0.03, 1.3, 0.1, conditions)
    assert 0.0 < small.transmittance_needed < 1.0
    from dataclasses import replace
    assert float(expected_verified_bound_bits(0.03, 1.3, replace(conditions, transmittance=small.transmittance_needed))
                 ) == pytest.approx(0.1, rel=1e-6)
    assert layer_guidance("layer1", 0.01, 1.3, 0.1, conditions).transmittance_needed == 0.0  # g(0.01) < 0.1
    assert guide.transmittance_needed is None or guide.transmittance_needed > 0.58


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_the_largest_mode_share_is_each_modes_power_over_its_vectors_bit_for_bit(dtype):
    """Against the definition taken mode by mode in float64 (the vectors as complex pairs, an odd width padded with
    a zero, a zero vector skipped): the same float, not just close, whatever the input's type."""
    rng = np.random.default_rng(11)
    vectors = (rng.standard_normal((40, 783)) * 30).astype(dtype) if dtype != np.uint8 else \
        rng.integers(0, 255, size=(40, 783)).astype(np.uint8)
    vectors[7] = 0
    x = np.pad(vectors.astype(np.float64), ((0, 0), (0, 1)))
    expected = 0.0
    for row in x:
        power = row[0::2] ** 2 + row[1::2] ** 2
        if power.sum() > 0:
            expected = max(expected, float(np.max(power / power.sum())))
    assert largest_mode_share(vectors) == expected
    assert largest_mode_share(np.zeros((3, 4), dtype=dtype)) == 0.0 and largest_mode_share(np.empty((0, 4))) == 0.0

"""Verification estimators, finite-size limits, bound and accept/abort (analysis/verification.py).

Every statistical test simulates y directly from the homodyne model
y = sqrt(eta_s T) q + N(0, 1 + v_el + eta_s eps_i), vectorised over repetitions with fixed seeds, and
checks against binomial limits at 1e-4 so that a pass is not luck and a failure is decisive.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from qslab.analysis.verification import (
    ChannelHypothesis,
    ServerDetector,
    acceptance_test,
    confidence_limits,
    estimate_channel,
    is_accepted,
    leakage_bound_bits,
    rejection_probability,
    samples_for_excess_noise_precision,
    samples_for_power,
    sent_quadratures_snu,
    verify,
    z_from_failure,
)
from qslab.analysis.weight_leakage import holevo_verified_bits, modulation_variance_snu

MU = 6.0  # PRX operating point, V = 13
GAIN, N_MODES = 1.3, 392
DETECTOR = ServerDetector(efficiency=0.7, electronic_noise_snu=0.01)


def simulate(rng, reps, n_samples, transmittance, excess_noise_snu, detector=DETECTOR, mu=MU):
    """(q, y), shape (reps, n_samples); excess_noise_snu broadcasts over samples (per-mode patterns)."""
    q = rng.normal(0.0, np.sqrt(2.0 * mu), (reps, n_samples))
    eta, v_el = detector.efficiency, detector.electronic_noise_snu
    sd = np.sqrt(1.0 + v_el + eta * np.asarray(excess_noise_snu, dtype=float))
    return q, np.sqrt(eta * transmittance) * q + sd * rng.standard_normal((reps, n_samples))


def honest_pattern_snu(rng, gain=GAIN, n_modes=N_MODES, rows=1):
    """Per-sample honest excess noise (2 - 2/G)|x_i|^2 for a secret normalised x, repeated over rows."""
    x = rng.normal(size=n_modes) + 1j * rng.normal(size=n_modes)
    per_mode = (2.0 - 2.0 / gain) * np.abs(x) ** 2 / np.sum(np.abs(x) ** 2)
    return np.tile(per_mode, rows)


def max_failures(reps, p, level=1e-4):
    return stats.binom.ppf(1.0 - level, reps, p)


# --- estimators ------------------------------------------------------------------------------------

def test_sent_quadratures_pick_re_or_im_per_row():
    alpha = np.array([[1 + 2j, -0.5 + 0.25j], [3 - 1j, 0.1 + 0.2j]])
    q = sent_quadratures_snu(alpha, [False, True])
    np.testing.assert_allclose(q, [[2.0, -1.0], [-2.0, 0.4]])


def test_point_estimates_centre_on_truth_homogeneous_and_heterogeneous():
    rng = np.random.default_rng(1)
    reps, rows, t_true = 400, 10, 0.9
    heterogeneous = 0.02 * N_MODES * np.abs(rng.normal(size=N_MODES)) ** 2 / N_MODES  # mean ~0.02, wide spread
    for eps in (0.02, np.tile(heterogeneous, rows)):
        q, y = simulate(rng, reps, rows * N_MODES, t_true, eps)
        est = estimate_channel(q, y, DETECTOR)
        for values, truth in ((est.transmittance, t_true), (est.excess_noise_snu, np.mean(eps))):
            se = np.std(values) / np.sqrt(reps)
            assert abs(np.mean(values) - truth) < 4.0 * se, (np.mean(values), truth, se)


def test_untrusted_detector_charges_its_loss_and_noise_to_the_client():
    rng = np.random.default_rng(2)
    q, y = simulate(rng, 1, 400_000, 0.9, 0.05)
    est = estimate_channel(q, y, ServerDetector(0.7, 0.01, trusted=False))
    assert est.transmittance[0] == pytest.approx(0.7 * 0.9, abs=3e-3)
    assert est.excess_noise_snu[0] == pytest.approx(0.7 * 0.05 + 0.01, abs=8e-3)


def test_homodyne_scale_has_no_heterodyne_factors():
    """T = 0.5 must come back as 0.5, not 0.25 or 1 (the factor-2 / factor-4 trap of 3.3)."""
    rng = np.random.default_rng(3)
    q, y = simulate(rng, 1, 200_000, 0.5, 0.1, ServerDetector())
    est = estimate_channel(q, y)
    assert est.transmittance[0] == pytest.approx(0.5, rel=0.01)
    assert est.excess_noise_snu[0] == pytest.approx(0.1, abs=0.01)


def test_rows_by_modes_pooled_over_tuple_axis_equals_flattened():
    rng = np.random.default_rng(4)
    q, y = simulate(rng, 3, 20 * 8, 0.8, 0.1)
    a = estimate_channel(q.reshape(3, 20, 8), y.reshape(3, 20, 8), DETECTOR, axis=(-2, -1))
    b = estimate_channel(q, y, DETECTOR)
    np.testing.assert_allclose(a.transmittance, b.transmittance)
    np.testing.assert_allclose(a.excess_noise_snu, b.excess_noise_snu)
    assert a.n_samples == b.n_samples == 160


# --- coverage --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_samples", [10, 2000])
def test_exact_limits_cover_at_their_stated_rate(n_samples):
    rng = np.random.default_rng(10 + n_samples)
    reps, failure, t_true, eps_true = 2000, 0.05, 0.8, 0.05
    q, y = simulate(rng, reps, n_samples, t_true, eps_true)
    lim = confidence_limits(estimate_channel(q, y, DETECTOR), DETECTOR, failure)
    misses_t = np.sum(lim.transmittance_min > t_true)
    misses_eps = np.sum(lim.excess_noise_max_snu < eps_true)
    assert misses_t <= max_failures(reps, failure / 2), misses_t
    assert misses_eps <= max_failures(reps, failure / 2), misses_eps


def test_exact_chi_square_is_exact_for_homogeneous_noise():
    """dispersion=0 (known homogeneous): misses sit at the nominal rate, neither above nor far below."""
    rng = np.random.default_rng(11)
    reps, failure, eps_true = 4000, 0.05, 0.05
    q, y = simulate(rng, reps, 10, 0.8, eps_true)
    lim = confidence_limits(estimate_channel(q, y, DETECTOR), DETECTOR, failure, dispersion=0.0)
    for misses in (np.sum(lim.excess_noise_max_snu < eps_true), np.sum(lim.transmittance_min > 0.8)):
        assert stats.binom.ppf(1e-4, reps, failure / 2) <= misses <= max_failures(reps, failure / 2), misses


@pytest.mark.parametrize("fraction, added_snu", [(0.05, 2.0), (0.01, 20.0)])
def test_limits_cover_with_heterogeneous_noise_on_a_few_modes(fraction, added_snu):
    """A fraction of the modes carries extra noise: the pooled variance is a mixture, not chi-square.

    With ~20 heavy samples at +20 SNU the plain chi-square misses ~9 % and the point estimate of
    kappa ~5 % at nominal 2.5 %; the default upper confidence limit of kappa restores coverage.
    """
    rng = np.random.default_rng(12)
    reps, rows, failure = 2000, 5, 0.05
    per_mode = honest_pattern_snu(rng) + added_snu * (rng.random(N_MODES) < fraction)
    eps = np.tile(per_mode, rows)
    q, y = simulate(rng, reps, eps.size, 1.0, eps)
    lim = confidence_limits(estimate_channel(q, y, DETECTOR), DETECTOR, failure)
    assert np.sum(lim.excess_noise_max_snu < np.mean(eps)) <= max_failures(reps, failure / 2)
    assert np.sum(lim.transmittance_min > 1.0) <= max_failures(reps, failure / 2)


def test_asymptotic_literature_forms_undercover_at_small_m():
    """Why "exact" is the default: at m = 10 the z sqrt(2/m) form misses ~6x too often."""
    rng = np.random.default_rng(13)
    reps, failure, eps_true = 2000, 0.05, 0.05
    q, y = simulate(rng, reps, 10, 0.8, eps_true)
    est = estimate_channel(q, y, DETECTOR)
    misses = {m: np.sum(confidence_limits(est, DETECTOR, failure, method=m, dispersion=0.0).excess_noise_max_snu
                        < eps_true) for m in ("exact", "leverrier")}
    assert misses["leverrier"] > 3 * max_failures(reps, failure / 2) / 2 > misses["exact"]


def test_z_convention_matches_homcvqkd_table():
    assert z_from_failure(1e-10) == pytest.approx(6.466951, abs=1e-6)
    assert z_from_failure(1e-5) == pytest.approx(4.417173, abs=1e-6)


@pytest.mark.parametrize("uncertainty", [
    {"efficiency_uncertainty": 0.02},
    {"electronic_noise_uncertainty_snu": 1e-3},
    {"shot_noise_rel_uncertainty": 1e-3},
])
def test_each_calibration_uncertainty_widens_both_limits(uncertainty):
    rng = np.random.default_rng(14)
    q, y = simulate(rng, 50, 5000, 0.9, 0.02)
    sharp = confidence_limits(estimate_channel(q, y, DETECTOR), DETECTOR)
    loose_det = ServerDetector(0.7, 0.01, **uncertainty)
    loose = confidence_limits(estimate_channel(q, y, loose_det), loose_det)
    assert np.all(loose.excess_noise_max_snu > sharp.excess_noise_max_snu)
    if "electronic_noise_uncertainty_snu" not in uncertainty:  # v_el does not enter T
        assert np.all(loose.transmittance_min < sharp.transmittance_min)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=3, max_value=300), st.floats(0.05, 1.0), st.floats(0.0, 0.5), st.integers(0, 2**31))
def test_limits_bracket_the_point_estimates(n_samples, t_true, eps_true, seed):
    q, y = simulate(np.random.default_rng(seed), 1, n_samples, t_true, eps_true)
    est = estimate_channel(q, y, DETECTOR)
    lim = confidence_limits(est, DETECTOR, 1e-3)
    assert np.all(lim.transmittance_min <= est.transmittance)
    assert np.all(lim.excess_noise_max_snu >= est.excess_noise_snu)


# --- the bound -------------------------------------------------------------------------------------

def test_chi_is_monotone_where_the_clipping_relies_on_it():
    t = np.linspace(0.05, 1.0, 120)[:, None]
    eps = np.linspace(0.0, 0.2, 120)[None, :]
    for v in (1.01, 3.0, 13.0, 1001.0):
        chi = holevo_verified_bits(v, t, eps)
        assert np.all(np.diff(chi, axis=0) <= 1e-12) and np.all(np.diff(chi, axis=1) >= -1e-12)
    mus = np.linspace(0.0, 30.0, 61)[:, None, None]
    assert np.all(np.diff(holevo_verified_bits(modulation_variance_snu(mus), t, eps), axis=0) >= -1e-12)


def test_bound_at_limits_exceeds_bound_at_truth():
    rng = np.random.default_rng(20)
    t_true, rows = 0.95, 50
    eps = honest_pattern_snu(rng, rows=rows)
    q, y = simulate(rng, 200, eps.size, t_true, eps)
    lim = confidence_limits(estimate_channel(q, y, DETECTOR), DETECTOR)  # eps_PE = 1e-10
    per_mode, per_weight = leakage_bound_bits(MU, lim.transmittance_min, lim.excess_noise_max_snu)
    truth = holevo_verified_bits(modulation_variance_snu(MU), t_true, np.mean(eps))
    assert np.all(per_mode >= truth)
    np.testing.assert_allclose(per_weight, 0.5 * per_mode)
    # the upper photon-number limit can only raise it
    assert np.all(leakage_bound_bits(1.1 * MU, lim.transmittance_min, lim.excess_noise_max_snu)[0] >= per_mode)


# --- accept / abort --------------------------------------------------------------------------------

def test_honest_clients_rejected_at_the_stated_false_alarm_rate():
    rng = np.random.default_rng(30)
    reps, rows, alpha = 2000, 10, 0.05
    honest = ChannelHypothesis.honest(GAIN, N_MODES)
    eps = honest_pattern_snu(rng, rows=rows)  # heterogeneous, mean exactly the nominal eps
    q, y = simulate(rng, reps, eps.size, 1.0, eps)
    est = estimate_channel(q, y, DETECTOR)
    rejected = 0
    for i in range(reps):  # thresholds depend on each run's sum q^2
        test = acceptance_test(honest, est.n_samples, est.sum_sq_sent_snu2[i], DETECTOR, alpha)
        rejected += not is_accepted(est, test)[i]
        assert rejection_probability(test, honest, DETECTOR, worst_for_honest=True) == pytest.approx(alpha)
    assert rejected <= max_failures(reps, alpha)
    assert rejected >= stats.binom.ppf(1e-4, reps, alpha)  # not vacuously conservative either


def _simulated_power(rng, alternative_eps, t_alt, n_samples, alpha, reps):
    honest = ChannelHypothesis.honest(GAIN, N_MODES)
    q, y = simulate(rng, reps, n_samples, t_alt, alternative_eps)
    est = estimate_channel(q, y, DETECTOR)
    detected = [not is_accepted(est, acceptance_test(honest, n_samples, s, DETECTOR, alpha))[i]
                for i, s in enumerate(est.sum_sq_sent_snu2)]
    return np.mean(detected)


def test_five_percent_tap_detected_with_planned_power():
    rng = np.random.default_rng(31)
    honest = ChannelHypothesis.honest(GAIN, N_MODES)
    tap = honest.tap(0.05)
    m = samples_for_power(honest, tap, MU, DETECTOR, false_alarm=1e-3, power=0.99)
    assert 3_000 < m < 10_000  # ~15 verified rows of 392 modes
    reps = 1000
    power = _simulated_power(rng, honest_pattern_snu(rng, rows=m // N_MODES + 1)[:m], tap.transmittance, m, 1e-3, reps)
    assert power >= stats.binom.ppf(1e-4, reps, 0.99) / reps


def test_intercept_resend_on_a_fraction_of_modes_detected_with_planned_power():
    """f = 5 % of the modes measured and resent (+2 SNU each): heterogeneous, +0.1 SNU on average."""
    rng = np.random.default_rng(32)
    honest = ChannelHypothesis.honest(GAIN, N_MODES)
    cheat = honest.intercept_resend(0.05)
    m = samples_for_power(honest, cheat, MU, DETECTOR, false_alarm=1e-3, power=0.99)
    rows = m // N_MODES + 1
    per_mode = honest_pattern_snu(rng) + 2.0 * (np.arange(N_MODES) < round(0.05 * N_MODES))
    reps = 400
    power = _simulated_power(rng, np.tile(per_mode, rows), 1.0, rows * N_MODES, 1e-3, reps)
    assert power >= stats.binom.ppf(1e-4, reps, 0.99) / reps


def test_sample_size_for_1em3_snu_excess_matches_the_closed_form():
    honest = ChannelHypothesis.honest(GAIN, N_MODES)
    ideal = ServerDetector()
    m = samples_for_power(honest, honest.with_extra_noise(1e-3), MU, ideal, 1e-3, 0.99)
    alpha_each = 1.0 - np.sqrt(1.0 - 1e-3)
    closed = 2.0 * (stats.norm.isf(alpha_each) + stats.norm.isf(0.01)) ** 2 / 1e-3**2
    assert m == pytest.approx(closed, rel=0.03)
    assert 5e7 < m < 8e7  # ~1.6e5 verified rows of 392 modes
    assert samples_for_excess_noise_precision(1e-3) == pytest.approx(2.0 * (6.47 / 1e-3) ** 2, rel=0.03)


def test_verify_reports_everything_as_json():
    rng = np.random.default_rng(40)
    honest = ChannelHypothesis.honest(GAIN, N_MODES)
    alpha = (rng.normal(size=(30, N_MODES)) + 1j * rng.normal(size=(30, N_MODES))) * np.sqrt(MU / 2.0)
    q = sent_quadratures_snu(alpha, rng.random(30) < 0.5)
    eps = honest_pattern_snu(rng, rows=30).reshape(30, N_MODES)
    y = np.sqrt(0.7) * q + np.sqrt(1.01 + 0.7 * eps) * rng.standard_normal(q.shape)
    res = verify(q, y, MU, honest, DETECTOR, alternative=honest.tap(0.05), mu_upper_photons=6.3, axis=(0, 1))
    d = json.loads(json.dumps(res.to_dict()))
    assert d["accepted"] is True and d["n_samples"] == 30 * N_MODES
    assert d["false_alarm_probability"] == pytest.approx(1e-3)
    assert d["detection_power"] > 0.99 and d["mu_photons"] == 6.3
    assert d["transmittance_min"] <= d["transmittance_hat"] and d["excess_noise_max_snu"] >= d["excess_noise_hat_snu"]
    assert d["chi_bits_per_weight"] == pytest.approx(0.5 * d["chi_bits_per_mode"])


# --- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: estimate_channel(np.ones(5), np.ones(4)), "returned_quadratures_snu"),
        (lambda: estimate_channel(np.array([]), np.array([])), "sent_quadratures_snu"),
        (lambda: estimate_channel(np.ones(1), np.ones(1)), "sent_quadratures_snu"),
        (lambda: estimate_channel(np.zeros(5), np.ones(5)), "sent_quadratures_snu"),
        (lambda: estimate_channel(np.ones(5) * 1j, np.ones(5)), "sent_quadratures_snu"),
        (lambda: estimate_channel(np.ones(5), np.array([1, 2, np.nan, 4, 5])), "returned_quadratures_snu"),
        (lambda: ServerDetector(electronic_noise_snu=-0.01), "electronic_noise_snu"),
        (lambda: ServerDetector(efficiency=1.2), "efficiency"),
        (lambda: ChannelHypothesis(1.0, 0.0, excess_noise_spread_snu2=-1.0), "excess_noise_spread_snu2"),
        (lambda: leakage_bound_bits(-1.0, 0.9, 0.01), "mu_photons"),
        (lambda: z_from_failure(0.0), "failure_probability"),
        (lambda: confidence_limits(estimate_channel(np.arange(1.0, 6.0), np.arange(1.0, 6.0)), dispersion=-0.1),
         "dispersion"),
        (lambda: sent_quadratures_snu(np.ones((2, 3)), [True]), "measure_p"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()

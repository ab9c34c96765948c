"""The data-leakage report part: the bound from calibrated values at the report's failure budget, by a second route.

The expected numbers are recomputed here by hand: n_sp from the noise figure, N = n_sp (1 - 1/G) t, each limit at
the normal quantile of its equal share of the total, and the per-row bound as sum_k g(N lambda_k) - g(N) written
out with numpy (not through analysis.gaussian or data_leakage_bound).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from qslab.analysis.data_leakage_report import (PER_BIN_LABEL, data_leakage_report,
                                                declared_moments, file_sha256, load_moments, paper_figures)
from qslab.analysis.data_leakage_bound import SecondMoments
from qslab.analysis.estimate import Estimate
from qslab.analysis.failure_budget import report_budget
from qslab.analysis.measured_values import MeasuredValues
from qslab.analysis.network import default_weights_path

TOTAL = 1e-10


def _measured(loss=Estimate(0.3, 0.02)) -> MeasuredValues:
    return MeasuredValues(mu_photons=Estimate(6.0, 0.04), gain=Estimate(1.3, 0.003),
                          server_efficiency=Estimate(0.86, 0.02), server_electronic_noise_snu=Estimate(0.04, 0.0005),
                          amplifier_noise_figure_db=Estimate(3.8, 0.1), transmittance=Estimate(0.63, 0.05),
                          processor_loss_per_pass_db=loss)


def _g(n):
    n = np.asarray(n, dtype=float)
    return np.where(n > 0, (n + 1) * np.log2(n + 1) - n * np.log2(np.where(n > 0, n, 1.0)), 0.0)


def _moments(lam, sigma_shift=0.0):
    """A SecondMoments with two jackknife replicates, so the per-row bound has a known non-zero spread."""
    lam = np.asarray(lam, dtype=float)
    other = np.roll(lam, 1)
    return SecondMoments(np.empty((0, 0)), lam, 100, np.array([lam, (1 - sigma_shift) * lam + sigma_shift * other]))


def test_the_bound_sits_at_the_budget_s_limits_by_hand():
    measured = _measured()
    budget = report_budget(TOTAL, measured, ["layer1"])
    names = [t.name for t in budget.terms]
    assert {"processor_loss_per_pass_db", "data_second_moments", "gain", "amplifier_noise_figure_db"} <= set(names)
    share = TOTAL / len(names)
    g_up = 1.3 + norm.isf(share / 2) * 0.003                  # G: an interval, both ends used
    nf_up = 3.8 + norm.isf(share) * 0.1                       # noise figure: upper limit
    loss_low = 0.3 - norm.isf(share) * 0.02                   # processor loss: lower limit (less loss, more noise)
    nf = 10 ** (nf_up / 10)
    n_sp = (g_up * nf - 1) / (2 * (g_up - 1))
    photons = n_sp * (1 - 1 / g_up) * 10 ** (-loss_low / 10)
    lam = np.array([0.7, 0.2, 0.1])
    mom = _moments(lam, 0.5)
    report = data_leakage_report(measured, budget, [(784, 6)], [mom], distribution="test", inputs=200)
    assert report.photons_upper == pytest.approx(photons, rel=1e-12)
    per_row = float(np.sum(_g(photons * lam)) - _g(photons))
    reps = [float(np.sum(_g(photons * r / r.sum())) - _g(photons)) for r in mom.replicate_eigenvalues]
    sigma = math.sqrt(0.5 * sum((r - np.mean(reps)) ** 2 for r in reps))   # jackknife, k = 2 groups
    layer = report.data
    assert layer.per_row_bits == pytest.approx(per_row, rel=1e-10)
    assert layer.per_row_uncertainty_bits == pytest.approx(sigma, rel=1e-8) and sigma > 0
    upper = per_row + norm.isf(share) * sigma
    assert report.per_query_bits == pytest.approx(784 * upper, rel=1e-10)
    assert report.per_symbol_bits * 3 == pytest.approx(report.per_query_bits, rel=1e-12)  # n = 3 complex modes
    assert report.cumulative_bits == pytest.approx(200 * report.per_query_bits, rel=1e-12)


def test_an_unmeasured_loss_is_taken_as_lossless_and_a_candidate_set_caps_the_total():
    measured = _measured(loss=None)
    budget = report_budget(TOTAL, measured, [])
    lossless = data_leakage_report(measured, budget, [(784, 6)], [_moments([0.7, 0.2, 0.1])], distribution="t")
    assert lossless.transmittance_per_pass == 1.0 and lossless.loss_per_pass_db_lower == 0.0
    lossy_budget = report_budget(TOTAL, _measured(), [])
    lossy = data_leakage_report(_measured(), lossy_budget, [(784, 6)], [_moments([0.7, 0.2, 0.1])], distribution="t")
    assert lossy.photons_upper < lossless.photons_upper
    capped = data_leakage_report(measured, budget, [(784, 6)], [_moments([0.7, 0.2, 0.1])], distribution="t",
                                 inputs=3, repeats=10, candidate_entropy_bits=math.log2(2000))
    assert capped.data.capped and capped.data.per_input_bits == pytest.approx(math.log2(2000))
    assert capped.per_query_bits == pytest.approx(math.log2(2000))       # one query already exceeds H(X)
    assert capped.cumulative_bits == pytest.approx(3 * math.log2(2000))  # three different inputs


def test_takes_repeated_or_never_recorded_count_as_inputs_of_their_own():
    """A session's data-leakage total over every image whose data went out (DECISIONS AI): 200 recorded inputs and 30
    more takes total 230 inputs' worth, above the exact figure for 30 inputs sent twice (min(2x, H) <= 2 min(x, H)),
    and the report says so; no count (None) or none beyond the inputs is the old total and label."""
    from qslab.analysis.data_leakage_report import report_rows

    measured = _measured()
    budget = report_budget(TOTAL, measured, [])
    moments = [_moments([0.7, 0.2, 0.1])]
    plain = data_leakage_report(measured, budget, [(784, 6)], moments, distribution="t", inputs=200)
    taken = data_leakage_report(measured, budget, [(784, 6)], moments, distribution="t", inputs=200, takes=230)
    per_input = plain.data.per_input_bits
    assert taken.cumulative_bits == pytest.approx(230 * per_input, rel=1e-12)
    twice = data_leakage_report(measured, budget, [(784, 6)], moments, distribution="t", inputs=30, repeats=2)
    assert taken.cumulative_bits >= 170 * per_input + twice.cumulative_bits * (1 - 1e-12)
    assert data_leakage_report(measured, budget, [(784, 6)], moments, distribution="t", inputs=200,
                               takes=200).cumulative_bits == plain.cumulative_bits
    text = dict(report_rows(taken.to_json()))["data leakage (upper bound)"]
    assert "230 images sent: 200 different inputs, and 30 sent again" in text
    assert "200 different inputs, each sent once" in dict(report_rows(plain.to_json()))["data leakage (upper bound)"]


def test_the_paper_s_figures_are_labelled_not_bounds():
    figures = {f.name: f for f in paper_figures(0.0016, 0.19, 0.08)}
    assert "not a bound" in figures["paper_eq3_cramer_rao"].what and "not a bound" in figures["paper_prx_form"].what
    assert figures["per_bin_photon_counting"].what == PER_BIN_LABEL and "exact" not in PER_BIN_LABEL


def test_the_reference_value_at_g_1_3_ideal_from_the_shipped_moments():
    """docs/PHYSICS.md 17.5: MNIST layer 1 at G = 1.3, n_sp = 1, lossless gives b = 0.568186, 445.46 bits/query."""
    moments, _ = declared_moments()
    lam = moments[0].eigenvalues
    n = 3 / 13
    assert lam[0] == pytest.approx(0.711555, abs=1e-6)
    assert float(np.sum(_g(n * lam)) - _g(n)) == pytest.approx(0.568186, abs=1e-6)


def test_the_shipped_second_moments_are_what_the_training_images_give(mnist_train_moments):
    """Recomputed from MNIST and the shipped weights by compute_mnist_moments (5-9 s of CPU, once per test run:
    tests/conftest.py): the shipped file is reproducible."""
    shipped, provenance = load_moments()
    assert provenance["weights_sha256"] == file_sha256(default_weights_path())
    again, recomputed = mnist_train_moments
    assert recomputed["weights_sha256"] == provenance["weights_sha256"]
    # up to the order of the sums: the BLAS kernels the CPU selects sum in another order (seen 7.4e-7 relative on an
    # AVX-512 machine against the shipped file), far below the moments' own sampling error
    for a, b in zip(shipped, again):
        assert a.samples == b.samples
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(a.replicate_eigenvalues, b.replicate_eigenvalues, rtol=1e-5, atol=1e-12)

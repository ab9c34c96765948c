"""One failure probability for the whole report: the union-bound split and, by Monte-Carlo, that the limits it sets
cover the truth at the stated probability (simulated calibrations and verification samples, violations counted)."""

from __future__ import annotations

import numpy as np
import pytest

from qslab.analysis import verification
from qslab.analysis.estimate import Estimate
from qslab.analysis.failure_budget import FailureBudget, report_budget, verification_probability
from qslab.analysis.measured_values import MeasuredValues, server_detector


def _measured(**uncertainties) -> MeasuredValues:
    u = {"mu": 0.04, "gain": 0.003, "eta": 0.02, "v_el": 0.0005, "snu": 0.0022, "nf": 0.1, **uncertainties}
    return MeasuredValues(mu_photons=Estimate(6.0, u["mu"]), gain=Estimate(1.3, u["gain"]),
                          server_efficiency=Estimate(0.86, u["eta"]),
                          server_electronic_noise_snu=Estimate(0.04, u["v_el"]),
                          server_shot_noise_variance_v2=Estimate(1e-4, u["snu"] * 1e-4),
                          amplifier_noise_figure_db=Estimate(3.8, u["nf"]), transmittance=Estimate(0.63, 0.05))


def test_the_shares_add_up_to_the_total_and_exact_values_spend_nothing():
    budget = report_budget(1e-10, _measured(gain=0.0), ["layer1", "layer2"])
    names = [t.name for t in budget.terms]
    assert "gain" not in names and budget.sigmas("gain") == 0.0  # known exactly: its limit is its value
    # five calibrations, T and eps of two layers, and the data-leakage bound's second moments
    assert names.count("layer2.excess_noise") == 1 and names[-1] == "data_second_moments" and len(names) == 5 + 4 + 1
    assert budget.combined == pytest.approx(1e-10, rel=1e-12)
    assert verification_probability(budget, "layer1") == pytest.approx(2e-10 / 10)
    assert len(report_budget(1e-10, _measured(gain=0.0), ["layer1", "layer2"], data_leakage=False).terms) == 9
    twice = tuple(budget.terms) * 2  # shares adding up to 2e-10 (20 terms, not 10^9: the sum is what is checked)
    with pytest.raises(ValueError, match="exceed"):
        FailureBudget(1.5e-10, twice)
    assert FailureBudget(2e-10, twice).combined == pytest.approx(2e-10, rel=1e-12)  # all of it may be spent


@pytest.mark.parametrize("sides", [1, 2])
def test_a_calibrated_limit_fails_at_its_share(sides):
    """Draw many calibrations of one true value; the limit at the term's sigmas misses at the stated share."""
    budget = FailureBudget.split(0.2, [("x", sides, "a test quantity"), ("y", 1, "another")])
    rng = np.random.default_rng(1)
    truth, sigma, trials = 2.0, 0.3, 200_000
    estimates = rng.normal(truth, sigma, trials)
    k = budget.sigmas("x")
    missed = estimates - k * sigma > truth if sides == 1 else np.abs(estimates - truth) > k * sigma
    rate, share = missed.mean(), budget.probability("x")
    assert abs(rate - share) < 4 * np.sqrt(share * (1 - share) / trials)


def _report_misses(total, trials, shot_noise_rel, m=2000, include_shot_noise=True, seed=7):
    """Fraction of simulated sessions in which any of the report's limits (mu_upper, T_min, eps_max) is wrong.

    Truth: eta, v_el, the shot-noise variance, mu, T, eps. Each trial draws the calibrations (Gaussian, at
    their one-sigma), then the server's verification samples on the true detector, read back through the
    calibrated shot-noise unit, and evaluates the limits with the budget's coverage factors.
    """
    rng = np.random.default_rng(seed)
    eta, v_el, snu, mu, t_true, eps_true = 0.86, 0.04, 1.0, 6.0, 0.7, 0.05
    u_eta, u_vel, u_mu = 0.02, 0.005, 0.05
    misses = {"mu": 0, "T": 0, "eps": 0, "any": 0}
    for _ in range(trials):
        measured = MeasuredValues(
            mu_photons=Estimate(rng.normal(mu, u_mu), u_mu), gain=Estimate(1.3, 0.0),
            server_efficiency=Estimate(rng.normal(eta, u_eta), u_eta),
            server_electronic_noise_snu=Estimate(rng.normal(v_el, u_vel), u_vel),
            server_shot_noise_variance_v2=Estimate(rng.normal(snu, shot_noise_rel * snu), shot_noise_rel * snu)
            if include_shot_noise else None, transmittance=Estimate(0.7, 0.01))
        budget = report_budget(total, measured, ["layer1"])
        calibrated_snu = measured.server_shot_noise_variance_v2.value if include_shot_noise else rng.normal(
            snu, shot_noise_rel * snu)
        q = rng.normal(0.0, np.sqrt(2 * mu), m)
        y_true = np.sqrt(eta * t_true) * q + rng.normal(0.0, np.sqrt(1 + v_el + eta * eps_true), m)
        y = y_true * np.sqrt(snu / calibrated_snu)  # quadratures in the server's calibrated SNU
        detector = measured.server_detector(budget)
        limits = verification.confidence_limits(verification.estimate_channel(q, y, detector), detector,
                                                verification_probability(budget, "layer1"))
        miss = {"mu": measured.mu_photons.upper(budget.sigmas("mu_photons")) < mu,
                "T": limits.transmittance_min > t_true, "eps": limits.excess_noise_max_snu < eps_true}
        for key, value in miss.items():
            misses[key] += bool(value)
        misses["any"] += any(miss.values())
    return {key: value / trials for key, value in misses.items()}


TOTAL, TRIALS, SHOT_NOISE_REL = 0.1, 1000, 0.08  # a large SNU error, so that leaving it out shows


def _tolerance(p):
    return 3 * np.sqrt(p * (1 - p) / TRIALS)


def test_the_report_s_limits_hold_together_at_the_stated_failure_probability():
    rates = _report_misses(TOTAL, TRIALS, SHOT_NOISE_REL)
    assert rates["any"] <= TOTAL + _tolerance(TOTAL)
    share = TOTAL / 7  # mu, eta, v_el, SNU, T, eps, the data's C (G known exactly)
    assert rates["eps"] <= 4 * share + _tolerance(4 * share)  # eps_max rests on eps, eta, v_el and the SNU
    assert rates["mu"] <= share + _tolerance(share)


def test_without_the_shot_noise_unit_s_uncertainty_eps_max_undercovers():
    """The same sessions with the SNU's calibration error present but not in the budget (what server_detector()
    did before): eps_max misses more often than the shares it rests on allow, so the test above can fail."""
    rates = _report_misses(TOTAL, TRIALS, SHOT_NOISE_REL, include_shot_noise=False)
    share = TOTAL / 5
    assert rates["eps"] > 3 * share + _tolerance(3 * share)


def test_the_shot_noise_unit_widens_eps_max():
    measured = _measured()
    budget = report_budget(1e-10, measured, ["layer1"])
    with_snu = measured.server_detector(budget)
    assert with_snu.shot_noise_rel_uncertainty == pytest.approx(budget.sigmas("server_shot_noise_variance_v2") * 0.0022)
    without = server_detector(measured.server_efficiency, measured.server_electronic_noise_snu,
                              {name: budget.sigmas(name) for name in ("server_efficiency", "server_electronic_noise_snu",
                                                                      "server_shot_noise_variance_v2")})
    rng = np.random.default_rng(3)
    q = rng.normal(0, np.sqrt(12), 100_000)
    y = np.sqrt(0.86 * 0.63) * q + rng.normal(0, np.sqrt(1.045), q.size)
    wide, narrow = (verification.confidence_limits(verification.estimate_channel(q, y, d), d, 1e-10)
                    for d in (with_snu, without))
    assert wide.excess_noise_max_snu > narrow.excess_noise_max_snu + 0.005
    assert wide.transmittance_min < narrow.transmittance_min

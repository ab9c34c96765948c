"""The calibration floors (calibration/fisher_floors.py) checked by another route: repeated fits of simulated noisy
data, at the sample count a floor names, scatter by the uncertainty it was asked for (Monte Carlo), not by
re-typing its formula. Every fit is the procedure's own; the noise is drawn per reading or per sample."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from qslab.analysis.modulator_transfer import mzm_power_w
from qslab.calibration import fisher_floors as ff
from qslab.calibration.amplifier import fit_gain
from qslab.calibration.modulator_fits import (IQ_CONFIGS, field_quadrature_v, fit_field_transfer,
                                              fit_mzm_transfer, iq_power)

TRIALS = 160
SCATTER = 0.2   # the standard deviation of TRIALS draws is known to ~1/sqrt(2 TRIALS) = 6 %: 3 sigma, and a little


def _least_count(count0: int, bound0: float, target_u: float) -> int:
    """The sample count the floor names for ``target_u``: least time / time per sample at the same points."""
    return max(1, round(ff.fisher_least_time_s(float(count0), target_u, bound0)))


def test_least_time_scales_the_bound_and_keeps_the_systematics():
    assert ff.fisher_least_time_s(1.0, 0.1, 0.1) == pytest.approx(1.0 / 1.01**2)
    assert ff.fisher_least_time_s(1.0, 0.1, 0.2) == pytest.approx(4.0 / 1.01**2)
    assert ff.fisher_least_time_s(1.0, 0.1, 0.01, systematic_u=0.2) == math.inf
    chosen = ff.floor("m", 2.0, {"a": (0.1, 0.05, 0.0), "b": (0.1, 0.09, 0.0)})
    assert chosen.quantity == "b" and chosen.least_s == pytest.approx(2.0 * 0.81 / 1.0201)


def test_amplifier_gain_floor_is_what_repeated_fits_of_sample_means_reach():
    rng = np.random.default_rng(11)
    set_g, amplitude, factor, sample_sigma = np.array([1.1, 1.3, 1.6, 1.95]), 0.02, 0.98, 0.01
    symbols0 = 4000
    sigma0 = np.full(set_g.size, math.sqrt(2.0) * sample_sigma / math.sqrt(symbols0))  # open minus closed
    bound0 = ff.amplifier_gain_bound(set_g, amplitude, factor, sigma0)
    target = 0.6 * bound0
    symbols = _least_count(symbols0, bound0, target)
    true_means = amplitude * np.sqrt(factor * set_g - 1.0)
    factors = []
    for _ in range(TRIALS):
        opened = true_means[:, None] + sample_sigma * rng.standard_normal((set_g.size, symbols))
        closed = sample_sigma * rng.standard_normal((set_g.size, symbols))
        means = opened.mean(axis=1) - closed.mean(axis=1)
        means_u = np.sqrt(opened.var(axis=1, ddof=1) / symbols + closed.var(axis=1, ddof=1) / symbols)
        factors.append(fit_gain(set_g, means, means_u)[1])
    assert np.std(factors, ddof=1) == pytest.approx(1.01 * target, rel=SCATTER)
    assert np.mean(factors) == pytest.approx(factor, abs=3 * target / math.sqrt(TRIALS) + 1e-12)


def test_amplifier_mean_sigma_is_the_long_run_level_over_the_symbols():
    # white samples: the long-run variance is the variance; two acquisitions (open, closed) add
    assert ff.amplifier_mean_sigma_v(1e-5, 2e-5, [0.5], 1000)[0] == pytest.approx(math.sqrt(2 * 2e-5 / 1000))


METER = ff.MeterNoise(relative=2e-4, absolute_w_rt_s=2e-12)


def _meter_draws(rng, power_w, readings: int, averaging_s: float) -> np.ndarray:
    """The bench's power meter (instruments/sim/emulators/keysight_n77xx.py measure_w): ``readings`` per point."""
    return (power_w[:, None] * (1.0 + METER.relative * rng.standard_normal((power_w.size, readings)))
            + METER.absolute_w_rt_s / math.sqrt(averaging_s) * rng.standard_normal((power_w.size, readings)))


def _meter_readings(rng, power_w, readings: int, averaging_s: float) -> np.ndarray:
    return _meter_draws(rng, power_w, readings, averaging_s).mean(axis=1)


def test_bias_transfer_floor_is_what_repeated_transfer_fits_reach():
    """The procedure's fit, weighted by a noise model fitted to the readings' own spread, reaches the bound and
    states what it scatters (the bench's IQ modulator: ER 25 dB)."""
    rng = np.random.default_rng(12)
    volts = np.round(np.linspace(-8.0, 8.0, 31) * 1000) / 1000
    params = [1.34e-5, 6.0, 1.1, 25.0]
    averaging_s = 1e-3
    bound1 = ff.mzm_transfer_bound(volts, params, METER, averaging_s, 1)
    target = 0.5 * bound1[1:]                            # V_pi, phase, ER: a quarter of the readings' variance
    readings = max(_least_count(1, b, t) for b, t in zip(bound1[1:], target))
    bound = ff.mzm_transfer_bound(volts, params, METER, averaging_s, readings)
    truth = mzm_power_w(volts, *params)
    fits, stated = [], []
    for _ in range(TRIALS):
        draws = _meter_draws(rng, truth, readings, averaging_s)
        fit = fit_mzm_transfer(volts, draws.mean(axis=1), mean_variance_w2=draws.var(axis=1, ddof=1) / readings)
        fits.append([fit.vpi_v, fit.phase_rad, fit.extinction_ratio_db])
        stated.append(fit.sigmas[1:])
    fits, stated = np.array(fits), np.array(stated)
    assert np.std(fits, axis=0, ddof=1) == pytest.approx(bound[1:], rel=SCATTER)
    assert np.max(bound[1:] / target) <= 1.01 + 1e-9   # the least count keeps every stated uncertainty
    z_rms = np.sqrt(np.mean(((fits - params[1:]) / stated) ** 2, axis=0))
    assert np.all(z_rms < 1.3), z_rms                   # and says so: honest, not far too small


def test_rf_transfer_floor_is_what_repeated_field_fits_of_level_samples_reach():
    rng = np.random.default_rng(13)
    volts = 0.5 * np.rint(np.linspace(-127, 127, 64)) / 127.0
    params = [0.16, 0.04, 0.5, 3.1]
    sample_sigma, samples0 = 0.01, 16
    bound0 = ff.field_transfer_bound(volts, params, np.full(volts.size, sample_sigma / math.sqrt(samples0)))[2]
    target = 0.5 * bound0
    samples = _least_count(samples0, bound0, target)
    truth = field_quadrature_v(volts, *params)
    vpis = []
    for _ in range(TRIALS):
        draws = truth[:, None] + sample_sigma * rng.standard_normal((volts.size, samples))
        fit = fit_field_transfer(volts, draws.mean(axis=1), draws.std(axis=1, ddof=1) / math.sqrt(samples))
        vpis.append(fit.vpi_v)
    assert np.std(vpis, ddof=1) == pytest.approx(1.01 * target, rel=SCATTER)


def test_iq_imbalance_floor_is_what_repeated_imbalance_fits_reach():
    from scipy.optimize import OptimizeWarning, curve_fit

    rng = np.random.default_rng(14)
    drives = 0.5 * np.array(IQ_CONFIGS, dtype=float)
    fixed = {"vpi_v": 0.5, "extinction_ratio_db": 25.0}
    params = [6.8e-6, 0.03, 0.02, 0.00125]   # the bench's IQ modulator, as its record fits it
    averaging_s = 1e-3
    bound1 = ff.iq_imbalance_bound(drives, params, METER, averaging_s, 1, **fixed)
    target = 0.5 * bound1[1:3]
    repeats = max(_least_count(1, b, t) for b, t in zip(bound1[1:3], target))
    bound = ff.iq_imbalance_bound(drives, params, METER, averaging_s, repeats, **fixed)
    truth = iq_power(drives, *params, **fixed)
    sigma = METER.sigma_w(truth, averaging_s, repeats)

    def model(index, *p):
        return iq_power(drives[index.astype(int)], *p, **fixed)

    # the weighted fit from the truth (fit_iq_imbalance's own seed can leave Levenberg-Marquardt at the seed: its
    # global convergence is not what this checks), in units of the brightest reading so its steps are scaled
    unit_w, index = float(truth.max()), np.arange(truth.size, dtype=float)
    with warnings.catch_warnings():  # only the estimates are used: a trial whose covariance is singular may warn
        warnings.simplefilter("ignore", OptimizeWarning)
        estimates = [curve_fit(model, index, _meter_readings(rng, truth, repeats, averaging_s) / unit_w,
                               p0=[params[0] / unit_w] + params[1:], sigma=sigma / unit_w, absolute_sigma=True)[0][1:3]
                     for _ in range(TRIALS)]
    assert np.std(np.array(estimates), axis=0, ddof=1) == pytest.approx(bound[1:3], rel=SCATTER)


def test_processor_bound_is_the_fits_covariance_and_what_repeated_fits_reach():
    from qslab.calibration import processor

    rng = np.random.default_rng(15)
    images, rows, modes = 16, 40, 8
    slopes = (3.4, 7.0)
    volts_bs = rng.uniform(0.0, 0.5 * np.pi / slopes[0], (images, modes))
    volts_ph = rng.uniform(-np.pi / slopes[1], np.pi / slopes[1], (images, modes))
    pilots = (rng.standard_normal((rows, modes)) + 1j * rng.standard_normal((rows, modes))) * math.sqrt(3.0)
    params = np.array([slopes[0] * 1.02, 0.01, slopes[1] * 0.98, 0.35, -0.2, 0.02, 0.01, 0.05])
    noise = 1.2

    def model(p):
        return processor._model(p, volts_bs, volts_ph, pilots)

    bound = math.sqrt(ff.cramer_rao_covariance(ff.numeric_jacobian(model, params), np.full(images * rows, noise))[0, 0])
    truth, estimates, fitted_sigmas = model(params), [], []
    for _ in range(TRIALS):
        fit = processor.fit_processor(truth + noise * rng.standard_normal(truth.shape), volts_bs, volts_ph, pilots,
                                      beam_splitter_rad_per_v=slopes[0], phase_rad_per_v=slopes[1])
        estimates.append(fit.beam_splitter_rad_per_v)
        fitted_sigmas.append(fit.sigmas[0])
    assert np.std(estimates, ddof=1) == pytest.approx(bound, rel=SCATTER)
    assert np.median(fitted_sigmas) == pytest.approx(bound, rel=0.05)   # the floor's route: the fit's covariance

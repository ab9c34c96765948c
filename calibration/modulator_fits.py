"""Modulator calibration fits: pure functions from raw readings to parameters with honest uncertainties.

- DC bias transfer P(V) (``fit_mzm_transfer`` -> ``MzmFit``, its bias points),
- RF field transfer, one quadrature of t(theta) against AWG volts (``fit_field_transfer`` -> ``FieldFit``),
- IQ gain and phase imbalance from static drive pairs on a power meter (``fit_iq_imbalance``),
- the ``ModulatorCalibration`` a role takes and the arcsine predistortion table.

The transfer functions themselves are qslab.analysis.modulator_transfer (one copy, shared with the bench).
Fits are robust (docs/PHYSICS.md 15): a grid of trial V_pi, each solved as a *linear*
least-squares problem a + b cos(kV) + c sin(kV); the best seeds ``curve_fit``, with ER in dB so it stays
bounded and weights from a noise model (relative + absolute) fitted to the residuals, so the covariance is
honest. Bad data raise one ``CalibrationError`` naming the calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qslab.analysis.modulator_transfer import iq_children_field, mzm_field, mzm_power_w
from qslab.analysis.estimate import Estimate
from qslab.calibration.result import CalibrationError, CalibrationResult

if TYPE_CHECKING:
    from qslab.instruments.optical.modulators import ModulatorCalibration


def curve_fit(*args, **kwargs):
    """scipy's curve_fit, loaded on the first fit: the figure worker unpickles these fits' results without it
    (scipy.optimize and the instrument roles are not free to import: calibration/figures.py)."""
    from scipy.optimize import curve_fit as fit

    return fit(*args, **kwargs)


# MBX lock modes and the arm phase theta = pi V/V_pi + phi each one seeks (docs/PHYSICS.md 15)
TARGET_PHASE_RAD = {"peak": 0.0, "null": math.pi, "quadrature+": -0.5 * math.pi, "quadrature-": 0.5 * math.pi}


MIN_POINTS = 20


MIN_LIGHT_W = 1e-9          # below this at the brightest point the laser is off (the meters' dark is pW)


MIN_MODULATION_SNR = 20.0   # fitted cosine amplitude over residual rms: below it, noise where a signal should be


def wrap_rad(phase_rad: float) -> float:
    """Into (-pi, pi]."""
    return float(math.pi - (math.pi - phase_rad) % (2.0 * math.pi))


@dataclass(frozen=True)
class MzmFit:
    """Fitted (P0, V_pi, phi, ER_dB), their covariance, and the fit's quality."""

    power_scale_w: float
    vpi_v: float
    phase_rad: float
    extinction_ratio_db: float
    covariance: np.ndarray     # 4 x 4, in the order above
    residual_rms_w: float
    modulation_snr: float      # cosine amplitude / residual rms

    @property
    def sigmas(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    def power_w(self, volts) -> np.ndarray:
        return mzm_power_w(volts, self.power_scale_w, self.vpi_v, self.phase_rad, self.extinction_ratio_db)

    def bias_point_v(self, point: str, near_v: float = 0.0) -> Estimate:
        """Voltage of a bias point (peak, null, quadrature+/-) nearest ``near_v``, with its uncertainty.

        V = (theta_target - phi + 2 pi n) V_pi / pi; dV/dphi = -V_pi/pi, dV/dV_pi = V/V_pi.
        """
        period_v = 2.0 * self.vpi_v
        base_v = (TARGET_PHASE_RAD[point] - self.phase_rad) * self.vpi_v / math.pi
        volts = base_v + period_v * round((near_v - base_v) / period_v)
        gradient = np.array([0.0, volts / self.vpi_v, -self.vpi_v / math.pi, 0.0])
        return Estimate(float(volts), float(math.sqrt(max(gradient @ self.covariance @ gradient, 0.0))), "V")


def _linear_cosine_fit(volts: np.ndarray, power: np.ndarray, vpi_v: float) -> tuple[np.ndarray, float]:
    """Least squares P = a + b cos(kV) + c sin(kV): the coefficients and the residual sum of squares."""
    k = math.pi / vpi_v
    design = np.column_stack([np.ones_like(volts), np.cos(k * volts), np.sin(k * volts)])
    coefficients, *_ = np.linalg.lstsq(design, power, rcond=None)
    residual = power - design @ coefficients
    return coefficients, float(residual @ residual)


def _linear_cosine_residuals(volts: np.ndarray, power: np.ndarray, vpi_grid_v: np.ndarray) -> np.ndarray:
    """The residual sum of squares of _linear_cosine_fit at every trial V_pi at once: one batched QR of the
    [trials, points, 3] designs (the projection onto each design's columns) instead of a lstsq per trial."""
    k = math.pi / np.asarray(vpi_grid_v, dtype=float)[:, None]
    design = np.stack([np.ones((k.size, volts.size)), np.cos(k * volts), np.sin(k * volts)], axis=-1)
    q, _ = np.linalg.qr(design)
    residual = power - np.einsum("gnj,gj->gn", q, np.einsum("gnj,n->gj", q, power))
    return np.einsum("gn,gn->g", residual, residual)


def grid_seed(volts: np.ndarray, power: np.ndarray, vpi_grid_v: np.ndarray) -> tuple[float, np.ndarray]:
    """The trial V_pi with the least linear residual (no local minima: every trial is solved exactly)."""
    residuals = _linear_cosine_residuals(volts, power, vpi_grid_v)
    best = int(np.argmin(residuals))
    # refine between the neighbours: the grid only has to land in the right valley
    low, high = vpi_grid_v[max(best - 1, 0)], vpi_grid_v[min(best + 1, vpi_grid_v.size - 1)]
    fine = np.linspace(low, high, 41)
    vpi = float(fine[int(np.argmin(_linear_cosine_residuals(volts, power, fine)))])
    return vpi, _linear_cosine_fit(volts, power, vpi)[0]


def default_vpi_grid_v(volts: np.ndarray) -> np.ndarray:
    """Trial V_pi from 3 sample steps (finer would alias) to the whole span, log-spaced."""
    span_v = float(np.ptp(volts))
    step_v = span_v / max(volts.size - 1, 1)
    return np.geomspace(3.0 * step_v, span_v, 600)


def fit_mzm_transfer(volts, power_w, calibration: str = "mzm transfer", vpi_grid_v=None,
                     mean_variance_w2=None) -> MzmFit:
    """Robust fit of a dark-subtracted transfer curve; CalibrationError when the data cannot carry one.

    ``mean_variance_w2``: per point, the variance of the mean the readings' own spread shows (their sample
    variance / their number). When given, the weights' noise model is fitted to these rather than to the
    squared residuals: 31 residuals leave the model's floor term, which sets the null's weight, uncertain,
    the fit then scatters up to 3x its Cramer-Rao bound in ER and states less than it scatters; the spread
    of 4 readings per point gives 3 degrees of freedom each (calibration/fisher_floors.py, docs/PHYSICS.md 15).
    """
    volts, power = np.asarray(volts, dtype=float), np.asarray(power_w, dtype=float)
    _check_curve(calibration, volts, power)
    grid = default_vpi_grid_v(volts) if vpi_grid_v is None else np.asarray(vpi_grid_v, dtype=float)
    vpi0, (a, b, c) = grid_seed(volts, power, grid)
    amplitude = math.hypot(b, c)
    residual_rms = float(np.std(power - (a + b * np.cos(math.pi * volts / vpi0) + c * np.sin(math.pi * volts / vpi0))))
    snr = amplitude / max(residual_rms, 1e-300)
    if not snr >= MIN_MODULATION_SNR:
        raise CalibrationError(calibration, f"no transfer curve in the data: the best cosine has amplitude "
                                            f"{amplitude:.3g} W over {residual_rms:.3g} W rms residual "
                                            f"(SNR {snr:.3g} < {MIN_MODULATION_SNR:g}): noise where a signal should be")
    if 2.0 * vpi0 > float(np.ptp(volts)):
        raise CalibrationError(calibration, f"the sweep spans {np.ptp(volts):.3g} V, less than 2 V_pi = "
                                            f"{2 * vpi0:.3g} V: widen it")
    depth0 = min(amplitude / a, 0.9999) if a > 0 else 0.5
    seed = [2.0 * a, vpi0, math.atan2(-c, b), 10.0 * math.log10((1.0 + depth0) / (1.0 - depth0))]
    spread = None if mean_variance_w2 is None else np.asarray(mean_variance_w2, dtype=float)
    return _refine(calibration, volts, power, seed, spread)


def _refine(calibration: str, volts: np.ndarray, power: np.ndarray, seed: list[float],
            mean_variance_w2: np.ndarray | None = None) -> MzmFit:
    """curve_fit from the grid seed, then again with weights of the meters' multiplicative noise."""
    bounds = ([0.0, 0.2 * seed[1], -4.0 * math.pi, 0.0], [np.inf, 5.0 * seed[1], 4.0 * math.pi, 80.0])
    seed[3] = min(seed[3], 79.0)
    try:
        params, _ = curve_fit(mzm_power_w, volts, power, p0=seed, bounds=bounds, max_nfev=5000)
        for _ in range(2):  # weights from the noise the residuals show: why, the null is noisier than rel x P
            sigma = noise_model_w(power - mzm_power_w(volts, *params), mzm_power_w(volts, *params),
                                  squared_w2=mean_variance_w2)
            params, covariance = curve_fit(mzm_power_w, volts, power, p0=params, sigma=sigma, bounds=bounds,
                                           max_nfev=5000, absolute_sigma=mean_variance_w2 is not None)
        if mean_variance_w2 is not None:   # the weights are measured noise: widen by chi^2, never narrow
            chi2 = float(np.sum(((power - mzm_power_w(volts, *params)) / sigma) ** 2)) / max(power.size - 4, 1)
            covariance = covariance * max(chi2, 1.0)
    except (RuntimeError, ValueError) as error:
        raise CalibrationError(calibration, f"the transfer-function fit did not converge ({error})") from None
    if not np.all(np.isfinite(covariance)):
        raise CalibrationError(calibration, "the transfer-function fit did not converge (no finite covariance: "
                                            "the data do not constrain every parameter)")
    residual = power - mzm_power_w(volts, *params)
    rms = float(np.std(residual))
    amplitude = 0.5 * params[0] * (1 - 10 ** (-params[3] / 10)) / (1 + 10 ** (-params[3] / 10))
    phase = wrap_rad(params[2])
    return MzmFit(float(params[0]), float(params[1]), phase, float(params[3]), covariance, rms,
                  amplitude / max(rms, 1e-300))


def noise_model_w(residual_w: np.ndarray, model_w: np.ndarray, squared_w2: np.ndarray | None = None) -> np.ndarray:
    """sigma_i = sqrt(a^2 P_i^2 + b^2): a meter's relative fluctuation plus its absolute noise floor.

    a^2 and b^2 come from a least-squares fit of the squared residuals, or of ``squared_w2`` (unbiased
    estimates of each point's variance, e.g. from its readings' spread) when given (both kept positive), so
    the weights have the right shape and curve_fit's chi^2 scaling gives honest uncertainties.
    """
    design = np.column_stack([model_w**2, np.ones_like(model_w)])
    squared = residual_w**2 if squared_w2 is None else np.asarray(squared_w2, dtype=float)
    scale = float(np.mean(squared)) or 1e-300
    variance = np.full(model_w.size, scale)
    for _ in range(4):  # each squared residual scatters by ~sigma_i^2: weight the regression by 1/sigma_i^2
        (a2, b2), *_ = np.linalg.lstsq(design / variance[:, None], squared / variance, rcond=None)
        a2 = max(float(a2), 1e-9 * scale / max(float(np.mean(model_w**2)), 1e-300))
        b2 = max(float(b2), 1e-9 * scale)
        variance = a2 * model_w**2 + b2
    if squared_w2 is None:
        return np.sqrt(variance)
    return np.sqrt(_variance_likelihood_fit(squared, model_w, a2, b2))


def _variance_likelihood_fit(squared_w2: np.ndarray, model_w: np.ndarray, a2: float, b2: float) -> np.ndarray:
    """a^2 P^2 + b^2 by the likelihood of variance estimates (each a scaled chi^2: sum log v + s^2/v), over
    log a^2 and log b^2, from the regression's answer and from a bright/dim split. Why: the iterated regression
    can settle where a^2 -> 0 (a flat model that mis-weights the null 2x) when a few dim points read high."""
    from scipy.optimize import minimize

    p2 = model_w**2
    bright, dim = p2 >= np.median(p2), p2 <= np.quantile(p2, 0.2)
    starts = [(a2, b2), (float(np.median(squared_w2[bright] / p2[bright])), float(np.median(squared_w2[dim])))]
    tiny = 1e-12 * float(np.mean(squared_w2)) + 1e-300

    def negative_log_likelihood(x):
        v = np.exp(x[0]) * p2 + np.exp(x[1])
        return float(np.sum(np.log(v) + squared_w2 / v))

    best = min((minimize(negative_log_likelihood, np.log([max(a, tiny / max(np.mean(p2), 1e-300)), max(b, tiny)]),
                         method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-9, "maxiter": 2000})
                for a, b in starts), key=lambda r: r.fun)
    return np.exp(best.x[0]) * p2 + np.exp(best.x[1])


def _check_curve(calibration: str, volts: np.ndarray, power: np.ndarray) -> None:
    if volts.shape != power.shape or volts.ndim != 1:
        raise CalibrationError(calibration, f"voltages {volts.shape} and powers {power.shape} must be 1-D and match")
    if volts.size < MIN_POINTS:
        raise CalibrationError(calibration, f"{volts.size} points: expected at least {MIN_POINTS}")
    if not (np.all(np.isfinite(volts)) and np.all(np.isfinite(power))):
        raise CalibrationError(calibration, "the data hold non-finite readings (NaN or inf): an instrument "
                                            "answered out of range")


def check_light(calibration: str, power_w: np.ndarray, min_power_w: float = MIN_LIGHT_W) -> None:
    """A sweep whose brightest reading is at the meter's dark level saw no light."""
    brightest = float(np.max(power_w))
    if not brightest >= min_power_w:
        raise CalibrationError(calibration, f"no light: the brightest reading is {brightest:.3g} W, below "
                                            f"{min_power_w:.3g} W (is the laser on and the path connected?)")


def check_not_saturated(calibration: str, power_w: np.ndarray, repeats: int = 4) -> None:
    """A flat top (several identical maxima) is a clipped or saturated reading, not a cosine."""
    top = float(np.max(power_w))
    if top > 0 and int(np.sum(power_w >= top * (1 - 1e-9))) >= repeats:
        raise CalibrationError(calibration, f"the readings are clipped: {int(np.sum(power_w >= top))} points sit "
                                            f"at the same maximum {top:.6g} W (meter range or saturation)")


def bias_parameters(key: str, fit: MzmFit) -> dict[str, Estimate]:
    s = fit.sigmas
    params = {f"{key}.bias_vpi_v": Estimate(fit.vpi_v, float(s[1]), "V"),
              f"{key}.bias_phase_rad": Estimate(fit.phase_rad, float(s[2]), "rad"),
              f"{key}.extinction_ratio_db": Estimate(fit.extinction_ratio_db, float(s[3]), "dB")}
    for point in ("null", "quadrature+", "quadrature-", "peak"):
        params[f"{key}.{point.replace('+', '_plus').replace('-', '_minus')}_bias_v"] = fit.bias_point_v(point)
    return params


def mzm_fit_from_result(transfer: CalibrationResult, key: str) -> MzmFit:
    """The MzmFit a bias-transfer result describes (its stored covariance, else a diagonal one)."""
    p = transfer.parameters
    values = [transfer.conditions["fit_power_scale_w"], p[f"{key}.bias_vpi_v"].value,
              p[f"{key}.bias_phase_rad"].value, p[f"{key}.extinction_ratio_db"].value]
    sigmas = [0.0, p[f"{key}.bias_vpi_v"].uncertainty, p[f"{key}.bias_phase_rad"].uncertainty,
              p[f"{key}.extinction_ratio_db"].uncertainty]
    covariance = transfer.raw.get("fit_covariance")
    if covariance is None:
        covariance = np.diag(np.square(sigmas))
    return MzmFit(*values, np.asarray(covariance), transfer.conditions.get("residual_rms_w", 0.0), 0.0)


@dataclass(frozen=True)
class FieldFit:
    """y(u) = offset + A sin(pi u/(2 V_pi) + psi): the homodyne quadrature of an MZM's field vs AWG volts."""

    offset_v: float
    amplitude_v: float
    vpi_v: float
    phase_rad: float
    covariance: np.ndarray     # 4 x 4, in the order above
    reduced_chi2: float

    @property
    def sigmas(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    def quadrature_v(self, volts) -> np.ndarray:
        return field_quadrature_v(volts, self.offset_v, self.amplitude_v, self.vpi_v, self.phase_rad)


def field_quadrature_v(volts, offset_v: float, amplitude_v: float, vpi_v: float, phase_rad: float):
    """One quadrature of t(theta) with theta = pi u/V_pi + bias: a sinusoid of HALF the arm phase (4.1).

    Re and Im of -(e^{i theta/2} + g e^{-i theta/2})/(1 + g) are both sinusoids of theta/2, and so is
    any fixed mix of them (LO phase, carrier leakage of the other child): one phase psi covers them.
    """
    return offset_v + amplitude_v * np.sin(np.pi * np.asarray(volts) / (2.0 * vpi_v) + phase_rad)


def fit_field_transfer(volts, quadrature_v, sigma_v=None, calibration: str = "mzm field transfer") -> FieldFit:
    """Grid of V_pi + linear least squares, then curve_fit (with per-level sigmas when given)."""
    volts, y = np.asarray(volts, dtype=float), np.asarray(quadrature_v, dtype=float)
    _check_curve(calibration, volts, y)
    span_v = float(np.ptp(volts))
    grid = np.geomspace(span_v / 8.0, 20.0 * span_v, 800)
    # cos/sin(pi u/(2 V_pi)) is the power model's cos/sin(pi u/V') with V' = 2 V_pi
    vpi_twice, (a, b, c) = grid_seed(volts, y, 2.0 * grid)
    vpi0 = 0.5 * vpi_twice
    fitted = a + b * np.cos(np.pi * volts / vpi_twice) + c * np.sin(np.pi * volts / vpi_twice)
    rms = float(np.std(y - fitted))
    amplitude = math.hypot(b, c)
    snr = amplitude / max(rms, 1e-300)
    if not snr >= MIN_MODULATION_SNR:
        raise CalibrationError(calibration, f"no field modulation in the capture: amplitude {amplitude:.3g} V over "
                                            f"{rms:.3g} V rms residual (SNR {snr:.3g} < {MIN_MODULATION_SNR:g}): "
                                            "noise where a signal should be (no light, no LO, or no drive?)")
    if vpi0 >= 0.99 * grid[-1] or vpi0 <= 1.01 * grid[0]:
        raise CalibrationError(calibration, f"V_pi {vpi0:.3g} V at the edge of the search range: the ramp is far "
                                            "too short or too long for this modulator")
    seed = [a, amplitude, vpi0, math.atan2(b, c)]
    try:
        params, covariance = curve_fit(field_quadrature_v, volts, y, p0=seed, sigma=sigma_v,
                                       absolute_sigma=sigma_v is not None, maxfev=5000)
    except (RuntimeError, ValueError) as error:
        raise CalibrationError(calibration, f"the field-transfer fit did not converge ({error})") from None
    if not np.all(np.isfinite(covariance)):
        raise CalibrationError(calibration, "the field-transfer fit did not converge (no finite covariance)")
    residual = y - field_quadrature_v(volts, *params)
    weights = np.ones_like(y) if sigma_v is None else 1.0 / np.asarray(sigma_v) ** 2
    chi2 = float(np.sum(residual**2 * weights)) / max(y.size - 4, 1)
    if sigma_v is not None and chi2 > 1.0:
        covariance = covariance * chi2   # the model or the sigmas are off: widen, never narrow
    if params[1] < 0:
        params[1], params[3] = -params[1], params[3] + math.pi
    return FieldFit(float(params[0]), float(params[1]), float(params[2]), wrap_rad(float(params[3])), covariance, chi2)


def staircase_codes(levels: int, symbols_per_level: int, samples_per_symbol: int) -> np.ndarray:
    """int8 codes: ``levels`` steps from -127 to 127, each held for whole symbols (a slow ramp the
    detector's bandwidth can follow)."""
    steps = np.rint(np.linspace(-127, 127, levels)).astype(np.int8)
    return np.repeat(steps, symbols_per_level * samples_per_symbol)


def level_means(samples_v: np.ndarray, samples_per_symbol: int, levels: int, symbols_per_level: int,
                settle_symbols: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the captured volts per staircase level (first symbols of a level dropped)."""
    period = levels * symbols_per_level
    periods = samples_v.size // (period * samples_per_symbol)
    if periods < 1:
        raise ValueError(f"the capture holds {samples_v.size} samples, less than one ramp period")
    usable = samples_v[:periods * period * samples_per_symbol]
    per_symbol = usable.reshape(periods, levels, symbols_per_level, samples_per_symbol)[:, :, settle_symbols:, :]
    per_level = per_symbol.mean(axis=3).transpose(1, 0, 2).reshape(levels, -1)
    return per_level.mean(axis=1), per_level.std(axis=1, ddof=1) / math.sqrt(per_level.shape[1])


def clipped_fraction(samples_v: np.ndarray, range_v: float, offset_v: float = 0.0, adc_bits: int = 10) -> float:
    """Share of samples at the ADC's rails (within one code of +-range/2 around the offset)."""
    code_v = range_v / 2 ** adc_bits
    edge = 0.5 * range_v - 1.5 * code_v
    return float(np.mean(np.abs(samples_v - offset_v) >= edge))


IQ_CONFIGS = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1))  # child drives in units of +-U


def iq_power(drives_v: np.ndarray, scale_w: float, gain_imbalance: float, phase_error_rad: float,
             bias_error_rad: float, *, vpi_v: float, extinction_ratio_db: float) -> np.ndarray:
    """Average power of the nested modulator with children at null (+ a common bias error) and static drives.

    E = K^(1/2) [(1 + g/2) t(pi + r + pi u_I/V_pi) + e^{i(pi/2 + delta)} (1 - g/2) t(pi + r + pi u_Q/V_pi)] (4.2).
    The carrier leakage of the undriven child interferes with the driven one, so the finite ER must be in the
    model: dropping it biases g by ~4/sqrt(ER).
    """
    u_i, u_q = drives_v[:, 0], drives_v[:, 1]
    t_i = mzm_field(np.pi + bias_error_rad + np.pi * u_i / vpi_v, extinction_ratio_db)
    t_q = mzm_field(np.pi + bias_error_rad + np.pi * u_q / vpi_v, extinction_ratio_db)
    field = iq_children_field(t_i, t_q, gain_imbalance, phase_error_rad)
    return scale_w * np.abs(field) ** 2


def fit_iq_imbalance(drives_v, power_w, sigma_w, *, vpi_v: float, extinction_ratio_db: float,
                     calibration: str = "iq imbalance") -> tuple[np.ndarray, np.ndarray, float]:
    """(K, g, delta, r), covariance, reduced chi^2 from static-drive readings (V_pi, ER held fixed)."""
    drives_v, power, sigma = (np.asarray(x, dtype=float) for x in (drives_v, power_w, sigma_w))

    def model(index, *params):
        return iq_power(drives_v[index.astype(int)], *params, vpi_v=vpi_v, extinction_ratio_db=extinction_ratio_db)

    index = np.arange(power.size, dtype=float)
    seed = [2.0 * float(np.max(power)), 0.0, 0.0, 0.0]
    try:
        params, covariance = curve_fit(model, index, power, p0=seed, sigma=sigma, absolute_sigma=True, maxfev=5000)
    except (RuntimeError, ValueError) as error:
        raise CalibrationError(calibration, f"the IQ imbalance fit did not converge ({error})") from None
    if not np.all(np.isfinite(covariance)):
        raise CalibrationError(calibration, "the IQ imbalance fit did not converge (no finite covariance)")
    chi2 = float(np.sum(((power - model(index, *params)) / sigma) ** 2)) / max(power.size - 4, 1)
    return params, covariance * max(chi2, 1.0), chi2


def propagate_vpi_er(drives, means, sigma, params, calibration, vpi: Estimate, er: Estimate) -> np.ndarray:
    """Parameter shifts from V_pi and ER at +-1 sigma (half the spread), added in quadrature."""
    shifts = []
    for vpi_v, er_db in ((vpi.value + vpi.uncertainty, er.value), (vpi.value - vpi.uncertainty, er.value),
                         (vpi.value, er.value + er.uncertainty), (vpi.value, er.value - er.uncertainty)):
        shifted, _, _ = fit_iq_imbalance(drives, means, sigma, vpi_v=vpi_v, extinction_ratio_db=er_db,
                                         calibration=calibration)
        shifts.append(shifted - params)
    shifts = np.array(shifts)
    return np.sqrt((0.5 * (shifts[0] - shifts[1])) ** 2 + (0.5 * (shifts[2] - shifts[3])) ** 2)


def modulator_calibration(vpi: Estimate, driver_gain: float, *, iq_gain_imbalance: float = 0.0,
                          iq_phase_error_rad: float = 0.0, record_id: str | None = None) -> ModulatorCalibration:
    """The ModulatorCalibration a modulator role takes (the RF V_pi and the driver gain it was measured with)."""
    from qslab.instruments.optical.modulators import ModulatorCalibration

    return ModulatorCalibration(vpi_v=vpi.value, driver_gain=driver_gain, iq_gain_imbalance=iq_gain_imbalance,
                                iq_phase_error_rad=iq_phase_error_rad, record_id=record_id)


def predistortion_table(calibration: ModulatorCalibration, levels: int = 256,
                        max_field: float = 1.0) -> dict[str, np.ndarray]:
    """Target field a in [-max_field, max_field] -> AWG volts u = (2 V_pi/pi) arcsin(a) / driver gain.

    The check column ``field_check`` is sin(pi u/(2 V_pi)) at the modulator: it returns a (4.4).
    """
    from qslab.instruments.optical.modulators import arcsine_drive_v, null_biased_field

    if not (0.0 < max_field <= 1.0 and levels >= 2):
        raise ValueError(f"expected 0 < max_field <= 1 and levels >= 2, got {max_field!r}, {levels!r}")
    field = np.linspace(-max_field, max_field, levels)
    awg_v = arcsine_drive_v(field, calibration.vpi_at_awg_v)
    return {"field": field, "awg_v": awg_v, "modulator_v": awg_v * calibration.driver_gain,
            "field_check": null_biased_field(awg_v, calibration.vpi_at_awg_v)}

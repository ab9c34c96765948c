"""Modulator calibration: transfer functions, bias points and lock, IQ imbalance, arcsine predistortion.

Four procedures over roles, each returning a ``CalibrationResult`` keyed by the bench's dotted names,
each drawing a PNG of data and fit:

- ``calibrate_bias_transfer``: DC sweep of the MBX manual bias, read on the monitor-tap power meter ->
  ``<key>.bias_vpi_v`` (DC V_pi), ``<key>.bias_phase_rad`` (arm phase at 0 V bias),
  ``<key>.extinction_ratio_db``, and the bias points (``<key>.null_bias_v``, ...). The meter reads the
  *average* power and the MBX sets one voltage per serial exchange, so a curve costs 2 round trips per
  point: 31 points of 4 readings (one compound meter message each), 66 in all, instead of 121 x 1 (250).
- ``lock_and_verify``: lock the MBX at null/quadrature/peak, check its voltage against the fitted point.
- ``calibrate_rf_transfer``: ONE AWG staircase over the drive range and ONE digitizer capture of the
  client homodyne (X quadrature, which is a sinusoid of half the arm phase) -> ``<key>.vpi_v`` (RF V_pi
  at the modulator, through the datasheet driver gain) and ``<key>.vpi_at_awg_v``: 6 round trips (each
  AWG step one compound message with its error check, the capture two digitizer messages).
- ``calibrate_iq_imbalance``: nine static (I, Q) drive pairs on the monitor-tap meter ->
  ``server_iq.iq_gain_imbalance``, ``server_iq.iq_phase_error_rad`` (finite-ER leakage in the model):
  one AWG message and one meter message (5 readings) per drive pair, 22 round trips.
  ``benchmarks/bench_modulator_calibration.py`` counts them.

Then ``modulator_calibration`` builds the ``ModulatorCalibration`` the roles take and
``predistortion_table`` the arcsine table (docs/PHYSICS.md 15).

Fits are robust (docs/PHYSICS.md 15): a grid of trial V_pi, each solved as a *linear*
least-squares problem a + b cos(kV) + c sin(kV); the best seeds ``curve_fit``, with ER in dB so it stays
bounded and weights from a noise model (relative + absolute) fitted to the residuals, so the covariance is
honest. Bad data (no light, a clipped capture, noise where a signal should be, a fit that does not
converge) raise one ``CalibrationError`` naming the calibration, after the laser is switched off and the
AWG stopped with its outputs off; nothing is recorded (recording is the caller's, with the result).
What the bench's receivers cannot observe is stated in ``RECEIVER_LIMITS``.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import curve_fit

from qslab.analysis.estimate import Estimate
from qslab.calibration.result import CalibrationError, CalibrationResult
from qslab.instruments.optical.awg_channels import AwgChannels
from qslab.instruments.optical.modulators import ModulatorCalibration, arcsine_drive_v, null_biased_field

KIND = "modulators"
# MBX lock modes and the arm phase theta = pi V/V_pi + phi each one seeks (docs/PHYSICS.md 15)
TARGET_PHASE_RAD = {"peak": 0.0, "null": math.pi, "quadrature+": -0.5 * math.pi, "quadrature-": 0.5 * math.pi}
MIN_POINTS = 20
DEFAULT_SWEEP_V = (-8.0, 8.0)
# 31 bias points of 4 readings each (one meter message per point): the same information as 121 single readings
# at a quarter of the round trips; below ~25 points the noise model of the residuals (2 parameters) is fitted
# from too few points and the extinction ratio's uncertainty turns dishonest (z rms ~2.5 at 21 points)
DEFAULT_POINTS = 31
DEFAULT_READINGS_PER_POINT = 4
MIN_LIGHT_W = 1e-9          # below this at the brightest point the laser is off (the meters' dark is pW)
MIN_MODULATION_SNR = 20.0   # fitted cosine amplitude over residual rms: below it, noise where a signal should be


# --- the transfer function and its fit -----------------------------------------------------------

def mzm_power_w(volts, power_scale_w: float, vpi_v: float, phase_rad: float, extinction_ratio_db: float):
    """P(V) = (P0/2)[1 + M cos(pi V/V_pi + phi)], M = (ER - 1)/(ER + 1) (docs/PHYSICS.md 15)."""
    er = 10.0 ** (extinction_ratio_db / 10.0)
    depth = (er - 1.0) / (er + 1.0)
    return 0.5 * power_scale_w * (1.0 + depth * np.cos(np.pi * np.asarray(volts) / vpi_v + phase_rad))


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


def grid_seed(volts: np.ndarray, power: np.ndarray, vpi_grid_v: np.ndarray) -> tuple[float, np.ndarray]:
    """The trial V_pi with the least linear residual (no local minima: every trial is solved exactly)."""
    residuals = [_linear_cosine_fit(volts, power, vpi)[1] for vpi in vpi_grid_v]
    best = int(np.argmin(residuals))
    # refine between the neighbours: the grid only has to land in the right valley
    low, high = vpi_grid_v[max(best - 1, 0)], vpi_grid_v[min(best + 1, vpi_grid_v.size - 1)]
    fine = np.linspace(low, high, 41)
    fine_residuals = [_linear_cosine_fit(volts, power, vpi)[1] for vpi in fine]
    vpi = float(fine[int(np.argmin(fine_residuals))])
    return vpi, _linear_cosine_fit(volts, power, vpi)[0]


def default_vpi_grid_v(volts: np.ndarray) -> np.ndarray:
    """Trial V_pi from 3 sample steps (finer would alias) to the whole span, log-spaced."""
    span_v = float(np.ptp(volts))
    step_v = span_v / max(volts.size - 1, 1)
    return np.geomspace(3.0 * step_v, span_v, 600)


def fit_mzm_transfer(volts, power_w, calibration: str = "mzm transfer", vpi_grid_v=None) -> MzmFit:
    """Robust fit of a dark-subtracted transfer curve; CalibrationError when the data cannot carry one."""
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
    fit = _refine(calibration, volts, power, seed)
    return fit


def _refine(calibration: str, volts: np.ndarray, power: np.ndarray, seed: list[float]) -> MzmFit:
    """curve_fit from the grid seed, then again with weights of the meters' multiplicative noise."""
    bounds = ([0.0, 0.2 * seed[1], -4.0 * math.pi, 0.0], [np.inf, 5.0 * seed[1], 4.0 * math.pi, 80.0])
    seed[3] = min(seed[3], 79.0)
    try:
        params, _ = curve_fit(mzm_power_w, volts, power, p0=seed, bounds=bounds, max_nfev=5000)
        for _ in range(2):  # weights from the noise the residuals show: why, the null is noisier than rel x P
            sigma = noise_model_w(power - mzm_power_w(volts, *params), mzm_power_w(volts, *params))
            params, covariance = curve_fit(mzm_power_w, volts, power, p0=params, sigma=sigma, bounds=bounds,
                                           max_nfev=5000)
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


def noise_model_w(residual_w: np.ndarray, model_w: np.ndarray) -> np.ndarray:
    """sigma_i = sqrt(a^2 P_i^2 + b^2): a meter's relative fluctuation plus its absolute noise floor.

    a^2 and b^2 come from a least-squares fit of the squared residuals (both kept positive), so the weights
    have the right shape and curve_fit's chi^2 scaling gives honest uncertainties.
    """
    design = np.column_stack([model_w**2, np.ones_like(model_w)])
    squared = residual_w**2
    scale = float(np.mean(squared)) or 1e-300
    variance = np.full(model_w.size, scale)
    for _ in range(4):  # each squared residual scatters by ~sigma_i^2: weight the regression by 1/sigma_i^2
        (a2, b2), *_ = np.linalg.lstsq(design / variance[:, None], squared / variance, rcond=None)
        a2 = max(float(a2), 1e-9 * scale / max(float(np.mean(model_w**2)), 1e-300))
        b2 = max(float(b2), 1e-9 * scale)
        variance = a2 * model_w**2 + b2
    return np.sqrt(variance)


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


# --- procedures over roles -------------------------------------------------------------------------

def _name(role: Any, fallback: str) -> str:
    return str(getattr(role, "name", fallback))


def _controller_name(modulator: Any) -> str:
    return str(getattr(modulator.bias_controller, "name", "bias_controller"))


def make_safe(laser: Any, *roles: Any) -> list[str]:
    """Laser off, modulator drives off (AWG stopped), other roles (amplifier) off; returns what failed."""
    problems = []
    actions = [(laser.off, "laser off")]
    for role in roles:
        if hasattr(role, "awg"):
            actions += [(role.awg.awg.stop, f"{_name(role, 'modulator')} AWG stop"),
                        (role.awg.outputs_off, f"{_name(role, 'modulator')} drives off")]
        elif hasattr(role, "off"):
            actions.append((role.off, f"{_name(role, 'role')} off"))
    for action, what in actions:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - every step still runs
            problems.append(f"{what}: {error}")
    return problems


def _guarded(calibration: str, laser: Any, modulators: tuple,
             body: Callable[[], CalibrationResult]) -> CalibrationResult:
    """Run a procedure; on any failure make the instruments safe and raise one CalibrationError."""
    try:
        return body()
    except CalibrationError:
        make_safe(laser, *modulators)
        raise
    except Exception as error:
        problems = make_safe(laser, *modulators)
        extra = f"; making safe also failed: {problems}" if problems else ""
        raise CalibrationError(calibration, f"{type(error).__name__}: {error}{extra}") from error


def sweep_bias_power(modulator: Any, power_meter: Any, bias_v: np.ndarray,
                     readings_per_point: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean meter reading at each manual bias: (bias V as sent, quantised to the MBX's mV; power W; round trips).

    Per point: one MBX exchange and one meter message carrying ``readings_per_point`` readings (a meter
    without compound reads takes one query per reading).
    """
    sent_v = np.round(np.asarray(bias_v, dtype=float) * 1000.0) / 1000.0
    power = np.empty(sent_v.size)
    # the role checks the declared bias limit and enters manual mode; the widest point first, so the
    # limit is checked once for the whole sweep and every later point is one MBX exchange
    widest = int(np.argmax(np.abs(sent_v)))
    modulator.set_manual_bias_v(float(sent_v[widest]))
    hold_v = modulator.bias_controller.mzm.manual_bias_v
    held_v, exchanges = float(sent_v[widest]), 2
    for index, volts in enumerate(sent_v):
        if float(volts) != held_v:
            hold_v(float(volts))
            held_v, exchanges = float(volts), exchanges + 1
        power[index] = float(np.mean(_readings_w(power_meter, readings_per_point)))
    return sent_v, power, exchanges + sent_v.size


def _readings_w(power_meter: Any, count: int) -> list[float]:
    """``count`` meter readings, in one message where the meter takes compound reads."""
    if count == 1:
        return [float(power_meter.read_power_w())]
    return [float(value) for value in power_meter.read_powers_w(count)]


def calibrate_bias_transfer(modulator: Any, power_meter: Any, laser: Any, *, key: str,
                            other_modulator: Any | None = None, sweep_v: tuple[float, float] = DEFAULT_SWEEP_V,
                            points: int = DEFAULT_POINTS, readings_per_point: int = DEFAULT_READINGS_PER_POINT,
                            dark_power_w: float = 0.0, figure_dir: str | Path | None = None) -> CalibrationResult:
    """DC transfer of one modulator through its bias port: bias_vpi_v, bias_phase_rad, extinction_ratio_db.

    ``key`` is the bench's name of the modulator (``server_iq`` or ``server_carver``). The laser must
    already be on (a dark sweep is an error, not something to fix silently); ``other_modulator``, the
    modulator in series, is locked at its peak so it passes the most light. The AWG drives are off
    (0 V) during the sweep. The bias is left in manual mode at the fitted null.
    """
    calibration = f"{key} bias transfer"

    def body() -> CalibrationResult:
        modulator.awg.stop_and_outputs_off()
        if other_modulator is not None:
            other_modulator.bias_controller.mzm.bias_mode("peak")
        bias_v = np.linspace(*sweep_v, points)
        sent_v, power_w, trips = sweep_bias_power(modulator, power_meter, bias_v, readings_per_point)
        check_light(calibration, power_w)
        check_not_saturated(calibration, power_w)
        fit = fit_mzm_transfer(sent_v, power_w - dark_power_w, calibration)
        null = fit.bias_point_v("null")
        modulator.set_manual_bias_v(null.value, already_manual=True)
        params = _bias_parameters(key, fit)
        figure = plot_transfer(sent_v, power_w - dark_power_w, fit, f"{key}: bias-port transfer",
                               "bias voltage (V)", _figure_path(figure_dir, f"{key}_bias_transfer"))
        return CalibrationResult(KIND, key, params, raw={"bias_v": sent_v, "power_w": power_w,
                                                         "fit_covariance": fit.covariance},
                                 conditions={"dark_power_w": dark_power_w, "points": points,
                                             "readings_per_point": readings_per_point, "sweep_v": list(sweep_v),
                                             "fit_power_scale_w": fit.power_scale_w,
                                             "residual_rms_w": fit.residual_rms_w,
                                             "other_modulator_bias": "peak" if other_modulator is not None else None,
                                             "left_at": "manual bias at the fitted null"},
                                 figure_png=str(figure),
                                 round_trips=trips + 2 + (other_modulator is not None))

    return _guarded(calibration, laser, tuple(m for m in (modulator, other_modulator) if m is not None), body)


def _bias_parameters(key: str, fit: MzmFit) -> dict[str, Estimate]:
    s = fit.sigmas
    params = {f"{key}.bias_vpi_v": Estimate(fit.vpi_v, float(s[1]), "V"),
              f"{key}.bias_phase_rad": Estimate(fit.phase_rad, float(s[2]), "rad"),
              f"{key}.extinction_ratio_db": Estimate(fit.extinction_ratio_db, float(s[3]), "dB")}
    for point in ("null", "quadrature+", "quadrature-", "peak"):
        params[f"{key}.{point.replace('+', '_plus').replace('-', '_minus')}_bias_v"] = fit.bias_point_v(point)
    return params


def lock_and_verify(modulator: Any, power_meter: Any, laser: Any, transfer: CalibrationResult, *, key: str,
                    point: str = "null", lock_tolerance_rad: float = 0.05,
                    figure_dir: str | Path | None = None) -> CalibrationResult:
    """Lock the bias controller at ``point`` and check it against the fitted transfer function.

    The lock is good when the controller's bias voltage lies within ``lock_tolerance_rad`` of arm phase
    (plus 3 sigma of the fitted bias point) of the fitted point, modulo 2 V_pi. Returns the locked bias
    voltage (``<controller>.bias_v``) and the meter reading there.
    """
    calibration = f"{key} bias lock at {point}"

    def body() -> CalibrationResult:
        if point not in TARGET_PHASE_RAD:
            raise CalibrationError(calibration, f"unknown bias point {point!r}; expected one of "
                                                f"{sorted(TARGET_PHASE_RAD)}")
        fit = _fit_from_result(transfer, key)
        controller = modulator.bias_controller
        controller.mzm.bias_mode(point)
        locked_v = float(controller.mzm.bias_v())
        power_w = power_meter.read_power_w()
        expected = fit.bias_point_v(point, near_v=locked_v)
        error_rad = math.pi * (locked_v - expected.value) / fit.vpi_v
        allowed_rad = lock_tolerance_rad + 3.0 * math.pi * expected.uncertainty / fit.vpi_v
        if not abs(error_rad) <= allowed_rad:
            raise CalibrationError(calibration, f"the controller locked at {locked_v:.4g} V, {error_rad:+.3g} rad of "
                                                f"arm phase from the fitted {point} at {expected.value:.4g} V "
                                                f"(allowed {allowed_rad:.3g} rad): the lock or the fit is wrong")
        name = _controller_name(modulator)
        phase_sigma_rad = math.pi * expected.uncertainty / fit.vpi_v
        params = {f"{name}.bias_v": Estimate(locked_v, 0.001, "V"),   # the MBX reports mV
                  f"{key}.locked_phase_error_rad": Estimate(error_rad, phase_sigma_rad, "rad")}
        figure = plot_transfer(transfer.raw["bias_v"], transfer.raw["power_w"] - transfer.conditions["dark_power_w"],
                               fit, f"{key}: locked at {point} ({locked_v:.3f} V)", "bias voltage (V)",
                               _figure_path(figure_dir, f"{key}_lock_{point}"), marks={"locked": (locked_v, power_w)})
        return CalibrationResult(KIND, key, params,
                                 raw={"bias_v": np.array([locked_v]), "power_w": np.array([power_w])},
                                 conditions={"point": point, "expected_bias_v": expected.value,
                                             "predicted_power_w": float(fit.power_w(locked_v))},
                                 figure_png=str(figure), round_trips=3)

    return _guarded(calibration, laser, (modulator,), body)


def _fit_from_result(transfer: CalibrationResult, key: str) -> MzmFit:
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


# --- RF transfer: one AWG staircase, one homodyne capture ------------------------------------------

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


RECEIVER_LIMITS = (
    "client_receiver measures the X quadrature of every symbol (a fixed LO phase, no phase control role): it "
    "sees the I child and the carver directly, but the Q child only through sin(iq_phase_error_rad); "
    "server_receiver measures X or P at random per symbol and no instrument reports the choice (its LO phase "
    "gate on the server AWG is not used here); so no "
    "homodyne test constellation gives the IQ imbalance, and the Q child's RF V_pi is taken equal to the I "
    "child's (the bench models one vpi_v for both). The client's time-bin processor acts only in the bench's "
    "session acquisitions (a whole layer against a batch of images), so no single-symbol capture sees its beam "
    "splitter and phase modulator, and no procedure calibrates them yet.")


def calibrate_rf_transfer(modulator: Any, receiver: Any, laser: Any, *, key: str, driver_gain: float,
                          channel_index: int = 0, symbol_rate_hz: float = 1e9, levels: int = 128,
                          symbols_per_level: int = 8, periods: int = 32, capture_samples_per_symbol: int = 4,
                          range_v: float = 0.2, extra_safe: tuple = (), figure_dir: str | Path | None = None,
                          dc_level_v: float = 0.0) -> CalibrationResult:
    """RF V_pi from one AWG staircase over the drive range and one homodyne capture of it.

    Preconditions (the caller sets up the light path): laser on, attenuator open, the client amplifier
    at gain > 1 so ``receiver`` (the client's) sees the X quadrature; the modulator's bias held (locked
    at null or manual). ``channel_index`` picks the role's AWG channel to ramp (0 = I or the carver,
    1 = Q); the others play 0 V. ``driver_gain`` (datasheet, V/V) turns V_pi at the AWG into
    ``<key>.vpi_v`` at the modulator. The AWG is left stopped with its outputs off. ``dc_level_v``: the
    receiver's expected DC level (its homodyne record), where the capture is centred first.
    """
    calibration = f"{key} RF transfer"
    awg = modulator.awg

    def body() -> CalibrationResult:
        if not laser.is_on():
            raise CalibrationError(calibration, "the laser is off: a homodyne capture would hold noise only")
        ramped = AwgChannels(awg.awg, [awg.channels[channel_index]], amplitude_max=awg.amplitude_max, name=awg.name)
        # stop + the other channels off (0 V) + rate: one message; the ramp loaded and played: one more
        others = [number for index, number in enumerate(awg.channels) if index != channel_index]
        sps_awg = ramped.stop_and_rate(symbol_rate_hz, outputs_off=others)
        amplitude_vpp = float(awg.amplitude_max.value)
        ramped.load_and_run([(1, [staircase_codes(levels, symbols_per_level, sps_awg)])], [amplitude_vpp])
        points = levels * symbols_per_level * periods * capture_samples_per_symbol
        samples_v, offset_v = _centred_capture(receiver, points, capture_samples_per_symbol * symbol_rate_hz, range_v,
                                               dc_level_v)
        awg.stop_and_outputs_off()
        _check_capture(calibration, samples_v, range_v, receiver, offset_v)
        volts = 0.5 * amplitude_vpp * np.rint(np.linspace(-127, 127, levels)) / 127.0
        mean_v, sigma_v = level_means(samples_v, capture_samples_per_symbol, levels, symbols_per_level)
        fit = fit_field_transfer(volts, mean_v, sigma_v, calibration)
        s = fit.sigmas
        vpi_v = Estimate(fit.vpi_v * driver_gain, float(s[2]) * driver_gain, "V")
        number = awg.channels[channel_index]
        figure = plot_field(volts, mean_v, sigma_v, fit, f"{key}: RF transfer (AWG channel {number})",
                            _figure_path(figure_dir, f"{key}_rf_transfer_ch{number}"))
        return CalibrationResult(
            KIND, key, {f"{key}.vpi_v": vpi_v, f"{key}.vpi_at_awg_v": Estimate(fit.vpi_v, float(s[2]), "V")},
            raw={"awg_v": volts, "quadrature_v": mean_v, "quadrature_sigma_v": sigma_v},
            conditions={"driver_gain": driver_gain, "awg_channel": awg.channels[channel_index],
                        "amplitude_vpp": amplitude_vpp, "levels": levels, "symbols_per_level": symbols_per_level,
                        "periods": periods, "capture_samples_per_symbol": capture_samples_per_symbol,
                        "range_v": range_v, "receiver": getattr(receiver, "name", "receiver"),
                        "reduced_chi2": fit.reduced_chi2, "field_amplitude_v": fit.amplitude_v,
                        "field_phase_rad": fit.phase_rad},
            figure_png=str(figure))

    return _guarded(calibration, laser, (modulator,) + tuple(extra_safe), body)


CENTRING_ATTEMPTS = 4  # captures at most: a clipped one moves the channel's offset to its mean and is taken again


def _centred_capture(receiver: Any, points: int, sample_rate_hz: float, range_v: float,
                     centre_v: float = 0.0) -> tuple[np.ndarray, float]:
    """One capture centred on the receiver's DC level (a DC-coupled detector sits on its LO's unbalanced
    share, tens of mV: more than the fit's range leaves), re-centred on its own mean if it clipped. The
    fit's own offset term takes whatever DC remains; the samples are absolute volts throughout."""
    bits = getattr(receiver, "adc_bits", None) or 10
    for _ in range(CENTRING_ATTEMPTS):
        offset_v = centre_v
        samples_v = receiver.capture_samples_v(points, sample_rate_hz, range_v, offset_v)
        if samples_v.size == 0 or clipped_fraction(samples_v, range_v, offset_v, bits) <= 1e-4:
            break
        centre_v = float(np.mean(samples_v))
    return samples_v, offset_v


def _check_capture(calibration: str, samples_v: np.ndarray, range_v: float, receiver: Any,
                   offset_v: float = 0.0) -> None:
    if samples_v.size == 0 or not np.all(np.isfinite(samples_v)):
        raise CalibrationError(calibration, "the capture is empty or holds non-finite samples")
    bits = getattr(receiver, "adc_bits", None) or 10
    clipped = clipped_fraction(samples_v, range_v, offset_v, bits)
    if clipped > 1e-4:
        raise CalibrationError(calibration, f"the capture is clipped: {100 * clipped:.3g} % of the samples sit at the "
                                            f"ADC rails of the {range_v:g} V range (raise the range or the "
                                            "attenuation)")


# --- IQ gain and phase imbalance from static drives on the monitor-tap meter --------------------------

IQ_CONFIGS = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1))  # child drives in units of +-U


def mzm_field(theta_rad, extinction_ratio_db: float):
    """t(theta) = -(e^{i theta/2} + gamma e^{-i theta/2})/(1 + gamma), ER = ((1 + gamma)/(1 - gamma))^2 (4.1)."""
    root = math.sqrt(10.0 ** (extinction_ratio_db / 10.0))
    gamma = (root - 1.0) / (root + 1.0)
    half = 0.5 * np.asarray(theta_rad, dtype=float)
    return -(np.exp(1j * half) + gamma * np.exp(-1j * half)) / (1.0 + gamma)


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
    field = (1.0 + 0.5 * gain_imbalance) * t_i + np.exp(1j * (0.5 * np.pi + phase_error_rad)) * (
        1.0 - 0.5 * gain_imbalance) * t_q
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


def calibrate_iq_imbalance(iq: Any, power_meter: Any, laser: Any, *, vpi_at_awg: Estimate,
                           extinction_ratio_db: Estimate, key: str = "server_iq", repeats: int = 5,
                           symbol_rate_hz: float = 1e9, figure_dir: str | Path | None = None) -> CalibrationResult:
    """IQ gain imbalance g and parent phase error delta from nine static drive pairs (-U, 0, +U)^2.

    Why the meter and not a homodyne constellation: the client receiver measures X only and the server
    receiver X or P at random, unreported (``RECEIVER_LIMITS``). With the children locked at
    null, P(u_I, u_Q) depends on g through the children's relative power and on delta through the
    interference of (+U, +U) against (+U, -U). V_pi (at the AWG) and ER come from the RF and bias
    calibrations; their uncertainties are propagated by refitting at +-1 sigma. The AWG is left stopped
    with outputs off and the bias at null.
    """
    calibration = f"{key} IQ imbalance"
    awg = iq.awg

    def body() -> CalibrationResult:
        if not laser.is_on():
            raise CalibrationError(calibration, "the laser is off")
        iq.lock_bias()
        sps_awg = awg.stop_and_rate(symbol_rate_hz)
        amplitude_vpp = float(awg.amplitude_max.value)
        constant = np.full(128 * sps_awg, 127, dtype=np.int8)
        # segment 1 plays +U, segment 2 -U, on both channels; one message loads both, selects 2 and runs
        awg.load_and_run([(1, [constant, constant]), (2, [-constant, -constant])], [amplitude_vpp] * 2, select=2)
        drive_v = 0.5 * amplitude_vpp
        means, spreads = [], []
        state = {number: (True, 2) for number in awg.channels}   # (output on, segment) after the load
        for config in IQ_CONFIGS:
            changes = []
            for level, number in zip(config, awg.channels):
                wanted = (bool(level), 1 if level >= 0 else 2)
                segment = wanted[1] if level and wanted[1] != state[number][1] else None
                enabled = wanted[0] if wanted[0] != state[number][0] else None
                if segment is not None or enabled is not None:
                    changes.append((number, segment, enabled))
                state[number] = (wanted[0], wanted[1] if level else state[number][1])
            awg.switch(changes)   # one message for both channels' changes
            readings = np.array(_readings_w(power_meter, repeats))
            means.append(readings.mean())
            spreads.append(readings.std(ddof=1) if repeats > 1 else 0.0)
        awg.stop_and_outputs_off()
        means, spreads = np.array(means), np.array(spreads)
        check_light(calibration, means)
        drives = drive_v * np.array(IQ_CONFIGS, dtype=float)
        # a pooled relative noise: five readings per point give too noisy a spread on their own
        relative = float(np.median(spreads / means)) if repeats > 1 else 2e-4
        sigma = np.maximum(relative, 1e-6) * means / math.sqrt(repeats)
        fit_args = {"vpi_v": vpi_at_awg.value, "extinction_ratio_db": extinction_ratio_db.value}
        params, covariance, chi2 = fit_iq_imbalance(drives, means, sigma, calibration=calibration, **fit_args)
        systematic = _propagate(drives, means, sigma, params, calibration, vpi_at_awg, extinction_ratio_db)
        total = np.sqrt(np.diag(covariance) + systematic**2)
        parameters = {f"{key}.iq_gain_imbalance": Estimate(float(params[1]), float(total[1])),
                      f"{key}.iq_phase_error_rad": Estimate(float(params[2]), float(total[2]), "rad"),
                      f"{key}.null_bias_error_rad": Estimate(float(params[3]), float(total[3]), "rad")}
        figure = plot_iq(means, sigma, iq_power(drives, *params, **fit_args), parameters, key,
                         _figure_path(figure_dir, f"{key}_iq_imbalance"))
        return CalibrationResult(KIND, key, parameters, raw={"drives_v": drives, "power_w": means, "spread_w": spreads},
                                 conditions={"repeats": repeats, "drive_v": drive_v, "reduced_chi2": chi2,
                                             "vpi_at_awg_v": vpi_at_awg.value,
                                             "extinction_ratio_db": extinction_ratio_db.value,
                                             "bias": "null (locked)", "scale_w": float(params[0])},
                                 figure_png=str(figure))

    return _guarded(calibration, laser, (iq,), body)


def _propagate(drives, means, sigma, params, calibration, vpi: Estimate, er: Estimate) -> np.ndarray:
    """Parameter shifts from V_pi and ER at +-1 sigma (half the spread), added in quadrature."""
    shifts = []
    for vpi_v, er_db in ((vpi.value + vpi.uncertainty, er.value), (vpi.value - vpi.uncertainty, er.value),
                         (vpi.value, er.value + er.uncertainty), (vpi.value, er.value - er.uncertainty)):
        shifted, _, _ = fit_iq_imbalance(drives, means, sigma, vpi_v=vpi_v, extinction_ratio_db=er_db,
                                         calibration=calibration)
        shifts.append(shifted - params)
    shifts = np.array(shifts)
    return np.sqrt((0.5 * (shifts[0] - shifts[1])) ** 2 + (0.5 * (shifts[2] - shifts[3])) ** 2)


def plot_iq(means, sigma, model, parameters: dict[str, Estimate], key: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"({a:+d},{b:+d})" for a, b in IQ_CONFIGS]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[3, 1])
    top.errorbar(range(len(means)), means * 1e6, yerr=sigma * 1e6, fmt="o", ms=4, label="meter")
    top.plot(range(len(means)), model * 1e6, "x", ms=8, label="fit")
    g, d = parameters[f"{key}.iq_gain_imbalance"], parameters[f"{key}.iq_phase_error_rad"]
    top.set_title(f"{key}: IQ imbalance g = {g.value:.4f} +- {g.uncertainty:.1g}, "
                  f"delta = {d.value:.4f} +- {d.uncertainty:.1g} rad", fontsize=10)
    top.set_ylabel("power (uW)")
    top.legend(fontsize=8)
    bottom.plot(range(len(means)), (means - model) / sigma, "o", ms=4)
    bottom.set_ylabel("residual / sigma")
    bottom.set_xticks(range(len(means)), labels, rotation=45)
    bottom.set_xlabel("(I, Q) drive in units of +-U")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# --- the whole server side, for `qslab calibrate modulators` -----------------------------------------

# The RF drivers' gains (V at the modulator per V of AWG output) are datasheet values the config does not
# carry yet; these are the bench's drivers. Proposed: a driver_gain key per modulator role in lab_config.
DRIVER_GAINS = {"server_iq": 7.0, "server_carver": 6.0}
RF_ATTENUATION_DB = 20.0  # VOA during the RF captures: the field stands far out of the shot noise within a 0.2 V range


def homodyne_light_on(attenuator: Any, amplifier: Any, gain: float) -> None:
    """The light path of the RF captures: VOA at RF_ATTENUATION_DB (or its least allowed attenuation, if
    higher), shutter open, the client amplifier on at ``gain`` (at least 1.1: its receiver sees the field
    only for G > 1). Why one helper: the capture's 0.2 V range is sized for exactly this light."""
    attenuator.set_attenuation_db(max(attenuator.attenuation_min.value, RF_ATTENUATION_DB))
    attenuator.open_shutter()
    amplifier.set_gain(max(gain, 1.1))
    amplifier.on()


def calibrate_station(station: Any, figure_dir: str | Path | None = None,
                      driver_gains: dict[str, float] | None = None, receiver_calibration: Any = None
                      ) -> list[CalibrationResult]:
    """Every server-modulator calibration in order, on a connected station (duck-typed: its role factories).

    DC transfer of both modulators (the other at peak), RF V_pi of the IQ's I child (children at null,
    carver at peak) and of the carver (IQ at peak), IQ imbalance, then both locked at null and verified.
    Light: laser at min(13 dBm, its limit), VOA at its least allowed attenuation, the client amplifier at
    the protocol gain (its receiver sees the field only for G > 1). Everything is switched off at the end.
    """
    gains = {**DRIVER_GAINS, **(driver_gains or {})}
    protocol = station.config.protocol
    laser, meter = station.laser(), station.power_meter()
    iq = station.iq_modulator(ModulatorCalibration(1.0, gains["server_iq"]))
    carver = station.pulse_carver(ModulatorCalibration(1.0, gains["server_carver"]))
    attenuator, amplifier = station.attenuator(), station.amplifier()
    receiver = station.receiver("client_receiver")
    laser_dbm = min(13.0, laser.power_max_dbm)
    dc_v = 0.0 if receiver_calibration is None else receiver_calibration.dc_level_v(
        receiver.lo_fraction * 1e-3 * 10.0 ** (laser_dbm / 10.0))  # the DC-coupled receiver's level at this LO
    rf_options = {"symbol_rate_hz": protocol.symbol_rate_hz, "figure_dir": figure_dir, "extra_safe": (amplifier,),
                  "dc_level_v": dc_v}
    try:
        laser.set_power_dbm(laser_dbm)
        laser.on()
        if hasattr(meter, "set_averaging_time_s"):
            meter.set_averaging_time_s(1e-3)
        dc_iq = calibrate_bias_transfer(iq, meter, laser, key="server_iq", other_modulator=carver,
                                        figure_dir=figure_dir)
        dc_carver = calibrate_bias_transfer(carver, meter, laser, key="server_carver", other_modulator=iq,
                                            figure_dir=figure_dir)
        homodyne_light_on(attenuator, amplifier, protocol.gain)
        carver.bias_controller.mzm.bias_mode("peak")
        iq.lock_bias()
        rf_iq = calibrate_rf_transfer(iq, receiver, laser, key="server_iq", driver_gain=gains["server_iq"],
                                      **rf_options)
        iq.bias_controller.mzm.bias_mode("peak")
        rf_carver = calibrate_rf_transfer(carver, receiver, laser, key="server_carver",
                                          driver_gain=gains["server_carver"], **rf_options)
        amplifier.off()
        attenuator.close_shutter()
        carver.bias_controller.mzm.bias_mode("peak")
        imbalance = calibrate_iq_imbalance(iq, meter, laser, vpi_at_awg=rf_iq.parameters["server_iq.vpi_at_awg_v"],
                                           extinction_ratio_db=dc_iq.parameters["server_iq.extinction_ratio_db"],
                                           symbol_rate_hz=protocol.symbol_rate_hz, figure_dir=figure_dir)
        lock_iq = lock_and_verify(iq, meter, laser, dc_iq, key="server_iq", point="null", figure_dir=figure_dir)
        lock_carver = lock_and_verify(carver, meter, laser, dc_carver, key="server_carver", point="null",
                                      figure_dir=figure_dir)
    finally:
        make_safe(laser, iq, carver, amplifier)
        attenuator.close_shutter()
    return [dc_iq, dc_carver, rf_iq, rf_carver, imbalance, lock_iq, lock_carver]


# --- arcsine predistortion -------------------------------------------------------------------------

def modulator_calibration(vpi: Estimate, driver_gain: float, *, iq_gain_imbalance: float = 0.0,
                          iq_phase_error_rad: float = 0.0, record_id: str | None = None) -> ModulatorCalibration:
    """The ModulatorCalibration a modulator role takes (the RF V_pi and the driver gain it was measured with)."""
    return ModulatorCalibration(vpi_v=vpi.value, driver_gain=driver_gain, iq_gain_imbalance=iq_gain_imbalance,
                                iq_phase_error_rad=iq_phase_error_rad, record_id=record_id)


def predistortion_table(calibration: ModulatorCalibration, levels: int = 256,
                        max_field: float = 1.0) -> dict[str, np.ndarray]:
    """Target field a in [-max_field, max_field] -> AWG volts u = (2 V_pi/pi) arcsin(a) / driver gain.

    The check column ``field_check`` is sin(pi u/(2 V_pi)) at the modulator: it returns a (4.4).
    """
    if not (0.0 < max_field <= 1.0 and levels >= 2):
        raise ValueError(f"expected 0 < max_field <= 1 and levels >= 2, got {max_field!r}, {levels!r}")
    field = np.linspace(-max_field, max_field, levels)
    awg_v = arcsine_drive_v(field, calibration.vpi_at_awg_v)
    return {"field": field, "awg_v": awg_v, "modulator_v": awg_v * calibration.driver_gain,
            "field_check": null_biased_field(awg_v, calibration.vpi_at_awg_v)}


# --- figures ---------------------------------------------------------------------------------------

def _figure_path(figure_dir: str | Path | None, stem: str) -> Path:
    directory = Path(figure_dir) if figure_dir is not None else Path(tempfile.mkdtemp(prefix="qslab_modulators_"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{stem}.png"


def plot_transfer(volts: np.ndarray, power_w: np.ndarray, fit: MzmFit, title: str, xlabel: str, path: Path,
                  marks: dict[str, tuple[float, float]] | None = None) -> Path:
    """Data, fit and residuals; the fitted bias points marked (and ``marks``: label -> (V, W))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = np.linspace(float(np.min(volts)), float(np.max(volts)), 2000)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[3, 1])
    top.plot(volts, power_w * 1e6, ".", ms=3, label="data")
    top.plot(fine, fit.power_w(fine) * 1e6, "-", lw=1,
             label=(f"fit: V_pi = {fit.vpi_v:.4g} V, phi = {fit.phase_rad:.4g} rad, "
                    f"ER = {fit.extinction_ratio_db:.3g} dB"))
    for point, color in (("null", "k"), ("quadrature+", "g")):
        top.axvline(fit.bias_point_v(point).value, ls=":", color=color, lw=0.8, label=point)
    for label, (mark_v, mark_w) in (marks or {}).items():
        top.plot([mark_v], [mark_w * 1e6], "r*", ms=10, label=label)
    top.set_ylabel("power (uW)")
    top.set_title(title)
    top.legend(fontsize=8)
    bottom.plot(volts, (power_w - fit.power_w(volts)) * 1e6, ".", ms=3)
    bottom.set_ylabel("residual (uW)")
    bottom.set_xlabel(xlabel)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_field(volts: np.ndarray, mean_v: np.ndarray, sigma_v: np.ndarray, fit: FieldFit, title: str,
               path: Path) -> Path:
    """Per-level quadrature (with standard errors), the fitted sinusoid, and normalised residuals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = np.linspace(float(np.min(volts)), float(np.max(volts)), 1000)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), height_ratios=[3, 1])
    top.errorbar(volts, mean_v * 1e3, yerr=sigma_v * 1e3, fmt=".", ms=3, label="capture (level means)")
    top.plot(fine, fit.quadrature_v(fine) * 1e3, "-", lw=1, label=f"fit: V_pi at AWG = {fit.vpi_v:.4g} V")
    top.set_ylabel("homodyne output (mV)")
    top.set_title(title)
    top.legend(fontsize=8)
    bottom.plot(volts, (mean_v - fit.quadrature_v(volts)) / sigma_v, ".", ms=3)
    bottom.set_ylabel("residual / sigma")
    bottom.set_xlabel("AWG output (V)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

"""Modulator calibration: transfer functions, bias points and lock, IQ imbalance, arcsine predistortion.

Four procedures over roles, each returning a ``CalibrationResult`` keyed by the bench's dotted names,
each drawing a PNG of data and fit:

- ``calibrate_bias_transfer``: DC sweep of the MBX manual bias, read on the monitor-tap power meter ->
  ``<key>.bias_vpi_v`` (DC V_pi), ``<key>.bias_phase_rad`` (arm phase at 0 V bias),
  ``<key>.extinction_ratio_db``, and the bias points (``<key>.null_bias_v``, ...). The meter reads the
  *average* power and the MBX sets one voltage per serial exchange, so a curve costs 2 round trips per
  point: 21 points of 7 readings (one compound meter message each), 46 in all, instead of 121 x 1 (250).
- ``lock_and_verify``: lock the MBX at null/quadrature/peak, check its voltage against the fitted point.
- ``calibrate_rf_transfer``: ONE AWG staircase over the drive range and ONE digitizer capture of the
  client homodyne (X quadrature, which is a sinusoid of half the arm phase) -> ``<key>.vpi_v`` (RF V_pi
  at the modulator, through the datasheet driver gain) and ``<key>.vpi_at_awg_v``: 6 round trips (each
  AWG step one compound message with its error check, the capture two digitizer messages).
- ``calibrate_iq_imbalance``: nine static (I, Q) drive pairs on the monitor-tap meter ->
  ``server_iq.iq_gain_imbalance``, ``server_iq.iq_phase_error_rad`` (finite-ER leakage in the model):
  one AWG message and one meter message (5 readings) per drive pair, 22 round trips.
  ``benchmarks/bench_modulator_calibration.py`` counts them.

The procedures talk to roles only (qslab.instruments.optical.roles: Laser, PowerMeter, the modulators with
their Awg and BiasController, HomodyneReceiver). The fits are calibration/modulator_fits.py (with
``modulator_calibration`` and ``predistortion_table``, docs/PHYSICS.md 15), the figures
calibration/modulator_figures.py. Bad data (no light, a clipped capture, noise where a signal should be, a fit that does not
converge) raise one ``CalibrationError`` naming the calibration, after the laser is switched off and the
AWG stopped with its outputs off; nothing is recorded (recording is the caller's, with the result).
What the bench's receivers cannot observe is stated in ``RECEIVER_LIMITS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qslab.analysis.estimate import Estimate
from qslab.calibration.datasheet import through_driver_gain
from qslab.calibration.figures import draw
from qslab.calibration.modulator_figures import figure_path, plot_field, plot_iq, plot_transfer
from qslab.calibration.modulator_fits import (IQ_CONFIGS, TARGET_PHASE_RAD, bias_parameters, check_light,
                                              check_not_saturated, clipped_fraction, fit_field_transfer,
                                              fit_iq_imbalance, fit_mzm_transfer, iq_power, level_means,
                                              mzm_fit_from_result, propagate_vpi_er, staircase_codes)
from qslab.calibration.result import CalibrationError, CalibrationResult
from qslab.calibration.safety import guarded, make_safe
from qslab.instruments.optical.modulators import ModulatorCalibration

KIND = "modulators"


DEFAULT_SWEEP_V = (-8.0, 8.0)


# 21 bias points of 7 readings each (one meter message per point): the Cramer-Rao bounds of V_pi, phase and ER at
# or below those of 31 x 4 (calibration/fisher_floors.py) for 147 instead of 124 readings (+23 ms of meter time)
# and 20 fewer round trips per sweep. Honest since the fit's noise model comes from each point's readings'
# spread (6 degrees of freedom each); with a model fitted to the residuals, 21 points made the ER's uncertainty
# dishonest (z rms ~2.5)
DEFAULT_POINTS = 21


DEFAULT_READINGS_PER_POINT = 7


METER_AVERAGING_S = 1e-3   # the monitor meter's averaging time per reading during the modulator calibrations


def _name(role: Any, fallback: str) -> str:
    return str(getattr(role, "name", fallback))


def _controller_name(modulator: Any) -> str:
    return str(getattr(modulator.bias_controller, "name", "bias_controller"))


def _at_peak(modulator: Any) -> None:
    """The modulator's bias loop locked at its peak: it passes the most light to the one being calibrated."""
    modulator.lock_bias("peak")


def safe_steps(laser: Any, *roles: Any) -> list:
    """Laser off, modulator drives off (AWG stopped), other roles (amplifier) off: the steps for safety.make_safe."""
    steps = [(laser.off, "laser off")]
    for role in roles:
        if hasattr(role, "awg"):
            steps += [(role.awg.stop, f"{_name(role, 'modulator')} AWG stop"),
                      (role.awg.outputs_off, f"{_name(role, 'modulator')} drives off")]
        elif hasattr(role, "off"):
            steps.append((role.off, f"{_name(role, 'role')} off"))
    return steps


def _guarded(calibration: str, laser: Any, modulators: tuple,
             body: Callable[[], CalibrationResult]) -> CalibrationResult:
    """Run a procedure; on any failure make the instruments safe and raise one CalibrationError."""
    return guarded(calibration, body, safe_steps(laser, *modulators), after_success=False)


def sweep_bias_power(modulator: Any, power_meter: Any, bias_v: np.ndarray,
                     readings_per_point: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Mean meter reading at each manual bias: (bias V as sent, quantised to the MBX's mV; power W; the variance
    of each mean from its readings' spread, W^2, None for one reading per point; round trips).

    Per point: one MBX exchange and one meter message carrying ``readings_per_point`` readings (a meter
    without compound reads takes one query per reading).
    """
    sent_v = np.round(np.asarray(bias_v, dtype=float) * 1000.0) / 1000.0
    power, spread = np.empty(sent_v.size), np.empty(sent_v.size)
    # the role checks the declared bias limit and enters manual mode; the widest point first, so the
    # limit is checked once for the whole sweep and every later point is one MBX exchange
    widest = int(np.argmax(np.abs(sent_v)))
    modulator.set_manual_bias_v(float(sent_v[widest]))
    hold_v = modulator.bias_controller.set_point_v  # already in manual mode: each point one exchange
    held_v, exchanges = float(sent_v[widest]), 2
    for index, volts in enumerate(sent_v):
        if float(volts) != held_v:
            hold_v(float(volts))
            held_v, exchanges = float(volts), exchanges + 1
        readings = np.array(_readings_w(power_meter, readings_per_point))
        power[index] = float(readings.mean())
        spread[index] = float(readings.var(ddof=1)) / readings.size if readings.size > 1 else math.nan
    return sent_v, power, (spread if readings_per_point > 1 else None), exchanges + sent_v.size


def _readings_w(power_meter: Any, count: int) -> list[float]:
    """``count`` meter readings, in one message where the meter takes compound reads."""
    if count == 1:
        return [float(power_meter.read_power_w())]
    return [float(value) for value in power_meter.read_powers_w(count)]


def calibrate_bias_transfer(modulator: Any, power_meter: Any, laser: Any, *, key: str,
                            other_modulator: Any | None = None, sweep_v: tuple[float, float] = DEFAULT_SWEEP_V,
                            points: int = DEFAULT_POINTS, readings_per_point: int = DEFAULT_READINGS_PER_POINT,
                            dark_power_w: float = 0.0, figure_dir: str | Path | None = None,
                            other_peak_v: float | None = None, averaging_time_s: float | None = None
                            ) -> CalibrationResult:
    """DC transfer of one modulator through its bias port: bias_vpi_v, bias_phase_rad, extinction_ratio_db.

    ``key`` is the bench's name of the modulator (``server_iq`` or ``server_carver``). The laser must
    already be on (a dark sweep is an error, not something to fix silently); ``other_modulator``, the
    modulator in series, passes the most light: held at ``other_peak_v`` (its fitted peak, manual bias: two
    MBX exchanges) when given, else locked at its peak (a lock sweep of instrument seconds). The AWG drives are
    off (0 V) during the sweep. The bias is left in manual mode at the fitted null. ``averaging_time_s``: the
    meter's averaging time per reading, recorded (the cost's floor needs it; calibration/fisher_floors.py).
    """
    calibration = f"{key} bias transfer"
    other_bias = None if other_modulator is None else "peak (locked)" if other_peak_v is None else \
        f"peak (manual at its fitted {other_peak_v:.3f} V)"

    def body() -> CalibrationResult:
        modulator.awg.stop_and_outputs_off()
        if other_modulator is not None and other_peak_v is None:
            _at_peak(other_modulator)
        elif other_modulator is not None:
            other_modulator.set_manual_bias_v(other_peak_v)
        bias_v = np.linspace(*sweep_v, points)
        sent_v, power_w, mean_variance_w2, trips = sweep_bias_power(modulator, power_meter, bias_v,
                                                                    readings_per_point)
        check_light(calibration, power_w)
        check_not_saturated(calibration, power_w)
        fit = fit_mzm_transfer(sent_v, power_w - dark_power_w, calibration, mean_variance_w2=mean_variance_w2)
        null = fit.bias_point_v("null")
        modulator.set_manual_bias_v(null.value, already_manual=True)
        params = bias_parameters(key, fit)
        figure = figure_path(figure_dir, f"{key}_bias_transfer")
        draw(plot_transfer, sent_v, power_w - dark_power_w, fit, f"{key}: bias-port transfer", "bias voltage (V)", figure)
        raw = {"bias_v": sent_v, "power_w": power_w, "fit_covariance": fit.covariance}
        if mean_variance_w2 is not None:
            raw["mean_variance_w2"] = mean_variance_w2   # the weights' noise model is fitted to these
        return CalibrationResult(KIND, key, params, raw=raw,
                                 conditions={"dark_power_w": dark_power_w, "points": points,
                                             "readings_per_point": readings_per_point, "sweep_v": list(sweep_v),
                                             "fit_power_scale_w": fit.power_scale_w,
                                             "residual_rms_w": fit.residual_rms_w,
                                             "averaging_time_s": averaging_time_s,
                                             "other_modulator_bias": other_bias,
                                             "left_at": "manual bias at the fitted null"},
                                 figure_png=str(figure),
                                 round_trips=trips + 2 + (other_modulator is not None) + (other_peak_v is not None))

    return _guarded(calibration, laser, tuple(m for m in (modulator, other_modulator) if m is not None), body)


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
        fit = mzm_fit_from_result(transfer, key)
        modulator.lock_bias(point)  # waits until the loop reports its point (BiasLockError otherwise)
        locked_v = modulator.bias_controller.bias_v()
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
        figure = figure_path(figure_dir, f"{key}_lock_{point}")
        draw(plot_transfer, transfer.raw["bias_v"], transfer.raw["power_w"] - transfer.conditions["dark_power_w"],
             fit, f"{key}: locked at {point} ({locked_v:.3f} V)", "bias voltage (V)", figure,
             marks={"locked": (locked_v, power_w)})
        return CalibrationResult(KIND, key, params,
                                 raw={"bias_v": np.array([locked_v]), "power_w": np.array([power_w])},
                                 conditions={"point": point, "expected_bias_v": expected.value,
                                             "predicted_power_w": float(fit.power_w(locked_v))},
                                 figure_png=str(figure), round_trips=3)

    return _guarded(calibration, laser, (modulator,), body)


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
        ramped = awg.subset([awg.channels[channel_index]])
        # stop + the other channels off (0 V) + rate: one message; the ramp loaded and played: one more
        others = [number for index, number in enumerate(awg.channels) if index != channel_index]
        sps_awg = ramped.stop_and_rate(symbol_rate_hz, outputs_off=others)
        amplitude_vpp = float(awg.amplitude_max.value)
        ramped.load([(1, [staircase_codes(levels, symbols_per_level, sps_awg)])], [amplitude_vpp], run=True)
        points = levels * symbols_per_level * periods * capture_samples_per_symbol
        samples_v, offset_v = _centred_capture(receiver, points, capture_samples_per_symbol * symbol_rate_hz, range_v,
                                               dc_level_v)
        awg.stop_and_outputs_off()
        _check_capture(calibration, samples_v, range_v, receiver, offset_v)
        volts = 0.5 * amplitude_vpp * np.rint(np.linspace(-127, 127, levels)) / 127.0
        mean_v, sigma_v = level_means(samples_v, capture_samples_per_symbol, levels, symbols_per_level)
        fit = fit_field_transfer(volts, mean_v, sigma_v, calibration)
        s = fit.sigmas
        vpi_at_awg = Estimate(fit.vpi_v, float(s[2]), "V")
        vpi_v = through_driver_gain(vpi_at_awg, driver_gain)  # the datasheet gain's tolerance included
        number = awg.channels[channel_index]
        figure = figure_path(figure_dir, f"{key}_rf_transfer_ch{number}")
        draw(plot_field, volts, mean_v, sigma_v, fit, f"{key}: RF transfer (AWG channel {number})", figure)
        return CalibrationResult(
            KIND, key, {f"{key}.vpi_v": vpi_v, f"{key}.vpi_at_awg_v": vpi_at_awg},
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


def calibrate_iq_imbalance(iq: Any, power_meter: Any, laser: Any, *, vpi_at_awg: Estimate,
                           extinction_ratio_db: Estimate, key: str = "server_iq", repeats: int = 5,
                           symbol_rate_hz: float = 1e9, figure_dir: str | Path | None = None,
                           null_bias_v: float | None = None, averaging_time_s: float | None = None
                           ) -> CalibrationResult:
    """IQ gain imbalance g and parent phase error delta from nine static drive pairs (-U, 0, +U)^2.

    Why the meter and not a homodyne constellation: the client receiver measures X only and the server
    receiver X or P at random, unreported (``RECEIVER_LIMITS``). With the children locked at
    null, P(u_I, u_Q) depends on g through the children's relative power and on delta through the
    interference of (+U, +U) against (+U, -U). V_pi (at the AWG) and ER come from the RF and bias
    calibrations; their uncertainties are propagated by refitting at +-1 sigma. The children sit at null:
    held at ``null_bias_v`` (the bias transfer's fitted null, manual) when given, else locked (a lock sweep;
    the fit's common bias error r takes what either leaves). The AWG is left stopped with outputs off and
    the bias at null. ``averaging_time_s``: the meter's, recorded for the cost's floor.
    """
    calibration = f"{key} IQ imbalance"
    awg = iq.awg

    def body() -> CalibrationResult:
        if not laser.is_on():
            raise CalibrationError(calibration, "the laser is off")
        if null_bias_v is None:
            iq.lock_bias()
        else:
            iq.set_manual_bias_v(null_bias_v)
        sps_awg = awg.stop_and_rate(symbol_rate_hz)
        amplitude_vpp = float(awg.amplitude_max.value)
        constant = np.full(128 * sps_awg, 127, dtype=np.int8)
        # one segment per sign pair (the M8195A's extended-memory channels play one segment at a time, user's guide
        # p. 110): 1 (+U, +U), 2 (+U, -U), 3 (-U, +U), 4 (-U, -U); a 0 drive is that channel's output off.
        # One message loads the four, selects the first configuration's and runs
        def segment_of(config: tuple[int, int]) -> int:
            return 1 + 2 * (config[0] < 0) + (config[1] < 0)

        signs = ((1, 1), (1, -1), (-1, 1), (-1, -1))
        awg.load([(segment_of(pair), [pair[0] * constant, pair[1] * constant]) for pair in signs],
                 [amplitude_vpp] * 2, select=segment_of(IQ_CONFIGS[0]), run=True)
        drive_v = 0.5 * amplitude_vpp
        means, spreads = [], []
        segment = segment_of(IQ_CONFIGS[0])
        enabled = {number: True for number in awg.channels}   # outputs on after the load
        for config in IQ_CONFIGS:
            wanted = segment_of(config)
            changes = []
            for level, number in zip(config, awg.channels):
                select = wanted if wanted != segment else None
                switch_output = bool(level) if bool(level) != enabled[number] else None
                if select is not None or switch_output is not None:
                    changes.append((number, select, switch_output))
                enabled[number] = bool(level)
            segment = wanted
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
        systematic = propagate_vpi_er(drives, means, sigma, params, calibration, vpi_at_awg, extinction_ratio_db)
        statistical = np.sqrt(np.diag(covariance))
        total = np.sqrt(statistical**2 + systematic**2)
        parameters = {f"{key}.iq_gain_imbalance": Estimate(float(params[1]), float(total[1])),
                      f"{key}.iq_phase_error_rad": Estimate(float(params[2]), float(total[2]), "rad"),
                      f"{key}.null_bias_error_rad": Estimate(float(params[3]), float(total[3]), "rad")}
        figure = figure_path(figure_dir, f"{key}_iq_imbalance")
        draw(plot_iq, means, sigma, iq_power(drives, *params, **fit_args), parameters, key, figure)
        return CalibrationResult(KIND, key, parameters, raw={"drives_v": drives, "power_w": means, "spread_w": spreads},
                                 conditions={"repeats": repeats, "drive_v": drive_v, "reduced_chi2": chi2,
                                             "vpi_at_awg_v": vpi_at_awg.value,
                                             "extinction_ratio_db": extinction_ratio_db.value,
                                             "bias": "null (locked)" if null_bias_v is None else
                                             f"null (manual at the fitted {null_bias_v:.3f} V)",
                                             "averaging_time_s": averaging_time_s,
                                             "statistical_u": {"iq_gain_imbalance": float(statistical[1]),
                                                               "iq_phase_error_rad": float(statistical[2])},
                                             "scale_w": float(params[0])},
                                 figure_png=str(figure))

    return _guarded(calibration, laser, (iq,), body)


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

    Three bias locks in all (each a sweep of instrument seconds on an MBX): the carver at peak for the first
    sweep (nothing is fitted yet) and the final lock of each at null, verified. Between them every bias point
    is a fitted one held manually (two MBX exchanges, no sweep), as good as a lock to the fit's precision
    (1e-4 rad) and better than a lock's residual; the fits absorb what remains (the field fit's phase, the
    IQ fit's common bias error). Was nine locks: 4.5 of the kind's 6.3 instrument s.
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
        averaging_s = None
        if hasattr(meter, "set_averaging_time_s"):
            meter.set_averaging_time_s(METER_AVERAGING_S)
            averaging_s = METER_AVERAGING_S
        dc_iq = calibrate_bias_transfer(iq, meter, laser, key="server_iq", other_modulator=carver,
                                        figure_dir=figure_dir, averaging_time_s=averaging_s)
        iq_v = {point: dc_iq.parameters[f"server_iq.{point}_bias_v"].value for point in ("peak", "null")}
        dc_carver = calibrate_bias_transfer(carver, meter, laser, key="server_carver", other_modulator=iq,
                                            other_peak_v=iq_v["peak"], figure_dir=figure_dir,
                                            averaging_time_s=averaging_s)
        homodyne_light_on(attenuator, amplifier, protocol.gain)
        carver.set_manual_bias_v(dc_carver.parameters["server_carver.peak_bias_v"].value, already_manual=True)
        iq.set_manual_bias_v(iq_v["null"], already_manual=True)
        rf_iq = calibrate_rf_transfer(iq, receiver, laser, key="server_iq", driver_gain=gains["server_iq"],
                                      **rf_options)
        iq.set_manual_bias_v(iq_v["peak"], already_manual=True)
        rf_carver = calibrate_rf_transfer(carver, receiver, laser, key="server_carver",
                                          driver_gain=gains["server_carver"], **rf_options)
        amplifier.off()
        attenuator.close_shutter()
        imbalance = calibrate_iq_imbalance(iq, meter, laser, vpi_at_awg=rf_iq.parameters["server_iq.vpi_at_awg_v"],
                                           extinction_ratio_db=dc_iq.parameters["server_iq.extinction_ratio_db"],
                                           symbol_rate_hz=protocol.symbol_rate_hz, figure_dir=figure_dir,
                                           null_bias_v=iq_v["null"], averaging_time_s=averaging_s)
        lock_iq = lock_and_verify(iq, meter, laser, dc_iq, key="server_iq", point="null", figure_dir=figure_dir)
        lock_carver = lock_and_verify(carver, meter, laser, dc_carver, key="server_carver", point="null",
                                      figure_dir=figure_dir)
    finally:
        make_safe(safe_steps(laser, iq, carver, amplifier))
        attenuator.close_shutter()
    return [dc_iq, dc_carver, rf_iq, rf_carver, imbalance, lock_iq, lock_carver]

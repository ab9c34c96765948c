"""Photons per symbol at the server's output (docs/PHYSICS.md 16): monitor tap + VOA-output meter + declared losses.

Why this way: the weight-leakage bound needs mu at the server's output, the reference plane of
DECISIONS G, with a conservative upper limit. No meter sits at that plane (the light there is
nW), so mu is carried from bright, measurable powers:

    mu = (P_mon - dark) x r(A) x 10^(-F/10) x lambda / (h c R_sym)

- r(A), the monitor-to-VOA-output ratio at attenuator setting A, is fitted over a sweep of A at
  bright levels as 10 log10 r = c0 - s A (s = 1 for an exact attenuator scale); it absorbs the tap
  ratio and the attenuator's insertion loss and offset (docs/PHYSICS.md 16);
- F, the fixed attenuation between the VOA-output meter and the server output, is a declared,
  separately characterised value with its uncertainty (nothing on the station can measure it);
- every reading is an average of several, minus the dark level measured with the laser off.

Uncertainty budget: statistical (readings, regression at A) + declared systematics (meter
calibration, F), combined in quadrature and reported term by term in the conditions.

How long to average: the declared systematics (0.5 % meter calibration, F to 0.02 dB: 0.46 %) dominate
the budget; the readings' statistics add ~1e-4 relative in quadrature to its ~0.68 %. Twenty readings of
1 ms per point, fetched in one round trip (0.3 s of averaging, 58 round trips in all), state the same
uncertainty as twenty of 100 ms one query each (30 s, 343 round trips) did: longer averaging buys nothing
the budget shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qslab.analysis.estimate import Estimate
from qslab.analysis.figure_files import save_tight
from qslab.analysis.units import photons_per_symbol
from qslab.calibration.figures import draw
from qslab.calibration.result import CalibrationError, CalibrationResult
from qslab.calibration.safety import guarded

KIND = "photons"
KEY = "server.photons_per_symbol"
LN10_OVER_10 = math.log(10.0) / 10.0


MONITOR_AVERAGING_S = 0.001  # the monitor meter's averaging per reading; a session reads mu on the tap the same way


@dataclass(frozen=True)
class PhotonSettings:
    """What the procedure does; declared systematics are one-sigma."""

    symbol_rate_hz: float
    wavelength_m: float
    fixed_attenuation_db: Estimate                     # VOA-output meter -> server output (declared)
    laser_power_dbm: float = 10.0                      # laser set power during the whole calibration
    target_photons: float | None = None                # choose the operating VOA setting for this mu ...
    attenuation_db: float | None = None                # ... or use this one
    sweep_attenuation_db: tuple[float, ...] = (10.0, 13.0, 16.0, 19.0, 22.0, 25.0)
    readings: int = 20                                 # readings averaged per point, one round trip (QOSST: 20)
    averaging_time_s: float = MONITOR_AVERAGING_S      # per reading (module docstring: the systematics dominate)
    meter_relative_uncertainty: float = 0.005          # declared: VOA-output meter calibration (relative)
    min_signal_to_dark: float = 100.0                  # light must exceed the dark level's scatter by this
    extra: dict = field(default_factory=dict)


def _average(meter, n: int) -> tuple[float, float]:
    """Mean of n readings and its standard error; the readings in one round trip (the PowerMeter role's
    read_powers_w)."""
    readings = np.asarray(meter.read_powers_w(n), dtype=float)
    return float(np.mean(readings)), float(np.std(readings, ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def calibrate_photons(laser, attenuator, monitor_meter, output_meter, settings: PhotonSettings,
                      figure_path: str | None = None) -> CalibrationResult:
    """Measure mu at the server's output; the laser is off and the shutter closed afterwards, also on error."""
    return guarded(KIND, lambda: _measure(laser, attenuator, monitor_meter, output_meter, settings, figure_path),
                   [(laser.off, "laser off"), (attenuator.close_shutter, "shutter closed")])


def _measure(laser, attenuator, monitor_meter, output_meter, s: PhotonSettings, figure_path):
    n = int(s.readings)
    if n < 2:
        raise CalibrationError(KIND, f"readings must be >= 2 to estimate the scatter, got {n}")
    for meter in (monitor_meter, output_meter):
        meter.set_wavelength_m(s.wavelength_m)
        if hasattr(meter, "set_averaging_time_s"):
            meter.set_averaging_time_s(s.averaging_time_s)
    laser.set_wavelength_m(s.wavelength_m)

    # dark levels: laser off
    laser.off()
    attenuator.close_shutter()
    dark_mon, dark_mon_u = _average(monitor_meter, n)
    dark_out, dark_out_u = _average(output_meter, n)
    dark_scatter = max(dark_mon_u * math.sqrt(n), 1e-15)

    laser.set_power_dbm(s.laser_power_dbm)
    laser.on()
    sweep = sorted(float(a) for a in s.sweep_attenuation_db)
    if len(sweep) < 3:
        raise CalibrationError(KIND, f"the attenuator sweep needs >= 3 settings, got {sweep}")
    fastest = getattr(attenuator, "use_fastest_transitions", None)
    if fastest is not None:  # the sweep's moves wait |change| / speed: no reading is taken while the filter moves
        fastest()
    attenuator.set_attenuation_db(sweep[0])
    attenuator.open_shutter()
    mon, mon_u, out, out_u = [], [], [], []
    for a in sweep:
        attenuator.set_attenuation_db(a)
        m, mu_ = _average(monitor_meter, n)
        o, ou = _average(output_meter, n)
        mon.append(m - dark_mon), mon_u.append(math.hypot(mu_, dark_mon_u))
        out.append(o - dark_out), out_u.append(math.hypot(ou, dark_out_u))
    mon, mon_u, out, out_u = map(np.asarray, (mon, mon_u, out, out_u))
    if np.min(mon) < s.min_signal_to_dark * dark_scatter:
        raise CalibrationError(KIND, f"no light on the monitor tap ({np.min(mon):.3g} W above a dark level of "
                                     f"{dark_mon:.3g} W, scatter {dark_scatter:.2g} W): is the laser on and emitting, and are the "
                                     "modulators passing light (not biased at null)?")
    if np.min(out) < s.min_signal_to_dark * max(dark_out_u * math.sqrt(n), 1e-15):
        raise CalibrationError(KIND, f"no light on the VOA-output meter ({np.min(out):.3g} W above dark at "
                                     f"{sweep[int(np.argmin(out))]:g} dB): is the shutter open, the path connected?")

    # 10 log10(out/mon) = c0 - s A, weighted least squares
    y = 10.0 * np.log10(out / mon)
    y_u = 10.0 / math.log(10.0) * np.hypot(out_u / out, mon_u / mon)
    coef, cov, chi2_red = _weighted_line(np.asarray(sweep), y, y_u)
    if abs(coef[1] + 1.0) > 0.05:
        raise CalibrationError(KIND, f"the VOA-output/monitor ratio changes by {-coef[1]:.3f} dB per dB of attenuation "
                                     "(expected 1): the attenuator or a meter is not linear over the sweep")

    if s.attenuation_db is not None:
        a_op = float(s.attenuation_db)
    elif s.target_photons is not None:
        per_watt = float(photons_per_symbol(1.0, s.symbol_rate_hz, s.wavelength_m))
        mon_now = float(np.mean(mon))  # the monitor does not depend on A (the tap is before the VOA)
        wanted_db = 10.0 * np.log10(s.target_photons / (mon_now * per_watt)) + s.fixed_attenuation_db.value
        a_op = float((coef[0] - wanted_db) / -coef[1])
        attenuator.check_attenuation_db(a_op)
    else:
        raise CalibrationError(KIND, "give the operating attenuation or the target photons per symbol")

    attenuator.set_attenuation_db(a_op)
    m_op, m_op_u = _average(monitor_meter, n)
    m_op, m_op_u = m_op - dark_mon, math.hypot(m_op_u, dark_mon_u)
    ratio_db = coef[0] + coef[1] * a_op
    ratio_db_u = math.sqrt(max(np.array([1.0, a_op]) @ cov @ np.array([1.0, a_op]), 0.0))
    power_out_w = m_op * 10 ** ((ratio_db - s.fixed_attenuation_db.value) / 10.0)
    mu = float(photons_per_symbol(power_out_w, s.symbol_rate_hz, s.wavelength_m))

    budget = {  # relative one-sigma terms
        "monitor_reading": m_op_u / m_op,
        "ratio_regression": LN10_OVER_10 * ratio_db_u,
        "meter_calibration_declared": s.meter_relative_uncertainty,
        "fixed_attenuation_declared": LN10_OVER_10 * s.fixed_attenuation_db.uncertainty,
    }
    u_rel = math.sqrt(sum(v**2 for v in budget.values()))
    parameters = {
        KEY: Estimate(mu, mu * u_rel, "photons"),
        "server.output_power_w": Estimate(float(power_out_w), float(power_out_w * u_rel), "W"),
        "server.monitor_to_voa_output_db": Estimate(float(coef[0]), math.sqrt(cov[0, 0]), "dB"),
        "server.attenuator_scale": Estimate(float(-coef[1]), math.sqrt(cov[1, 1]), "dB/dB"),
        "server.photons_per_monitor_w": Estimate(mu / m_op, mu / m_op * math.sqrt(u_rel**2 - budget["monitor_reading"]**2),
                                                 "photons/W"),
    }
    conditions = {"laser_power_dbm": s.laser_power_dbm, "attenuation_db": a_op, "symbol_rate_hz": s.symbol_rate_hz,
                  "wavelength_m": s.wavelength_m, "fixed_attenuation_db": s.fixed_attenuation_db.value,
                  "fixed_attenuation_uncertainty_db": s.fixed_attenuation_db.uncertainty,
                  "readings_per_point": n, "averaging_time_s": s.averaging_time_s,
                  "dark_monitor_w": dark_mon, "dark_output_w": dark_out, "fit_reduced_chi2": chi2_red,
                  "uncertainty_budget_relative": budget, "target_photons": s.target_photons, **s.extra}
    raw = {"sweep_attenuation_db": np.asarray(sweep), "monitor_w": mon, "monitor_u_w": mon_u, "output_w": out,
           "output_u_w": out_u, "ratio_db": y, "ratio_u_db": y_u}
    if figure_path:
        draw(_plot, figure_path, np.asarray(sweep), y, y_u, coef, a_op, mu, mu * u_rel)
    return CalibrationResult(KIND, "server_output", parameters, raw, conditions, figure_path)


def _weighted_line(x, y, sigma):
    """y = c0 + c1 x by weighted least squares; covariance scaled by the reduced chi^2 when it exceeds 1."""
    design = np.column_stack([np.ones_like(x), x])
    w = 1.0 / np.maximum(sigma, 1e-300) ** 2
    normal = design.T @ (design * w[:, None])
    cov = np.linalg.inv(normal)
    coef = cov @ (design.T @ (w * y))
    dof = max(len(x) - 2, 1)
    chi2_red = float(np.sum(w * (y - design @ coef) ** 2) / dof)
    return coef, cov * max(chi2_red, 1.0), chi2_red


def _plot(path, sweep, y, y_u, coef, a_op, mu, mu_u) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(sweep, y, yerr=y_u, fmt="o", label="VOA output / monitor (dark subtracted)")
    grid = np.linspace(min(sweep.min(), a_op), max(sweep.max(), a_op), 50)
    ax.plot(grid, coef[0] + coef[1] * grid, "-", label=f"fit: {coef[0]:.3f} dB {coef[1]:+.4f} A")
    ax.axvline(a_op, color="k", ls=":", label=f"operating A = {a_op:.2f} dB: mu = {mu:.4g} +- {mu_u:.2g}")
    ax.set_xlabel("attenuator setting A (dB)")
    ax.set_ylabel("10 log10(P_out / P_mon) (dB)")
    ax.legend(fontsize=8)
    save_tight(fig, path)
    plt.close(fig)

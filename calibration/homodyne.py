"""Homodyne receiver calibration (leakage_math.md 3.1-3.2): electronic noise, shot-noise linearity, SNU, efficiency.

Procedure, for both receivers at once (one digitizer acquisition reads both channels):
1. signal off: the attenuator's shutter closed and the client's amplifier output off, so both
   detectors see vacuum in the signal port (the amplifier's ASE would otherwise add noise);
2. laser off (the LOs are shares of the server laser): the dark record -> electronic noise V_el;
3. laser at each power of a sweep (LO power = lo_fraction x laser power): V_tot(P_LO);
4. the same DSP as the data (analysis.dsp.matched_filter with the receiver's template) gives
   V(P) = V_el + k P + k2 P^2, fitted by weighted least squares with every variance's Gaussian
   uncertainty Var x sqrt(2/(n-1)) -> slope k, quadratic term k2 (LO excess noise, should be 0),
   SNU = k P + k2 P^2 at the operating LO, v_el = V_el/SNU, clearance 10 log10(V_tot/V_el).

Efficiency, by the shot-noise-level ("responsivity") method: a detector of conversion gain G_det
(V per W of difference power, its low-frequency gain) and efficiency eta turns an LO of power P
into white shot noise of two-sided density G_det^2 h nu P / eta, i.e. a per-sample variance
G_det^2 h nu P f_s / eta before its low-pass. The low-frequency (long-run) variance of the
digitized record, sum of its autocovariances over +-L lags, is that white level whatever the
filter's shape (its DC gain is 1), so the slope s of the long-run variance against P gives
eta = G_det^2 h nu f_s / s. Why not a known coherent state: on this station the signal reaches
either receiver only through the channel, the client's amplifier and coupler (client) or the
whole round trip (server), whose transmittances are not known independently of eta; and the
photocurrent-sum responsivity method needs DC photocurrents, which the analog detector does not
expose. The price: eta relies on the datasheet G_det and on the absolute LO power (laser set
power x lo_fraction); both enter as declared systematics. CMRR needs an LO intensity tone, which
the station cannot make; it is not measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from analysis import dsp
from analysis.units import dbm_to_w, photon_energy_j
from calibration.result import CalibrationError, CalibrationResult, Estimate

KIND = "homodyne"
LN10_OVER_10 = math.log(10.0) / 10.0


class Digitizer(Protocol):
    """What the procedure needs from the digitizer that reads the receivers."""

    def configure(self, *, points: int, sample_rate_hz: float, ranges_v: dict[str, float]) -> float:
        """Set points, rate and each receiver's channel range (V, full 8 divisions); return the actual rate."""

    def acquire(self) -> dict[str, np.ndarray]:
        """One acquisition; samples in volts per receiver name."""


@dataclass(frozen=True)
class HomodyneSettings:
    symbol_rate_hz: float
    wavelength_m: float = 1550e-9
    laser_powers_dbm: tuple[float, ...] = (6.0, 8.0, 10.0, 12.0)  # LO sweep (via the laser; N7714A: 6..15 dBm)
    operating_laser_power_dbm: float = 10.0
    reference_lo_power_w: float = 1e-3          # where electronic_noise_snu is quoted (as in the bench table)
    samples_per_symbol: int = 8
    points: int = 2**21
    template: tuple[float, ...] | None = None   # matched-filter template (None: rect over one symbol)
    offset_samples: int = 0
    lag_samples: int | None = None              # long-run variance lags (None: 4 symbols)
    segments: int = 16                          # record split for the long-run variance scatter
    lowest_efficiency: float = 0.3              # sets the digitizer range: no clipping down to this eta
    lo_power_uncertainty_db: float = 0.1        # declared: absolute LO power scale (laser set-power accuracy, lo_fraction)
    detector_gain_relative_uncertainty: float = 0.003  # declared: G_det (datasheet / DC calibration)
    max_quadratic_sigma: float = 5.0            # a k2 beyond this many sigma is reported in the conditions


def _safe(laser, attenuator, amplifier) -> None:
    for action in (laser.off, attenuator.close_shutter, *( [amplifier.off] if amplifier is not None else [])):
        try:
            action()
        except Exception:  # noqa: BLE001 - the station's close makes everything safe again
            pass


def calibrate_homodyne(laser, attenuator, amplifier, digitizer: Digitizer, receivers, settings: HomodyneSettings,
                       figure_dir: str | None = None) -> list[CalibrationResult]:
    """One CalibrationResult per receiver; the laser is off, shutter closed, amplifier off afterwards."""
    try:
        records, rate, lo_w, ranges = _acquire(laser, attenuator, amplifier, digitizer, receivers, settings)
        return [_analyse(rx, records[rx.name], rate, lo_w, ranges[rx.name], settings, figure_dir) for rx in receivers]
    except CalibrationError:
        raise
    except Exception as error:  # noqa: BLE001 - one line naming the calibration
        raise CalibrationError(KIND, f"{type(error).__name__}: {error}") from None
    finally:
        _safe(laser, attenuator, amplifier)


def _acquire(laser, attenuator, amplifier, digitizer, receivers, s: HomodyneSettings):
    sps = int(s.samples_per_symbol)
    powers_dbm = sorted(float(p) for p in s.laser_powers_dbm)
    if s.operating_laser_power_dbm not in powers_dbm:
        powers_dbm = sorted(powers_dbm + [float(s.operating_laser_power_dbm)])
    if len(powers_dbm) < 3:
        raise CalibrationError(KIND, f"the LO sweep needs >= 3 laser powers, got {powers_dbm}")
    for p in powers_dbm:
        laser.check_power_dbm(p)
    rate_wanted = sps * s.symbol_rate_hz
    ranges = {}
    for rx in receivers:
        lo_max = rx.lo_fraction * float(dbm_to_w(max(powers_dbm)))
        rx.check_lo_power_w(lo_max)
        rms = rx.detector.gain_v_per_w * math.sqrt(lo_max * float(photon_energy_j(s.wavelength_m)) * rate_wanted
                                                   / s.lowest_efficiency)
        ranges[rx.name] = 2.0 * 6.0 * rms  # full scale (half the range) = 6 sigma of the largest record
    if amplifier is not None:
        amplifier.off()
    attenuator.close_shutter()
    laser.off()
    laser.set_wavelength_m(s.wavelength_m)
    rate = digitizer.configure(points=int(s.points), sample_rate_hz=rate_wanted, ranges_v=ranges)
    if abs(rate / s.symbol_rate_hz - sps) > 1e-6 * sps:
        raise CalibrationError(KIND, f"the digitizer runs at {rate:g} Sa/s, not {sps} samples per symbol")
    records = {rx.name: [] for rx in receivers}
    lo_w = [0.0]
    for name, samples in digitizer.acquire().items():
        if name in records:
            records[name].append(samples)
    for p in powers_dbm:
        laser.set_power_dbm(p)
        laser.on()
        for name, samples in digitizer.acquire().items():
            if name in records:
                records[name].append(samples)
        lo_w.append(float(dbm_to_w(p)))
    laser.off()
    return records, rate, np.asarray(lo_w), ranges


def long_run_variance(samples, lags: int) -> float:
    """sum_{|d| <= L} autocovariance(d): the white level before a unit-DC-gain filter (per sample)."""
    x = np.asarray(samples, dtype=float)
    x = x - x.mean()
    n = x.size
    total = float(x @ x) / n
    for d in range(1, lags + 1):
        total += 2.0 * float(x[:-d] @ x[d:]) / n
    return total


def _analyse(rx, records, rate_hz, laser_w, range_v, s: HomodyneSettings, figure_dir):
    sps = int(s.samples_per_symbol)
    template = np.ones(sps) if s.template is None else np.asarray(s.template, dtype=float)
    lags = int(s.lag_samples or 4 * sps)
    lo_w = rx.lo_fraction * np.asarray(laser_w)
    bits = rx.adc_bits or 10
    mf_var, mf_u, lrv, lrv_u, seg_lrv = [], [], [], [], []
    for samples in records:
        try:
            dsp.check_clipping(samples, 0.5 * range_v, bits)
        except dsp.ClippingError as error:
            raise CalibrationError(KIND, f"{rx.name}: {error}") from None
        out = dsp.matched_filter(samples, template, sps, s.offset_samples).ravel()
        v = float(np.var(out, ddof=1))
        mf_var.append(v), mf_u.append(v * math.sqrt(2.0 / (out.size - 1)))
        segments = np.array_split(samples, s.segments)
        per = np.array([long_run_variance(seg, lags) for seg in segments])
        seg_lrv.append(per)
        lrv.append(float(per.mean())), lrv_u.append(float(per.std(ddof=1) / math.sqrt(per.size)))
    mf_var, mf_u, lrv, lrv_u = map(np.asarray, (mf_var, mf_u, lrv, lrv_u))

    v_el, v_el_u = mf_var[0], mf_u[0]
    if v_el <= 0:
        raise CalibrationError(KIND, f"{rx.name}: the dark record is flat (0 V^2): is the digitizer channel connected?")
    excess = (mf_var[1:] - v_el) / np.hypot(mf_u[1:], v_el_u)
    if np.max(excess) < 10.0:
        raise CalibrationError(KIND, f"{rx.name}: no shot noise above the electronic noise (at most {np.max(excess):.1f} "
                                     "sigma): the LO is missing (laser off or not emitting?)")
    coef, cov, chi2 = _weighted_poly(lo_w, mf_var, mf_u, 3)
    k, k2 = coef[1], coef[2]
    if k <= 0:
        raise CalibrationError(KIND, f"{rx.name}: shot noise does not grow with LO power (slope {k:.3g} V^2/W)")
    p_op = rx.lo_fraction * float(dbm_to_w(s.operating_laser_power_dbm))
    grad_op = np.array([0.0, p_op, p_op**2])
    snu = float(grad_op @ coef)
    snu_u = math.sqrt(float(grad_op @ cov @ grad_op))
    # v_el = c0 / (c1 P + c2 P^2): gradient propagation through the fit covariance
    def v_el_at(p):
        g = np.array([0.0, p, p**2])
        sh = float(g @ coef)
        value = coef[0] / sh
        grad = np.array([1.0 / sh, -coef[0] * p / sh**2, -coef[0] * p**2 / sh**2])
        return value, math.sqrt(float(grad @ cov @ grad))
    vel_op, vel_op_u = v_el_at(p_op)
    vel_ref, vel_ref_stat = v_el_at(s.reference_lo_power_w)
    lo_rel = LN10_OVER_10 * s.lo_power_uncertainty_db
    vel_ref_u = math.hypot(vel_ref_stat, vel_ref * lo_rel)
    total_op = v_el + snu
    clearance = 10.0 * math.log10(total_op / v_el)
    clearance_u = 10.0 / math.log(10.0) * math.hypot(snu_u / total_op, v_el_u * snu / (v_el * total_op))

    lcoef, lcov, lchi2 = _weighted_poly(lo_w, lrv, lrv_u, 3)
    slope, slope_u = lcoef[1], math.sqrt(lcov[1, 1])
    if slope <= 0:
        raise CalibrationError(KIND, f"{rx.name}: the long-run variance does not grow with LO power")
    gain = rx.detector.gain_v_per_w
    eta = gain**2 * float(photon_energy_j(s.wavelength_m)) * rate_hz / slope
    eta_budget = {"shot_noise_slope": slope_u / slope, "lo_power_declared": lo_rel,
                  "detector_gain_declared": 2.0 * s.detector_gain_relative_uncertainty}
    eta_u = eta * math.sqrt(sum(v**2 for v in eta_budget.values()))
    if not 0.0 < eta <= 1.0 + 3 * eta_u / max(eta, 1e-12):
        raise CalibrationError(KIND, f"{rx.name}: efficiency {eta:.3g} is unphysical: check the detector gain "
                                     f"({gain:g} V/W) and lo_fraction ({rx.lo_fraction:g}) in the config")

    name = rx.name
    parameters = {
        f"{name}.efficiency": Estimate(eta, eta_u, ""),
        f"{name}.electronic_noise_snu": Estimate(vel_ref, vel_ref_u, "SNU"),
        f"{name}.electronic_noise_snu_at_operating_lo": Estimate(vel_op, vel_op_u, "SNU"),
        f"{name}.shot_noise_variance_v2": Estimate(snu, snu_u, "V^2"),
        f"{name}.electronic_noise_variance_v2": Estimate(float(v_el), float(v_el_u), "V^2"),
        f"{name}.shot_noise_slope_v2_per_w": Estimate(float(k), math.sqrt(cov[1, 1]), "V^2/W"),
        f"{name}.shot_noise_quadratic_v2_per_w2": Estimate(float(k2), math.sqrt(cov[2, 2]), "V^2/W^2"),
        f"{name}.clearance_db": Estimate(clearance, clearance_u, "dB"),
    }
    conditions = {
        "receiver": name, "operating_laser_power_dbm": s.operating_laser_power_dbm, "operating_lo_power_w": p_op,
        "lo_fraction": rx.lo_fraction, "reference_lo_power_w": s.reference_lo_power_w,
        "laser_powers_dbm": [float(10 * math.log10(p / 1e-3)) for p in laser_w[1:]],
        "sample_rate_hz": rate_hz, "samples_per_symbol": sps, "offset_samples": s.offset_samples,
        "points": int(s.points), "range_v": range_v, "adc_bits": bits, "lag_samples": lags,
        "segments": s.segments, "detector_gain_v_per_w": gain, "wavelength_m": s.wavelength_m,
        "signal": "attenuator shutter closed, client amplifier off", "fit_reduced_chi2": chi2,
        "long_run_fit_reduced_chi2": lchi2, "efficiency_method": "shot-noise level (long-run variance slope)",
        "efficiency_budget_relative": eta_budget,
        "quadratic_term_significant": bool(abs(k2) > s.max_quadratic_sigma * math.sqrt(cov[2, 2])),
        "cmrr": "not measured (needs an LO intensity tone)",
    }
    raw = {"lo_power_w": lo_w, "mf_variance_v2": mf_var, "mf_variance_u_v2": mf_u, "long_run_variance_v2": lrv,
           "long_run_variance_u_v2": lrv_u, "segment_long_run_variance_v2": np.array(seg_lrv),
           "template": template, "dark_samples_v_head": np.asarray(records[0][:65536], dtype=np.float32),
           "operating_samples_v_head": np.asarray(records[-1][:65536], dtype=np.float32)}
    figure = None
    if figure_dir:
        from pathlib import Path

        figure = str(Path(figure_dir) / f"homodyne-{name}.png")
        _plot(figure, name, lo_w, mf_var, mf_u, coef, lrv, lrv_u, lcoef, eta, eta_u, vel_op, clearance)
    return CalibrationResult(KIND, name, parameters, raw, conditions, figure)


def _weighted_poly(x, y, sigma, n_coef: int):
    """y = sum c_j x^j by weighted least squares; covariance scaled by the reduced chi^2 when above 1."""
    x, y, sigma = (np.asarray(a, dtype=float) for a in (x, y, sigma))
    scale = float(np.max(np.abs(x))) or 1.0
    design = np.column_stack([(x / scale) ** j for j in range(n_coef)])
    w = 1.0 / np.maximum(sigma, 1e-300) ** 2
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = cov @ (design.T @ (w * y))
    dof = max(len(x) - n_coef, 1)
    chi2 = float(np.sum(w * (y - design @ coef) ** 2) / dof)
    unscale = np.array([scale ** -j for j in range(n_coef)])
    return coef * unscale, cov * np.outer(unscale, unscale) * max(chi2, 1.0), chi2


def _plot(path, name, lo_w, mf_var, mf_u, coef, lrv, lrv_u, lcoef, eta, eta_u, vel_op, clearance) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    grid = np.linspace(0, lo_w.max(), 100)
    for ax, y, u, c, label in ((axes[0], mf_var, mf_u, coef, "matched-filter variance"),
                               (axes[1], lrv, lrv_u, lcoef, "long-run variance per sample")):
        ax.errorbar(lo_w * 1e3, y, yerr=u, fmt="o", label=label)
        ax.plot(grid * 1e3, c[0] + c[1] * grid + c[2] * grid**2, "-", label="fit V_el + k P + k2 P^2")
        ax.set_ylabel("V^2")
        ax.legend(fontsize=8)
    axes[0].set_title(f"{name}: v_el = {vel_op:.4f} SNU at the operating LO, clearance {clearance:.1f} dB", fontsize=9)
    axes[1].set_title(f"efficiency {eta:.4f} +- {eta_u:.4f} (shot-noise level)", fontsize=9)
    axes[1].set_xlabel("LO power at the detector (mW)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def receiver_calibration(record):
    """The receiver role's ReceiverCalibration (1 SNU, v_el, template, timing) from a stored homodyne record."""
    from instruments.optical import ReceiverCalibration

    name, c = record.instrument, record.conditions
    return ReceiverCalibration(
        shot_noise_variance_v2=record.estimate(f"{name}.shot_noise_variance_v2").value,
        electronic_noise_snu=record.estimate(f"{name}.electronic_noise_snu_at_operating_lo").value,
        template=tuple(float(t) for t in record.raw["template"]), samples_per_symbol=int(c["samples_per_symbol"]),
        offset_samples=int(c["offset_samples"]), record_id=record.id)

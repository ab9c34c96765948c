"""Homodyne receiver calibration (docs/PHYSICS.md 14): electronic noise, shot-noise linearity, SNU, efficiency,
common-mode rejection.

Procedure, for both receivers at once (one digitizer acquisition reads both channels):
1. signal off: the attenuator's shutter closed and the client's amplifier output off, so both
   detectors see vacuum in the signal port (the amplifier's ASE would otherwise add noise);
2. laser off (the LOs are shares of the server laser): the dark record -> electronic noise V_el;
3. laser at each power of a sweep (LO power = lo_fraction x laser power): V_tot(P_LO);
4. the same DSP as the data (qslab.analysis.dsp.matched_filter with the receiver's template) gives
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
power x lo_fraction); both enter as declared systematics.

CMRR (the Koheron comparison with the LO's power steps as the tone, at DC): the LO cannot be
intensity-modulated here, but the sweep steps its power, and the detectors are DC-coupled. Each
diode sees P/2; alone one would output G_det P/2, the imbalanced pair outputs (G+ - G-) P/2, so the
records' means follow V_dc = V_0 + slope P with slope = +-G_det 10^(-CMRR/20)/2, and CMRR = 20
log10(G_det P/2 / (slope P)). The means are fitted by weighted least squares (each mean's error from
its record's long-run variance; the intercept is the electronics' offset); the budget is the
slope's statistics, the declared G_det and the declared LO power scale (the slope is per W of the
assumed LO). A slope within cmrr_limit_sigma of 0 reports the lower limit there instead (the
conditions say so). The channels are centred on each record's DC level (predicted from the records
so far, re-centred when a record clips) so the range stays set for the noise. The LO's RIN leaks
through the same imbalance as (G_det eps/2)^2 RIN P^2 f_s/2 per sample: the k2 term; with a declared
laser RIN (settings.laser_rin_db_per_hz) the conditions give the k2 the CMRR predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qslab.analysis import dsp
from qslab.analysis.estimate import Estimate
from qslab.analysis.figure_files import save_tight
from qslab.analysis.units import dbm_to_w, photon_energy_j
from qslab.calibration.figures import draw
from qslab.calibration.result import CalibrationError, CalibrationResult
from qslab.calibration.safety import guarded

KIND = "homodyne"
LN10_OVER_10 = math.log(10.0) / 10.0


class Digitizer(Protocol):
    """What the procedure needs from the digitizer that reads the receivers."""

    def configure(self, *, points: int, sample_rate_hz: float, ranges_v: dict[str, float]) -> float:
        """Set points, rate and each receiver's channel range (V, full 8 divisions); return the actual rate."""

    def acquire(self) -> dict[str, np.ndarray]:
        """One acquisition; samples in volts per receiver name."""

    def set_offsets(self, offsets_v: dict[str, float]) -> None:
        """Centre each receiver's channel on this voltage (its vertical offset; the samples stay absolute volts)."""


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
    cmrr_limit_sigma: float = 3.0               # a DC slope below this many sigma gives a CMRR lower limit only
    laser_rin_db_per_hz: float | None = None    # declared (datasheet) laser RIN: predicts k2 from the CMRR
    centring_attempts: int = 4                  # acquisitions per LO power at most, re-centring a clipped channel


def calibrate_homodyne(laser, attenuator, amplifier, digitizer: Digitizer, receivers, settings: HomodyneSettings,
                       figure_dir: str | None = None) -> list[CalibrationResult]:
    """One CalibrationResult per receiver; the laser is off, shutter closed, amplifier off afterwards."""
    def run() -> list[CalibrationResult]:
        records, rate, lo_w, ranges, offsets = _acquire(laser, attenuator, amplifier, digitizer, receivers, settings)
        return [_analyse(rx, records[rx.name], rate, lo_w, ranges[rx.name], offsets[rx.name], settings, figure_dir)
                for rx in receivers]

    steps = [(laser.off, "laser off"), (attenuator.close_shutter, "shutter closed")]
    if amplifier is not None:
        steps.append((amplifier.off, "amplifier off"))
    # the channels centred again at 0 V, as the other procedures and the session expect them
    steps.append((lambda: digitizer.set_offsets({rx.name: 0.0 for rx in receivers}), "digitizer offsets 0 V"))
    return guarded(KIND, run, steps)


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
    offsets = {rx.name: [0.0] for rx in receivers}
    laser_w = [0.0]
    digitizer.set_offsets({name: 0.0 for name in records})
    for name, samples in digitizer.acquire().items():
        if name in records:
            records[name].append(samples)
    for p in powers_dbm:
        laser.set_power_dbm(p)
        laser.on()
        laser_w.append(float(dbm_to_w(p)))
        # the DC-coupled outputs move with the LO (the unbalanced share): centre each channel on the DC level
        # the points so far predict (a line through the means), re-centre on a clipped record's mean and retake
        centre = {name: _predicted_dc_v(laser_w[:-1], [float(np.mean(r)) for r in records[name]], laser_w[-1])
                  for name in records}
        for _attempt in range(max(1, s.centring_attempts)):
            digitizer.set_offsets(centre)
            taken = {name: v for name, v in digitizer.acquire().items() if name in records}
            clipped = [rx.name for rx in receivers
                       if dsp.count_clipped(taken[rx.name] - centre[rx.name], 0.5 * ranges[rx.name], rx.adc_bits or 10)]
            if not clipped:
                break
            centre.update({name: float(np.mean(taken[name])) for name in clipped})
        for name in records:
            records[name].append(taken[name])
            offsets[name].append(centre[name])
    laser.off()
    return records, rate, np.asarray(laser_w), ranges, offsets


def _predicted_dc_v(laser_w, means_v, at_w: float) -> float:
    """The DC level expected at laser power at_w: a straight line through the records' means so far."""
    if len(means_v) < 2:
        return float(means_v[-1])
    slope, intercept = np.polyfit(np.asarray(laser_w, dtype=float), np.asarray(means_v, dtype=float), 1)
    return float(intercept + slope * at_w)


def long_run_variance(samples, lags: int) -> float:
    """sum_{|d| <= L} autocovariance(d): the white level before a unit-DC-gain filter (per sample)."""
    x = np.asarray(samples, dtype=float)
    x = x - x.mean()
    n = x.size
    # sum_{d=1..L} x[k] x[k+d] = x[k] ahead[k], ahead[k] = x[k+1] + ... + x[min(k+L, n-1)] from the running sum:
    # one pass instead of L dot products
    running = np.cumsum(x)
    ahead = np.empty(n)
    inner = max(n - lags, 0)
    np.subtract(running[lags:lags + inner], running[:inner], out=ahead[:inner])
    np.subtract(running[-1], running[inner:], out=ahead[inner:])
    return float(x @ x + 2.0 * (x @ ahead)) / n


def _analyse(rx, records, rate_hz, laser_w, range_v, offsets_v, s: HomodyneSettings, figure_dir):
    sps = int(s.samples_per_symbol)
    template = np.ones(sps) if s.template is None else np.asarray(s.template, dtype=float)
    lags = int(s.lag_samples or 4 * sps)
    lo_w = rx.lo_fraction * np.asarray(laser_w)
    bits = rx.adc_bits or 10
    mf_var, mf_u, lrv, lrv_u, seg_lrv, mean_v = [], [], [], [], [], []
    for samples, offset_v in zip(records, offsets_v):
        try:
            dsp.check_clipping(samples - offset_v, 0.5 * range_v, bits)
        except dsp.ClippingError as error:
            raise CalibrationError(KIND, f"{rx.name}: {error}") from None
        mean_v.append(float(np.mean(samples)))
        out = dsp.matched_filter(samples, template, sps, s.offset_samples).ravel()
        v = float(np.var(out, ddof=1))
        mf_var.append(v), mf_u.append(v * math.sqrt(2.0 / (out.size - 1)))
        segments = np.array_split(samples, s.segments)
        per = np.array([long_run_variance(seg, lags) for seg in segments])
        seg_lrv.append(per)
        lrv.append(float(per.mean())), lrv_u.append(float(per.std(ddof=1) / math.sqrt(per.size)))
    mf_var, mf_u, lrv, lrv_u, mean_v = map(np.asarray, (mf_var, mf_u, lrv, lrv_u, mean_v))
    mean_u = np.sqrt(lrv / np.array([r.size for r in records]))  # the mean of n samples: long-run variance / n

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

    cmrr = _common_mode_rejection(rx, lo_w, mean_v, mean_u, lo_rel, s)
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
        f"{name}.common_mode_rejection_db": cmrr.estimate_db,
        f"{name}.dc_offset_v": Estimate(cmrr.intercept_v, cmrr.intercept_u_v, "V"),
        f"{name}.dc_slope_v_per_w": Estimate(cmrr.slope_v_per_w, cmrr.slope_u_v_per_w, "V/W"),
    }
    k2_per_rin = cmrr.quadratic_per_rin(k / slope, gain, rate_hz)
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
        "cmrr": cmrr.method, "cmrr_is_lower_limit": cmrr.lower_limit, "cmrr_budget_db": cmrr.budget_db,
        "dc_fit_reduced_chi2": cmrr.reduced_chi2, "stronger_photodiode": "+" if cmrr.slope_v_per_w > 0 else "-",
        "quadratic_term_per_rin_v2_per_w2_hz": k2_per_rin,
        "quadratic_term_predicted_v2_per_w2": (None if s.laser_rin_db_per_hz is None
                                               else k2_per_rin * 10.0 ** (s.laser_rin_db_per_hz / 10.0)),
        "laser_rin_db_per_hz": s.laser_rin_db_per_hz,
    }
    raw = {"lo_power_w": lo_w, "mf_variance_v2": mf_var, "mf_variance_u_v2": mf_u, "long_run_variance_v2": lrv,
           "long_run_variance_u_v2": lrv_u, "segment_long_run_variance_v2": np.array(seg_lrv),
           "mean_v": mean_v, "mean_u_v": mean_u, "channel_offset_v": np.asarray(offsets_v, dtype=float),
           "template": template, "dark_samples_v_head": np.asarray(records[0][:65536], dtype=np.float32),
           "operating_samples_v_head": np.asarray(records[-1][:65536], dtype=np.float32)}
    figure = None
    if figure_dir:
        from pathlib import Path

        figure = str(Path(figure_dir) / f"homodyne-{name}.png")
        draw(_plot, figure, name, lo_w, mf_var, mf_u, coef, lrv, lrv_u, lcoef, eta, eta_u, vel_op, clearance, mean_v,
              mean_u, cmrr)
    return CalibrationResult(KIND, name, parameters, raw, conditions, figure)


@dataclass(frozen=True)
class CommonModeFit:
    """The records' means against P_LO: V_dc = intercept + slope P_LO, and the CMRR that slope means."""

    intercept_v: float
    intercept_u_v: float
    slope_v_per_w: float
    slope_u_v_per_w: float       # statistical (the fit's, scaled by its reduced chi^2 when above 1)
    reduced_chi2: float
    estimate_db: Estimate
    lower_limit: bool
    budget_db: dict
    method: str
    imbalance: float             # (G+ - G-)/G+ = 10^(-CMRR/20) at the estimate

    def quadratic_per_rin(self, k_over_long_run_slope: float, gain_v_per_w: float, rate_hz: float) -> float:
        """k2 per unit RIN (1/Hz): the LO's intensity noise through the imbalance, G eps delta P/2, white over
        f_s/2 before the detector's filter, so per sample (G eps/2)^2 RIN P^2 f_s/2; the matched filter scales
        it as it scales the (also white) shot noise: by k / (long-run slope)."""
        return float(k_over_long_run_slope * (gain_v_per_w * self.imbalance / 2.0) ** 2 * rate_hz / 2.0)


def _common_mode_rejection(rx, lo_w, mean_v, mean_u, lo_rel: float, s: HomodyneSettings) -> CommonModeFit:
    """CMRR from the DC level against the LO power (docs/PHYSICS.md 14, the Koheron comparison with the
    LO's power steps as the tone): one diode alone would give G (P/2), the balanced pair gives slope x P,
    so CMRR = 20 log10(G / (2 |slope|)). The budget: the slope's statistics, the declared G_det and the
    declared LO power scale (the slope is per W of the assumed LO power). A slope within cmrr_limit_sigma
    of 0 gives the lower limit at |slope| + cmrr_limit_sigma sigma instead."""
    coef, cov, chi2 = _weighted_poly(lo_w, mean_v, mean_u, 2)
    slope, slope_u = float(coef[1]), math.sqrt(float(cov[1, 1]))
    gain = rx.detector.gain_v_per_w
    db = 20.0 / math.log(10.0)
    significant = abs(slope) > s.cmrr_limit_sigma * slope_u
    systematic = {"detector_gain_declared": db * s.detector_gain_relative_uncertainty, "lo_power_declared": db * lo_rel}
    if significant:
        value = db * math.log(gain / (2.0 * abs(slope)))
        budget = {"dc_slope": db * slope_u / abs(slope), **systematic}
        method = "DC level vs LO power (the laser sweep's power steps as the LO intensity tone)"
    else:
        value = db * math.log(gain / (2.0 * (abs(slope) + s.cmrr_limit_sigma * slope_u)))
        budget = systematic
        method = (f"lower limit: the DC level does not follow the LO power ({abs(slope) / slope_u:.1f} sigma); the "
                  f"value is the CMRR at |slope| + {s.cmrr_limit_sigma:g} sigma")
    u = math.sqrt(sum(v**2 for v in budget.values()))
    return CommonModeFit(float(coef[0]), math.sqrt(float(cov[0, 0])), slope, slope_u, chi2, Estimate(value, u, "dB"),
                         not significant, budget, method, 10.0 ** (-value / 20.0))


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


def _plot(path, name, lo_w, mf_var, mf_u, coef, lrv, lrv_u, lcoef, eta, eta_u, vel_op, clearance, mean_v, mean_u,
          cmrr: CommonModeFit) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(6, 8.5), sharex=True)
    grid = np.linspace(0, lo_w.max(), 100)
    for ax, y, u, c, label in ((axes[0], mf_var, mf_u, coef, "matched-filter variance"),
                               (axes[1], lrv, lrv_u, lcoef, "long-run variance per sample")):
        ax.errorbar(lo_w * 1e3, y, yerr=u, fmt="o", label=label)
        ax.plot(grid * 1e3, c[0] + c[1] * grid + c[2] * grid**2, "-", label="fit V_el + k P + k2 P^2")
        ax.set_ylabel("V^2")
        ax.legend(fontsize=8)
    axes[0].set_title(f"{name}: v_el = {vel_op:.4f} SNU at the operating LO, clearance {clearance:.1f} dB", fontsize=9)
    axes[1].set_title(f"efficiency {eta:.4f} +- {eta_u:.4f} (shot-noise level)", fontsize=9)
    axes[2].errorbar(lo_w * 1e3, mean_v * 1e3, yerr=mean_u * 1e3, fmt="o", label="record mean (DC level)")
    axes[2].plot(grid * 1e3, (cmrr.intercept_v + cmrr.slope_v_per_w * grid) * 1e3, "-",
                 label="fit V_dc = offset + slope P")
    axes[2].set_ylabel("mV")
    axes[2].legend(fontsize=8)
    c = cmrr.estimate_db
    axes[2].set_title(f"CMRR {'>= ' if cmrr.lower_limit else ''}{c.value:.2f} +- {c.uncertainty:.2f} dB "
                      f"(slope {cmrr.slope_v_per_w:.4g} V/W, offset {cmrr.intercept_v * 1e3:.3f} mV)", fontsize=9)
    axes[2].set_xlabel("LO power at the detector (mW)")
    save_tight(fig, path)
    plt.close(fig)


def receiver_calibration(record):
    """The receiver role's ReceiverCalibration (1 SNU, v_el, template, timing) from a stored homodyne record."""
    from qslab.instruments.optical import ReceiverCalibration

    name, c = record.instrument, record.conditions
    dc = {f: record.estimate(f"{name}.{f}").value for f in ("dc_offset_v", "dc_slope_v_per_w")
          if f"{name}.{f}" in record.parameters}  # records from before the CMRR have none
    return ReceiverCalibration(
        shot_noise_variance_v2=record.estimate(f"{name}.shot_noise_variance_v2").value,
        electronic_noise_snu=record.estimate(f"{name}.electronic_noise_snu_at_operating_lo").value,
        template=tuple(float(t) for t in record.raw["template"]), samples_per_symbol=int(c["samples_per_symbol"]),
        offset_samples=int(c["offset_samples"]), record_id=record.id, **dc)

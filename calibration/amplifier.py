"""The client amplifier's gain and noise figure, measured through the client's homodyne receiver.

Why this way: no meter sits before and after the client's amplifier, but its receiver sees both what
the gain does to a signal and what it adds as noise (qslab.analysis.client_measurement):

- signal: with a steady coherent carrier from the server (shutter open, AWG idle), the client's
  mean quadrature is <X> = 2 sqrt(eta (G - 1) T_f t) Re(alpha); everything but G cancels in ratios
  over a sweep of set gains, so <X>_i = A sqrt(g G_set,i - 1) fits the true-over-set gain factor g
  (and A). The low-gain points make this sensitive: near G = 1 the mean grows like sqrt(G - 1);
- noise: with the shutter closed (vacuum in), the excess quadrature variance over the amplifier-off
  vacuum is eta (G - 1)(G NF - 1)/G in SNU (NF linear), so NF follows per gain given eta (from the
  homodyne record) and is averaged over the sweep. The variance is the long-run (low-frequency) one
  per sample, which sees the whole excess whatever the detector's filter.

Every quadrature goes through the same DSP as the data (qslab.analysis.dsp.matched_filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qslab.analysis import dsp
from qslab.analysis.estimate import Estimate
from qslab.analysis.figure_files import save_tight
from qslab.analysis.units import dbm_to_w, linear_to_db, photon_energy_j
from qslab.calibration.figures import draw
from qslab.calibration.homodyne import long_run_variance
from qslab.calibration.result import CalibrationError, CalibrationResult
from qslab.calibration.safety import guarded

KIND = "amplifier"


@dataclass(frozen=True)
class AmplifierSettings:
    symbol_rate_hz: float
    operating_gain: float                        # the set gain (linear) the result is quoted at
    efficiency: Estimate                         # the client receiver's efficiency (homodyne record)
    set_gains: tuple[float, ...] = (1.1, 1.3, 1.6, 1.95)
    laser_power_dbm: float = 10.0
    attenuation_db: float = 20.0                 # a bright carrier: the mean stands far out of the noise
    wavelength_m: float = 1550e-9
    samples_per_symbol: int = 8
    points: int = 2**18
    range_v: float | None = None                 # None: 12 sigma of the noisiest record, from the detector spec
    min_signal_sigma: float = 50.0               # the carrier's mean must exceed this many standard errors
    gain_repeatability_db: float = 0.01          # declared: how well the amplifier reproduces a set gain


def calibrate_amplifier(laser, attenuator, amplifier, digitizer, receiver, settings: AmplifierSettings,
                        figure_path: str | None = None) -> CalibrationResult:
    """Gain (at the operating set gain), true/set gain offset and noise figure; everything off afterwards."""
    steps = [(amplifier.off, "amplifier off"), (laser.off, "laser off"), (attenuator.close_shutter, "shutter closed"),
             # the channel centred at 0 V again, as the other procedures and the session expect it
             (lambda: digitizer.set_offsets({receiver.name: 0.0}), "digitizer offset 0 V")]
    return guarded(KIND, lambda: _measure(laser, attenuator, amplifier, digitizer, receiver, settings, figure_path),
                   steps)


CENTRING_ATTEMPTS = 4  # acquisitions at most per record: a clipped one moves the channel's offset to its mean


def _acquire_centred(digitizer, name: str, range_v: float, bits: int, centre_v: float) -> tuple[np.ndarray, float]:
    """One record with the channel centred on the receiver's DC level (the DC-coupled output sits on its LO's
    unbalanced share, about as large as the range); (samples in absolute volts, the offset they were taken at)."""
    for _ in range(CENTRING_ATTEMPTS):
        offset_v = centre_v
        digitizer.set_offsets({name: offset_v})
        samples = digitizer.acquire()[name]
        if not dsp.count_clipped(samples - offset_v, 0.5 * range_v, bits):
            break
        centre_v = float(np.mean(samples))
    return samples, offset_v


def _stats(samples, template, sps, range_v, bits, segments: int = 32, offset_v: float = 0.0):
    """Matched-filter mean (and its standard error), and the long-run variance per sample (and its error).

    The long-run variance, not the matched-filter variance, measures the excess noise: the amplifier adds
    it in the symbol's temporal mode, and the low-frequency level sees all of it whatever the filter
    (the matched filter with a rect template would lose the part the detector's filter moves out)."""
    try:
        dsp.check_clipping(samples - offset_v, 0.5 * range_v, bits)
    except dsp.ClippingError as error:
        raise CalibrationError(KIND, f"{error}") from None
    x = dsp.matched_filter(samples, template, sps).ravel()
    means = np.array([seg.mean() for seg in np.array_split(x, segments)])  # scatter: honest with correlated outputs
    per = np.array([long_run_variance(seg, 4 * sps) for seg in np.array_split(samples, segments)])
    root = math.sqrt(segments)
    return float(np.mean(x)), float(means.std(ddof=1) / root), float(per.mean()), float(per.std(ddof=1) / root)


def _measure(laser, attenuator, amplifier, digitizer, rx, s: AmplifierSettings, figure_path):
    sps = int(s.samples_per_symbol)
    gains = sorted(float(g) for g in s.set_gains)
    if s.operating_gain not in gains:
        gains = sorted(gains + [float(s.operating_gain)])
    if len(gains) < 3 or gains[0] <= 1.0:
        raise CalibrationError(KIND, f"the gain sweep needs >= 3 set gains above 1, got {gains}")
    for g in gains:
        amplifier.check_gain_db(float(linear_to_db(g)))
    laser.check_power_dbm(s.laser_power_dbm)
    attenuator.check_attenuation_db(s.attenuation_db)
    lo_w = rx.lo_fraction * float(dbm_to_w(s.laser_power_dbm))
    rx.check_lo_power_w(lo_w)
    shot_rms = rx.detector.gain_v_per_w * math.sqrt(lo_w * float(photon_energy_j(s.wavelength_m)) * sps
                                                    * s.symbol_rate_hz / 0.3)
    range_v = s.range_v or 2.0 * 12.0 * shot_rms  # room for the carrier's mean and the ASE
    rate = digitizer.configure(points=int(s.points), sample_rate_hz=sps * s.symbol_rate_hz, ranges_v={rx.name: range_v})
    if abs(rate / s.symbol_rate_hz - sps) > 1e-6 * sps:
        raise CalibrationError(KIND, f"the digitizer runs at {rate:g} Sa/s, not {sps} samples per symbol")
    template, bits = np.ones(sps), rx.adc_bits or 10

    amplifier.off()
    attenuator.close_shutter()
    laser.off()
    samples, centre_v = _acquire_centred(digitizer, rx.name, range_v, bits, 0.0)
    _, _, v_el, v_el_u = _stats(samples, template, sps, range_v, bits, offset_v=centre_v)
    laser.set_power_dbm(s.laser_power_dbm)
    laser.on()
    samples, centre_v = _acquire_centred(digitizer, rx.name, range_v, bits, centre_v)
    _, _, v_vac, v_vac_u = _stats(samples, template, sps, range_v, bits, offset_v=centre_v)
    if v_vac - v_el < 10 * math.hypot(v_vac_u, v_el_u):
        raise CalibrationError(KIND, "no shot noise on the client receiver: the LO is missing (laser off?)")
    snu = v_vac - v_el
    attenuator.set_attenuation_db(s.attenuation_db)
    means, means_u, excess, excess_u = [], [], [], []
    for g in gains:
        amplifier.set_gain(g)
        amplifier.on()
        attenuator.close_shutter()
        samples, centre_v = _acquire_centred(digitizer, rx.name, range_v, bits, centre_v)
        dc, dc_u, v, v_u = _stats(samples, template, sps, range_v, bits, offset_v=centre_v)
        excess.append((v - v_vac) / snu), excess_u.append(math.hypot(v_u, v_vac_u) / snu)
        attenuator.open_shutter()
        samples, offset_v = _acquire_centred(digitizer, rx.name, range_v, bits, centre_v)
        m, m_u, _, _ = _stats(samples, template, sps, range_v, bits, offset_v=offset_v)
        # the carrier's quadrature over the receiver's DC level (the DC-coupled output with the shutter closed)
        means.append(m - dc), means_u.append(math.hypot(m_u, dc_u))
    amplifier.off()
    laser.off()
    attenuator.close_shutter()
    means, means_u, excess, excess_u, set_g = map(np.asarray, (means, means_u, excess, excess_u, gains))
    sign = np.sign(np.mean(means))
    means = sign * means
    if np.min(means) < s.min_signal_sigma * np.max(means_u):
        raise CalibrationError(KIND, f"no carrier at the client receiver (mean {np.min(means):.3g} V against a "
                                     f"standard error of {np.max(means_u):.2g} V): is the shutter open, the IQ "
                                     "modulator passing light with a non-zero in-phase part?")

    model = _carrier_amplitude
    amplitude, factor, cov, chi2 = fit_gain(set_g, means, means_u)
    factor_u = math.sqrt(cov[1, 1])
    if not np.isfinite(factor_u) or factor_u > 0.2 * factor:
        raise CalibrationError(KIND, f"the gain fit is not constrained (true/set factor {factor:.3g} +- {factor_u:.2g})")
    gain_op = factor * s.operating_gain
    repeat_rel = math.log(10.0) / 10.0 * s.gain_repeatability_db
    gain_op_u = gain_op * math.hypot(factor_u / factor, repeat_rel)

    # NF per gain from the vacuum-input excess: eta (G - 1)(G NF - 1)/G, with G = factor x set gain
    true_g = factor * set_g
    eta = s.efficiency
    nf_lin = (excess * true_g / (eta.value * (true_g - 1.0)) + 1.0) / true_g
    nf_stat_u = excess_u / (eta.value * (true_g - 1.0))          # independent per gain
    weights = 1.0 / nf_stat_u**2
    nf_mean = float(np.sum(weights * nf_lin) / np.sum(weights))
    eta_part = float(np.sum(weights * (nf_lin - 1.0 / true_g)) / np.sum(weights)) * eta.uncertainty / eta.value
    nf_u = math.hypot(1.0 / math.sqrt(float(np.sum(weights))), eta_part)  # eta's error is common: not averaged down
    nf_stat = nf_mean
    nf_db = float(linear_to_db(nf_stat))
    nf_db_u = 10.0 / math.log(10.0) * nf_u / nf_stat

    parameters = {
        "client_amplifier.gain": Estimate(float(gain_op), float(gain_op_u), ""),
        "client_amplifier.gain_offset_db": Estimate(float(linear_to_db(factor)),
                                                    math.hypot(10 / math.log(10) * factor_u / factor,
                                                               s.gain_repeatability_db), "dB"),
        "client_amplifier.noise_figure_db": Estimate(nf_db, nf_db_u, "dB"),
    }
    conditions = {"operating_set_gain": s.operating_gain, "set_gains": gains, "laser_power_dbm": s.laser_power_dbm,
                  "attenuation_db": s.attenuation_db, "gain_repeatability_db": s.gain_repeatability_db,
                  "gain_fit_relative_uncertainty": factor_u / factor, "efficiency_used": [eta.value, eta.uncertainty],
                  "samples_per_symbol": sps, "sample_rate_hz": rate, "points": int(s.points), "range_v": range_v,
                  "fit_reduced_chi2": chi2,
                  "signal": "steady carrier (AWG idle) for the gain; shutter closed (vacuum) for the noise figure"}
    raw = {"set_gain": set_g, "mean_v": means, "mean_u_v": means_u, "excess_snu": excess, "excess_u_snu": excess_u,
           "noise_figure_linear": nf_lin, "electronic_and_vacuum_v2": np.array([v_el, v_vac])}
    if figure_path:
        draw(_plot, figure_path, set_g, means, means_u, model, amplitude, factor, excess, excess_u, gain_op, gain_op_u, nf_db)
    return CalibrationResult(KIND, "client_amplifier", parameters, raw, conditions, figure_path)


def fit_gain(set_gains, means_v, means_u_v) -> tuple[float, float, np.ndarray, float]:
    """(A, g, covariance, reduced chi^2) of the carrier's means on A sqrt(g G_set - 1), weighted by their standard
    errors; the covariance widened by chi^2 when the scatter exceeds them (never narrowed)."""
    from scipy.optimize import curve_fit

    set_g, means, means_u = (np.asarray(x, dtype=float) for x in (set_gains, means_v, means_u_v))
    try:
        (amplitude, factor), cov = curve_fit(_carrier_amplitude, set_g, means,
                                             p0=(means[-1] / math.sqrt(set_g[-1] - 1), 1.0), sigma=means_u,
                                             absolute_sigma=True)
    except (RuntimeError, ValueError) as error:
        raise CalibrationError(KIND, f"the gain fit did not converge ({error})") from None
    residual = (means - _carrier_amplitude(set_g, amplitude, factor)) / means_u
    chi2 = float(np.sum(residual**2) / max(len(set_g) - 2, 1))
    return float(amplitude), float(factor), cov * max(chi2, 1.0), chi2


def _carrier_amplitude(g_set, amplitude, factor):
    """The carrier's mean at set gain g_set: A sqrt(g G_set - 1) (module level: the figure worker gets it by name)."""
    return amplitude * np.sqrt(np.maximum(factor * g_set - 1.0, 1e-12))


def _plot(path, set_g, means, means_u, model, amplitude, factor, excess, excess_u, gain, gain_u, nf_db) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    grid = np.linspace(set_g.min(), set_g.max(), 100)
    axes[0].errorbar(set_g, means, yerr=means_u, fmt="o", label="client mean quadrature (carrier)")
    axes[0].plot(grid, model(grid, amplitude, factor), "-", label=f"A sqrt(g G_set - 1), g = {factor:.4f}")
    axes[0].set_ylabel("V")
    axes[0].set_title(f"gain at the operating point {gain:.4f} +- {gain_u:.4f}", fontsize=9)
    axes[0].legend(fontsize=8)
    axes[1].errorbar(set_g, excess, yerr=excess_u, fmt="o", label=f"excess variance, vacuum in (NF {nf_db:.2f} dB)")
    axes[1].set_xlabel("set gain (linear)")
    axes[1].set_ylabel("SNU")
    axes[1].legend(fontsize=8)
    save_tight(fig, path)
    plt.close(fig)

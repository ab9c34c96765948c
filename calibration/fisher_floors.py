"""The least instrument time each calibration's stated uncertainty needs, from its estimator's Fisher information.

Why: a calibration's cost is instrument time (calibration/instrument_cost.py); to say whether a plan is
wasteful, compare it with what the same uncertainty cannot do without. For data y_i = f_i(p) + e_i with
independent Gaussian noise of known sigma_i, no unbiased estimate of p beats the Cramer-Rao covariance
C = (J^T W J)^-1, J_ij = df_i/dp_j, W = diag(1/sigma_i^2) (``cramer_rao_covariance``). Every floor here keeps
the plan's own sampling points (the bias voltages, set gains, drive pairs, staircase levels, designed vectors
the procedure actually used) and asks how much measuring time at those points the stated uncertainty needs:
at fixed points sigma_i^2 falls as 1/(time per point), so C scales as 1/T and, with the bound b(T0) at the
plan's measuring time T0,

    least T = T0 b(T0)^2 / ((1 + tol)^2 u^2 - u_sys^2)          (``fisher_least_time_s``)

with u the stated uncertainty and u_sys its declared part that no measuring reduces (a gain's
repeatability, a datasheet driver gain, the V_pi and ER an IQ fit holds fixed); tol = 1 %. One measurement
gives several parameters; its floor is the largest over the ones it states (``Floor``). Per measurement:

- amplifier gain: the carrier's mean quadrature m_i = A sqrt(g G_i - 1) at each set gain G_i, a difference
  of two acquisitions (shutter open minus closed) of N symbols; the mean of a stationary record of N symbols
  has variance L/N, L its long-run variance per sample (the matched filter's unit-norm rect template keeps
  that), so sigma_i^2 = (L_open,i + L_closed,i)/N with L = v_vac + S x excess_i (the record's vacuum and
  electronic level and its excess at G_i, SNU S; a coherent carrier adds no noise). Fitted: (A, g); stated:
  the gain at the operating point, g x G_op, with the repeatability declared (``amplifier_floor``).
- a modulator's bias transfer: P(V) = (P0/2)(1 + M cos(pi V/V_pi + phi)) at the swept biases, each point the
  mean of m meter readings; the bench's meter reads (1 + r e) P + n/sqrt(tau) e', so
  sigma_i^2 = (r^2 P_i^2 + n^2/tau)/m (r, n: the meter's relative and absolute noise, tau its averaging
  time). Fitted: (P0, V_pi, phi, ER); stated: V_pi, phi and ER, all statistical (``bias_transfer_floor``).
- a modulator's RF transfer: one quadrature y(u) = c + A sin(pi u/(2 V_pi) + psi) at the staircase levels,
  each level's mean over the capture with the standard error the capture showed; the capture's duration is
  its measuring time. Stated: V_pi at the AWG (``rf_transfer_floor``).
- IQ imbalance: P(u_I, u_Q; K, g, delta, r) at the nine drive pairs (calibration/modulator_fits.iq_power),
  meter noise as above with ``repeats`` readings; stated: g and delta, whose V_pi/ER propagation is
  systematic (``iq_imbalance_floor``).
- processor: the outcomes y_br = 2 Re(A conj(x_b).a_r + C sigma_b) (+ the detector's memory) with Gaussian
  noise of the residual variance; for least squares with Gaussian noise the Gauss-Newton covariance
  sigma^2 (J^T J)^-1 of the fit is exactly that bound, the measuring time is outcomes x modes symbols.
  Stated: the beam splitter's V_pi, the datasheet driver gain's tolerance systematic (``processor_floor``).

tests/calibration/test_fisher_floors.py checks each bound by another route: repeated fits of simulated noisy
data at the floor's sample count scatter by the stated uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qslab.analysis.modulator_transfer import mzm_power_w
from qslab.calibration.instrument_cost import TOLERANCE


@dataclass(frozen=True)
class Floor:
    """One measurement's least time: the parameter that sets it, its stated, bound and systematic uncertainty."""

    measurement: str
    quantity: str
    stated_u: float
    bound_u: float        # the Cramer-Rao bound at the plan's own sampling and measuring time
    systematic_u: float   # declared, not reduced by measuring
    measuring_s: float    # instrument time the plan spent measuring (readings x averaging, capture duration)
    least_s: float        # least measuring time at the same points for the stated uncertainty (within 1 %)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class MeterNoise:
    """A power meter's reading noise: (1 + relative e) P + absolute_w_rt_s / sqrt(averaging time) e'."""

    relative: float
    absolute_w_rt_s: float

    def sigma_w(self, power_w, averaging_s: float, readings: int) -> np.ndarray:
        """Standard error of the mean of ``readings`` readings of ``power_w`` at ``averaging_s`` each."""
        variance = (self.relative * np.asarray(power_w)) ** 2 + self.absolute_w_rt_s**2 / averaging_s
        return np.sqrt(variance / readings)


def numeric_jacobian(model: Callable[[np.ndarray], np.ndarray], params, rel_step: float = 1e-6) -> np.ndarray:
    """d model / d params by central differences (steps relative to each parameter, absolute near 0)."""
    params = np.asarray(params, dtype=float)
    columns = []
    for j, p in enumerate(params):
        h = rel_step * max(abs(p), 1e-3)
        up, down = params.copy(), params.copy()
        up[j], down[j] = p + h, p - h
        columns.append((np.ravel(model(up)) - np.ravel(model(down))) / (2.0 * h))
    return np.column_stack(columns)


def cramer_rao_covariance(jacobian: np.ndarray, sigma) -> np.ndarray:
    """(J^T W J)^-1 with W = diag(1/sigma^2): the least covariance of unbiased estimates (Gaussian noise)."""
    weighted = jacobian / np.asarray(sigma, dtype=float).reshape(-1, 1)
    return np.linalg.inv(weighted.T @ weighted)


def fisher_least_time_s(measuring_s: float, stated_u: float, bound_u: float, systematic_u: float = 0.0,
                        tolerance: float = TOLERANCE) -> float:
    """Least measuring time at the same points: the bound b (at ``measuring_s``) scales as 1/sqrt(T), and
    b(T)^2 + u_sys^2 may reach (1 + tolerance)^2 u^2 (inf when the systematics alone exceed that)."""
    allowed_sq = (1.0 + tolerance) ** 2 * stated_u**2 - systematic_u**2
    return measuring_s * bound_u**2 / allowed_sq if allowed_sq > 0 else math.inf


def floor(measurement: str, measuring_s: float, quantities: dict[str, tuple[float, float, float]]) -> Floor:
    """The floor of one measurement over the quantities it states, ``{name: (stated_u, bound_u, systematic_u)}``:
    the largest least time (each stated uncertainty must be kept)."""
    least = {name: fisher_least_time_s(measuring_s, *u) for name, u in quantities.items()}
    name = max(least, key=least.get)
    stated_u, bound_u, systematic_u = quantities[name]
    return Floor(measurement, name, stated_u, bound_u, systematic_u, measuring_s, least[name])


# -- bounds (pure functions of the plan and the noise model) ------------------------------------------------

def amplifier_gain_bound(set_gains, amplitude_v: float, factor: float, sigma_v) -> float:
    """Cramer-Rao sigma of the true/set factor g from m_i = A sqrt(g G_i - 1) (A a nuisance)."""
    g_set = np.asarray(set_gains, dtype=float)
    root = np.sqrt(factor * g_set - 1.0)
    jacobian = np.column_stack([root, amplitude_v * g_set / (2.0 * root)])
    return float(math.sqrt(cramer_rao_covariance(jacobian, sigma_v)[1, 1]))


def amplifier_mean_sigma_v(vacuum_v2: float, shot_noise_v2: float, excess_snu, symbols: int) -> np.ndarray:
    """sigma of (open - closed) mean quadrature per set gain: 2 (v_vac + S excess) / N, N symbols each."""
    level = vacuum_v2 + shot_noise_v2 * np.asarray(excess_snu, dtype=float)
    return np.sqrt(2.0 * level / symbols)


def mzm_transfer_bound(bias_v, params, meter: MeterNoise, averaging_s: float, readings: int) -> np.ndarray:
    """Cramer-Rao sigmas of (P0, V_pi, phi, ER_dB) for a bias sweep at ``bias_v``, ``readings`` per point."""
    volts = np.asarray(bias_v, dtype=float)
    sigma = meter.sigma_w(mzm_power_w(volts, *params), averaging_s, readings)
    jacobian = numeric_jacobian(lambda p: mzm_power_w(volts, *p), params)
    return np.sqrt(np.diag(cramer_rao_covariance(jacobian, sigma)))


def field_transfer_bound(awg_v, params, level_sigma_v) -> np.ndarray:
    """Cramer-Rao sigmas of (offset, A, V_pi, psi) for y(u) = c + A sin(pi u/(2 V_pi) + psi) at the levels."""
    from qslab.calibration.modulator_fits import field_quadrature_v

    volts = np.asarray(awg_v, dtype=float)
    jacobian = numeric_jacobian(lambda p: field_quadrature_v(volts, *p), params)
    return np.sqrt(np.diag(cramer_rao_covariance(jacobian, level_sigma_v)))


def iq_imbalance_bound(drives_v, params, meter: MeterNoise, averaging_s: float, readings: int, *, vpi_v: float,
                       extinction_ratio_db: float) -> np.ndarray:
    """Cramer-Rao sigmas of (K, g, delta, r) from the static drive pairs (V_pi and ER held fixed)."""
    from qslab.calibration.modulator_fits import iq_power

    drives = np.asarray(drives_v, dtype=float)

    def model(p):
        return iq_power(drives, *p, vpi_v=vpi_v, extinction_ratio_db=extinction_ratio_db)

    sigma = meter.sigma_w(model(np.asarray(params, dtype=float)), averaging_s, readings)
    return np.sqrt(np.diag(cramer_rao_covariance(numeric_jacobian(model, params), sigma)))


# -- floors of the records (what the procedures recorded) ---------------------------------------------------

def amplifier_floor(record) -> Floor:
    """The amplifier record's gain at the operating point (module docstring)."""
    c, raw = record.conditions, record.raw
    v_el, v_vac = (float(v) for v in raw["electronic_and_vacuum_v2"])
    symbols = int(c["points"]) // int(c["samples_per_symbol"])
    sigma = amplifier_mean_sigma_v(v_vac, v_vac - v_el, raw["excess_snu"], symbols)
    set_g, means = np.asarray(raw["set_gain"], float), np.asarray(raw["mean_v"], float)
    factor = 10.0 ** (record.estimate("client_amplifier.gain_offset_db").value / 10.0)
    amplitude = float(np.sum(means * np.sqrt(factor * set_g - 1.0)) / np.sum(factor * set_g - 1.0))
    bound_rel = amplifier_gain_bound(set_g, amplitude, factor, sigma) / factor
    gain = record.estimate("client_amplifier.gain")
    systematic = gain.value * math.log(10.0) / 10.0 * float(c["gain_repeatability_db"])
    measuring_s = 2 * set_g.size * int(c["points"]) / float(c["sample_rate_hz"])  # open and closed per gain
    return floor("gain sweep", measuring_s,
                 {"client_amplifier.gain": (gain.uncertainty, gain.value * bound_rel, systematic)})


def bias_transfer_floor(record, key: str, meter: MeterNoise) -> Floor:
    """A modulator's bias-transfer record: V_pi, phase and ER at its sweep's points and readings."""
    c = record.conditions
    params = [c["fit_power_scale_w"]] + [record.estimate(f"{key}.{name}").value
                                         for name in ("bias_vpi_v", "bias_phase_rad", "extinction_ratio_db")]
    volts, readings, averaging_s = np.asarray(record.raw["bias_v"], float), int(c["readings_per_point"]), \
        float(c["averaging_time_s"])
    bound = mzm_transfer_bound(volts, params, meter, averaging_s, readings)
    names = ("bias_vpi_v", "bias_phase_rad", "extinction_ratio_db")
    return floor(f"{key} bias transfer", volts.size * readings * averaging_s,
                 {f"{key}.{n}": (record.estimate(f"{key}.{n}").uncertainty, float(b), 0.0)
                  for n, b in zip(names, bound[1:])})


def rf_transfer_floor(record, key: str, symbol_rate_hz: float) -> Floor:
    """A modulator's RF-transfer record: V_pi at the AWG from the staircase's level means."""
    c, raw = record.conditions, record.raw
    vpi = record.estimate(f"{key}.vpi_at_awg_v")
    params = [float(np.mean(raw["quadrature_v"])), c["field_amplitude_v"], vpi.value, c["field_phase_rad"]]
    bound = field_transfer_bound(raw["awg_v"], params, raw["quadrature_sigma_v"])
    measuring_s = int(c["levels"]) * int(c["symbols_per_level"]) * int(c["periods"]) / symbol_rate_hz
    return floor(f"{key} RF transfer", measuring_s, {f"{key}.vpi_at_awg_v": (vpi.uncertainty, float(bound[2]), 0.0)})


def iq_imbalance_floor(record, key: str, meter: MeterNoise) -> Floor:
    """The IQ-imbalance record: g and delta at its nine drive pairs; the V_pi/ER propagation is systematic."""
    c, raw = record.conditions, record.raw
    params = [c["scale_w"]] + [record.estimate(f"{key}.{n}").value
                               for n in ("iq_gain_imbalance", "iq_phase_error_rad", "null_bias_error_rad")]
    bound = iq_imbalance_bound(raw["drives_v"], params, meter, float(c["averaging_time_s"]), int(c["repeats"]),
                               vpi_v=c["vpi_at_awg_v"], extinction_ratio_db=c["extinction_ratio_db"])
    quantities = {}
    for index, name in ((1, "iq_gain_imbalance"), (2, "iq_phase_error_rad")):
        stated = record.estimate(f"{key}.{name}").uncertainty
        statistical = float(c["statistical_u"][name])
        quantities[f"{key}.{name}"] = (stated, float(bound[index]), math.sqrt(max(stated**2 - statistical**2, 0.0)))
    measuring_s = len(raw["drives_v"]) * int(c["repeats"]) * float(c["averaging_time_s"])
    return floor(f"{key} IQ imbalance", measuring_s, quantities)


def processor_floor(record, symbol_rate_hz: float) -> Floor:
    """The processor record: the beam splitter's V_pi (refitted from the raw outcomes, whose Gauss-Newton
    covariance is the bound), the driver gain's tolerance systematic."""
    from qslab.calibration.processor import fit_processor

    c, raw = record.conditions, record.raw
    fit = fit_processor(raw["outcomes_snu"], raw["volts_beam_splitter"], raw["volts_phase"], raw["pilots"],
                        beam_splitter_rad_per_v=c["datasheet_rad_per_v"][0], phase_rad_per_v=c["datasheet_rad_per_v"][1])
    vpi = record.estimate("client_processor.beam_splitter_vpi_v")
    bound = vpi.value * float(fit.sigmas[0]) / fit.beam_splitter_rad_per_v   # V_pi = pi/(2 s) x driver gain
    at_awg = record.estimate("client_processor.beam_splitter_vpi_at_awg_v")
    statistical = vpi.value * at_awg.uncertainty / at_awg.value
    systematic = math.sqrt(max(vpi.uncertainty**2 - statistical**2, 0.0))
    outcomes, modes = np.size(raw["outcomes_snu"]), np.shape(raw["pilots"])[-1]
    return floor("processor acquisition", outcomes * modes / symbol_rate_hz,
                 {"client_processor.beam_splitter_vpi_v": (vpi.uncertainty, bound, systematic)})

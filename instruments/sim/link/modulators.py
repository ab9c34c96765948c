"""Electro-optic modulator transfer functions (docs/PHYSICS.md 15), as complex field factors.

An MZM with arm phase difference theta transmits the field
    t(theta) = -(exp(i theta/2) + gamma exp(-i theta/2)) / (1 + gamma),   ER = ((1 + gamma)/(1 - gamma))^2,
so |t|^2 = (1 + gamma^2 + 2 gamma cos theta)/(1 + gamma)^2: 1 at the peak (theta = 0), 1/ER at the null
(theta = pi), and at the null t(pi + x) = sin(x/2) - i cos(x/2)/sqrt(ER): the familiar
sin(pi u/(2 Vpi)) field of a child biased at null, plus a constant carrier leakage in quadrature.
The global sign makes that field +sin, so a positive drive gives a positive field.
"""

from __future__ import annotations

import numpy as np


def extinction_gamma(extinction_ratio_db: float) -> float:
    """Arm imbalance gamma in (0, 1] from the power extinction ratio ER = ((1 + g)/(1 - g))^2."""
    root = np.sqrt(10.0 ** (extinction_ratio_db / 10.0))
    return float((root - 1.0) / (root + 1.0))


def arm_phase_rad(drive_v, bias_v: float, vpi_v: float, bias_vpi_v: float, bias_phase_rad: float):
    """theta = pi u/Vpi (RF port) + pi V_b/Vpi_bias (DC port) + the bias phase at 0 V."""
    return np.pi * np.asarray(drive_v) / vpi_v + np.pi * bias_v / bias_vpi_v + bias_phase_rad


def mzm_field(theta_rad, extinction_ratio_db: float):
    """Complex field transmission of a push-pull MZM (lossless; multiply by the insertion loss)."""
    gamma = extinction_gamma(extinction_ratio_db)
    half = 0.5 * np.asarray(theta_rad, dtype=float)
    return -(np.exp(1j * half) + gamma * np.exp(-1j * half)) / (1.0 + gamma)


def mzm_power(theta_rad, extinction_ratio_db: float):
    """|t|^2 = (1 + g^2 + 2 g cos theta)/(1 + g)^2."""
    gamma = extinction_gamma(extinction_ratio_db)
    return (1.0 + gamma**2 + 2.0 * gamma * np.cos(theta_rad)) / (1.0 + gamma) ** 2


def iq_field(theta_i_rad, theta_q_rad, extinction_ratio_db: float, gain_imbalance: float = 0.0,
             parent_phase_error_rad: float = 0.0):
    """Nested IQ modulator: (1/2)[(1 + g/2) t_I + exp(i(pi/2 + delta)) (1 - g/2) t_Q] (docs/PHYSICS.md 15)."""
    t_i = mzm_field(theta_i_rad, extinction_ratio_db)
    t_q = mzm_field(theta_q_rad, extinction_ratio_db)
    parent = np.exp(1j * (0.5 * np.pi + parent_phase_error_rad))
    return 0.5 * ((1.0 + 0.5 * gain_imbalance) * t_i + parent * (1.0 - 0.5 * gain_imbalance) * t_q)


def bias_for_phase_v(target_theta_rad: float, bias_vpi_v: float, bias_phase_rad: float,
                     limit_v: float = 10.0) -> float:
    """The bias voltage closest to 0 V that puts theta (without RF drive) at the target, mod 2 pi.

    What an automatic bias controller converges to; clipped to its output range.
    """
    offset_rad = (target_theta_rad - bias_phase_rad + np.pi) % (2.0 * np.pi) - np.pi  # in [-pi, pi)
    volts = offset_rad * bias_vpi_v / np.pi
    return float(np.clip(volts, -limit_v, limit_v))


def theta_for_power_fraction(fraction: float, extinction_ratio_db: float, positive_slope: bool) -> float:
    """theta where |t|^2 equals ``fraction`` of the peak, on the rising (dP/dV > 0) or falling slope.

    Clipped to the reachable range [1/ER, 1]. Rising slope: theta in [-pi, 0] (quadrature+ is -pi/2).
    """
    gamma = extinction_gamma(extinction_ratio_db)
    cosine = ((1.0 + gamma) ** 2 * fraction - 1.0 - gamma**2) / (2.0 * gamma)
    theta = float(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return -theta if positive_slope else theta
